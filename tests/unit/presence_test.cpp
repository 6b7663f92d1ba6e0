// cluster/presence: who holds which connection on the other hosts, from invented presence records (no Kafka).
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <string>
#include <vector>

#include "cluster/presence.h"

using hydra::cluster::Presence;
using namespace std::chrono_literals;

namespace {

// A host is alive for 3 heartbeats (3 s here) after its last beat.
constexpr std::int64_t t0 = 1'000'000;

std::string conn(const std::string& host, const std::string& user = "") {
    return R"({"node":")" + host + R"(","user":")" + user + R"("})";
}

void beat(Presence& p, const std::string& host, std::int64_t at) {
    const std::string value = R"({"ts":1})";
    p.apply("node:" + host, &value, at);
}

void record(Presence& p, const std::string& uuid, const std::string& value, std::int64_t at = t0) {
    p.apply("conn:" + uuid, &value, at);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(presence)

BOOST_AUTO_TEST_CASE(a_connection_belongs_to_its_host_while_the_host_beats) {
    Presence p("self", 1s);
    record(p, "u1", conn("b"));
    BOOST_CHECK(!p.owner("u1", t0));  // no beat from b yet: not routable
    beat(p, "b", t0);
    BOOST_CHECK_EQUAL(p.owner("u1", t0 + 3000).value_or("none"), "b");
    BOOST_CHECK(!p.owner("u1", t0 + 3001));  // silent for more than 3 heartbeats
    BOOST_CHECK_EQUAL(p.connections(t0 + 3000), 1U);
    BOOST_CHECK_EQUAL(p.connections(t0 + 3001), 0U);
    BOOST_CHECK_EQUAL(p.entries(), 1U);  // still known, only not routable
    BOOST_CHECK(!p.owner("unknown", t0));
}

BOOST_AUTO_TEST_CASE(tombstones_forget_a_connection_and_a_host_that_left) {
    Presence p("self", 1s);
    beat(p, "b", t0);
    record(p, "u1", conn("b", "alice"));
    p.apply("conn:u1", nullptr, t0);
    BOOST_CHECK(!p.owner("u1", t0));
    BOOST_CHECK_EQUAL(p.entries(), 0U);
    BOOST_CHECK(p.hosts_of("alice", t0).hosts.empty());

    record(p, "u2", conn("b"));
    BOOST_CHECK_EQUAL(p.live_hosts(t0), 2U);
    p.apply("node:b", nullptr, t0 + 10);  // b said goodbye: dropped at once, not after 3 heartbeats
    BOOST_CHECK(!p.owner("u2", t0 + 10));
    BOOST_CHECK_EQUAL(p.live_hosts(t0 + 10), 1U);
}

BOOST_AUTO_TEST_CASE(this_hosts_own_records_are_ignored) {
    Presence p("self", 1s);
    beat(p, "self", t0);
    record(p, "mine", conn("self", "alice"));
    BOOST_CHECK(!p.owner("mine", t0));
    BOOST_CHECK_EQUAL(p.entries(), 0U);
    BOOST_CHECK_EQUAL(p.live_hosts(t0), 1U);  // this host counts once, its own beat is not a second host
}

BOOST_AUTO_TEST_CASE(a_user_on_several_hosts_is_one_host_each_however_many_devices) {
    Presence p("self", 1s);
    beat(p, "b", t0);
    beat(p, "c", t0);
    record(p, "phone", conn("b", "alice"));
    record(p, "laptop", conn("b", "alice"));
    record(p, "tablet", conn("c", "alice"));
    record(p, "other", conn("c", "bob"));
    Presence::UserHosts alice = p.hosts_of("alice", t0);
    BOOST_CHECK_EQUAL(alice.connections, 3U);
    BOOST_CHECK_EQUAL(alice.hosts.size(), 2U);
    BOOST_CHECK_EQUAL(alice.hosts.count("b") + alice.hosts.count("c"), 2U);

    // A uuid recorded again (it moved, or its user changed) is one entry, under its last record only.
    record(p, "tablet", conn("b", "carol"));
    alice = p.hosts_of("alice", t0);
    BOOST_CHECK_EQUAL(alice.connections, 2U);
    BOOST_CHECK_EQUAL(alice.hosts.size(), 1U);
    BOOST_CHECK_EQUAL(p.hosts_of("carol", t0).connections, 1U);
    BOOST_CHECK_EQUAL(p.entries(), 4U);

    // c goes silent: bob's connection is not counted, alice's on b still are.
    beat(p, "b", t0 + 5000);
    BOOST_CHECK_EQUAL(p.hosts_of("bob", t0 + 5000).connections, 0U);
    BOOST_CHECK_EQUAL(p.hosts_of("alice", t0 + 5000).connections, 2U);
    BOOST_CHECK_EQUAL(p.live_hosts(t0 + 5000), 2U);
}

BOOST_AUTO_TEST_CASE(records_that_are_not_presence_are_ignored_without_harm) {
    Presence p("self", 1s);
    beat(p, "b", t0);
    record(p, "u1", conn("b", "alice"));
    // Anything may be on the topic: a broken value forgets the uuid (like a close) and adds nothing.
    for (const std::string& value :
         std::vector<std::string>{"not json", "[1,2]", R"({"node":7})", R"({"node":""})", R"({"user":"x"})",
                                  R"({"node":"b","user":["a"]})", std::string(1, '\0')}) {
        record(p, "u2", value);
        BOOST_CHECK_MESSAGE(!p.owner("u2", t0) || value == R"({"node":"b","user":["a"]})", value);
    }
    // A user that is not a string is no user: the uuid is routable, nobody's.
    record(p, "u2", R"({"node":"b","user":["a"]})");
    BOOST_CHECK_EQUAL(p.owner("u2", t0).value_or("none"), "b");
    BOOST_CHECK_EQUAL(p.hosts_of("a", t0).connections, 0U);
    const std::string value = "{}";
    p.apply("other:u1", &value, t0);  // an unknown kind of key
    p.apply("", &value, t0);
    BOOST_CHECK_EQUAL(p.owner("u1", t0).value_or("none"), "b");
    BOOST_CHECK_EQUAL(p.hosts_of("alice", t0).connections, 1U);
}

BOOST_AUTO_TEST_SUITE_END()
