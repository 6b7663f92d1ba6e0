// Unit tests of the I/O-free WebSocket layer: UTF-8 validation, frame decoding/encoding and the opening handshake.
#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "ws/dispatch.h"
#include "ws/frame.h"
#include "ws/handshake.h"
#include "ws/utf8.h"

using namespace hydra::ws;
using hydra::HeaderFields;
using hydra::WsOpcode;

namespace {

using Type = Event::Type;

constexpr MaskKey kRfcMask = {0x37, 0xfa, 0x21, 0x3d};

// An owned copy of an Event, since Event::data only lives until the next call on the decoder.
struct Ev {
    Type type;
    std::uint16_t code;
    std::string data;
    bool operator==(const Ev&) const = default;
};

std::string bytes(std::initializer_list<int> list) {
    std::string s;
    for (int b : list) s += static_cast<char>(b);
    return s;
}

// Feeds `input` in chunks of `chunk` bytes (each from its own buffer, overwritten afterwards to catch dangling
// reads), draining events after each.
std::vector<Ev> decode(MessageDecoder& dec, std::string_view input, std::size_t chunk = std::string::npos) {
    std::vector<Ev> out;
    for (std::size_t pos = 0; pos < input.size(); pos += chunk) {
        std::string buf(input.substr(pos, chunk));
        dec.feed(buf);
        Event ev;
        while (dec.next(ev)) out.push_back(Ev{ev.type, ev.code, std::string(ev.data)});
        buf.assign(buf.size(), '\xAA');
        if (chunk == std::string::npos) break;
    }
    return out;
}

std::vector<Ev> decode_server(std::string_view input, std::size_t chunk = std::string::npos,
                              std::size_t max = 1 << 20) {
    MessageDecoder dec(max, Role::server);
    return decode(dec, input, chunk);
}

std::vector<Ev> decode_client(std::string_view input, std::size_t chunk = std::string::npos,
                              std::size_t max = 1 << 20) {
    MessageDecoder dec(max, Role::client);
    return decode(dec, input, chunk);
}

std::string masked(WsOpcode op, std::string_view payload, bool fin = true) {
    return encode_frame_masked(op, payload, kRfcMask, fin);
}

// Asserts that `input` (from a client) yields exactly one event, an Error with `code`.
void expect_error(std::string_view input, std::uint16_t code, Role role = Role::server, std::size_t max = 1 << 20) {
    MessageDecoder dec(max, role);
    const auto events = decode(dec, input);
    BOOST_REQUIRE_EQUAL(events.size(), 1u);
    BOOST_CHECK(events[0].type == Type::error);
    BOOST_CHECK_EQUAL(events[0].code, code);
    BOOST_CHECK(dec.failed());
    BOOST_CHECK_EQUAL(dec.error_code(), code);
    // The decoder stays failed: a perfectly valid frame afterwards produces nothing.
    BOOST_CHECK(decode(dec, role == Role::server ? masked(WsOpcode::text, "ok") : encode_text("ok")).empty());
    BOOST_CHECK(dec.failed());
}

const std::string kRequest =
    "GET /chat?room=1&x=y HTTP/1.1\r\n"
    "Host: server.example.com\r\n"
    "Upgrade: websocket\r\n"
    "Connection: keep-alive, Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Origin: http://example.com\r\n"
    "Sec-WebSocket-Protocol: chat, superchat\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "\r\n";

// kRequest with the line starting with `name:` replaced by `line` (dropped if empty).
std::string request_with(std::string_view name, std::string_view line) {
    std::string out;
    std::string_view rest = kRequest;
    while (!rest.empty()) {
        const std::size_t eol = rest.find("\r\n") + 2;
        const std::string_view l = rest.substr(0, eol);
        rest.remove_prefix(eol);
        if (l.substr(0, name.size()) == name) {
            if (!line.empty()) (out += line) += "\r\n";
        } else {
            out += l;
        }
    }
    return out;
}

void expect_request_error(const std::string& request, int status, std::string_view reason = {}) {
    const UpgradeParse r = parse_upgrade_request(request);
    BOOST_TEST_CONTEXT(request) {
        BOOST_REQUIRE(r.status == ParseStatus::error);
        BOOST_CHECK_EQUAL(r.http_status, status);
        if (!reason.empty()) BOOST_CHECK_EQUAL(r.reason, reason);
    }
}

}  // namespace

BOOST_AUTO_TEST_SUITE(ws_codec)

// ---- UTF-8 ----

BOOST_AUTO_TEST_CASE(utf8_valid_split_at_every_boundary) {
    const std::vector<std::string> samples = {
        "a\xC3\xA9z",                                                // U+00E9
        "a\xE2\x82\xACz",                                            // U+20AC
        "a\xED\x9F\xBFz",                                            // U+D7FF, just below the surrogates
        "a\xEE\x80\x80z",                                            // U+E000, just above them
        "a\xF0\x9F\x98\x80z",                                        // U+1F600
        "a\xF4\x8F\xBF\xBFz",                                        // U+10FFFF
        "\xC2\x80\xDF\xBF\xE0\xA0\x80\xEF\xBF\xBF\xF0\x90\x80\x80",  // the smallest and largest of each length
    };
    for (const std::string& s : samples) {
        BOOST_TEST_CONTEXT("sample of " << s.size() << " bytes") {
            BOOST_CHECK(is_valid_utf8(s));
            for (std::size_t cut = 0; cut <= s.size(); ++cut) {
                Utf8Validator v;
                BOOST_CHECK(v.feed(std::string_view(s).substr(0, cut)));
                BOOST_CHECK(v.feed(std::string_view(s).substr(cut)));
                BOOST_CHECK(v.complete());
            }
            Utf8Validator v;
            for (char c : s) BOOST_CHECK(v.feed(std::string_view(&c, 1)));
            BOOST_CHECK(v.complete());
        }
    }
}

