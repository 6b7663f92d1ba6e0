// mailbox: log in as a user and read the mailbox until it is quiet; compare with what the stream acknowledged.
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <hydra/ws_client.h>

#include "soak_bench.h"

namespace bench {

OJson run_mailbox(const MailboxConfig& cfg) {
    std::set<std::uint64_t> acked;
    {
        std::ifstream in(cfg.acked_file);
        if (!in) throw std::runtime_error("cannot read " + cfg.acked_file);
        std::uint64_t k;
        while (in >> k) acked.insert(k);
    }
    hydra::WsClient c = hydra::WsClient::connect(cfg.ws_host, cfg.ws_port, "/");
    c.send_text(R"({"service":"/member/login","uname":")" + cfg.uname + R"(","pwd":")" + cfg.pwd + "\"}");
    std::map<std::uint64_t, std::uint32_t> got;
    std::uint64_t frames = 0, other = 0;
    bool logged_in = false;
    const std::int64_t deadline = now_ns() + static_cast<std::int64_t>(cfg.max_s * 1e9);
    const auto quiet = std::chrono::milliseconds(static_cast<std::int64_t>(cfg.quiet_s * 1000));
    while (now_ns() < deadline) {
        hydra::WsMessage m = c.receive(quiet);
        if (m.type == hydra::WsMessage::Type::timeout) break;
        if (m.type != hydra::WsMessage::Type::text) throw std::runtime_error("mailbox: connection ended: " + m.data);
        ++frames;
        if (m.data.find("\"/member/login\"") != std::string::npos) {
            if (m.data.find("\"code\":200") == std::string::npos) throw std::runtime_error("login failed: " + m.data);
            logged_in = true;
            continue;
        }
        const auto p = m.data.find("seq=");
        if (p == std::string::npos) {
            ++other;
            continue;
        }
        ++got[std::strtoull(m.data.c_str() + p + 4, nullptr, 10)];
    }
    std::uint64_t lost = 0, duplicates = 0, extra = 0;
    std::vector<std::uint64_t> lost_examples;
    for (auto k : acked)
        if (!got.count(k)) {
            ++lost;
            if (lost_examples.size() < 10) lost_examples.push_back(k);
        }
    for (const auto& [k, n] : got) {
        duplicates += n - 1;
        if (!acked.count(k)) ++extra;
    }
    log("mailbox", std::to_string(acked.size()) + " acknowledged, " + std::to_string(got.size()) +
                       " distinct delivered, lost " + std::to_string(lost) + ", duplicates " +
                       std::to_string(duplicates));
    return OJson{{"logged_in", logged_in},
                 {"acknowledged", acked.size()},
                 {"frames", frames},
                 {"delivered_distinct", got.size()},
                 {"lost", lost},
                 {"lost_examples_seq", lost_examples},
                 {"duplicates", duplicates},
                 {"delivered_not_acknowledged", extra},
                 {"other_frames", other}};
}

}  // namespace bench
