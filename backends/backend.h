// The Backend interface: where a cache's bytes live (local directory,
// registry, S3, Azure Blob, GitHub Actions cache). A backend lists refs, stats
// and reads byte ranges of blobs, and reads small documents; it knows nothing of
// FUSE, SQLite or the local content store. Implementations are
// backend_<variant>.{h,cc}.
//
// Thread-safety: every method may be called from several threads at once.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "backends/source.h"
#include "core/digest.h"
#include "core/status.h"
#include "core/time.h"
#include "formats/oci.h"

namespace bcfs::backends {

// One ref as BuildKit would import it (DESIGN.md §1.4).
struct RefEntry {
  std::string name;                // raw ref name, or "@<hex12>" when it has none
  formats::Descriptor descriptor;  // the top-level cache blob; media_type "" when unknown
  std::string raw_descriptor;      // the descriptor's JSON as the source wrote it, "" when none
  std::string error;               // why the source's entry is unreadable ("" when fine)
  TimeNs modified = 0;             // the source's write time of the entry, 0 when unknown
  // The top-level blob is not stored but synthesized from what is (s3, azblob, gha).
  bool synthesized = false;
};

// One in-progress upload under a local source's ingest/ (FORMATS.md §2.2).
struct IngestEntry {
  std::string name;    // the folder's name (the sha256 of the ingest ref)
  uint64_t bytes = 0;  // the sizes of its files added up
  TimeNs mtime = 0;    // the newest mtime of the folder and its files
};

struct BlobStat {
  uint64_t size = 0;
  TimeNs mtime = 0;  // the source's own write time, 0 when unknown
  // Identity of a local file (for the verification memo); zero elsewhere.
  uint64_t dev = 0, ino = 0;
  TimeNs ctime = 0;
  // Not stored but made from what is (gha: the manifest of an older index
  // generation, which the source lists as a blob no ref reaches).
  bool synthesized = false;
};

class Backend {
 public:
  virtual ~Backend() = default;

  // The source as a redacted source string, for messages and logs.
  virtual std::string Describe() const = 0;

  // The refs of the source, in the source's order. kNotFound when the source
  // itself is missing; kCorrupt when its ref list cannot be read.
  virtual Result<std::vector<RefEntry>> ListRefs() = 0;

  // Every top-level blob the source's ref list names, whatever tag=/digest=
  // narrowed ListRefs to: the roots of reachability for history and orphans.
  // An error when the list cannot be read completely.
  virtual Result<std::vector<Digest>> ListRoots() = 0;

  // Size and times of a blob; kNotFound when the source does not hold it.
  virtual Result<BlobStat> StatBlob(const Digest& digest) = 0;

  // StatBlob of many blobs at once: one entry per digest, nullopt where
  // StatBlob fails (ask it for the reason). Local sources stat each blob
  // relative to its folder, opened once, instead of walking the whole path.
  virtual std::vector<std::optional<BlobStat>> StatBlobs(const std::vector<Digest>& digests) {
    std::vector<std::optional<BlobStat>> out;
    out.reserve(digests.size());
    for (const Digest& d : digests) {
      auto st = StatBlob(d);
      out.push_back(st.ok() ? std::optional<BlobStat>(*st) : std::nullopt);
    }
    return out;
  }

  // Reads up to out.size() bytes at offset; returns the count, short only at
  // the end of the blob. kNotFound when absent.
  virtual Result<size_t> ReadBlob(const Digest& digest, uint64_t offset, std::span<char> out) = 0;

  // Sends `length` bytes of a blob from `offset` to `sink`, in order, each
  // once; sink returning false stops it with kIo. Backends whose Streams()
  // is true do it in one request (one ranged GET); this default reads
  // ReadBlob in 8 MiB steps. kCorrupt when the blob ends first.
  virtual Status StreamBlob(const Digest& digest, uint64_t offset, uint64_t length,
                            const std::function<bool(std::string_view)>& sink) {
    std::string buf;
    while (length > 0) {
      buf.resize(static_cast<size_t>(std::min<uint64_t>(length, 8u << 20)));
      BCFS_ASSIGN_OR_RETURN(size_t n, ReadBlob(digest, offset, std::span<char>(buf)));
      if (n == 0) {
        return CorruptError("blob " + digest.ToString() + " ended at " + std::to_string(offset) +
                            " bytes, before its descriptor's size");
      }
      if (!sink(std::string_view(buf.data(), n))) {
        return Status(Code::kIo, "the receiver stopped the transfer");
      }
      offset += n;
      length -= n;
    }
    return OkStatus();
  }
  // Whether StreamBlob is one request (worth more than parallel ranges).
  virtual bool Streams() const { return false; }

