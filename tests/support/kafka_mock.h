// A one-broker Kafka for tests: librdkafka's mock cluster hosted by kcat in its own process.
#pragma once

#include <chrono>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>

#include <boost/test/unit_test.hpp>

#include "support/process.h"
#include "support/temp.h"

namespace test {
using namespace std::chrono_literals;

// kcat hosting a one-broker mock cluster; its debug output goes to a file (a full pipe would stall the broker).
struct KafkaMock {
    std::string log = temp_path("kcat.err");
    ChildProcess process{
        {"/bin/sh", "-c", "exec kcat -b ignored:9092 -X test.mock.num.brokers=1 -d mock -C -t hold -o end 2>" + log}};
    std::string bootstrap;

    KafkaMock() {
        std::regex re(R"(bootstrap\.servers=(127\.0\.0\.1:\d+))");
        for (int i = 0; i < 200 && bootstrap.empty(); ++i) {
            std::ifstream in(log);
            std::stringstream text;
            text << in.rdbuf();
            std::smatch m;
            std::string s = text.str();
            if (std::regex_search(s, m, re))
                bootstrap = m[1].str();
            else
                std::this_thread::sleep_for(50ms);
        }
        BOOST_REQUIRE_MESSAGE(!bootstrap.empty(), "kcat did not start a mock cluster");
    }
    ~KafkaMock() { process.signal(SIGTERM); }
};

}  // namespace test
