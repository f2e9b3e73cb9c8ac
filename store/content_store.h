// The local content store: remote blobs fetched lazily into a persistent
// directory and served only once their whole-blob sha256 has been checked
// (DESIGN.md §2 "Verification").
//
// A blob is fetched in part_size-aligned parts, up to `parallel` ranged
// fetches at once, into a sparse file — or, when the caller can stream
// (FetchStream), with one request per run of missing parts whose bytes are
// written as they arrive while a second thread syncs and records each part
// as it completes. A running SHA-256 follows the
// contiguous prefix of present parts while the rest arrive, so the first
// OpenVerified of a blob returns as soon as the last part lands and the
// digest matches; then the file is renamed into blobs/ and served from there.
// Memory per fetching blob: parallel * part_size of part buffers plus one
// 1 MiB buffer for reading parts back into the hasher.
//
// On-disk layout (every path is named by Layout below):
//   <dir>/LOCK                              flock'd by the one ContentStore using <dir>
//   <dir>/blobs/<alg>/<hex>                 complete, verified blobs, mode 0444
//   <dir>/partial/<alg>/<hex>.data          sparse file of the blob's full size
//   <dir>/partial/<alg>/<hex>.ranges        append-only record of the parts present in .data:
//       "bcfs-ranges 1 <digest> <size> <part_size> <check>\n"   header, then per part
//       "<part index> <check>\n"                                 in the order parts landed,
//     where <check> is the first 16 hex digits of the sha256 of the text before it
//     (it detects torn or garbled lines; the whole-blob hash guards the bytes).
//
// Crash safety (kill -9 or power loss at any moment):
//   - Only files in blobs/ are ever served, and a file gets there only by a
//     rename made after the sha256 of all its bytes matched the digest (data
//     fsync'd before the rename, the directory after it). So nothing
//     unverified or torn is ever served.
//   - A part's bytes are written (pwrite) and fdatasync'ed before its line is
//     appended to .ranges (and that fdatasync'ed before the part counts as
//     present). A recorded part therefore has durable bytes; a part whose
//     record did not survive is fetched again. A torn last line fails its
//     check and is cut off on resume; a damaged header discards the partial.
//   - Resumed bytes are not trusted either: the whole-blob hash after resume
//     covers them, and on a mismatch the data and its record are discarded
//     and the blob is fetched once more from scratch.
//   - The LOCK flock keeps a second process (or store object) from writing
//     the same partial files, which would break the argument above.
//
// Hits, misses, joined fetches, bytes fetched and fetches in flight are
// counted in the process's metrics (core/metrics.h, buildcachefs_store_*).
//
// Thread-safety: ContentStore is thread-safe. Concurrent OpenVerified calls
// for one digest share one fetch ("single flight": each part is fetched
// once); different digests fetch concurrently. The store must outlive every
// call into it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>

#include "core/digest.h"
#include "core/status.h"

namespace bcfs::store {

// Fetches exactly out.size() bytes at offset of a blob from its source, or
// fails (a source holding fewer bytes must fail, not return short). Called
// from the store's worker threads, several at once for one blob.
using FetchRange = std::function<Status(uint64_t offset, std::span<char> out)>;

// Sends `length` bytes of a blob from `offset` to `sink`, in order, exactly
// once each (one ranged GET for a remote source), or fails; sink returning
// false must stop it. Called from one store thread per blob.
using ByteSink = std::function<bool(std::string_view)>;
using FetchStream = std::function<Status(uint64_t offset, uint64_t length, const ByteSink& sink)>;

// (digest, bytes present locally, blob size); see SetProgressCallback.
using ProgressCallback = std::function<void(const Digest&, uint64_t, uint64_t)>;

struct StoreOptions {
  uint64_t part_size = 8u << 20;  // fetch unit, aligned to part_size
  int parallel = 4;               // parts fetched at once per blob
  int attempts = 2;  // whole-blob fetch+verify attempts (mismatch -> discard, fetch once more)
};

// Every path inside a store directory, named in one place.
class Layout {
 public:
  explicit Layout(std::string dir) : dir_(std::move(dir)) {}
  const std::string& dir() const { return dir_; }
  std::string LockFile() const;
  std::string BlobDir(std::string_view algorithm) const;     // <dir>/blobs/<alg>
  std::string Blob(const Digest& digest) const;              // <dir>/blobs/<alg>/<hex>
  std::string PartialDir(std::string_view algorithm) const;  // <dir>/partial/<alg>
  std::string PartialData(const Digest& digest) const;       // .../<hex>.data
  std::string PartialRanges(const Digest& digest) const;     // .../<hex>.ranges

