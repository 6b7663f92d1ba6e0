// Two real `hydra` hosts sharing a Kafka (librdkafka's mock cluster, run by kcat in its own process): clients on
// one host get what is sent through the other.
#include <boost/test/unit_test.hpp>

#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include <hydra/json.h>
#include <hydra/ws_client.h>

#include "support/host.h"
#include "support/http.h"
#include "support/kafka_mock.h"
#include "support/metrics.h"
#include "support/process.h"
#include "support/temp.h"
#include "support/wait.h"

using hydra::Json;
using hydra::WsClient;
using hydra::WsMessage;
using namespace std::chrono_literals;

namespace {

// One host of the cluster: the real binary on Kafka (clients name themselves with X-Request-Id).
struct Host : test::Host {
    Host(const std::string& node, const std::string& brokers, const std::vector<std::string>& extra = {})
        : test::Host(args(node, brokers, extra), {.start = 60s, .stop = 30s}) {}
    static std::vector<std::string> args(const std::string& node, const std::string& brokers,
                                         const std::vector<std::string>& extra) {
        std::vector<std::string> a = {"--set", "queue.backend=kafka",
                                      "--set", "queue.kafka.brokers=" + brokers,
                                      "--set", "queue.kafka.properties.session.timeout.ms=6000",
                                      "--set", "cluster.node_id=" + node,
                                      "--set", "ws.client_uuid=request_id",
                                      "--set", "services.push.database=" + test::temp_path(node + "-push.db")};
        a.insert(a.end(), extra.begin(), extra.end());
        return a;
    }
    // The cluster-wide connection count this host sees (its own plus the others' presence).
    int connections() {
        try {
            return test::http(api, "GET", "/healthz").json()["servers"]["ws"]["connections"].get<int>();
        } catch (const std::exception&) {
            return -1;
        }
    }
    bool wait_connections(int n, std::chrono::milliseconds timeout = 20s) {
        return test::wait_until([&] { return connections() == n; }, timeout);
    }
};

Json next_json(WsClient& c, std::chrono::milliseconds timeout = 20s) { return test::next_json(c, timeout); }

}  // namespace

BOOST_AUTO_TEST_SUITE(cluster)

BOOST_AUTO_TEST_CASE(two_hosts_share_notify_publish_and_queues) {
    test::KafkaMock kafka;
    // A consumes no queue: every queued message is handled on B, so a push for a user on A always crosses hosts.
    Host a("host-a", kafka.bootstrap, {"--set", "mqc.enabled=false"});
    Host b("host-b", kafka.bootstrap);

    // alice on A; B learns it from presence
    WsClient alice = a.connect("/", "alice-on-a");
    alice.send_text(R"({"service":"/member/login","uname":"alice","pwd":"alice-pw"})");
    BOOST_CHECK_EQUAL(next_json(alice)["code"], 200);
    BOOST_REQUIRE(b.wait_connections(1));

    // a Notify by uuid sent through B reaches A's client, once
    auto r = test::http(b.admin, "POST", "/v1/exchange/notify", R"({"uuid":"alice-on-a","data":{"hello":"from b"}})");
    BOOST_CHECK_EQUAL(r.status, 200);
    BOOST_CHECK_EQUAL(next_json(alice)["data"]["hello"], "from b");

    // /msg/send on B → Kafka queue → the MQC consumer on B → notify_user across hosts → alice's device on A, once
    r = test::http(b.api, "POST", "/msg/send", R"({"uname":"alice","msg":"充值成功"})");
    BOOST_CHECK_EQUAL(r.status, 200);
    Json n = next_json(alice, 40s);
    BOOST_CHECK_EQUAL(n["service"], "notify");
    BOOST_CHECK_EQUAL(n["data"]["msg"], "充值成功");
    BOOST_CHECK(alice.receive(1s).type == WsMessage::Type::timeout);

    // chat: a message sent on B reaches room members on A (and B), once each
    WsClient x = a.connect("/chat");
    WsClient y = b.connect("/chat", "yves-on-b");
    for (WsClient* c : {&x, &y}) {
        c->send_text(R"({"op":"join","room_id":77})");
        BOOST_CHECK_EQUAL(next_json(*c)["status"], "success");
    }
    y.send_text(R"({"op":"send","msg":"across hosts"})");
    BOOST_CHECK_EQUAL(next_json(y)["status"], "success");
    Json expected = {{"client_id", "yves-on-b"}, {"msg", "across hosts"}};
    BOOST_CHECK_EQUAL(next_json(x), expected);
    BOOST_CHECK_EQUAL(next_json(y), expected);
    BOOST_CHECK(x.receive(1s).type == WsMessage::Type::timeout);

    // /v1/mesh/publish on B reaches A
    r = test::http(b.admin, "POST", "/v1/mesh/publish", R"({"c":"room:77","d":"{\"from\":\"mesh\"}"})");
    BOOST_CHECK_EQUAL(r.status, 200);
    BOOST_CHECK_EQUAL(x.receive(20s).data, R"({"from":"mesh"})");
    BOOST_CHECK_EQUAL(y.receive(20s).data, R"({"from":"mesh"})");  // y is in the room too

    // a broadcast from A reaches B's client
    r = test::http(a.api, "POST", "/msg/broadcast", R"({"msg":"everyone"})");
    BOOST_CHECK_EQUAL(r.status, 200);
    BOOST_CHECK_EQUAL(next_json(y)["data"]["msg"], "everyone");

    // What B's metrics say about it: two hosts, A's connections known, notify and notify_user sent to A's topic.
    test::Samples m = test::scrape(b.admin);
    BOOST_CHECK_EQUAL(test::sample(m, "hydra_cluster_hosts_alive"), 2);
    BOOST_CHECK_GE(test::sample(m, "hydra_cluster_presence_entries"), 2);  // alice and x on A
    BOOST_CHECK_EQUAL(test::sample(m, "hydra_cluster_routed_total", R"(kind="notify",via="node")"), 1);
    BOOST_CHECK_EQUAL(test::sample(m, "hydra_cluster_routed_total", R"(kind="notify_user",via="node")"), 1);
    BOOST_CHECK_GE(test::sample(m, "hydra_cluster_routed_total", R"(kind="publish",via="bus")"), 2);
    BOOST_CHECK_EQUAL(test::sample(m, "hydra_cluster_route_failures_total"), 0);
    BOOST_CHECK_GE(test::sum_of(m, "hydra_queue_pushes_total", {R"(result="ok")"}), 1);  // on Kafka too
    // The consumer lag of B's MQC route, from librdkafka's statistics (every 5 s).
    BOOST_CHECK(test::wait_until(
        [&] {
            m = test::scrape(b.admin);
            return m.count(R"(hydra_queue_consumer_lag{group="mall.wsserver.msg.push",queue="mall:wsserver:msg"})") ==
                   1;
        },
        30s));
}

