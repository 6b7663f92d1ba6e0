// The API server in-process on port 0, called with a real HTTP client.
#include <boost/test/unit_test.hpp>

#include <cctype>

#include <Poco/Net/NetException.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <thread>

#include <hydra/app.h>

#include "support/http.h"
#include "support/http_raw.h"
#include "support/temp.h"
#include "support/wait.h"

using hydra::Context;
using hydra::Json;
using test::http;

namespace {

hydra::Config test_config(std::vector<std::string> sets = {}) {
    sets.insert(sets.begin(), {"api.address=127.0.0.1:0", "admin.address=127.0.0.1:0", "ws.enabled=false",
                               "log.level=error", "queue.sqlite.path=" + test::temp_path("q.db")});
    return hydra::Config::from_json(Json::object(), "test", sets, hydra::ConfigSchema::builtin());
}

struct Orders {
    Json get(Context& ctx) { return Json{{"verb", "get"}, {"id", ctx.param("id")}}; }
    Json post(Context& ctx) { return Json{{"verb", "post"}, {"item", ctx.require("item")}}; }
};

struct Counter {
    int calls = 0;
    Json handle(Context&) { return Json{{"calls", ++calls}}; }
};

// An app with a spread of routes, started on an ephemeral port.
struct ApiFixture {
    hydra::App app{{.plat = "test", .system = "api"}};
    std::string addr;

