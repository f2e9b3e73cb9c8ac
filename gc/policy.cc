#include "gc/policy.h"

#include <toml++/toml.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <span>
#include <sstream>

#include "gc/toml_names.h"

namespace bcfs::gc {
namespace {

constexpr int64_t kDefaultReservePercent = 10;
constexpr int64_t kDefaultReserveCap = 10'000'000'000;
constexpr int64_t kDefaultMaxUsedPercent = 80;
constexpr int64_t kDefaultMaxUsedCap = 100'000'000'000;
constexpr int64_t kDefaultMinFreePercent = 20;
constexpr int64_t kRule1MaxUsed = 512'000'000;
constexpr DurationNs kRule1KeepDuration = 48 * kHour;
constexpr DurationNs kRule2KeepDuration = 1440 * kHour;  // 60 days

// Canonical (camelCase) name of a key and its snake_case alias.
struct KeyName {
  std::string_view canonical;
  std::string_view alias;
};

constexpr KeyName kPolicyKeys[] = {
    {"all", ""},
    {"filters", ""},
    {"keepDuration", "keep_duration"},
    {"reservedSpace", "reserved_space"},
    {"maxUsedSpace", "max_used_space"},
    {"minFreeSpace", "min_free_space"},
    {"keepBytes", "keep_bytes"},
};

constexpr KeyName kWorkerKeys[] = {
    {"reservedSpace", "reserved_space"},
    {"maxUsedSpace", "max_used_space"},
    {"minFreeSpace", "min_free_space"},
    {"gckeepstorage", "gc_keep_storage"},
};

std::optional<std::string_view> Canonical(std::span<const KeyName> keys, std::string_view key) {
  for (const auto& k : keys) {
    if (key == k.canonical || (!k.alias.empty() && key == k.alias)) return k.canonical;
  }
  return std::nullopt;
}

// Error context: "<file>:<line>: <key path>".
class Where {
 public:
  Where(std::string_view file) : file_(file) {}
  Status Error(const toml::node& n, std::string_view path, std::string_view msg) const {
    std::string s(file_);
    if (n.source().begin.line > 0) s += ":" + std::to_string(n.source().begin.line);
    return InvalidArgumentError(s + ": " + std::string(path) + ": " + std::string(msg));
  }

