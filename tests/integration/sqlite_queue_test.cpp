// The embedded SQLite queue on real files: push/consume, group commit, retries, dead letters, delays, leases,
// bad files, the CLI, and a crash test with SIGKILL.
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <span>
#include <sstream>
#include <thread>

#include <SQLiteCpp/SQLiteCpp.h>

#include "queue/sqlite/checkpointer.h"
#include "queue/sqlite/sqlite_queue.h"
#include "support/consumed.h"
#include "support/http.h"
#include "support/process.h"
#include "support/sqlite.h"
#include "support/temp.h"
#include "support/wait.h"

using hydra::Message;
using hydra::QueueError;
using hydra::mqc::RetryPolicy;
using hydra::queue::SqliteQueue;
using Consumed = test::Consumed<SqliteQueue>;
using namespace std::chrono_literals;

namespace {

SqliteQueue::Settings settings(const std::string& path) {
    SqliteQueue::Settings s;
    s.path = path;
    s.poll_interval = 50ms;
    return s;
}

RetryPolicy fast_retry(int max_attempts) {
    RetryPolicy r;
    r.max_attempts = max_attempts;
    r.backoff = 20ms;
    return r;
}

// Collects what a handler saw.
struct Seen {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<Message> messages;
    void add(const Message& m) {
        {
            std::lock_guard lock(mu);
            messages.push_back(m);
        }
        cv.notify_all();
    }
    bool wait_count(std::size_t n, std::chrono::milliseconds timeout = 10s) {
        std::unique_lock lock(mu);
        return cv.wait_for(lock, timeout, [&] { return messages.size() >= n; });
    }
    std::size_t size() {
        std::lock_guard lock(mu);
        return messages.size();
    }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(sqlite_queue)

BOOST_AUTO_TEST_CASE(push_then_consume_in_fifo_order_with_headers) {
    std::string path = test::temp_path("q.db");
    Consumed q(settings(path), fast_retry(3));
    for (int i = 0; i < 100; ++i)
        q.push("mall:wsserver:msg", std::to_string(i), {{"x-request-id", "rid-" + std::to_string(i)}});
    Seen seen;
    q.subscribe({"mall:wsserver:msg", "g", 1, [&](const Message& m) { seen.add(m); }});
    q.start();
    BOOST_REQUIRE(seen.wait_count(100));
    for (int i = 0; i < 100; ++i) {
        BOOST_CHECK_EQUAL(seen.messages[i].payload, std::to_string(i));
        BOOST_CHECK_EQUAL(seen.messages[i].headers["x-request-id"], "rid-" + std::to_string(i));
        BOOST_CHECK_EQUAL(seen.messages[i].attempt, 1);
        BOOST_CHECK_EQUAL(seen.messages[i].queue, "mall:wsserver:msg");
    }
    q.stop(5s);
    BOOST_CHECK_EQUAL(test::row_count(path, "messages"), 0);  // all acknowledged
}

BOOST_AUTO_TEST_CASE(concurrent_pushers_are_group_committed_and_nothing_is_lost) {
    std::string path = test::temp_path("q.db");
    Consumed q(settings(path), fast_retry(3));
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t)
        threads.emplace_back([&, t] {
            for (int i = 0; i < 1000; ++i) q.push("bulk", std::to_string(t * 1000 + i));
        });
    for (auto& t : threads) t.join();
    BOOST_CHECK_EQUAL(test::row_count(path, "messages"), 8000);
    Seen seen;
    q.subscribe({"bulk", "g", 4, [&](const Message& m) { seen.add(m); }});
    q.start();
    BOOST_REQUIRE(seen.wait_count(8000, 30s));
    q.stop(5s);  // before `seen` goes: the consumers write into it
    std::set<std::string> distinct;
    for (auto& m : seen.messages) distinct.insert(m.payload);
    BOOST_CHECK_EQUAL(distinct.size(), 8000u);
}

BOOST_AUTO_TEST_CASE(push_async_reports_each_push_once_after_its_commit) {
    std::string path = test::temp_path("q.db");
    auto q = std::make_unique<Consumed>(settings(path), fast_retry(3));
    std::mutex mu;
    std::condition_variable cv;
    int ok = 0, failed = 0;
    auto done = [&](const QueueError* e) {
        std::lock_guard lock(mu);
        ++(e == nullptr ? ok : failed);
        cv.notify_all();
    };
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&, t] {
            for (int i = 0; i < 250; ++i) q->push_async("async", std::to_string(t * 250 + i), {}, 0ms, done);
        });
    for (auto& t : threads) t.join();
    {
        std::unique_lock lock(mu);
        BOOST_REQUIRE(cv.wait_for(lock, 10s, [&] { return ok + failed >= 1000; }));
    }
    std::this_thread::sleep_for(50ms);  // a second call would show up now
    BOOST_CHECK_EQUAL(ok, 1000);
    BOOST_CHECK_EQUAL(failed, 0);
    BOOST_CHECK_EQUAL(test::row_count(path, "messages"), 1000);

    // Errors go to the callback too: a bad name at once (not retryable), a stopped queue.
    bool called = false, retryable = true;
    q->push_async("bad name", "x", {}, 0ms, [&](const QueueError* e) {
        called = e != nullptr;
        retryable = e != nullptr && e->retryable();
    });
    BOOST_CHECK(called);
    BOOST_CHECK(!retryable);
    q->stop(1s);
    std::string error;
    q->push_async("async", "late", {}, 0ms, [&](const QueueError* e) { error = e != nullptr ? e->what() : ""; });
    BOOST_CHECK(error.find("stopped") != std::string::npos);
    BOOST_CHECK_EQUAL(test::row_count(path, "messages"), 1000);
}

