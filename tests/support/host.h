// The real `hydra` binary as a test host: `hydra run --env dev` on ephemeral ports with private files, and the
// message center's auth API (token "good-token" -> uid 1001) it talks to.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <Poco/Net/HTTPRequestHandler.h>
#include <Poco/Net/HTTPRequestHandlerFactory.h>
#include <Poco/Net/HTTPServer.h>
#include <Poco/Net/HTTPServerRequest.h>
#include <Poco/Net/HTTPServerResponse.h>
#include <Poco/Net/ServerSocket.h>
#include <Poco/StreamCopier.h>
#include <boost/test/unit_test.hpp>

#include <hydra/json.h>
#include <hydra/ws_client.h>

#include "support/process.h"
#include "support/sqlite.h"
#include "support/temp.h"

namespace test {
using namespace std::chrono_literals;

// The user's own auth API for the message center: token → uid.
class AuthHandler : public Poco::Net::HTTPRequestHandler {
  public:
    void handleRequest(Poco::Net::HTTPServerRequest& req, Poco::Net::HTTPServerResponse& resp) override {
        std::string body;
        Poco::StreamCopier::copyToString(req.stream(), body);
        hydra::Json in = hydra::Json::parse(body, nullptr, false);
        std::string token = in.is_object() && in.contains("token") ? in["token"].get<std::string>() : "";
        if (token == "good-token") {
            resp.setContentType("application/json");
            resp.send() << R"({"uid":1001})";
        } else if (token == "bad-body") {
            resp.send() << "not json";
        } else {
            resp.setStatus(Poco::Net::HTTPResponse::HTTP_FORBIDDEN);
            resp.send() << R"({"error":"bad token"})";
        }
    }
};

class AuthFactory : public Poco::Net::HTTPRequestHandlerFactory {
  public:
    Poco::Net::HTTPRequestHandler* createRequestHandler(const Poco::Net::HTTPServerRequest&) override {
        return new AuthHandler;
    }
};

struct AuthApi {
    Poco::Net::ServerSocket socket{Poco::Net::SocketAddress("127.0.0.1:0")};
    Poco::Net::HTTPServer server{new AuthFactory, socket, new Poco::Net::HTTPServerParams};
    AuthApi() { server.start(); }
    ~AuthApi() { server.stopAll(true); }
    std::string url() const {
        return "http://127.0.0.1:" + std::to_string(socket.address().port()) + "/websocket_auth";
    }
};

// How long a Host may take to start and to stop.
struct HostTimeouts {
    std::chrono::milliseconds start = 30s;  // until every listener is up
    std::chrono::milliseconds stop = 20s;   // from SIGTERM to a clean exit
};

// One `hydra run --env dev` with ephemeral ports and private files. `extra` arguments come last: a `--set` there
// wins over the ones here (e.g. queue.backend=kafka for the cluster's hosts, log.level=debug).
struct Host {
    AuthApi auth;
    std::unique_ptr<test::ChildProcess> process;  // null once kill()ed
    std::string api;
    std::string admin;  // the admin listener (the exchange's /v1/... endpoints)
    int ws_port = 0;
    HostTimeouts timeouts;

    explicit Host(std::vector<std::string> extra = {}, HostTimeouts t = {}) : timeouts(t) {
        std::vector<std::string> args = {HYDRA_BINARY, "run",
                                         "--env",      "dev",
                                         "--set",      "api.address=127.0.0.1:0",
                                         "--set",      "admin.address=127.0.0.1:0",
                                         "--set",      "ws.address=127.0.0.1:0",
                                         "--set",      "log.level=warn",
                                         "--set",      "queue.sqlite.path=" + test::temp_path("queue.db"),
                                         "--set",      "services.push.database=" + test::temp_path("push.db"),
                                         "--set",      "services.message_center.auth_url=" + auth.url()};
        args.insert(args.end(), extra.begin(), extra.end());
        process = std::make_unique<test::ChildProcess>(args, std::string(HYDRA_SOURCE_DIR));
        auto api_port = process->wait_for_stdout(R"(api listening on https?://127\.0\.0\.1:(\d+))", t.start);
        auto ws = process->wait_for_stdout(R"(ws listening on wss?://127\.0\.0\.1:(\d+))", t.start);
        auto admin_port =
            process->wait_for_stdout(R"(admin listening on https?://(?:127\.0\.0\.1|0\.0\.0\.0):(\d+))", t.start);
        BOOST_REQUIRE_MESSAGE(api_port && ws && admin_port, "hydra did not start: " + process->err());
        api = "127.0.0.1:" + *api_port;
        admin = "127.0.0.1:" + *admin_port;
        ws_port = std::stoi(*ws);
    }
    ~Host() { stop(); }
    Host(const Host&) = delete;
    Host& operator=(const Host&) = delete;

    // SIGTERM, then a clean exit (status 0) within timeouts.stop. Once stopped, again only checks the status kept.
    void stop() {
        if (!process) return;
        process->signal(SIGTERM);
        BOOST_CHECK_EQUAL(process->wait(timeouts.stop).value_or(-1), 0);
    }
    // SIGKILL: the host dies as a crash would, without a word to the others.
    void kill() {
        process->signal(SIGKILL);
        process->wait(10s);
        process.reset();
    }
    // Whether the log (stderr) shows `pattern` within `timeout`.
    bool logged(const std::string& pattern, std::chrono::milliseconds timeout = 30s) {
        return process->wait_for_stderr(pattern, timeout).has_value();
    }
    // With `uuid`: the client names itself in X-Request-Id (a host with ws.client_uuid=request_id takes it).
    hydra::WsClient connect(const std::string& path, const std::string& uuid = {}) {
        std::map<std::string, std::string> headers;
        if (!uuid.empty()) headers["X-Request-Id"] = uuid;
        return hydra::WsClient::connect("127.0.0.1", ws_port, path, headers);
    }
};

// The next message of `c` as JSON; fails the test when it is not a text message in time.
inline hydra::Json next_json(hydra::WsClient& c, std::chrono::milliseconds timeout = 10s) {
    hydra::WsMessage m = c.receive(timeout);
    BOOST_REQUIRE_MESSAGE(m.type == hydra::WsMessage::Type::text,
                          "expected a text message, got " << m.type << " " << m.data);
    return hydra::Json::parse(m.data);
}

// Messages waiting in the push demo's mailbox (its database file `db`) for `uname`.
inline std::int64_t mailbox(const std::string& db, const std::string& uname) {
    return sqlite_int(db, "SELECT COUNT(*) FROM mailbox WHERE uname = ?", {uname});
}

// The push demo's login on the service path "/": the reply.
inline hydra::Json login(hydra::WsClient& c, const std::string& uname, const std::string& pwd) {
    c.send_text(hydra::Json{{"service", "/member/login"}, {"uname", uname}, {"pwd", pwd}}.dump());
    return next_json(c);
}

}  // namespace test
