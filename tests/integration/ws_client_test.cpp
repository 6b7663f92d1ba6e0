// Tests of hydra::WsClient against independent peers: a python3-websockets echo server and a plain python HTTP server
// (child processes), plus tiny in-process socket servers for answers no real server gives.
#include <boost/test/unit_test.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

#include <hydra/ws_client.h>

#include "support/process.h"
#include "support/wait.h"
#include "ws/handshake.h"

using namespace std::chrono_literals;
using hydra::WsClient;
using hydra::WsConnectOptions;
using hydra::WsHandshakeError;
using hydra::WsMessage;
using hydra::WsOpcode;
using Type = WsMessage::Type;

namespace {

// Two peers in one script. "echo": a websockets (10.x API) server echoing every message, with a few commands for
// server-side behaviour. "http404": an HTTP server that is not a WebSocket server and answers every GET with 404.
// Both print "PORT <n>" once listening, and exit when the test process goes away (their parent pid changes), so
// that a crashed test run leaves nothing behind.
constexpr const char* kPeerScript = R"PY(
import asyncio, http.server, os, sys, threading, time

mode, parent = sys.argv[1], int(sys.argv[2])

def watch_parent():
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)

threading.Thread(target=watch_parent, daemon=True).start()

if mode == "http404":
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_error(404, "Not Found", "no websocket here")
        def log_message(self, *args):
            pass
    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    print("PORT", server.server_address[1], flush=True)
    server.serve_forever()
    sys.exit(0)

import websockets

async def handler(ws, path):
    try:
        async for msg in ws:
            if msg == "cmd:path":
                await ws.send(path)
            elif msg == "cmd:header":
                await ws.send(ws.request_headers.get("X-Test", "<none>"))
            elif msg == "cmd:close":
                await ws.close(4001, "server bye")
            elif msg == "cmd:ping":
                waiter = await ws.ping(b"are you there")
                await asyncio.wait_for(waiter, 10)
                await ws.send("pong received")
            elif msg == "cmd:drop":
                ws.transport.close()
            elif msg == "cmd:bad-opcode":
                ws.transport.write(b"\x83\x00")
            elif msg == "cmd:big":
                await ws.send("x" * 2000)
            else:
                await ws.send(msg)
    except websockets.ConnectionClosed:
        pass

async def main():
    async with websockets.serve(handler, "127.0.0.1", 0, compression=None, ping_interval=None,
                                extra_headers={"X-Request-Id": "req-42"}) as server:
        print("PORT", server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()

asyncio.run(main())
)PY";

// A peer process started from kPeerScript; the ChildProcess destructor kills it by pid.
class PythonPeer {
  public:
    explicit PythonPeer(const std::string& mode) {
        const auto script = std::filesystem::temp_directory_path() /
                            ("hydra_ws_client_test_" + std::to_string(::getpid()) + "_" + mode + ".py");
        {
            std::ofstream out(script);
            out << kPeerScript;
            if (!out) throw std::runtime_error("cannot write " + script.string());
        }
        process_ = std::make_unique<test::ChildProcess>(
            std::vector<std::string>{"/usr/bin/python3", script.string(), mode, std::to_string(::getpid())});
        const auto port = process_->wait_for_stdout("PORT (\\d+)\n", 15s);
        std::filesystem::remove(script);  // python has read it by the time it listens
        if (!port) throw std::runtime_error("python peer (" + mode + ") did not start: " + process_->err());
        port_ = std::stoi(*port);
    }

    int port() const { return port_; }

  private:
    std::unique_ptr<test::ChildProcess> process_;
    int port_ = 0;
};

// One echo server for the whole suite: python and websockets take a while to start.
PythonPeer& echo_server() {
    static PythonPeer peer("echo");
    return peer;
}

WsClient connect_echo(const std::string& target = "/") {
    return WsClient::connect("127.0.0.1", echo_server().port(), target);
}

