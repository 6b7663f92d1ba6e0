// `hydra run` under systemd's Type=notify: READY=1 once every server listens, RELOADING=1/READY=1 around a SIGHUP,
// STOPPING=1 on SIGTERM, WATCHDOG=1 at half of WATCHDOG_USEC — read from a notify socket of the test's own.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <optional>

#include <boost/test/unit_test.hpp>

#include "support/host.h"
#include "support/temp.h"

using namespace std::chrono_literals;

namespace {

// An AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET.
class NotifySocket {
  public:
    NotifySocket() : path_(test::temp_path("notify.sock")) {
        fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strncpy(addr.sun_path, path_.c_str(), sizeof addr.sun_path - 1);
        BOOST_REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    }
    ~NotifySocket() { ::close(fd_); }
    NotifySocket(const NotifySocket&) = delete;
    NotifySocket& operator=(const NotifySocket&) = delete;

    const std::string& path() const { return path_; }
    // The next notification, or nullopt when none came within `timeout`.
    std::optional<std::string> next(std::chrono::milliseconds timeout = 20s) {
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return std::nullopt;
        char buf[4096];
        ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
        if (n <= 0) return std::nullopt;
        return std::string(buf, static_cast<std::size_t>(n));
    }
    // The next notification, which must be there and start with `prefix`: the whole of it.
    std::string expect(const std::string& prefix) {
        auto n = next();
        BOOST_REQUIRE_MESSAGE(n, "no notification; expected " << prefix);
        BOOST_CHECK_MESSAGE(n->rfind(prefix, 0) == 0, "expected " << prefix << ", got " << *n);
        return *n;
    }
    // Skips notifications until one that is exactly `what` (or starts with it followed by a newline).
    bool wait_for(const std::string& what, std::vector<std::string>* seen = nullptr) {
        for (;;) {
            auto n = next();
            if (!n) return false;
            if (seen) seen->push_back(*n);
            if (*n == what || n->rfind(what + "\n", 0) == 0) return true;
        }
    }

  private:
    std::string path_;
    int fd_ = -1;
};

// A test::Host started with these environment variables set (the child inherits them; they are unset again here).
std::unique_ptr<test::Host> host_with_env(const std::vector<std::pair<std::string, std::string>>& env) {
    for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
    auto host = std::make_unique<test::Host>();
    for (const auto& [k, v] : env) ::unsetenv(k.c_str());
    return host;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(systemd_notify)

BOOST_AUTO_TEST_CASE(ready_after_listening_reloading_around_sighup_and_stopping_on_sigterm) {
    NotifySocket notify;
    auto host = host_with_env({{"NOTIFY_SOCKET", notify.path()}});
    // (The host printed its listening lines before READY=1: test::Host waited for them.)
    BOOST_CHECK_EQUAL(notify.expect("READY=1"), "READY=1");
    host->process->signal(SIGHUP);
    notify.expect("RELOADING=1\nMONOTONIC_USEC=");
    BOOST_CHECK_EQUAL(notify.expect("READY=1"), "READY=1");
    host->process->signal(SIGTERM);
    BOOST_CHECK_EQUAL(notify.expect("STOPPING=1"), "STOPPING=1");
    // No watchdog was asked for: nothing else was sent.
    BOOST_CHECK(!notify.next(500ms));
}

BOOST_AUTO_TEST_CASE(the_watchdog_is_fed_while_the_host_runs) {
    NotifySocket notify;
    auto host = host_with_env({{"NOTIFY_SOCKET", notify.path()}, {"WATCHDOG_USEC", "200000"}});
    std::vector<std::string> seen;
    BOOST_REQUIRE(notify.wait_for("READY=1", &seen));
    BOOST_CHECK_EQUAL(seen.size(), 1u);  // READY=1 came first
    // At half of 200 ms: three in a row come within the 20 s each wait allows even on a loaded machine.
    for (int i = 0; i < 3; ++i) BOOST_CHECK_EQUAL(notify.expect("WATCHDOG=1"), "WATCHDOG=1");
}

BOOST_AUTO_TEST_SUITE_END()
