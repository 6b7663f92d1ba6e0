// Limits on what one client can take from the WS server, against the real binary with its defaults: connections
// per address (ws.max_connections_per_ip, 503 at the upgrade) and messages per connection (ws.rate_limit, 1008).
#include <boost/test/unit_test.hpp>

#include <hydra/ws_client.h>

#include "support/host.h"
#include "support/http_raw.h"
#include "support/wait.h"
#include "ws/frame.h"

using hydra::WsClient;
using hydra::WsMessage;
using hydra::WsOpcode;
using namespace std::chrono_literals;

namespace {

// The status line of the server's answer to an upgrade sent from `source` (a loopback address) to 127.0.0.1:port.
std::string upgrade_from(const char* source, int port) {
    test::RawHttp c("127.0.0.1:" + std::to_string(port), 0, 0, source);
    BOOST_REQUIRE_MESSAGE(c.connected(), "no connection from " << source);
    c.send(
        "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
    const std::string& out =
        c.read_until([](const std::string& in) { return in.find("\r\n") != std::string::npos; }, 5s);
    return out.substr(0, out.find("\r\n"));
}

std::string client_frames(WsOpcode op, std::string_view payload, int n) {
    std::string out;
    for (int i = 0; i < n; ++i) out += hydra::ws::encode_frame_masked(op, payload, hydra::ws::random_mask_key());
    return out;
}

// Reads until the server's close frame; returns it (or whatever ended the stream) and counts the text messages.
WsMessage read_to_close(WsClient& c, std::size_t& texts) {
    for (;;) {
        WsMessage m = c.receive(10s);
        if (m.type == WsMessage::Type::text) {
            ++texts;
            continue;
        }
        if (m.type == WsMessage::Type::pong) continue;
        return m;
    }
}

}  // namespace

BOOST_AUTO_TEST_SUITE(ws_limits)

BOOST_AUTO_TEST_CASE(one_address_holds_at_most_max_connections_per_ip) {
    test::Host host;  // the default: 256
    std::vector<WsClient> clients;
    for (int i = 0; i < 256; ++i) clients.push_back(host.connect("/echo"));
    try {
        host.connect("/echo");
        BOOST_FAIL("connection 257 from one address was accepted");
    } catch (const hydra::WsHandshakeError& e) {
        BOOST_CHECK_EQUAL(e.status(), 503);
        BOOST_CHECK_NE(e.body().find("too many connections from this address"), std::string::npos);
    }
    // other addresses are not affected
    BOOST_CHECK_EQUAL(upgrade_from("127.0.0.2", host.ws_port), "HTTP/1.1 101 Switching Protocols");
    // the ones that are open keep working
    clients.front().send_text("still here");
    BOOST_CHECK_EQUAL(clients.front().receive(5s).data, "still here");

    // a closed connection frees its place (the server counts it down when it is gone)
    clients.back().close();
    clients.pop_back();
    std::optional<WsClient> again;
    BOOST_CHECK(test::wait_until([&] {
        try {
            again = host.connect("/echo");
        } catch (const hydra::WsHandshakeError&) {
        }
        return again.has_value();
    }));
}

BOOST_AUTO_TEST_CASE(the_limit_can_be_switched_off) {
    test::Host host({"--set", "ws.max_connections_per_ip=0"});
    std::vector<WsClient> clients;
    for (int i = 0; i < 300; ++i) clients.push_back(host.connect("/echo"));
    clients.back().send_text("300");
    BOOST_CHECK_EQUAL(clients.back().receive(5s).data, "300");
}

BOOST_AUTO_TEST_CASE(a_flooding_connection_is_closed_with_1008_rate_limit) {
    test::Host host;  // the default: 1000 messages/s, burst 2000
    // a normal client: a burst of 500 messages is answered in full
    WsClient normal = host.connect("/echo");
    for (int i = 0; i < 500; ++i) normal.send_text("m" + std::to_string(i));
    for (int i = 0; i < 500; ++i) BOOST_REQUIRE_EQUAL(normal.receive(5s).data, "m" + std::to_string(i));

    // 6000 messages at once cannot fit a bucket of 2000 refilled by 1000/s (the client sends them in well under 4 s)
    WsClient flood = host.connect("/echo");
    flood.send_raw(client_frames(WsOpcode::text, "x", 6000));
    std::size_t echoed = 0;
    WsMessage m = read_to_close(flood, echoed);
    BOOST_REQUIRE(m.type == WsMessage::Type::close);
    BOOST_CHECK_EQUAL(m.close_code, 1008);
    BOOST_CHECK_EQUAL(m.close_reason, "rate limit");
    BOOST_CHECK_GE(echoed, 2000u);
    BOOST_CHECK_LT(echoed, 6000u);

    // pings count too
    WsClient pinger = host.connect("/echo");
    pinger.send_raw(client_frames(WsOpcode::ping, "p", 6000));
    echoed = 0;
    m = read_to_close(pinger, echoed);
    BOOST_REQUIRE(m.type == WsMessage::Type::close);
    BOOST_CHECK_EQUAL(m.close_code, 1008);

    // the normal client was not affected
    normal.send_text("after");
    BOOST_CHECK_EQUAL(normal.receive(5s).data, "after");
}

BOOST_AUTO_TEST_CASE(the_rate_limit_can_be_switched_off) {
    test::Host host({"--set", "ws.rate_limit.messages_per_s=0"});
    WsClient flood = host.connect("/echo");
    flood.send_raw(client_frames(WsOpcode::text, "x", 6000));
    for (int i = 0; i < 6000; ++i) BOOST_REQUIRE_EQUAL(flood.receive(10s).data, "x");
}

BOOST_AUTO_TEST_SUITE_END()
