// libFuzzer target for the chunked body decoder (http/chunked.h, ChunkedDecoder).
//
// Input layout: byte 0 = options, the rest = bytes as read from a socket after a chunked request's head.
//   options bits 0-1: max body (0, 16, 1000, 1 MiB)
//   options bits 2-4: piece size the bytes are fed in (1, 2, 3, 7, 64, 1000, all)
// The bytes are decoded all at once and in pieces; both runs must agree (status, body, bytes used, error). Then the
// bytes, taken as a body, are chunk-encoded and decoded back. Violations abort().
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include "fuzz_check.h"

#include "http/chunked.h"

using namespace hydra::http;

namespace {

struct Outcome {
    ParseStatus status;
    std::size_t consumed;  // of the whole input
    int error_status;
    std::string error;
    std::string body;
};

// Feeds `bytes` in pieces of `step` (0: all at once), offering unconsumed bytes again, like a connection does.
Outcome decode(std::string_view bytes, std::size_t step, std::size_t max_body) {
    ChunkedDecoder d(max_body);
    Outcome o{ParseStatus::need_more, 0, 0, {}, {}};
    std::string pending;
    std::size_t at = 0;
    do {
        const std::size_t n = step == 0 ? bytes.size() - at : std::min(step, bytes.size() - at);
        pending.append(bytes.substr(at, n));
        at += n;
        const std::size_t before = o.body.size();
        ChunkedDecoder::Result r = d.feed(pending, o.body);
        FUZZ_CHECK(r.consumed <= pending.size());
        FUZZ_CHECK(o.body.size() - before <= r.consumed);
        FUZZ_CHECK(o.body.size() <= max_body);
        pending.erase(0, r.consumed);
        o.status = r.status;
        o.error_status = r.error_status;
        o.error = r.error;
        if (r.status == ParseStatus::error) {
            FUZZ_CHECK(r.error_status == 400 || r.error_status == 413 || r.error_status == 431);
            FUZZ_CHECK(!r.error.empty());
        } else {
            FUZZ_CHECK(r.error_status == 0);
        }
        // A line waiting for its end never grows beyond the limits.
        if (r.status == ParseStatus::need_more)
            FUZZ_CHECK(pending.size() <= ChunkedDecoder::kMaxLine + ChunkedDecoder::kMaxTrailer + 2);
    } while (o.status == ParseStatus::need_more && at < bytes.size());
    o.consumed = at - pending.size();
    return o;
}

std::string encode(std::string_view body, std::size_t piece) {
    static const char* hex = "0123456789abcdef";
    std::string out;
    for (std::size_t at = 0; at < body.size(); at += piece) {
        const std::size_t n = std::min(piece, body.size() - at);
        std::string size;
        for (std::size_t v = n; v > 0; v /= 16) size.insert(size.begin(), hex[v % 16]);
        out += size + (at == 0 ? ";ext=\"x y\"" : "") + "\r\n";
        out.append(body.substr(at, n));
        out += "\r\n";
    }
    return out + "0\r\nTrailer-Field: v\r\n\r\n";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    const std::uint8_t options = data[0];
    static constexpr std::size_t kMaxBody[] = {0, 16, 1000, 1 << 20};
    static constexpr std::size_t kStep[] = {1, 2, 3, 7, 64, 1000, 0, 0};
    const std::size_t max_body = kMaxBody[options & 3];
    const std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);

    const Outcome whole = decode(bytes, 0, max_body);
    const Outcome pieces = decode(bytes, kStep[(options >> 2) & 7], max_body);
    FUZZ_CHECK(whole.status == pieces.status);
    FUZZ_CHECK(whole.error_status == pieces.error_status);
    if (whole.status == ParseStatus::ok) {
        FUZZ_CHECK(whole.body == pieces.body);
        FUZZ_CHECK(whole.consumed == pieces.consumed);
        FUZZ_CHECK(whole.consumed >= 5);  // at least "0\r\n\r\n"
        FUZZ_CHECK(bytes.substr(whole.consumed - 2, 2) == "\r\n");
    }

    // Round trip: any bytes as a body, chunk-encoded, decode to themselves.
    const std::string wire = encode(bytes, 1 + (options >> 5) * 37);
    const Outcome back = decode(wire, kStep[(options >> 2) & 7], 1 << 20);
    FUZZ_CHECK(back.status == ParseStatus::ok);
    FUZZ_CHECK(back.body == bytes);
    FUZZ_CHECK(back.consumed == wire.size());
    return 0;
}
