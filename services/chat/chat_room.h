// Chat rooms (connmix quick start) on the raw WS endpoint /chat, one room at a time per connection:
//   {"op":"join","room_id":1002}     → subscribe to channel room:1002 (leaving the previous room)
//   {"op":"send","msg":"Hello"}      → everyone in the room gets {"client_id":"<sender uuid>","msg":"Hello"}
//   {"op":"quit"}                    → leave the room
// Each answers {"status":"success"}, or {"status":"error","msg":"..."} and the connection stays open.
#pragma once

#include <hydra/ws.h>

namespace services::chat {

hydra::Result on_message(hydra::Context& ctx);
hydra::WsEndpoint endpoint();

}  // namespace services::chat
