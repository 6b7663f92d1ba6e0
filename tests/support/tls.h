// Certificates made at test time with the openssl command line, and the clients that speak TLS to the real binary:
// curl for https:// and python3-websockets for wss://.
#pragma once

#include <string>
#include <vector>

#include <boost/test/unit_test.hpp>

#include "support/process.h"
#include "support/temp.h"

namespace test {

struct Certificate {
    std::string cert;  // PEM certificate (self-signed: also the CA file clients trust)
    std::string key;   // PEM private key
};

// A fresh self-signed EC P-256 certificate for localhost and 127.0.0.1, subject CN=`name`.
inline Certificate make_certificate(const std::string& name = "localhost") {
    Certificate c{temp_path(name + "-cert.pem"), temp_path(name + "-key.pem")};
    ChildProcess openssl({"/usr/bin/openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                          "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=" + name, "-addext",
                          "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", c.key, "-out", c.cert});
    BOOST_REQUIRE_MESSAGE(openssl.wait(std::chrono::seconds(30)).value_or(-1) == 0, "openssl req: " + openssl.err());
    return c;
}

// `--set <listener>.tls.cert_file=... --set <listener>.tls.key_file=...` for test::Host.
inline std::vector<std::string> tls_settings(const Certificate& c, const std::vector<std::string>& listeners) {
    std::vector<std::string> args;
    for (const auto& l : listeners) {
        args.insert(args.end(), {"--set", l + ".tls.cert_file=" + c.cert, "--set", l + ".tls.key_file=" + c.key});
    }
    return args;
}

// The subject CN of the certificate a TLS server at 127.0.0.1:`port` presents ("" if the handshake failed).
inline std::string served_certificate_name(int port) {
    ChildProcess sh({"/bin/sh", "-c",
                     "/usr/bin/openssl s_client -connect 127.0.0.1:" + std::to_string(port) +
                         " </dev/null 2>/dev/null | /usr/bin/openssl x509 -noout -subject -nameopt multiline"});
    sh.wait(std::chrono::seconds(30));
    const std::string out = sh.out();
    const auto at = out.find("commonName");
    if (at == std::string::npos) return "";
    const auto eq = out.find("= ", at);
    const auto end = out.find('\n', eq);
    return out.substr(eq + 2, end - eq - 2);
}

}  // namespace test
