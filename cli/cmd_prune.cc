// `buildcachefs prune SOURCE [--keep-duration D] [--filter F]... [--grace-period D]
// [--all] [--dry-run|--yes] [--format table|json] [--state-dir DIR]`: mark and
// sweep over one cache (DESIGN.md §3 "Source prune"; the rules are in gc/prune.h).

#include <sys/stat.h>

#include <chrono>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "backends/backend.h"
#include "backends/naming.h"
#include "backends/reference.h"
#include "backends/source.h"
#include "catalog/catalog.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "core/log.h"
#include "core/paths.h"
#include "core/units.h"
#include "gc/filter.h"
#include "gc/prune.h"
#include "gc/units.h"
#include "index/index.h"

namespace bcfs::cli {
namespace {

using OJson = nlohmann::ordered_json;

constexpr char kPruneHelp[] =
    R"(Usage: buildcachefs prune SOURCE [--keep-duration DUR] [--filter F]...
                          [--grace-period DUR] [--all] [--dry-run | --yes]
                          [--format table|json] [--state-dir DIR]

Mark and sweep over one BuildKit cache (type=local, registry, s3, azblob or gha).
Prints the plan: refs kept and dropped with the reason, blobs to delete with
their sizes, bytes freed. Nothing changes without --yes.

Which refs go:
  With no --keep-duration, --filter or --all every ref is kept, and only
  garbage goes: cache manifests no ref reaches (history), blobs that only they
  reach, orphans, stale ingest/ folders. Otherwise a ref is dropped when it
  matches every --filter (buildx: repeated filters AND), its last use is at or
  before now minus --keep-duration (when given), and its manifest was written
  before the grace period. --all alone drops every ref.
  Last use = the newest of the manifest's write time (local: the blob's
  mtime; s3, azblob: the manifest object's Last-Modified; gha: the index
  entry's last_accessed_at) and our own access time, in the state dir's index,
  of any blob the ref reaches. A registry has no write time: a tag never read
  through buildcachefs is not selected by age.
  tag=T (local), a registry ref's tag other than `*` or name=A;B (s3, azblob)
  limits the candidates to those refs; the others are kept. Inline caches
  (images) are never pruned.

What goes:
  local     the dropped refs' entries leave index.json (rewritten atomically
            under an exclusive flock of index.json.lock, as BuildKit does; the
            other entries stay byte for byte), then every blob no kept ref
            reaches and every stale ingest/ folder is deleted.
  s3, azblob the dropped refs' manifest objects (<manifests_prefix><name>)
            are deleted, each only if it still holds what the plan saw, then
            every object under the blobs prefix no remaining manifest
            reaches.
  registry  the manifests of dropped tags are deleted (DELETE by digest, which
            removes every tag on it: a tag sharing its digest with a kept tag
            stays). Blobs are left to the registry's own garbage collection.
  gha       through the GitHub REST API (needs repository= and ghtoken=, plus
            the runtime token and URL to read the indexes): a dropped ref's
            newest index entry, then every entry no kept ref reaches (older
            index generations, blobs) is deleted. A scope the runtime token
            cannot read blocks the sweep.
  Nothing whose mtime (Last-Modified) is within --grace-period is deleted: an export may be
  writing it. An export running meanwhile can at worst lose reuse of an old
  blob, which BuildKit treats as a cache miss, never a failed build.

Options:
  --keep-duration DUR  keep refs used within DUR (Go duration: 24h, 90m)
  --filter F           containerd filter on refs, repeatable (ANDed):
                       ref==NAME, ref~=REGEXP, ref!=NAME, source==NAME,
                       mediatype~=..., role==manifest; until=DUR (or
                       unused-for=DUR) is --keep-duration
  --grace-period DUR   never delete files younger than DUR (default 1h)
  --all                with no other selection, drop every ref
  --dry-run            print the plan only (the default)
  --yes                carry the plan out
  --format table|json  human-readable (default) or JSON for scripts
  --state-dir DIR      where our access index is (default: the mount's)
  --log-level LEVEL    debug, info, warning (default), error
  -h, --help           this text

Exit status: 0 done (or planned), 1 errors (nothing or not everything
deleted), 2 usage error.
)";

TimeNs NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string DateOrDash(TimeNs t) {
  if (t == 0) return "-";
  std::string s = FormatRfc3339(t);
  if (size_t dot = s.find('.'); dot != std::string::npos) s = s.substr(0, dot) + "Z";
  return s;
}

std::string Short(const Digest& d) { return d.empty() ? "-" : d.algorithm() + ":" + d.ShortHex(); }

void PrintTable(std::ostream& os, const std::vector<std::vector<std::string>>& rows,
                const std::vector<bool>& right) {
  std::vector<size_t> w;
  for (const auto& r : rows) {
    for (size_t i = 0; i < r.size(); ++i) {
      if (w.size() <= i) w.push_back(0);
      w[i] = std::max(w[i], r[i].size());
    }
  }
  for (const auto& r : rows) {
    std::string line = "  ";
    for (size_t i = 0; i < r.size(); ++i) {
      const size_t pad = w[i] - r[i].size();
      const bool last = i + 1 == r.size();
      line += right[i] ? std::string(pad, ' ') + r[i] : r[i] + (last ? "" : std::string(pad, ' '));
      if (!last) line += "  ";
    }
    os << line << "\n";
  }
}

struct Context {
  std::string name, type, location;
  bool sweep = false;  // blobs are ours to delete (all but registry)
  bool dry_run = true;
  gc::PruneOptions options;
  std::vector<std::string> filters;
};

OJson PlanJson(const Context& c, const gc::PrunePlan& plan, const gc::PruneResult* result) {
  OJson j;
  j["source"] = {{"name", c.name}, {"type", c.type}, {"location", c.location}};
  j["dry_run"] = c.dry_run;
  j["now"] = FormatRfc3339(c.options.now);
  j["keep_duration_seconds"] = c.options.keep_duration / gc::kSecond;
  j["grace_period_seconds"] = c.options.grace_period / gc::kSecond;
  j["filters"] = c.filters;
  j["all"] = c.options.all;
  OJson refs = OJson::array();
  for (const auto& r : plan.refs) {
    refs.push_back({{"name", r.name},
                    {"action", r.keep ? "keep" : "drop"},
                    {"manifest", r.manifest.ToString()},
                    {"size", r.size},
                    {"last_used", r.last_used ? OJson(FormatRfc3339(r.last_used)) : OJson()},
                    {"reason", r.reason},
                    {"delete_manifest", r.delete_manifest}});
  }
  j["refs"] = refs;
  auto blobs = [](const std::vector<gc::BlobDecision>& v) {
    OJson a = OJson::array();
    for (const auto& b : v) {
      a.push_back({{"digest", b.digest.ToString()},
                   {"size", b.size},
                   {"mtime", FormatRfc3339(b.mtime)},
                   {"reason", b.reason}});
    }
    return a;
  };
  auto ingest = [](const std::vector<gc::IngestDecision>& v) {
    OJson a = OJson::array();
    for (const auto& e : v) {
      a.push_back({{"name", e.name}, {"size", e.size}, {"mtime", FormatRfc3339(e.mtime)}});
    }
    return a;
  };
  j["delete_blobs"] = blobs(plan.delete_blobs);
  j["young_blobs"] = blobs(plan.young_blobs);
  j["delete_ingest"] = ingest(plan.delete_ingest);
  j["young_ingest"] = ingest(plan.young_ingest);
  j["kept_blobs"] = {{"count", plan.kept_blobs}, {"bytes", plan.kept_bytes}};
  j["bytes_freed"] = plan.bytes_freed;
  j["notes"] = plan.notes;
  j["errors"] = plan.errors;
  if (result != nullptr) {
    j["result"] = {{"refs_removed", result->refs_removed},
                   {"blobs_deleted", result->blobs_deleted},
                   {"ingest_deleted", result->ingest_deleted},
                   {"bytes_deleted", result->bytes_deleted},
                   {"skipped", result->skipped},
                   {"errors", result->errors}};
  } else {
    j["result"] = nullptr;
  }
  return j;
}

void PrintPlan(std::ostream& os, const Context& c, const gc::PrunePlan& plan,
               const gc::PruneResult* result) {
  os << "prune " << c.name << " (" << c.location
     << "): " << (c.dry_run ? "dry run, nothing is deleted (--yes deletes)" : "deleting")
     << "\n\nREFS\n";
  std::vector<std::vector<std::string>> rows = {
      {"ACTION", "REF", "MANIFEST", "SIZE", "LAST USED", "REASON"}};
  for (const auto& r : plan.refs) {
    std::string action = r.keep ? "keep" : "drop";
    if (r.delete_manifest) action = "delete";
    rows.push_back({action, backends::EncodeRefName(r.name), Short(r.manifest), FormatBytes(r.size),
                    DateOrDash(r.last_used), r.reason});
  }
  if (plan.refs.empty()) rows.push_back({"-", "(no refs)", "", "", "", ""});
  PrintTable(os, rows, {false, false, false, true, false, false});

  auto blob_rows = [&](const std::vector<gc::BlobDecision>& v) {
    std::vector<std::vector<std::string>> out = {{"BLOB", "SIZE", "MTIME", "WHY"}};
    for (const auto& b : v) {
      out.push_back({b.digest.ToString(), std::to_string(b.size), DateOrDash(b.mtime), b.reason});
    }
    return out;
  };
  auto total = [](const std::vector<gc::BlobDecision>& v) {
    uint64_t n = 0;
    for (const auto& b : v) n += b.size;
    return n;
  };
  if (!plan.delete_blobs.empty()) {
    os << "\nBLOBS TO DELETE (" << plan.delete_blobs.size() << ", "
       << FormatBytes(total(plan.delete_blobs)) << ")\n";
    PrintTable(os, blob_rows(plan.delete_blobs), {false, true, false, false});
  }
  if (!plan.young_blobs.empty()) {
    os << "\nUNREACHED BUT KEPT BY --grace-period (" << plan.young_blobs.size() << ", "
       << FormatBytes(total(plan.young_blobs)) << ")\n";
    PrintTable(os, blob_rows(plan.young_blobs), {false, true, false, false});
  }
  if (!plan.delete_ingest.empty() || !plan.young_ingest.empty()) {
    os << "\nINGEST\n";
    std::vector<std::vector<std::string>> ir = {{"ACTION", "FOLDER", "SIZE", "NEWEST MTIME"}};
    for (const auto& e : plan.delete_ingest) {
      ir.push_back({"delete", "ingest/" + e.name, std::to_string(e.size), DateOrDash(e.mtime)});
    }
    for (const auto& e : plan.young_ingest) {
      ir.push_back(
          {"keep (grace)", "ingest/" + e.name, std::to_string(e.size), DateOrDash(e.mtime)});
    }
    PrintTable(os, ir, {false, false, true, false});
  }
  const size_t dropped = plan.DroppedRefs();
  os << "\nSUMMARY: " << plan.refs.size() - dropped << " refs kept, " << dropped << " dropped";
  if (c.sweep) {
    os << "; " << plan.kept_blobs << " blobs kept (" << FormatBytes(plan.kept_bytes) << "), "
       << plan.delete_blobs.size() << " to delete, " << plan.young_blobs.size()
       << " kept by the grace period; " << plan.delete_ingest.size()
       << " ingest folders to delete; " << FormatBytes(plan.bytes_freed) << " (" << plan.bytes_freed
       << " bytes) freed";
  }
  os << "\n";
  for (const auto& n : plan.notes) os << "note: " << n << "\n";
  for (const auto& e : plan.errors) os << "error: " << e << "\n";
  if (result != nullptr) {
    os << "\nDONE: " << result->refs_removed.size() << " refs removed";
    if (c.sweep) {
      os << ", " << result->blobs_deleted << " blobs and " << result->ingest_deleted
         << " ingest folders deleted, " << FormatBytes(result->bytes_deleted) << " freed";
    }
    os << "\n";
    for (const auto& s : result->skipped) os << "skipped: " << s << "\n";
    for (const auto& e : result->errors) os << "error: " << e << "\n";
  }
}

// Our newest access to any of `digests`, and whether the first was accessed.
struct AccessLookup {
  index::Index* idx = nullptr;
  std::map<Digest, TimeNs> cache;
  Status error;
  TimeNs Get(const Digest& d) {
    if (idx == nullptr || d.empty()) return 0;
    if (auto it = cache.find(d); it != cache.end()) return it->second;
    TimeNs t = 0;
    auto row = idx->GetAccess(d);
    if (!row.ok()) {
      if (error.ok()) error = row.status();
    } else if (row->has_value()) {
      t = (*row)->last_access;
    }
    cache[d] = t;
    return t;
  }
};

}  // namespace

