#include "queue/kafka/admin.h"

#include <librdkafka/rdkafka.h>

#include <stdexcept>

#include <hydra/log.h>

#include "queue/kafka/conf.h"

namespace hydra::queue {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// librdkafka's own logs and errors of the admin handle: debug lines (the queue's producer reports the brokers' state).
void log_cb(const rd_kafka_t*, int, const char* fac, const char* buf) {
    if (Logger::enabled(LogLevel::debug)) Logger().debug(std::string("kafka admin: ") + fac + ": " + buf);
}

void error_cb(rd_kafka_t*, int, const char* reason, void*) {
    if (Logger::enabled(LogLevel::debug)) Logger().debug(std::string("kafka admin: ") + reason);
}

struct Options {
    rd_kafka_AdminOptions_t* options;
    Options(rd_kafka_t* rk, rd_kafka_admin_op_t op, std::chrono::milliseconds timeout)
        : options(rd_kafka_AdminOptions_new(rk, op)) {
        char err[256];
        rd_kafka_AdminOptions_set_request_timeout(options, static_cast<int>(timeout.count()), err, sizeof err);
        if (op == RD_KAFKA_ADMIN_OP_CREATETOPICS || op == RD_KAFKA_ADMIN_OP_DELETETOPICS)
            rd_kafka_AdminOptions_set_operation_timeout(options, static_cast<int>(timeout.count()), err, sizeof err);
    }
    ~Options() { rd_kafka_AdminOptions_destroy(options); }
    Options(const Options&) = delete;
    Options& operator=(const Options&) = delete;
};

// The result event of one admin request, or nullptr when it did not come in time (the request's own timeout plus a
// margin: librdkafka fails it itself at its timeout) or `cancelled` said so.
rd_kafka_event_t* await(rd_kafka_queue_t* queue, std::chrono::milliseconds timeout,
                        const std::function<bool()>& cancelled) {
    auto deadline = Clock::now() + timeout + 2s;
    while (Clock::now() < deadline) {
        if (rd_kafka_event_t* event = rd_kafka_queue_poll(queue, 100)) return event;
        if (cancelled && cancelled()) return nullptr;
    }
    return nullptr;
}

std::string event_error(rd_kafka_event_t* event) {
    const char* text = rd_kafka_event_error_string(event);
    return text && *text ? text : rd_kafka_err2str(rd_kafka_event_error(event));
}

std::string result_error(rd_kafka_resp_err_t err, const char* text) {
    return text && *text ? std::string(text) : std::string(rd_kafka_err2str(err));
}

}  // namespace

// CreateTopics and DeleteTopics go to the controller. A cluster whose metadata names a controller that is not among
// its brokers (librdkafka's mock cluster, a cluster in the middle of an election) would keep them waiting for the
// whole timeout: say so at once instead.
std::string KafkaAdmin::controller_problem(std::chrono::milliseconds timeout) {
    const rd_kafka_metadata_t* metadata = nullptr;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk_, 0, nullptr, &metadata, static_cast<int>(timeout.count()));
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) return std::string("brokers unreachable: ") + rd_kafka_err2str(err);
    const std::int32_t controller = rd_kafka_controllerid(rk_, 0);
    bool found = false;
    for (int i = 0; i < metadata->broker_cnt; ++i) found = found || metadata->brokers[i].id == controller;
    rd_kafka_metadata_destroy(metadata);
    if (found) return {};
    return "the brokers name no reachable controller (id " + std::to_string(controller) +
           "): they cannot create or delete topics";
}

KafkaAdmin::KafkaAdmin(const std::string& brokers, const std::map<std::string, std::string>& properties) {
    std::map<std::string, std::string> all = properties;
    all.try_emplace("bootstrap.servers", brokers);  // a bootstrap.servers among the properties wins
    std::string error;
    rd_kafka_conf_t* conf = kafka::new_conf(all, error);
    if (!conf) throw std::runtime_error("kafka admin: " + error);
    char err[512];
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    rk_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk_) {
        rd_kafka_conf_destroy(conf);
        throw std::runtime_error("kafka admin: " + std::string(err));
    }
}

KafkaAdmin::~KafkaAdmin() { rd_kafka_destroy(rk_); }

