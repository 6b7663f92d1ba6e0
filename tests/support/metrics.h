// Scrapes a host's GET /metrics and parses it with Debian's python3-prometheus-client (the reference parser of
// the text format), so a test reads samples as Prometheus would.
#pragma once

#include <fstream>
#include <map>
#include <string>

#include <boost/test/unit_test.hpp>

#include <hydra/json.h>

#include "support/http.h"
#include "support/process.h"
#include "support/temp.h"

namespace test {

// Samples by name and labels: "name{a=\"x\",b=\"y\"}" (labels sorted by name) → value.
using Samples = std::map<std::string, double>;

// The parser's reading of `text`; fails the test when it does not parse.
inline Samples parse_prometheus(const std::string& text) {
    static const char* script = R"py(
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(open(sys.argv[1], encoding="utf-8").read()):
    for s in family.samples:
        labels = ",".join('%s="%s"' % (k, v) for k, v in sorted(s.labels.items()))
        out[s.name + "{" + labels + "}"] = s.value
print(json.dumps(out))
)py";
    const std::string file = test::temp_path("metrics.txt");
    std::ofstream(file, std::ios::binary) << text;
    test::ChildProcess py({"/usr/bin/python3", "-c", script, file});
    auto status = py.wait(std::chrono::seconds(30));
    BOOST_REQUIRE_MESSAGE(status && *status == 0, "the Prometheus parser refused the output: " << py.err());
    Samples samples;
    const hydra::Json parsed = hydra::Json::parse(py.out());
    for (const auto& [key, value] : parsed.items()) samples[key] = value.get<double>();
    return samples;
}

// GET /metrics on `admin`, checked for status and Content-Type, parsed.
inline Samples scrape(const std::string& admin, const std::map<std::string, std::string>& headers = {}) {
    auto r = test::http(admin, "GET", "/metrics", "", "application/json", headers);
    BOOST_REQUIRE_EQUAL(r.status, 200);
    BOOST_CHECK_EQUAL(r.headers["Content-Type"], "text/plain; version=0.0.4; charset=utf-8");
    return parse_prometheus(r.body);
}

// The value of one sample, 0 when absent; `labels` as the key shows them: `route="/echo"`.
inline double sample(const Samples& samples, const std::string& name, const std::string& labels = "") {
    auto it = samples.find(name + "{" + labels + "}");
    return it == samples.end() ? 0 : it->second;
}

// The sum of every sample of `name` whose labels contain each of `parts`.
inline double sum_of(const Samples& samples, const std::string& name, std::initializer_list<std::string> parts = {}) {
    double sum = 0;
    for (const auto& [key, value] : samples) {
        if (key.compare(0, name.size() + 1, name + "{") != 0) continue;
        bool all = true;
        for (const auto& p : parts) all = all && key.find(p) != std::string::npos;
        if (all) sum += value;
    }
    return sum;
}

}  // namespace test
