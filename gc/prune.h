// Source prune (DESIGN.md §3): mark and sweep over one remote cache.
//
// PlanPrune is pure: given what a source holds (refs with the blobs they
// reach, blob files with their sizes and mtimes, ingest/ folders), our access
// times and a clock, it decides which refs stay, which go and why, and which
// files can be deleted. ExecutePrune then applies a plan through the
// backend's write API. The rules, exactly:
//
// Last use of a ref = max(the source's write time of its top-level manifest
// blob — the file's mtime for local sources —, our newest access, in the state
// dir's index, to any blob the ref reaches). Where the source has no write
// time (registry) and we never accessed the manifest itself, the last use is
// unknown: such a ref is never selected by age (a tag pushed a minute ago must
// not look years old), only by --filter or --all.
//
// Selection (as buildx prune, whose repeated --filter AND and whose `until=`
// is the keep duration): with no --keep-duration, no --filter and no --all,
// every ref is kept and only garbage goes. Otherwise a ref is DROPPED when
//   it is a candidate (not pinned: see below), and
//   it matches the --filter set (or no --filter was given), and
//   its last use is known and at or before now − keep-duration (or no
//   --keep-duration was given; BuildKit's "protected when used after
//   now − keepDuration"), and
//   its manifest was written at or before now − grace-period.
// Filter fields seen by a ref: ref (its name), source (the source's name),
// role (always "manifest"), mediatype (the manifest's media type).
// Pinned refs are always kept: refs outside the source string's own
// narrowing (tag=, or a registry ref's tag other than `*`), inline caches
// (images, not cache manifests) and refs whose manifest cannot be read.
// --all selects every candidate when nothing else selects.
//
// Sweep (sources whose blobs we own, i.e. local): keep every blob a kept ref
// reaches (its manifest, cache config and every layer the manifest or the
// config names); every other blob file — history manifests, what only
// dropped refs or history reach, orphans — is deleted unless its mtime is
// after now − grace-period (an export may be writing it). ingest/ folders
// whose newest file is that old go too. A kept ref whose reach is unknown
// (manifest present but unreadable) blocks the sweep: nothing is deleted.
//
// Registry: a dropped tag's manifest is deleted by digest unless a kept tag
// points at the same digest (deleting by digest removes every such tag); its
// blobs are left to the registry's own garbage collection.
//
// Thread-safety: values and a pure function; ExecutePrune uses the backend
// from one thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "core/digest.h"
#include "core/status.h"
#include "core/time.h"
#include "gc/filter.h"
#include "gc/units.h"

namespace bcfs::gc {

struct PruneRef {
  std::string name;                // raw ref name (tag), "@<hex12>" when it has none
  std::string raw_descriptor;      // local: its index.json entry, how RemoveRefs finds it
  Digest manifest;                 // top-level blob; empty when unreadable
  std::string media_type;          // of the manifest, "" when unknown
  uint64_t size = 0;               // manifest + config + distinct layers
  std::vector<Digest> reaches;     // every blob it names (manifest included); may repeat
  bool reach_known = true;         // false: manifest present but unreadable
  TimeNs written = 0;              // the source's write time of the manifest, 0 unknown
  TimeNs accessed = 0;             // our newest access of any blob it reaches, 0 never
  bool manifest_accessed = false;  // we accessed the manifest itself
  std::string pinned;              // non-empty: never dropped, and why
};

struct PruneBlob {
  Digest digest;
  uint64_t size = 0;
  TimeNs mtime = 0;
};

struct PruneInput {
  std::string source;             // the source's name (`source==`)
  bool sweep = false;             // blobs are ours to delete (local)
  std::vector<PruneRef> refs;     // in the source's order
  std::vector<PruneRef> history;  // cache manifests no ref reaches (local)
  std::vector<PruneBlob> blobs;   // every blob file (local)
  std::vector<backends::IngestEntry> ingest;
};

struct PruneOptions {
  TimeNs now = 0;
  DurationNs keep_duration = 0;  // 0: no age selection
  Filter filter;                 // MatchesEverything(): no filter selection
  DurationNs grace_period = kHour;
  bool all = false;
};

struct RefDecision {
  std::string name;
  Digest manifest;
  uint64_t size = 0;
  bool keep = true;
  bool delete_manifest = false;  // registry: DELETE this digest
  TimeNs last_used = 0;          // 0 unknown
  std::string reason;
};

struct BlobDecision {
  Digest digest;
  uint64_t size = 0;
  TimeNs mtime = 0;
  std::string reason;
};

struct IngestDecision {
  std::string name;
  uint64_t size = 0;
  TimeNs mtime = 0;
};

struct PrunePlan {
  std::vector<RefDecision> refs;           // in input order
  std::vector<BlobDecision> delete_blobs;  // sorted by digest
  std::vector<BlobDecision> young_blobs;   // unreachable, kept by the grace period
  std::vector<IngestDecision> delete_ingest;
  std::vector<IngestDecision> young_ingest;
  uint64_t kept_blobs = 0, kept_bytes = 0;  // blob files that stay because kept refs reach them
  uint64_t bytes_freed = 0;                 // delete_blobs + delete_ingest
  std::vector<std::string> notes;           // said once in the output
  std::vector<std::string> errors;          // any: nothing may be deleted

  size_t DroppedRefs() const;
};

PrunePlan PlanPrune(const PruneInput& input, const PruneOptions& options);

// What ExecutePrune did.
struct PruneResult {
  std::vector<std::string> refs_removed;  // names
  uint64_t blobs_deleted = 0, bytes_deleted = 0, ingest_deleted = 0;
  // Planned deletions skipped at the last moment: rewritten since, or reached
  // by an entry another writer added to the ref list meanwhile.
  std::vector<std::string> skipped;
  std::vector<std::string> errors;
};

// Applies a plan that has no errors: local, RemoveRefs of the dropped refs'
// entries (which rereads index.json under the lock), then a re-mark from the
// ref list as it now is (a concurrent export's new entries keep what they
// reach), then DeleteBlob / DeleteIngest with the grace cutoff re-checked per
// file; registry, DeleteManifest per planned digest. Errors are collected and
// the rest goes on.
PruneResult ExecutePrune(backends::Backend& backend, const PruneInput& input, const PrunePlan& plan,
                         const PruneOptions& options);

}  // namespace bcfs::gc
