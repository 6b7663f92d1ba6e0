#include "soak_bench.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <hydra/ws_client.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "publishers.h"

namespace bench {

namespace {

void log(const std::string& what, const std::string& msg) {
    std::cerr << "hydra-bench: " << what << ": " << msg << std::endl;
}

std::string fixed(double v, int digits) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", digits, v);
    return buf;
}

double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    const std::size_t m = v.size() / 2;
    return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

// The samples of a Prometheus text exposition that matter here, summed over their labels where that makes sense.
struct MetricsSample {
    std::optional<double> rss_bytes;
    std::optional<double> open_fds;
    std::optional<double> cpu_seconds;
    std::optional<double> ws_connections;  // all endpoints
    std::optional<double> queue_ready;     // all queues
    std::optional<double> queue_leased;
};

MetricsSample parse_metrics(const std::string& text) {
    MetricsSample m;
    std::istringstream in(text);
    std::string line;
    auto add = [](std::optional<double>& field, double v) { field = field.value_or(0) + v; };
    while (std::getline(in, line)) {
        if (line.empty() || line[0] == '#') continue;
        const std::size_t name_end = line.find_first_of("{ ");
        if (name_end == std::string::npos) continue;
        const std::string name = line.substr(0, name_end);
        const std::size_t value_at = line.rfind(' ');
        if (value_at == std::string::npos) continue;
        double v = 0;
        try {
            v = std::stod(line.substr(value_at + 1));
        } catch (const std::exception&) {
            continue;
        }
        const std::string labels = line[name_end] == '{' ? line.substr(name_end, value_at - name_end) : "";
        if (name == "hydra_process_resident_memory_bytes") {
            m.rss_bytes = v;
        } else if (name == "hydra_process_open_fds") {
            m.open_fds = v;
        } else if (name == "hydra_process_cpu_seconds_total") {
            m.cpu_seconds = v;
        } else if (name == "hydra_ws_connections") {
            add(m.ws_connections, v);
        } else if (name == "hydra_queue_messages") {
            if (labels.find("state=\"ready\"") != std::string::npos) add(m.queue_ready, v);
            if (labels.find("state=\"leased\"") != std::string::npos) add(m.queue_leased, v);
        }
    }
    return m;
}

// One row of the soak CSV.
struct Row {
    double t_s = 0;
    double rss_mb = 0;
    double open_fds = 0;
    double cpu_cores = 0;
    double ws_connections = -1;
    double queue_ready = -1;
    double queue_leased = -1;
    std::uint64_t posts_ok = 0;
    std::uint64_t posts_failed = 0;
    std::uint64_t delivered = 0;
    double p50_ms = 0;
    double p99_ms = 0;
    double max_ms = 0;
    std::uint64_t broadcasts_ok = 0;
    std::uint64_t broadcast_deliveries = 0;
    double broadcast_p99_ms = 0;
    std::uint64_t churn_cycles = 0;
    std::uint64_t churn_failed = 0;
};

constexpr const char* kCsvHeader =
    "t_s,rss_mb,open_fds,cpu_cores,ws_connections,queue_ready,queue_leased,posts_ok,posts_failed,delivered,p50_ms,"
    "p99_ms,max_ms,broadcasts_ok,broadcast_deliveries,broadcast_p99_ms,churn_cycles,churn_failed";

std::string csv_line(const Row& r) {
    auto opt = [](double v) { return v < 0 ? std::string() : fixed(v, 0); };
    std::ostringstream o;
    o << fixed(r.t_s, 1) << ',' << fixed(r.rss_mb, 1) << ',' << fixed(r.open_fds, 0) << ',' << fixed(r.cpu_cores, 3)
      << ',' << opt(r.ws_connections) << ',' << opt(r.queue_ready) << ',' << opt(r.queue_leased) << ',' << r.posts_ok
      << ',' << r.posts_failed << ',' << r.delivered << ',' << fixed(r.p50_ms, 3) << ',' << fixed(r.p99_ms, 3) << ','
      << fixed(r.max_ms, 3) << ',' << r.broadcasts_ok << ',' << r.broadcast_deliveries << ','
      << fixed(r.broadcast_p99_ms, 3) << ',' << r.churn_cycles << ',' << r.churn_failed;
    return o.str();
}

}  // namespace

