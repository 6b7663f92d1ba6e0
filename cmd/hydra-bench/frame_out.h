// Client -> server frames appended straight into a connection's output buffer: the same bytes as
// hydra::ws::encode_frame_masked(), without a temporary string, and with a cheap per-thread mask key (xorshift)
// instead of random_device: the load generator is not a browser and the servers do not care how keys are chosen.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "ws/frame.h"

namespace bench {

inline void append_masked_frame(std::string& out, hydra::ws::Opcode op, std::string_view payload,
                                std::uint32_t mask_word) {
    std::uint8_t header[hydra::ws::kMaxFrameHeader];
    std::size_t n = 0;
    header[n++] = static_cast<std::uint8_t>(0x80 | static_cast<std::uint8_t>(op));
    const std::uint64_t len = payload.size();
    if (len < 126) {
        header[n++] = static_cast<std::uint8_t>(0x80 | len);
    } else if (len <= 0xFFFF) {
        header[n++] = 0x80 | 126;
        header[n++] = static_cast<std::uint8_t>(len >> 8);
        header[n++] = static_cast<std::uint8_t>(len);
    } else {
        header[n++] = 0x80 | 127;
        for (int shift = 56; shift >= 0; shift -= 8) header[n++] = static_cast<std::uint8_t>(len >> shift);
    }
    std::uint8_t mask[4];
    std::memcpy(mask, &mask_word, 4);
    std::memcpy(header + n, mask, 4);
    n += 4;
    out.append(reinterpret_cast<const char*>(header), n);
    const std::size_t base = out.size();
    out.resize(base + payload.size());
    for (std::size_t i = 0; i < payload.size(); ++i)
        out[base + i] = static_cast<char>(static_cast<std::uint8_t>(payload[i]) ^ mask[i & 3]);
}

}  // namespace bench
