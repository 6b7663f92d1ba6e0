#include "http/target.h"

#include <hydra/error.h>

#include "http/message.h"

namespace hydra::http {

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

void parse_urlencoded(std::string_view text, Json& out) {
    std::size_t i = 0;
    while (i <= text.size()) {
        std::size_t amp = text.find('&', i);
        if (amp == std::string_view::npos) amp = text.size();
        std::string_view pair = text.substr(i, amp - i);
        i = amp + 1;
        if (pair.empty()) continue;
        std::size_t eq = pair.find('=');
        std::string k, v;
        if (!percent_decode(pair.substr(0, eq), k, true) ||
            !percent_decode(eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1), v, true))
            throw Error(400, "malformed url-encoded parameters: bad percent-encoding in \"" + std::string(pair) + "\"");
        if (!k.empty()) out[k] = v;
    }
}

std::string normalize_path(std::string_view path) {
    std::string p(path.empty() ? "/" : path);
    if (p[0] != '/') p.insert(p.begin(), '/');
    while (p.size() > 1 && p.back() == '/') p.pop_back();
    return p;
}

}  // namespace hydra::http
