// TLS on the real binary's listeners: the demo's scenarios over https:// (curl) and wss:// (python3-websockets),
// ALPN, certificates re-read on SIGHUP, and a start refused for a bad certificate.
#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <boost/test/unit_test.hpp>

#include <hydra/json.h>

#include "support/host.h"
#include "support/tls.h"

using hydra::Json;
using namespace std::chrono_literals;

namespace {

// curl against a TLS listener of the test host, trusting `ca`: the reply body (stdout) and curl's -v trace (stderr).
struct Curl {
    std::string out, err;
    int status = -1;
};

Curl curl(const std::string& ca, const std::string& url, const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {"/usr/bin/curl", "-sS", "-v", "--max-time", "30", "--cacert", ca};
    args.insert(args.end(), extra.begin(), extra.end());
    args.push_back(url);
    test::ChildProcess p(args);
    Curl c;
    c.status = p.wait(60s).value_or(-1);
    c.out = p.out();
    c.err = p.err();
    return c;
}

std::string port_of(const std::string& address) { return address.substr(address.rfind(':') + 1); }

std::vector<std::string> concat(std::vector<std::string> a, const std::vector<std::string>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(tls)

BOOST_AUTO_TEST_CASE(the_push_and_chat_scenarios_work_over_https_and_wss) {
    const test::Certificate cert = test::make_certificate();
    test::Host host(test::tls_settings(cert, {"api", "ws", "admin"}));
    // A browser-like client: verifies the certificate against the CA file, by the name "localhost".
    const std::string script = R"PY(
import asyncio, json, ssl, sys
import websockets
async def main(port, ca):
    ctx = ssl.create_default_context(cafile=ca)
    async with websockets.connect(f"wss://localhost:{port}/", ssl=ctx) as ws:
        await ws.send(json.dumps({"service": "/member/login", "uname": "alice", "pwd": "alice-pw"}))
        print(await ws.recv(), flush=True)
        print(await asyncio.wait_for(ws.recv(), 60), flush=True)
        print(await asyncio.wait_for(ws.recv(), 60), flush=True)
    async with websockets.connect(f"wss://localhost:{port}/chat", ssl=ctx) as a, \
               websockets.connect(f"wss://localhost:{port}/chat", ssl=ctx) as b:
        for c in (a, b):
            await c.send(json.dumps({"op": "join", "room_id": "lobby"}))
            await c.recv()
        await a.send(json.dumps({"op": "send", "msg": "x" * 50000}))
        print(len(json.loads(await asyncio.wait_for(b.recv(), 60))["msg"]), flush=True)
asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
)PY";
    test::ChildProcess py({"/usr/bin/python3", "-c", script, std::to_string(host.ws_port), cert.cert});
    auto login = py.wait_for_stdout(R"(\{.*"service":"/member/login".*\})", 60s);
    BOOST_REQUIRE_MESSAGE(login, "no login reply over wss: " + py.err());
    BOOST_CHECK_EQUAL(Json::parse(*login)["code"], 200);

    // The backend's call over https, verified by name, with ALPN http/1.1.
    Curl send = curl(cert.cert, "https://localhost:" + port_of(host.api) + "/msg/send",
                     {"-H", "Content-Type: application/json", "-d", R"({"uname":"alice","msg":"over tls"})"});
    BOOST_REQUIRE_MESSAGE(send.status == 0, send.err);
    BOOST_CHECK_EQUAL(Json::parse(send.out), (Json{{"code", 0}, {"msg", "success"}}));
    BOOST_CHECK_MESSAGE(send.err.find("ALPN: server accepted http/1.1") != std::string::npos, send.err);
    // The operator's call on the admin listener over https.
    Curl broadcast = curl(cert.cert, "https://localhost:" + port_of(host.admin) + "/v1/exchange/broadcast",
                          {"-H", "Content-Type: application/json", "-d", R"({"data":{"n":7}})"});
    BOOST_REQUIRE_MESSAGE(broadcast.status == 0, broadcast.err);

    BOOST_REQUIRE_MESSAGE(py.wait(120s).value_or(-1) == 0, py.err());
    std::istringstream lines(py.out());
    std::string l1, notify, everyone, chat;
    std::getline(lines, l1);
    std::getline(lines, notify);
    std::getline(lines, everyone);
    std::getline(lines, chat);
    BOOST_CHECK_EQUAL(Json::parse(notify)["data"]["msg"], "over tls");
    BOOST_CHECK_EQUAL(Json::parse(everyone)["data"]["n"], 7);
    BOOST_CHECK_EQUAL(chat, "50000");  // a message of several TLS records, relayed whole
}

BOOST_AUTO_TEST_CASE(connections_quiet_long_enough_to_give_back_their_buffers_work_as_before) {
    const test::Certificate cert = test::make_certificate();
    test::Host host(test::tls_settings(cert, {"api", "ws"}));
    // The sleeps create the condition: quiet for longer than the 1 s after which a loop releases OpenSSL's buffers.
    const std::string script = R"PY(
import asyncio, http.client, ssl, sys, time
import websockets
async def main(ws_port, api_port, ca):
    ctx = ssl.create_default_context(cafile=ca)
    async with websockets.connect(f"wss://localhost:{ws_port}/echo", ssl=ctx, max_size=None) as ws:
        await ws.send("a")
        print(await ws.recv(), flush=True)
        await asyncio.sleep(2.5)
        big = "x" * (1 << 20)
        await ws.send(big)
        print((await ws.recv()) == big, flush=True)
        await asyncio.sleep(2.5)
        await ws.send("b")
        print(await ws.recv(), flush=True)
    api = http.client.HTTPSConnection("localhost", api_port, context=ctx)
    for i in range(2):
        api.request("GET", "/no-such-route")
        r = api.getresponse()
        r.read()
        print(r.status, flush=True)
        time.sleep(2.5)
asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]))
)PY";
    test::ChildProcess py(
        {"/usr/bin/python3", "-c", script, std::to_string(host.ws_port), port_of(host.api), cert.cert});
    BOOST_REQUIRE_MESSAGE(py.wait(120s).value_or(-1) == 0, py.err());
    BOOST_CHECK_EQUAL(py.out(), "a\nTrue\nb\n404\n404\n");
}

