// What a handler returns: JSON, text, nothing, or an Error; optionally with an explicit status.
#pragma once

#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include <hydra/error.h>
#include <hydra/json.h>

namespace hydra {

class Result {
  public:
    enum class Kind { empty, json, text, binary, error };

    Result() = default;
    Result(Json value) : kind_(Kind::json), json_(std::move(value)) {}
    Result(std::string text) : kind_(Kind::text), text_(std::move(text)) {}
    Result(const char* text) : kind_(Kind::text), text_(text) {}
    Result(const Error& error) : kind_(Kind::error), error_code_(error.code()), text_(error.what()) {}

    // A JSON body with an explicit status, e.g. Result::json({{"id", 7}}, 201).
    static Result json(Json value, int status) {
        Result r(std::move(value));
        r.status_ = status;
        return r;
    }

    // A JSON body serialized already (the caller vouches that `text` is one JSON value): answered like a Json
    // result without serializing it again, e.g. a constant reply. value() is null for it: middleware that reads
    // results reads json_body().
    static Result json_text(std::string text, int status = 200) {
        Result r(std::move(text));
        r.kind_ = Kind::json;
        r.serialized_ = true;
        r.status_ = status;
        return r;
    }

    // Raw bytes: application/octet-stream on the API, a binary message on a WS raw endpoint.
    static Result binary(std::string bytes) {
        Result r(std::move(bytes));
        r.kind_ = Kind::binary;
        return r;
    }

    Kind kind() const { return kind_; }
    bool is_error() const { return kind_ == Kind::error; }
    const Json& value() const { return json_; }
    // A json result as text: json_text()'s, else value() serialized.
    std::string json_body() const { return serialized_ ? text_ : dump(json_); }
    const std::string& text() const { return text_; }  // the text, or the error message
    int error_code() const { return error_code_; }
    std::optional<int> status() const { return status_; }

  private:
    Kind kind_ = Kind::empty;
    Json json_;
    int error_code_ = 0;
    std::string text_;
    std::optional<int> status_;
    bool serialized_ = false;  // json_text(): text_ holds the JSON
};

}  // namespace hydra
