// kafka-mock: a librdkafka mock cluster in this process, for the fault runs (tests/faults/kafka_outage.sh).
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <iostream>
#include <string>

#include "soak_bench.h"

namespace bench {

int run_kafka_mock() {
    char err[512];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    // A producer handle that only hosts the mock cluster.
    rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk) {
        std::cerr << "kafka-mock: " << err << std::endl;
        return 1;
    }
    rd_kafka_mock_cluster_t* mc = rd_kafka_mock_cluster_new(rk, 1);
    if (!mc) {
        std::cerr << "kafka-mock: cannot create the mock cluster" << std::endl;
        rd_kafka_destroy(rk);
        return 1;
    }
    std::cout << "bootstrap " << rd_kafka_mock_cluster_bootstraps(mc) << std::endl;
    std::string line;
    while (std::getline(std::cin, line)) {
        if (line == "down") {
            rd_kafka_mock_broker_set_down(mc, 1);
            std::cout << "down" << std::endl;
        } else if (line == "up") {
            rd_kafka_mock_broker_set_up(mc, 1);
            std::cout << "up" << std::endl;
        } else if (line == "quit") {
            break;
        } else if (!line.empty()) {
            std::cout << "unknown command " << line << std::endl;
        }
    }
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return 0;
}

}  // namespace bench
