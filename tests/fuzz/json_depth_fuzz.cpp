// libFuzzer target for hydra::parse_json (hydra/src/core/json.cpp): the depth scan that guards every JSON read from
// outside, and the flat-object fast path in front of the library. Input: byte 0 = the depth limit (1..64), the
// rest = the text. Whatever parse_json returns must be nested no deeper than the limit (checked by a walk that stops
// one level past it) and equal the library's own reading of the text; JSON the scan refuses must indeed be too deep
// or not JSON. Violations abort().
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include "fuzz_check.h"

#include <hydra/json.h>

namespace {

// Depth of a value, counting containers; stops at `cap` + 1 so a wrong answer cannot recurse far.
int depth_of(const hydra::Json& v, int cap) {
    if (!v.is_structured()) return 0;
    if (cap < 0) return 1;
    int deepest = 0;
    for (const auto& child : v) {
        int d = depth_of(child, cap - 1);
        if (d > deepest) deepest = d;
    }
    return deepest + 1;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    const int limit = 1 + data[0] % 64;
    hydra::set_json_max_depth(limit);
    std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
    hydra::Json lenient = hydra::parse_json_or_discarded(text);
    try {
        hydra::Json v = hydra::parse_json(text);
        FUZZ_CHECK(depth_of(v, limit) <= limit);
        FUZZ_CHECK(!lenient.is_discarded() && lenient == v);
        // The fast path reads what the library reads (same members, same values, the last of a repeated name).
        hydra::Json library = hydra::Json::parse(text, nullptr, false);
        FUZZ_CHECK(!library.is_discarded() && library == v);
    } catch (const hydra::JsonTooDeep&) {
        FUZZ_CHECK(lenient.is_discarded());
        // Refused for depth: the text, if it is JSON at all, really is deeper than the limit.
        hydra::Json full = hydra::Json::parse(text, nullptr, false);
        FUZZ_CHECK(full.is_discarded() || depth_of(full, limit) > limit);
    } catch (const hydra::Json::parse_error&) {
        FUZZ_CHECK(lenient.is_discarded());
    }
    return 0;
}
