#include "http/message.h"

namespace hydra::http {
namespace {

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool is_tchar(char c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
    return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

}  // namespace

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (lower(a[i]) != lower(b[i])) return false;
    return true;
}

std::string to_lower(std::string_view s) {
    std::string out(s);
    for (char& c : out) c = lower(c);
    return out;
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

bool any_has_token(const HeaderFields& headers, std::string_view name, std::string_view token) {
    for (const auto& [n, v] : headers)
        if (iequals(n, name) && has_token(v, token)) return true;
    return false;
}

std::optional<std::string_view> find_header(const HeaderFields& headers, std::string_view name) {
    for (const auto& [n, v] : headers)
        if (iequals(n, name)) return std::string_view(v);
    return std::nullopt;
}

std::optional<std::string_view> authorization(const HeaderFields& headers, std::string_view scheme) {
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

std::size_t count_headers(const HeaderFields& headers, std::string_view name) {
    std::size_t n = 0;
    for (const auto& h : headers)
        if (iequals(h.first, name)) ++n;
    return n;
}

namespace {
// `s` without CR and LF (a header line ends at them).
void append_line_safe(std::string& out, std::string_view s) {
    std::size_t from = 0;
    for (std::size_t i = 0; i < s.size(); ++i)
        if (s[i] == '\r' || s[i] == '\n') {
            out.append(s.substr(from, i - from));
            from = i + 1;
        }
    out.append(s.substr(from));
}
}  // namespace

void append_header(std::string& out, std::string_view name, std::string_view value) {
    append_line_safe(out, name);
    out += ": ";
    append_line_safe(out, value);
    out += "\r\n";
}

void append_headers(std::string& out, const HeaderFields& headers) {
    for (const auto& [n, v] : headers) append_header(out, n, v);
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
