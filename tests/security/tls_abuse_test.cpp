// Hostile and unusual TLS clients against the real binary's https and wss listeners. The client below keeps OpenSSL
// on memory buffers, so that the test decides which TLS records go out in which TCP write: the handshake's last
// flight together with the first request, many records in one segment, key updates while the server cannot write.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <thread>

#include <boost/test/unit_test.hpp>

#include "support/host.h"
#include "support/http_raw.h"
#include "support/tls.h"
#include "support/wait.h"

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

// A TLS client whose records reach the socket only when the test says so (send(), pump()).
class TlsClient {
  public:
    // `rcvbuf`: a fixed receive buffer (0: the kernel's); `max_version`: e.g. TLS1_2_VERSION (0: the newest).
    explicit TlsClient(int port, int rcvbuf = 0, int max_version = 0) {
        ctx_ = SSL_CTX_new(TLS_client_method());
        if (max_version != 0) SSL_CTX_set_max_proto_version(ctx_, max_version);
        ssl_ = SSL_new(ctx_);
        SSL_set_bio(ssl_, BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem()));
        SSL_set_connect_state(ssl_);
        SSL_set_app_data(ssl_, this);
        SSL_set_msg_callback(ssl_, [](int write_p, int, int type, const void* buf, size_t len, SSL* ssl, void*) {
            if (write_p == 0 && type == SSL3_RT_HANDSHAKE && len > 0 && *static_cast<const unsigned char*>(buf) == 24)
                ++static_cast<TlsClient*>(SSL_get_app_data(ssl))->key_updates_received_;
        });
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (rcvbuf > 0) setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
        sockaddr_in sa{};
        sa.sin_family = AF_INET;
        sa.sin_port = htons(static_cast<std::uint16_t>(port));
        inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
        BOOST_REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    }
    ~TlsClient() {
        SSL_free(ssl_);
        SSL_CTX_free(ctx_);
        if (fd_ >= 0) ::close(fd_);
    }
    TlsClient(const TlsClient&) = delete;
    TlsClient& operator=(const TlsClient&) = delete;

    // Before the handshake: the server name sent, the protocols offered.
    void set_sni(const std::string& name) { SSL_set_tlsext_host_name(ssl_, name.c_str()); }
    void set_alpn(const std::vector<std::string>& protocols) {
        std::string wire;
        for (const auto& p : protocols) wire += static_cast<char>(p.size()) + p;
        SSL_set_alpn_protos(ssl_, reinterpret_cast<const unsigned char*>(wire.data()),
                            static_cast<unsigned>(wire.size()));
    }
    SSL* ssl() { return ssl_; }
    int fd() const { return fd_; }
    bool eof() const { return eof_; }
    int key_updates_received() const { return key_updates_received_; }
    std::string& received() { return in_; }

    // Runs the handshake up to the point where the client's last flight is ready, without sending it (TLS 1.3:
    // Finished; TLS 1.2: ClientKeyExchange..Finished). False if the server ended it.
    bool handshake_until_last_flight(std::chrono::milliseconds timeout = 30s) {
        const auto deadline = Clock::now() + timeout;
        for (;;) {
            int r = SSL_do_handshake(ssl_);
            if (r == 1) return true;
            if (SSL_get_error(ssl_, r) != SSL_ERROR_WANT_READ) return false;
            send(deadline);
            if (!receive_once(deadline)) return false;
        }
    }
    bool handshake(std::chrono::milliseconds timeout = 30s) {
        bool ok = handshake_until_last_flight(timeout);
        send(Clock::now() + timeout);
        return ok;
    }
    // Plaintext into TLS records (records of up to 16 KiB), not sent yet.
    void queue(const std::string& plain) {
        std::size_t at = 0;
        while (at < plain.size()) {
            int n = SSL_write(ssl_, plain.data() + at, static_cast<int>(plain.size() - at));
            BOOST_REQUIRE(n > 0);
            at += static_cast<std::size_t>(n);
        }
    }
    // A TLS 1.3 KeyUpdate (asking the server to update its keys too when `requested`), not sent yet.
    bool queue_key_update(bool requested) {
        if (SSL_key_update(ssl_, requested ? SSL_KEY_UPDATE_REQUESTED : SSL_KEY_UPDATE_NOT_REQUESTED) != 1)
            return false;
        return SSL_do_handshake(ssl_) == 1;
    }
    std::size_t unsent() {
        collect();
        return out_.size();
    }
    // Everything queued, in as few TCP writes as the socket allows; false if the socket took none of it for the
    // whole of `timeout` (the server does not read).
    bool send(Clock::time_point deadline) {
        collect();
        while (!out_.empty()) {
            ssize_t n = ::send(fd_, out_.data(), out_.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n > 0) {
                out_.erase(0, static_cast<std::size_t>(n));
                continue;
            }
            if (n < 0 && errno != EAGAIN) return false;
            pollfd p{fd_, POLLOUT, 0};
            int left = static_cast<int>(std::max<std::int64_t>(
                0, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count()));
            if (::poll(&p, 1, left) <= 0) return false;
        }
        return true;
    }
    bool send(std::chrono::milliseconds timeout = 30s) { return send(Clock::now() + timeout); }

    // Reads (and keeps sending what is queued) until `done(received())`, EOF or the deadline.
    bool pump(const std::function<bool(const std::string&)>& done, std::chrono::milliseconds timeout = 30s) {
        const auto deadline = Clock::now() + timeout;
        for (;;) {
            drain_plain();
            if (done(in_)) return true;
            if (eof_ || Clock::now() > deadline) return false;
            collect();
            pollfd p{fd_, static_cast<short>(POLLIN | (out_.empty() ? 0 : POLLOUT)), 0};
            ::poll(&p, 1, 100);
            if (p.revents & POLLOUT) {
                ssize_t n = ::send(fd_, out_.data(), out_.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n > 0) out_.erase(0, static_cast<std::size_t>(n));
            }
            if (p.revents & (POLLIN | POLLHUP | POLLERR)) read_socket();
        }
    }
    // Reads until the server closes; true if it did within `timeout`.
    bool wait_closed(std::chrono::milliseconds timeout = 30s) {
        pump([](const std::string&) { return false; }, timeout);
        return eof_;
    }

  private:
    void collect() {
        char buf[16384];
        int n;
        while ((n = BIO_read(SSL_get_wbio(ssl_), buf, sizeof buf)) > 0) out_.append(buf, static_cast<std::size_t>(n));
    }
    bool receive_once(Clock::time_point deadline) {
        for (;;) {
            if (read_socket()) return true;
            if (eof_ || Clock::now() > deadline) return false;
            pollfd p{fd_, POLLIN, 0};
            ::poll(&p, 1, 100);
        }
    }
    // Ciphertext from the socket into OpenSSL; true if some came.
    bool read_socket() {
        char buf[65536];
        ssize_t n = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0) {
            BIO_write(SSL_get_rbio(ssl_), buf, static_cast<int>(n));
            return true;
        }
        if (n == 0 || (errno != EAGAIN && errno != EINTR)) eof_ = true;
        return false;
    }
    void drain_plain() {
        char buf[65536];
        for (;;) {
            int n = SSL_read(ssl_, buf, sizeof buf);
            if (n > 0) {
                in_.append(buf, static_cast<std::size_t>(n));
                continue;
            }
            int e = SSL_get_error(ssl_, n);
            if (e != SSL_ERROR_WANT_READ) eof_ = true;  // close_notify or an alert
            ERR_clear_error();
            return;
        }
    }

    SSL_CTX* ctx_ = nullptr;
    SSL* ssl_ = nullptr;
    int fd_ = -1;
    bool eof_ = false;
    int key_updates_received_ = 0;
    std::string out_;  // ciphertext not yet taken by the socket
    std::string in_;   // plaintext received
};

