#include "config/overrides.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <optional>
#include <system_error>

#include "config/validator.h"

namespace hydra::config {
namespace {

bool valid_env_name(std::string_view name) {
    if (name.empty() || std::isdigit(static_cast<unsigned char>(name.front()))) return false;
    return std::all_of(name.begin(), name.end(),
                       [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; });
}

std::string expand(const std::string& text, const std::string& source, const std::string& path, const EnvLookup& env) {
    std::string out;
    std::size_t pos = 0;
    while (true) {
        auto start = text.find("${", pos);
        if (start == std::string::npos) break;
        out.append(text, pos, start - pos);
        auto end = text.find('}', start + 2);
        if (end == std::string::npos) throw error(source, path, "unterminated \"${\" in " + json_quoted(text));
        std::string_view body(text.data() + start + 2, end - start - 2);
        auto separator = body.find(":-");
        std::string name(body.substr(0, separator));
        if (!valid_env_name(name)) {
            throw error(source, path,
                        "invalid environment variable reference " +
                            json_quoted(std::string_view(text).substr(start, end - start + 1)));
        }
        std::optional<std::string> found = env(name);
        if (separator != std::string_view::npos) {
            // As in the shell, ":-" also replaces a variable that is set but empty.
            if (!found || found->empty()) found = std::string(body.substr(separator + 2));
        } else if (!found) {
            throw error(source, path, "environment variable " + name + " is not set and has no default");
        }
        out += *found;
        pos = end + 1;
    }
    if (pos == 0) return text;
    out.append(text, pos);
    return out;
}

// The text of a --set value, typed by the schema at its key.
Json typed_value(const std::string& text, const Json& schema, const std::string& path) {
    const std::string type = schema_type(schema);
    auto fail = [&](const std::string& expected) {
        return error("--set", path,
                     "expected " + expected + ", got " + json_quoted(is_secret(schema) ? kMaskText : text));
    };
    if (type == "string") return text;
    if (type == "integer") {
        std::int64_t number = 0;
        auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), number);
        if (ec != std::errc() || end != text.data() + text.size()) throw fail("an integer");
        return number;
    }
    if (type == "number") {
        double number = 0;
        auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), number);
        if (ec != std::errc() || end != text.data() + text.size() || !std::isfinite(number)) throw fail("a number");
        return number;
    }
    if (type == "boolean") {
        if (text == "true") return true;
        if (text == "false") return false;
        throw fail("true or false");
    }
    Json parsed = Json::parse(text, nullptr, false);
    // A list that may be written as one string ("split"): anything but a JSON array is that string.
    if (type == "array" && schema.contains("split") && (parsed.is_discarded() || !parsed.is_array())) return text;
    if (type == "array" || type == "object") {
        if (parsed.is_discarded() || !has_type(parsed, type)) throw fail("a JSON " + type);
        return parsed;
    }
    // No declared type (an open-ended object): JSON if it parses, the raw text otherwise.
    return parsed.is_discarded() ? Json(text) : parsed;
}

}  // namespace

void substitute(Json& value, const std::string& source, const std::string& path, const EnvLookup& env) {
    if (value.is_string()) {
        value = expand(value.get_ref<const std::string&>(), source, path, env);
    } else if (value.is_object()) {
        for (auto& [key, child] : value.items()) substitute(child, source, join_path(path, key), env);
    } else if (value.is_array()) {
        for (std::size_t i = 0; i < value.size(); ++i) {
            substitute(value[i], source, path + "[" + std::to_string(i) + "]", env);
        }
    }
}

void apply_set(Json& doc, const std::string& item, const Json& root_schema, const std::string& source) {
    auto equals = item.find('=');
    if (equals == std::string::npos || equals == 0)
        throw ConfigError("--set: " + json_quoted(item) + ": expected key=value");
    const std::string key = item.substr(0, equals), text = item.substr(equals + 1);
    const auto parts = split_path(key);

    // Walk the schema first, so that a typo is reported before the document is touched.
    std::vector<std::string> keys;
    const Json* schema = &root_schema;
    std::string path;
    for (std::size_t i = 0; i < parts.size(); ++i) {
        const std::string type = schema_type(*schema);
        if (!type.empty() && type != "object") {
            throw error("--set", join_path(path, parts[i]), "unknown key (" + path + " is not an object)");
        }
        bool declared = false;
        // An untyped schema accepts anything, so it is open-ended like additionalProperties: true.
        const Json* sub = type.empty() ? &anything() : child_schema(*schema, parts[i], declared);
        if (!sub) throw error("--set", join_path(path, parts[i]), "unknown key (" + known_keys(*schema, path) + ")");
        if (!declared) {
            // Under an open-ended object the rest of the path is one key: librdkafka names contain dots.
            std::string rest = parts[i];
            for (std::size_t j = i + 1; j < parts.size(); ++j) rest += "." + parts[j];
            keys.push_back(rest);
            path = join_path(path, rest);
            schema = sub;
            break;
        }
        keys.push_back(parts[i]);
        path = join_path(path, parts[i]);
        schema = sub;
    }

    Json value = typed_value(text, *schema, path);
    validate(value, *schema, path, "--set");

    Json* node = &doc;
    std::string node_path;
    for (std::size_t i = 0; i + 1 < keys.size(); ++i) {
        node_path = join_path(node_path, keys[i]);
        Json& next = (*node)[keys[i]];
        if (next.is_null()) next = Json::object();
        if (!next.is_object()) throw error(source, node_path, "expected an object, got " + describe(next, false));
        node = &next;
    }
    (*node)[keys.back()] = std::move(value);
}

}  // namespace hydra::config