// A consumer that found its queue empty gets the next pushes leased for it in their own transaction (no fetcher
// round trip): each message exactly once, in order, with its headers (a handed-off one takes them as pushed, not
// decoded from the row), acknowledged without waiting for the stop.
BOOST_AUTO_TEST_CASE(pushes_to_an_idle_consumer_are_handed_over_exactly_once_in_order) {
    std::string path = test::temp_path("q.db");
    Consumed q(settings(path), fast_retry(3));
    Seen seen;
    q.subscribe({"idle", "g", 1, [&](const Message& m) { seen.add(m); }});
    q.start();
    for (int i = 0; i < 300; ++i) {
        q.push("idle", std::to_string(i), {{"x-request-id", "rid-" + std::to_string(i)}, {"note", "say \"hi\"\n"}});
        if (i % 30 == 0) std::this_thread::sleep_for(20ms);  // let the consumer run dry and park again
    }
    BOOST_REQUIRE(seen.wait_count(300));
    std::this_thread::sleep_for(100ms);  // a window for a duplicate to show up
    BOOST_REQUIRE_EQUAL(seen.size(), 300u);
    for (int i = 0; i < 300; ++i) {
        BOOST_CHECK_EQUAL(seen.messages[i].payload, std::to_string(i));
        BOOST_CHECK_EQUAL(seen.messages[i].headers.size(), 2u);
        BOOST_CHECK_EQUAL(seen.messages[i].headers["x-request-id"], "rid-" + std::to_string(i));
        BOOST_CHECK_EQUAL(seen.messages[i].headers["note"], "say \"hi\"\n");
    }
    // Acks are committed lazily, but within a few tens of milliseconds, not only at stop (the deadline is only
    // there to fail: a queue that acknowledged at stop alone would never get there).
    BOOST_CHECK(test::wait_until([&] { return test::row_count(path, "messages") == 0; }, 10s));
    q.stop(5s);
}

// One transaction of more pushes than an idle consumer has room for: the first ones are inserted leased for it, the
// rest stay visible and its fetcher (woken) takes them; each once, in order.
BOOST_AUTO_TEST_CASE(a_batch_over_an_idle_consumers_room_is_split_between_hand_off_and_fetcher_in_order) {
    std::string path = test::temp_path("q.db");
    Consumed q(settings(path), fast_retry(3));
    Seen seen;
    q.subscribe({"split", "g", 1, [&](const Message& m) { seen.add(m); }});  // room: 32
    q.start();
    q.push("split", "first");
    BOOST_REQUIRE(seen.wait_count(1));
    std::this_thread::sleep_for(100ms);  // the fetcher found the queue empty and parks
    std::vector<std::string> batch;
    for (int i = 0; i < 200; ++i) batch.push_back(std::to_string(i));
    q.push_batch("split", batch);
    BOOST_REQUIRE(seen.wait_count(201));
    std::this_thread::sleep_for(100ms);  // a window for a duplicate to show up
    q.stop(5s);
    BOOST_REQUIRE_EQUAL(seen.size(), 201u);
    for (int i = 0; i < 200; ++i) BOOST_CHECK_EQUAL(seen.messages[i + 1].payload, std::to_string(i));
    for (const auto& m : seen.messages) BOOST_CHECK_EQUAL(m.attempt, 1);
    BOOST_CHECK_EQUAL(test::row_count(path, "messages"), 0);
}

