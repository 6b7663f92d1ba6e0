// The host's own /healthz (liveness: every I/O loop and the queue's writer turned within a second) and /readyz
// (readiness: listening, the queue backend takes messages, not draining), on the API and the admin listener: made
// to fail for real (a loop held up by a handler, Kafka's broker frozen, a drain) and seen to recover.
#include <boost/test/unit_test.hpp>

#include <sys/resource.h>

#include <chrono>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include <hydra/app.h>
#include <hydra/ws_client.h>

#include "support/config.h"
#include "support/host.h"
#include "support/http.h"
#include "support/http_raw.h"
#include "support/kafka_mock.h"
#include "support/temp.h"
#include "support/wait.h"

using hydra::Context;
using hydra::Json;
using namespace std::chrono_literals;

namespace {

hydra::Config host_config(std::vector<std::string> sets = {}) { return test::app_config(std::move(sets)); }

test::HttpReply get(const std::string& address, const std::string& path) { return test::http(address, "GET", path); }

bool names(const Json& list, const std::string& name) {
    for (const auto& item : list)
        if (item == name) return true;
    return false;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(health)

BOOST_AUTO_TEST_CASE(both_listeners_answer_the_probes_without_keys_and_beyond_the_rate_limit) {
    hydra::App app{{.plat = "mall", .system = "probe"}};
    // Keys everywhere on the admin listener, a rate limit of one request a second: neither applies to probes.
    app.start(host_config({"auth.api_keys=secret-key", "api.rate_limit.requests_per_s=1", "api.rate_limit.burst=1"}));
    for (const std::string& address : {app.api_address(), app.admin_address()}) {
        for (int i = 0; i < 5; ++i) {
            auto health = get(address, "/healthz");
            BOOST_REQUIRE_EQUAL(health.status, 200);
            BOOST_CHECK_EQUAL(health.json()["status"], "ok");
            BOOST_CHECK_EQUAL(health.json()["system"], "probe");
            BOOST_CHECK_EQUAL(health.json()["servers"]["api"], app.api_address());
            BOOST_CHECK_EQUAL(health.json()["servers"]["ws"]["connections"], 0);
            BOOST_CHECK_EQUAL(health.json()["servers"]["queue"], "sqlite");
            auto ready = get(address, "/readyz");
            BOOST_REQUIRE_EQUAL(ready.status, 200);
            BOOST_CHECK_EQUAL(ready.json(), Json({{"status", "ready"}}));
        }
    }
    // The limit is on for everything else (the probes did not lift it): a burst of other requests meets it.
    int limited = 0;
    for (int i = 0; i < 5; ++i) limited += test::http(app.api_address(), "GET", "/nothing").status == 429;
    BOOST_CHECK_GE(limited, 3);
    app.stop();
}

BOOST_AUTO_TEST_CASE(a_held_up_api_loop_makes_healthz_503_naming_it_until_it_turns_again) {
    hydra::App app;
    // An asynchronous route runs on the API's I/O loop: this one holds it up for 3 s (the condition under test).
    app.api_async("/hold", [](Context&, hydra::Reply reply) {
        std::this_thread::sleep_for(3s);
        reply(Json{{"held", true}});
    });
    app.start(host_config());
    BOOST_REQUIRE_EQUAL(get(app.admin_address(), "/healthz").status, 200);
    auto held = std::async(std::launch::async, [&] { return test::http(app.api_address(), "GET", "/hold").status; });

    // The admin listener has a loop of its own: it answers, naming the API's loop as stuck.
    test::HttpReply stuck;
    BOOST_REQUIRE(test::wait_until(
        [&] {
            stuck = get(app.admin_address(), "/healthz");
            return stuck.status == 503;
        },
        20s));
    BOOST_CHECK_EQUAL(stuck.json()["status"], "unhealthy");
    BOOST_CHECK_MESSAGE(names(stuck.json()["stuck"], "api-io-0"), stuck.body);
    BOOST_CHECK_MESSAGE(!names(stuck.json()["stuck"], "admin-io-0"), stuck.body);
    BOOST_CHECK_MESSAGE(!names(stuck.json()["stuck"], "ws-io-0") && !names(stuck.json()["stuck"], "queue-writer"),
                        stuck.body);

    // Once the handler lets go, the loop turns again: healthy on both listeners.
    BOOST_CHECK_EQUAL(held.get(), 200);
    BOOST_CHECK(test::wait_until([&] { return get(app.admin_address(), "/healthz").status == 200; }, 20s));
    BOOST_CHECK_EQUAL(get(app.api_address(), "/healthz").status, 200);
    app.stop();
}

BOOST_AUTO_TEST_CASE(a_held_up_ws_loop_makes_healthz_503_naming_it_until_it_turns_again) {
    hydra::App app;
    // An endpoint run on the WS I/O loop: a message holds that loop up for 3 s (the condition under test).
    hydra::WsEndpoint hold;
    hold.run_on_loop = true;
    hold.on_message = [](Context&) -> hydra::Result {
        std::this_thread::sleep_for(3s);
        return std::string("let go");
    };
    app.ws_endpoint("/hold", hold);
    app.start(host_config());
    const std::string ws = app.ws_address();
    hydra::WsClient c = hydra::WsClient::connect("127.0.0.1", std::stoi(ws.substr(ws.rfind(':') + 1)), "/hold");
    c.send_text("hold");
    test::HttpReply stuck;
    BOOST_REQUIRE(test::wait_until(
        [&] {
            stuck = get(app.api_address(), "/healthz");
            return stuck.status == 503;
        },
        20s));
    // One of the two WS loops (the one that owns the connection), and nothing else.
    BOOST_CHECK_MESSAGE(
        stuck.json()["stuck"].size() == 1 && stuck.json()["stuck"][0].get<std::string>().starts_with("ws-io-"),
        stuck.body);
    BOOST_CHECK_EQUAL(c.receive(20s).data, "let go");
    BOOST_CHECK(test::wait_until([&] { return get(app.api_address(), "/healthz").status == 200; }, 20s));
    app.stop();
}

BOOST_AUTO_TEST_CASE(an_idle_host_stays_healthy) {
    // No traffic for several seconds: every loop and the writer still turn (a heartbeat, not a side effect of work).
    hydra::App app;
    app.start(host_config({"ws.ping_interval_ms=0", "ws.idle_timeout_ms=0"}));
    std::this_thread::sleep_for(3s);  // the condition: idle for longer than the 1 s a thread may stay silent
    auto health = get(app.admin_address(), "/healthz");
    BOOST_CHECK_MESSAGE(health.status == 200, health.body);
    app.stop();
}

BOOST_AUTO_TEST_CASE(readyz_is_503_draining_from_the_start_of_a_drain_while_healthz_stays_200) {
    hydra::App app;
    app.start(host_config({"shutdown.grace_ms=60000"}));
    const std::string api = app.api_address();
    const std::string admin = app.admin_address();
    test::RawHttp open(api);  // probes over a connection opened before the drain
    auto draining = std::async(std::launch::async, [&app] { app.drain(); });
    BOOST_CHECK(test::wait_until([&] { return get(admin, "/readyz").status == 503; }, 20s));
    auto ready = get(api, "/readyz");
    BOOST_CHECK_EQUAL(ready.status, 503);
    BOOST_CHECK_EQUAL(ready.json(), Json({{"status", "unready"}, {"reasons", {"draining"}}}));
    BOOST_CHECK_EQUAL(get(api, "/healthz").status, 200);
    open.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    BOOST_CHECK_EQUAL(test::status_of(open.read_responses(1)), 200);
    // Within its minute of grace, hurry() ends it.
    app.hurry();
    BOOST_CHECK(draining.wait_for(30s) == std::future_status::ready);
    BOOST_CHECK(!app.running());
}

BOOST_AUTO_TEST_CASE(readyz_is_503_while_the_kafka_broker_does_not_answer_and_200_again_after) {
    test::KafkaMock kafka;
    hydra::App app;
    app.start(host_config({"queue.backend=kafka", "queue.kafka.brokers=" + kafka.bootstrap, "cluster.enabled=false"}));
    BOOST_REQUIRE(test::wait_until([&] { return get(app.admin_address(), "/readyz").status == 200; }, 30s));

    // The broker's process frozen: it accepts nothing, answers nothing (an outage, not a refusal).
    kafka.process.signal(SIGSTOP);
    test::HttpReply ready;
    BOOST_CHECK(test::wait_until(
        [&] {
            ready = get(app.admin_address(), "/readyz");
            return ready.status == 503;
        },
        30s));
    BOOST_CHECK_EQUAL(ready.json()["status"], "unready");
    BOOST_CHECK_MESSAGE(ready.json()["reasons"].size() == 1 &&
                            ready.json()["reasons"][0].get<std::string>().starts_with("queue: kafka: no metadata"),
                        ready.body);
    // Unready is not unhealthy: the host's own threads turn.
    BOOST_CHECK_EQUAL(get(app.api_address(), "/healthz").status, 200);

    kafka.process.signal(SIGCONT);
    BOOST_CHECK(test::wait_until([&] { return get(app.admin_address(), "/readyz").status == 200; }, 30s));
    app.stop();
}

BOOST_AUTO_TEST_CASE(readyz_is_503_while_the_sqlite_queue_cannot_write_and_200_after_the_next_commit) {
    // The real binary, so that the condition is the process's own: a file size limit (RLIMIT_FSIZE, set from
    // outside with prlimit) that the queue's database cannot grow past. No MQC: only the pushes below write.
    test::Host host({"--set", "mqc.enabled=false"});
    BOOST_REQUIRE(test::wait_until([&] { return get(host.admin, "/readyz").status == 200; }, 20s));
    auto send = [&](std::size_t bytes) {
        return test::http(host.api, "POST", "/msg/send",
                          Json{{"uuid", "nobody"}, {"msg", std::string(bytes, 'x')}}.dump());
    };
    BOOST_REQUIRE_EQUAL(send(100).status, 200);

    rlimit tiny{1, RLIM_INFINITY};
    BOOST_REQUIRE_EQUAL(::prlimit(host.process->pid(), RLIMIT_FSIZE, &tiny, nullptr), 0);
    // A message larger than anything written so far must grow the database's log: the commit fails.
    auto refused = send(512 * 1024);
    BOOST_CHECK_EQUAL(refused.status, 503);
    test::HttpReply ready;
    BOOST_CHECK(test::wait_until(
        [&] {
            ready = get(host.admin, "/readyz");
            return ready.status == 503;
        },
        20s));
    BOOST_CHECK_MESSAGE(ready.json()["reasons"].size() == 1 &&
                            ready.json()["reasons"][0].get<std::string>().starts_with("queue: sqlite:"),
                        ready.body);
    BOOST_CHECK_EQUAL(get(host.api, "/healthz").status, 200);  // unready, not stuck

    rlimit unlimited{RLIM_INFINITY, RLIM_INFINITY};
    BOOST_REQUIRE_EQUAL(::prlimit(host.process->pid(), RLIMIT_FSIZE, &unlimited, nullptr), 0);
    BOOST_CHECK_EQUAL(send(512 * 1024).status, 200);
    BOOST_CHECK(test::wait_until([&] { return get(host.admin, "/readyz").status == 200; }, 20s));
}

BOOST_AUTO_TEST_SUITE_END()
