// The one error type handlers throw or return; servers map it to an HTTP status or a WS reply code.
#pragma once

#include <stdexcept>
#include <string>

namespace hydra {

// `code` is an HTTP-style status (400..599) or an application code. Servers answer with HTTP status `code`
// when it is in 400..599, else 400; the body carries `code` and `msg` unchanged.
class Error : public std::runtime_error {
  public:
    Error(int code, const std::string& msg) : std::runtime_error(msg), code_(code) {}
    int code() const noexcept { return code_; }
    const char* msg() const noexcept { return what(); }

  private:
    int code_;
};

// HTTP status for an error code, as described above.
inline int http_status_for(int code) { return code >= 400 && code <= 599 ? code : 400; }

}  // namespace hydra