std::size_t count(const std::string& text, const std::string& what) {
    std::size_t n = 0;
    for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
    return n;
}

// Counts occurrences of `what` in a growing text, looking only at what was added since the last call.
class Counter {
  public:
    explicit Counter(std::string what) : what_(std::move(what)) {}
    std::size_t operator()(const std::string& text) {
        for (auto at = text.find(what_, from_); at != std::string::npos; at = text.find(what_, from_)) {
            ++n_;
            from_ = at + what_.size();
        }
        if (text.size() >= what_.size()) from_ = std::max(from_, text.size() - what_.size() + 1);
        return n_;
    }

  private:
    std::string what_;
    std::size_t from_ = 0, n_ = 0;
};

int port_of(const std::string& address) { return std::stoi(address.substr(address.rfind(':') + 1)); }

const std::string kHealth = "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";

std::string upgrade(const std::string& path) {
    return "GET " + path +
           " HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
}

// A masked client frame (FIN set).
std::string client_frame(const std::string& payload, std::uint8_t opcode = 0x2) {
    std::string f;
    f += static_cast<char>(0x80 | opcode);
    const std::size_t n = payload.size();
    if (n < 126) {
        f += static_cast<char>(0x80 | n);
    } else if (n < 65536) {
        f += static_cast<char>(0x80 | 126);
        f += static_cast<char>(n >> 8);
        f += static_cast<char>(n & 0xff);
    } else {
        f += static_cast<char>(0x80 | 127);
        for (int i = 7; i >= 0; --i) f += static_cast<char>((n >> (8 * i)) & 0xff);
    }
    const char mask[4] = {0x11, 0x22, 0x33, 0x44};
    f.append(mask, 4);
    for (std::size_t i = 0; i < n; ++i) f += static_cast<char>(payload[i] ^ mask[i % 4]);
    return f;
}

