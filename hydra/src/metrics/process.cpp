// hydra_process_* and hydra_build_info, read from /proc at scrape time.
#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "metrics/metrics.h"

#ifndef HYDRA_COMMIT
#define HYDRA_COMMIT "unknown"
#endif

namespace hydra::metrics {

namespace {

double resident_bytes() {
    std::ifstream statm("/proc/self/statm");
    long pages = 0, resident = 0;
    statm >> pages >> resident;
    return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE));
}

double open_fds() {
    DIR* dir = opendir("/proc/self/fd");
    if (dir == nullptr) return 0;
    double n = 0;
    while (dirent* e = readdir(dir))
        if (e->d_name[0] != '.') ++n;
    closedir(dir);
    return n - 1;  // the directory's own descriptor
}

double cpu_seconds() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
    return seconds(u.ru_utime) + seconds(u.ru_stime);
}

// Seconds since the epoch at which the process started: its start in clock ticks after boot, plus the boot time.
double start_time() {
    std::ifstream stat("/proc/self/stat");
    std::string line;
    std::getline(stat, line);
    auto close = line.rfind(')');  // the command name may hold spaces
    if (close == std::string::npos) return 0;
    std::istringstream fields(line.substr(close + 2));
    std::string field;
    // Field 22 (starttime); fields after the name start at 3.
    for (int i = 3; i <= 22 && fields >> field; ++i) {
    }
    double ticks = std::strtod(field.c_str(), nullptr);
    std::ifstream proc_stat("/proc/stat");
    std::string key;
    double boot = 0;
    while (proc_stat >> key) {
        if (key == "btime") {
            proc_stat >> boot;
            break;
        }
    }
    return boot + ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

rlim_t max_fds() {
    rlimit r{};
    getrlimit(RLIMIT_NOFILE, &r);
    return r.rlim_cur;
}

}  // namespace

Registry::Collector add_process_collector(Registry& registry, const std::string& version) {
    const double started = start_time();
    return registry.add_collector([started, version](Samples& s) {
        s.add("hydra_process_resident_memory_bytes", "Resident memory size in bytes.", Type::gauge, {}, {},
              resident_bytes());
        s.add("hydra_process_open_fds", "Open file descriptors.", Type::gauge, {}, {}, open_fds());
        s.add("hydra_process_max_fds", "The limit of open file descriptors.", Type::gauge, {}, {},
              static_cast<double>(max_fds()));
        s.add("hydra_process_cpu_seconds_total", "User and system CPU time spent, in seconds.", Type::counter, {}, {},
              cpu_seconds());
        s.add("hydra_process_start_time_seconds", "Start time of the process since the Unix epoch, in seconds.",
              Type::gauge, {}, {}, started);
        s.add("hydra_build_info", "The version and commit this binary was built from (always 1).", Type::gauge,
              {"version", "commit"}, {version, HYDRA_COMMIT}, 1);
    });
}

}  // namespace hydra::metrics
