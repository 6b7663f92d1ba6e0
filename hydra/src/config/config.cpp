// Config loading: read, substitute ${VAR}, apply --set (config/overrides), validate against the schema and fill
// defaults (config/validator); then lookups by dotted path and the masked view.
#include <hydra/config.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include <fcntl.h>
#include <unistd.h>

#include "config/overrides.h"
#include "config/validator.h"

namespace hydra {
namespace {

using config::anything;
using config::child_schema;
using config::describe;
using config::error;
using config::fits_int64;
using config::is_secret;
using config::join_path;
using config::json_quoted;
using config::kMaskText;
using config::schema_type;
using config::split_path;

bool name_looks_secret(std::string name) {
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
    for (const char* word : {"password", "secret", "token", "key", "credential", "oauthbearer", "private"}) {
        if (name.find(word) != std::string::npos) return true;
    }
    return false;
}

// "scheme://user:password@host/..." → "scheme://user:******@host/..." (a user alone, often a token, is masked
// whole), for every URL in the text (a list of brokers may hold several).
std::string mask_url_credentials(const std::string& text) {
    std::string out;
    std::size_t from = 0;
    for (std::size_t scheme = text.find("://"); scheme != std::string::npos; scheme = text.find("://", from)) {
        const std::size_t start = scheme + 3;
        std::size_t end = text.find_first_of("/?#, \t", start);
        if (end == std::string::npos) end = text.size();
        const std::size_t at = text.rfind('@', end == 0 ? 0 : end - 1);
        out.append(text, from, start - from);
        from = start;
        if (at == std::string::npos || at < start) continue;
        const std::size_t colon = text.find(':', start);
        if (colon != std::string::npos && colon < at) out.append(text, start, colon + 1 - start);
        out += kMaskText;
        from = at;
    }
    out.append(text, from, std::string::npos);
    return out;
}

void mask(Json& value, const Json& schema) {
    if (value.is_string()) {
        const std::string& text = value.get_ref<const std::string&>();
        if (text.find("://") != std::string::npos) value = mask_url_credentials(text);
        return;
    }
    if (value.is_array()) {
        const Json& items = schema.is_object() && schema.contains("items") ? schema["items"] : Json::object();
        for (auto& item : value) {
            if (is_secret(items)) {
                item = kMaskText;
            } else {
                mask(item, items);
            }
        }
        return;
    }
    if (!value.is_object()) return;
    // Below an untyped schema (or additionalProperties: true) everything is free-form, so open-ended.
    const bool untyped = schema_type(schema).empty();
    for (auto& [key, child] : value.items()) {
        bool declared = false;
        const Json* sub = untyped ? &anything() : child_schema(schema, key, declared);
        if (!sub) sub = &anything();
        if (is_secret(*sub) || (!declared && name_looks_secret(key))) {
            child = kMaskText;
        } else {
            mask(child, *sub);
        }
    }
}

// Walks a dotted path in a document. A key that is not found whole-segment is tried as the rest of the path
// in one piece, so that "queue.kafka.properties.linger.ms" finds the key "linger.ms".
const Json* find(const Json& doc, std::string_view dotted) {
    const auto parts = split_path(dotted);
    const Json* node = &doc;
    for (std::size_t i = 0; i < parts.size(); ++i) {
        if (!node->is_object()) return nullptr;
        auto it = node->find(parts[i]);
        if (it != node->end()) {
            node = &*it;
            continue;
        }
        std::string rest = parts[i];
        for (std::size_t j = i + 1; j < parts.size(); ++j) rest += "." + parts[j];
        it = node->find(rest);
        return it != node->end() ? &*it : nullptr;
    }
    return node;
}

std::string read_file(const std::string& file) {
    int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw ConfigError(file + ": cannot read: " + std::strerror(errno));
    std::string text;
    char buffer[65536];
    while (true) {
        ssize_t n = ::read(fd, buffer, sizeof buffer);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int saved = errno;
            ::close(fd);
            throw ConfigError(file + ": cannot read: " + std::strerror(saved));
        }
        if (n == 0) break;
        text.append(buffer, static_cast<std::size_t>(n));
    }
    ::close(fd);
    return text;
}

Json parse_file(const std::string& text, const std::string& file) {
    try {
        return Json::parse(text);
    } catch (const Json::parse_error& e) {
        // e.byte is the 1-based offset of the last byte read, i.e. where parsing stopped.
        std::size_t offset = std::min<std::size_t>(e.byte == 0 ? 0 : e.byte - 1, text.size());
        std::size_t line = 1 + std::count(text.begin(), text.begin() + offset, '\n');
        auto line_start = text.rfind('\n', offset == 0 ? 0 : offset - 1);
        std::size_t column = line_start == std::string::npos || offset == 0 ? offset + 1 : offset - line_start;
        // nlohmann's what() is "[json.exception.parse_error.101] parse error at line 1, column 2: <reason>".
        std::string reason = e.what();
        if (auto colon = reason.find(": "); colon != std::string::npos) reason.erase(0, colon + 2);
        static constexpr std::string_view kNoise = "syntax error while parsing ";
        if (reason.compare(0, kNoise.size(), kNoise) == 0) reason.erase(0, kNoise.size());
        throw ConfigError(file + ": invalid JSON at line " + std::to_string(line) + ", column " +
                          std::to_string(column) + ": " + reason);
    }
}

}  // namespace

