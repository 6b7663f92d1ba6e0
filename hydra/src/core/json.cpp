#include <hydra/json.h>

#include <atomic>

namespace hydra {
namespace {
std::atomic<int> max_depth{64};

bool json_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// A string of printable ASCII without escapes, from text[i] (its opening quote) on; i ends past the closing quote.
bool plain_string(std::string_view text, std::size_t& i, std::string_view& out) {
    if (i >= text.size() || text[i] != '"') return false;
    const std::size_t start = ++i;
    for (; i < text.size(); ++i) {
        const char c = text[i];
        if (c == '"') {
            out = text.substr(start, i - start);
            ++i;
            return true;
        }
        if (c < 0x20 || c >= 0x7f || c == '\\') return false;
    }
    return false;
}

// The common message, read without the library's lexer (which copies strings one character at a time, about half
// of a small message's cost): one object of plain strings, {"uuid":"c1","msg":"hi"}. Anything else (numbers,
// nesting, escapes, non-ASCII) returns false and goes to the library. A repeated name keeps its last value, as the
// library does; the fuzz target json_depth checks that both read the same.
bool parse_flat_object(std::string_view text, Json& out) {
    std::size_t i = 0;
    const std::size_t n = text.size();
    auto skip_space = [&] {
        while (i < n && json_space(text[i])) ++i;
    };
    skip_space();
    if (i >= n || text[i] != '{') return false;
    ++i;
    skip_space();
    Json object = Json::object();
    auto& members = object.get_ref<Json::object_t&>();
    if (i < n && text[i] == '}') {
        ++i;
    } else {
        for (;;) {
            std::string_view name, value;
            if (!plain_string(text, i, name)) return false;
            skip_space();
            if (i >= n || text[i] != ':') return false;
            ++i;
            skip_space();
            if (!plain_string(text, i, value)) return false;
            skip_space();
            members.insert_or_assign(std::string(name), Json(std::string(value)));
            if (i < n && text[i] == ',') {
                ++i;
                skip_space();
                continue;
            }
            if (i < n && text[i] == '}') {
                ++i;
                break;
            }
            return false;
        }
    }
    skip_space();
    if (i != n) return false;
    out = std::move(object);
    return true;
}
}  // namespace

int json_max_depth() { return max_depth.load(std::memory_order_relaxed); }
void set_json_max_depth(int depth) { max_depth.store(depth, std::memory_order_relaxed); }

bool json_depth_within(std::string_view text, int max_depth) {
    int depth = 0;
    const std::size_t n = text.size();
    for (std::size_t i = 0; i < n; ++i) {
        switch (text[i]) {
            case '"':  // skip the string: brackets inside it do not nest
                for (++i; i < n && text[i] != '"'; ++i)
                    if (text[i] == '\\') ++i;
                break;
            case '[':
            case '{':
                if (++depth > max_depth) return false;
                break;
            case ']':
            case '}':
                --depth;
                break;
            case '\0':  // nlohmann's parser ends the input here too
                return true;
            default:
                break;
        }
    }
    return true;
}

JsonTooDeep::JsonTooDeep()
    : std::runtime_error("JSON nested deeper than " + std::to_string(json_max_depth()) + " levels") {}

Json parse_json(std::string_view text) {
    if (Json flat; parse_flat_object(text, flat)) return flat;
    if (!json_depth_within(text, json_max_depth())) throw JsonTooDeep();
    try {
        return Json::parse(text);
    } catch (const Json::out_of_range& e) {
        // A number out of range ("1e999") is nlohmann's out_of_range, not a parse_error: callers handle one kind.
        std::string what = e.what();
        if (auto pos = what.find("] "); pos != std::string::npos) what.erase(0, pos + 2);
        throw Json::parse_error::create(101, 0, what, nullptr);
    }
}

Json parse_json_or_discarded(std::string_view text) {
    if (Json flat; parse_flat_object(text, flat)) return flat;
    if (!json_depth_within(text, json_max_depth())) return Json(Json::value_t::discarded);
    return Json::parse(text, nullptr, false);
}

}  // namespace hydra
