// WebSocket framing (RFC 6455 section 5): an incremental, I/O-free message decoder and the frame encoders.
// Pure functions over bytes, driven by the event loop and usable by tests and fuzzers without sockets.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <hydra/ws_opcode.h>

#include "ws/utf8.h"

namespace hydra::ws {

constexpr bool is_control(WsOpcode op) { return (static_cast<std::uint8_t>(op) & 0x8) != 0; }

// Status codes of Close frames (RFC 6455 section 7.4.1).
namespace close_code {
inline constexpr std::uint16_t normal = 1000;
inline constexpr std::uint16_t going_away = 1001;
inline constexpr std::uint16_t protocol_error = 1002;
inline constexpr std::uint16_t unsupported_data = 1003;
inline constexpr std::uint16_t no_status = 1005;  // reported locally for a Close without payload; never sent
inline constexpr std::uint16_t abnormal = 1006;   // reported locally when the connection dropped; never sent
inline constexpr std::uint16_t invalid_payload = 1007;
inline constexpr std::uint16_t policy_violation = 1008;
inline constexpr std::uint16_t message_too_big = 1009;
inline constexpr std::uint16_t internal_error = 1011;
inline constexpr std::uint16_t try_again_later = 1013;
}  // namespace close_code

// Whether a peer may put `code` in a Close frame: 1000-1003, 1007-1014 (the registered ones) and 3000-4999.
bool is_valid_close_code(std::uint16_t code);

inline constexpr std::size_t kMaxControlPayload = 125;
inline constexpr std::size_t kMaxFrameHeader = 14;  // 2 + 8 (64-bit length) + 4 (mask key)

using MaskKey = std::array<std::uint8_t, 4>;

// Which end of the connection the decoder sits on: a server requires masked frames, a client rejects them.
enum class Role : std::uint8_t { server, client };

// One complete thing received. `data` points into the decoder and stays valid until the next call to next(),
// feed(), take_message() or reset() on that decoder.
struct Event {
    enum class Type : std::uint8_t { text, binary, ping, pong, close, error };

    Type type = Type::error;
    // Close: the peer's status code (close_code::no_status if the frame had no payload).
    // Error: the status code to send in our Close frame before closing the connection.
    std::uint16_t code = 0;
    // Text/Binary: the whole reassembled message (text is valid UTF-8). Ping/Pong: the payload (<= 125 bytes).
    // Close: the reason (valid UTF-8). Error: a short static description, e.g. "unmasked client frame".
    std::string_view data;
};

// Reassembles messages from a byte stream split at arbitrary points, validating as it goes:
//   1002: unmasked frame (server) / masked frame (client), RSV bits set, unknown opcode, fragmented or > 125 byte
//         control frame, continuation without a message, new data frame inside a fragmented message, 64-bit length
//         with the MSB set, invalid Close payload (1 byte or a code not allowed on the wire);
//   1007: invalid UTF-8 in a text message (checked per chunk, so it fails fast) or in a close reason;
//   1009: message larger than max_message_size (checked from each frame header, before the payload is buffered,
//         and cumulatively across fragments).
// Control frames may be interleaved between fragments. The first error is reported once as an Error event; the
// decoder then stays failed and ignores further input. After a Close event further input is ignored too.
//
// Usage: feed(bytes) as they arrive, then call next() until it returns false. The fed bytes are read in place (and
// unmasked straight into the message buffer), so they must stay valid until next() returns false or feed() is called
// again. Or use the callback form of feed().
//
// Memory: ~300 bytes per decoder and no heap allocation while idle; a message buffer grows as payload arrives (never
// from the announced length alone) and is released after delivery unless small.
class MessageDecoder {
  public:
    explicit MessageDecoder(std::size_t max_message_size, Role role = Role::server);

    MessageDecoder(const MessageDecoder&) = delete;
    MessageDecoder& operator=(const MessageDecoder&) = delete;
    MessageDecoder(MessageDecoder&&) = default;
    MessageDecoder& operator=(MessageDecoder&&) = default;

    // Makes `data` the next input. Calling feed() again before next() has drained the previous input is allowed
    // (the unread rest is then copied, after which the previous buffer may be reused), but defeats the zero-copy
    // path.
    void feed(const std::uint8_t* data, std::size_t len);
    void feed(std::string_view data) { feed(reinterpret_cast<const std::uint8_t*>(data.data()), data.size()); }

