// Timestamps: nanoseconds since the Unix epoch (UTC), and RFC 3339 text as Go's
// time.Time writes it ("2025-08-13T10:49:19.455017895Z", offsets allowed).
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/status.h"

namespace bcfs {

using TimeNs = int64_t;  // ns since 1970-01-01T00:00:00Z; 0 = unknown

// Parses RFC 3339 with optional fraction (1-9 digits) and a "Z" or ±hh:mm
// offset. Go's zero time "0001-01-01T00:00:00Z" parses to 0 (unknown), as
// FORMATS.md §10.12 asks readers to treat it.
Result<TimeNs> ParseRfc3339(std::string_view text);
// "2025-08-13T10:49:19.455017895Z" (fraction trimmed of trailing zeros, as Go
// does); "" for 0.
std::string FormatRfc3339(TimeNs t);

// The wall clock now.
TimeNs WallClockNow();

}  // namespace bcfs
