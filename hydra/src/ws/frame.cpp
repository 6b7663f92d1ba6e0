// WebSocket framing: the incremental decoder's state machine and the frame encoders.
#include "ws/frame.h"

#include <algorithm>
#include <cstring>
#include <random>
#include <stdexcept>

namespace hydra::ws {
namespace {

// Message buffers up to this capacity are reused for the next message; larger ones are freed after delivery so that
// a connection that once received a big message does not keep it allocated while idle.
constexpr std::size_t kRetainedCapacity = 256;

bool known_opcode(std::uint8_t op) { return op <= 0x2 || (op >= 0x8 && op <= 0xA); }

void free_string(std::string& s) { std::string().swap(s); }

std::size_t heap_bytes(const std::string& s) {
    static const std::size_t kInline = std::string().capacity();
    return s.capacity() > kInline ? s.capacity() + 1 : 0;
}

// dst[i] = src[i] ^ mask[(pos + i) % 4]. Works on 8-byte words since payloads can be large.
void unmask(std::uint8_t* dst, const std::uint8_t* src, std::size_t n, const MaskKey& mask, std::size_t pos) {
    std::uint8_t m[8];
    for (std::size_t i = 0; i < 8; ++i) m[i] = mask[(pos + i) & 3];
    std::uint64_t m64;
    std::memcpy(&m64, m, sizeof m64);
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        std::uint64_t v;
        std::memcpy(&v, src + i, sizeof v);
        v ^= m64;
        std::memcpy(dst + i, &v, sizeof v);
    }
    for (; i < n; ++i) dst[i] = src[i] ^ m[i & 7];  // m has period 4, and i & 7 keeps the phase
}

std::size_t write_header(std::uint8_t* out, WsOpcode op, std::uint64_t len, bool fin, const MaskKey* mask) {
    out[0] = static_cast<std::uint8_t>((fin ? 0x80 : 0x00) | static_cast<std::uint8_t>(op));
    const std::uint8_t mask_bit = mask ? 0x80 : 0x00;
    std::size_t p;
    if (len < 126) {
        out[1] = static_cast<std::uint8_t>(mask_bit | len);
        p = 2;
    } else if (len <= 0xFFFF) {
        out[1] = mask_bit | 126;
        out[2] = static_cast<std::uint8_t>(len >> 8);
        out[3] = static_cast<std::uint8_t>(len);
        p = 4;
    } else {
        out[1] = mask_bit | 127;
        for (std::size_t i = 0; i < 8; ++i) out[2 + i] = static_cast<std::uint8_t>(len >> (56 - 8 * i));
        p = 10;
    }
    if (mask) {
        std::memcpy(out + p, mask->data(), 4);
        p += 4;
    }
    return p;
}

void check_frame(WsOpcode op, std::uint64_t len, bool fin) {
    if (is_control(op) && (len > kMaxControlPayload || !fin))
        throw std::invalid_argument("websocket control frame must be final and at most 125 bytes");
}

// Appends header and payload (masked when `mask` is given) with one growth of `out`.
void append_encoded(std::string& out, WsOpcode op, std::string_view payload, bool fin, const MaskKey* mask) {
    check_frame(op, payload.size(), fin);
    std::uint8_t header[kMaxFrameHeader];
    const std::size_t hlen = write_header(header, op, payload.size(), fin, mask);
    const std::size_t base = out.size();
    out.resize(base + hlen + payload.size());
    auto* dst = reinterpret_cast<std::uint8_t*>(out.data()) + base;
    std::memcpy(dst, header, hlen);
    const auto* src = reinterpret_cast<const std::uint8_t*>(payload.data());
    if (mask)
        unmask(dst + hlen, src, payload.size(), *mask, 0);
    else if (!payload.empty())
        std::memcpy(dst + hlen, src, payload.size());
}

std::string build_frame(WsOpcode op, std::string_view payload, bool fin, const MaskKey* mask) {
    std::string out;
    append_encoded(out, op, payload, fin, mask);
    return out;
}

}  // namespace

bool is_valid_close_code(std::uint16_t code) {
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
}

// ---- MessageDecoder ----

MessageDecoder::MessageDecoder(std::size_t max_message_size, Role role)
    : max_message_size_(max_message_size), role_(role) {}

void MessageDecoder::feed(const std::uint8_t* data, std::size_t len) {
    if (state_ == State::failed || state_ == State::closed || len == 0) return;
    if (in_len_ == 0) {
        if (from_stash_) input_exhausted();
        in_ = data;
        in_len_ = len;
        return;
    }
    // The previous input was not drained and the caller may reuse its memory: keep the unread rest ourselves.
    const std::uint8_t* rest =
        from_stash_ ? reinterpret_cast<const std::uint8_t*>(stash_.data()) + (stash_.size() - in_len_) : in_;
    std::string joined;
    joined.reserve(in_len_ + len);
    joined.append(reinterpret_cast<const char*>(rest), in_len_);
    joined.append(reinterpret_cast<const char*>(data), len);
    stash_ = std::move(joined);
    from_stash_ = true;
    in_ = reinterpret_cast<const std::uint8_t*>(stash_.data());
    in_len_ = stash_.size();
}

