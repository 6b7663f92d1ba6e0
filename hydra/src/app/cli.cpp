#include "app/cli.h"

#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <regex>
#include <thread>

#include <hydra/app.h>
#include <hydra/jwt.h>

#include "app/app_impl.h"
#include "cluster/cluster_gc.h"
#include "queue/kafka/kafka_queue.h"
#include "queue/sqlite/sqlite_queue.h"

namespace hydra {

const char* const kUsage = R"(usage: hydra <command> [options]

commands:
  run           start the API, WS and MQC servers; SIGINT/SIGTERM drain and stop them (a second one: at
                once), SIGHUP re-reads the profile and the TLS certificates
  conf show     print the effective config (secrets masked)
  conf check    validate the config (and load the keys and certificates it names): exit 0 if valid, 2 with
                one line naming the key if not
  queue stats                 messages per queue: ready, delayed, leased, dead letters (SQLite backend)
  queue peek QUEUE            the next messages of QUEUE, oldest first (--limit N, default 20)
  queue dlq list [QUEUE]      dead letters with their last error (--limit N)
  queue dlq retry QUEUE       move QUEUE's dead letters back to it (--id N: only that one)
  cluster gc [--dry-run]      delete the Kafka node topics of hosts gone for cluster.node_ttl_s (a host's
                              last heartbeat in the presence topic); --dry-run: only list them
  token --sub USER [--ttl SECONDS]
                an HS256 token for USER signed with auth.jwt.secret (with auth.jwt.issuer/audience when set),
                valid for --ttl seconds (default 3600)
  version       print the version
  help          print this help

options (run, conf, queue, cluster, token):
  --env NAME        use the profile config/NAME.json (default: $HYDRA_ENV, else dev)
  --config FILE     use FILE instead of a profile
  --set KEY=VALUE   override one config key, e.g. --set api.address=127.0.0.1:18080 (repeatable)

exit status: 0 success, 1 runtime failure (e.g. address in use), 2 bad usage or invalid config
)";

namespace {
int parse_number(const std::string& text, const std::string& option) {
    try {
        std::size_t used = 0;
        int n = std::stoi(text, &used);
        if (used == text.size() && n > 0) return n;
    } catch (const std::exception&) {
    }
    throw UsageError(option + " needs a positive number, got '" + text + "'");
}
}  // namespace

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
    } else if (first == "token") {
        cmd.command = "token";
    } else if (first == "cluster") {
        if (i >= args.size() || args[i] != "gc") throw UsageError("cluster needs a subcommand: gc");
        ++i;
        cmd.command = "cluster gc";
    } else if (first == "queue") {
        if (i >= args.size()) throw UsageError("queue needs a subcommand: stats, peek, dlq list, dlq retry");
        const std::string sub = args[i++];
        if (sub == "stats" || sub == "peek") {
            cmd.command = "queue " + sub;
        } else if (sub == "dlq") {
            if (i >= args.size() || (args[i] != "list" && args[i] != "retry"))
                throw UsageError("queue dlq needs a subcommand: list or retry");
            cmd.command = "queue dlq " + args[i++];
        } else {
            throw UsageError("unknown queue subcommand '" + sub + "': stats, peek, dlq list, dlq retry");
        }
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
        } else if (auto v = value_of(arg, "--limit")) {
            cmd.limit = parse_number(*v, "--limit");
        } else if (auto v = value_of(arg, "--id")) {
            cmd.id = parse_number(*v, "--id");
        } else if (auto v = value_of(arg, "--sub")) {
            if (cmd.command != "token") throw UsageError("--sub is an option of hydra token");
            cmd.sub = *v;
        } else if (auto v = value_of(arg, "--ttl")) {
            if (cmd.command != "token") throw UsageError("--ttl is an option of hydra token");
            cmd.ttl = parse_number(*v, "--ttl");
        } else if (arg == "--dry-run" && cmd.command == "cluster gc") {
            cmd.dry_run = true;
        } else if (cmd.command.rfind("queue ", 0) == 0 && !arg.empty() && arg[0] != '-') {
            cmd.args.push_back(arg);
        } else if (arg == "--help" || arg == "-h") {
            cmd.command = "help";
            return cmd;
        } else {
            throw UsageError("unknown option '" + arg + "' (try: hydra --help)");
        }
    }
    if ((cmd.command == "queue peek" || cmd.command == "queue dlq retry") && cmd.args.size() != 1)
        throw UsageError(cmd.command + " needs one queue name, e.g. hydra " + cmd.command + " mall:wsserver:msg");
    if (cmd.command == "queue dlq list" && cmd.args.size() > 1)
        throw UsageError("queue dlq list takes at most one queue name");
    if (cmd.command == "queue stats" && !cmd.args.empty()) throw UsageError("queue stats takes no queue name");
    if (cmd.command == "token" && cmd.sub.empty()) throw UsageError("token needs --sub USER");
    static const std::regex kEnvName("[A-Za-z0-9_-]{1,64}");
    if (!std::regex_match(cmd.env, kEnvName))
        throw UsageError("invalid --env '" + cmd.env + "': letters, digits, '_' and '-' only");
    return cmd;
}

