// The API server's HTTP/1.1 transport on the wire: framing, pipelining, limits and timeouts, with raw sockets so
// that every byte the client sends (and every malformed one) is under the test's control.
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <hydra/app.h>

#include "support/http_raw.h"
#include "support/temp.h"
#include "support/wait.h"

using hydra::Context;
using hydra::Json;

namespace {

hydra::Config transport_config(std::vector<std::string> sets = {}) {
    sets.insert(sets.begin(), {"api.address=127.0.0.1:0", "admin.address=127.0.0.1:0", "ws.enabled=false",
                               "log.level=error", "queue.sqlite.path=" + test::temp_path("q.db")});
    return hydra::Config::from_json(Json::object(), "test", sets, hydra::ConfigSchema::builtin());
}

using Raw = test::RawHttp;

struct TransportFixture {
    test::Gate gate;  // declared before app: outlives the handlers
    hydra::App app;
    std::string addr;
    explicit TransportFixture(std::vector<std::string> sets = {}) {
        app.api("/gate", [this](Context&) {
            gate.pass();
            return Json{{"gate", true}};
        });
        app.api("/echo", [](Context& ctx) { return Json{{"params", ctx.params()}, {"body", ctx.body()}}; });
        app.api("/n/:n", [](Context& ctx) { return Json{{"n", ctx.param("n")}}; });
        app.api("/slow", [](Context&) {
            // a handler that takes a while (a condition for a case, not a synchronisation: those use /gate)
            std::this_thread::sleep_for(std::chrono::milliseconds(400));
            return Json{{"slow", true}};
        });
        app.start(transport_config(std::move(sets)));
        addr = app.api_address();
    }
    ~TransportFixture() { gate.open(); }  // a failed case must not leave a handler waiting
};

}  // namespace

BOOST_AUTO_TEST_SUITE(http_transport)

BOOST_AUTO_TEST_CASE(pipelined_requests_are_answered_in_order) {
    TransportFixture f;
    Raw c(f.addr);
    std::string burst;
    for (int i = 0; i < 20; ++i) burst += "GET /n/" + std::to_string(i) + " HTTP/1.1\r\nHost: x\r\n\r\n";
    c.send(burst);
    std::string in = c.read_responses(20);
    BOOST_REQUIRE_EQUAL(Raw::count_responses(in), 20u);
    std::size_t pos = 0;
    for (int i = 0; i < 20; ++i) {
        auto at = in.find("{\"n\":\"" + std::to_string(i) + "\"}", pos);
        BOOST_REQUIRE_MESSAGE(at != std::string::npos, "answer " << i << " missing or out of order");
        pos = at;
    }
    BOOST_CHECK(!c.closed());
}

// A loop reads the requests and writes the answers of one iteration in one system call each (api.io_uring) or one
// recv and send per connection: the same bytes either way, through many connections at once, a body larger than a
// batched read's buffer (the rest read directly), an answer larger than the socket buffers (the rest on EPOLLOUT),
// a 100 Continue and a close.
BOOST_AUTO_TEST_CASE(the_same_with_and_without_batched_reads_and_writes) {
    for (const char* writes : {"api.io_uring=true", "api.io_uring=false"}) {
        BOOST_TEST_CONTEXT(writes) {
            hydra::App app;
            const std::size_t size = 4u << 20;
            app.api("/n/:n", [](Context& ctx) { return Json{{"n", ctx.param("n")}}; });
            app.api("/big", [size](Context&) { return std::string(size, 'x'); });
            app.api("/echo", [](Context& ctx) { return Json{{"body", ctx.body()}}; });
            app.start(transport_config({writes}));
            const std::string addr = app.api_address();

            std::vector<std::unique_ptr<Raw>> clients;
            for (int k = 0; k < 40; ++k) clients.push_back(std::make_unique<Raw>(addr));
            for (int k = 0; k < 40; ++k) {
                std::string burst;
                for (int i = 0; i < 5; ++i)
                    burst += "GET /n/" + std::to_string(k * 10 + i) + " HTTP/1.1\r\nHost: x\r\n\r\n";
                clients[k]->send(burst);
            }
            for (int k = 0; k < 40; ++k) {
                std::string in = clients[k]->read_responses(5);
                BOOST_REQUIRE_EQUAL(Raw::count_responses(in), 5u);
                std::size_t pos = 0;
                for (int i = 0; i < 5; ++i) {
                    auto at = in.find("{\"n\":\"" + std::to_string(k * 10 + i) + "\"}", pos);
                    BOOST_REQUIRE_MESSAGE(at != std::string::npos, "client " << k << ": answer " << i << " missing");
                    pos = at;
                }
            }

            Raw big(addr, 16 * 1024);
            big.send("GET /big HTTP/1.1\r\nHost: x\r\n\r\nGET /n/1 HTTP/1.1\r\nHost: x\r\n\r\n");
            std::string in = big.read_responses(2, std::chrono::seconds(60));
            BOOST_REQUIRE_EQUAL(Raw::count_responses(in), 2u);
            const std::size_t body = in.find("\r\n\r\n") + 4;
            BOOST_CHECK(in.compare(body, size, std::string(size, 'x')) == 0);
            BOOST_CHECK(in.ends_with("{\"n\":\"1\"}"));

            Raw c(addr);
            c.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n");
            const auto head_came = [](const std::string& s) { return s.find("\r\n\r\n") != std::string::npos; };
            BOOST_CHECK(c.read_until(head_came).rfind("HTTP/1.1 100 Continue\r\n", 0) == 0);
            c.send("ab");
            BOOST_CHECK(c.read_responses(1).find("\"body\":\"ab\"") != std::string::npos);

            Raw large(addr);
            const std::string payload(100000, 'p');
            large.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: " +
                       std::to_string(payload.size()) + "\r\n\r\n" + payload + "GET /n/3 HTTP/1.1\r\nHost: x\r\n\r\n");
            in = large.read_responses(2);
            BOOST_REQUIRE_EQUAL(Raw::count_responses(in), 2u);
            BOOST_CHECK(in.find("\"body\":\"" + payload + "\"") != std::string::npos);
            BOOST_CHECK(in.ends_with("{\"n\":\"3\"}"));

            Raw closing(addr);
            closing.send("GET /n/2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            in = closing.read_all();
            BOOST_CHECK_EQUAL(Raw::count_responses(in), 1u);
            BOOST_CHECK(closing.closed());
        }
    }
}

