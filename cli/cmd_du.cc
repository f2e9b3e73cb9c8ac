// `buildcachefs du [SOURCE...] [--state-dir DIR] [--format table|json] [--verbose]`:
// where a cache's bytes go, per source and per ref (issue 6).

#include <sys/stat.h>

#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "backends/naming.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "cli/lifecycle_util.h"
#include "core/paths.h"
#include "core/units.h"
#include "formats/cache_manifest.h"
#include "index/index.h"
#include "store/content_store.h"

namespace bcfs::cli {
namespace {

using OJson = nlohmann::ordered_json;

constexpr char kDuHelp[] =
    R"(Usage: buildcachefs du [SOURCE...] [--state-dir DIR] [--format table|json] [--verbose]

Shows where the bytes of BuildKit caches go. Per ref (every blob it reaches:
manifest, cache config, layers; descriptor sizes):
  TOTAL     bytes of the blobs the ref reaches
  SHARED    of those, bytes another ref of the same source also reaches
  UNIQUE    TOTAL - SHARED: what the ref alone keeps alive
  CACHED    remote sources: bytes of the ref's blobs complete (verified) in the
            local content store; "-" for local sources (nothing to cache)
  LAST USE  the newest of the index's access times of the ref's blobs (reads
            through a mount) and the source's own write time of the ref's
            manifest (local: the blob file's mtime)
Per source:
  <history>   cache manifests in blobs/ that no ref reaches (earlier exports to
              the same local dir) and the bytes only they reach
  <orphaned>  blobs that no ref and no history entry reaches: a local cache dir
              keeps these forever (moby/buildkit#1896); "-" where the source
              cannot list its blobs (registries)
  <source>    refs + history + orphaned

With no SOURCE, the sources recorded in the state dir's index (by mount, warm
or ls --state-dir) are shown from the index alone, offline: sizes and refs as
last read; orphaned blobs are not known there.

SOURCE is the CSV given to `docker buildx build --cache-from`, e.g.
  type=local,src=/var/cache/buildkit   type=registry,ref=host/app/cache:main

Options:
  --state-dir DIR       the state dir whose index (access times) and content
                        store (CACHED) are read (default: the mount's default)
  --format table|json   columns for people (default) or JSON with exact byte counts
  --verbose             also list each history entry and each orphaned blob
  --log-level LEVEL     debug, info, warning (default), error
  -h, --help            this text

du reads the content store's files without locking it, so it works beside a
running mount; partly fetched blobs are counted in a note. Exit status: 0 shown, 1 some source had errors (shown with
what could be read), 2 usage error.
)";

struct Entry {
  std::string name;
  bool history = false;
  std::vector<std::pair<Digest, uint64_t>> blobs;  // distinct, descriptor sizes
  TimeNs modified = 0;
  // Computed.
  uint64_t total = 0, shared = 0;
  std::optional<uint64_t> cached;
  TimeNs last_use = 0;
};

struct SourceDu {
  std::string name, type, location;
  bool from_index = false;
  TimeNs refreshed = 0;
  std::vector<Entry> entries;  // refs, then history entries
  bool orphans_known = false;
  std::vector<std::pair<Digest, uint64_t>> orphans;
  std::vector<std::string> warnings, errors;
  // Computed.
  uint64_t refs_bytes = 0, history_bytes = 0, orphan_bytes = 0, total = 0;
  size_t history_count = 0;
  std::optional<uint64_t> cached;
  size_t partial_blobs = 0;  // partly fetched, not counted in cached
  TimeNs last_use = 0;
};

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// Bytes of complete blobs in the local content store, read from its files
// without taking the store's lock: a running mount holds that lock, and a
// mount starting while du held it would fail. Files in blobs/ are final and
// verified, so a stat is exact for them; partly fetched blobs (partial/) are
// counted, not measured (their record is the store's to parse).
class CacheProbe {
 public:
  explicit CacheProbe(const std::string& state_dir) : layout_(paths::StoreDir(state_dir)) {}

  uint64_t Bytes(const Digest& d) {
    struct stat st;
    if (::stat(layout_.Blob(d).c_str(), &st) == 0) return static_cast<uint64_t>(st.st_size);
    return 0;
  }
  bool Partial(const Digest& d) {
    struct stat st;
    return ::stat(layout_.Blob(d).c_str(), &st) != 0 &&
           ::stat(layout_.PartialData(d).c_str(), &st) == 0;
  }

 private:
  store::Layout layout_;
};

// Access times from the state dir's index (only when it exists: du creates
// nothing).
class AccessProbe {
 public:
  explicit AccessProbe(index::Index* idx) : idx_(idx) {}
  TimeNs Last(const Digest& d) {
    if (idx_ == nullptr) return 0;
    auto it = memo_.find(d);
    if (it != memo_.end()) return it->second;
    TimeNs t = 0;
    if (auto a = idx_->GetAccess(d); a.ok() && a->has_value()) t = (*a)->last_access;
    memo_[d] = t;
    return t;
  }

 private:
  index::Index* idx_;
  std::map<Digest, TimeNs> memo_;
};

// Blobs a top-level blob of the ref list reaches (for tag=/digest= narrowed
// sources, whose other entries still keep their blobs).
void ReachRoot(backends::Backend& backend, const Digest& root, std::set<Digest>& reached) {
  reached.insert(root);
  auto text = backend.ReadDocument(root, catalog::kMaxDocumentSize);
  if (!text.ok()) return;
  auto m = formats::ParseCacheManifest(*text, "", "manifest " + root.ToString());
  if (!m.ok()) return;
  reached.insert(m->config.digest);
  for (const auto& l : m->layers) reached.insert(l.digest);
}

SourceDu FromLive(OpenedSource& s) {
  const catalog::SourceInfo& info = s.info;
  SourceDu du;
  du.name = info.name;
  du.type = info.type;
  du.location = info.location;
  du.warnings = info.warnings;
  du.errors = info.errors;
  std::set<Digest> reached;
  for (const auto* list : {&info.refs, &info.history}) {
    for (const auto& r : *list) {
      Entry e;
      e.name = r.name;
      e.history = r.history;
      e.modified = r.modified;
      for (const auto& b : RefBlobs(r)) {
        e.blobs.push_back({b.digest, b.size});
        reached.insert(b.digest);
      }
      reached.insert(r.reaches.begin(), r.reaches.end());
      const std::string who = (r.history ? "history " : "ref ") + backends::EncodeRefName(r.name);
      for (const auto& w : r.warnings) du.warnings.push_back(who + ": " + w);
      for (const auto& x : r.errors) du.errors.push_back(who + ": " + x);
      du.entries.push_back(std::move(e));
    }
  }
  // Orphans: blobs the source holds that no entry of its ref list and no
  // history entry reaches.
  std::map<Digest, uint64_t> held;
  for (const auto& [d, st] : info.blob_stats) held[d] = st.size;
  bool listed = !info.blobs.empty();
  if (!listed) {
    auto blobs = s.backend->ListBlobs();
    listed = blobs.ok();
    if (blobs.ok()) {
      for (const Digest& d : *blobs) {
        if (auto st = s.backend->StatBlob(d); st.ok()) held[d] = st->size;
      }
    }
  }
  if (listed) {
    du.orphans_known = true;
    if (auto roots = s.backend->ListRoots(); roots.ok()) {
      for (const Digest& root : *roots) {
        if (!reached.count(root)) ReachRoot(*s.backend, root, reached);
      }
    }
    for (const auto& [d, size] : held) {
      if (!reached.count(d)) du.orphans.push_back({d, size});
    }
  }
  return du;
}

Result<SourceDu> FromIndex(index::Index& idx, const std::string& name) {
  auto snap = idx.LoadSource(name);
  if (!snap.ok()) return snap.status();
  SourceDu du;
  du.name = snap->source.name;
  du.type = snap->source.type;
  du.location = snap->source.location;
  du.from_index = true;
  du.refreshed = snap->refreshed;
  std::map<Digest, uint64_t> sizes;
  for (const auto& b : snap->blobs) sizes[b.digest] = b.size;
  // LoadSource sorts by (history, name): refs come first.
  for (const auto& r : snap->refs) {
    Entry e;
    e.name = r.name;
    e.history = r.history;
    e.modified = r.modified;
    std::set<Digest> seen;
    for (const auto& d : r.blobs) {
      if (!seen.insert(d).second) continue;
      auto it = sizes.find(d);
      e.blobs.push_back({d, it == sizes.end() ? 0 : it->second});
    }
    du.entries.push_back(std::move(e));
  }
  return du;
}

void Compute(SourceDu& du, CacheProbe& cache, AccessProbe& access) {
  std::map<Digest, int> ref_count, hist_count;
  std::map<Digest, uint64_t> ref_blobs, hist_blobs;
  for (const auto& e : du.entries) {
    for (const auto& [d, size] : e.blobs) {
      ++(e.history ? hist_count : ref_count)[d];
      (e.history ? hist_blobs : ref_blobs)[d] = size;
    }
  }
  const bool remote = du.type != "local";
  for (auto& e : du.entries) {
    if (remote) e.cached = 0;
    e.last_use = e.modified;
    for (const auto& [d, size] : e.blobs) {
      e.total += size;
      const bool shared = e.history ? ref_count[d] + hist_count[d] > 1 : ref_count[d] > 1;
      if (shared) e.shared += size;
      if (remote) *e.cached += cache.Bytes(d);
      e.last_use = std::max(e.last_use, access.Last(d));
    }
    if (!e.history) du.last_use = std::max(du.last_use, e.last_use);
    if (e.history) ++du.history_count;
  }
  for (const auto& [d, size] : ref_blobs) du.refs_bytes += size;
  for (const auto& [d, size] : hist_blobs) {
    if (!ref_blobs.count(d)) du.history_bytes += size;
  }
  for (const auto& [d, size] : du.orphans) du.orphan_bytes += size;
  du.total = du.refs_bytes + du.history_bytes + du.orphan_bytes;
  if (remote) {
    du.cached = 0;
    std::set<Digest> all;
    for (const auto& e : du.entries) {
      for (const auto& [d, size] : e.blobs) {
        if (!all.insert(d).second) continue;
        *du.cached += cache.Bytes(d);
        if (cache.Partial(d)) ++du.partial_blobs;
      }
    }
  }
}

OJson TimeJson(TimeNs t) { return t == 0 ? OJson(nullptr) : OJson(FormatRfc3339(t)); }
OJson OptJson(const std::optional<uint64_t>& v) { return v ? OJson(*v) : OJson(nullptr); }

OJson EntryJson(const Entry& e) {
  return {{"name", e.name},
          {"path_name", backends::EncodeRefName(e.name)},
          {"blobs", e.blobs.size()},
          {"total", e.total},
          {"shared", e.shared},
          {"unique", e.total - e.shared},
          {"cached", OptJson(e.cached)},
          {"last_use", TimeJson(e.last_use)}};
}

std::string Opt(const std::optional<uint64_t>& v) { return v ? FormatBytes(*v) : "-"; }

void PrintTable(const std::vector<SourceDu>& all, bool verbose, TimeNs now,
                const std::vector<std::string>& notes) {
  std::vector<std::vector<std::string>> rows = {
      {"SOURCE", "REF", "BLOBS", "TOTAL", "SHARED", "UNIQUE", "CACHED", "LAST USE"}};
  uint64_t total = 0, orphaned = 0;
  std::optional<uint64_t> cached;
  for (const auto& s : all) {
    for (const auto& e : s.entries) {
      if (e.history && !verbose) continue;
      rows.push_back({s.name, (e.history ? "history " : "") + backends::EncodeRefName(e.name),
                      std::to_string(e.blobs.size()), FormatBytes(e.total), FormatBytes(e.shared),
                      FormatBytes(e.total - e.shared), Opt(e.cached), Ago(e.last_use, now)});
    }
    if (s.history_count > 0) {
      rows.push_back({s.name,
                      "<history: " + std::to_string(s.history_count) + " entr" +
                          (s.history_count == 1 ? "y" : "ies") + ">",
                      "", FormatBytes(s.history_bytes), "", "", "", ""});
    }
    if (!s.orphans_known) {
      rows.push_back({s.name, "<orphaned: not known>", "-", "-", "", "", "", ""});
    } else {
      rows.push_back({s.name, "<orphaned>", std::to_string(s.orphans.size()),
                      FormatBytes(s.orphan_bytes), "", "", "", ""});
      if (verbose) {
        for (const auto& [d, size] : s.orphans) {
          rows.push_back({s.name, "  " + d.ToString(), "1", FormatBytes(size), "", "", "", ""});
        }
      }
    }
    rows.push_back({s.name, "<source>", "", FormatBytes(s.total), "", "", Opt(s.cached),
                    Ago(s.last_use, now)});
    total += s.total;
    orphaned += s.orphan_bytes;
    if (s.cached) cached = cached.value_or(0) + *s.cached;
  }
  rows.push_back({"TOTAL", std::to_string(all.size()) + (all.size() == 1 ? " source" : " sources"),
                  "", FormatBytes(total), "", "", Opt(cached), ""});
  PrintColumns(std::cout, rows, {false, false, true, true, true, true, true, false});
  std::vector<std::string> lines = notes;
  for (const auto& s : all) {
    if (s.from_index) {
      lines.push_back(s.name + ": from the index (read " + FormatRfc3339(s.refreshed) +
                      "), offline: orphaned blobs are not known");
    }
    if (s.partial_blobs > 0) {
      lines.push_back(s.name + ": " + std::to_string(s.partial_blobs) +
                      (s.partial_blobs == 1 ? " blob is" : " blobs are") +
                      " partly fetched (not counted in CACHED; a read or warm resumes it)");
    }
    for (const auto& w : s.warnings) lines.push_back(s.name + ": warning: " + w);
    for (const auto& x : s.errors) lines.push_back(s.name + ": error: " + x);
  }
  if (orphaned > 0) {
    lines.push_back(FormatBytes(orphaned) +
                    " of orphaned blobs: no ref reaches them (buildcachefs prune removes them)");
  }
  if (!lines.empty()) std::cout << "\n";
  for (const auto& l : lines) std::cout << l << "\n";
}

void PrintJson(const std::vector<SourceDu>& all, const std::string& state_dir,
               const std::vector<std::string>& notes) {
  OJson j;
  j["state_dir"] = state_dir;
  OJson sources = OJson::array();
  uint64_t total = 0, orphaned = 0;
  std::optional<uint64_t> cached;
  for (const auto& s : all) {
    OJson sj;
    sj["name"] = s.name;
    sj["type"] = s.type;
    sj["location"] = s.location;
    sj["from_index"] = s.from_index;
    sj["refreshed"] = TimeJson(s.refreshed);
    OJson refs = OJson::array(), hist = OJson::array();
    for (const auto& e : s.entries) (e.history ? hist : refs).push_back(EntryJson(e));
    sj["refs"] = refs;
    sj["refs_bytes"] = s.refs_bytes;
    sj["history"] = {{"count", s.history_count}, {"bytes", s.history_bytes}, {"entries", hist}};
    if (s.orphans_known) {
      OJson blobs = OJson::array();
      for (const auto& [d, size] : s.orphans)
        blobs.push_back({{"digest", d.ToString()}, {"size", size}});
      sj["orphaned"] = {{"count", s.orphans.size()}, {"bytes", s.orphan_bytes}, {"blobs", blobs}};
    } else {
      sj["orphaned"] = nullptr;
    }
    sj["total"] = s.total;
    sj["cached"] = OptJson(s.cached);
    sj["partial_blobs"] = s.partial_blobs;
    sj["last_use"] = TimeJson(s.last_use);
    sj["warnings"] = s.warnings;
    sj["errors"] = s.errors;
    sources.push_back(sj);
    total += s.total;
    orphaned += s.orphan_bytes;
    if (s.cached) cached = cached.value_or(0) + *s.cached;
  }
  j["sources"] = sources;
  j["total"] = {{"bytes", total}, {"orphaned", orphaned}, {"cached", OptJson(cached)}};
  j["notes"] = notes;
  std::cout << j.dump(2, ' ', false, OJson::error_handler_t::replace) << "\n";
}

}  // namespace

int RunDu(const std::vector<std::string>& argv) {
  auto args = ParseArgs(argv, {"--format", "--state-dir", "--log-level"}, {"--verbose"});
  if (!args.ok()) {
    std::cerr << "buildcachefs du: " << args.status().message() << "\n\n" << kDuHelp;
    return kExitUsage;
  }
  if (args->help) {
    std::cout << kDuHelp;
    return kExitOk;
  }
  if (!ApplyLogLevel("du", args->Option("--log-level"))) return kExitUsage;
  const std::string format = args->Option("--format", "table");
  if (format != "table" && format != "json") {
    std::cerr << "buildcachefs du: unknown format \"" << format << "\" (want table or json)\n";
    return kExitUsage;
  }
  auto named = ParseSources(args->positional);
  if (!named.ok()) {
    std::cerr << "buildcachefs du: " << named.status().message() << "\n";
    return kExitUsage;
  }
  const std::string state_dir = args->Option("--state-dir", paths::DefaultStateDir());
  std::vector<std::string> notes;
  std::unique_ptr<index::Index> idx;
  const std::string db = paths::IndexDb(state_dir);
  if (Exists(db)) {
    auto opened = index::Index::Open(db);
    if (opened.ok()) {
      idx = std::move(*opened);
    } else {
      notes.push_back("cannot read the index: " + opened.status().message() +
                      "; LAST USE shows the sources' own write times only");
    }
  }

  int rc = kExitOk;
  std::vector<SourceDu> all;
  if (named->empty()) {
    if (!idx) {
      notes.push_back("no index at " + db +
                      ": no source recorded in this state dir (give SOURCE to read one)");
    } else if (auto names = idx->ListSources(); !names.ok()) {
      std::cerr << "buildcachefs du: " << names.status().message() << "\n";
      return kExitErrors;
    } else {
      for (const auto& n : *names) {
        auto s = FromIndex(*idx, n);
        if (!s.ok()) {
          std::cerr << "buildcachefs du: " << s.status().message() << "\n";
          rc = kExitErrors;
          continue;
        }
        all.push_back(std::move(*s));
      }
    }
  } else {
    for (const auto& n : *named) {
      auto s = OpenSource(n);
      if (!s.ok()) {
        std::cerr << "buildcachefs du: " << s.status().message() << "\n";
        rc = kExitErrors;
        continue;
      }
      all.push_back(FromLive(*s));
      if (!all.back().errors.empty()) rc = kExitErrors;
    }
  }
  CacheProbe cache(state_dir);
  AccessProbe access(idx.get());
  for (auto& s : all) Compute(s, cache, access);
  if (format == "json") {
    PrintJson(all, state_dir, notes);
  } else {
    PrintTable(all, args->flags.count("--verbose") != 0, NowNs(), notes);
  }
  return rc;
}

}  // namespace bcfs::cli
