// kafka-mock: a librdkafka mock cluster in this process, for the fault runs (tests/faults/kafka_outage.sh) and
// the two-host send benchmark (tests/bench/send.sh).
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <iostream>
#include <sstream>
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
        } else if (line.rfind("topic ", 0) == 0) {
            // "topic NAME PARTITIONS": created as hydra's Admin API would (the mock has no CreateTopics; a topic a
            // client names first is created with the mock's default of 4 partitions).
            std::istringstream in(line.substr(6));
            std::string name;
            int partitions = 0;
            if (!(in >> name >> partitions) || !(in >> std::ws).eof() || partitions < 1 || partitions > 10000) {
                std::cout << "cannot create topic: expected \"topic NAME PARTITIONS\" (1-10000): " << line << std::endl;
                continue;
            }
            const rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(mc, name.c_str(), partitions, 1);
            if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
                std::cout << "topic " << name << " " << partitions << std::endl;
            else
                std::cout << "cannot create topic " << name << ": " << rd_kafka_err2str(err) << std::endl;
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
