// The tree: the read-only directory tree a mount shows (DESIGN.md §1.3–1.6),
// as a FUSE-free model that tests call directly and that the FUSE adapter
// (fs/) only translates. Built from the catalog of each source:
//
//   <source>/oci-layout, index.json, index.json.lock (empty), ingest/ (empty)
//   <source>/blobs/sha256/<hex>            raw blob bytes, served only verified
//   <source>/refs/<ref>/manifest.json, cache-config.json, records.json,
//                       [inline-records.json], layers/NNN-<hex12> -> blob
//   <source>/history/<hex>/...             same shape, for unreachable manifests
//   .buildcachefs/status.json              rendered when read
//   .buildcachefs/metrics                  Prometheus text (core/metrics.h), rendered when read
//
// Inode numbers are derived from the path, so they are stable across remounts.
// What a ref folder holds is built on its first lookup or listing (a mount
// with thousands of refs builds only their folders), with the same numbers.
// Nodes are created once and never freed while the tree lives, so the FUSE
// layer's lookup counts need no bookkeeping here.
//
// Refresh (DESIGN.md §1.6) re-reads each source's catalog and changes what
// its folders hold: a node that still says the same thing stays (same inode,
// kernel cache, layer state); a changed entry gets a new node (a new inode,
// so the kernel never mixes old and new bytes); a vanished entry leaves its
// folder but its node lives on, so open files and the kernel's references
// keep working. The price: nodes of replaced entries are kept until unmount.
//
// Thread-safety: every method is thread-safe (folder contents are read and
// changed under one shared mutex; error notes and verification state are
// guarded by mutexes; refreshes run one at a time).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "backends/backend.h"
#include "catalog/catalog.h"
#include "core/status.h"
#include "core/time.h"
#include "index/index.h"
#include "store/content_store.h"

namespace bcfs::tree {

// The derived uncompressed copy of a layer is checked in blocks of this size
// against the sha256 digests its indexing pass recorded in the index (each
// block before it is first served in a mount; fsck checks them all).
inline constexpr uint64_t kDerivedBlockSize = 1u << 20;

// kCharDev, kBlockDev and kFifo exist only inside layers (the tar's own
// entries); the mount is nodev, so they cannot be used as devices.
enum class Kind { kDir, kFile, kSymlink, kCharDev, kBlockDev, kFifo };

// How long the kernel may cache an entry and its data (DESIGN.md §1.6).
enum class CachePolicy {
  kImmutable,  // digest-named: long entry/attr timeouts, keep the page cache
  kShort,      // index.json, refs/, source folders: ~1 s, invalidated on refresh
  kDirect,     // .buildcachefs/: direct_io, no caching
};

struct Attr {
  uint64_t ino = 0;
  Kind kind = Kind::kFile;
  uint32_t mode = 0;  // permission bits only (0444 / 0555 / 0777)
  uint64_t nlink = 1;
  uint64_t size = 0;
  TimeNs mtime = 0;
  uint32_t uid = 0, gid = 0;
  uint64_t rdev = 0;  // devices in layers
  CachePolicy cache = CachePolicy::kShort;

  bool operator==(const Attr&) const = default;
};

struct DirEntry {
  std::string name;
  Attr attr;
};

// Bytes to hand to the kernel: either from a file descriptor (spliced by the
// FUSE layer) or from memory.
struct ReadSpan {
  int fd = -1;  // >= 0: read `length` bytes at fd_offset from it
  uint64_t fd_offset = 0;
  size_t length = 0;
  std::string bytes;  // used when fd < 0
};

// An open file. Read never returns unverified bytes.
class OpenFile {
 public:
  virtual ~OpenFile() = default;
  // Up to size bytes at offset (fewer only at the end of the file).
  virtual Result<ReadSpan> Read(uint64_t offset, size_t size) = 0;
};

// One source to show: its folder name, its backend and what the catalog read.
struct SourceInput {
  std::string name;
  std::shared_ptr<backends::Backend> backend;
  catalog::SourceInfo info;
};

// What one refresh of every source did.
struct RefreshReport {
  uint64_t generation = 0;                     // status.json's refresh.generation after it
  size_t added = 0, removed = 0, changed = 0;  // entries of refs/, all sources
  std::vector<std::string> errors;  // sources whose read failed (they show what they did)
};

class Node;

class Tree {
 public:
  static constexpr uint64_t kRootIno = 1;

