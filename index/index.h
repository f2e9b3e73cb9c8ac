// The index: buildcachefs' SQLite database and the only SQLite user (DESIGN §4).
//
// It holds what ingest learned about each source (its refs and the blobs they
// use, DESIGN §2 "Ingest"), the access times and use counts that drive GC
// (DESIGN §3), and the verification memo that spares re-hashing unchanged local
// blob files (DESIGN §2 "Verification"). Blobs are global by digest; which
// source holds which blob, with the media type and role that source gives it,
// is recorded per source. Access rows and verification rows are keyed by
// digest / file identity alone and outlive the sources that named them, since
// the local store may still hold the bytes.
//
// The schema is versioned with `PRAGMA user_version` and an ordered list of
// migrations (index.cc); a database newer than this binary is refused.
//
// Errors: every method returns a Status / Result whose message names the
// database path and the operation; SQLite's extended result code is in
// Status::foreign(). No exception escapes this module.
//
// Thread-safety: an Index owns one SQLite connection and its prepared
// statements and must be used by one thread at a time (it may move between
// threads). Several Index objects, in one process or several, may open the
// same file: WAL mode and a ~5 s busy timeout arbitrate. AccessBatcher is
// thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/digest.h"
#include "core/status.h"
#include "core/time.h"

namespace bcfs::index {

namespace internal {
class Connection;  // the SQLite connection and its statements (index.cc)
}  // namespace internal

// What a blob is to the source that holds it (the GC filter `role==`).
enum class Role { kManifest, kConfig, kLayer, kDerived };

// "manifest", "config", "layer", "derived".
std::string_view RoleName(Role role);
// The inverse of RoleName; anything else is kInvalidArgument naming the text.
Result<Role> ParseRole(std::string_view text);

struct SourceRow {
  std::string name;      // the source's folder name in the tree, unique
  std::string type;      // "local", "registry", "s3", "azblob", "gha"
  std::string location;  // already redacted by the caller
};

struct BlobRow {
  Digest digest;
  uint64_t size = 0;
  std::string media_type;
  Role role = Role::kLayer;
};

struct RefRow {
  std::string name;           // raw ref name ("feature/x"), or "@<hex12>" for history entries
  Digest manifest;            // top-level manifest/index digest
  std::string shape;          // "image-manifest", "index", "manifest-list", "inline", ...
  TimeNs created = 0;         // newest createdAt, 0 unknown
  TimeNs modified = 0;        // source's own write time, 0 unknown
  bool history = false;       // a cache manifest no ref reaches (DESIGN §1.3 history/)
  std::vector<Digest> blobs;  // every blob the ref uses, in position order; duplicates allowed
};

struct SourceSnapshot {
  SourceRow source;
  std::vector<BlobRow> blobs;
  std::vector<RefRow> refs;
  TimeNs refreshed = 0;
};

struct Access {
  Digest digest;
  TimeNs when = 0;
  uint64_t count = 1;
};

// One tar entry of an indexed layer, in the columns the tree needs to show it
// again without reading the layer (DESIGN §2 "Ingest": entries persist so a
// remount does no decompression pass).
struct LayerEntryRow {
  std::string path;  // cleaned tar path, "" for the root
  std::string type;  // "file", "dir", "symlink", "hardlink", "char", "block", "fifo"
  uint32_t mode = 0, uid = 0, gid = 0;
  uint64_t size = 0;
  int64_t mtime_sec = 0;
  uint32_t mtime_nsec = 0;
  std::string link_target;  // symlink target as stored, or the hard link's target path
  uint32_t dev_major = 0, dev_minor = 0;
  uint64_t data_offset = 0;  // offset of the data in the uncompressed tar stream
  std::string extra;         // the caller's encoding of rarer facts (sparse map, xattrs)

