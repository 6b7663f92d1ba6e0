// churn: K connect/disconnect cycles, C at a time; the server's memory and open files along the way.
#include <netinet/in.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <hydra/ws_client.h>

#include "scenario.h"

namespace bench::scenario {

// K connect/disconnect cycles, C blocking clients at a time. The server's RssAnon and open files are read before,
// after every tenth of the cycles, and 2 s after the last: a server that keeps anything per closed connection
// (a map entry, a timer, a buffer, a socket) grows linearly; one that cleans up stays flat after the first tenth
// (allocator warm-up).
OJson run_churn(const Options& o) {
    const int port = ntohs(bench::parse_ipv4(o.ws).sin_port);
    const std::string host = o.ws.substr(0, o.ws.rfind(':'));
    const int tenth = std::max(1, o.cycles / 10);
    std::atomic<int> next{0};
    std::atomic<int> done{0};
    std::atomic<long> failed{0};
    std::atomic<long> bad_echoes{0};
    std::mutex mu;
    std::string first_error;
    auto worker = [&](int t) {
        for (int i = next++; i < o.cycles; i = next++) {
            try {
                hydra::WsClient c = hydra::WsClient::connect(
                    host, port, o.path, {{"X-Request-Id", "churn-" + std::to_string(t) + "-" + std::to_string(i)}});
                c.send_text("churn");
                hydra::WsMessage m = c.receive(std::chrono::seconds(5));
                if (m.type != hydra::WsMessage::Type::text || m.data != "churn") ++bad_echoes;
                if (i % 2 == 0) c.close();  // else: the destructor drops the socket, as a crashed client would
            } catch (const std::exception& e) {
                if (failed++ == 0) {
                    std::lock_guard lock(mu);
                    first_error = e.what();
                }
            }
            ++done;
        }
    };
    OJson samples = OJson::array();
    auto sample = [&](int cycles_done) {
        OJson row{{"cycles", cycles_done}};
        if (o.server_pid) {
            auto rss = bench::read_rss(o.server_pid);
            row["rss_anon_kb"] = rss ? OJson(rss->rss_anon_kb) : OJson(nullptr);
            row["open_files"] = bench::open_files(o.server_pid);
        }
        samples.push_back(row);
        return row;
    };
    OJson before = sample(0);
    bench::CpuMeter cpu(o.server_pid);
    const std::int64_t start = bench::now_ns();
    std::vector<std::thread> threads;
    for (int t = 0; t < o.concurrency; ++t) threads.emplace_back(worker, t);
    for (int k = 1; k < 10; ++k) {
        while (done.load() < k * tenth) std::this_thread::sleep_for(std::chrono::milliseconds(5));
        sample(done.load());
    }
    for (auto& th : threads) th.join();
    const double seconds = static_cast<double>(bench::now_ns() - start) / 1e9;
    OJson cpu_json = cpu.to_json();
    std::this_thread::sleep_for(std::chrono::seconds(2));  // closes in flight on the server finish
    OJson end = sample(o.cycles);

    OJson result{{"cycles", o.cycles},
                 {"concurrency", o.concurrency},
                 {"failed", failed.load()},
                 {"bad_echoes", bad_echoes.load()},
                 {"seconds", round_to(seconds, 3)},
                 {"cycles_per_s", round_to(o.cycles / seconds, 1)},
                 {"cpu", cpu_json},
                 {"samples", samples}};
    if (!first_error.empty()) result["first_error"] = first_error;
    if (o.server_pid && end["rss_anon_kb"].is_number() && samples.size() > 1 && samples[1]["rss_anon_kb"].is_number()) {
        // From the first tenth (allocator and tables warmed up) to the end.
        const OJson& warm = samples[1];
        const double cycles_after = o.cycles - warm["cycles"].get<double>();
        const double growth_kb = end["rss_anon_kb"].get<double>() - warm["rss_anon_kb"].get<double>();
        result["server"] = OJson{
            {"rss_anon_growth_kb_after_first_tenth", growth_kb},
            {"rss_anon_bytes_per_cycle_after_first_tenth", round_to(growth_kb * 1024 / cycles_after, 3)},
            {"open_files_before", before["open_files"]},
            {"open_files_end", end["open_files"]},
        };
    }
    log("churn: " + std::to_string(o.cycles) + " cycles in " + std::to_string(seconds) + " s, " +
        std::to_string(failed.load()) + " failed");
    return result;
}

}  // namespace bench::scenario
