// libFuzzer target for the WebSocket protocol layer (ws/frame.h, ws/handshake.h, ws/utf8.h).
//
// Input layout: byte 0 = options, byte 1 = seed of the chunk sizes, the rest = bytes as read from a socket.
//   options bits 0-1: max message size (0, 125, 1000, 1 MiB)
//   options bits 2-3: largest chunk (1, 7, 64, 4096 bytes)
//   options bit 4:    "lazy" caller that feeds again before draining (exercises the decoder's stash)
//   options bit 5:    also decode the stream in client mode
// The stream is decoded in chunks and all at once, and both runs must produce identical events that obey the
// protocol's invariants; the same bytes also go through the handshake parsers. Violations abort().
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>
#include "fuzz_check.h"

#include "http/target.h"
#include "ws/frame.h"
#include "ws/handshake.h"
#include "ws/utf8.h"

using namespace hydra::ws;
using hydra::WsOpcode;

namespace {

struct Ev {
    Event::Type type;
    std::uint16_t code;
    std::string data;
    bool operator==(const Ev&) const = default;
};

// An independent UTF-8 check that decodes code points, to cross-check Utf8Validator.
bool reference_utf8(std::string_view s) {
    std::size_t i = 0;
    while (i < s.size()) {
        std::uint32_t c = static_cast<std::uint8_t>(s[i]);
        std::size_t len;
        std::uint32_t min;
        if (c < 0x80) {
            ++i;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            len = 2, c &= 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3, c &= 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4, c &= 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (i + len > s.size()) return false;
        for (std::size_t k = 1; k < len; ++k) {
            const auto b = static_cast<std::uint8_t>(s[i + k]);
            if ((b & 0xC0) != 0x80) return false;
            c = (c << 6) | (b & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return false;
        i += len;
    }
    return true;
}

struct Chunker {
    std::uint32_t state;
    std::size_t max_chunk;
    std::size_t next() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        return 1 + state % max_chunk;
    }
};

void check_event(const Event& ev, std::size_t max_message) {
    switch (ev.type) {
        case Event::Type::text:
            FUZZ_CHECK(reference_utf8(ev.data));
            [[fallthrough]];
        case Event::Type::binary:
            FUZZ_CHECK(ev.data.size() <= max_message);
            break;
        case Event::Type::ping:
        case Event::Type::pong:
            FUZZ_CHECK(ev.data.size() <= kMaxControlPayload);
            break;
        case Event::Type::close:
            FUZZ_CHECK(ev.data.size() <= kMaxControlPayload - 2);
            FUZZ_CHECK(reference_utf8(ev.data));
            FUZZ_CHECK((ev.code == close_code::no_status && ev.data.empty()) || (ev.code >= 1000 && ev.code <= 1003) ||
                       (ev.code >= 1007 && ev.code <= 1014) || (ev.code >= 3000 && ev.code <= 4999));
            break;
        case Event::Type::error:
            FUZZ_CHECK(ev.code == close_code::protocol_error || ev.code == close_code::invalid_payload ||
                       ev.code == close_code::message_too_big);
            FUZZ_CHECK(!ev.data.empty());
            break;
    }
}

// Drains the decoder, checking each event and that nothing follows an Error or a Close.
void drain(MessageDecoder& dec, std::vector<Ev>& out) {
    Event ev;
    while (dec.next(ev)) {
        FUZZ_CHECK(out.empty() || (out.back().type != Event::Type::error && out.back().type != Event::Type::close));
        check_event(ev, dec.max_message_size());
        if (ev.type == Event::Type::error) FUZZ_CHECK(dec.failed() && dec.error_code() == ev.code);
        if (ev.type == Event::Type::close) FUZZ_CHECK(dec.closed());
        out.push_back(Ev{ev.type, ev.code, std::string(ev.data)});
    }
}

std::vector<Ev> decode_whole(std::string_view stream, std::size_t max, Role role) {
    MessageDecoder dec(max, role);
    std::vector<Ev> out;
    dec.feed(stream);
    drain(dec, out);
    return out;
}

std::vector<Ev> decode_chunked(std::string_view stream, std::size_t max, Role role, Chunker chunker, bool lazy) {
    MessageDecoder dec(max, role);
    std::vector<Ev> out;
    // Each chunk lives in its own heap buffer that is scribbled over as soon as the decoder's contract allows (drained,
    // or fed again), as a reused socket read buffer would be; ASan catches reads of freed ones.
    std::unique_ptr<char[]> prev;
    std::size_t prev_len = 0;
    std::size_t pos = 0;
    while (pos < stream.size()) {
        const std::size_t n = std::min(chunker.next(), stream.size() - pos);
        auto buf = std::make_unique<char[]>(n);
        std::memcpy(buf.get(), stream.data() + pos, n);
        dec.feed(reinterpret_cast<const std::uint8_t*>(buf.get()), n);
        if (prev) std::memset(prev.get(), 0x5A, prev_len);
        if (lazy) {
            Event ev;
            if (dec.next(ev)) {
                check_event(ev, max);
                out.push_back(Ev{ev.type, ev.code, std::string(ev.data)});
            }
        } else {
            drain(dec, out);
            std::memset(buf.get(), 0x5A, n);
        }
        prev = std::move(buf);
        prev_len = n;
        pos += n;
    }
    drain(dec, out);
    // Once failed or closed, everything is released.
    if (dec.failed() || dec.closed()) FUZZ_CHECK(dec.memory_usage() == sizeof(MessageDecoder));
    return out;
}

void check_round_trip(const std::vector<Ev>& events, std::size_t max) {
    for (const Ev& e : events) {
        if (e.type != Event::Type::text && e.type != Event::Type::binary) continue;
        const WsOpcode op = e.type == Event::Type::text ? WsOpcode::text : WsOpcode::binary;
        const std::vector<Ev> expected = {e};
        FUZZ_CHECK(decode_whole(encode_frame_masked(op, e.data, MaskKey{1, 2, 3, 4}), max, Role::server) == expected);
        FUZZ_CHECK(decode_whole(encode_frame(op, e.data), max, Role::client) == expected);
    }
}

void fuzz_utf8(std::string_view stream, Chunker chunker) {
    Utf8Validator v;
    bool ok = true;
    for (std::size_t pos = 0; pos < stream.size();) {
        const std::size_t n = std::min(chunker.next(), stream.size() - pos);
        ok = v.feed(stream.substr(pos, n)) && ok;
        pos += n;
    }
    FUZZ_CHECK((ok && v.complete()) == reference_utf8(stream));
    FUZZ_CHECK(ok == !v.failed());
    const std::size_t cut = utf8_truncate_length(stream, stream.size() / 2);
    FUZZ_CHECK(cut <= stream.size() / 2);
    if (reference_utf8(stream)) FUZZ_CHECK(reference_utf8(stream.substr(0, cut)));
}

void fuzz_handshake(std::string_view stream) {
    // The API server's head parser and percent-decoding (http/head, http/target) see the same untrusted bytes.
    const hydra::http::Head head = hydra::http::parse_head(stream, 16 * 1024);
    FUZZ_CHECK(head.consumed <= stream.size());
    if (head.status == ParseStatus::ok) FUZZ_CHECK(stream.substr(head.consumed - 4, 4) == "\r\n\r\n");
    std::string decoded;
    if (hydra::http::percent_decode(stream, decoded, true)) FUZZ_CHECK(decoded.size() <= stream.size());

    const UpgradeParse r = parse_upgrade_request(stream);
    FUZZ_CHECK(r.consumed <= stream.size());
    switch (r.status) {
        case ParseStatus::need_more:
            FUZZ_CHECK(stream.size() < kMaxHandshakeBytes);
            FUZZ_CHECK(stream.find("\r\n\r\n") == std::string_view::npos);
            break;
        case ParseStatus::error:
            FUZZ_CHECK(r.http_status == 400 || r.http_status == 405 || r.http_status == 426 || r.http_status == 431 ||
                       r.http_status == 505);
            FUZZ_CHECK(!r.reason.empty());
            FUZZ_CHECK(!http_error_response(r.http_status, r.reason, r.response_headers).empty());
            break;
        case ParseStatus::ok: {
            FUZZ_CHECK(r.consumed >= 4 && r.consumed <= kMaxHandshakeBytes);
            FUZZ_CHECK(stream.substr(r.consumed - 4, 4) == "\r\n\r\n");
            FUZZ_CHECK(r.request.key.size() == 24);
            FUZZ_CHECK(!r.request.path.empty() && r.request.path[0] == '/');
            FUZZ_CHECK(parse_upgrade_request(stream.substr(0, r.consumed - 1)).status == ParseStatus::need_more);
            const std::string accept = accept_key(r.request.key);
            FUZZ_CHECK(accept.size() == 28);
            const std::string response = handshake_response(accept);
            const UpgradeResponse res = parse_upgrade_response(response, r.request.key);
            FUZZ_CHECK(res.status == ParseStatus::ok && res.consumed == response.size());
            break;
        }
    }
    // The client-side parser gets the same bytes, as if a hostile server sent them.
    const UpgradeResponse res = parse_upgrade_response(stream, "dGhlIHNhbXBsZSBub25jZQ==");
    FUZZ_CHECK(res.consumed <= stream.size());
    if (res.status == ParseStatus::ok) FUZZ_CHECK(res.http_status == 101);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) return 0;
    const std::uint8_t options = data[0];
    static constexpr std::size_t kMaxMessage[] = {0, 125, 1000, 1 << 20};
    static constexpr std::size_t kMaxChunk[] = {1, 7, 64, 4096};
    const std::size_t max = kMaxMessage[options & 3];
    const Chunker chunker{0x9E3779B9u ^ (std::uint32_t{data[1]} << 8 | options), kMaxChunk[(options >> 2) & 3]};
    const bool lazy = (options & 0x10) != 0;
    const std::string_view stream(reinterpret_cast<const char*>(data) + 2, size - 2);

    const std::vector<Ev> whole = decode_whole(stream, max, Role::server);
    FUZZ_CHECK(decode_chunked(stream, max, Role::server, chunker, lazy) == whole);
    check_round_trip(whole, max);
    if (options & 0x20) {
        const std::vector<Ev> client = decode_whole(stream, max, Role::client);
        FUZZ_CHECK(decode_chunked(stream, max, Role::client, chunker, lazy) == client);
    }

    fuzz_utf8(stream, chunker);
    fuzz_handshake(stream);
    return 0;
}
