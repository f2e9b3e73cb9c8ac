// The service config file `buildcachefs mount --config FILE` reads (TOML;
// DESIGN.md §6, docs/buildcachefs.1, systemd/buildcachefs.toml):
//
//   mountpoint = "/mnt/buildcache"
//   state_dir = "/var/lib/buildcachefs"
//   options = ["allow_other", "noatime"]        # mount options, as -o
//   log_level = "info"                          # debug, info, warning, error
//   metrics_addr = "127.0.0.1:9101"             # as --metrics-addr
//   gc_interval = "60s"                         # as --gc-interval
//   refresh_interval = "5m"                     # as --refresh-interval
//   [[source]]
//   source = "type=local,src=/var/cache/bk"     # a source string, or the keys:
//   [[source]]
//   type = "registry"
//   ref = "registry.example/app/cache:main"
//   as = "app"
//   [gc]                                        # gc/policy.h: [gc], [[gc.policy]]
//   [[gc.policy]]
//   keepDuration = "48h"
//
// Every key is optional; command-line flags and arguments override the
// file. Unknown keys are errors. Every error is kInvalidArgument that starts
// with "FILE:LINE:COLUMN: " (the place in the file), then the key path:
//   buildcachefs.toml:7:1: unknown key "mountpont"
//   buildcachefs.toml:3:10: source[0]: unknown key "srcs" in source type=local,srcs=/x
//   buildcachefs.toml:12:16: gc.policy[0].maxUsedSpace: invalid size "1XB": ...
// Relative paths (mountpoint, state_dir, a local src) are taken from the
// directory holding the file, so the daemon's working directory never matters.
//
// Thread-safety: values and pure functions (LoadServiceConfig reads one file).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "backends/source.h"
#include "core/log.h"
#include "core/status.h"
#include "gc/policy.h"
#include "gc/units.h"

namespace bcfs::cli {

struct ServiceConfig {
  std::string mountpoint;  // "" = not in the file
  std::string state_dir;   // "" = not in the file
  std::optional<std::vector<std::string>> options;
  std::vector<backends::SourceSpec> sources;  // in file order
  std::optional<gc::GcConfig> gc;             // set when the file has [gc]
  std::string gc_text;                        // [gc] as TOML, to tell a change on reload
  std::optional<gc::DurationNs> gc_interval;
  // How often the mount re-reads refs (as --refresh-interval; 0 = off).
  std::optional<gc::DurationNs> refresh_interval;
  std::optional<log::Level> log_level;
  std::string metrics_addr;  // "" = no metrics listener
};

// Parses TOML text. `base_dir` is what relative paths are taken from.
// Returns the config, or kInvalidArgument as described above.
Result<ServiceConfig> ParseServiceConfig(std::string_view toml_text, std::string_view file_name,
                                         const std::string& base_dir);

// Reads and parses `path` (relative paths inside it are taken from its
// directory); kNotFound / kIo (naming the file) when it cannot be read.
Result<ServiceConfig> LoadServiceConfig(const std::string& path);

}  // namespace bcfs::cli