BOOST_AUTO_TEST_CASE(utf8_incomplete_sequence_is_not_complete) {
    Utf8Validator v;
    BOOST_CHECK(v.feed("ab\xE2\x82"));
    BOOST_CHECK(!v.complete());
    BOOST_CHECK(!v.failed());
    BOOST_CHECK(v.feed("\xAC"));
    BOOST_CHECK(v.complete());
    BOOST_CHECK(!is_valid_utf8("\xF0\x9F\x98"));
}

BOOST_AUTO_TEST_CASE(utf8_invalid_sequences) {
    const std::vector<std::string> invalid = {
        "\xC0\x80",          // overlong NUL
        "\xC1\xBF",          // overlong 2-byte
        "\xE0\x80\x80",      // overlong 3-byte
        "\xE0\x9F\xBF",      // overlong 3-byte (U+07FF)
        "\xF0\x80\x80\x80",  // overlong 4-byte
        "\xF0\x8F\xBF\xBF",  // overlong 4-byte (U+FFFF)
        "\xED\xA0\x80",      // surrogate U+D800
        "\xED\xBF\xBF",      // surrogate U+DFFF
        "\xF4\x90\x80\x80",  // U+110000
        "\xF5\x80\x80\x80",  // lead byte out of range
        "\xFF",
        "\x80",    // stray continuation
        "a\xC3(",  // continuation missing
        "\xE2\x28\xA1",
    };
    for (const std::string& s : invalid) {
        BOOST_TEST_CONTEXT("invalid sample of " << s.size() << " bytes") {
            BOOST_CHECK(!is_valid_utf8(s));
            Utf8Validator v;
            bool ok = true;
            for (char c : s) ok = v.feed(std::string_view(&c, 1)) && ok;
            BOOST_CHECK(!ok);
            BOOST_CHECK(v.failed());
        }
    }
}

BOOST_AUTO_TEST_CASE(utf8_fails_fast) {
    // The first byte that cannot lead to valid UTF-8 fails the chunk holding it, not the end of the stream.
    Utf8Validator v;
    BOOST_CHECK(v.feed("hello \xED"));
    BOOST_CHECK(!v.feed("\xA0"));  // ED A0 can only be a surrogate
    BOOST_CHECK(!v.feed("ok"));    // and stays failed
    v.reset();
    BOOST_CHECK(v.feed("ok"));
    BOOST_CHECK(v.complete());
    Utf8Validator w;
    BOOST_CHECK(!w.feed("\xC0"));  // C0 never starts anything valid
    Utf8Validator x;
    BOOST_CHECK(x.feed("\xF4"));
    BOOST_CHECK(!x.feed("\x90"));
}

BOOST_AUTO_TEST_CASE(utf8_truncation_keeps_characters_whole) {
    const std::string s = "ab\xE2\x82\xAC";  // "ab€"
    BOOST_CHECK_EQUAL(utf8_truncate_length(s, 10), 5u);
    BOOST_CHECK_EQUAL(utf8_truncate_length(s, 5), 5u);
    BOOST_CHECK_EQUAL(utf8_truncate_length(s, 4), 2u);
    BOOST_CHECK_EQUAL(utf8_truncate_length(s, 3), 2u);
    BOOST_CHECK_EQUAL(utf8_truncate_length(s, 2), 2u);
    BOOST_CHECK_EQUAL(utf8_truncate_length(s, 1), 1u);
}

// ---- RFC 6455 section 5.7 examples ----

BOOST_AUTO_TEST_CASE(rfc_single_frame_unmasked_text) {
    const std::string frame = bytes({0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f});
    BOOST_CHECK(decode_client(frame) == (std::vector<Ev>{Ev{Type::text, 0, "Hello"}}));
    BOOST_CHECK_EQUAL(encode_text("Hello"), frame);
    expect_error(frame, close_code::protocol_error, Role::server);  // a client must mask
}

BOOST_AUTO_TEST_CASE(rfc_single_frame_masked_text) {
    const std::string frame = bytes({0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58});
    BOOST_CHECK(decode_server(frame) == (std::vector<Ev>{Ev{Type::text, 0, "Hello"}}));
    BOOST_CHECK_EQUAL(masked(WsOpcode::text, "Hello"), frame);
    expect_error(frame, close_code::protocol_error, Role::client);  // a server must not mask
}

BOOST_AUTO_TEST_CASE(rfc_fragmented_unmasked_text) {
    const std::string frames = bytes({0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f});
    BOOST_CHECK(decode_client(frames) == (std::vector<Ev>{Ev{Type::text, 0, "Hello"}}));
    BOOST_CHECK_EQUAL(encode_frame(WsOpcode::text, "Hel", false) + encode_frame(WsOpcode::continuation, "lo"), frames);
}

