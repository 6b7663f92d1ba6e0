// Logging: one line per event to stderr, as text (dev) or JSON (prod), tagged with a request id.
#pragma once

#include <string>
#include <string_view>

namespace hydra {

enum class LogLevel { trace, debug, info, warn, error };
enum class LogFormat { text, json };

class Logger {
  public:
    explicit Logger(std::string tag = {}) : tag_(std::move(tag)) {}

    // The process-wide sink settings (from the `log` config section).
    static void configure(LogLevel level, LogFormat format);
    static LogLevel parse_level(std::string_view name);  // throws std::invalid_argument
    static bool enabled(LogLevel level);

    void log(LogLevel level, std::string_view msg) const;
    void trace(std::string_view msg) const { log(LogLevel::trace, msg); }
    void debug(std::string_view msg) const { log(LogLevel::debug, msg); }
    void info(std::string_view msg) const { log(LogLevel::info, msg); }
    void warn(std::string_view msg) const { log(LogLevel::warn, msg); }
    void error(std::string_view msg) const { log(LogLevel::error, msg); }

    const std::string& tag() const { return tag_; }

  private:
    std::string tag_;  // usually the request id
};

}  // namespace hydra
