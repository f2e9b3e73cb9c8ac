// Durations and disk sizes as buildkitd.toml writes them (FORMATS.md §8.1,
// §8.2): Go duration strings or integer seconds; sizes through go-units'
// RAMInBytes (binary multipliers: "512MB" = 512·2^20), plain bytes, or "<n>%"
// of the state dir's filesystem, which BuildKit turns into bytes as
// (floor(total·n/100 / 2^30) + 1) · 1e9, or 2e9 when the total is unknown.
//
// Thread-safety: values and pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/status.h"

namespace bcfs::gc {

// Nanoseconds, as Go's time.Duration.
using DurationNs = int64_t;
inline constexpr DurationNs kSecond = 1'000'000'000;
inline constexpr DurationNs kHour = 3600 * kSecond;

// Go's time.ParseDuration: "1h30m", "500ms", "1.5h", "-2m", "0"; units ns, us,
// µs, μs, ms, s, m, h. A bare number other than 0 has no unit and is refused.
// Errors are kInvalidArgument quoting the text.
Result<DurationNs> ParseGoDuration(std::string_view text);

// A keepDuration value (BuildKit's config.Duration): a Go duration, else an
// integer number of seconds ("172800"). Negative durations are refused (they
// would protect nothing and mean a typo).
Result<DurationNs> ParseConfigDuration(std::string_view text);

// go-units RAMInBytes: `^(\d+(\.\d+)*) ?([kmgtp])?i?b?$`, case-insensitive,
// binary multipliers, the product truncated to an integer: "32" = 32,
// "32k" = "32kb" = "32KiB" = 32·2^10, "1GB" = 2^30, "0.5 m" = 2^19,
// "32.3" = 32. Refused: "", "-1", " 32", "1.2.3", "32 mb b", overflow past
// int64.
Result<int64_t> RamInBytes(std::string_view text);

// The filesystem holding the state dir, from statfs: total = f_blocks·f_frsize,
// free = f_bfree·f_frsize (BuildKit's DiskStat: f_bfree includes the blocks
// reserved for root). total 0 means unknown.
struct FsStats {
  uint64_t total = 0;
  uint64_t free = 0;
};

// Decimal defaults, as BuildKit's (FORMATS.md §8.5): the built-in numbers are
// powers of ten even though parsed strings are binary.
inline constexpr int64_t kDefaultCap = 2'000'000'000;  // a percentage when total is unknown

// BuildKit's DiskSpace: bytes, or a percentage of the filesystem.
struct DiskSpace {
  int64_t bytes = 0;
  int64_t percentage = 0;

  static DiskSpace Bytes(int64_t n) { return DiskSpace{n, 0}; }
  static DiskSpace Percent(int64_t p) { return DiskSpace{0, p}; }
  bool unset() const { return bytes == 0 && percentage == 0; }
  // bytes when set; else the percentage with BuildKit's rounding; 0 when unset.
  int64_t AsBytes(const FsStats& fs) const;
  std::string ToString() const;  // "512000000" or "10%"
  friend bool operator==(const DiskSpace&, const DiskSpace&) = default;
};

// A disk size value: "" is unset; "<n>%" (0 ≤ n ≤ 100) a percentage; else
// RamInBytes. Errors are kInvalidArgument quoting the text.
Result<DiskSpace> ParseDiskSpace(std::string_view text);

}  // namespace bcfs::gc
