// A queue backend with consumption wired as the host wires it (mqc::consume), for the tests of one backend:
// subscribe({queue, group, concurrency, handler}) where the handler returns to acknowledge and throws to fail.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <utility>

#include "mqc/consumer.h"

namespace test {

template <typename Backend>
class Consumed : public Backend {
  public:
    Consumed(typename Backend::Settings settings, hydra::mqc::RetryPolicy retry)
        : Backend(std::move(settings)), retry_(retry) {}

    struct Subscription {
        std::string queue;
        std::string group;
        int concurrency = 1;
        std::function<void(const hydra::Message&)> handler;
    };

    void subscribe(Subscription sub) {
        hydra::mqc::consume(*this,
                            {std::move(sub.queue), std::move(sub.group), sub.concurrency,
                             [handler = std::move(sub.handler)](const hydra::Message& m) -> std::optional<std::string> {
                                 handler(m);
                                 return std::nullopt;
                             }},
                            retry_);
    }

  private:
    hydra::mqc::RetryPolicy retry_;
};

}  // namespace test
