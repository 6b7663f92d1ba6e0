// A small blocking WebSocket client (RFC 6455, ws:// only) for hydra's tests and load generator: connect and
// handshake, send masked frames (also deliberately odd ones), receive whole messages with a timeout.
// Library hydra_client (hydra/client), apart from the server library.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include <hydra/header_fields.h>
#include <hydra/ws_opcode.h>

namespace hydra {

// One thing WsClient::receive() returns.
struct WsMessage {
    enum class Type {
        text,     // data: the whole (reassembled) message, valid UTF-8
        binary,   // data: the whole message
        ping,     // data: the payload (only returned with auto-pong off)
        pong,     // data: the payload
        close,    // close_code (1005 when the frame had no payload) and close_reason from the server's Close frame
        timeout,  // nothing complete arrived in time; the connection is still usable
        closed,   // the TCP connection ended without (further) Close frame; data says how, close_code is 1006
        error,    // the server broke the protocol; data is what was wrong, close_code the code we sent back
    };

    Type type = Type::timeout;
    std::string data;
    int close_code = 0;
    std::string close_reason;
};

std::string_view to_string(WsMessage::Type type);
// So that Boost.Test and logs can print the type.
std::ostream& operator<<(std::ostream& out, WsMessage::Type type);

// The server answered the upgrade request with something other than a valid 101: an HTTP error status (status() is
// e.g. 404 and body() the response body), a 101 that fails validation (status() 101, e.g. a wrong
// Sec-WebSocket-Accept), or something that is not HTTP (status() 0).
class WsHandshakeError : public std::runtime_error {
  public:
    WsHandshakeError(const std::string& what, int status, std::string body, HeaderFields headers)
        : std::runtime_error(what), status_(status), body_(std::move(body)), headers_(std::move(headers)) {}

    int status() const noexcept { return status_; }
    const std::string& body() const noexcept { return body_; }
    const HeaderFields& headers() const noexcept { return headers_; }

  private:
    int status_;
    std::string body_;
    HeaderFields headers_;
};

struct WsConnectOptions {
    std::string target = "/";                    // request target: path and query
    std::map<std::string, std::string> headers;  // extra request headers (Host, Upgrade etc. are set already)
    std::chrono::milliseconds timeout{5000};     // TCP connect plus opening handshake
    // How long one send_*() may block on a server that does not read before it throws; 0 waits forever.
    std::chrono::milliseconds send_timeout{30000};
    // SO_RCVBUF / SO_SNDBUF, set before connect() so the TCP window is negotiated for them (the kernel doubles the
    // value). A small receive buffer plus not calling receive() makes a slow reader. 0: system default.
    int receive_buffer = 0;
    int send_buffer = 0;
    std::size_t max_message_size = std::size_t{64} << 20;  // larger server messages are a protocol error (1009)
    bool auto_pong = true;
    bool auto_close_reply = true;
};

// One client connection. Not thread-safe: use each WsClient from one thread at a time.
//
// Memory is small enough to hold thousands: a few hundred bytes plus the 101's headers while idle; a 16 KiB read
// buffer is allocated by the first receive(), and a message buffer only while a message is arriving.
class WsClient {
  public:
    // Connects (getaddrinfo: IPv4 or IPv6, every address in turn) and performs the opening handshake. Throws
    // WsHandshakeError when the server answers with anything but a valid 101, std::runtime_error on network errors
    // (cannot resolve, refused, timed out, connection closed during the handshake).
    static WsClient connect(const std::string& host, int port, const std::string& target = "/",
                            const std::map<std::string, std::string>& headers = {},
                            std::chrono::milliseconds timeout = std::chrono::seconds(5));
    static WsClient connect(const std::string& host, int port, const WsConnectOptions& options);

    // Not connected: fd() is -1, send_*() throw, receive() returns closed. Moved-from clients are in this state too.
    WsClient() noexcept;
    WsClient(WsClient&&) noexcept;
    WsClient& operator=(WsClient&&) noexcept;
    WsClient(const WsClient&) = delete;
    WsClient& operator=(const WsClient&) = delete;
    // Closes the socket without a close handshake, as a crashed client would; call close() for a clean one.
    ~WsClient();

    bool is_open() const noexcept;
    int fd() const noexcept;

    // The headers of the server's 101 answer, and one of them by case-insensitive name.
    const HeaderFields& response_headers() const;
    std::optional<std::string> response_header(std::string_view name) const;

    // Each sends one complete masked frame with a fresh random mask key, blocking until it is written (at most
    // WsConnectOptions::send_timeout). std::runtime_error if not connected, on a socket error or on timeout.
    void send_text(std::string_view text);
    void send_binary(std::string_view data);
    void send_ping(std::string_view payload = {});
    void send_pong(std::string_view payload = {});
    // Code 1005 sends a Close frame without payload; the reason is cut at a UTF-8 boundary to fit 125 bytes.
    void send_close(std::uint16_t code = 1000, std::string_view reason = {});
    // Any frame, e.g. fragments (text with fin=false, then continuation frames). std::invalid_argument for an
    // opcode > 15 or a control frame (opcode >= 8) that is fragmented or longer than 125 bytes: use send_raw().
    void send_frame(WsOpcode opcode, std::string_view payload, bool fin = true);
    // Exactly these bytes, unmasked and unchecked: malformed frames, a frame split across writes, garbage.
    void send_raw(std::string_view bytes);

    // The next complete message or control event, waiting at most `timeout` (0 only takes what is already there).
    // Pings are answered and skipped while auto-pong is on. The server's Close frame is returned once (and, with
    // auto-close-reply on, answered with a Close carrying the same code); after it, receive() returns closed when
    // the server ends the TCP connection. After an error every call returns that error again.
    WsMessage receive(std::chrono::milliseconds timeout);

    // Clean close: sends Close(code, reason) unless one was sent already, waits up to 2 s for the server's Close
    // (discarding messages that arrive before it) and for the server to end the TCP connection, then closes the
    // socket. Returns the server's Close (type close), or closed / timeout / error if it did not come.
    WsMessage close(std::uint16_t code = 1000, std::string_view reason = {});

    // Answer pings automatically (default true). Off: receive() returns them and the caller may send_pong().
    void set_auto_pong(bool on);
    bool auto_pong() const noexcept;
    // Answer the server's Close with a Close (default true). Off: the caller decides, e.g. to test server timeouts.
    void set_auto_close_reply(bool on);

    // SO_RCVBUF on the connected socket. Prefer WsConnectOptions::receive_buffer: only a value set before connect()
    // also bounds the window the server was offered.
    void set_receive_buffer(int bytes);

    // Approximate bytes held (this object plus its heap), for the load generator's accounting.
    std::size_t memory_usage() const noexcept;

  private:
    struct Impl;
    explicit WsClient(std::unique_ptr<Impl> impl) noexcept;

    std::unique_ptr<Impl> impl_;
};

}  // namespace hydra