struct ServerFrame {
    std::uint8_t opcode;
    std::string payload;
};

// The server's frames at the start of `bytes` (after the 101's head, which is removed first); whole frames only.
// Its keepalive pings (and pongs) are left out: a connection quiet for ws.ping_interval_ms gets one, and on a slow
// run one could land among the frames a test counts.
std::vector<ServerFrame> take_frames(std::string& bytes) {
    std::vector<ServerFrame> frames;
    if (bytes.starts_with("HTTP/1.1 101")) {
        auto end = bytes.find("\r\n\r\n");
        if (end == std::string::npos) return frames;
        bytes.erase(0, end + 4);
    }
    for (;;) {
        if (bytes.size() < 2) return frames;
        const auto b = reinterpret_cast<const unsigned char*>(bytes.data());
        std::size_t len = b[1] & 0x7f, head = 2;
        if (len == 126) {
            if (bytes.size() < 4) return frames;
            len = (std::size_t(b[2]) << 8) | b[3];
            head = 4;
        } else if (len == 127) {
            if (bytes.size() < 10) return frames;
            len = 0;
            for (int i = 0; i < 8; ++i) len = (len << 8) | b[2 + i];
            head = 10;
        }
        if (bytes.size() < head + len) return frames;
        const auto opcode = static_cast<std::uint8_t>(b[0] & 0x0f);
        if (opcode != 0x9 && opcode != 0xA) frames.push_back({opcode, bytes.substr(head, len)});
        bytes.erase(0, head + len);
    }
}

std::string random_bytes(std::size_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::string s(n, '\0');
    for (char& ch : s) ch = static_cast<char>(rng());
    return s;
}

std::vector<std::string> with(std::vector<std::string> args, const std::vector<std::string>& more) {
    args.insert(args.end(), more.begin(), more.end());
    return args;
}

// One https GET /healthz on a fresh connection: true if answered 200.
bool healthy(int port) {
    TlsClient c(port);
    if (!c.handshake()) return false;
    c.queue(kHealth);
    c.send();
    return c.pump([](const std::string& in) { return in.find("\r\n\r\n") != std::string::npos; }) &&
           c.received().starts_with("HTTP/1.1 200");
}

}  // namespace

BOOST_AUTO_TEST_SUITE(tls_abuse)

