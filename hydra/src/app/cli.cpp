#include "app/cli.h"

#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <regex>

#include <hydra/app.h>

#include "app/app_impl.h"

namespace hydra {

const char* const kUsage = R"(usage: hydra <command> [options]

commands:
  run           start the API, WS and MQC servers; SIGINT/SIGTERM stop them gracefully
  conf show     print the effective config (secrets masked)
  conf check    validate the config: exit 0 if valid, 2 with one line naming the key if not
  version       print the version
  help          print this help

options (run, conf):
  --env NAME        use the profile config/NAME.json (default: $HYDRA_ENV, else dev)
  --config FILE     use FILE instead of a profile
  --set KEY=VALUE   override one config key, e.g. --set api.address=127.0.0.1:18080 (repeatable)

exit status: 0 success, 1 runtime failure (e.g. address in use), 2 bad usage or invalid config
)";

CliCommand parse_cli(const std::vector<std::string>& args, const std::optional<std::string>& hydra_env) {
    CliCommand cmd;
    cmd.env = hydra_env && !hydra_env->empty() ? *hydra_env : "dev";
    std::size_t i = 0;
    if (args.empty()) throw UsageError("missing command (try: hydra --help)");
    const std::string& first = args[i++];
    if (first == "--help" || first == "-h" || first == "help") {
        cmd.command = "help";
        return cmd;
    }
    if (first == "version" || first == "--version") {
        cmd.command = "version";
        return cmd;
    }
    if (first == "run") {
        cmd.command = "run";
    } else if (first == "conf") {
        if (i >= args.size()) throw UsageError("conf needs a subcommand: show or check");
        const std::string& sub = args[i++];
        if (sub != "show" && sub != "check") throw UsageError("unknown conf subcommand '" + sub + "': show or check");
        cmd.command = "conf " + sub;
    } else {
        throw UsageError("unknown command '" + first + "' (try: hydra --help)");
    }

    // Options take "--opt value" or "--opt=value".
    auto value_of = [&](const std::string& arg, const std::string& name) -> std::optional<std::string> {
        if (arg == name) {
            if (i >= args.size()) throw UsageError(name + " needs a value");
            return args[i++];
        }
        if (arg.rfind(name + "=", 0) == 0) return arg.substr(name.size() + 1);
        return std::nullopt;
    };
    while (i < args.size()) {
        const std::string arg = args[i++];
        if (auto v = value_of(arg, "--env")) {
            cmd.env = *v;
        } else if (auto v = value_of(arg, "--config")) {
            cmd.config_file = *v;
        } else if (auto v = value_of(arg, "--set")) {
            cmd.sets.push_back(*v);
        } else if (arg == "--help" || arg == "-h") {
            cmd.command = "help";
            return cmd;
        } else {
            throw UsageError("unknown option '" + arg + "' (try: hydra --help)");
        }
    }
    static const std::regex kEnvName("[A-Za-z0-9_-]{1,64}");
    if (!std::regex_match(cmd.env, kEnvName))
        throw UsageError("invalid --env '" + cmd.env + "': letters, digits, '_' and '-' only");
    return cmd;
}

std::string find_profile(const std::string& env, const std::string& exe_path) {
    namespace fs = std::filesystem;
    std::vector<fs::path> candidates;
    if (const char* dir = std::getenv("HYDRA_CONFIG_DIR"); dir && *dir)
        candidates.push_back(fs::path(dir) / (env + ".json"));
    candidates.push_back(fs::path("config") / (env + ".json"));
    std::error_code ec;
    fs::path exe = fs::weakly_canonical(exe_path, ec);
    if (!ec) {
        for (fs::path dir = exe.parent_path(); !dir.empty(); dir = dir.parent_path()) {
            candidates.push_back(dir / "config" / (env + ".json"));
            if (dir == dir.root_path()) break;
        }
    }
    candidates.push_back(fs::path("/etc/hydra") / (env + ".json"));
    for (const auto& c : candidates)
        if (fs::is_regular_file(c, ec)) return c.string();
    throw ConfigError("no config profile '" + env + "': config/" + env +
                      ".json not found (use --config FILE or HYDRA_CONFIG_DIR)");
}

namespace {

Config load_config(const CliCommand& cmd, const ConfigSchema& schema, const char* argv0) {
    std::string file = cmd.config_file ? *cmd.config_file : find_profile(cmd.env, argv0);
    return Config::load(file, cmd.sets, schema);
}

// Blocks the stop signals in this thread (and in every thread it starts), then waits for one.
int wait_for_stop_signal() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    int sig = 0;
    sigwait(&set, &sig);
    return sig;
}

}  // namespace

int App::run(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    const char* env_var = std::getenv("HYDRA_ENV");
    CliCommand cmd;
    try {
        cmd = parse_cli(args, env_var ? std::optional<std::string>(env_var) : std::nullopt);
    } catch (const UsageError& e) {
        std::cerr << "hydra: " << e.what() << "\n";
        return 2;
    }
    if (cmd.command == "help") {
        std::cout << kUsage;
        return 0;
    }
    if (cmd.command == "version") {
        std::cout << "hydra " << impl_->options.version << " (" << impl_->options.plat << "/" << impl_->options.system
                  << ")\n";
        return 0;
    }

    Config config;
    try {
        config = load_config(cmd, impl_->schema, argv[0]);
    } catch (const ConfigError& e) {
        std::cerr << "hydra: invalid config: " << e.what() << "\n";
        return 2;
    }
    if (cmd.command == "conf check") {
        std::cout << "config ok: " << config.source() << "\n";
        return 0;
    }
    if (cmd.command == "conf show") {
        std::cout << config.masked().dump(2) << "\n";
        return 0;
    }

    // run: stop signals are blocked before any server thread exists, so only sigwait() sees them.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    try {
        start(std::move(config));
    } catch (const ConfigError& e) {
        std::cerr << "hydra: invalid config: " << e.what() << "\n";
        return 2;
    } catch (const std::exception& e) {
        std::cerr << "hydra: cannot start: " << e.what() << "\n";
        stop();
        return 1;
    }
    for (const auto& line : impl_->banner) std::cout << line << "\n";
    std::cout << "hydra " << impl_->options.version << " running (" << cmd.env << "), pid " << ::getpid()
              << "; Ctrl-C to stop" << std::endl;

    int sig = wait_for_stop_signal();
    Logger().info(std::string("received ") + (sig == SIGINT ? "SIGINT" : "SIGTERM") + ", stopping");
    stop();
    Logger().info("stopped");
    return 0;
}

}  // namespace hydra
