#include "common/http.h"

#include <algorithm>

namespace hydra::http {
namespace {

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool is_tchar(char c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
    return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

}  // namespace

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (lower(a[i]) != lower(b[i])) return false;
    return true;
}

bool is_token(std::string_view s) {
    if (s.empty()) return false;
    for (char c : s)
        if (!is_tchar(c)) return false;
    return true;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

bool has_token(std::string_view value, std::string_view token) {
    bool found = false;
    for_each_token(value, [&](std::string_view t) { found = found || iequals(t, token); });
    return found;
}

bool any_has_token(const HttpHeaders& headers, std::string_view name, std::string_view token) {
    for (const auto& [n, v] : headers)
        if (iequals(n, name) && has_token(v, token)) return true;
    return false;
}

std::optional<std::string_view> find_header(const HttpHeaders& headers, std::string_view name) {
    for (const auto& [n, v] : headers)
        if (iequals(n, name)) return std::string_view(v);
    return std::nullopt;
}

std::optional<std::string_view> authorization(const HttpHeaders& headers, std::string_view scheme) {
    auto header = find_header(headers, "Authorization");
    if (!header) return std::nullopt;
    std::string_view v = *header;
    if (v.size() <= scheme.size() || !iequals(v.substr(0, scheme.size()), scheme) ||
        (v[scheme.size()] != ' ' && v[scheme.size()] != '\t'))
        return std::nullopt;
    v.remove_prefix(scheme.size());
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
    return v;
}

std::size_t count_headers(const HttpHeaders& headers, std::string_view name) {
    std::size_t n = 0;
    for (const auto& h : headers)
        if (iequals(h.first, name)) ++n;
    return n;
}

void append_header(std::string& out, std::string_view name, std::string_view value) {
    for (char c : name)
        if (c != '\r' && c != '\n') out += c;
    out += ": ";
    for (char c : value)
        if (c != '\r' && c != '\n') out += c;
    out += "\r\n";
}

void append_headers(std::string& out, const HttpHeaders& headers) {
    for (const auto& [n, v] : headers) append_header(out, n, v);
}

Head parse_head(std::string_view bytes, std::size_t max_bytes) {
    Head head;
    const std::size_t end = bytes.substr(0, max_bytes).find("\r\n\r\n");
    if (end == std::string_view::npos) {
        // If max_bytes are already here without the terminator, the block can only end beyond the limit.
        if (bytes.size() >= max_bytes) {
            head.status = ParseStatus::Error;
            head.too_large = true;
            head.error = "request header too large";
        }
        return head;
    }
    head.status = ParseStatus::Error;
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
    head.status = ParseStatus::Ok;
    return head;
}

namespace {

// The line at the start of `bytes` without its CRLF; nullopt while no LF is here. `bad` is set when the line ends in
// a bare LF or holds a CR.
std::optional<std::string_view> crlf_line(std::string_view bytes, bool& bad, std::size_t& length) {
    const std::size_t lf = bytes.find('\n');
    if (lf == std::string_view::npos) return std::nullopt;
    length = lf + 1;
    const std::string_view line = bytes.substr(0, lf);
    bad = line.empty() || line.back() != '\r' || line.substr(0, lf - 1).find('\r') != std::string_view::npos;
    return line.substr(0, line.empty() ? 0 : lf - 1);
}

bool is_field_char(char c) {
    const auto u = static_cast<unsigned char>(c);
    return (u >= 0x20 && u != 0x7F) || c == '\t';
}

}  // namespace

ChunkedDecoder::Result ChunkedDecoder::feed(std::string_view bytes, std::string& body) {
    Result r;
    auto fail = [&](int status, std::string why) {
        phase_ = Phase::failed;
        r.status = ParseStatus::Error;
        r.error_status = status;
        r.error = std::move(why);
        return r;
    };
    for (;;) {
        const std::string_view rest = bytes.substr(r.consumed);
        switch (phase_) {
            case Phase::size: {
                bool bad = false;
                std::size_t length = 0;
                const auto line = crlf_line(rest, bad, length);
                if (!line) {  // (+1: the line's CR may be here already)
                    if (rest.size() > kMaxLine + 1) return fail(400, "malformed chunk size: line too long");
                    return r;
                }
                if (bad) return fail(400, "malformed chunk size: bare CR or LF");
                if (line->size() > kMaxLine) return fail(400, "malformed chunk size: line too long");
                std::size_t digits = 0;
                std::uint64_t size = 0;
                while (digits < line->size() && hex_value((*line)[digits]) >= 0) {
                    if (size >> 60) return fail(400, "malformed chunk size: too large");
                    size = size * 16 + static_cast<std::uint64_t>(hex_value((*line)[digits]));
                    ++digits;
                }
                if (digits == 0 || (digits < line->size() && (*line)[digits] != ';'))
                    return fail(400, "malformed chunk size");
                for (char c : line->substr(digits))
                    if (!is_field_char(c)) return fail(400, "malformed chunk extension");
                r.consumed += length;
                if (size == 0) {
                    phase_ = Phase::trailer;
                } else if (size > max_body_ - total_) {
                    return fail(413, "request body exceeds " + std::to_string(max_body_) + " bytes");
                } else {
                    total_ += size;
                    chunk_left_ = size;
                    phase_ = Phase::data;
                }
                break;
            }
            case Phase::data: {
                const std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(chunk_left_, rest.size()));
                if (take == 0) return r;
                body.append(rest.substr(0, take));
                r.consumed += take;
                chunk_left_ -= take;
                if (chunk_left_ == 0) phase_ = Phase::data_end;
                break;
            }
            case Phase::data_end:
                if (rest.size() < 2) {
                    if (!rest.empty() && rest[0] != '\r')
                        return fail(400, "malformed chunk: missing CRLF after the data");
                    return r;
                }
                if (rest.substr(0, 2) != "\r\n") return fail(400, "malformed chunk: missing CRLF after the data");
                r.consumed += 2;
                phase_ = Phase::size;
                break;
            case Phase::trailer: {
                bool bad = false;
                std::size_t length = 0;
                const auto line = crlf_line(rest, bad, length);
                if (!line) {
                    if (trailer_bytes_ + rest.size() > kMaxTrailer) return fail(431, "trailer fields too large");
                    return r;
                }
                // The size first: fed in pieces, the limit is hit before the line's end is seen.
                trailer_bytes_ += length;
                if (trailer_bytes_ > kMaxTrailer) return fail(431, "trailer fields too large");
                if (bad) return fail(400, "malformed trailer: bare CR or LF");
                r.consumed += length;
                if (line->empty()) {  // the empty line: done
                    phase_ = Phase::done;
                    r.status = ParseStatus::Ok;
                    return r;
                }
                const std::size_t colon = line->find(':');
                if (colon == std::string_view::npos || !is_token(line->substr(0, colon)))
                    return fail(400, "malformed trailer field");
                for (char c : line->substr(colon + 1))
                    if (!is_field_char(c)) return fail(400, "malformed trailer field");
                break;
            }
            case Phase::done:
                r.status = ParseStatus::Ok;
                return r;
            case Phase::failed:
                return fail(400, "malformed chunked body");
        }
    }
}

std::pair<int, int> http_version(std::string_view v) {
    if (v.size() != 8 || v.substr(0, 5) != "HTTP/" || v[6] != '.' || v[5] < '0' || v[5] > '9' || v[7] < '0' ||
        v[7] > '9')
        return {-1, -1};
    return {v[5] - '0', v[7] - '0'};
}

bool percent_decode(std::string_view in, std::string& out, bool plus_as_space) {
    out.clear();
    out.reserve(in.size());
    for (std::size_t i = 0; i < in.size(); ++i) {
        char c = in[i];
        if (c == '%') {
            if (i + 2 >= in.size()) return false;
            const int hi = hex_value(in[i + 1]);
            const int lo = hex_value(in[i + 2]);
            if (hi < 0 || lo < 0) return false;
            out += static_cast<char>(hi * 16 + lo);
            i += 2;
        } else if (c == '+' && plus_as_space) {
            out += ' ';
        } else {
            out += c;
        }
    }
    return true;
}

std::string_view http_status_text(int status) {
    switch (status) {
        case 100:
            return "Continue";
        case 101:
            return "Switching Protocols";
        case 200:
            return "OK";
        case 201:
            return "Created";
        case 202:
            return "Accepted";
        case 204:
            return "No Content";
        case 301:
            return "Moved Permanently";
        case 302:
            return "Found";
        case 304:
            return "Not Modified";
        case 400:
            return "Bad Request";
        case 401:
            return "Unauthorized";
        case 403:
            return "Forbidden";
        case 404:
            return "Not Found";
        case 405:
            return "Method Not Allowed";
        case 408:
            return "Request Timeout";
        case 409:
            return "Conflict";
        case 411:
            return "Length Required";
        case 413:
            return "Content Too Large";
        case 414:
            return "URI Too Long";
        case 415:
            return "Unsupported Media Type";
        case 422:
            return "Unprocessable Content";
        case 426:
            return "Upgrade Required";
        case 429:
            return "Too Many Requests";
        case 431:
            return "Request Header Fields Too Large";
        case 500:
            return "Internal Server Error";
        case 501:
            return "Not Implemented";
        case 502:
            return "Bad Gateway";
        case 503:
            return "Service Unavailable";
        case 504:
            return "Gateway Timeout";
        case 505:
            return "HTTP Version Not Supported";
        default:
            return status >= 200 && status < 300 ? "OK" : "Error";
    }
}

}  // namespace hydra::http
