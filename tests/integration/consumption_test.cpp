// Consumption as the MQC server does it (mqc::consume), the same cases against both backends: a SQLite file and
// librdkafka's in-process mock cluster. Acknowledgement, retries with backoff, dead letters with the last error,
// concurrency per subscription, a failing handler beside working ones, a graceful stop with a handler in flight,
// delayed messages. What only one backend does (leases, partitions, the CLI) is in sqlite_queue and kafka_queue.
#include <boost/test/unit_test.hpp>

#include <pthread.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "mqc/consumer.h"
#include "queue/kafka/kafka_queue.h"
#include "queue/sqlite/sqlite_queue.h"
#include "support/kafka_cluster.h"
#include "support/temp.h"
#include "support/wait.h"

using hydra::Message;
using hydra::mqc::RetryPolicy;
using hydra::queue::Backend;
using hydra::queue::KafkaQueue;
using hydra::queue::SqliteQueue;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
using test::mock;
using test::under_tsan;

namespace {

struct DeadLetter {
    std::string payload;
    std::string error;
    int attempts = 0;
};

// One backend under test.
struct Kind {
    std::string name;
    // A backend on this kind's store (the same file, the same cluster): several in one case share it.
    std::function<std::unique_ptr<Backend>()> make;
    // Gets `queue` ready (Kafka: its topic and dead letter topic, one partition each, so that order is defined).
    std::function<void(const std::string& queue)> prepare;
    // The dead letters of `queue`, once there are `n`.
    std::function<std::vector<DeadLetter>(const std::string& queue, std::size_t n)> dead_letters;
    // After a stop (everything settled): how many dead letters `queue` has.
    std::function<std::size_t(const std::string& queue)> dead_letter_count;
    // After a stop: the payload of the message of `queue` the group would get next (the oldest unacknowledged).
    std::function<std::string(const std::string& queue, const std::string& group)> next_unacknowledged;
};

Kind sqlite_kind() {
    const std::string path = test::temp_path("consumption.db");
    Kind k;
    k.name = "sqlite";
    k.make = [path] {
        SqliteQueue::Settings s;
        s.path = path;
        s.poll_interval = 50ms;
        return std::make_unique<SqliteQueue>(s);
    };
    k.prepare = [](const std::string&) {};
    k.dead_letters = [path](const std::string& queue, std::size_t n) {
        std::vector<DeadLetter> out;
        test::wait_until([&] { return SqliteQueue::dead_letters(path, queue, 100).size() >= n; }, 20000ms);
        for (const auto& d : SqliteQueue::dead_letters(path, queue, 100))
            out.push_back({d["payload"], d["error"], d["attempts"]});
        return out;
    };
    k.dead_letter_count = [path](const std::string& queue) {
        return SqliteQueue::dead_letters(path, queue, 100).size();
    };
    k.next_unacknowledged = [path](const std::string& queue, const std::string&) {
        auto rows = SqliteQueue::peek(path, queue, 1);
        return rows.empty() ? std::string() : rows[0]["payload"].get<std::string>();
    };
    return k;
}

Kind kafka_kind() {
    Kind k;
    k.name = "kafka";
    k.make = [] {
        KafkaQueue::Settings s;
        s.brokers = mock().bootstraps();
        return std::make_unique<KafkaQueue>(s);
    };
    k.prepare = [](const std::string& queue) {
        mock().create_topic(hydra::queue::topic_for(queue), 1);
        mock().create_topic(hydra::queue::topic_for(queue) + ".dlq", 1);
    };
    k.dead_letters = [](const std::string& queue, std::size_t n) {
        std::vector<DeadLetter> out;
        for (const auto& m : test::read_topic(hydra::queue::topic_for(queue) + ".dlq", 1, n, 20s)) {
            auto attempts = m.headers.find("hydra-attempts");
            auto error = m.headers.find("hydra-error");
            out.push_back({m.payload, error != m.headers.end() ? error->second : "",
                           attempts != m.headers.end() ? std::stoi(attempts->second) : 0});
        }
        return out;
    };
    k.dead_letter_count = [](const std::string& queue) {
        return static_cast<std::size_t>(test::high_watermark(hydra::queue::topic_for(queue) + ".dlq", 0));
    };
    k.next_unacknowledged = [](const std::string& queue, const std::string& group) {
        auto next = test::read_topic(hydra::queue::topic_for(queue), 1, 1, 20s, group);
        return next.empty() ? std::string() : next[0].payload;
    };
    return k;
}

std::vector<Kind> kinds() {
    std::vector<Kind> out{sqlite_kind()};
    if (!under_tsan) out.push_back(kafka_kind());
    return out;
}

RetryPolicy fast_retry(int max_attempts, std::chrono::milliseconds backoff = 100ms) {
    RetryPolicy retry;
    retry.max_attempts = max_attempts;
    retry.backoff = backoff;
    return retry;
}

// Collects what a handler saw, with when.
class Inbox {
  public:
    void add(const Message& m) {
        std::lock_guard lock(mutex_);
        messages_.push_back(m);
        at_.push_back(Clock::now());
        cv_.notify_all();
    }
    bool wait_for(std::size_t n, std::chrono::milliseconds timeout = 20s) {
        std::unique_lock lock(mutex_);
        return cv_.wait_for(lock, timeout, [&] { return messages_.size() >= n; });
    }
    std::vector<Message> messages() {
        std::lock_guard lock(mutex_);
        return messages_;
    }
    std::vector<Clock::time_point> at() {
        std::lock_guard lock(mutex_);
        return at_;
    }

