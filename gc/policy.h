// Local-store GC policies in buildkitd.toml's vocabulary (DESIGN.md §3,
// FORMATS.md §8.1, §8.5), and the TOML that carries them.
//
// A policy has keepDuration, reservedSpace, maxUsedSpace, minFreeSpace,
// filters and all (camelCase as buildkitd.toml; snake_case aliases
// keep_duration, reserved_space, max_used_space, min_free_space), and the
// deprecated keepBytes (keep_bytes), which becomes reservedSpace when that is
// unset (buildkitd main.go). Policies are read, first found wins, from
//   [gc] with [[gc.policy]]                    our own config
//   [worker.oci] with [[worker.oci.gcpolicy]]  a pasted buildkitd.toml
//   [worker.containerd] … [[….gcpolicy]]       likewise
// The enclosing table may hold the worker-level gc / reservedSpace /
// maxUsedSpace / minFreeSpace / gckeepstorage ([gc] says `enabled` for `gc`),
// which feed the default policies when no policy is listed. Other keys of a
// worker table (snapshotter, platforms, …) are ignored; an unknown key in a
// policy or in [gc] is an error naming it.
//
// `all` is accepted and kept: in BuildKit it adds internal, frontend and
// shared records, none of which a remote-cache store holds, so it selects
// nothing more here.
//
// Thread-safety: values and pure functions (LoadGcConfig reads one file).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "gc/filter.h"
#include "gc/units.h"

namespace bcfs::gc {

struct Policy {
  bool all = false;
  std::vector<std::string> filters;  // as written: ORed strings, commas AND
  Filter filter;                     // parsed `filters`
  DurationNs keep_duration = 0;      // 0 = no protection by age
  DiskSpace reserved_space;
  DiskSpace max_used_space;
  DiskSpace min_free_space;

  bool has_space_limits() const {
    return !reserved_space.unset() || !max_used_space.unset() || !min_free_space.unset();
  }
};

struct GcConfig {
  bool enabled = true;  // buildkitd `gc`; false = no policies at all
  // Worker-level values: the default policies' limits when no policy is listed.
  DiskSpace reserved_space;
  DiskSpace max_used_space;
  DiskSpace min_free_space;
  DiskSpace keep_storage;             // deprecated gckeepstorage: reserved when the three are unset
  std::vector<Policy> policies;       // as listed; empty = DefaultPolicies
  std::string table;                  // "gc", "worker.oci", "worker.containerd"; "" = none found
  std::vector<std::string> warnings;  // things accepted that do nothing here
};

// Rule 1 of DESIGN.md §3 (our analogue of BuildKit's "easily reproducible
// data" rule): role==derived, keepDuration 48h, maxUsedSpace 512e6; then
// BuildKit's rules 2–4 (v0.17+): keepDuration 1440h with the worker limits,
// the worker limits, the worker limits with all=true. Worker limits: the
// config's; else gckeepstorage as reservedSpace; else reserved 10% capped at
// 10e9, maxUsed 80% capped at 100e9, minFree 20% (DetectDefaultGCCap; the
// caps compare the percentage's bytes on `fs`).
std::vector<Policy> DefaultPolicies(const GcConfig& worker, const FsStats& fs);

// The policies to run: none when disabled, the listed ones, else the defaults.
std::vector<Policy> EffectivePolicies(const GcConfig& config, const FsStats& fs);

// Parses TOML text. Errors are kInvalidArgument naming the file, line, key
// and value: `buildkitd.toml:12: worker.oci.gcpolicy[0].maxUsedSpace: invalid
// size "1XB": …`. A document with none of the three tables gives the default
// GcConfig (table "").
Result<GcConfig> ParseGcConfig(std::string_view toml_text, std::string_view file_name);

// Reads and parses a file; kNotFound/kIo from the read, else as ParseGcConfig.
Result<GcConfig> LoadGcConfig(const std::string& path);

}  // namespace bcfs::gc