// A consumer sleeping on an empty queue does not see what another process pushes until it polls; a push of ours
// meanwhile is not handed over ahead of that older message: both go to the fetcher, oldest first.
BOOST_AUTO_TEST_CASE(a_hand_off_never_overtakes_a_message_already_waiting_in_the_queue) {
    std::string path = test::temp_path("q.db");
    SqliteQueue::Settings s = settings(path);
    s.poll_interval = 10s;  // the fetcher would find "older" only after this
    Consumed q(s, fast_retry(3));
    Seen seen;
    q.subscribe({"order", "g", 1, [&](const Message& m) { seen.add(m); }});
    q.start();
    q.push("order", "first");
    BOOST_REQUIRE(seen.wait_count(1));
    std::this_thread::sleep_for(100ms);  // the fetcher found the queue empty and sleeps
    {
        SqliteQueue other(settings(path));  // another process on the same file: cannot wake our fetcher
        other.push("order", "older");
        other.stop(1s);
    }
    q.push("order", "newer");
    BOOST_REQUIRE(seen.wait_count(3, 5s));  // well before the 10 s poll: the push woke the fetcher
    q.stop(5s);
    BOOST_CHECK_EQUAL(seen.messages[1].payload, "older");
    BOOST_CHECK_EQUAL(seen.messages[2].payload, "newer");
}

BOOST_AUTO_TEST_CASE(concurrent_pushes_to_idle_consumers_are_each_handled_once) {
    std::string path = test::temp_path("q.db");
    Consumed q(settings(path), fast_retry(3));
    Seen seen;
    q.subscribe({"many", "g", 4, [&](const Message& m) { seen.add(m); }});
    q.start();
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t)
        threads.emplace_back([&, t] {
            for (int i = 0; i < 500; ++i) {
                q.push("many", std::to_string(t * 500 + i));
                if (i % 100 == 0) std::this_thread::sleep_for(5ms);  // pauses: consumers go idle between
            }
        });
    for (auto& t : threads) t.join();
    BOOST_REQUIRE(seen.wait_count(4000, 30s));
    std::this_thread::sleep_for(100ms);  // a window for a duplicate to show up
    q.stop(5s);
    std::set<std::string> distinct;
    for (auto& m : seen.messages) distinct.insert(m.payload);
    BOOST_CHECK_EQUAL(distinct.size(), 4000u);
    BOOST_CHECK_EQUAL(seen.messages.size(), 4000u);  // no duplicates in normal operation
    BOOST_CHECK_EQUAL(test::row_count(path, "messages"), 0);
}

BOOST_AUTO_TEST_CASE(failures_are_retried_then_dead_lettered) {
    std::string path = test::temp_path("q.db");
    Consumed q(settings(path), fast_retry(3));
    Seen attempts;
    q.subscribe({"orders", "g", 1, [&](const Message& m) {
                     attempts.add(m);
                     throw std::runtime_error("payment service down");
                 }});
    q.subscribe({"flaky", "g", 1, [&](const Message& m) {
                     if (m.attempt < 2) throw std::runtime_error("first try fails");
                     attempts.add(m);
                 }});
    q.start();
    q.push("orders", R"({"id":1})");
    q.push("flaky", "x");
    BOOST_REQUIRE(attempts.wait_count(4));
    std::this_thread::sleep_for(200ms);  // a window for a wrong extra attempt to show up
    std::vector<int> order_attempts;
    int flaky_attempt = 0;
    for (auto& m : attempts.messages) {
        if (m.queue == "orders") order_attempts.push_back(m.attempt);
        if (m.queue == "flaky") flaky_attempt = m.attempt;
    }
    BOOST_CHECK((order_attempts == std::vector<int>{1, 2, 3}));
    BOOST_CHECK_EQUAL(flaky_attempt, 2);
    q.stop(5s);

    auto dead = SqliteQueue::dead_letters(path, "", 10);
    BOOST_REQUIRE_EQUAL(dead.size(), 1u);
    BOOST_CHECK_EQUAL(dead[0]["queue"], "orders");
    BOOST_CHECK_EQUAL(dead[0]["attempts"], 3);
    BOOST_CHECK_EQUAL(dead[0]["error"], "payment service down");
    BOOST_CHECK_EQUAL(test::row_count(path, "messages"), 0);

    // retry moves it back with a fresh attempt count
    BOOST_CHECK_EQUAL(SqliteQueue::retry_dead_letters(path, "orders", 0), 1);
    BOOST_CHECK_EQUAL(test::row_count(path, "dead_letters"), 0);
    auto back = SqliteQueue::peek(path, "orders", 10);
    BOOST_REQUIRE_EQUAL(back.size(), 1u);
    BOOST_CHECK_EQUAL(back[0]["payload"], R"({"id":1})");
    BOOST_CHECK_EQUAL(back[0]["attempts"], 0);
}