BOOST_AUTO_TEST_CASE(rfc_ping_and_masked_pong) {
    const std::string ping = bytes({0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f});
    BOOST_CHECK(decode_client(ping) == (std::vector<Ev>{Ev{Type::ping, 0, "Hello"}}));
    BOOST_CHECK_EQUAL(encode_ping("Hello"), ping);
    const std::string pong = bytes({0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58});
    BOOST_CHECK(decode_server(pong) == (std::vector<Ev>{Ev{Type::pong, 0, "Hello"}}));
    BOOST_CHECK_EQUAL(masked(WsOpcode::pong, "Hello"), pong);
}

BOOST_AUTO_TEST_CASE(rfc_256_byte_and_64k_binary) {
    std::string payload256(256, '\0');
    for (std::size_t i = 0; i < payload256.size(); ++i) payload256[i] = static_cast<char>(i);
    const std::string frame256 = bytes({0x82, 0x7E, 0x01, 0x00}) + payload256;
    BOOST_CHECK_EQUAL(encode_binary(payload256), frame256);
    BOOST_CHECK(decode_client(frame256) == (std::vector<Ev>{Ev{Type::binary, 0, payload256}}));

    std::string payload64k(65536, '\0');
    for (std::size_t i = 0; i < payload64k.size(); ++i) payload64k[i] = static_cast<char>(i * 7);
    const std::string frame64k = bytes({0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0}) + payload64k;
    BOOST_CHECK_EQUAL(encode_binary(payload64k), frame64k);
    BOOST_CHECK(decode_client(frame64k) == (std::vector<Ev>{Ev{Type::binary, 0, payload64k}}));
    // And masked from a client, in odd-sized chunks so unmasking restarts at every mask phase.
    BOOST_CHECK(decode_server(masked(WsOpcode::binary, payload64k), 4093) ==
                (std::vector<Ev>{Ev{Type::binary, 0, payload64k}}));
}

// ---- Streaming ----

BOOST_AUTO_TEST_CASE(chunked_feeding_equals_whole_feeding) {
    std::string big(300, 'x');
    const std::string stream =
        masked(WsOpcode::text, "Hel", false) + masked(WsOpcode::ping, "are you there") +
        masked(WsOpcode::continuation, "lo \xE2\x82", false) + masked(WsOpcode::continuation, "\xAC!") +
        masked(WsOpcode::binary, big) + masked(WsOpcode::text, "") + masked(WsOpcode::pong, "") +
        masked(WsOpcode::binary, std::string(70000, 'b')) + masked(WsOpcode::close, bytes({0x03, 0xE8}) + "bye");
    const std::vector<Ev> expected = {
        {Type::ping, 0, "are you there"},
        {Type::text, 0, "Hello \xE2\x82\xAC!"},
        {Type::binary, 0, big},
        {Type::text, 0, ""},
        {Type::pong, 0, ""},
        {Type::binary, 0, std::string(70000, 'b')},
        {Type::close, 1000, "bye"},
    };
    BOOST_CHECK(decode_server(stream) == expected);
    for (std::size_t chunk : {1, 2, 3, 5, 7, 13, 64, 1000}) {
        BOOST_TEST_CONTEXT("chunk " << chunk) { BOOST_CHECK(decode_server(stream, chunk) == expected); }
    }
}

BOOST_AUTO_TEST_CASE(callback_feed_and_feeding_before_draining) {
    const std::string stream =
        masked(WsOpcode::text, "one") + masked(WsOpcode::text, "two") + masked(WsOpcode::text, "3");
    MessageDecoder dec(1024);
    std::vector<std::string> got;
    dec.feed(reinterpret_cast<const std::uint8_t*>(stream.data()), stream.size(),
             [&](const Event& ev) { got.emplace_back(ev.data); });
    BOOST_CHECK(got == (std::vector<std::string>{"one", "two", "3"}));

    // Take one event, then feed again without draining: the unread rest must be kept.
    MessageDecoder dec2(1024);
    std::string first = stream.substr(0, 12);
    std::string second = stream.substr(12);
    dec2.feed(first);
    Event ev;
    BOOST_REQUIRE(dec2.next(ev));
    BOOST_CHECK_EQUAL(ev.data, "one");
    dec2.feed(second);
    first.assign(first.size(), '\0');        // the caller reuses its buffer
    MessageDecoder moved = std::move(dec2);  // and the decoder may move while holding input
    std::vector<std::string> rest;
    while (moved.next(ev)) rest.emplace_back(ev.data);
    BOOST_CHECK(rest == (std::vector<std::string>{"two", "3"}));
}

BOOST_AUTO_TEST_CASE(take_message_moves_the_buffer) {
    MessageDecoder dec(1 << 20);
    const std::string payload(5000, 'm');
    const std::string frame = masked(WsOpcode::binary, payload);
    dec.feed(frame);
    Event ev;
    BOOST_REQUIRE(dec.next(ev));
    BOOST_CHECK(ev.type == Type::binary);
    const char* data = ev.data.data();
    std::string taken = dec.take_message();
    BOOST_CHECK_EQUAL(taken, payload);
    BOOST_CHECK(taken.data() == data);  // no copy
    BOOST_CHECK(dec.take_message().empty());
    BOOST_CHECK(!dec.next(ev));
}

