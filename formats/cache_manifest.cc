#include "formats/cache_manifest.h"

#include "core/base64.h"

namespace bcfs::formats {

std::string_view ShapeName(Shape shape) {
  switch (shape) {
    case Shape::kImageManifest:
      return "image-manifest";
    case Shape::kIndex:
      return "index";
    case Shape::kManifestList:
      return "manifest-list";
    case Shape::kInline:
      return "inline";
  }
  return "unknown";
}

const Descriptor* CacheManifest::FindLayer(const Digest& d) const {
  for (const auto& l : layers) {
    if (l.digest == d) return &l;
  }
  return nullptr;
}

Result<CacheManifest> ParseCacheManifest(std::string_view text,
                                         std::string_view declared_media_type,
                                         std::string_view doc) {
  BCFS_ASSIGN_OR_RETURN(Json j, ParseJson(text, doc));
  BCFS_ASSIGN_OR_RETURN(DocKind kind, SniffDocKind(j, doc));
  CacheManifest m;
  if (kind == DocKind::kManifest) {
    BCFS_ASSIGN_OR_RETURN(ImageManifest im, ParseImageManifest(text, doc));
    m.media_type = im.media_type.empty() ? std::string(media::kOciManifest) : im.media_type;
    m.config = std::move(im.config);
    m.layers = std::move(im.layers);
    if (m.config.media_type == media::kCacheConfig) {
      m.shape = Shape::kImageManifest;
    } else if (m.config.media_type == media::kOciImageConfig ||
               m.config.media_type == media::kDockerImageConfig) {
      m.shape = Shape::kInline;
    } else {
      return CorruptError(std::string(doc) + ": field \"config.mediaType\": \"" +
                          m.config.media_type +
                          "\" is neither a BuildKit cache config nor an image config");
    }
  } else {
    BCFS_ASSIGN_OR_RETURN(ImageIndex idx, ParseImageIndex(text, doc));
    m.media_type = idx.media_type.empty() ? std::string(media::kOciIndex) : idx.media_type;
    m.shape = m.media_type == media::kDockerManifestList ? Shape::kManifestList : Shape::kIndex;
    // BuildKit takes the entry with the cache config media type as the
    // config and every other entry as a layer (FORMATS.md §3.3).
    bool found = false;
    bool has_manifests = false;
    for (auto& d : idx.manifests) {
      if (d.media_type == media::kCacheConfig) {
        m.config = d;
        found = true;
      } else {
        if (IsManifestMediaType(d.media_type) || IsIndexMediaType(d.media_type)) {
          has_manifests = true;
        }
        m.layers.push_back(std::move(d));
      }
    }
    if (!found) {
      if (has_manifests) {
        return UnsupportedError(std::string(doc) +
                                ": an image index without a cache config (multi-platform "
                                "inline caches are not read from local layouts yet)");
      }
      return CorruptError(std::string(doc) +
                          ": field \"manifests\": no descriptor has media type " +
                          std::string(media::kCacheConfig));
    }
  }
  // BuildKit's local importer drops the referring descriptor's media type and
  // sniffs the document (FORMATS.md §2.5), so a disagreement is not fatal: the
  // caller may warn about it.
  (void)declared_media_type;
  return m;
}

Result<InlineCache> ParseInlineCache(std::string_view image_config_text,
                                     const CacheManifest& manifest, std::string_view doc) {
  BCFS_ASSIGN_OR_RETURN(Json j, ParseJson(image_config_text, doc));
  BCFS_RETURN_IF_ERROR(ExpectObject(j, doc, ""));
  FieldReader r(j, std::string(doc), "");
  const Json* value = r.Find("moby.buildkit.cache.v0");
  if (value == nullptr) {
    return NotFoundError(std::string(doc) + ": no inline cache (moby.buildkit.cache.v0)");
  }
  if (!value->is_string()) {
    return r.Error("moby.buildkit.cache.v0",
                   std::string(JsonTypeName(*value)) + ", want a base64 string");
  }
  auto raw = Base64Decode(value->get<std::string>());
  if (!raw.ok()) return r.Error("moby.buildkit.cache.v0", raw.status().message());
  InlineCache out;
  out.records_json = std::move(*raw);
  std::string inner_doc = std::string(doc) + " moby.buildkit.cache.v0";
  BCFS_ASSIGN_OR_RETURN(Json records, ParseJson(out.records_json, inner_doc));
  BCFS_ASSIGN_OR_RETURN(out.config.records, ParseCacheRecords(records, inner_doc, "records"));

  std::vector<Digest> diff_ids;
  if (const Json* rootfs = r.Find("rootfs")) {
    BCFS_RETURN_IF_ERROR(ExpectObject(*rootfs, doc, "rootfs"));
    FieldReader rr(*rootfs, std::string(doc), "rootfs");
    if (const Json* ids = rr.Find("diff_ids")) {
      if (!ids->is_array()) return rr.Error("diff_ids", "want an array");
      for (size_t i = 0; i < ids->size(); ++i) {
        std::string path = "rootfs.diff_ids[" + std::to_string(i) + "]";
        if (!(*ids)[i].is_string()) {
          return CorruptError(std::string(doc) + ": field \"" + path + "\": want a string");
        }
        auto d = Digest::Parse((*ids)[i].get<std::string>());
        if (!d.ok()) {
          return CorruptError(std::string(doc) + ": field \"" + path +
                              "\": " + d.status().message());
        }
        diff_ids.push_back(*d);
      }
    }
  }
  if (diff_ids.size() != manifest.layers.size()) {
    return CorruptError(std::string(doc) +
                        ": field \"rootfs.diff_ids\": " + std::to_string(diff_ids.size()) +
                        " entries but the image has " + std::to_string(manifest.layers.size()) +
                        " layers (BuildKit skips such an image)");
  }
  std::vector<TimeNs> created;
  if (const Json* history = r.Find("history"); history != nullptr && history->is_array()) {
    for (size_t i = 0; i < history->size(); ++i) {
      const Json& h = (*history)[i];
      if (!h.is_object()) continue;
      FieldReader hr(h, std::string(doc), "history[" + std::to_string(i) + "]");
      const Json* empty = hr.Find("empty_layer");
      if (empty != nullptr && empty->is_boolean() && empty->get<bool>()) continue;
      BCFS_ASSIGN_OR_RETURN(TimeNs t, hr.Time("created"));
      created.push_back(t);
    }
  }
  for (size_t i = 0; i < manifest.layers.size(); ++i) {
    CacheLayer l;
    l.blob = manifest.layers[i].digest;
    l.parent = static_cast<int64_t>(i) - 1;
    LayerAnnotations an;
    an.media_type = manifest.layers[i].media_type;
    an.diff_id = diff_ids[i];
    an.size = manifest.layers[i].size;
    an.created_at = i < created.size() ? created[i] : 0;
    l.annotations = an;
    out.config.layers.push_back(std::move(l));
  }
  return out;
}

}  // namespace bcfs::formats
