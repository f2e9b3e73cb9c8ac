#include "core/metrics.h"

#include <charconv>
#include <cmath>

#include "core/status.h"

namespace bcfs::metrics {
namespace {

enum Type { kCounter = 0, kGauge = 1, kHistogram = 2 };
constexpr const char* kTypeNames[] = {"counter", "gauge", "histogram"};

bool ValidName(std::string_view s, bool colon_ok) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                    (colon_ok && c == ':') || (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

std::string FormatDouble(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return ec == std::errc() ? std::string(buf, end) : "NaN";
}

// HELP text escapes backslash and newline; label values also the quote.
std::string Escape(std::string_view s, bool quote) {
  std::string out;
  for (char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (quote && c == '"') {
      out += "\\\"";
    } else {
      out += c;
    }
  }
  return out;
}

// `{a="x",b="y"}`, with `extra` (the histogram's le) last; "" without labels.
std::string LabelText(const Labels& labels, std::string_view extra_name = {},
                      std::string_view extra_value = {}) {
  if (labels.empty() && extra_name.empty()) return "";
  std::string out = "{";
  for (const auto& [k, v] : labels) {
    if (out.size() > 1) out += ',';
    out += k + "=\"" + Escape(v, true) + "\"";
  }
  if (!extra_name.empty()) {
    if (out.size() > 1) out += ',';
    out += std::string(extra_name) + "=\"" + std::string(extra_value) + "\"";
  }
  return out + "}";
}

std::vector<std::string> NamesOf(const Labels& labels) {
  std::vector<std::string> out;
  for (const auto& [k, v] : labels) out.push_back(k);
  return out;
}

// What Render prints of one family.
struct Snap {
  int type = kCounter;
  std::string help;
  std::vector<double> bounds;
  struct Sample {
    uint64_t u = 0;
    int64_t i = 0;
    Histogram::Snapshot h;
  };
  std::map<Labels, Sample> samples;
};

class SnapSink : public Sink {
 public:
  explicit SnapSink(std::map<std::string, Snap, std::less<>>& out) : out_(out) {}
  void Counter(std::string_view name, std::string_view help, const Labels& labels,
               uint64_t value) override {
    if (Snap* s = Find(name, help, kCounter)) s->samples[labels].u += value;
  }
  void Gauge(std::string_view name, std::string_view help, const Labels& labels,
             int64_t value) override {
    if (Snap* s = Find(name, help, kGauge)) s->samples[labels].i += value;
  }

 private:
  Snap* Find(std::string_view name, std::string_view help, int type) {
    BCFS_CHECK(ValidName(name, true));
    BCFS_CHECK(type != kCounter || name.ends_with("_total"));
    auto it = out_.find(name);
    if (it == out_.end()) {
      it = out_.emplace(std::string(name), Snap{}).first;
      it->second.type = type;
      it->second.help = std::string(help);
    }
    BCFS_CHECK(it->second.type == type);
    return &it->second;
  }
  std::map<std::string, Snap, std::less<>>& out_;
};

}  // namespace

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)),
      buckets_(std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1)) {
  for (size_t i = 0; i < bounds_.size(); ++i) {
    BCFS_CHECK(std::isfinite(bounds_[i]));
    BCFS_CHECK(i == 0 || bounds_[i - 1] < bounds_[i]);
  }
}

void Histogram::Observe(double value) {
  // Buckets are "less than or equal": value == bound falls in that bucket.
  size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
}

void Histogram::ObserveSince(std::chrono::steady_clock::time_point start) {
  Observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}

Histogram::Snapshot Histogram::Take() const {
  Snapshot s;
  uint64_t running = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    running += buckets_[i].load(std::memory_order_relaxed);
    s.cumulative.push_back(running);
  }
  s.count = running;
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

const std::vector<double>& LatencyBuckets() {
  static const std::vector<double> kBuckets = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                               0.005,   0.01,   0.025,   0.05,   0.1,   0.25,
                                               0.5,     1,      2.5,     5,      10};
  return kBuckets;
}

struct Registry::Family {
  int type = kCounter;
  std::string help;
  std::vector<std::string> label_names;
  std::vector<double> bounds;
  std::map<Labels, std::unique_ptr<Counter>> counters;
  std::map<Labels, std::unique_ptr<Gauge>> gauges;
  std::map<Labels, std::unique_ptr<Histogram>> histograms;
};

