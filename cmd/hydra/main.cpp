// The `hydra` binary: the demo services, registered by route.
#include <filesystem>
#include <string>

#include <hydra/app.h>

#include "services/admin/exchange_api.h"
#include "services/chat/chat_room.h"
#include "services/message_center/message_center.h"
#include "services/push/push_service.h"
#include "services/schemas.h"
#include "services/system/echo.h"
#include "services/system/whoami.h"

namespace {

// The chat page's files, wherever the host was started from: services/chat/web under the working directory, else
// in the executable's directory or one of its parents (a checkout: build/prod/bin/hydra finds its services/), else
// where the systemd unit's install puts them.
std::string demo_web_root() {
    namespace fs = std::filesystem;
    const fs::path relative = "services/chat/web";
    std::error_code ec;
    if (fs::is_directory(relative, ec)) return relative.string();
    const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
    if (!ec)
        for (fs::path dir = exe.parent_path(); !dir.empty() && dir != dir.root_path(); dir = dir.parent_path())
            if (fs::is_directory(dir / relative, ec)) return (dir / relative).string();
    return "/usr/local/share/hydra/chat-web";
}

}  // namespace

int main(int argc, char** argv) {
    using namespace services;
    hydra::App app{{.plat = "mall", .system = "wsserver"}};
    add_schemas(app.schema());  // services.push, services.message_center

    auto demo = std::make_shared<push::Service>();
    auto center = std::make_shared<message_center::Settings>();
    app.on_start([demo, center](hydra::App& a) {
        demo->start(push::Settings::from(a.config()));
        *center = message_center::settings_from(a.config());
    });
    auto auth = std::make_shared<message_center::Service>(center);
    app.on_stop([demo, auth](hydra::App&) {
        demo->stop();
        auth->stop();  // their threads use the exchange
    });

    // hydra's WS demo: log in over WS, send over HTTP, push from the queue to the user's devices.
    app.ws("/member/login", [demo](hydra::Context& ctx) { return demo->login(ctx); });
    // Sending is a backend's call: it takes an API key whenever auth.api_keys is set.
    app.api_async("/msg/send", [demo](hydra::Context& ctx, hydra::Reply reply) { demo->send(ctx, std::move(reply)); },
                  {.methods = {"POST"}, .auth = hydra::Auth::api_key});
    app.api("/msg/broadcast", push::broadcast, {.methods = {"POST"}, .auth = hydra::Auth::api_key});
    // Pushing only hands frames to connections (or keeps the message in the user's mailbox, a local write): it runs
    // on the thread that delivers the message.
    app.mqc("/msg/push", [demo](hydra::Context& ctx) { return demo->push(ctx); },
            {.queue = push::kQueue, .concurrency = 8, .nonblocking = true});

    // connmix's chat rooms and message center.
    app.ws_endpoint("/chat", chat::endpoint());
    app.static_files("/demo", demo_web_root());  // a chat page for the browser: /demo/
    app.ws_endpoint("/message-center", message_center::endpoint(auth));

    // A client's call with a JSON Web Token: {"user": sub}. A host with it needs auth.jwt (a secret or a key).
    app.api("/auth/whoami", system::whoami, {.methods = {"GET"}, .auth = hydra::Auth::jwt});

    // Operations (/healthz and /readyz are the host's own): echo, and on the admin listener the exchange over HTTP
    // (/v1/mesh/publish, /v1/exchange/notify|notify_user|broadcast).
    admin::register_routes(app);
    app.ws_endpoint("/echo", system::echo_endpoint());

    return app.run(argc, argv);
}