void MessageDecoder::input_exhausted() {
    in_ = nullptr;
    in_len_ = 0;
    if (from_stash_) {
        free_string(stash_);
        from_stash_ = false;
    }
}

void MessageDecoder::release_message() {
    delivered_ = false;
    if (msg_.capacity() > kRetainedCapacity)
        free_string(msg_);
    else
        msg_.clear();
}

std::string MessageDecoder::take_message() {
    if (!delivered_) return {};
    delivered_ = false;
    std::string out;
    out.swap(msg_);
    return out;
}

bool MessageDecoder::fail(Event& event, std::uint16_t code, const char* reason) {
    state_ = State::failed;
    error_code_ = code;
    error_reason_ = reason;
    input_exhausted();
    free_string(msg_);
    in_message_ = false;
    event = Event{Event::Type::error, code, reason};
    return true;
}

bool MessageDecoder::next(Event& event) {
    if (delivered_) release_message();
    // The stash may have moved with the decoder; the unread bytes are always its tail.
    if (from_stash_) in_ = reinterpret_cast<const std::uint8_t*>(stash_.data()) + (stash_.size() - in_len_);

    for (;;) {
        if (state_ == State::failed || state_ == State::closed) {
            input_exhausted();
            return false;
        }

        if (state_ == State::header) {
            if (in_len_ == 0) {
                input_exhausted();
                return false;
            }
            const std::size_t take = std::min<std::size_t>(hdr_need_ - hdr_len_, in_len_);
            std::memcpy(hdr_ + hdr_len_, in_, take);
            hdr_len_ = static_cast<std::uint8_t>(hdr_len_ + take);
            in_ += take;
            in_len_ -= take;
            if (hdr_len_ < hdr_need_) continue;

            if (hdr_need_ == 2) {
                // The first two bytes give everything but the extended length and the mask key: validate now, so
                // that a bad frame is rejected before more of it arrives.
                const std::uint8_t b0 = hdr_[0];
                const std::uint8_t b1 = hdr_[1];
                const std::uint8_t op = b0 & 0x0F;
                const std::uint8_t len7 = b1 & 0x7F;
                frame_fin_ = (b0 & 0x80) != 0;
                frame_masked_ = (b1 & 0x80) != 0;
                if (b0 & 0x70) return fail(event, close_code::protocol_error, "reserved bits set");
                if (!known_opcode(op)) return fail(event, close_code::protocol_error, "unknown opcode");
                frame_op_ = static_cast<WsOpcode>(op);
                if (is_control(frame_op_)) {
                    if (!frame_fin_) return fail(event, close_code::protocol_error, "fragmented control frame");
                    if (len7 > kMaxControlPayload)
                        return fail(event, close_code::protocol_error, "control frame too long");
                } else if (frame_op_ == WsOpcode::continuation) {
                    if (!in_message_) return fail(event, close_code::protocol_error, "unexpected continuation frame");
                } else if (in_message_) {
                    return fail(event, close_code::protocol_error, "expected continuation frame");
                }
                if (role_ == Role::server && !frame_masked_)
                    return fail(event, close_code::protocol_error, "unmasked client frame");
                if (role_ == Role::client && frame_masked_)
                    return fail(event, close_code::protocol_error, "masked server frame");
                hdr_need_ = static_cast<std::uint8_t>(2 +
                                                      (len7 == 126   ? 2
                                                       : len7 == 127 ? 8
                                                                     : 0) +
                                                      (frame_masked_ ? 4 : 0));
                if (hdr_len_ < hdr_need_) continue;
            }

            // Whole header present.
            std::uint64_t len = hdr_[1] & 0x7F;
            std::size_t p = 2;
            if (len == 126) {
                len = (std::uint64_t{hdr_[2]} << 8) | hdr_[3];
                p = 4;
            } else if (len == 127) {
                len = 0;
                for (std::size_t i = 2; i < 10; ++i) len = (len << 8) | hdr_[i];
                p = 10;
                if (len >> 63) return fail(event, close_code::protocol_error, "invalid frame length");
            }
            if (frame_masked_) std::memcpy(mask_.data(), hdr_ + p, 4);
            if (!is_control(frame_op_)) {
                // msg_ only holds the message in progress here (a delivered one was released above).
                if (len > max_message_size_ - msg_.size())
                    return fail(event, close_code::message_too_big, "message too big");
                if (frame_op_ != WsOpcode::continuation) {
                    in_message_ = true;
                    msg_op_ = frame_op_;
                }
            }
            remaining_ = len;
            mask_pos_ = 0;
            ctrl_len_ = 0;
            hdr_len_ = 0;
            hdr_need_ = 2;
            state_ = State::payload;
        }

        // State::payload
        if (remaining_ > 0) {
            if (in_len_ == 0) {
                input_exhausted();
                return false;
            }
            const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(remaining_, in_len_));
            const bool control = is_control(frame_op_);
            std::uint8_t* dst;
            if (control) {
                dst = ctrl_ + ctrl_len_;
                ctrl_len_ = static_cast<std::uint8_t>(ctrl_len_ + n);
            } else {
                const std::size_t old = msg_.size();
                msg_.resize(old + n);  // geometric growth, driven by bytes received rather than the announced length
                dst = reinterpret_cast<std::uint8_t*>(msg_.data()) + old;
            }
            if (frame_masked_)
                unmask(dst, in_, n, mask_, mask_pos_);
            else
                std::memcpy(dst, in_, n);
            mask_pos_ = static_cast<std::uint8_t>((mask_pos_ + n) & 3);
            in_ += n;
            in_len_ -= n;
            remaining_ -= n;
            if (!control && msg_op_ == WsOpcode::text && !utf8_.feed(dst, n))
                return fail(event, close_code::invalid_payload, "invalid UTF-8 in text message");
            if (remaining_ > 0) continue;
        }
        state_ = State::header;
        if (finish_frame(event)) return true;
    }
}