BOOST_AUTO_TEST_CASE(an_unacknowledged_lease_expires_and_is_redelivered) {
    std::string path = test::temp_path("q.db");
    auto s = settings(path);
    s.lease = 300ms;
    Consumed a(s, fast_retry(5));
    std::mutex gate;
    gate.lock();  // a's handler blocks: as if its process hung
    Seen a_seen, b_seen;
    a.subscribe({"work", "g", 1, [&](const Message& m) {
                     a_seen.add(m);
                     std::lock_guard hold(gate);
                 }});
    a.start();
    a.push("work", "job");
    BOOST_REQUIRE(a_seen.wait_count(1));
    Consumed b(s, fast_retry(5));  // a second consumer on the same file
    b.subscribe({"work", "g", 1, [&](const Message& m) { b_seen.add(m); }});
    b.start();
    BOOST_REQUIRE(b_seen.wait_count(1, 5s));
    BOOST_CHECK_EQUAL(b_seen.messages[0].payload, "job");
    BOOST_CHECK_EQUAL(b_seen.messages[0].attempt, 2);
    gate.unlock();
    b.stop(5s);
    a.stop(5s);
    // b acknowledged it; a's late ack (of attempt 1) changed nothing
    BOOST_CHECK_EQUAL(test::row_count(path, "messages"), 0);
}

BOOST_AUTO_TEST_CASE(bad_queue_names_are_rejected) {
    Consumed q(settings(test::temp_path("q.db")), fast_retry(3));
    for (std::string bad : std::vector<std::string>{"", "has space", "ünïcode", "a/b", std::string(201, 'x'), ".."}) {
        try {
            q.push(bad, "x");
            BOOST_FAIL("accepted " + bad);
        } catch (const QueueError& e) {
            BOOST_CHECK(!e.retryable());
            BOOST_CHECK(std::string(e.what()).find("invalid queue name") != std::string::npos);
        }
    }
}

BOOST_AUTO_TEST_CASE(corrupt_or_unwritable_files_fail_clearly) {
    std::string junk = test::temp_path("junk.db");
    std::ofstream(junk) << std::string(8192, 'j');
    try {
        Consumed q(settings(junk), fast_retry(3));
        BOOST_FAIL("opened a corrupt file");
    } catch (const std::runtime_error& e) {
        std::string what = e.what();
        BOOST_CHECK_MESSAGE(what.find("queue: cannot open SQLite database " + junk) == 0, what);
        BOOST_CHECK_MESSAGE(what.find("not a database") != std::string::npos, what);
    }
    std::string dir = test::temp_path("adir");
    std::filesystem::create_directories(dir);
    BOOST_CHECK_THROW(Consumed(settings(dir), fast_retry(3)), std::runtime_error);
    BOOST_CHECK_THROW(Consumed(settings("/proc/hydra-no/queue.db"), fast_retry(3)), std::runtime_error);
}

BOOST_AUTO_TEST_CASE(queue_cli_stats_peek_and_dead_letters) {
    std::string path = test::temp_path("q.db");
    {
        Consumed q(settings(path), fast_retry(1));
        q.push("a:b", "one");
        q.push("a:b", "two");
        q.push("a:b", "later", {}, 60s);
        q.push("dead:q", "x");
        q.subscribe({"dead:q", "g", 1, [](const Message&) { throw std::runtime_error("nope"); }});
        q.start();
        BOOST_CHECK(test::wait_until([&] { return test::row_count(path, "dead_letters") > 0; }));
        q.stop(5s);
    }
    auto run = [&](std::vector<std::string> args) {
        std::vector<std::string> argv = {HYDRA_BINARY};
        argv.insert(argv.end(), args.begin(), args.end());
        argv.insert(argv.end(), {"--set", "queue.sqlite.path=" + path});
        auto p = std::make_unique<test::ChildProcess>(argv);
        BOOST_CHECK_EQUAL(p->wait(10s).value_or(-1), 0);
        return p;
    };
    auto stats = run({"queue", "stats"});
    BOOST_CHECK_MESSAGE(stats->out().find("a:b") != std::string::npos, stats->out());
    std::istringstream lines(stats->out());
    std::string line;
    bool found = false;
    while (std::getline(lines, line)) {
        std::istringstream cols(line);
        std::string name;
        long ready, delayed, leased, dead;
        if (cols >> name >> ready >> delayed >> leased >> dead && name == "a:b") {
            found = true;
            BOOST_CHECK_EQUAL(ready, 2);
            BOOST_CHECK_EQUAL(delayed, 1);
        }
        if (name == "dead:q") BOOST_CHECK_EQUAL(dead, 1);
    }
    BOOST_CHECK(found);
    auto peek = run({"queue", "peek", "a:b", "--limit", "1"});
    BOOST_CHECK_EQUAL(hydra::Json::parse(peek->out())["payload"], "one");
    auto dlq = run({"queue", "dlq", "list"});
    BOOST_CHECK_EQUAL(hydra::Json::parse(dlq->out())["error"], "nope");
    auto retry = run({"queue", "dlq", "retry", "dead:q"});
    BOOST_CHECK_EQUAL(retry->out(), "moved 1 dead letter(s) back to dead:q\n");
    BOOST_CHECK_EQUAL(test::row_count(path, "dead_letters"), 0);

    test::ChildProcess bad({HYDRA_BINARY, "queue", "peek"});
    BOOST_CHECK_EQUAL(bad.wait(10s).value_or(-1), 2);
    test::ChildProcess kafka({HYDRA_BINARY, "queue", "stats", "--set", "queue.backend=kafka"});
    BOOST_CHECK_EQUAL(kafka.wait(10s).value_or(-1), 2);
}

