// Listening sockets for the servers: address parsing ("127.0.0.1:9090", ":9090", "[::1]:0") and bind/listen.
#pragma once

#include <sys/socket.h>

#include <string>

namespace hydra {

struct ListenSocket {
    int fd = -1;        // non-blocking, close-on-exec
    std::string bound;  // "host:port" actually bound (port 0 resolved)
};

// Binds and listens on `address` ("host:port"; an empty host means all interfaces). Throws std::runtime_error with
// the reason only ("Address already in use", "invalid address"); callers add which server and address.
ListenSocket listen_tcp(const std::string& address, int backlog);

// "host:port" of a socket address ("[v6]:port" for IPv6).
std::string address_string(const sockaddr_storage& address);

}  // namespace hydra