  // Builds the tree of all sources. `index` (may be null) keeps the
  // verification memo of local blobs; `store` (may be null: remote blobs are
  // then unreadable) fetches and keeps remote blobs. Both must outlive the tree.
  // `derived_dir` (may be empty) holds the uncompressed copies of compressed
  // layers made while indexing them (unnamed O_TMPFILE files that vanish with
  // the mount), so reads in layers are served like uncompressed ones.
  // `catalog_cache` (may be empty) is where refreshes keep and find the
  // catalogs of unchanged sources (catalog::ReadSourceCached).
  static Result<std::unique_ptr<Tree>> Build(std::vector<SourceInput> sources, index::Index* index,
                                             store::ContentStore* store = nullptr,
                                             std::string derived_dir = "",
                                             std::string catalog_cache = "");
  ~Tree();

  // kNotFound when parent has no child `name` (or is not a directory).
  Result<Attr> Lookup(uint64_t parent, std::string_view name);
  // kNotFound for an unknown inode.
  Result<Attr> GetAttr(uint64_t ino);
  // The children of a directory, sorted by name ("." and ".." not included).
  Result<std::vector<DirEntry>> ReadDir(uint64_t ino);
  // The target of a symlink; kInvalidArgument for other kinds.
  Result<std::string> ReadLink(uint64_t ino);
  // Extended attribute names of a node (user.buildcachefs.*), sorted.
  Result<std::vector<std::string>> ListXattrs(uint64_t ino);
  // kNotFound (ENODATA at the edge) when the node has no such attribute.
  Result<std::string> GetXattr(uint64_t ino, std::string_view name);
  // Opens a file for reading. A blob is verified here (whole-blob sha256 before
  // the first byte, DESIGN.md §2): kCorrupt when its bytes do not match its
  // digest or its size differs from the descriptor, with the reason kept in
  // the node's user.buildcachefs.error.
  Result<std::unique_ptr<OpenFile>> Open(uint64_t ino);

  // ---- for the GC service (DESIGN.md §3) ----

  // Writes the accesses recorded so far (opens of blobs, documents and files
  // in layers, listings of layer folders) to the index in one transaction.
  Status FlushAccesses();
  // Off: no access is recorded (mount -o noatime); GC then orders content by
  // its file times.
  void SetAccessTracking(bool on);
  // Digests that must not be evicted now: files open, fetches in flight,
  // layers whose blob or derived copy this tree holds open.
  std::set<Digest> PinnedDigests();
  // Called (outside any tree lock) after a remote blob was fetched into the
  // store; the GC service runs there when a limit is crossed.
  void SetAfterFetch(std::function<void()> hook);
  // Non-empty: new fetches fail with kNoSpace and this reason (pinned content
  // alone exceeds a GC ceiling). Empty lifts it.
  void SetFetchBlock(std::string reason);
  // Tells the kernel to drop what it caches of a node (set by fs/ while mounted).
  void SetInvalidator(std::function<void(uint64_t ino)> invalidate);
  // Tells the kernel to forget the name `name` in folder `parent` (cached
  // lookups, negative ones included; set by fs/ while mounted).
  void SetEntryInvalidator(
      std::function<void(uint64_t parent, const std::string& name)> invalidate);
  // Content was evicted from the store: the next open of those blobs fetches
  // them again. Their layers (when no file of them is open) close the blob,
  // so its space is freed now and a later read fetches it again.
  void Evicted(const std::vector<Digest>& digests);
  // Derived copies of these layers were evicted: layers with no open file close
  // theirs and read through seek points from then on.
  void DerivedEvicted(const std::vector<Digest>& digests);
  // Extra top-level members of status.json (e.g. "gc"), as a JSON object
  // text; rendered each time status.json is opened.
  void SetStatusExtra(std::function<std::string()> extra);

  // ---- refresh (DESIGN.md §1.6) ----

  // Reads every source's catalog again and shows what it found (see the top
  // of this file), invalidating what changed in the kernel, then bumps the
  // refresh generation. A source whose read fails (its ref list or blob
  // listing; catalog source-level errors) keeps showing what it did; the
  // reason, naming the culprit, is in status.json and its folder's
  // user.buildcachefs.error until a refresh of it works. Never call it from
  // a FUSE request (the kernel's invalidation may wait on one).
  RefreshReport Refresh();
  // How many refreshes completed (0 after Build).
  uint64_t RefreshGeneration();

  // Finds a node by a path relative to the root ("src/refs/latest/manifest.json").
  Result<Attr> Resolve(std::string_view path);
  size_t NodeCount() const;

 private:
  Tree();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace bcfs::tree
