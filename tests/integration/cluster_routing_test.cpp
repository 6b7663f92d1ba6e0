// The cluster's routing of per-connection operations: set, get, bind, send, subscribe and kick called on one host for
// a uuid held by another, bytes that are not UTF-8 carried unchanged, and the bus fallback while presence is still
// loading. Two in-process hosts (hydra::App on real sockets, queue.backend=kafka) share a Kafka: librdkafka's mock
// cluster, run by kcat in its own process.
#include <boost/test/unit_test.hpp>

#include <hydra/app.h>
#include <hydra/jwt.h>
#include <hydra/ws_client.h>

#include "cluster/cluster_exchange.h"
#include "services/admin/exchange_api.h"
#include "support/host.h"
#include "support/http.h"
#include "support/kafka_mock.h"
#include "support/wait.h"
#include "ws/ws_exchange.h"

using hydra::Json;
using hydra::WsClient;
using hydra::WsMessage;
using namespace std::chrono_literals;

namespace {

const std::string kPrefix = "test.routing";  // <plat>.<system> of every host below: the topics they share

// One host of the cluster: a WS server (clients name themselves with X-Request-Id) and the cluster exchange.
struct Node {
    hydra::App app{{.plat = "test", .system = "routing"}};
    int ws_port = 0;

    // `setup` registers more routes before the start.
    Node(const std::string& id, const std::string& brokers, const std::vector<std::string>& extra = {},
         const std::function<void(hydra::App&)>& setup = {}) {
        app.ws("/noop", [](hydra::Context&) { return Json::object(); });
        if (setup) setup(app);
        std::vector<std::string> sets = {"api.enabled=false",         "admin.enabled=false",
                                         "mqc.enabled=false",         "ws.address=127.0.0.1:0",
                                         "ws.io_threads=1",           "ws.workers=2",
                                         "ws.client_uuid=request_id", "log.level=warn",
                                         "queue.backend=kafka",       "queue.kafka.brokers=" + brokers,
                                         "cluster.node_id=" + id};
        sets.insert(sets.end(), extra.begin(), extra.end());  // later values win
        app.start(hydra::Config::from_json(Json::object(), "test", sets, hydra::ConfigSchema::builtin()));
        std::string ws = app.ws_address();
        ws_port = std::stoi(ws.substr(ws.rfind(':') + 1));
    }
    ~Node() { app.stop(); }
    hydra::Exchange& exchange() { return *app.exchange(); }
    WsClient connect(const std::string& uuid, const std::string& header = "X-Request-Id") {
        return WsClient::connect("127.0.0.1", ws_port, "/", {{header, uuid}});
    }
};

// Host A holds the client "client-on-a"; host B has learnt so from presence.
struct TwoHosts {
    test::KafkaMock kafka;
    Node a{"host-a", kafka.bootstrap};
    Node b{"host-b", kafka.bootstrap};
    WsClient client = a.connect("client-on-a");

    TwoHosts() {
        BOOST_REQUIRE_MESSAGE(test::wait_until([&] { return b.exchange().connections() == 1; }, 30s),
                              "host B never saw the client of host A in presence");
    }
};

Json next_json(WsClient& c, std::chrono::milliseconds timeout = 20s) { return test::next_json(c, timeout); }

// A WS exchange with no server behind it: the local side of a cluster exchange that holds no connection.
struct NoDelivery : hydra::ws::Delivery {
    void deliver(std::uint64_t, hydra::ws::Frame) override {}
    void deliver_confirmed(std::uint64_t, hydra::ws::Frame, std::function<void(bool)> written) override {
        written(false);
    }
    void deliver_many(std::vector<std::uint64_t>, hydra::ws::Frame) override {}
    std::size_t deliver_all(hydra::ws::Frame) override { return 0; }
    void close(std::uint64_t, int, std::string) override {}
};

}  // namespace

BOOST_AUTO_TEST_SUITE(cluster_routing)

BOOST_AUTO_TEST_CASE(set_on_a_remote_uuid_is_forwarded_and_get_answers_for_local_connections_only) {
    TwoHosts hosts;
    BOOST_CHECK(!hosts.b.exchange().get("client-on-a", "color"));

    BOOST_CHECK(hosts.b.exchange().set("client-on-a", "color", Json{{"name", "blue"}}));
    // The value lands on the owner...
    BOOST_CHECK(test::wait_until([&] {
        auto v = hosts.a.exchange().get("client-on-a", "color");
        return v && *v == Json{{"name", "blue"}};
    }));
    // ...and only there: a get on another host answers for its own connections only.
    BOOST_CHECK(!hosts.b.exchange().get("client-on-a", "color"));

    // A later set from B replaces it on A (forwarded again, not cached on B).
    BOOST_CHECK(hosts.b.exchange().set("client-on-a", "color", "red"));
    BOOST_CHECK(test::wait_until([&] { return hosts.a.exchange().get("client-on-a", "color") == Json("red"); }));
    BOOST_CHECK(!hosts.b.exchange().get("client-on-a", "color"));
}

