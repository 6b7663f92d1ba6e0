// soak: hold clients for a long run under posts, broadcasts and churn; sample the server; check every message.
#include "soak_bench.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <hydra/ws_client.h>

#include "publishers.h"

namespace bench {

namespace {

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
    cfg.pool.mode = Mode::deliver;
    cfg.pool.deliver_capacity = capacity;

    Pool pool(cfg.pool);
    log("soak", "connecting " + std::to_string(clients) + " clients");
    Pool::ConnectResult cr = pool.connect_all();
    log("soak", std::to_string(cr.open) + " open, " + std::to_string(cr.failed) + " failed");
    if (cr.failed > 0) throw std::runtime_error("clients failed to connect: " + cr.errors.front());

    std::vector<PostState> state(capacity, PostState::not_sent);
    std::vector<std::int64_t> due_at;
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
    due_at = due_times(t0, cfg.rate, capacity);
    // Every message is in the window (latencies of all of them); the window closes long after the end.
    pool.deliver_window(t0, end + 3600'000'000'000LL);
    std::atomic<bool> stop{false};

    // Broadcasts: the demo's POST /msg/broadcast {"msg":"bc=<k> ts=<due>"}; expected deliveries = the clients held
    // when each was acknowledged.
    std::atomic<std::uint64_t> bc_ok{0}, bc_failed{0}, bc_expected{0}, bc_server_reported{0};
    std::thread broadcaster([&] {
        if (cfg.broadcast_rate <= 0) return;
        HttpClient http(cfg.api, cfg.api_host);
        run_paced(t0, end, cfg.broadcast_rate, stop, [&](std::uint64_t k, std::int64_t due) {
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
        });
    });

    // Churn: connect (its own id), one echo, then a close handshake or (every other time) a dropped socket.
    std::atomic<std::uint64_t> churn_ok{0}, churn_failed{0};
    std::mutex churn_mu;
    std::string churn_error;
    const std::string ws_ip = cfg.pool.host.substr(0, cfg.pool.host.rfind(':'));
    const int ws_port = ntohs(cfg.pool.target.sin_port);
    std::thread churner([&] {
        run_paced(t0, end, cfg.churn_rate, stop, [&](std::uint64_t k, std::int64_t) {
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
        });
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
    std::string request, body_s;
    const Template body(R"({"uuid":"{id}","msg":"ts={ts} seq={seq}"})");
    std::uint64_t next = 0, skipped = 0;
    const std::int64_t max_lag = 5'000'000'000;
    const std::int64_t hard_stop = end + 30'000'000'000;
    for (;;) {
        const std::int64_t now = now_ns();
        std::int64_t timeout = 10'000'000;
        if (next < capacity && now < end) {
            const std::uint64_t due = due_count(now, t0, cfg.rate, capacity);
            while (next < due && now - due_at[next] > max_lag) {
                state[next++] = PostState::skipped;
                ++skipped;
            }
            while (next < due && pubs.has_room()) {
                const std::string& id = ids[next % static_cast<std::size_t>(clients)];
                body_s.clear();
                body.render(body_s, id, due_at[next], next);
                build_post(request, "/msg/send", cfg.api_host, "application/json", body_s);
                pubs.post(next, request, now);
                ++next;
            }
            pubs.flush_all();
            timeout =
                next < due ? 1'000'000 : std::max<std::int64_t>(100'000, due_at[std::min(next, capacity - 1)] - now);
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
        if (state[k] == PostState::ok && got == 0) {
            ++lost;
            if (lost_examples.size() < 5) lost_examples.push_back(k);
        } else if (state[k] != PostState::ok && got > 0) {
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

    OJson result{
        {"duration_s", cfg.duration_s},
        {"clients", clients},
        {"rate", cfg.rate},
        {"broadcast_rate", cfg.broadcast_rate},
        {"churn_rate", cfg.churn_rate},
        {"interval_s", cfg.interval_s},
        {"posts", OJson{{"sent", pc.sent},
                        {"ok_2xx", pc.ok},
                        {"rejected", pc.rejected_json()},
                        {"lost_in_flight", pc.lost},
                        {"connection_errors", pc.errors_json()},
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

}  // namespace bench
