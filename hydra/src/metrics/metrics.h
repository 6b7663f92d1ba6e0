// Prometheus metrics: counters, gauges and duration histograms, grouped in labelled families, rendered in the text
// exposition format 0.0.4 at scrape time.
//
// Hot paths touch no lock and no shared cache line: every series is split in kShards cache-line-sized cells, each
// thread adds to the cell of its own slot (taken round-robin at its first use), and a scrape sums the cells. Looking
// a labelled series up takes the family's lock: resolve series once (at start, per route) and keep the reference, or
// use local(), which caches the lookup per thread. Label values must come from a bounded set (route patterns, status
// classes, close codes), never straight from a client.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace hydra::metrics {

inline constexpr int kShards = 16;
inline constexpr std::size_t kMaxSeries = 1000;  // per family

// This thread's cell in every series.
int shard() noexcept;

class Counter {
  public:
    void inc(std::int64_t n = 1) noexcept { cells_[shard()].value.fetch_add(n, std::memory_order_relaxed); }
    std::int64_t value() const noexcept;

  protected:
    struct alignas(64) Cell {
        std::atomic<std::int64_t> value{0};
    };
    Cell cells_[kShards];
};

// Goes up and down (open connections): add() and sub() from any thread, summed at scrape.
class Gauge : public Counter {
  public:
    void add(std::int64_t n = 1) noexcept { inc(n); }
    void sub(std::int64_t n = 1) noexcept { inc(-n); }
};

// Durations, in seconds on the wire. Bucket bounds are the family's (at most kMaxBuckets).
class Histogram {
  public:
    static constexpr int kMaxBuckets = 17;
    explicit Histogram(const std::vector<double>* bounds);

    void observe(std::chrono::nanoseconds d) noexcept;
    void observe_since(std::chrono::steady_clock::time_point start) noexcept {
        observe(std::chrono::steady_clock::now() - start);
    }

    struct Snapshot {
        std::vector<std::uint64_t> counts;  // per bucket, not cumulative; the last one is +Inf
        double sum_seconds = 0;
    };
    Snapshot snapshot() const;

  private:
    struct alignas(64) Cell {
        std::atomic<std::uint64_t> counts[kMaxBuckets + 1] = {};
        std::atomic<std::uint64_t> sum_ns{0};
    };
    const std::vector<double>* bounds_;
    std::int64_t bounds_ns_[kMaxBuckets];
    int n_bounds_;
    std::unique_ptr<Cell[]> cells_;
};

enum class Type { counter, gauge, histogram };

// 100 µs to 10 s: an echo handler and a slow database call both land in a bucket of their own.
const std::vector<double>& default_buckets();

class FamilyBase {
  public:
    FamilyBase(std::string name, std::string help, Type type, std::vector<std::string> labels);
    virtual ~FamilyBase() = default;
    const std::string& name() const { return name_; }
    const std::string& help() const { return help_; }
    Type type() const { return type_; }
    const std::vector<std::string>& label_names() const { return labels_; }
    // Appends the family's samples (no HELP/TYPE lines) to `out`.
    virtual void render(std::string& out) const = 0;

  protected:
    // This thread's series of these label values, or null; no allocation once the thread has seen them.
    void* cached(std::initializer_list<std::string_view> values) const;
    void cache(std::initializer_list<std::string_view> values, void* series) const;
    void check_arity(std::size_t n) const;

    std::string name_, help_;
    Type type_;
    std::vector<std::string> labels_;
    std::uint64_t id_;  // unique in the process: the key of per-thread caches
    mutable std::mutex mutex_;
};

template <class T>
class Family : public FamilyBase {
  public:
    Family(std::string name, std::string help, Type type, std::vector<std::string> labels,
           std::vector<double> bounds = {})
        : FamilyBase(std::move(name), std::move(help), type, std::move(labels)), bounds_(std::move(bounds)) {}

