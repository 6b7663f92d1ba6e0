#include "mqc/consumer.h"

#include <pthread.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include <hydra/log.h>

namespace hydra::mqc {

std::chrono::milliseconds RetryPolicy::delay_after(int attempt) const {
    std::int64_t ms = backoff.count();
    for (int i = 1; i < attempt && ms < max_backoff.count(); ++i) ms *= 2;
    return std::chrono::milliseconds(std::min<std::int64_t>(ms, max_backoff.count()));
}

RetryPolicy RetryPolicy::from(const Config& config) {
    RetryPolicy retry;
    retry.max_attempts = static_cast<int>(config.integer("queue.max_attempts"));
    retry.backoff = std::chrono::milliseconds(config.integer("queue.retry_backoff_ms"));
    return retry;
}

namespace {

using Clock = std::chrono::steady_clock;
using queue::Delivery;

// One route's series, resolved at subscription.
struct RouteMetrics {
    RouteMetrics(metrics::Registry& r, const std::string& route)
        : ok(r.counter("hydra_mqc_handled_total", "Messages handled, by route and result (ok, failed).",
                       {"route", "result"})
                 .with({route, "ok"})),
          failed(r.counter("hydra_mqc_handled_total", "", {"route", "result"}).with({route, "failed"})),
          retries(
              r.counter("hydra_mqc_retries_total", "Failed attempts that will be retried after a backoff.", {"route"})
                  .with({route})),
          dead(r.counter("hydra_mqc_dead_letters_total",
                         "Messages moved to the dead letters after their last attempt failed.", {"route"})
                   .with({route})),
          duration(r.histogram("hydra_mqc_handler_duration_seconds", "Time an MQC handler took, by route.", {"route"})
                       .with({route})) {}

    metrics::Counter &ok, &failed, &retries, &dead;
    metrics::Histogram& duration;
};

// The kOrderKeyHeader header of a delivered message as a hash (0: none). SQLite's headers are decoded on the handler
// thread, unless they hold an order key: a cheap look first.
std::size_t order_key_of(Delivery& d) {
    if (d.message.headers.empty() && d.stored_headers.find(kOrderKeyHeader) == std::string::npos) return 0;
    queue::decode_headers(d);
    auto it = d.message.headers.find(std::string(kOrderKeyHeader));
    if (it == d.message.headers.end()) return 0;
    const std::size_t hash = std::hash<std::string>{}(it->second);
    return hash == 0 ? 1 : hash;
}

// One subscription: what the backend delivered waits in `waiting_` (oldest first), `concurrency` handler threads
// take it from there — the oldest message whose order key (if any) is not in another handler's hands. Taking a
// batch ahead keeps the handlers busy while the backend leases or polls the next one.
class Lane final : public queue::Sink {
  public:
    Lane(queue::Backend& backend, Subscription sub, RetryPolicy retry, metrics::Registry* registry)
        : backend_(backend),
          sub_(std::move(sub)),
          retry_(retry),
          max_attempts_(std::max(1, retry.max_attempts)),
          concurrency_(std::max(1, sub_.concurrency)),
          // Enough ahead for the handlers to keep busy while the next lease commits; bounded, because a message
          // waiting here uses up its lease. A nonblocking route runs its messages on the delivering thread (only
          // order-key conflicts and last attempts wait here): the most, so that a transaction's pushes are handed
          // over in it rather than left to a lease of their own (7-10 % more deliveries/s in a closed loop).
          capacity_(sub_.nonblocking ? 512 : static_cast<std::size_t>(std::clamp(8 * concurrency_, 32, 512))) {
        if (registry != nullptr)
            metrics_ = std::make_unique<RouteMetrics>(*registry, sub_.route.empty() ? sub_.queue : sub_.route);
        for (int i = 0; i < concurrency_; ++i)
            threads_.emplace_back([this, i] {
                pthread_setname_np(pthread_self(), ("mqc-" + std::to_string(i)).substr(0, 15).c_str());
                work();
            });
    }

    // Not joined by a backend (its subscription failed, or it never stopped).
    ~Lane() override {
        stop();
        join(Clock::now());
    }

    std::size_t room() override {
        std::lock_guard lock(mutex_);
        return stopping_ ? 0 : capacity_ - std::min(capacity_, waiting_.size());
    }

    bool wait_wanted(Clock::time_point until) override {
        std::unique_lock lock(mutex_);
        wanted_cv_.wait_until(lock, until, [&] { return stopping_ || wanted(); });
        return !stopping_ && wanted();
    }

