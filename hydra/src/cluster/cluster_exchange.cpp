#include "cluster/cluster_exchange.h"

#include <Poco/Base64Decoder.h>
#include <Poco/Base64Encoder.h>
#include <librdkafka/rdkafkacpp.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <stdexcept>

#include <hydra/log.h>

#include "common/request_id.h"
#include "queue/kafka/kafka_queue.h"
#include "ws/utf8.h"

namespace hydra::cluster {

namespace {

std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

void set_property(RdKafka::Conf& conf, const std::string& key, const std::string& value) {
    std::string err;
    if (conf.set(key, value, err) != RdKafka::Conf::CONF_OK)
        throw std::runtime_error("cluster: kafka property " + key + ": " + err);
}

// Raw bytes in a bus message (publish, send): a JSON string holds UTF-8 only, so other bytes travel base64-encoded
// under "<key>_b64" and arrive as they were sent (a binary message on the owner's connection).
void put_bytes(Json& m, const std::string& key, std::string_view bytes) {
    if (ws::is_valid_utf8(bytes)) {
        m[key] = std::string(bytes);
        return;
    }
    std::ostringstream out;
    Poco::Base64Encoder encoder(out);
    static_cast<Poco::Base64EncoderIOS&>(encoder).rdbuf()->setLineLength(0);
    encoder.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    encoder.close();
    m[key + "_b64"] = out.str();
}

std::string get_bytes(const Json& m, const std::string& key) {
    auto encoded = m.find(key + "_b64");
    if (encoded == m.end()) return m.at(key).get<std::string>();
    std::istringstream in(encoded->get<std::string>());
    Poco::Base64Decoder decoder(in);
    return std::string(std::istreambuf_iterator<char>(decoder), std::istreambuf_iterator<char>());
}

}  // namespace

ClusterExchange::Settings ClusterExchange::Settings::from(const Config& config, const std::string& prefix) {
    Settings s;
    s.node_id = config.str("cluster.node_id");
    if (s.node_id.empty()) s.node_id = node_id_from_file(config.str("cluster.node_id_file"));
    s.brokers = config.str("queue.kafka.brokers");
    s.properties = queue::KafkaQueue::properties_from(config);
    s.prefix = prefix;
    s.create_topics = config.boolean("queue.kafka.topics.create");
    s.partitions = static_cast<int>(config.integer("cluster.topics.partitions"));
    s.replication_factor = static_cast<int>(config.integer("cluster.topics.replication_factor"));
    s.topics_timeout = std::chrono::milliseconds(config.integer("queue.kafka.topics.timeout_ms"));
    return s;
}

std::string ClusterExchange::node_id_from_file(const std::string& path) {
    namespace fs = std::filesystem;
    static const std::regex valid("[A-Za-z0-9._-]{1,64}");
    std::ifstream in(path);
    if (in) {
        std::string id;
        std::getline(in, id);
        std::string rest;
        if (std::regex_match(id, valid) && !std::getline(in, rest)) return id;
        throw ConfigError("cluster.node_id_file: " + path +
                          " does not hold a node id (one line of 1-64 letters, digits, '.', '_', '-'): delete it "
                          "to get a new id, or set cluster.node_id");
    }
    std::error_code ec;
    if (fs::exists(path, ec)) throw ConfigError("cluster.node_id_file: " + path + ": cannot read it");
    std::string id = generate_uuid();
    id.erase(std::remove(id.begin(), id.end(), '-'), id.end());
    id.resize(std::min<std::size_t>(id.size(), 16));
    // Written whole or not at all (a temporary file renamed over), readable by this user only.
    const fs::path target(path);
    if (target.has_parent_path()) fs::create_directories(target.parent_path(), ec);
    const std::string temporary = path + ".tmp." + std::to_string(::getpid());
    auto fail = [&](const std::string& what) {
        ::unlink(temporary.c_str());
        return ConfigError("cluster.node_id_file: cannot write " + path + ": " + what +
                           " (set cluster.node_id, or "
                           "cluster.node_id_file to a writable place)");
    };
    int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) throw fail(std::strerror(errno));
    const std::string line = id + "\n";
    bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) && ::fsync(fd) == 0;
    const int saved = errno;
    ::close(fd);
    if (!ok) throw fail(std::strerror(saved));
    if (::rename(temporary.c_str(), path.c_str()) != 0) throw fail(std::strerror(errno));
    const std::string directory = target.has_parent_path() ? target.parent_path().string() : ".";
    if (int dir = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dir >= 0) {
        ::fsync(dir);  // the rename itself survives a crash
        ::close(dir);
    }
    Logger().info("cluster: node id " + id + " generated and kept in " + path);
    return id;
}

