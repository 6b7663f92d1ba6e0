// `hydra-bench queue`: push throughput (push and push_batch), consume throughput and push→handler latency of a
// queue backend, in-process.
//   hydra-bench queue --backend sqlite [--sync normal|full] [--pushers 64] [--seconds 5] [--rate 10000]
//                     [--batch 1000] [--batch-pushers 4] [--fill 200000] [--concurrency 8]
//                     [--in-flight 1024] [--phases push,async,batch,consume,latency,floor]
//   hydra-bench queue --backend kafka [--brokers HOST:PORT] [--kafka-property NAME=VALUE]...
//                     (no --brokers: an in-process mock cluster)
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <semaphore>
#include <string>
#include <thread>
#include <vector>

#include <SQLiteCpp/SQLiteCpp.h>

#include <condition_variable>

#include <hydra/json.h>

#include "mqc/consumer.h"
#include "queue/kafka/kafka_queue.h"
#include "queue/sqlite/parts.h"
#include "queue/sqlite/schema.h"
#include "queue/sqlite/sqlite_queue.h"
#include "sqlite_rows.h"

namespace {

using Clock = std::chrono::steady_clock;

std::int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

struct Options {
    std::string backend = "sqlite";
    std::string sync = "normal";
    std::string brokers;
    int pushers = 64;
    double seconds = 5;
    int rate = 10000;       // messages/s for the latency run
    int batch = 1000;       // messages per push_batch
    int batch_pushers = 4;  // threads calling push_batch
    int in_flight = 1024;   // push_async() calls outstanding in the async run
    long fill = 200000;     // messages drained by the consume run
    int concurrency = 8;    // consumer concurrency (consume and latency runs)
    std::string phases = "push,async,batch,consume,latency";
    std::map<std::string, std::string> kafka_properties;  // --kafka-property NAME=VALUE (repeatable)
    std::string out;

    bool runs(const std::string& phase) const {
        return ("," + phases + ",").find("," + phase + ",") != std::string::npos;
    }
};

double percentile(std::vector<double>& v, double p) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
}

// A Kafka mock cluster inside this process, for runs without a broker.
struct MockCluster {
    rd_kafka_t* rk = nullptr;
    rd_kafka_mock_cluster_t* cluster = nullptr;
    std::string bootstrap;
    MockCluster() {
        char err[256];
        rd_kafka_conf_t* conf = rd_kafka_conf_new();
        rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
        cluster = rd_kafka_mock_cluster_new(rk, 1);
        bootstrap = rd_kafka_mock_cluster_bootstraps(cluster);
    }
    ~MockCluster() {
        rd_kafka_mock_cluster_destroy(cluster);
        rd_kafka_destroy(rk);
    }
};

std::unique_ptr<hydra::queue::Backend> make(const Options& o, const std::string& path, const std::string& brokers) {
    if (o.backend == "kafka") {
        hydra::queue::KafkaQueue::Settings s;
        s.brokers = brokers;
        s.properties["session.timeout.ms"] = "6000";
        for (const auto& [name, value] : o.kafka_properties) s.properties[name] = value;
        s.push_timeout = std::chrono::milliseconds(10000);
        return std::make_unique<hydra::queue::KafkaQueue>(s);
    }
    hydra::queue::SqliteQueue::Settings s;
    s.path = path;
    s.full_sync = o.sync == "full";
    s.push_timeout = std::chrono::milliseconds(10000);
    return std::make_unique<hydra::queue::SqliteQueue>(s);
}

// The floor of the `push` phase on SQLite: the least a durable queue with a thread per push can do. Each pusher
// appends its message to the current batch and sleeps on the batch's futex word until a committer thread has
// inserted the batch (32, 8, then 1 row per INSERT, as the SQLite backend does, WAL, the same synchronous setting),
// committed it and woken all its pushers with one FUTEX_WAKE: the backend's own hand-over (see SqliteQueue::Batch),
// without anything else it does (ids handed back, headers, hand-off to consumers, metrics, timeouts). The table:
//   minimal   (id INTEGER PRIMARY KEY, payload): what any durable queue must write;
//   queue     the SQLite backend's database (open_database: its schema, pragmas and locking), rows into its messages
//             table with its AUTOINCREMENT and its index on (queue, visible_at, id);
//   none      no SQLite work at all: the hand-over alone.
// What this reaches is what a queue with this pattern and that table can reach on this machine (-1: a commit
// failed).
enum class FloorTable { minimal, queue, none };

