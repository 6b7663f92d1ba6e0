// The metrics registry: the text format it renders, histogram buckets, per-thread cells summed exactly, the cap on
// series per family, collectors.
#include <boost/test/unit_test.hpp>

#include <thread>
#include <vector>

#include "metrics/metrics.h"

using namespace hydra::metrics;
using namespace std::chrono_literals;

BOOST_AUTO_TEST_SUITE(metrics)

BOOST_AUTO_TEST_CASE(counters_render_with_help_type_and_escaped_labels) {
    Registry r;
    auto& f = r.counter("hydra_test_total", "A test\ncounter.", {"route"});
    f.with({"/a"}).inc();
    f.with({"/a"}).inc(2);
    f.with({"say \"hi\"\\\n"}).inc();
    const std::string text = r.render();
    BOOST_CHECK_NE(text.find("# HELP hydra_test_total A test\\ncounter.\n# TYPE hydra_test_total counter\n"),
                   std::string::npos);
    BOOST_CHECK_NE(text.find("hydra_test_total{route=\"/a\"} 3\n"), std::string::npos);
    BOOST_CHECK_NE(text.find("hydra_test_total{route=\"say \\\"hi\\\"\\\\\\n\"} 1\n"), std::string::npos);
}

BOOST_AUTO_TEST_CASE(histograms_are_cumulative_with_sum_and_count) {
    Registry r;
    Histogram& h = r.histogram("hydra_test_seconds", "Test.", {}, {0.001, 0.01}).with({});
    h.observe(500us);
    h.observe(5ms);
    h.observe(5ms);
    h.observe(2s);
    const std::string text = r.render();
    BOOST_CHECK_NE(text.find("hydra_test_seconds_bucket{le=\"0.001\"} 1\n"), std::string::npos);
    BOOST_CHECK_NE(text.find("hydra_test_seconds_bucket{le=\"0.01\"} 3\n"), std::string::npos);
    BOOST_CHECK_NE(text.find("hydra_test_seconds_bucket{le=\"+Inf\"} 4\n"), std::string::npos);
    BOOST_CHECK_NE(text.find("hydra_test_seconds_sum 2.0105\n"), std::string::npos);
    BOOST_CHECK_NE(text.find("hydra_test_seconds_count 4\n"), std::string::npos);
}

BOOST_AUTO_TEST_CASE(increments_from_many_threads_sum_exactly) {
    Registry r;
    auto& family = r.counter("hydra_test_total", "Test.", {"k"});
    Gauge& g = r.gauge("hydra_test_gauge", "Test.").with({});
    std::vector<std::thread> threads;
    for (int t = 0; t < 24; ++t)  // more threads than cells: some share one
        threads.emplace_back([&] {
            for (int i = 0; i < 10000; ++i) {
                family.local({"x"}).inc();
                g.add(2);
                g.sub();
            }
        });
    for (auto& t : threads) t.join();
    BOOST_CHECK_EQUAL(family.with({"x"}).value(), 240000);
    BOOST_CHECK_EQUAL(g.value(), 240000);
}

BOOST_AUTO_TEST_CASE(a_family_holds_at_most_max_series_then_counts_under_other) {
    Registry r;
    auto& f = r.counter("hydra_test_total", "Test.", {"a", "b"});
    for (std::size_t i = 0; i < kMaxSeries + 50; ++i) f.with({std::to_string(i), "x"}).inc();
    BOOST_CHECK_EQUAL(f.with({"other", "other"}).value(), 50);
    BOOST_CHECK_EQUAL(f.with({"5", "x"}).value(), 1);
    BOOST_CHECK_THROW(f.with({"only one"}), std::logic_error);
    BOOST_CHECK_THROW(r.gauge("hydra_test_total", "Twice.", {"a", "b"}), std::logic_error);
}

BOOST_AUTO_TEST_CASE(collectors_run_at_every_scrape_until_their_handle_goes) {
    Registry r;
    int runs = 0;
    {
        Registry::Collector c = r.add_collector([&](Samples& s) {
            ++runs;
            s.add("hydra_test_depth", "Depth.", Type::gauge, {"queue"}, {"q1"}, 7);
        });
        BOOST_CHECK_NE(r.render().find("# TYPE hydra_test_depth gauge\nhydra_test_depth{queue=\"q1\"} 7\n"),
                       std::string::npos);
    }
    BOOST_CHECK_EQUAL(r.render().find("hydra_test_depth"), std::string::npos);
    BOOST_CHECK_EQUAL(runs, 1);
}

BOOST_AUTO_TEST_CASE(methods_and_statuses_map_to_bounded_labels) {
    BOOST_CHECK_EQUAL(method_label("GET"), "GET");
    BOOST_CHECK_EQUAL(method_label("BREW"), "other");
    BOOST_CHECK_EQUAL(method_label("get"), "other");
    BOOST_CHECK_EQUAL(status_class(204), "2xx");
    BOOST_CHECK_EQUAL(status_class(503), "5xx");
    BOOST_CHECK_EQUAL(status_class(999), "other");
}

BOOST_AUTO_TEST_SUITE_END()
