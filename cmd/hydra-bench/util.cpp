#include "util.h"

#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace bench {

std::int64_t now_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

void sleep_until_ns(std::int64_t deadline) {
    timespec ts{};
    ts.tv_sec = deadline / 1'000'000'000;
    ts.tv_nsec = deadline % 1'000'000'000;
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
    }
}

std::int64_t due_time(std::int64_t t0, double rate, std::uint64_t k) {
    return t0 + static_cast<std::int64_t>(static_cast<double>(k) * (1e9 / rate));
}

std::vector<std::int64_t> due_times(std::int64_t t0, double rate, std::size_t count) {
    std::vector<std::int64_t> due(count);
    for (std::size_t k = 0; k < count; ++k) due[k] = due_time(t0, rate, k);
    return due;
}

std::uint64_t due_count(std::int64_t now, std::int64_t t0, double rate, std::uint64_t count) {
    if (now < t0) return 0;
    return std::min<std::uint64_t>(count, static_cast<std::uint64_t>(static_cast<double>(now - t0) * rate / 1e9) + 1);
}

// ---- Histogram ----

int Histogram::index_of(std::uint64_t v) {
    if (v < 128) return static_cast<int>(v);
    int mag = std::bit_width(v) - 7;  // v >> mag is in [64, 127]
    return mag * 64 + static_cast<int>(v >> mag);
}

std::uint64_t Histogram::value_of(int index) {
    if (index < 128) return static_cast<std::uint64_t>(index);
    int mag = index / 64 - 1;
    std::uint64_t top = static_cast<std::uint64_t>(index - mag * 64);
    return (top << mag) + ((std::uint64_t{1} << mag) >> 1);
}

void Histogram::record(std::int64_t value) {
    if (value < 0) value = 0;
    int i = std::min(index_of(static_cast<std::uint64_t>(value)), kBuckets - 1);
    ++counts_[static_cast<std::size_t>(i)];
    if (count_ == 0 || value < min_) min_ = value;
    if (value > max_) max_ = value;
    ++count_;
    sum_ += value;
}

void Histogram::merge(const Histogram& other) {
    if (other.count_ == 0) return;
    for (std::size_t i = 0; i < counts_.size(); ++i) counts_[i] += other.counts_[i];
    if (count_ == 0 || other.min_ < min_) min_ = other.min_;
    max_ = std::max(max_, other.max_);
    count_ += other.count_;
    sum_ += other.sum_;
}

Histogram Histogram::since(const Histogram& earlier) const {
    Histogram d;
    for (std::size_t i = 0; i < counts_.size(); ++i) {
        const std::uint64_t n = counts_[i] >= earlier.counts_[i] ? counts_[i] - earlier.counts_[i] : 0;
        if (n == 0) continue;
        d.counts_[i] = n;
        const auto v = static_cast<std::int64_t>(value_of(static_cast<int>(i)));
        if (d.count_ == 0) d.min_ = v;
        d.max_ = v;
        d.count_ += n;
        d.sum_ += static_cast<long double>(v) * static_cast<long double>(n);
    }
    if (d.count_ > 0) {
        d.min_ = std::max(d.min_, min_);
        d.max_ = std::min(d.max_, max_);
    }
    return d;
}

std::int64_t Histogram::percentile(double q) const {
    if (count_ == 0) return 0;
    auto rank = static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(count_)));
    rank = std::clamp<std::uint64_t>(rank, 1, count_);
    std::uint64_t seen = 0;
    for (int i = 0; i < kBuckets; ++i) {
        seen += counts_[static_cast<std::size_t>(i)];
        if (seen >= rank) return std::clamp(static_cast<std::int64_t>(value_of(i)), min_, max_);
    }
    return max_;
}

double ms(std::int64_t ns) { return static_cast<double>(ns) / 1e6; }

double round_to(double v, int digits) {
    double f = std::pow(10.0, digits);
    return std::round(v * f) / f;
}

std::string fixed(double v, int digits) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", digits, v);
    return buf;
}

void log(const std::string& what, const std::string& msg) {
    std::cerr << "hydra-bench: " << what << ": " << msg << std::endl;
}

OJson Histogram::to_json_ms() const {
    return OJson{{"count", count_},
                 {"p50", round_to(ms(percentile(0.50)), 3)},
                 {"p90", round_to(ms(percentile(0.90)), 3)},
                 {"p99", round_to(ms(percentile(0.99)), 3)},
                 {"p999", round_to(ms(percentile(0.999)), 3)},
                 {"max", round_to(ms(max()), 3)},
                 {"mean", round_to(mean() / 1e6, 3)}};
}

