// idle: open N connections and hold them; the server's RSS per connection.
#include <unistd.h>

#include <chrono>
#include <optional>
#include <thread>

#include "scenario.h"

namespace bench::scenario {

OJson run_idle(const Options& o) {
    OJson result;
    std::optional<bench::Rss> before;
    if (o.server_pid) before = bench::read_rss(o.server_pid);
    bench::Pool pool(pool_config(o, bench::Mode::idle));
    bench::CpuMeter cpu(o.server_pid);
    auto r = connect_pool(pool, o);
    result["connect"] = connect_json(r, pool);
    result["connect"]["cpu"] = cpu.to_json();
    std::this_thread::sleep_for(std::chrono::duration<double>(o.settle_s));
    std::optional<bench::Rss> after;
    if (o.server_pid) after = bench::read_rss(o.server_pid);
    if (o.hold_s > 0) std::this_thread::sleep_for(std::chrono::duration<double>(o.hold_s));
    bench::Stats s = pool.merged_stats();
    result["held"] = pool.open_connections();
    result["closed_by_server"] = s.closed_by_peer;
    result["settle_s"] = o.settle_s;
    if (o.server_pid) {
        OJson srv{{"pid", o.server_pid}, {"before", rss_json(before)}, {"after", rss_json(after)}};
        if (before && after && r.open > 0) {
            srv["bytes_per_conn_vm_rss"] =
                round_to(static_cast<double>(after->vm_rss_kb - before->vm_rss_kb) * 1024.0 / r.open, 1);
            srv["bytes_per_conn_rss_anon"] =
                round_to(static_cast<double>(after->rss_anon_kb - before->rss_anon_kb) * 1024.0 / r.open, 1);
        }
        result["server"] = srv;
    }
    result["client_rss"] = rss_json(bench::read_rss(getpid()));
    return result;
}

}  // namespace bench::scenario
