// The API server: Poco HTTPServer on a bounded thread pool; request → Context → middleware → handler → JSON.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <hydra/config.h>
#include <hydra/handler.h>

#include "api/router.h"

namespace Poco {
class ThreadPool;
namespace Net {
class HTTPServer;
class HTTPServerRequest;
class HTTPServerResponse;
}  // namespace Net
}  // namespace Poco

namespace hydra {

class ApiServer {
  public:
    struct Settings {
        std::string address = "127.0.0.1:9090";
        int threads = 16;
        int max_queued = 256;
        std::int64_t max_body = 1 << 20;
        bool keep_alive = true;
        int keep_alive_timeout_ms = 15000;
        int request_timeout_ms = 30000;
        int shutdown_timeout_ms = 10000;
        std::string software = "hydra";

        static Settings from(const Config& config);  // the `api` section
    };

    ApiServer(Settings settings, const Router& router, const std::vector<Middleware>& middleware, Queue* queue,
              Exchange* exchange);
    ~ApiServer();

    // Binds and starts serving. Throws std::runtime_error("api: cannot listen on <addr>: <reason>").
    void start();
    // Stops accepting, closes idle keep-alive connections, waits for in-flight requests (bounded).
    void stop();
    // "host:port" actually bound.
    std::string address() const { return bound_; }

    // One request, start to end. Public for the Poco handler adaptor.
    void handle(Poco::Net::HTTPServerRequest& request, Poco::Net::HTTPServerResponse& response);

  private:
    Settings settings_;
    const Router& router_;
    const std::vector<Middleware>& middleware_;
    Queue* queue_;
    Exchange* exchange_;
    std::unique_ptr<Poco::ThreadPool> pool_;
    std::unique_ptr<Poco::Net::HTTPServer> server_;
    std::string bound_;
};

// "a=1&b=x%20y" → {"a":"1","b":"x y"} merged into `out` (later keys win). Throws Error(400) on bad escapes.
void parse_urlencoded(std::string_view text, Json& out);

}  // namespace hydra
