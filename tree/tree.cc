#include "tree/tree.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <list>
#include <nlohmann/json.hpp>
#include <set>
#include <shared_mutex>
#include <unordered_map>

#include "backends/naming.h"
#include "core/log.h"
#include "formats/compression.h"
#include "formats/tar.h"

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
enum class Content { kNone, kBytes, kBlob, kStatus, kLazy, kLayerFile };

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

// One layer blob shown as a directory: indexed once, on first use.
struct LayerState {
  std::shared_ptr<BlobRef> blob;
  TimeNs mtime = 0;
  std::mutex mu;  // serializes the indexing of this layer
  std::atomic<bool> expanded{false};
  // Set once under `mu` before `expanded`; read-only afterwards.
  int fd = -1;          // the verified blob, kept open while the tree lives
  int derived_fd = -1;  // the uncompressed tar stream, when a derived copy was made
  formats::Compression compression = formats::Compression::kUncompressed;
  formats::SeekIndex index;
  std::string error;  // why it could not be indexed, or which entries were skipped

  // Recently decompressed spans (between two seek points), most recent first:
  // reading many small files in tar order would otherwise inflate the same
  // span once per file.
  static constexpr size_t kCachedSpans = 8;
  static constexpr uint64_t kMaxCachedSpan = 16u << 20;
  std::mutex cache_mu;
  std::list<std::pair<size_t, std::shared_ptr<const std::string>>> spans;  // GUARDED_BY(cache_mu)

