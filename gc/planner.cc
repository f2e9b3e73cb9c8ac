#include "gc/planner.h"

#include <algorithm>
#include <limits>

#include "core/units.h"

namespace bcfs::gc {
namespace {

// The sort key of one item; the digest is looked up only on ties.
struct Key {
  int64_t last_used;  // never used = INT64_MIN, so it sorts first
  uint64_t use_count;
  uint32_t index;
};

std::vector<uint32_t> EvictionOrder(std::span<const Item> items) {
  std::vector<Key> keys(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    const Item& it = items[i];
    keys[i] = Key{it.last_used == 0 ? std::numeric_limits<int64_t>::min() : it.last_used,
                  it.use_count, static_cast<uint32_t>(i)};
  }
  std::sort(keys.begin(), keys.end(), [&](const Key& a, const Key& b) {
    if (a.last_used != b.last_used) return a.last_used < b.last_used;
    if (a.use_count != b.use_count) return a.use_count < b.use_count;
    const Item& x = items[a.index];
    const Item& y = items[b.index];
    if (int c = x.digest.compare(y.digest); c != 0) return c < 0;
    if (x.role != y.role) return x.role < y.role;
    return a.index < b.index;
  });
  std::vector<uint32_t> order(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) order[i] = keys[i].index;
  return order;
}

int64_t Signed(uint64_t v) {
  return v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())
             ? std::numeric_limits<int64_t>::max()
             : static_cast<int64_t>(v);
}

}  // namespace

std::string OverLimit::Message() const {
  return "pinned blobs (" + FormatBytes(pinned_bytes) + ") and the index (" +
         FormatBytes(extra_bytes) + ") exceed the limit of GC rule " + std::to_string(rule + 1) +
         " (" + (ceiling > 0 ? FormatBytes(static_cast<uint64_t>(ceiling)) : std::string("0 B")) +
         "); nothing else can be evicted to make room";
}

int64_t CalculateKeepBytes(int64_t total, int64_t free, int64_t reserved, int64_t max_used,
                           int64_t min_free) {
  if (max_used == 0 && reserved == 0 && min_free == 0) return 0;
  int64_t keep = max_used;
  if (int64_t excess = min_free - free; excess > 0) {
    keep = keep == 0 ? total - excess : std::min(keep, total - excess);
  } else if (min_free != 0 && keep == 0) {
    keep = total;
  }
  return std::max(keep, reserved);
}

Plan PlanGc(std::span<const Item> items, std::span<const Policy> policies, const PlanInput& in) {
  BCFS_CHECK(items.size() <= std::numeric_limits<uint32_t>::max());
  Plan plan;
  uint64_t total = in.extra_used;
  for (const Item& it : items) {
    total += it.size;
    if (it.pinned) plan.pinned_bytes += it.size;
  }
  plan.total_before = total;
  const std::vector<uint32_t> order = EvictionOrder(items);
  std::vector<uint8_t> evicted(items.size(), 0);

  for (size_t r = 0; r < policies.size(); ++r) {
    const Policy& p = policies[r];
    RuleOutcome out;
    out.total_before = total;
    out.free_before = in.fs.free + plan.bytes_freed;
    out.keep_bytes =
        CalculateKeepBytes(Signed(total), Signed(out.free_before), p.reserved_space.AsBytes(in.fs),
                           p.max_used_space.AsBytes(in.fs), p.min_free_space.AsBytes(in.fs));
    const bool gc_mode = out.keep_bytes != 0;
    const bool all_items = p.filter.MatchesEverything();
    // lastUsedAt.After(now − keepDuration) protects; an item never used is not protected.
    const TimeNs cutoff = in.now - p.keep_duration;
    for (uint32_t i : order) {
      if (gc_mode && Signed(total) < out.keep_bytes) break;
      const Item& it = items[i];
      if (evicted[i] || it.pinned) continue;
      if (p.keep_duration != 0 && it.last_used != 0 && it.last_used > cutoff) continue;
      if (!all_items && !p.filter.Matches(it)) continue;
      evicted[i] = 1;
      total -= it.size;
      out.freed += it.size;
      ++out.evicted;
      plan.bytes_freed += it.size;
      plan.evictions.push_back(Eviction{i, r});
    }
    if (all_items && p.has_space_limits()) {
      const uint64_t unevictable = plan.pinned_bytes + in.extra_used;
      if (Signed(unevictable) > std::max<int64_t>(out.keep_bytes, 0)) {
        plan.over_limits.push_back(OverLimit{r, out.keep_bytes, plan.pinned_bytes, in.extra_used});
      }
    }
    plan.rules.push_back(out);
  }
  plan.total_after = total;
  return plan;
}

}  // namespace bcfs::gc
