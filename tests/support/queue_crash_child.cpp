// Child process of the queue crash test: pushes and consumes on one SQLite queue until killed.
// stdout lines: "pushed <n>" after push() returned (the message is durable), "consumed <n>" in the handler.
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "consumed.h"
#include "queue/sqlite/sqlite_queue.h"

namespace {
void say(const std::string& line) {
    std::string l = line + "\n";
    [[maybe_unused]] ssize_t n = ::write(1, l.data(), l.size());  // one write per line: never torn by a kill
}
}  // namespace

int main(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: queue_crash_child DB FIRST_NUMBER\n");
        return 2;
    }
    hydra::queue::SqliteQueue::Settings s;
    s.path = argv[1];
    s.lease = std::chrono::milliseconds(300);  // redeliver quickly what a killed child had taken
    s.poll_interval = std::chrono::milliseconds(20);
    hydra::mqc::RetryPolicy retry;
    retry.max_attempts = 1000;
    retry.backoff = std::chrono::milliseconds(1);
    test::Consumed<hydra::queue::SqliteQueue> q(s, retry);
    q.subscribe({"crash:test", "crash", 4, [](const hydra::Message& m) { say("consumed " + m.payload); }});
    q.start();
    long next = std::atol(argv[2]);
    std::vector<std::thread> pushers;
    std::atomic<long> counter{next};
    for (int t = 0; t < 4; ++t) {
        pushers.emplace_back([&] {
            for (;;) {
                long n = counter++;
                q.push("crash:test", std::to_string(n));
                say("pushed " + std::to_string(n));
                if (n % 64 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
            }
        });
    }
    for (auto& t : pushers) t.join();
}