// ---- /proc ----

std::optional<Rss> read_rss(pid_t pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/status");
    if (!f) return std::nullopt;
    Rss r;
    bool any = false;
    std::string line;
    while (std::getline(f, line)) {
        auto value = [&line] { return std::strtol(line.c_str() + line.find(':') + 1, nullptr, 10); };
        if (line.rfind("VmRSS:", 0) == 0) {
            r.vm_rss_kb = value();
            any = true;
        } else if (line.rfind("RssAnon:", 0) == 0) {
            r.rss_anon_kb = value();
        }
    }
    if (!any) return std::nullopt;
    return r;
}

namespace {
// utime + stime (fields 14 and 15) of a /proc/.../stat line, in clock ticks; the name in parentheses may hold spaces.
std::optional<std::pair<std::string, unsigned long long>> parse_stat(const std::string& stat) {
    auto open = stat.find('(');
    auto close = stat.rfind(')');
    if (open == std::string::npos || close == std::string::npos || close < open) return std::nullopt;
    std::istringstream in(stat.substr(close + 2));
    std::string field;
    unsigned long long utime = 0, stime = 0;
    for (int i = 3; i <= 15 && in >> field; ++i) {
        if (i == 14) utime = std::stoull(field);
        if (i == 15) stime = std::stoull(field);
    }
    return std::pair{stat.substr(open + 1, close - open - 1), utime + stime};
}
}  // namespace

std::optional<double> process_cpu_seconds(pid_t pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
    std::string stat;
    if (!f || !std::getline(f, stat)) return std::nullopt;
    auto parsed = parse_stat(stat);
    if (!parsed) return std::nullopt;
    return static_cast<double>(parsed->second) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

std::map<std::string, ThreadCpu> thread_cpu_seconds(pid_t pid) {
    std::map<std::string, ThreadCpu> out;
    std::error_code ec;
    const auto hz = static_cast<double>(sysconf(_SC_CLK_TCK));
    for (const auto& entry : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
        std::ifstream f(entry.path() / "stat");
        std::string line;
        if (!f || !std::getline(f, line)) continue;  // the thread just exited
        auto parsed = parse_stat(line);
        if (!parsed) continue;
        ThreadCpu& t = out[parsed->first];
        t.seconds += static_cast<double>(parsed->second) / hz;
        ++t.threads;
    }
    return out;
}

OJson thread_cpu_json(const std::map<std::string, ThreadCpu>& start, const std::map<std::string, ThreadCpu>& end,
                      double wall_s) {
    std::vector<std::pair<double, std::string>> rows;
    for (const auto& [name, t] : end) {
        auto it = start.find(name);
        double before = it == start.end() ? 0 : it->second.seconds;
        rows.emplace_back(wall_s > 0 ? std::max(0.0, t.seconds - before) / wall_s : 0, name);
    }
    std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    OJson j = OJson::object();
    for (const auto& [cores, name] : rows)
        j[name] = OJson{{"cores", round_to(cores, 3)}, {"threads", end.at(name).threads}};
    return j;
}

namespace {
double self_cpu_seconds() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    auto secs = [](const timeval& tv) {
        return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
    };
    return secs(ru.ru_utime) + secs(ru.ru_stime);
}
}  // namespace

SystemCpu system_cpu_seconds() {
    std::ifstream f("/proc/stat");
    std::string cpu;
    unsigned long long user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
    f >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal;
    auto hz = static_cast<double>(sysconf(_SC_CLK_TCK));
    return SystemCpu{static_cast<double>(user + nice + system + irq) / hz, static_cast<double>(softirq) / hz,
                     static_cast<double>(steal) / hz};
}

CpuMeter::CpuMeter(pid_t server_pid)
    : server_pid_(server_pid),
      start_ns_(now_ns()),
      server_start_(server_pid > 0 ? process_cpu_seconds(server_pid) : std::nullopt),
      self_start_(self_cpu_seconds()),
      system_start_(system_cpu_seconds()) {}