BOOST_AUTO_TEST_CASE(bind_send_subscribe_and_kick_on_a_remote_uuid_take_effect_on_its_host) {
    TwoHosts hosts;
    hydra::Exchange& a = hosts.a.exchange();
    hydra::Exchange& b = hosts.b.exchange();
    WsClient& client = hosts.client;

    // bind: the user is bound on A (A reaches the device locally)...
    BOOST_CHECK(b.bind("carol", "client-on-a"));
    BOOST_REQUIRE(test::wait_until([&] { return a.notify_user("carol", {{"probe", "a"}}) == 1; }));
    BOOST_CHECK_EQUAL(next_json(client)["data"], (Json{{"probe", "a"}}));
    // ...and A announces it: B now routes the user's messages to A.
    BOOST_REQUIRE(test::wait_until([&] { return b.notify_user("carol", {{"probe", "b"}}) == 1; }));
    BOOST_CHECK_EQUAL(next_json(client)["data"], (Json{{"probe", "b"}}));

    // send: the raw text reaches the client on A, unchanged.
    BOOST_CHECK(b.send("client-on-a", R"({"raw":"from b"})"));
    WsMessage raw = client.receive(20s);
    BOOST_CHECK_EQUAL(raw.type, WsMessage::Type::text);
    BOOST_CHECK_EQUAL(raw.data, R"({"raw":"from b"})");

    // subscribe: the client on A joins the channel on A; a publish from either host reaches it.
    BOOST_CHECK(b.subscribe("client-on-a", "room:5"));
    BOOST_REQUIRE(test::wait_until([&] { return a.publish("room:5", "from a") == 1; }));
    BOOST_CHECK_EQUAL(client.receive(20s).data, "from a");
    b.publish("room:5", "from b");
    BOOST_CHECK_EQUAL(client.receive(20s).data, "from b");

    // kick: A closes the connection with B's code and reason.
    BOOST_CHECK(b.kick("client-on-a", 4001, "moved"));
    WsMessage closed = client.receive(20s);
    BOOST_CHECK_EQUAL(closed.type, WsMessage::Type::close);
    BOOST_CHECK_EQUAL(closed.close_code, 4001);
    BOOST_CHECK_EQUAL(closed.close_reason, "moved");
    // The close is announced: neither host counts the connection any more.
    BOOST_CHECK(test::wait_until([&] { return a.connections() == 0 && b.connections() == 0; }));
    // Once presence is known, an operation on a uuid no host holds is not routed anywhere.
    BOOST_CHECK(!b.set("client-on-a", "color", "red"));
    BOOST_CHECK(!b.kick("client-on-a", 4001, "moved"));
}

BOOST_AUTO_TEST_CASE(bytes_that_are_not_utf8_cross_hosts_unchanged_as_binary_messages) {
    TwoHosts hosts;
    hydra::Exchange& a = hosts.a.exchange();
    hydra::Exchange& b = hosts.b.exchange();
    WsClient& client = hosts.client;
    const std::string bytes("\x00\xff\xfe{\"k\":\x80}\xc3", 10);  // not UTF-8: a JSON string cannot hold it

    BOOST_CHECK(b.send("client-on-a", bytes));
    WsMessage sent = client.receive(20s);
    BOOST_CHECK_EQUAL(sent.type, WsMessage::Type::binary);
    BOOST_CHECK(sent.data == bytes);

    BOOST_CHECK(b.subscribe("client-on-a", "room:bin"));
    BOOST_REQUIRE(test::wait_until([&] { return a.publish("room:bin", "ready") == 1; }));
    BOOST_CHECK_EQUAL(client.receive(20s).data, "ready");
    b.publish("room:bin", bytes);
    WsMessage published = client.receive(20s);
    BOOST_CHECK_EQUAL(published.type, WsMessage::Type::binary);
    BOOST_CHECK(published.data == bytes);
    // UTF-8 still goes as text.
    b.publish("room:bin", "h\xc3\xa9");
    WsMessage text = client.receive(20s);
    BOOST_CHECK_EQUAL(text.type, WsMessage::Type::text);
    BOOST_CHECK_EQUAL(text.data, "h\xc3\xa9");
}

BOOST_AUTO_TEST_CASE(before_presence_is_loaded_messages_for_unknown_uuids_go_over_the_bus) {
    TwoHosts hosts;

    // A host that has not read presence yet (as at its cold start, until it reaches the end of the presence
    // topic): it cannot know that A holds the client, so it sends on the bus, which every host reads.
    hydra::Config config = hydra::Config::from_json(
        Json::object(), "test", {"queue.kafka.brokers=" + hosts.kafka.bootstrap, "cluster.node_id=host-cold"},
        hydra::ConfigSchema::builtin());
    NoDelivery nothing;
    hydra::ws::WsExchange local(nothing);
    hydra::cluster::ClusterExchange cold(hydra::cluster::ClusterExchange::Settings::from(config, kPrefix), local);
    BOOST_REQUIRE(!cold.presence_loaded());

    BOOST_CHECK(cold.notify("client-on-a", {{"via", "bus"}}));
    Json n = next_json(hosts.client);
    BOOST_CHECK_EQUAL(n["service"], "notify");
    BOOST_CHECK_EQUAL(n["data"], (Json{{"via", "bus"}}));

    BOOST_CHECK(cold.set("client-on-a", "seen", true));
    BOOST_CHECK(test::wait_until([&] { return hosts.a.exchange().get("client-on-a", "seen") == Json(true); }));

    // Delivered once: B read the same bus message and, not holding the uuid, dropped it.
    BOOST_CHECK_EQUAL(hosts.client.receive(1s).type, WsMessage::Type::timeout);

    // A host that has loaded presence does not guess: an unknown uuid is reported, not broadcast.
    BOOST_CHECK(!hosts.b.exchange().notify("nobody", {{"via", "bus"}}));
}