BOOST_AUTO_TEST_CASE(alpn_selects_http_1_1_and_a_client_offering_only_h2_goes_on_without_alpn) {
    const test::Certificate cert = test::make_certificate();
    test::Host host(test::tls_settings(cert, {"api"}));
    auto s_client = [&](const std::string& alpn) {
        test::ChildProcess p(
            {"/bin/sh", "-c",
             "/usr/bin/openssl s_client -connect " + host.api + " -alpn " + alpn + " </dev/null 2>&1"});
        p.wait(60s);
        return p.out();
    };
    BOOST_CHECK_MESSAGE(s_client("h2,http/1.1").find("ALPN protocol: http/1.1") != std::string::npos,
                        s_client("h2,http/1.1"));
    const std::string h2 = s_client("h2");
    BOOST_CHECK_MESSAGE(h2.find("No ALPN negotiated") != std::string::npos, h2);
    BOOST_CHECK_MESSAGE(h2.find("Verify return code") != std::string::npos, h2);  // the handshake completed
}

BOOST_AUTO_TEST_CASE(certificates_are_re_read_on_sighup_and_open_connections_keep_theirs) {
    const test::Certificate a = test::make_certificate("hydra-a");
    const test::Certificate b = test::make_certificate("hydra-b");
    const test::Certificate live{test::temp_path("live-cert.pem"), test::temp_path("live-key.pem")};
    auto install = [&](const test::Certificate& c) {
        using std::filesystem::copy_options;
        std::filesystem::copy_file(c.cert, live.cert, copy_options::overwrite_existing);
        std::filesystem::copy_file(c.key, live.key, copy_options::overwrite_existing);
    };
    install(a);
    test::Host host(concat(test::tls_settings(live, {"api", "ws"}), {"--set", "log.level=info"}));
    const int api_port = std::stoi(port_of(host.api));
    BOOST_REQUIRE_EQUAL(test::served_certificate_name(host.ws_port), "hydra-a");
    BOOST_REQUIRE_EQUAL(test::served_certificate_name(api_port), "hydra-a");

    // A connection opened before the reload, still echoing after it.
    const std::string go = test::temp_path("go");
    const std::string script = R"PY(
import asyncio, os, ssl, sys, time
import websockets
async def main(port, go):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    async with websockets.connect(f"wss://127.0.0.1:{port}/echo", ssl=ctx) as ws:
        await ws.send("before")
        print(await ws.recv(), flush=True)
        deadline = time.monotonic() + 60
        while not os.path.exists(go) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await ws.send("after")
        print(await ws.recv(), flush=True)
asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
)PY";
    test::ChildProcess py({"/usr/bin/python3", "-c", script, std::to_string(host.ws_port), go});
    BOOST_REQUIRE_MESSAGE(py.wait_for_stdout("before", 60s), py.err());

    install(b);
    host.process->signal(SIGHUP);
    BOOST_REQUIRE(host.process->wait_for_stderr(R"(api\.tls: certificate re-read)", 30s));
    BOOST_REQUIRE(host.process->wait_for_stderr(R"(ws\.tls: certificate re-read)", 30s));
    BOOST_CHECK_EQUAL(test::served_certificate_name(host.ws_port), "hydra-b");
    BOOST_CHECK_EQUAL(test::served_certificate_name(api_port), "hydra-b");
    std::ofstream(go) << "go";
    BOOST_REQUIRE_MESSAGE(py.wait(60s).value_or(-1) == 0, py.err());
    BOOST_CHECK_EQUAL(py.out(), "before\nafter\n");

    // A file that does not load: logged, and the certificate in use stays.
    std::ofstream(live.cert, std::ios::trunc) << "not a certificate\n";
    host.process->signal(SIGHUP);
    BOOST_REQUIRE(
        host.process->wait_for_stderr(R"(ws\.tls\.cert_file: cannot load .*previous certificate stays)", 30s));
    BOOST_CHECK_EQUAL(test::served_certificate_name(host.ws_port), "hydra-b");
    BOOST_CHECK_EQUAL(test::served_certificate_name(api_port), "hydra-b");
}