BOOST_AUTO_TEST_CASE(push_batch_stores_all_in_one_transaction_in_order) {
    std::string path = test::temp_path("q.db");
    Consumed q(settings(path), fast_retry(3));
    std::vector<std::string> payloads;
    for (int i = 0; i < 500; ++i) payloads.push_back(std::to_string(i));
    q.push_batch("batch:q", payloads, {{"x-request-id", "rid-batch"}, {"note", "say \"hi\"\n"}});
    BOOST_CHECK_EQUAL(test::row_count(path, "messages"), 500);  // durable when push_batch returned
    q.push_batch("batch:q", std::vector<std::string>{});        // nothing to do
    BOOST_CHECK_THROW(q.push_batch("bad queue", payloads), QueueError);
    BOOST_CHECK_EQUAL(test::row_count(path, "messages"), 500);
    Seen seen;
    q.subscribe({"batch:q", "g", 1, [&](const Message& m) { seen.add(m); }});
    q.start();
    BOOST_REQUIRE(seen.wait_count(500));
    q.stop(5s);
    for (int i = 0; i < 500; ++i) BOOST_REQUIRE_EQUAL(seen.messages[i].payload, std::to_string(i));
    BOOST_CHECK_EQUAL(seen.messages[0].headers.at("x-request-id"), "rid-batch");
    BOOST_CHECK_EQUAL(seen.messages[0].headers.at("note"), "say \"hi\"\n");  // escaped through the JSON library
    BOOST_CHECK_EQUAL(test::row_count(path, "messages"), 0);
}

BOOST_AUTO_TEST_CASE(messages_leased_ahead_and_not_started_are_given_back_at_stop) {
    std::string path = test::temp_path("q.db");
    std::vector<std::string> payloads;
    for (int i = 0; i < 50; ++i) payloads.push_back(std::to_string(i));
    {
        Consumed q(settings(path), fast_retry(3));
        q.push_batch("ahead", payloads);
        Seen seen;
        q.subscribe({"ahead", "g", 1, [&](const Message& m) {
                         seen.add(m);
                         // Still running when stop() comes (the others wait in the window, leased with it): long,
                         // so that a slow machine cannot finish it before the stop and start the next one.
                         std::this_thread::sleep_for(1500ms);
                     }});
        q.start();
        BOOST_REQUIRE(seen.wait_count(1));
        q.stop(5s);  // the running handler finishes; what waited in the window goes back
        BOOST_CHECK_EQUAL(seen.size(), 1u);
    }
    auto stats = SqliteQueue::stats(path);
    BOOST_REQUIRE_EQUAL(stats.size(), 1u);
    BOOST_CHECK_EQUAL(stats[0].ready, 49);  // visible again at once, not after the lease
    BOOST_CHECK_EQUAL(stats[0].leased, 0);
    auto rows = SqliteQueue::peek(path, "ahead", 100);
    BOOST_REQUIRE_EQUAL(rows.size(), 49u);
    for (std::size_t i = 0; i < rows.size(); ++i) {
        BOOST_CHECK_EQUAL(rows[i]["payload"], std::to_string(i + 1));  // still in order
        BOOST_CHECK_EQUAL(rows[i]["attempts"], 0);                     // never started: no attempt counted
    }
    // The next consumer gets them all, first attempt each.
    Consumed again(settings(path), fast_retry(3));
    Seen seen;
    again.subscribe({"ahead", "g", 8, [&](const Message& m) { seen.add(m); }});
    again.start();
    BOOST_REQUIRE(seen.wait_count(49));
    again.stop(5s);
    std::set<std::string> distinct;
    for (auto& m : seen.messages) {
        distinct.insert(m.payload);
        BOOST_CHECK_EQUAL(m.attempt, 1);
    }
    BOOST_CHECK_EQUAL(distinct.size(), 49u);
}

