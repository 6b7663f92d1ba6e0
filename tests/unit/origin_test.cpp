// ws/origin: which browser origins may open a WebSocket (ws.allowed_origins).
#include <boost/test/unit_test.hpp>

#include <stdexcept>

#include "ws/origin.h"

using hydra::ws::OriginPolicy;

BOOST_AUTO_TEST_SUITE(origin)

BOOST_AUTO_TEST_CASE(an_empty_list_or_a_star_allows_every_origin) {
    BOOST_CHECK(OriginPolicy().allows_any());
    BOOST_CHECK(OriginPolicy().allows("https://evil.example"));
    OriginPolicy star({"https://app.example.com", "*"});
    BOOST_CHECK(star.allows_any());
    BOOST_CHECK(star.allows("null"));
}

BOOST_AUTO_TEST_CASE(exact_origins_match_scheme_host_and_port) {
    OriginPolicy p({"https://app.example.com", "http://localhost:3000"});
    BOOST_CHECK(!p.allows_any());
    BOOST_CHECK(p.allows("https://app.example.com"));
    BOOST_CHECK(p.allows("HTTPS://App.Example.COM"));      // scheme and host are case-insensitive
    BOOST_CHECK(p.allows("https://app.example.com:443"));  // the default port is no port
    BOOST_CHECK(p.allows("http://localhost:3000"));
    BOOST_CHECK(!p.allows("http://app.example.com"));  // another scheme
    BOOST_CHECK(!p.allows("https://app.example.com:8443"));
    BOOST_CHECK(!p.allows("http://localhost"));
    BOOST_CHECK(!p.allows("http://localhost:3001"));
    BOOST_CHECK(!p.allows("https://app.example.com.evil.example"));
    BOOST_CHECK(!p.allows("https://evilapp.example.com"));
    BOOST_CHECK(!p.allows("https://sub.app.example.com"));
}

BOOST_AUTO_TEST_CASE(a_wildcard_matches_subdomains_only) {
    OriginPolicy p({"https://*.example.com"});
    BOOST_CHECK(p.allows("https://a.example.com"));
    BOOST_CHECK(p.allows("https://a.b.example.com"));
    BOOST_CHECK(!p.allows("https://example.com"));
    BOOST_CHECK(!p.allows("https://evil-example.com"));
    BOOST_CHECK(!p.allows("https://aexample.com"));
    BOOST_CHECK(!p.allows("https://a.example.com.evil.example"));
    BOOST_CHECK(!p.allows("http://a.example.com"));
    BOOST_CHECK(!p.allows("https://a.example.com:8443"));
}

BOOST_AUTO_TEST_CASE(what_is_not_an_origin_is_refused) {
    OriginPolicy p({"https://app.example.com"});
    for (const char* bad :
         {"", "null", "app.example.com", "https://", "https://app.example.com/", "https://app.example.com/x",
          "https://user@app.example.com", "https://app.example.com:", "https://app.example.com:99999x",
          "ftp://app.example.com", "https://*.example.com", "https://app.example.com\r\nX: y"})
        BOOST_CHECK_MESSAGE(!p.allows(bad), "allowed: " << bad);
    BOOST_CHECK(!p.allows(std::string(5000, 'a')));
}

BOOST_AUTO_TEST_CASE(malformed_patterns_are_refused_with_their_text) {
    for (const char* bad :
         {"app.example.com", "ftp://x", "https://a.*.example.com", "https://example.com/path", "https://"}) {
        try {
            OriginPolicy p({bad});
            BOOST_ERROR("accepted: " << bad);
        } catch (const std::invalid_argument& e) {
            BOOST_CHECK(std::string(e.what()).find(bad) != std::string::npos);
        }
    }
}

BOOST_AUTO_TEST_SUITE_END()