BOOST_AUTO_TEST_CASE(a_certificate_that_does_not_load_stops_the_start_with_exit_2_naming_the_key) {
    const test::Certificate a = test::make_certificate("hydra-a");
    const test::Certificate b = test::make_certificate("hydra-b");
    const std::string garbage = test::temp_path("garbage.pem");
    std::ofstream(garbage) << "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n";
    struct Case {
        std::vector<std::string> sets;
        std::string expected;  // in the one line on stderr
    };
    const std::vector<Case> cases = {
        {{"ws.tls.cert_file=/nonexistent/cert.pem", "ws.tls.key_file=" + a.key},
         "ws.tls.cert_file: cannot read '/nonexistent/cert.pem'"},
        {{"api.tls.cert_file=" + a.cert, "api.tls.key_file=" + b.key},
         "does not match the certificate of api.tls.cert_file"},
        {{"admin.tls.cert_file=" + garbage, "admin.tls.key_file=" + a.key}, "admin.tls.cert_file: cannot load"},
        {{"api.tls.cert_file=" + a.cert, "api.tls.key_file=" + a.cert}, "api.tls.key_file: cannot load"},
        {{"ws.tls.cert_file=" + a.cert}, "ws.tls: cert_file and key_file go together"},
    };
    for (const auto& c : cases) {
        for (const std::string command : {"run", "conf"}) {
            std::vector<std::string> args = {HYDRA_BINARY, command};
            if (command == "conf") args.push_back("check");
            args.insert(args.end(),
                        {"--set", "api.address=127.0.0.1:0", "--set", "ws.address=127.0.0.1:0", "--set",
                         "admin.address=127.0.0.1:0", "--set", "queue.sqlite.path=" + test::temp_path("queue.db")});
            for (const auto& s : c.sets) args.insert(args.end(), {"--set", s});
            test::ChildProcess p(args, std::string(HYDRA_SOURCE_DIR));
            BOOST_CHECK_EQUAL(p.wait(60s).value_or(-1), 2);
            BOOST_CHECK_MESSAGE(p.err().find(c.expected) != std::string::npos, command << ": " << p.err());
            BOOST_CHECK(p.out().find("listening") == std::string::npos);  // nothing was started
        }
    }
}

BOOST_AUTO_TEST_SUITE_END()