  private:
    std::mutex mutex_;
    std::condition_variable cv_;
    std::vector<Message> messages_;
    std::vector<Clock::time_point> at_;
};

// A handler that returns to acknowledge and throws to fail.
hydra::mqc::MessageHandler handler(std::function<void(const Message&)> f) {
    return [f = std::move(f)](const Message& m) -> std::optional<std::string> {
        f(m);
        return std::nullopt;
    };
}

// Pushes "after" with a backend of its own (a stopped one no longer pushes).
void push_after(const Kind& kind, const std::string& queue) {
    auto fresh = kind.make();
    fresh->push(queue, "after");
    fresh->stop(1s);
}

std::int64_t ms_between(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(b - a).count();
}

}  // namespace

BOOST_AUTO_TEST_SUITE(consumption)

BOOST_AUTO_TEST_CASE(handled_messages_are_acknowledged_in_order_with_their_headers) {
    for (const Kind& kind : kinds()) {
        BOOST_TEST_CONTEXT(kind.name) {
            const std::string queue = "c:ack:" + kind.name;
            kind.prepare(queue);
            auto q = kind.make();
            Inbox inbox;
            hydra::mqc::consume(*q, {queue, "c-ack", 1, handler([&](const Message& m) { inbox.add(m); })},
                                fast_retry(3));
            q->start();
            for (int i = 0; i < 5; ++i)
                q->push(queue, std::to_string(i), {{"x-request-id", "rid-" + std::to_string(i)}});
            BOOST_REQUIRE(inbox.wait_for(5));
            q->stop(5s);
            auto seen = inbox.messages();
            BOOST_REQUIRE_EQUAL(seen.size(), 5u);
            for (int i = 0; i < 5; ++i) {
                BOOST_CHECK_EQUAL(seen[i].payload, std::to_string(i));
                BOOST_CHECK_EQUAL(seen[i].headers["x-request-id"], "rid-" + std::to_string(i));
                BOOST_CHECK_EQUAL(seen[i].attempt, 1);
                BOOST_CHECK_EQUAL(seen[i].queue, queue);
            }
            // All five acknowledged: what the group gets next is what is pushed now.
            push_after(kind, queue);
            BOOST_CHECK_EQUAL(kind.next_unacknowledged(queue, "c-ack"), "after");
        }
    }
}