std::string find_profile(const std::string& env, const std::string& exe_path, const std::string& system_dir) {
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
    candidates.push_back(fs::path(system_dir) / (env + ".json"));
    for (const auto& c : candidates)
        if (fs::is_regular_file(c, ec)) return c.string();
    throw ConfigError("no config profile '" + env + "': config/" + env +
                      ".json not found (use --config FILE or HYDRA_CONFIG_DIR)");
}

namespace {

// The running executable: argv[0] names it only when it was started by its path, not found through $PATH.
std::string executable_path(const char* argv0) {
    std::error_code ec;
    std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
    return ec ? std::string(argv0) : self.string();
}

Config load_config(const CliCommand& cmd, const ConfigSchema& schema, const char* argv0) {
    std::string file = cmd.config_file ? *cmd.config_file : find_profile(cmd.env, executable_path(argv0));
    return Config::load(file, cmd.sets, schema);
}

// The signals `hydra run` handles: SIGINT/SIGTERM stop, SIGHUP reloads. Blocked in every thread before any server
// thread exists, so that only sigwait() sees them.
// CLOCK_MONOTONIC in microseconds, as sd_notify's MONOTONIC_USEC wants it.
std::uint64_t monotonic_us() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000000 + static_cast<std::uint64_t>(ts.tv_nsec) / 1000;
}

sigset_t run_signals() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    return set;
}

}  // namespace

namespace {

// `hydra queue ...`: inspect and repair the embedded queue's database (it may be in use by a running host).
int run_queue_command(const CliCommand& cmd, const Config& config) {
    if (config.str("queue.backend") != "sqlite") {
        std::cerr << "hydra: queue commands inspect the embedded SQLite queue; with queue.backend=kafka use kcat\n";
        return 2;
    }
    std::string path = config.str("queue.sqlite.path");
    try {
        if (cmd.command == "queue stats") {
            auto stats = queue::SqliteQueue::stats(path);
            std::printf("%-40s %10s %10s %10s %10s\n", "queue", "ready", "delayed", "leased", "dead");
            for (const auto& s : stats)
                std::printf("%-40s %10lld %10lld %10lld %10lld\n", s.queue.c_str(), static_cast<long long>(s.ready),
                            static_cast<long long>(s.delayed), static_cast<long long>(s.leased),
                            static_cast<long long>(s.dead));
        } else if (cmd.command == "queue peek") {
            for (const auto& m : queue::SqliteQueue::peek(path, cmd.args[0], cmd.limit)) std::cout << m.dump() << "\n";
        } else if (cmd.command == "queue dlq list") {
            std::string q = cmd.args.empty() ? std::string() : cmd.args[0];
            for (const auto& m : queue::SqliteQueue::dead_letters(path, q, cmd.limit)) std::cout << m.dump() << "\n";
        } else if (cmd.command == "queue dlq retry") {
            int n = queue::SqliteQueue::retry_dead_letters(path, cmd.args[0], cmd.id);
            std::cout << "moved " << n << " dead letter(s) back to " << cmd.args[0] << "\n";
        }
    } catch (const std::exception& e) {
        std::cerr << "hydra: " << e.what() << "\n";
        return 1;
    }
    return 0;
}

// `hydra token`: an HS256 token signed with auth.jwt.secret, for tests and operators.
int run_token_command(const CliCommand& cmd, const Config& config) {
    if (config.str("auth.jwt.secret").empty()) {
        std::cerr << "hydra: token: auth.jwt.secret is not set (hydra token signs HS256 tokens with it)\n";
        return 2;
    }
    try {
        auto jwt = JwtVerifier::from(config);
        std::cout << jwt->sign(cmd.sub, std::chrono::seconds(cmd.ttl)) << "\n";
    } catch (const ConfigError& e) {
        std::cerr << "hydra: invalid config: " << e.what() << "\n";
        return 2;
    }
    return 0;
}

// `hydra cluster gc`: the node topics of hosts gone for cluster.node_ttl_s (cluster_gc.h).
int run_cluster_gc(const CliCommand& cmd, const Config& config, const AppOptions& options) {
    if (config.str("queue.backend") != "kafka") {
        std::cerr << "hydra: cluster gc: the cluster runs over Kafka (queue.backend=kafka)\n";
        return 2;
    }
    try {
        return cluster::gc(config, options.plat + "." + options.system, cmd.dry_run, std::cout, std::cerr);
    } catch (const ConfigError& e) {
        std::cerr << "hydra: invalid config: " << e.what() << "\n";
        return 2;
    } catch (const std::exception& e) {
        std::cerr << "hydra: cluster gc: " << e.what() << "\n";
        return 1;
    }
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
        if (cmd.command == "conf check") check_exposure(config);
    } catch (const ConfigError& e) {
        std::cerr << "hydra: invalid config: " << e.what() << "\n";
        return 2;
    }
    if (cmd.command == "conf check") {
        try {
            // What start() would refuse beyond the schema: the JWT keys, and ws.auth=jwt or an Auth::jwt route
            // without one; the enabled listeners' certificates.
            check_jwt_needs(config, JwtVerifier::from(config).get(), impl_->api_routes, impl_->admin_routes);
            for (const char* listener : {"api", "ws", "admin"})
                if (config.boolean(std::string(listener) + ".enabled")) load_tls(config, listener);
            if (config.str("queue.backend") == "kafka") queue::KafkaQueue::properties_from(config);
        } catch (const ConfigError& e) {
            std::cerr << "hydra: invalid config: " << e.what() << "\n";
            return 2;
        }
        std::cout << "config ok: " << config.source() << "\n";
        return 0;
    }
    if (cmd.command == "conf show") {
        std::cout << config.masked().dump(2) << "\n";
        return 0;
    }
    if (cmd.command.rfind("queue ", 0) == 0) return run_queue_command(cmd, config);
    if (cmd.command == "token") return run_token_command(cmd, config);
    if (cmd.command == "cluster gc") return run_cluster_gc(cmd, config, impl_->options);

