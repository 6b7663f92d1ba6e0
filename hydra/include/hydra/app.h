// App: the host. Register handlers by route, then run() the CLI, which starts the API, WS and MQC servers.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <hydra/config.h>
#include <hydra/detail/handlers.h>
#include <hydra/handler.h>
#include <hydra/ws.h>

namespace hydra {

class JwtVerifier;

struct AppOptions {
    std::string plat = "hydra";  // platform name, as in hydra's WithPlatName
    std::string system = "app";  // system name, as in hydra's WithSystemName
    std::string version = HYDRA_VERSION;
};

// Which HTTP listener serves a route: the public API (api.address) or the operator's admin listener
// (admin.address, loopback by default), which holds the endpoints that reach every client.
enum class Listener { api, admin };

// What a request must present before its handler runs (checked before the body is parsed).
//   none:    nothing.
//   api_key: one of auth.api_keys, as `Authorization: apikey <key>` or `X-API-Key: <key>`; else 401. With no keys
//            configured the route is open (a development host). Every admin route requires a key whenever keys are
//            configured, whatever its option says.
//   jwt:     a JSON Web Token that App::jwt() accepts, as `Authorization: Bearer <token>`; else 401 with
//            `WWW-Authenticate: Bearer` and the reason ("missing token", "invalid token: token expired", ...). The
//            handler sees its claims as ctx.claims() and its `sub` as ctx.user(). A host with such a route does not
//            start without auth.jwt.secret or auth.jwt.public_key_file (ConfigError naming the route).
enum class Auth { none, api_key, jwt };

struct ApiOptions {
    // HTTP verbs a callable answers ("GET", "POST", ...); empty = all. Verb methods of objects set their own.
    std::vector<std::string> methods;
    Auth auth = Auth::none;
    Listener listener = Listener::api;
};

struct MqcOptions {
    std::string queue;    // the queue this route consumes, e.g. "mall:wsserver:msg" (or mapped in mqc.routes)
    int concurrency = 1;  // handlers in flight for this route
    // The handler never waits for long (no network call, no blocking Queue::push, no lock held by slow code; a
    // quick local write is fine): it runs on the thread that delivers the message (SQLite: the queue's writer, in
    // the push's transaction turn; Kafka: the poll thread) instead of being handed to a handler thread — one thread
    // switch less per message. Messages that cannot run at once (not due yet, or their order key is busy) still go
    // to the `concurrency` handler threads. A blocking push to the SQLite queue from such a handler fails (it would
    // wait for its own thread); push_async works.
    bool nonblocking = false;
};

class App {
  public:
    explicit App(AppOptions options = {});
    ~App();
    App(const App&) = delete;
    App& operator=(const App&) = delete;

    // An HTTP route: exact ("/msg/send") or with `:name` segments ("/order/:id", merged into params). On the public
    // API listener unless `options.listener` is Listener::admin, e.g.
    //   app.api("/v1/exchange/broadcast", broadcast, {.methods = {"POST"}, .listener = hydra::Listener::admin});
    template <class H>
    App& api(const std::string& route, H&& handler, ApiOptions options = {}) {
        return add_api(route, detail::make_handlers(std::forward<H>(handler)), std::move(options));
    }
    // An HTTP route answered asynchronously: `handler(Context&, Reply)` runs on the I/O loop (it must not block)
    // and `reply(result)` answers from any thread once the work is done, e.g. when a push_async is durable. No
    // handler thread is held meanwhile: the route of choice for handlers that only validate and enqueue. With API
    // middleware (use()), the chain runs on a handler thread as for api(); that thread waits for the reply, so
    // next() returns it.
    App& api_async(const std::string& route, AsyncHandler handler, ApiOptions options = {});
    // Files under `directory` (relative to the working directory) served by the API server at `prefix`
    // ("/demo" → /demo/chat.html); GET and HEAD, no directory listing, nothing outside `directory`.
    App& static_files(const std::string& prefix, const std::string& directory);
    // API middleware, run in registration order around every API handler (of either listener).

    App& use(Middleware middleware);

