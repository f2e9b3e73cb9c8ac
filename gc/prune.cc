#include "gc/prune.h"

#include <algorithm>
#include <map>
#include <set>

#include "formats/cache_manifest.h"

namespace bcfs::gc {
namespace {

// "3d4h", "2h5m", "45m", "12s", "0s": coarse ages for people.
std::string Age(DurationNs d) {
  if (d < 0) return "in the future";
  int64_t s = d / kSecond;
  const int64_t days = s / 86400, hours = s % 86400 / 3600, mins = s % 3600 / 60;
  if (days > 0) return std::to_string(days) + "d" + (hours ? std::to_string(hours) + "h" : "");
  if (hours > 0) return std::to_string(hours) + "h" + (mins ? std::to_string(mins) + "m" : "");
  if (mins > 0) return std::to_string(mins) + "m";
  return std::to_string(s) + "s";
}

// A duration as given on the command line, for reasons ("24h", "90m", "1h30m").
std::string Dur(DurationNs d) {
  int64_t s = d / kSecond;
  std::string out;
  if (s >= 3600) out += std::to_string(s / 3600) + "h";
  if (s % 3600 >= 60) out += std::to_string(s % 3600 / 60) + "m";
  if (s % 60 || out.empty()) out += std::to_string(s % 60) + "s";
  if (d % kSecond != 0 && s == 0) out = std::to_string(d) + "ns";
  return out;
}

std::string Join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return out;
}

// Adds what the top-level blob `root` names to out; false when it is present
// but cannot be read as a cache manifest (what it reaches is then unknown).
bool ReachFrom(backends::Backend& backend, const Digest& root, std::set<Digest>& out) {
  out.insert(root);
  auto text = backend.ReadDocument(root, 64u << 20);
  if (!text.ok()) return text.status().code() == Code::kNotFound;
  auto m = formats::ParseCacheManifest(*text, "", "manifest " + root.ToString());
  if (!m.ok()) return false;
  out.insert(m->config.digest);
  for (const auto& l : m->layers) out.insert(l.digest);
  return true;
}

}  // namespace

size_t PrunePlan::DroppedRefs() const {
  return static_cast<size_t>(
      std::count_if(refs.begin(), refs.end(), [](const RefDecision& r) { return !r.keep; }));
}

