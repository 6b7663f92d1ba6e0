#include "net/socket.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace hydra {
namespace {

struct ParsedAddress {
    sockaddr_storage addr{};
    socklen_t len = 0;
};

ParsedAddress resolve(const std::string& address) {
    std::string host, port;
    if (!address.empty() && address[0] == '[') {
        auto close = address.find(']');
        if (close == std::string::npos || close + 1 >= address.size() || address[close + 1] != ':')
            throw std::runtime_error("invalid address");
        host = address.substr(1, close - 1);
        port = address.substr(close + 2);
    } else {
        auto colon = address.rfind(':');
        if (colon == std::string::npos) throw std::runtime_error("invalid address");
        host = address.substr(0, colon);
        port = address.substr(colon + 1);
    }
    if (host.empty()) host = "0.0.0.0";
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo* res = nullptr;
    int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
    if (rc != 0) throw std::runtime_error(gai_strerror(rc));
    ParsedAddress out;
    std::memcpy(&out.addr, res->ai_addr, res->ai_addrlen);
    out.len = static_cast<socklen_t>(res->ai_addrlen);
    freeaddrinfo(res);
    return out;
}

}  // namespace

ListenSocket listen_tcp(const std::string& address, int backlog) {
    ParsedAddress addr = resolve(address);
    ListenSocket l;
    l.fd = ::socket(addr.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (l.fd < 0) throw std::runtime_error(strerror(errno));
    int one = 1;
    setsockopt(l.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(l.fd, reinterpret_cast<sockaddr*>(&addr.addr), addr.len) != 0 || ::listen(l.fd, backlog) != 0) {
        std::string err = strerror(errno);
        ::close(l.fd);
        throw std::runtime_error(err);
    }
    sockaddr_storage bound{};
    socklen_t len = sizeof bound;
    getsockname(l.fd, reinterpret_cast<sockaddr*>(&bound), &len);
    l.bound = address_string(bound);
    return l;
}

std::string address_string(const sockaddr_storage& ss) {
    char host[INET6_ADDRSTRLEN] = "?";
    if (ss.ss_family == AF_INET) {
        auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        return std::string(host) + ":" + std::to_string(ntohs(a->sin_port));
    }
    auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
    // Appended piece by piece: GCC 12 warns (-Wrestrict, a known false positive) on "[" + std::string(...).
    std::string out = "[";
    out += host;
    out += "]:";
    out += std::to_string(ntohs(a->sin6_port));
    return out;
}

}  // namespace hydra