ClusterExchange::ClusterExchange(Settings settings, ws::WsExchange& local)
    : settings_(std::move(settings)),
      local_(local),
      presence_topic_(settings_.prefix + ".presence"),
      bus_topic_(settings_.prefix + ".bus") {
    std::string err;
    std::unique_ptr<RdKafka::Conf> pconf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
    set_property(*pconf, "bootstrap.servers", settings_.brokers);
    set_property(*pconf, "linger.ms", "1");  // presence and routed messages are small and latency-bound
    for (const auto& [k, v] : settings_.properties) set_property(*pconf, k, v);
    producer_.reset(RdKafka::Producer::create(pconf.get(), err));
    if (!producer_) throw std::runtime_error("cluster: cannot create the Kafka producer: " + err);

    std::unique_ptr<RdKafka::Conf> cconf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
    set_property(*cconf, "bootstrap.servers", settings_.brokers);
    for (const auto& [k, v] : settings_.properties) set_property(*cconf, k, v);
    // Partitions are assigned by hand (every host reads everything of its topics): the group only names us.
    set_property(*cconf, "group.id", settings_.prefix + ".node." + settings_.node_id);
    set_property(*cconf, "enable.auto.commit", "false");
    set_property(*cconf, "enable.partition.eof", "true");
    set_property(*cconf, "allow.auto.create.topics", "false");  // created with the Admin API in start()
    consumer_.reset(RdKafka::KafkaConsumer::create(cconf.get(), err));
    if (!consumer_) throw std::runtime_error("cluster: cannot create the Kafka consumer: " + err);

    if (settings_.create_topics) admin_ = std::make_unique<queue::KafkaAdmin>(settings_.brokers, settings_.properties);

    local_.set_presence_observer(
        [this](const std::string& uuid, const std::string& user, bool open) { on_local_presence(uuid, user, open); });

    if (settings_.metrics) {
        metrics::Registry& r = *settings_.metrics;
        routed_ = &r.counter("hydra_cluster_routed_total",
                             "Messages sent to other hosts, by operation and way (node: one host's topic; bus: all).",
                             {"kind", "via"});
        route_failures_ = &r.counter("hydra_cluster_route_failures_total",
                                     "Messages for other hosts that could not be produced (Kafka's local queue full or "
                                     "a produce error).")
                               .with({});
        collector_ = r.add_collector([this](metrics::Samples& s) {
            s.add("hydra_cluster_hosts_alive", "Hosts of the cluster seen alive (heartbeats), this one included.",
                  metrics::Type::gauge, {}, {}, static_cast<double>(live_nodes()));
            std::size_t remote = 0;
            {
                std::shared_lock lock(mutex_);
                remote = remote_.size();
            }
            s.add("hydra_cluster_presence_entries", "Connections of other hosts known from the presence topic.",
                  metrics::Type::gauge, {}, {}, static_cast<double>(remote));
            s.add("hydra_cluster_presence_dropped_total",
                  "Presence updates dropped because Kafka's local queue was full (a broker outage).",
                  metrics::Type::counter, {}, {}, static_cast<double>(presence_dropped_.load()));
        });
    }
}

ClusterExchange::~ClusterExchange() {
    collector_.reset();  // before the state it reads
    stop();
}