// README, Cluster: a client of a host that goes away reconnects to another host; with ws.client_uuid=resume and one
// ws.resume_secret on every host, its resume token keeps its uuid there, and messages to that uuid reach it.
BOOST_AUTO_TEST_CASE(a_resume_token_keeps_the_uuid_on_another_host_sharing_the_secret) {
    test::KafkaMock kafka;
    const std::vector<std::string> resume = {"ws.client_uuid=resume", "ws.resume_secret=one-secret-for-the-cluster"};
    auto a = std::make_unique<Node>("host-a", kafka.bootstrap, resume);
    Node b("host-b", kafka.bootstrap, resume);

    WsClient first = a->connect("any-name-the-client-likes");  // resume mode: X-Request-Id is not trusted
    const std::string uuid = first.response_header("X-Request-Id").value_or("");
    const std::string token = first.response_header("X-Hydra-Resume").value_or("");
    BOOST_REQUIRE_EQUAL(uuid.size(), 36u);
    BOOST_REQUIRE_EQUAL(token.rfind(uuid + ".", 0), 0u);
    BOOST_REQUIRE(test::wait_until([&] { return b.exchange().connections() == 1; }, 30s));

    a.reset();  // host A goes away; B learns that the connection is gone
    BOOST_REQUIRE(test::wait_until([&] { return b.exchange().connections() == 0; }, 30s));

    WsClient again = b.connect(token, "X-Hydra-Resume");
    BOOST_CHECK_EQUAL(again.response_header("X-Request-Id").value_or(""), uuid);
    BOOST_CHECK(b.exchange().notify(uuid, "welcome back"));
    BOOST_CHECK_EQUAL(next_json(again)["data"], "welcome back");
}

// README, Cluster: a client that connected to one host with a JWT (ws.auth=jwt) is its token's user everywhere: the
// operator's POST /v1/exchange/notify_user on another host's admin listener reaches it, and only it.
BOOST_AUTO_TEST_CASE(notify_user_on_one_hosts_admin_listener_reaches_a_jwt_client_of_another_host) {
    test::KafkaMock kafka;
    Node a("host-a", kafka.bootstrap, {"admin.enabled=true", "admin.address=127.0.0.1:0"},
           [](hydra::App& app) { services::admin::register_routes(app); });
    Node b("host-b", kafka.bootstrap, {"ws.auth=jwt", "auth.jwt.secret=cluster-routing-test-secret-0123456789"});
    const hydra::JwtVerifier* jwt = b.app.jwt();
    BOOST_REQUIRE(jwt);
    auto connect = [&](const std::string& sub) {
        return WsClient::connect("127.0.0.1", b.ws_port, "/",
                                 {{"Authorization", "Bearer " + jwt->sign(sub, std::chrono::seconds(600))}});
    };
    WsClient dave = connect("dave");
    WsClient erin = connect("erin");
    auto notify_user = [&](const std::string& user, const Json& data) {
        return test::http(a.app.admin_address(), "POST", "/v1/exchange/notify_user",
                          Json{{"user", user}, {"data", data}}.dump());
    };
    // Once A has read B's presence (the connections, then their users), the call finds dave's connection on B:
    // until then it answers 404 and sends nothing.
    test::HttpReply r;
    BOOST_REQUIRE_MESSAGE(test::wait_until(
                              [&] {
                                  r = notify_user("dave", {{"for", "dave"}});
                                  return r.status != 404;
                              },
                              30s),
                          "host A never learnt that dave is connected to host B: " << r.body);
    BOOST_CHECK_EQUAL(r.status, 200);
    BOOST_CHECK_EQUAL(r.json()["connections"], 1);
    Json got = next_json(dave);
    BOOST_CHECK_EQUAL(got["service"], "notify");
    BOOST_CHECK_EQUAL(got["data"], (Json{{"for", "dave"}}));
    // erin, on the same host, got none of it: her first message is her own
    BOOST_REQUIRE(test::wait_until([&] { return notify_user("erin", "for erin").status == 200; }, 30s));
    BOOST_CHECK_EQUAL(next_json(erin)["data"], "for erin");
    // a user with no connection anywhere
    BOOST_CHECK_EQUAL(notify_user("nobody", "x").status, 404);
}

BOOST_AUTO_TEST_SUITE_END()
