// send: N clients with their own ids, M publishers posting to them at a rate (send_bench.h).
#include "send_bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>

#include "publishers.h"

namespace bench {

namespace {

// CPU of the server processes over the measured window: CpuMeter for the main one, per-thread CPU, and the other
// processes (a second hydra host, the Kafka mock).
class ServerCpu {
  public:
    explicit ServerCpu(const SendConfig& cfg) : cfg_(cfg), meter_(cfg.server_pid), start_ns_(now_ns()) {
        if (cfg.server_pid > 0) threads_ = thread_cpu_seconds(cfg.server_pid);
        for (const auto& [name, pid] : cfg.extra_pids) extra_.push_back(process_cpu_seconds(pid));
    }
    OJson to_json() const {
        OJson j = meter_.to_json();
        const double wall = static_cast<double>(now_ns() - start_ns_) / 1e9;
        if (cfg_.server_pid > 0)
            j["server_threads"] = thread_cpu_json(threads_, thread_cpu_seconds(cfg_.server_pid), wall);
        double extra_cores = 0;
        for (std::size_t i = 0; i < cfg_.extra_pids.size(); ++i) {
            auto end = process_cpu_seconds(cfg_.extra_pids[i].second);
            OJson cores;
            if (extra_[i] && end && wall > 0) {
                cores = round_to((*end - *extra_[i]) / wall, 3);
                extra_cores += (*end - *extra_[i]) / wall;
            }
            j["processes"][cfg_.extra_pids[i].first] = cores;
        }
        // The other server processes (a second host, the broker) are the server's, not "other" load.
        if (j.contains("other_cores") && j["other_cores"].is_number())
            j["other_cores"] = round_to(std::max(0.0, j["other_cores"].get<double>() - extra_cores), 3);
        return j;
    }