PrunePlan PlanPrune(const PruneInput& in, const PruneOptions& opt) {
  PrunePlan plan;
  const bool by_filter = !opt.filter.MatchesEverything();
  const bool by_age = opt.keep_duration > 0;
  const bool selecting = by_filter || by_age || opt.all;
  const TimeNs keep_cutoff = opt.now - opt.keep_duration;
  const TimeNs grace_cutoff = opt.now - opt.grace_period;

  for (const PruneRef& r : in.refs) {
    RefDecision d;
    d.name = r.name;
    d.manifest = r.manifest;
    d.size = r.size;
    const bool known = r.written != 0 || r.manifest_accessed;
    d.last_used = known ? std::max(r.written, r.accessed) : 0;
    if (!r.pinned.empty()) {
      d.reason = r.pinned;
    } else if (!selecting) {
      d.reason = "no --keep-duration, --filter or --all: every ref is kept";
    } else {
      Item item;
      item.digest = r.manifest.ToString();
      item.size = r.size;
      item.role = Role::kManifest;
      item.sources = {in.source};
      item.refs = {r.name};
      item.media_type = r.media_type;
      item.last_used = d.last_used;
      std::vector<std::string> why;
      if (by_filter && !opt.filter.Matches(item)) {
        d.reason = "does not match --filter";
      } else if (by_age && !known) {
        d.reason =
            "last use unknown (the source keeps no write time and it was never read "
            "through buildcachefs): not selected by age";
      } else if (by_age && d.last_used > keep_cutoff) {
        d.reason = "used " + Age(opt.now - d.last_used) + " ago, within --keep-duration " +
                   Dur(opt.keep_duration);
      } else if (r.written != 0 && r.written > grace_cutoff) {
        d.reason = "written " + Age(opt.now - r.written) + " ago, within --grace-period " +
                   Dur(opt.grace_period);
      } else {
        d.keep = false;
        if (by_age) {
          why.push_back("last used " + Age(opt.now - d.last_used) +
                        " ago, before --keep-duration " + Dur(opt.keep_duration));
        }
        if (by_filter) why.push_back("matches --filter");
        if (!by_age && !by_filter) why.push_back("--all");
        d.reason = Join(why);
      }
    }
    plan.refs.push_back(std::move(d));
  }

  // A DELETE by digest removes every tag pointing at it: a dropped tag whose
  // manifest a kept tag shares stays. Two dropped tags share one DELETE.
  if (!in.sweep) {
    std::map<Digest, std::string> kept_by;
    for (const auto& d : plan.refs) {
      if (d.keep && !d.manifest.empty()) kept_by.emplace(d.manifest, d.name);
    }
    std::set<Digest> deleting;
    for (auto& d : plan.refs) {
      if (d.keep) continue;
      if (auto it = kept_by.find(d.manifest); it != kept_by.end()) {
        d.keep = true;
        d.reason = "selected (" + d.reason + "), but kept tag " + it->second +
                   " points at the same manifest, which a DELETE by digest would remove too";
        continue;
      }
      d.delete_manifest = deleting.insert(d.manifest).second;
    }
    if (plan.DroppedRefs() > 0) {
      plan.notes.push_back(
          "blobs are left to the registry's own garbage collection "
          "(e.g. `registry garbage-collect`); only manifests are deleted");
    }
    return plan;
  }

  // Mark.
  std::set<Digest> keep;
  std::map<Digest, std::vector<std::string>> dropped_reach;
  std::set<Digest> history_reach, history_manifests;
  for (size_t i = 0; i < in.refs.size(); ++i) {
    const PruneRef& r = in.refs[i];
    if (plan.refs[i].keep) {
      if (!r.reach_known) {
        plan.errors.push_back("kept ref " + r.name + ": its manifest " +
                              (r.manifest.empty() ? "" : r.manifest.ToString() + " ") +
                              "is unreadable, so what it reaches is unknown; nothing is "
                              "deleted (repair or drop the ref first)");
      }
      if (!r.manifest.empty()) keep.insert(r.manifest);
      keep.insert(r.reaches.begin(), r.reaches.end());
    } else {
      for (const Digest& b : r.reaches) {
        auto& names = dropped_reach[b];
        if (std::find(names.begin(), names.end(), r.name) == names.end()) names.push_back(r.name);
      }
    }
  }
  for (const PruneRef& h : in.history) {
    history_manifests.insert(h.manifest);
    history_reach.insert(h.reaches.begin(), h.reaches.end());
  }

  // Sweep.
  std::vector<PruneBlob> blobs = in.blobs;
  std::sort(blobs.begin(), blobs.end(),
            [](const PruneBlob& a, const PruneBlob& b) { return a.digest < b.digest; });
  for (const PruneBlob& b : blobs) {
    if (keep.count(b.digest)) {
      ++plan.kept_blobs;
      plan.kept_bytes += b.size;
      continue;
    }
    BlobDecision d{b.digest, b.size, b.mtime, ""};
    if (history_manifests.count(b.digest)) {
      d.reason = "history: a cache manifest no ref reaches";
    } else if (auto it = dropped_reach.find(b.digest); it != dropped_reach.end()) {
      d.reason = "reached only by dropped " +
                 std::string(it->second.size() > 1 ? "refs " : "ref ") + Join(it->second);
    } else if (history_reach.count(b.digest)) {
      d.reason = "reached only by history manifests";
    } else {
      d.reason = "no manifest reaches it";
    }
    if (b.mtime > grace_cutoff) {
      d.reason += "; written " + Age(opt.now - b.mtime) + " ago, within --grace-period " +
                  Dur(opt.grace_period);
      plan.young_blobs.push_back(std::move(d));
    } else {
      plan.bytes_freed += b.size;
      plan.delete_blobs.push_back(std::move(d));
    }
  }
  for (const auto& e : in.ingest) {
    IngestDecision d{e.name, e.bytes, e.mtime};
    if (e.mtime > grace_cutoff) {
      plan.young_ingest.push_back(std::move(d));
    } else {
      plan.bytes_freed += e.bytes;
      plan.delete_ingest.push_back(std::move(d));
    }
  }
  return plan;
}