int RunPrune(const std::vector<std::string>& argv) {
  auto args = ParseArgs(
      argv,
      {"--keep-duration", "--filter", "--grace-period", "--format", "--state-dir", "--log-level"},
      {"--all", "--yes", "--dry-run"});
  auto usage = [](const std::string& msg) {
    std::cerr << "buildcachefs prune: " << msg << "\n\n" << kPruneHelp;
    return kExitUsage;
  };
  if (!args.ok()) return usage(args.status().message());
  if (args->help) {
    std::cout << kPruneHelp;
    return kExitOk;
  }
  if (args->positional.size() != 1) return usage("want exactly one SOURCE");
  log::Level level = log::Level::kWarning;
  if (args->options.count("--log-level") && !log::ParseLevel(args->Option("--log-level"), &level)) {
    return usage("unknown log level \"" + args->Option("--log-level") + "\"");
  }
  log::SetLevel(level);
  const std::string format = args->Option("--format", "table");
  if (format != "table" && format != "json") {
    return usage("unknown format \"" + format + "\" (want table or json)");
  }
  if (args->flags.count("--yes") && args->flags.count("--dry-run")) {
    return usage("--yes and --dry-run contradict each other");
  }
  for (const char* once : {"--keep-duration", "--grace-period", "--format", "--state-dir"}) {
    if (args->options.count(once) && args->options.at(once).size() > 1) {
      return usage(std::string(once) + " given more than once");
    }
  }

  Context c;
  c.dry_run = !args->flags.count("--yes");
  c.options.now = NowNs();
  c.options.all = args->flags.count("--all") > 0;
  if (args->options.count("--filter")) c.filters = args->options.at("--filter");
  auto filters = gc::ParseCommandLineFilters(c.filters);
  if (!filters.ok()) return usage(filters.status().message());
  c.options.filter = filters->filter;
  c.options.keep_duration = filters->keep_duration;
  if (args->options.count("--keep-duration")) {
    if (filters->keep_duration != 0) {
      return usage("--keep-duration and --filter until=/unused-for= say the same thing; give one");
    }
    auto d = gc::ParseGoDuration(args->Option("--keep-duration"));
    if (!d.ok()) return usage("--keep-duration: " + d.status().message());
    if (*d < 0) return usage("--keep-duration: a negative duration");
    if (*d == 0) return usage("--keep-duration 0 would select every ref; use --all for that");
    c.options.keep_duration = *d;
  }
  if (args->options.count("--grace-period")) {
    auto d = gc::ParseGoDuration(args->Option("--grace-period"));
    if (!d.ok()) return usage("--grace-period: " + d.status().message());
    if (*d < 0) return usage("--grace-period: a negative duration");
    c.options.grace_period = *d;
  }

  auto spec = backends::ParseSourceString(args->positional[0]);
  if (!spec.ok()) return usage(spec.status().message());
  if (!spec->ignored_keys.empty()) {
    std::string keys;
    for (const auto& k : spec->ignored_keys) keys += (keys.empty() ? "" : ", ") + k;
    LOG_WARNING("source " << spec->Redacted() << ": ignoring export-only keys: " << keys);
  }
  // Prune always reads the whole ref list: a tag narrows the candidates only,
  // the others keep what they reach.
  backends::SourceSpec whole = *spec;
  std::set<std::string> only;  // the candidates' names; empty: every ref
  if (spec->type == backends::SourceType::kLocal) {
    if (spec->Has("digest")) {
      return usage("digest= names one manifest, not a cache to prune; select refs with --filter");
    }
    if (spec->Has("tag")) {
      only.insert(spec->Get("tag"));
      whole.attrs.erase("tag");
    }
  } else if (spec->type == backends::SourceType::kRegistry) {
    auto ref = backends::ParseReference(spec->Get("ref"));
    if (!ref.ok()) return usage(ref.status().message());
    if (!ref->digest.empty()) {
      return usage("a registry ref with @digest names one manifest, not a cache to prune");
    }
    if (ref->tag != "*") only.insert(ref->tag);
    ref->tag = "*";
    whole.attrs["ref"] = ref->ToString();
  } else if (spec->type == backends::SourceType::kS3 ||
             spec->type == backends::SourceType::kAzblob) {
    if (spec->Has("name")) {
      const std::string names = spec->Get("name");
      for (size_t pos = 0; pos <= names.size();) {
        size_t semi = std::min(names.find(';', pos), names.size());
        if (semi > pos) only.insert(names.substr(pos, semi - pos));
        pos = semi + 1;
      }
      whole.attrs.erase("name");
    }
  } else if (spec->type != backends::SourceType::kGha) {
    std::cerr << "buildcachefs prune: type=" << backends::SourceTypeName(spec->type)
              << " sources cannot be pruned by this build yet (local, registry, s3, azblob "
                 "and gha can)\n";
    return kExitErrors;
  }

  auto names = backends::AssignSourceNames({*spec});
  if (!names.ok()) return usage(names.status().message());
  c.name = (*names)[0];
  c.type = std::string(backends::SourceTypeName(spec->type));
  c.location = spec->Redacted();
  c.sweep = spec->type != backends::SourceType::kRegistry;

  // Our access times, when a state dir has an index; prune never creates one.
  std::unique_ptr<index::Index> idx;
  const bool explicit_state = args->options.count("--state-dir") > 0;
  const std::string state_dir =
      explicit_state ? args->Option("--state-dir") : paths::DefaultStateDir();
  const std::string db = paths::IndexDb(state_dir);
  struct stat st;
  std::vector<std::string> notes;
  if (::stat(db.c_str(), &st) == 0) {
    auto opened = index::Index::Open(db);
    if (!opened.ok()) {
      std::cerr << "buildcachefs prune: " << opened.status().message() << "\n";
      return kExitErrors;
    }
    idx = std::move(*opened);
  } else {
    notes.push_back("no access index at " + db + ": last use is the source's write time only");
  }

  auto backend = backends::OpenBackend(whole);
  if (!backend.ok()) {
    std::cerr << "buildcachefs prune: " << backend.status().message() << "\n";
    return kExitErrors;
  }
  catalog::SourceInfo info = catalog::ReadSource(**backend, c.name, c.type);
  if (!info.errors.empty()) {
    for (const auto& e : info.errors) std::cerr << "buildcachefs prune: " << e << "\n";
    std::cerr << "buildcachefs prune: the ref list cannot be read; nothing was changed\n";
    return kExitErrors;
  }
  for (const std::string& want : only) {
    bool found = false;
    for (const auto& r : info.refs) found = found || r.name == want;
    if (!found) {
      std::cerr << "buildcachefs prune: source " << c.name << " has no ref \"" << want << "\"\n";
      return kExitErrors;
    }
  }

  gc::PruneInput in;
  in.source = c.name;
  in.sweep = c.sweep;
  std::string narrowed_by = "tag";
  if (spec->type == backends::SourceType::kS3 || spec->type == backends::SourceType::kAzblob) {
    narrowed_by = "name=";
  }
  AccessLookup access{idx.get()};
  auto to_prune_ref = [&](const catalog::RefInfo& r) {
    gc::PruneRef p;
    p.name = r.name;
    p.raw_descriptor = r.raw_descriptor;
    p.manifest = r.descriptor.digest;
    p.media_type = r.media_type.empty() ? r.descriptor.media_type : r.media_type;
    p.size = r.total_size;
    p.reaches = r.reaches;
    // Keep what the cache config names too, even if the manifest omits it.
    for (const auto& l : r.layers) p.reaches.push_back(l.blob);
    const bool present = info.blob_stats.count(r.descriptor.digest) > 0;
    p.reach_known = !(r.reaches.empty() && present);
    p.written = r.modified;
    const TimeNs m = access.Get(r.descriptor.digest);
    p.manifest_accessed = m != 0;
    p.accessed = m;
    for (const auto& d : p.reaches) p.accessed = std::max(p.accessed, access.Get(d));
    return p;
  };
  for (const auto& r : info.refs) {
    gc::PruneRef p = to_prune_ref(r);
    if (!only.empty() && !only.count(r.name)) {
      std::string names;
      for (const auto& n : only) names += (names.empty() ? "" : ";") + n;
      p.pinned = "outside the source string's " + narrowed_by + " " + names;
    } else if (r.shape == "inline") {
      p.pinned = "an inline cache is an image, not a cache manifest: never pruned";
    } else if (!in.sweep && r.descriptor.digest.empty()) {
      p.pinned = "unreadable: " + (r.errors.empty() ? std::string("?") : r.errors.front());
    } else if (in.sweep && spec->type != backends::SourceType::kLocal && p.raw_descriptor.empty() &&
               !r.errors.empty()) {
      // A manifest object that is there but unreadable: what it reaches is
      // unknown, which stops the sweep (gc/prune.h).
      p.pinned = "unreadable: " + r.errors.front();
      p.reach_known = false;
    } else if (in.sweep && p.raw_descriptor.empty()) {
      p.pinned = "no index.json entry of its own";
    }
    in.refs.push_back(std::move(p));
  }
  for (const auto& h : info.history) in.history.push_back(to_prune_ref(h));
  for (const auto& [digest, bs] : info.blob_stats) {
    in.blobs.push_back({digest, bs.size, bs.mtime});
  }
  if (in.sweep) {
    auto ingest = (*backend)->ListIngest();
    if (!ingest.ok()) {
      std::cerr << "buildcachefs prune: " << ingest.status().message() << "\n";
      return kExitErrors;
    }
    in.ingest = std::move(*ingest);
  }
  if (!access.error.ok()) {
    std::cerr << "buildcachefs prune: " << access.error.message() << "\n";
    return kExitErrors;
  }

  gc::PrunePlan plan = gc::PlanPrune(in, c.options);
  plan.notes.insert(plan.notes.begin(), notes.begin(), notes.end());
  gc::PruneResult result;
  const bool run = !c.dry_run && plan.errors.empty();
  if (run) result = gc::ExecutePrune(**backend, in, plan, c.options);
  if (format == "json") {
    std::cout << PlanJson(c, plan, run ? &result : nullptr)
                     .dump(2, ' ', false, OJson::error_handler_t::replace)
              << "\n";
  } else {
    PrintPlan(std::cout, c, plan, run ? &result : nullptr);
  }
  if (!plan.errors.empty() || !result.errors.empty()) return kExitErrors;
  return kExitOk;
}

}  // namespace bcfs::cli