// hydra_queue_partitions_assigned shows how a queue's consumer group shares its partitions: both hosts consume
// the route's queue, each holds some of the topic's 4 (the mock cluster's default) once the group has settled, and
// the one left holds all 4 after the other stops.
BOOST_AUTO_TEST_CASE(two_hosts_share_a_queues_partitions_and_the_metrics_show_it) {
    test::KafkaMock kafka;
    Host a("host-a", kafka.bootstrap);
    auto b = std::make_unique<Host>("host-b", kafka.bootstrap);
    const std::string gauge =
        R"(hydra_queue_partitions_assigned{group="mall.wsserver.msg.push",queue="mall:wsserver:msg"})";
    auto held = [&](const test::Host& host) {
        test::Samples m = test::scrape(host.admin);
        return m.count(gauge) ? m[gauge] : -1.0;
    };
    double on_a = -1, on_b = -1;
    BOOST_CHECK(test::wait_until(
        [&] {
            on_a = held(a);
            on_b = held(*b);
            return on_a >= 1 && on_b >= 1 && on_a + on_b == 4;
        },
        60s));
    BOOST_TEST_MESSAGE("partitions held: A " << on_a << ", B " << on_b);

    b.reset();  // a clean stop leaves the group
    BOOST_CHECK(test::wait_until([&] { return (on_a = held(a)) == 4; }, 60s));
    BOOST_CHECK_EQUAL(on_a, 4);
}

BOOST_AUTO_TEST_CASE(a_host_that_dies_leaves_the_others_working) {
    test::KafkaMock kafka;
    Host a("host-a", kafka.bootstrap);
    auto b = std::make_unique<Host>("host-b", kafka.bootstrap);
    WsClient on_b = b->connect("/", "client-on-b");
    BOOST_REQUIRE(a.wait_connections(1));

    b->kill();
    // B's client is gone with it: A stops routing to B once B's heartbeats stop
    BOOST_CHECK(a.wait_connections(0, 30s));

    // the client reconnects to A (same id) and is reachable again
    WsClient again = a.connect("/", "client-on-b");
    auto r = test::http(a.admin, "POST", "/v1/exchange/notify", R"({"uuid":"client-on-b","data":"back"})");
    BOOST_CHECK_EQUAL(r.status, 200);
    BOOST_CHECK_EQUAL(next_json(again)["data"], "back");
}

BOOST_AUTO_TEST_SUITE_END()