BOOST_AUTO_TEST_CASE(a_failed_attempt_is_retried_after_the_backoff_and_then_succeeds) {
    for (const Kind& kind : kinds()) {
        BOOST_TEST_CONTEXT(kind.name) {
            const std::string queue = "c:flaky:" + kind.name;
            kind.prepare(queue);
            auto q = kind.make();
            Inbox attempts, done;
            hydra::mqc::consume(*q,
                                {queue, "c-flaky", 1,
                                 [&](const Message& m) -> std::optional<std::string> {
                                     attempts.add(m);
                                     if (m.attempt < 2) return "transient";  // an error result, not a throw
                                     done.add(m);
                                     return std::nullopt;
                                 }},
                                fast_retry(3, 200ms));
            q->start();
            q->push(queue, "once");
            BOOST_REQUIRE(done.wait_for(1));
            q->stop(5s);
            auto seen = attempts.messages();
            auto at = attempts.at();
            BOOST_REQUIRE_EQUAL(seen.size(), 2u);  // no third attempt
            BOOST_CHECK_EQUAL(seen[0].attempt, 1);
            BOOST_CHECK_EQUAL(seen[1].attempt, 2);
            BOOST_CHECK_EQUAL(seen[1].payload, "once");
            BOOST_CHECK_GE(ms_between(at[0], at[1]), 195);  // the backoff
            BOOST_CHECK_EQUAL(kind.dead_letter_count(queue), 0u);
            push_after(kind, queue);
            BOOST_CHECK_EQUAL(kind.next_unacknowledged(queue, "c-flaky"), "after");  // acknowledged
        }
    }
}

BOOST_AUTO_TEST_CASE(the_last_failed_attempt_dead_letters_the_message_with_its_error) {
    for (const Kind& kind : kinds()) {
        BOOST_TEST_CONTEXT(kind.name) {
            const std::string queue = "c:poison:" + kind.name;
            kind.prepare(queue);
            auto q = kind.make();
            Inbox attempts;
            hydra::mqc::consume(*q, {queue, "c-poison", 1, handler([&](const Message& m) {
                                         attempts.add(m);
                                         throw std::runtime_error("down on attempt " + std::to_string(m.attempt));
                                     })},
                                fast_retry(3));
            q->start();
            q->push(queue, "poison");
            auto dead = kind.dead_letters(queue, 1);
            BOOST_REQUIRE_EQUAL(dead.size(), 1u);
            BOOST_CHECK_EQUAL(dead[0].payload, "poison");
            BOOST_CHECK_EQUAL(dead[0].error, "down on attempt 3");  // the last error
            BOOST_CHECK_EQUAL(dead[0].attempts, 3);
            q->stop(5s);
            auto seen = attempts.messages();
            auto at = attempts.at();
            BOOST_REQUIRE_EQUAL(seen.size(), 3u);  // no fourth attempt
            for (int i = 0; i < 3; ++i) BOOST_CHECK_EQUAL(seen[i].attempt, i + 1);
            BOOST_CHECK_GE(ms_between(at[0], at[1]), 95);   // backoff
            BOOST_CHECK_GE(ms_between(at[1], at[2]), 195);  // doubled
        }
    }
}

BOOST_AUTO_TEST_CASE(a_subscription_runs_at_most_its_concurrency_at_once_and_uses_all_of_it) {
    for (const Kind& kind : kinds()) {
        BOOST_TEST_CONTEXT(kind.name) {
            const std::string queue = "c:conc:" + kind.name;
            kind.prepare(queue);
            auto q = kind.make();
            std::mutex mu;
            std::condition_variable cv;
            int running = 0, max_running = 0, handled = 0;
            hydra::mqc::consume(*q, {queue, "c-conc", 3, handler([&](const Message&) {
                                         std::unique_lock lock(mu);
                                         max_running = std::max(max_running, ++running);
                                         cv.notify_all();
                                         // The first three meet here: all three handler threads are busy at once.
                                         cv.wait_for(lock, 10s, [&] { return max_running >= 3; });
                                         --running;
                                         ++handled;
                                         cv.notify_all();
                                     })},
                                fast_retry(3));
            q->start();
            std::vector<std::string> payloads;
            for (int i = 0; i < 30; ++i) payloads.push_back(std::to_string(i));
            q->push_batch(queue, payloads);
            {
                std::unique_lock lock(mu);
                BOOST_REQUIRE(cv.wait_for(lock, 30s, [&] { return handled == 30; }));
            }
            q->stop(5s);
            BOOST_CHECK_EQUAL(max_running, 3);
        }
    }
}

