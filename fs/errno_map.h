// The one table that turns a bcfs::Status into the errno a FUSE reply
// carries (docs/TREE.md "Caching and writes", DESIGN.md §1.6). Every error
// the mount returns goes through ToErrno, so the mapping is decided here once
// and tested without a kernel.
//
// Thread-safety: pure functions.
#pragma once

#include "core/status.h"

namespace bcfs::fs {

// The errno for a failed status:
//   kNotFound -> ENOENT, kCorrupt -> EIO, kPermissionDenied -> EACCES,
//   kReadOnly -> EROFS, kUnsupported -> ENOTSUP, kInvalidArgument -> EINVAL,
//   kUnavailable -> EIO, kNoSpace -> ENOSPC, kAlreadyExists -> EEXIST,
//   kInternal -> EIO,
//   kIo -> the foreign errno when LooksLikeErrno() accepts it, else EIO.
// An OK status is a caller bug; it maps to EIO rather than to a "success"
// that would make the kernel believe a reply carried data.
int ToErrno(const Status& status);

// True when `foreign` is an errno worth passing through as is. Status::foreign
// may also hold an HTTP status or a SQLite result code (SQLITE_IOERR is 10,
// i.e. ECHILD), so only errnos that make sense for a failed read are accepted.
bool LooksLikeErrno(int foreign);

}  // namespace bcfs::fs