bool ClusterExchange::produce(const std::string& topic, const std::string& key, const std::string* value, bool wait) {
    for (int attempt = 0; attempt < 100; ++attempt) {
        RdKafka::ErrorCode rc = producer_->produce(topic, RdKafka::Topic::PARTITION_UA, RdKafka::Producer::RK_MSG_COPY,
                                                   value ? const_cast<char*>(value->data()) : nullptr,
                                                   value ? value->size() : 0, key.data(), key.size(), 0, nullptr);
        if (rc == RdKafka::ERR_NO_ERROR) return true;
        if (rc != RdKafka::ERR__QUEUE_FULL) {
            Logger().warn("cluster: produce to " + topic + " failed: " + RdKafka::err2str(rc));
            return false;
        }
        if (!wait) {
            // Presence changes come from the WebSocket I/O loops, which must not wait for a broker that is away.
            // The queue is librdkafka's (queue.buffering.max.messages); what does not fit is dropped and counted.
            const std::uint64_t n = ++presence_dropped_;
            if ((n & (n - 1)) == 0)  // the 1st, 2nd, 4th, 8th... drop: a broker outage does not flood the log
                Logger().warn("cluster: presence update dropped (Kafka's local queue is full)",
                              {{"topic", topic}, {"dropped", std::to_string(n)}});
            return false;
        }
        producer_->poll(10);  // the local queue is full: let deliveries drain
    }
    Logger().warn("cluster: produce to " + topic + " dropped: local queue full");
    return false;
}

void ClusterExchange::send_to(const std::string& node, const Json& message) {
    std::string text = dump(message);
    bool queued = produce(node_topic(node), message.value("uuid", ""), &text);
    count(message, "node", queued);
}

void ClusterExchange::to_bus(const Json& message) {
    Json m = message;
    m["origin"] = settings_.node_id;
    std::string text = dump(m);
    bool queued = produce(bus_topic_, "", &text);
    count(message, "bus", queued);
}

void ClusterExchange::count(const Json& message, const char* via, bool queued) {
    if (routed_ == nullptr) return;
    routed_->local({message.value("op", ""), via}).inc();  // ops are this file's own
    if (!queued) route_failures_->inc();
}

void ClusterExchange::on_local_presence(const std::string& uuid, const std::string& user, bool open) {
    if (!running_) return;
    if (open) {
        std::string value = Json{{"node", settings_.node_id}, {"user", user}}.dump();
        produce(presence_topic_, "conn:" + uuid, &value, false);
    } else {
        // Tombstone: compaction forgets the uuid. If it cannot be queued (broker away), it is sent with the resync.
        if (!produce(presence_topic_, "conn:" + uuid, nullptr, false)) {
            std::lock_guard lock(closed_mutex_);
            if (closed_unannounced_.size() < kMaxUnannounced) closed_unannounced_.push_back(uuid);
        }
    }
}

std::vector<queue::TopicSpec> ClusterExchange::create_topics(std::vector<queue::TopicSpec> topics, bool retry) {
    std::vector<queue::TopicSpec> failed;
    auto result = admin_->create(topics, settings_.topics_timeout, [this] { return !running_; });
    for (auto& topic : topics) {
        const std::string& error = result[topic.name];
        if (error.empty()) continue;
        // A warning the first time; the retries (every 30 s) only at debug.
        Logger().log(retry ? LogLevel::debug : LogLevel::warn,
                     "cluster: cannot create topic " + topic.name + " (" + std::to_string(topic.partitions) +
                         " partitions, replication factor " +
                         (topic.replication_factor < 0 ? std::string("of the brokers' default")
                                                       : std::to_string(topic.replication_factor)) +
                         (topic.config.empty() ? "" : ", cleanup.policy=compact") + "): " + error +
                         "; retrying in the background");
        failed.push_back(std::move(topic));
    }
    return failed;
}