// Messages with one order key run one at a time and in the order pushed, whatever the concurrency; other keys,
// and messages without one, run beside them.
BOOST_AUTO_TEST_CASE(messages_with_one_order_key_run_one_at_a_time_in_order) {
    for (const Kind& kind : kinds()) {
        BOOST_TEST_CONTEXT(kind.name) {
            const std::string queue = "c:order:" + kind.name;
            kind.prepare(queue);
            auto q = kind.make();
            std::mutex mu;
            std::condition_variable cv;
            std::map<std::string, int> running;      // by key ("" for none)
            std::map<std::string, int> max_running;  // likewise
            std::map<std::string, std::vector<std::string>> order;
            bool b0_started = false, b0_seen_by_a0 = false;
            int handled = 0;
            hydra::mqc::consume(
                *q, {queue, "c-order", 4, handler([&](const Message& m) {
                         auto it = m.headers.find(std::string(hydra::kOrderKeyHeader));
                         const std::string key = it == m.headers.end() ? "" : it->second;
                         {
                             std::unique_lock lock(mu);
                             max_running[key] = std::max(max_running[key], ++running[key]);
                             order[key].push_back(m.payload);
                             if (m.payload == "B0") b0_started = true;
                             cv.notify_all();
                             // Another key runs beside this one: A0 waits (bounded) until B0 has started.
                             if (m.payload == "A0") b0_seen_by_a0 = cv.wait_for(lock, 10s, [&] { return b0_started; });
                         }
                         std::this_thread::sleep_for(2ms);  // room for a second message of the key to overlap
                         std::lock_guard lock(mu);
                         --running[key];
                         ++handled;
                         cv.notify_all();
                     })},
                fast_retry(3));
            q->start();
            for (int i = 0; i < 10; ++i) {
                for (const char* key : {"A", "B"})
                    q->push(queue, key + std::to_string(i), {{std::string(hydra::kOrderKeyHeader), key}});
                q->push(queue, "N" + std::to_string(i));
            }
            {
                std::unique_lock lock(mu);
                BOOST_REQUIRE(cv.wait_for(lock, 30s, [&] { return handled == 30; }));
            }
            q->stop(5s);
            BOOST_CHECK(b0_seen_by_a0);
            BOOST_CHECK_EQUAL(max_running["A"], 1);
            BOOST_CHECK_EQUAL(max_running["B"], 1);
            for (const char* key : {"A", "B"}) {
                std::vector<std::string> expected;
                for (int i = 0; i < 10; ++i) expected.push_back(key + std::to_string(i));
                BOOST_CHECK_EQUAL_COLLECTIONS(order[key].begin(), order[key].end(), expected.begin(), expected.end());
            }
            BOOST_CHECK_EQUAL(order[""].size(), 10u);
        }
    }
}