 private:
  std::string dir_;
};

class ContentStore {
 public:
  // Creates dir (and its subfolders) when missing and locks it. Reads no blob
  // and scans no folder. kInvalidArgument for bad options, kUnavailable when
  // another store holds the lock, kIo and friends when the OS fails.
  static Result<std::unique_ptr<ContentStore>> Open(const std::string& dir, StoreOptions opts = {});
  ~ContentStore();
  ContentStore(const ContentStore&) = delete;
  ContentStore& operator=(const ContentStore&) = delete;

  // A read-only fd of the complete, verified blob (the caller closes it).
  // Fetches what is missing first (resuming a partial blob) and returns only
  // when the whole blob is present and its sha256 matched. A complete blob of
  // another size than `size` is evicted and fetched again. Errors: the
  // fetch's own error with context ("fetch blob sha256:…: part 3 (bytes …)"),
  // kCorrupt when the bytes still mismatch after `attempts` passes, kUnsupported
  // for digests other than sha256. Callers waiting on another caller's fetch
  // of the same digest get the same error.
  Result<int> OpenVerified(const Digest& digest, uint64_t size, const FetchRange& fetch);
  // The same, fetching missing runs of parts with `stream` (one request per
  // run, resumed from the next missing part when it fails after progress).
  Result<int> OpenVerified(const Digest& digest, uint64_t size, const FetchRange& fetch,
                           const FetchStream& stream);
  // Bytes present locally: the size of a complete blob, the recorded bytes of
  // a partial one (live while it is being fetched), 0 otherwise.
  uint64_t CachedBytes(const Digest& digest);
  // True when the blob is in blobs/ (verified).
  bool IsComplete(const Digest& digest);
  // Removes the complete blob and any partial data and record. OK when there
  // was nothing; kUnavailable while the blob is being fetched. Open fds stay
  // readable (unlink semantics).
  Status Evict(const Digest& digest);
  // Called with (digest, bytes present, size) each time a part has landed
  // (bytes written, synced and recorded). Runs on a fetch worker thread with
  // no store lock held, one call at a time per blob, bytes never decreasing
  // within one pass. It may call CachedBytes/IsComplete, but must not wait
  // for OpenVerified of the same blob (that call waits for this fetch).
  void SetProgressCallback(ProgressCallback cb);

  const Layout& layout() const { return layout_; }

 private:
  struct Flight;
  struct Partial;

  ContentStore(Layout layout, StoreOptions opts, int lock_fd);

  // Opens the complete blob: the fd, -1 when there is none (or it had the
  // wrong size and was evicted), or an error.
  Result<int> OpenCompleteLocked(const Digest& digest, uint64_t size);
  Status RemoveFiles(const Digest& digest);
  // The leader's work for one flight: attempts of fill + verify, then promote.
  Status FetchAndPromote(const Digest& digest, uint64_t size, const FetchRange& fetch,
                         const FetchStream& stream, Flight& flight);
  Result<std::unique_ptr<Partial>> OpenPartial(const Digest& digest, uint64_t size, bool resume);
  Status DiscardPartial(const Digest& digest);
  // Fetches the missing parts with `parallel` workers while hashing the
  // contiguous prefix; *got is the whole-blob digest on success.
  Status FillAndHash(const Digest& digest, uint64_t size, const FetchRange& fetch,
                     const FetchStream& stream, Flight& flight, Partial& partial, Digest* got);
  Status Promote(const Digest& digest, Partial& partial);
  void ReportProgress(const Digest& digest, uint64_t size, Flight& flight);

  const Layout layout_;
  const StoreOptions opts_;
  const int lock_fd_;

  std::mutex mu_;
  std::unordered_map<Digest, std::shared_ptr<Flight>> flights_;  // GUARDED_BY(mu_)
  std::shared_ptr<const ProgressCallback> progress_;             // GUARDED_BY(mu_)
};

}  // namespace bcfs::store
