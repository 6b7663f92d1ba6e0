#include "services/message_center/message_center.h"

#include <Poco/Net/HTTPClientSession.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/URI.h>

#include <istream>
#include <stdexcept>

namespace services::message_center {

using hydra::Json;

namespace {
Json fail(int code, const std::string& msg) { return Json{{"code", code}, {"msg", msg}}; }
const Json kOk = {{"result", true}};
}  // namespace

Json config_schema() {
    return Json::parse(R"json({
        "type": "object",
        "description": "the connmix-style message center",
        "properties": {
            "auth_url": {"type": "string", "pattern": "^http://[^/]+(/.*)?$",
                         "default": "http://127.0.0.1:8000/websocket_auth",
                         "description": "the user's own API: POST {\"token\"} → {\"uid\": N}"},
            "auth_timeout_ms": {"type": "integer", "minimum": 1, "maximum": 60000, "default": 3000,
                                "description": "per step of a call to the auth API: connect, send, each read"},
            "auth_threads": {"type": "integer", "minimum": 1, "maximum": 256, "default": 4,
                             "description": "threads calling the auth API, never the WS workers"},
            "max_pending_auth": {"type": "integer", "minimum": 1, "maximum": 100000, "default": 256,
                                 "description": "auths queued or in flight; more are refused at once"}
        }
    })json");
}

Settings settings_from(const hydra::Config& config) {
    Settings s;
    s.auth_url = config.str("services.message_center.auth_url");
    s.auth_timeout = std::chrono::milliseconds(config.integer("services.message_center.auth_timeout_ms"));
    s.auth_threads = static_cast<int>(config.integer("services.message_center.auth_threads"));
    s.max_pending_auth = static_cast<std::size_t>(config.integer("services.message_center.max_pending_auth"));
    return s;
}

std::string authenticate(const Settings& settings, const std::string& token) {
    try {
        Poco::URI uri(settings.auth_url);
        Poco::Net::HTTPClientSession session(uri.getHost(), uri.getPort());
        session.setTimeout(Poco::Timespan(std::int64_t(settings.auth_timeout.count()) * 1000));
        std::string path = uri.getPathAndQuery().empty() ? "/" : uri.getPathAndQuery();
        Poco::Net::HTTPRequest req(Poco::Net::HTTPRequest::HTTP_POST, path, Poco::Net::HTTPMessage::HTTP_1_1);
        std::string body = Json{{"token", token}}.dump();
        req.setContentType("application/json");
        req.setContentLength64(static_cast<std::int64_t>(body.size()));
        session.sendRequest(req) << body;
        Poco::Net::HTTPResponse resp;
        std::istream& in = session.receiveResponse(resp);
        if (resp.getStatus() != Poco::Net::HTTPResponse::HTTP_OK)
            throw std::runtime_error("auth API answered " + std::to_string(resp.getStatus()));
        // At most kMaxAuthAnswer bytes: one more means the answer is too long.
        std::string answer(kMaxAuthAnswer + 1, '\0');
        in.read(answer.data(), static_cast<std::streamsize>(answer.size()));
        answer.resize(static_cast<std::size_t>(in.gcount()));
        if (answer.size() > kMaxAuthAnswer)
            throw std::runtime_error("auth API answer over " + std::to_string(kMaxAuthAnswer) + " bytes");
        Json j = hydra::parse_json_or_discarded(answer);
        if (j.is_discarded() || !j.is_object() || !j.contains("uid"))
            throw std::runtime_error("auth API answer has no uid");
        const Json& uid = j["uid"];
        if (uid.is_number_integer()) return std::to_string(uid.get<long long>());
        if (uid.is_string() && !uid.get<std::string>().empty() && uid.get<std::string>().size() <= 256)
            return uid.get<std::string>();
        throw std::runtime_error("auth API answered an invalid uid");
    } catch (const Poco::Exception& e) {
        throw std::runtime_error("auth API unreachable: " + e.displayText());
    }
}

Service::Service(std::shared_ptr<const Settings> settings, AuthCall auth)
    : settings_(std::move(settings)), auth_(std::move(auth)) {}

Service::~Service() { stop(); }

void Service::stop() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    for (auto& t : threads_)
        if (t.joinable()) t.join();
}

void Service::on_message(hydra::Context& ctx) {
    // The pool starts with the first message: the settings are read from config by then.
    std::call_once(started_, [this] {
        for (int i = 0; i < settings_->auth_threads; ++i) threads_.emplace_back([this] { run(); });
    });
    // Every answer goes out through the exchange, as the pool sends the answers to an auth and to the messages that
    // waited for it: in the order the center produced them. (A returned reply would go ahead of what the pool sent
    // while this handler ran: the WS server puts a message's reply before what reaches its connection meanwhile.)
    // A connection's messages are handled one at a time, so its own auth, if any, is already counted here.
    if (pending_count_.load(std::memory_order_acquire) > 0) {
        std::lock_guard lock(mutex_);
        auto it = pending_.find(ctx.uuid());
        if (it != pending_.end()) {
            if (it->second.waiting.size() >= kMaxWaiting)
                ctx.exchange().send(ctx.uuid(), hydra::dump(fail(2, "too many messages while auth is in flight")));
            else
                it->second.waiting.push_back(ctx.body());
            return;
        }
    }
    std::optional<Json> reply = dispatch(ctx.body(), ctx.exchange(), ctx.uuid(), ctx.log(), false);
    if (reply) ctx.exchange().send(ctx.uuid(), hydra::dump(*reply));
}