// A nonblocking route runs on the thread that delivers (no handler thread in between), in delivery order; what is
// not due yet (a retry after its backoff) still goes through the handler threads; a key keeps its order across both.
BOOST_AUTO_TEST_CASE(a_nonblocking_route_runs_on_the_delivering_thread_and_keeps_order_and_retries) {
    for (const Kind& kind : kinds()) {
        BOOST_TEST_CONTEXT(kind.name) {
            const std::string queue = "c:inline:" + kind.name;
            kind.prepare(queue);
            auto q = kind.make();
            std::mutex mu;
            std::condition_variable cv;
            std::vector<std::string> order;  // of first attempts, key "K"
            std::set<std::string> threads;   // names of the threads that ran first attempts
            std::vector<std::string> pushed_async;
            int handled = 0, retried = 0;
            hydra::mqc::Subscription sub{queue, "c-inline", 2, [&](const Message& m) -> std::optional<std::string> {
                                             char name[16] = {};
                                             pthread_getname_np(pthread_self(), name, sizeof name);
                                             std::lock_guard lock(mu);
                                             if (m.payload == "flaky" && m.attempt == 1)
                                                 return "once more";  // retried after the backoff
                                             if (m.payload == "flaky") ++retried;
                                             if (m.attempt == 1) {
                                                 threads.insert(name);
                                                 if (m.payload.starts_with("K")) order.push_back(m.payload);
                                             }
                                             ++handled;
                                             cv.notify_all();
                                             return std::nullopt;
                                         }};
            sub.nonblocking = true;
            hydra::mqc::consume(*q, std::move(sub), fast_retry(3, 100ms));
            q->start();
            q->push(queue, "flaky");
            for (int i = 0; i < 20; ++i)
                q->push(queue, "K" + std::to_string(i), {{std::string(hydra::kOrderKeyHeader), "K"}});
            {
                std::unique_lock lock(mu);
                BOOST_REQUIRE(cv.wait_for(lock, 30s, [&] { return handled == 21; }));
            }
            q->stop(5s);
            BOOST_CHECK_EQUAL(retried, 1);
            std::vector<std::string> expected;
            for (int i = 0; i < 20; ++i) expected.push_back("K" + std::to_string(i));
            BOOST_CHECK_EQUAL_COLLECTIONS(order.begin(), order.end(), expected.begin(), expected.end());
            // None of the first attempts waited for a handler thread (named mqc-<n>).
            for (const auto& t : threads) BOOST_CHECK_MESSAGE(!t.starts_with("mqc-"), "handled on " << t);
            push_after(kind, queue);
            BOOST_CHECK_EQUAL(kind.next_unacknowledged(queue, "c-inline"), "after");  // all acknowledged
        }
    }
}

// On the SQLite queue, a nonblocking handler runs on the writer (what is pushed while the fetcher sleeps is handed
// over in the push's transaction): a blocking push from it fails at once with a clear error (it would wait for its
// own thread); push_async works.
BOOST_AUTO_TEST_CASE(a_blocking_push_from_a_nonblocking_sqlite_handler_fails_and_push_async_works) {
    SqliteQueue::Settings settings;
    settings.path = test::temp_path("inline.db");
    SqliteQueue q(settings);
    std::mutex mu;
    std::condition_variable cv;
    int on_writer = 0, forwarded = 0, got_forwarded = 0;
    std::string blocking_error;
    hydra::mqc::Subscription sub{"c:in", "g", 1, [&](const Message&) -> std::optional<std::string> {
                                     char name[16] = {};
                                     pthread_getname_np(pthread_self(), name, sizeof name);
                                     if (std::string(name) != "queue-writer") return std::nullopt;
                                     std::string error;
                                     try {
                                         q.push("c:out", "blocking");
                                     } catch (const hydra::QueueError& e) {
                                         error = e.what();
                                     }
                                     q.push_async("c:out", "async", {}, 0ms, [&](const hydra::QueueError* e) {
                                         std::lock_guard lock(mu);
                                         if (e == nullptr) ++forwarded;
                                         cv.notify_all();
                                     });
                                     std::lock_guard lock(mu);
                                     ++on_writer;
                                     blocking_error = error;
                                     return std::nullopt;
                                 }};
    sub.nonblocking = true;
    hydra::mqc::consume(q, std::move(sub), fast_retry(3));
    hydra::mqc::consume(q, {"c:out", "g", 1, handler([&](const Message& m) {
                                std::lock_guard lock(mu);
                                if (m.payload == "async") ++got_forwarded;
                                cv.notify_all();
                            })},
                        fast_retry(3));
    q.start();
    // Pushed once the fetcher sleeps, a message is handed over by the writer; a few tries in case it did not yet.
    for (int i = 0; i < 50; ++i) {
        std::this_thread::sleep_for(100ms);
        q.push("c:in", "go");
        std::unique_lock lock(mu);
        if (cv.wait_for(lock, 1s, [&] { return on_writer > 0 && got_forwarded > 0; })) break;
    }
    q.stop(5s);
    std::lock_guard lock(mu);
    BOOST_REQUIRE_GT(on_writer, 0);
    BOOST_CHECK_EQUAL(forwarded, on_writer);
    BOOST_CHECK_MESSAGE(blocking_error.find("push_async") != std::string::npos, blocking_error);
    BOOST_CHECK_EQUAL(SqliteQueue::peek(settings.path, "c:out", 10).size(), 0u);  // nothing half-pushed
}