    explicit ApiFixture(std::vector<std::string> sets = {}) {
        app.api("/hello", [](Context&) { return Json{{"hello", "world"}}; });
        app.api("/text", [](Context&) { return std::string("plain"); });
        app.api("/nothing", [](Context&) {});
        app.api("/params", [](Context& ctx) { return ctx.params(); });
        app.api("/order/:id", Orders{});
        app.api("/order", Orders{});
        app.api("/counter", Counter{});
        app.api("/only-post", [](Context&) { return "posted"; }, {.methods = {"POST"}});
        app.api("/fail", [](Context&) -> Json { throw std::runtime_error("secret database password in here"); });
        app.api("/denied", [](Context&) -> Json { throw hydra::Error(401, "who are you"); });
        app.api("/custom-code", [](Context&) -> Json { throw hydra::Error(1001, "out of stock"); });
        app.api("/created", [](Context&) { return hydra::Result::json({{"id", 7}}, 201); });
        app.api("/serialized", [](Context&) { return hydra::Result::json_text(R"({"id":8,"s":"as written"})", 202); });
        app.api("/rid", [](Context& ctx) { return Json{{"rid", ctx.request_id()}}; });
        app.api("/typed", [](Context& ctx) { return Json{{"n", ctx.get<int>("n") * 2}}; });
        app.start(test_config(std::move(sets)));
        addr = app.api_address();
    }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(api_server)

BOOST_AUTO_TEST_CASE(serves_registered_routes_as_json_and_text) {
    ApiFixture f;
    auto r = http(f.addr, "GET", "/hello");
    BOOST_CHECK_EQUAL(r.status, 200);
    BOOST_CHECK_EQUAL(r.headers["Content-Type"], "application/json");
    BOOST_CHECK_EQUAL(r.json()["hello"], "world");

    r = http(f.addr, "GET", "/text");
    BOOST_CHECK_EQUAL(r.status, 200);
    BOOST_CHECK_EQUAL(r.body, "plain");

    BOOST_CHECK_EQUAL(http(f.addr, "GET", "/nothing").status, 204);
    BOOST_CHECK_EQUAL(http(f.addr, "GET", "/created").status, 201);
    // JSON serialized by the handler goes out as it is, as JSON
    r = http(f.addr, "GET", "/serialized");
    BOOST_CHECK_EQUAL(r.status, 202);
    BOOST_CHECK_EQUAL(r.headers["Content-Type"], "application/json");
    BOOST_CHECK_EQUAL(r.body, R"({"id":8,"s":"as written"})");
    // trailing slash is the same route
    BOOST_CHECK_EQUAL(http(f.addr, "GET", "/hello/").status, 200);
}

BOOST_AUTO_TEST_CASE(rest_verbs_on_one_route_and_path_params) {
    ApiFixture f;
    auto r = http(f.addr, "GET", "/order/42");
    BOOST_CHECK_EQUAL(r.status, 200);
    BOOST_CHECK_EQUAL(r.json()["verb"], "get");
    BOOST_CHECK_EQUAL(r.json()["id"], "42");

    r = http(f.addr, "POST", "/order", R"({"item":"book"})");
    BOOST_CHECK_EQUAL(r.status, 200);
    BOOST_CHECK_EQUAL(r.json()["verb"], "post");
    BOOST_CHECK_EQUAL(r.json()["item"], "book");

    r = http(f.addr, "DELETE", "/order/42");
    BOOST_CHECK_EQUAL(r.status, 405);
    BOOST_CHECK_EQUAL(r.headers["Allow"], "GET, POST");
    BOOST_CHECK_EQUAL(r.json()["code"], 405);

    BOOST_CHECK_EQUAL(http(f.addr, "POST", "/only-post", "{}").status, 200);
    BOOST_CHECK_EQUAL(http(f.addr, "GET", "/only-post").status, 405);
}

BOOST_AUTO_TEST_CASE(object_handlers_keep_their_state) {
    ApiFixture f;
    http(f.addr, "GET", "/counter");
    auto r = http(f.addr, "POST", "/counter", "{}");
    BOOST_CHECK_EQUAL(r.json()["calls"], 2);
}

BOOST_AUTO_TEST_CASE(params_merge_query_form_and_json) {
    ApiFixture f;
    auto r = http(f.addr, "POST", "/params?a=1&b=query&c=x%20y", R"({"b":"json","n":5})");
    BOOST_CHECK_EQUAL(r.status, 200);
    Json p = r.json();
    BOOST_CHECK_EQUAL(p["a"], "1");
    BOOST_CHECK_EQUAL(p["b"], "json");  // the body wins over the query string
    BOOST_CHECK_EQUAL(p["c"], "x y");
    BOOST_CHECK_EQUAL(p["n"], 5);

    r = http(f.addr, "POST", "/params?a=1", "uname=alice&msg=hi+there", "application/x-www-form-urlencoded");
    BOOST_CHECK_EQUAL(r.json()["uname"], "alice");
    BOOST_CHECK_EQUAL(r.json()["msg"], "hi there");
    BOOST_CHECK_EQUAL(r.json()["a"], "1");

    // curl -d '{...}' labels JSON as a form: read as JSON
    r = http(f.addr, "POST", "/params", R"({"uname":"bob"})", "application/x-www-form-urlencoded");
    BOOST_CHECK_EQUAL(r.json()["uname"], "bob");

    BOOST_CHECK_EQUAL(http(f.addr, "GET", "/typed?n=21").json()["n"], 42);
    r = http(f.addr, "GET", "/typed?n=abc");
    BOOST_CHECK_EQUAL(r.status, 400);
    BOOST_CHECK_EQUAL(r.json()["msg"], "invalid parameter n");
}

BOOST_AUTO_TEST_CASE(error_envelopes) {
    ApiFixture f({"api.max_body=1024"});
    auto r = http(f.addr, "GET", "/no/such/route");
    BOOST_CHECK_EQUAL(r.status, 404);
    BOOST_CHECK_EQUAL(r.json(), (Json{{"code", 404}, {"msg", "no route for /no/such/route"}}));

    r = http(f.addr, "POST", "/params", R"({"a": 1,})");
    BOOST_CHECK_EQUAL(r.status, 400);
    BOOST_CHECK_EQUAL(r.json()["code"], 400);
    std::string msg = r.json()["msg"];
    BOOST_CHECK_MESSAGE(msg.find("malformed JSON body") == 0, msg);
    BOOST_CHECK_MESSAGE(msg.find("line 1, column 9") != std::string::npos, msg);

    r = http(f.addr, "POST", "/params", std::string(2000, 'x'), "text/plain");
    BOOST_CHECK_EQUAL(r.status, 413);
    BOOST_CHECK_EQUAL(r.json()["msg"], "request body exceeds 1024 bytes");

    r = http(f.addr, "GET", "/fail");
    BOOST_CHECK_EQUAL(r.status, 500);
    BOOST_CHECK_EQUAL(r.json(), (Json{{"code", 500}, {"msg", "internal server error"}}));
    BOOST_CHECK(r.body.find("secret") == std::string::npos);

    r = http(f.addr, "GET", "/denied");
    BOOST_CHECK_EQUAL(r.status, 401);
    BOOST_CHECK_EQUAL(r.json()["msg"], "who are you");

    r = http(f.addr, "GET", "/custom-code");
    BOOST_CHECK_EQUAL(r.status, 400);
    BOOST_CHECK_EQUAL(r.json()["code"], 1001);

    r = http(f.addr, "POST", "/order", "{}");
    BOOST_CHECK_EQUAL(r.status, 400);
    BOOST_CHECK_EQUAL(r.json()["msg"], "missing parameter item");

    // after all of that the server still answers
    BOOST_CHECK_EQUAL(http(f.addr, "GET", "/hello").status, 200);
}

BOOST_AUTO_TEST_CASE(oversized_chunked_body_is_413) {
    ApiFixture f({"api.max_body=1000"});
    Poco::Net::HTTPClientSession session{Poco::Net::SocketAddress(f.addr)};
    Poco::Net::HTTPRequest req("POST", "/params", Poco::Net::HTTPMessage::HTTP_1_1);
    req.setChunkedTransferEncoding(true);
    req.setContentType("application/json");
    std::ostream& out = session.sendRequest(req);
    out << "[" << std::string(5000, ' ') << "]";
    Poco::Net::HTTPResponse resp;
    std::istream& in = session.receiveResponse(resp);
    std::string body;
    Poco::StreamCopier::copyToString(in, body);
    BOOST_CHECK_EQUAL(resp.getStatus(), 413);
}

BOOST_AUTO_TEST_CASE(request_id_is_accepted_or_generated_and_echoed) {
    ApiFixture f;
    auto r = http(f.addr, "GET", "/rid", {}, {}, {{"X-Request-Id", "abc-123"}});
    BOOST_CHECK_EQUAL(r.headers["X-Request-Id"], "abc-123");
    BOOST_CHECK_EQUAL(r.json()["rid"], "abc-123");

    r = http(f.addr, "GET", "/rid");
    std::string generated = r.headers["X-Request-Id"];
    BOOST_CHECK_EQUAL(generated.size(), 36u);
    BOOST_CHECK_EQUAL(r.json()["rid"], generated);

    // a malformed id (spaces, too long) is replaced, never echoed
    r = http(f.addr, "GET", "/rid", {}, {}, {{"X-Request-Id", "bad id <script>"}});
    BOOST_CHECK_NE(r.headers["X-Request-Id"], "bad id <script>");
    BOOST_CHECK_EQUAL(r.headers["X-Request-Id"].size(), 36u);

    // errors carry it too
    r = http(f.addr, "GET", "/missing", {}, {}, {{"X-Request-Id", "err-1"}});
    BOOST_CHECK_EQUAL(r.headers["X-Request-Id"], "err-1");
}

BOOST_AUTO_TEST_CASE(middleware_runs_in_order_and_can_reject) {
    hydra::App app;
    std::mutex mu;
    std::vector<std::string> trace;
    auto record = [&](std::string s) {
        std::lock_guard lock(mu);
        trace.push_back(std::move(s));
    };
    app.use([&](Context& ctx, const hydra::Next& next) {
        record("a:before");
        hydra::Result r = next();
        record("a:after");
        ctx.set_response_header("X-Seen-By", "a");
        return r;
    });
    app.use([&](Context& ctx, const hydra::Next& next) -> hydra::Result {
        record("b:before");
        if (ctx.header("X-Token") != "let-me-in") return hydra::Error(403, "forbidden");
        ctx.locals()["user"] = "alice";
        hydra::Result r = next();
        record("b:after");
        return r;
    });
    app.api("/secret", [&](Context& ctx) {
        record("handler");
        return Json{{"user", ctx.locals()["user"]}};
    });
    app.start(test_config());

    auto r = http(app.api_address(), "GET", "/secret", {}, {}, {{"X-Token", "let-me-in"}});
    BOOST_CHECK_EQUAL(r.status, 200);
    BOOST_CHECK_EQUAL(r.json()["user"], "alice");
    BOOST_CHECK_EQUAL(r.headers["X-Seen-By"], "a");
    std::vector<std::string> expected{"a:before", "b:before", "handler", "b:after", "a:after"};
    BOOST_CHECK_EQUAL_COLLECTIONS(trace.begin(), trace.end(), expected.begin(), expected.end());

    trace.clear();
    r = http(app.api_address(), "GET", "/secret");
    BOOST_CHECK_EQUAL(r.status, 403);
    BOOST_CHECK_EQUAL(r.json()["msg"], "forbidden");
    expected = {"a:before", "b:before", "a:after"};
    BOOST_CHECK_EQUAL_COLLECTIONS(trace.begin(), trace.end(), expected.begin(), expected.end());
}

BOOST_AUTO_TEST_CASE(keep_alive_serves_several_requests_on_one_connection) {
    ApiFixture f;
    Poco::Net::HTTPClientSession session{Poco::Net::SocketAddress(f.addr)};
    session.setKeepAlive(true);
    for (int i = 0; i < 5; ++i) BOOST_CHECK_EQUAL(test::http_on(session, "GET", "/hello").status, 200);
    BOOST_CHECK_EQUAL(test::http_on(session, "GET", "/missing").status, 404);
    BOOST_CHECK_EQUAL(test::http_on(session, "GET", "/hello").status, 200);
}

BOOST_AUTO_TEST_CASE(garbage_on_the_wire_does_not_hurt_other_clients) {
    ApiFixture f;
    {
        // A 400, then the server closes the connection (the deadline only bounds a hang; it is not a pass).
        test::RawHttp raw(f.addr);
        raw.send("\x16\x03\x01 not http at all\r\n\r\n");
        const std::string reply = raw.read_all(std::chrono::seconds(20));
        BOOST_CHECK_MESSAGE(test::status_of(reply) == 400, reply);
        BOOST_CHECK_MESSAGE(raw.closed(), "no close after the 400: " << reply);
    }
    BOOST_CHECK_EQUAL(http(f.addr, "GET", "/hello").status, 200);
}

BOOST_AUTO_TEST_CASE(graceful_stop_finishes_in_flight_requests) {
    test::Gate gate;  // before the app: outlives its handlers
    hydra::App app;
    std::atomic<bool> finished{false};
    app.api("/slow", [&](Context&) {
        gate.pass();  // in flight until the test has seen stop() waiting for it
        finished = true;
        return Json{{"done", true}};
    });
    app.start(test_config());
    std::string addr = app.api_address();

    auto in_flight = std::async(std::launch::async, [&] { return http(addr, "GET", "/slow"); });
    BOOST_REQUIRE(test::wait_until([&] { return gate.entered() == 1; }));
    auto stopping = std::async(std::launch::async, [&] { app.stop(); });
    // stop() has begun (no new connections) and waits for the request in flight.
    BOOST_REQUIRE(test::wait_until([&] { return !test::RawHttp(addr).connected(); }));
    BOOST_CHECK(stopping.wait_for(std::chrono::milliseconds(0)) == std::future_status::timeout);
    gate.open();
    stopping.get();
    BOOST_CHECK(finished.load());

    auto r = in_flight.get();
    BOOST_CHECK_EQUAL(r.status, 200);
    BOOST_CHECK_EQUAL(r.json()["done"], true);
    BOOST_CHECK(!app.running());
    BOOST_CHECK_THROW(http(addr, "GET", "/slow"), Poco::Exception);  // no longer accepting
}

BOOST_AUTO_TEST_CASE(address_in_use_is_a_clear_error) {
    ApiFixture f;
    hydra::App second;
    try {
        second.start(hydra::Config::from_json(Json::object(), "test",
                                              {"api.address=" + f.addr, "ws.enabled=false", "log.level=error",
                                               "queue.sqlite.path=" + test::temp_path("q.db")},
                                              hydra::ConfigSchema::builtin()));
        BOOST_FAIL("second bind should fail");
    } catch (const std::runtime_error& e) {
        std::string what = e.what();
        BOOST_CHECK_MESSAGE(what.find("api: cannot listen on " + f.addr) == 0, what);
    }
    BOOST_CHECK(!second.running());
}

BOOST_AUTO_TEST_CASE(static_files_are_served_without_escaping_their_directory) {
    std::string dir = test::temp_path("www");
    std::filesystem::create_directories(dir + "/sub");
    std::ofstream(dir + "/index.html") << "<h1>home</h1>";
    std::ofstream(dir + "/sub/app.js") << "console.log(1)";
    std::ofstream(dir + "/.secret") << "hidden";
    hydra::App app;
    app.static_files("/demo", dir);
    app.start(test_config());
    auto r = http(app.api_address(), "GET", "/demo/");
    BOOST_CHECK_EQUAL(r.status, 200);
    BOOST_CHECK_EQUAL(r.body, "<h1>home</h1>");
    BOOST_CHECK_EQUAL(r.headers["Content-Type"], "text/html; charset=utf-8");
    r = http(app.api_address(), "GET", "/demo/sub/app.js");
    BOOST_CHECK_EQUAL(r.body, "console.log(1)");
    BOOST_CHECK_EQUAL(r.headers["Content-Type"], "text/javascript; charset=utf-8");
    BOOST_CHECK_EQUAL(http(app.api_address(), "GET", "/demo/.secret").status, 404);
    BOOST_CHECK_EQUAL(http(app.api_address(), "GET", "/demo/../api_server_test.cpp").status, 404);
    BOOST_CHECK_EQUAL(http(app.api_address(), "GET", "/demo/%2e%2e/%2e%2e/etc/passwd").status, 404);
    BOOST_CHECK_EQUAL(http(app.api_address(), "GET", "/demo/missing.html").status, 404);
    BOOST_CHECK_EQUAL(http(app.api_address(), "POST", "/demo/index.html", "{}").status, 405);
}

// This process's standard error, where hydra's log goes, redirected to a file while it lives.
class CapturedStderr {
  public:
    CapturedStderr() : path_(test::temp_path("stderr.log")), saved_(::dup(STDERR_FILENO)) {
        const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        BOOST_REQUIRE(fd >= 0 && saved_ >= 0);
        ::dup2(fd, STDERR_FILENO);
        ::close(fd);
    }
    ~CapturedStderr() {
        ::dup2(saved_, STDERR_FILENO);
        ::close(saved_);
    }
    CapturedStderr(const CapturedStderr&) = delete;
    CapturedStderr& operator=(const CapturedStderr&) = delete;
    std::vector<std::string> lines() const {
        std::ifstream in(path_);
        std::vector<std::string> out;
        for (std::string line; std::getline(in, line);) out.push_back(line);
        return out;
    }

