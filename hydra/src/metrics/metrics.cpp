#include "metrics/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <stdexcept>
#include <unordered_map>

#include "core/string_hash.h"

namespace hydra::metrics {

namespace {

std::atomic<int> next_shard{0};
std::atomic<std::uint64_t> next_family_id{1};

// Per thread: (family id, label values) → series, for Family::local(). Looked up by string_view: a hit builds its
// key in a per-thread buffer and allocates nothing.
thread_local std::unordered_map<std::string, void*, StringHash, std::equal_to<>> local_series;

// The view is valid until the next call on this thread: use it at once.
std::string_view cache_key(std::uint64_t id, std::initializer_list<std::string_view> values) {
    thread_local std::string key;
    key.assign(reinterpret_cast<const char*>(&id), sizeof id);
    for (const auto& v : values) {
        key += v;
        key += '\0';
    }
    return key;
}

const char* type_name(Type type) {
    switch (type) {
        case Type::counter:
            return "counter";
        case Type::gauge:
            return "gauge";
        case Type::histogram:
            return "histogram";
    }
    return "untyped";
}

void append_escaped(std::string& out, std::string_view value, bool in_label) {
    for (char c : value) {
        if (c == '\\')
            out += "\\\\";
        else if (c == '\n')
            out += "\\n";
        else if (c == '"' && in_label)
            out += "\\\"";
        else
            out += c;
    }
}

// {a="x",b="y"} plus an optional extra label (le); nothing when there are no labels.
void append_labels(std::string& out, const std::vector<std::string>& names, const std::vector<std::string>& values,
                   const char* extra_name = nullptr, const std::string& extra_value = {}) {
    if (names.empty() && extra_name == nullptr) return;
    out += '{';
    for (std::size_t i = 0; i < names.size(); ++i) {
        if (i > 0) out += ',';
        out += names[i];
        out += "=\"";
        append_escaped(out, values[i], true);
        out += '"';
    }
    if (extra_name != nullptr) {
        if (!names.empty()) out += ',';
        out += extra_name;
        out += "=\"";
        out += extra_value;
        out += '"';
    }
    out += '}';
}

std::string format_number(double v) {
    if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
    if (std::isnan(v)) return "NaN";
    if (v == std::floor(v) && std::fabs(v) < 1e15) return std::to_string(static_cast<long long>(v));
    char buf[64];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);  // the shortest text that reads back the same
    return std::string(buf, end);
}

void append_sample(std::string& out, const std::string& name, const std::vector<std::string>& names,
                   const std::vector<std::string>& values, const std::string& value) {
    out += name;
    append_labels(out, names, values);
    out += ' ';
    out += value;
    out += '\n';
}

}  // namespace

int shard() noexcept {
    thread_local int mine = next_shard.fetch_add(1, std::memory_order_relaxed) % kShards;
    return mine;
}

std::int64_t Counter::value() const noexcept {
    std::int64_t sum = 0;
    for (const auto& c : cells_) sum += c.value.load(std::memory_order_relaxed);
    return sum;
}

const std::vector<double>& default_buckets() {
    static const std::vector<double> buckets = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};
    return buckets;
}

Histogram::Histogram(const std::vector<double>* bounds)
    : bounds_(bounds), n_bounds_(static_cast<int>(bounds->size())), cells_(new Cell[kShards]) {
    if (n_bounds_ > kMaxBuckets) throw std::logic_error("metrics: too many histogram buckets");
    for (int i = 0; i < n_bounds_; ++i) bounds_ns_[i] = static_cast<std::int64_t>((*bounds)[i] * 1e9);
}