BOOST_AUTO_TEST_CASE(a_request_sent_with_the_handshakes_last_flight_is_answered_without_another_event) {
    const test::Certificate cert = test::make_certificate();
    test::Host host(test::tls_settings(cert, {"api", "ws"}));
    for (int version : {TLS1_3_VERSION, TLS1_2_VERSION}) {
        BOOST_TEST_CONTEXT("version " << std::hex << version) {
            // API: Finished and a request in one TCP write; nothing follows until the answer is read.
            TlsClient api(port_of(host.api), 0, version);
            BOOST_REQUIRE(api.handshake_until_last_flight());
            api.queue(kHealth);
            BOOST_REQUIRE(api.send());
            BOOST_CHECK(api.pump([](const std::string& in) { return in.find("\r\n\r\n") != std::string::npos; }));
            BOOST_CHECK(api.received().starts_with("HTTP/1.1 200"));

            // WS: Finished, the upgrade and 50 frames in one write; every frame comes back.
            TlsClient ws(host.ws_port, 0, version);
            BOOST_REQUIRE(ws.handshake_until_last_flight());
            std::string frames = upgrade("/echo");
            for (int i = 0; i < 50; ++i) frames += client_frame("m" + std::to_string(i));
            ws.queue(frames);
            BOOST_REQUIRE(ws.send());
            std::vector<ServerFrame> got;
            BOOST_CHECK(ws.pump([&](const std::string&) {
                for (auto& f : take_frames(ws.received())) got.push_back(std::move(f));
                return got.size() >= 50;
            }));
            BOOST_REQUIRE_EQUAL(got.size(), 50u);
            for (int i = 0; i < 50; ++i) BOOST_CHECK_EQUAL(got[i].payload, "m" + std::to_string(i));
        }
    }
}

BOOST_AUTO_TEST_CASE(many_records_in_one_segment_and_many_requests_in_one_record_are_all_answered) {
    const test::Certificate cert = test::make_certificate();
    test::Host host(test::tls_settings(cert, {"api", "ws"}));
    // 300 requests, each in its own record, all records in one write (the server's read-ahead takes several at
    // once and must go on with what it holds); then 300 more in one plaintext write (16 KiB records).
    TlsClient api(port_of(host.api));
    BOOST_REQUIRE(api.handshake());
    for (int i = 0; i < 300; ++i) api.queue(kHealth);
    std::string batch;
    for (int i = 0; i < 300; ++i) batch += kHealth;
    api.queue(batch);
    BOOST_REQUIRE(api.send());
    Counter answers("HTTP/1.1 200");
    BOOST_CHECK(api.pump([&](const std::string& in) { return answers(in) >= 600; }));
    BOOST_CHECK_EQUAL(count(api.received(), "HTTP/1.1 200"), 600u);

    // WS: 500 frames, one record each, in one write, after the upgrade was answered.
    TlsClient ws(host.ws_port);
    BOOST_REQUIRE(ws.handshake());
    ws.queue(upgrade("/echo"));
    BOOST_REQUIRE(ws.send());
    BOOST_REQUIRE(ws.pump([](const std::string& in) { return in.find("\r\n\r\n") != std::string::npos; }));
    for (int i = 0; i < 500; ++i) ws.queue(client_frame("frame " + std::to_string(i)));
    BOOST_REQUIRE(ws.send());
    std::vector<ServerFrame> got;
    BOOST_CHECK(ws.pump([&](const std::string&) {
        for (auto& f : take_frames(ws.received())) got.push_back(std::move(f));
        return got.size() >= 500;
    }));
    BOOST_REQUIRE_EQUAL(got.size(), 500u);
    for (int i = 0; i < 500; ++i) BOOST_CHECK_EQUAL(got[i].payload, "frame " + std::to_string(i));
}