OJson CpuMeter::to_json() const {
    double wall = static_cast<double>(now_ns() - start_ns_) / 1e9;
    if (wall <= 0) return OJson{{"wall_s", 0}};
    double client = (self_cpu_seconds() - self_start_) / wall;
    SystemCpu sys = system_cpu_seconds();
    double busy = (sys.busy_s - system_start_.busy_s) / wall;
    double softirq = (sys.softirq_s - system_start_.softirq_s) / wall;
    double steal = (sys.steal_s - system_start_.steal_s) / wall;
    std::optional<double> end = server_pid_ > 0 ? process_cpu_seconds(server_pid_) : std::nullopt;
    std::optional<double> server_s;
    std::optional<double> server;
    if (server_start_ && end) {
        server_s = *end - *server_start_;
        server = *server_s / wall;
    }
    OJson j{{"wall_s", round_to(wall, 3)},
            {"server_s", server_s ? OJson(round_to(*server_s, 3)) : OJson()},
            {"server_cores", server ? OJson(round_to(*server, 3)) : OJson()},
            {"client_cores", round_to(client, 3)},
            {"softirq_cores", round_to(softirq, 3)},
            {"steal_cores", round_to(steal, 3)}};
    if (server) j["other_cores"] = round_to(std::max(0.0, busy - client - *server), 3);
    return j;
}

RssSampler::RssSampler(pid_t pid, int period_ms) : pid_(pid), period_ms_(period_ms) {
    thread_ = std::thread([this] {
        while (!stop_.load()) {
            if (auto r = read_rss(pid_)) {
                if (r->vm_rss_kb > peak_rss_.load()) peak_rss_.store(r->vm_rss_kb);
                if (r->rss_anon_kb > peak_anon_.load()) peak_anon_.store(r->rss_anon_kb);
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(period_ms_));
        }
    });
}

RssSampler::~RssSampler() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
}

Rss RssSampler::peak() const { return Rss{peak_rss_.load(), peak_anon_.load()}; }

sockaddr_in parse_ipv4(const std::string& host_port, bool allow_port_0) {
    auto colon = host_port.rfind(':');
    if (colon == std::string::npos) throw std::invalid_argument("expected HOST:PORT, got " + host_port);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    std::string host = host_port.substr(0, colon);
    if (inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1) throw std::invalid_argument("not an IPv4 address: " + host);
    char* end = nullptr;
    long port = std::strtol(host_port.c_str() + colon + 1, &end, 10);
    if (*end != '\0' || port < (allow_port_0 ? 0 : 1) || port > 65535)
        throw std::invalid_argument("bad port in " + host_port);
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    return a;
}

long open_files(pid_t pid) {
    std::error_code ec;
    long n = 0;
    for (auto it = std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
        ++n;
    return ec ? -1 : n;
}

long raise_nofile_limit() {
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return -1;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return static_cast<long>(rl.rlim_cur);
}

TcpEntry find_tcp_entry(std::uint16_t local_port, std::uint16_t remote_port) {
    TcpEntry e;
    std::ifstream f("/proc/net/tcp");
    std::string line;
    std::getline(f, line);  // header
    while (std::getline(f, line)) {
        // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
        std::istringstream in(line);
        std::string sl, local, remote, st, queues, timer, retr, uid, timeout;
        std::uint64_t inode = 0;
        in >> sl >> local >> remote >> st >> queues >> timer >> retr >> uid >> timeout >> inode;
        auto port_of = [](const std::string& addr) {
            auto c = addr.find(':');
            return c == std::string::npos ? 0UL : std::stoul(addr.substr(c + 1), nullptr, 16);
        };
        if (port_of(local) != local_port || port_of(remote) != remote_port) continue;
        e.found = true;
        e.state = static_cast<int>(std::stoul(st, nullptr, 16));
        auto c = queues.find(':');
        e.tx_queue = std::stoull(queues.substr(0, c), nullptr, 16);
        e.rx_queue = std::stoull(queues.substr(c + 1), nullptr, 16);
        e.inode = inode;
        if (inode != 0) break;  // prefer the socket a process still holds
    }
    return e;
}

std::string tcp_state_name(int state) {
    static const char* names[] = {"?",         "ESTABLISHED", "SYN_SENT",   "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2",
                                  "TIME_WAIT", "CLOSE",       "CLOSE_WAIT", "LAST_ACK", "LISTEN",    "CLOSING"};
    if (state < 0 || state >= static_cast<int>(std::size(names))) return "?";
    return names[state];
}

// ---- HttpClient ----

HttpClient::HttpClient(sockaddr_in addr, std::string host) : addr_(addr), host_(std::move(host)) {}

HttpClient::~HttpClient() { close_(); }

void HttpClient::close_() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    buf_.clear();
}