BOOST_AUTO_TEST_CASE(a_message_that_waited_half_its_lease_ahead_is_given_back_not_run_late) {
    std::string path = test::temp_path("q.db");
    auto s = settings(path);
    // Each handler runs a little over half the lease: the messages leased with it wait in the window past half
    // their lease. Run late instead of given back, the second would still be running when its lease ends and be
    // delivered again. A handler that starts soon after its lease ends well within it: the 900 ms left are slack
    // for a slow machine (between a lease and the start of its handler), not part of what is measured.
    s.lease = 2000ms;
    Consumed q(s, fast_retry(3));
    q.push_batch("slow", std::vector<std::string>{"0", "1", "2", "3", "4"});
    Seen seen;
    q.subscribe({"slow", "g", 1, [&](const Message& m) {
                     seen.add(m);
                     std::this_thread::sleep_for(1100ms);
                 }});
    q.start();
    BOOST_REQUIRE(seen.wait_count(5, 60s));
    std::this_thread::sleep_for(300ms);  // a window for a duplicate to show up
    q.stop(5s);
    BOOST_REQUIRE_EQUAL(seen.size(), 5u);
    for (int i = 0; i < 5; ++i) {
        BOOST_CHECK_EQUAL(seen.messages[i].payload, std::to_string(i));  // given back in place: order kept
        BOOST_CHECK_EQUAL(seen.messages[i].attempt, 1);
    }
    BOOST_CHECK_EQUAL(test::row_count(path, "messages"), 0);
}

BOOST_AUTO_TEST_CASE(many_handlers_drain_a_large_queue_exactly) {
    std::string path = test::temp_path("q.db");
    Consumed q(settings(path), fast_retry(3));
    std::vector<std::string> payloads;
    for (int i = 0; i < 20000; ++i) payloads.push_back(std::to_string(i));
    for (std::size_t i = 0; i < payloads.size(); i += 1000)
        q.push_batch("drain", std::span<const std::string>(payloads).subspan(i, 1000));
    std::mutex mu;
    std::multiset<std::string> seen;
    std::atomic<int> running{0}, max_running{0};
    q.subscribe({"drain", "g", 8, [&](const Message& m) {
                     int now = ++running;
                     int prev = max_running.load();
                     while (now > prev && !max_running.compare_exchange_weak(prev, now)) {
                     }
                     {
                         std::lock_guard lock(mu);
                         seen.insert(m.payload);
                     }
                     --running;
                 }});
    auto started = std::chrono::steady_clock::now();
    q.start();
    BOOST_CHECK(test::wait_until([&] { return test::row_count(path, "messages") == 0; }, 60s));
    BOOST_TEST_MESSAGE(
        "drained 20000 in "
        << std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count()
        << " ms");
    q.stop(5s);
    BOOST_CHECK_EQUAL(test::row_count(path, "messages"), 0);  // all acknowledged
    BOOST_CHECK_EQUAL(seen.size(), 20000u);                   // each handled once
    BOOST_CHECK_EQUAL(std::set<std::string>(seen.begin(), seen.end()).size(), 20000u);
    BOOST_CHECK_LE(max_running.load(), 8);
}

