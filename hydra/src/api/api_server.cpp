#include "api/api_server.h"

#include <Poco/Net/HTTPRequestHandler.h>
#include <Poco/Net/HTTPRequestHandlerFactory.h>
#include <Poco/Net/HTTPServer.h>
#include <Poco/Net/HTTPServerParams.h>
#include <Poco/Net/HTTPServerRequest.h>
#include <Poco/Net/HTTPServerResponse.h>
#include <Poco/Net/NetException.h>
#include <Poco/Net/ServerSocket.h>
#include <Poco/Net/SocketAddress.h>
#include <Poco/ThreadPool.h>
#include <Poco/URI.h>

#include <algorithm>
#include <chrono>
#include <istream>
#include <stdexcept>
#include <thread>

#include "common/request_id.h"

namespace hydra {
namespace {

// The HTTP answer we are building; sent once at the end of handle().
struct Reply {
    int status = 200;
    std::string content_type = "application/json";
    std::string body;
    bool close = false;
};

Reply error_reply(int code, const std::string& msg) {
    Reply r;
    r.status = http_status_for(code);
    r.body = Json{{"code", code}, {"msg", msg}}.dump(-1, ' ', false, Json::error_handler_t::replace);
    return r;
}

Reply reply_from(const Result& result) {
    Reply r;
    switch (result.kind()) {
        case Result::Kind::error:
            return error_reply(result.error_code(), result.text());
        case Result::Kind::json:
            r.body = result.value().dump(-1, ' ', false, Json::error_handler_t::replace);
            break;
        case Result::Kind::text:
            r.content_type = "text/plain; charset=utf-8";
            r.body = result.text();
            break;
        case Result::Kind::binary:
            r.content_type = "application/octet-stream";
            r.body = result.text();
            break;
        case Result::Kind::empty:
            r.status = 204;
            r.content_type.clear();
            break;
    }
    if (result.status()) r.status = *result.status();
    return r;
}

// nlohmann's messages start with "[json.exception.parse_error.101] "; the rest says where it broke.
std::string json_error_text(const std::exception& e) {
    std::string what = e.what();
    if (auto pos = what.find("] "); what.rfind("[json.exception", 0) == 0 && pos != std::string::npos)
        return what.substr(pos + 2);
    return what;
}

bool is_json_content(const std::string& content_type, const std::string& body) {
    if (content_type.find("json") != std::string::npos) return true;
    if (!content_type.empty()) return false;
    auto first = std::find_if(body.begin(), body.end(), [](unsigned char c) { return !std::isspace(c); });
    return first != body.end() && (*first == '{' || *first == '[');
}

bool looks_like_json_object(const std::string& body) {
    auto first = std::find_if(body.begin(), body.end(), [](unsigned char c) { return !std::isspace(c); });
    return first != body.end() && *first == '{';
}

class RequestHandler : public Poco::Net::HTTPRequestHandler {
  public:
    explicit RequestHandler(ApiServer& server) : server_(server) {}
    void handleRequest(Poco::Net::HTTPServerRequest& request, Poco::Net::HTTPServerResponse& response) override {
        server_.handle(request, response);
    }

  private:
    ApiServer& server_;
};

class HandlerFactory : public Poco::Net::HTTPRequestHandlerFactory {
  public:
    explicit HandlerFactory(ApiServer& server) : server_(server) {}
    Poco::Net::HTTPRequestHandler* createRequestHandler(const Poco::Net::HTTPServerRequest&) override {
        return new RequestHandler(server_);
    }

