#include "queue/metered.h"

#include <hydra/log.h>

#include "queue/sqlite_queue.h"

namespace hydra::queue {

namespace {

using Clock = std::chrono::steady_clock;

class Metered : public Backend {
  public:
    Metered(std::shared_ptr<Backend> inner, std::shared_ptr<metrics::Registry> registry, std::string sqlite_path)
        : registry_(std::move(registry)),
          pushes_(registry_->counter("hydra_queue_pushes_total",
                                     "Messages pushed, by queue and result (ok: durable; error: refused or failed).",
                                     {"queue", "result"})),
          latency_(registry_->histogram("hydra_queue_push_duration_seconds",
                                        "Time from a push to the message being durable (or the push failing).",
                                        {"queue"})),
          inner_(std::move(inner)) {
        if (!sqlite_path.empty())
            depth_ = registry_->add_collector([path = std::move(sqlite_path)](metrics::Samples& s) { depth(path, s); });
    }
    ~Metered() override { depth_.reset(); }

    void push(std::string_view queue, std::string_view payload, const Headers& headers,
              std::chrono::milliseconds delay) override {
        const auto started = Clock::now();
        try {
            inner_->push(queue, payload, headers, delay);
        } catch (const QueueError&) {
            count(queue, false, started, 1);
            throw;
        }
        count(queue, true, started, 1);
    }

    void push_batch(std::string_view queue, std::span<const std::string> payloads, const Headers& headers) override {
        const auto started = Clock::now();
        try {
            inner_->push_batch(queue, payloads, headers);
        } catch (const QueueError&) {
            count(queue, false, started, static_cast<std::int64_t>(payloads.size()));
            throw;
        }
        count(queue, true, started, static_cast<std::int64_t>(payloads.size()));
    }

    void push_async(std::string_view queue, std::string_view payload, const Headers& headers,
                    std::chrono::milliseconds delay, PushDone done) override {
        inner_->push_async(
            queue, payload, headers, delay,
            [this, name = std::string(queue), started = Clock::now(), done = std::move(done)](const QueueError* error) {
                count(name, error == nullptr, started, 1);
                done(error);
            });
    }

    std::string backend() const override { return inner_->backend(); }
    void subscribe(Subscription subscription) override { inner_->subscribe(std::move(subscription)); }
    void start() override { inner_->start(); }
    void stop(std::chrono::milliseconds grace) override { inner_->stop(grace); }
    Heartbeats heartbeats() const override { return inner_->heartbeats(); }
    std::string check_ready(std::chrono::milliseconds timeout) override { return inner_->check_ready(timeout); }

  private:
    // A queue name the backend refuses is counted under "invalid": names come from handlers, sometimes from clients.
    void count(std::string_view queue, bool ok, Clock::time_point started, std::int64_t n) {
        std::string name(queue);
        if (!ok) {
            try {
                validate_queue_name(name);
            } catch (const QueueError&) {
                name = "invalid";
            }
        }
        pushes_.local({name, ok ? "ok" : "error"}).inc(n);
        latency_.local({name}).observe_since(started);
    }

    static void depth(const std::string& path, metrics::Samples& s) {
        std::vector<SqliteQueue::QueueStats> stats;
        try {
            stats = SqliteQueue::stats(path);
        } catch (const std::exception& e) {
            Logger().warn(std::string("metrics: cannot read the queue depth: ") + e.what());
            return;
        }
        const std::int64_t now =
            std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
                .count();
        const char* help =
            "Messages in a queue by state: ready, delayed (a delay or a retry backoff), leased (being "
            "handled), dead (dead letters).";
        for (const auto& q : stats) {
            s.add("hydra_queue_messages", help, metrics::Type::gauge, {"queue", "state"}, {q.queue, "ready"},
                  static_cast<double>(q.ready));
            s.add("hydra_queue_messages", help, metrics::Type::gauge, {"queue", "state"}, {q.queue, "delayed"},
                  static_cast<double>(q.delayed));
            s.add("hydra_queue_messages", help, metrics::Type::gauge, {"queue", "state"}, {q.queue, "leased"},
                  static_cast<double>(q.leased));
            s.add("hydra_queue_messages", help, metrics::Type::gauge, {"queue", "state"}, {q.queue, "dead"},
                  static_cast<double>(q.dead));
            s.add("hydra_queue_oldest_message_age_seconds",
                  "Age of the oldest message still in a queue (0 when it is empty).", metrics::Type::gauge, {"queue"},
                  {q.queue}, q.oldest_ms > 0 ? static_cast<double>(now - q.oldest_ms) / 1000.0 : 0.0);
        }
    }

    // In this order: the backend goes first, and its last push callbacks still count.
    std::shared_ptr<metrics::Registry> registry_;
    metrics::Family<metrics::Counter>& pushes_;
    metrics::Family<metrics::Histogram>& latency_;
    metrics::Registry::Collector depth_;
    std::shared_ptr<Backend> inner_;
};

}  // namespace

std::shared_ptr<Backend> metered(std::shared_ptr<Backend> inner, std::shared_ptr<metrics::Registry> registry,
                                 std::string sqlite_path) {
    return std::make_shared<Metered>(std::move(inner), std::move(registry), std::move(sqlite_path));
}

}  // namespace hydra::queue