// On the SQLite queue, a nonblocking route that waits takes a whole transaction's pushes on the writer: its
// read-ahead is the most (512), since its messages run right there, so none is left for a lease of its own on the
// fetcher thread (with 8 x concurrency, 32 here, 168 of these 200 were).
BOOST_AUTO_TEST_CASE(a_waiting_nonblocking_sqlite_route_takes_a_whole_batch_on_the_writer) {
    SqliteQueue::Settings settings;
    settings.path = test::temp_path("inline-batch.db");
    SqliteQueue q(settings);
    std::mutex mu;
    std::condition_variable cv;
    std::map<std::string, int> threads;  // batch messages per thread name
    bool probe_on_writer = false;
    hydra::mqc::Subscription sub{"c:batch", "g", 4, [&](const Message& m) -> std::optional<std::string> {
                                     char name[16] = {};
                                     pthread_getname_np(pthread_self(), name, sizeof name);
                                     std::lock_guard lock(mu);
                                     if (m.payload == "probe")
                                         probe_on_writer = probe_on_writer || std::string(name) == "queue-writer";
                                     else
                                         ++threads[name];
                                     cv.notify_all();
                                     return std::nullopt;
                                 }};
    sub.nonblocking = true;
    hydra::mqc::consume(q, std::move(sub), fast_retry(3));
    q.start();
    // The route waits (its fetcher found the queue empty) once a probe is handed over on the writer.
    for (int i = 0; i < 50; ++i) {
        std::this_thread::sleep_for(100ms);
        q.push("c:batch", "probe");
        std::unique_lock lock(mu);
        if (cv.wait_for(lock, 1s, [&] { return probe_on_writer; })) break;
    }
    {
        std::lock_guard lock(mu);
        BOOST_REQUIRE(probe_on_writer);
    }
    q.push_batch("c:batch", std::vector<std::string>(200, "m"));  // one transaction
    {
        std::unique_lock lock(mu);
        BOOST_REQUIRE(cv.wait_for(lock, 30s, [&] {
            int n = 0;
            for (const auto& [name, count] : threads) n += count;
            return n == 200;
        }));
    }
    q.stop(5s);
    std::lock_guard lock(mu);
    BOOST_CHECK_EQUAL(threads["queue-writer"], 200);
    for (const auto& [name, count] : threads) BOOST_TEST_MESSAGE(name << ": " << count);
}

BOOST_AUTO_TEST_CASE(a_failing_handler_does_not_hold_up_the_others) {
    for (const Kind& kind : kinds()) {
        BOOST_TEST_CONTEXT(kind.name) {
            const std::string broken = "c:broken:" + kind.name, working = "c:working:" + kind.name;
            kind.prepare(broken);
            kind.prepare(working);
            auto q = kind.make();
            std::atomic<int> failures{0};
            Inbox handled;
            hydra::mqc::consume(*q, {broken, "c-broken", 1, handler([&](const Message&) {
                                         ++failures;
                                         throw std::runtime_error("broken");
                                     })},
                                fast_retry(1000, 50ms));
            // In one subscription too: the failing message is retried while the others go through.
            hydra::mqc::consume(*q, {working, "c-working", 2, handler([&](const Message& m) {
                                         if (m.payload == "bad") throw std::runtime_error("bad one");
                                         handled.add(m);
                                     })},
                                fast_retry(1000, 50ms));
            q->start();
            q->push(broken, "x");
            q->push(working, "bad");
            for (int i = 0; i < 20; ++i) q->push(working, std::to_string(i));
            BOOST_REQUIRE(handled.wait_for(20));
            BOOST_CHECK(test::wait_until([&] { return failures.load() >= 2; }));  // still failing meanwhile
            q->stop(5s);
            std::set<std::string> distinct;
            for (const auto& m : handled.messages()) distinct.insert(m.payload);
            BOOST_CHECK_EQUAL(distinct.size(), 20u);
        }
    }
}