void Service::on_close(hydra::Context& ctx) {
    // Under the lock: once this returns, no pool thread touches the exchange for this connection.
    std::lock_guard lock(mutex_);
    if (pending_.erase(ctx.uuid()) > 0) pending_count_.fetch_sub(1, std::memory_order_release);
}

std::optional<Json> Service::dispatch(const std::string& body, hydra::Exchange& ex, const std::string& uuid,
                                      const hydra::Logger& log, bool locked) {
    Json in = hydra::parse_json_or_discarded(body);
    if (in.is_discarded() || !in.is_object() || !in.contains("op") || !in["op"].is_string())
        return fail(2, "invalid message: expected {\"op\":...}");
    const std::string op = in["op"].get<std::string>();

    if (op == "auth") {
        if (!in.contains("token") || !in["token"].is_string()) return fail(1, "missing token");
        return start_auth(in["token"].get<std::string>(), ex, uuid, log, locked);
    }
    if (op == "subscribe" || op == "unsubscribe") {
        std::string channel =
            in.contains("channel") && in["channel"].is_string() ? in["channel"].get<std::string>() : "";
        if (channel != "@user") return fail(2, "unknown channel: " + channel);
        auto uid = ex.get(uuid, "uid");
        if (!uid) return fail(1, "Not Auth");
        std::string name = "user:" + uid->get<std::string>();
        if (op == "subscribe")
            ex.subscribe(uuid, name);
        else
            ex.unsubscribe(uuid, name);
        return kOk;
    }
    return fail(2, "unknown op: " + op);
}

// Queues the call to the auth API; the answer is sent by the pool (finish). `locked`: mutex_ is held (the pool
// handling a message that waited).
std::optional<Json> Service::start_auth(const std::string& token, hydra::Exchange& ex, const std::string& uuid,
                                        const hydra::Logger& log, bool locked) {
    std::unique_lock lock(mutex_, std::defer_lock);
    if (!locked) lock.lock();
    if (outstanding_ >= settings_->max_pending_auth) {
        log.warn("message-center: auth refused: " + std::to_string(outstanding_) + " auths in flight");
        return fail(1, "auth busy: try again later");
    }
    std::uint64_t serial = ++next_serial_;
    auto [it, inserted] = pending_.try_emplace(uuid, Pending{serial, {}});
    it->second.serial = serial;
    if (inserted) pending_count_.fetch_add(1, std::memory_order_release);
    jobs_.push_back(Job{uuid, serial, token, &ex, log});
    ++outstanding_;
    wake_.notify_one();
    return std::nullopt;
}

void Service::run() {
    for (;;) {
        Job job;
        {
            std::unique_lock lock(mutex_);
            wake_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
            if (stopping_) return;
            job = std::move(jobs_.front());
            jobs_.pop_front();
            auto it = pending_.find(job.uuid);
            if (it == pending_.end() || it->second.serial != job.serial) {  // the connection is gone: no call
                --outstanding_;
                continue;
            }
        }
        std::optional<std::string> uid;
        try {
            uid = auth_(*settings_, job.token);
        } catch (const std::exception& e) {
            job.log.warn(std::string("message-center: auth failed: ") + e.what());
        }
        finish(job, uid);
    }
}

// Answers the auth, then handles the messages that waited for it, in order, until none is left or one of them
// starts another auth.
void Service::finish(const Job& job, const std::optional<std::string>& uid) {
    std::lock_guard lock(mutex_);
    --outstanding_;
    auto it = pending_.find(job.uuid);
    if (it == pending_.end() || it->second.serial != job.serial) return;  // closed meanwhile
    hydra::Exchange& ex = *job.exchange;
    if (uid) ex.set(job.uuid, "uid", *uid);
    ex.send(job.uuid, hydra::dump(uid ? kOk : fail(1, "auth failed")));
    for (;;) {
        it = pending_.find(job.uuid);
        if (it == pending_.end()) return;
        if (it->second.waiting.empty()) {
            pending_.erase(it);
            pending_count_.fetch_sub(1, std::memory_order_release);
            return;
        }
        const std::uint64_t serial = it->second.serial;
        std::string body = std::move(it->second.waiting.front());
        it->second.waiting.pop_front();
        std::optional<Json> reply = dispatch(body, ex, job.uuid, job.log, true);
        if (reply) ex.send(job.uuid, hydra::dump(*reply));
        it = pending_.find(job.uuid);
        if (it != pending_.end() && it->second.serial != serial) return;  // another auth started: it goes on
    }
}

hydra::WsEndpoint endpoint(std::shared_ptr<Service> service) {
    hydra::WsEndpoint ep;
    ep.on_message = [service](hydra::Context& ctx) {
        service->on_message(ctx);
        return hydra::Result{};
    };
    ep.on_close = [service](hydra::Context& ctx, int, const std::string&) { service->on_close(ctx); };
    return ep;
}

}  // namespace services::message_center
