// HTTP/1.1 message basics shared by the API server, the WebSocket handshake and the clients: header fields and lookups,
// tokens and comma-separated lists, writing header lines, status texts. Pure functions over bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <hydra/header_fields.h>

namespace hydra::http {

// need_more: keep reading (the input ends before the thing parsed does).
enum class ParseStatus : std::uint8_t { need_more, ok, error };

// ASCII case-insensitive equality, as used for header names and tokens.
bool iequals(std::string_view a, std::string_view b);
// ASCII lower case (header names as handlers see them; other bytes unchanged).
std::string to_lower(std::string_view s);
// The value of a hexadecimal digit, -1 for any other character.
int hex_value(char c);
// RFC 9110 token (method, header name).
bool is_token(std::string_view s);
// Without leading and trailing spaces and tabs.
std::string_view trim(std::string_view s);
// Whether a comma-separated header value ("keep-alive, Upgrade") contains `token`, case-insensitively.
bool has_token(std::string_view value, std::string_view token);
// Any header named `name` (fields may be repeated, meaning one comma-joined list) contains `token`.
bool any_has_token(const HeaderFields& headers, std::string_view name, std::string_view token);
// First header named `name` (case-insensitive).
std::optional<std::string_view> find_header(const HeaderFields& headers, std::string_view name);
// The credentials of `Authorization: <scheme> <credentials>` when the scheme is `scheme` (any case; RFC 9110 11.4),
// without the blanks around them; nullopt when there is no such header or another scheme.
std::optional<std::string_view> authorization(const HeaderFields& headers, std::string_view scheme);
std::size_t count_headers(const HeaderFields& headers, std::string_view name);

// Calls f(token) for each non-empty element of a comma-separated list.
template <class F>
void for_each_token(std::string_view value, F&& f) {
    while (true) {
        const std::size_t comma = value.find(',');
        const std::string_view item = trim(value.substr(0, comma));
        if (!item.empty()) f(item);
        if (comma == std::string_view::npos) return;
        value.remove_prefix(comma + 1);
    }
}

// Appends "name: value\r\n", dropping CR/LF so a caller-provided value cannot start a new header line.
void append_header(std::string& out, std::string_view name, std::string_view value);
void append_headers(std::string& out, const HeaderFields& headers);

// The standard reason phrase ("Upgrade Required"), or "Error" / "OK" for codes not listed.
std::string_view http_status_text(int status);

}  // namespace hydra::http
