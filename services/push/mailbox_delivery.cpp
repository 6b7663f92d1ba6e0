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
        if (deliveries_.contains(uname)) return false;
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

void MailboxDelivery::erase(const std::string& uname) {
    std::lock_guard lock(mutex_);
    deliveries_.erase(uname);
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
        try {
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
            for (const auto& [uname, ids] : done) store_.remove(uname, ids);
            for (const std::string& uname : touched) pump(uname);
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
            if (d->in_flight == 0) {
                d->log.info("push: " + uname + " left after " + std::to_string(d->delivered) +
                            " mailbox messages; the rest waits for the next login");
                erase(uname);
            }
            return;
        }
        if (d->in_flight > 0) return;  // more once these are written
        // Empty: bind, unless /msg/push stored something meanwhile (it stores under the same lock).
        std::lock_guard user_lock(locks_.of(uname));
        if (store_.has_mail_after(uname, d->last_read)) continue;
        d->exchange->bind(uname, d->uuid);
        d->log.info("push: " + uname + " got " + std::to_string(d->delivered) + " mailbox messages on " + d->uuid);
        erase(uname);
        return;
    }
}

}  // namespace services::push