OJson run_soak(SoakConfig cfg) {
    const int clients = cfg.pool.connections;
    const auto capacity = static_cast<std::size_t>(std::ceil(cfg.duration_s * cfg.rate)) + 1;
    cfg.pool.mode = Mode::Deliver;
    cfg.pool.deliver_capacity = capacity;

    Pool pool(cfg.pool);
    log("soak", "connecting " + std::to_string(clients) + " clients");
    Pool::ConnectResult cr = pool.connect_all();
    log("soak", std::to_string(cr.open) + " open, " + std::to_string(cr.failed) + " failed");
    if (cr.failed > 0) throw std::runtime_error("clients failed to connect: " + cr.errors.front());

    std::vector<PostState> state(capacity, PostState::NotSent);
    std::vector<std::int64_t> due_at(capacity);
    std::vector<std::string> ids(static_cast<std::size_t>(clients));
    for (int i = 0; i < clients; ++i) ids[static_cast<std::size_t>(i)] = cfg.pool.id_prefix + std::to_string(i);
    Publishers pubs(PublisherConfig{cfg.api, cfg.publishers, 1}, state, due_at);
    pubs.open_all();
    std::atomic<std::uint64_t> posts_ok{0}, posts_failed{0};
    pubs.on_answer([&](std::uint64_t, int status, std::int64_t, std::int64_t) {
        (status >= 200 && status < 300 ? posts_ok : posts_failed).fetch_add(1, std::memory_order_relaxed);
    });

    const std::int64_t t0 = now_ns() + 100'000'000;
    const std::int64_t end = t0 + static_cast<std::int64_t>(cfg.duration_s * 1e9);
    const double period = 1e9 / cfg.rate;
    for (std::size_t k = 0; k < capacity; ++k)
        due_at[k] = t0 + static_cast<std::int64_t>(static_cast<double>(k) * period);
    // Every message is in the window (latencies of all of them); the window closes long after the end.
    pool.deliver_window(t0, end + 3600'000'000'000LL);
    std::atomic<bool> stop{false};

    // Broadcasts: the demo's POST /msg/broadcast {"msg":"bc=<k> ts=<due>"}; expected deliveries = the clients held
    // when each was acknowledged.
    std::atomic<std::uint64_t> bc_ok{0}, bc_failed{0}, bc_expected{0}, bc_server_reported{0};
    std::thread broadcaster([&] {
        if (cfg.broadcast_rate <= 0) return;
        HttpClient http(cfg.api, cfg.api_host);
        const double bperiod = 1e9 / cfg.broadcast_rate;
        for (std::uint64_t k = 0; !stop.load(); ++k) {
            const auto due = t0 + static_cast<std::int64_t>(static_cast<double>(k) * bperiod);
            if (due >= end) break;
            sleep_until_ns(due);
            try {
                auto r = http.post("/msg/broadcast",
                                   "{\"msg\":\"bc=" + std::to_string(k) + " ts=" + std::to_string(due) + "\"}");
                if (r.status == 200) {
                    ++bc_ok;
                    bc_expected += static_cast<std::uint64_t>(pool.open_connections());
                    auto p = r.body.find("\"connections\":");
                    if (p != std::string::npos)
                        bc_server_reported += std::strtoull(r.body.c_str() + p + 14, nullptr, 10);
                } else {
                    if (bc_failed++ < 3) log("soak", "broadcast: HTTP " + std::to_string(r.status) + " " + r.body);
                }
            } catch (const std::exception& e) {
                if (bc_failed++ < 3) log("soak", std::string("broadcast: ") + e.what());
            }
        }
    });

    // Churn: connect (its own id), one echo, then a close handshake or (every other time) a dropped socket.
    std::atomic<std::uint64_t> churn_ok{0}, churn_failed{0};
    std::mutex churn_mu;
    std::string churn_error;
    const std::string ws_ip = cfg.pool.host.substr(0, cfg.pool.host.rfind(':'));
    const int ws_port = ntohs(cfg.pool.target.sin_port);
    std::thread churner([&] {
        if (cfg.churn_rate <= 0) return;
        const double cperiod = 1e9 / cfg.churn_rate;
        for (std::uint64_t k = 0; !stop.load(); ++k) {
            const auto due = t0 + static_cast<std::int64_t>(static_cast<double>(k) * cperiod);
            if (due >= end) break;
            sleep_until_ns(due);
            try {
                hydra::WsClient c = hydra::WsClient::connect(ws_ip, ws_port, cfg.churn_path,
                                                             {{"X-Request-Id", "churn-" + std::to_string(k)}});
                c.send_text("churn");
                hydra::WsMessage m = c.receive(std::chrono::seconds(5));
                if (m.type != hydra::WsMessage::Type::text) throw std::runtime_error("no echo");
                if (k % 2 == 0) c.close();
                ++churn_ok;
            } catch (const std::exception& e) {
                if (churn_failed++ == 0) {
                    std::lock_guard lock(churn_mu);
                    churn_error = e.what();
                }
            }
        }
    });

    // The sampler: one row per interval.
    std::vector<Row> rows;
    std::mutex rows_mu;
    std::ofstream csv;
    if (!cfg.csv.empty()) {
        csv.open(cfg.csv);
        csv << kCsvHeader << '\n' << std::flush;
    }
    std::thread sampler([&] {
        std::optional<HttpClient> metrics;
        if (!cfg.admin_host.empty()) metrics.emplace(cfg.admin, cfg.admin_host);
        Stats prev = pool.merged_stats();
        std::uint64_t prev_ok = 0, prev_failed = 0, prev_bc = 0, prev_churn = 0, prev_churn_failed = 0;
        // The CPU of the first interval: from a reading at the start.
        std::optional<double> prev_cpu;
        if (metrics) {
            try {
                if (auto resp = metrics->get("/metrics"); resp.status == 200)
                    prev_cpu = parse_metrics(resp.body).cpu_seconds;
            } catch (const std::exception&) {
            }
        }
        if (!prev_cpu && cfg.server_pid > 0) prev_cpu = process_cpu_seconds(cfg.server_pid);
        std::int64_t prev_t = now_ns();
        const auto step = static_cast<std::int64_t>(cfg.interval_s * 1e9);
        // The last row at the end of the run (the grace period after it is not sampled).
        for (std::int64_t next = t0 + step; next <= end + step / 2; next += step) {
            while (now_ns() < next && !stop.load()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
            if (stop.load()) break;
            const std::int64_t now = now_ns();
            Row r;
            r.t_s = static_cast<double>(now - t0) / 1e9;
            MetricsSample m;
            if (metrics) {
                try {
                    auto resp = metrics->get("/metrics");
                    if (resp.status == 200) m = parse_metrics(resp.body);
                } catch (const std::exception& e) {
                    log("soak", std::string("metrics: ") + e.what());
                }
            }
            if (!m.rss_bytes && cfg.server_pid > 0)
                if (auto rss = read_rss(cfg.server_pid)) m.rss_bytes = static_cast<double>(rss->vm_rss_kb) * 1024;
            if (!m.open_fds && cfg.server_pid > 0) m.open_fds = static_cast<double>(open_files(cfg.server_pid));
            if (!m.cpu_seconds && cfg.server_pid > 0) m.cpu_seconds = process_cpu_seconds(cfg.server_pid);
            r.rss_mb = m.rss_bytes.value_or(0) / 1048576.0;
            r.open_fds = m.open_fds.value_or(0);
            const double wall = static_cast<double>(now - prev_t) / 1e9;
            if (m.cpu_seconds && prev_cpu && wall > 0) r.cpu_cores = (*m.cpu_seconds - *prev_cpu) / wall;
            if (m.cpu_seconds) prev_cpu = m.cpu_seconds;
            r.ws_connections = m.ws_connections.value_or(-1);
            r.queue_ready = m.queue_ready.value_or(-1);
            r.queue_leased = m.queue_leased.value_or(-1);
            Stats s = pool.merged_stats();
            Histogram lat = s.deliver_latency.since(prev.deliver_latency);
            Histogram blat = s.broadcast_latency.since(prev.broadcast_latency);
            r.delivered = s.delivered - prev.delivered;
            r.p50_ms = ms(lat.percentile(0.5));
            r.p99_ms = ms(lat.percentile(0.99));
            r.max_ms = ms(lat.max());
            r.broadcast_deliveries = s.broadcast_deliveries - prev.broadcast_deliveries;
            r.broadcast_p99_ms = ms(blat.percentile(0.99));
            const std::uint64_t ok = posts_ok.load(), failed = posts_failed.load(), bc = bc_ok.load(),
                                ch = churn_ok.load(), chf = churn_failed.load();
            r.posts_ok = ok - prev_ok;
            r.posts_failed = failed - prev_failed;
            r.broadcasts_ok = bc - prev_bc;
            r.churn_cycles = ch - prev_churn;
            r.churn_failed = chf - prev_churn_failed;
            prev_ok = ok, prev_failed = failed, prev_bc = bc, prev_churn = ch, prev_churn_failed = chf;
            prev = std::move(s);
            prev_t = now;
            if (csv.is_open()) csv << csv_line(r) << '\n' << std::flush;
            log("soak", "t=" + fixed(r.t_s, 0) + "s rss " + fixed(r.rss_mb, 1) + " MB, fds " + fixed(r.open_fds, 0) +
                            ", cpu " + fixed(r.cpu_cores, 2) + ", queue " + fixed(std::max(0.0, r.queue_ready), 0) +
                            "+" + fixed(std::max(0.0, r.queue_leased), 0) + ", " + std::to_string(r.delivered) +
                            " delivered, p99 " + fixed(r.p99_ms, 2) + " ms, bcast p99 " + fixed(r.broadcast_p99_ms, 2) +
                            " ms");
            std::lock_guard lock(rows_mu);
            rows.push_back(r);
        }
    });

    // The posts, paced; a message that cannot be sent within 5 s of its due time (every connection busy) is
    // skipped and counted.
    // CPU over the whole run: the server, this process, and everything else on the machine (other load disturbs it).
    CpuMeter run_cpu(cfg.server_pid);
    log("soak", "running " + fixed(cfg.duration_s, 0) + " s: " + fixed(cfg.rate, 0) + " sends/s, " +
                    fixed(cfg.broadcast_rate, 0) + " broadcasts/s, " + fixed(cfg.churn_rate, 0) + " churn cycles/s");
    std::string request, path_s, body_s;
    const Template body(R"({"uuid":"{id}","msg":"ts={ts} seq={seq}"})");
    std::uint64_t next = 0, skipped = 0;
    const std::int64_t max_lag = 5'000'000'000;
    const std::int64_t hard_stop = end + 30'000'000'000;
    for (;;) {
        const std::int64_t now = now_ns();
        std::int64_t timeout = 10'000'000;
        if (next < capacity && now < end) {
            const auto due_count =
                now < t0 ? 0
                         : std::min<std::uint64_t>(
                               capacity, static_cast<std::uint64_t>(static_cast<double>(now - t0) / period) + 1);
            while (next < due_count && now - due_at[next] > max_lag) {
                state[next++] = PostState::Skipped;
                ++skipped;
            }
            while (next < due_count && pubs.has_room()) {
                const std::string& id = ids[next % static_cast<std::size_t>(clients)];
                body_s.clear();
                body.render(body_s, id, due_at[next], next);
                request.clear();
                request.append("POST /msg/send HTTP/1.1\r\nHost: ").append(cfg.api_host);
                request.append("\r\nContent-Type: application/json\r\nContent-Length: ");
                request.append(std::to_string(body_s.size())).append("\r\n\r\n").append(body_s);
                pubs.post(next, request, now);
                ++next;
            }
            pubs.flush_all();
            timeout = next < due_count ? 1'000'000
                                       : std::max<std::int64_t>(100'000, due_at[std::min(next, capacity - 1)] - now);
        } else if (pubs.inflight() == 0 || now > hard_stop) {
            break;
        }
        pubs.poll(timeout);
    }
    broadcaster.join();
    churner.join();
    const OJson cpu_json = run_cpu.to_json();
    log("soak",
        "posted " + std::to_string(next) + "; waiting up to " + fixed(cfg.grace_s, 0) + " s for the acknowledged ones");

    // Grace: until every acknowledged message and broadcast delivery arrived, or grace_s.
    const auto& pc = pubs.counters();
    const std::int64_t grace_end = now_ns() + static_cast<std::int64_t>(cfg.grace_s * 1e9);
    for (;;) {
        Stats s = pool.merged_stats();
        if (s.delivered - s.duplicates >= pc.ok && s.broadcast_deliveries >= bc_expected.load()) break;
        if (now_ns() >= grace_end) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    sampler.join();
    stop = true;

    std::uint64_t lost = 0, delivered_unacked = 0;
    std::vector<std::uint64_t> lost_examples;
    for (std::uint64_t k = 0; k < next; ++k) {
        const std::uint8_t got = pool.arrivals(k);
        if (state[k] == PostState::Ok && got == 0) {
            ++lost;
            if (lost_examples.size() < 5) lost_examples.push_back(k);
        } else if (state[k] != PostState::Ok && got > 0) {
            ++delivered_unacked;
        }
    }
    Stats s = pool.merged_stats();

    // Pass criteria.
    std::vector<Row> rs;
    {
        std::lock_guard lock(rows_mu);
        rs = rows;
    }
    auto rows_between = [&](double from_s, double to_s) {
        std::vector<Row> out;
        for (const auto& r : rs)
            if (r.t_s > from_s && r.t_s <= to_s + 0.5) out.push_back(r);
        return out;
    };
    auto med = [](const std::vector<Row>& v, double Row::*field) {
        std::vector<double> x;
        for (const auto& r : v) x.push_back(r.*field);
        return median(x);
    };
    const double warm = std::min(cfg.warmup_s, cfg.duration_s / 2);
    std::vector<Row> after = rows_between(warm, cfg.duration_s);
    OJson pass;
    bool ok_all = true;
    if (after.size() >= 2) {
        const std::size_t n = std::min<std::size_t>(3, after.size() / 2);
        std::vector<Row> first(after.begin(), after.begin() + static_cast<long>(n));
        std::vector<Row> last(after.end() - static_cast<long>(n), after.end());
        const double base = med(first, &Row::rss_mb), fin = med(last, &Row::rss_mb);
        double peak = 0;
        for (const auto& r : after) peak = std::max(peak, r.rss_mb);
        const double drift = base > 0 ? (fin - base) / base : 0;
        const bool ok = drift < cfg.max_rss_drift;
        ok_all = ok_all && ok;
        pass["rss"] = OJson{{"ok", ok},
                            {"after_warmup_mb", round_to(base, 1)},
                            {"end_mb", round_to(fin, 1)},
                            {"peak_after_warmup_mb", round_to(peak, 1)},
                            {"drift", round_to(drift, 4)},
                            {"limit", cfg.max_rss_drift},
                            {"rule", "median RSS of the last " + std::to_string(n) + " samples vs the first " +
                                         std::to_string(n) + " after " + fixed(warm, 0) + " s"}};
    } else {
        ok_all = false;
        pass["rss"] = OJson{{"ok", false}, {"rule", "too few samples after the warm-up"}};
    }
    {
        const bool ok = lost == 0 && skipped == 0;
        ok_all = ok_all && ok;
        pass["lost"] = OJson{{"ok", ok}, {"acknowledged", pc.ok}, {"lost", lost}, {"skipped_unsent", skipped}};
    }
    {
        const std::uint64_t want = bc_expected.load(), got = s.broadcast_deliveries;
        const bool ok = got >= want;
        ok_all = ok_all && ok;
        pass["broadcasts"] = OJson{{"ok", ok},
                                   {"acknowledged", bc_ok.load()},
                                   {"expected_deliveries", want},
                                   {"deliveries", got},
                                   {"missing", want > got ? want - got : 0}};
    }
    {
        const double q = cfg.duration_s / 4;
        const double p2 = med(rows_between(q, 2 * q), &Row::p99_ms), p4 = med(rows_between(3 * q, 4 * q), &Row::p99_ms);
        const bool ok = p2 > 0 && p4 <= cfg.max_p99_ratio * p2;
        ok_all = ok_all && ok;
        pass["p99_flat"] = OJson{{"ok", ok},
                                 {"second_quarter_median_p99_ms", round_to(p2, 3)},
                                 {"last_quarter_median_p99_ms", round_to(p4, 3)},
                                 {"limit_ratio", cfg.max_p99_ratio}};
    }
    {
        const bool ok = s.closed_by_peer == 0;
        ok_all = ok_all && ok;
        pass["clients_kept"] = OJson{{"ok", ok}, {"closed_by_server", s.closed_by_peer}};
    }
    pass["all"] = ok_all;

    OJson rejected = OJson::object();
    for (const auto& [status, n] : pc.rejected) rejected[std::to_string(status)] = n;
    OJson errors = OJson::object();
    for (const auto& [why, n] : pc.errors) errors[why] = n;
    OJson result{
        {"duration_s", cfg.duration_s},
        {"clients", clients},
        {"rate", cfg.rate},
        {"broadcast_rate", cfg.broadcast_rate},
        {"churn_rate", cfg.churn_rate},
        {"interval_s", cfg.interval_s},
        {"posts", OJson{{"sent", pc.sent},
                        {"ok_2xx", pc.ok},
                        {"rejected", rejected},
                        {"lost_in_flight", pc.lost},
                        {"connection_errors", errors},
                        {"skipped_over_max_lag", skipped}}},
        {"deliveries", OJson{{"total", s.delivered},
                             {"lost", lost},
                             {"lost_examples_seq", lost_examples},
                             {"duplicates", s.duplicates},
                             {"misrouted", s.misrouted},
                             {"delivered_without_2xx", delivered_unacked},
                             {"bad_messages", s.bad_messages}}},
        {"latency_ms", s.deliver_latency.to_json_ms()},
        {"broadcast_latency_ms", s.broadcast_latency.to_json_ms()},
        {"broadcasts", OJson{{"ok", bc_ok.load()},
                             {"failed", bc_failed.load()},
                             {"server_reported_connections", bc_server_reported.load()},
                             {"deliveries", s.broadcast_deliveries}}},
        {"churn", OJson{{"cycles", churn_ok.load()}, {"failed", churn_failed.load()}, {"first_error", churn_error}}},
        {"clients_open_at_end", pool.open_connections()},
        {"cpu", cpu_json},
        {"pass", pass}};
    return result;
}

// ---- stream ----

OJson run_stream(const StreamConfig& cfg) {
    const auto capacity = static_cast<std::size_t>(std::ceil(cfg.duration_s * cfg.rate)) + 1;
    std::vector<PostState> state(capacity, PostState::NotSent);
    std::vector<std::int64_t> due_at(capacity);
    Publishers pubs(PublisherConfig{cfg.api, cfg.publishers, 1}, state, due_at);
    // Per second since the start: answers by status (0 = connection broke with the request in flight) and the
    // slowest answer of each status.
    struct Second {
        std::map<int, std::uint64_t> count;
        std::map<int, std::int64_t> slowest_ns;
    };
    std::vector<Second> seconds(static_cast<std::size_t>(cfg.duration_s) + 120);
    const std::int64_t t0 = now_ns() + 100'000'000;
    pubs.on_answer([&](std::uint64_t, int status, std::int64_t sent, std::int64_t now) {
        auto sec = static_cast<std::size_t>(std::max<std::int64_t>(0, now - t0) / 1'000'000'000);
        if (sec >= seconds.size()) return;
        ++seconds[sec].count[status];
        auto& slow = seconds[sec].slowest_ns[status];
        slow = std::max(slow, now - sent);
    });
    // The server may be down at the start: connections are retried by poll().
    const std::int64_t end = t0 + static_cast<std::int64_t>(cfg.duration_s * 1e9);
    const double period = 1e9 / cfg.rate;
    for (std::size_t k = 0; k < capacity; ++k)
        due_at[k] = t0 + static_cast<std::int64_t>(static_cast<double>(k) * period);
    const Template path(cfg.post_path);
    const Template body(cfg.body);
    std::string request, path_s, body_s;
    std::uint64_t next = 0, not_sent = 0;
    const std::int64_t hard_stop = end + 60'000'000'000;
    log("stream", "posting " + fixed(cfg.rate, 0) + "/s for " + fixed(cfg.duration_s, 0) + " s");
    for (;;) {
        const std::int64_t now = now_ns();
        std::int64_t timeout = 10'000'000;
        if (now < end && next < capacity) {
            const auto due_count =
                now < t0 ? 0
                         : std::min<std::uint64_t>(
                               capacity, static_cast<std::uint64_t>(static_cast<double>(now - t0) / period) + 1);
            // While the server is down no connection has room: what falls 1 s behind is not sent at all.
            while (next < due_count && now - due_at[next] > 1'000'000'000) {
                ++next;
                ++not_sent;
            }
            while (next < due_count && pubs.has_room()) {
                const std::string id = "s" + std::to_string(next);
                path_s.clear();
                body_s.clear();
                path.render(path_s, id, due_at[next], next);
                body.render(body_s, id, due_at[next], next);
                request.clear();
                request.append("POST ").append(path_s).append(" HTTP/1.1\r\nHost: ").append(cfg.api_host);
                request.append("\r\nContent-Type: application/json\r\nContent-Length: ");
                request.append(std::to_string(body_s.size())).append("\r\n\r\n").append(body_s);
                pubs.post(next, request, now);
                ++next;
            }
            pubs.flush_all();
            timeout = next < due_count ? 1'000'000 : 500'000;
        } else if (pubs.inflight() == 0 || now > hard_stop) {
            break;
        }
        pubs.poll(timeout);
    }
    const auto& pc = pubs.counters();
    std::uint64_t acked = 0;
    if (!cfg.acked_file.empty()) {
        std::ofstream out(cfg.acked_file);
        for (std::uint64_t k = 0; k < next; ++k)
            if (state[k] == PostState::Ok) {
                out << k << '\n';
                ++acked;
            }
    }
    std::uint64_t unknown = 0;
    for (std::uint64_t k = 0; k < next; ++k)
        if (state[k] == PostState::Lost) ++unknown;
    if (!cfg.seconds_csv.empty()) {
        std::ofstream out(cfg.seconds_csv);
        out << "second,ok,status_503,other_status,broken_in_flight,slowest_ok_ms,slowest_503_ms\n";
        const auto last = static_cast<std::size_t>((now_ns() - t0) / 1'000'000'000) + 1;
        for (std::size_t i = 0; i < std::min(last, seconds.size()); ++i) {
            const auto& sec = seconds[i];
            std::uint64_t ok = 0, s503 = 0, other = 0, broken = 0;
            std::int64_t slow_ok = 0, slow_503 = 0;
            for (const auto& [status, n] : sec.count) {
                if (status >= 200 && status < 300) {
                    ok += n;
                    slow_ok = std::max(slow_ok, sec.slowest_ns.at(status));
                } else if (status == 503) {
                    s503 += n;
                    slow_503 = sec.slowest_ns.at(status);
                } else if (status == 0) {
                    broken += n;
                } else {
                    other += n;
                }
            }
            out << i << ',' << ok << ',' << s503 << ',' << other << ',' << broken << ',' << fixed(ms(slow_ok), 1) << ','
                << fixed(ms(slow_503), 1) << '\n';
        }
    }
    OJson rejected = OJson::object();
    for (const auto& [status, n] : pc.rejected) rejected[std::to_string(status)] = n;
    OJson errors = OJson::object();
    for (const auto& [why, n] : pc.errors) errors[why] = n;
    log("stream", std::to_string(pc.sent) + " sent, " + std::to_string(pc.ok) + " acknowledged, " +
                      std::to_string(unknown) + " in flight when a connection broke, " + std::to_string(not_sent) +
                      " not sent (no connection)");
    return OJson{{"sent", pc.sent},
                 {"acknowledged", pc.ok},
                 {"rejected", rejected},
                 {"broken_in_flight", unknown},
                 {"not_sent_server_down", not_sent},
                 {"connection_errors", errors},
                 {"reconnects", pc.reconnects}};
}

// ---- mailbox ----

OJson run_mailbox(const MailboxConfig& cfg) {
    std::set<std::uint64_t> acked;
    {
        std::ifstream in(cfg.acked_file);
        if (!in) throw std::runtime_error("cannot read " + cfg.acked_file);
        std::uint64_t k;
        while (in >> k) acked.insert(k);
    }
    hydra::WsClient c = hydra::WsClient::connect(cfg.ws_host, cfg.ws_port, "/");
    c.send_text(R"({"service":"/member/login","uname":")" + cfg.uname + R"(","pwd":")" + cfg.pwd + "\"}");
    std::map<std::uint64_t, std::uint32_t> got;
    std::uint64_t frames = 0, other = 0;
    bool logged_in = false;
    const std::int64_t deadline = now_ns() + static_cast<std::int64_t>(cfg.max_s * 1e9);
    const auto quiet = std::chrono::milliseconds(static_cast<std::int64_t>(cfg.quiet_s * 1000));
    while (now_ns() < deadline) {
        hydra::WsMessage m = c.receive(quiet);
        if (m.type == hydra::WsMessage::Type::timeout) break;
        if (m.type != hydra::WsMessage::Type::text) throw std::runtime_error("mailbox: connection ended: " + m.data);
        ++frames;
        if (m.data.find("\"/member/login\"") != std::string::npos) {
            if (m.data.find("\"code\":200") == std::string::npos) throw std::runtime_error("login failed: " + m.data);
            logged_in = true;
            continue;
        }
        const auto p = m.data.find("seq=");
        if (p == std::string::npos) {
            ++other;
            continue;
        }
        ++got[std::strtoull(m.data.c_str() + p + 4, nullptr, 10)];
    }
    std::uint64_t lost = 0, duplicates = 0, extra = 0;
    std::vector<std::uint64_t> lost_examples;
    for (auto k : acked)
        if (!got.count(k)) {
            ++lost;
            if (lost_examples.size() < 10) lost_examples.push_back(k);
        }
    for (const auto& [k, n] : got) {
        duplicates += n - 1;
        if (!acked.count(k)) ++extra;
    }
    log("mailbox", std::to_string(acked.size()) + " acknowledged, " + std::to_string(got.size()) +
                       " distinct delivered, lost " + std::to_string(lost) + ", duplicates " +
                       std::to_string(duplicates));
    return OJson{{"logged_in", logged_in},
                 {"acknowledged", acked.size()},
                 {"frames", frames},
                 {"delivered_distinct", got.size()},
                 {"lost", lost},
                 {"lost_examples_seq", lost_examples},
                 {"duplicates", duplicates},
                 {"delivered_not_acknowledged", extra},
                 {"other_frames", other}};
}

// ---- kafka-mock ----

int run_kafka_mock() {
    char err[512];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    // A producer handle that only hosts the mock cluster.
    rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk) {
        std::cerr << "kafka-mock: " << err << std::endl;
        return 1;
    }
    rd_kafka_mock_cluster_t* mc = rd_kafka_mock_cluster_new(rk, 1);
    if (!mc) {
        std::cerr << "kafka-mock: cannot create the mock cluster" << std::endl;
        rd_kafka_destroy(rk);
        return 1;
    }
    std::cout << "bootstrap " << rd_kafka_mock_cluster_bootstraps(mc) << std::endl;
    std::string line;
    while (std::getline(std::cin, line)) {
        if (line == "down") {
            rd_kafka_mock_broker_set_down(mc, 1);
            std::cout << "down" << std::endl;
        } else if (line == "up") {
            rd_kafka_mock_broker_set_up(mc, 1);
            std::cout << "up" << std::endl;
        } else if (line == "quit") {
            break;
        } else if (!line.empty()) {
            std::cout << "unknown command " << line << std::endl;
        }
    }
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return 0;
}

}  // namespace bench
