#include <boost/test/unit_test.hpp>

#include <hydra/testing.h>

#include "api/router.h"

using hydra::Router;

namespace {
hydra::MethodHandlers any(int tag) {
    return {{"", [tag](hydra::Context&) { return hydra::Result(hydra::Json(tag)); }}};
}
int call(const Router::Match& m) {
    hydra::Context ctx = hydra::testing::make_context({});
    return (*m.handler)(ctx).value().get<int>();
}
}  // namespace

BOOST_AUTO_TEST_SUITE(router)

BOOST_AUTO_TEST_CASE(exact_routes_and_normalization) {
    Router r;
    r.add("/msg/send", any(1));
    r.add("/", any(2));
    BOOST_CHECK_EQUAL(call(r.match("POST", "/msg/send")), 1);
    BOOST_CHECK_EQUAL(call(r.match("GET", "/msg/send/")), 1);
    BOOST_CHECK_EQUAL(call(r.match("GET", "/")), 2);
    BOOST_CHECK(r.match("GET", "/msg").status == Router::Status::not_found);
    BOOST_CHECK(r.match("GET", "/msg/send/x").status == Router::Status::not_found);
}

BOOST_AUTO_TEST_CASE(path_parameters) {
    Router r;
    r.add("/order/:id/items/:item", any(1));
    r.add("/order/latest/items/:item", any(2));
    auto m = r.match("GET", "/order/17/items/book");
    BOOST_REQUIRE(m.status == Router::Status::found);
    BOOST_CHECK_EQUAL(m.path_params["id"], "17");
    BOOST_CHECK_EQUAL(m.path_params["item"], "book");
    BOOST_CHECK_EQUAL(m.pattern, "/order/:id/items/:item");
    BOOST_CHECK(r.match("GET", "/order/17/items").status == Router::Status::not_found);
}

BOOST_AUTO_TEST_CASE(verbs_and_405) {
    Router r;
    hydra::MethodHandlers verbs;
    verbs["GET"] = any(1).at("");
    verbs["POST"] = any(2).at("");
    r.add("/order", verbs);
    BOOST_CHECK_EQUAL(call(r.match("GET", "/order")), 1);
    BOOST_CHECK_EQUAL(call(r.match("POST", "/order")), 2);
    auto m = r.match("DELETE", "/order");
    BOOST_CHECK(m.status == Router::Status::method_not_allowed);
    BOOST_CHECK_EQUAL(m.allow, "GET, POST");
    // adding a verb later to the same route works; the same verb twice is a programming error
    r.add("/order", {{"DELETE", any(3).at("")}});
    BOOST_CHECK_EQUAL(call(r.match("DELETE", "/order")), 3);
    BOOST_CHECK_THROW(r.add("/order", {{"GET", any(4).at("")}}), std::invalid_argument);
}

// Async handlers (App::api_async) share the route table: one verb, one handler of either kind.
BOOST_AUTO_TEST_CASE(async_handlers_by_verb) {
    Router r;
    r.add("/msg/send", {}, {{"POST", [](hydra::Context&, hydra::Reply) {}}});
    r.add("/msg/send", {{"GET", [](hydra::Context&) { return hydra::Result(hydra::Json(1)); }}});
    auto post = r.match("POST", "/msg/send");
    BOOST_REQUIRE(post.status == Router::Status::found);
    BOOST_CHECK(post.async != nullptr);
    BOOST_CHECK(post.handler == nullptr);
    auto get = r.match("GET", "/msg/send");
    BOOST_REQUIRE(get.status == Router::Status::found);
    BOOST_CHECK(get.async == nullptr);
    BOOST_CHECK_EQUAL(call(get), 1);
    auto del = r.match("DELETE", "/msg/send");
    BOOST_CHECK(del.status == Router::Status::method_not_allowed);
    BOOST_CHECK_EQUAL(del.allow, "GET, POST");
    BOOST_CHECK_THROW(r.add("/msg/send", {{"POST", [](hydra::Context&) { return hydra::Result(); }}}),
                      std::invalid_argument);
    BOOST_CHECK_THROW(r.add("/msg/send", {}, {{"GET", [](hydra::Context&, hydra::Reply) {}}}), std::invalid_argument);
    // Any verb: the async catch-all serves what has no handler of its own.
    r.add("/any", {}, {{"", [](hydra::Context&, hydra::Reply) {}}});
    BOOST_CHECK(r.match("PATCH", "/any").async != nullptr);
}

BOOST_AUTO_TEST_CASE(wildcard_takes_the_rest_of_the_path) {
    Router r;
    r.add("/files/*path", any(1));
    auto m = r.match("GET", "/files/a/b/c.txt");
    BOOST_REQUIRE(m.status == Router::Status::found);
    BOOST_CHECK_EQUAL(m.path_params["path"], "a/b/c.txt");
    m = r.match("GET", "/files");
    BOOST_REQUIRE(m.status == Router::Status::found);
    BOOST_CHECK_EQUAL(m.path_params["path"], "");
    BOOST_CHECK(r.match("GET", "/other/x").status == Router::Status::not_found);
    BOOST_CHECK_THROW(r.add("/x/*rest/more", any(2)), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(bad_patterns_are_rejected) {
    Router r;
    BOOST_CHECK_THROW(r.add("msg/send", any(1)), std::invalid_argument);
    BOOST_CHECK_THROW(r.add("/a//b", any(1)), std::invalid_argument);
    BOOST_CHECK_THROW(r.add("/a/:", any(1)), std::invalid_argument);
}

// ApiOptions::auth is per registration: the verbs of one call carry it, the same path's other verbs do not.
BOOST_AUTO_TEST_CASE(a_match_carries_the_auth_of_its_registration) {
    Router r;
    r.add("/msg/send", {{"POST", [](hydra::Context&) { return hydra::Result(); }}}, {}, hydra::Auth::api_key);
    r.add("/msg/send", {{"GET", [](hydra::Context&) { return hydra::Result(); }}});
    r.add("/order/:id", {}, {{"", [](hydra::Context&, hydra::Reply) {}}}, hydra::Auth::api_key);
    BOOST_CHECK(r.match("POST", "/msg/send").auth == hydra::Auth::api_key);
    BOOST_CHECK(r.match("GET", "/msg/send").auth == hydra::Auth::none);
    BOOST_CHECK(r.match("PUT", "/order/7").auth == hydra::Auth::api_key);
    BOOST_CHECK(r.match("GET", "/nowhere").auth == hydra::Auth::none);
}

BOOST_AUTO_TEST_SUITE_END()
