// The GC runner (DESIGN.md §3): lists what the local store holds (complete
// blobs, partial files, derived copies) as planner items with the index's
// facts about them, plans with the policies, and evicts. Used by the daemon
// (after fetches and on a timer) and by `buildcachefs gc`.
//
// Sizes are the bytes a file occupies on disk (st_blocks * 512), so sparse
// partial files count what they really use. The index database (with its WAL)
// counts toward the limits but cannot be evicted. A blob that no source names
// any more is a layer to the filters, with no sources and no refs.
//
// Thread-safety: functions; the caller serializes runs on one store.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "core/digest.h"
#include "core/status.h"
#include "core/time.h"
#include "gc/item.h"
#include "gc/planner.h"
#include "gc/policy.h"
#include "index/index.h"
#include "store/content_store.h"

namespace bcfs::gc {

enum class Place { kBlob, kPartial, kDerived };
// "blob", "partial", "derived".
std::string_view PlaceName(Place place);

// An item of the local store and where it lives.
struct StoredItem {
  Item item;
  Place place = Place::kBlob;
  std::string path;  // the file (for a partial blob: its .data file)
};

// Every file of the store (when `layout` is set) and of the derived folder as items, with roles,
// sources, refs, media types and access rows from `uses` (Index::ListBlobUses).
// Digests in `pinned` are marked pinned. Files that are not named like content
// (temporary files, LOCK) are left out.
Result<std::vector<StoredItem>> CollectItems(const store::Layout* layout,
                                             const std::string& derived_dir,
                                             const std::vector<index::BlobUse>& uses,
                                             const std::set<Digest>& pinned);

// Bytes the index database occupies (the file, its -wal and -shm).
uint64_t IndexBytes(const std::string& index_path);

// The filesystem holding `dir`: f_blocks and f_bfree (not f_bavail: BuildKit
// uses Free, FORMATS.md §8.4) in bytes.
Result<FsStats> StatFs(const std::string& dir);

struct GcRun {
  std::vector<StoredItem> items;
  Plan plan;
  std::vector<size_t> evicted;      // indexes into items, in eviction order
  std::vector<std::string> errors;  // evictions that failed, named
  uint64_t bytes_freed = 0;
};

struct GcRequest {
  const store::Layout* layout = nullptr;  // null: no content store (derived copies only)
  store::ContentStore* store = nullptr;   // evicts blobs and partial files of `layout`
  bool execute = true;                    // false: plan only, nothing is removed
  std::string derived_dir;
  index::Index* index = nullptr;
  std::string index_path;
  std::vector<Policy> policies;
  std::set<Digest> pinned;
  TimeNs now = 0;
};

// Collects, plans and (with `execute`) evicts. A blob being fetched
// (kUnavailable from Evict) is skipped and reported, never waited for.
Result<GcRun> RunGc(const GcRequest& req);

}  // namespace bcfs::gc
