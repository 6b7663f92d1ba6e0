// GET /metrics on the admin listener of the real binary: what Prometheus reads (parsed by python3-prometheus-client)
// moves as WebSocket, HTTP, queue and MQC traffic flows; it follows admin.metrics and the API keys.
#include <boost/test/unit_test.hpp>

#include <cstring>
#include <fstream>
#include <regex>
#include <set>

#include <hydra/json.h>
#include <hydra/ws_client.h>

#include "support/host.h"
#include "support/http.h"
#include "support/http_raw.h"
#include "support/metrics.h"
#include "support/wait.h"

using hydra::Json;
using hydra::WsClient;
using hydra::WsMessage;
using namespace std::chrono_literals;
using test::sample;
using test::sum_of;

BOOST_AUTO_TEST_SUITE(metrics)

BOOST_AUTO_TEST_CASE(the_output_parses_with_the_prometheus_client_and_counters_move_with_traffic) {
    test::Host host;
    const test::Samples before = test::scrape(host.admin);
    BOOST_CHECK_EQUAL(sample(before, "hydra_ws_connections", R"(path="/echo")"), 0);
    BOOST_CHECK_EQUAL(sum_of(before, "hydra_queue_pushes_total"), 0);

    // WebSocket: a service on "/" and three echoes on a raw endpoint.
    WsClient alice = host.connect("/");
    BOOST_REQUIRE_EQUAL(test::login(alice, "alice", "alice-pw")["code"], 200);
    WsClient echo = host.connect("/echo");
    for (int i = 0; i < 3; ++i) {
        echo.send_text("ping " + std::to_string(i));
        BOOST_REQUIRE_EQUAL(echo.receive(10s).data, "ping " + std::to_string(i));
    }
    // HTTP: a push through the queue and the MQC handler to alice; a path with no route; a request the transport
    // refuses itself.
    BOOST_REQUIRE_EQUAL(test::http(host.api, "POST", "/msg/send", R"({"uname":"alice","msg":"hi"})").status, 200);
    BOOST_REQUIRE_EQUAL(test::next_json(alice)["data"]["msg"], "hi");
    BOOST_CHECK_EQUAL(test::http(host.api, "GET", "/no/such/route").status, 404);
    test::RawHttp raw(host.api);
    raw.send("NOT A REQUEST\r\n\r\n");
    BOOST_CHECK_EQUAL(test::status_of(raw.read_all()), 400);

    // The MQC handler's counters move once it has returned, which may come after the delivery: wait for them.
    test::Samples now;
    BOOST_REQUIRE(test::wait_until([&] {
        now = test::scrape(host.admin);
        return sum_of(now, "hydra_mqc_handled_total", {R"(result="ok")"}) >= 1;
    }));
    BOOST_CHECK_EQUAL(sample(now, "hydra_ws_connections", R"(path="/echo")"), 1);
    BOOST_CHECK_EQUAL(sample(now, "hydra_ws_connections", R"(path="/")"), 1);
    BOOST_CHECK_GE(sample(now, "hydra_ws_upgrades_total", R"(status="101")"), 2);
    BOOST_CHECK_GE(sample(now, "hydra_ws_messages_received_total"), 4);
    BOOST_CHECK_GE(sample(now, "hydra_ws_frames_sent_total"), 5);  // 101s, login reply, 3 echoes, the push
    BOOST_CHECK_GT(sample(now, "hydra_ws_received_bytes_total"), sample(before, "hydra_ws_received_bytes_total"));
    BOOST_CHECK_GT(sample(now, "hydra_ws_sent_bytes_total"), 0);
    BOOST_CHECK_EQUAL(sample(now, "hydra_ws_handler_duration_seconds_count", R"(route="/echo")"), 3);
    BOOST_CHECK_EQUAL(sample(now, "hydra_ws_handler_duration_seconds_count", R"(route="/member/login")"), 1);
    BOOST_CHECK_EQUAL(sample(now, "hydra_ws_handler_duration_seconds_bucket", R"(le="+Inf",route="/echo")"), 3);
    BOOST_CHECK_EQUAL(
        sample(now, "hydra_http_requests_total", R"(code="2xx",listener="api",method="POST",route="/msg/send")"), 1);
    BOOST_CHECK_EQUAL(sample(now, "hydra_http_request_duration_seconds_count", R"(listener="api",route="/msg/send")"),
                      1);
    BOOST_CHECK_EQUAL(
        sample(now, "hydra_http_requests_total", R"(code="4xx",listener="api",method="GET",route="unmatched")"), 1);
    BOOST_CHECK_EQUAL(sample(now, "hydra_http_rejected_total", R"(code="400",listener="api")"), 1);
    BOOST_CHECK_GE(sum_of(now, "hydra_queue_pushes_total", {R"(result="ok")"}), 1);
    BOOST_CHECK_EQUAL(sum_of(now, "hydra_queue_pushes_total", {R"(result="error")"}), 0);
    BOOST_CHECK_GE(sum_of(now, "hydra_queue_push_duration_seconds_count"), 1);
    BOOST_CHECK_GE(sum_of(now, "hydra_mqc_handler_duration_seconds_count"), 1);
    BOOST_CHECK_EQUAL(sum_of(now, "hydra_mqc_dead_letters_total"), 0);
    // Process and build.
    BOOST_CHECK_GT(sample(now, "hydra_process_resident_memory_bytes"), 1 << 20);
    BOOST_CHECK_GT(sample(now, "hydra_process_open_fds"), 3);
    BOOST_CHECK_GT(sample(now, "hydra_process_cpu_seconds_total"), 0);
    const double started = sample(now, "hydra_process_start_time_seconds");
    const double wall = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    BOOST_CHECK(started > wall - 3600 && started <= wall + 1);
    BOOST_CHECK_EQUAL(sum_of(now, "hydra_build_info", {R"(version=")"}), 1);

    // A close: the gauge goes down, the close is counted by its code.
    echo.send_close(1000);
    BOOST_REQUIRE(test::wait_until([&] {
        now = test::scrape(host.admin);
        return sample(now, "hydra_ws_closes_total", R"(code="1000")") == 1;
    }));
    BOOST_CHECK_EQUAL(sample(now, "hydra_ws_connections", R"(path="/echo")"), 0);
}

BOOST_AUTO_TEST_CASE(a_host_with_admin_metrics_false_serves_and_counts_nothing) {
    test::Host host({"--set", "admin.metrics=false"});
    auto r = test::http(host.admin, "GET", "/metrics");
    BOOST_CHECK_EQUAL(r.status, 404);
    BOOST_CHECK_NE(r.body.find("admin.metrics"), std::string::npos);
}

BOOST_AUTO_TEST_CASE(metrics_need_an_api_key_when_keys_are_configured) {
    test::Host host({"--set", "auth.api_keys=scrape-key"});
    BOOST_CHECK_EQUAL(test::http(host.admin, "GET", "/metrics").status, 401);
    test::Samples s = test::scrape(host.admin, {{"Authorization", "apikey scrape-key"}});
    BOOST_CHECK_EQUAL(sum_of(s, "hydra_build_info"), 1);
}

BOOST_AUTO_TEST_CASE(the_grafana_dashboard_queries_only_metrics_hydra_exports) {
    std::ifstream file(std::string(HYDRA_SOURCE_DIR) + "/deploy/grafana-dashboard.json");
    BOOST_REQUIRE(file);
    const Json dashboard = Json::parse(file);
    std::set<std::string> queried;
    const std::regex name(R"(hydra_[a-z_]+)");
    for (const auto& panel : dashboard.at("panels"))
        for (const auto& target : panel.value("targets", Json::array())) {
            const std::string expr = target.at("expr");
            for (std::sregex_iterator it(expr.begin(), expr.end(), name), end; it != end; ++it) {
                std::string n = it->str();
                for (const char* suffix : {"_bucket", "_sum", "_count"})
                    if (n.size() > std::strlen(suffix) && n.ends_with(suffix)) n.resize(n.size() - std::strlen(suffix));
                queried.insert(n);
            }
        }
    BOOST_CHECK_GT(queried.size(), 20u);

    // What a SQLite host exports (every family it registered has a TYPE line, samples or not), and what only
    // shows with samples: a cluster on Kafka, messages waiting in SQLite.
    test::Host host;
    const std::string text = test::http(host.admin, "GET", "/metrics").body;
    std::set<std::string> exported = {"hydra_cluster_hosts_alive",
                                      "hydra_cluster_presence_entries",
                                      "hydra_cluster_presence_dropped_total",
                                      "hydra_cluster_routed_total",
                                      "hydra_cluster_route_failures_total",
                                      "hydra_queue_messages",
                                      "hydra_queue_oldest_message_age_seconds",
                                      "hydra_queue_consumer_lag"};
    const std::regex type(R"(# TYPE (hydra_[a-z_]+) )");
    for (std::sregex_iterator it(text.begin(), text.end(), type), end; it != end; ++it) exported.insert((*it)[1]);
    for (const auto& n : queried) BOOST_CHECK_MESSAGE(exported.count(n), "the dashboard queries " << n);
}

BOOST_AUTO_TEST_SUITE_END()
