#include "api/http_server.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>

#include <hydra/log.h>

#include "api/http_loop.h"
#include "net/socket.h"
#include "net/worker_pool.h"

namespace hydra::http {

Server::Server(Settings settings, Handler handler, ErrorPage error_page, LoopHandler loop_handler)
    : settings_(std::move(settings)),
      handler_(std::move(handler)),
      error_page_(std::move(error_page)),
      loop_handler_(std::move(loop_handler)),
      calls_(std::make_shared<const Calls>(Calls{handler_, error_page_})) {}

Server::~Server() { stop(std::chrono::milliseconds(0)); }

void Server::start() {
    std::signal(SIGPIPE, SIG_IGN);
    ListenSocket l = listen_tcp(settings_.address, 4096);
    listen_fd_ = l.fd;
    bound_ = l.bound;
    ClientLimits::Settings ls{settings_.max_connections_per_ip, settings_.requests_per_s, settings_.burst};
    if (ClientLimits(ls).enabled()) limits_ = std::make_unique<ClientLimits>(ls);
    workers_ = std::make_unique<WorkerPool>(static_cast<std::size_t>(std::max(1, settings_.workers)), "api-worker");
    for (int i = 0; i < std::max(1, settings_.io_threads); ++i) loops_.push_back(std::make_shared<Loop>(*this, i));
    for (auto& lp : loops_) {
        lp->loop.add(listen_fd_, EPOLLIN | EPOLLEXCLUSIVE, lp.get());
        lp->listening = true;
        lp->loop.start();
    }
    started_ = true;
}

bool Server::set_rate(int requests_per_s, int burst) {
    if (!limits_) return false;
    limits_->set_rate(requests_per_s, burst);
    return true;
}

Heartbeats Server::heartbeats() const {
    Heartbeats beats;
    for (const auto& lp : loops_) beats.emplace_back(lp->loop.thread_name(), lp->loop.heartbeat());
    return beats;
}

void Server::wind_down() {
    if (!started_) return;
    for (auto& lp : loops_) {
        Loop* l = lp.get();
        l->loop.post([l] {
            l->stop_accepting();
            l->draining = true;
            l->read_pending();  // a request that arrived is not taken for idleness
            std::vector<Connection*> idle;
            for (auto& [id, c] : l->connections)
                if (c->state == Connection::State::head && c->request_started_ms == 0 && c->out.empty())
                    idle.push_back(c.get());
            for (Connection* c : idle) l->destroy(*c);
            l->server.notify_if_idle();  // (nothing left to close here: the last of it may have gone before)
        });
    }
    if (listen_fd_ >= 0) {
        // Refuse new connections right away (closing the socket only after the loops no longer watch it).
        ::shutdown(listen_fd_, SHUT_RD);
    }
}

void Server::notify_if_idle() {
    if (!idle()) return;
    std::lock_guard lock(idle_mutex_);  // (stop() is between its look at idle() and its wait, or waiting)
    idle_cv_.notify_all();
}

void Server::stop(std::chrono::milliseconds grace) {
    if (!started_) return;
    // 1. Stop accepting; idle connections close at once, busy ones after their current response.
    wind_down();
    started_ = false;
    // 2. Requests in flight finish and are answered. A timed wait: `grace` (api.shutdown_timeout_ms) is how long the
    // operator lets them run.
    const auto deadline = std::chrono::steady_clock::now() + grace;
    {
        std::unique_lock lock(idle_mutex_);
        idle_cv_.wait_until(lock, deadline, [this] { return idle(); });
    }
    if (in_flight_.load() > 0)
        Logger().warn("api: " + std::to_string(in_flight_.load()) +
                      " request(s) still running after the shutdown timeout; their clients are disconnected");
    // 3. Stop the loops and close what is left.
    for (auto& lp : loops_) lp->loop.stop();
    for (auto& lp : loops_) {
        std::vector<Connection*> all;
        for (auto& [id, c] : lp->connections) all.push_back(c.get());
        for (Connection* c : all) lp->destroy(*c);
        lp->graveyard.clear();
    }
    if (listen_fd_ >= 0) ::close(listen_fd_);
    listen_fd_ = -1;
    // A handler still running past the grace keeps its thread (let go by the pool) and what it reaches; the pool
    // itself goes now.
    workers_->stop(deadline);
    workers_.reset();
    // An answer still to come (a handler thread's, an async reply) finds its loop gone and is dropped.
    loops_.clear();
}

}  // namespace hydra::http