long floor_pushes_per_s(const Options& o, const std::string& path, const std::string& payload, FloorTable table) {
    std::unique_ptr<SQLite::Database> db;
    std::optional<bench::RowInserter> inserter;
    if (table == FloorTable::queue) {  // the backend's own database and messages table
        db = hydra::queue::sqlite::open_database(path, 5000, o.sync == "full");
        inserter.emplace(*db,
                         "INSERT INTO messages (payload, queue, headers, visible_at, created_at, attempts, leased) "
                         "VALUES ",
                         "(?, 'bench:floor', '{}', 1, 1, 0, 0)");
    } else {
        std::filesystem::create_directories(std::filesystem::path(path).parent_path());
        db = std::make_unique<SQLite::Database>(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
        db->exec("PRAGMA journal_mode=WAL");
        db->exec(o.sync == "full" ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
        db->exec("CREATE TABLE m (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)");
        inserter.emplace(*db, "INSERT INTO m (payload) VALUES ", "(?)");
    }
    auto store = [&](const std::vector<std::string>& messages) {
        SQLite::Transaction tx(*db);
        inserter->insert(messages);
        tx.commit();
    };

    struct Batch {
        std::atomic<int> state{0};  // 1 once committed
        std::vector<std::string> messages;
    };
    std::mutex mu;
    std::condition_variable has_work;
    auto current = std::make_shared<Batch>();
    bool stop = false;
    std::atomic<long> pushed{0};
    std::atomic<bool> failed{false};

    std::thread committer([&] {
        for (;;) {
            std::shared_ptr<Batch> batch;
            {
                std::unique_lock lock(mu);
                has_work.wait(lock, [&] { return stop || !current->messages.empty(); });
                if (current->messages.empty()) return;
                batch = std::exchange(current, std::make_shared<Batch>());
            }
            try {
                if (table != FloorTable::none) store(batch->messages);
            } catch (const std::exception& e) {  // reported; the pushers of the batch still wake up
                std::cerr << "hydra-bench queue: floor commit failed: " << e.what() << "\n";
                failed.store(true);
            }
            batch->state.store(1);
            hydra::queue::sqlite::futex_wake(batch->state, INT_MAX);
        }
    });
    std::atomic<bool> done{false};
    std::vector<std::thread> threads;
    auto t0 = Clock::now();
    for (int t = 0; t < o.pushers; ++t)
        threads.emplace_back([&] {
            while (!done) {
                std::shared_ptr<Batch> mine;
                bool first = false;
                {
                    std::lock_guard lock(mu);
                    current->messages.push_back(payload);
                    first = current->messages.size() == 1;
                    mine = current;
                }
                if (first) has_work.notify_one();
                while (mine->state.load() == 0)
                    syscall(SYS_futex, reinterpret_cast<int*>(&mine->state), FUTEX_WAIT_PRIVATE, 0, nullptr, nullptr,
                            0);
                pushed.fetch_add(1, std::memory_order_relaxed);
            }
        });
    std::this_thread::sleep_for(std::chrono::duration<double>(o.seconds));
    done = true;
    for (auto& t : threads) t.join();
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    {
        std::lock_guard lock(mu);
        stop = true;
    }
    has_work.notify_one();
    committer.join();
    if (failed) return -1;
    return static_cast<long>(static_cast<double>(pushed) / secs);
}

}  // namespace

int run_queue_bench(const std::vector<std::string>& args) {
    Options o;
    for (std::size_t i = 0; i + 1 < args.size(); i += 2) {
        const std::string& k = args[i];
        const std::string& v = args[i + 1];
        if (k == "--backend")
            o.backend = v;
        else if (k == "--sync")
            o.sync = v;
        else if (k == "--brokers")
            o.brokers = v;
        else if (k == "--pushers")
            o.pushers = std::stoi(v);
        else if (k == "--seconds")
            o.seconds = std::stod(v);
        else if (k == "--rate")
            o.rate = std::stoi(v);
        else if (k == "--batch")
            o.batch = std::stoi(v);
        else if (k == "--batch-pushers")
            o.batch_pushers = std::stoi(v);
        else if (k == "--in-flight")
            o.in_flight = std::max(1, std::stoi(v));
        else if (k == "--fill")
            o.fill = std::stol(v);
        else if (k == "--concurrency")
            o.concurrency = std::stoi(v);
        else if (k == "--phases")
            o.phases = v;
        else if (k == "--kafka-property" && v.find('=') != std::string::npos)
            o.kafka_properties[v.substr(0, v.find('='))] = v.substr(v.find('=') + 1);
        else if (k == "--out")
            o.out = v;
        else {
            std::cerr << "hydra-bench queue: unknown option " << k << "\n";
            return 2;
        }
    }
    std::unique_ptr<MockCluster> mock;
    std::string brokers = o.brokers;
    if (o.backend == "kafka" && brokers.empty()) {
        mock = std::make_unique<MockCluster>();
        brokers = mock->bootstrap;
        // The mock broker holds a fetch that finds no data for the whole fetch.wait.max.ms (500 ms by default),
        // where a real broker answers it as soon as data arrives: without this, push→handler measures that wait.
        o.kafka_properties.emplace("fetch.wait.max.ms", "5");
    }
    auto dir = std::filesystem::temp_directory_path() / ("hydra-queue-bench-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    const std::string payload(64, 'x');
    hydra::Json result = {{"backend", o.backend}, {"pushers", o.pushers}};
    if (o.backend == "sqlite") result["synchronous"] = o.sync;

    // 1. Throughput: many concurrent pushers, each push waits until durable.
    if (o.runs("push")) {
        auto q = make(o, (dir / "throughput.db").string(), brokers);
        q->push("bench:warmup", payload);
        std::atomic<long> pushed{0};
        std::atomic<bool> stop{false};
        std::vector<std::thread> threads;
        auto t0 = Clock::now();
        for (int t = 0; t < o.pushers; ++t)
            threads.emplace_back([&] {
                while (!stop) {
                    q->push("bench:throughput", payload);
                    ++pushed;
                }
            });
        std::this_thread::sleep_for(std::chrono::duration<double>(o.seconds));
        stop = true;
        for (auto& t : threads) t.join();
        double secs = std::chrono::duration<double>(Clock::now() - t0).count();
        result["push_per_s"] = static_cast<long>(static_cast<double>(pushed) / secs);
        q->stop(std::chrono::milliseconds(1000));
    }

    // 1a. The floor of 1 on this machine: the same pushers and hand-over with three tables (SQLite only; see
    // floor_pushes_per_s).
    if (o.runs("floor") && o.backend == "sqlite") {
        const std::string db = (dir / "floor").string();
        result["floor_push_per_s"] = {
            {"minimal_table", floor_pushes_per_s(o, db + "-minimal.db", payload, FloorTable::minimal)},
            {"queue_table", floor_pushes_per_s(o, db + "-queue.db", payload, FloorTable::queue)},
            {"no_table", floor_pushes_per_s(o, db + "-none.db", payload, FloorTable::none)}};
    }

    // 1b. Throughput without waiting threads: one thread keeps --in-flight push_async() calls outstanding (how
    // API handlers registered with App::api_async push), each completed by its commit or delivery report.
    if (o.runs("async")) {
        auto q = make(o, (dir / "async.db").string(), brokers);
        q->push("bench:warmup", payload);
        std::counting_semaphore<> room(o.in_flight);
        std::atomic<long> pushed{0}, failed{0};
        std::atomic<bool> stop{false};
        auto t0 = Clock::now();
        std::thread pusher([&] {
            while (!stop) {
                room.acquire();
                q->push_async("bench:async", payload, {}, std::chrono::milliseconds(0),
                              [&](const hydra::QueueError* e) {
                                  ++(e == nullptr ? pushed : failed);
                                  room.release();
                              });
            }
        });
        std::this_thread::sleep_for(std::chrono::duration<double>(o.seconds));
        stop = true;
        pusher.join();
        double secs = std::chrono::duration<double>(Clock::now() - t0).count();
        long done = pushed.load();
        for (int i = 0; i < o.in_flight; ++i) room.acquire();  // the rest completes before the queue goes
        result["in_flight"] = o.in_flight;
        result["push_async_per_s"] = static_cast<long>(static_cast<double>(done) / secs);
        result["push_async_failed"] = failed.load();
        q->stop(std::chrono::milliseconds(1000));
    }

    // 2. Batched throughput: a few threads, each push_batch() of --batch messages waits until all are durable.
    if (o.runs("batch")) {
        auto q = make(o, (dir / "batch.db").string(), brokers);
        q->push("bench:warmup", payload);
        const std::vector<std::string> batch(static_cast<std::size_t>(o.batch), payload);
        std::atomic<long> pushed{0};
        std::atomic<bool> stop{false};
        std::vector<std::thread> threads;
        auto t0 = Clock::now();
        for (int t = 0; t < o.batch_pushers; ++t)
            threads.emplace_back([&] {
                while (!stop) {
                    q->push_batch("bench:batch", batch);
                    pushed += o.batch;
                }
            });
        std::this_thread::sleep_for(std::chrono::duration<double>(o.seconds));
        stop = true;
        for (auto& t : threads) t.join();
        double secs = std::chrono::duration<double>(Clock::now() - t0).count();
        result["batch"] = o.batch;
        result["batch_pushers"] = o.batch_pushers;
        result["push_batch_per_s"] = static_cast<long>(static_cast<double>(pushed) / secs);
        q->stop(std::chrono::milliseconds(1000));
    }

    // 3. Consume throughput: --fill messages stored first, then drained by a consumer with a trivial handler;
    // timed from the first handled message to the last.
    if (o.runs("consume")) {
        auto q = make(o, (dir / "consume.db").string(), brokers);
        const std::vector<std::string> batch(1000, payload);
        for (long n = 0; n < o.fill; n += 1000) q->push_batch("bench:consume", batch);
        long total = (o.fill + 999) / 1000 * 1000;
        std::atomic<long> consumed{0};
        std::atomic<std::int64_t> first_ns{0}, last_ns{0};
        hydra::mqc::consume(*q,
                            {"bench:consume", "bench.consume", o.concurrency,
                             [&](const hydra::Message&) -> std::optional<std::string> {
                                 std::int64_t t = now_ns();
                                 std::int64_t zero = 0;
                                 first_ns.compare_exchange_strong(zero, t);
                                 if (++consumed == total) last_ns = t;
                                 return std::nullopt;
                             }},
                            {});
        q->start();
        auto deadline = Clock::now() + std::chrono::seconds(120);
        while (consumed < total && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(20));
        q->stop(std::chrono::milliseconds(2000));
        result["consume_messages"] = consumed.load();
        if (consumed >= total && last_ns > first_ns)
            result["consume_per_s"] =
                static_cast<long>(static_cast<double>(total - 1) * 1e9 / static_cast<double>(last_ns - first_ns));
    }

    // 4. Latency: a steady rate of pushes, a consumer measuring push→handler time.
    if (o.runs("latency")) {
        auto q = make(o, (dir / "latency.db").string(), brokers);
        std::mutex mu;
        std::vector<double> latencies_ms;
        std::atomic<long> consumed{0};
        hydra::mqc::consume(*q,
                            {"bench:latency", "bench.latency", o.concurrency,
                             [&](const hydra::Message& m) -> std::optional<std::string> {
                                 double ms = static_cast<double>(now_ns() - std::stoll(m.payload.substr(0, 20))) / 1e6;
                                 std::lock_guard lock(mu);
                                 latencies_ms.push_back(ms);
                                 ++consumed;
                                 return std::nullopt;
                             }},
                            {});
        q->start();
        q->push("bench:latency", std::to_string(now_ns()));  // warm-up: consumer joined and running
        for (int i = 0; i < 300 && consumed == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
        {
            std::lock_guard lock(mu);
            latencies_ms.clear();
        }
        long target = static_cast<long>(o.rate * o.seconds);
        int threads_n = std::max(1, std::min(o.pushers, 16));
        std::vector<std::thread> threads;
        auto start = Clock::now();
        std::atomic<long> next{0};
        for (int t = 0; t < threads_n; ++t)
            threads.emplace_back([&] {
                for (;;) {
                    long n = next++;
                    if (n >= target) return;
                    auto due = start + std::chrono::nanoseconds(static_cast<std::int64_t>(1e9 * n / o.rate));
                    std::this_thread::sleep_until(due);
                    char buf[32];
                    std::snprintf(buf, sizeof buf, "%020lld", static_cast<long long>(now_ns()));
                    q->push("bench:latency", std::string(buf) + payload.substr(0, 44));
                }
            });
        for (auto& t : threads) t.join();
        auto deadline = Clock::now() + std::chrono::seconds(30);
        while (consumed < target + 1 && Clock::now() < deadline)
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        q->stop(std::chrono::milliseconds(2000));
        std::lock_guard lock(mu);
        result["latency_rate_per_s"] = o.rate;
        result["latency_messages"] = latencies_ms.size();
        result["push_to_handler_p50_ms"] = percentile(latencies_ms, 0.50);
        result["push_to_handler_p99_ms"] = percentile(latencies_ms, 0.99);
    }
    std::filesystem::remove_all(dir);
    std::cout << result.dump(2) << std::endl;
    if (!o.out.empty()) {
        FILE* f = std::fopen(o.out.c_str(), "w");
        if (f) {
            std::fputs(result.dump(2).c_str(), f);
            std::fclose(f);
        }
    }
    return 0;
}
