// One WebSocket connection as its I/O loop sees it: the bytes read and the frames parsed from them, the send queue,
// and the close state machine (written once: every way a connection ends goes through `closing()` then `destroy`).
// Owned by one loop, touched only by that loop's thread.
#pragma once

#include <sys/epoll.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "net/client_limits.h"
#include "net/event_loop.h"
#include "net/io_batch.h"
#include "net/tls.h"
#include "ws/frame.h"
#include "ws/ws_server.h"

namespace hydra::ws {

inline Frame make_frame(std::string bytes) { return std::make_shared<const std::string>(std::move(bytes)); }

// What a connection that reads waits for (EPOLLOUT is added while the socket does not take the send queue).
inline constexpr std::uint32_t kReadEvents = EPOLLIN | EPOLLRDHUP;
// A rate-limit token is this many units: the bucket refills rate_per_s units per millisecond, integer arithmetic.
inline constexpr std::int64_t kTokenUnits = 1000;

struct WsServer::Connection : EventLoop::Handler {
    enum class State : std::uint8_t { handshake, upgrading, open, closing };

    Connection(Loop& l, std::uint64_t i, int f) : loop(l), id(i), fd(f) {}
    void on_events(std::uint32_t events) override;
    void on_failure() noexcept override;

    // --- reading
    void read();        // the socket is readable: handshake bytes, or frames to feed
    void read_later();  // read() again soon (what TLS holds)
    void tls_handshake();
    void feed(const std::uint8_t* data, std::size_t len);
    bool take_token();  // false: the connection is over ws.rate_limit (and is closing)

    // --- sending
    // Queues a frame behind everything queued. False if it was not queued (gone, or the queue overflowed and the
    // connection is closing).
    bool enqueue(Frame frame);
    void enqueue_raw(std::string bytes) { enqueue(make_frame(std::move(bytes))); }
    // False when `bytes` more would overflow the send queue (the connection is then closing).
    bool room_for(std::size_t bytes);
    void enqueue_confirmed(Frame frame, std::function<void(bool written)> written);
    // Reports the frames written so far (true) and those ending after keep_up_to (false: dropped).
    void settle_confirms(std::uint64_t keep_up_to);
    // The gate: frames queued while it is shut wait behind it. It is shut from accept to the 101 (what on_open sends
    // follows the 101), and while a message is on a worker (what reaches the connection meanwhile, from its handler
    // or anywhere else, follows the reply). `open_gate(first)` puts `first` where the gate is, before what waited,
    // and opens it; a close opens it too. Control frames (our pongs and keepalive pings) never wait behind it, and
    // it opens early when what waits reaches half of ws.send_queue_bytes: a slow handler costs its reply its place,
    // never the connection.
    void shut_gate() {
        gate = out.size();
        held = 0;
    }
    void open_gate(Frame first);
    // Queues a ping or pong ahead of what waits behind the gate. False as for enqueue.
    bool enqueue_control(Frame frame);
    // The reply to the message handled on a worker (null: none), at the gate.
    void reply(Frame frame);
    void schedule_flush();
    // Writes what may go (up to the gate) until done or the socket is full.
    void flush();
    // The loop's end of iteration: the first write of every listed connection in one system call. add_to() queues
    // it (false: nothing to queue, or TLS, which writes itself: flush() it), batch_sent() takes its result and
    // flush()es the rest, if any.
    bool add_to(IoBatch& batch);
    void batch_sent(ssize_t result);
    void update_events();