  private:
    ApiServer& server_;
};

// Reads and discards a rejected body (bounded), so closing the socket does not reset the connection before
// the client has read our 413.
void drain(std::istream& in) {
    constexpr std::size_t kDrainLimit = 8 << 20;
    char buf[16384];
    std::size_t total = 0;
    while (in && total < kDrainLimit) {
        in.read(buf, sizeof buf);
        total += static_cast<std::size_t>(in.gcount());
    }
}

// Poco accepts any bytes as a method and any word as a version; we want an HTTP/1.x request line.
bool valid_request_line(const Poco::Net::HTTPServerRequest& request) {
    const std::string& method = request.getMethod();
    if (method.empty() || method.size() > 16) return false;
    for (char c : method)
        if (c < 'A' || c > 'Z') return false;
    const std::string& version = request.getVersion();
    if (version != "HTTP/1.1" && version != "HTTP/1.0") return false;
    const std::string& target = request.getURI();
    return !target.empty() && (target[0] == '/' || target.rfind("http://", 0) == 0 || target == "*");
}

Poco::Net::SocketAddress parse_address(const std::string& address) {
    std::string a = address;
    if (!a.empty() && a[0] == ':') a = "0.0.0.0" + a;
    return Poco::Net::SocketAddress(a);
}

}  // namespace

ApiServer::Settings ApiServer::Settings::from(const Config& config) {
    Settings s;
    s.address = config.str("api.address");
    s.threads = static_cast<int>(config.integer("api.threads"));
    s.max_queued = static_cast<int>(config.integer("api.max_queued"));
    s.max_body = config.integer("api.max_body");
    s.keep_alive = config.boolean("api.keep_alive");
    s.keep_alive_timeout_ms = static_cast<int>(config.integer("api.keep_alive_timeout_ms"));
    s.request_timeout_ms = static_cast<int>(config.integer("api.request_timeout_ms"));
    s.shutdown_timeout_ms = static_cast<int>(config.integer("api.shutdown_timeout_ms"));
    return s;
}

void parse_urlencoded(std::string_view text, Json& out) {
    std::size_t i = 0;
    while (i <= text.size()) {
        std::size_t amp = text.find('&', i);
        if (amp == std::string_view::npos) amp = text.size();
        std::string_view pair = text.substr(i, amp - i);
        i = amp + 1;
        if (pair.empty()) continue;
        std::size_t eq = pair.find('=');
        std::string key(pair.substr(0, eq));
        std::string value(eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1));
        std::replace(key.begin(), key.end(), '+', ' ');
        std::replace(value.begin(), value.end(), '+', ' ');
        std::string k, v;
        try {
            Poco::URI::decode(key, k);
            Poco::URI::decode(value, v);
        } catch (const Poco::Exception& e) {
            throw Error(400, "malformed url-encoded parameters: " + e.message());
        }
        if (!k.empty()) out[k] = v;
    }
}

ApiServer::ApiServer(Settings settings, const Router& router, const std::vector<Middleware>& middleware, Queue* queue,
                     Exchange* exchange)
    : settings_(std::move(settings)), router_(router), middleware_(middleware), queue_(queue), exchange_(exchange) {}

ApiServer::~ApiServer() {
    if (server_) stop();
}

void ApiServer::start() {
    Poco::Net::ServerSocket socket;
    try {
        socket.bind(parse_address(settings_.address), true, false);
        socket.listen(std::max(64, settings_.max_queued));
    } catch (const Poco::Exception& e) {
        throw std::runtime_error("api: cannot listen on " + settings_.address + ": " + e.displayText());
    }
    bound_ = socket.address().toString();

    auto* params = new Poco::Net::HTTPServerParams;  // owned by the server (ref-counted)
    params->setMaxThreads(settings_.threads);
    params->setMaxQueued(settings_.max_queued);
    params->setKeepAlive(settings_.keep_alive);
    params->setKeepAliveTimeout(Poco::Timespan(std::int64_t(settings_.keep_alive_timeout_ms) * 1000));
    params->setTimeout(Poco::Timespan(std::int64_t(settings_.request_timeout_ms) * 1000));
    params->setMaxKeepAliveRequests(0);
    params->setSoftwareVersion(settings_.software);

    pool_ = std::make_unique<Poco::ThreadPool>("api", 2, settings_.threads, 60);
    server_ = std::make_unique<Poco::Net::HTTPServer>(new HandlerFactory(*this), *pool_, socket, params);
    server_->start();
}

