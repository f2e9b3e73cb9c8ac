#include "tree/tree.h"

#include <fcntl.h>
#include <malloc.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <list>
#include <nlohmann/json.hpp>
#include <set>
#include <shared_mutex>
#include <unordered_map>
#include <unordered_set>

#include "backends/naming.h"
#include "catalog/catalog_cache.h"
#include "core/base64.h"
#include "core/log.h"
#include "core/metrics.h"
#include "formats/compression.h"
#include "formats/estargz.h"
#include "formats/tar.h"
#include "tree/layer_table.h"

namespace bcfs::tree {
namespace {

using OJson = nlohmann::ordered_json;

constexpr std::string_view kXattrPrefix = "user.buildcachefs.";

TimeNs Now() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Where a file's bytes come from.
enum class Content { kNone, kBytes, kBlob, kStatus, kMetrics, kLazy };

// A blob of one source, shared by every node that serves it.
struct BlobRef {
  size_t source = 0;
  Digest digest;
  uint64_t size = 0;         // what st_size says (descriptor size when a ref reaches it)
  std::string static_error;  // known unreadable at build time ("" = readable so far)
};

// A file descriptor over a verified blob, for the decompressors.
class FdSource : public formats::ByteSource {
 public:
  FdSource(int fd, uint64_t size) : fd_(fd), size_(size) {}
  uint64_t size() const override { return size_; }
  Status ReadAt(uint64_t offset, std::span<char> out) override {
    size_t done = 0;
    while (done < out.size()) {
      ssize_t n =
          ::pread(fd_, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return ErrnoError(errno, "read layer blob");
      if (n == 0) return CorruptError("layer blob ends at " + std::to_string(offset + done));
      done += static_cast<size_t>(n);
    }
    return OkStatus();
  }

 private:
  int fd_;
  uint64_t size_;
};

// A blob of which only [start, start + bytes.size()) is at hand (fetched by
// range); reads outside it fail.
class WindowSource : public formats::ByteSource {
 public:
  WindowSource(uint64_t size, uint64_t start, std::string_view bytes)
      : size_(size), start_(start), bytes_(bytes) {}
  uint64_t size() const override { return size_; }
  Status ReadAt(uint64_t offset, std::span<char> out) override {
    if (offset < start_ || offset - start_ > bytes_.size() ||
        out.size() > bytes_.size() - (offset - start_)) {
      return InternalError("read [" + std::to_string(offset) + ", +" + std::to_string(out.size()) +
                           ") outside the fetched range");
    }
    std::memcpy(out.data(), bytes_.data() + (offset - start_), out.size());
    return OkStatus();
  }

 private:
  uint64_t size_, start_;
  std::string_view bytes_;
};

// Exactly out.size() bytes at offset of fd.
Status FdRead(int fd, uint64_t offset, std::span<char> out) {
  FdSource src(fd, offset + out.size());
  return src.ReadAt(offset, out);
}

// The encoding of layer rows in the index (index::LayerIndexRow::format):
// bump it when what a row means changes, and layers are indexed again.
constexpr int kLayerIndexFormat = 2;  // 2: 1 MiB derived blocks
constexpr uint64_t kDerivedBlock = kDerivedBlockSize;
// A compressed layer whose tar stream grows past this is cut there (entries
// whose data lies before the cut stay readable): the bound on the work one
// hostile blob can cause. Deflate cannot exceed ~1032x; zstd can.
uint64_t ExpansionLimit(uint64_t blob_size) { return blob_size * 1100 + (1ull << 30); }

// What the layers of a tree have cost, for status.json and the tests.
struct LayerCounters {
  std::atomic<uint64_t> passes{0};           // decompression passes that indexed a layer
  std::atomic<uint64_t> loaded{0};           // layers listed from the index without a pass
  std::atomic<uint64_t> inflated{0};         // bytes decompressed to serve reads
  std::atomic<uint64_t> derived_checked{0};  // derived bytes checked against their block digests
  std::atomic<uint64_t> toc_listed{0};       // eStargz layers listed from their TOC
  std::atomic<uint64_t> chunk_bytes{0};      // compressed bytes fetched for eStargz chunks
};

// One layer blob shown as a directory: indexed once, on first use, or listed
// from the index when an earlier mount indexed it.
struct LayerState {
  std::shared_ptr<BlobRef> blob;
  std::shared_ptr<LayerCounters> counters;
  TimeNs mtime = 0;
  std::mutex mu;  // serializes the indexing of this layer
  std::atomic<bool> expanded{false};
  // Set once under `mu` before `expanded`; read-only afterwards.
  formats::Compression compression = formats::Compression::kUncompressed;
  uint64_t uncompressed_size = 0;  // of the tar stream
  // Seek points into the compressed blob (gzip ones carry a 32 KiB window
  // each: ~85 MB for 5 GiB of tar). Set before `expanded`; dropped there when
  // a derived copy serves the reads, then loaded again (reload_seek) only if
  // that copy goes away.
  std::mutex seek_mu;
  std::shared_ptr<const formats::SeekIndex> seek;           // GUARDED_BY(seek_mu) once expanded
  std::function<Result<formats::SeekIndex>()> reload_seek;  // set when `seek` was dropped

  Result<std::shared_ptr<const formats::SeekIndex>> Seek() {
    std::lock_guard<std::mutex> lock(seek_mu);
    if (seek == nullptr) {
      if (!reload_seek)
        return InternalError("layer " + blob->digest.ToString() + ": no seek points");
      BCFS_ASSIGN_OR_RETURN(formats::SeekIndex s, reload_seek());
      seek = std::make_shared<const formats::SeekIndex>(std::move(s));
    }
    return seek;
  }
  std::string error;  // why it could not be (fully) indexed, or which entries were skipped
  // Its entries, and the slot that numbers their inodes (Impl::TableIno).
  std::shared_ptr<const LayerTable> table;
  uint32_t slot = 0;
  // Why the blob could not be had at the last try while not yet indexed (a
  // later use tries again); shown as the folder's error until then.
  std::mutex fetch_error_mu;
  std::string fetch_error;  // GUARDED_BY(fetch_error_mu)
  // The uncompressed tar stream, when there is a derived copy. Set before
  // `expanded`; closed (-1) only by Release while no file of the layer is open.
  std::atomic<int> derived_fd{-1};
  // Expected sha256 (hex) of each kDerivedBlock of a derived copy made by an
  // earlier mount; empty when this mount wrote it (nothing to check).
  std::vector<std::string> derived_blocks;
  std::unique_ptr<std::atomic<bool>[]> block_ok;  // per derived block: checked
  std::atomic<bool> derived_bad{false};           // a block mismatched: use the blob

  // eStargz layers of registry sources whose descriptor pins the TOC digest:
  // listed from the TOC and read chunk by chunk, each chunk checked against
  // its chunkDigest, while the blob is not in the store. Set under `mu`
  // before `expanded`.
  Digest toc_digest;
  std::function<Result<std::string>(uint64_t, uint64_t)> fetch_range;  // raw blob bytes
  std::shared_ptr<const formats::estargz::Toc> toc;  // set when listed from the TOC
  std::mutex chunk_mu;
  // Recently read verified chunks by blob offset of their member and inner offset.
  std::list<std::pair<std::pair<uint64_t, uint64_t>, std::shared_ptr<const std::string>>>
      chunks;  // GUARDED_BY(chunk_mu)
  static constexpr size_t kCachedChunks = 16;

  // The verified blob, opened on first need: a layer listed from the index
  // needs none until a file is read without a derived copy.
  std::function<Result<int>()> open_blob;
  std::mutex fd_mu;
  int fd = -1;  // GUARDED_BY(fd_mu)

  Result<int> BlobFd() {
    std::lock_guard<std::mutex> lock(fd_mu);
    if (fd < 0) {
      BCFS_ASSIGN_OR_RETURN(int f, open_blob());
      fd = f;
    }
    return fd;
  }

  // True when [pos, pos + len) of the tar stream can be served from the
  // derived copy: it exists, covers the range and every block of it matched
  // its digest (checked here once per block and mount).
  bool DerivedReady(uint64_t pos, uint64_t len) {
    const int dfd = derived_fd.load(std::memory_order_acquire);
    if (dfd < 0 || derived_bad.load(std::memory_order_acquire)) return false;
    if (pos > uncompressed_size || len > uncompressed_size - pos) return false;
    if (derived_blocks.empty() || len == 0) return true;
    for (uint64_t b = pos / kDerivedBlock; b <= (pos + len - 1) / kDerivedBlock; ++b) {
      if (block_ok[b].load(std::memory_order_acquire)) continue;
      const uint64_t start = b * kDerivedBlock;
      const uint64_t n = std::min(kDerivedBlock, uncompressed_size - start);
      std::string bytes(static_cast<size_t>(n), '\0');
      Status st = FdRead(dfd, start, std::span<char>(bytes));
      if (st.ok() && Digest::Sha256Of(bytes).hex() != derived_blocks[b]) {
        st = CorruptError("block " + std::to_string(b) + " does not match its digest");
      }
      if (!st.ok()) {
        LOG_WARNING("layer " << blob->digest.ToString() << ": derived copy unusable ("
                             << st.message() << "); reading the blob instead");
        derived_bad.store(true, std::memory_order_release);
        return false;
      }
      counters->derived_checked += n;
      block_ok[b].store(true, std::memory_order_release);
    }
    return true;
  }

  // Recently decompressed spans (between two seek points), most recent first:
  // reading many small files in tar order would otherwise inflate the same
  // span once per file.
  static constexpr size_t kCachedSpans = 8;
  static constexpr uint64_t kMaxCachedSpan = 16u << 20;
  std::mutex cache_mu;
  std::list<std::pair<size_t, std::shared_ptr<const std::string>>> spans;  // GUARDED_BY(cache_mu)

  // Closes what the GC evicted (the blob's fd, the derived copy's fd) so its
  // space is freed now; the caller has checked that no file of the layer is
  // open. Skipped while the layer is being indexed. Later reads reopen the
  // blob (fetching it again) and fall back to seek points without the copy.
  void Release(bool blob, bool derived) {
    std::unique_lock<std::mutex> indexing(mu, std::try_to_lock);
    if (!indexing.owns_lock()) return;
    if (blob) {
      // try_lock: BlobFd holds fd_mu while a fetch takes the hooks lock that
      // the caller of Release holds.
      std::unique_lock<std::mutex> lock(fd_mu, std::try_to_lock);
      if (lock.owns_lock() && fd >= 0) {
        ::close(fd);
        fd = -1;
      }
    }
    if (derived) {
      const int dfd = derived_fd.exchange(-1, std::memory_order_acq_rel);
      if (dfd >= 0) ::close(dfd);
    }
  }

  ~LayerState() {
    if (fd >= 0) ::close(fd);
    if (const int dfd = derived_fd.load(); dfd >= 0) ::close(dfd);
  }
};

// Rarer entry facts (sparse maps, xattrs) as one JSON value in the index;
// "" when the entry has none.
std::string EncodeExtra(const formats::TarEntry& e) {
  if (e.sparse.empty() && e.xattrs.empty()) return "";
  OJson j = OJson::object();
  if (!e.sparse.empty()) {
    OJson sp = OJson::array();
    for (const auto& c : e.sparse) sp.push_back({c.logical_offset, c.length, c.stream_offset});
    j["sparse"] = sp;
  }
  if (!e.xattrs.empty()) {
    OJson xs = OJson::array();
    for (const auto& [k, v] : e.xattrs) xs.push_back({Base64Encode(k), Base64Encode(v)});
    j["xattrs"] = xs;
  }
  return j.dump();
}

Status DecodeExtra(std::string_view text, formats::TarEntry* e) {
  if (text.empty()) return OkStatus();
  try {
    OJson j = OJson::parse(text);
    if (j.contains("sparse")) {
      for (const auto& c : j.at("sparse")) {
        e->sparse.push_back(formats::TarSparseChunk{
            c.at(0).get<uint64_t>(), c.at(1).get<uint64_t>(), c.at(2).get<uint64_t>()});
      }
    }
    if (j.contains("xattrs")) {
      for (const auto& x : j.at("xattrs")) {
        BCFS_ASSIGN_OR_RETURN(std::string k, Base64Decode(x.at(0).get<std::string>()));
        BCFS_ASSIGN_OR_RETURN(std::string v, Base64Decode(x.at(1).get<std::string>()));
        e->xattrs.emplace_back(std::move(k), std::move(v));
      }
    }
  } catch (const std::exception& ex) {
    return CorruptError(std::string("entry extras: ") + ex.what());
  }
  return OkStatus();
}

index::LayerEntryRow ToRow(const formats::TarEntry& e) {
  index::LayerEntryRow r;
  r.path = e.path;
  r.type = std::string(formats::TarTypeName(e.type));
  r.mode = e.mode;
  r.uid = e.uid;
  r.gid = e.gid;
  r.size = e.size;
  r.mtime_sec = e.mtime_sec;
  r.mtime_nsec = e.mtime_nsec;
  r.link_target = e.link_target;
  r.dev_major = e.dev_major;
  r.dev_minor = e.dev_minor;
  r.data_offset = e.data_offset;
  r.extra = EncodeExtra(e);
  return r;
}

// The index rows of a layer being indexed, packed (~64 bytes plus the
// strings a row, in 4 MiB chunks: ~110 MB for a million entries, not ~250 MB
// as LayerEntryRow objects) until the pass ends and the index takes them one
// at a time.
class PackedRows {
 public:
  void Add(const index::LayerEntryRow& r) {
    const Head h{r.size,
                 r.data_offset,
                 r.mtime_sec,
                 r.mode,
                 r.uid,
                 r.gid,
                 r.mtime_nsec,
                 r.dev_major,
                 r.dev_minor,
                 static_cast<uint32_t>(r.path.size()),
                 static_cast<uint32_t>(r.type.size()),
                 static_cast<uint32_t>(r.link_target.size()),
                 static_cast<uint32_t>(r.extra.size())};
    const size_t need =
        sizeof h + r.path.size() + r.type.size() + r.link_target.size() + r.extra.size();
    if (chunks_.empty() || chunks_.back().size() + need > chunks_.back().capacity()) {
      chunks_.emplace_back().reserve(std::max(kChunk, need));
    }
    std::string& c = chunks_.back();
    c.append(reinterpret_cast<const char*>(&h), sizeof h);
    c.append(r.path).append(r.type).append(r.link_target).append(r.extra);
  }

  // The rows in the order they were added, for Index::SaveLayerIndex.
  index::Index::LayerEntrySource Reader() const {
    return [this, chunk = size_t{0}, off = size_t{0},
            row = index::LayerEntryRow()]() mutable -> const index::LayerEntryRow* {
      while (chunk < chunks_.size() && off >= chunks_[chunk].size()) {
        ++chunk;
        off = 0;
      }
      if (chunk == chunks_.size()) return nullptr;
      const std::string& c = chunks_[chunk];
      Head h;
      std::memcpy(&h, c.data() + off, sizeof h);
      off += sizeof h;
      auto take = [&](std::string* s, uint32_t n) {
        s->assign(c, off, n);
        off += n;
      };
      take(&row.path, h.path_len);
      take(&row.type, h.type_len);
      take(&row.link_target, h.link_len);
      take(&row.extra, h.extra_len);
      row.size = h.size;
      row.data_offset = h.data_offset;
      row.mtime_sec = h.mtime_sec;
      row.mode = h.mode;
      row.uid = h.uid;
      row.gid = h.gid;
      row.mtime_nsec = h.mtime_nsec;
      row.dev_major = h.dev_major;
      row.dev_minor = h.dev_minor;
      return &row;
    };
  }

