// The FUSE adapter: serves a tree::Tree through libfuse's low-level API
// (docs/TREE.md, DESIGN.md §1.6). It is the only libfuse user; everything it
// shows comes from the FUSE-free tree, and all it adds is the translation:
// attributes, timeouts, splice reads, Status -> errno (fs/errno_map.h), and
// EROFS for every write operation. Every request is counted by operation and
// result and timed in the process's metrics (core/metrics.h,
// buildcachefs_fuse_*).
//
// Tree nodes live as long as the tree, so the kernel's lookup counts need no
// bookkeeping: forget is a no-op and an inode number stays valid for the
// whole mount.
//
// Thread-safety: EffectiveOptions and ErrorCounts are thread-safe. ServeMount
// runs the multithreaded FUSE loop in the calling thread and must be called
// from the process's main thread with SIGTERM/SIGINT/SIGHUP unblocked there
// and blocked in every other thread the caller started: libfuse's handlers
// only wake the loop when the signal lands in the thread running it. One
// ServeMount at a time per process.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/status.h"
#include "tree/tree.h"

namespace bcfs::fs {

struct MountOptions {
  std::string mountpoint;
  std::vector<std::string> options;  // from -o, already split at commas
  bool debug = false;                // libfuse's request trace on stderr
};

// The options the mount is made with: always ro, nosuid, nodev,
// default_permissions, fsname=buildcachefs and subtype=buildcachefs, then the
// accepted ones from `given` in order without duplicates: allow_other,
// allow_root, exec, noexec, atime, noatime (ro, nosuid, nodev and
// default_permissions are accepted too, and already there). Accepted and dropped:
// relatime, norelatime, strictatime, nostrictatime, diratime, nodiratime
// (atime policy means nothing on a read-only mount, and libfuse 3.14 refuses
// those names); with one warning: suid, dev, rw (the mount is always
// ro,nosuid,nodev); silently: _netdev, nofail, noauto, auto, user, nouser,
// users, defaults, "" and x-* (fstab options meant for mount(8) and systemd).
// Anything else is kInvalidArgument naming the option.
Result<std::vector<std::string>> EffectiveOptions(const std::vector<std::string>& given);

// Mounts `tree` at opts.mountpoint and serves it until it is unmounted
// (fusermount3 -u, umount) or the process gets SIGTERM or SIGINT, in which
// case it unmounts cleanly. SIGHUP never ends the mount: a handler the caller
// installed before the call stays (reload), else SIGHUP is ignored.
// `on_ready` (may be empty) is called once,
// from a thread that is not a FUSE worker, after stat(mountpoint) answers with
// the FUSE root (st_ino == 1); it is not called when the mount ends before
// that. Returns OK after a clean unmount; otherwise an error naming the
// mountpoint: kInvalidArgument for refused options, kNotFound / kInvalidArgument
// when the mountpoint is missing / not a directory, kIo (with libfuse's reason)
// when mounting fails (no permission, no /dev/fuse, ...) or the loop fails.
Status ServeMount(tree::Tree& tree, const MountOptions& opts, std::function<void()> on_ready);

// How many requests were answered with each errno since the process started
// (only errnos answered at least once).
std::map<int, uint64_t> ErrorCounts();

}  // namespace bcfs::fs
