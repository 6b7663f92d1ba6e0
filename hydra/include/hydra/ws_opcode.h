// WebSocket frame opcodes (RFC 6455 section 5.2): one enum for hydra's frame codec and its WebSocket client.
#pragma once

#include <cstdint>

namespace hydra {

// Any value 0..15 may be sent with WsClient::send_frame(), e.g. static_cast<WsOpcode>(3) to test how a server
// handles a reserved opcode.
enum class WsOpcode : std::uint8_t {
    continuation = 0x0,
    text = 0x1,
    binary = 0x2,
    close = 0x8,
    ping = 0x9,
    pong = 0xA,
};

}  // namespace hydra