 private:
  struct Head {
    uint64_t size, data_offset;
    int64_t mtime_sec;
    uint32_t mode, uid, gid, mtime_nsec, dev_major, dev_minor;
    uint32_t path_len, type_len, link_len, extra_len;
  };
  static constexpr size_t kChunk = 4u << 20;
  std::vector<std::string> chunks_;
};

Result<formats::TarEntry> FromRow(const index::LayerEntryRow& r) {
  formats::TarEntry e;
  bool known = false;
  for (formats::TarType t :
       {formats::TarType::kFile, formats::TarType::kDir, formats::TarType::kSymlink,
        formats::TarType::kHardlink, formats::TarType::kChar, formats::TarType::kBlock,
        formats::TarType::kFifo}) {
    if (formats::TarTypeName(t) == r.type) {
      e.type = t;
      known = true;
    }
  }
  if (!known) return CorruptError("entry \"" + r.path + "\": unknown type \"" + r.type + "\"");
  e.path = r.path;
  e.mode = r.mode;
  e.uid = r.uid;
  e.gid = r.gid;
  e.size = r.size;
  e.mtime_sec = r.mtime_sec;
  e.mtime_nsec = r.mtime_nsec;
  e.link_target = r.link_target;
  e.dev_major = r.dev_major;
  e.dev_minor = r.dev_minor;
  e.data_offset = r.data_offset;
  BCFS_RETURN_IF_ERROR(DecodeExtra(r.extra, &e).WithContext("entry \"" + r.path + "\""));
  return e;
}

// Writes a layer's uncompressed tar stream to an unnamed file while it is
// indexed, with a sha256 per kDerivedBlock, and names it once complete.
class DerivedWriter {
 public:
  DerivedWriter(int fd, uint64_t cap, std::string doc) : fd_(fd), cap_(cap), doc_(std::move(doc)) {}
  ~DerivedWriter() { Drop(); }

  bool active() const { return fd_ >= 0; }

  void Write(std::string_view chunk) {
    if (fd_ < 0) return;
    if (written_ + chunk.size() > cap_) {
      LOG_WARNING(doc_ << ": no derived copy: it would exceed " << cap_ << " bytes");
      Drop();
      return;
    }
    size_t off = 0;
    while (off < chunk.size()) {
      ssize_t n =
          ::pwrite(fd_, chunk.data() + off, chunk.size() - off, static_cast<off_t>(written_ + off));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        LOG_WARNING(doc_ << ": no derived copy (" << std::strerror(errno) << ")");
        Drop();
        return;
      }
      off += static_cast<size_t>(n);
    }
    written_ += chunk.size();
    while (!chunk.empty()) {
      const size_t n =
          static_cast<size_t>(std::min<uint64_t>(chunk.size(), kDerivedBlock - in_block_));
      if (!hash_) hash_ = std::make_unique<Sha256>();
      hash_->Update(chunk.data(), n);
      in_block_ += n;
      chunk.remove_prefix(n);
      if (in_block_ == kDerivedBlock) EndBlock();
    }
  }

  // The block digests of what was written (hex, concatenated); ends the last block.
  std::string Finish() {
    if (in_block_ > 0) EndBlock();
    return digests_;
  }

  // Gives `path` to the written file (kept unnamed when that fails: another
  // mount may have named its own copy first) and hands the fd over.
  int Release(const std::string& path) {
    if (fd_ < 0) return -1;
    const std::string proc = "/proc/self/fd/" + std::to_string(fd_);
    if (::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, path.c_str(), AT_SYMLINK_FOLLOW) != 0 &&
        errno != EEXIST) {
      LOG_WARNING(doc_ << ": derived copy not kept as " << path << ": " << std::strerror(errno));
    }
    return std::exchange(fd_, -1);
  }

 private:
  void EndBlock() {
    digests_ += hash_->Finish().hex();
    hash_.reset();
    in_block_ = 0;
  }
  void Drop() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  int fd_;
  uint64_t cap_;
  std::string doc_;
  uint64_t written_ = 0;
  std::unique_ptr<Sha256> hash_;
  uint64_t in_block_ = 0;
  std::string digests_;
};

// blobs/<alg>/ and layers/<alg>/ of a source: what they hold, made into
// nodes on the first lookup of a name, or all on the first listing (a mount
// of a cache with 100,000 blobs builds none of them up front).
struct BlobSpec {
  std::shared_ptr<BlobRef> blob;
  TimeNs mtime = 0;
  std::string media;                       // "" when unknown
  std::shared_ptr<const std::string> doc;  // a manifest or config served from memory
  bool synthesized = false;
};
struct LayerSpec {
  std::shared_ptr<BlobRef> blob;
  TimeNs mtime = 0;
  std::string media;
  Digest toc_digest;  // set only where eStargz chunk reads apply
};
struct LazyTable {
  std::map<std::string, std::string> source_x;        // the source's xattrs
  std::unordered_map<std::string, BlobSpec> blobs;    // blobs/<alg>/, by hex
  std::unordered_map<std::string, LayerSpec> layers;  // layers/<alg>/, by hex
  bool Has(const std::string& name) const { return blobs.count(name) || layers.count(name); }
};

}  // namespace

class Node {
 public:
  uint64_t ino = 0;
  uint64_t parent = 0;
  std::string name;
  Kind kind = Kind::kFile;
  uint32_t mode = 0444;
  TimeNs mtime = 0;
  CachePolicy cache = CachePolicy::kShort;
  // Directories, by name. Read and changed only under Impl::nodes_mu: a
  // refresh (and the indexing of a layer) changes what a folder holds.
  std::map<std::string, uint64_t> children;
  std::atomic<uint64_t> subdirs{0};
  int source = -1;     // a source folder: its index in Impl::sources
  std::string target;  // symlinks
  Content content = Content::kNone;
  std::shared_ptr<const std::string> bytes;   // kBytes
  std::shared_ptr<BlobRef> blob;              // kBlob
  std::map<std::string, std::string> xattrs;  // without the user.buildcachefs. prefix
  // Merged directories of snapshots: the tar's own metadata. (The entries
  // of layers are no nodes: see tree/layer_table.h.)
  uint32_t uid = 0, gid = 0;
  std::vector<std::pair<std::string, std::string>> raw_xattrs;  // full names, from the tar
  std::shared_ptr<LayerState> layer;                            // layer folders
  // Snapshot folders: the layer folders of the chain, bottom first; merged on first use.
  std::vector<Node*> chain;
  // refs/<ref>/ and history/<hex>/: what the catalog read (kept alive with
  // the SourceInfo it lives in, for records.json and refresh comparisons).
  std::shared_ptr<const catalog::RefInfo> ref;
  // refs/<ref>/ and history/<hex>/ are filled on first use (a mount with
  // thousands of refs should not build hundreds of thousands of nodes up
  // front): `fill` adds the children, once, under fill_mu and the exclusive
  // nodes lock, then is cleared. Read and written only under one of those
  // locks, cleared under both.
  std::function<void(Node*)> fill;
  std::mutex fill_mu;
  std::atomic<bool> filled{true};
  // blobs/<alg>/ and layers/<alg>/: what the folder holds (its `fill` makes
  // every node; a lookup makes one). Replaced by a refresh, under the
  // exclusive nodes lock; read under it (shared or exclusive).
  std::shared_ptr<const LazyTable> lazy;
  // Inline refs: the synthesized cache config, also listed under blobs/.
  std::shared_ptr<const std::string> synthesized_config;
  Digest synthesized_digest;
  TimeNs synthesized_mtime = 0;
  std::mutex merge_mu;
  std::atomic<bool> merged_done{false};
  // kLazy: rendered on first use (records.json of a ref with long chains can
  // be large; a mount should not pay for it up front), then kept.
  std::function<std::string()> render;
  std::once_flag rendered;
  std::shared_ptr<const std::string> lazy_bytes;  // set once, under `rendered`

  const std::shared_ptr<const std::string>& Rendered() {
    std::call_once(rendered,
                   [this] { lazy_bytes = std::make_shared<const std::string>(render()); });
    return lazy_bytes;
  }
};

namespace {

// A file served from memory.
class BytesFile : public OpenFile {
 public:
  explicit BytesFile(std::shared_ptr<const std::string> bytes) : bytes_(std::move(bytes)) {}
  Result<ReadSpan> Read(uint64_t offset, size_t size) override {
    ReadSpan span;
    if (offset < bytes_->size()) span.bytes = bytes_->substr(offset, size);
    span.length = span.bytes.size();
    return span;
  }

 private:
  std::shared_ptr<const std::string> bytes_;
};

// A verified blob served from its file descriptor.
class FdFile : public OpenFile {
 public:
  FdFile(int fd, uint64_t size) : fd_(fd), size_(size) {}
  ~FdFile() override { ::close(fd_); }
  Result<ReadSpan> Read(uint64_t offset, size_t size) override {
    ReadSpan span;
    span.fd = fd_;
    span.fd_offset = offset;
    span.length =
        offset >= size_ ? 0 : static_cast<size_t>(std::min<uint64_t>(size, size_ - offset));
    return span;
  }

 private:
  int fd_;
  uint64_t size_;
};

// An open file that keeps its blob pinned against GC until it is closed.
class PinnedFile : public OpenFile {
 public:
  PinnedFile(std::unique_ptr<OpenFile> inner, std::function<void()> release)
      : inner_(std::move(inner)), release_(std::move(release)) {}
  ~PinnedFile() override { release_(); }
  Result<ReadSpan> Read(uint64_t offset, size_t size) override {
    return inner_->Read(offset, size);
  }

 private:
  std::unique_ptr<OpenFile> inner_;
  std::function<void()> release_;
};

// A file inside a layer: bytes at an offset of the (uncompressed) tar stream
// of a verified blob; spliced from the blob when the layer is uncompressed.
class LayerFile : public OpenFile {
 public:
  LayerFile(std::shared_ptr<LayerState> layer, uint64_t offset, uint64_t size,
            std::vector<formats::TarSparseChunk> sparse)
      : layer_(std::move(layer)), offset_(offset), size_(size), sparse_(std::move(sparse)) {}

  Result<ReadSpan> Read(uint64_t offset, size_t size) override {
    ReadSpan span;
    if (offset >= size_) return span;
    const size_t len = static_cast<size_t>(std::min<uint64_t>(size, size_ - offset));
    if (layer_->toc) {
      span.bytes.assign(len, '\0');
      BCFS_RETURN_IF_ERROR(TocRead(offset, std::span<char>(span.bytes)));
      span.length = len;
      return span;
    }
    if (sparse_.empty() && layer_->DerivedReady(offset_ + offset, len)) {
      span.fd = layer_->derived_fd.load(std::memory_order_acquire);
      span.fd_offset = offset_ + offset;
      span.length = len;
      return span;
    }
    if (sparse_.empty() && layer_->compression == formats::Compression::kUncompressed) {
      BCFS_ASSIGN_OR_RETURN(span.fd, layer_->BlobFd());
      span.fd_offset = offset_ + offset;
      span.length = len;
      return span;
    }
    span.bytes.assign(len, '\0');
    if (sparse_.empty()) {
      BCFS_RETURN_IF_ERROR(StreamRead(offset_ + offset, std::span<char>(span.bytes)));
    } else {
      // Sparse: data regions from the stream, holes stay zero.
      for (const auto& c : sparse_) {
        uint64_t lo = std::max(offset, c.logical_offset);
        uint64_t hi = std::min<uint64_t>(offset + len, c.logical_offset + c.length);
        if (lo >= hi) continue;
        BCFS_RETURN_IF_ERROR(StreamRead(c.stream_offset + (lo - c.logical_offset),
                                        std::span<char>(span.bytes).subspan(lo - offset, hi - lo)));
      }
    }
    span.length = len;
    return span;
  }

 private:
  // A file of a layer listed from its eStargz TOC: offset_ is its entry's
  // index in the TOC. Each chunk is fetched alone (one ranged request for its
  // gzip member), inflated and checked against its chunkDigest.
  Status TocRead(uint64_t at, std::span<char> out) {
    const formats::estargz::Toc& toc = *layer_->toc;
    const formats::estargz::Entry& e = toc.entries[offset_];
    const uint64_t end = at + out.size();
    for (const formats::estargz::Chunk& c : e.chunks) {
      if (c.chunk_offset + c.chunk_size <= at || c.chunk_offset >= end) continue;
      BCFS_ASSIGN_OR_RETURN(std::shared_ptr<const std::string> bytes, TocChunk(e, c));
      const uint64_t lo = std::max(at, c.chunk_offset),
                     hi = std::min(end, c.chunk_offset + c.chunk_size);
      std::memcpy(out.data() + (lo - at), bytes->data() + (lo - c.chunk_offset), hi - lo);
    }
    return OkStatus();
  }

  Result<std::shared_ptr<const std::string>> TocChunk(const formats::estargz::Entry& e,
                                                      const formats::estargz::Chunk& c) {
    const auto key = std::make_pair(c.offset, c.inner_offset);
    {
      std::lock_guard<std::mutex> lock(layer_->chunk_mu);
      for (auto it = layer_->chunks.begin(); it != layer_->chunks.end(); ++it) {
        if (it->first == key) {
          layer_->chunks.splice(layer_->chunks.begin(), layer_->chunks, it);
          return layer_->chunks.front().second;
        }
      }
    }
    if (c.next_offset <= c.offset) {
      return CorruptError("layer " + layer_->blob->digest.ToString() + ": eStargz chunk of \"" +
                          e.name + "\" has no extent");
    }
    // A chunk that does not match its digest is fetched once more, then EIO.
    std::string bytes(static_cast<size_t>(c.chunk_size), '\0');
    Status st;
    for (int attempt = 0; attempt < 2; ++attempt) {
      BCFS_ASSIGN_OR_RETURN(std::string member,
                            layer_->fetch_range(c.offset, c.next_offset - c.offset));
      layer_->counters->chunk_bytes += member.size();
      WindowSource window(layer_->blob->size, c.offset, member);
      st = formats::estargz::ReadFileRange(window, *layer_->toc, e.name, c.chunk_offset,
                                           std::span<char>(bytes), /*verify_chunks=*/true);
      if (st.ok()) break;
      st = st.WithContext("layer " + layer_->blob->digest.ToString());
      LOG_WARNING(st.message() << (attempt == 0 ? "; fetching it once more" : ""));
    }
    if (!st.ok()) return st;
    auto chunk = std::make_shared<const std::string>(std::move(bytes));
    std::lock_guard<std::mutex> lock(layer_->chunk_mu);
    layer_->chunks.emplace_front(key, chunk);
    if (layer_->chunks.size() > LayerState::kCachedChunks) layer_->chunks.pop_back();
    return chunk;
  }

  Status StreamRead(uint64_t at, std::span<char> out) {
    if (layer_->DerivedReady(at, out.size())) {
      return FdRead(layer_->derived_fd.load(std::memory_order_acquire), at, out);
    }
    BCFS_ASSIGN_OR_RETURN(int fd, layer_->BlobFd());
    FdSource src(fd, layer_->blob->size);
    if (layer_->compression == formats::Compression::kUncompressed) return src.ReadAt(at, out);
    BCFS_ASSIGN_OR_RETURN(std::shared_ptr<const formats::SeekIndex> seek, layer_->Seek());
    const auto& points = seek->points;
    size_t done = 0;
    while (done < out.size()) {
      const uint64_t pos = at + done;
      // The span holding pos: from the last seek point at or before it to the next.
      auto it = std::upper_bound(
          points.begin(), points.end(), pos,
          [](uint64_t v, const formats::SeekPoint& p) { return v < p.out_offset; });
      const uint64_t start = it == points.begin() ? 0 : std::prev(it)->out_offset;
      const uint64_t end = it == points.end() ? seek->uncompressed_size : it->out_offset;
      if (it == points.begin() || end <= pos || end - start > LayerState::kMaxCachedSpan) {
        layer_->counters->inflated += pos - start + (out.size() - done);
        return formats::ReadUncompressed(src, *seek, pos, out.subspan(done));
      }
      const size_t idx = static_cast<size_t>(it - points.begin()) - 1;
      BCFS_ASSIGN_OR_RETURN(std::shared_ptr<const std::string> span,
                            Span(src, *seek, idx, start, end));
      const size_t n = static_cast<size_t>(std::min<uint64_t>(out.size() - done, end - pos));
      std::memcpy(out.data() + done, span->data() + (pos - start), n);
      done += n;
    }
    return OkStatus();
  }

  Result<std::shared_ptr<const std::string>> Span(FdSource& src, const formats::SeekIndex& seek,
                                                  size_t idx, uint64_t start, uint64_t end) {
    {
      std::lock_guard<std::mutex> lock(layer_->cache_mu);
      for (auto it = layer_->spans.begin(); it != layer_->spans.end(); ++it) {
        if (it->first == idx) {
          layer_->spans.splice(layer_->spans.begin(), layer_->spans, it);
          return layer_->spans.front().second;
        }
      }
    }
    std::string bytes(static_cast<size_t>(end - start), '\0');
    layer_->counters->inflated += bytes.size();
    BCFS_RETURN_IF_ERROR(formats::ReadUncompressed(src, seek, start, std::span<char>(bytes)));
    auto span = std::make_shared<const std::string>(std::move(bytes));
    std::lock_guard<std::mutex> lock(layer_->cache_mu);
    layer_->spans.emplace_front(idx, span);
    if (layer_->spans.size() > LayerState::kCachedSpans) layer_->spans.pop_back();
    return span;
  }