    // Decodes up to the next complete event. False when the input is exhausted (all of it is buffered as needed),
    // or after an Error / Close event.
    bool next(Event& event);

    // feed() then next() until done, calling on_event(const Event&) for each event.
    template <class OnEvent>
    void feed(const std::uint8_t* data, std::size_t len, OnEvent&& on_event) {
        feed(data, len);
        Event event;
        while (next(event)) on_event(static_cast<const Event&>(event));
    }

    // Right after a Text/Binary event: moves the message buffer out (no copy). Otherwise returns "".
    std::string take_message();

    bool failed() const { return state_ == State::failed; }
    bool closed() const { return state_ == State::closed; }
    // The Error event's code and reason once failed(), else 0 / "".
    std::uint16_t error_code() const { return error_code_; }
    std::string_view error_reason() const { return error_reason_; }

    // Back to the initial state, releasing all buffers (role and limit are kept).
    void reset();

    std::size_t max_message_size() const { return max_message_size_; }
    // sizeof(*this) plus the heap capacity it holds, for accounting and tests.
    std::size_t memory_usage() const;

  private:
    enum class State : std::uint8_t { header, payload, failed, closed };

    bool fail(Event& event, std::uint16_t code, const char* reason);
    // Returns true and fills `event` when the frame just completed produces one.
    bool finish_frame(Event& event);
    void release_message();
    void input_exhausted();

    // Configuration.
    std::size_t max_message_size_;
    Role role_;

    State state_ = State::header;

    // Current input: the caller's bytes, or the tail of stash_ when from_stash_ (in_ is then recomputed on each
    // next() so that moving the decoder is safe).
    const std::uint8_t* in_ = nullptr;
    std::size_t in_len_ = 0;
    bool from_stash_ = false;

    // Current frame. The header is collected here when it arrives split across reads.
    std::uint8_t hdr_[kMaxFrameHeader] = {};
    std::uint8_t hdr_len_ = 0;
    std::uint8_t hdr_need_ = 2;  // 2 until the length/mask layout is known
    WsOpcode frame_op_ = WsOpcode::continuation;
    bool frame_fin_ = false;
    bool frame_masked_ = false;
    std::uint8_t mask_pos_ = 0;  // payload offset modulo 4, for unmasking across reads
    MaskKey mask_{};
    std::uint64_t remaining_ = 0;  // payload bytes of the current frame still to come

    // Current data message.
    bool in_message_ = false;
    bool delivered_ = false;  // msg_ was handed out in the last event; clear it on the next call
    WsOpcode msg_op_ = WsOpcode::text;
    Utf8Validator utf8_;
    std::string msg_;

    // Control frame payload; control frames can arrive in the middle of a fragmented message.
    std::uint8_t ctrl_len_ = 0;
    std::uint8_t ctrl_[kMaxControlPayload] = {};

    std::uint16_t error_code_ = 0;
    const char* error_reason_ = "";

    std::string stash_;  // only used when feed() is called before the previous input was drained
};

// Server -> client frames (unmasked). Control frames must have fin and a payload <= 125 bytes, else
// std::invalid_argument (a caller bug; the decoder never produces such payloads).
std::string encode_frame(WsOpcode op, std::string_view payload, bool fin = true);
std::string encode_text(std::string_view text);
std::string encode_binary(std::string_view data);
// Omits the payload for close_code::no_status; otherwise code + reason, the reason truncated at a UTF-8 character
// boundary to fit the 125-byte limit.
std::string encode_close(std::uint16_t code, std::string_view reason = {});
std::string encode_ping(std::string_view payload = {});
std::string encode_pong(std::string_view payload = {});
// The payload of encode_close(): what a Close frame carries for `code` and `reason`.
std::string close_payload(std::uint16_t code, std::string_view reason = {});

// Client -> server frame, masked with `mask` (RFC 6455 section 5.3).
std::string encode_frame_masked(WsOpcode op, std::string_view payload, const MaskKey& mask, bool fin = true);
// A fresh unpredictable mask key for each client frame.
MaskKey random_mask_key();

// The same frames appended to `out` (a connection's output buffer): no allocation but `out` growing, so a sender
// that queues many frames pays for none of them one by one. Same checks as encode_frame().
void append_frame(std::string& out, WsOpcode op, std::string_view payload, bool fin = true);
void append_frame_masked(std::string& out, WsOpcode op, std::string_view payload, const MaskKey& mask, bool fin = true);

}  // namespace hydra::ws
