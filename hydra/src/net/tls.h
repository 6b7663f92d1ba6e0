// TLS for the servers' listeners, with OpenSSL on the loops' non-blocking sockets: a listener's certificate
// (TlsContext, re-read on reload) and one connection's session (TlsSession) with recv()/send()-like calls, so that
// the transports read and write the same way with or without TLS.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>
#include <memory>
#include <mutex>
#include <string>

using SSL = struct ssl_st;
using SSL_CTX = struct ssl_ctx_st;

namespace hydra {

class Config;

// A listener's `<section>.tls` settings.
struct TlsSettings {
    std::string section;    // "api", "ws", "admin": names the keys in errors
    std::string cert_file;  // PEM: the certificate, then its chain
    std::string key_file;   // PEM private key
    int handshake_timeout_ms = 10000;

    bool enabled() const { return !cert_file.empty() || !key_file.empty(); }
    // Throws ConfigError when only one of cert_file/key_file is set.
    static TlsSettings from(const Config& config, const std::string& section);
};

class TlsSession;

// One listener's server context: TLS 1.2/1.3, ALPN http/1.1, OpenSSL's default ciphers. Thread-safe.
class TlsContext {
  public:
    // Loads the certificate and key. Throws ConfigError naming the key and file ("ws.tls.key_file: ...").
    explicit TlsContext(TlsSettings settings);
    ~TlsContext();
    TlsContext(const TlsContext&) = delete;
    TlsContext& operator=(const TlsContext&) = delete;

    // Re-reads the files: connections accepted from now on use them, open ones keep theirs. On failure throws
    // ConfigError and the previous certificate stays in use.
    void reload();
    // A session for an accepted socket (server side, handshake not started). Throws std::bad_alloc.
    std::unique_ptr<TlsSession> accept(int fd) const;
    const TlsSettings& settings() const { return settings_; }

  private:
    TlsSettings settings_;
    mutable std::mutex mutex_;
    SSL_CTX* ctx_ = nullptr;  // guarded by mutex_ (a session holds its own reference)
};

// One connection's TLS over its non-blocking socket. Used by the connection's loop thread only.
class TlsSession {
  public:
    enum class Handshake { done, want_read, want_write, failed };

    explicit TlsSession(SSL* ssl) : ssl_(ssl) {}
    ~TlsSession();
    TlsSession(const TlsSession&) = delete;
    TlsSession& operator=(const TlsSession&) = delete;

    bool established() const { return established_; }
    // Drives the handshake; on failure `error` gets OpenSSL's reason.
    Handshake handshake(std::string& error);
    // Like recv(): bytes read, 0 at the end of the stream (close_notify or EOF), -1 with errno (EAGAIN: wait for
    // the socket; wants_write() tells which way).
    ssize_t read(void* buffer, std::size_t size);
    // Like send(): bytes taken (at least one record), -1 with errno. After EAGAIN the next call must start with the
    // same bytes (OpenSSL holds a partly written record): callers retry from their unchanged queue head.
    ssize_t write(const void* data, std::size_t size);
    // Like sendmsg(): small pieces are gathered into records of up to 16 KiB; the same retry rule as write().
    ssize_t writev(const iovec* iov, int count);
    // After a write()/writev() that returned EAGAIN: the bytes it was given, which OpenSSL has already put into a
    // record (0 when the last write completed). A caller that drops queued output must keep at least this many bytes
    // from its queue head, or the retry fails and the peer never gets what is sent instead.
    std::size_t unfinished_write() const { return unfinished_write_; }
    // Decrypted or undecrypted bytes held by OpenSSL that the socket will not report again: read() before waiting.
    bool pending() const;
    // The last read() or handshake() is waiting for the socket to take bytes (EPOLLOUT), not to bring them.
    bool wants_write() const { return wants_write_; }
    // Gives OpenSSL's record buffers (about 34 KB) back while the connection is quiet; the next read or write
    // allocates them again. The loops call it for connections idle for kTlsIdleReleaseMs, so that busy connections
    // keep theirs (no allocation per message) and idle ones cost little. A no-op while they hold bytes.
    void release_buffers();
    // Sends close_notify, best effort (never waits).
    void shutdown();

  private:
    ssize_t fail(int ret, bool writing);

    SSL* ssl_;
    bool established_ = false;
    bool wants_write_ = false;
    bool broken_ = false;  // a fatal error: OpenSSL forbids SSL_shutdown after one
    bool buffers_ = true;  // OpenSSL may hold record buffers (not released since the last read or write)
    std::size_t unfinished_write_ = 0;
};

// One step of a new connection's handshake, for the loops: `writing` (the connection waits for EPOLLOUT) follows what
// OpenSSL waits for, and `update_events()` is called when it changes and once the session is established (`writing`
// then false). The result is the session's: on done the caller reads (the first request may have come with the
// handshake's last flight); on failed it logs `error` and drops the connection.
template <class UpdateEvents>
TlsSession::Handshake tls_handshake_step(TlsSession& tls, bool& writing, UpdateEvents&& update_events,
                                         std::string& error) {
    const TlsSession::Handshake step = tls.handshake(error);
    if (step == TlsSession::Handshake::done) {
        writing = false;
        update_events();
    } else if (step != TlsSession::Handshake::failed && writing != tls.wants_write()) {
        writing = tls.wants_write();
        update_events();
    }
    return step;
}

// `<section>.tls` of `config` loaded: null when it is off; ConfigError ("<source>: <section>.tls.cert_file: ...") when
// a file does not load. For `hydra run` and `hydra conf check` alike.
std::shared_ptr<TlsContext> load_tls(const Config& config, const std::string& section);

// How long a TLS connection must be quiet before its loop releases its record buffers (TlsSession::release_buffers).
constexpr long kTlsIdleReleaseMs = 1000;

// recv()/send() on a connection that may speak TLS (`tls` null: plain TCP).
ssize_t stream_read(int fd, TlsSession* tls, void* buffer, std::size_t size);
ssize_t stream_write(int fd, TlsSession* tls, const void* data, std::size_t size);

}  // namespace hydra