  private:
    const SendConfig& cfg_;
    CpuMeter meter_;
    std::int64_t start_ns_;
    std::map<std::string, ThreadCpu> threads_;
    std::vector<std::optional<double>> extra_;
};

}  // namespace

OJson run_send(SendConfig cfg) {
    const bool paced = cfg.rate > 0;
    const double total_s = cfg.warmup_s + cfg.duration_s;
    // Messages to send (paced), or the most a closed loop may send: every message gets a state byte and an arrival
    // counter, so duplicates and losses are counted one by one.
    const auto capacity = static_cast<std::size_t>(paced ? std::ceil(total_s * cfg.rate) : total_s * 1'000'000);
    cfg.pool.mode = Mode::deliver;
    // One client thread: the publishers' loop also serves the clients (one wake-up for an answer and the delivery
    // it caused, not one per thread), which halves the generator's context switches on its one core.
    cfg.pool.driven = cfg.pool.threads == 1;
    cfg.pool.deliver_capacity = capacity;
    const int clients = cfg.pool.connections;

    OJson result{{"rate_requested", paced ? OJson(cfg.rate) : OJson("closed loop")},
                 {"warmup_s", cfg.warmup_s},
                 {"duration_s", cfg.duration_s},
                 {"publishers", cfg.publishers},
                 {"pipeline", cfg.pipeline},
                 {"post_path", cfg.post_path},
                 {"body", cfg.body},
                 {"ws_path", cfg.pool.path + (cfg.pool.id_in_path ? cfg.pool.id_prefix + "<i>" : "")},
                 {"client_id", cfg.pool.id_prefix + "<i>"},
                 {"client_driven", cfg.pool.driven}};

    Pool pool(cfg.pool);
    log("send", "connecting " + std::to_string(clients) + " clients");
    Pool::ConnectResult cr = pool.connect_all();
    double connect_s = static_cast<double>(cr.finished_ns - cr.started_ns) / 1e9;
    result["connect"] = OJson{{"open", cr.open}, {"failed", cr.failed}, {"seconds", round_to(connect_s, 3)}};
    if (!cr.errors.empty()) result["connect"]["errors"] = cr.errors;
    log("send", std::to_string(cr.open) + " open, " + std::to_string(cr.failed) + " failed in " +
                    std::to_string(connect_s) + " s");
    // A message to a client that is not there is not a measurement of the server.
    if (cr.failed > 0) throw std::runtime_error("clients failed to connect: " + cr.errors.front());

    std::vector<PostState> state(capacity, PostState::not_sent);
    std::vector<std::int64_t> due_at;  // paced: message k is due at due_at[k]
    std::vector<std::string> ids(static_cast<std::size_t>(clients));
    for (int i = 0; i < clients; ++i) ids[static_cast<std::size_t>(i)] = cfg.pool.id_prefix + std::to_string(i);
    const Template path(cfg.post_path);
    const Template body(cfg.body);

    Publishers pubs(PublisherConfig{cfg.api, cfg.publishers, cfg.pipeline}, state, due_at);
    pubs.open_all();
    if (cfg.pool.driven) pubs.also_watch(pool.event_fd(), [&pool] { pool.drive(0); });
    std::this_thread::sleep_for(std::chrono::duration<double>(cfg.settle_s));

    const std::int64_t t0 = now_ns() + 10'000'000;
    const std::int64_t from = t0 + static_cast<std::int64_t>(cfg.warmup_s * 1e9);
    const std::int64_t to = from + static_cast<std::int64_t>(cfg.duration_s * 1e9);
    if (paced) due_at = due_times(t0, cfg.rate, capacity);
    pool.deliver_window(from, to);
    pubs.set_window(from, to);
    log("send", std::string(paced ? "paced at " + std::to_string(cfg.rate) + " msg/s" : "closed loop") + ", warmup " +
                    std::to_string(cfg.warmup_s) + " s, measuring " + std::to_string(cfg.duration_s) + " s");

    std::string request, rendered_path, rendered_body;
    auto build = [&](std::uint64_t k, std::int64_t ts) {
        const std::string& id = ids[k % static_cast<std::size_t>(clients)];
        rendered_path.clear();
        rendered_body.clear();
        path.render(rendered_path, id, ts, k);
        body.render(rendered_body, id, ts, k);
        build_post(request, rendered_path, cfg.api_host, cfg.content_type, rendered_body);
    };

    Histogram send_lag;                // paced: actual write - due, messages due inside the window
    std::uint64_t delayed = 0;         // paced: messages that were due while every connection was busy
    std::uint64_t max_backlog = 0;     // paced: most messages due and not yet sendable at once
    std::uint64_t backlog_mark = 0;    // messages below this were already checked for the backlog
    std::uint64_t next = 0;            // the next message to send
    std::uint64_t due_in_window = 0;   // paced: messages due inside the window that were sent (at any time)
    std::uint64_t sent_in_window = 0;  // requests written inside the window
    std::uint64_t skipped = 0;         // paced: not sent, more than max_lag late (the server is far behind)
    const auto max_lag = static_cast<std::int64_t>(cfg.max_lag_s * 1e9);
    std::optional<ServerCpu> cpu;
    OJson cpu_json;
    const std::int64_t tick = static_cast<std::int64_t>(cfg.tick_us * 1000);
    const std::int64_t hard_stop = to + 30'000'000'000;  // posts still unanswered 30 s after the end count as lost

    for (;;) {
        std::int64_t now = now_ns();
        if (!cpu && now >= from) cpu.emplace(cfg);
        if (cpu && cpu_json.is_null() && now >= to) cpu_json = cpu->to_json();
        std::int64_t timeout = 10'000'000;
        if (paced && next < capacity) {
            const std::uint64_t due = due_count(now, t0, cfg.rate, capacity);
            // A server far behind would otherwise keep the run going for minutes after the window: messages that
            // could not be sent within max_lag of their due time are given up (and reported).
            while (next < due && now - due_at[next] > max_lag) {
                state[next++] = PostState::skipped;
                ++skipped;
            }
            while (next < due && pubs.has_room()) {
                build(next, due_at[next]);
                pubs.post(next, request, now);
                if (due_at[next] >= from && due_at[next] < to) {
                    send_lag.record(now - due_at[next]);
                    ++due_in_window;
                }
                if (now >= from && now < to) ++sent_in_window;
                ++next;
            }
            pubs.flush_all();
            if (next < due) {
                // Every connection is busy: these wait for an answer (their latency keeps counting from when
                // they were due).
                max_backlog = std::max<std::uint64_t>(max_backlog, due - next);
                if (due > backlog_mark) {
                    delayed += due - std::max(next, backlog_mark);
                    backlog_mark = due;
                }
                timeout = 1'000'000;
            } else if (next < capacity) {
                timeout = std::max(tick, due_at[next] - now);
            }
        } else if (!paced && now < to && next < capacity) {
            while (pubs.has_room() && next < capacity) {
                build(next, now);
                pubs.post(next, request, now);
                if (now >= from) ++sent_in_window;
                ++next;
            }
            pubs.flush_all();
            timeout = std::min<std::int64_t>(1'000'000, to - now);
        } else if (pubs.inflight() == 0 || now > hard_stop) {
            break;
        }
        pubs.poll(timeout);
    }
    if (cpu_json.is_null() && cpu) cpu_json = cpu->to_json();
    const std::int64_t posts_done = now_ns();
    log("send", "posted " + std::to_string(next) + " messages; waiting for the deliveries");

    // Drain: until every accepted post arrived, or nothing arrived for drain_s.
    const auto& pc = pubs.counters();
    wait_for_progress(
        [&] {
            // Driven: the clients are served here; the stats are read every 10 ms, not after every wake-up.
            if (cfg.pool.driven) {
                const std::int64_t until = now_ns() + 10'000'000;
                for (std::int64_t now = now_ns(); now < until; now = now_ns()) pubs.poll(until - now);
            }
            const Stats s = pool.merged_stats();
            return Progress{s.delivered - s.duplicates >= pc.ok && s.without_seq == 0, s.delivered};
        },
        static_cast<std::int64_t>(cfg.drain_s * 1e9),
        cfg.pool.driven ? std::chrono::milliseconds(0) : std::chrono::milliseconds(10));
    const double drain_wait_s = static_cast<double>(now_ns() - posts_done) / 1e9;

    // One by one: accepted but never delivered, delivered although not accepted.
    std::uint64_t missing = 0, missing_in_window = 0, delivered_not_ok = 0, lost_delivered = 0;
    std::vector<std::uint64_t> missing_examples;
    for (std::uint64_t k = 0; k < next; ++k) {
        const std::uint8_t got = pool.arrivals(k);
        if (state[k] == PostState::ok && got == 0) {
            ++missing;
            if (paced && due_at[k] >= from && due_at[k] < to) ++missing_in_window;
            if (missing_examples.size() < 5) missing_examples.push_back(k);
        } else if (state[k] == PostState::lost && got > 0) {
            ++lost_delivered;
        } else if (state[k] != PostState::ok && got > 0) {
            ++delivered_not_ok;
        }
    }
    Stats s = pool.merged_stats();

    result["posts"] = OJson{{"sent", pc.sent},
                            {"sent_in_window", sent_in_window},
                            {"due_in_window_and_sent", paced ? OJson(due_in_window) : OJson()},
                            {"skipped_over_max_lag", paced ? OJson(skipped) : OJson()},
                            {"ok_2xx", pc.ok},
                            {"rejected", pc.rejected_json()},
                            {"lost_in_flight", pc.lost},
                            {"connection_errors", pc.errors_json()},
                            {"rate_in_window", round_to(static_cast<double>(sent_in_window) / cfg.duration_s, 1)}};
    result["deliveries"] =
        OJson{{"total", s.delivered},
              {"in_window", s.delivered_in_window},
              {"rate_in_window", round_to(static_cast<double>(s.delivered_in_window) / cfg.duration_s, 1)},
              {"missing", missing},
              {"missing_due_in_window", paced ? OJson(missing_in_window) : OJson()},
              {"missing_examples_seq", missing_examples},
              {"duplicates", s.duplicates},
              {"misrouted", s.misrouted},
              {"delivered_without_2xx", delivered_not_ok},
              {"lost_in_flight_but_delivered", lost_delivered},
              {"bad_messages", s.bad_messages},
              {"without_seq", s.without_seq},
              {"payload_bytes", OJson{{"min", s.min_payload}, {"max", s.max_payload}}},
              {"drain_wait_s", round_to(drain_wait_s, 3)}};
    // The latency the product promises: from when the message was due (paced) or posted (closed loop) to its
    // arrival at the client, for messages due inside the window.
    result["latency_ms"] = s.deliver_latency.to_json_ms();
    result["post_latency_ms"] = pc.post_latency.to_json_ms();
    if (paced) {
        result["publisher"] = OJson{{"send_lag_ms", send_lag.to_json_ms()},
                                    {"delayed_by_busy_connections", delayed},
                                    {"max_backlog", max_backlog}};
    }
    result["clients"] = OJson{{"open_at_end", pool.open_connections()},
                              {"closed_by_server", s.closed_by_peer},
                              {"protocol_errors", s.protocol_errors},
                              {"pings", s.pings}};
    result["cpu"] = cpu_json;
    if (cfg.server_pid > 0) {
        auto rss = read_rss(cfg.server_pid);
        result["server"] = OJson{{"pid", cfg.server_pid}, {"end", rss ? rss->to_json() : OJson()}};
    }
    log("send", "delivered " + std::to_string(s.delivered_in_window) + " in the window (" +
                    std::to_string(static_cast<double>(s.delivered_in_window) / cfg.duration_s) + "/s), p99 " +
                    std::to_string(ms(s.deliver_latency.percentile(0.99))) + " ms, missing " + std::to_string(missing));
    return result;
}

}  // namespace bench