std::map<std::string, std::string> KafkaAdmin::create(const std::vector<TopicSpec>& topics,
                                                      std::chrono::milliseconds timeout,
                                                      const std::function<bool()>& cancelled) {
    std::map<std::string, std::string> result;
    std::vector<rd_kafka_NewTopic_t*> requested;
    char err[512];
    for (const TopicSpec& topic : topics) {
        rd_kafka_NewTopic_t* t =
            rd_kafka_NewTopic_new(topic.name.c_str(), topic.partitions, topic.replication_factor, err, sizeof err);
        if (!t) {
            result[topic.name] = err;
            continue;
        }
        for (const auto& [name, value] : topic.config) rd_kafka_NewTopic_set_config(t, name.c_str(), value.c_str());
        requested.push_back(t);
        result[topic.name] = "timed out";
    }
    if (requested.empty()) return result;
    if (std::string problem = controller_problem(timeout); !problem.empty()) {
        rd_kafka_NewTopic_destroy_array(requested.data(), requested.size());
        for (auto& [name, error] : result)
            if (error == "timed out") error = problem;
        return result;
    }
    Options options(rk_, RD_KAFKA_ADMIN_OP_CREATETOPICS, timeout);
    rd_kafka_queue_t* queue = rd_kafka_queue_new(rk_);
    rd_kafka_CreateTopics(rk_, requested.data(), requested.size(), options.options, queue);
    rd_kafka_NewTopic_destroy_array(requested.data(), requested.size());
    rd_kafka_event_t* event = await(queue, timeout, cancelled);
    if (!event) {
        if (cancelled && cancelled())
            for (auto& [name, error] : result)
                if (error == "timed out") error = "cancelled";
    } else if (rd_kafka_event_error(event)) {
        std::string reason = event_error(event);
        for (auto& [name, error] : result)
            if (error == "timed out") error = reason;
    } else {
        std::size_t n = 0;
        const rd_kafka_topic_result_t** done =
            rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(event), &n);
        for (std::size_t i = 0; i < n; ++i) {
            rd_kafka_resp_err_t code = rd_kafka_topic_result_error(done[i]);
            const char* name = rd_kafka_topic_result_name(done[i]);
            if (code == RD_KAFKA_RESP_ERR_NO_ERROR || code == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
                result[name].clear();
                Logger().debug(std::string("kafka admin: topic ") + name +
                               (code == RD_KAFKA_RESP_ERR_NO_ERROR ? " created" : " exists"));
            } else {
                result[name] = result_error(code, rd_kafka_topic_result_error_string(done[i]));
            }
        }
    }
    if (event) rd_kafka_event_destroy(event);
    rd_kafka_queue_destroy(queue);
    return result;
}

std::optional<std::string> KafkaAdmin::topic_config(const std::string& topic, const std::string& name,
                                                    std::chrono::milliseconds timeout, std::string& error,
                                                    const std::function<bool()>& cancelled) {
    rd_kafka_ConfigResource_t* resource = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topic.c_str());
    Options options(rk_, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS, timeout);
    rd_kafka_queue_t* queue = rd_kafka_queue_new(rk_);
    rd_kafka_DescribeConfigs(rk_, &resource, 1, options.options, queue);
    rd_kafka_ConfigResource_destroy(resource);
    rd_kafka_event_t* event = await(queue, timeout, cancelled);
    std::optional<std::string> value;
    error = "timed out";
    if (event && rd_kafka_event_error(event)) {
        error = event_error(event);
    } else if (event) {
        std::size_t n = 0;
        const rd_kafka_ConfigResource_t** resources =
            rd_kafka_DescribeConfigs_result_resources(rd_kafka_event_DescribeConfigs_result(event), &n);
        error = "not in the answer";
        for (std::size_t i = 0; i < n; ++i) {
            if (rd_kafka_ConfigResource_error(resources[i])) {
                error = result_error(rd_kafka_ConfigResource_error(resources[i]),
                                     rd_kafka_ConfigResource_error_string(resources[i]));
                continue;
            }
            std::size_t entries = 0;
            const rd_kafka_ConfigEntry_t** configs = rd_kafka_ConfigResource_configs(resources[i], &entries);
            for (std::size_t j = 0; j < entries; ++j) {
                if (name != rd_kafka_ConfigEntry_name(configs[j])) continue;
                const char* v = rd_kafka_ConfigEntry_value(configs[j]);
                value = v ? v : "";
                error.clear();
            }
        }
    }
    if (event) rd_kafka_event_destroy(event);
    rd_kafka_queue_destroy(queue);
    return value;
}