BOOST_AUTO_TEST_CASE(interleaved_control_frames_between_fragments) {
    const std::string stream = masked(WsOpcode::binary, "ab", false) + masked(WsOpcode::ping, "p1") +
                               masked(WsOpcode::continuation, "cd", false) + masked(WsOpcode::pong, "p2") +
                               masked(WsOpcode::ping, "") + masked(WsOpcode::continuation, "ef");
    const std::vector<Ev> expected = {
        {Type::ping, 0, "p1"}, {Type::pong, 0, "p2"}, {Type::ping, 0, ""}, {Type::binary, 0, "abcdef"}};
    BOOST_CHECK(decode_server(stream) == expected);
    BOOST_CHECK(decode_server(stream, 1) == expected);
}

BOOST_AUTO_TEST_CASE(close_in_the_middle_of_a_message_ends_decoding) {
    MessageDecoder dec(1024);
    const auto events = decode(dec, masked(WsOpcode::text, "partial", false) + masked(WsOpcode::close, "") +
                                        masked(WsOpcode::text, "after close"));
    BOOST_CHECK(events == (std::vector<Ev>{Ev{Type::close, close_code::no_status, ""}}));
    BOOST_CHECK(dec.closed());
    BOOST_CHECK(decode(dec, masked(WsOpcode::text, "more")).empty());
}

BOOST_AUTO_TEST_CASE(idle_memory_is_small_and_big_buffers_are_released) {
    MessageDecoder dec(1 << 20);
    BOOST_CHECK_LT(sizeof(MessageDecoder), 512u);
    BOOST_CHECK_LT(dec.memory_usage(), 512u);
    const std::string payload(200000, 'z');
    const auto events = decode(dec, masked(WsOpcode::binary, payload));
    BOOST_REQUIRE_EQUAL(events.size(), 1u);
    BOOST_CHECK_EQUAL(events[0].data.size(), payload.size());
    BOOST_CHECK_LT(dec.memory_usage(), 1024u);  // decode() drained it, which releases the delivered message

    // Mid-message the buffer holds what arrived, not what the header announced.
    MessageDecoder dec2(1 << 20);
    const std::string frame = masked(WsOpcode::binary, payload);
    decode(dec2, std::string_view(frame).substr(0, 100));
    BOOST_CHECK_LT(dec2.memory_usage(), 1024u);
}

BOOST_AUTO_TEST_CASE(reset_clears_the_error_state) {
    MessageDecoder dec(1024);
    decode(dec, bytes({0x81, 0x00}));  // unmasked
    BOOST_REQUIRE(dec.failed());
    dec.reset();
    BOOST_CHECK(!dec.failed());
    BOOST_CHECK_EQUAL(dec.error_code(), 0);
    BOOST_CHECK(decode(dec, masked(WsOpcode::text, "again")) == (std::vector<Ev>{Ev{Type::text, 0, "again"}}));
}

// ---- Protocol errors ----

BOOST_AUTO_TEST_CASE(error_unmasked_and_masked) {
    expect_error(encode_text("hi"), close_code::protocol_error, Role::server);
    expect_error(masked(WsOpcode::text, "hi"), close_code::protocol_error, Role::client);
    // Detected from the first two bytes, before the rest of the frame arrives.
    expect_error(encode_binary(std::string(1000, 'x')).substr(0, 2), close_code::protocol_error);
}

BOOST_AUTO_TEST_CASE(error_reserved_bits) {
    for (int rsv : {0x40, 0x20, 0x10}) {
        std::string frame = masked(WsOpcode::text, "hi");
        frame[0] = static_cast<char>(frame[0] | rsv);
        BOOST_TEST_CONTEXT("rsv " << rsv) { expect_error(frame, close_code::protocol_error); }
    }
}

BOOST_AUTO_TEST_CASE(error_unknown_opcodes) {
    for (int op : {3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF}) {
        BOOST_TEST_CONTEXT("opcode " << op) {
            expect_error(bytes({0x80 | op, 0x80, 1, 2, 3, 4}), close_code::protocol_error);
        }
    }
}

BOOST_AUTO_TEST_CASE(error_control_frame_rules) {
    expect_error(masked(WsOpcode::ping, "x").replace(0, 1, 1, '\x09'), close_code::protocol_error);  // FIN clear
    expect_error(bytes({0x89, 0xFE, 0x00, 0x7E, 1, 2, 3, 4}), close_code::protocol_error);           // 126 bytes
    expect_error(bytes({0x88, 0xFF, 0, 0, 0, 0, 0, 0, 0, 2, 1, 2, 3, 4}), close_code::protocol_error);
    BOOST_CHECK_THROW(encode_ping(std::string(126, 'p')), std::invalid_argument);
    BOOST_CHECK_THROW(encode_frame(WsOpcode::close, "", false), std::invalid_argument);
    // 125 bytes is fine.
    const std::string p125(125, 'p');
    BOOST_CHECK(decode_server(masked(WsOpcode::ping, p125)) == (std::vector<Ev>{Ev{Type::ping, 0, p125}}));
}

BOOST_AUTO_TEST_CASE(error_fragmentation_rules) {
    expect_error(masked(WsOpcode::continuation, "x"), close_code::protocol_error);
    expect_error(masked(WsOpcode::text, "a", false) + masked(WsOpcode::text, "b"), close_code::protocol_error);
    expect_error(masked(WsOpcode::text, "a", false) + masked(WsOpcode::binary, "b"), close_code::protocol_error);
    // A completed message does not leave a continuation acceptable.
    MessageDecoder dec(1024);
    const auto events = decode(dec, masked(WsOpcode::text, "a") + masked(WsOpcode::continuation, "b"));
    BOOST_REQUIRE_EQUAL(events.size(), 2u);
    BOOST_CHECK(events[0] == (Ev{Type::text, 0, "a"}));
    BOOST_CHECK(events[1].type == Type::error);
    BOOST_CHECK_EQUAL(events[1].code, close_code::protocol_error);
}

