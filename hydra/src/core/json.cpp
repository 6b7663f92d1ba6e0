#include <hydra/json.h>

#include <atomic>

namespace hydra {
namespace {
std::atomic<int> max_depth{64};
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
    if (!json_depth_within(text, json_max_depth())) return Json(Json::value_t::discarded);
    return Json::parse(text, nullptr, false);
}

}  // namespace hydra
