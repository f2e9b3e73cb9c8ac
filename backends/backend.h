// The Backend interface: where a cache's bytes live (local directory,
// registry, S3, Azure Blob, GitHub Actions cache). A backend lists refs, stats
// and reads byte ranges of blobs, and reads small documents; it knows nothing of
// FUSE, SQLite or the local content store. Implementations are
// backend_<variant>.{h,cc}.
//
// Thread-safety: every method may be called from several threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
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
};

struct BlobStat {
  uint64_t size = 0;
  TimeNs mtime = 0;  // the source's own write time, 0 when unknown
  // Identity of a local file (for the verification memo); zero elsewhere.
  uint64_t dev = 0, ino = 0;
  TimeNs ctime = 0;
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

  // Reads up to out.size() bytes at offset; returns the count, short only at
  // the end of the blob. kNotFound when absent.
  virtual Result<size_t> ReadBlob(const Digest& digest, uint64_t offset, std::span<char> out) = 0;

  // Reads a whole small blob and checks it against its digest. kCorrupt when it
  // is larger than max_size or its bytes do not hash to digest; kNotFound when absent.
  virtual Result<std::string> ReadDocument(const Digest& digest, uint64_t max_size) = 0;

  // Every blob the source holds, sorted. kUnsupported where the backend cannot list.
  virtual Result<std::vector<Digest>> ListBlobs() = 0;

  // The source's own write time of its ref list (local: index.json's mtime,
  // else the directory's); 0 when unknown.
  virtual TimeNs RefsModified() = 0;

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
};

// Opens the backend a source string names. kUnsupported for types this build
// cannot read yet; kNotFound/kInvalidArgument for unusable parameters.
Result<std::unique_ptr<Backend>> OpenBackend(const SourceSpec& spec);

}  // namespace bcfs::backends
