#include "queue/metered.h"

namespace hydra::queue {

namespace {

using Clock = std::chrono::steady_clock;

class Metered : public Backend {
  public:
    Metered(std::shared_ptr<Backend> inner, std::shared_ptr<metrics::Registry> registry)
        : registry_(std::move(registry)),
          pushes_(registry_->counter("hydra_queue_pushes_total",
                                     "Messages pushed, by queue and result (ok: durable; error: refused or failed).",
                                     {"queue", "result"})),
          latency_(registry_->histogram("hydra_queue_push_duration_seconds",
                                        "Time from a push to the message being durable (or the push failing).",
                                        {"queue"})),
          inner_(std::move(inner)) {
        // (The backend outlives the collector: reset first in the destructor.)
        depth_ = registry_->add_collector([backend = inner_.get()](metrics::Samples& s) { backend->collect(s); });
    }
    ~Metered() override {
        depth_.reset();
        inner_->stop(std::chrono::seconds(5));  // while its consumers can still settle through this wrapper
    }

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
    void ack(Delivery& d) override { inner_->ack(d); }
    void retry(Delivery& d, std::int64_t at_ms, std::string error) override {
        inner_->retry(d, at_ms, std::move(error));
    }
    void dead_letter(Delivery& d, std::string error) override { inner_->dead_letter(d, std::move(error)); }
    void release(Delivery& d) override { inner_->release(d); }
    Heartbeats heartbeats() const override { return inner_->heartbeats(); }
    std::string check_ready(std::chrono::milliseconds timeout) override { return inner_->check_ready(timeout); }

  private:
    // A queue name the backend refuses is counted under "invalid": names come from handlers, sometimes from clients.
    void count(std::string_view queue, bool ok, Clock::time_point started, std::int64_t n) {
        std::string_view name = queue;
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

    // In this order: the backend goes first, and its last push callbacks still count.
    std::shared_ptr<metrics::Registry> registry_;
    metrics::Family<metrics::Counter>& pushes_;
    metrics::Family<metrics::Histogram>& latency_;
    metrics::Registry::Collector depth_;
    std::shared_ptr<Backend> inner_;
};

}  // namespace

std::shared_ptr<Backend> metered(std::shared_ptr<Backend> inner, std::shared_ptr<metrics::Registry> registry) {
    return std::make_shared<Metered>(std::move(inner), std::move(registry));
}

}  // namespace hydra::queue