BOOST_AUTO_TEST_CASE(a_graceful_stop_lets_the_handler_in_flight_finish_and_records_it) {
    for (const Kind& kind : kinds()) {
        BOOST_TEST_CONTEXT(kind.name) {
            const std::string queue = "c:stop:" + kind.name;
            kind.prepare(queue);
            auto q = kind.make();
            test::Gate gate;
            std::atomic<bool> finished{false};
            Inbox started;
            hydra::mqc::consume(*q, {queue, "c-stop", 1, handler([&](const Message& m) {
                                         started.add(m);
                                         gate.pass();
                                         finished = true;
                                     })},
                                fast_retry(3));
            q->start();
            q->push(queue, "in flight");
            BOOST_REQUIRE(started.wait_for(1));
            std::atomic<bool> stopped{false};
            std::thread stopper([&] {
                q->stop(30s);
                stopped = true;
            });
            // stop() waits for the handler: it has not returned while the handler is held.
            BOOST_CHECK(test::wait_until([&] { return gate.entered() == 1; }));
            BOOST_CHECK(!stopped.load());
            gate.open();
            stopper.join();
            BOOST_CHECK(finished.load());
            BOOST_CHECK_EQUAL(started.messages().size(), 1u);
            push_after(kind, queue);
            BOOST_CHECK_EQUAL(kind.next_unacknowledged(queue, "c-stop"), "after");  // its ack was recorded
        }
    }
}

BOOST_AUTO_TEST_CASE(a_delayed_message_is_handled_once_due_and_others_go_ahead) {
    for (const Kind& kind : kinds()) {
        BOOST_TEST_CONTEXT(kind.name) {
            const std::string queue = "c:later:" + kind.name;
            kind.prepare(queue);
            auto q = kind.make();
            Inbox inbox;
            hydra::mqc::consume(*q, {queue, "c-later", 2, handler([&](const Message& m) { inbox.add(m); })},
                                fast_retry(3));
            q->start();
            q->push(queue, "first");  // consuming already (a Kafka group join takes seconds on the mock)
            BOOST_REQUIRE(inbox.wait_for(1));
            const auto pushed = Clock::now();
            q->push(queue, "later", {}, 600ms);
            q->push(queue, "now");
            BOOST_REQUIRE(inbox.wait_for(3));
            q->stop(5s);
            auto seen = inbox.messages();
            auto at = inbox.at();
            BOOST_CHECK_EQUAL(seen[1].payload, "now");
            BOOST_CHECK_EQUAL(seen[2].payload, "later");
            BOOST_CHECK_GE(ms_between(pushed, at[2]), 590);
        }
    }
}

BOOST_AUTO_TEST_CASE(retries_back_off_doubling_per_attempt_up_to_ten_minutes) {
    RetryPolicy policy;
    policy.backoff = 1000ms;
    BOOST_CHECK_EQUAL(policy.delay_after(1).count(), 1000);
    BOOST_CHECK_EQUAL(policy.delay_after(2).count(), 2000);
    BOOST_CHECK_EQUAL(policy.delay_after(3).count(), 4000);
    BOOST_CHECK_EQUAL(policy.delay_after(10).count(), 512000);
    BOOST_CHECK_EQUAL(policy.delay_after(11).count(), 600000);  // 1,024,000 capped
    BOOST_CHECK_EQUAL(policy.delay_after(1000).count(), 600000);
}

BOOST_AUTO_TEST_SUITE_END()
