// `buildcachefs gc`: runs the local store's GC once (DESIGN.md §3), with the
// policies of a config file, the defaults, or one policy from the flags.

#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/log.h"
#include "core/paths.h"
#include "core/units.h"
#include "gc/filter.h"
#include "gc/policy.h"
#include "gc/runner.h"
#include "index/index.h"
#include "store/content_store.h"

namespace bcfs::cli {
namespace {

using OJson = nlohmann::ordered_json;

constexpr char kGcHelp[] =
    R"(Usage: buildcachefs gc [--state-dir DIR] [--config FILE] [--filter F]...
                       [--keep-duration DUR] [--max-used-space SIZE] [--dry-run]
                       [--format table|json]

Evicts content from the local store (blobs fetched from remote sources, partial
fetches, derived uncompressed copies of layers), least recently used first,
under BuildKit's GC vocabulary. Evicted content stays visible in mounts and is
fetched again on demand.

Policies: one built from --filter/--keep-duration/--max-used-space when any is
given (filters AND, as buildx's); else the [[worker.oci.gcpolicy]] blocks of a
buildkitd.toml or the [[gc.policy]] tables of --config FILE; else the defaults
(derived copies unused for 48h, then BuildKit's default rules).

A running mount holds the store and runs GC itself (after fetches and on a
timer, see `buildcachefs mount --gc-config`); this command then refuses.

Options:
  --state-dir DIR         the state dir (default as for mount)
  --config FILE           buildkitd.toml or a [gc] config
  --filter F              e.g. role==derived, source==main, ref==latest,
                          mediatype~=zstd, unused-for=24h, until=24h
  --keep-duration DUR     keep what was used within DUR (Go duration)
  --max-used-space SIZE   evict until the store is under SIZE ("10GB", "20%")
  --dry-run               print the plan, remove nothing
  --format table|json     output format (default table)
  --log-level LEVEL       debug, info, warning (default), error
  -h, --help              this text

Exit status: 0 done, 1 some evictions failed (named), 2 usage error.
)";

}  // namespace

int RunGc(const std::vector<std::string>& argv) {
  auto args = ParseArgs(argv,
                        {"--state-dir", "--config", "--filter", "--keep-duration",
                         "--max-used-space", "--format", "--log-level"},
                        {"--dry-run"});
  if (!args.ok()) {
    std::cerr << "buildcachefs gc: " << args.status().message() << "\n\n" << kGcHelp;
    return kExitUsage;
  }
  if (args->help) {
    std::cout << kGcHelp;
    return kExitOk;
  }
  if (!args->positional.empty()) {
    std::cerr << "buildcachefs gc: unexpected argument \"" << args->positional[0] << "\"\n";
    return kExitUsage;
  }
  log::Level level = log::Level::kWarning;
  if (args->options.count("--log-level") && !log::ParseLevel(args->Option("--log-level"), &level)) {
    std::cerr << "buildcachefs gc: unknown log level\n";
    return kExitUsage;
  }
  log::SetLevel(level);
  const std::string format = args->Option("--format", "table");
  if (format != "table" && format != "json") {
    std::cerr << "buildcachefs gc: --format must be table or json\n";
    return kExitUsage;
  }
  const std::string state = args->Option("--state-dir", paths::DefaultStateDir());
  auto fs = gc::StatFs(state);
  if (!fs.ok()) {
    std::cerr << "buildcachefs gc: state dir: " << fs.status().message() << "\n";
    return kExitErrors;
  }

  std::vector<gc::Policy> policies;
  const bool from_flags = args->options.count("--filter") ||
                          args->options.count("--keep-duration") ||
                          args->options.count("--max-used-space");
  if (from_flags) {
    gc::Policy p;
    std::vector<std::string> filters;
    if (auto it = args->options.find("--filter"); it != args->options.end()) filters = it->second;
    auto f = gc::ParseCommandLineFilters(filters);
    if (!f.ok()) {
      std::cerr << "buildcachefs gc: " << f.status().message() << "\n";
      return kExitUsage;
    }
    p.filters = filters;
    p.filter = f->filter;
    p.keep_duration = f->keep_duration;
    if (args->options.count("--keep-duration")) {
      auto d = gc::ParseConfigDuration(args->Option("--keep-duration"));
      if (!d.ok()) {
        std::cerr << "buildcachefs gc: --keep-duration: " << d.status().message() << "\n";
        return kExitUsage;
      }
      p.keep_duration = *d;
    }
    if (args->options.count("--max-used-space")) {
      auto sz = gc::ParseDiskSpace(args->Option("--max-used-space"));
      if (!sz.ok()) {
        std::cerr << "buildcachefs gc: --max-used-space: " << sz.status().message() << "\n";
        return kExitUsage;
      }
      p.max_used_space = *sz;
    }
    policies.push_back(std::move(p));
  } else {
    gc::GcConfig config;
    if (args->options.count("--config")) {
      auto c = gc::LoadGcConfig(args->Option("--config"));
      if (!c.ok()) {
        std::cerr << "buildcachefs gc: " << c.status().message() << "\n";
        return kExitUsage;
      }
      for (const auto& w : c->warnings) std::cerr << "buildcachefs gc: warning: " << w << "\n";
      config = std::move(*c);
    }
    policies = gc::EffectivePolicies(config, *fs);
  }

  auto idx = index::Index::Open(paths::IndexDb(state));
  if (!idx.ok()) {
    std::cerr << "buildcachefs gc: " << idx.status().message() << "\n";
    return kExitErrors;
  }
  const bool dry = args->flags.count("--dry-run") > 0;
  std::unique_ptr<store::ContentStore> store;
  store::Layout layout(paths::StoreDir(state));
  auto opened = store::ContentStore::Open(paths::StoreDir(state));
  if (opened.ok()) {
    store = std::move(*opened);
  } else if (opened.status().code() == Code::kUnavailable && !dry) {
    std::cerr << "buildcachefs gc: the content store in " << state
              << " is held by a running mount, which runs GC itself (mount --gc-config); "
                 "unmount it first, or use --dry-run to see the plan\n";
    return kExitErrors;
  } else if (!opened.ok() && opened.status().code() != Code::kUnavailable) {
    std::cerr << "buildcachefs gc: " << opened.status().message() << "\n";
    return kExitErrors;
  }

  gc::GcRequest req;
  req.layout = &layout;
  req.store = store.get();
  req.execute = !dry;
  req.derived_dir = paths::DerivedDir(state);
  req.index = idx->get();
  req.index_path = paths::IndexDb(state);
  req.policies = policies;
  req.now = WallClockNow();
  auto run = gc::RunGc(req);
  if (!run.ok()) {
    std::cerr << "buildcachefs gc: " << run.status().message() << "\n";
    return kExitErrors;
  }
  const std::vector<gc::Eviction>& plan = run->plan.evictions;
  if (format == "json") {
    OJson out;
    out["dry_run"] = dry;
    out["policies"] = policies.size();
    OJson list = OJson::array();
    for (const auto& e : plan) {
      const gc::StoredItem& s = run->items[e.item];
      list.push_back({{"place", gc::PlaceName(s.place)},
                      {"role", gc::RoleName(s.item.role)},
                      {"digest", s.item.digest},
                      {"size", s.item.size},
                      {"last_used", s.item.last_used ? FormatRfc3339(s.item.last_used) : ""},
                      {"rule", e.rule + 1}});
    }
    out["evictions"] = list;
    out["total_before"] = run->plan.total_before;
    out["bytes_freed"] = dry ? run->plan.bytes_freed : run->bytes_freed;
    out["errors"] = run->errors;
    out["enospc"] = run->plan.enospc() ? run->plan.over_limits.front().Message() : "";
    std::cout << out.dump(2) << "\n";
  } else {
    std::cout << std::left << std::setw(8) << "PLACE" << std::setw(9) << "ROLE" << std::setw(20)
              << "DIGEST" << std::right << std::setw(11) << "SIZE"
              << "  " << std::left << std::setw(21) << "LAST USED"
              << "RULE\n";
    for (const auto& e : plan) {
      const gc::StoredItem& s = run->items[e.item];
      std::string when = s.item.last_used ? FormatRfc3339(s.item.last_used) : "-";
      if (when.size() > 20) when = when.substr(0, 19) + "Z";
      std::cout << std::left << std::setw(8) << gc::PlaceName(s.place) << std::setw(9)
                << gc::RoleName(s.item.role) << std::setw(20) << s.item.digest.substr(0, 19)
                << std::right << std::setw(11) << FormatBytes(s.item.size) << "  " << std::left
                << std::setw(21) << when << e.rule + 1 << "\n";
    }
    std::cout << (dry ? "would free " : "freed ")
              << FormatBytes(dry ? run->plan.bytes_freed : run->bytes_freed) << " of "
              << FormatBytes(run->plan.total_before) << " (" << plan.size()
              << (plan.size() == 1 ? " item" : " items") << ")\n";
    for (const auto& e : run->errors) std::cerr << "buildcachefs gc: " << e << "\n";
    if (run->plan.enospc())
      std::cerr << "buildcachefs gc: " << run->plan.over_limits.front().Message() << "\n";
  }
  return run->errors.empty() ? kExitOk : kExitErrors;
}

}  // namespace bcfs::cli
