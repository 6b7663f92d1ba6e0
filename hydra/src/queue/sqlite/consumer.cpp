// The consumers' side: leases (taken by a fetcher thread per subscription, or handed over by the writer in a push's
// transaction), delivered to the subscription's sink; the outcomes the consumer records.
#include <pthread.h>

#include <algorithm>

#include <hydra/log.h>

#include "queue/sqlite/checkpointer.h"
#include "queue/sqlite/parts.h"

namespace hydra::queue {

void SqliteQueue::ack(Delivery& d) {
    Op op;
    op.what = Op::Ack{d.key, d.message.attempt};
    enqueue_lazy(std::move(op));
}

void SqliteQueue::retry(Delivery& d, std::int64_t at_ms, std::string error) {
    Op op;
    op.what = Op::Retry{d.key, d.message.attempt, at_ms, std::move(error)};
    enqueue_lazy(std::move(op));
}

void SqliteQueue::dead_letter(Delivery& d, std::string error) {
    Op op;
    op.what = Op::Bury{d.key, d.message.attempt, std::move(error)};
    enqueue_lazy(std::move(op));
}

void SqliteQueue::release(Delivery& d) {
    Op op;
    op.what = Op::Release{d.key, d.message.attempt};
    enqueue_lazy(std::move(op));
}

// Consumers whose fetcher sleeps for lack of messages get what is pushed to their queue leased in the push's own
// transaction (inserted leased, no update to take it): no fetcher round trip (a wake-up, and a lease transaction of
// its own) between a push and its handler. Delayed pushes are not handed over.
std::vector<SqliteQueue::Handoff> SqliteQueue::plan_hand_off(std::vector<Op>& ops) {
    std::vector<Handoff> out;
    if (!consuming_.load()) return out;  // also: consumers_ is complete (start() sets consuming_ after subscribe()s)
    for (auto& c : consumers_) {
        if (!c->parked.load()) continue;
        const std::size_t room = c->sub.sink->room();
        if (room > 0) out.push_back(Handoff{c.get(), room, 0, true, {}});  // none: its handlers are behind
    }
    if (out.empty()) return out;
    for (auto& op : ops) {
        auto* p = std::get_if<Op::Push>(&op.what);
        if (p == nullptr || p->delay_ms > 0) continue;
        for (std::size_t h = 0; h < out.size() && p->handoff < 0; ++h) {
            if (out[h].consumer->sub.queue != p->queue) continue;
            if (out[h].taken < out[h].room) {
                p->handoff = static_cast<int>(h);
                ++out[h].taken;
            } else {
                out[h].all = false;  // no room left: this one stays visible for the fetcher
            }
        }
    }
    return out;
}

// A message already visible in the queue (committed just before the consumer parked, or released, or due again)
// goes first: then this transaction's pushes stay visible too, and the woken fetcher takes them all, oldest first.
void SqliteQueue::keep_order(Statements& st, std::int64_t now, std::vector<Handoff>& handoffs, std::vector<Op>& ops) {
    for (std::size_t h = 0; h < handoffs.size(); ++h) {
        st.any_visible.tryReset();
        st.any_visible.bind(1, handoffs[h].consumer->sub.queue);
        st.any_visible.bind(2, static_cast<std::int64_t>(now));
        const bool waiting = st.any_visible.executeStep();
        st.any_visible.tryReset();
        if (!waiting) continue;
        for (auto& op : ops)
            if (auto* p = std::get_if<Op::Push>(&op.what); p != nullptr && p->handoff == static_cast<int>(h))
                p->handoff = -1;
        handoffs[h].taken = 0;
        handoffs[h].all = false;
    }
}

void SqliteQueue::deliver(std::vector<Handoff>& handoffs, std::vector<Op>& ops) {
    const auto stale_after = std::chrono::steady_clock::now() + settings_.lease / 2;
    for (auto& op : ops) {
        auto* p = std::get_if<Op::Push>(&op.what);
        if (p == nullptr || p->handoff < 0) continue;
        Delivery d;
        d.key = p->id;
        d.message.id = std::to_string(p->id);
        d.message.payload = std::move(p->payload);
        if (p->given)
            d.message.headers = std::move(*p->given);  // as pushed: no decoding
        else
            d.stored_headers = std::move(p->headers);  // decoded by the consumer when it needs them
        d.message.attempt = 1;
        d.stale_after = stale_after;
        handoffs[static_cast<std::size_t>(p->handoff)].leased.push_back(std::move(d));
    }
    for (auto& h : handoffs)
        if (!h.leased.empty()) h.consumer->sub.sink->deliver(h.leased);  // a consumer stopped meanwhile releases them
}

void SqliteQueue::take(Statements& st, const std::string& queue, int max, std::int64_t now,
                       std::vector<Delivery>& out) {
    const auto stale_after = std::chrono::steady_clock::now() + settings_.lease / 2;
    std::size_t first = out.size();
    st.take.tryReset();
    st.take.bind(1, static_cast<std::int64_t>(now + settings_.lease.count()));
    st.take.bind(2, queue);
    st.take.bind(3, static_cast<std::int64_t>(now));
    st.take.bind(4, max);
    while (st.take.executeStep()) {
        Delivery d;
        d.key = st.take.getColumn(0).getInt64();
        d.message.id = std::to_string(d.key);
        const auto& payload = st.take.getColumn(1);
        d.message.payload.assign(static_cast<const char*>(payload.getBlob()),
                                 static_cast<std::size_t>(payload.getBytes()));
        d.stored_headers = st.take.getColumn(2).getString();  // decoded by the consumer when it needs them
        d.message.attempt = st.take.getColumn(3).getInt();
        // One that waited half its lease for a handler is released instead (its handler might not finish before
        // the lease ends and another consumer takes it).
        d.stale_after = stale_after;
        out.push_back(std::move(d));
    }
    st.take.tryReset();
    // RETURNING gives rows in no set order.
    std::sort(out.begin() + static_cast<std::ptrdiff_t>(first), out.end(),
              [](const Delivery& a, const Delivery& b) { return a.key < b.key; });
}

std::vector<Delivery> SqliteQueue::lease(const std::string& queue, int max, std::int64_t& next_visible_ms) {
    auto out = std::make_shared<std::vector<Delivery>>();
    auto next = std::make_shared<std::int64_t>(0);
    auto batch = std::make_shared<Batch>();
    Op op;
    op.what = Op::Lease{queue, max, out, next};
    op.batch = batch;
    {
        std::lock_guard lock(mutex_);
        if (writer_stopping_) return {};
        ops_.push_back(std::move(op));
        ++urgent_;
    }
    work_cv_.notify_one();
    batch->wait(nullptr);  // the writer runs until the fetchers are joined: it finishes every lease
    if (!batch->error.empty()) return {};
    next_visible_ms = *next;
    return std::move(*out);
}

void SqliteQueue::subscribe(Subscription subscription) {
    validate_queue_name(subscription.queue);
    if (!subscription.sink) throw std::invalid_argument("queue: sqlite: subscription without a consumer");
    if (started_) throw std::logic_error("SqliteQueue::subscribe after start");
    auto c = std::make_unique<Consumer>();
    c->sub = std::move(subscription);
    consumers_.push_back(std::move(c));
}

void SqliteQueue::start() {
    if (started_) return;
    started_ = true;
    consuming_ = true;
    for (auto& c : consumers_) {
        Consumer* consumer = c.get();
        consumer->fetcher = std::thread([this, consumer] { fetch(*consumer); });
    }
}

// Leases more whenever the consumer wants more (Sink::wait_wanted), as many as it has room for.
void SqliteQueue::fetch(Consumer& c) {
    pthread_setname_np(pthread_self(), "queue-fetch");
    const std::string& queue = c.sub.queue;
    Sink& sink = *c.sub.sink;
    while (consuming_) {
        if (!sink.wait_wanted(std::chrono::steady_clock::time_point::max())) return;  // stopped
        const std::size_t want = sink.room();
        if (want == 0) continue;
        std::uint64_t seen;
        {
            std::lock_guard lock(pushed_mutex_);
            seen = generation_[queue];
        }
        std::int64_t next_visible = 0;
        std::vector<Delivery> batch = lease(queue, static_cast<int>(want), next_visible);
        if (batch.empty()) {
            // Sleep until a push to this queue commits, the next delayed message is due, or the poll interval
            // passes: a timed wait, because another process may push to the same file and cannot wake us.
            auto wait = settings_.poll_interval;
            if (next_visible > 0)
                wait = std::min(wait, std::chrono::milliseconds(std::max<std::int64_t>(1, next_visible - now_ms())));
            std::unique_lock lock(pushed_mutex_);
            c.parked = true;  // meanwhile the writer hands pushes to this queue straight to the handlers
            pushed_cv_.wait_for(lock, wait, [&] { return !consuming_ || generation_[queue] != seen; });
            c.parked = false;
            continue;
        }
        sink.deliver(batch);
    }
}

// The consumers stop taking (what they hold ahead goes back), their running handlers get `grace`; then the writer
// commits their outcomes and stops.
void SqliteQueue::stop(std::chrono::milliseconds grace) {
    if (stopped_) return;
    stopped_ = true;
    consuming_ = false;
    {
        std::lock_guard lock(pushed_mutex_);  // idle fetchers check consuming_ under it: no lost wake-up
        pushed_cv_.notify_all();
    }
    const auto deadline = std::chrono::steady_clock::now() + grace;
    for (auto& c : consumers_) c->sub.sink->stop();  // also wakes a fetcher waiting for room
    for (auto& c : consumers_)
        if (c->fetcher.joinable()) c->fetcher.join();
    for (auto& c : consumers_) c->sub.sink->join(deadline);
    {
        std::lock_guard lock(mutex_);
        writer_stopping_ = true;
    }
    work_cv_.notify_all();
    if (writer_.joinable()) writer_.join();
    checkpointer_.reset();
    db_.reset();
}

}  // namespace hydra::queue