void ConfigSchema::add(std::string_view dotted_path, Json schema) {
    if (root_.is_null()) root_ = {{"type", "object"}, {"properties", Json::object()}};
    const auto parts = split_path(dotted_path);
    Json* node = &root_;
    std::string path;
    for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
        path = join_path(path, parts[i]);
        auto props = node->find("properties");
        if (props == node->end() || !props->contains(parts[i]) || schema_type((*props)[parts[i]]) != "object") {
            throw ConfigError("schema: " + std::string(dotted_path) + ": " + path + " is not an object section");
        }
        node = &(*props)[parts[i]];
    }
    if (parts.back().empty()) throw ConfigError("schema: " + json_quoted(dotted_path) + ": empty key");
    (*node)["properties"][parts.back()] = std::move(schema);
}

EnvLookup process_env() {
    return [](const std::string& name) -> std::optional<std::string> {
        const char* value = std::getenv(name.c_str());
        return value ? std::optional<std::string>(value) : std::nullopt;
    };
}

Config Config::load(const std::string& file, const std::vector<std::string>& sets, const ConfigSchema& schema,
                    const EnvLookup& env) {
    return from_json(parse_file(read_file(file), file), file, sets, schema, env);
}

Config Config::from_json(Json doc, std::string source, const std::vector<std::string>& sets, const ConfigSchema& schema,
                         const EnvLookup& env) {
    config::substitute(doc, source, "", env ? env : process_env());
    const Json& root = schema.json().is_null() ? Json::object() : schema.json();
    if (!doc.is_object()) throw error(source, "", "expected an object, got " + describe(doc, false));
    for (const auto& item : sets) config::apply_set(doc, item, root, source);
    config::validate(doc, root, "", source);
    Config config;
    config.doc_ = std::move(doc);
    config.schema_ = root;
    config.source_ = std::move(source);
    return config;
}

const Json& Config::at(std::string_view dotted_path) const {
    const Json* found = find(doc_, dotted_path);
    if (!found) throw error(source_, std::string(dotted_path), "not set");
    return *found;
}

bool Config::has(std::string_view dotted_path) const { return find(doc_, dotted_path) != nullptr; }

std::string Config::str(std::string_view dotted_path) const {
    const Json& value = at(dotted_path);
    if (!value.is_string()) {
        throw error(source_, std::string(dotted_path), "expected a string, got " + describe(value, false));
    }
    return value.get<std::string>();
}

std::int64_t Config::integer(std::string_view dotted_path) const {
    const Json& value = at(dotted_path);
    if (!value.is_number_integer() || !fits_int64(value)) {
        throw error(source_, std::string(dotted_path), "expected an integer, got " + describe(value, false));
    }
    return value.get<std::int64_t>();
}

double Config::number(std::string_view dotted_path) const {
    const Json& value = at(dotted_path);
    if (!value.is_number()) {
        throw error(source_, std::string(dotted_path), "expected a number, got " + describe(value, false));
    }
    return value.get<double>();
}

bool Config::boolean(std::string_view dotted_path) const {
    const Json& value = at(dotted_path);
    if (!value.is_boolean()) {
        throw error(source_, std::string(dotted_path), "expected a boolean, got " + describe(value, false));
    }
    return value.get<bool>();
}

Json Config::masked() const {
    Json copy = doc_;
    mask(copy, schema_);
    return copy;
}

}  // namespace hydra