Registry::Registry() = default;
Registry::~Registry() = default;

Registry::Family& Registry::FamilyFor(std::string_view name, std::string_view help, int type,
                                      const Labels& labels, const std::vector<double>* bounds) {
  auto it = families_.find(name);
  if (it == families_.end()) {
    BCFS_CHECK(ValidName(name, true));
    BCFS_CHECK(type != kCounter || name.ends_with("_total"));
    for (const auto& [k, v] : labels) {
      BCFS_CHECK(ValidName(k, false) && !k.starts_with("__"));
      BCFS_CHECK(type != kHistogram || k != "le");
    }
    auto f = std::make_unique<Family>();
    f->type = type;
    f->help = std::string(help);
    f->label_names = NamesOf(labels);
    if (bounds != nullptr) f->bounds = *bounds;
    it = families_.emplace(std::string(name), std::move(f)).first;
  }
  Family& f = *it->second;
  BCFS_CHECK(f.type == type);
  BCFS_CHECK(f.label_names == NamesOf(labels));
  BCFS_CHECK(bounds == nullptr || f.bounds == *bounds);
  return f;
}

Counter* Registry::GetCounter(std::string_view name, std::string_view help, const Labels& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = FamilyFor(name, help, kCounter, labels, nullptr).counters[labels];
  if (!slot) slot = std::make_unique<Counter>();
  return slot.get();
}

Gauge* Registry::GetGauge(std::string_view name, std::string_view help, const Labels& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = FamilyFor(name, help, kGauge, labels, nullptr).gauges[labels];
  if (!slot) slot = std::make_unique<Gauge>();
  return slot.get();
}

Histogram* Registry::GetHistogram(std::string_view name, std::string_view help,
                                  const std::vector<double>& bounds, const Labels& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = FamilyFor(name, help, kHistogram, labels, &bounds).histograms[labels];
  if (!slot) slot = std::make_unique<Histogram>(bounds);
  return slot.get();
}

uint64_t Registry::AddCollector(std::function<void(Sink&)> collect) {
  std::lock_guard<std::mutex> lock(mu_);
  const uint64_t id = next_collector_++;
  collectors_.emplace(id, std::move(collect));
  return id;
}

void Registry::RemoveCollector(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  collectors_.erase(id);
}

std::string Registry::Render() const {
  std::map<std::string, Snap, std::less<>> snaps;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [name, f] : families_) {
      Snap& s = snaps[name];
      s.type = f->type;
      s.help = f->help;
      s.bounds = f->bounds;
      for (const auto& [labels, c] : f->counters) s.samples[labels].u = c->Value();
      for (const auto& [labels, g] : f->gauges) s.samples[labels].i = g->Value();
      for (const auto& [labels, h] : f->histograms) s.samples[labels].h = h->Take();
    }
    SnapSink sink(snaps);
    for (const auto& [id, collect] : collectors_) collect(sink);
  }
  std::string out;
  for (const auto& [name, s] : snaps) {
    out += "# HELP " + name + " " + Escape(s.help, false) + "\n";
    out += "# TYPE " + name + " " + kTypeNames[s.type] + "\n";
    for (const auto& [labels, v] : s.samples) {
      switch (s.type) {
        case kCounter:
          out += name + LabelText(labels) + " " + std::to_string(v.u) + "\n";
          break;
        case kGauge:
          out += name + LabelText(labels) + " " + std::to_string(v.i) + "\n";
          break;
        case kHistogram:
          for (size_t i = 0; i < v.h.cumulative.size(); ++i) {
            const std::string le = i < s.bounds.size() ? FormatDouble(s.bounds[i]) : "+Inf";
            out += name + "_bucket" + LabelText(labels, "le", le) + " " +
                   std::to_string(v.h.cumulative[i]) + "\n";
          }
          out += name + "_sum" + LabelText(labels) + " " + FormatDouble(v.h.sum) + "\n";
          out += name + "_count" + LabelText(labels) + " " + std::to_string(v.h.count) + "\n";
          break;
      }
    }
  }
  return out;
}

Registry& Global() {
  static Registry* registry = new Registry();  // never destroyed: used until exit
  return *registry;
}

}  // namespace bcfs::metrics