void Histogram::observe(std::chrono::nanoseconds d) noexcept {
    const std::int64_t ns = std::max<std::int64_t>(d.count(), 0);
    int bucket = 0;
    while (bucket < n_bounds_ && ns > bounds_ns_[bucket]) ++bucket;
    Cell& cell = cells_[shard()];
    cell.counts[bucket].fetch_add(1, std::memory_order_relaxed);
    cell.sum_ns.fetch_add(static_cast<std::uint64_t>(ns), std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::snapshot() const {
    Snapshot s;
    s.counts.assign(n_bounds_ + 1, 0);
    std::uint64_t sum_ns = 0;
    for (int i = 0; i < kShards; ++i) {
        for (int b = 0; b <= n_bounds_; ++b) s.counts[b] += cells_[i].counts[b].load(std::memory_order_relaxed);
        sum_ns += cells_[i].sum_ns.load(std::memory_order_relaxed);
    }
    s.sum_seconds = static_cast<double>(sum_ns) / 1e9;
    return s;
}

FamilyBase::FamilyBase(std::string name, std::string help, Type type, std::vector<std::string> labels)
    : name_(std::move(name)),
      help_(std::move(help)),
      type_(type),
      labels_(std::move(labels)),
      id_(next_family_id.fetch_add(1, std::memory_order_relaxed)) {}

void* FamilyBase::cached(std::initializer_list<std::string_view> values) const {
    auto it = local_series.find(cache_key(id_, values));
    return it == local_series.end() ? nullptr : it->second;
}

void FamilyBase::cache(std::initializer_list<std::string_view> values, void* series) const {
    local_series.emplace(std::string(cache_key(id_, values)), series);
}

void FamilyBase::check_arity(std::size_t n) const {
    if (n != labels_.size())
        throw std::logic_error("metrics: " + name_ + " takes " + std::to_string(labels_.size()) + " labels, got " +
                               std::to_string(n));
}

template <>
void Family<Counter>::render(std::string& out) const {
    std::lock_guard lock(mutex_);
    for (const auto& [values, series] : series_)
        append_sample(out, name_, labels_, values, std::to_string(series->value()));
}

template <>
void Family<Gauge>::render(std::string& out) const {
    std::lock_guard lock(mutex_);
    for (const auto& [values, series] : series_)
        append_sample(out, name_, labels_, values, std::to_string(series->value()));
}

template <>
void Family<Histogram>::render(std::string& out) const {
    std::lock_guard lock(mutex_);
    for (const auto& [values, series] : series_) {
        Histogram::Snapshot s = series->snapshot();
        std::uint64_t cumulative = 0;
        for (std::size_t b = 0; b < s.counts.size(); ++b) {
            cumulative += s.counts[b];
            out += name_;
            out += "_bucket";
            append_labels(out, labels_, values, "le", b < bounds_.size() ? format_number(bounds_[b]) : "+Inf");
            out += ' ';
            out += std::to_string(cumulative);
            out += '\n';
        }
        append_sample(out, name_ + "_sum", labels_, values, format_number(s.sum_seconds));
        append_sample(out, name_ + "_count", labels_, values, std::to_string(cumulative));
    }
}

void Samples::add(const std::string& name, const std::string& help, Type type, std::vector<std::string> label_names,
                  std::vector<std::string> label_values, double value) {
    Group& g = groups_[name];
    g.help = help;
    g.type = type;
    std::string line;
    append_sample(line, name, label_names, label_values, format_number(value));
    g.lines.push_back(std::move(line));
}

template <class T>
Family<T>& Registry::family(const std::string& name, const std::string& help, Type type,
                            std::vector<std::string> labels, std::vector<double> bounds) {
    std::lock_guard lock(mutex_);
    auto it = families_.find(name);
    if (it == families_.end()) {
        auto f = std::make_unique<Family<T>>(name, help, type, std::move(labels), std::move(bounds));
        it = families_.emplace(name, std::move(f)).first;
    } else if (it->second->type() != type || it->second->label_names() != labels) {
        throw std::logic_error("metrics: " + name + " registered twice with different types or labels");
    }
    return static_cast<Family<T>&>(*it->second);
}

Family<Counter>& Registry::counter(const std::string& name, const std::string& help, std::vector<std::string> labels) {
    return family<Counter>(name, help, Type::counter, std::move(labels));
}

Family<Gauge>& Registry::gauge(const std::string& name, const std::string& help, std::vector<std::string> labels) {
    return family<Gauge>(name, help, Type::gauge, std::move(labels));
}

Family<Histogram>& Registry::histogram(const std::string& name, const std::string& help,
                                       std::vector<std::string> labels, std::vector<double> bounds) {
    return family<Histogram>(name, help, Type::histogram, std::move(labels), std::move(bounds));
}

Registry::Collector& Registry::Collector::operator=(Collector&& other) noexcept {
    if (this != &other) {
        reset();
        registry_ = other.registry_;
        id_ = other.id_;
        other.registry_ = nullptr;
    }
    return *this;
}

void Registry::Collector::reset() {
    if (registry_ == nullptr) return;
    std::lock_guard lock(registry_->mutex_);
    registry_->collectors_.erase(id_);
    registry_ = nullptr;
}

Registry::Collector Registry::add_collector(std::function<void(Samples&)> collect) {
    std::lock_guard lock(mutex_);
    std::uint64_t id = next_collector_++;
    collectors_.emplace(id, std::move(collect));
    return Collector(this, id);
}

std::string Registry::render() const {
    // Collectors run under the registry's lock, so that a server cannot drop its collector (and go away) meanwhile.
    std::lock_guard lock(mutex_);
    Samples samples;
    for (const auto& [id, collect] : collectors_) collect(samples);

    struct Entry {
        const FamilyBase* family = nullptr;
        const Samples::Group* group = nullptr;
    };
    std::map<std::string, Entry> entries;
    for (const auto& [name, f] : families_) entries[name].family = f.get();
    for (const auto& [name, g] : samples.groups_)
        if (!entries.count(name)) entries[name].group = &g;

    std::string out;
    out.reserve(16384);
    for (const auto& [name, e] : entries) {
        const std::string& help = e.family ? e.family->help() : e.group->help;
        Type type = e.family ? e.family->type() : e.group->type;
        out += "# HELP " + name + ' ';
        append_escaped(out, help, false);
        out += "\n# TYPE " + name + ' ' + type_name(type) + '\n';
        if (e.family)
            e.family->render(out);
        else
            for (const auto& line : e.group->lines) out += line;
    }
    return out;
}

std::string method_label(std::string_view method) {
    static const char* known[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"};
    for (const char* m : known)
        if (method == m) return m;
    return "other";
}

std::string status_class(int status) {
    if (status < 100 || status > 599) return "other";
    return std::to_string(status / 100) + "xx";
}

}  // namespace hydra::metrics
