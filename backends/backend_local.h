// The type=local backend: an OCI image layout written by
// `--cache-to type=local,dest=DIR` (FORMATS.md §2). Refs come from index.json
// (read under a shared flock of index.json.lock when the exporter left one, and
// read again once when it is half-written); `tag=` narrows to one ref and
// `digest=` names the top-level blob directly. Reading never writes to the
// source: files are opened read-only and nothing is created. Only the prune
// API (RemoveRefs, DeleteBlob, DeleteIngest) writes, and only when called.
//
// Thread-safety: immutable after construction; methods are thread-safe.
#pragma once

#include <memory>
#include <string>

#include "backends/backend.h"

namespace bcfs::backends {

class LocalBackend : public Backend {
 public:
  // kNotFound when dir does not exist, kInvalidArgument when it is not a directory.
  static Result<std::unique_ptr<LocalBackend>> Open(const SourceSpec& spec);

  std::string Describe() const override;
  Result<std::vector<RefEntry>> ListRefs() override;
  Result<std::vector<Digest>> ListRoots() override;
  Result<BlobStat> StatBlob(const Digest& digest) override;
  std::vector<std::optional<BlobStat>> StatBlobs(const std::vector<Digest>& digests) override;
  Result<size_t> ReadBlob(const Digest& digest, uint64_t offset, std::span<char> out) override;
  Result<std::string> ReadDocument(const Digest& digest, uint64_t max_size) override;
  Result<std::vector<Digest>> ListBlobs() override;
  TimeNs RefsModified() override;
  // Built from the source's path and options (Describe(): tag=, digest=), the
  // stat of index.json (device, inode, size, mtime and ctime in ns; "absent"
  // when missing) and of blobs/, blobs/sha256/ and blobs/sha512/ (inode, mtime,
  // ctime: a directory's times change whenever an entry is added, removed or
  // renamed in it, which is how exporters and prune change a layout).
  //
  // Limits: a blob rewritten in place under the same name changes no
  // directory, so it is not noticed until the source is read afresh (a
  // refresh, or a cold read). Its bytes are safe, every blob being checked
  // against its digest when opened, but its shown size and mtime may be stale
  // until then. And as git's "racily clean" index: a change within the same
  // timestamp tick as the last one leaves the times as they were, so while any
  // of those times is less than kRacyWindow old this returns "" (read again,
  // and keep nothing).
  std::string Fingerprint() override;
  static constexpr TimeNs kRacyWindow = 1000000000;  // 1 s: covers 1 s granular timestamps
  Result<int> OpenBlobFd(const Digest& digest) override;
  Result<std::vector<Digest>> RemoveRefs(const std::vector<std::string>& raw_descriptors) override;
  Result<bool> DeleteBlob(const Digest& digest, TimeNs not_after) override;
  Result<std::vector<IngestEntry>> ListIngest() override;
  Result<bool> DeleteIngest(const std::string& name, TimeNs not_after) override;

  std::string BlobPath(const Digest& digest) const;
  const std::string& dir() const { return dir_; }

 private:
  LocalBackend(SourceSpec spec, std::string dir) : spec_(std::move(spec)), dir_(std::move(dir)) {}
  Result<std::string> ReadIndexJson() const;
  Result<std::vector<formats::IndexEntry>> ReadIndex() const;

  SourceSpec spec_;
  std::string dir_;
};

}  // namespace bcfs::backends