// Warns when the presence topic is not compacted: created by someone else, or auto-created by a broker before we
// could create it. A broker that cannot answer DescribeConfigs (or a topic not there yet) is a debug line.
void ClusterExchange::check_presence_policy() {
    std::string error;
    auto policy = admin_->topic_config(presence_topic_, "cleanup.policy", settings_.topics_timeout, error,
                                       [this] { return !running_; });
    if (!policy) {
        if (running_) Logger().debug("cluster: cannot read the cleanup.policy of " + presence_topic_ + ": " + error);
    } else if (policy->find("compact") == std::string::npos) {
        Logger().warn("cluster: topic " + presence_topic_ + " has cleanup.policy=" + *policy +
                      ", not compact: the records of closed connections are never forgotten and every host reads "
                      "them all at start (alter it: cleanup.policy=compact)");
    }
}

// After start: the presence topic's policy is checked, topics not created at start are retried (and the policy
// checked again once they are).
void ClusterExchange::topics_loop(std::vector<queue::TopicSpec> failed) {
    check_presence_policy();
    std::unique_lock lock(stop_mutex_);
    while (running_ && !failed.empty()) {
        stop_cv_.wait_for(lock, std::chrono::seconds(30), [&] { return !running_; });
        if (!running_) return;
        lock.unlock();
        failed = create_topics(std::move(failed), true);
        if (failed.empty()) check_presence_policy();
        lock.lock();
    }
}