  private:
    std::string path_;
    int saved_;
};

BOOST_AUTO_TEST_CASE(one_log_line_per_request_and_error_details_only_in_the_log) {
    CapturedStderr captured;  // first: the app's threads log into it until the app has stopped
    struct Call {
        std::string rid, method, target, body;
        int status;
    };
    const std::vector<Call> calls = {
        {"log-ok", "GET", "/hello", "", 200},
        {"log-fail", "GET", "/fail", "", 500},
        {"log-missing", "GET", "/no/such/route", "", 404},
        {"log-param", "POST", "/order", "{}", 400},
        {"log-verb", "DELETE", "/order/42", "", 405},
        {"log-query", "GET", "/typed?n=21", "", 200},
    };
    {
        ApiFixture f({"log.level=info"});
        for (const auto& c : calls) {
            auto r = http(f.addr, c.method, c.target, c.body, "application/json", {{"X-Request-Id", c.rid}});
            BOOST_CHECK_EQUAL(r.status, c.status);
            if (c.rid == "log-fail") {
                BOOST_CHECK_EQUAL(r.json(), (Json{{"code", 500}, {"msg", "internal server error"}}));
                BOOST_CHECK_MESSAGE(r.body.find("secret") == std::string::npos, r.body);
            }
        }
    }
    const std::vector<std::string> lines = captured.lines();
    for (const auto& c : calls) {
        // One access line, at info, tagged with the request id: method, target, status, duration as fields.
        const std::string tag = "[" + c.rid + "] ";
        // (A value with '=' or spaces is quoted.)
        const std::string path = c.target.find('=') == std::string::npos ? c.target : '"' + c.target + '"';
        const std::string access = tag + "request logger=api method=" + c.method + " path=" + path + " route=";
        const std::string status = " status=" + std::to_string(c.status) + " duration_ms=";
        int access_lines = 0, info_lines = 0;
        for (const auto& line : lines) {
            if (line.find(tag) == std::string::npos) continue;
            if (line.find(" INFO ") != std::string::npos) ++info_lines;
            const auto at = line.find(access);
            if (at == std::string::npos) continue;
            ++access_lines;
            BOOST_CHECK_MESSAGE(line.find(" INFO ") != std::string::npos, line);
            const auto took = line.find(status, at);
            BOOST_CHECK_MESSAGE(took != std::string::npos && line.size() > took + status.size() &&
                                    std::isdigit(static_cast<unsigned char>(line[took + status.size()])),
                                "no status or duration: " << line);
        }
        BOOST_CHECK_MESSAGE(access_lines == 1, c.rid << ": " << access_lines << " access lines");
        BOOST_CHECK_MESSAGE(info_lines == 1, c.rid << ": " << info_lines << " info lines");
    }
    // What the client was not told is in the log, with the request id.
    int details = 0;
    for (const auto& line : lines)
        if (line.find("[log-fail] ") != std::string::npos &&
            line.find("secret database password in here") != std::string::npos) {
            ++details;
            BOOST_CHECK_MESSAGE(line.find(" ERROR ") != std::string::npos, line);
        }
    BOOST_CHECK_EQUAL(details, 1);
}

BOOST_AUTO_TEST_SUITE_END()
