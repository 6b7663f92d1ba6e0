#include "broadcast_bench.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <optional>
#include <thread>
#include <vector>

namespace bench::scenario {

namespace {

std::string broadcast_body(std::int64_t ts, int seq, std::size_t payload_bytes) {
    // Frame payload: {"service":"notify","code":200,"data":DATA} = 39 bytes + DATA.
    std::string head = "{\"ts\":" + std::to_string(ts) + ",\"seq\":" + std::to_string(seq) + ",\"pad\":\"";
    std::size_t fixed = 39 + head.size() + 2;
    std::string pad(payload_bytes > fixed ? payload_bytes - fixed : 0, 'x');
    return "{\"data\":" + head + pad + "\"}}";
}

}  // namespace

HttpClient connect_for_broadcasts(Pool& pool, const Options& o, OJson& result) {
    result["connect"] = connect_json(connect_pool(pool, o), pool);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    const std::string& address = o.admin.empty() ? o.api : o.admin;
    return HttpClient(parse_ipv4(address), address);
}

bench::PoolConfig broadcast_pool_config(const Options& o, int phases) {
    bench::PoolConfig c = pool_config(o, bench::Mode::broadcast);
    c.broadcast_group_size = o.warmup_broadcasts + o.broadcasts;
    c.broadcast_slots = c.broadcast_group_size * phases;
    c.broadcast_skip = o.warmup_broadcasts;
    return c;
}

BroadcastRun run_broadcasts(bench::Pool& pool, bench::HttpClient& http, const Options& o, int first_seq, int expected) {
    const int warm = o.warmup_broadcasts;
    const int total = warm + o.broadcasts;
    const auto at = [](int k) { return static_cast<std::size_t>(k); };
    std::vector<std::int64_t> posted(at(total), 0);
    std::vector<std::int64_t> scheduled(at(total), 0);
    bench::Histogram post_rtt;
    bench::Stats before = pool.merged_stats();
    std::int64_t server_reported = -1;
    int http_errors = 0;
    const bool paced = o.mode == "paced";
    const auto interval = static_cast<std::int64_t>(o.interval_ms * 1e6);
    std::int64_t start = bench::now_ns();
    int incomplete_waits = 0;
    std::optional<bench::CpuMeter> cpu;
    for (int k = 0; k < total; ++k) {
        if (paced) bench::sleep_until_ns(start + k * interval);
        if (k == warm) cpu.emplace(o.server_pid);
        const int seq = first_seq + k;
        const std::int64_t ts = bench::now_ns();
        if (k == 0) start = ts;
        posted[at(k)] = ts;
        if (paced) {
            scheduled[at(k)] = start + k * interval;
            pool.set_scheduled(seq, scheduled[at(k)]);
        }
        try {
            http.send_post("/v1/exchange/broadcast", broadcast_body(ts, seq, o.payload_bytes));
            auto resp = http.read_response();
            if (k >= warm) post_rtt.record(bench::now_ns() - ts);
            if (resp.status != 200) {
                if (http_errors++ < 3) log("broadcast: HTTP " + std::to_string(resp.status) + ": " + resp.body);
            } else if (server_reported < 0) {
                auto p = resp.body.find("\"connections\":");
                if (p != std::string::npos) server_reported = std::atoll(resp.body.c_str() + p + 14);
            }
        } catch (const std::exception& e) {
            if (http_errors++ < 3) log(std::string("broadcast: ") + e.what());
        }
        // Closed loop: the next broadcast once every client has this one (or 10 s without progress).
        if (!paced && !bench::wait_for_progress(
                          [&] {
                              const std::uint32_t got = pool.received(seq);
                              return bench::Progress{static_cast<int>(got) >= expected, got};
                          },
                          10'000'000'000, std::chrono::microseconds(100)))
            ++incomplete_waits;
    }
    // Wait for everything to arrive, or 5 s without progress.
    auto received = [&](int from, int to) {
        std::uint64_t n = 0;
        for (int k = from; k < to; ++k) n += pool.received(first_seq + k);
        return n;
    };
    const std::uint64_t want_all = static_cast<std::uint64_t>(expected) * static_cast<std::uint64_t>(total);
    bench::wait_for_progress(
        [&] {
            const std::uint64_t got = received(0, total);
            return bench::Progress{got >= want_all, got};
        },
        5'000'000'000, std::chrono::milliseconds(1));
    OJson cpu_json = cpu ? cpu->to_json() : OJson();
    bench::Stats s = pool.merged_stats();

    // The measured part: seq first_seq + warm ...
    const std::int64_t first = posted[at(warm)];
    const std::uint64_t want = static_cast<std::uint64_t>(expected) * static_cast<std::uint64_t>(o.broadcasts);
    const std::uint64_t deliveries = received(warm, total);
    const std::uint64_t all_deliveries = received(0, total);
    std::int64_t last_arrival = 0;
    bench::Histogram completion;
    bench::Histogram completion_scheduled;
    OJson by_seq = OJson::array();
    int incomplete = 0;
    for (int k = warm; k < total; ++k) {
        const int seq = first_seq + k;
        const std::int64_t arrival = s.last_arrival[static_cast<std::size_t>(seq)];
        last_arrival = std::max(last_arrival, arrival);
        if (o.detail) by_seq.push_back(arrival > 0 ? OJson(round_to(bench::ms(arrival - posted[at(k)]), 3)) : OJson());
        if (static_cast<int>(pool.received(seq)) >= expected && arrival > 0) {
            completion.record(arrival - posted[at(k)]);
            if (paced) completion_scheduled.record(arrival - scheduled[at(k)]);
        } else {
            ++incomplete;
        }
    }
    const auto group = static_cast<std::size_t>(first_seq / total);
    const bench::Histogram& delivery = s.delivery_latency[group];
    const double wall_s = last_arrival > first ? static_cast<double>(last_arrival - first) / 1e9 : 0;
    const double posting_s = static_cast<double>(posted.back() - first) / 1e9;

    BroadcastRun run;
    run.delivery_p99_ms = round_to(bench::ms(delivery.percentile(0.99)), 3);
    run.completion_p99_ms = round_to(bench::ms(completion.percentile(0.99)), 3);
    run.completion_p50_ms = round_to(bench::ms(completion.percentile(0.5)), 3);
    run.json = OJson{
        {"mode", o.mode},
        {"interval_ms", paced ? OJson(o.interval_ms) : OJson(nullptr)},
        {"broadcasts", o.broadcasts},
        {"warmup_broadcasts", warm},
        {"clients", expected},
        {"server_reported_connections", server_reported},
        {"payload_bytes", OJson{{"min", s.min_payload}, {"max", s.max_payload}}},
        {"deliveries", deliveries},
        {"expected", want},
        {"missing", want > deliveries ? want - deliveries : 0},
        {"missing_including_warmup", want_all > all_deliveries ? want_all - all_deliveries : 0},
        {"incomplete_broadcasts", incomplete},
        {"out_of_order", s.out_of_order - before.out_of_order},
        {"bad_messages", s.bad_messages - before.bad_messages},
        {"http_errors", http_errors},
        {"posting_s", round_to(posting_s, 3)},
        {"wall_s", round_to(wall_s, 3)},
        {"deliveries_per_s", round_to(wall_s > 0 ? static_cast<double>(deliveries) / wall_s : 0, 1)},
        {"broadcasts_per_s", round_to(wall_s > 0 ? o.broadcasts / wall_s : 0, 1)},
        {"delivery_latency_ms", delivery.to_json_ms()},
        {"completion_latency_ms", completion.to_json_ms()},
        {"post_latency_ms", post_rtt.to_json_ms()},
        {"closed_by_server", s.closed_by_peer - before.closed_by_peer},
        {"cpu", cpu_json},
        // Per delivery, the POSTs' share included (one per `clients` deliveries).
        {"server_cpu_us_per_msg", cpu_us_per_msg(cpu_json, deliveries)},
    };
    if (paced) {
        // Measured from when each broadcast was due rather than when the poster got to send it: a server whose
        // POST answers late (node: it fans out before answering) delays the poster, which would otherwise hide
        // that wait (coordinated omission).
        run.json["delivery_latency_from_schedule_ms"] = s.delivery_latency_scheduled[group].to_json_ms();
        run.json["completion_latency_from_schedule_ms"] = completion_scheduled.to_json_ms();
    }
    if (incomplete_waits) run.json["closed_loop_timeouts"] = incomplete_waits;
    if (o.detail) run.json["completion_ms_by_seq"] = by_seq;
    log("broadcast: " + std::to_string(deliveries) + "/" + std::to_string(want) + " deliveries, p99 " +
        std::to_string(run.delivery_p99_ms) + " ms, completion p99 " + std::to_string(run.completion_p99_ms) + " ms");
    return run;
}

OJson run_broadcast(const Options& o) {
    OJson result;
    bench::Pool pool(broadcast_pool_config(o, 1));
    bench::HttpClient http = connect_for_broadcasts(pool, o, result);
    std::optional<bench::Rss> before;
    if (o.server_pid) before = bench::read_rss(o.server_pid);
    log("broadcast: " + std::to_string(o.broadcasts) + " broadcasts (" + o.mode + ") to " +
        std::to_string(pool.open_connections()) + " clients");
    BroadcastRun run = run_broadcasts(pool, http, o, 0, pool.open_connections());
    for (auto& [k, v] : run.json.items()) result[k] = v;
    if (o.server_pid)
        result["server"] = OJson{
            {"pid", o.server_pid}, {"before", rss_json(before)}, {"end", rss_json(bench::read_rss(o.server_pid))}};
    return result;
}

}  // namespace bench::scenario