  bool operator==(const LayerEntryRow&) const = default;
};

// What indexing one layer blob found. Keyed by the blob digest: the bytes
// behind it never change, so a row stays true while `format` (the caller's
// encoding version) is the current one.
struct LayerIndexRow {
  Digest digest;
  int format = 0;
  uint64_t uncompressed_size = 0;
  std::string seek_index;       // the caller's encoding of the seek points
  std::string warnings;         // skipped entries, one per line
  std::string derived_digests;  // the caller's per-block digests of a derived copy, or ""
  TimeNs indexed = 0;
  std::vector<LayerEntryRow> entries;  // in tar order

  bool operator==(const LayerIndexRow&) const = default;
};

struct AccessRow {
  TimeNs last_access = 0;
  uint64_t use_count = 0;
};

// Everything the index says about one blob, for GC (DESIGN §3): which
// sources and refs use it, in what role, and when it was last accessed.
struct BlobUse {
  Digest digest;
  std::vector<std::string> sources;  // sorted, unique
  std::vector<std::string> refs;     // sorted, unique (history entries as "@<hex12>")
  std::string media_type;            // from the first source holding it ("" none)
  std::optional<Role> role;          // likewise; nullopt when no source holds it
  TimeNs last_access = 0;            // 0 never accessed
  uint64_t use_count = 0;
};

// The identity of a local file as stat(2) reports it.
struct FileIdentity {
  uint64_t dev = 0, ino = 0, size = 0;
  int64_t mtime_ns = 0, ctime_ns = 0;
};

class Index {
 public:
  static constexpr int kSchemaVersion = 3;

  // Opens or creates the database at `path` (":memory:" allowed) and applies
  // the migrations it lacks, one transaction each. WAL mode, foreign keys on,
  // busy timeout ~5 s. Failure: kUnsupported when the database's schema
  // version is newer than kSchemaVersion (the message names the path and both
  // versions); kNotFound / kPermissionDenied / kIo when the file cannot be
  // opened (e.g. its directory does not exist); kCorrupt when it is not a
  // database.
  static Result<std::unique_ptr<Index>> Open(const std::string& path);

  ~Index();
  Index(const Index&) = delete;
  Index& operator=(const Index&) = delete;

  const std::string& path() const;

  // The database's `user_version` (kSchemaVersion after a successful Open).
  Result<int> SchemaVersion();

  // In one transaction: upserts the source row by name (type, location,
  // refreshed), upserts its blobs into the global blob table, replaces the
  // source's blob list with `snapshot.blobs` and ALL its refs and ref->blob
  // links with `snapshot.refs`, then deletes blobs no source holds any more.
  // A blob listed twice keeps the last entry's media type and role; a blob
  // another source also holds takes this snapshot's size. Failure, with
  // nothing changed: kInvalidArgument for an empty source name or digest, a
  // ref name used twice (within history or non-history refs), or a ref using a
  // blob missing from `snapshot.blobs`; a SQLite error otherwise. When the
  // source's stored rows came from a snapshot with the same content (a digest
  // of everything but `refreshed` is kept with the source row), only its
  // refresh time is updated.
  // With a non-empty `key` (a fingerprint of what the snapshot was made
  // from, that changes whenever the snapshot could), the rows are identified
  // by the key instead of a digest of their content, so that TouchSource can
  // confirm them later without making a snapshot.
  Status ReplaceSource(const SourceSnapshot& snapshot, std::string_view key = {});
  // When `source` (name, type and location) was last stored by ReplaceSource
  // with this key: updates its refresh time and returns true. False (nothing
  // changed) otherwise: the caller then replaces it.
  Result<bool> TouchSource(const SourceRow& source, std::string_view key, TimeNs refreshed);

  // All source names, sorted (byte order). Empty when there are none.
  Result<std::vector<std::string>> ListSources();

  // The snapshot last stored for `name`: refs sorted by (history, name), each
  // ref's blobs in position order, blobs sorted by digest. kNotFound when no
  // such source; kCorrupt when a stored digest or role does not parse.
  Result<SourceSnapshot> LoadSource(const std::string& name);

  // Deletes the source with its refs and blob list, then blobs no source
  // holds any more (access and verification rows stay). kNotFound when no
  // such source.
  Status RemoveSource(const std::string& name);