    void deliver(std::vector<Delivery>& deliveries) override {
        std::size_t queued = 0;
        std::size_t here = 0;  // deliveries[0, here) run on this thread (a nonblocking route), in order
        {
            std::lock_guard lock(mutex_);
            if (!stopping_) {
                const std::int64_t now = sub_.nonblocking ? queue::now_ms() : 0;
                const std::size_t held_keys = busy_keys_.size();  // the handler threads' (ours are added below)
                for (std::size_t i = 0; i < deliveries.size(); ++i) {
                    Delivery& d = deliveries[i];
                    d.order_key = order_key_of(d);
                    // Here only while nothing waits before it: once one message goes to the handler threads, those
                    // after it follow, so that none overtakes a message of its order key. A last attempt goes to a
                    // handler thread: its failure makes a dead letter, which a backend may wait to record (Kafka
                    // produces it) — never on the delivering thread.
                    if (sub_.nonblocking && queued == 0 && d.visible_at_ms <= now &&
                        d.message.attempt < max_attempts_ &&
                        (d.order_key == 0 || std::find(busy_keys_.begin(), busy_keys_.begin() + held_keys,
                                                       d.order_key) == busy_keys_.begin() + held_keys)) {
                        if (d.order_key != 0) busy_keys_.push_back(d.order_key);
                        ++running_;
                        if (here != i) deliveries[here] = std::move(d);
                        ++here;
                    } else {
                        waiting_.push_back(std::move(d));
                        ++queued;
                    }
                }
                deliveries.resize(here);
            }
        }
        if (queued == 0 && here == 0) {  // too late for the handlers: give them back
            for (auto& d : deliveries) backend_.release(d);
            deliveries.clear();
            return;
        }
        // One wake-up per message, at most one per handler: notify_all would wake every idle handler for a lease of
        // two messages, and all but two would go back to sleep (each a context switch).
        const std::size_t wake = std::min<std::size_t>(queued, static_cast<std::size_t>(concurrency_));
        for (std::size_t i = 0; i < wake; ++i) work_cv_.notify_one();
        bool stopping = false;  // as of the last lock: the first was taken under it just now
        for (std::size_t i = 0; i < here; ++i) {
            Delivery& d = deliveries[i];
            const std::size_t key = d.order_key;
            if (!stopping)
                handle(d);
            else
                backend_.release(d);
            stopping = finished(key);
        }
        deliveries.clear();
    }

    bool redeliver(Delivery& delivery) override {
        std::lock_guard lock(mutex_);
        if (stopping_) return false;
        waiting_.push_front(std::move(delivery));
        work_cv_.notify_one();
        return true;
    }

    void release_if(const std::function<bool(const Delivery&)>& which) override {
        std::vector<Delivery> released;
        {
            std::lock_guard lock(mutex_);
            for (auto it = waiting_.begin(); it != waiting_.end();) {
                if (which(*it)) {
                    released.push_back(std::move(*it));
                    it = waiting_.erase(it);
                } else {
                    ++it;
                }
            }
            bool cancelled = false;
            for (Held* h : held_)
                if (which(*h->delivery)) cancelled = h->cancelled = true;
            if (cancelled) wake_cv_.notify_all();  // their threads release them
            if (!released.empty()) wanted_cv_.notify_all();
        }
        for (auto& d : released) backend_.release(d);
    }

    void stop() override {
        std::deque<Delivery> unstarted;
        {
            std::lock_guard lock(mutex_);
            if (stopping_) return;
            stopping_ = true;
            unstarted.swap(waiting_);
            work_cv_.notify_all();
            wanted_cv_.notify_all();
            wake_cv_.notify_all();  // delays and backoffs are cut short: those messages are released
        }
        for (auto& d : unstarted) backend_.release(d);
    }

    bool wait_idle(Clock::time_point deadline) override {
        std::unique_lock lock(mutex_);
        if (idle_cv_.wait_until(lock, deadline, [&] { return running_ == 0; })) return true;
        if (!warned_)
            Logger().warn("mqc: " + sub_.queue + ": " + std::to_string(running_) +
                          " handler(s) still running after the grace period; waiting for them");
        warned_ = true;
        return false;
    }

    void join(Clock::time_point deadline) override {
        wait_idle(deadline);
        for (auto& t : threads_)
            if (t.joinable()) t.join();
    }

  private:
    // A message held by a handler thread until it is due (Delivery::visible_at_ms).
    struct Held {
        Delivery* delivery;
        bool registered = false;  // in held_ (taken before it was due)
        bool cancelled = false;   // by release_if()
    };

    // The oldest waiting message whose order key no handler holds (end(): none).
    std::deque<Delivery>::iterator next_ready() {
        if (busy_keys_.empty()) return waiting_.begin();
        return std::find_if(waiting_.begin(), waiting_.end(), [&](const Delivery& d) {
            return d.order_key == 0 || std::find(busy_keys_.begin(), busy_keys_.end(), d.order_key) == busy_keys_.end();
        });
    }

    bool wanted() const { return 2 * waiting_.size() <= capacity_ && (!waiting_.empty() || running_ < concurrency_); }

