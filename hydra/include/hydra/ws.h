// WebSocket endpoints: hydra's service routing on "/" and raw endpoints with lifecycle callbacks.
#pragma once

#include <functional>
#include <string>

#include <hydra/context.h>
#include <hydra/result.h>

namespace hydra {

// A raw endpoint ("/chat"): every message of its connections goes to on_message; the events of skynet's
// WebSocket server. All callbacks run on the WS worker pool, never on an I/O loop, and the messages of one
// connection are handled one at a time, in order.
// A reply (here or of a service on "/") goes out before anything that reached its connection while the handler
// ran: what the handler notified, sent or published to its own connection, or what any other thread sent it
// meanwhile, follows the reply in the order it was sent.
struct WsEndpoint {
    // At upgrade, after connection middleware: return an Error to reject with its HTTP status. Optional.
    std::function<Result(Context&)> on_open = {};
    // ctx.body() is the message, ctx.binary() its kind. A returned Json or text is sent back as a text
    // message; an Error as {"code":N,"msg":"..."}; an empty Result sends nothing.
    std::function<Result(Context&)> on_message = {};
    // After the connection is gone (code 1006 when it dropped without a close frame). Optional.
    std::function<void(Context&, int code, const std::string& reason)> on_close = {};
    // A protocol violation, an oversized message, a full send queue, or a failing handler. Optional.
    std::function<void(Context&, const std::string& error)> on_error = {};
    // on_message (and the packet middleware around it) never blocks: run it on the connection's I/O loop instead
    // of a worker, saving two thread hand-offs per message. Only for handlers that do no I/O, no locks held for
    // long, no sleeping: a slow one would delay every connection of its loop.
    bool run_on_loop = false;
};

}  // namespace hydra
