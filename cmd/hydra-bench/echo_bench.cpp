// echo: N connections, each keeping W messages in flight; round trips/s, latency, server CPU per message.
#include <chrono>
#include <optional>
#include <thread>

#include "scenario.h"

namespace bench::scenario {

OJson run_echo(const Options& o) {
    OJson result;
    bench::Pool pool(pool_config(o, bench::Mode::echo));
    auto r = connect_pool(pool, o);
    result["connect"] = connect_json(r, pool);
    result["window"] = o.window;
    result["message_bytes"] = o.message_bytes;
    result["warmup_s"] = o.warmup_s;
    result["duration_s"] = o.duration_s;
    std::optional<bench::Rss> before;
    if (o.server_pid) before = bench::read_rss(o.server_pid);
    std::int64_t start = bench::now_ns() + 10'000'000;
    auto from = start + static_cast<std::int64_t>(o.warmup_s * 1e9);
    auto to = from + static_cast<std::int64_t>(o.duration_s * 1e9);
    log("echo: warmup " + std::to_string(o.warmup_s) + " s, measuring " + std::to_string(o.duration_s) + " s");
    pool.echo_start(from, to);
    bench::sleep_until_ns(from);
    bench::CpuMeter cpu(o.server_pid);
    bench::sleep_until_ns(to);
    result["cpu"] = cpu.to_json();
    pool.echo_stop();
    std::optional<bench::Rss> during;
    if (o.server_pid) during = bench::read_rss(o.server_pid);
    auto drain_deadline = bench::now_ns() + 3'000'000'000;
    while (bench::now_ns() < drain_deadline && pool.merged_stats().inflight > 0)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    bench::Stats s = pool.merged_stats();
    result["round_trips"] = s.echo_in_window;
    result["msgs_per_s"] = round_to(static_cast<double>(s.echo_in_window) / o.duration_s, 1);
    result["latency_ms"] = s.echo_latency.to_json_ms();
    // One round trip = one message read and one written by the server.
    result["server_cpu_us_per_msg"] = cpu_us_per_msg(result["cpu"], s.echo_in_window);
    result["unanswered_at_end"] = s.inflight;
    result["bad_echoes"] = s.echo_bad;
    result["closed_by_server"] = s.closed_by_peer;
    result["still_open"] = pool.open_connections();
    if (o.server_pid)
        result["server"] = OJson{{"pid", o.server_pid}, {"before", rss_json(before)}, {"end", rss_json(during)}};
    return result;
}

}  // namespace bench::scenario
