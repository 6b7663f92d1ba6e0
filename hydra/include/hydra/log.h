// Logging: one line per event to stderr, as text (dev) or JSON (prod), tagged with a request id.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace hydra {

enum class LogLevel { trace, debug, info, warn, error };
enum class LogFormat { text, json };

// Values that came from outside (a user name, a uuid, a queue name) go in fields, not in the message: in JSON logs
// each is its own key; in text logs they follow the message as ` key=value` (quoted when needed). Control
// characters anywhere in a text line (message, tag, fields) are escaped (\n, \x1b, ...), so that no input can
// start a line of its own.
using LogFields = std::initializer_list<std::pair<std::string_view, std::string_view>>;

class Logger {
  public:
    explicit Logger(std::string tag = {}) : tag_(std::move(tag)) {}

    // The process-wide sink settings (from the `log` config section).
    static void configure(LogLevel level, LogFormat format);
    static LogLevel parse_level(std::string_view name);  // throws std::invalid_argument
    static bool enabled(LogLevel level);

    void log(LogLevel level, std::string_view msg, LogFields fields = {}) const;
    void trace(std::string_view msg, LogFields fields = {}) const { log(LogLevel::trace, msg, fields); }
    void debug(std::string_view msg, LogFields fields = {}) const { log(LogLevel::debug, msg, fields); }
    void info(std::string_view msg, LogFields fields = {}) const { log(LogLevel::info, msg, fields); }
    void warn(std::string_view msg, LogFields fields = {}) const { log(LogLevel::warn, msg, fields); }
    void error(std::string_view msg, LogFields fields = {}) const { log(LogLevel::error, msg, fields); }

    // `text` with control characters escaped (what a text log line shows of it).
    static std::string escape(std::string_view text);

    const std::string& tag() const { return tag_; }

  private:
    std::string tag_;  // usually the request id
};

}  // namespace hydra
