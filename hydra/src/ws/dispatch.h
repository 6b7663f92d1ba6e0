// hydra's WebSocket protocol on "/": a message is a JSON object whose "service" field names the handler
// ({"service":"/member/login","uname":...}); its reply, and every push, is an envelope. Raw endpoints get their
// messages as they are. The hand-off of a message to its handler and the reply back are in dispatch.cpp
// (WsServer::Loop::dispatch, on_handled).
#pragma once

#include <string>
#include <string_view>

#include <hydra/json.h>

namespace hydra::ws {

// hydra's envelope, in the protocol's field order: {"service":<service>,"code":<code>,"<field>":<value>}, field
// "data" for results and pushes, "err" for errors. Invalid UTF-8 in strings is replaced, never thrown.
std::string envelope(std::string_view service, int code, std::string_view field, const Json& value);
// The same around a value serialized already (one JSON value).
std::string envelope_text(std::string_view service, int code, std::string_view field, std::string_view value_json);

}  // namespace hydra::ws
