// The GC planner: which stored items to evict, and in what order, under a
// list of policies (DESIGN.md §3, FORMATS.md §8.4). Pure: the items, the
// filesystem numbers and the time come in; a plan comes out; nothing is
// read or deleted here (the runner does that).
//
// Per policy, in order, each to completion:
//   total     = bytes of every item not yet evicted + extra_used (index,
//               anything else that counts but cannot go), whatever the filter;
//   free      = fs.free + bytes evicted by earlier policies of this plan (as a
//               statfs between policies would see once those are deleted);
//   keepBytes = BuildKit's calculateKeepBytes(total, free, policy limits),
//               percentages resolved against fs.total (§8.2);
//   candidates: not pinned, not yet evicted, not used after now−keepDuration
//               (an item never used is not protected), matching the filter;
//   keepBytes ≠ 0: evict candidates while total ≥ keepBytes (BuildKit's strict
//               `total < keepBytes` stop); keepBytes = 0: evict every candidate.
// Eviction order is least recently used (never used first), then lower use
// count, then digest (then role, then input position, so the order is total):
// one sort for the whole plan, walked once per policy. This departs on
// purpose from BuildKit's blended LRU+LFU rank (§8.4), which needs a re-sort
// per deletion; DESIGN.md §3 fixes our order.
//
// Pinned items never go. When pinned bytes plus extra_used alone exceed the
// keepBytes of a policy that applies to everything (no filter) and has space
// limits, the plan records it: the daemon then fails new fetches with ENOSPC
// and says why in `.error`.
//
// Thread-safety: pure function over values.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/time.h"
#include "gc/item.h"
#include "gc/policy.h"
#include "gc/units.h"

namespace bcfs::gc {

struct PlanInput {
  TimeNs now = 0;           // the clock, injected
  FsStats fs;               // the state dir's filesystem
  uint64_t extra_used = 0;  // bytes that count toward limits but cannot be evicted
};

struct Eviction {
  size_t item = 0;  // index into the items given to PlanGc
  size_t rule = 0;  // index of the policy that chose it
};

struct RuleOutcome {
  int64_t keep_bytes = 0;     // calculateKeepBytes; 0 = no size cap (evict every candidate)
  uint64_t total_before = 0;  // total when the rule started
  uint64_t free_before = 0;   // simulated free bytes when the rule started
  uint64_t freed = 0;
  size_t evicted = 0;
};

// Pinned bytes plus extra_used exceed a ceiling no eviction can reach.
struct OverLimit {
  size_t rule = 0;
  int64_t ceiling = 0;        // that rule's keepBytes
  uint64_t pinned_bytes = 0;  // open / in-flight items
  uint64_t extra_bytes = 0;   // PlanInput::extra_used
  uint64_t unevictable() const { return pinned_bytes + extra_bytes; }
  // "pinned blobs (… B) and the index (… B) exceed GC rule 3's limit of … B"
  std::string Message() const;
};

struct Plan {
  std::vector<Eviction> evictions;  // in the order to evict
  uint64_t bytes_freed = 0;
  uint64_t total_before = 0;  // items + extra_used
  uint64_t total_after = 0;
  uint64_t pinned_bytes = 0;
  std::vector<RuleOutcome> rules;      // one per policy, same order
  std::vector<OverLimit> over_limits;  // empty unless pinned content alone is too much
  bool enospc() const { return !over_limits.empty(); }
};

// BuildKit's calculateKeepBytes (cache/manager.go), in Go's int64 arithmetic:
// 0 when the three limits are 0; else start from max_used; when
// min_free − free > 0 lower it to total − that excess (min with max_used when
// set); else when min_free is set and max_used is not, total; finally at least
// reserved. 0 (also when min_free cannot be met even by an empty store) means
// no cap: every candidate goes.
int64_t CalculateKeepBytes(int64_t total, int64_t free, int64_t reserved, int64_t max_used,
                           int64_t min_free);

// Plans the evictions of `items` under `policies`, in order.
Plan PlanGc(std::span<const Item> items, std::span<const Policy> policies, const PlanInput& in);

}  // namespace bcfs::gc