  // True when some source holds `digest` (it is in the global blob table).
  Result<bool> HasBlob(const Digest& digest);
  // Names of the sources holding `digest`, sorted; empty when none.
  Result<std::vector<std::string>> SourcesHolding(const Digest& digest);

  // Records many accesses in ONE transaction: per digest, last_access becomes
  // the max of the stored and given times and use_count grows by `count`
  // (several entries for one digest add up). The digest need not be in the
  // blob table. An empty list is a no-op. Failure, with nothing recorded:
  // kInvalidArgument for an empty digest; a SQLite error otherwise.
  Status RecordAccesses(const std::vector<Access>& accesses);

  // Every blob some source holds or that was ever accessed, sorted by digest,
  // in one read transaction.
  Result<std::vector<BlobUse>> ListBlobUses();

  // The access row of `digest`; std::nullopt when it was never accessed.
  Result<std::optional<AccessRow>> GetAccess(const Digest& digest);

  // The verification memo of DESIGN §2: remembers that the local file with
  // identity `file` was verified to have `digest`, replacing what was known
  // about that (dev, ino). kInvalidArgument for an empty digest.
  Status RememberVerified(const FileIdentity& file, const Digest& digest);
  // True only when a remembered row matches every field of `file` and the
  // digest; false when anything differs or nothing is remembered.
  Result<bool> IsVerified(const FileIdentity& file, const Digest& digest);

  // SQLite's `PRAGMA integrity_check`: empty when the database is sound, else
  // the problems it reports (for fsck).
  Result<std::vector<std::string>> IntegrityCheck();

  // Stores what indexing a layer found, replacing an earlier row for the same
  // digest, in one transaction. kInvalidArgument for an empty digest.
  Status SaveLayerIndex(const LayerIndexRow& row);
  // The same, with the entries (row.entries is ignored) handed over one at a
  // time by `next`, in tar order, until it returns null; each one only needs
  // to live until the next call.
  using LayerEntrySource = std::function<const LayerEntryRow*()>;
  Status SaveLayerIndex(const LayerIndexRow& row, const LayerEntrySource& next);
  // The stored row with its entries in tar order; std::nullopt when none.
  // kCorrupt when the stored digest does not parse.
  Result<std::optional<LayerIndexRow>> LoadLayerIndex(const Digest& digest);
  // The same, with the entries handed to `each` one at a time, in tar order,
  // instead of kept in the row (a layer of a million entries need not be held
  // twice); `head` is the row read so far. An error from `each` stops the
  // load and is returned. A null `each`: the row without its entries.
  using LayerEntrySink = std::function<Status(LayerIndexRow& head, LayerEntryRow&& e)>;
  Result<std::optional<LayerIndexRow>> LoadLayerIndex(const Digest& digest,
                                                      const LayerEntrySink& each);
  // Forgets a layer's row and entries (OK when there was none).
  Status RemoveLayerIndex(const Digest& digest);

 private:
  explicit Index(std::unique_ptr<internal::Connection> db);
  std::unique_ptr<internal::Connection> db_;
};

// In-memory access recorder for hot paths (FUSE lookups and reads): Touch()
// only takes a mutex and updates a hash map; Flush() writes everything pending
// with one RecordAccesses call.
//
// Thread-safety: all methods are thread-safe. Flush() does its I/O without
// holding the mutex, so Touch() never waits on SQLite; the Index passed to
// Flush() must still be used by one thread at a time.
class AccessBatcher {
 public:
  // Counts one access of `digest` at `when` (the newest time wins). An empty
  // digest is ignored: it could only make every later Flush fail. Should memory
  // run out, the access is dropped (access times are advisory).
  void Touch(const Digest& digest, TimeNs when);

  // The number of distinct digests waiting for Flush().
  size_t PendingCount() const;

  // Writes all pending accesses with one Index::RecordAccesses call. On
  // success they are cleared; on failure they stay pending (merged with
  // touches that arrived meanwhile) and the error is returned.
  Status Flush(Index& index);

 private:
  mutable std::mutex mu_;
  std::unordered_map<Digest, Access> pending_;  // GUARDED_BY(mu_)
};

}  // namespace bcfs::index
