// What the GC planner knows about one evictable thing in the local store: a
// blob, a partial file or a derived copy (DESIGN.md §3). Rows come from the
// index (access times, use counts) and the store (sizes, pins); the planner
// and the filters only read them.
//
// Thread-safety: values and pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/time.h"

namespace bcfs::gc {

// What a stored item is to the tree: `role==` in filters.
enum class Role : uint8_t { kLayer, kConfig, kManifest, kDerived };

// "layer", "config", "manifest", "derived".
std::string_view RoleName(Role role);
// The inverse of RoleName; nullopt for anything else (case-sensitive).
std::optional<Role> ParseRole(std::string_view name);

struct Item {
  std::string digest;  // "sha256:<hex>"; a derived copy carries its blob's digest
  uint64_t size = 0;   // bytes it occupies locally (present bytes for a partial file)
  Role role = Role::kLayer;
  std::vector<std::string> sources;  // source names that list it (`source==`)
  std::vector<std::string> refs;     // ref names that reach it (`ref==`)
  std::string media_type;            // "" when unknown (`mediatype~=`)
  TimeNs last_used = 0;              // 0 = never used (then keepDuration does not protect it)
  uint64_t use_count = 0;
  bool pinned = false;  // open, in flight or otherwise in use: never evicted
};

}  // namespace bcfs::gc