    // A handler thread: takes the oldest message it may (next_ready); one that waited past its stale time is
    // released instead.
    void work() {
        for (;;) {
            Delivery d;
            Held held{&d};
            {
                std::unique_lock lock(mutex_);
                auto next = waiting_.end();
                work_cv_.wait(lock, [&] { return stopping_ || (next = next_ready()) != waiting_.end(); });
                if (stopping_) return;
                d = std::move(*next);
                waiting_.erase(next);
                if (d.order_key != 0) busy_keys_.push_back(d.order_key);
                ++running_;
                // Not due yet: in held_ from the moment it leaves waiting_, so that a release_if() (a revoke) never
                // misses it.
                if (d.visible_at_ms > queue::now_ms()) {
                    held.registered = true;
                    held_.push_back(&held);
                }
                if (wanted()) wanted_cv_.notify_one();
            }
            const std::size_t key = d.order_key;  // d may go back to waiting_ (a Kafka retry keeps its place)
            if (ready(held))
                handle(d);
            else
                backend_.release(d);
            finished(key);
        }
    }

    // A message taken by a handler thread or run by the delivering thread is settled. Returns whether the lane
    // stops.
    bool finished(std::size_t key) {
        std::lock_guard lock(mutex_);
        --running_;
        // What waited for this key may go now.
        if (key != 0) {
            busy_keys_.erase(std::find(busy_keys_.begin(), busy_keys_.end(), key));
            if (!waiting_.empty()) work_cv_.notify_one();
        }
        if (wanted()) wanted_cv_.notify_one();  // the backend may wait for an idle handler
        if (running_ == 0 && stopping_) idle_cv_.notify_all();
        return stopping_;
    }

    // Whether a taken message goes to its handler: not if it waited past its stale time; one not due yet is held
    // until it is, unless stop() or release_if() comes first.
    bool ready(Held& held) {
        const Delivery& d = *held.delivery;
        bool go = Clock::now() <= d.stale_after;
        if (!held.registered) return go;
        std::unique_lock lock(mutex_);
        if (go) {
            // A timed wait: the time is the message's; stop() and release_if() cut it short.
            const std::int64_t wait_ms = std::max<std::int64_t>(0, d.visible_at_ms - queue::now_ms());
            wake_cv_.wait_until(lock, Clock::now() + std::chrono::milliseconds(wait_ms),
                                [&] { return stopping_ || held.cancelled; });
            go = !stopping_ && !held.cancelled;
        }
        std::erase(held_, &held);
        return go;
    }

    void handle(Delivery& d) {
        queue::decode_headers(d);
        d.message.queue = sub_.queue;  // here rather than on the backend's thread
        const Message& m = d.message;
        const auto started = metrics_ ? Clock::now() : Clock::time_point{};
        std::optional<std::string> error;
        try {
            error = sub_.handler(m);
        } catch (const std::exception& e) {
            error = e.what();
        } catch (...) {
            error = "unknown exception";
        }
        if (metrics_) {
            metrics_->duration.observe_since(started);
            (error ? metrics_->failed : metrics_->ok).inc();
        }
        if (!error) return backend_.ack(d);
        auto rid = m.headers.find("x-request-id");
        Logger(rid != m.headers.end() ? rid->second : m.id)
            .warn("mqc: " + m.queue + " message " + m.id + " attempt " + std::to_string(m.attempt) + "/" +
                  std::to_string(max_attempts_) + " failed: " + *error);
        if (m.attempt >= max_attempts_) {
            if (metrics_) metrics_->dead.inc();
            backend_.dead_letter(d, std::move(*error));
        } else {
            if (metrics_) metrics_->retries.inc();
            backend_.retry(d, queue::now_ms() + retry_.delay_after(m.attempt).count(), std::move(*error));
        }
    }

    queue::Backend& backend_;
    const Subscription sub_;
    const RetryPolicy retry_;
    const int max_attempts_;
    const int concurrency_;
    const std::size_t capacity_;  // at most this many delivered messages wait for a handler
    std::unique_ptr<RouteMetrics> metrics_;

    std::mutex mutex_;
    std::condition_variable work_cv_;     // handler threads: messages arrived, or stop
    std::condition_variable wanted_cv_;   // the backend: room for more
    std::condition_variable wake_cv_;     // held messages: stop, or released
    std::condition_variable idle_cv_;     // wait_idle(): the last running handler finished
    bool warned_ = false;                 // wait_idle() logged the handlers past the grace period
    std::deque<Delivery> waiting_;        // delivered, not started, oldest first
    std::vector<Held*> held_;             // taken by a handler thread, not due yet
    int running_ = 0;                     // handler threads with a message
    std::vector<std::size_t> busy_keys_;  // order keys of the messages handler threads hold
    bool stopping_ = false;
    std::vector<std::thread> threads_;
};

}  // namespace

void consume(queue::Backend& backend, Subscription subscription, RetryPolicy retry, metrics::Registry* registry) {
    queue::validate_queue_name(subscription.queue);
    queue::Subscription sub;
    sub.queue = subscription.queue;
    sub.group = subscription.group;
    sub.sink = std::make_shared<Lane>(backend, std::move(subscription), retry, registry);
    backend.subscribe(std::move(sub));
}

}  // namespace hydra::mqc
