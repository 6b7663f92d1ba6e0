// The hash of string-keyed tables looked up by std::string_view (no std::string built for a lookup).
#pragma once

#include <cstddef>
#include <functional>
#include <string_view>

namespace hydra {

// Use with std::equal_to<> for heterogeneous lookup. Not noexcept on purpose: libstdc++ then keeps each entry's hash
// in its node, and a lookup no longer hashes the keys of the nodes it walks past (each a cache miss in a large
// table).
struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view key) const { return std::hash<std::string_view>{}(key); }
};

}  // namespace hydra