BOOST_AUTO_TEST_CASE(a_pipelining_client_that_stops_reading_gets_every_answer_once_it_reads_again) {
    const test::Certificate cert = test::make_certificate();
    // (No rate limit: every answer is a 200, and none is logged: the test reads the server's stderr only at the end,
    // a full pipe would hold the server's logging.) A small output limit: the server stops reading (EPOLLIN off) with
    // decrypted requests left in OpenSSL.
    test::Host host(with(test::tls_settings(cert, {"api"}),
                         {"--set", "api.max_pending_output=16384", "--set", "api.rate_limit.requests_per_s=0"}));
    TlsClient api(port_of(host.api), 4096);
    const int sndbuf = 4096;
    setsockopt(api.fd(), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    BOOST_REQUIRE(api.handshake());
    constexpr int kRequests = 20000;
    for (int i = 0; i < kRequests; ++i) api.queue(kHealth);
    // Without reading: the server answers until its limit and its socket are full, then takes no more requests.
    BOOST_CHECK(!api.send(3s));
    BOOST_CHECK_GT(api.unsent(), 0u);
    // Reading again: every request is answered, in order, none twice.
    Counter answers("HTTP/1.1 200");
    BOOST_CHECK(api.pump([&](const std::string& in) { return answers(in) >= kRequests; }, 120s));
    BOOST_CHECK_MESSAGE(count(api.received(), "HTTP/1.1 200") == static_cast<std::size_t>(kRequests),
                        count(api.received(), "HTTP/1.1 200") << " answers, eof " << api.eof() << ", unsent "
                                                              << api.unsent() << "; server: " << host.process->err());
    BOOST_CHECK(healthy(port_of(host.api)));
}

BOOST_AUTO_TEST_CASE(a_ws_client_flooding_messages_for_workers_gets_every_reply) {
    const test::Certificate cert = test::make_certificate();
    test::Host host(test::tls_settings(cert, {"ws"}));
    // On the service path "/" messages go to workers: more than 16 pending pause reading with records in OpenSSL.
    TlsClient ws(host.ws_port);
    BOOST_REQUIRE(ws.handshake());
    ws.queue(upgrade("/"));
    BOOST_REQUIRE(ws.send());
    BOOST_REQUIRE(ws.pump([](const std::string& in) { return in.find("\r\n\r\n") != std::string::npos; }));
    BOOST_REQUIRE(ws.received().starts_with("HTTP/1.1 101"));
    constexpr int kMessages = 400;
    std::string all;
    for (int i = 0; i < kMessages; ++i)
        all += client_frame(R"({"service":"/no/such","i":)" + std::to_string(i) + "}", 0x1);
    ws.queue(all);
    BOOST_REQUIRE(ws.send());
    std::vector<ServerFrame> got;
    BOOST_CHECK(ws.pump(
        [&](const std::string&) {
            for (auto& f : take_frames(ws.received())) got.push_back(std::move(f));
            return got.size() >= kMessages;
        },
        120s));
    BOOST_CHECK_EQUAL(got.size(), static_cast<std::size_t>(kMessages));
}

BOOST_AUTO_TEST_CASE(large_echoes_to_a_slow_reader_arrive_intact_while_more_frames_are_queued) {
    const test::Certificate cert = test::make_certificate();
    test::Host host(with(test::tls_settings(cert, {"ws"}),
                         {"--set", "ws.max_message=2097152", "--set", "ws.send_queue_bytes=16777216"}));
    // A tiny receive buffer: the server's writes of 1 MiB frames stop part-way many times, with small frames queued
    // behind them (gathered writes of changing shape retried from the same queue head).
    TlsClient ws(host.ws_port, 2048);
    BOOST_REQUIRE(ws.handshake());
    ws.queue(upgrade("/echo"));
    BOOST_REQUIRE(ws.send());
    BOOST_REQUIRE(ws.pump([](const std::string& in) { return in.find("\r\n\r\n") != std::string::npos; }));
    std::vector<std::string> sent;
    for (int i = 0; i < 24; ++i) {
        const std::size_t size = i % 3 == 0 ? 1024 * 1024 : (i % 3 == 1 ? 100 + i : 20000 + i);
        sent.push_back(random_bytes(size, static_cast<unsigned>(i)));
        ws.queue(client_frame(sent.back()));
    }
    std::vector<ServerFrame> got;
    BOOST_CHECK(ws.pump(
        [&](const std::string&) {
            for (auto& f : take_frames(ws.received())) got.push_back(std::move(f));
            return got.size() >= sent.size();
        },
        180s));
    BOOST_REQUIRE_EQUAL(got.size(), sent.size());
    for (std::size_t i = 0; i < sent.size(); ++i) BOOST_CHECK(got[i].payload == sent[i]);
    BOOST_CHECK(host.process->err().find("ws: ") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(key_updates_are_answered_even_while_the_server_cannot_write) {
    const test::Certificate cert = test::make_certificate();
    test::Host host(
        with(test::tls_settings(cert, {"api", "ws"}), {"--set", "ws.max_message=2097152", "--set", "log.level=info"}));
    // A 1 MiB echo the client does not read: the server's write stops part-way (a record half in the socket). Then
    // the client asks for a key update, which the server must answer with a record of its own.
    TlsClient ws(host.ws_port, 4096);
    BOOST_REQUIRE(ws.handshake());
    ws.queue(upgrade("/echo"));
    BOOST_REQUIRE(ws.send());
    BOOST_REQUIRE(ws.pump([](const std::string& in) { return in.find("\r\n\r\n") != std::string::npos; }));
    const std::string big = random_bytes(1024 * 1024, 1);
    ws.queue(client_frame(big));
    BOOST_REQUIRE(ws.send());
    // The server has read it all and is writing: the client's socket fills (its receive queue stops growing).
    BOOST_REQUIRE(test::wait_until([&] {
        int queued = 0;
        ioctl(ws.fd(), FIONREAD, &queued);
        return queued >= 2048;
    }));
    BOOST_REQUIRE(ws.queue_key_update(true));
    ws.queue(client_frame("after the key update"));
    BOOST_REQUIRE(ws.send());
    std::vector<ServerFrame> got;
    BOOST_CHECK(ws.pump(
        [&](const std::string&) {
            for (auto& f : take_frames(ws.received())) got.push_back(std::move(f));
            return got.size() >= 2;
        },
        120s));
    BOOST_REQUIRE_EQUAL(got.size(), 2u);
    BOOST_CHECK(got[0].payload == big);
    BOOST_CHECK_EQUAL(got[1].payload, "after the key update");

    // The same on the API: a pipelined batch of answers not read, a key update, one more request.
    TlsClient api(port_of(host.api), 4096);
    BOOST_REQUIRE(api.handshake());
    for (int i = 0; i < 300; ++i) api.queue(kHealth);
    BOOST_REQUIRE(api.send());
    BOOST_REQUIRE(test::wait_until([&] {
        int queued = 0;
        ioctl(api.fd(), FIONREAD, &queued);
        return queued >= 2048;
    }));
    BOOST_REQUIRE(api.queue_key_update(true));
    api.queue(kHealth);
    BOOST_REQUIRE(api.send());
    Counter answers("HTTP/1.1 200");
    BOOST_CHECK(api.pump([&](const std::string& in) { return answers(in) >= 301; }, 120s));
    BOOST_CHECK_EQUAL(count(api.received(), "HTTP/1.1 200"), 301u);

    BOOST_CHECK(healthy(port_of(host.api)));
}

BOOST_AUTO_TEST_CASE(a_flood_of_key_updates_is_read_only_as_fast_as_its_answers_are_taken) {
    const test::Certificate cert = test::make_certificate();
    test::Host host(with(test::tls_settings(cert, {"api"}), {"--set", "api.keep_alive_timeout_ms=600000"}));
    // OpenSSL answers every key update and sets no limit on their number. What bounds the server is that it reads
    // the next one only once its answer to the last is in the socket: a client that floods them and never reads
    // fills the kernel's buffers (a few MiB of answers here), and then its records stay unread, not queued in the
    // server. 400000 of them (about 11 MB) are more than those buffers hold. (That every one is answered, and the
    // connection goes on, is key_updates_are_answered_even_while_the_server_cannot_write.)
    constexpr int kUpdates = 400000;
    TlsClient flood(port_of(host.api), 4096);
    BOOST_REQUIRE(flood.handshake());
    for (int i = 0; i < kUpdates; ++i) BOOST_REQUIRE(flood.queue_key_update(true));
    flood.send(5s);
    // Time the server would need to read the rest if nothing held it back (it read 200000 within 5 s under load).
    std::this_thread::sleep_for(3s);
    const long held_back = test::unread_by_server(flood.fd()) + static_cast<long>(flood.unsent());
    BOOST_TEST_MESSAGE("not taken by the server: " << held_back << " of about " << kUpdates * 27 << " bytes");
    BOOST_CHECK_GT(held_back, 2000000);
    // The server still serves others.
    BOOST_CHECK(healthy(port_of(host.api)));
}

BOOST_AUTO_TEST_CASE(tls_1_2_renegotiation_is_refused_and_the_server_goes_on) {
    const test::Certificate cert = test::make_certificate();
    test::Host host(test::tls_settings(cert, {"api"}));
    TlsClient c(port_of(host.api), 0, TLS1_2_VERSION);
    BOOST_REQUIRE(c.handshake());
    BOOST_REQUIRE_EQUAL(SSL_version(c.ssl()), TLS1_2_VERSION);
    BOOST_REQUIRE(SSL_renegotiate(c.ssl()) == 1);
    SSL_do_handshake(c.ssl());  // a new ClientHello into the buffer
    BOOST_REQUIRE(c.send());
    // The server declines (a no_renegotiation alert, which OpenSSL's client takes as the end) or closes.
    BOOST_CHECK(c.wait_closed());
    BOOST_CHECK(healthy(port_of(host.api)));
}

BOOST_AUTO_TEST_CASE(odd_client_hellos_are_served_or_refused_without_harm) {
    const test::Certificate cert = test::make_certificate();
    // (The plain ws listener waits for the rest of an upgrade request that a ClientHello never completes.)
    test::Host host(with(test::tls_settings(cert, {"api"}), {"--set", "ws.handshake_timeout_ms=1000"}));
    const int port = port_of(host.api);
    auto served = [&](const std::string& sni, const std::vector<std::string>& offered) {
        TlsClient c(port);
        if (!sni.empty()) c.set_sni(sni);
        if (!offered.empty()) c.set_alpn(offered);
        if (!c.handshake()) return std::string("no handshake");
        const unsigned char* alpn = nullptr;
        unsigned alpn_len = 0;
        SSL_get0_alpn_selected(c.ssl(), &alpn, &alpn_len);
        c.queue(kHealth);
        c.send();
        c.pump([](const std::string& in) { return in.find("\r\n\r\n") != std::string::npos; });
        return c.received().substr(0, 12) + " alpn=" + std::string(reinterpret_cast<const char*>(alpn), alpn_len);
    };
    // The longest server name a ClientHello carries, and one that is not a host name at all.
    BOOST_CHECK_EQUAL(served(std::string(63, 'a') + "." + std::string(63, 'b') + "." + std::string(63, 'c') + "." +
                                 std::string(63, 'd'),
                             {}),
                      "HTTP/1.1 200 alpn=");
    BOOST_CHECK_EQUAL(served("\x01\x02 not a host/..//", {}), "HTTP/1.1 200 alpn=");
    // Only protocols the server does not speak: no ALPN chosen, and HTTP/1.1 still served.
    BOOST_CHECK_EQUAL(served("", {"h2"}), "HTTP/1.1 200 alpn=");
    // A thousand protocols, http/1.1 last.
    std::vector<std::string> many;
    for (int i = 0; i < 1000; ++i) many.push_back("proto-" + std::to_string(i));
    many.push_back("http/1.1");
    BOOST_CHECK_EQUAL(served("", many), "HTTP/1.1 200 alpn=http/1.1");
    // A TLS client on a plain listener: the ClientHello is not an upgrade request; the server closes (at the latest
    // after ws.handshake_timeout_ms), and the handshake fails.
    TlsClient plain(host.ws_port);
    BOOST_CHECK(!plain.handshake(30s));
    BOOST_CHECK(healthy(port));
}

BOOST_AUTO_TEST_CASE(a_close_notify_or_reset_mid_request_and_a_silent_client_are_closed) {
    const test::Certificate cert = test::make_certificate();
    test::Host host(with(test::tls_settings(cert, {"api", "ws"}),
                         {"--set", "api.keep_alive_timeout_ms=500", "--set", "ws.handshake_timeout_ms=500"}));
    const int port = port_of(host.api);
    // close_notify after half a request head: the server closes without an answer.
    {
        TlsClient c(port);
        BOOST_REQUIRE(c.handshake());
        c.queue("GET /healthz HTTP/1.1\r\nHo");
        SSL_shutdown(c.ssl());
        BOOST_REQUIRE(c.send());
        BOOST_CHECK(c.wait_closed());
        BOOST_CHECK_EQUAL(c.received(), "");
    }
    // A reset right after the ClientHello, and one right after the handshake.
    for (bool finish : {false, true}) {
        TlsClient c(port);
        if (finish) {
            BOOST_REQUIRE(c.handshake());
        } else {
            SSL_do_handshake(c.ssl());
            BOOST_REQUIRE(c.send());
        }
        linger abort{1, 0};
        setsockopt(c.fd(), SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
    }
    // Handshake done, then silence: the keep-alive timeout (api) and the upgrade timeout (ws) end them.
    for (int p : {port, host.ws_port}) {
        TlsClient c(p);
        BOOST_REQUIRE(c.handshake());
        BOOST_CHECK(c.wait_closed(30s));
    }
    BOOST_CHECK(healthy(port));
}

BOOST_AUTO_TEST_CASE(handshakes_in_flight_across_a_reload_complete_and_a_mismatched_key_is_not_taken) {
    const test::Certificate a = test::make_certificate("hydra-a");
    const test::Certificate b = test::make_certificate("hydra-b");
    const std::string cert_path = test::temp_path("live-cert.pem"), key_path = test::temp_path("live-key.pem");
    auto install = [&](const std::string& cert, const std::string& key) {
        std::filesystem::copy_file(cert, cert_path, std::filesystem::copy_options::overwrite_existing);
        std::filesystem::copy_file(key, key_path, std::filesystem::copy_options::overwrite_existing);
    };
    install(a.cert, a.key);
    test::Host host({"--set", "api.tls.cert_file=" + cert_path, "--set", "api.tls.key_file=" + key_path, "--set",
                     "log.level=info"});
    const int port = port_of(host.api);
    // 20 handshakes waiting for their last flight while the certificate changes.
    std::vector<std::unique_ptr<TlsClient>> waiting;
    for (int i = 0; i < 20; ++i) {
        waiting.push_back(std::make_unique<TlsClient>(port));
        BOOST_REQUIRE(waiting.back()->handshake_until_last_flight());
    }
    install(b.cert, b.key);
    host.process->signal(SIGHUP);
    BOOST_REQUIRE(host.process->wait_for_stderr(R"(api\.tls: certificate re-read)", 30s));
    for (auto& c : waiting) {
        c->queue(kHealth);
        BOOST_REQUIRE(c->send());
        BOOST_CHECK(c->pump([](const std::string& in) { return in.find("\r\n\r\n") != std::string::npos; }));
        BOOST_CHECK(c->received().starts_with("HTTP/1.1 200"));
    }
    BOOST_CHECK_EQUAL(test::served_certificate_name(port), "hydra-b");
    // A's certificate with B's key: refused, B stays.
    install(a.cert, b.key);
    host.process->signal(SIGHUP);
    BOOST_CHECK(host.process->wait_for_stderr(R"(api\.tls\.key_file: .*does not match)", 30s));
    BOOST_CHECK_EQUAL(test::served_certificate_name(port), "hydra-b");
    BOOST_CHECK(healthy(port));
}

BOOST_AUTO_TEST_CASE(a_ws_client_that_stops_reading_gets_the_close_1008_after_its_last_whole_frame) {
    const test::Certificate cert = test::make_certificate();
    test::Host host(
        with(test::tls_settings(cert, {"ws"}), {"--set", "ws.send_queue_bytes=65536", "--set", "log.level=debug"}));
    // Echoes of 16 KiB the client does not read: the server's write stops part-way inside a record, then its
    // queue overflows and it drops the rest for a close frame. The stream must stay well-formed: whole echoes,
    // then the close 1008.
    TlsClient ws(host.ws_port, 4096);
    BOOST_REQUIRE(ws.handshake());
    ws.queue(upgrade("/echo"));
    BOOST_REQUIRE(ws.send());
    BOOST_REQUIRE(ws.pump([](const std::string& in) { return in.find("\r\n\r\n") != std::string::npos; }));
    // Until the server gives up (its socket buffer takes a few MiB first).
    std::vector<std::string> sent;
    while (sent.size() < 1000 && host.process->err().find("send queue full") == std::string::npos) {
        sent.push_back(random_bytes(16 * 1024, static_cast<unsigned>(sent.size())));
        ws.queue(client_frame(sent.back()));
        BOOST_REQUIRE(ws.send());
    }
    BOOST_REQUIRE_MESSAGE(host.process->wait_for_stderr("send queue full", 30s), host.process->err().substr(0, 3000));
    std::vector<ServerFrame> got;
    ws.pump(
        [&](const std::string&) {
            for (auto& f : take_frames(ws.received())) got.push_back(std::move(f));
            return !got.empty() && got.back().opcode == 0x8;
        },
        60s);
    BOOST_REQUIRE(!got.empty());
    BOOST_CHECK_MESSAGE(got.back().opcode == 0x8, "last frame: opcode "
                                                      << int(got.back().opcode) << " after " << got.size()
                                                      << " frames; server: " << host.process->err().substr(0, 4000));
    BOOST_CHECK(got.back().payload.starts_with("\x03\xf0send queue full"));  // 1008
    for (std::size_t i = 0; i + 1 < got.size(); ++i) BOOST_CHECK(got[i].payload == sent[i]);
}

BOOST_AUTO_TEST_SUITE_END()