BOOST_AUTO_TEST_CASE(error_64bit_length_msb) {
    expect_error(bytes({0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4}), close_code::protocol_error);
}

BOOST_AUTO_TEST_CASE(error_too_big_before_payload) {
    // Only the header is fed: the limit is enforced from the announced length.
    expect_error(bytes({0x82, 0xFE, 0x03, 0xE9, 1, 2, 3, 4}), close_code::message_too_big, Role::server, 1000);
    expect_error(bytes({0x82, 0xFF, 0, 0, 1, 0, 0, 0, 0, 0, 1, 2, 3, 4}), close_code::message_too_big, Role::server,
                 1000);
    // Exactly at the limit is fine.
    const std::string payload(1000, 'x');
    BOOST_CHECK(decode_server(masked(WsOpcode::binary, payload), 1, 1000) ==
                (std::vector<Ev>{Ev{Type::binary, 0, payload}}));
}

BOOST_AUTO_TEST_CASE(error_too_big_across_fragments) {
    const std::string part(400, 'x');
    const std::string three = masked(WsOpcode::binary, part, false) + masked(WsOpcode::continuation, part, false) +
                              masked(WsOpcode::continuation, part);
    expect_error(three, close_code::message_too_big, Role::server, 1000);
    // The third header alone triggers it.
    MessageDecoder dec(1000);
    const std::string upto_third_header = masked(WsOpcode::binary, part, false) +
                                          masked(WsOpcode::continuation, part, false) +
                                          masked(WsOpcode::continuation, part).substr(0, 8);
    const auto events = decode(dec, upto_third_header);
    BOOST_REQUIRE_EQUAL(events.size(), 1u);
    BOOST_CHECK_EQUAL(events[0].code, close_code::message_too_big);
    // Control frames do not count toward the message.
    BOOST_CHECK_EQUAL(
        decode_server(masked(WsOpcode::binary, part, false) + masked(WsOpcode::ping, std::string(125, 'p')) +
                          masked(WsOpcode::continuation, part),
                      std::string::npos, 800)
            .size(),
        2u);
}

BOOST_AUTO_TEST_CASE(error_invalid_utf8_text) {
    expect_error(masked(WsOpcode::text, "\xC0\x80"), close_code::invalid_payload);
    expect_error(masked(WsOpcode::text, "a\xED\xA0\x80"), close_code::invalid_payload);
    expect_error(masked(WsOpcode::text, "\xF4\x90\x80\x80"), close_code::invalid_payload);
    expect_error(masked(WsOpcode::text, "ends mid char \xE2\x82"), close_code::invalid_payload);
    // Binary messages are not checked.
    BOOST_CHECK(decode_server(masked(WsOpcode::binary, "\xC0\x80")) ==
                (std::vector<Ev>{Ev{Type::binary, 0, "\xC0\x80"}}));
}

BOOST_AUTO_TEST_CASE(error_invalid_utf8_fails_fast) {
    // First fragment invalid, message not finished: rejected at once.
    expect_error(masked(WsOpcode::text, "ok \xED\xA0", false), close_code::invalid_payload);
    // Inside a single frame: the first 10 bytes of a 100-byte payload already show the problem.
    const std::string frame = masked(WsOpcode::text, "abc\xC0" + std::string(96, 'x'));
    expect_error(frame.substr(0, 8 + 10), close_code::invalid_payload);
}

BOOST_AUTO_TEST_CASE(utf8_split_across_fragments_at_every_boundary) {
    const std::string text = "a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80z";
    for (std::size_t cut = 0; cut <= text.size(); ++cut) {
        const std::string stream = masked(WsOpcode::text, text.substr(0, cut), false) + masked(WsOpcode::ping, "") +
                                   masked(WsOpcode::continuation, text.substr(cut));
        BOOST_TEST_CONTEXT("cut " << cut) {
            BOOST_CHECK(decode_server(stream) == (std::vector<Ev>{{Type::ping, 0, ""}, {Type::text, 0, text}}));
            BOOST_CHECK(decode_server(stream, 1) == (std::vector<Ev>{{Type::ping, 0, ""}, {Type::text, 0, text}}));
        }
    }
}

BOOST_AUTO_TEST_CASE(close_payload_validation) {
    auto close = [](std::uint16_t code, std::string_view reason = {}) {
        return masked(WsOpcode::close, bytes({code >> 8, code & 0xFF}) + std::string(reason));
    };
    BOOST_CHECK(decode_server(masked(WsOpcode::close, "")) ==
                (std::vector<Ev>{Ev{Type::close, close_code::no_status, ""}}));
    for (std::uint16_t code : {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999}) {
        BOOST_TEST_CONTEXT("code " << code) {
            BOOST_CHECK(decode_server(close(code, "why")) == (std::vector<Ev>{Ev{Type::close, code, "why"}}));
        }
    }
    for (std::uint16_t code : {0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535}) {
        BOOST_TEST_CONTEXT("code " << code) { expect_error(close(code), close_code::protocol_error); }
    }
    expect_error(masked(WsOpcode::close, "\x03"), close_code::protocol_error);  // 1-byte payload
    expect_error(close(1000, "bad \xC0\x80"), close_code::invalid_payload);
    BOOST_CHECK(decode_server(close(1001, "\xE2\x82\xAC")) == (std::vector<Ev>{Ev{Type::close, 1001, "\xE2\x82\xAC"}}));
}