struct Fd {
    explicit Fd(int fd) : fd(fd) {}
    Fd(const Fd&) = delete;
    ~Fd() {
        if (fd >= 0) ::close(fd);
    }
    int fd;
};

// A listening socket on 127.0.0.1 with a kernel-chosen port.
Fd listen_loopback(int* port) {
    Fd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (s.fd < 0) throw std::runtime_error("socket");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (::bind(s.fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(s.fd, 4) != 0 ||
        ::getsockname(s.fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
        throw std::runtime_error("bind/listen");
    *port = ntohs(addr.sin_port);
    return Fd(std::exchange(s.fd, -1));
}

// Accepts one connection, reads the upgrade request, writes answer(Sec-WebSocket-Key) and holds the connection
// until the client goes away, reading (and dropping) what it sends unless `drain` is false. For answers a real
// server does not give, and for a server that stops reading.
class ScriptedServer {
  public:
    explicit ScriptedServer(std::function<std::string(const std::string& key)> answer, bool drain = true)
        : listener_(listen_loopback(&port_)), drain_(drain) {
        thread_ = std::thread([this, answer = std::move(answer)] { serve(answer); });
    }
    ~ScriptedServer() {
        stop_ = true;
        thread_.join();
    }
    int port() const { return port_; }

  private:
    void serve(const std::function<std::string(const std::string&)>& answer) {
        pollfd p{listener_.fd, POLLIN, 0};
        while (!stop_ && ::poll(&p, 1, 50) == 0) {
        }
        if (stop_) return;
        Fd conn(::accept4(listener_.fd, nullptr, nullptr, SOCK_CLOEXEC));
        std::string request;
        char buf[4096];
        while (request.find("\r\n\r\n") == std::string::npos) {
            const ssize_t n = ::recv(conn.fd, buf, sizeof buf, 0);
            if (n <= 0) return;
            request.append(buf, static_cast<std::size_t>(n));
        }
        const auto parsed = hydra::ws::parse_upgrade_request(request);
        const std::string reply = answer(parsed.request.key);
        if (::send(conn.fd, reply.data(), reply.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(reply.size())) return;
        pollfd c{conn.fd, POLLIN, 0};
        while (!stop_) {
            if (!drain_) {
                std::this_thread::sleep_for(20ms);  // not reading (the condition), only looking at stop_
                continue;
            }
            if (::poll(&c, 1, 50) > 0 && ::recv(conn.fd, buf, sizeof buf, 0) <= 0) return;
        }
    }

    int port_ = 0;
    Fd listener_;
    bool drain_;
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

std::string upgrade_answer(const std::string& accept) {
    return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
           accept + "\r\n\r\n";
}

int socket_receive_buffer(int fd) {
    int value = 0;
    socklen_t len = sizeof value;
    BOOST_REQUIRE_EQUAL(::getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &value, &len), 0);
    return value;
}

bool message_contains(const std::exception& e, const std::string& part) {
    if (std::string(e.what()).find(part) != std::string::npos) return true;
    BOOST_TEST_MESSAGE("exception message: " << e.what());
    return false;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(ws_client)

BOOST_AUTO_TEST_CASE(handshake_sends_target_and_headers_and_exposes_response_headers) {
    WsClient c = WsClient::connect("127.0.0.1", echo_server().port(), "/chat?room=1", {{"X-Test", "hello"}});
    BOOST_TEST(c.is_open());
    BOOST_TEST(c.fd() >= 0);
    BOOST_TEST(c.response_header("x-request-id").value_or("") == "req-42");
    BOOST_TEST(c.response_header("Sec-WebSocket-Accept").has_value());
    BOOST_TEST(!c.response_header("X-Missing").has_value());
    BOOST_TEST(!c.response_headers().empty());

    c.send_text("cmd:path");
    WsMessage m = c.receive(5s);
    BOOST_TEST(m.type == Type::text);
    BOOST_TEST(m.data == "/chat?room=1");

    c.send_text("cmd:header");
    m = c.receive(5s);
    BOOST_TEST(m.type == Type::text);
    BOOST_TEST(m.data == "hello");
}

BOOST_AUTO_TEST_CASE(text_echo) {
    WsClient c = connect_echo();
    for (const std::string text : {"hello", "h\xC3\xA9llo \xE2\x9C\x93", ""}) {
        c.send_text(text);
        const WsMessage m = c.receive(5s);
        BOOST_TEST(m.type == Type::text);
        BOOST_TEST(m.data == text);
    }
}

BOOST_AUTO_TEST_CASE(large_binary_and_text_echo) {
    WsClient c = connect_echo();
    std::string binary(70 * 1024, '\0');
    for (std::size_t i = 0; i < binary.size(); ++i) binary[i] = static_cast<char>(i * 7 + i / 256);
    c.send_binary(binary);
    WsMessage m = c.receive(5s);
    BOOST_TEST(m.type == Type::binary);
    BOOST_TEST(m.data.size() == binary.size());
    BOOST_TEST((m.data == binary));

    const std::string text(70 * 1000, 'a');
    c.send_text(text);
    m = c.receive(5s);
    BOOST_TEST(m.type == Type::text);
    BOOST_TEST((m.data == text));
}

BOOST_AUTO_TEST_CASE(fragmented_message_with_interleaved_ping) {
    WsClient c = connect_echo();
    c.send_frame(WsOpcode::text, "frag", false);
    c.send_ping("mid");
    c.send_frame(WsOpcode::continuation, "men", false);
    c.send_frame(WsOpcode::continuation, "ted", true);
    WsMessage m = c.receive(5s);
    BOOST_TEST(m.type == Type::pong);
    BOOST_TEST(m.data == "mid");
    m = c.receive(5s);
    BOOST_TEST(m.type == Type::text);
    BOOST_TEST(m.data == "fragmented");
}

BOOST_AUTO_TEST_CASE(ping_gets_pong) {
    WsClient c = connect_echo();
    c.send_ping("abc");
    const WsMessage m = c.receive(5s);
    BOOST_TEST(m.type == Type::pong);
    BOOST_TEST(m.data == "abc");
}

BOOST_AUTO_TEST_CASE(server_ping_is_answered_automatically) {
    WsClient c = connect_echo();
    BOOST_TEST(c.auto_pong());
    c.send_text("cmd:ping");
    // The server only sends this after it got our pong.
    const WsMessage m = c.receive(5s);
    BOOST_TEST(m.type == Type::text);
    BOOST_TEST(m.data == "pong received");
}

BOOST_AUTO_TEST_CASE(server_ping_without_auto_pong) {
    WsClient c = connect_echo();
    c.set_auto_pong(false);
    BOOST_TEST(!c.auto_pong());
    c.send_text("cmd:ping");
    WsMessage m = c.receive(5s);
    BOOST_TEST(m.type == Type::ping);
    BOOST_TEST(m.data == "are you there");
    BOOST_TEST(c.receive(300ms).type == Type::timeout);  // the server is still waiting for a pong
    c.send_pong(m.data);
    m = c.receive(5s);
    BOOST_TEST(m.type == Type::text);
    BOOST_TEST(m.data == "pong received");
}

BOOST_AUTO_TEST_CASE(close_handshake_with_code_and_reason) {
    WsClient c = connect_echo();
    const WsMessage m = c.close(4000, "bye");
    BOOST_TEST(m.type == Type::close);
    BOOST_TEST(m.close_code == 4000);
    BOOST_TEST(m.close_reason == "bye");
    BOOST_TEST(!c.is_open());
    BOOST_TEST(c.fd() == -1);
    BOOST_TEST(c.receive(0ms).type == Type::closed);
    BOOST_CHECK_THROW(c.send_text("after close"), std::runtime_error);
}

BOOST_AUTO_TEST_CASE(server_initiated_close) {
    WsClient c = connect_echo();
    c.send_text("cmd:close");
    WsMessage m = c.receive(5s);
    BOOST_TEST(m.type == Type::close);
    BOOST_TEST(m.close_code == 4001);
    BOOST_TEST(m.close_reason == "server bye");
    // Our automatic Close reply completes the handshake, so the server ends the TCP connection.
    m = c.receive(5s);
    BOOST_TEST(m.type == Type::closed);
    BOOST_TEST(c.receive(0ms).type == Type::closed);
    m = c.close();
    BOOST_TEST(m.type == Type::close);
    BOOST_TEST(m.close_code == 4001);
    BOOST_TEST(!c.is_open());
}

BOOST_AUTO_TEST_CASE(eof_without_close_frame) {
    WsClient c = connect_echo();
    c.send_text("cmd:drop");
    const WsMessage m = c.receive(5s);
    BOOST_TEST(m.type == Type::closed);
    BOOST_TEST(m.close_code == 1006);
}

BOOST_AUTO_TEST_CASE(server_protocol_violation_is_an_error) {
    WsClient c = connect_echo();
    c.send_text("cmd:bad-opcode");
    WsMessage m = c.receive(5s);
    BOOST_TEST(m.type == Type::error);
    BOOST_TEST(m.close_code == 1002);
    BOOST_TEST(m.data == "unknown opcode");
    m = c.receive(0ms);
    BOOST_TEST(m.type == Type::error);
}

BOOST_AUTO_TEST_CASE(message_above_limit_is_an_error) {
    WsConnectOptions options;
    options.max_message_size = 1000;
    WsClient c = WsClient::connect("127.0.0.1", echo_server().port(), options);
    c.send_text("cmd:big");
    const WsMessage m = c.receive(5s);
    BOOST_TEST(m.type == Type::error);
    BOOST_TEST(m.close_code == 1009);
}

BOOST_AUTO_TEST_CASE(send_raw_unmasked_frame_is_rejected_by_the_server) {
    WsClient c = connect_echo();
    c.send_raw(std::string_view("\x81\x02hi", 4));  // unmasked: clients must mask
    const WsMessage m = c.receive(5s);
    BOOST_TEST(m.type == Type::close);
    BOOST_TEST(m.close_code == 1002);
}

BOOST_AUTO_TEST_CASE(send_raw_frame_split_across_writes) {
    WsClient c = connect_echo();
    // A masked "hi" with an all-zero mask key, written in two pieces.
    const std::string frame("\x81\x82\0\0\0\0hi", 8);
    c.send_raw(frame.substr(0, 3));
    std::this_thread::sleep_for(50ms);  // the condition: the pieces reach the server apart
    c.send_raw(frame.substr(3));
    const WsMessage m = c.receive(5s);
    BOOST_TEST(m.type == Type::text);
    BOOST_TEST(m.data == "hi");
}

BOOST_AUTO_TEST_CASE(send_frame_rejects_invalid_frames) {
    WsClient c = connect_echo();
    BOOST_CHECK_THROW(c.send_frame(WsOpcode::ping, std::string(126, 'p')), std::invalid_argument);
    BOOST_CHECK_THROW(c.send_frame(WsOpcode::close, "", false), std::invalid_argument);
    BOOST_CHECK_THROW(c.send_frame(static_cast<WsOpcode>(16), "x"), std::invalid_argument);
    // Nothing was written, so the connection still works.
    c.send_text("still fine");
    const WsMessage m = c.receive(5s);
    BOOST_TEST(m.type == Type::text);
    BOOST_TEST(m.data == "still fine");
}

BOOST_AUTO_TEST_CASE(send_times_out_when_the_server_does_not_read) {
    ScriptedServer server([](const std::string& key) { return upgrade_answer(hydra::ws::accept_key(key)); }, false);
    WsConnectOptions options;
    options.send_timeout = 200ms;
    options.send_buffer = 4096;
    WsClient c = WsClient::connect("127.0.0.1", server.port(), options);
    // More than the server's receive buffer and our send buffer can absorb.
    BOOST_CHECK_EXCEPTION(c.send_binary(std::string(32 << 20, 'x')), std::runtime_error,
                          [](const std::runtime_error& e) { return message_contains(e, "timed out"); });
}

BOOST_AUTO_TEST_CASE(receive_times_out) {
    WsClient c = connect_echo();
    const auto start = std::chrono::steady_clock::now();
    WsMessage m = c.receive(200ms);
    const auto elapsed_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
    BOOST_TEST(m.type == Type::timeout);
    BOOST_TEST(elapsed_ms >= 190);
    BOOST_TEST(elapsed_ms < 2000);  // 10x the timeout: only catches a receive that ignores it, not a slow machine
    BOOST_TEST(c.receive(0ms).type == Type::timeout);
    // A timeout leaves the connection usable, and receive(0) returns what has arrived.
    c.send_text("later");
    BOOST_TEST(c.receive(5s).data == "later");
    c.send_text("a");
    c.send_text("b");
    BOOST_TEST(c.receive(5s).data == "a");
    BOOST_TEST(test::wait_until([&] {
        m = c.receive(0ms);
        return m.type != Type::timeout;
    }));
    BOOST_TEST(m.type == Type::text);
    BOOST_TEST(m.data == "b");
}

BOOST_AUTO_TEST_CASE(connect_to_closed_port_fails_clearly) {
    int port = 0;
    { const Fd unused = listen_loopback(&port); }  // a port that was just free: nothing listens there now
    auto refused = [port](const std::runtime_error& e) {
        return dynamic_cast<const WsHandshakeError*>(&e) == nullptr && message_contains(e, "Connection refused") &&
               message_contains(e, ":" + std::to_string(port));
    };
    BOOST_CHECK_EXCEPTION(WsClient::connect("127.0.0.1", port), std::runtime_error, refused);
    BOOST_CHECK_EXCEPTION(WsClient::connect("localhost", port), std::runtime_error, refused);
}

BOOST_AUTO_TEST_CASE(connect_times_out_when_the_server_never_answers) {
    int port = 0;
    const Fd listener = listen_loopback(&port);  // the kernel accepts the TCP connection; nobody answers the upgrade
    const auto start = std::chrono::steady_clock::now();
    BOOST_CHECK_EXCEPTION(WsClient::connect("127.0.0.1", port, "/", {}, 300ms), std::runtime_error,
                          [](const std::runtime_error& e) { return message_contains(e, "no answer within 300 ms"); });
    // 10x the timeout: catches a connect that ignores it (and would wait forever), not a slow machine
    const bool quick = std::chrono::steady_clock::now() - start < 3s;
    BOOST_TEST(quick);
}

BOOST_AUTO_TEST_CASE(connect_to_unresolvable_host_fails_clearly) {
    BOOST_CHECK_EXCEPTION(WsClient::connect("no-such-host.invalid", 80), std::runtime_error,
                          [](const std::runtime_error& e) { return message_contains(e, "cannot resolve host"); });
}

BOOST_AUTO_TEST_CASE(http_404_is_a_handshake_error) {
    PythonPeer http("http404");
    try {
        WsClient::connect("127.0.0.1", http.port(), "/ws");
        BOOST_FAIL("connect to a plain HTTP server succeeded");
    } catch (const WsHandshakeError& e) {
        BOOST_TEST(e.status() == 404);
        BOOST_TEST(e.body().find("no websocket here") != std::string::npos);
        BOOST_TEST(message_contains(e, "404"));
        BOOST_TEST(!e.headers().empty());
    }
}

BOOST_AUTO_TEST_CASE(wrong_accept_key_is_a_handshake_error) {
    ScriptedServer server([](const std::string&) { return upgrade_answer("dGhlIHNhbXBsZSBub25jZQ=="); });
    try {
        WsClient::connect("127.0.0.1", server.port());
        BOOST_FAIL("connect accepted a wrong Sec-WebSocket-Accept");
    } catch (const WsHandshakeError& e) {
        BOOST_TEST(e.status() == 101);
        BOOST_TEST(message_contains(e, "Sec-WebSocket-Accept"));
    }
}

BOOST_AUTO_TEST_CASE(chunked_error_body_is_decoded) {
    ScriptedServer server([](const std::string&) {
        return std::string(
            "HTTP/1.1 401 Unauthorized\r\nTransfer-Encoding: chunked\r\nWWW-Authenticate: Bearer\r\n\r\n"
            "5\r\nlogin\r\n9\r\n required\r\n0\r\n\r\n");
    });
    try {
        WsClient::connect("127.0.0.1", server.port());
        BOOST_FAIL("connect succeeded on a 401");
    } catch (const WsHandshakeError& e) {
        BOOST_TEST(e.status() == 401);
        BOOST_TEST(e.body() == "login required");
    }
}

BOOST_AUTO_TEST_CASE(frames_in_the_same_segment_as_the_101) {
    ScriptedServer server([](const std::string& key) {
        return upgrade_answer(hydra::ws::accept_key(key)) + std::string("\x81\x05hello\x89\x02hi", 11);
    });
    WsClient c = WsClient::connect("127.0.0.1", server.port());
    c.set_auto_pong(false);
    WsMessage m = c.receive(5s);
    BOOST_TEST(m.type == Type::text);
    BOOST_TEST(m.data == "hello");
    m = c.receive(5s);
    BOOST_TEST(m.type == Type::ping);
    BOOST_TEST(m.data == "hi");
    BOOST_TEST(c.receive(50ms).type == Type::timeout);
}

BOOST_AUTO_TEST_CASE(move_and_destructor_own_the_socket) {
    int fd = -1;
    {
        WsClient a = connect_echo();
        fd = a.fd();
        WsClient b = std::move(a);
        BOOST_TEST(a.fd() == -1);  // NOLINT(bugprone-use-after-move): the moved-from state is specified
        BOOST_TEST(!a.is_open());
        BOOST_TEST(a.receive(0ms).type == Type::closed);
        BOOST_CHECK_THROW(a.send_text("x"), std::runtime_error);
        BOOST_TEST(b.fd() == fd);
        b.send_text("moved");
        BOOST_TEST(b.receive(5s).data == "moved");

        WsClient c;
        c = std::move(b);
        BOOST_TEST(c.fd() == fd);
        BOOST_TEST(::fcntl(fd, F_GETFD) != -1);
    }
    BOOST_TEST(::fcntl(fd, F_GETFD) == -1);
    BOOST_TEST(errno == EBADF);
}

BOOST_AUTO_TEST_CASE(receive_buffer_can_be_made_small) {
    WsConnectOptions options;
    options.receive_buffer = 4096;
    WsClient c = WsClient::connect("127.0.0.1", echo_server().port(), options);
    const int small = socket_receive_buffer(c.fd());
    BOOST_TEST(small <= 16384);  // Linux doubles the value for bookkeeping overhead
    WsClient d = connect_echo();
    BOOST_TEST(socket_receive_buffer(d.fd()) > small);  // the default is larger

    c.set_receive_buffer(256 * 1024);
    BOOST_TEST(socket_receive_buffer(c.fd()) > small);
    c.send_text("ok");
    BOOST_TEST(c.receive(5s).data == "ok");
}

BOOST_AUTO_TEST_CASE(idle_client_is_small) {
    WsClient c = connect_echo();
    const std::size_t idle = c.memory_usage();
    BOOST_TEST_MESSAGE("idle WsClient: " << idle << " bytes");
    BOOST_TEST(idle < 2048);
    c.send_text("x");
    BOOST_TEST(c.receive(5s).data == "x");
    BOOST_TEST(c.memory_usage() >= idle + 16 * 1024);  // the read buffer exists from the first receive on
}

BOOST_AUTO_TEST_SUITE_END()