  std::shared_ptr<LayerState> layer_;
  uint64_t offset_, size_;
  std::vector<formats::TarSparseChunk> sparse_;
};

// Closes an fd unless released.
class FdGuard {
 public:
  explicit FdGuard(int fd) : fd_(fd) {}
  ~FdGuard() {
    if (fd_ >= 0) ::close(fd_);
  }
  int release() { return std::exchange(fd_, -1); }
  int get() const { return fd_; }

 private:
  int fd_;
};

std::string Position(int64_t pos) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%03lld", static_cast<long long>(pos));
  return buf;
}

std::string GoTime(TimeNs t) { return t == 0 ? "0001-01-01T00:00:00Z" : FormatRfc3339(t); }

std::string RecordsJson(const catalog::RefInfo& ref) {
  std::vector<int64_t> parents;
  for (const auto& l : ref.layers) parents.push_back(l.parent);
  OJson out = OJson::array();
  for (size_t i = 0; i < ref.records.size(); ++i) {
    const auto& r = ref.records[i];
    OJson inputs = OJson::array();
    for (const auto& slot : r.inputs) {
      OJson alts = OJson::array();
      for (const auto& in : slot) {
        OJson a;
        if (!in.selector.empty()) a["selector"] = in.selector;
        a["link"] = in.link;
        alts.push_back(a);
      }
      inputs.push_back(alts);
    }
    OJson results = OJson::array();
    for (const auto& res : r.results) {
      const std::vector<int64_t> layers = res.Layers(parents);
      OJson blobs = OJson::array();
      for (int64_t pos : layers) blobs.push_back(ref.layers[pos].blob.ToString());
      results.push_back({{"layers", layers},
                         {"blobs", blobs},
                         {"createdAt", GoTime(res.created_at)},
                         {"chain", res.explicit_chain}});
    }
    out.push_back({{"index", i}, {"digest", r.digest}, {"inputs", inputs}, {"results", results}});
  }
  return out.dump(2, ' ', false, OJson::error_handler_t::replace) + "\n";
}

// The full cache config of an inline cache: layers from the image manifest,
// records as stored in the image config. Compact, fixed key order (stable digest).
std::string SynthesizeInlineConfig(const catalog::RefInfo& ref) {
  OJson layers = OJson::array();
  for (const auto& l : ref.layers) {
    OJson layer;
    layer["blob"] = l.blob.ToString();
    if (l.parent != 0) layer["parent"] = l.parent;  // Go omitempty, as BuildKit writes
    OJson ann;
    ann["mediaType"] = l.media_type;
    ann["diffID"] = l.diff_id.ToString();
    ann["size"] = l.size;
    ann["createdAt"] = GoTime(l.created);
    layer["annotations"] = ann;
    layers.push_back(layer);
  }
  OJson records = OJson::array();
  try {
    records = OJson::parse(ref.inline_records_json);
  } catch (const OJson::exception&) {
    // The catalog parsed it already; an empty list is the only safe fallback.
  }
  OJson out;
  out["layers"] = layers;
  out["records"] = records;
  return out.dump(-1, ' ', false, OJson::error_handler_t::replace);
}

}  // namespace

struct Tree::Impl {
  // The sources' names and backends (fixed for the tree's life; their `info`
  // is moved into `infos` by Build).
  std::vector<SourceInput> sources;
  std::vector<Node*> source_dirs;  // the folder of each source; set by Build
  // Nodes are created by Build and, later, when a layer is indexed; readers
  // take nodes_mu shared, indexing takes it exclusive to insert.
  std::shared_mutex nodes_mu;
  std::unordered_map<uint64_t, std::unique_ptr<Node>> nodes;  // GUARDED_BY(nodes_mu)
  index::Index* index = nullptr;
  store::ContentStore* store = nullptr;
  std::string derived_dir;
  std::string catalog_cache;
  TimeNs mount_time = 0;
  std::shared_ptr<LayerCounters> layer_counters = std::make_shared<LayerCounters>();
  // The layer counters in .buildcachefs/metrics (summed over the trees alive).
  metrics::ScopedCollector layer_metrics{[lc = layer_counters](metrics::Sink& s) {
    s.Counter("buildcachefs_layer_indexing_passes_total",
              "Decompression passes that indexed a layer.", {}, lc->passes.load());
    s.Counter("buildcachefs_layer_index_loads_total",
              "Layers listed from the index without a decompression pass.", {}, lc->loaded.load());
    s.Counter("buildcachefs_layer_inflated_bytes_total", "Bytes decompressed to serve reads.", {},
              lc->inflated.load());
    s.Counter("buildcachefs_layer_estargz_toc_listings_total",
              "eStargz layers listed from their table of contents.", {}, lc->toc_listed.load());
    s.Counter("buildcachefs_layer_estargz_chunk_bytes_total",
              "Compressed bytes fetched for eStargz chunks.", {}, lc->chunk_bytes.load());
  }};

  // GC service hooks and state.
  index::AccessBatcher accesses;
  std::atomic<bool> track_accesses{true};
  std::mutex hooks_mu;
  std::function<void()> after_fetch;          // GUARDED_BY(hooks_mu)
  std::string fetch_block;                    // GUARDED_BY(hooks_mu)
  std::function<void(uint64_t)> invalidator;  // GUARDED_BY(hooks_mu)
  std::function<std::string()> status_extra;  // GUARDED_BY(hooks_mu)
  std::unordered_map<Digest, int> pins;       // GUARDED_BY(hooks_mu): open files, fetches
  // Remote blob nodes and layer states, added to by Build and by refreshes.
  std::vector<std::shared_ptr<LayerState>> layer_states;                // GUARDED_BY(hooks_mu)
  std::function<void(uint64_t, const std::string&)> entry_invalidator;  // GUARDED_BY(hooks_mu)

  void Pin(const Digest& d) {
    std::lock_guard<std::mutex> lock(hooks_mu);
    ++pins[d];
  }
  // closed: an open file's pin. When its digest is no longer pinned at all
  // and the GC refused new fetches because pinned content alone exceeded a
  // ceiling, less is pinned now: the next fetch may go ahead (the GC run
  // after it decides again).
  void Unpin(const Digest& d, bool closed = false) {
    std::lock_guard<std::mutex> lock(hooks_mu);
    if (auto it = pins.find(d); it != pins.end() && --it->second <= 0) {
      pins.erase(it);
      if (closed) fetch_block.clear();
    }
  }

  // The GC evicted these blobs (blob) or derived copies (!blob): the layers
  // they back close their descriptors unless a file of theirs is open (pinned;
  // checked under the lock that Open's Pin takes, so no read can start on a
  // descriptor being closed).
  void ReleaseLayers(const std::vector<Digest>& digests, bool blob) {
    if (digests.empty()) return;
    const std::set<Digest> gone(digests.begin(), digests.end());
    std::lock_guard<std::mutex> lock(hooks_mu);
    for (const auto& l : layer_states) {
      if (!gone.contains(l->blob->digest) || pins.contains(l->blob->digest)) continue;
      l->Release(blob, !blob);
    }
  }

  std::mutex index_mu;  // guards *index (one thread at a time)

  // Runtime state of blobs: errors found at open time, verified identities and
  // in-flight verifications (single flight: concurrent opens hash once).
  std::mutex mu;
  std::condition_variable cv;
  std::map<std::pair<size_t, Digest>, std::string> errors;            // GUARDED_BY(mu)
  std::map<std::pair<size_t, Digest>, index::FileIdentity> verified;  // GUARDED_BY(mu)
  std::set<std::pair<size_t, Digest>> verifying;                      // GUARDED_BY(mu)
  // What each source's catalog said at the last read that worked (old ones
  // live on in the nodes built from them), why the last refresh of it
  // failed ("" = it worked) and when it last worked.
  std::vector<std::shared_ptr<const catalog::SourceInfo>> infos;  // GUARDED_BY(mu)
  std::vector<std::string> refresh_errors;                        // GUARDED_BY(mu)
  std::vector<TimeNs> refreshed_at;                               // GUARDED_BY(mu)
  uint64_t refresh_generation = 0;                                // GUARDED_BY(mu)
  TimeNs last_refresh = 0;                                        // GUARDED_BY(mu)
  std::mutex refresh_mu;                                          // one refresh at a time

  // ---- building ----
  uint64_t InoFor(const std::string& path) {
    std::string key = path;
    for (int salt = 0;; ++salt) {
      Digest d = Digest::Sha256Of(key);
      // Below 2^62: never a layer entry's (kTableInoBit), and below 2^63 for
      // tools that read inode numbers as signed.
      uint64_t ino = std::stoull(d.hex().substr(0, 16), nullptr, 16) & (kTableInoBit - 1);
      if (ino > kRootIno && !nodes.count(ino)) return ino;
      key = path + "#" + std::to_string(salt);
    }
  }

  // With nodes_mu held (or while building, before any reader exists).
  Node* GetLocked(uint64_t ino) {
    auto it = nodes.find(ino);
    return it == nodes.end() ? nullptr : it->second.get();
  }
  // For readers. Nodes are never removed, so the pointer stays valid after
  // the lock is released; their fields do not change once a reader can reach them.
  Node* Get(uint64_t ino) {
    std::shared_lock<std::shared_mutex> lock(nodes_mu);
    return GetLocked(ino);
  }

  // ---- layer entries (tree/layer_table.h) ----

  // Their inodes are computed, not stored: kTableInoBit | slot << 32 |
  // record, the slot given to the layer when its table was registered.
  // InoFor never sets kTableInoBit; no inode reaches 2^63.
  static constexpr uint64_t kTableInoBit = 1ull << 62;
  static constexpr uint32_t kSlotMask = 0x3fffffff;
  static uint64_t TableIno(uint32_t slot, uint32_t record) {
    return kTableInoBit | static_cast<uint64_t>(slot) << 32 | record;
  }
  // Indexed layers by slot.
  std::unordered_map<uint32_t, std::shared_ptr<LayerState>> tables;  // GUARDED_BY(nodes_mu)

  // What an inode names: a node, or a record of a layer's table.
  struct Target {
    Node* node = nullptr;
    std::shared_ptr<LayerState> layer;  // a layer entry: record `record` of layer->table
    uint32_t record = 0;
    uint64_t ino = 0;
    bool found() const { return node != nullptr || layer != nullptr; }
  };
  // With nodes_mu held.
  Target FindLocked(uint64_t ino) {
    Target t;
    t.ino = ino;
    if ((ino & kTableInoBit) == 0) {
      t.node = GetLocked(ino);
      return t;
    }
    auto it = tables.find(static_cast<uint32_t>(ino >> 32) & kSlotMask);
    const uint32_t record = static_cast<uint32_t>(ino);
    // Record 0 is the layer folder itself: its node answers.
    if (it == tables.end() || record == LayerTable::kRoot || record >= it->second->table->size()) {
      return t;
    }
    t.layer = it->second;
    t.record = record;
    return t;
  }
  Target Find(uint64_t ino) {
    std::shared_lock<std::shared_mutex> lock(nodes_mu);
    return FindLocked(ino);
  }
  // The layer entry a layer folder's table shows as `record`.
  static Target TableTarget(const std::shared_ptr<LayerState>& layer, uint32_t record) {
    Target t;
    t.layer = layer;
    t.record = record;
    t.ino = TableIno(layer->slot, record);
    return t;
  }
  Attr AttrOf(const Target& t) {
    return t.node != nullptr ? AttrOf(*t.node) : t.layer->table->AttrOf(t.record, t.ino);
  }

  std::string PathOf(const Node* n) {
    std::string p;
    while (n != nullptr && n->ino != kRootIno) {
      p = "/" + n->name + p;
      n = GetLocked(n->parent);
    }
    return p;
  }

  Node* Add(Node* parent, const std::string& name, Kind kind, TimeNs mtime, CachePolicy cache) {
    auto node = std::make_unique<Node>();
    node->ino = InoFor(PathOf(parent) + "/" + name);
    node->parent = parent->ino;
    node->name = name;
    node->kind = kind;
    node->mode = kind == Kind::kDir ? 0555 : kind == Kind::kSymlink ? 0777 : 0444;
    node->mtime = mtime;
    node->cache = cache;
    Node* raw = node.get();
    parent->children[name] = raw->ino;
    // A folder being filled counts its subfolders from the start.
    if (kind == Kind::kDir && !parent->fill) ++parent->subdirs;
    nodes[raw->ino] = std::move(node);
    return raw;
  }

  Node* AddBytes(Node* parent, const std::string& name, std::shared_ptr<const std::string> bytes,
                 TimeNs mtime, CachePolicy cache) {
    Node* n = Add(parent, name, Kind::kFile, mtime, cache);
    n->content = Content::kBytes;
    n->bytes = std::move(bytes);
    return n;
  }
  Node* AddBytes(Node* parent, const std::string& name, std::string bytes, TimeNs mtime,
                 CachePolicy cache) {
    return AddBytes(parent, name, std::make_shared<const std::string>(std::move(bytes)), mtime,
                    cache);
  }

  // ---- refresh support (all under the exclusive nodes lock) ----

  // While a source is rebuilt by a refresh: the children each of its
  // structural folders (the source folder, blobs/, layers/, refs/, history/
  // and their algorithm folders) had before, by folder inode. Building looks
  // here first and keeps a node that still says the same thing, so unchanged
  // entries keep their inode, their kernel cache and their layer state.
  // Empty outside a refresh.
  std::unordered_map<uint64_t, std::map<std::string, uint64_t>> previous;

  // The node `parent` showed as `name` before this refresh, or null.
  Node* Before(const Node* parent, const std::string& name) {
    auto it = previous.find(parent->ino);
    if (it == previous.end()) return nullptr;
    auto c = it->second.find(name);
    return c == it->second.end() ? nullptr : GetLocked(c->second);
  }

  void Link(Node* parent, const std::string& name, Node* child) {
    parent->children[name] = child->ino;
    if (child->kind == Kind::kDir && !parent->fill) ++parent->subdirs;
  }

  // Empties a folder that is about to be rebuilt, remembering what it held.
  void Take(Node* dir) {
    previous[dir->ino] = std::move(dir->children);
    dir->children.clear();
    dir->subdirs = 0;
  }

  // A structural folder: the one shown before (emptied, to be refilled), or a new one.
  Node* Folder(Node* parent, const std::string& name, TimeNs mtime,
               const std::map<std::string, std::string>& x) {
    if (Node* old = Before(parent, name); old != nullptr && old->kind == Kind::kDir) {
      Link(parent, name, old);
      Take(old);
      return old;
    }
    Node* d = Add(parent, name, Kind::kDir, mtime, CachePolicy::kShort);
    d->xattrs = x;
    return d;
  }

  // A file served from memory: the one shown before when it holds the same
  // bytes and attributes, else a new node (a new inode: the kernel cannot
  // mix the old bytes with the new).
  Node* Bytes(Node* parent, const std::string& name, std::shared_ptr<const std::string> bytes,
              TimeNs mtime, CachePolicy cache, const std::map<std::string, std::string>& x) {
    if (Node* old = Before(parent, name); old != nullptr && old->content == Content::kBytes &&
                                          *old->bytes == *bytes && old->xattrs == x &&
                                          old->cache == cache) {
      Link(parent, name, old);
      return old;
    }
    Node* n = AddBytes(parent, name, std::move(bytes), mtime, cache);
    n->xattrs = x;
    return n;
  }
  Node* Bytes(Node* parent, const std::string& name, std::string bytes, TimeNs mtime,
              CachePolicy cache, const std::map<std::string, std::string>& x) {
    return Bytes(parent, name, std::make_shared<const std::string>(std::move(bytes)), mtime, cache,
                 x);
  }

  // ---- blobs/<alg>/ and layers/<alg>/, made on demand ----

  // Names shown by a refresh in lazy folders that did not show them before
  // (the kernel may hold a negative entry for them). Under the exclusive
  // nodes lock; emptied by RefreshSource.
  std::vector<std::pair<uint64_t, std::string>> lazy_added;

