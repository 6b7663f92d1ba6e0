// The blocking WebSocket client: the I/O-free codec (ws/frame.h, ws/handshake.h) over the deadline-bounded socket
// I/O of socket_io.h.
#include "hydra/ws_client.h"

#include <sys/socket.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <utility>

#include "http/chunked.h"
#include "socket_io.h"
#include "ws/frame.h"
#include "ws/handshake.h"

namespace hydra {
namespace {

using client::Clock;
using client::errno_text;
using client::ReadResult;
using client::UniqueFd;

constexpr std::size_t kReadBufferSize = 16 * 1024;
constexpr std::size_t kHandshakeChunk = 4096;
constexpr std::size_t kMaxErrorBody = 64 * 1024;  // enough for any error page a test wants to look at
constexpr std::chrono::milliseconds kCloseWait{2000};

// The Host header: IPv6 literals need brackets.
std::string host_header(const std::string& host, int port) {
    const bool ipv6 = host.find(':') != std::string::npos && host.front() != '[';
    return (ipv6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

// Reads the body of a refused handshake, as far as it arrives before the deadline: Content-Length, chunked or up to
// EOF. Best effort: the caller throws anyway, so read errors just end the body.
std::string read_error_body(int fd, const HeaderFields& headers, int status, std::string raw,
                            Clock::time_point deadline) {
    if ((status >= 100 && status < 200) || status == 204 || status == 304) return {};
    const auto te = ws::find_header(headers, "Transfer-Encoding");
    const bool chunked = te && ws::has_token(*te, "chunked");
    std::size_t length = kMaxErrorBody;
    bool until_eof = !chunked;
    if (const auto cl = ws::find_header(headers, "Content-Length"); cl && !chunked) {
        std::size_t n = 0;
        bool valid = !cl->empty();
        for (char c : *cl) {
            if (c < '0' || c > '9' || n > kMaxErrorBody) valid = false;
            if (valid) n = n * 10 + static_cast<std::size_t>(c - '0');
        }
        if (valid) {
            length = std::min(n, kMaxErrorBody);
            until_eof = false;
        }
    }
    std::string decoded;
    std::optional<http::ChunkedDecoder> decoder;
    if (chunked) decoder.emplace(kMaxErrorBody);
    std::size_t fed = 0;  // of raw, to the decoder
    char buf[kHandshakeChunk];
    for (;;) {
        if (chunked) {
            const http::ChunkedDecoder::Result r = decoder->feed(std::string_view(raw).substr(fed), decoded);
            fed += r.consumed;
            if (r.status == http::ParseStatus::ok) return decoded;
            if (r.status == http::ParseStatus::error) return raw;  // not chunked encoding after all
        } else if (!until_eof && raw.size() >= length) {
            raw.resize(length);
            return raw;
        }
        if (raw.size() >= 2 * kMaxErrorBody) break;
        const ReadResult r = client::read_some(fd, buf, sizeof buf, deadline);
        if (r.status != ReadResult::Status::data) break;
        raw.append(buf, r.bytes);
    }
    if (chunked) return decoded.empty() ? raw : decoded;
    if (raw.size() > length) raw.resize(length);
    return raw;
}

WsMessage closed_message(std::string why) {
    return WsMessage{WsMessage::Type::closed, std::move(why), ws::close_code::abnormal, {}};
}

std::size_t heap_bytes(const std::string& s) {
    static const std::size_t inline_capacity = std::string().capacity();
    return s.capacity() > inline_capacity ? s.capacity() + 1 : 0;
}

}  // namespace

// ---- WsMessage ----

std::string_view to_string(WsMessage::Type type) {
    switch (type) {
        case WsMessage::Type::text:
            return "text";
        case WsMessage::Type::binary:
            return "binary";
        case WsMessage::Type::ping:
            return "ping";
        case WsMessage::Type::pong:
            return "pong";
        case WsMessage::Type::close:
            return "close";
        case WsMessage::Type::timeout:
            return "timeout";
        case WsMessage::Type::closed:
            return "closed";
        case WsMessage::Type::error:
            return "error";
    }
    return "?";
}

std::ostream& operator<<(std::ostream& out, WsMessage::Type type) { return out << to_string(type); }

// ---- WsClient ----

// Lives on the heap so that moving a WsClient never moves the decoder, which may point into `pending`.
struct WsClient::Impl {
    Impl(UniqueFd socket, const WsConnectOptions& options)
        : fd(std::move(socket)),
          decoder(options.max_message_size, ws::Role::client),
          send_timeout(options.send_timeout),
          auto_pong(options.auto_pong),
          auto_close_reply(options.auto_close_reply) {}

    void send_bytes(std::string_view bytes) {
        if (!fd) throw std::runtime_error("WebSocket send failed: not connected");
        std::optional<Clock::time_point> deadline;
        if (send_timeout.count() > 0) deadline = Clock::now() + send_timeout;
        client::send_all(fd.get(), bytes, deadline, "WebSocket send failed");
    }

    void send_frame(WsOpcode op, std::string_view payload, bool fin = true) {
        send_bytes(ws::encode_frame_masked(op, payload, ws::random_mask_key(), fin));
        if (op == WsOpcode::close) close_sent = true;
    }

    // Replies the protocol requires while receiving. Best effort: if the socket is gone, the next read says so.
    void reply(WsOpcode op, std::string_view payload) noexcept {
        try {
            send_frame(op, payload);
        } catch (const std::exception&) {
        }
    }

    WsMessage server_close() const {
        return WsMessage{WsMessage::Type::close, {}, server_close_code, server_close_reason};
    }

    WsMessage failure() const {
        return WsMessage{WsMessage::Type::error, std::string(decoder.error_reason()), decoder.error_code(), {}};
    }

    // What receive() returns for a decoded event; nullopt for a ping that was answered.
    std::optional<WsMessage> on_event(const ws::Event& ev) {
        using T = ws::Event::Type;
        switch (ev.type) {
            case T::text:
                return WsMessage{WsMessage::Type::text, decoder.take_message(), 0, {}};
            case T::binary:
                return WsMessage{WsMessage::Type::binary, decoder.take_message(), 0, {}};
            case T::ping:
                if (!auto_pong) return WsMessage{WsMessage::Type::ping, std::string(ev.data), 0, {}};
                reply(WsOpcode::pong, ev.data);
                return std::nullopt;
            case T::pong:
                return WsMessage{WsMessage::Type::pong, std::string(ev.data), 0, {}};
            case T::close:
                close_received = true;
                server_close_code = ev.code;
                server_close_reason = std::string(ev.data);
                // RFC 6455 section 5.5.1: answer a Close with a Close, commonly echoing the status code.
                if (auto_close_reply && !close_sent) reply(WsOpcode::close, ws::close_payload(ev.code, {}));
                return server_close();
            case T::error:
                // Fail the connection (RFC 6455 section 7.1.7), telling the server why.
                if (!close_sent) reply(WsOpcode::close, ws::close_payload(ev.code, ev.data));
                return failure();
        }
        return failure();
    }

    UniqueFd fd;
    ws::MessageDecoder decoder;
    HeaderFields response_headers;
    std::string pending;                  // bytes that arrived with the 101; fed to the decoder in place
    std::unique_ptr<char[]> read_buffer;  // kReadBufferSize, allocated on first read
    std::chrono::milliseconds send_timeout;
    std::string eof_reason;  // set once the TCP connection ended
    std::string server_close_reason;
    std::uint16_t server_close_code = 0;
    bool auto_pong;
    bool auto_close_reply;
    bool close_sent = false;
    bool close_received = false;
    bool eof = false;
};

WsClient::WsClient() noexcept = default;
WsClient::WsClient(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
WsClient::WsClient(WsClient&&) noexcept = default;
WsClient& WsClient::operator=(WsClient&&) noexcept = default;
WsClient::~WsClient() = default;

WsClient WsClient::connect(const std::string& host, int port, const std::string& target,
                           const std::map<std::string, std::string>& headers, std::chrono::milliseconds timeout) {
    WsConnectOptions options;
    options.target = target;
    options.headers = headers;
    options.timeout = timeout;
    return connect(host, port, options);
}

WsClient WsClient::connect(const std::string& host, int port, const WsConnectOptions& options) {
    const std::string where = host + ":" + std::to_string(port);
    if (port <= 0 || port > 65535) throw std::invalid_argument("WebSocket connect to " + where + ": invalid port");
    const auto deadline = Clock::now() + options.timeout;
    const client::TcpOptions tcp{options.receive_buffer, options.send_buffer, options.timeout};
    UniqueFd fd = client::tcp_connect(host, port, tcp, deadline, where);

    const HeaderFields extra(options.headers.begin(), options.headers.end());
    const ws::ClientUpgrade upgrade = ws::make_upgrade_request(host_header(host, port), options.target, extra);
    const std::string failed = "WebSocket handshake with " + where + options.target + " failed";
    client::send_all(fd.get(), upgrade.request, deadline, failed);

    std::string in;
    char buf[kHandshakeChunk];
    for (;;) {
        ws::UpgradeResponse r = ws::parse_upgrade_response(in, upgrade.key);
        if (r.status == ws::ParseStatus::ok) {
            auto impl = std::make_unique<Impl>(std::move(fd), options);
            impl->response_headers = std::move(r.headers);
            if (in.size() > r.consumed) {
                // The server may send frames right behind the 101, in the same segment.
                impl->pending = in.substr(r.consumed);
                impl->decoder.feed(impl->pending);
            }
            return WsClient(std::move(impl));
        }
        if (r.status == ws::ParseStatus::error) {
            std::string body;
            if (r.http_status != 0 && r.http_status != 101) {
                const std::size_t head_end = in.find("\r\n\r\n");
                std::string raw = head_end == std::string::npos ? std::string() : in.substr(head_end + 4);
                body = read_error_body(fd.get(), r.headers, r.http_status, std::move(raw), deadline);
            }
            throw WsHandshakeError(failed + ": " + r.error, r.http_status, std::move(body), std::move(r.headers));
        }
        const ReadResult read = client::read_some(fd.get(), buf, sizeof buf, deadline);
        switch (read.status) {
            case ReadResult::Status::data:
                in.append(buf, read.bytes);
                break;
            case ReadResult::Status::eof:
                throw std::runtime_error(failed + (in.empty() ? ": connection closed without an answer"
                                                              : ": connection closed in the middle of the answer"));
            case ReadResult::Status::timeout:
                throw std::runtime_error(failed + ": no answer within " + std::to_string(options.timeout.count()) +
                                         " ms");
            case ReadResult::Status::error:
                throw std::runtime_error(failed + ": " + errno_text(read.err));
        }
    }
}

bool WsClient::is_open() const noexcept { return impl_ && impl_->fd; }

int WsClient::fd() const noexcept { return impl_ ? impl_->fd.get() : -1; }

const HeaderFields& WsClient::response_headers() const {
    static const HeaderFields none;
    return impl_ ? impl_->response_headers : none;
}

std::optional<std::string> WsClient::response_header(std::string_view name) const {
    if (!impl_) return std::nullopt;
    const auto value = ws::find_header(impl_->response_headers, name);
    return value ? std::optional<std::string>(*value) : std::nullopt;
}

void WsClient::send_text(std::string_view text) { send_frame(WsOpcode::text, text); }

void WsClient::send_binary(std::string_view data) { send_frame(WsOpcode::binary, data); }

void WsClient::send_ping(std::string_view payload) { send_frame(WsOpcode::ping, payload); }

void WsClient::send_pong(std::string_view payload) { send_frame(WsOpcode::pong, payload); }

void WsClient::send_close(std::uint16_t code, std::string_view reason) {
    send_frame(WsOpcode::close, ws::close_payload(code, reason));
}

void WsClient::send_frame(WsOpcode opcode, std::string_view payload, bool fin) {
    // Above 15 the opcode would spill into the RSV bits.
    if (static_cast<std::uint8_t>(opcode) > 0xF) throw std::invalid_argument("WebSocket opcode must be 0..15");
    if (!impl_) throw std::runtime_error("WebSocket send failed: not connected");
    impl_->send_frame(opcode, payload, fin);
}

void WsClient::send_raw(std::string_view bytes) {
    if (!impl_) throw std::runtime_error("WebSocket send failed: not connected");
    impl_->send_bytes(bytes);
}

WsMessage WsClient::receive(std::chrono::milliseconds timeout) {
    if (!is_open()) return closed_message("not connected");
    Impl& s = *impl_;
    const auto deadline = Clock::now() + timeout;
    for (;;) {
        ws::Event ev;
        while (s.decoder.next(ev))
            if (auto message = s.on_event(ev)) return std::move(*message);
        // next() returned false, so the decoder has consumed (and copied what it needs of) its input.
        if (!s.pending.empty()) std::string().swap(s.pending);
        if (s.decoder.failed()) return s.failure();
        if (s.eof) return closed_message(s.eof_reason);

        if (!s.read_buffer) s.read_buffer = std::make_unique<char[]>(kReadBufferSize);
        const ReadResult r = client::read_some(s.fd.get(), s.read_buffer.get(), kReadBufferSize, deadline);
        switch (r.status) {
            case ReadResult::Status::data:
                s.decoder.feed(reinterpret_cast<const std::uint8_t*>(s.read_buffer.get()), r.bytes);
                break;
            case ReadResult::Status::timeout:
                return WsMessage{WsMessage::Type::timeout, {}, 0, {}};
            case ReadResult::Status::eof:
                s.eof = true;
                s.eof_reason = s.close_received ? "connection closed by server after Close"
                                                : "connection closed by server without Close frame";
                return closed_message(s.eof_reason);
            case ReadResult::Status::error:
                s.eof = true;
                s.eof_reason = "connection lost: " + errno_text(r.err);
                return closed_message(s.eof_reason);
        }
    }
}

WsMessage WsClient::close(std::uint16_t code, std::string_view reason) {
    if (!is_open()) return closed_message("not connected");
    Impl& s = *impl_;
    const auto deadline = Clock::now() + kCloseWait;
    if (!s.close_sent) {
        try {
            s.send_frame(WsOpcode::close, ws::close_payload(code, reason));
        } catch (const std::runtime_error& e) {
            s.fd.reset();
            return closed_message(e.what());
        }
    }
    WsMessage result;
    if (s.close_received) {
        result = s.server_close();
    } else {
        do {
            result = receive(client::remaining(deadline));
        } while (result.type == WsMessage::Type::text || result.type == WsMessage::Type::binary ||
                 result.type == WsMessage::Type::ping || result.type == WsMessage::Type::pong);
    }
    if (result.type == WsMessage::Type::close) {
        // The server closes TCP first (RFC 6455 section 7.1.1), so that it, not the client, keeps TIME_WAIT.
        for (;;) {
            const WsMessage m = receive(client::remaining(deadline));
            if (m.type == WsMessage::Type::closed || m.type == WsMessage::Type::timeout ||
                m.type == WsMessage::Type::error)
                break;
        }
    }
    s.fd.reset();
    return result;
}

void WsClient::set_auto_pong(bool on) {
    if (impl_) impl_->auto_pong = on;
}

bool WsClient::auto_pong() const noexcept { return impl_ ? impl_->auto_pong : true; }

void WsClient::set_auto_close_reply(bool on) {
    if (impl_) impl_->auto_close_reply = on;
}

void WsClient::set_receive_buffer(int bytes) {
    if (!is_open()) throw std::runtime_error("WebSocket client: set_receive_buffer: not connected");
    client::set_int_option(impl_->fd.get(), SOL_SOCKET, SO_RCVBUF, bytes, "SO_RCVBUF");
}

std::size_t WsClient::memory_usage() const noexcept {
    std::size_t total = sizeof(*this);
    if (!impl_) return total;
    const Impl& s = *impl_;
    total += sizeof(Impl) - sizeof(s.decoder) + s.decoder.memory_usage();
    total += s.response_headers.capacity() * sizeof(HeaderFields::value_type);
    for (const auto& [name, value] : s.response_headers) total += heap_bytes(name) + heap_bytes(value);
    total += heap_bytes(s.pending) + heap_bytes(s.eof_reason) + heap_bytes(s.server_close_reason);
    if (s.read_buffer) total += kReadBufferSize;
    return total;
}

}  // namespace hydra