// ---- Encoding ----

BOOST_AUTO_TEST_CASE(encode_round_trips_through_client_decoder) {
    for (std::size_t n : {0, 1, 125, 126, 127, 65535, 65536, 70000}) {
        std::string payload(n, '\0');
        for (std::size_t i = 0; i < n; ++i) payload[i] = static_cast<char>('a' + i % 26);
        BOOST_TEST_CONTEXT("size " << n) {
            BOOST_CHECK(decode_client(encode_text(payload)) == (std::vector<Ev>{Ev{Type::text, 0, payload}}));
            BOOST_CHECK(decode_client(encode_binary(payload), 3) == (std::vector<Ev>{Ev{Type::binary, 0, payload}}));
            BOOST_CHECK(decode_server(encode_frame_masked(WsOpcode::binary, payload, random_mask_key()), 5) ==
                        (std::vector<Ev>{Ev{Type::binary, 0, payload}}));
            // Appending into a buffer writes the same bytes behind what it holds.
            std::string out = "held";
            append_frame(out, WsOpcode::binary, payload);
            BOOST_CHECK(out == "held" + encode_binary(payload));
            out = "held";
            append_frame_masked(out, WsOpcode::binary, payload, kRfcMask);
            BOOST_CHECK(out == "held" + encode_frame_masked(WsOpcode::binary, payload, kRfcMask));
        }
    }
    std::string out;
    BOOST_CHECK_THROW(append_frame_masked(out, WsOpcode::ping, std::string(126, 'p'), kRfcMask), std::invalid_argument);
    BOOST_CHECK(out.empty());
    BOOST_CHECK(decode_client(encode_ping("p") + encode_pong("q") + encode_close(1000, "done")) ==
                (std::vector<Ev>{{Type::ping, 0, "p"}, {Type::pong, 0, "q"}, {Type::close, 1000, "done"}}));
    BOOST_CHECK(
        decode_client(encode_frame(WsOpcode::text, "frag", false) + encode_frame(WsOpcode::continuation, "ment")) ==
        (std::vector<Ev>{Ev{Type::text, 0, "fragment"}}));
}

BOOST_AUTO_TEST_CASE(encode_close_variants) {
    BOOST_CHECK_EQUAL(encode_close(close_code::no_status), bytes({0x88, 0x00}));
    BOOST_CHECK_EQUAL(close_payload(close_code::no_status, "ignored"), "");
    BOOST_CHECK_EQUAL(close_payload(1000, "bye"), bytes({0x03, 0xE8, 'b', 'y', 'e'}));
    BOOST_CHECK_EQUAL(encode_close(1000), bytes({0x88, 0x02, 0x03, 0xE8}));
    BOOST_CHECK_EQUAL(encode_close(close_code::message_too_big, "x"), bytes({0x88, 0x03, 0x03, 0xF1, 'x'}));
    // A reason of 200 bytes of 2-byte characters: cut to 122 bytes (61 characters) to stay at a boundary.
    std::string reason;
    for (int i = 0; i < 100; ++i) reason += "\xC3\xA9";
    const std::string frame = encode_close(close_code::going_away, reason);
    BOOST_CHECK_LE(frame.size(), 2u + 125u);
    const auto events = decode_client(frame);
    BOOST_REQUIRE_EQUAL(events.size(), 1u);
    BOOST_CHECK(events[0].type == Type::close);
    BOOST_CHECK_EQUAL(events[0].code, close_code::going_away);
    BOOST_CHECK_EQUAL(events[0].data, reason.substr(0, 122));
}

BOOST_AUTO_TEST_CASE(random_mask_keys_vary) {
    const MaskKey a = random_mask_key();
    bool differs = false;
    for (int i = 0; i < 8 && !differs; ++i) differs = random_mask_key() != a;
    BOOST_CHECK(differs);
}

// ---- Handshake ----

