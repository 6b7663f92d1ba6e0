#include "http/head.h"

namespace hydra::http {

Head parse_head(std::string_view bytes, std::size_t max_bytes) {
    Head head;
    const std::size_t end = bytes.substr(0, max_bytes).find("\r\n\r\n");
    if (end == std::string_view::npos) {
        // If max_bytes are already here without the terminator, the block can only end beyond the limit.
        if (bytes.size() >= max_bytes) {
            head.status = ParseStatus::error;
            head.too_large = true;
            head.error = "request header too large";
        }
        return head;
    }
    head.status = ParseStatus::error;
    head.consumed = end + 4;
    std::string_view block = bytes.substr(0, end + 2);  // every line, each ending in CRLF

    const std::size_t first_eol = block.find("\r\n");
    head.start_line = block.substr(0, first_eol);
    block.remove_prefix(first_eol + 2);
    if (head.start_line.empty()) {
        head.error = "empty start line";
        return head;
    }
    while (!block.empty()) {
        const std::size_t eol = block.find("\r\n");
        const std::string_view line = block.substr(0, eol);
        block.remove_prefix(eol + 2);
        if (line.front() == ' ' || line.front() == '\t') {
            head.error = "obsolete header line folding";
            return head;
        }
        const std::size_t colon = line.find(':');
        if (colon == std::string_view::npos || !is_token(line.substr(0, colon))) {
            head.error = "malformed header line";
            return head;
        }
        const std::string_view value = trim(line.substr(colon + 1));
        for (char c : value) {
            // Bare CR/LF or NUL inside a field are how request smuggling starts; HTAB and obs-text are allowed.
            const auto u = static_cast<unsigned char>(c);
            if ((u < 0x20 && c != '\t') || u == 0x7F) {
                head.error = "invalid character in header value";
                return head;
            }
        }
        head.headers.emplace_back(std::string(line.substr(0, colon)), std::string(value));
    }
    for (char c : head.start_line) {
        const auto u = static_cast<unsigned char>(c);
        if (u < 0x20 || u == 0x7F) {
            head.error = "invalid character in start line";
            return head;
        }
    }
    head.status = ParseStatus::ok;
    return head;
}

std::pair<int, int> http_version(std::string_view v) {
    if (v.size() != 8 || v.substr(0, 5) != "HTTP/" || v[6] != '.' || v[5] < '0' || v[5] > '9' || v[7] < '0' ||
        v[7] > '9')
        return {-1, -1};
    return {v[5] - '0', v[7] - '0'};
}

}  // namespace hydra::http
