// One I/O loop of the WS server: an EventLoop, the connections it owns, its share of the listening socket, the
// tick (timeouts, pings, a drain's pace), the upgrade (upgrade.cpp) and the hand-off of messages to handlers
// (dispatch.cpp). Also the server's metrics, resolved once.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "metrics/metrics.h"
#include "net/event_loop.h"
#include "ws/connection.h"
#include "ws/handshake.h"
#include "ws/ws_server.h"

namespace hydra::ws {

// Series resolved once at construction (label values from the routes), except close codes, resolved per loop on
// first use. Codes a client can choose are folded into a bounded set.
struct WsServer::Metrics {
    Metrics(metrics::Registry& r, const WsRoutes& routes);
    // 1000-1015 as they are; application codes by range; anything else "other".
    static std::string code_label(std::uint16_t code);

    metrics::Registry& registry;
    metrics::Counter &messages_in, &messages_out, &bytes_in, &bytes_out, &overflows, &rate_limited;
    metrics::Family<metrics::Counter>& upgrades;
    metrics::Family<metrics::Counter>& closes;
    metrics::Family<metrics::Histogram>& handler;
    metrics::Counter* accepted = nullptr;
    std::unordered_map<const WsEndpoint*, metrics::Gauge*> connections;  // read-only after construction
    std::unordered_map<std::string, metrics::Histogram*> handlers;       // by service
    std::unordered_map<const WsEndpoint*, metrics::Histogram*> endpoint_handlers;
};

struct WsServer::Loop : EventLoop::Handler {
    Loop(WsServer& s, int index, int tick_ms);

    // Listening socket readable.
    void on_events(std::uint32_t) override { accept_all(); }

    std::int64_t now_ms() const { return loop.now_ms(); }
    const Settings& settings() const { return server.settings_; }
    Connection* find(std::uint64_t id) {
        auto it = connections.find(id);
        return it == connections.end() ? nullptr : it->second.get();
    }

    // --- connections (loop.cpp)
    void accept_all();
    void reject(int fd, const std::string& answer);
    void on_tick();
    void schedule_flush(Connection& c);
    void schedule_end_of_iteration();
    // The end of a connection, however it came: socket closed, exchange entry removed (after on_close), counted.
    void destroy(Connection& c, std::uint16_t code, const std::string& reason);
    // A connection whose close handshake never finished (deadline, stop): reset it, do not linger.
    void give_up(Connection& c);
    void report_error(const Connection& c, const std::string& error);
    void stop_accepting();
    // Close handshake with every connection now (dropped when not upgraded yet).
    void close_all(std::uint16_t code, const std::string& reason);
    // WsServer::drain on this loop: the open connections are closed one after the other over `spread_ms`.
    void begin_drain(std::int64_t spread_ms);
    void drain_due();  // closes those whose turn has come (on_tick)

    // --- the upgrade (upgrade.cpp)
    void handle_handshake(Connection& c);
    bool origin_allowed(const UpgradeRequest& req) const;
    // The uuid the request may claim under ws.client_uuid ("" = none): a trusted X-Request-Id or a resume token's.
    std::string claimed_uuid(const UpgradeRequest& req, const Headers& headers) const;
    void register_uuid(Connection& c, const std::string& claimed);
    void accept_upgrade(Connection& c);
    void reject_upgrade(Connection& c, int status, const std::string& reason, const HeaderFields& extra = {});
    // ws.auth=jwt: checks the upgrade's token; false when it was refused (the 401 is queued).
    bool authenticate(Connection& c, const UpgradeRequest& req);
    // Loop time at which a token with this exp runs out (exp + leeway).
    std::int64_t expiry_ms(double exp) const;
    // The /auth/refresh service (on a worker): the reply, and the new claims handed to this loop.
    std::string refresh(const Json& request, const Context::Init& init, std::uint64_t id);

    // --- messages to handlers (dispatch.cpp)
    void dispatch(Connection& c, std::string data, bool binary);
    void on_handled(std::uint64_t id, Frame reply);

    WsServer& server;
    EventLoop loop;
    std::uint64_t index;
    std::uint64_t next_id = 1;
    bool accepting = true;
    bool listening = false;
    std::unordered_map<std::uint64_t, std::unique_ptr<Connection>> connections;
    std::vector<std::unique_ptr<Connection>> graveyard;  // freed at the end of the iteration
    std::vector<std::uint64_t> flush_list;
    bool flush_scheduled = false;
    IoBatch io;  // the writes of the flush list, in one system call
    std::vector<std::uint8_t> read_buffer;
    Metrics* metrics;                                             // null: count nothing
    std::unordered_map<std::uint16_t, metrics::Counter*> closes;  // hydra_ws_closes_total by code, this loop's
    // A drain: the connections open when it began, closed in this order at evenly spread times.
    bool draining = false;
    std::vector<std::uint64_t> drain_order;
    std::size_t drain_next = 0;
    std::int64_t drain_start_ms = 0;
    std::int64_t drain_spread_ms = 0;
};

}  // namespace hydra::ws