  // A lazy folder holding `table`: the one shown before (emptied; what it had
  // made is made again now, the same node where unchanged, so a refresh
  // compares it as any folder), or a new one.
  Node* LazyFolder(Node* parent, const std::string& name, TimeNs mtime,
                   std::shared_ptr<const LazyTable> table) {
    Node* d = Folder(parent, name, mtime, table->source_x);
    if (d->lazy) {
      for (const auto& [n, spec] : table->blobs) {
        if (!d->lazy->Has(n)) lazy_added.emplace_back(d->ino, n);
      }
      for (const auto& [n, spec] : table->layers) {
        if (!d->lazy->Has(n)) lazy_added.emplace_back(d->ino, n);
      }
    }
    d->subdirs = table->layers.size();
    d->lazy = std::move(table);
    d->fill = [this](Node* n) { FillLazy(n); };
    d->filled.store(false, std::memory_order_release);
    if (auto prev = previous.find(d->ino); prev != previous.end()) {
      for (const auto& [n, ino] : prev->second) MakeLazy(d, n);
    }
    return d;
  }

  // Under the exclusive nodes lock: child `name` of folder `dir`, made now
  // when dir is a lazy folder that holds it; null when there is none.
  Node* MakeLazy(Node* dir, const std::string& name) {
    if (auto it = dir->children.find(name); it != dir->children.end()) {
      return GetLocked(it->second);
    }
    if (!dir->lazy) return nullptr;
    if (auto b = dir->lazy->blobs.find(name); b != dir->lazy->blobs.end()) {
      return MakeBlob(dir, name, b->second);
    }
    if (auto l = dir->lazy->layers.find(name); l != dir->lazy->layers.end()) {
      return MakeLayerDir(dir, name, l->second);
    }
    return nullptr;
  }

  // Under the exclusive nodes lock: every node of a lazy folder.
  void FillLazy(Node* dir) {
    const std::shared_ptr<const LazyTable> table = dir->lazy;
    for (const auto& [name, spec] : table->blobs) MakeLazy(dir, name);
    for (const auto& [name, spec] : table->layers) MakeLazy(dir, name);
  }

  // blobs/<alg>/<hex>: a document read by the catalog is served from memory
  // (a registry serves manifests only under /manifests/), any other blob from
  // the source, verified.
  Node* MakeBlob(Node* dir, const std::string& hex, const BlobSpec& s) {
    std::map<std::string, std::string> x = dir->lazy->source_x;
    x["digest"] = s.blob->digest.ToString();
    if (!s.media.empty()) x["mediatype"] = s.media;
    if (s.doc && s.blob->static_error.empty()) {
      x["cached"] = std::to_string(s.doc->size());
      if (s.synthesized) x["synthesized"] = "1";
      return Bytes(dir, hex, s.doc, s.mtime, CachePolicy::kImmutable, x);
    }
    if (Node* old = Before(dir, hex); old != nullptr && old->content == Content::kBlob &&
                                      old->mtime == s.mtime && old->xattrs == x &&
                                      old->blob->size == s.blob->size &&
                                      old->blob->static_error == s.blob->static_error) {
      Link(dir, hex, old);
      return old;
    }
    Node* n = Add(dir, hex, Kind::kFile, s.mtime, CachePolicy::kImmutable);
    n->content = Content::kBlob;
    n->blob = s.blob;
    n->xattrs = std::move(x);
    return n;
  }

  // layers/<alg>/<hex>/: a layer blob shown as a directory, indexed on first
  // use. One shown before stays, with what indexing it found.
  Node* MakeLayerDir(Node* dir, const std::string& hex, const LayerSpec& s) {
    if (Node* old = Before(dir, hex); old != nullptr && old->layer != nullptr) {
      Link(dir, hex, old);
      return old;
    }
    Node* ld = Add(dir, hex, Kind::kDir, s.mtime, CachePolicy::kImmutable);
    ld->xattrs = dir->lazy->source_x;
    ld->xattrs["digest"] = s.blob->digest.ToString();
    if (!s.media.empty()) ld->xattrs["mediatype"] = s.media;
    auto state = std::make_shared<LayerState>();
    state->blob = s.blob;
    state->counters = layer_counters;
    state->mtime = s.mtime;
    BlobRef* blob = state->blob.get();
    state->open_blob = [this, blob] { return OpenVerified(*blob); };
    if (!s.toc_digest.empty()) {
      state->toc_digest = s.toc_digest;
      state->fetch_range = [this, blob](uint64_t off, uint64_t len) {
        return FetchRange(*blob, off, len);
      };
    }
    {
      std::lock_guard<std::mutex> lock(hooks_mu);
      layer_states.push_back(state);
    }
    ld->layer = std::move(state);
    return ld;
  }

  // Under the exclusive nodes lock: the folder of layer `d` in source `si`
  // (made now if need be), or null.
  Node* LayerDirOf(size_t si, const Digest& d) {
    Node* top = MakeLazy(source_dirs[si], "layers");
    if (top != nullptr) FillNow(top);
    Node* alg = top == nullptr ? nullptr : MakeLazy(top, d.algorithm());
    Node* ld = alg == nullptr ? nullptr : MakeLazy(alg, d.hex());
    return ld != nullptr && ld->layer != nullptr ? ld : nullptr;
  }

  // Two reads of one ref say the same thing: its folder can stay. (The
  // descriptor's text only shows in index.json, which is compared whole.)
  static bool SameRef(const catalog::RefInfo& a, const catalog::RefInfo& b) {
    return a.name == b.name && a.history == b.history &&
           a.descriptor.digest == b.descriptor.digest && a.descriptor.size == b.descriptor.size &&
           a.shape == b.shape && a.synthesized == b.synthesized && a.media_type == b.media_type &&
           a.config.digest == b.config.digest && a.manifest_bytes == b.manifest_bytes &&
           a.config_bytes == b.config_bytes && a.inline_records_json == b.inline_records_json &&
           a.modified == b.modified && a.errors == b.errors && a.warnings == b.warnings;
  }

  // A synthesized document under blobs/<alg>/ (DESIGN.md §1.5).
  // (Listed when blobs/ is filled, unless the source holds the digest.)
  struct SynthesizedDoc {
    Digest digest;
    std::shared_ptr<const std::string> bytes;
    TimeNs mtime = 0;
  };
  std::vector<std::vector<SynthesizedDoc>> synthesized_docs;  // by source; GUARDED_BY(nodes_mu)
  void AddSynthesizedBlob(size_t si, const Digest& digest,
                          const std::shared_ptr<const std::string>& bytes, TimeNs mtime) {
    synthesized_docs[si].push_back({digest, bytes, mtime});
  }

  // Adds refs/<ref>/ or history/<hex>/ for one ref (keeps the folder shown
  // before when the ref is unchanged). Its contents are added on first use
  // (FillRefDir); what lives outside it (a synthesized config under blobs/) now.
  void AddRefDir(Node* parent, const std::string& name,
                 const std::shared_ptr<const catalog::RefInfo>& ref_ptr,
                 const std::map<std::string, std::string>& source_x, TimeNs blob_mtime_default,
                 const std::map<Digest, backends::BlobStat>& stats, size_t si) {
    const catalog::RefInfo& ref = *ref_ptr;
    if (Node* old = Before(parent, name);
        old != nullptr && old->ref != nullptr && SameRef(*old->ref, ref)) {
      Link(parent, name, old);
      // Its synthesized config stays listed under blobs/ too.
      if (old->synthesized_config) {
        AddSynthesizedBlob(si, old->synthesized_digest, old->synthesized_config,
                           old->synthesized_mtime);
      }
      return;
    }
    TimeNs mtime = ref.modified ? ref.modified : blob_mtime_default;
    CachePolicy policy = ref.history ? CachePolicy::kImmutable : CachePolicy::kShort;
    Node* dir = Add(parent, name, Kind::kDir, mtime, policy);
    dir->ref = ref_ptr;
    std::map<std::string, std::string> x = source_x;
    x["ref"] = ref.name;
    dir->xattrs = x;
    dir->xattrs["digest"] = ref.descriptor.digest.ToString();
    std::string errors;
    for (const auto& e : ref.errors) errors += (errors.empty() ? "" : "; ") + e;
    if (!errors.empty()) dir->xattrs["error"] = errors;

    TimeNs cmtime = mtime;
    if (!ref.config_bytes.empty()) {
      if (ref.shape == "inline") {
        cmtime = ref.created ? ref.created : mtime;
        // Synthesized documents are served under blobs/ too (DESIGN.md §1.5).
        dir->synthesized_config = std::make_shared<const std::string>(SynthesizeInlineConfig(ref));
        dir->synthesized_digest = Digest::Sha256Of(*dir->synthesized_config);
        dir->synthesized_mtime = cmtime;
        AddSynthesizedBlob(si, dir->synthesized_digest, dir->synthesized_config, cmtime);
      } else if (auto st = stats.find(ref.config.digest); st != stats.end()) {
        cmtime = st->second.mtime;
      }
    }
    // Always there: snapshots/ and layers/.
    dir->subdirs = 2;
    dir->filled.store(false, std::memory_order_release);
    dir->fill = [this, x = std::move(x), mtime, cmtime, policy, si](Node* d) {
      FillRefDir(d, x, mtime, cmtime, policy, si);
    };
  }

  // Adds what refs/<ref>/ (or history/<hex>/) holds, on its first use (see
  // EnsureFilled). `x` are the xattrs its files share.
  void FillRefDir(Node* dir, const std::map<std::string, std::string>& x, TimeNs mtime,
                  TimeNs cmtime, CachePolicy policy, size_t si) {
    const catalog::RefInfo& ref = *dir->ref;
    if (!ref.manifest_bytes.empty()) {
      Node* m = AddBytes(dir, "manifest.json", ref.manifest_bytes, mtime, policy);
      m->xattrs = x;
      m->xattrs["digest"] = ref.descriptor.digest.ToString();
      m->xattrs["mediatype"] = ref.media_type;
      if (ref.synthesized) m->xattrs["synthesized"] = "1";
    }
    if (!ref.config_bytes.empty()) {
      const bool is_inline = dir->synthesized_config != nullptr;
      Node* c = AddBytes(dir, "cache-config.json",
                         is_inline ? *dir->synthesized_config : ref.config_bytes, cmtime, policy);
      c->xattrs = x;
      c->xattrs["digest"] = (is_inline ? dir->synthesized_digest : ref.config.digest).ToString();
      c->xattrs["mediatype"] = std::string(formats::media::kCacheConfig);
      if (is_inline) {
        c->xattrs["synthesized"] = "1";
        Node* r = AddBytes(dir, "inline-records.json", ref.inline_records_json, cmtime, policy);
        r->xattrs = x;
        r->xattrs["synthesized"] = "1";
      }
    }
    if (!ref.shape.empty()) {
      Node* r = Add(dir, "records.json", Kind::kFile, mtime, policy);
      r->content = Content::kLazy;
      r->render = [ref_ptr = dir->ref] { return RecordsJson(*ref_ptr); };
      r->xattrs = x;
    }
    // snapshots/<chainid12>/: the merged filesystem of every chain that is a
    // record result, keyed by its OCI ChainID (one blob can head several).
    Node* snapshots = Add(dir, "snapshots", Kind::kDir, mtime, policy);
    snapshots->xattrs = x;
    std::vector<int64_t> parents;
    for (const auto& l : ref.layers) parents.push_back(l.parent);
    for (const auto& rec : ref.records) {
      for (const auto& res : rec.results) {
        std::vector<int64_t> chain = res.Layers(parents);
        if (chain.empty()) continue;
        Digest chain_id;
        std::string blobs_text;
        std::vector<Node*> folders;
        bool usable = true;
        for (int64_t pos : chain) {
          const catalog::LayerInfo& l = ref.layers[pos];
          Node* folder = l.diff_id.empty() ? nullptr : LayerDirOf(si, l.blob);
          if (folder == nullptr) {
            usable = false;
            break;
          }
          chain_id = chain_id.empty()
                         ? l.diff_id
                         : Digest::Sha256Of(chain_id.ToString() + " " + l.diff_id.ToString());
          blobs_text += (blobs_text.empty() ? "" : ",") + l.blob.ToString();
          folders.push_back(folder);
        }
        if (!usable || snapshots->children.count(chain_id.ShortHex())) continue;
        Node* snap =
            Add(snapshots, chain_id.ShortHex(), Kind::kDir, mtime, CachePolicy::kImmutable);
        snap->xattrs = x;
        snap->xattrs["digest"] = chain_id.ToString();
        snap->xattrs["chain"] = blobs_text;
        snap->chain = std::move(folders);
      }
    }
    Node* layers = Add(dir, "layers", Kind::kDir, mtime, policy);
    layers->xattrs = x;
    const int width = ref.layers.size() > 1000
                          ? static_cast<int>(std::to_string(ref.layers.size() - 1).size())
                          : 3;
    for (const auto& l : ref.layers) {
      std::string pos = Position(l.position);
      if (static_cast<int>(pos.size()) < width) pos = std::string(width - pos.size(), '0') + pos;
      Node* link = Add(layers, pos + "-" + l.blob.ShortHex(), Kind::kSymlink, mtime,
                       CachePolicy::kImmutable);
      link->target = "../../../layers/" + l.blob.algorithm() + "/" + l.blob.hex();
      // No xattrs: Linux refuses user.* attributes on symlinks before asking
      // the filesystem (fs/xattr.c, xattr_permission), so they could never be read.
    }
  }

  // Fills the folder of source `si` from `info`: at Build (src == null, a new
  // folder under root) or on a refresh (src = its folder, emptied here and
  // refilled, keeping every node that still says the same thing). Under the
  // exclusive nodes lock, or before any reader exists.
  void BuildSource(Node* root, size_t si, Node* src,
                   const std::shared_ptr<const catalog::SourceInfo>& info_ptr) {
    const SourceInput& in = sources[si];
    const catalog::SourceInfo& info = *info_ptr;
    const TimeNs smtime = info.refs_modified ? info.refs_modified : mount_time;
    std::map<std::string, std::string> sx = {{"source", info.location}};

    if (src == nullptr) {
      src = Add(root, in.name, Kind::kDir, smtime, CachePolicy::kShort);
      src->xattrs = sx;
      src->source = static_cast<int>(si);
      source_dirs.push_back(src);
    } else {
      Take(src);
    }

    Bytes(src, "oci-layout", "{\"imageLayoutVersion\":\"1.0.0\"}", smtime, CachePolicy::kShort, sx);
    // index.json: one descriptor per ref, verbatim from the source, by raw ref name.
    std::vector<const catalog::RefInfo*> by_name;
    for (const auto& r : info.refs) by_name.push_back(&r);
    std::sort(by_name.begin(), by_name.end(),
              [](const auto* a, const auto* b) { return a->name < b->name; });
    std::string index = "{\"schemaVersion\":2,\"mediaType\":\"" +
                        std::string(formats::media::kOciIndex) + "\",\"manifests\":[";
    for (size_t i = 0; i < by_name.size(); ++i) {
      const auto* r = by_name[i];
      std::string desc = r->raw_descriptor;
      if (desc.empty()) {
        OJson d;
        d["mediaType"] = r->media_type.empty() ? r->descriptor.media_type : r->media_type;
        d["digest"] = r->descriptor.digest.ToString();
        d["size"] = r->descriptor.size;
        d["annotations"] = {{std::string(formats::annotation::kRefName), r->name}};
        desc = d.dump(-1, ' ', false, OJson::error_handler_t::replace);
      }
      index += (i ? "," : "") + desc;
    }
    index += "]}";
    Bytes(src, "index.json", index, smtime, CachePolicy::kShort, sx);
    Bytes(src, "index.json.lock", "", smtime, CachePolicy::kShort, sx);
    if (Node* old = Before(src, "ingest"); old != nullptr) {
      Link(src, "ingest", old);
    } else {
      Add(src, "ingest", Kind::kDir, smtime, CachePolicy::kShort)->xattrs = sx;
    }

    // blobs/ and layers/: their <alg>/ folders are made when either is first
    // used (a mount of a cache with 100,000 blobs reads nothing of them
    // before); a refresh of ones in use makes them again now, below.
    Node* blobs_top = Folder(src, "blobs", smtime, sx);
    Node* layers_top = Folder(src, "layers", smtime, sx);
    synthesized_docs[si].clear();
    Node* refs = Folder(src, "refs", smtime, sx);
    for (const auto& r : info.refs) {
      AddRefDir(refs, backends::EncodeRefName(r.name),
                std::shared_ptr<const catalog::RefInfo>(info_ptr, &r), sx, smtime, info.blob_stats,
                si);
    }
    Node* history = Folder(src, "history", smtime, sx);
    for (const auto& r : info.history) {
      AddRefDir(history, r.descriptor.digest.hex(),
                std::shared_ptr<const catalog::RefInfo>(info_ptr, &r), sx, smtime, info.blob_stats,
                si);
    }
    auto in_use = [this](Node* top) {
      auto prev = previous.find(top->ino);
      return prev != previous.end() && !prev->second.empty();
    };
    auto fill = [this, si, info_ptr](Node*) { FillBlobsAndLayers(si, info_ptr); };
    if (in_use(blobs_top) || in_use(layers_top)) {
      FillBlobsAndLayers(si, info_ptr);
    } else {
      for (Node* top : {blobs_top, layers_top}) {
        top->subdirs = 1;  // sha256/ is always there
        top->fill = fill;
        top->filled.store(false, std::memory_order_release);
      }
    }
  }