PruneResult ExecutePrune(backends::Backend& backend, const PruneInput& in, const PrunePlan& plan,
                         const PruneOptions& opt) {
  PruneResult res;
  if (!plan.errors.empty()) {
    res.errors.push_back("the plan has errors; nothing was changed");
    return res;
  }
  const TimeNs grace_cutoff = opt.now - opt.grace_period;

  if (!in.sweep) {
    for (size_t i = 0; i < plan.refs.size(); ++i) {
      const RefDecision& d = plan.refs[i];
      if (!d.delete_manifest) continue;
      Status st = backend.DeleteManifest(d.name, d.manifest);
      if (st.ok()) {
        res.refs_removed.push_back(d.name);
      } else if (st.code() == Code::kNotFound) {
        res.skipped.push_back(d.name + ": " + st.message());
      } else {
        res.errors.push_back(st.message());
      }
    }
    return res;
  }

  // 1. The ref list, under the source's lock (RemoveRefs rereads it there).
  std::vector<std::string> raws;
  std::set<Digest> keep;
  for (size_t i = 0; i < plan.refs.size(); ++i) {
    if (!plan.refs[i].keep) {
      if (!in.refs[i].raw_descriptor.empty()) raws.push_back(in.refs[i].raw_descriptor);
    } else {
      keep.insert(in.refs[i].reaches.begin(), in.refs[i].reaches.end());
      if (!in.refs[i].manifest.empty()) keep.insert(in.refs[i].manifest);
    }
  }
  Result<std::vector<Digest>> roots = std::vector<Digest>();
  if (!raws.empty()) {
    roots = backend.RemoveRefs(raws);
  } else {
    roots = backend.ListRoots();
  }
  if (!roots.ok()) {
    res.errors.push_back(roots.status().message() + "; nothing was deleted");
    return res;
  }
  std::set<Digest> planned_kept_roots;
  for (size_t i = 0; i < plan.refs.size(); ++i) {
    if (plan.refs[i].keep) planned_kept_roots.insert(plan.refs[i].manifest);
  }
  // 2. Re-mark: an entry that is not a kept ref of the plan (a concurrent
  // export's, or a dropped one that changed meanwhile) keeps what it reaches.
  for (const Digest& root : *roots) {
    if (planned_kept_roots.count(root)) continue;
    if (!ReachFrom(backend, root, keep)) {
      res.errors.push_back("ref list entry " + root.ToString() +
                           " appeared during the prune and is unreadable; no blob was deleted");
      return res;
    }
  }
  for (size_t i = 0; i < plan.refs.size(); ++i) {
    if (plan.refs[i].keep) continue;
    // Still listed and not as a kept ref's manifest: its entry changed meanwhile.
    if (std::find(roots->begin(), roots->end(), plan.refs[i].manifest) != roots->end() &&
        !planned_kept_roots.count(plan.refs[i].manifest)) {
      res.skipped.push_back(plan.refs[i].name + ": its entry changed since the plan; kept");
      continue;
    }
    res.refs_removed.push_back(plan.refs[i].name);
  }
  // 3. Sweep, each file's age checked again right before it goes.
  for (const BlobDecision& b : plan.delete_blobs) {
    if (keep.count(b.digest)) {
      res.skipped.push_back(b.digest.ToString() + ": a ref added meanwhile reaches it");
      continue;
    }
    auto done = backend.DeleteBlob(b.digest, grace_cutoff);
    if (!done.ok()) {
      res.errors.push_back(done.status().message());
    } else if (*done) {
      ++res.blobs_deleted;
      res.bytes_deleted += b.size;
    } else {
      res.skipped.push_back(b.digest.ToString() + ": rewritten since the plan, or already gone");
    }
  }
  for (const IngestDecision& e : plan.delete_ingest) {
    auto done = backend.DeleteIngest(e.name, grace_cutoff);
    if (!done.ok()) {
      res.errors.push_back(done.status().message());
    } else if (*done) {
      ++res.ingest_deleted;
      res.bytes_deleted += e.size;
    } else {
      res.skipped.push_back("ingest/" + e.name + ": written since the plan, or already gone");
    }
  }
  return res;
}

}  // namespace bcfs::gc