 private:
  std::string file_;
};

std::string ValueText(const toml::node& n) {
  if (auto s = n.as_string()) return "\"" + s->get() + "\"";
  std::ostringstream out;
  n.visit([&](const auto& v) { out << v; });
  return out.str();
}

Result<DurationNs> DurationValue(const Where& w, const toml::node& n, const std::string& path) {
  if (auto i = n.as_integer()) {
    int64_t v = i->get();
    if (v < 0 || v > std::numeric_limits<int64_t>::max() / kSecond) {
      return w.Error(n, path, "invalid duration " + ValueText(n) + ": out of range");
    }
    return v * kSecond;
  }
  if (auto s = n.as_string()) {
    auto d = ParseConfigDuration(s->get());
    if (!d.ok()) return w.Error(n, path, d.status().message());
    return *d;
  }
  return w.Error(n, path,
                 "expected a duration (\"48h\" or integer seconds), got " +
                     std::string(TomlTypeName(n)) + " " + ValueText(n));
}

Result<DiskSpace> SpaceValue(const Where& w, const toml::node& n, const std::string& path) {
  if (auto i = n.as_integer()) {
    if (i->get() < 0) return w.Error(n, path, "invalid size " + ValueText(n) + ": negative");
    return DiskSpace::Bytes(i->get());
  }
  if (auto s = n.as_string()) {
    auto d = ParseDiskSpace(s->get());
    if (!d.ok()) return w.Error(n, path, d.status().message());
    return *d;
  }
  return w.Error(n, path,
                 "expected a size (bytes, \"512MB\" or \"10%\"), got " +
                     std::string(TomlTypeName(n)) + " " + ValueText(n));
}

Result<bool> BoolValue(const Where& w, const toml::node& n, const std::string& path) {
  if (auto b = n.as_boolean()) return b->get();
  return w.Error(
      n, path, "expected true or false, got " + std::string(TomlTypeName(n)) + " " + ValueText(n));
}

// Refuses `keepDuration` and `keep_duration` side by side.
Status NoDuplicate(const Where& w, std::map<std::string_view, std::string>& seen,
                   std::string_view canonical, std::string_view key, const toml::node& n,
                   const std::string& table_path) {
  auto [it, inserted] = seen.emplace(canonical, std::string(key));
  if (!inserted) {
    return w.Error(n, table_path + "." + std::string(key),
                   "given twice (as " + it->second + " and " + std::string(key) + ")");
  }
  return OkStatus();
}

Result<Policy> ParsePolicy(const Where& w, const toml::table& t, const std::string& path,
                           FilterDialect dialect, std::vector<std::string>& warnings) {
  Policy p;
  DiskSpace keep_bytes;
  std::map<std::string_view, std::string> seen;
  for (auto&& [k, v] : t) {
    std::string key(k.str());
    std::string kpath = path + "." + key;
    auto canonical = Canonical(kPolicyKeys, key);
    if (!canonical) {
      return w.Error(v, kpath,
                     "unknown key (a policy has keepDuration, reservedSpace, maxUsedSpace, "
                     "minFreeSpace, filters, all, keepBytes)");
    }
    BCFS_RETURN_IF_ERROR(NoDuplicate(w, seen, *canonical, key, v, path));
    if (*canonical == "all") {
      BCFS_ASSIGN_OR_RETURN(p.all, BoolValue(w, v, kpath));
    } else if (*canonical == "filters") {
      auto arr = v.as_array();
      if (!arr) {
        return w.Error(v, kpath,
                       "expected an array of filter strings, got " + std::string(TomlTypeName(v)) +
                           " " + ValueText(v));
      }
      for (size_t i = 0; i < arr->size(); ++i) {
        const toml::node& e = *arr->get(i);
        auto s = e.as_string();
        if (!s) {
          return w.Error(
              e, kpath + "[" + std::to_string(i) + "]",
              "expected a string, got " + std::string(TomlTypeName(e)) + " " + ValueText(e));
        }
        p.filters.push_back(s->get());
      }
      std::vector<std::string> filter_warnings;
      auto f = ParsePolicyFilters(p.filters, dialect, &filter_warnings);
      if (!f.ok()) return w.Error(v, kpath, f.status().message());
      p.filter = std::move(*f);
      for (auto& fw : filter_warnings) {
        std::string line = std::string(w.Error(v, kpath, fw).message());
        warnings.push_back(line);
      }
    } else if (*canonical == "keepDuration") {
      BCFS_ASSIGN_OR_RETURN(p.keep_duration, DurationValue(w, v, kpath));
    } else if (*canonical == "reservedSpace") {
      BCFS_ASSIGN_OR_RETURN(p.reserved_space, SpaceValue(w, v, kpath));
    } else if (*canonical == "maxUsedSpace") {
      BCFS_ASSIGN_OR_RETURN(p.max_used_space, SpaceValue(w, v, kpath));
    } else if (*canonical == "minFreeSpace") {
      BCFS_ASSIGN_OR_RETURN(p.min_free_space, SpaceValue(w, v, kpath));
    } else if (*canonical == "keepBytes") {
      BCFS_ASSIGN_OR_RETURN(keep_bytes, SpaceValue(w, v, kpath));
    }
  }
  if (p.reserved_space.unset()) p.reserved_space = keep_bytes;  // buildkitd main.go
  return p;
}

// Reads [gc] (ours: `enabled`, `policy`, unknown keys refused) or
// [worker.oci] / [worker.containerd] (buildkitd: `gc`, `gcpolicy`, other
// worker keys ignored).
Status ParseTable(const Where& w, const toml::table& t, const std::string& path, bool ours,
                  GcConfig& cfg) {
  const std::string_view enabled_key = ours ? "enabled" : "gc";
  const std::string_view policy_key = ours ? "policy" : "gcpolicy";
  const FilterDialect dialect = ours ? FilterDialect::kPolicy : FilterDialect::kBuildkitToml;
  std::map<std::string_view, std::string> seen;
  for (auto&& [k, v] : t) {
    std::string key(k.str());
    std::string kpath = path + "." + key;
    if (key == enabled_key) {
      BCFS_ASSIGN_OR_RETURN(cfg.enabled, BoolValue(w, v, kpath));
    } else if (key == policy_key) {
      auto arr = v.as_array();
      if (!arr) {
        return w.Error(
            v, kpath,
            "expected an array of tables ([[" + kpath + "]]), got " + std::string(TomlTypeName(v)));
      }
      for (size_t i = 0; i < arr->size(); ++i) {
        const toml::node& e = *arr->get(i);
        std::string ppath = kpath + "[" + std::to_string(i) + "]";
        auto pt = e.as_table();
        if (!pt) return w.Error(e, ppath, "expected a table, got " + std::string(TomlTypeName(e)));
        BCFS_ASSIGN_OR_RETURN(Policy p, ParsePolicy(w, *pt, ppath, dialect, cfg.warnings));
        cfg.policies.push_back(std::move(p));
      }
    } else if (auto canonical = Canonical(kWorkerKeys, key)) {
      BCFS_RETURN_IF_ERROR(NoDuplicate(w, seen, *canonical, key, v, path));
      BCFS_ASSIGN_OR_RETURN(DiskSpace d, SpaceValue(w, v, kpath));
      if (*canonical == "reservedSpace") cfg.reserved_space = d;
      if (*canonical == "maxUsedSpace") cfg.max_used_space = d;
      if (*canonical == "minFreeSpace") cfg.min_free_space = d;
      if (*canonical == "gckeepstorage") cfg.keep_storage = d;
    } else if (ours) {
      return w.Error(v, kpath,
                     "unknown key ([gc] has enabled, reservedSpace, maxUsedSpace, minFreeSpace, "
                     "gckeepstorage and [[gc.policy]] tables)");
    }
  }
  cfg.table = path;
  return OkStatus();
}

bool HasGcKeys(const toml::table& t) {
  for (auto&& [k, v] : t) {
    if (k.str() == "gc" || k.str() == "gcpolicy" || Canonical(kWorkerKeys, k.str())) return true;
  }
  return false;
}

Policy LimitsPolicy(const GcConfig& cfg) {
  Policy p;
  p.reserved_space = cfg.reserved_space;
  p.max_used_space = cfg.max_used_space;
  p.min_free_space = cfg.min_free_space;
  return p;
}

}  // namespace

std::vector<Policy> DefaultPolicies(const GcConfig& worker, const FsStats& fs) {
  GcConfig cfg = worker;
  auto unset = [&] {
    return cfg.reserved_space.unset() && cfg.max_used_space.unset() && cfg.min_free_space.unset();
  };
  if (unset()) cfg.reserved_space = cfg.keep_storage;
  if (unset()) {  // DetectDefaultGCCap
    cfg.reserved_space = DiskSpace::Percent(kDefaultReservePercent);
    if (cfg.reserved_space.AsBytes(fs) > kDefaultReserveCap) {
      cfg.reserved_space = DiskSpace::Bytes(kDefaultReserveCap);
    }
    cfg.max_used_space = DiskSpace::Percent(kDefaultMaxUsedPercent);
    if (cfg.max_used_space.AsBytes(fs) > kDefaultMaxUsedCap) {
      cfg.max_used_space = DiskSpace::Bytes(kDefaultMaxUsedCap);
    }
    cfg.min_free_space = DiskSpace::Percent(kDefaultMinFreePercent);
  }
  std::vector<Policy> out;
  Policy rule1;
  rule1.filters = {"role==derived"};
  auto f = ParsePolicyFilters(rule1.filters, FilterDialect::kPolicy);
  BCFS_CHECK(f.ok());
  rule1.filter = std::move(*f);
  rule1.keep_duration = kRule1KeepDuration;
  rule1.max_used_space = DiskSpace::Bytes(kRule1MaxUsed);
  out.push_back(std::move(rule1));
  Policy rule2 = LimitsPolicy(cfg);
  rule2.keep_duration = kRule2KeepDuration;
  out.push_back(std::move(rule2));
  out.push_back(LimitsPolicy(cfg));
  Policy rule4 = LimitsPolicy(cfg);
  rule4.all = true;
  out.push_back(std::move(rule4));
  return out;
}

std::vector<Policy> EffectivePolicies(const GcConfig& config, const FsStats& fs) {
  if (!config.enabled) return {};
  if (config.policies.empty()) return DefaultPolicies(config, fs);
  return config.policies;
}

Result<GcConfig> ParseGcConfig(std::string_view toml_text, std::string_view file_name) {
  toml::table doc;
  try {
    doc = toml::parse(toml_text, file_name);
  } catch (const toml::parse_error& e) {
    std::string where(file_name);
    if (e.source().begin.line > 0) {
      where += ":" + std::to_string(e.source().begin.line) + ":" +
               std::to_string(e.source().begin.column);
    }
    return InvalidArgumentError(where + ": bad TOML: " + std::string(e.description()));
  }
  Where w(file_name);
  GcConfig cfg;
  if (auto gc = doc.get("gc")) {
    auto t = gc->as_table();
    if (!t) return w.Error(*gc, "gc", "expected a table, got " + std::string(TomlTypeName(*gc)));
    BCFS_RETURN_IF_ERROR(ParseTable(w, *t, "gc", /*ours=*/true, cfg));
    return cfg;
  }
  auto worker = doc.get("worker") ? doc.get("worker")->as_table() : nullptr;
  if (!worker) return cfg;
  for (std::string_view name : {"oci", "containerd"}) {
    auto node = worker->get(name);
    if (!node || !node->as_table() || !HasGcKeys(*node->as_table())) continue;
    BCFS_RETURN_IF_ERROR(
        ParseTable(w, *node->as_table(), "worker." + std::string(name), /*ours=*/false, cfg));
    return cfg;
  }
  return cfg;
}

Result<GcConfig> LoadGcConfig(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return ErrnoError(errno, "read GC config " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return ErrnoError(errno, "read GC config " + path);
  return ParseGcConfig(ss.str(), path);
}

}  // namespace bcfs::gc
