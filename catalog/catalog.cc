#include "catalog/catalog.h"

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <unordered_set>

#include "backends/naming.h"
#include "core/units.h"

namespace bcfs::catalog {
namespace {

using formats::Descriptor;
// Every blob of a source listed (sorted) and stat()ed once, up front.
struct Stats {
  const std::vector<Digest>* blobs = nullptr;
  std::vector<std::optional<backends::BlobStat>> stats;  // nullopt: the stat failed

  const backends::BlobStat* Find(const Digest& d) const {
    auto it = std::lower_bound(blobs->begin(), blobs->end(), d);
    if (it == blobs->end() || *it != d) return nullptr;
    const auto& st = stats[static_cast<size_t>(it - blobs->begin())];
    return st ? &*st : nullptr;
  }
};

// A blob's stat: from `known` when it is there, else asked of the backend, so
// that an absent blob fails with the backend's own message.
Result<backends::BlobStat> StatOf(backends::Backend& backend, const Stats* known, const Digest& d) {
  if (known != nullptr) {
    if (const backends::BlobStat* st = known->Find(d)) return *st;
  }
  return backend.StatBlob(d);
}

// Reads and verifies one document named by desc; problems go to ref.errors.
bool ReadDoc(backends::Backend& backend, const Stats* known, const Descriptor& desc,
             const std::string& what, RefInfo& ref, std::string* out) {
  const std::string label = what + " " + desc.digest.ToString();
  if (backend.CheapStat()) {
    auto st = StatOf(backend, known, desc.digest);
    if (!st.ok()) {
      ref.errors.push_back(label + " is missing from the source (" + st.status().message() + ")");
      return false;
    }
    if (desc.size >= 0 && st->size != static_cast<uint64_t>(desc.size)) {
      ref.errors.push_back(label + " is " + std::to_string(st->size) +
                           " bytes but its descriptor says " + std::to_string(desc.size));
      return false;
    }
  }
  auto text = backend.ReadDocument(desc.digest, kMaxDocumentSize);
  if (!text.ok()) {
    ref.errors.push_back(text.status().WithContext("read " + label).message());
    return false;
  }
  if (desc.size >= 0 && text->size() != static_cast<uint64_t>(desc.size)) {
    ref.errors.push_back(label + " is " + std::to_string(text->size()) +
                         " bytes but its descriptor says " + std::to_string(desc.size));
    return false;
  }
  if (text->size() > kBuildKitDocumentLimit) {
    ref.warnings.push_back(label + " is " + FormatBytes(text->size()) +
                           "; BuildKit refuses to import manifests and configs over 1 MiB");
  }
  *out = std::move(*text);
  return true;
}

// Reads one top-level cache blob into ref (name and descriptor already set).
void ReadRef(backends::Backend& backend, const Stats* known, RefInfo& ref) {
  std::string manifest_text;
  if (!ReadDoc(backend, known, ref.descriptor, "manifest", ref, &manifest_text)) return;
  if (backend.CheapStat()) {
    if (auto st = StatOf(backend, known, ref.descriptor.digest); st.ok()) ref.modified = st->mtime;
  }
  const std::string mdoc = "manifest " + ref.descriptor.digest.ToString();
  auto manifest = formats::ParseCacheManifest(manifest_text, ref.descriptor.media_type, mdoc);
  if (!manifest.ok()) {
    ref.errors.push_back(manifest.status().message());
    return;
  }
  ref.shape = std::string(formats::ShapeName(manifest->shape));
  ref.media_type = manifest->media_type;
  ref.config = manifest->config;
  ref.manifest_bytes = manifest_text;
  if (!ref.descriptor.media_type.empty() && ref.descriptor.media_type != manifest->media_type) {
    ref.warnings.push_back("the source describes " + mdoc + " as " + ref.descriptor.media_type +
                           " but it is " + manifest->media_type);
  }
  ref.reaches.push_back(ref.descriptor.digest);
  ref.reaches.push_back(manifest->config.digest);
  for (const auto& l : manifest->layers) ref.reaches.push_back(l.digest);
  ref.total_size =
      static_cast<uint64_t>(ref.descriptor.size) + static_cast<uint64_t>(manifest->config.size);

  std::string config_text;
  const bool is_inline = manifest->shape == formats::Shape::kInline;
  if (!ReadDoc(backend, known, manifest->config, is_inline ? "image config" : "cache config", ref,
               &config_text)) {
    return;
  }
  const std::string cdoc =
      (is_inline ? "image config " : "cache config ") + manifest->config.digest.ToString();
  formats::CacheConfig config;
  if (is_inline) {
    auto ic = formats::ParseInlineCache(config_text, *manifest, cdoc);
    if (!ic.ok()) {
      ref.errors.push_back(ic.status().message());
      return;
    }
    config = std::move(ic->config);
    ref.inline_records_json = std::move(ic->records_json);
  } else {
    auto c = formats::ParseCacheConfig(config_text, cdoc);
    if (!c.ok()) {
      ref.errors.push_back(c.status().message());
      return;
    }
    config = std::move(*c);
  }
  ref.config_bytes = std::move(config_text);

  std::map<Digest, int64_t> stat_cache;  // blob -> size in the source, -1 when absent
  auto source_size = [&](const Digest& d) {
    auto it = stat_cache.find(d);
    if (it != stat_cache.end()) return it->second;
    // A remote source would cost a round trip per layer: its blobs are
    // checked when they are read.
    if (!backend.CheapStat()) return int64_t{-2};
    auto st = StatOf(backend, known, d);
    int64_t size = st.ok() ? static_cast<int64_t>(st->size) : -1;
    stat_cache[d] = size;
    return size;
  };
  std::set<Digest> counted;
  std::unordered_set<Digest> listed;  // the blob set BuildKit decodes against
  for (const auto& l : manifest->layers) listed.insert(l.digest);
  for (size_t i = 0; i < config.layers.size(); ++i) {
    const formats::CacheLayer& cl = config.layers[i];
    LayerInfo li;
    li.position = static_cast<int64_t>(i);
    li.blob = cl.blob;
    li.parent = cl.parent;
    const Descriptor* d = manifest->FindLayer(cl.blob);
    if (d != nullptr && !is_inline) {
      li.size = d->size;
      li.media_type = d->media_type;
      li.compression = formats::LayerCompression(*d);
      if (auto diff = Digest::Parse(d->Annotation(formats::annotation::kUncompressed)); diff.ok()) {
        li.diff_id = *diff;
      }
      if (auto toc = Digest::Parse(d->Annotation(formats::annotation::kStargzToc)); toc.ok()) {
        li.toc_digest = *toc;
      }
      if (auto t = ParseRfc3339(d->Annotation(formats::annotation::kCreatedAt)); t.ok()) {
        li.created = *t;
      }
    } else if (cl.annotations) {
      li.size = cl.annotations->size;
      li.media_type = cl.annotations->media_type;
      Descriptor tmp;
      tmp.media_type = li.media_type;
      if (d != nullptr) tmp.annotations = d->annotations;
      li.compression = formats::LayerCompression(tmp);
      if (auto toc = Digest::Parse(tmp.Annotation(formats::annotation::kStargzToc)); toc.ok()) {
        li.toc_digest = *toc;
      }
      li.diff_id = cl.annotations->diff_id;
      li.created = cl.annotations->created_at;
    } else {
      li.listed = false;
      li.compression = "unknown";
      ref.warnings.push_back("cache config layer " + std::to_string(i) + " names blob " +
                             cl.blob.ToString() +
                             " which the manifest does not list; results using it are dropped");
    }
    li.actual_size = source_size(cl.blob);
    if (li.actual_size == -2) {
      li.actual_size = -1;  // unknown until read
    } else if (li.actual_size < 0) {
      li.present = false;
      ref.warnings.push_back("blob " + cl.blob.ToString() + " (layer " + std::to_string(i) +
                             ") is missing from the source");
    } else if (li.size >= 0 && li.actual_size != li.size) {
      ref.warnings.push_back("blob " + cl.blob.ToString() + " (layer " + std::to_string(i) +
                             ") is " + std::to_string(li.actual_size) +
                             " bytes but its descriptor says " + std::to_string(li.size));
    }
    if (li.listed && li.size > 0 && counted.insert(cl.blob).second) {
      ref.total_size += static_cast<uint64_t>(li.size);
    }
    ref.created = std::max(ref.created, li.created);
    ref.layers.push_back(std::move(li));
  }

  ref.record_count = config.records.size();
  auto decoded = formats::DecodeRecords(
      config, [&](const Digest& d) { return listed.count(d) != 0; }, cdoc);
  if (!decoded.ok()) {
    ref.errors.push_back(decoded.status().message());
    return;
  }
  for (auto& line : decoded->dropped) ref.warnings.push_back(std::move(line));
  for (const auto& r : decoded->records) {
    for (const auto& res : r.results) ref.created = std::max(ref.created, res.created_at);
  }
  ref.records = std::move(decoded->records);
}

// Adds what the top-level blob `root` reaches (itself and the descriptors of
// its manifest) to out; false when it cannot be read.
bool ReachFrom(backends::Backend& backend, const Digest& root, std::set<Digest>& out) {
  out.insert(root);
  auto text = backend.ReadDocument(root, kMaxDocumentSize);
  if (!text.ok()) return false;
  auto m = formats::ParseCacheManifest(*text, "", "manifest " + root.ToString());
  if (!m.ok()) return false;
  out.insert(m->config.digest);
  for (const auto& l : m->layers) out.insert(l.digest);
  return true;
}

}  // namespace

bool SourceInfo::HasErrors() const {
  if (!errors.empty()) return true;
  for (const auto* list : {&refs, &history}) {
    for (const auto& r : *list) {
      if (!r.errors.empty()) return true;
    }
  }
  return false;
}

SourceInfo ReadSource(backends::Backend& backend, const std::string& name,
                      const std::string& type) {
  SourceInfo info;
  info.name = name;
  info.type = type;
  info.location = backend.Describe();
  info.refs_modified = backend.RefsModified();

  // A local source's blobs are listed and stat()ed once, up front, and
  // ReadRef looks its blobs up there: without it every ref stats each of its
  // layers again (1,000 refs of 99 layers: 99,000 stats more).
  std::optional<Result<std::vector<Digest>>> blobs;
  Stats stats;
  if (backend.CheapStat()) {
    blobs = backend.ListBlobs();
    if (blobs->ok()) {
      info.blobs = std::move(**blobs);
      stats.blobs = &info.blobs;
      stats.stats = backend.StatBlobs(info.blobs);
      BCFS_CHECK(stats.stats.size() == info.blobs.size());
    }
  }
  // Found by binary search: ListBlobs sorts (checked, not trusted).
  const Stats* known =
      stats.blobs != nullptr && std::is_sorted(info.blobs.begin(), info.blobs.end()) ? &stats
                                                                                     : nullptr;

  auto refs = backend.ListRefs();
  if (!refs.ok()) {
    info.errors.push_back(refs.status().message());
  } else {
    for (auto& e : *refs) {
      RefInfo ref;
      ref.name = std::move(e.name);
      ref.descriptor = std::move(e.descriptor);
      ref.raw_descriptor = std::move(e.raw_descriptor);
      ref.modified = e.modified;
      ref.synthesized = e.synthesized;
      if (e.error.empty()) {
        ReadRef(backend, known, ref);
      } else {
        ref.errors.push_back(std::move(e.error));
      }
      info.refs.push_back(std::move(ref));
    }
  }

  if (!blobs) blobs = backend.ListBlobs();
  if (!blobs->ok()) {
    if (blobs->status().code() != Code::kUnsupported)
      info.errors.push_back(blobs->status().message());
    return info;
  }
  if (stats.blobs == nullptr) info.blobs = std::move(**blobs);
  // Reachability starts from every entry of the ref list, not only the refs
  // shown (tag=/digest= narrow those): an orphan is what no entry reaches.
  std::set<Digest> reached;
  for (const auto& r : info.refs) reached.insert(r.reaches.begin(), r.reaches.end());
  auto roots = backend.ListRoots();
  if (!roots.ok()) {
    info.warnings.push_back(roots.status().message() +
                            "; history lists every cache manifest in the source and the "
                            "unreferenced blobs are an upper bound");
  } else {
    for (const Digest& root : *roots) {
      if (reached.count(root)) continue;
      if (!ReachFrom(backend, root, reached)) {
        info.warnings.push_back("manifest " + root.ToString() +
                                " is unreadable; the blobs it would reach count as unreferenced");
      }
    }
  }
  std::vector<Digest> unreached;
  for (size_t i = 0; i < info.blobs.size(); ++i) {
    const Digest& d = info.blobs[i];
    Result<backends::BlobStat> st = backends::BlobStat();
    if (stats.blobs == nullptr) {
      st = backend.StatBlob(d);
      if (!st.ok()) continue;
    } else if (stats.stats[i]) {
      st = *stats.stats[i];
    } else {
      continue;  // it could not be stat()ed up front
    }
    info.blob_stats.emplace_hint(info.blob_stats.end(), d, *st);
    ++info.blob_count;
    info.blob_bytes += st->size;
    if (reached.count(d)) continue;
    ++info.unreferenced_count;
    info.unreferenced_bytes += st->size;
    // A cache manifest is a small JSON object; layers are gzip/zstd/tar.
    char first = 0;
    if (st->size == 0 || st->size > kMaxDocumentSize) continue;
    auto n = backend.ReadBlob(d, 0, std::span<char>(&first, 1));
    if (!n.ok() || *n != 1 || first != '{') continue;
    auto text = backend.ReadDocument(d, kMaxDocumentSize);
    if (!text.ok()) continue;
    auto m = formats::ParseCacheManifest(*text, "", "blob " + d.ToString());
    if (!m.ok()) continue;  // a cache config, an image config or other JSON
    RefInfo h;
    h.name = backends::DigestRefName(d);
    h.history = true;
    h.synthesized = st->synthesized;
    h.modified = st->mtime;
    h.descriptor.digest = d;
    h.descriptor.size = static_cast<int64_t>(st->size);
    h.descriptor.media_type = m->media_type;
    if (m->shape == formats::Shape::kInline) {
      // Only an image whose config carries an inline cache is a cache manifest.
      auto cfg = backend.ReadDocument(m->config.digest, kMaxDocumentSize);
      if (!cfg.ok() || !formats::ParseInlineCache(*cfg, *m, "config").ok()) continue;
    }
    ReadRef(backend, known, h);
    info.history.push_back(std::move(h));
  }
  return info;
}

index::SourceSnapshot ToSnapshot(const SourceInfo& info, TimeNs refreshed) {
  index::SourceSnapshot snap;
  snap.source = {info.name, info.type, info.location};
  snap.refreshed = refreshed;
  std::map<Digest, index::BlobRow> blobs;
  auto add_blob = [&](const Digest& d, int64_t size, const std::string& mt, index::Role role) {
    if (d.empty() || size < 0) return;
    auto [it, inserted] = blobs.try_emplace(d);
    if (inserted) it->second = {d, static_cast<uint64_t>(size), mt, role};
  };
  for (const auto* list : {&info.refs, &info.history}) {
    for (const auto& r : *list) {
      if (r.shape.empty()) continue;  // unreadable: nothing known to store
      index::RefRow row;
      row.name = r.name;
      row.manifest = r.descriptor.digest;
      row.shape = r.shape;
      row.created = r.created;
      row.modified = r.modified;
      row.history = r.history;
      add_blob(r.descriptor.digest, r.descriptor.size, r.media_type, index::Role::kManifest);
      row.blobs.push_back(r.descriptor.digest);
      add_blob(r.config.digest, r.config.size, r.config.media_type, index::Role::kConfig);
      row.blobs.push_back(r.config.digest);
      for (const auto& l : r.layers) {
        if (!l.listed || l.size < 0) continue;
        add_blob(l.blob, l.size, l.media_type, index::Role::kLayer);
        row.blobs.push_back(l.blob);
      }
      snap.refs.push_back(std::move(row));
    }
  }
  for (auto& [d, row] : blobs) snap.blobs.push_back(std::move(row));
  return snap;
}

Status RecordSource(index::Index& index, const SourceInfo& info, const std::string& key,
                    TimeNs now) {
  const std::string stored_key = info.HasErrors() ? "" : key;
  if (!stored_key.empty()) {
    auto same = index.TouchSource({info.name, info.type, info.location}, stored_key, now);
    if (same.ok() && *same) return OkStatus();
  }
  return index.ReplaceSource(ToSnapshot(info, now), stored_key);
}

}  // namespace bcfs::catalog