BOOST_AUTO_TEST_CASE(chunked_body_and_expect_continue) {
    TransportFixture f;
    Raw c(f.addr);
    c.send(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        "4;ext=1\r\n{\"a\"\r\n3\r\n:42\r\n1\r\n}\r\n0\r\nX-Trailer: t\r\n\r\n");
    std::string in = c.read_responses(1);
    BOOST_CHECK_MESSAGE(in.rfind("HTTP/1.1 200 OK\r\n", 0) == 0, in);
    BOOST_CHECK_MESSAGE(in.find("\"a\":42") != std::string::npos, in);

    // Expect: 100-continue: the go-ahead comes before the body is sent.
    Raw e(f.addr);
    e.send(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 7\r\n"
        "Expect: 100-continue\r\n\r\n");
    std::string interim = e.read_until([](const std::string& s) { return s.find("\r\n\r\n") != std::string::npos; });
    BOOST_CHECK_EQUAL(interim, "HTTP/1.1 100 Continue\r\n\r\n");
    e.send("{\"b\":1}");
    in = e.read_responses(1);
    BOOST_CHECK_MESSAGE(in.find("\"b\":1") != std::string::npos, in);
}

BOOST_AUTO_TEST_CASE(malformed_requests_get_a_status_and_a_close) {
    TransportFixture f({"api.max_body=100"});
    struct Case {
        std::string bytes;
        std::string status;
        std::string msg;
    };
    std::vector<Case> cases = {
        {"GET /n/1 HTTP/2.0\r\nHost: x\r\n\r\n", "505", "HTTP version not supported"},
        {"GET /n/1 HTTP/1.1\r\n\r\n", "400", "missing or repeated Host"},
        {"get /n/1 HTTP/1.1\r\nHost: x\r\n\r\n", "400", "malformed request line"},
        {"GET /n/%zz HTTP/1.1\r\nHost: x\r\n\r\n", "400", "bad percent-encoding"},
        {"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 12abc\r\n\r\n", "400", "malformed Content-Length"},
        {"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "400",
         "conflicting Content-Length"},
        {"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", "501", "unsupported Transfer-Encoding"},
        {"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", "400",
         "both Transfer-Encoding and Content-Length"},
        {"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n", "413", "request body exceeds 100 bytes"},
        {"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "400", "malformed chunk size"},
        {"GET /n/1 HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n", "400", "malformed header line"},
        {"GET /n/1 HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(20000, 'a') + "\r\n\r\n", "431",
         "request header exceeds"},
    };
    for (const auto& k : cases) {
        Raw c(f.addr);
        c.send(k.bytes);
        std::string in = c.read_all();
        BOOST_CHECK_MESSAGE(in.rfind("HTTP/1.1 " + k.status + " ", 0) == 0, k.bytes.substr(0, 60) << " -> " << in);
        BOOST_CHECK_MESSAGE(in.find(k.msg) != std::string::npos, k.bytes.substr(0, 60) << " -> " << in);
        BOOST_CHECK_MESSAGE(in.find("Connection: close\r\n") != std::string::npos, in);
        BOOST_CHECK_MESSAGE(in.find("\"code\":" + k.status) != std::string::npos, in);  // hydra's JSON envelope
        BOOST_CHECK(c.closed());
    }
    // The server is still fine.
    Raw ok(f.addr);
    ok.send("GET /n/7 HTTP/1.1\r\nHost: x\r\n\r\n");
    BOOST_CHECK(ok.read_responses(1).find("{\"n\":\"7\"}") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(http_1_0_and_connection_close) {
    TransportFixture f;
    Raw a(f.addr);
    a.send("GET /n/1 HTTP/1.0\r\n\r\n");
    std::string in = a.read_all();
    BOOST_CHECK_MESSAGE(in.rfind("HTTP/1.1 200 OK\r\n", 0) == 0, in);
    BOOST_CHECK(in.find("Connection: close\r\n") != std::string::npos);
    BOOST_CHECK(a.closed());

    Raw b(f.addr);
    b.send("GET /n/1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /n/2 HTTP/1.0\r\n\r\n");
    in = b.read_all();
    BOOST_CHECK_EQUAL(Raw::count_responses(in), 2u);
    BOOST_CHECK(in.find("Connection: keep-alive\r\n") != std::string::npos);
    BOOST_CHECK(b.closed());  // after the second, plain HTTP/1.0 request

    Raw c(f.addr);
    c.send("GET /n/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    in = c.read_all();
    BOOST_CHECK_EQUAL(Raw::count_responses(in), 1u);
    BOOST_CHECK(c.closed());

    // HEAD: the headers of the GET answer, no body.
    Raw d(f.addr);
    d.send("HEAD /n/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    in = d.read_all();
    BOOST_CHECK_MESSAGE(in.find("Content-Length: 9\r\n") != std::string::npos, in);
    BOOST_CHECK(in.size() >= 4 && in.compare(in.size() - 4, 4, "\r\n\r\n") == 0);
}

BOOST_AUTO_TEST_CASE(slow_and_idle_clients_are_timed_out) {
    TransportFixture f({"api.request_timeout_ms=300", "api.keep_alive_timeout_ms=300"});
    // A head that never finishes: 408.
    auto t0 = std::chrono::steady_clock::now();  // before the connect: the server's clock starts no earlier
    Raw slow(f.addr);
    slow.send("GET /n/1 HTTP/1.1\r\nHost: x\r\n");
    std::string in = slow.read_all();
    auto waited = std::chrono::steady_clock::now() - t0;
    BOOST_CHECK_MESSAGE(in.rfind("HTTP/1.1 408 ", 0) == 0, in);
    BOOST_CHECK(slow.closed());
    BOOST_CHECK(waited >= std::chrono::milliseconds(250));  // a lower bound only: a slow machine waits longer

    // A body that never finishes: 408 too.
    Raw body(f.addr);
    body.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{\"a\"");
    in = body.read_all();
    BOOST_CHECK_MESSAGE(in.rfind("HTTP/1.1 408 ", 0) == 0, in);
    BOOST_CHECK(body.closed());

    // An idle keep-alive connection is closed quietly.
    Raw idle(f.addr);
    idle.send("GET /n/1 HTTP/1.1\r\nHost: x\r\n\r\n");
    in = idle.read_all();
    BOOST_CHECK_EQUAL(Raw::count_responses(in), 1u);
    BOOST_CHECK(idle.closed());
}

BOOST_AUTO_TEST_CASE(overload_is_503_not_a_hang) {
    // One handler thread, one waiting request allowed: the third concurrent request is refused at once — "at once"
    // meaning while the first two are still held at the gate, so a server that queued it would leave it unanswered.
    TransportFixture f({"api.threads=1", "api.max_queued=1"});
    Raw a(f.addr), b(f.addr), c(f.addr);
    a.send("GET /gate HTTP/1.1\r\nHost: x\r\n\r\n");
    BOOST_REQUIRE(test::wait_until([&] { return f.gate.entered() == 1; }));  // a holds the only handler thread
    b.send("GET /gate HTTP/1.1\r\nHost: x\r\n\r\n");
    // b is read, and so queued: the one event loop dispatches a request in the same turn as it reads it, before it
    // reads c.
    BOOST_REQUIRE(test::wait_until([&] { return test::unread_by_server(b) == 0; }));
    c.send("GET /gate HTTP/1.1\r\nHost: x\r\n\r\n");
    std::string refused = c.read_responses(1);
    BOOST_CHECK_MESSAGE(refused.rfind("HTTP/1.1 503 ", 0) == 0, refused);
    BOOST_CHECK_EQUAL(f.gate.entered(), 1);  // b still waits for the worker
    f.gate.open();
    BOOST_CHECK(a.read_responses(1).rfind("HTTP/1.1 200 ", 0) == 0);
    BOOST_CHECK(b.read_responses(1).rfind("HTTP/1.1 200 ", 0) == 0);
    BOOST_CHECK_EQUAL(f.gate.entered(), 2);
}

BOOST_AUTO_TEST_CASE(connection_limit_is_503) {
    TransportFixture f({"api.max_connections=2"});
    Raw a(f.addr), b(f.addr);
    a.send("GET /n/1 HTTP/1.1\r\nHost: x\r\n\r\n");
    b.send("GET /n/2 HTTP/1.1\r\nHost: x\r\n\r\n");
    BOOST_CHECK_EQUAL(Raw::count_responses(a.read_responses(1)), 1u);
    BOOST_CHECK_EQUAL(Raw::count_responses(b.read_responses(1)), 1u);
    Raw c(f.addr);
    std::string in = c.read_all();
    BOOST_CHECK_MESSAGE(in.rfind("HTTP/1.1 503 ", 0) == 0, in);
    BOOST_CHECK(in.find("too many connections") != std::string::npos);
    BOOST_CHECK_MESSAGE(c.closed(), "the refused connection was not closed: " << in);  // not just a deadline
}

BOOST_AUTO_TEST_CASE(a_bad_request_target_or_a_repeated_host_is_400_and_closes) {
    TransportFixture f;
    struct Case {
        std::string bytes;
        std::string msg;
    };
    const std::vector<Case> cases = {
        {"GET n/1 HTTP/1.1\r\nHost: x\r\n\r\n", "invalid request target"},
        {"GET * HTTP/1.1\r\nHost: x\r\n\r\n", "invalid request target"},
        {"GET /n/1 HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", "missing or repeated Host"},
        {"GET /n/1 HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nhost: x\r\n\r\n", "missing or repeated Host"},
    };
    for (const auto& k : cases) {
        // A request behind it on the same connection must never be answered: the connection closes.
        Raw c(f.addr);
        c.send(k.bytes + "GET /n/2 HTTP/1.1\r\nHost: x\r\n\r\n");
        const std::string& in = c.read_all();
        BOOST_CHECK_MESSAGE(test::status_of(in) == 400, k.bytes << " -> " << in);
        BOOST_CHECK_MESSAGE(in.find("\"msg\":\"" + k.msg + "\"") != std::string::npos, k.bytes << " -> " << in);
        BOOST_CHECK_MESSAGE(in.find("Connection: close\r\n") != std::string::npos, in);
        BOOST_CHECK_EQUAL(Raw::count_responses(in), 1u);
        BOOST_CHECK(c.closed());
    }
    // The absolute form a proxy sends is a valid target: its path is served.
    Raw ok(f.addr);
    ok.send("GET http://x/n/3 HTTP/1.1\r\nHost: x\r\n\r\n");
    const std::string& in = ok.read_responses(1);
    BOOST_CHECK_MESSAGE(test::status_of(in) == 200 && in.find("{\"n\":\"3\"}") != std::string::npos, in);
}

BOOST_AUTO_TEST_CASE(a_client_still_sending_a_rejected_body_reads_the_413) {
    TransportFixture f({"api.max_body=1000"});
    Raw c(f.addr);
    // The head announces 8 MB; the 413 comes after the head, while the client goes on sending the body.
    const std::size_t declared = 8u << 20;
    c.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(declared) +
           "\r\n\r\n");
    // Send 2 MB of the body, more than the socket buffers of both ends hold: the server must read and discard it.
    // If it closed with those bytes unread, the kernel would reset the connection and the client would lose the
    // answer (recv fails with ECONNRESET).
    const std::string piece(64 * 1024, 'b');
    std::size_t sent = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (sent < (2u << 20) && std::chrono::steady_clock::now() < deadline) {
        const std::size_t n = c.send_some(piece);
        sent += n;
        if (n == 0) {
            pollfd p{c.fd(), POLLOUT, 0};
            ::poll(&p, 1, 100);
        }
    }
    BOOST_REQUIRE_MESSAGE(sent >= (2u << 20), "the server stopped taking the body after " << sent << " bytes");
    const std::string& in = c.read_all();
    BOOST_CHECK_MESSAGE(test::status_of(in) == 413, in.substr(0, 300));
    BOOST_CHECK_MESSAGE(in.find("request body exceeds 1000 bytes") != std::string::npos, in.substr(0, 300));
    BOOST_CHECK_MESSAGE(in.find("Connection: close\r\n") != std::string::npos, in.substr(0, 300));
    BOOST_CHECK(c.closed());
}

// A refusal is written at the end of the loop iteration that read its request; a client that sent its whole
// (rejected) request and half-closed in one go still gets it, before the server closes. Both ways of reading.
BOOST_AUTO_TEST_CASE(a_client_that_half_closes_after_a_rejected_request_reads_the_refusal) {
    for (const char* io : {"api.io_uring=true", "api.io_uring=false"}) {
        BOOST_TEST_CONTEXT(io) {
            TransportFixture f({"api.max_body=1000", io});
            for (const std::string& request :
                 {"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 20000\r\n\r\n" + std::string(20000, 'b'),
                  "GET /n/1 HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(20000, 'a') + "\r\n\r\n"}) {
                Raw c(f.addr);
                c.send(request);
                ::shutdown(c.fd(), SHUT_WR);
                const std::string& in = c.read_all();
                const int status = test::status_of(in);
                BOOST_CHECK_MESSAGE(status == 413 || status == 431, in.substr(0, 300));
                BOOST_CHECK(c.closed());
            }
        }
    }
}

// The state of the server's end of the connection from `client_fd` to `server_port`, as /proc/net/tcp shows it
// ("01" established, "04" FIN_WAIT1, ...; "" when it is gone).
static std::string server_side_tcp_state(int server_port, int client_fd) {
    sockaddr_in local{};
    socklen_t len = sizeof local;
    getsockname(client_fd, reinterpret_cast<sockaddr*>(&local), &len);
    const int client_port = ntohs(local.sin_port);
    std::ifstream tcp("/proc/net/tcp");
    std::string line;
    std::getline(tcp, line);  // the header
    auto port_of = [](const std::string& address) {
        return std::stoi(address.substr(address.find(':') + 1), nullptr, 16);
    };
    while (std::getline(tcp, line)) {
        // "  sl  local_address rem_address   st ..."
        std::vector<std::string> fields;
        std::size_t pos = 0;
        while (fields.size() < 4) {
            pos = line.find_first_not_of(' ', pos);
            if (pos == std::string::npos) break;
            const std::size_t stop = line.find(' ', pos);
            fields.push_back(line.substr(pos, stop - pos));
            pos = stop;
        }
        if (fields.size() == 4 && port_of(fields[1]) == server_port && port_of(fields[2]) == client_port)
            return fields[3];
    }
    return "";
}

BOOST_AUTO_TEST_CASE(a_client_that_does_not_read_its_response_within_request_timeout_ms_is_dropped) {
    // A response far larger than what the socket buffers of both ends hold, to a client that never reads.
    hydra::App app;
    const std::size_t size = 16u << 20;
    app.api("/big", [size](Context&) { return std::string(size, 'x'); });
    // (1 s: a client that reads, below, is never stalled that long, even on a loaded machine.)
    app.start(transport_config({"api.request_timeout_ms=1000"}));
    const std::string addr = app.api_address();
    const int port = std::stoi(addr.substr(addr.rfind(':') + 1));

    Raw sleeper(addr, 16 * 1024);
    sleeper.send("GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
    BOOST_REQUIRE_EQUAL(server_side_tcp_state(port, sleeper.fd()), "01");
    // The server gives up on it: its end leaves ESTABLISHED (closed, at most the kernel's buffer still to go).
    BOOST_CHECK_MESSAGE(test::wait_until([&] { return server_side_tcp_state(port, sleeper.fd()) != "01"; }),
                        "the server still holds a connection whose client has not read for 20 s");
    // Reading now, the client gets the start of the response and then the end of the connection, not the rest.
    const std::string& in = sleeper.read_all(std::chrono::seconds(30));
    BOOST_CHECK_MESSAGE(test::status_of(in) == 200, in.substr(0, 200));
    BOOST_CHECK_LT(in.size(), size);
    BOOST_CHECK(sleeper.closed());

    // A client that reads gets all of it.
    Raw reader(addr);
    reader.send("GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
    const std::string& all = reader.read_responses(1, std::chrono::seconds(60));
    BOOST_CHECK_EQUAL(Raw::count_responses(all), 1u);
    BOOST_CHECK(!reader.closed());
}

BOOST_AUTO_TEST_SUITE_END()
