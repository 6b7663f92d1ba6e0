// <hydra/json.h>: JSON read from outside (the flat-object fast path in front of the library must read exactly what
// the library reads, and leave everything else to it) and JSON strings written without the library.
#include <boost/test/unit_test.hpp>

#include <string>
#include <vector>

#include <hydra/json.h>

using hydra::Json;

BOOST_AUTO_TEST_SUITE(json)

BOOST_AUTO_TEST_CASE(parsed_text_is_what_the_library_reads) {
    const std::vector<std::string> texts = {
        // flat objects of plain strings (the fast path)
        R"({"uuid":"c1","msg":"ts=1 seq=2"})", "{}", " { } ", "\t{ \"a\" :\n\"b\" ,\r\"c\":\"\" }\n",
        R"({"a":"first","a":"last"})", R"({"":""})",
        // everything else goes to the library
        R"({"a":"esc\"aped"})", R"({"a":"caf\u00e9"})", "{\"a\":\"caf\xc3\xa9\"}", R"({"n":1,"s":"x"})",
        R"({"o":{"a":"b"}})", R"({"a":["b"]})", R"({"t":true,"f":false,"z":null})", "[\"a\"]", "\"a\"", "1",
        "{\"a\":\"\x7f\"}",
        // malformed: refused whichever reads it
        "", "{", "}", R"({"a":"b")", R"({"a":"b",})", R"({"a" "b"})", R"({"a":"b"} x)", R"({"a":"b"}{})", R"({a:"b"})",
        R"({"a":'b'})", "{\"a\":\"b\nc\"}", std::string("{\"a\":\"b\0c\"}", 11),
        R"({"a":"b"})"
        "\x01",
        // the library ends its input at a NUL: what follows one is not read
        std::string("{\"a\":\"b\"}\0garbage", 17)};
    for (const std::string& text : texts) {
        const Json library = Json::parse(text, nullptr, false);
        const Json lenient = hydra::parse_json_or_discarded(text);
        BOOST_TEST_CONTEXT("text: " << text) {
            BOOST_CHECK_EQUAL(lenient.is_discarded(), library.is_discarded());
            if (!library.is_discarded()) {
                BOOST_CHECK_EQUAL(lenient, library);
                BOOST_CHECK_EQUAL(hydra::parse_json(text), library);
            } else {
                BOOST_CHECK_THROW(hydra::parse_json(text), Json::parse_error);
            }
        }
    }
    BOOST_CHECK_EQUAL(hydra::parse_json(R"({"a":"first","a":"last"})")["a"], "last");
}

BOOST_AUTO_TEST_CASE(strings_written_without_the_library_are_valid_json) {
    for (const std::string s :
         {"plain", "", "quote \" and \\ backslash", "tab\tnewline\n", "caf\xc3\xa9", "invalid \xff utf-8"}) {
        std::string out;
        hydra::append_json_string(out, s);
        const Json read = Json::parse(out, nullptr, false);
        BOOST_TEST_CONTEXT("string: " << s) {
            BOOST_REQUIRE(read.is_string());
            if (s.find('\xff') == std::string::npos) BOOST_CHECK_EQUAL(read.get<std::string>(), s);
        }
    }
    std::string plain;
    hydra::append_json_string(plain, "as is");
    BOOST_CHECK_EQUAL(plain, "\"as is\"");
}

BOOST_AUTO_TEST_SUITE_END()