bool MessageDecoder::finish_frame(Event& event) {
    const std::string_view ctrl(reinterpret_cast<const char*>(ctrl_), ctrl_len_);
    switch (frame_op_) {
        case WsOpcode::ping:
            event = Event{Event::Type::ping, 0, ctrl};
            return true;
        case WsOpcode::pong:
            event = Event{Event::Type::pong, 0, ctrl};
            return true;
        case WsOpcode::close: {
            std::uint16_t code = close_code::no_status;
            std::string_view reason;
            if (ctrl_len_ == 1) return fail(event, close_code::protocol_error, "invalid close payload");
            if (ctrl_len_ >= 2) {
                code = static_cast<std::uint16_t>((ctrl_[0] << 8) | ctrl_[1]);
                if (!is_valid_close_code(code)) return fail(event, close_code::protocol_error, "invalid close code");
                reason = ctrl.substr(2);
                if (!is_valid_utf8(reason))
                    return fail(event, close_code::invalid_payload, "invalid UTF-8 in close reason");
            }
            // Nothing may follow a Close: drop the rest of the input and any partial message.
            state_ = State::closed;
            input_exhausted();
            free_string(msg_);
            in_message_ = false;
            event = Event{Event::Type::close, code, reason};
            return true;
        }
        default:
            if (!frame_fin_) return false;
            if (msg_op_ == WsOpcode::text && !utf8_.complete())
                return fail(event, close_code::invalid_payload, "invalid UTF-8 in text message");
            in_message_ = false;
            utf8_.reset();
            delivered_ = true;
            event = Event{msg_op_ == WsOpcode::text ? Event::Type::text : Event::Type::binary, 0, msg_};
            return true;
    }
}

void MessageDecoder::reset() { *this = MessageDecoder(max_message_size_, role_); }

std::size_t MessageDecoder::memory_usage() const { return sizeof(*this) + heap_bytes(msg_) + heap_bytes(stash_); }

// ---- Encoding ----

std::string encode_frame(WsOpcode op, std::string_view payload, bool fin) {
    return build_frame(op, payload, fin, nullptr);
}

std::string encode_text(std::string_view text) { return encode_frame(WsOpcode::text, text); }
std::string encode_binary(std::string_view data) { return encode_frame(WsOpcode::binary, data); }
std::string encode_ping(std::string_view payload) { return encode_frame(WsOpcode::ping, payload); }
std::string encode_pong(std::string_view payload) { return encode_frame(WsOpcode::pong, payload); }

std::string encode_close(std::uint16_t code, std::string_view reason) {
    return encode_frame(WsOpcode::close, close_payload(code, reason));
}

std::string close_payload(std::uint16_t code, std::string_view reason) {
    if (code == close_code::no_status) return {};
    std::string payload{static_cast<char>(code >> 8), static_cast<char>(code & 0xFF)};
    payload.append(reason.substr(0, utf8_truncate_length(reason, kMaxControlPayload - 2)));
    return payload;
}

std::string encode_frame_masked(WsOpcode op, std::string_view payload, const MaskKey& mask, bool fin) {
    return build_frame(op, payload, fin, &mask);
}

void append_frame(std::string& out, WsOpcode op, std::string_view payload, bool fin) {
    append_encoded(out, op, payload, fin, nullptr);
}

void append_frame_masked(std::string& out, WsOpcode op, std::string_view payload, const MaskKey& mask, bool fin) {
    append_encoded(out, op, payload, fin, &mask);
}

MaskKey random_mask_key() {
    // Masks must be unpredictable to intermediaries (RFC 6455 section 10.3); random_device is the OS CSPRNG here.
    thread_local std::random_device rd;
    const std::uint32_t r = rd();
    MaskKey key;
    std::memcpy(key.data(), &r, key.size());
    return key;
}

}  // namespace hydra::ws
