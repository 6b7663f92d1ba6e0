// SIGHUP: the TLS certificates re-read, and the profile re-read and applied where it may change while running.
#include <hydra/app.h>

#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "app/app_impl.h"

namespace hydra {

bool App::reload() {
    std::lock_guard lock(impl_->lifecycle);
    bool ok = true;
    for (const auto& context : impl_->tls) {
        const TlsSettings& s = context->settings();
        try {
            context->reload();
            Logger().info(s.section + ".tls: certificate re-read from " + s.cert_file);
        } catch (const ConfigError& e) {
            ok = false;
            Logger().error(std::string(e.what()) + "; the previous certificate stays in use");
        }
    }
    return ok;
}

namespace {

// Every leaf of a config document by dotted path (arrays are leaves), with its JSON pointer (a key may hold dots:
// queue.kafka.properties."sasl.password").
struct Leaf {
    Json::json_pointer at;
    Json value;
};
void flatten(const Json& doc, const Json::json_pointer& at, const std::string& dotted,
             std::map<std::string, Leaf>& out) {
    if (doc.is_object() && !doc.empty()) {
        for (const auto& [key, value] : doc.items())
            flatten(value, at / key, dotted.empty() ? key : dotted + "." + key, out);
        return;
    }
    out[dotted] = {at, doc};
}

// The keys App::reload(Config) applies while running.
bool applied_live(const std::string& key) {
    static const char* exact[] = {"log.level", "log.format", "limits.json_depth", "auth.api_keys",
                                  "ws.allowed_origins"};
    static const char* prefixes[] = {"auth.jwt.", "api.rate_limit.", "ws.rate_limit."};
    for (const char* k : exact)
        if (key == k) return true;
    for (const char* p : prefixes)
        if (key.rfind(p, 0) == 0) return true;
    return false;
}

std::string joined(const std::vector<std::string>& keys) {
    std::string out;
    for (const auto& k : keys) out += (out.empty() ? "" : ", ") + k;
    return out;
}

std::vector<std::string> strings_at(const Config& config, std::string_view key) {
    std::vector<std::string> out;
    for (const auto& v : config.at(key)) out.push_back(v.get<std::string>());
    return out;
}

}  // namespace

bool App::reload(Config next) {
    {
        std::lock_guard lock(impl_->lifecycle);
        if (!impl_->running) return false;
        Impl& m = *impl_;
        const Config& current = m.config;

        // Which keys changed, and which of those apply while running.
        std::map<std::string, Leaf> was, now;
        flatten(current.json(), Json::json_pointer(), "", was);
        flatten(next.json(), Json::json_pointer(), "", now);
        std::set<std::string> keys;
        for (const auto& [k, v] : was) keys.insert(k);
        for (const auto& [k, v] : now) keys.insert(k);
        // A listener started with every per-address limit off cannot start counting addresses mid-flight.
        bool rate_adjustable = true;
        for (ApiServer* server : {m.api.get(), m.admin.get()})
            if (server != nullptr && !server->rate_adjustable()) rate_adjustable = false;
        std::vector<std::string> applied, restart;
        for (const auto& k : keys) {
            auto a = was.find(k), b = now.find(k);
            if (a != was.end() && b != now.end() && a->second.value == b->second.value) continue;
            const bool live = applied_live(k) && (rate_adjustable || k.rfind("api.rate_limit.", 0) != 0);
            (live ? applied : restart).push_back(k);
        }

        // What would run: the new profile with the running value of every key that takes a restart. It is checked
        // whole before anything is applied (keys against the address that stays, tokens against the ws.auth that
        // stays).
        std::shared_ptr<const JwtVerifier> jwt;
        ws::OriginPolicy origins;
        try {
            Json doc = next.json();
            for (const auto& k : restart) {
                if (auto old = was.find(k); old != was.end()) {
                    doc[old->second.at] = old->second.value;
                } else if (const Json::json_pointer& at = now.at(k).at; doc.contains(at)) {
                    doc[at.parent_pointer()].erase(at.back());
                }
            }
            next = Config::from_json(std::move(doc), next.source(), {}, m.schema);
            check_exposure(next);
            jwt = JwtVerifier::from(next);
            check_jwt_needs(next, jwt.get(), m.api_routes, m.admin_routes);
            origins = ws::WsServer::Settings::from(next).allowed_origins;
        } catch (const ConfigError& e) {
            Logger().error(std::string("reload refused, the running configuration stays: ") + e.what());
            return false;
        }

        Logger::configure(Logger::parse_level(next.str("log.level")),
                          next.str("log.format") == "json" ? LogFormat::json : LogFormat::text);
        set_json_max_depth(static_cast<int>(next.integer("limits.json_depth")));
        const std::vector<std::string> api_keys = strings_at(next, "auth.api_keys");
        for (ApiServer* server : {m.api.get(), m.admin.get()})
            if (server != nullptr)
                server->reload(api_keys, jwt, static_cast<int>(next.integer("api.rate_limit.requests_per_s")),
                               static_cast<int>(next.integer("api.rate_limit.burst")));
        if (m.ws)
            m.ws->reload(std::move(origins), jwt, static_cast<int>(next.integer("ws.rate_limit.messages_per_s")),
                         static_cast<int>(next.integer("ws.rate_limit.burst")));
        if (m.jwt && m.jwt != jwt) m.retired_jwt.push_back(m.jwt);
        m.jwt = jwt;
        m.config = std::move(next);

        if (!applied.empty()) Logger().info("reload: applied " + joined(applied));
        if (!restart.empty())
            Logger().warn("reload: these changes take a restart, their running values stay: " + joined(restart));
        if (applied.empty() && restart.empty()) Logger().info("reload: the configuration is unchanged");
    }
    return reload();
}

}  // namespace hydra