void HttpClient::connect_() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) throw std::runtime_error(std::string("http: socket: ") + strerror(errno));
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    timeval tv{30, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (::connect(fd_, reinterpret_cast<const sockaddr*>(&addr_), sizeof addr_) != 0) {
        std::string err = strerror(errno);
        close_();
        throw std::runtime_error("http: connect: " + err);
    }
}

void HttpClient::send_post(std::string_view path, std::string_view body) {
    std::string req;
    req.reserve(160 + body.size());
    req.append("POST ").append(path).append(" HTTP/1.1\r\nHost: ").append(host_);
    req.append("\r\nContent-Type: application/json\r\nContent-Length: ").append(std::to_string(body.size()));
    req.append("\r\n\r\n").append(body);
    send_request(req);
}

void HttpClient::send_request(const std::string& req) {
    if (fd_ < 0) connect_();
    std::size_t off = 0;
    while (off < req.size()) {
        ssize_t n = ::send(fd_, req.data() + off, req.size() - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            std::string err = strerror(errno);
            close_();
            throw std::runtime_error("http: send: " + err);
        }
        off += static_cast<std::size_t>(n);
    }
}

void HttpClient::read_more() {
    char tmp[16384];
    for (;;) {
        ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
        if (n > 0) {
            buf_.append(tmp, static_cast<std::size_t>(n));
            return;
        }
        if (n < 0 && errno == EINTR) continue;
        std::string err = n == 0 ? "connection closed" : strerror(errno);
        close_();
        throw std::runtime_error("http: recv: " + err);
    }
}

namespace {
std::string lower(std::string_view s) {
    std::string out(s);
    for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}
}  // namespace

HttpClient::Response HttpClient::read_response() {
    std::size_t end;
    while ((end = buf_.find("\r\n\r\n")) == std::string::npos) read_more();
    std::string head = lower(std::string_view(buf_).substr(0, end + 2));
    buf_.erase(0, end + 4);
    Response r;
    if (head.size() < 12 || head.compare(0, 5, "http/") != 0) throw std::runtime_error("http: bad status line");
    r.status = std::atoi(head.c_str() + head.find(' ') + 1);
    auto header = [&head](std::string_view name) -> std::optional<std::string> {
        std::string key = "\r\n" + std::string(name) + ":";
        auto p = head.find(key);
        if (p == std::string::npos) return std::nullopt;
        p += key.size();
        auto e = head.find("\r\n", p);
        std::string v = head.substr(p, e - p);
        v.erase(0, v.find_first_not_of(" \t"));
        return v;
    };
    bool keep_alive = head.compare(0, 8, "http/1.1") == 0;
    if (auto c = header("connection")) keep_alive = c->find("close") == std::string::npos;
    if (auto te = header("transfer-encoding"); te && te->find("chunked") != std::string::npos) {
        for (;;) {
            std::size_t line_end;
            while ((line_end = buf_.find("\r\n")) == std::string::npos) read_more();
            std::size_t size = std::stoul(buf_.substr(0, line_end), nullptr, 16);
            buf_.erase(0, line_end + 2);
            while (buf_.size() < size + 2) read_more();
            r.body.append(buf_, 0, size);
            buf_.erase(0, size + 2);
            if (size == 0) break;
        }
    } else if (auto cl = header("content-length")) {
        std::size_t len = std::stoul(*cl);
        while (buf_.size() < len) read_more();
        r.body = buf_.substr(0, len);
        buf_.erase(0, len);
    } else {
        keep_alive = false;  // body until EOF
        char tmp[16384];
        ssize_t n;
        while ((n = ::recv(fd_, tmp, sizeof tmp, 0)) > 0) buf_.append(tmp, static_cast<std::size_t>(n));
        r.body = std::move(buf_);
    }
    if (!keep_alive) close_();
    return r;
}

HttpClient::Response HttpClient::post(std::string_view path, std::string_view body) {
    send_post(path, body);
    return read_response();
}

HttpClient::Response HttpClient::get(std::string_view path) {
    std::string req;
    req.append("GET ").append(path).append(" HTTP/1.1\r\nHost: ").append(host_).append("\r\n\r\n");
    send_request(req);
    return read_response();
}

}  // namespace bench