  // Reads a whole small blob and checks it against its digest. kCorrupt when it
  // is larger than max_size or its bytes do not hash to digest; kNotFound when absent.
  virtual Result<std::string> ReadDocument(const Digest& digest, uint64_t max_size) = 0;

  // Every blob the source holds, sorted. kUnsupported where the backend cannot list.
  virtual Result<std::vector<Digest>> ListBlobs() = 0;

  // The source's own write time of its ref list (local: index.json's mtime,
  // else the directory's); 0 when unknown.
  virtual TimeNs RefsModified() = 0;

  // A text that changes whenever what ReadSource (catalog/catalog.h) would
  // read from the source could differ, for reusing a catalog read before
  // (catalog/catalog_cache.h); "" when the backend cannot tell, or cannot
  // tell yet, and the source must be read again.
  virtual std::string Fingerprint() { return ""; }

  // Whether StatBlob is a local call (false: a network round trip per blob,
  // which callers avoid for every layer of every ref).
  virtual bool CheapStat() const { return true; }

  // A read-only file descriptor of a blob the source holds as a local file,
  // for serving with splice; the caller closes it. kUnsupported for remote
  // backends, kNotFound when absent.
  virtual Result<int> OpenBlobFd(const Digest& digest) {
    (void)digest;
    return UnsupportedError("this source has no local blob files");
  }

  // The write API of `buildcachefs prune` (DESIGN.md §3, gc/prune.h). Nothing
  // else writes to a source. Every method is kUnsupported where the backend
  // cannot do it.

  // Removes from the ref list every entry whose descriptor JSON (compact, key
  // order kept: RefEntry::raw_descriptor) is in `raw_descriptors`, leaving
  // every other byte as it was, and returns the top-level digests of the
  // entries that remain (what a concurrent writer may have added included).
  // Local: under an exclusive flock of index.json.lock, as BuildKit's
  // ociindex; index.json is replaced atomically (temp file + rename, owner and
  // mode kept). kUnavailable when the lock stays held by another writer.
  virtual Result<std::vector<Digest>> RemoveRefs(const std::vector<std::string>& raw_descriptors) {
    (void)raw_descriptors;
    return UnsupportedError(Describe() + ": this source's ref list cannot be edited");
  }

  // Deletes the manifest `digest` that `tag` points at (registry: DELETE
  // /v2/<name>/manifests/<digest>, which also removes every tag pointing at
  // it). kNotFound when it is already gone; kUnsupported when the registry
  // has deletion disabled (HTTP 405); kPermissionDenied when refused.
  virtual Status DeleteManifest(const std::string& tag, const Digest& digest) {
    (void)tag;
    (void)digest;
    return UnsupportedError(Describe() + ": this source cannot delete manifests");
  }

  // Deletes a blob unless the source wrote it after `not_after` (checked
  // right before deleting, so a blob an exporter rewrote meanwhile stays).
  // Returns true when deleted, false when kept as too young or already gone.
  virtual Result<bool> DeleteBlob(const Digest& digest, TimeNs not_after) {
    (void)digest;
    (void)not_after;
    return UnsupportedError(Describe() + ": this source cannot delete blobs");
  }

  // The in-progress uploads of a local source (empty when it has none).
  virtual Result<std::vector<IngestEntry>> ListIngest() { return std::vector<IngestEntry>(); }

  // Deletes one ingest/ folder unless something in it is newer than
  // `not_after`; true when deleted, false when kept or already gone.
  virtual Result<bool> DeleteIngest(const std::string& name, TimeNs not_after) {
    (void)name;
    (void)not_after;
    return UnsupportedError(Describe() + ": this source has no ingest/ folder");
  }
};

// Opens the backend a source string names. kUnsupported for types this build
// cannot read yet; kNotFound/kInvalidArgument for unusable parameters.
Result<std::unique_ptr<Backend>> OpenBackend(const SourceSpec& spec);

// type=s3 (backend_s3.cc) and type=azblob (backend_azblob.cc), FORMATS.md §5-§6.
Result<std::unique_ptr<Backend>> OpenS3Backend(const SourceSpec& spec);
Result<std::unique_ptr<Backend>> OpenAzblobBackend(const SourceSpec& spec);
// type=gha (backend_gha.cc), FORMATS.md §7.
Result<std::unique_ptr<Backend>> OpenGhaBackend(const SourceSpec& spec);

}  // namespace bcfs::backends