void ApiServer::stop() {
    if (!server_) return;
    server_->stopAll(false);  // stop accepting, close idle keep-alive connections, keep in-flight ones
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(settings_.shutdown_timeout_ms);
    while (server_->currentConnections() > 0 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (server_->currentConnections() > 0) {
        Logger().warn("api: " + std::to_string(server_->currentConnections()) +
                      " request(s) still running after the shutdown timeout; abandoning them");
        return;  // leak rather than destroy a pool whose threads still run our code
    }
    pool_->joinAll();
    server_.reset();
    pool_.reset();
}

void ApiServer::handle(Poco::Net::HTTPServerRequest& request, Poco::Net::HTTPServerResponse& response) {
    auto started = std::chrono::steady_clock::now();
    std::string rid = request.get("X-Request-Id", "");
    if (!valid_request_id(rid)) rid = generate_uuid();
    Logger log(rid);
    std::map<std::string, std::string> response_headers;
    Reply reply;
    bool reply_close = false;

    try {
        if (!valid_request_line(request)) {
            reply_close = true;
            throw Error(400, "malformed request line");
        }
        std::string body;
        {
            const Error too_large(413, "request body exceeds " + std::to_string(settings_.max_body) + " bytes");
            std::istream& in = request.stream();
            if (request.hasContentLength() && request.getContentLength64() > settings_.max_body) {
                drain(in);
                throw too_large;
            }
            // RFC 9112: a request with neither Content-Length nor chunked encoding has no body (Poco would
            // otherwise read until the client closes).
            bool has_body = request.hasContentLength() || request.getChunkedTransferEncoding();
            char buf[16384];
            while (has_body && in) {
                in.read(buf, sizeof buf);
                body.append(buf, static_cast<std::size_t>(in.gcount()));
                if (static_cast<std::int64_t>(body.size()) > settings_.max_body) {
                    drain(in);
                    throw too_large;
                }
            }
        }

        std::string path, query;
        try {
            Poco::URI uri(request.getURI());
            path = uri.getPath();
            query = uri.getRawQuery();
        } catch (const Poco::Exception& e) {
            throw Error(400, "malformed request target: " + e.message());
        }

        Router::Match match = router_.match(request.getMethod(), path);
        if (match.status == Router::Status::not_found) throw Error(404, "no route for " + path);
        if (match.status == Router::Status::method_not_allowed) {
            response_headers["Allow"] = match.allow;
            throw Error(405, "method " + request.getMethod() + " not allowed on " + match.pattern);
        }

        Context::Init init;
        init.kind = ServerKind::api;
        init.method = request.getMethod();
        init.path = path;
        init.route = match.pattern;
        init.request_id = rid;
        init.queue = queue_;
        init.exchange = exchange_;
        auto headers = std::make_shared<HeaderMap>();
        for (const auto& [name, value] : request) {
            std::string key = name;
            std::transform(key.begin(), key.end(), key.begin(), [](unsigned char c) { return std::tolower(c); });
            (*headers)[key] = value;
        }
        init.headers = std::move(headers);
        parse_urlencoded(query, init.params);
        std::string content_type = request.getContentType();
        bool form = content_type.find("application/x-www-form-urlencoded") != std::string::npos;
        bool json = !body.empty() && is_json_content(content_type, body);
        // `curl -d '{"a":1}'` sends JSON labelled as a form: a form body that is a JSON object is read as JSON.
        if (form && looks_like_json_object(body) && Json::accept(body)) form = false, json = true;
        if (form) {
            parse_urlencoded(body, init.params);
        } else if (json) {
            Json doc;
            try {
                doc = Json::parse(body);
            } catch (const Json::parse_error& e) {
                throw Error(400, "malformed JSON body: " + json_error_text(e));
            }
            if (doc.is_object()) init.params.update(doc);
        }
        for (auto& [k, v] : match.path_params.items()) init.params[k] = v;
        init.body = std::move(body);

        Context ctx(std::move(init));
        Result result;
        try {
            result = run_chain(middleware_, ctx, *match.handler);
        } catch (const Error&) {
            throw;
        } catch (const std::exception& e) {
            log.error("api: handler " + match.pattern + " failed: " + e.what());
            throw Error(500, "internal server error");
        }
        reply = reply_from(result);
        for (const auto& [k, v] : ctx.response_headers()) response_headers[k] = v;
    } catch (const Error& e) {
        reply = error_reply(e.code(), e.what());
        // After a 413 the unread body, after a bad request line the framing, make the connection unusable.
        if (e.code() == 413 || reply_close) reply.close = true;
    } catch (const std::exception& e) {
        log.error(std::string("api: request failed: ") + e.what());
        reply = error_reply(500, "internal server error");
    }

    try {
        response.setStatusAndReason(static_cast<Poco::Net::HTTPResponse::HTTPStatus>(reply.status));
        for (const auto& [k, v] : response_headers) response.set(k, v);
        response.set("X-Request-Id", rid);
        if (reply.close) response.setKeepAlive(false);
        if (!reply.content_type.empty() && !response.has("Content-Type")) response.setContentType(reply.content_type);
        response.setContentLength64(static_cast<std::int64_t>(reply.body.size()));
        response.sendBuffer(reply.body.data(), reply.body.size());
    } catch (const Poco::Exception& e) {
        log.debug("api: client went away: " + e.displayText());
    }

    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
    if (Logger::enabled(LogLevel::info)) {
        char took[32];
        std::snprintf(took, sizeof took, "%.2fms", ms);
        log.info(request.getMethod() + " " + request.getURI() + " " + std::to_string(reply.status) + " " + took);
    }
}

}  // namespace hydra