    // A WS service on the default path "/": a text message {"service":"/member/login", ...params} is routed
    // to `handler`; the reply is {"service":...,"code":200,"data":...} or {"service":...,"code":N,"err":...}.
    template <class H>
    App& ws(const std::string& service, H&& handler) {
        return add_ws_service(service, detail::make_handler(std::forward<H>(handler)));
    }
    // A raw endpoint on its own path (e.g. "/chat").
    App& ws_endpoint(const std::string& path, WsEndpoint endpoint);
    // Connection middleware runs at upgrade (reject with an Error → HTTP status); packet middleware runs
    // around every message (return without calling next() to drop or answer it).
    App& ws_use_connection(Middleware middleware);
    App& ws_use_packet(Middleware middleware);

    // An MQC route: messages of `options.queue` are handed to `handler` (params = the JSON payload's fields).
    // Returning acknowledges; an Error or exception fails the attempt: retried with backoff, then dead-lettered.
    template <class H>
    App& mqc(const std::string& route, H&& handler, MqcOptions options = {}) {
        return add_mqc(route, detail::make_handler(std::forward<H>(handler)), std::move(options));
    }

    // Called by start() after the config is validated and before servers listen: open databases, seed data.
    App& on_start(std::function<void(App&)> hook);
    // Called first by stop(), while every server still runs: stop a service's own threads that use the exchange or
    // the queue (they are gone once stop() returns).
    App& on_stop(std::function<void(App&)> hook);
    // Services declare their config sections here (e.g. "services.message_center") before run().
    ConfigSchema& schema();

    // The command line: run | conf show | conf check | version | --help. Returns the process exit status.
    int run(int argc, char** argv);

    // Starts every enabled server with `config` (throws ConfigError or std::runtime_error, e.g. address in use).
    void start(Config config);
    // Graceful stop: stop accepting, let in-flight requests finish (up to api.shutdown_timeout_ms).
    void stop();
    // The drain `hydra run` does on SIGTERM/SIGINT, then stop(): /readyz answers 503 at once; after
    // shutdown.grace_ms the API and WS listeners stop accepting (the admin listener serves on), WebSocket clients
    // are closed with 1001 spread over ws.drain_ms, in-flight requests and MQC handlers finish (each up to
    // api.shutdown_timeout_ms); all of it within shutdown.timeout_ms.
    void drain();
    // From any thread: a drain in progress skips what is left of its waits (a second signal).
    void hurry();
    bool running() const;
    // Re-reads what may change while running (`hydra run` calls it on SIGHUP): the listeners' TLS certificates.
    // Connections already open keep theirs; a file that does not load is logged and the old certificate stays.
    // Returns false when something could not be re-read.
    bool reload();
    // SIGHUP with the profile read again: `next` is checked like a start's config (an invalid one is logged and
    // changes nothing); then what may change while running is applied at once — log.level, log.format,
    // limits.json_depth, auth.api_keys, auth.jwt.*, ws.allowed_origins, api.rate_limit.*, ws.rate_limit.* — the TLS
    // certificates are re-read (reload()), and one line names the changed keys that take a restart (their running
    // values stay). Returns false when `next` was refused or a certificate could not be re-read.
    bool reload(Config next);

    const AppOptions& options() const;
    const Config& config() const;
    // The bound address "host:port" of the API server after start() (port 0 in config → the real port).
    std::string api_address() const;
    // The bound address of the admin listener after start() ("" when admin.enabled is false).
    std::string admin_address() const;
    // The bound address of the WS server after start().
    std::string ws_address() const;
    Queue* queue() const;        // nullptr when the host has no queue backend
    Exchange* exchange() const;  // nullptr when the host runs no WS server
    // The verifier of `auth.jwt` after start(); nullptr when it configures neither a secret nor a public key.
    const JwtVerifier* jwt() const;

  private:
    App& add_api(const std::string& route, MethodHandlers handlers, ApiOptions options);
    App& add_ws_service(const std::string& service, Handler handler);
    App& add_mqc(const std::string& route, Handler handler, MqcOptions options);

    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace hydra
