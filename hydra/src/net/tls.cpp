#include "net/tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <new>
#include <vector>

#include <hydra/config.h>

namespace hydra {

namespace {

constexpr std::size_t kGather = 16 * 1024;           // one TLS record's worth of small frames per write
constexpr off_t kMaxPemFile = 1024 * 1024;           // a certificate chain or key file is far smaller
const unsigned char kAlpnHttp11[] = "\x08http/1.1";  // ALPN wire format: length-prefixed names

// The reason of OpenSSL's last error (and clears the queue), or `fallback` when there is none.
std::string openssl_error(const std::string& fallback) {
    unsigned long code = ERR_peek_last_error();
    ERR_clear_error();
    if (code == 0) return fallback;
    const char* reason = ERR_reason_error_string(code);
    return reason != nullptr ? reason : fallback;
}

// A PEM file the operator named must exist, be a readable regular file and be of a sane size.
void check_file(const std::string& key, const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0)
        throw ConfigError(key + ": cannot read '" + path + "': " + std::strerror(errno));
    if (!S_ISREG(st.st_mode)) throw ConfigError(key + ": '" + path + "' is not a file");
    if (st.st_size > kMaxPemFile) throw ConfigError(key + ": '" + path + "' is larger than 1 MiB");
}

// Offered http/1.1 → chosen; a client that offers only other protocols goes on without ALPN (it may still speak
// HTTP/1.1, as it would without ALPN).
int select_alpn(SSL*, const unsigned char** out, unsigned char* out_len, const unsigned char* in, unsigned in_len,
                void*) {
    unsigned char* chosen = nullptr;
    if (SSL_select_next_proto(&chosen, out_len, kAlpnHttp11, sizeof kAlpnHttp11 - 1, in, in_len) ==
        OPENSSL_NPN_NEGOTIATED) {
        *out = chosen;
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

// An encrypted key must not make OpenSSL prompt on the terminal: no passphrase, and loading fails.
int no_passphrase(char*, int, int, void*) { return 0; }

SSL_CTX* load(const TlsSettings& s) {
    const std::string cert_key = s.section + ".tls.cert_file";
    const std::string key_key = s.section + ".tls.key_file";
    check_file(cert_key, s.cert_file);
    check_file(key_key, s.key_file);
    ERR_clear_error();
    SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == nullptr) throw ConfigError(s.section + ".tls: " + openssl_error("cannot create a TLS context"));
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_IGNORE_UNEXPECTED_EOF);
    // Partial writes and a moving buffer: callers retry from their queue (see TlsSession::write). Not
    // SSL_MODE_RELEASE_BUFFERS, which frees and allocates the record buffers around every message (+30 % CPU per
    // echo round trip): the loops release them once a connection is quiet (TlsSession::release_buffers).
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_read_ahead(ctx, 1);  // one recv() for several records; TlsSession::pending() covers what it holds
    SSL_CTX_set_alpn_select_cb(ctx, select_alpn, nullptr);
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
    std::string error;
    if (SSL_CTX_use_certificate_chain_file(ctx, s.cert_file.c_str()) != 1)
        error = cert_key + ": cannot load '" + s.cert_file + "': " + openssl_error("not a PEM certificate");
    else if (SSL_CTX_use_PrivateKey_file(ctx, s.key_file.c_str(), SSL_FILETYPE_PEM) != 1 ||
             SSL_CTX_check_private_key(ctx) != 1)
        error = ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH
                    ? key_key + ": '" + s.key_file + "' does not match the certificate of " + cert_key
                    : key_key + ": cannot load '" + s.key_file + "': " + openssl_error("not a PEM private key");
    ERR_clear_error();
    if (!error.empty()) {
        SSL_CTX_free(ctx);
        throw ConfigError(error);
    }
    return ctx;
}

}  // namespace

TlsSettings TlsSettings::from(const Config& config, const std::string& section) {
    TlsSettings s;
    s.section = section;
    s.cert_file = config.str(section + ".tls.cert_file");
    s.key_file = config.str(section + ".tls.key_file");
    s.handshake_timeout_ms = static_cast<int>(config.integer(section + ".tls.handshake_timeout_ms"));
    if (s.cert_file.empty() != s.key_file.empty())
        throw ConfigError(config.source() + ": " + section + ".tls: cert_file and key_file go together (one is empty)");
    return s;
}

std::shared_ptr<TlsContext> load_tls(const Config& config, const std::string& section) {
    TlsSettings settings = TlsSettings::from(config, section);
    if (!settings.enabled()) return nullptr;
    try {
        return std::make_shared<TlsContext>(settings);
    } catch (const ConfigError& e) {
        throw ConfigError(config.source() + ": " + e.what());
    }
}

// ---------------------------------------------------------------------------------------------------------------

TlsContext::TlsContext(TlsSettings settings) : settings_(std::move(settings)), ctx_(load(settings_)) {}

TlsContext::~TlsContext() { SSL_CTX_free(ctx_); }