    const sigset_t signals = run_signals();
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
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

    // Under systemd (Type=notify): ready once every server listens; the watchdog fed while signals are awaited.
    sd_notify(0, "READY=1");
    std::uint64_t watchdog_us = 0;
    if (sd_watchdog_enabled(0, &watchdog_us) <= 0) watchdog_us = 0;
    int sig = 0;
    for (;;) {
        if (watchdog_us > 0) {
            const auto half = std::chrono::microseconds(watchdog_us / 2);
            const auto s = std::chrono::duration_cast<std::chrono::seconds>(half);
            const timespec wait{static_cast<time_t>(s.count()),
                                static_cast<long>(std::chrono::nanoseconds(half - s).count())};
            sd_notify(0, "WATCHDOG=1");
            sig = sigtimedwait(&signals, nullptr, &wait);
            if (sig < 0) continue;  // EAGAIN: time to feed the watchdog again (EINTR: wait again)
        } else if (sigwait(&signals, &sig) != 0) {
            continue;
        }
        if (sig != SIGHUP) break;
        Logger().info("received SIGHUP, reloading");
        sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu", static_cast<unsigned long long>(monotonic_us()));
        // The profile as at start (same file, --env, --set, environment), read again; an invalid one changes nothing.
        try {
            reload(load_config(cmd, impl_->schema, argv[0]));
        } catch (const ConfigError& e) {
            Logger().error(std::string("reload refused, the running configuration stays: ") + e.what());
        }
        sd_notify(0, "READY=1");
    }
    Logger().info(std::string("received ") + (sig == SIGINT ? "SIGINT" : "SIGTERM") + ", stopping");
    sd_notify(0, "STOPPING=1");
    // The drain runs on a thread of its own; this one waits for a second SIGINT/SIGTERM, which cuts it short.
    std::atomic<bool> drained{false};
    std::thread drainer([this, &drained] {
        try {
            drain();
        } catch (const std::exception& e) {
            Logger().error(std::string("drain failed: ") + e.what());
        }
        drained = true;
    });
    bool hurried = false;
    auto fed = std::chrono::steady_clock::now();
    while (!drained) {
        if (watchdog_us > 0 && std::chrono::steady_clock::now() - fed >= std::chrono::microseconds(watchdog_us / 2)) {
            sd_notify(0, "WATCHDOG=1");
            fed = std::chrono::steady_clock::now();
        }
        const timespec wait{0, 50 * 1000 * 1000};  // how soon the end of the drain is noticed
        sig = sigtimedwait(&signals, nullptr, &wait);
        if (sig == SIGHUP) {
            Logger().info("received SIGHUP while stopping: ignored");
        } else if ((sig == SIGINT || sig == SIGTERM) && !hurried) {
            hurried = true;
            Logger().info(std::string("received ") + (sig == SIGINT ? "SIGINT" : "SIGTERM") +
                          " again: stopping at once");
            hurry();
        }
    }
    drainer.join();
    stop();  // whatever the drain left (nothing when it ran to its end)
    Logger().info("stopped");
    return 0;
}

}  // namespace hydra