    // The series of these label values (in the order of the family's label names), created on first use. The
    // reference stays valid as long as the registry. A family holds at most kMaxSeries: past that, new label values
    // all count under "other" (a bug or a client choosing values must not exhaust memory or the scraper).
    T& with(const std::vector<std::string>& values, bool* folded = nullptr) {
        check_arity(values.size());
        std::lock_guard lock(mutex_);
        auto it = series_.find(values);
        if (folded) *folded = false;
        if (it == series_.end()) {
            if (series_.size() >= kMaxSeries) {
                if (folded) *folded = true;
                std::vector<std::string> other(values.size(), "other");
                it = series_.find(other);
                if (it == series_.end()) it = series_.emplace(std::move(other), make()).first;
            } else {
                it = series_.emplace(values, make()).first;
            }
        }
        return *it->second;
    }
    // with(), cached per thread: no lock once this thread has seen these values (values folded into "other" are
    // not cached: the cache stays as bounded as the family).
    T& local(std::initializer_list<std::string_view> values) {
        if (void* hit = cached(values)) return *static_cast<T*>(hit);
        bool folded = false;
        T& series = with(std::vector<std::string>(values.begin(), values.end()), &folded);
        if (!folded) cache(values, &series);
        return series;
    }

    void render(std::string& out) const override;

  private:
    std::unique_ptr<T> make() {
        if constexpr (std::is_same_v<T, Histogram>)
            return std::make_unique<T>(&bounds_);
        else
            return std::make_unique<T>();
    }

    std::vector<double> bounds_;
    std::map<std::vector<std::string>, std::unique_ptr<T>> series_;
};

template <>
void Family<Counter>::render(std::string& out) const;
template <>
void Family<Gauge>::render(std::string& out) const;
template <>
void Family<Histogram>::render(std::string& out) const;

// Samples computed at scrape time (queue depth, process memory, cluster hosts): a collector appends them here.
class Samples {
  public:
    void add(const std::string& name, const std::string& help, Type type, std::vector<std::string> label_names,
             std::vector<std::string> label_values, double value);

  private:
    friend class Registry;
    struct Group {
        std::string help;
        Type type;
        std::vector<std::string> lines;
    };
    std::map<std::string, Group> groups_;
};

class Registry {
  public:
    Registry() = default;
    Registry(const Registry&) = delete;
    Registry& operator=(const Registry&) = delete;

    // The family of this name, created on first call; later calls must agree on type and labels (else
    // std::logic_error), so servers of the same kind share their families (told apart by a label).
    Family<Counter>& counter(const std::string& name, const std::string& help, std::vector<std::string> labels = {});
    Family<Gauge>& gauge(const std::string& name, const std::string& help, std::vector<std::string> labels = {});
    Family<Histogram>& histogram(const std::string& name, const std::string& help, std::vector<std::string> labels = {},
                                 std::vector<double> bounds = default_buckets());

    // Runs `collect` at every scrape until the returned handle is destroyed (destroy it before what it reads).
    class Collector {
      public:
        Collector() = default;
        Collector(Registry* registry, std::uint64_t id) : registry_(registry), id_(id) {}
        Collector(Collector&& other) noexcept { *this = std::move(other); }
        Collector& operator=(Collector&& other) noexcept;
        ~Collector() { reset(); }
        void reset();

      private:
        Registry* registry_ = nullptr;
        std::uint64_t id_ = 0;
    };
    [[nodiscard]] Collector add_collector(std::function<void(Samples&)> collect);

    // Every family and collected sample in the text format 0.0.4, sorted by name.
    std::string render() const;

  private:
    template <class T>
    Family<T>& family(const std::string& name, const std::string& help, Type type, std::vector<std::string> labels,
                      std::vector<double> bounds = {});

    mutable std::mutex mutex_;
    std::map<std::string, std::unique_ptr<FamilyBase>> families_;
    std::map<std::uint64_t, std::function<void(Samples&)>> collectors_;
    std::uint64_t next_collector_ = 1;
};

// The Content-Type of render()'s output.
inline constexpr const char* kContentType = "text/plain; version=0.0.4; charset=utf-8";

// A label value for an HTTP method: the standard ones as they are, anything else "other" (a client picks methods).
std::string method_label(std::string_view method);
// "2xx" for 204.
std::string status_class(int status);

// Process metrics (hydra_process_*: resident memory, open fds, CPU seconds, start time) and hydra_build_info.
Registry::Collector add_process_collector(Registry& registry, const std::string& version);

}  // namespace hydra::metrics
