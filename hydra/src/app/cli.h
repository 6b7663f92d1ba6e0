// The `hydra` command line: parsing and profile lookup, apart from App so they can be unit-tested.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace hydra {

class UsageError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

struct CliCommand {
    std::string command;  // run | conf show | conf check | token | version | help
    std::string env;      // --env, else $HYDRA_ENV, else "dev"
    std::optional<std::string> config_file;
    std::vector<std::string> sets;
    // queue commands: "queue stats" | "queue peek" | "queue dlq list" | "queue dlq retry"
    std::vector<std::string> args;  // positional arguments after the command (a queue name)
    int limit = 20;                 // --limit
    std::int64_t id = 0;            // --id (dlq retry of one dead letter)
    std::string sub;                // token: --sub (required)
    int ttl = 3600;                 // token: --ttl seconds
    bool dry_run = false;           // cluster gc: --dry-run
};

// Throws UsageError with a one-line message.
CliCommand parse_cli(const std::vector<std::string>& args, const std::optional<std::string>& hydra_env);

// The profile file for `env`: $HYDRA_CONFIG_DIR/<env>.json, then config/<env>.json in the working directory, then in
// the executable's directory and each of its parents, then <system_dir>/<env>.json. Throws ConfigError if none exists.
std::string find_profile(const std::string& env, const std::string& exe_path,
                         const std::string& system_dir = "/etc/hydra");

extern const char* const kUsage;

}  // namespace hydra