  // Under the exclusive nodes lock: fills blobs/ and layers/ of source `si`
  // with their <alg>/ folders (see LazyFolder).
  void FillBlobsAndLayers(size_t si, const std::shared_ptr<const catalog::SourceInfo>& info_ptr) {
    const SourceInput& in = sources[si];
    const catalog::SourceInfo& info = *info_ptr;
    const TimeNs smtime = info.refs_modified ? info.refs_modified : mount_time;
    std::map<std::string, std::string> sx = {{"source", info.location}};
    Node* src = source_dirs[si];
    Node* blobs_top = GetLocked(src->children.at("blobs"));
    Node* layers_top = GetLocked(src->children.at("layers"));
    for (Node* top : {blobs_top, layers_top}) {
      top->fill = nullptr;
      top->subdirs = 0;
      top->filled.store(true, std::memory_order_release);
    }
    // blobs/: everything the source holds plus everything a ref reaches;
    // layers/: every layer blob a cache config names. Both lazy: their
    // nodes are made on first lookup or listing (see LazyFolder).
    std::map<std::string, std::shared_ptr<LazyTable>> blob_tables, layer_tables;
    auto table = [&sx](std::map<std::string, std::shared_ptr<LazyTable>>& tables,
                       const std::string& alg) -> LazyTable& {
      std::shared_ptr<LazyTable>& t = tables[alg];
      if (!t) {
        t = std::make_shared<LazyTable>();
        t->source_x = sx;
      }
      return *t;
    };
    table(blob_tables, "sha256");
    table(layer_tables, "sha256");
    const size_t expected = info.blob_stats.size() + info.refs.size() * 2;
    table(blob_tables, "sha256").blobs.reserve(expected);
    // The spec of blob d (new: no BlobRef yet).
    auto spec_of = [&](const Digest& d) -> BlobSpec& {
      return table(blob_tables, d.algorithm()).blobs[d.hex()];
    };
    auto reach = [&](const Digest& d, int64_t size, const std::string& mt) {
      if (d.empty()) return;
      BlobSpec& b = spec_of(d);
      if (!b.blob) {
        b.blob = std::make_shared<BlobRef>();
        b.blob->source = si;
        b.blob->digest = d;
        b.blob->size = size >= 0 ? static_cast<uint64_t>(size) : 0;
      }
      if (!mt.empty() && b.media.empty()) b.media = mt;
    };
    for (const auto* list : {&info.refs, &info.history}) {
      for (const auto& r : *list) {
        if (r.shape.empty()) continue;
        reach(r.descriptor.digest, r.descriptor.size,
              r.media_type.empty() ? r.descriptor.media_type : r.media_type);
        reach(r.config.digest, r.config.size, r.config.media_type);
        // Blobs only the cache config names are listed too, so every layer
        // link resolves (to an EIO with the reason when the source lacks it).
        for (const auto& l : r.layers) {
          reach(l.blob, l.listed ? l.size : l.actual_size, l.media_type);
        }
      }
    }
    // What the source lists carries its own time; the rest the source folder's.
    std::unordered_set<const BlobSpec*> stated;
    stated.reserve(info.blob_stats.size());
    for (const auto& [d, st] : info.blob_stats) {
      reach(d, static_cast<int64_t>(st.size), "");
      BlobSpec& b = spec_of(d);
      b.mtime = st.mtime;
      stated.insert(&b);
    }
    // A remote source cannot list its blobs: what its refs reach is all there is.
    const bool listed = in.backend->CheapStat();
    for (auto& [alg, t] : blob_tables) {
      for (auto& [hex, b] : t->blobs) {
        if (stated.count(&b)) continue;
        b.mtime = smtime;
        if (listed)
          b.blob->static_error =
              "blob " + b.blob->digest.ToString() + " is missing from the source";
      }
    }
    // Manifests and configs were read and verified by the catalog: they are
    // served from memory (a registry serves manifests only under /manifests/).
    // Documents a source does not list (synthesized, or held in another form)
    // carry the write time of the ref that holds them.
    for (const auto* list : {&info.refs, &info.history}) {
      for (const auto& r : *list) {
        if (r.shape.empty()) continue;
        if (!r.manifest_bytes.empty() &&
            r.manifest_bytes.size() == static_cast<uint64_t>(r.descriptor.size)) {
          BlobSpec& m = spec_of(r.descriptor.digest);
          if (!m.doc) m.doc = std::shared_ptr<const std::string>(info_ptr, &r.manifest_bytes);
          m.synthesized = m.synthesized || r.synthesized;
        }
        if (!r.config_bytes.empty() && !r.config.digest.empty() &&
            r.config_bytes.size() == static_cast<uint64_t>(r.config.size)) {
          BlobSpec& c = spec_of(r.config.digest);
          if (!c.doc) c.doc = std::shared_ptr<const std::string>(info_ptr, &r.config_bytes);
        }
      }
    }
    if (!listed) {
      std::set<std::string> dated;  // the first ref that holds a document dates it
      for (const auto* list : {&info.refs, &info.history}) {
        for (const auto& r : *list) {
          if (r.modified == 0) continue;
          for (const Digest* d : {&r.descriptor.digest, &r.config.digest}) {
            if (d->empty() || !dated.insert(d->ToString()).second) continue;
            auto t = blob_tables.find(d->algorithm());
            if (t == blob_tables.end() || info.blob_stats.count(*d)) continue;
            auto it = t->second->blobs.find(d->hex());
            if (it != t->second->blobs.end()) it->second.mtime = r.modified;
          }
        }
      }
    }
    for (const auto* list : {&info.refs, &info.history}) {
      for (const auto& r : *list) {
        for (const auto& l : r.layers) {
          LazyTable& t = table(layer_tables, l.blob.algorithm());
          auto [it, fresh] = t.layers.try_emplace(l.blob.hex());
          if (!fresh) continue;
          const BlobSpec& b = spec_of(l.blob);
          it->second.blob = b.blob;
          it->second.mtime = b.mtime;
          it->second.media = l.media_type;
          // eStargz chunk reads: only where the descriptor pins the TOC digest
          // and the source is a registry (DESIGN.md §2 "Verification").
          if (!l.toc_digest.empty() && info.type == "registry") {
            it->second.toc_digest = l.toc_digest;
          }
        }
      }
    }
    // Synthesized documents (inline cache configs) unless the source holds them.
    for (const SynthesizedDoc& doc : synthesized_docs[si]) {
      auto [it, fresh] =
          table(blob_tables, doc.digest.algorithm()).blobs.try_emplace(doc.digest.hex());
      if (!fresh) continue;
      it->second.blob = std::make_shared<BlobRef>();
      it->second.blob->source = si;
      it->second.blob->digest = doc.digest;
      it->second.blob->size = doc.bytes->size();
      it->second.mtime = doc.mtime;
      it->second.media = std::string(formats::media::kCacheConfig);
      it->second.doc = doc.bytes;
      it->second.synthesized = true;
    }
    for (auto& [alg, t] : blob_tables) LazyFolder(blobs_top, alg, smtime, std::move(t));
    for (auto& [alg, t] : layer_tables) LazyFolder(layers_top, alg, smtime, std::move(t));
  }

  // ---- refreshing (DESIGN.md §1.6) ----

  // A ref that was read before and whose manifest cannot be read now (one
  // tag of a registry answering with an error) keeps what it showed, as a
  // source whose ref list cannot be read does: its documents are named by
  // digest, so they are not stale unless the ref now names another one.
  static void KeepUnreadableRefs(const catalog::SourceInfo& before, catalog::SourceInfo* now) {
    std::map<std::string, const catalog::RefInfo*> shown;
    for (const auto& r : before.refs) {
      if (!r.shape.empty()) shown[r.name] = &r;
    }
    for (auto& r : now->refs) {
      if (!r.shape.empty() || r.errors.empty()) continue;
      auto old = shown.find(r.name);
      if (old == shown.end()) continue;
      if (!r.descriptor.digest.empty() && r.descriptor.digest != old->second->descriptor.digest) {
        continue;
      }
      std::string why;
      for (const auto& e : r.errors) why += (why.empty() ? "" : "; ") + e;
      now->warnings.push_back("ref " + r.name + ": not read again (" + why +
                              "); showing what was read before");
      r = *old->second;
    }
  }

  // Reads source `si`'s catalog again and shows what it found: new refs and
  // blobs appear, vanished ones leave their folders (their nodes stay, so
  // open files and the kernel's references keep working), changed ones get
  // new nodes. Everything that changed is invalidated in the kernel. A read
  // with source-level errors changes nothing but the source's refresh error.
  Status RefreshSource(size_t si, RefreshReport* report) {
    const SourceInput& in = sources[si];
    std::string type;
    {
      std::lock_guard<std::mutex> lock(mu);
      type = infos[si]->type;
    }
    // An unchanged source comes from the catalog cache: a refresh of 100,000
    // blobs that changed nothing costs a few stat() calls.
    std::string version;
    catalog::SourceInfo fresh =
        catalog::ReadSourceCached(*in.backend, in.name, type, catalog_cache, nullptr, &version);
    // What is shown is not what this read says (see KeepUnreadableRefs): the
    // index stores it by content.
    if (fresh.HasErrors()) version.clear();
    if (fresh.errors.empty()) {
      std::lock_guard<std::mutex> lock(mu);
      KeepUnreadableRefs(*infos[si], &fresh);
    }
    auto info = std::make_shared<const catalog::SourceInfo>(std::move(fresh));
    if (!info->errors.empty()) {
      std::string why;
      for (const auto& e : info->errors) why += (why.empty() ? "" : "; ") + e;
      why = "refresh failed, the refs read before stay: " + why;
      LOG_WARNING("source " << in.name << ": " << why);
      std::lock_guard<std::mutex> lock(mu);
      refresh_errors[si] = why;
      return Status(Code::kUnavailable, "source " + in.name + ": " + why);
    }
    std::vector<std::pair<uint64_t, std::string>> entries;  // (folder, name) to invalidate
    std::vector<uint64_t> folders;
    size_t added = 0, removed = 0, changed = 0;
    {
      std::unique_lock<std::shared_mutex> lock(nodes_mu);
      Node* src = source_dirs[si];
      BuildSource(GetLocked(kRootIno), si, src, info);
      const uint64_t refs_ino = src->children.at("refs");
      for (const auto& [dir_ino, before] : previous) {
        const Node* dir = GetLocked(dir_ino);
        const size_t mark = entries.size();
        for (const auto& [name, ino] : before) {
          auto now = dir->children.find(name);
          if (now == dir->children.end() || now->second != ino) entries.emplace_back(dir_ino, name);
          if (dir_ino != refs_ino) continue;
          if (now == dir->children.end()) {
            ++removed;
          } else if (now->second != ino) {
            ++changed;
          }
        }
        for (const auto& [name, ino] : dir->children) {
          if (before.count(name)) continue;
          entries.emplace_back(dir_ino, name);
          if (dir_ino == refs_ino) ++added;
        }
        if (entries.size() != mark) folders.push_back(dir_ino);
      }
      previous.clear();
      for (const auto& added_entry : lazy_added) {
        entries.push_back(added_entry);
        if (folders.empty() || folders.back() != added_entry.first) {
          folders.push_back(added_entry.first);
        }
      }
      lazy_added.clear();
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      infos[si] = info;
      refresh_errors[si].clear();
      refreshed_at[si] = Now();
    }
    if (index != nullptr) {
      std::lock_guard<std::mutex> lock(index_mu);
      if (Status st = catalog::RecordSource(*index, *info, version, Now()); !st.ok()) {
        LOG_WARNING("source " << in.name
                              << ": refresh not recorded in the index: " << st.message());
      }
    }
    // Outside every lock: the kernel may call back into the mount to drop them.
    std::function<void(uint64_t)> inval;
    std::function<void(uint64_t, const std::string&)> inval_entry;
    {
      std::lock_guard<std::mutex> lock(hooks_mu);
      inval = invalidator;
      inval_entry = entry_invalidator;
    }
    for (const auto& [dir, name] : entries) {
      if (inval_entry) inval_entry(dir, name);
    }
    for (uint64_t dir : folders) {
      if (inval) inval(dir);
    }
    if (added + removed + changed > 0 || entries.size() > 0) {
      LOG_INFO("source " << in.name << ": refreshed: " << info->refs.size() << " refs (" << added
                         << " added, " << removed << " removed, " << changed << " changed)");
    }
    report->added += added;
    report->removed += removed;
    report->changed += changed;
    return OkStatus();
  }

  // ---- serving ----
  std::string StatusJson() {
    OJson out;
    out["mounted_at"] = FormatRfc3339(mount_time);
    OJson srcs = OJson::array();
    std::lock_guard<std::mutex> lock(mu);
    out["refresh"] = {{"generation", refresh_generation},
                      {"last", last_refresh ? FormatRfc3339(last_refresh) : std::string()}};
    for (size_t i = 0; i < sources.size(); ++i) {
      const auto& info = *infos[i];
      OJson s;
      s["name"] = sources[i].name;
      s["type"] = info.type;
      s["location"] = info.location;
      s["refs"] = info.refs.size();
      s["history"] = info.history.size();
      s["blobs"] = info.blob_count;
      s["bytes"] = info.blob_bytes;
      s["bytes_local"] = info.blob_bytes;
      s["bytes_remote"] = 0;
      s["unreferenced_blobs"] = info.unreferenced_count;
      s["unreferenced_bytes"] = info.unreferenced_bytes;
      s["last_refresh"] = FormatRfc3339(refreshed_at[i]);
      s["refresh_error"] = refresh_errors[i];
      std::vector<std::string> errors = info.errors, warnings = info.warnings;
      if (!refresh_errors[i].empty()) errors.push_back(refresh_errors[i]);
      for (const auto* list : {&info.refs, &info.history}) {
        for (const auto& r : *list) {
          for (const auto& e : r.errors) errors.push_back(r.name + ": " + e);
          for (const auto& w : r.warnings) warnings.push_back(r.name + ": " + w);
        }
      }
      for (const auto& [key, why] : this->errors) {
        if (key.first == i) errors.push_back(why);
      }
      s["errors"] = errors;
      s["warnings"] = warnings;
      srcs.push_back(s);
    }
    out["sources"] = srcs;
    const LayerCounters& lc = *layer_counters;
    out["layers"] = {{"indexing_passes", lc.passes.load()},
                     {"loaded_from_index", lc.loaded.load()},
                     {"bytes_inflated_for_reads", lc.inflated.load()},
                     {"derived_bytes_checked", lc.derived_checked.load()},
                     {"listed_from_estargz_toc", lc.toc_listed.load()},
                     {"estargz_chunk_bytes_fetched", lc.chunk_bytes.load()}};
    std::function<std::string()> extra;
    {
      std::lock_guard<std::mutex> hooks(hooks_mu);
      extra = status_extra;
    }
    if (extra) {
      OJson more = OJson::parse(extra(), nullptr, /*allow_exceptions=*/false);
      if (more.is_object()) {
        for (auto& [k, v] : more.items()) out[k] = v;
      }
    }
    return out.dump(2, ' ', false, OJson::error_handler_t::replace) + "\n";
  }

