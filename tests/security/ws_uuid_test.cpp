// Connection uuids are addresses (notify, send, kick, /msg/send): a client must not be able to claim another's.
// Against the real binary: ws.client_uuid=generate ignores X-Request-Id, resume hands back a uuid only for a token
// this server signed, request_id trusts the header (documented for trusted networks).
#include <boost/test/unit_test.hpp>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <hydra/json.h>
#include <hydra/ws_client.h>

#include "support/host.h"
#include "support/http.h"
#include "support/process.h"
#include "support/wait.h"

using hydra::Json;
using hydra::WsClient;
using hydra::WsMessage;
using namespace std::chrono_literals;

namespace {

std::string uuid_of(const WsClient& c) { return c.response_header("X-Request-Id").value_or(""); }

// Whether the host's exchange has a connection with this uuid (the admin notify answers 404 when not).
int notify_status(test::Host& host, const std::string& uuid) {
    return test::http(host.admin, "POST", "/v1/exchange/notify", Json{{"uuid", uuid}, {"data", "ping"}}.dump()).status;
}

// Closes a client and waits until its uuid is free on the server.
void close_and_forget(test::Host& host, WsClient& c, const std::string& uuid) {
    c.close();
    BOOST_REQUIRE(test::wait_until([&] { return notify_status(host, uuid) == 404; }));
}

// The documented token: "<uuid>.<base64url(HMAC-SHA256(secret, uuid))>", computed here independently.
std::string token_for(const std::string& secret, const std::string& uuid) {
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
         reinterpret_cast<const unsigned char*>(uuid.data()), uuid.size(), mac, &len);
    static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    std::string b64;
    for (unsigned int i = 0; i < len; i += 3) {
        unsigned v = static_cast<unsigned>(mac[i]) << 16;
        if (i + 1 < len) v |= static_cast<unsigned>(mac[i + 1]) << 8;
        if (i + 2 < len) v |= mac[i + 2];
        b64 += kAlphabet[(v >> 18) & 63];
        b64 += kAlphabet[(v >> 12) & 63];
        if (i + 1 < len) b64 += kAlphabet[(v >> 6) & 63];
        if (i + 2 < len) b64 += kAlphabet[v & 63];
    }
    return uuid + "." + b64;
}