BOOST_AUTO_TEST_CASE(crash_test_no_acknowledged_push_is_ever_lost) {
    std::string path = test::temp_path("crash.db");
    std::set<long> pushed, consumed;
    long duplicates = 0;
    std::mt19937 rng(12345);
    auto parse = [&](const std::string& out) {
        std::istringstream in(out);
        std::string word;
        long n;
        while (in >> word >> n) {
            if (word == "pushed") pushed.insert(n);
            if (word == "consumed" && !consumed.insert(n).second) ++duplicates;
        }
    };
    // At least 12 kills, and on until more than 1000 pushes were acknowledged (a loaded machine pushes fewer per
    // round).
    for (int round = 0; round < 12 || (pushed.size() <= 1000u && round < 100); ++round) {
        test::ChildProcess child({QUEUE_CRASH_CHILD, path, std::to_string(round * 10000000L)});
        // Killed at a random moment once it is pushing (a sanitizer build on a loaded machine starts slowly).
        BOOST_REQUIRE(child.wait_for_stdout("pushed", 60s));
        std::this_thread::sleep_for(std::chrono::milliseconds(100 + rng() % 300));
        child.signal(SIGKILL);
        BOOST_REQUIRE_EQUAL(child.wait(10s).value_or(0), -SIGKILL);
        // A line cut by the kill would parse as a partial number: keep whole lines only.
        std::string out = child.out();
        out = out.substr(0, out.rfind('\n') + 1);
        parse(out);
    }
    // What is still stored (never consumed, or consumed but not yet acknowledged when killed).
    std::set<long> stored;
    {
        SQLite::Database db(path, SQLite::OPEN_READONLY);
        SQLite::Statement q(db, "SELECT payload FROM messages UNION ALL SELECT payload FROM dead_letters");
        while (q.executeStep()) stored.insert(std::stol(q.getColumn(0).getString()));
    }
    long lost = 0;
    for (long n : pushed)
        if (!consumed.count(n) && !stored.count(n)) ++lost;
    BOOST_TEST_MESSAGE("crash test: " << pushed.size() << " acknowledged pushes, " << consumed.size() << " consumed, "
                                      << stored.size() << " still stored, " << duplicates << " duplicate deliveries");
    BOOST_CHECK_GT(pushed.size(), 1000u);
    BOOST_CHECK_GT(consumed.size(), 100u);
    BOOST_CHECK_EQUAL(lost, 0);
}

// (The backoff's doubling, and the real time between attempts, are the consumption suite's.)
BOOST_AUTO_TEST_CASE(a_backoff_over_the_cap_is_recorded_as_due_in_ten_minutes) {
    // A backoff over the cap: the failed message is due again in exactly ten minutes (visible_at on the file).
    std::string path = test::temp_path("q.db");
    RetryPolicy hour = fast_retry(5);
    hour.backoff = std::chrono::hours(1);
    Consumed q(settings(path), hour);
    std::atomic<int> attempts{0};
    q.subscribe({"capped", "g", 1, [&](const Message&) {
                     ++attempts;
                     throw std::runtime_error("later");
                 }});
    q.start();
    auto now_ms = [] {
        return std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::system_clock::now().time_since_epoch())
            .count();
    };
    const std::int64_t before = now_ms();
    q.push("capped", "x");
    auto failed = [&] {
        auto rows = SqliteQueue::peek(path, "capped", 1);
        return rows.size() == 1 && rows[0].value("last_error", "") == "later";
    };
    BOOST_REQUIRE(test::wait_until(failed, 20s));
    const std::int64_t after = now_ms();
    const std::int64_t visible_at = SqliteQueue::peek(path, "capped", 1)[0]["visible_at"];
    BOOST_CHECK_GE(visible_at, before + 600000);
    BOOST_CHECK_LE(visible_at, after + 600000);
    BOOST_CHECK_EQUAL(attempts.load(), 1);
    q.stop(5s);
}

BOOST_AUTO_TEST_CASE(the_log_is_checkpointed_off_the_writer_and_stays_bounded) {
    // Transactions of 50 KB. 12.5 MB of them stay below the log size at which the writer checkpoints itself: only
    // the checkpoint thread copies them into the database file, and no commit waits for a checkpoint. Then 64 MB in
    // all (without checkpoints the log would hold ~110 MB): the writer's own checkpoints restart the log.
    using hydra::queue::sqlite::Checkpointer;
    std::string path = test::temp_path("wal.db");
    {
        Consumed q(settings(path), fast_retry(3));
        const std::vector<std::string> batch(50, std::string(1024, 'x'));
        for (int i = 0; i < 250; ++i) q.push_batch("bulk", batch);
        BOOST_CHECK(test::wait_until([&] { return std::filesystem::file_size(path) > (6u << 20); }, 10s));
        BOOST_CHECK_GT(q.checkpoints_by_thread(), 0);
        BOOST_CHECK_EQUAL(q.checkpoints_by_writer(), 0);
        for (int i = 250; i < 1280; ++i) q.push_batch("bulk", batch);
        BOOST_CHECK_EQUAL(test::row_count(path, "messages"), 64000);
        BOOST_CHECK_GT(q.checkpoints_by_writer(), 0);
        const auto wal = std::filesystem::file_size(path + "-wal");
        BOOST_TEST_MESSAGE("log after 64 MB of pushes: " << wal << " bytes, checkpoints by the thread "
                                                         << q.checkpoints_by_thread() << ", by the writer "
                                                         << q.checkpoints_by_writer());
        // A frame is a page and a 24-byte header; the writer's checkpoint may find the thread in the middle of one
        // (then the next commit tries again): twice the threshold, still well below the unbounded log.
        BOOST_CHECK_LT(wal, std::uintmax_t(2 * Checkpointer::kWriterPages) * (4096 + 24));
    }
    BOOST_CHECK_EQUAL(test::row_count(path, "messages"), 64000);
}

