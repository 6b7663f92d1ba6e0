// stream: post at a rate with no clients, through a server that may die and come back; record what was
// acknowledged (tests/faults/*.sh compares it with what a mailbox read).
#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "publishers.h"
#include "soak_bench.h"

namespace bench {

OJson run_stream(const StreamConfig& cfg) {
    const auto capacity = static_cast<std::size_t>(std::ceil(cfg.duration_s * cfg.rate)) + 1;
    std::vector<PostState> state(capacity, PostState::not_sent);
    std::vector<std::int64_t> due_at;
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
    due_at = due_times(t0, cfg.rate, capacity);
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
            const std::uint64_t due = due_count(now, t0, cfg.rate, capacity);
            // While the server is down no connection has room: what falls 1 s behind is not sent at all.
            while (next < due && now - due_at[next] > 1'000'000'000) {
                ++next;
                ++not_sent;
            }
            while (next < due && pubs.has_room()) {
                std::string id = "s";  // not "s" + to_string(): GCC 12's -Wrestrict misfires on it at -O2
                id += std::to_string(next);
                path_s.clear();
                body_s.clear();
                path.render(path_s, id, due_at[next], next);
                body.render(body_s, id, due_at[next], next);
                build_post(request, path_s, cfg.api_host, "application/json", body_s);
                pubs.post(next, request, now);
                ++next;
            }
            pubs.flush_all();
            timeout = next < due ? 1'000'000 : 500'000;
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
            if (state[k] == PostState::ok) {
                out << k << '\n';
                ++acked;
            }
    }
    std::uint64_t unknown = 0;
    for (std::uint64_t k = 0; k < next; ++k)
        if (state[k] == PostState::lost) ++unknown;
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
    log("stream", std::to_string(pc.sent) + " sent, " + std::to_string(pc.ok) + " acknowledged, " +
                      std::to_string(unknown) + " in flight when a connection broke, " + std::to_string(not_sent) +
                      " not sent (no connection)");
    return OJson{{"sent", pc.sent},
                 {"acknowledged", pc.ok},
                 {"rejected", pc.rejected_json()},
                 {"broken_in_flight", unknown},
                 {"not_sent_server_down", not_sent},
                 {"connection_errors", pc.errors_json()},
                 {"reconnects", pc.reconnects}};
}

}  // namespace bench