std::map<std::string, std::string> KafkaAdmin::remove(const std::vector<std::string>& topics,
                                                      std::chrono::milliseconds timeout) {
    std::map<std::string, std::string> result;
    if (topics.empty()) return result;
    if (std::string problem = controller_problem(timeout); !problem.empty()) {
        for (const std::string& topic : topics) result[topic] = problem;
        return result;
    }
    std::vector<rd_kafka_DeleteTopic_t*> requested;
    for (const std::string& topic : topics) {
        requested.push_back(rd_kafka_DeleteTopic_new(topic.c_str()));
        result[topic] = "timed out";
    }
    Options options(rk_, RD_KAFKA_ADMIN_OP_DELETETOPICS, timeout);
    rd_kafka_queue_t* queue = rd_kafka_queue_new(rk_);
    rd_kafka_DeleteTopics(rk_, requested.data(), requested.size(), options.options, queue);
    rd_kafka_DeleteTopic_destroy_array(requested.data(), requested.size());
    rd_kafka_event_t* event = await(queue, timeout, {});
    if (event && rd_kafka_event_error(event)) {
        std::string reason = event_error(event);
        for (auto& [name, error] : result) error = reason;
    } else if (event) {
        std::size_t n = 0;
        const rd_kafka_topic_result_t** done =
            rd_kafka_DeleteTopics_result_topics(rd_kafka_event_DeleteTopics_result(event), &n);
        for (std::size_t i = 0; i < n; ++i) {
            rd_kafka_resp_err_t code = rd_kafka_topic_result_error(done[i]);
            const char* name = rd_kafka_topic_result_name(done[i]);
            if (code == RD_KAFKA_RESP_ERR_NO_ERROR || code == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
                result[name].clear();
            else
                result[name] = result_error(code, rd_kafka_topic_result_error_string(done[i]));
        }
    }
    if (event) rd_kafka_event_destroy(event);
    rd_kafka_queue_destroy(queue);
    return result;
}

std::optional<std::map<std::string, int>> KafkaAdmin::topics(std::chrono::milliseconds timeout, std::string& error) {
    const rd_kafka_metadata_t* metadata = nullptr;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk_, 1, nullptr, &metadata, static_cast<int>(timeout.count()));
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        error = rd_kafka_err2str(err);
        return std::nullopt;
    }
    std::map<std::string, int> all;
    for (int i = 0; i < metadata->topic_cnt; ++i)
        if (metadata->topics[i].err == RD_KAFKA_RESP_ERR_NO_ERROR)
            all[metadata->topics[i].topic] = metadata->topics[i].partition_cnt;
    rd_kafka_metadata_destroy(metadata);
    return all;
}

// ---------------------------------------------------------------------------------------------------------------

TopicKeeper::TopicKeeper(std::shared_ptr<KafkaAdmin> admin, Settings settings)
    : admin_(std::move(admin)), settings_(settings), thread_([this] { run(); }) {}

TopicKeeper::~TopicKeeper() {
    {
        std::lock_guard lock(mutex_);
        stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
}

void TopicKeeper::ensure(const std::string& topic) {
    std::lock_guard lock(mutex_);
    if (!asked_.insert(topic).second) return;
    pending_.insert(topic);
    fresh_ = true;
    cv_.notify_all();
}

void TopicKeeper::created(const std::string& topic) {
    std::lock_guard lock(mutex_);
    asked_.insert(topic);
}

bool TopicKeeper::settled() const {
    std::lock_guard lock(mutex_);
    return pending_.empty();
}

void TopicKeeper::run() {
    std::unique_lock lock(mutex_);
    constexpr Clock::time_point kNever = Clock::time_point::max();
    Clock::time_point retry_at = kNever;  // (not an optional: GCC's -O2 warns it may be read uninitialised)
    while (!stop_) {
        auto due = [&] { return stop_ || fresh_ || Clock::now() >= retry_at; };
        if (retry_at != kNever)
            cv_.wait_until(lock, retry_at, due);
        else
            cv_.wait(lock, due);
        if (stop_) break;
        fresh_ = false;
        std::vector<TopicSpec> specs;
        for (const std::string& name : pending_)
            specs.push_back({name, settings_.partitions, settings_.replication_factor, {}});
        lock.unlock();
        auto result = admin_->create(specs, settings_.timeout, [this] {
            std::lock_guard stop_lock(mutex_);
            return stop_;
        });
        lock.lock();
        if (stop_) break;
        for (const auto& [name, error] : result) {
            if (error.empty()) {
                pending_.erase(name);
                continue;
            }
            std::string message = "queue: kafka: cannot create topic " + name + " (" +
                                  std::to_string(settings_.partitions) + " partitions, replication factor " +
                                  (settings_.replication_factor < 0 ? std::string("of the brokers' default")
                                                                    : std::to_string(settings_.replication_factor)) +
                                  "): " + error + "; retrying every " + std::to_string(settings_.retry.count() / 1000) +
                                  " s";
            if (warned_.insert(name).second)
                Logger().warn(message);
            else
                Logger().debug(message);
        }
        if (pending_.empty())
            retry_at = kNever;
        else
            retry_at = Clock::now() + settings_.retry;
    }
}

}  // namespace hydra::queue
