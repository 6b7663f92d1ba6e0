// Asynchronous API routes (App::api_async): handlers on the I/O loop that answer later through a Reply, e.g. when a
// queue push is durable. Real server on port 0, real HTTP clients, the real SQLite queue.
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include <hydra/app.h>

#include "queue/sqlite/sqlite_queue.h"
#include "support/http.h"
#include "support/temp.h"

using hydra::Context;
using hydra::Json;
using hydra::Reply;
using test::http;
using namespace std::chrono_literals;

namespace {

// Replies held back until the test releases them, answered from a thread of the test (not the loop).
struct Held {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<Reply> replies;

    void add(Reply r) {
        {
            std::lock_guard lock(mu);
            replies.push_back(std::move(r));
        }
        cv.notify_all();
    }
    bool wait_count(std::size_t n) {
        std::unique_lock lock(mu);
        return cv.wait_for(lock, 10s, [&] { return replies.size() >= n; });
    }
    // Answers every held request from a new thread; returns how many.
    std::size_t release_all() {
        std::vector<Reply> all;
        {
            std::lock_guard lock(mu);
            all.swap(replies);
        }
        std::thread([all] {
            int i = 0;
            for (const auto& r : all) r(Json{{"released", i++}});
        }).join();
        return all.size();
    }
};

struct AsyncFixture {
    hydra::App app{{.plat = "test", .system = "async"}};
    std::string addr;
    std::string queue_path = test::temp_path("q.db");
    Held held;