  std::string ErrorOf(const Node& n) {
    if (n.layer && n.layer->expanded.load(std::memory_order_acquire) && !n.layer->error.empty()) {
      return n.layer->error;
    }
    if (n.layer) {
      std::lock_guard<std::mutex> lock(n.layer->fetch_error_mu);
      if (!n.layer->fetch_error.empty()) return n.layer->fetch_error;
    }
    if (n.content == Content::kBlob) {
      if (!n.blob->static_error.empty()) return n.blob->static_error;
      std::lock_guard<std::mutex> lock(mu);
      auto it = errors.find({n.blob->source, n.blob->digest});
      if (it != errors.end()) return it->second;
    }
    if (n.source >= 0) {
      std::lock_guard<std::mutex> lock(mu);
      std::string joined;
      for (const auto& e : infos[n.source]->errors) joined += (joined.empty() ? "" : "; ") + e;
      const std::string& failed = refresh_errors[n.source];
      if (!failed.empty()) joined += (joined.empty() ? "" : "; ") + failed;
      return joined;
    }
    auto it = n.xattrs.find("error");
    return it == n.xattrs.end() ? std::string() : it->second;
  }

  Status Fail(const BlobRef& b, Status st) {
    LOG_WARNING("source " << sources[b.source].name << ": " << st.message());
    std::lock_guard<std::mutex> lock(mu);
    errors[{b.source, b.digest}] = st.message();
    return st;
  }

