// Process metrics in the Prometheus text exposition format 0.0.4, for
// `.buildcachefs/metrics` in the mount and `--metrics-addr` (DESIGN.md §1.3).
//
// A Registry holds families (a name, a help text, a type and label names,
// fixed by the first registration) and their children (one per set of label
// values). Counters and gauges are single atomics and histograms have fixed
// buckets of atomics, so the hot path is one or two relaxed atomic adds:
// modules register a child once (that takes the registry's mutex) and keep
// the pointer, which stays valid for the life of the registry. Values that
// other code already keeps (per-tree counters, queue lengths) are reported by
// collectors, called at render time; collector samples with the same name and
// labels are added up (two trees in one process give process totals).
//
// Naming follows Prometheus' rules: base units (seconds, bytes), counters end
// in _total. Label values must never carry secrets: name sources by their
// folder name or type, never by URL.
//
// Thread-safety: everything is thread-safe. Children are never freed while
// their registry lives.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace bcfs::metrics {

// Label names and values, in the order the family declares its names.
using Labels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  void Inc(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

class Gauge {
 public:
  void Set(int64_t v) { value_.store(v, std::memory_order_relaxed); }
  void Add(int64_t d) { value_.fetch_add(d, std::memory_order_relaxed); }
  int64_t Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> value_{0};
};

class Histogram {
 public:
  // `bounds`: the buckets' upper bounds, strictly increasing and finite
  // (+Inf is implicit).
  explicit Histogram(std::vector<double> bounds);

  void Observe(double value);
  // Seconds elapsed since `start`.
  void ObserveSince(std::chrono::steady_clock::time_point start);

  struct Snapshot {
    std::vector<uint64_t> cumulative;  // one per bound, then +Inf (== count)
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot Take() const;
  const std::vector<double>& bounds() const { return bounds_; }

 private:
  const std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // not cumulative; bounds_.size() + 1
  std::atomic<double> sum_{0};
};

// Latency buckets in seconds, 50 µs to 10 s.
const std::vector<double>& LatencyBuckets();

// What a collector reports at render time.
class Sink {
 public:
  virtual ~Sink() = default;
  virtual void Counter(std::string_view name, std::string_view help, const Labels& labels,
                       uint64_t value) = 0;
  virtual void Gauge(std::string_view name, std::string_view help, const Labels& labels,
                     int64_t value) = 0;
};

class Registry {
 public:
  Registry();
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // The child of family `name` with `labels`, created on first use. The
  // first call for a name fixes its type, help and label names; a call that
  // disagrees (or a malformed name, a counter not ending in _total, a label
  // named "le" on a histogram) is a programming error and aborts.
  Counter* GetCounter(std::string_view name, std::string_view help, const Labels& labels = {});
  Gauge* GetGauge(std::string_view name, std::string_view help, const Labels& labels = {});
  Histogram* GetHistogram(std::string_view name, std::string_view help,
                          const std::vector<double>& bounds, const Labels& labels = {});

  // Adds a collector; returns an id for RemoveCollector. `collect` runs under
  // the registry's render lock: it must not call back into the registry.
  uint64_t AddCollector(std::function<void(Sink&)> collect);
  void RemoveCollector(uint64_t id);

  // Every family sorted by name, children sorted by label values, with
  // # HELP and # TYPE lines; text/plain; version=0.0.4.
  std::string Render() const;

 private:
  struct Family;
  Family& FamilyFor(std::string_view name, std::string_view help, int type, const Labels& labels,
                    const std::vector<double>* bounds);

  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<Family>, std::less<>> families_;  // GUARDED_BY(mu_)
  std::map<uint64_t, std::function<void(Sink&)>> collectors_;             // GUARDED_BY(mu_)
  uint64_t next_collector_ = 1;                                           // GUARDED_BY(mu_)
};

// The process's registry: what the mount serves.
Registry& Global();

// Removes a collector from the global registry when it goes out of scope.
class ScopedCollector {
 public:
  ScopedCollector() = default;
  explicit ScopedCollector(std::function<void(Sink&)> collect)
      : id_(Global().AddCollector(std::move(collect))) {}
  ~ScopedCollector() {
    if (id_ != 0) Global().RemoveCollector(id_);
  }
  ScopedCollector(const ScopedCollector&) = delete;
  ScopedCollector& operator=(const ScopedCollector&) = delete;

 private:
  uint64_t id_ = 0;
};

// The Content-Type of Render()'s text.
inline constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace bcfs::metrics
