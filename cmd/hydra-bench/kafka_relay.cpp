// kafka-relay: the Kafka floor of the two-host push path. What a message of the cluster run must do on Kafka, with
// nothing else: produced to an "in" topic, consumed and produced again to an "out" topic (host B's MQC handler
// routing to host A), consumed there (host A) — two produce requests and two fetches per message, through the
// broker given (the mock cluster of tests/bench/send.sh, pinned to its own core). A paced producer, one relay
// consumer+producer and one sink consumer in this process; the latency of each message from its produce call to
// the sink.
//   hydra-bench kafka-relay --brokers HOST:PORT [--rate 5000] [--seconds 10] [--warmup 2] [--keys 5000]
//                           [--kafka-property name=value ...] [--out FILE]
#include <librdkafka/rdkafkacpp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "util.h"

namespace {

using bench::now_ns;

struct Options {
    std::string brokers;
    int rate = 5000;
    double seconds = 10;
    double warmup = 2;
    int keys = 5000;  // messages keyed by client (k % keys), as hydra keys them by uuid; 0 = no key
    std::map<std::string, std::string> properties;
    std::string out;
};

std::unique_ptr<RdKafka::Conf> make_conf(const Options& o, const std::map<std::string, std::string>& extra) {
    std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
    std::string err;
    auto set = [&](const std::string& k, const std::string& v) {
        if (conf->set(k, v, err) != RdKafka::Conf::CONF_OK) throw std::runtime_error(k + ": " + err);
    };
    set("bootstrap.servers", o.brokers);
    for (const auto& [k, v] : extra) set(k, v);
    for (const auto& [k, v] : o.properties) set(k, v);
    return conf;
}

// The producers as hydra's queue and bus configure them: durable, no reordering, a 5 ms linger.
std::unique_ptr<RdKafka::Producer> make_producer(const Options& o) {
    auto conf = make_conf(o, {{"enable.idempotence", "true"}, {"acks", "all"}, {"linger.ms", "5"}});
    std::string err;
    std::unique_ptr<RdKafka::Producer> p(RdKafka::Producer::create(conf.get(), err));
    if (!p) throw std::runtime_error("producer: " + err);
    return p;
}

std::unique_ptr<RdKafka::KafkaConsumer> make_consumer(const Options& o, const std::string& group,
                                                      const std::string& topic) {
    auto conf = make_conf(o, {{"group.id", group},
                              {"auto.offset.reset", "earliest"},
                              {"session.timeout.ms", "6000"},
                              {"fetch.wait.max.ms", "5"}});
    std::string err;
    std::unique_ptr<RdKafka::KafkaConsumer> c(RdKafka::KafkaConsumer::create(conf.get(), err));
    if (!c) throw std::runtime_error("consumer: " + err);
    if (c->subscribe({topic}) != RdKafka::ERR_NO_ERROR) throw std::runtime_error("subscribe " + topic);
    return c;
}

void produce(RdKafka::Producer& p, const std::string& topic, const void* data, std::size_t size,
             const std::string* key = nullptr) {
    while (true) {
        auto rc =
            p.produce(topic, RdKafka::Topic::PARTITION_UA, RdKafka::Producer::RK_MSG_COPY, const_cast<void*>(data),
                      size, key ? key->data() : nullptr, key ? key->size() : 0, 0, nullptr);
        if (rc == RdKafka::ERR_NO_ERROR) return;
        if (rc != RdKafka::ERR__QUEUE_FULL) throw std::runtime_error("produce: " + RdKafka::err2str(rc));
        p.poll(1);
    }
}

}  // namespace