BOOST_AUTO_TEST_CASE(a_transaction_that_could_not_begin_leaves_the_next_ones_unharmed) {
    // Another connection holds the write lock past busy_timeout_ms (as `hydra queue` may): the pushes of that
    // moment fail; once it lets go, the next ones commit (the failure is not carried into later transactions).
    std::string path = test::temp_path("busy.db");
    auto s = settings(path);
    s.busy_timeout_ms = 50;
    Consumed q(s, fast_retry(3));
    q.push("busy", "before");
    {
        SQLite::Database other(path, SQLite::OPEN_READWRITE);
        SQLite::Transaction hold(other, SQLite::TransactionBehavior::IMMEDIATE);
        BOOST_CHECK_THROW(q.push("busy", "while locked"), QueueError);
        BOOST_CHECK_THROW(q.push("busy", "still locked"), QueueError);
    }
    for (int i = 0; i < 3; ++i) BOOST_CHECK_NO_THROW(q.push("busy", "after " + std::to_string(i)));
    BOOST_CHECK_EQUAL(test::row_count(path, "messages"), 4);
}

BOOST_AUTO_TEST_CASE(a_write_error_on_commit_fails_those_pushes_and_the_server_stays_up) {
    // The real binary under a file size limit (RLIMIT_FSIZE, with SIGXFSZ ignored so that a write past it fails with
    // EFBIG): the queue's write-ahead log cannot grow past 1 MiB, as on a full disk, without a mount.
    const std::string path = test::temp_path("full.db");
    test::ChildProcess host({"/bin/sh",
                             "-c",
                             R"(trap '' XFSZ; ulimit -f 2048; exec "$0" "$@")",
                             HYDRA_BINARY,
                             "run",
                             "--env",
                             "dev",
                             "--set",
                             "api.address=127.0.0.1:0",
                             "--set",
                             "ws.address=127.0.0.1:0",
                             "--set",
                             "log.level=warn",
                             "--set",
                             "mqc.enabled=false",  // pushed messages stay
                             "--set",
                             "admin.address=127.0.0.1:0",
                             "--set",
                             "queue.sqlite.path=" + path,
                             "--set",
                             "services.push.database=" + test::temp_path("push.db")},
                            HYDRA_SOURCE_DIR);
    auto port = host.wait_for_stdout(R"(api listening on http://127\.0\.0\.1:(\d+))", 30s);
    BOOST_REQUIRE_MESSAGE(port, "hydra did not start: " + host.err());
    const std::string api = "127.0.0.1:" + *port;

    // 100 KB messages through the push demo's /msg/send until the log is full.
    const std::string filler(100 * 1024, 'x');
    int acknowledged = 0;
    std::string failure;
    for (int i = 0; i < 40 && failure.empty(); ++i) {
        auto r = test::http(api, "POST", "/msg/send",
                            hydra::Json{{"uuid", "nobody"}, {"msg", std::to_string(i) + " " + filler}}.dump());
        if (r.status == 200) {
            ++acknowledged;
        } else {
            BOOST_CHECK_EQUAL(r.status, 503);
            failure = r.body;
        }
    }
    BOOST_REQUIRE_MESSAGE(!failure.empty(), "no push failed");
    BOOST_CHECK_GT(acknowledged, 0);
    BOOST_CHECK_MESSAGE(failure.find("queue: push failed: disk I/O error") != std::string::npos, failure);
    BOOST_CHECK(host.wait_for_stderr("queue: sqlite transaction of 1 operations failed: disk I/O error", 10s));
    // Still up, still answering.
    auto health = test::http(api, "GET", "/healthz");
    BOOST_CHECK_EQUAL(health.status, 200);
    BOOST_CHECK_EQUAL(health.json()["status"], "ok");
    host.signal(SIGTERM);
    BOOST_CHECK_EQUAL(host.wait(20s).value_or(-1), 0);

    // Exactly the acknowledged pushes are stored: none lost, none reported stored that was not.
    std::set<int> stored;
    SQLite::Database db(path, SQLite::OPEN_READONLY);
    SQLite::Statement q(db, "SELECT payload FROM messages");
    while (q.executeStep())
        stored.insert(std::stoi(hydra::Json::parse(q.getColumn(0).getString())["msg"].get<std::string>()));
    std::set<int> expected;
    for (int i = 0; i < acknowledged; ++i) expected.insert(i);
    BOOST_CHECK(stored == expected);
    BOOST_TEST_MESSAGE(acknowledged << " pushes stored before: " << failure);
}

BOOST_AUTO_TEST_SUITE_END()