    // `threads`: API handler threads; `middleware`: wrap every result in {"wrapped": ...}.
    explicit AsyncFixture(int threads = 4, bool middleware = false, std::vector<std::string> sets = {}) {
        app.api("/sync", [](Context&) { return Json{{"sync", true}}; });
        app.api_async("/now", [](Context& ctx, Reply reply) { reply(Json{{"now", ctx.param("v")}}); });
        app.api_async("/held", [this](Context& ctx, Reply reply) {
            ctx.set_response_header("X-Handler", "set before returning");
            held.add(std::move(reply));
        });
        app.api_async("/throws", [](Context&, Reply) { throw hydra::Error(422, "no such item"); });
        app.api_async("/crashes", [](Context&, Reply) { throw std::runtime_error("internal detail"); });
        app.api_async("/drops", [](Context&, Reply) {});
        app.api_async("/twice", [](Context&, Reply reply) {
            reply(Json{{"first", true}});
            reply(Json{{"second", true}});
        });
        app.api_async("/push",
                      [](Context& ctx, Reply reply) {
                          ctx.queue().push_async(ctx.param("queue", "test:async"), Json{{"msg", ctx.require("msg")}},
                                                 [reply](const hydra::Error* error) {
                                                     if (error != nullptr) return reply(*error);
                                                     reply(Json{{"code", 0}});
                                                 });
                      },
                      {.methods = {"POST"}});
        if (middleware)
            app.use([](Context& ctx, const hydra::Next& next) -> hydra::Result {
                if (ctx.has("deny")) return hydra::Error(403, "denied by middleware");
                hydra::Result r = next();
                if (r.kind() != hydra::Result::Kind::json) return r;
                return Json{{"wrapped", r.value()}};
            });
        sets.insert(sets.end(),
                    {"api.address=127.0.0.1:0", "admin.address=127.0.0.1:0", "ws.enabled=false", "log.level=error",
                     "queue.sqlite.path=" + queue_path, "api.threads=" + std::to_string(threads)});
        app.start(hydra::Config::from_json(Json::object(), "test", sets, hydra::ConfigSchema::builtin()));
        addr = app.api_address();
    }
    ~AsyncFixture() {
        held.release_all();  // nothing left hanging at stop
        app.stop();
    }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(api_async)

BOOST_AUTO_TEST_CASE(a_reply_from_the_handler_or_later_from_another_thread_answers) {
    AsyncFixture f;
    auto r = http(f.addr, "GET", "/now?v=7");
    BOOST_CHECK_EQUAL(r.status, 200);
    BOOST_CHECK_EQUAL(r.json()["now"], "7");
    BOOST_CHECK(!r.headers["X-Request-Id"].empty());

    auto later = std::async(std::launch::async, [&] { return http(f.addr, "GET", "/held"); });
    BOOST_REQUIRE(f.held.wait_count(1));
    BOOST_CHECK(later.wait_for(100ms) == std::future_status::timeout);  // not answered before the reply
    BOOST_CHECK_EQUAL(f.held.release_all(), 1u);
    r = later.get();
    BOOST_CHECK_EQUAL(r.status, 200);
    BOOST_CHECK_EQUAL(r.json()["released"], 0);
    BOOST_CHECK_EQUAL(r.headers["X-Handler"], "set before returning");
}

BOOST_AUTO_TEST_CASE(errors_thrown_dropped_replies_and_second_replies) {
    AsyncFixture f;
    auto r = http(f.addr, "GET", "/throws");
    BOOST_CHECK_EQUAL(r.status, 422);
    BOOST_CHECK_EQUAL(r.json()["msg"], "no such item");

    r = http(f.addr, "GET", "/crashes");
    BOOST_CHECK_EQUAL(r.status, 500);
    BOOST_CHECK(r.body.find("internal detail") == std::string::npos);  // not leaked to the client

    r = http(f.addr, "GET", "/drops");  // the handler kept no copy of its reply: 500, not a hang
    BOOST_CHECK_EQUAL(r.status, 500);
    BOOST_CHECK(r.json()["msg"].get<std::string>().find("did not reply") != std::string::npos);

    r = http(f.addr, "GET", "/twice");
    BOOST_CHECK_EQUAL(r.status, 200);
    BOOST_CHECK(r.json().contains("first"));

    BOOST_CHECK_EQUAL(http(f.addr, "GET", "/push").status, 405);  // verbs as for api()
    BOOST_CHECK_EQUAL(http(f.addr, "POST", "/push", R"({"no_msg":1})").status, 400);
}

// Pending async requests hold no handler thread and do not block the loop: with one handler thread and five
// requests waiting for their replies, other requests (sync and async) are still answered at once.
BOOST_AUTO_TEST_CASE(waiting_requests_hold_no_thread_and_do_not_block_the_loop) {
    AsyncFixture f(1);
    std::vector<std::future<test::HttpReply>> waiting;
    for (int i = 0; i < 5; ++i)
        waiting.push_back(std::async(std::launch::async, [&] { return http(f.addr, "GET", "/held"); }));
    BOOST_REQUIRE(f.held.wait_count(5));
    BOOST_CHECK_EQUAL(http(f.addr, "GET", "/sync").status, 200);
    BOOST_CHECK_EQUAL(http(f.addr, "GET", "/now").status, 200);
    for (auto& w : waiting) BOOST_CHECK(w.wait_for(0ms) == std::future_status::timeout);
    BOOST_CHECK_EQUAL(f.held.release_all(), 5u);
    std::set<int> released;
    for (auto& w : waiting) {
        auto r = w.get();
        BOOST_CHECK_EQUAL(r.status, 200);
        released.insert(r.json()["released"].get<int>());
    }
    BOOST_CHECK_EQUAL(released.size(), 5u);
}

BOOST_AUTO_TEST_CASE(push_async_answers_once_the_message_is_stored) {
    AsyncFixture f;
    for (int i = 0; i < 20; ++i) {
        auto r = http(f.addr, "POST", "/push", Json{{"msg", "m" + std::to_string(i)}}.dump());
        BOOST_REQUIRE_EQUAL(r.status, 200);
        // Answered means committed: the row is readable by another connection right now.
        Json rows = hydra::queue::SqliteQueue::peek(f.queue_path, "test:async", 100);
        BOOST_REQUIRE_EQUAL(rows.size(), static_cast<std::size_t>(i + 1));
        BOOST_CHECK_EQUAL(Json::parse(rows.back()["payload"].get<std::string>())["msg"], "m" + std::to_string(i));
        BOOST_CHECK_EQUAL(rows.back()["headers"]["x-request-id"], r.headers["X-Request-Id"]);
    }
    auto r = http(f.addr, "POST", "/push", R"({"msg":"x","queue":"bad queue name!"})");
    BOOST_CHECK_EQUAL(r.status, 400);
    BOOST_CHECK(r.json()["msg"].get<std::string>().find("queue") != std::string::npos);
}

// With API middleware the chain runs on a handler thread, which waits for the reply: next() returns it.
BOOST_AUTO_TEST_CASE(middleware_sees_the_reply_of_an_async_route) {
    AsyncFixture f(4, true);
    auto r = http(f.addr, "GET", "/now?v=1");
    BOOST_CHECK_EQUAL(r.status, 200);
    BOOST_CHECK_EQUAL(r.json()["wrapped"]["now"], "1");
    BOOST_CHECK_EQUAL(http(f.addr, "GET", "/now?deny=1").status, 403);
    BOOST_CHECK_EQUAL(http(f.addr, "GET", "/drops").status, 500);
    BOOST_CHECK_EQUAL(http(f.addr, "GET", "/throws").status, 422);
    r = http(f.addr, "POST", "/push", R"({"msg":"through middleware"})");
    BOOST_CHECK_EQUAL(r.status, 200);
    BOOST_CHECK_EQUAL(r.json()["wrapped"]["code"], 0);
}

// A reply that comes after the server stopped (its client was cut off at the shutdown timeout) goes nowhere: no
// crash, no use of freed memory (the dev preset runs this under ASan).
BOOST_AUTO_TEST_CASE(a_reply_after_the_server_stopped_is_harmless) {
    AsyncFixture f(4, false, {"api.shutdown_timeout_ms=200"});
    auto waiting = std::async(std::launch::async, [&] {
        try {
            return http(f.addr, "GET", "/held").status;
        } catch (const std::exception&) {
            return -1;  // the server closed the connection at its shutdown timeout
        }
    });
    BOOST_REQUIRE(f.held.wait_count(1));
    auto started = std::chrono::steady_clock::now();
    f.app.stop();
    // The held request did not block the stop (25x the shutdown timeout: a hang, not a slow machine, fails this).
    BOOST_CHECK_LT(std::chrono::steady_clock::now() - started, 5s);
    BOOST_CHECK_EQUAL(waiting.get(), -1);
    BOOST_CHECK_EQUAL(f.held.release_all(), 1u);
}

BOOST_AUTO_TEST_SUITE_END()