BOOST_AUTO_TEST_CASE(accept_key_rfc_example) {
    // RFC 6455 section 1.3 (SHA-1 of key + GUID is b37a4f2c c0624f16 90f64606 cf385945 b2bec4ea).
    BOOST_CHECK_EQUAL(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

BOOST_AUTO_TEST_CASE(handshake_parse_success) {
    const UpgradeParse r = parse_upgrade_request(kRequest);
    BOOST_REQUIRE(r.status == ParseStatus::ok);
    BOOST_CHECK_EQUAL(r.consumed, kRequest.size());
    BOOST_CHECK_EQUAL(r.request.method, "GET");
    BOOST_CHECK_EQUAL(r.request.path, "/chat");
    BOOST_CHECK_EQUAL(r.request.query, "room=1&x=y");
    BOOST_CHECK_EQUAL(r.request.key, "dGhlIHNhbXBsZSBub25jZQ==");
    BOOST_CHECK(r.request.protocols == (std::vector<std::string>{"chat", "superchat"}));
    BOOST_REQUIRE(r.request.header("ORIGIN"));
    BOOST_CHECK_EQUAL(*r.request.header("origin"), "http://example.com");
    BOOST_CHECK_EQUAL(*r.request.header("sec-websocket-version"), "13");
    BOOST_CHECK(!r.request.header("Cookie"));
    BOOST_CHECK_EQUAL(r.request.headers.size(), 7u);
}

BOOST_AUTO_TEST_CASE(handshake_bytes_after_header_are_reported) {
    const std::string frame = masked(WsOpcode::text, "early");
    const UpgradeParse r = parse_upgrade_request(kRequest + frame);
    BOOST_REQUIRE(r.status == ParseStatus::ok);
    BOOST_CHECK_EQUAL(r.consumed, kRequest.size());
    BOOST_CHECK(decode_server(std::string_view(kRequest + frame).substr(r.consumed)) ==
                (std::vector<Ev>{Ev{Type::text, 0, "early"}}));
}

BOOST_AUTO_TEST_CASE(handshake_need_more) {
    for (std::size_t n = 0; n < kRequest.size(); ++n) {
        BOOST_TEST_CONTEXT("prefix " << n) {
            const UpgradeParse r = parse_upgrade_request(std::string_view(kRequest).substr(0, n));
            BOOST_CHECK(r.status == ParseStatus::need_more);
            BOOST_CHECK_EQUAL(r.consumed, 0u);
        }
    }
}

BOOST_AUTO_TEST_CASE(handshake_header_too_large) {
    const std::string big = "GET / HTTP/1.1\r\nX-Pad: " + std::string(9000, 'p') + "\r\n";
    expect_request_error(big, 431);
    expect_request_error(big + "\r\n", 431);
    BOOST_CHECK(parse_upgrade_request(big.substr(0, 8000)).status == ParseStatus::need_more);
    // The limit is configurable and counts the whole block including the empty line.
    BOOST_CHECK(parse_upgrade_request(kRequest, kRequest.size()).status == ParseStatus::ok);
    BOOST_CHECK_EQUAL(parse_upgrade_request(kRequest, kRequest.size() - 1).http_status, 431);
}

BOOST_AUTO_TEST_CASE(handshake_errors) {
    std::string post = kRequest;
    post.replace(0, 3, "POST");
    expect_request_error(post, 405);
    BOOST_CHECK(parse_upgrade_request(post).response_headers == (HeaderFields{{"Allow", "GET"}}));

    std::string http10 = kRequest;
    http10.replace(http10.find("HTTP/1.1"), 8, "HTTP/1.0");
    expect_request_error(http10, 400);
    std::string http20 = kRequest;
    http20.replace(http20.find("HTTP/1.1"), 8, "HTTP/2.0");
    expect_request_error(http20, 505);
    expect_request_error("GET /\r\nHost: x\r\n\r\n", 400);
    expect_request_error("GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n", 400);
    expect_request_error("GET chat HTTP/1.1\r\nHost: x\r\n\r\n", 400);

    expect_request_error(request_with("Upgrade:", ""), 400, "missing Upgrade: websocket");
    expect_request_error(request_with("Upgrade:", "Upgrade: h2c"), 400, "missing Upgrade: websocket");
    expect_request_error(request_with("Connection:", "Connection: keep-alive"), 400);
    expect_request_error(request_with("Connection:", ""), 400);

    for (std::string_view version : {"Sec-WebSocket-Version: 8", "Sec-WebSocket-Version: 13, 8", ""}) {
        BOOST_TEST_CONTEXT(version) {
            expect_request_error(request_with("Sec-WebSocket-Version:", version), 426);
            BOOST_CHECK(parse_upgrade_request(request_with("Sec-WebSocket-Version:", version)).response_headers ==
                        (HeaderFields{{"Sec-WebSocket-Version", "13"}}));
        }
    }

    for (std::string_view key : {"", "Sec-WebSocket-Key: abc", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ",
                                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZSE=",  // 17 bytes
                                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j*Q=="}) {
        BOOST_TEST_CONTEXT(key) {
            expect_request_error(request_with("Sec-WebSocket-Key:", key), 400, "invalid Sec-WebSocket-Key");
        }
    }

    expect_request_error(request_with("Host:", ""), 400, "missing Host");
    expect_request_error(request_with("Origin:", "Origin http://x"), 400);          // no colon
    expect_request_error(request_with("Origin:", "Bad Name: x"), 400);              // space in the name
    expect_request_error(request_with("Origin:", "Origin: a\r\n continued"), 400);  // obsolete folding
}

BOOST_AUTO_TEST_CASE(handshake_tokens_are_case_insensitive_lists) {
    const std::string r1 = request_with("Upgrade:", "upgrade: WebSocket");
    BOOST_CHECK(parse_upgrade_request(r1).status == ParseStatus::ok);
    const std::string r2 = request_with("Upgrade:", "Upgrade: foo/1, websocket");
    BOOST_CHECK(parse_upgrade_request(r2).status == ParseStatus::ok);
    const std::string r3 = request_with("Connection:", "CONNECTION: UPGRADE");
    BOOST_CHECK(parse_upgrade_request(r3).status == ParseStatus::ok);
    BOOST_CHECK(has_token("keep-alive,  Upgrade ", "upgrade"));
    BOOST_CHECK(!has_token("upgrades", "upgrade"));
}

BOOST_AUTO_TEST_CASE(handshake_responses) {
    const std::string ok = handshake_response("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", {{"Sec-WebSocket-Protocol", "chat"}});
    BOOST_CHECK_EQUAL(ok,
                      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n\r\n");

    const std::string err =
        http_error_response(426, "Sec-WebSocket-Version must be 13", {{"Sec-WebSocket-Version", "13"}});
    BOOST_CHECK_EQUAL(err.substr(0, err.find("\r\n")), "HTTP/1.1 426 Upgrade Required");
    BOOST_CHECK(err.find("\r\nConnection: close\r\n") != std::string::npos);
    BOOST_CHECK(err.find("\r\nSec-WebSocket-Version: 13\r\n") != std::string::npos);
    const std::string body = err.substr(err.find("\r\n\r\n") + 4);
    BOOST_CHECK_EQUAL(body, "Sec-WebSocket-Version must be 13\n");
    BOOST_CHECK(err.find("Content-Length: " + std::to_string(body.size()) + "\r\n") != std::string::npos);

    // CR/LF in caller-provided headers cannot add lines.
    const std::string injected = http_error_response(400, "x", {{"X-A", "1\r\nSet-Cookie: evil"}});
    BOOST_CHECK(injected.find("\r\nSet-Cookie") == std::string::npos);
    BOOST_CHECK_EQUAL(http_status_text(431), "Request Header Fields Too Large");
}

BOOST_AUTO_TEST_CASE(client_handshake_round_trip) {
    const ClientUpgrade up = make_upgrade_request("example.com:8080", "/ws?token=abc", {{"Origin", "http://me"}});
    BOOST_CHECK_EQUAL(up.key.size(), 24u);
    BOOST_CHECK_NE(make_upgrade_request("h", "/").key, up.key);
    const UpgradeParse req = parse_upgrade_request(up.request);
    BOOST_REQUIRE(req.status == ParseStatus::ok);
    BOOST_CHECK_EQUAL(req.request.key, up.key);
    BOOST_CHECK_EQUAL(req.request.path, "/ws");
    BOOST_CHECK_EQUAL(req.request.query, "token=abc");
    BOOST_CHECK_EQUAL(*req.request.header("Host"), "example.com:8080");
    BOOST_CHECK_EQUAL(*req.request.header("Origin"), "http://me");

    const std::string response = handshake_response(accept_key(req.request.key));
    const std::string frame = encode_text("welcome");
    const UpgradeResponse res = parse_upgrade_response(response + frame, up.key);
    BOOST_REQUIRE(res.status == ParseStatus::ok);
    BOOST_CHECK_EQUAL(res.http_status, 101);
    BOOST_CHECK_EQUAL(res.consumed, response.size());
    BOOST_CHECK(decode_client(std::string_view(response + frame).substr(res.consumed)) ==
                (std::vector<Ev>{Ev{Type::text, 0, "welcome"}}));

    for (std::size_t n = 0; n < response.size(); ++n)
        BOOST_CHECK(parse_upgrade_response(std::string_view(response).substr(0, n), up.key).status ==
                    ParseStatus::need_more);
}

BOOST_AUTO_TEST_CASE(client_handshake_rejects_bad_responses) {
    const std::string key = "dGhlIHNhbXBsZSBub25jZQ==";
    const std::string good = handshake_response(accept_key(key));
    BOOST_CHECK(parse_upgrade_response(good, key).status == ParseStatus::ok);

    const UpgradeResponse wrong_key = parse_upgrade_response(good, "AAAAAAAAAAAAAAAAAAAAAA==");
    BOOST_CHECK(wrong_key.status == ParseStatus::error);
    BOOST_CHECK_EQUAL(wrong_key.error, "invalid Sec-WebSocket-Accept");

    const UpgradeResponse forbidden = parse_upgrade_response(http_error_response(403, "no"), key);
    BOOST_CHECK(forbidden.status == ParseStatus::error);
    BOOST_CHECK_EQUAL(forbidden.http_status, 403);

    std::string no_upgrade = good;
    no_upgrade.replace(no_upgrade.find("Upgrade: websocket"), 18, "Upgrade: h2c");
    BOOST_CHECK_EQUAL(parse_upgrade_response(no_upgrade, key).error, "missing Upgrade: websocket");

    std::string with_ext = good;
    with_ext.insert(with_ext.size() - 2, "Sec-WebSocket-Extensions: permessage-deflate\r\n");
    BOOST_CHECK(parse_upgrade_response(with_ext, key).status == ParseStatus::error);

    BOOST_CHECK(parse_upgrade_response("garbage\r\n\r\n", key).status == ParseStatus::error);
}

// The envelope writes a plain service name as it is and escapes anything else (a client's service name comes back
// in its reply): the result always parses, with the same name.
BOOST_AUTO_TEST_CASE(envelopes_escape_service_names_that_need_it) {
    for (const std::string& service :
         std::vector<std::string>{"notify", "/member/login", "a\"b", "back\\slash", std::string("nul\0ctl\x01", 8),
                                  "caf\xc3\xa9", "tab\there"}) {
        const std::string text = hydra::ws::envelope(service, 200, "data", hydra::Json{{"k", 1}});
        const hydra::Json doc = hydra::Json::parse(text);
        BOOST_CHECK_EQUAL(doc.at("service").get<std::string>(), service);
        BOOST_CHECK_EQUAL(doc.at("code").get<int>(), 200);
        BOOST_CHECK_EQUAL(doc.at("data").at("k").get<int>(), 1);
    }
    BOOST_CHECK_EQUAL(hydra::ws::envelope("notify", 200, "data", hydra::Json{{"msg", "hi"}}),
                      R"({"service":"notify","code":200,"data":{"msg":"hi"}})");
}

BOOST_AUTO_TEST_SUITE_END()
