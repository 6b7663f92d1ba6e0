#include "http/chunked.h"

#include <algorithm>

namespace hydra::http {

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
        r.status = ParseStatus::error;
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
                    r.status = ParseStatus::ok;
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
                r.status = ParseStatus::ok;
                return r;
            case Phase::failed:
                return fail(400, "malformed chunked body");
        }
    }
}

}  // namespace hydra::http
