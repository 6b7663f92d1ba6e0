// libFuzzer target for the HTTP head parser and its helpers (http/head.h: parse_head, http_version;
// http/target.h: percent_decode; http/message.h: has_token).
//
// Input layout: byte 0 = options (bits 0-1: max head size 64, 512, 4096, 16 KiB), the rest = bytes as read from a
// socket. Checks what the parser promises: an Ok head ends in an empty line within the limit, its start line has no
// control characters, names are tokens, values are trimmed and free of CR/LF/NUL; the same bytes cut anywhere before
// the end are NeedMore. Violations abort().
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include "fuzz_check.h"

#include "http/head.h"
#include "http/target.h"

using namespace hydra::http;

namespace {

bool has_control(std::string_view s, bool allow_tab) {
    for (char c : s) {
        const auto u = static_cast<unsigned char>(c);
        if ((u < 0x20 && !(allow_tab && c == '\t')) || u == 0x7F) return true;
    }
    return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    static constexpr std::size_t kMax[] = {64, 512, 4096, 16384};
    const std::size_t max = kMax[data[0] & 3];
    const std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);

    const Head head = parse_head(bytes, max);
    const std::size_t end = bytes.substr(0, max).find("\r\n\r\n");
    switch (head.status) {
        case ParseStatus::need_more:
            FUZZ_CHECK(end == std::string_view::npos);
            FUZZ_CHECK(bytes.size() < max);
            break;
        case ParseStatus::error:
            FUZZ_CHECK(!head.error.empty());
            if (head.too_large) FUZZ_CHECK(end == std::string_view::npos && bytes.size() >= max);
            break;
        case ParseStatus::ok: {
            FUZZ_CHECK(head.consumed == end + 4);
            FUZZ_CHECK(head.consumed <= max + 3);
            FUZZ_CHECK(!head.start_line.empty() && !has_control(head.start_line, false));
            for (const auto& [name, value] : head.headers) {
                FUZZ_CHECK(is_token(name));
                FUZZ_CHECK(!has_control(value, true));
                FUZZ_CHECK(trim(value) == value);
                FUZZ_CHECK(find_header(head.headers, name).has_value());
                (void)has_token(value, "close");
            }
            // The head alone parses the same; any cut before its end waits for more.
            const Head again = parse_head(bytes.substr(0, head.consumed), max);
            FUZZ_CHECK(again.status == ParseStatus::ok && again.headers == head.headers);
            FUZZ_CHECK(parse_head(bytes.substr(0, head.consumed - 1), max).status == ParseStatus::need_more);
            FUZZ_CHECK(parse_head(bytes.substr(0, head.consumed / 2), max).status == ParseStatus::need_more);

            // The request line's pieces, as the server takes them apart.
            const std::string_view line = head.start_line;
            const std::size_t sp1 = line.find(' ');
            const std::size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
            if (sp2 != std::string_view::npos) {
                const auto [major, minor] = http_version(line.substr(sp2 + 1));
                FUZZ_CHECK((major < 0) == (minor < 0));
                FUZZ_CHECK(major <= 9 && minor <= 9);
                const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
                std::string path;
                if (percent_decode(target, path, false)) FUZZ_CHECK(path.size() <= target.size());
                if (percent_decode(target, path, true)) FUZZ_CHECK(path.size() <= target.size());
            }
            break;
        }
    }
    return 0;
}
