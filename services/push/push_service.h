// hydra's WS demo (plat mall, system wsserver): log in over WS, send through the API, push from the MQC.
//   WS  /member/login   {"uname","pwd"} → binds the connection to the user, delivers the offline mailbox
//   API POST /msg/send  {"uname"|"uuid","msg"} → queue mall:wsserver:msg
//   MQC /msg/push       → notify the uuid, or every device of the user (mailbox when none is online)
//   API POST /msg/broadcast {"msg"} → every connected client
#pragma once

#include <memory>

#include <hydra/app.h>

#include "services/push/user_store.h"

namespace services::push {

inline constexpr const char* kQueue = "mall:wsserver:msg";

// The `services.push` config section: database path and seeded users.
hydra::Json config_schema();

class Login {
  public:
    explicit Login(std::shared_ptr<UserStore> users) : users_(std::move(users)) {}
    hydra::Result handle(hydra::Context& ctx);

  private:
    std::shared_ptr<UserStore> users_;
};

class Push {
  public:
    explicit Push(std::shared_ptr<UserStore> users) : users_(std::move(users)) {}
    hydra::Result handle(hydra::Context& ctx);

  private:
    std::shared_ptr<UserStore> users_;
};

// POST /msg/send, asynchronous (App::api_async): answered when the push is durable, no thread held meanwhile.
void send(hydra::Context& ctx, hydra::Reply reply);
hydra::Json broadcast(hydra::Context& ctx);

}  // namespace services::push
