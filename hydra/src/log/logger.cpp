// The process-wide log sink: one write(2) per line so lines from many threads never interleave.
#include <hydra/log.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <stdexcept>
#include <string>

#include <hydra/json.h>

namespace hydra {
namespace {

std::atomic<LogLevel> g_level{LogLevel::info};
std::atomic<LogFormat> g_format{LogFormat::text};

const char* level_name(LogLevel level) {
    switch (level) {
        case LogLevel::trace:
            return "trace";
        case LogLevel::debug:
            return "debug";
        case LogLevel::info:
            return "info";
        case LogLevel::warn:
            return "warn";
        case LogLevel::error:
            return "error";
    }
    return "?";
}

std::string timestamp() {
    auto now = std::chrono::system_clock::now();
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
    std::time_t t = std::chrono::system_clock::to_time_t(now);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[40];
    std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    std::snprintf(buf + n, sizeof buf - n, ".%03dZ", static_cast<int>(ms));
    return buf;
}

void write_all(const std::string& line) {
    const char* p = line.data();
    std::size_t left = line.size();
    while (left > 0) {
        ssize_t n = ::write(STDERR_FILENO, p, left);
        if (n <= 0) return;  // nowhere to report a failing log sink
        p += n;
        left -= static_cast<std::size_t>(n);
    }
}

// Appends `text` with control characters (and DEL) escaped, so a line stays one line.
void append_escaped(std::string& out, std::string_view text) {
    static constexpr char kHex[] = "0123456789abcdef";
    for (char ch : text) {
        const auto c = static_cast<unsigned char>(ch);
        if (c >= 0x20 && c != 0x7f) {
            out += ch;
        } else if (c == '\n') {
            out += "\\n";
        } else if (c == '\r') {
            out += "\\r";
        } else if (c == '\t') {
            out += "\\t";
        } else {
            out += "\\x";
            out += kHex[c >> 4];
            out += kHex[c & 15];
        }
    }
}

// The fields hydra writes as numbers in JSON logs (always a number where hydra logs them; never a client's text).
bool numeric_field(std::string_view key) {
    static constexpr std::string_view kNumeric[] = {"status",       "code",     "duration_ms", "messages_in",
                                                    "messages_out", "bytes_in", "bytes_out",   "attempt"};
    for (auto k : kNumeric)
        if (key == k) return true;
    return false;
}

// A plain decimal number: digits, at most one '.', an optional leading '-'.
bool is_number(std::string_view v) {
    if (!v.empty() && v[0] == '-') v.remove_prefix(1);
    if (v.empty() || v.size() > 30 || v.front() == '.' || v.back() == '.') return false;
    int dots = 0;
    for (char c : v) {
        if (c == '.') {
            if (++dots > 1) return false;
        } else if (c < '0' || c > '9') {
            return false;
        }
    }
    return true;
}

bool needs_quotes(std::string_view value) {
    if (value.empty()) return true;
    for (char c : value)
        if (static_cast<unsigned char>(c) <= 0x20 || c == '"' || c == '=' || c == 0x7f) return true;
    return false;
}

}  // namespace

std::string Logger::escape(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    append_escaped(out, text);
    return out;
}

void Logger::configure(LogLevel level, LogFormat format) {
    g_level = level;
    g_format = format;
}

LogLevel Logger::parse_level(std::string_view name) {
    if (name == "trace") return LogLevel::trace;
    if (name == "debug") return LogLevel::debug;
    if (name == "info") return LogLevel::info;
    if (name == "warn") return LogLevel::warn;
    if (name == "error") return LogLevel::error;
    throw std::invalid_argument("unknown log level: " + std::string(name));
}

bool Logger::enabled(LogLevel level) { return level >= g_level.load(std::memory_order_relaxed); }

void Logger::log(LogLevel level, std::string_view msg, LogFields fields) const {
    if (!enabled(level)) return;
    std::string line;
    if (g_format.load(std::memory_order_relaxed) == LogFormat::json) {
        Json j = {{"ts", timestamp()}, {"level", level_name(level)}};
        if (!tag_.empty()) j["rid"] = tag_;
        j["msg"] = std::string(msg);
        for (const auto& [key, value] : fields) {
            std::string k(key);
            if (j.contains(k)) k.insert(0, "field.");  // never replaces ts, level, rid or msg
            Json number = numeric_field(k) && is_number(value) ? Json::parse(value, nullptr, false) : Json();
            if (number.is_number())
                j[k] = std::move(number);
            else
                j[k] = std::string(value);  // (also "007": not a JSON number)
        }
        line = dump(j);
    } else {
        line = timestamp();
        line += ' ';
        std::string lvl = level_name(level);
        for (auto& c : lvl) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        line += lvl;
        line.append(6 - lvl.size(), ' ');
        if (!tag_.empty()) {
            line += '[';
            append_escaped(line, tag_);
            line += "] ";
        }
        append_escaped(line, msg);
        for (const auto& [key, value] : fields) {
            line += ' ';
            append_escaped(line, key);
            line += '=';
            if (!needs_quotes(value)) {
                append_escaped(line, value);
                continue;
            }
            line += '"';
            for (char c : value) {
                if (c == '"' || c == '\\') line += '\\';
                append_escaped(line, std::string_view(&c, 1));
            }
            line += '"';
        }
    }
    line += '\n';
    write_all(line);
}

}  // namespace hydra