    // --- the close state machine
    // Starts the close handshake from our side (drain, kick, idle, token expiry): our close frame, then we wait
    // for the peer's (bounded by ws.close_timeout). A connection still upgrading is dropped.
    void start_close(std::uint16_t code, const std::string& reason);
    // The peer broke the protocol (or a limit): our close frame with `code`, and nothing more is read.
    void fail(std::uint16_t code, const std::string& reason);
    // The one transition to `closing`: `last` (a close frame, or the HTTP answer refusing an upgrade) is queued
    // unless a close frame was sent already. `peer_done`: nothing more is read (the peer's close frame came, or we
    // stopped listening), so the connection ends once its queue is written; otherwise it waits for the peer's
    // close frame or EOF until the close deadline (the loop's tick enforces it).
    void closing(std::string last, std::uint16_t code, const std::string& reason, bool peer_done);
    // The send queue is over ws.send_queue_bytes: drop what the client has not received and close 1008.
    void overflow();
    void insert_at_gate(Frame frame);  // before what waits behind the gate (which stays as it is)
    int gather(iovec* iov) const;      // what may go now as buffers (up to IoBatch::kMaxIov); 0: nothing
    bool wrote(ssize_t result);        // a write's result (bytes or -errno) accounted; false: stop writing
    void flushed();                    // all that may go is written: the write interest off, a close finished

    Loop& loop;
    std::uint64_t id;
    int fd;
    State state = State::handshake;
    bool writing = false;         // EPOLLOUT registered
    bool reading_paused = false;  // EPOLLIN removed (too many pending messages)
    bool busy = false;            // a message of this connection is on a worker
    bool dirty = false;           // in the loop's flush list
    bool close_sent = false;      // our close frame (or the HTTP answer to an upgrade) is queued: nothing follows
    bool close_received = false;  // the peer's close frame came, or we read no more: ends once the queue is written
    bool unresponsive = false;    // our close frame went unanswered until the close deadline: reset, do not linger
    bool registered = false;      // uuid is in the exchange
    bool echo_bearer = false;     // the client offered the subprotocol "bearer": the 101 selects it
    std::uint16_t close_code = close_code::abnormal;
    std::string close_reason;
    std::int64_t opened_ms = 0;
    std::int64_t last_recv_ms = 0;
    std::int64_t last_ping_ms = 0;
    std::int64_t close_deadline_ms = 0;
    std::int64_t expires_ms = 0;             // ws.auth=jwt: when the token runs out (loop time); 0 = never
    std::uint32_t seq = 0;                   // messages received, for request ids
    std::uint32_t frames_out = 0;            // frames queued to it (the close line's messages_out)
    std::int64_t tokens = 0;                 // rate limit: tokens (in kTokenUnits) left in the bucket
    std::int64_t tokens_ms = 0;              // when the bucket was last refilled
    ClientKey ip;                            // the client's address (Context::peer_address)
    ClientLimits::Client* client = nullptr;  // its count in the server's per-address table (null: none)

    std::unique_ptr<TlsSession> tls;          // null: plain TCP
    std::string in;                           // handshake bytes, released after the upgrade
    std::string accept;                       // Sec-WebSocket-Accept, until the 101 is queued
    std::unique_ptr<MessageDecoder> decoder;  // after the upgrade
    std::vector<Frame> out;                   // whole frames waiting for the socket
    std::size_t out_offset = 0;               // bytes of out[0] already written
    std::size_t out_bytes = 0;                // unwritten bytes in out
    static constexpr std::size_t kGateOpen = SIZE_MAX;
    std::size_t gate = 0;             // out[gate...] wait (see open_gate); kGateOpen: none
    std::size_t held = 0;             // bytes of out[gate...]
    std::uint64_t bytes_written = 0;  // stream position: bytes handed to the socket so far
    struct Confirm {
        std::uint64_t end;  // stream position at which the frame ends
        std::function<void(bool written)> written;
    };
    std::vector<Confirm> confirms;  // frames whose outcome is awaited, in stream order
    struct Pending {
        std::string data;
        bool binary;
    };
    std::vector<Pending> pending;  // messages waiting for the previous one to be handled

    std::string uuid;
    std::string path;
    const WsEndpoint* endpoint = nullptr;  // nullptr on the service path "/"
    std::shared_ptr<const Headers> headers;
    std::shared_ptr<const Json> claims;  // ws.auth=jwt: the token's claims (replaced by a refresh)
};

}  // namespace hydra::ws