  // Whole-blob verification (DESIGN.md §2): returns an fd whose bytes hash to
  // the digest, or an error kept as the blob's user.buildcachefs.error.
  Result<int> OpenVerified(const BlobRef& b) {
    if (!b.static_error.empty()) return NotFoundError(b.static_error);
    backends::Backend& backend = *sources[b.source].backend;
    auto fd_or = backend.OpenBlobFd(b.digest);
    if (!fd_or.ok() && fd_or.status().code() == Code::kUnsupported) return FetchVerified(b);
    if (!fd_or.ok()) return Fail(b, fd_or.status());
    FdGuard fd(*fd_or);
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) return Fail(b, ErrnoError(errno, "fstat blob"));
    index::FileIdentity id;
    id.dev = st.st_dev;
    id.ino = st.st_ino;
    id.size = static_cast<uint64_t>(st.st_size);
    id.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    id.ctime_ns = static_cast<int64_t>(st.st_ctim.tv_sec) * 1000000000 + st.st_ctim.tv_nsec;
    if (id.size != b.size) {
      return Fail(b, CorruptError("blob " + b.digest.ToString() + " is " + std::to_string(id.size) +
                                  " bytes but its descriptor says " + std::to_string(b.size)));
    }
    const auto key = std::make_pair(b.source, b.digest);
    auto same = [&](const index::FileIdentity& a) {
      return a.dev == id.dev && a.ino == id.ino && a.size == id.size && a.mtime_ns == id.mtime_ns &&
             a.ctime_ns == id.ctime_ns;
    };
    {
      std::unique_lock<std::mutex> lock(mu);
      // Single flight: one hash per blob however many open it at once.
      cv.wait(lock, [&] { return !verifying.count(key); });
      auto it = verified.find(key);
      if (it != verified.end() && same(it->second)) return fd.release();
      verifying.insert(key);
    }
    Status result = Verify(b, fd.get(), id);
    {
      std::lock_guard<std::mutex> lock(mu);
      verifying.erase(key);
      if (result.ok()) {
        verified[key] = id;
        errors.erase(key);
      }
    }
    cv.notify_all();
    if (!result.ok()) return Fail(b, result);
    return fd.release();
  }

  // A remote blob: fetched into the content store (lazily, in parts, single
  // flight, verified whole before the first byte) and served from there.
  Result<int> FetchVerified(const BlobRef& b) {
    if (store == nullptr) {
      return Fail(b, UnsupportedError("blob " + b.digest.ToString() +
                                      ": remote blobs need a content store (mount, not ls)"));
    }
    backends::Backend& backend = *sources[b.source].backend;
    const Digest digest = b.digest;
    const bool cold = !store->IsComplete(digest);
    if (cold) {
      std::string block;
      {
        std::lock_guard<std::mutex> lock(hooks_mu);
        block = fetch_block;
      }
      if (!block.empty()) {
        return Fail(b, Status(Code::kNoSpace, "blob " + digest.ToString() + ": " + block));
      }
    }
    Pin(digest);
    struct Unpinner {
      Impl* im;
      Digest d;
      ~Unpinner() { im->Unpin(d); }
    } unpin{this, digest};
    const auto start = std::chrono::steady_clock::now();
    auto fd = store->OpenVerified(
        digest, b.size,
        [&backend, digest](uint64_t off, std::span<char> out) {
          size_t done = 0;
          while (done < out.size()) {
            auto n = backend.ReadBlob(digest, off + done, out.subspan(done));
            if (!n.ok()) return n.status();
            if (*n == 0) {
              return CorruptError("blob " + digest.ToString() + " ended at " +
                                  std::to_string(off + done) +
                                  " bytes, before its descriptor's size");
            }
            done += *n;
          }
          return OkStatus();
        },
        backend.Streams() ? store::FetchStream([&backend, digest](uint64_t off, uint64_t len,
                                                                  const store::ByteSink& sink) {
          return backend.StreamBlob(digest, off, len, sink);
        })
                          : store::FetchStream());
    if (!fd.ok()) return Fail(b, fd.status());
    if (cold) {
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      LOG_INFO("source " << sources[b.source].name << ": fetched and verified blob "
                         << digest.ToString() << " (" << b.size << " bytes) in " << secs << " s");
      std::function<void()> hook;
      {
        std::lock_guard<std::mutex> lock(hooks_mu);
        hook = after_fetch;
      }
      // The fetched blob stays pinned (this call holds it) while GC runs.
      if (hook) hook();
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      errors.erase({b.source, b.digest});
    }
    return *fd;
  }

  Status Verify(const BlobRef& b, int fd, const index::FileIdentity& id) {
    if (index != nullptr) {
      std::lock_guard<std::mutex> lock(index_mu);
      auto memo = index->IsVerified(id, b.digest);
      if (memo.ok() && *memo) return OkStatus();
    }
    if (b.digest.algorithm() != "sha256") {
      return UnsupportedError("blob " + b.digest.ToString() + ": only sha256 can be verified");
    }
    Sha256 h;
    std::string buf(1 << 20, '\0');
    uint64_t off = 0;
    for (;;) {
      ssize_t n = ::pread(fd, buf.data(), buf.size(), static_cast<off_t>(off));
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoError(errno, "read blob " + b.digest.ToString());
      }
      if (n == 0) break;
      h.Update(buf.data(), static_cast<size_t>(n));
      off += static_cast<uint64_t>(n);
    }
    Digest got = h.Finish();
    if (off != id.size) {
      return CorruptError("blob " + b.digest.ToString() + " changed size while it was verified");
    }
    if (got != b.digest) {
      return CorruptError("blob " + b.digest.ToString() +
                          " does not match its digest: its bytes hash to " + got.ToString());
    }
    if (index != nullptr) {
      std::lock_guard<std::mutex> lock(index_mu);
      if (Status st = index->RememberVerified(id, b.digest); !st.ok()) {
        LOG_WARNING("remember verified blob: " << st.message());
      }
    }
    return OkStatus();
  }

  // ---- layers ----

  // Indexes a layer folder's tar on first use, or lists it from the index
  // when an earlier mount indexed it (no decompression pass then). A fresh
  // pass verifies (and fetches) the blob first, reads the tar once, recording
  // seek points and writing a derived uncompressed copy, and stores what it
  // found in the index. Its entries become one LayerTable (no node per
  // entry), whose inodes are numbered once it is registered under the
  // exclusive lock.
  // Problems with the tar are kept as the folder's user.buildcachefs.error;
  // entries read before a damaged spot stay. When the blob itself cannot be
  // had now (a dead server, a transfer that failed its digest, no space under
  // the GC limits) the folder is not indexed: the error is returned and the
  // next use tries again. A blob the source does not hold, or a local blob
  // whose bytes are wrong, is final.
  Status EnsureExpanded(Node* n) {
    if (n == nullptr || !n->layer) return OkStatus();
    LayerState& layer = *n->layer;
    if (layer.expanded.load(std::memory_order_acquire)) return OkStatus();
    if (track_accesses.load(std::memory_order_relaxed)) accesses.Touch(layer.blob->digest, Now());
    std::lock_guard<std::mutex> guard(layer.mu);
    if (layer.expanded.load(std::memory_order_acquire)) return OkStatus();
    // The blob may not be evicted while its tar is read.
    Pin(layer.blob->digest);
    struct Unpinner {
      Impl* im;
      Digest d;
      ~Unpinner() { im->Unpin(d); }
    } unpin{this, layer.blob->digest};
    std::shared_ptr<const LayerTable> table;
    // What the tar said (kept in the index), then the entries the table skipped.
    std::vector<std::string> warnings, skipped;
    std::string failure;
    if (!layer.toc_digest.empty() && store != nullptr && !store->IsComplete(layer.blob->digest)) {
      std::vector<formats::TarEntry> entries;
      Status st = ReadTocLayer(layer, &entries, &warnings);
      if (st.ok()) {
        LayerTable::Builder builder(layer.mtime);
        for (const auto& e : entries) builder.Add(e, &skipped);
        table = builder.Finish();
      } else {
        LOG_WARNING(st.message() << "; fetching the whole blob instead");
        warnings.clear();
      }
    }
    if (table == nullptr && !LoadLayer(layer, &table, &warnings, &skipped)) {
      // A remote blob that cannot be had now may come later (a dead server, a
      // transfer that failed its digest): the folder stays unindexed. A local
      // file that fails is what the source holds: final, like a missing blob.
      const bool remote = !sources[layer.blob->source].backend->CheapStat();
      auto fd = layer.BlobFd();
      if (remote) {
        std::lock_guard<std::mutex> lock(layer.fetch_error_mu);
        layer.fetch_error = fd.ok() ? "" : fd.status().message();
      }
      if (remote && !fd.ok() && fd.status().code() != Code::kNotFound) return fd.status();
      Status st = IndexLayer(layer, &table, &warnings, &skipped);
      if (!st.ok()) failure = st.message();
    }
    if (table == nullptr) table = LayerTable::Builder(layer.mtime).Finish();
    warnings.insert(warnings.end(), skipped.begin(), skipped.end());
    {
      std::unique_lock<std::shared_mutex> lock(nodes_mu);
      // A slot derived from the digest: the same inode numbers in every
      // mount, unless two layers' digests collide here.
      uint32_t slot = static_cast<uint32_t>(
          std::stoul(Digest::Sha256Of(layer.blob->digest.ToString()).hex().substr(0, 8), nullptr,
                     16) &
          kSlotMask);
      while (slot == 0 || tables.count(slot)) slot = (slot + 1) & kSlotMask;
      layer.slot = slot;
      layer.table = table;
      tables[slot] = n->layer;
      n->subdirs += table->AttrOf(LayerTable::kRoot, 0).nlink - 2;
    }
    DropSeekWhileDerived(layer);
    // Building the table freed much more than it keeps: give it back.
    if (table->size() > 4096) ::malloc_trim(0);
    if (!failure.empty()) {
      layer.error = failure;
      LOG_WARNING("source " << sources[layer.blob->source].name << ": layer "
                            << layer.blob->digest.ToString() << ": " << layer.error);
    }
    if (!warnings.empty()) {
      std::string joined = "skipped entries:";
      for (const auto& w : warnings) joined += " " + w + ";";
      joined.pop_back();
      layer.error += (layer.error.empty() ? "" : "; ") + joined;
    }
    layer.expanded.store(true, std::memory_order_release);
    return OkStatus();
  }

  // Raw bytes of a remote blob, by range (not verified: eStargz chunks are
  // checked against their chunkDigest, the TOC against the pinned digest).
  Result<std::string> FetchRange(const BlobRef& b, uint64_t offset, uint64_t length) {
    if (offset > b.size || length > b.size - offset) {
      return CorruptError("blob " + b.digest.ToString() + ": range [" + std::to_string(offset) +
                          ", +" + std::to_string(length) + ") is outside its " +
                          std::to_string(b.size) + " bytes");
    }
    std::string out(static_cast<size_t>(length), '\0');
    size_t done = 0;
    while (done < out.size()) {
      BCFS_ASSIGN_OR_RETURN(
          size_t n, sources[b.source].backend->ReadBlob(b.digest, offset + done,
                                                        std::span<char>(out).subspan(done)));
      if (n == 0) {
        return CorruptError("blob " + b.digest.ToString() + " ended at " +
                            std::to_string(offset + done) + " bytes, before its descriptor's size");
      }
      done += n;
    }
    return out;
  }

  // Lists an eStargz layer from its TOC: the footer and the TOC are fetched
  // by range (two requests), the TOC checked against the descriptor's
  // toc.digest annotation; file entries keep their TOC index in data_offset.
  Status ReadTocLayer(LayerState& layer, std::vector<formats::TarEntry>* entries,
                      std::vector<std::string>* warnings) {
    namespace sgz = formats::estargz;
    const uint64_t size = layer.blob->size;
    const std::string doc = "layer " + layer.blob->digest.ToString();
    if (size < sgz::kFooterSize) return CorruptError(doc + ": too short for an eStargz footer");
    BCFS_ASSIGN_OR_RETURN(std::string tail,
                          layer.fetch_range(size - sgz::kFooterSize, sgz::kFooterSize));
    auto footer = sgz::ParseFooter(tail);
    if (!footer.ok()) return footer.status().WithContext(doc);
    if (footer->toc_offset >= size || size - footer->toc_offset > sgz::kMaxTocSize) {
      return CorruptError(doc + ": eStargz TOC offset " + std::to_string(footer->toc_offset) +
                          " does not fit the blob");
    }
    BCFS_ASSIGN_OR_RETURN(std::string toc_bytes,
                          layer.fetch_range(footer->toc_offset, size - footer->toc_offset));
    WindowSource window(size, footer->toc_offset, toc_bytes);
    BCFS_ASSIGN_OR_RETURN(sgz::Toc toc, sgz::ReadToc(window, doc, layer.toc_digest));
    for (size_t i = 0; i < toc.entries.size(); ++i) {
      const sgz::Entry& te = toc.entries[i];
      formats::TarEntry e;
      e.path = te.name;
      switch (te.type) {
        case sgz::EntryType::kDir:
          e.type = formats::TarType::kDir;
          break;
        case sgz::EntryType::kReg:
          e.type = formats::TarType::kFile;
          break;
        case sgz::EntryType::kSymlink:
          e.type = formats::TarType::kSymlink;
          break;
        case sgz::EntryType::kHardlink:
          e.type = formats::TarType::kHardlink;
          break;
        case sgz::EntryType::kChar:
          e.type = formats::TarType::kChar;
          break;
        case sgz::EntryType::kBlock:
          e.type = formats::TarType::kBlock;
          break;
        case sgz::EntryType::kFifo:
          e.type = formats::TarType::kFifo;
          break;
      }
      if (te.uid < 0 || te.gid < 0 || te.uid > UINT32_MAX || te.gid > UINT32_MAX ||
          te.dev_major < 0 || te.dev_minor < 0 || te.dev_major > UINT32_MAX ||
          te.dev_minor > UINT32_MAX) {
        warnings->push_back("\"" + te.name + "\": owner or device number out of range");
        continue;
      }
      e.mode = static_cast<uint32_t>(te.mode) & 07777;
      e.uid = static_cast<uint32_t>(te.uid);
      e.gid = static_cast<uint32_t>(te.gid);
      e.mtime_sec = te.mtime / 1000000000;
      int64_t ns = te.mtime % 1000000000;
      if (ns < 0) {
        ns += 1000000000;
        --e.mtime_sec;
      }
      e.mtime_nsec = static_cast<uint32_t>(ns);
      e.link_target = te.link_name;
      e.dev_major = static_cast<uint32_t>(te.dev_major);
      e.dev_minor = static_cast<uint32_t>(te.dev_minor);
      for (const auto& [k, v] : te.xattrs) e.xattrs.emplace_back(k, v);
      if (te.type == sgz::EntryType::kReg) {
        e.size = te.size;
        e.data_offset = i;
      }
      entries->push_back(std::move(e));
    }
    layer.toc = std::make_shared<const sgz::Toc>(std::move(toc));
    ++layer.counters->toc_listed;
    LOG_DEBUG(doc << ": listed from its eStargz TOC (" << entries->size() << " entries)");
    return OkStatus();
  }

  // Reads are served from the derived copy: the seek points (a window each)
  // wait in the index until the copy goes away.
  void DropSeekWhileDerived(LayerState& layer) {
    if (layer.derived_fd.load() < 0 || layer.compression == formats::Compression::kUncompressed ||
        layer.toc != nullptr || index == nullptr) {
      return;
    }
    std::lock_guard<std::mutex> lock(layer.seek_mu);
    layer.seek.reset();
    layer.reload_seek = [this, l = &layer] { return ReloadSeek(*l); };
  }

  // The seek points of an indexed layer whose derived copy went away: from
  // the index, or, when its row is gone, from one more pass over the blob.
  Result<formats::SeekIndex> ReloadSeek(LayerState& layer) {
    const std::string doc = "layer " + layer.blob->digest.ToString();
    {
      std::lock_guard<std::mutex> lock(index_mu);
      auto row = index->LoadLayerIndex(layer.blob->digest, nullptr);
      if (row.ok() && row->has_value() && (*row)->format == kLayerIndexFormat) {
        auto seek = formats::DecodeSeekIndex((*row)->seek_index);
        if (seek.ok() && seek->compression == layer.compression &&
            seek->uncompressed_size == layer.uncompressed_size) {
          return std::move(*seek);
        }
      }
    }
    LOG_INFO(doc << ": its seek points are no longer in the index: reading the blob again");
    BCFS_ASSIGN_OR_RETURN(int fd, layer.BlobFd());
    FdSource src(fd, layer.blob->size);
    formats::SeekPass pass = formats::BuildSeekIndexUntil(
        src, layer.compression, doc, [](std::string_view) -> Result<bool> { return true; });
    if (!pass.status.ok()) return pass.status;
    return std::move(pass.index);
  }

  std::string DerivedPath(const Digest& d) {
    return derived_dir + "/" + d.algorithm() + "/" + d.hex();
  }

  // Lists a layer from the index. False when there is no usable row.
  bool LoadLayer(LayerState& layer, std::shared_ptr<const LayerTable>* table,
                 std::vector<std::string>* warnings, std::vector<std::string>* skipped) {
    if (index == nullptr) return false;
    const Digest& digest = layer.blob->digest;
    // The entries go into the table as they are read (never all of them at once).
    LayerTable::Builder builder(layer.mtime);
    std::vector<std::string> table_skipped;
    bool current = true;  // the row's format is this build's
    // Decoded (and the stored bytes freed) before the entries are read.
    std::optional<Result<formats::SeekIndex>> seek;
    auto decode = [&seek](index::LayerIndexRow& head) {
      if (seek.has_value()) return;
      seek = formats::DecodeSeekIndex(head.seek_index);
      head.seek_index = {};
    };
    Result<std::optional<index::LayerIndexRow>> row = std::optional<index::LayerIndexRow>();
    {
      std::lock_guard<std::mutex> lock(index_mu);
      row = index->LoadLayerIndex(
          digest, [&](index::LayerIndexRow& head, index::LayerEntryRow&& row_entry) -> Status {
            if (head.format != kLayerIndexFormat) {
              current = false;
              return CorruptError("stored in format " + std::to_string(head.format));
            }
            decode(head);
            if (!seek->ok()) return seek->status();
            BCFS_ASSIGN_OR_RETURN(formats::TarEntry e, FromRow(row_entry));
            builder.Add(e, &table_skipped);
            return OkStatus();
          });
    }
    if (!current) return false;
    if (!row.ok()) {
      LOG_WARNING("layer " << digest.ToString() << ": stored index unusable, indexing again: "
                           << row.status().message());
      return false;
    }
    if (!row->has_value() || (*row)->format != kLayerIndexFormat) return false;
    index::LayerIndexRow& r = **row;
    decode(r);  // a layer without entries
    if (!seek->ok()) {
      LOG_WARNING("layer " << digest.ToString() << ": stored index unusable, indexing again: "
                           << seek->status().message());
      return false;
    }
    layer.compression = (*seek)->compression;
    layer.uncompressed_size = (*seek)->uncompressed_size;
    layer.seek = std::make_shared<const formats::SeekIndex>(std::move(**seek));
    size_t pos = 0;
    while (pos < r.warnings.size()) {
      size_t nl = r.warnings.find('\n', pos);
      if (nl == std::string::npos) nl = r.warnings.size();
      warnings->push_back(r.warnings.substr(pos, nl - pos));
      pos = nl + 1;
    }
    // The derived copy an earlier mount kept, checked block by block on use.
    const uint64_t blocks = (layer.uncompressed_size + kDerivedBlock - 1) / kDerivedBlock;
    if (!derived_dir.empty() && !r.derived_digests.empty() &&
        r.derived_digests.size() == blocks * 64) {
      int fd = ::open(DerivedPath(digest).c_str(), O_RDONLY | O_CLOEXEC);
      struct stat stt {};
      if (fd >= 0 && ::fstat(fd, &stt) == 0 &&
          static_cast<uint64_t>(stt.st_size) == layer.uncompressed_size) {
        layer.derived_fd = fd;
        for (uint64_t b = 0; b < blocks; ++b) {
          layer.derived_blocks.push_back(r.derived_digests.substr(b * 64, 64));
        }
        layer.block_ok = std::make_unique<std::atomic<bool>[]>(blocks);
      } else if (fd >= 0) {
        ::close(fd);
      }
    }
    *table = builder.Finish();
    *skipped = std::move(table_skipped);
    ++layer.counters->loaded;
    return true;
  }

  // One decompression pass over a verified layer blob. On error, `table`
  // still holds the entries whose data lies before the damaged spot.
  Status IndexLayer(LayerState& layer, std::shared_ptr<const LayerTable>* table,
                    std::vector<std::string>* warnings, std::vector<std::string>* skipped) {
    BCFS_ASSIGN_OR_RETURN(int fd, layer.BlobFd());
    FdSource src(fd, layer.blob->size);
    const Digest& digest = layer.blob->digest;
    const std::string doc = "layer " + digest.ToString();
    BCFS_ASSIGN_OR_RETURN(formats::Compression c, formats::DetectCompression(src));
    // BuildKit writes eStargz losslessly: the blob is a valid tar.gz whose tar
    // ends before the appended TOC, so it is indexed as gzip.
    layer.compression = c == formats::Compression::kEstargz ? formats::Compression::kGzip : c;
    ++layer.counters->passes;
    formats::TarIndexer tar(doc);
    // A compressed layer is written out uncompressed while it is indexed (the
    // same pass), so later reads are plain preads or splices instead of
    // inflating a span per small file; it is kept for later mounts. A
    // compression bomb must not fill the disk: past 64x the blob (plus
    // 64 MiB) the copy is dropped and reads fall back to seek points.
    int tmp = -1;
    if (layer.compression != formats::Compression::kUncompressed && !derived_dir.empty()) {
      tmp = ::open(derived_dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
      if (tmp < 0) LOG_WARNING("derived copy in " << derived_dir << ": " << std::strerror(errno));
    }
    DerivedWriter derived(tmp, layer.blob->size * 64 + (64u << 20), doc);
    const uint64_t limit = ExpansionLimit(layer.blob->size);
    std::string cut;
    // Entries go into the table as the pass goes (never all of them as
    // TarEntry at once), each once the stream has passed its last data byte:
    // a pass that fails keeps only entries whose data lies before the damage.
    // The index rows are kept, packed, until the pass is done (the index
    // takes them in one transaction).
    LayerTable::Builder builder(layer.mtime);
    PackedRows rows;
    std::deque<std::pair<uint64_t, formats::TarEntry>> pending;  // (end of its data, entry)
    uint64_t fed = 0;
    auto settle = [&](uint64_t upto) {
      while (!pending.empty() && pending.front().first <= upto) {
        builder.Add(pending.front().second, skipped);
        pending.pop_front();
      }
    };
    auto take = [&] {
      for (formats::TarEntry& e : tar.TakeEntries()) {
        uint64_t last = e.data_offset + e.size;
        for (const auto& ch : e.sparse) last = std::max(last, ch.stream_offset + ch.length);
        if (index != nullptr) rows.Add(ToRow(e));
        pending.emplace_back(last, std::move(e));
      }
    };
    formats::SeekPass pass = formats::BuildSeekIndexUntil(
        src, layer.compression, doc, [&](std::string_view chunk) -> Result<bool> {
          derived.Write(chunk);
          BCFS_RETURN_IF_ERROR(tar.Feed(chunk));
          fed += chunk.size();
          take();
          settle(fed);
          // Nothing after the end of the archive is needed (eStargz keeps its TOC there).
          if (tar.done()) return false;
          if (layer.compression != formats::Compression::kUncompressed && tar.offset() > limit) {
            cut = "the tar stream grows past " + std::to_string(limit) + " bytes (1100x the blob " +
                  "plus 1 GiB), indexing stopped there: a compression bomb?";
            return false;
          }
          return true;
        });
    layer.uncompressed_size = pass.index.uncompressed_size;
    LOG_DEBUG(doc << ": " << formats::CompressionName(layer.compression) << ", "
                  << pass.index.uncompressed_size << " bytes, " << pass.index.points.size()
                  << " seek points");
    layer.seek = std::make_shared<const formats::SeekIndex>(std::move(pass.index));
    Status st = pass.status;
    if (st.ok() && !cut.empty()) st = CorruptError(doc + ": " + cut);
    if (st.ok()) st = tar.Finish();
    *warnings = tar.warnings();
    take();
    if (!st.ok()) {
      // Keep what lies wholly before the damage.
      const uint64_t end = layer.uncompressed_size;
      for (const auto& [last, e] : pending) {
        if (last <= end) builder.Add(e, skipped);
      }
      *table = builder.Finish();
      return st;
    }
    settle(UINT64_MAX);
    *table = builder.Finish();
    std::string blocks;
    if (derived.active()) {
      blocks = derived.Finish();
      std::string dir = derived_dir + "/" + digest.algorithm();
      if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
        LOG_WARNING(doc << ": derived copies not kept: mkdir " << dir << ": "
                        << std::strerror(errno));
      }
      layer.derived_fd = derived.Release(DerivedPath(digest));
    }
    if (index != nullptr) {
      index::LayerIndexRow row;
      row.digest = digest;
      row.format = kLayerIndexFormat;
      row.uncompressed_size = layer.uncompressed_size;
      row.seek_index = formats::EncodeSeekIndex(*layer.seek);
      DropSeekWhileDerived(layer);  // not held twice while the index takes them
      for (const auto& w : *warnings) row.warnings += (row.warnings.empty() ? "" : "\n") + w;
      row.derived_digests = blocks;
      row.indexed = Now();
      std::lock_guard<std::mutex> lock(index_mu);
      if (Status saved = index->SaveLayerIndex(row, rows.Reader()); !saved.ok()) {
        LOG_WARNING(doc << ": index not kept: " << saved.message());
      }
    }
    return OkStatus();
  }

  // Merges a snapshot folder on first use: every layer of its chain is indexed
  // first, then merged bottom to top with overlay rules (a `.wh.<name>` or
  // `.wh..wh..opq` hides only what lower layers put there, whatever the tar
  // order). Files, symlinks and devices are the layers' own nodes; merged
  // directories are new nodes.
  // Like EnsureExpanded, a layer whose blob cannot be had now leaves the
  // snapshot unmerged: the error is returned and the next use tries again.
  // Fills a ref folder on its first use (see Node::fill). Nodes of a
  // folder are added once; readers of `children` take nodes_mu shared.
  void EnsureFilled(Node* n) {
    if (n == nullptr || n->filled.load(std::memory_order_acquire)) return;
    std::lock_guard<std::mutex> filling(n->fill_mu);
    std::unique_lock<std::shared_mutex> lock(nodes_mu);
    FillNow(n);
  }

  // Under the exclusive nodes lock: fills n unless it is (a refresh may have
  // filled or replaced it meanwhile). The fill may fill other folders too.
  void FillNow(Node* n) {
    if (n->filled.load(std::memory_order_acquire) || !n->fill) return;
    // A copy: the fill may clear n->fill (blobs/ and layers/ clear both).
    // Until it returns, n->fill is set: Add does not count n's subfolders
    // (a folder being filled counts them from the start).
    const std::function<void(Node*)> fill = n->fill;
    fill(n);
    n->fill = nullptr;
    n->filled.store(true, std::memory_order_release);
  }

  // Before looking `name` up in folder n: a lazy folder makes just that
  // node; any other folder is filled (see EnsureFilled).
  void EnsureChild(Node* n, std::string_view name) {
    if (n == nullptr || n->filled.load(std::memory_order_acquire)) return;
    const std::string key(name);
    {
      std::shared_lock<std::shared_mutex> lock(nodes_mu);
      if (!n->lazy) {
        lock.unlock();
        return EnsureFilled(n);
      }
      if (n->children.count(key) || !n->lazy->Has(key)) return;
    }
    std::unique_lock<std::shared_mutex> lock(nodes_mu);
    MakeLazy(n, key);
  }

  Status EnsureMerged(Node* snap) {
    if (snap == nullptr || snap->chain.empty()) return OkStatus();
    if (snap->merged_done.load(std::memory_order_acquire)) return OkStatus();
    std::lock_guard<std::mutex> merging(snap->merge_mu);
    if (snap->merged_done.load(std::memory_order_acquire)) return OkStatus();
    std::string errors;
    for (Node* layer_dir : snap->chain) {
      BCFS_RETURN_IF_ERROR(EnsureExpanded(layer_dir));
      const LayerTable& t = *layer_dir->layer->table;
      if (!layer_dir->layer->error.empty() &&
          t.ChildBegin(LayerTable::kRoot) == t.ChildEnd(LayerTable::kRoot)) {
        errors += (errors.empty() ? "" : "; ") + layer_dir->layer->error;
      }
    }
    std::unique_lock<std::shared_mutex> lock(nodes_mu);
    for (Node* layer_dir : snap->chain) MergeDir(snap, *layer_dir->layer, LayerTable::kRoot);
    if (!errors.empty()) snap->xattrs["error"] = errors;
    snap->merged_done.store(true, std::memory_order_release);
    return OkStatus();
  }

  // Under the exclusive nodes lock: overlays directory `upper` of a layer's
  // table onto `merged`.
  void MergeDir(Node* merged, const LayerState& layer, uint32_t upper) {
    const LayerTable& t = *layer.table;
    auto remove = [&](const std::string& name) {
      auto it = merged->children.find(name);
      if (it == merged->children.end()) return;
      Node* old = GetLocked(it->second);
      if (old != nullptr && old->kind == Kind::kDir) --merged->subdirs;
      merged->children.erase(it);
    };
    const uint32_t begin = t.ChildBegin(upper), end = t.ChildEnd(upper);
    // Whiteouts first: they hide lower entries, not this layer's own.
    for (uint32_t c = begin; c < end; ++c) {
      const std::string_view name = t.Name(c);
      if (name == ".wh..wh..opq") {
        merged->children.clear();
        merged->subdirs = 0;
      } else if (name.starts_with(".wh.")) {
        remove(std::string(name.substr(4)));
      }
    }
    for (uint32_t c = begin; c < end; ++c) {
      const std::string name(t.Name(c));
      if (name.starts_with(".wh.")) continue;
      const uint32_t src = t.Child(c);
      if (t.KindOf(src) != Kind::kDir) {
        remove(name);
        merged->children[name] = TableIno(layer.slot, src);
        continue;
      }
      Node* dst = nullptr;
      if (auto it = merged->children.find(name); it != merged->children.end()) {
        Node* existing = GetLocked(it->second);
        // Only a directory this snapshot made can take more entries.
        if (existing != nullptr && existing->kind == Kind::kDir &&
            existing->parent == merged->ino && existing->layer == nullptr &&
            existing->content == Content::kNone && existing->chain.empty()) {
          dst = existing;
        } else {
          remove(name);
        }
      }
      const bool fresh = dst == nullptr;
      const Attr a = t.AttrOf(src, 0);
      if (fresh) dst = Add(merged, name, Kind::kDir, a.mtime, CachePolicy::kImmutable);
      // A directory the upper tar only implies keeps the lower one's metadata
      // (as containerd's apply does); a listed one brings its own.
      if (fresh || !t.Implied(src)) {
        dst->mode = a.mode;
        dst->uid = a.uid;
        dst->gid = a.gid;
        dst->mtime = a.mtime;
        dst->raw_xattrs = t.Xattrs(src);
      }
      MergeDir(dst, layer, src);
    }
  }

  Attr AttrOf(const Node& n) {
    Attr a;
    a.ino = n.ino;
    a.kind = n.kind;
    a.mode = n.mode;
    a.mtime = n.mtime;
    a.cache = n.cache;
    a.uid = n.uid;
    a.gid = n.gid;
    switch (n.kind) {
      case Kind::kDir:
        a.nlink = 2 + n.subdirs;
        // An unindexed layer folder does not know its subdirectories yet: 1
        // tells find(1) not to trust the count (as btrfs and others do).
        if ((n.layer && !n.layer->expanded.load(std::memory_order_acquire)) ||
            (!n.chain.empty() && !n.merged_done.load(std::memory_order_acquire))) {
          a.nlink = 1;
          a.cache = CachePolicy::kDirect;  // not cached: the real count comes once indexed
        }
        break;
      case Kind::kCharDev:
      case Kind::kBlockDev:
      case Kind::kFifo:
        break;
      case Kind::kSymlink:
        a.size = n.target.size();
        break;
      case Kind::kFile:
        if (n.content == Content::kBytes)
          a.size = n.bytes->size();
        else if (n.content == Content::kBlob)
          a.size = n.blob->size;
        else if (n.content == Content::kStatus)
          a.size = StatusJson().size();
        else if (n.content == Content::kMetrics)
          a.size = metrics::Global().Render().size();
        else if (n.content == Content::kLazy)
          a.size = const_cast<Node&>(n).Rendered()->size();
        break;
    }
    return a;
  }
};