void ClusterExchange::start() {
    if (running_) return;
    running_ = true;
    // Our topics are created with the Admin API (never left to a broker's auto-creation, which would not compact
    // presence): presence and the bus first, then our beat, then our node topic, so that `hydra cluster gc`, which
    // lists node topics before it reads presence, never finds the topic of a starting host without its beat.
    std::vector<queue::TopicSpec> failed;
    if (admin_)
        failed = create_topics(
            {{presence_topic_, settings_.partitions, settings_.replication_factor, {{"cleanup.policy", "compact"}}},
             {bus_topic_, settings_.partitions, settings_.replication_factor, {}}});
    // A hello on the bus and on our node topic: nobody acts on it; with topics.create off it makes a broker that
    // auto-creates topics create them.
    std::string hello = Json{{"op", "hello"}, {"origin", settings_.node_id}}.dump();
    std::string beat = Json{{"ts", now_ms()}}.dump();
    produce(presence_topic_, "node:" + settings_.node_id, &beat);
    produce(bus_topic_, "", &hello);
    producer_->flush(5000);
    if (admin_) {
        auto node =
            create_topics({{node_topic(settings_.node_id), settings_.partitions, settings_.replication_factor, {}}});
        failed.insert(failed.end(), node.begin(), node.end());
        topics_ = std::thread([this, failed = std::move(failed)]() mutable { topics_loop(std::move(failed)); });
    }
    produce(node_topic(settings_.node_id), "", &hello);
    producer_->flush(5000);
    poller_ = std::thread([this] { poll_loop(); });
    heartbeat_ = std::thread([this] {
        std::unique_lock lock(stop_mutex_);
        while (running_) {
            stop_cv_.wait_for(lock, settings_.heartbeat, [&] { return !running_; });
            if (!running_) break;
            // Presence records were dropped during a broker outage: once the local queue has drained (checked before
            // this beat is queued), announce every connection of this host again so that other hosts can route to them.
            const std::uint64_t dropped = presence_dropped_.load();
            if (dropped != presence_resynced_ && producer_->outq_len() == 0) {
                presence_resynced_ = dropped;
                auto all = local_.presence();
                std::vector<std::string> closed;
                {
                    std::lock_guard closed_lock(closed_mutex_);
                    closed.swap(closed_unannounced_);
                }
                lock.unlock();
                // Never waits (a broker that goes away again drops records, counted: the next beat tries again).
                for (const auto& [uuid, user] : all) {
                    if (!running_) break;
                    std::string record = Json{{"node", settings_.node_id}, {"user", user}}.dump();
                    produce(presence_topic_, "conn:" + uuid, &record, false);
                }
                for (const auto& [uuid, user] : all)  // closed meanwhile: its tombstone may have gone out first
                    if (!local_.is_local(uuid)) closed.push_back(uuid);
                for (const std::string& uuid : closed)
                    if (!local_.is_local(uuid) && !produce(presence_topic_, "conn:" + uuid, nullptr, false)) {
                        std::lock_guard closed_lock(closed_mutex_);
                        if (closed_unannounced_.size() < kMaxUnannounced) closed_unannounced_.push_back(uuid);
                    }
                Logger().warn("cluster: presence re-announced after a Kafka outage",
                              {{"connections", std::to_string(all.size())}, {"closed", std::to_string(closed.size())}});
                lock.lock();
            }
            std::string value = Json{{"ts", now_ms()}}.dump();
            produce(presence_topic_, "node:" + settings_.node_id, &value);
            producer_->poll(0);
        }
    });
    // Give presence a moment to load so the first routed messages find their hosts (bounded; the bus covers
    // what is still unknown).
    for (int i = 0; i < 100 && !presence_loaded_; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    Logger().info("cluster: node " + settings_.node_id +
                  (presence_loaded_ ? " joined" : " started (presence still loading)"));
}

void ClusterExchange::stop() {
    if (!running_.exchange(false)) return;
    stop_cv_.notify_all();
    if (heartbeat_.joinable()) heartbeat_.join();
    if (poller_.joinable()) poller_.join();
    if (topics_.joinable()) topics_.join();
    produce(presence_topic_, "node:" + settings_.node_id, nullptr);  // others drop us at once
    producer_->flush(3000);
    consumer_->close();
}

void ClusterExchange::poll_loop() {
    bool assigned = false;
    std::map<std::int32_t, bool> presence_eof;
    while (running_) {
        if (!assigned) {
            RdKafka::Metadata* md = nullptr;
            if (producer_->metadata(true, nullptr, &md, 2000) != RdKafka::ERR_NO_ERROR || md == nullptr) {
                std::this_thread::sleep_for(std::chrono::milliseconds(500));
                continue;
            }
            std::vector<RdKafka::TopicPartition*> parts;
            std::set<std::string> found;
            for (const auto* t : *md->topics()) {
                const std::string& name = t->topic();
                if (name != presence_topic_ && name != bus_topic_ && name != node_topic(settings_.node_id)) continue;
                if (t->err() != RdKafka::ERR_NO_ERROR || t->partitions()->empty()) continue;
                found.insert(name);
                for (const auto* p : *t->partitions()) {
                    // Presence from the start (the whole map); routed messages from now on.
                    std::int64_t offset =
                        name == presence_topic_ ? RdKafka::Topic::OFFSET_BEGINNING : RdKafka::Topic::OFFSET_END;
                    parts.push_back(RdKafka::TopicPartition::create(name, p->id(), offset));
                    if (name == presence_topic_) presence_eof[p->id()] = false;
                }
            }
            delete md;
            // All three: a topic missing now (not created yet) would never be read.
            bool complete = found.size() == 3;
            if (!complete) presence_eof.clear();
            if (complete) consumer_->assign(parts);
            RdKafka::TopicPartition::destroy(parts);
            if (!complete) {
                std::this_thread::sleep_for(std::chrono::milliseconds(500));
                continue;
            }
            assigned = true;
        }
        std::unique_ptr<RdKafka::Message> msg(consumer_->consume(100));
        producer_->poll(0);
        if (!msg) continue;
        switch (msg->err()) {
            case RdKafka::ERR_NO_ERROR: {
                std::string key = msg->key() ? *msg->key() : std::string();
                std::string value(static_cast<const char*>(msg->payload()), msg->len());
                handle(msg->topic_name(), key, msg->payload() ? &value : nullptr);
                break;
            }
            case RdKafka::ERR__PARTITION_EOF:
                if (msg->topic_name() == presence_topic_ && !presence_loaded_) {
                    presence_eof[msg->partition()] = true;
                    bool all = true;
                    for (const auto& [p, eof] : presence_eof) all = all && eof;
                    if (all) presence_loaded_ = true;
                }
                break;
            case RdKafka::ERR__TIMED_OUT:
                break;
            default:
                Logger().debug("cluster: consume: " + msg->errstr());
        }
    }
}

void ClusterExchange::handle(const std::string& topic, const std::string& key, const std::string* value) {
    if (topic == presence_topic_) {
        std::unique_lock lock(mutex_);
        if (key.rfind("node:", 0) == 0) {
            std::string node = key.substr(5);
            if (value)
                last_seen_ms_[node] = now_ms();
            else
                last_seen_ms_.erase(node);
            return;
        }
        if (key.rfind("conn:", 0) != 0) return;
        std::string uuid = key.substr(5);
        auto old = remote_.find(uuid);
        if (old != remote_.end()) {
            if (!old->second.user.empty()) {
                auto u = users_.find(old->second.user);
                if (u != users_.end()) {
                    u->second.erase(uuid);
                    if (u->second.empty()) users_.erase(u);
                }
            }
            remote_.erase(old);
        }
        if (!value) return;
        Json v = parse_json_or_discarded(*value);
        if (!v.is_object()) return;
        std::string node = v.value("node", "");
        if (node.empty() || node == settings_.node_id) return;  // our own connections are known locally
        std::string user = v.value("user", "");
        remote_[uuid] = Remote{node, user};
        if (!user.empty()) users_[user].insert(uuid);
        return;
    }
    if (!value) return;
    Json m = parse_json_or_discarded(*value);
    if (!m.is_object()) return;
    if (topic == bus_topic_ && m.value("origin", "") == settings_.node_id) return;  // delivered locally already
    apply(m);
}

void ClusterExchange::apply(const Json& m) {
    std::string op = m.value("op", "");
    try {
        if (op == "notify") {
            local_.notify(m.at("uuid").get<std::string>(), m.at("data"));
        } else if (op == "notify_user") {
            local_.notify_user(m.at("user").get<std::string>(), m.at("data"));
        } else if (op == "broadcast") {
            local_.broadcast(m.at("data"));
        } else if (op == "publish") {
            local_.publish(m.at("channel").get<std::string>(), get_bytes(m, "payload"));
        } else if (op == "send") {
            local_.send(m.at("uuid").get<std::string>(), get_bytes(m, "text"));
        } else if (op == "kick") {
            local_.kick(m.at("uuid").get<std::string>(), m.at("code").get<int>(), m.at("reason").get<std::string>());
        } else if (op == "bind") {
            local_.bind(m.at("user").get<std::string>(), m.at("uuid").get<std::string>());
        } else if (op == "subscribe") {
            local_.subscribe(m.at("uuid").get<std::string>(), m.at("channel").get<std::string>());
        } else if (op == "unsubscribe") {
            local_.unsubscribe(m.at("uuid").get<std::string>(), m.at("channel").get<std::string>());
        } else if (op == "set") {
            local_.set(m.at("uuid").get<std::string>(), m.at("key").get<std::string>(), m.at("value"));
        }
    } catch (const std::exception& e) {
        Logger().warn(std::string("cluster: bad routed message ") + m.dump() + ": " + e.what());
    }
}

std::optional<std::string> ClusterExchange::owner(std::string_view uuid) const {
    if (local_.is_local(uuid)) return std::string();
    std::shared_lock lock(mutex_);
    auto it = remote_.find(std::string(uuid));
    if (it == remote_.end()) return std::nullopt;
    auto seen = last_seen_ms_.find(it->second.node);
    if (seen == last_seen_ms_.end() || now_ms() - seen->second > 3 * settings_.heartbeat.count()) return std::nullopt;
    return it->second.node;
}

bool ClusterExchange::route(std::string_view uuid, Json message) {
    message["uuid"] = std::string(uuid);
    auto node = owner(uuid);
    if (node && !node->empty()) {
        send_to(*node, message);
        return true;
    }
    if (!presence_loaded_) {  // we may not know yet: let every host try
        to_bus(message);
        return true;
    }
    return false;
}

bool ClusterExchange::notify(std::string_view uuid, const Json& data) {
    if (local_.notify(uuid, data)) return true;
    return route(uuid, {{"op", "notify"}, {"data", data}});
}

bool ClusterExchange::notify_confirmed(std::string_view uuid, const Json& data, std::function<void(bool)> written) {
    // This host's connections only: a write on another host cannot be confirmed from here, and a uuid whose owner
    // is unknown would go to the bus, where nobody may hold it. The caller learns that nothing was sent.
    return local_.notify_confirmed(uuid, data, std::move(written));
}

std::size_t ClusterExchange::broadcast(const Json& data) {
    local_.broadcast(data);
    to_bus({{"op", "broadcast"}, {"data", data}});
    return connections();
}

bool ClusterExchange::bind(std::string_view user, std::string_view uuid) {
    if (local_.bind(user, uuid)) return true;
    return route(uuid, {{"op", "bind"}, {"user", std::string(user)}});
}

std::size_t ClusterExchange::notify_user(std::string_view user, const Json& data) {
    std::size_t n = local_.notify_user(user, data);
    Json message = {{"op", "notify_user"}, {"user", std::string(user)}, {"data", data}};
    if (!presence_loaded_) {
        to_bus(message);
        return n;
    }
    std::set<std::string> nodes;
    std::int64_t now = now_ms();
    {
        std::shared_lock lock(mutex_);
        auto u = users_.find(std::string(user));
        if (u != users_.end()) {
            for (const auto& uuid : u->second) {
                const std::string& node = remote_.at(uuid).node;
                auto seen = last_seen_ms_.find(node);
                if (seen == last_seen_ms_.end() || now - seen->second > 3 * settings_.heartbeat.count()) continue;
                nodes.insert(node);
                ++n;
            }
        }
    }
    for (const auto& node : nodes) send_to(node, message);  // one message per host, not per device
    return n;
}

bool ClusterExchange::subscribe(std::string_view uuid, std::string_view channel) {
    if (local_.subscribe(uuid, channel)) return true;
    return route(uuid, {{"op", "subscribe"}, {"channel", std::string(channel)}});
}

bool ClusterExchange::unsubscribe(std::string_view uuid, std::string_view channel) {
    if (local_.unsubscribe(uuid, channel)) return true;
    return route(uuid, {{"op", "unsubscribe"}, {"channel", std::string(channel)}});
}

std::size_t ClusterExchange::publish(std::string_view channel, std::string_view payload) {
    std::size_t n = local_.publish(channel, payload);
    Json m{{"op", "publish"}, {"channel", std::string(channel)}};
    put_bytes(m, "payload", payload);
    to_bus(m);
    return n;
}

bool ClusterExchange::set(std::string_view uuid, std::string_view key, const Json& value) {
    if (local_.set(uuid, key, value)) return true;
    return route(uuid, {{"op", "set"}, {"key", std::string(key)}, {"value", value}});
}

std::optional<Json> ClusterExchange::get(std::string_view uuid, std::string_view key) const {
    return local_.get(uuid, key);
}

bool ClusterExchange::send(std::string_view uuid, std::string_view text) {
    if (local_.send(uuid, text)) return true;
    Json m{{"op", "send"}};
    put_bytes(m, "text", text);
    return route(uuid, std::move(m));
}

bool ClusterExchange::kick(std::string_view uuid, int code, std::string_view reason) {
    if (local_.kick(uuid, code, reason)) return true;
    return route(uuid, {{"op", "kick"}, {"code", code}, {"reason", std::string(reason)}});
}

std::size_t ClusterExchange::connections() const {
    std::size_t n = local_.connections();
    std::shared_lock lock(mutex_);
    std::int64_t now = now_ms();
    for (const auto& [uuid, r] : remote_) {
        auto seen = last_seen_ms_.find(r.node);
        if (seen != last_seen_ms_.end() && now - seen->second <= 3 * settings_.heartbeat.count()) ++n;
    }
    return n;
}

std::size_t ClusterExchange::channels() const { return local_.channels(); }

std::size_t ClusterExchange::live_nodes() const {
    std::shared_lock lock(mutex_);
    std::size_t n = 1;
    std::int64_t now = now_ms();
    for (const auto& [node, seen] : last_seen_ms_)
        if (node != settings_.node_id && now - seen <= 3 * settings_.heartbeat.count()) ++n;
    return n;
}

}  // namespace hydra::cluster