void TlsContext::reload() {
    SSL_CTX* fresh = load(settings_);
    SSL_CTX* old;
    {
        std::lock_guard lock(mutex_);
        old = ctx_;
        ctx_ = fresh;
    }
    SSL_CTX_free(old);  // sessions made from it hold their own reference
}

std::unique_ptr<TlsSession> TlsContext::accept(int fd) const {
    SSL* ssl;
    {
        std::lock_guard lock(mutex_);
        ssl = SSL_new(ctx_);
    }
    if (ssl == nullptr || SSL_set_fd(ssl, fd) != 1) {
        SSL_free(ssl);
        ERR_clear_error();
        throw std::bad_alloc();
    }
    SSL_set_accept_state(ssl);
    return std::make_unique<TlsSession>(ssl);
}

// ---------------------------------------------------------------------------------------------------------------

TlsSession::~TlsSession() { SSL_free(ssl_); }

TlsSession::Handshake TlsSession::handshake(std::string& error) {
    ERR_clear_error();
    int r = SSL_do_handshake(ssl_);
    if (r == 1) {
        established_ = true;
        wants_write_ = false;
        return Handshake::done;
    }
    int e = SSL_get_error(ssl_, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        wants_write_ = e == SSL_ERROR_WANT_WRITE;
        return wants_write_ ? Handshake::want_write : Handshake::want_read;
    }
    broken_ = true;
    if (e == SSL_ERROR_SYSCALL)
        error = errno != 0 ? std::strerror(errno) : "connection closed";
    else
        error = openssl_error("protocol error");
    ERR_clear_error();
    return Handshake::failed;
}

ssize_t TlsSession::read(void* buffer, std::size_t size) {
    buffers_ = true;
    ERR_clear_error();
    int n = SSL_read(ssl_, buffer, static_cast<int>(std::min<std::size_t>(size, INT_MAX)));
    if (n > 0) {
        wants_write_ = false;
        return n;
    }
    return fail(n, false);
}

ssize_t TlsSession::write(const void* data, std::size_t size) {
    if (size == 0) return 0;
    buffers_ = true;
    ERR_clear_error();
    const int len = static_cast<int>(std::min<std::size_t>(size, INT_MAX));
    int n = SSL_write(ssl_, data, len);
    if (n > 0) {
        unfinished_write_ = 0;
        return n;
    }
    ssize_t r = fail(n, true);
    if (errno == EAGAIN) unfinished_write_ = static_cast<std::size_t>(len);
    return r;
}

ssize_t TlsSession::writev(const iovec* iov, int count) {
    if (count == 1 || iov[0].iov_len >= kGather) return write(iov[0].iov_base, iov[0].iov_len);
    thread_local std::vector<char> scratch(kGather);
    std::size_t used = 0;
    for (int i = 0; i < count && used < kGather; ++i) {
        std::size_t take = std::min(iov[i].iov_len, kGather - used);
        std::memcpy(scratch.data() + used, iov[i].iov_base, take);
        used += take;
    }
    return write(scratch.data(), used);
}

ssize_t TlsSession::fail(int ret, bool writing) {
    int e = SSL_get_error(ssl_, ret);
    switch (e) {
        case SSL_ERROR_WANT_READ:
        case SSL_ERROR_WANT_WRITE:
            wants_write_ = e == SSL_ERROR_WANT_WRITE;
            errno = EAGAIN;
            return -1;
        case SSL_ERROR_ZERO_RETURN:  // the peer's close_notify (or, with IGNORE_UNEXPECTED_EOF, a bare EOF)
            if (!writing) return 0;
            errno = EPIPE;
            return -1;
        case SSL_ERROR_SYSCALL:
            broken_ = true;
            ERR_clear_error();
            if (errno == 0 || errno == EAGAIN) errno = ECONNRESET;
            return -1;
        default:
            broken_ = true;
            ERR_clear_error();
            errno = EPROTO;
            return -1;
    }
}

bool TlsSession::pending() const { return SSL_has_pending(ssl_) == 1; }

void TlsSession::release_buffers() {
    if (!buffers_ || !established_ || broken_) return;
    if (SSL_free_buffers(ssl_) == 1) buffers_ = false;  // (0: they hold bytes; tried again later)
}

void TlsSession::shutdown() {
    if (broken_ || !established_) return;
    ERR_clear_error();
    SSL_shutdown(ssl_);  // queues and tries to send close_notify; a full socket is not waited for
    ERR_clear_error();
}

// ---------------------------------------------------------------------------------------------------------------

ssize_t stream_read(int fd, TlsSession* tls, void* buffer, std::size_t size) {
    return tls != nullptr ? tls->read(buffer, size) : ::recv(fd, buffer, size, 0);
}

ssize_t stream_write(int fd, TlsSession* tls, const void* data, std::size_t size) {
    return tls != nullptr ? tls->write(data, size) : ::send(fd, data, size, MSG_NOSIGNAL | MSG_DONTWAIT);
}

}  // namespace hydra
