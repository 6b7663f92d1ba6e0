#include "cluster/cluster_exchange.h"

#include <Poco/Base64Decoder.h>
#include <Poco/Base64Encoder.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <stdexcept>

#include <hydra/log.h>

#include "core/request_id.h"
#include "queue/kafka/kafka_queue.h"
#include "ws/utf8.h"

namespace hydra::cluster {

namespace {

std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
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

namespace {

Bus::Settings bus_settings(const ClusterExchange::Settings& s) {
    return {s.node_id,       s.brokers,    s.properties,         s.prefix,        s.heartbeat,
            s.create_topics, s.partitions, s.replication_factor, s.topics_timeout};
}

}  // namespace

ClusterExchange::ClusterExchange(Settings settings, ws::WsExchange& local)
    : settings_(std::move(settings)),
      local_(local),
      presence_(settings_.node_id, settings_.heartbeat),
      bus_(bus_settings(settings_)) {
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
            s.add("hydra_cluster_presence_entries", "Connections of other hosts known from the presence topic.",
                  metrics::Type::gauge, {}, {}, static_cast<double>(presence_.entries()));
            s.add("hydra_cluster_presence_dropped_total",
                  "Presence updates dropped because Kafka's local queue was full (a broker outage).",
                  metrics::Type::counter, {}, {}, static_cast<double>(bus_.dropped()));
        });
    }
}

ClusterExchange::~ClusterExchange() {
    collector_.reset();  // before the state it reads
    stop();
}

void ClusterExchange::send_to(const std::string& node, const Json& message) {
    std::string text = dump(message);
    bool queued = bus_.produce(bus_.node_topic(node), message.value("uuid", ""), &text);
    count(message, "node", queued);
}

void ClusterExchange::to_bus(const Json& message) {
    Json m = message;
    m["origin"] = settings_.node_id;
    std::string text = dump(m);
    bool queued = bus_.produce(bus_.bus_topic(), "", &text);
    count(message, "bus", queued);
}

void ClusterExchange::count(const Json& message, const char* via, bool queued) {
    if (routed_ == nullptr) return;
    routed_->local({message.value("op", ""), via}).inc();  // ops are this file's own
    if (!queued) route_failures_->inc();
}

void ClusterExchange::on_local_presence(const std::string& uuid, const std::string& user, bool open) {
    if (!bus_.running()) return;
    if (open) {
        std::string value = Json{{"node", settings_.node_id}, {"user", user}}.dump();
        bus_.produce(bus_.presence_topic(), "conn:" + uuid, &value, false);
    } else {
        // Tombstone: compaction forgets the uuid. If it cannot be queued (broker away), it is sent with the resync.
        if (!bus_.produce(bus_.presence_topic(), "conn:" + uuid, nullptr, false)) {
            std::lock_guard lock(closed_mutex_);
            if (closed_unannounced_.size() < kMaxUnannounced) closed_unannounced_.push_back(uuid);
        }
    }
}

void ClusterExchange::resync_presence() {
    const std::uint64_t dropped = bus_.dropped();
    if (dropped == presence_resynced_ || bus_.unsent() != 0) return;
    presence_resynced_ = dropped;
    auto all = local_.presence();
    std::vector<std::string> closed;
    {
        std::lock_guard lock(closed_mutex_);
        closed.swap(closed_unannounced_);
    }
    // Never waits (a broker that goes away again drops records, counted: the next beat tries again).
    for (const auto& [uuid, user] : all) {
        if (!bus_.running()) break;
        std::string record = Json{{"node", settings_.node_id}, {"user", user}}.dump();
        bus_.produce(bus_.presence_topic(), "conn:" + uuid, &record, false);
    }
    for (const auto& [uuid, user] : all)  // closed meanwhile: its tombstone may have gone out first
        if (!local_.is_local(uuid)) closed.push_back(uuid);
    for (const std::string& uuid : closed)
        if (!local_.is_local(uuid) && !bus_.produce(bus_.presence_topic(), "conn:" + uuid, nullptr, false)) {
            std::lock_guard lock(closed_mutex_);
            if (closed_unannounced_.size() < kMaxUnannounced) closed_unannounced_.push_back(uuid);
        }
    Logger().warn("cluster: presence re-announced after a Kafka outage",
                  {{"connections", std::to_string(all.size())}, {"closed", std::to_string(closed.size())}});
}

void ClusterExchange::start() {
    bus_.start([this](const std::string& topic, const std::string& key,
                      const std::string* value) { handle(topic, key, value); },
               [this] { resync_presence(); });
    Logger().info("cluster: node " + settings_.node_id +
                  (bus_.presence_loaded() ? " joined" : " started (presence still loading)"));
}

void ClusterExchange::stop() { bus_.stop(); }

void ClusterExchange::handle(const std::string& topic, const std::string& key, const std::string* value) {
    if (topic == bus_.presence_topic()) {
        presence_.apply(key, value, now_ms());
        return;
    }
    if (!value) return;
    Json m = parse_json_or_discarded(*value);
    if (!m.is_object()) return;
    if (topic == bus_.bus_topic() && m.value("origin", "") == settings_.node_id) return;  // delivered locally already
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
    return presence_.owner(uuid, now_ms());
}

bool ClusterExchange::route(std::string_view uuid, Json message) {
    message["uuid"] = std::string(uuid);
    auto node = owner(uuid);
    if (node && !node->empty()) {
        send_to(*node, message);
        return true;
    }
    if (!bus_.presence_loaded()) {  // we may not know yet: let every host try
        to_bus(message);
        return true;
    }
    return false;
}

bool ClusterExchange::notify(std::string_view uuid, const Json& data) {
    if (local_.notify(uuid, data)) return true;
    return route(uuid, {{"op", "notify"}, {"data", data}});
}

bool ClusterExchange::notify_json(std::string_view uuid, std::string_view data_json) {
    if (local_.notify_json(uuid, data_json)) return true;
    return route(uuid, {{"op", "notify"}, {"data", parse_json(data_json)}});
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
    if (!bus_.presence_loaded()) {
        to_bus(message);
        return n;
    }
    Presence::UserHosts remote = presence_.hosts_of(user, now_ms());
    for (const auto& node : remote.hosts) send_to(node, message);  // one message per host, not per device
    return n + remote.connections;
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

std::size_t ClusterExchange::connections() const { return local_.connections() + presence_.connections(now_ms()); }

std::size_t ClusterExchange::channels() const { return local_.channels(); }

std::size_t ClusterExchange::live_nodes() const { return presence_.live_hosts(now_ms()); }

}  // namespace hydra::cluster