Tree::Tree() : impl_(std::make_unique<Impl>()) {}
Tree::~Tree() = default;

Result<std::unique_ptr<Tree>> Tree::Build(std::vector<SourceInput> sources, index::Index* index,
                                          store::ContentStore* store, std::string derived_dir,
                                          std::string catalog_cache) {
  std::unique_ptr<Tree> t(new Tree());
  Impl& im = *t->impl_;
  im.sources = std::move(sources);
  im.index = index;
  im.store = store;
  im.derived_dir = std::move(derived_dir);
  im.catalog_cache = std::move(catalog_cache);
  im.mount_time = Now();
  auto root = std::make_unique<Node>();
  root->ino = kRootIno;
  root->parent = kRootIno;
  root->kind = Kind::kDir;
  root->mode = 0555;
  root->mtime = im.mount_time;
  Node* r = root.get();
  im.nodes[kRootIno] = std::move(root);
  for (size_t i = 0; i < im.sources.size(); ++i) {
    const std::string& name = im.sources[i].name;
    if (name.empty() || name[0] == '.' || name.find('/') != std::string::npos ||
        r->children.count(name)) {
      return InvalidArgumentError("source folder name \"" + name + "\" is not usable");
    }
    im.infos.push_back(std::make_shared<const catalog::SourceInfo>(std::move(im.sources[i].info)));
    im.refresh_errors.emplace_back();
    im.synthesized_docs.emplace_back();
    im.refreshed_at.push_back(im.mount_time);
    im.BuildSource(r, i, nullptr, im.infos[i]);
  }
  Node* meta = im.Add(r, ".buildcachefs", Kind::kDir, im.mount_time, CachePolicy::kDirect);
  Node* status = im.Add(meta, "status.json", Kind::kFile, im.mount_time, CachePolicy::kDirect);
  status->content = Content::kStatus;
  Node* prom = im.Add(meta, "metrics", Kind::kFile, im.mount_time, CachePolicy::kDirect);
  prom->content = Content::kMetrics;
  return t;
}

Result<Attr> Tree::Lookup(uint64_t parent, std::string_view name) {
  Impl::Target t = impl_->Find(parent);
  Node* p = t.node;
  impl_->EnsureChild(p, name);
  BCFS_RETURN_IF_ERROR(impl_->EnsureExpanded(p));
  BCFS_RETURN_IF_ERROR(impl_->EnsureMerged(p));
  // A layer folder shows its table's root.
  if (p != nullptr && p->layer != nullptr) t = Impl::TableTarget(p->layer, LayerTable::kRoot);
  if (t.layer != nullptr) {
    const LayerTable& table = *t.layer->table;
    if (table.KindOf(t.record) != Kind::kDir) return NotFoundError("no such directory");
    const uint32_t c = table.Lookup(t.record, name);
    if (c == LayerTable::kNone) return NotFoundError(std::string(name) + ": no such entry");
    return impl_->AttrOf(Impl::TableTarget(t.layer, c));
  }
  if (p == nullptr || p->kind != Kind::kDir) return NotFoundError("no such directory");
  Impl::Target child;
  {
    std::shared_lock<std::shared_mutex> lock(impl_->nodes_mu);
    auto it = p->children.find(std::string(name));
    if (it != p->children.end()) child = impl_->FindLocked(it->second);
  }
  if (!child.found()) return NotFoundError(std::string(name) + ": no such entry");
  return impl_->AttrOf(child);
}

Result<Attr> Tree::GetAttr(uint64_t ino) {
  Impl::Target t = impl_->Find(ino);
  if (!t.found()) return NotFoundError("no such inode");
  return impl_->AttrOf(t);
}

Result<std::vector<DirEntry>> Tree::ReadDir(uint64_t ino) {
  Impl::Target t = impl_->Find(ino);
  if (!t.found()) return NotFoundError("no such inode");
  Node* n = t.node;
  if (n != nullptr) {
    if (n->kind != Kind::kDir) return InvalidArgumentError("not a directory");
    impl_->EnsureFilled(n);
    BCFS_RETURN_IF_ERROR(impl_->EnsureExpanded(n));
    BCFS_RETURN_IF_ERROR(impl_->EnsureMerged(n));
    if (n->layer != nullptr) t = Impl::TableTarget(n->layer, LayerTable::kRoot);
  }
  std::vector<DirEntry> out;
  if (t.layer != nullptr) {
    const LayerTable& table = *t.layer->table;
    if (table.KindOf(t.record) != Kind::kDir) return InvalidArgumentError("not a directory");
    const uint32_t begin = table.ChildBegin(t.record), end = table.ChildEnd(t.record);
    out.reserve(end - begin);
    for (uint32_t c = begin; c < end; ++c) {
      const uint32_t shown = table.Child(c);
      out.push_back(
          {std::string(table.Name(c)), table.AttrOf(shown, Impl::TableIno(t.layer->slot, shown))});
    }
    return out;
  }
  std::vector<std::pair<std::string, Impl::Target>> children;
  {
    std::shared_lock<std::shared_mutex> lock(impl_->nodes_mu);
    children.reserve(n->children.size());
    for (const auto& [name, child] : n->children) {
      children.emplace_back(name, impl_->FindLocked(child));
    }
  }
  out.reserve(children.size());
  for (auto& [name, child] : children) out.push_back({std::move(name), impl_->AttrOf(child)});
  return out;
}

Result<std::string> Tree::ReadLink(uint64_t ino) {
  Impl::Target t = impl_->Find(ino);
  if (!t.found()) return NotFoundError("no such inode");
  if (t.layer != nullptr) {
    const LayerTable& table = *t.layer->table;
    if (table.KindOf(t.record) != Kind::kSymlink) return InvalidArgumentError("not a symlink");
    return table.Target(t.record);
  }
  Node* n = t.node;
  if (n->kind != Kind::kSymlink) return InvalidArgumentError("not a symlink");
  return n->target;
}

Result<std::vector<std::string>> Tree::ListXattrs(uint64_t ino) {
  Impl::Target t = impl_->Find(ino);
  if (!t.found()) return NotFoundError("no such inode");
  std::set<std::string> names;
  if (t.layer != nullptr) {
    // Layer entries have the tar's own attributes and no user.buildcachefs.* ones.
    for (const auto& [k, v] : t.layer->table->Xattrs(t.record)) names.insert(k);
    return std::vector<std::string>(names.begin(), names.end());
  }
  Node* n = t.node;
  for (const auto& [k, v] : n->raw_xattrs) names.insert(k);
  for (const auto& [k, v] : n->xattrs) names.insert(std::string(kXattrPrefix) + k);
  if (n->content == Content::kBlob) names.insert(std::string(kXattrPrefix) + "cached");
  if (!impl_->ErrorOf(*n).empty()) names.insert(std::string(kXattrPrefix) + "error");
  return std::vector<std::string>(names.begin(), names.end());
}

Result<std::string> Tree::GetXattr(uint64_t ino, std::string_view name) {
  Impl::Target t = impl_->Find(ino);
  if (!t.found()) return NotFoundError("no such inode");
  if (t.layer != nullptr) {
    for (const auto& [k, v] : t.layer->table->Xattrs(t.record)) {
      if (k == name) return v;
    }
    return NotFoundError("no such attribute");
  }
  Node* n = t.node;
  for (const auto& [k, v] : n->raw_xattrs) {
    if (k == name) return v;
  }
  if (name.substr(0, kXattrPrefix.size()) != kXattrPrefix)
    return NotFoundError("no such attribute");
  std::string key(name.substr(kXattrPrefix.size()));
  if (key == "error") {
    std::string e = impl_->ErrorOf(*n);
    if (e.empty()) return NotFoundError("no such attribute");
    return e;
  }
  if (key == "cached" && n->content == Content::kBlob && impl_->store != nullptr &&
      !impl_->sources[n->blob->source].backend->CheapStat()) {
    return std::to_string(impl_->store->CachedBytes(n->blob->digest));
  }
  if (key == "cached" && n->content == Content::kBlob) {
    // Local sources hold every present blob whole.
    return std::to_string(n->blob->static_error.empty() ? n->blob->size : 0);
  }
  auto it = n->xattrs.find(key);
  if (it == n->xattrs.end()) return NotFoundError("no such attribute");
  return it->second;
}

Result<std::unique_ptr<OpenFile>> Tree::Open(uint64_t ino) {
  Impl::Target t = impl_->Find(ino);
  if (!t.found()) return NotFoundError("no such inode");
  Node* n = t.node;
  if (n == nullptr ? t.layer->table->KindOf(t.record) != Kind::kFile : n->kind != Kind::kFile) {
    return InvalidArgumentError("not a file");
  }
  // Opens are accesses (DESIGN.md §2): of the blob, the layer, the document.
  Digest accessed;
  if (n == nullptr) {
    accessed = t.layer->blob->digest;
  } else if (n->content == Content::kBlob) {
    accessed = n->blob->digest;
  } else if (auto it = n->xattrs.find("digest"); it != n->xattrs.end()) {
    if (auto d = Digest::Parse(it->second); d.ok()) accessed = *d;
  }
  if (!accessed.empty() && impl_->track_accesses.load(std::memory_order_relaxed)) {
    impl_->accesses.Touch(accessed, Now());
  }
  auto pinned = [&](std::unique_ptr<OpenFile> f) -> std::unique_ptr<OpenFile> {
    Impl* im = impl_.get();
    im->Pin(accessed);
    return std::make_unique<PinnedFile>(std::move(f),
                                        [im, accessed] { im->Unpin(accessed, /*closed=*/true); });
  };
  if (n == nullptr) {
    const LayerTable& table = *t.layer->table;
    return pinned(std::make_unique<LayerFile>(t.layer, table.DataOffset(t.record),
                                              table.DataSize(t.record), table.Sparse(t.record)));
  }
  switch (n->content) {
    case Content::kBytes:
      return std::unique_ptr<OpenFile>(new BytesFile(n->bytes));
    case Content::kLazy:
      return std::unique_ptr<OpenFile>(new BytesFile(n->Rendered()));
    case Content::kStatus:
      return std::unique_ptr<OpenFile>(
          new BytesFile(std::make_shared<const std::string>(impl_->StatusJson())));
    case Content::kMetrics:
      return std::unique_ptr<OpenFile>(
          new BytesFile(std::make_shared<const std::string>(metrics::Global().Render())));
    case Content::kBlob: {
      auto fd = impl_->OpenVerified(*n->blob);
      if (!fd.ok())
        return fd.status().code() == Code::kNotFound ? Status(Code::kCorrupt, fd.status().message())
                                                     : fd.status();
      return pinned(std::make_unique<FdFile>(*fd, n->blob->size));
    }
    case Content::kNone:
      break;
  }
  return InternalError("file without content");
}

Status Tree::FlushAccesses() {
  if (impl_->index == nullptr) return OkStatus();
  std::lock_guard<std::mutex> lock(impl_->index_mu);
  return impl_->accesses.Flush(*impl_->index);
}

void Tree::SetAccessTracking(bool on) { impl_->track_accesses.store(on); }

std::set<Digest> Tree::PinnedDigests() {
  std::set<Digest> out;
  {
    std::lock_guard<std::mutex> lock(impl_->hooks_mu);
    for (const auto& [d, n] : impl_->pins) out.insert(d);
  }
  // An indexed layer's blob and derived copy are not pinned by the tree's
  // own file descriptors: Evicted closes them while no file of it is open.
  return out;
}

void Tree::SetAfterFetch(std::function<void()> hook) {
  std::lock_guard<std::mutex> lock(impl_->hooks_mu);
  impl_->after_fetch = std::move(hook);
}

void Tree::SetFetchBlock(std::string reason) {
  std::lock_guard<std::mutex> lock(impl_->hooks_mu);
  impl_->fetch_block = std::move(reason);
}

void Tree::SetInvalidator(std::function<void(uint64_t)> invalidate) {
  std::lock_guard<std::mutex> lock(impl_->hooks_mu);
  impl_->invalidator = std::move(invalidate);
}

void Tree::Evicted(const std::vector<Digest>& digests) {
  // The kernel's cache of these blobs is left alone: its pages hold the same
  // verified, immutable bytes, and the next open fetches and verifies again
  // anyway. Invalidating pages here could deadlock: the GC runs on FUSE
  // worker threads (after a fetch), and dropping a page waits for a read of it
  // that may be queued behind those very workers.
  impl_->ReleaseLayers(digests, /*blob=*/true);
}

void Tree::SetEntryInvalidator(std::function<void(uint64_t, const std::string&)> invalidate) {
  std::lock_guard<std::mutex> lock(impl_->hooks_mu);
  impl_->entry_invalidator = std::move(invalidate);
}

RefreshReport Tree::Refresh() {
  std::lock_guard<std::mutex> serial(impl_->refresh_mu);
  RefreshReport report;
  for (size_t i = 0; i < impl_->sources.size(); ++i) {
    Status st = impl_->RefreshSource(i, &report);
    if (!st.ok()) report.errors.push_back(st.message());
  }
  std::lock_guard<std::mutex> lock(impl_->mu);
  report.generation = ++impl_->refresh_generation;
  impl_->last_refresh = Now();
  return report;
}

uint64_t Tree::RefreshGeneration() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->refresh_generation;
}

void Tree::DerivedEvicted(const std::vector<Digest>& digests) {
  impl_->ReleaseLayers(digests, /*blob=*/false);
}

void Tree::SetStatusExtra(std::function<std::string()> extra) {
  std::lock_guard<std::mutex> lock(impl_->hooks_mu);
  impl_->status_extra = std::move(extra);
}

Result<Attr> Tree::Resolve(std::string_view path) {
  uint64_t ino = kRootIno;
  size_t pos = 0;
  while (pos < path.size()) {
    size_t slash = path.find('/', pos);
    std::string_view part =
        path.substr(pos, slash == std::string_view::npos ? std::string_view::npos : slash - pos);
    pos = slash == std::string_view::npos ? path.size() : slash + 1;
    if (part.empty()) continue;
    BCFS_ASSIGN_OR_RETURN(Attr a, Lookup(ino, part));
    ino = a.ino;
  }
  return GetAttr(ino);
}

size_t Tree::NodeCount() const {
  std::shared_lock<std::shared_mutex> lock(impl_->nodes_mu);
  size_t n = impl_->nodes.size();
  for (const auto& [slot, layer] : impl_->tables) n += layer->table->size() - 1;
  return n;
}

}  // namespace bcfs::tree