int run_kafka_relay(const std::vector<std::string>& args) {
    Options o;
    for (std::size_t i = 0; i + 1 < args.size(); i += 2) {
        const std::string &k = args[i], &v = args[i + 1];
        if (k == "--brokers")
            o.brokers = v;
        else if (k == "--rate")
            o.rate = std::max(1, std::stoi(v));
        else if (k == "--seconds")
            o.seconds = std::stod(v);
        else if (k == "--warmup")
            o.warmup = std::stod(v);
        else if (k == "--keys")
            o.keys = std::stoi(v);
        else if (k == "--kafka-property" && v.find('=') != std::string::npos)
            o.properties[v.substr(0, v.find('='))] = v.substr(v.find('=') + 1);
        else if (k == "--out")
            o.out = v;
        else {
            std::cerr << "hydra-bench kafka-relay: unknown option " << k << "\n";
            return 2;
        }
    }
    if (o.brokers.empty()) {
        std::cerr << "hydra-bench kafka-relay: --brokers is required\n";
        return 2;
    }
    const std::string tag = std::to_string(::getpid());
    const std::string in = "floor." + tag + ".in", out = "floor." + tag + ".out";
    try {
        auto source = make_producer(o), relay_out = make_producer(o);
        // The topics exist (the broker creates them on first produce) before the consumers subscribe.
        const std::int64_t zero = 0;
        produce(*source, in, &zero, sizeof zero);
        produce(*relay_out, out, &zero, sizeof zero);
        source->flush(10000);
        relay_out->flush(10000);
        auto relay_in = make_consumer(o, "floor-relay-" + tag, in);
        auto sink = make_consumer(o, "floor-sink-" + tag, out);

        std::atomic<bool> stop{false};
        std::atomic<long> relayed{0};
        std::thread relay([&] {
            while (!stop) {
                std::unique_ptr<RdKafka::Message> m(relay_in->consume(100));
                if (m->err() == RdKafka::ERR_NO_ERROR) {
                    produce(*relay_out, out, m->payload(), m->len(), m->key());
                    ++relayed;
                }
                relay_out->poll(0);
            }
        });

        // Message: produce time (ns) and sequence number, then filler to about the cluster run's size.
        struct Record {
            std::int64_t sent_ns;
            std::int64_t seq;
            char fill[48];
        };
        // Until both consumers have joined their groups, a probe (a short record) is sent every 100 ms; the paced
        // run starts when one has come through (or fails after 30 s).
        std::atomic<long> probes_seen{0};
        std::atomic<std::int64_t> warm_end{INT64_MAX}, end{INT64_MAX};
        bench::Histogram latency;  // the sink thread's until it is joined: messages produced in the measured window
        std::atomic<long> received{0};
        std::thread sink_thread([&] {
            while (!stop) {
                std::unique_ptr<RdKafka::Message> m(sink->consume(100));
                if (m->err() != RdKafka::ERR_NO_ERROR) continue;
                if (m->len() != sizeof(Record)) {
                    ++probes_seen;
                    continue;
                }
                Record r;
                std::memcpy(&r, m->payload(), sizeof r);
                ++received;
                if (r.sent_ns >= warm_end && r.sent_ns < end) latency.record(now_ns() - r.sent_ns);
            }
        });

        for (int i = 0; probes_seen == 0; ++i) {
            if (i == 300) throw std::runtime_error("no probe came through in 30 s");
            produce(*source, in, &zero, sizeof zero);
            source->poll(0);
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        warm_end = now_ns() + static_cast<std::int64_t>(o.warmup * 1e9);
        end = warm_end + static_cast<std::int64_t>(o.seconds * 1e9);
        const std::int64_t t0 = now_ns();
        long sent = 0;
        Record r{};
        std::string key;
        std::memset(r.fill, 'x', sizeof r.fill);
        for (std::int64_t now = t0; now < end; now = now_ns()) {
            const auto due = static_cast<long>(bench::due_count(now, t0, o.rate, UINT64_MAX));
            for (; sent < due; ++sent) {
                r.sent_ns = now_ns();
                r.seq = sent;
                if (o.keys > 0) key.assign(1, 'c').append(std::to_string(sent % o.keys));
                produce(*source, in, &r, sizeof r, o.keys > 0 ? &key : nullptr);
            }
            source->poll(0);
            std::this_thread::sleep_for(std::chrono::microseconds(500));
        }
        source->flush(10000);
        // What was produced has 10 s to arrive.
        const std::int64_t deadline = now_ns() + 10'000'000'000;
        while (received < sent && now_ns() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(50));
        stop = true;
        relay.join();
        sink_thread.join();
        relay_in->close();
        sink->close();
        relay_out->flush(5000);

        bench::OJson result = {{"scenario", "kafka-relay"},
                               {"rate_requested", o.rate},
                               {"seconds", o.seconds},
                               {"produced", sent},
                               {"relayed", relayed.load()},
                               {"received", received.load()},
                               {"missing", sent - received.load()},
                               {"measured", latency.count()},
                               {"deliveries_per_s", static_cast<double>(latency.count()) / o.seconds},
                               {"latency_ms", latency.to_json_ms()}};
        std::string text = result.dump(2);
        std::cout << text << std::endl;
        if (!o.out.empty()) std::ofstream(o.out) << text << '\n';
        return result["missing"].get<long>() == 0 ? 0 : 1;
    } catch (const std::exception& e) {
        std::cerr << "hydra-bench kafka-relay: " << e.what() << "\n";
        return 1;
    }
}