  ~LayerState() {
    if (fd >= 0) ::close(fd);
    if (derived_fd >= 0) ::close(derived_fd);
  }
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
  std::map<std::string, uint64_t> children;  // directories, by name
  uint64_t subdirs = 0;
  std::string target;  // symlinks
  Content content = Content::kNone;
  std::shared_ptr<const std::string> bytes;   // kBytes
  std::shared_ptr<BlobRef> blob;              // kBlob
  std::map<std::string, std::string> xattrs;  // without the user.buildcachefs. prefix
  // Inside layers: the tar's own metadata.
  uint32_t uid = 0, gid = 0;
  uint64_t rdev = 0;
  uint64_t links = 1;  // names of a file (hard links share the node)
  std::vector<std::pair<std::string, std::string>> raw_xattrs;  // full names, from the tar
  std::shared_ptr<LayerState> layer;  // layer folders, and files in layers (kLayerFile)
  // Snapshot folders: the layer folders of the chain, bottom first; merged on first use.
  bool implied = false;  // a directory a layer's tar implies without listing it
  std::vector<Node*> chain;
  std::once_flag merged;
  std::atomic<bool> merged_done{false};
  uint64_t data_offset = 0, data_size = 0;  // kLayerFile: where the bytes are in the tar stream
  std::vector<formats::TarSparseChunk> sparse;
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
    if (sparse_.empty() && layer_->derived_fd >= 0) {
      span.fd = layer_->derived_fd;
      span.fd_offset = offset_ + offset;
      span.length = len;
      return span;
    }
    if (sparse_.empty() && layer_->compression == formats::Compression::kUncompressed) {
      span.fd = layer_->fd;
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
  Status StreamRead(uint64_t at, std::span<char> out) {
    if (layer_->derived_fd >= 0) {
      FdSource derived(layer_->derived_fd, layer_->index.uncompressed_size);
      return derived.ReadAt(at, out);
    }
    FdSource src(layer_->fd, layer_->blob->size);
    if (layer_->compression == formats::Compression::kUncompressed) return src.ReadAt(at, out);
    const auto& points = layer_->index.points;
    size_t done = 0;
    while (done < out.size()) {
      const uint64_t pos = at + done;
      // The span holding pos: from the last seek point at or before it to the next.
      auto it = std::upper_bound(
          points.begin(), points.end(), pos,
          [](uint64_t v, const formats::SeekPoint& p) { return v < p.out_offset; });
      if (it == points.begin()) {
        return formats::ReadUncompressed(src, layer_->index, pos, out.subspan(done));
      }
      const size_t idx = static_cast<size_t>(it - points.begin()) - 1;
      const uint64_t start = points[idx].out_offset;
      const uint64_t end = it == points.end() ? layer_->index.uncompressed_size : it->out_offset;
      if (end <= pos || end - start > LayerState::kMaxCachedSpan) {
        return formats::ReadUncompressed(src, layer_->index, pos, out.subspan(done));
      }
      BCFS_ASSIGN_OR_RETURN(std::shared_ptr<const std::string> span, Span(src, idx, start, end));
      const size_t n = static_cast<size_t>(std::min<uint64_t>(out.size() - done, end - pos));
      std::memcpy(out.data() + done, span->data() + (pos - start), n);
      done += n;
    }
    return OkStatus();
  }

  Result<std::shared_ptr<const std::string>> Span(FdSource& src, size_t idx, uint64_t start,
                                                  uint64_t end) {
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
    BCFS_RETURN_IF_ERROR(
        formats::ReadUncompressed(src, layer_->index, start, std::span<char>(bytes)));
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
  std::vector<SourceInput> sources;
  // Nodes are created by Build and, later, when a layer is indexed; readers
  // take nodes_mu shared, indexing takes it exclusive to insert.
  std::shared_mutex nodes_mu;
  std::unordered_map<uint64_t, std::unique_ptr<Node>> nodes;  // GUARDED_BY(nodes_mu)
  index::Index* index = nullptr;
  store::ContentStore* store = nullptr;
  std::string derived_dir;
  TimeNs mount_time = 0;

  std::mutex index_mu;  // guards *index (one thread at a time)

  // Runtime state of blobs: errors found at open time, verified identities and
  // in-flight verifications (single flight: concurrent opens hash once).
  std::mutex mu;
  std::condition_variable cv;
  std::map<std::pair<size_t, Digest>, std::string> errors;            // GUARDED_BY(mu)
  std::map<std::pair<size_t, Digest>, index::FileIdentity> verified;  // GUARDED_BY(mu)
  std::set<std::pair<size_t, Digest>> verifying;                      // GUARDED_BY(mu)

  // ---- building ----
  uint64_t InoFor(const std::string& path) {
    std::string key = path;
    for (int salt = 0;; ++salt) {
      Digest d = Digest::Sha256Of(key);
      uint64_t ino = std::stoull(d.hex().substr(0, 16), nullptr, 16) & 0x7fffffffffffffffULL;
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
    if (kind == Kind::kDir) ++parent->subdirs;
    nodes[raw->ino] = std::move(node);
    return raw;
  }

  Node* AddBytes(Node* parent, const std::string& name, std::string bytes, TimeNs mtime,
                 CachePolicy cache) {
    Node* n = Add(parent, name, Kind::kFile, mtime, cache);
    n->content = Content::kBytes;
    n->bytes = std::make_shared<const std::string>(std::move(bytes));
    return n;
  }

  // Adds refs/<ref>/ or history/<hex>/ for one ref.
  void AddRefDir(Node* parent, const std::string& name, const catalog::RefInfo& ref,
                 const std::map<std::string, std::string>& source_x, Node* blobs_dir,
                 TimeNs blob_mtime_default, const std::map<Digest, backends::BlobStat>& stats,
                 const std::map<Digest, Node*>& layer_dirs) {
    TimeNs mtime = ref.modified ? ref.modified : blob_mtime_default;
    CachePolicy policy = ref.history ? CachePolicy::kImmutable : CachePolicy::kShort;
    Node* dir = Add(parent, name, Kind::kDir, mtime, policy);
    std::map<std::string, std::string> x = source_x;
    x["ref"] = ref.name;
    dir->xattrs = x;
    dir->xattrs["digest"] = ref.descriptor.digest.ToString();
    std::string errors;
    for (const auto& e : ref.errors) errors += (errors.empty() ? "" : "; ") + e;
    if (!errors.empty()) dir->xattrs["error"] = errors;

    if (!ref.manifest_bytes.empty()) {
      Node* m = AddBytes(dir, "manifest.json", ref.manifest_bytes, mtime, policy);
      m->xattrs = x;
      m->xattrs["digest"] = ref.descriptor.digest.ToString();
      m->xattrs["mediatype"] = ref.media_type;
    }
    if (!ref.config_bytes.empty()) {
      const bool is_inline = ref.shape == "inline";
      std::string config = is_inline ? SynthesizeInlineConfig(ref) : ref.config_bytes;
      Digest digest = is_inline ? Digest::Sha256Of(config) : ref.config.digest;
      TimeNs cmtime = mtime;
      if (is_inline) {
        cmtime = ref.created ? ref.created : mtime;
      } else if (auto st = stats.find(ref.config.digest); st != stats.end()) {
        cmtime = st->second.mtime;
      }
      Node* c = AddBytes(dir, "cache-config.json", config, cmtime, policy);
      c->xattrs = x;
      c->xattrs["digest"] = digest.ToString();
      c->xattrs["mediatype"] = std::string(formats::media::kCacheConfig);
      if (is_inline) {
        c->xattrs["synthesized"] = "1";
        Node* r = AddBytes(dir, "inline-records.json", ref.inline_records_json, cmtime, policy);
        r->xattrs = x;
        r->xattrs["synthesized"] = "1";
        // Synthesized documents are served under blobs/ too (DESIGN.md §1.5).
        if (!blobs_dir->children.count(digest.hex())) {
          Node* b = AddBytes(blobs_dir, digest.hex(), config, cmtime, CachePolicy::kImmutable);
          b->xattrs = source_x;
          b->xattrs["digest"] = digest.ToString();
          b->xattrs["mediatype"] = std::string(formats::media::kCacheConfig);
          b->xattrs["synthesized"] = "1";
          b->xattrs["cached"] = std::to_string(config.size());
        }
      }
    }
    if (!ref.shape.empty()) {
      Node* r = Add(dir, "records.json", Kind::kFile, mtime, policy);
      r->content = Content::kLazy;
      r->render = [&ref] { return RecordsJson(ref); };  // sources outlive the nodes
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
          auto folder = layer_dirs.find(l.blob);
          if (l.diff_id.empty() || folder == layer_dirs.end()) {
            usable = false;
            break;
          }
          chain_id = chain_id.empty()
                         ? l.diff_id
                         : Digest::Sha256Of(chain_id.ToString() + " " + l.diff_id.ToString());
          blobs_text += (blobs_text.empty() ? "" : ",") + l.blob.ToString();
          folders.push_back(folder->second);
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

  void BuildSource(Node* root, size_t si) {
    const SourceInput& in = sources[si];
    const catalog::SourceInfo& info = in.info;
    const TimeNs smtime = info.refs_modified ? info.refs_modified : mount_time;
    std::map<std::string, std::string> sx = {{"source", info.location}};

    Node* src = Add(root, in.name, Kind::kDir, smtime, CachePolicy::kShort);
    src->xattrs = sx;
    std::string src_errors;
    for (const auto& e : info.errors) src_errors += (src_errors.empty() ? "" : "; ") + e;
    if (!src_errors.empty()) src->xattrs["error"] = src_errors;

    AddBytes(src, "oci-layout", "{\"imageLayoutVersion\":\"1.0.0\"}", smtime, CachePolicy::kShort)
        ->xattrs = sx;
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
    AddBytes(src, "index.json", index, smtime, CachePolicy::kShort)->xattrs = sx;
    AddBytes(src, "index.json.lock", "", smtime, CachePolicy::kShort)->xattrs = sx;
    Add(src, "ingest", Kind::kDir, smtime, CachePolicy::kShort)->xattrs = sx;

    // blobs/: everything the source holds plus everything a ref reaches.
    Node* blobs_top = Add(src, "blobs", Kind::kDir, smtime, CachePolicy::kShort);
    blobs_top->xattrs = sx;
    std::map<std::string, Node*> alg_dirs;
    auto alg_dir = [&](const std::string& alg) {
      auto it = alg_dirs.find(alg);
      if (it != alg_dirs.end()) return it->second;
      Node* d = Add(blobs_top, alg, Kind::kDir, smtime, CachePolicy::kShort);
      d->xattrs = sx;
      alg_dirs[alg] = d;
      return d;
    };
    Node* sha = alg_dir("sha256");
    std::map<Digest, std::shared_ptr<BlobRef>> blobs;
    std::map<Digest, std::string> media;
    auto reach = [&](const Digest& d, int64_t size, const std::string& mt) {
      if (d.empty()) return;
      auto& b = blobs[d];
      if (!b) {
        b = std::make_shared<BlobRef>();
        b->source = si;
        b->digest = d;
        b->size = size >= 0 ? static_cast<uint64_t>(size) : 0;
      }
      if (!mt.empty() && !media.count(d)) media[d] = mt;
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
    for (const auto& [d, st] : info.blob_stats) {
      if (!blobs.count(d)) reach(d, static_cast<int64_t>(st.size), "");
    }
    // Manifests and configs were read and verified by the catalog: they are
    // served from memory (a registry serves manifests only under /manifests/).
    std::map<Digest, std::shared_ptr<const std::string>> documents;
    for (const auto* list : {&info.refs, &info.history}) {
      for (const auto& r : *list) {
        if (!r.manifest_bytes.empty() &&
            r.manifest_bytes.size() == static_cast<uint64_t>(r.descriptor.size)) {
          documents.try_emplace(r.descriptor.digest,
                                std::make_shared<const std::string>(r.manifest_bytes));
        }
        if (!r.config_bytes.empty() &&
            r.config_bytes.size() == static_cast<uint64_t>(r.config.size)) {
          documents.try_emplace(r.config.digest,
                                std::make_shared<const std::string>(r.config_bytes));
        }
      }
    }
    // A remote source cannot list its blobs: what its refs reach is all there is.
    const bool listed = in.backend->CheapStat();
    std::map<Digest, TimeNs> blob_mtimes;
    for (auto& [d, b] : blobs) {
      Node* dir = d.algorithm() == "sha256" ? sha : alg_dir(d.algorithm());
      TimeNs mt = smtime;
      if (auto st = info.blob_stats.find(d); st != info.blob_stats.end()) {
        mt = st->second.mtime;
      } else if (listed) {
        b->static_error = "blob " + d.ToString() + " is missing from the source";
      }
      blob_mtimes[d] = mt;
      Node* n = Add(dir, d.hex(), Kind::kFile, mt, CachePolicy::kImmutable);
      if (auto doc = documents.find(d); doc != documents.end() && b->static_error.empty()) {
        n->content = Content::kBytes;
        n->bytes = doc->second;
        n->xattrs = sx;
        n->xattrs["digest"] = d.ToString();
        n->xattrs["cached"] = std::to_string(doc->second->size());
        if (media.count(d)) n->xattrs["mediatype"] = media[d];
        continue;
      }
      n->content = Content::kBlob;
      n->blob = b;
      n->xattrs = sx;
      n->xattrs["digest"] = d.ToString();
      if (media.count(d)) n->xattrs["mediatype"] = media[d];
    }

    // layers/<alg>/<hex>/: every layer blob a cache config names, shown as a
    // directory once indexed (on first use).
    Node* layers_top = Add(src, "layers", Kind::kDir, smtime, CachePolicy::kShort);
    layers_top->xattrs = sx;
    std::map<std::string, Node*> layer_alg_dirs;
    std::map<Digest, Node*> layer_dirs;
    for (const auto* list : {&info.refs, &info.history}) {
      for (const auto& r : *list) {
        for (const auto& l : r.layers) {
          const std::string alg = l.blob.algorithm();
          Node*& ad = layer_alg_dirs[alg];
          if (ad == nullptr) {
            ad = Add(layers_top, alg, Kind::kDir, smtime, CachePolicy::kShort);
            ad->xattrs = sx;
          }
          if (ad->children.count(l.blob.hex())) continue;
          Node* ld =
              Add(ad, l.blob.hex(), Kind::kDir, blob_mtimes[l.blob], CachePolicy::kImmutable);
          ld->xattrs = sx;
          ld->xattrs["digest"] = l.blob.ToString();
          if (!l.media_type.empty()) ld->xattrs["mediatype"] = l.media_type;
          layer_dirs[l.blob] = ld;
          ld->layer = std::make_shared<LayerState>();
          ld->layer->blob = blobs[l.blob];
          ld->layer->mtime = blob_mtimes[l.blob];
        }
      }
    }
    if (layer_alg_dirs.empty()) {
      Add(layers_top, "sha256", Kind::kDir, smtime, CachePolicy::kShort)->xattrs = sx;
    }

    Node* refs = Add(src, "refs", Kind::kDir, smtime, CachePolicy::kShort);
    refs->xattrs = sx;
    for (const auto& r : info.refs) {
      AddRefDir(refs, backends::EncodeRefName(r.name), r, sx, sha, smtime, info.blob_stats,
                layer_dirs);
    }
    Node* history = Add(src, "history", Kind::kDir, smtime, CachePolicy::kShort);
    history->xattrs = sx;
    for (const auto& r : info.history) {
      AddRefDir(history, r.descriptor.digest.hex(), r, sx, sha, smtime, info.blob_stats,
                layer_dirs);
    }
  }

  // ---- serving ----
  std::string StatusJson() {
    OJson out;
    out["mounted_at"] = FormatRfc3339(mount_time);
    OJson srcs = OJson::array();
    std::lock_guard<std::mutex> lock(mu);
    for (size_t i = 0; i < sources.size(); ++i) {
      const auto& info = sources[i].info;
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
      s["last_refresh"] = FormatRfc3339(mount_time);
      std::vector<std::string> errors = info.errors, warnings = info.warnings;
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
    return out.dump(2, ' ', false, OJson::error_handler_t::replace) + "\n";
  }

  std::string ErrorOf(const Node& n) {
    if (n.layer && n.content != Content::kLayerFile &&
        n.layer->expanded.load(std::memory_order_acquire) && !n.layer->error.empty()) {
      return n.layer->error;
    }
    if (n.content == Content::kBlob) {
      if (!n.blob->static_error.empty()) return n.blob->static_error;
      std::lock_guard<std::mutex> lock(mu);
      auto it = errors.find({n.blob->source, n.blob->digest});
      if (it != errors.end()) return it->second;
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
    const auto start = std::chrono::steady_clock::now();
    auto fd =
        store->OpenVerified(digest, b.size, [&backend, digest](uint64_t off, std::span<char> out) {
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
        });
    if (!fd.ok()) return Fail(b, fd.status());
    if (cold) {
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      LOG_INFO("source " << sources[b.source].name << ": fetched and verified blob "
                         << digest.ToString() << " (" << b.size << " bytes) in " << secs << " s");
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

  // Indexes a layer folder's tar on first use: the blob is verified (and
  // fetched) first, the tar indexed in one pass that also records seek points,
  // then the nodes are inserted under the exclusive lock. Errors are kept as
  // the folder's user.buildcachefs.error; the folder then stays empty.
  void EnsureExpanded(Node* n) {
    if (n == nullptr || !n->layer || n->content == Content::kLayerFile) return;
    LayerState& layer = *n->layer;
    if (layer.expanded.load(std::memory_order_acquire)) return;
    std::lock_guard<std::mutex> guard(layer.mu);
    if (layer.expanded.load(std::memory_order_acquire)) return;
    std::vector<formats::TarEntry> entries;
    std::vector<std::string> warnings;
    Status st = IndexLayer(layer, &entries, &warnings);
    if (st.ok()) {
      std::unique_lock<std::shared_mutex> lock(nodes_mu);
      InsertLayerEntries(n, entries, &warnings);
    }
    if (!st.ok()) {
      layer.error = st.message();
      LOG_WARNING("source " << sources[layer.blob->source].name << ": layer "
                            << layer.blob->digest.ToString() << ": " << layer.error);
    } else if (!warnings.empty()) {
      std::string joined = "skipped entries:";
      for (const auto& w : warnings) joined += " " + w + ";";
      joined.pop_back();
      layer.error = joined;
    }
    layer.expanded.store(true, std::memory_order_release);
  }

  Status IndexLayer(LayerState& layer, std::vector<formats::TarEntry>* entries,
                    std::vector<std::string>* warnings) {
    auto fd = OpenVerified(*layer.blob);
    if (!fd.ok()) return fd.status();
    layer.fd = *fd;
    FdSource src(layer.fd, layer.blob->size);
    const std::string doc = "layer " + layer.blob->digest.ToString();
    BCFS_ASSIGN_OR_RETURN(formats::Compression c, formats::DetectCompression(src));
    // BuildKit writes eStargz losslessly: the blob is a valid tar.gz whose tar
    // ends before the appended TOC, so it is indexed as gzip.
    layer.compression = c == formats::Compression::kEstargz ? formats::Compression::kGzip : c;
    formats::TarIndexer tar(doc);
    // A compressed layer is written out uncompressed while it is indexed (the
    // same pass), so later reads are plain preads or splices instead of
    // inflating a span per small file. Without room, reads use seek points.
    int derived = -1;
    if (layer.compression != formats::Compression::kUncompressed && !derived_dir.empty()) {
      derived = ::open(derived_dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
      if (derived < 0)
        LOG_WARNING("derived copy in " << derived_dir << ": " << std::strerror(errno));
    }
    uint64_t written = 0;
    // A compression bomb must not fill the disk: past 64x the blob (plus
    // 64 MiB) the copy is dropped and reads fall back to seek points.
    const uint64_t derived_cap = layer.blob->size * 64 + (64u << 20);
    auto index = formats::BuildSeekIndex(src, layer.compression, doc, [&](std::string_view chunk) {
      if (derived >= 0 && written + chunk.size() > derived_cap) {
        LOG_WARNING(doc << ": no derived copy: it would exceed " << derived_cap << " bytes");
        ::close(derived);
        derived = -1;
      }
      if (derived >= 0) {
        size_t off = 0;
        while (off < chunk.size()) {
          ssize_t n = ::pwrite(derived, chunk.data() + off, chunk.size() - off,
                               static_cast<off_t>(written + off));
          if (n < 0 && errno == EINTR) continue;
          if (n <= 0) {
            LOG_WARNING(doc << ": no derived copy (" << std::strerror(errno) << ")");
            ::close(derived);
            derived = -1;
            break;
          }
          off += static_cast<size_t>(n);
        }
        written += chunk.size();
      }
      return tar.done() ? OkStatus() : tar.Feed(chunk);
    });
    if (!index.ok()) {
      if (derived >= 0) ::close(derived);
      return index.status();
    }
    layer.derived_fd = derived;
    layer.index = std::move(*index);
    LOG_DEBUG(doc << ": " << formats::CompressionName(layer.compression) << ", "
                  << layer.index.uncompressed_size << " bytes, " << layer.index.points.size()
                  << " seek points");
    BCFS_RETURN_IF_ERROR(tar.Finish());
    *entries = tar.TakeEntries();
    *warnings = tar.warnings();
    return OkStatus();
  }

  // Merges a snapshot folder on first use: every layer of its chain is indexed
  // first, then merged bottom to top with overlay rules (a `.wh.<name>` or
  // `.wh..wh..opq` hides only what lower layers put there, whatever the tar
  // order). Files, symlinks and devices are the layers' own nodes; merged
  // directories are new nodes.
  void EnsureMerged(Node* snap) {
    if (snap == nullptr || snap->chain.empty()) return;
    std::call_once(snap->merged, [&] {
      std::string errors;
      for (Node* layer_dir : snap->chain) {
        EnsureExpanded(layer_dir);
        if (!layer_dir->layer->error.empty() && layer_dir->children.empty()) {
          errors += (errors.empty() ? "" : "; ") + layer_dir->layer->error;
        }
      }
      std::unique_lock<std::shared_mutex> lock(nodes_mu);
      for (Node* layer_dir : snap->chain) MergeDir(snap, layer_dir);
      if (!errors.empty()) snap->xattrs["error"] = errors;
      snap->merged_done.store(true, std::memory_order_release);
    });
  }

  // Under the exclusive nodes lock: overlays `upper` (a directory of one layer)
  // onto `merged`.
  void MergeDir(Node* merged, Node* upper) {
    auto remove = [&](const std::string& name) {
      auto it = merged->children.find(name);
      if (it == merged->children.end()) return;
      Node* old = GetLocked(it->second);
      if (old != nullptr && old->kind == Kind::kDir) --merged->subdirs;
      merged->children.erase(it);
    };
    // Whiteouts first: they hide lower entries, not this layer's own.
    for (const auto& [name, ino] : upper->children) {
      if (name == ".wh..wh..opq") {
        merged->children.clear();
        merged->subdirs = 0;
      } else if (name.rfind(".wh.", 0) == 0) {
        remove(name.substr(4));
      }
    }
    for (const auto& [name, ino] : upper->children) {
      if (name.rfind(".wh.", 0) == 0) continue;
      Node* src = GetLocked(ino);
      if (src == nullptr) continue;
      if (src->kind != Kind::kDir) {
        remove(name);
        merged->children[name] = ino;
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
      if (fresh) dst = Add(merged, name, Kind::kDir, src->mtime, CachePolicy::kImmutable);
      // A directory the upper tar only implies keeps the lower one's metadata
      // (as containerd's apply does); a listed one brings its own.
      if (fresh || !src->implied) {
        dst->mode = src->mode;
        dst->uid = src->uid;
        dst->gid = src->gid;
        dst->mtime = src->mtime;
        dst->raw_xattrs = src->raw_xattrs;
      }
      MergeDir(dst, src);
    }
  }

  // Under the exclusive nodes lock.
  void InsertLayerEntries(Node* root, const std::vector<formats::TarEntry>& entries,
                          std::vector<std::string>* warnings) {
    const std::shared_ptr<LayerState>& layer = root->layer;
    auto child = [&](Node* dir, const std::string& name) -> Node* {
      auto it = dir->children.find(name);
      return it == dir->children.end() ? nullptr : GetLocked(it->second);
    };
    auto unlink = [&](Node* dir, const std::string& name) {
      Node* old = child(dir, name);
      if (old == nullptr) return;
      if (old->kind == Kind::kDir) --dir->subdirs;
      if (old->links > 1) --old->links;
      dir->children.erase(name);
    };
    auto resolve = [&](const std::string& path) -> Node* {
      Node* cur = root;
      size_t pos = 0;
      while (cur != nullptr && pos <= path.size()) {
        size_t slash = path.find('/', pos);
        std::string part =
            path.substr(pos, slash == std::string::npos ? std::string::npos : slash - pos);
        cur = child(cur, part);
        if (slash == std::string::npos) break;
        pos = slash + 1;
      }
      return cur;
    };
    for (const formats::TarEntry& e : entries) {
      if (e.path.empty()) continue;  // "./": the layer folder itself
      Node* dir = root;
      size_t pos = 0;
      bool ok = true;
      while (true) {
        size_t slash = e.path.find('/', pos);
        if (slash == std::string::npos) break;
        const std::string part = e.path.substr(pos, slash - pos);
        Node* next = child(dir, part);
        if (next != nullptr && next->kind != Kind::kDir) {
          warnings->push_back("\"" + e.path + "\": \"" + part + "\" is not a directory");
          ok = false;
          break;
        }
        if (next == nullptr) {
          // A directory the tar implies without listing it.
          next = Add(dir, part, Kind::kDir, layer->mtime, CachePolicy::kImmutable);
          next->mode = 0755;
          next->implied = true;
        }
        dir = next;
        pos = slash + 1;
      }
      if (!ok) continue;
      const std::string name = e.path.substr(pos);
      if (e.type == formats::TarType::kHardlink) {
        Node* target = resolve(e.link_target);
        if (target == nullptr || target->kind == Kind::kDir) {
          warnings->push_back("\"" + e.path + "\": hard link to missing \"" + e.link_target + "\"");
          continue;
        }
        if (target == child(dir, name)) continue;
        unlink(dir, name);
        dir->children[name] = target->ino;
        ++target->links;
        continue;
      }
      Node* existing = child(dir, name);
      Kind kind = Kind::kFile;
      switch (e.type) {
        case formats::TarType::kDir:
          kind = Kind::kDir;
          break;
        case formats::TarType::kSymlink:
          kind = Kind::kSymlink;
          break;
        case formats::TarType::kChar:
          kind = Kind::kCharDev;
          break;
        case formats::TarType::kBlock:
          kind = Kind::kBlockDev;
          break;
        case formats::TarType::kFifo:
          kind = Kind::kFifo;
          break;
        default:
          kind = Kind::kFile;
          break;
      }
      Node* n = nullptr;
      if (existing != nullptr && existing->kind == Kind::kDir && kind == Kind::kDir) {
        n = existing;  // a later entry for the same directory: its metadata wins
      } else {
        unlink(dir, name);
        n = Add(dir, name, kind, 0, CachePolicy::kImmutable);
      }
      n->implied = false;
      n->mode = e.mode & 07777;
      n->uid = e.uid;
      n->gid = e.gid;
      n->mtime = static_cast<TimeNs>(e.mtime_sec) * 1000000000 + e.mtime_nsec;
      n->raw_xattrs = e.xattrs;
      if (kind == Kind::kSymlink) n->target = e.link_target;
      if (kind == Kind::kCharDev || kind == Kind::kBlockDev) {
        n->rdev = makedev(e.dev_major, e.dev_minor);
      }
      if (kind == Kind::kFile) {
        n->content = Content::kLayerFile;
        n->layer = layer;
        n->data_offset = e.data_offset;
        n->data_size = e.size;
        n->sparse = e.sparse;
      }
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
    a.rdev = n.rdev;
    a.nlink = n.links;
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
        else if (n.content == Content::kLazy)
          a.size = const_cast<Node&>(n).Rendered()->size();
        else if (n.content == Content::kLayerFile)
          a.size = n.data_size;
        break;
    }
    return a;
  }
};

Tree::Tree() : impl_(std::make_unique<Impl>()) {}
Tree::~Tree() = default;

Result<std::unique_ptr<Tree>> Tree::Build(std::vector<SourceInput> sources, index::Index* index,
                                          store::ContentStore* store, std::string derived_dir) {
  std::unique_ptr<Tree> t(new Tree());
  Impl& im = *t->impl_;
  im.sources = std::move(sources);
  im.index = index;
  im.store = store;
  im.derived_dir = std::move(derived_dir);
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
    im.BuildSource(r, i);
  }
  Node* meta = im.Add(r, ".buildcachefs", Kind::kDir, im.mount_time, CachePolicy::kDirect);
  Node* status = im.Add(meta, "status.json", Kind::kFile, im.mount_time, CachePolicy::kDirect);
  status->content = Content::kStatus;
  return t;
}

Result<Attr> Tree::Lookup(uint64_t parent, std::string_view name) {
  Node* p = impl_->Get(parent);
  impl_->EnsureExpanded(p);
  impl_->EnsureMerged(p);
  if (p == nullptr || p->kind != Kind::kDir) return NotFoundError("no such directory");
  auto it = p->children.find(std::string(name));
  if (it == p->children.end()) return NotFoundError(std::string(name) + ": no such entry");
  return impl_->AttrOf(*impl_->Get(it->second));
}

Result<Attr> Tree::GetAttr(uint64_t ino) {
  Node* n = impl_->Get(ino);
  if (n == nullptr) return NotFoundError("no such inode");
  return impl_->AttrOf(*n);
}

Result<std::vector<DirEntry>> Tree::ReadDir(uint64_t ino) {
  Node* n = impl_->Get(ino);
  if (n == nullptr) return NotFoundError("no such inode");
  if (n->kind != Kind::kDir) return InvalidArgumentError("not a directory");
  impl_->EnsureExpanded(n);
  impl_->EnsureMerged(n);
  std::vector<DirEntry> out;
  out.reserve(n->children.size());
  for (const auto& [name, child] : n->children) {
    out.push_back({name, impl_->AttrOf(*impl_->Get(child))});
  }
  return out;
}

Result<std::string> Tree::ReadLink(uint64_t ino) {
  Node* n = impl_->Get(ino);
  if (n == nullptr) return NotFoundError("no such inode");
  if (n->kind != Kind::kSymlink) return InvalidArgumentError("not a symlink");
  return n->target;
}

Result<std::vector<std::string>> Tree::ListXattrs(uint64_t ino) {
  Node* n = impl_->Get(ino);
  if (n == nullptr) return NotFoundError("no such inode");
  std::set<std::string> names;
  for (const auto& [k, v] : n->raw_xattrs) names.insert(k);
  for (const auto& [k, v] : n->xattrs) names.insert(std::string(kXattrPrefix) + k);
  if (n->content == Content::kBlob) names.insert(std::string(kXattrPrefix) + "cached");
  if (!impl_->ErrorOf(*n).empty()) names.insert(std::string(kXattrPrefix) + "error");
  return std::vector<std::string>(names.begin(), names.end());
}

Result<std::string> Tree::GetXattr(uint64_t ino, std::string_view name) {
  Node* n = impl_->Get(ino);
  if (n == nullptr) return NotFoundError("no such inode");
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
  Node* n = impl_->Get(ino);
  if (n == nullptr) return NotFoundError("no such inode");
  if (n->kind != Kind::kFile) return InvalidArgumentError("not a file");
  switch (n->content) {
    case Content::kBytes:
      return std::unique_ptr<OpenFile>(new BytesFile(n->bytes));
    case Content::kLazy:
      return std::unique_ptr<OpenFile>(new BytesFile(n->Rendered()));
    case Content::kStatus:
      return std::unique_ptr<OpenFile>(
          new BytesFile(std::make_shared<const std::string>(impl_->StatusJson())));
    case Content::kBlob: {
      auto fd = impl_->OpenVerified(*n->blob);
      if (!fd.ok())
        return fd.status().code() == Code::kNotFound ? Status(Code::kCorrupt, fd.status().message())
                                                     : fd.status();
      return std::unique_ptr<OpenFile>(new FdFile(*fd, n->blob->size));
    }
    case Content::kLayerFile:
      return std::unique_ptr<OpenFile>(
          new LayerFile(n->layer, n->data_offset, n->data_size, n->sparse));
    case Content::kNone:
      break;
  }
  return InternalError("file without content");
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
  return impl_->nodes.size();
}

}  // namespace bcfs::tree
