#include "services/push/mailbox_delivery.h"

#include <map>
#include <set>

namespace services::push {

namespace {
// Rows read from SQLite at a time: what waits in memory for the window is at most this many messages.
constexpr std::size_t kReadBatch = 8;
}  // namespace

MailboxDelivery::~MailboxDelivery() { stop(); }

void MailboxDelivery::stop() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
}

void MailboxDelivery::start(Window window, std::chrono::seconds purge_every) {
    window_ = window;
    purge_every_ = purge_every;
    thread_ = std::thread([this] { run(); });
}

bool MailboxDelivery::begin(hydra::Exchange& ex, const std::string& uname, const std::string& uuid,
                            const hydra::Logger& log) {
    {
        std::lock_guard lock(mutex_);
        if (auto it = deliveries_.find(uname); it != deliveries_.end()) {
            it->second.waiting.push_back(uuid);
            return true;
        }
    }
    if (!store_.has_mail_after(uname, 0)) return false;
    {
        std::lock_guard lock(mutex_);
        Delivery& d = deliveries_[uname];
        d.uuid = uuid;
        d.exchange = &ex;
        d.log = log;
        started_.push_back(uname);
    }
    wake_.notify_one();
    return true;
}

MailboxDelivery::Delivery* MailboxDelivery::find(const std::string& uname) {
    std::lock_guard lock(mutex_);
    auto it = deliveries_.find(uname);
    return it == deliveries_.end() ? nullptr : &it->second;
}

void MailboxDelivery::run() {
    auto next_purge = std::chrono::steady_clock::now() + purge_every_;
    for (;;) {
        std::vector<Written> written;
        std::vector<std::string> started;
        {
            std::unique_lock lock(mutex_);
            wake_.wait_until(lock, next_purge, [this] { return stopping_ || !written_.empty() || !started_.empty(); });
            if (stopping_) return;
            written.swap(written_);
            started.swap(started_);
        }
        std::set<std::string> touched(started.begin(), started.end());
        std::map<std::string, std::vector<std::int64_t>> done;
        for (const Written& w : written) {
            Delivery* d = find(w.uname);
            if (d == nullptr) continue;
            --d->in_flight;
            d->in_flight_bytes -= w.bytes;
            if (w.ok) {
                done[w.uname].push_back(w.id);
                ++d->delivered;
            } else {
                d->failed = true;
            }
            touched.insert(w.uname);
        }
        for (const std::string& uname : touched) {
            try {
                if (auto it = done.find(uname); it != done.end()) store_.remove(uname, it->second);
                pump(uname);
            } catch (const std::exception& e) {
                // The database failed (busy, disk full): end this delivery so that the user's connections get live
                // messages; what was not deleted comes again at the next login (at-least-once).
                hydra::Logger().error(std::string("push: mailbox delivery failed: ") + e.what(), {{"user", uname}});
                std::lock_guard user_lock(locks_.of(uname));
                if (Delivery* d = find(uname)) finish(uname, *d);
            }
        }
        try {
            if (std::chrono::steady_clock::now() >= next_purge) {
                if (std::size_t n = store_.purge_expired(); n > 0)
                    hydra::Logger().info("push: " + std::to_string(n) + " expired mailbox messages deleted");
                next_purge = std::chrono::steady_clock::now() + purge_every_;
            }
        } catch (const std::exception& e) {
            hydra::Logger().error(std::string("push: mailbox delivery: ") + e.what());
        }
    }
}

// Sends what the window allows; when nothing is left in flight or in the mailbox, binds the user.
void MailboxDelivery::pump(const std::string& uname) {
    Delivery* d = find(uname);
    if (d == nullptr) return;
    for (;;) {
        while (!d->failed && d->in_flight < window_.messages &&
               (d->in_flight == 0 || d->in_flight_bytes < window_.bytes)) {
            if (d->ready.empty()) {
                std::vector<MailRow> rows = store_.read_mailbox(uname, d->last_read, kReadBatch);
                if (rows.empty()) break;
                d->last_read = rows.back().id;
                for (MailRow& row : rows) d->ready.push_back(std::move(row));
            }
            MailRow row = std::move(d->ready.front());
            d->ready.pop_front();
            hydra::Json data = hydra::parse_json_or_discarded(row.data);
            if (data.is_discarded()) {  // cannot happen for rows this service wrote; never retried
                store_.remove(uname, {row.id});
                continue;
            }
            const std::size_t bytes = row.data.size();
            ++d->in_flight;
            d->in_flight_bytes += bytes;
            // Runs on the connection's I/O loop: only hands the outcome to this thread.
            auto written = [this, uname, id = row.id, bytes](bool ok) {
                {
                    std::lock_guard lock(mutex_);
                    written_.push_back(Written{uname, id, bytes, ok});
                }
                wake_.notify_one();
            };
            if (!d->exchange->notify_confirmed(d->uuid, data, std::move(written))) {
                --d->in_flight;
                d->in_flight_bytes -= bytes;
                d->failed = true;
            }
        }
        if (d->failed) {
            if (d->in_flight > 0) return;  // wait for the outcome of what is on its way
            {
                std::lock_guard lock(mutex_);  // begin() adds to `waiting` under it
                if (d->waiting.empty()) {
                    d->log.info(
                        "push: mailbox delivery stopped: the connection went away; the rest waits for the "
                        "next login",
                        {{"user", uname}, {"delivered", std::to_string(d->delivered)}});
                    deliveries_.erase(uname);
                    return;
                }
                // A later login of the user takes over: read again from the first row still stored (rows are
                // deleted once written; what was in flight to the old connection comes again).
                d->uuid = d->waiting.front();
                d->waiting.erase(d->waiting.begin());
            }
            d->failed = false;
            d->last_read = 0;
            d->ready.clear();
            continue;
        }
        if (d->in_flight > 0) return;  // more once these are written
        // Empty: bind, unless /msg/push stored something meanwhile (it stores under the same lock).
        std::lock_guard user_lock(locks_.of(uname));
        if (store_.has_mail_after(uname, d->last_read)) continue;
        d->log.info("push: mailbox delivered",
                    {{"user", uname}, {"uuid", d->uuid}, {"delivered", std::to_string(d->delivered)}});
        finish(uname, *d);
        return;
    }
}

void MailboxDelivery::finish(const std::string& uname, Delivery& d) {
    hydra::Exchange* ex = d.exchange;
    std::vector<std::string> uuids;
    {
        std::lock_guard lock(mutex_);  // begin() adds to `waiting` under it: no login is left out
        uuids.swap(d.waiting);
        uuids.insert(uuids.begin(), d.uuid);
        deliveries_.erase(uname);
    }
    for (const std::string& uuid : uuids) ex->bind(uname, uuid);
}

}  // namespace services::push
