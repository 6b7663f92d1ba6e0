// The end of a host: stop() at once, or drain() as `hydra run` does on SIGTERM, and hurry() for a second signal.
#include <hydra/app.h>

#include <algorithm>
#include <chrono>
#include <mutex>

#include "app/app_impl.h"

namespace hydra {

void App::stop() {
    std::lock_guard lock(impl_->lifecycle);
    if (!impl_->running) return;
    for (auto& hook : impl_->stop_hooks) hook(*this);
    // Producers first (API), then the WS server whose exchange they used.
    impl_->health->set_listening(false);
    if (impl_->admin) impl_->admin->stop();
    if (impl_->api) impl_->api->stop();
    impl_->finish_stop(std::chrono::milliseconds(impl_->config.integer("api.shutdown_timeout_ms")));
}

bool App::Impl::is_hurried() {
    std::lock_guard lock(drain_mutex);
    return hurried;
}

bool App::Impl::wait_unless_hurried(std::chrono::milliseconds limit, const std::function<bool()>& done) {
    const auto until = std::chrono::steady_clock::now() + limit;
    std::unique_lock lock(drain_mutex);
    if (!done) {  // only the time (the grace): hurry() cuts it short
        drain_cv.wait_until(lock, until, [&] { return hurried; });
        return false;
    }
    // `done` is a state other threads change without telling (the API's requests in flight, the WS connections
    // left): looked at every few milliseconds, during a drain only.
    for (;;) {
        if (hurried) return false;
        lock.unlock();
        const bool finished = done();
        lock.lock();
        if (finished) return true;
        const auto now = std::chrono::steady_clock::now();
        if (now >= until) return false;
        drain_cv.wait_for(lock,
                          std::min<std::chrono::steady_clock::duration>(until - now, std::chrono::milliseconds(5)));
    }
}

void App::Impl::finish_stop(std::chrono::milliseconds queue_grace) {
    if (api) health->forget(api->heartbeats());
    if (admin) health->forget(admin->heartbeats());
    admin.reset();
    api.reset();
    // Consumers finish their in-flight messages (they may still notify WS clients), then the writer flushes.
    health->stop_checking();
    if (queue) {
        health->forget(queue->heartbeats());
        queue->stop(queue_grace);
    }
    if (ws) {
        health->forget(ws->heartbeats());
        ws->stop();  // closing connections announces them gone to the cluster
    }
    if (cluster) cluster->stop();
    health->set_exchange(nullptr);
    ws.reset();
    cluster.reset();
    queue.reset();
    process_metrics.reset();
    metrics.reset();
    running = false;
}

void App::hurry() {
    {
        std::lock_guard lock(impl_->drain_mutex);
        impl_->hurried = true;
    }
    impl_->drain_cv.notify_all();
}

void App::drain() {
    using std::chrono::milliseconds;
    std::lock_guard lock(impl_->lifecycle);
    if (!impl_->running) return;
    Impl& m = *impl_;
    const Config& cfg = m.config;
    const auto deadline = std::chrono::steady_clock::now() + milliseconds(cfg.integer("shutdown.timeout_ms"));
    // What is left of shutdown.timeout_ms, at most `limit`.
    auto within = [&](milliseconds limit) {
        auto left = std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
        return std::clamp(left, milliseconds(0), limit);
    };
    const milliseconds grace(cfg.integer("shutdown.grace_ms"));
    const milliseconds spread(cfg.boolean("ws.enabled") ? cfg.integer("ws.drain_ms") : 0);
    const milliseconds in_flight(cfg.integer("api.shutdown_timeout_ms"));

    // 1. Unready at once; still serving, so that load balancers notice before connections are refused.
    m.health->set_draining(true);
    Logger().info("draining: /readyz answers 503; accepting " + std::to_string(grace.count()) + " ms more");
    m.wait_unless_hurried(within(grace), {});

    // 2. The API and WS listeners stop accepting (the admin listener serves on: probes, operators). WS clients are
    // closed one after the other over ws.drain_ms meanwhile; API requests in flight are answered.
    for (auto& hook : m.stop_hooks) hook(*this);
    Logger().info("draining: no new connections; closing WebSocket clients over " + std::to_string(spread.count()) +
                  " ms");
    if (m.ws) m.ws->drain(m.is_hurried() ? milliseconds(0) : within(spread));
    if (m.api) {
        m.api->wind_down();
        m.wait_unless_hurried(within(in_flight), [&] { return m.api->idle(); });
        m.health->forget(m.api->heartbeats());
        m.api->stop(milliseconds(0));
    }
    m.health->set_listening(false);

    // 3. The WebSocket clients' turns (a second signal: all of them now), then the close handshakes.
    if (m.ws) {
        const milliseconds close_wait(2000);  // ws close_timeout_ms: the last one's answer
        if (!m.wait_unless_hurried(within(spread + close_wait), [&] { return m.ws->open_connections() == 0; }))
            m.ws->hurry();
    }
    // 4. MQC takes nothing more; in-flight handlers finish and their outcome is committed. After the WebSocket
    // clients: until their turn came they could still push (the writer runs until here).
    if (m.queue && cfg.boolean("mqc.enabled")) {
        m.health->forget(m.queue->heartbeats());
        m.queue->stop(m.is_hurried() ? milliseconds(0) : within(in_flight));
    }
    if (m.admin) m.admin->stop(within(in_flight));
    m.finish_stop(milliseconds(0));
    Logger().info("drained");
}

}  // namespace hydra