// Everything the client receives within `quiet` after the last message.
std::vector<std::string> drain(WsClient& c, std::chrono::milliseconds quiet) {
    std::vector<std::string> got;
    for (WsMessage m = c.receive(quiet); m.type == WsMessage::Type::text; m = c.receive(quiet)) got.push_back(m.data);
    return got;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(ws_uuid)

BOOST_AUTO_TEST_CASE(a_client_cannot_claim_another_clients_uuid) {
    test::Host host;  // ws.client_uuid defaults to generate
    WsClient a = host.connect("/");
    BOOST_REQUIRE_EQUAL(uuid_of(a).size(), 36u);
    {
        WsClient victim = hydra::WsClient::connect("127.0.0.1", host.ws_port, "/", {{"X-Request-Id", "victim-42"}});
        BOOST_CHECK_NE(uuid_of(victim), "victim-42");
        BOOST_CHECK_EQUAL(uuid_of(victim).size(), 36u);
        victim.close();
    }
    WsClient c = hydra::WsClient::connect("127.0.0.1", host.ws_port, "/", {{"X-Request-Id", "victim-42"}});
    BOOST_CHECK_NE(uuid_of(c), "victim-42");
    BOOST_CHECK_EQUAL(notify_status(host, "victim-42"), 404);  // nobody answers to the name

    // An anonymous push addressed to victim-42 does not reach C; one to C's real uuid does (after the other).
    auto r = test::http(host.api, "POST", "/msg/send", R"({"uuid":"victim-42","msg":"for the victim"})");
    BOOST_CHECK_EQUAL(r.status, 200);
    r = test::http(host.api, "POST", "/msg/send", Json{{"uuid", uuid_of(c)}, {"msg", "for c"}}.dump());
    BOOST_CHECK_EQUAL(r.status, 200);
    WsMessage m = c.receive(10s);
    BOOST_REQUIRE(m.type == WsMessage::Type::text);
    std::vector<std::string> got = drain(c, 300ms);
    got.insert(got.begin(), m.data);
    BOOST_CHECK_EQUAL(got.size(), 1u);
    BOOST_CHECK_EQUAL(Json::parse(got[0])["data"]["msg"], "for c");

    // generated uuids differ and carry no resume token in this mode
    BOOST_CHECK_NE(uuid_of(a), uuid_of(c));
    BOOST_CHECK(!c.response_header("X-Hydra-Resume"));
}

BOOST_AUTO_TEST_CASE(resume_gives_back_a_uuid_only_for_a_token_this_server_signed) {
    test::Host host({"--set", "ws.client_uuid=resume"});
    WsClient a = host.connect("/");
    const std::string u = uuid_of(a);
    const std::string token = a.response_header("X-Hydra-Resume").value_or("");
    BOOST_REQUIRE_EQUAL(u.size(), 36u);
    BOOST_REQUIRE_EQUAL(token.substr(0, u.size() + 1), u + ".");

    // while A is open its uuid is not taken over, even with the right token
    WsClient b = hydra::WsClient::connect("127.0.0.1", host.ws_port, "/", {{"X-Hydra-Resume", token}});
    BOOST_CHECK_NE(uuid_of(b), u);
    const std::string b_token = b.response_header("X-Hydra-Resume").value_or("");
    close_and_forget(host, a, u);

    // the token, in the header or in the query, gives the uuid back, and pushes to it arrive
    WsClient c = hydra::WsClient::connect("127.0.0.1", host.ws_port, "/", {{"X-Hydra-Resume", token}});
    BOOST_CHECK_EQUAL(uuid_of(c), u);
    BOOST_CHECK_EQUAL(c.response_header("X-Hydra-Resume").value_or(""), token);
    BOOST_CHECK_EQUAL(notify_status(host, u), 200);
    BOOST_CHECK_EQUAL(Json::parse(c.receive(5s).data)["data"], "ping");
    close_and_forget(host, c, u);
    WsClient d = host.connect("/?resume=" + token);
    BOOST_CHECK_EQUAL(uuid_of(d), u);
    close_and_forget(host, d, u);

    // forged or altered tokens give a fresh uuid
    std::string flipped = token;
    flipped.back() = flipped.back() == 'A' ? 'B' : 'A';
    const std::string b_mac = b_token.substr(b_token.rfind('.'));
    const std::string u_mac = token.substr(token.rfind('.'));
    for (const std::string& forged : {flipped, u + b_mac, "victim-42" + u_mac, token.substr(0, token.size() - 1),
                                      token + "A", u, u + ".", std::string(200, 'x') + u_mac, token + "%00"}) {
        WsClient e = hydra::WsClient::connect("127.0.0.1", host.ws_port, "/", {{"X-Hydra-Resume", forged}});
        BOOST_CHECK_MESSAGE(uuid_of(e) != u && uuid_of(e) != "victim-42", "token " << forged << " was accepted");
        WsClient q = host.connect("/?resume=" + forged);
        BOOST_CHECK_MESSAGE(uuid_of(q) != u && uuid_of(q) != "victim-42", "query " << forged << " was accepted");
    }
    // X-Request-Id is no way around it
    WsClient f = hydra::WsClient::connect("127.0.0.1", host.ws_port, "/", {{"X-Request-Id", u}});
    BOOST_CHECK_NE(uuid_of(f), u);
}

BOOST_AUTO_TEST_CASE(tokens_are_hmac_sha256_of_the_uuid_under_the_configured_secret) {
    const std::string secret = "correct horse battery staple";
    test::Host host({"--set", "ws.client_uuid=resume", "--set", "ws.resume_secret=" + secret});
    WsClient a = host.connect("/");
    BOOST_CHECK_EQUAL(a.response_header("X-Hydra-Resume").value_or(""), token_for(secret, uuid_of(a)));
    // whoever holds the secret can mint a token for a uuid (an operator's tool), nobody else can
    WsClient b =
        hydra::WsClient::connect("127.0.0.1", host.ws_port, "/", {{"X-Hydra-Resume", token_for(secret, "device-7")}});
    BOOST_CHECK_EQUAL(uuid_of(b), "device-7");
    WsClient c = hydra::WsClient::connect("127.0.0.1", host.ws_port, "/",
                                          {{"X-Hydra-Resume", token_for("another secret", "device-8")}});
    BOOST_CHECK_NE(uuid_of(c), "device-8");

    // the secret is masked in the effective config
    test::ChildProcess show({HYDRA_BINARY, "conf", "show", "--env", "dev", "--set", "ws.resume_secret=" + secret},
                            HYDRA_SOURCE_DIR);
    BOOST_CHECK_EQUAL(show.wait(20s).value_or(-1), 0);
    BOOST_CHECK(show.out().find("resume_secret") != std::string::npos);
    BOOST_CHECK(show.out().find("battery") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(request_id_mode_trusts_the_header_as_documented) {
    test::Host host({"--set", "ws.client_uuid=request_id"});
    WsClient a = hydra::WsClient::connect("127.0.0.1", host.ws_port, "/", {{"X-Request-Id", "device-42"}});
    BOOST_CHECK_EQUAL(uuid_of(a), "device-42");
    WsClient b = hydra::WsClient::connect("127.0.0.1", host.ws_port, "/", {{"X-Request-Id", "device-42"}});
    BOOST_CHECK_NE(uuid_of(b), "device-42");  // still never taken over while open
}

BOOST_AUTO_TEST_SUITE_END()
