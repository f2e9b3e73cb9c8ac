#include "formats/oci.h"

namespace bcfs::formats {
namespace {

std::string Index(std::string_view path, size_t i) {
  return std::string(path) + "[" + std::to_string(i) + "]";
}

Result<int> SchemaVersion(const FieldReader& r) {
  BCFS_ASSIGN_OR_RETURN(auto v, r.Int("schemaVersion"));
  if (!v) return r.Error("schemaVersion", "missing");
  if (*v != 2) return r.Error("schemaVersion", std::to_string(*v) + ", want 2");
  return static_cast<int>(*v);
}

Result<std::vector<Descriptor>> DescriptorList(const FieldReader& r, std::string_view key,
                                               bool required) {
  std::vector<Descriptor> out;
  const Json* arr = r.Find(key);
  if (arr == nullptr) {
    if (required) return r.Error(key, "missing");
    return out;
  }
  if (!arr->is_array()) return r.Error(key, std::string(JsonTypeName(*arr)) + ", want an array");
  out.reserve(arr->size());
  for (size_t i = 0; i < arr->size(); ++i) {
    BCFS_ASSIGN_OR_RETURN(Descriptor d, ParseDescriptor((*arr)[i], r.doc(), Index(key, i)));
    out.push_back(std::move(d));
  }
  return out;
}

}  // namespace

std::string Descriptor::Annotation(std::string_view key) const {
  auto it = annotations.find(std::string(key));
  return it == annotations.end() ? std::string() : it->second;
}

Result<Descriptor> ParseDescriptor(const Json& j, std::string_view doc, std::string_view path) {
  BCFS_RETURN_IF_ERROR(ExpectObject(j, doc, path));
  FieldReader r(j, std::string(doc), std::string(path));
  Descriptor d;
  BCFS_ASSIGN_OR_RETURN(d.media_type, r.String("mediaType", false));
  BCFS_ASSIGN_OR_RETURN(auto digest, r.DigestField("digest", true));
  d.digest = *digest;
  BCFS_ASSIGN_OR_RETURN(auto size, r.Int("size"));
  if (!size) return r.Error("size", "missing");
  if (*size < 0) return r.Error("size", std::to_string(*size) + " is negative");
  d.size = *size;
  BCFS_ASSIGN_OR_RETURN(d.annotations, r.StringMap("annotations"));
  if (const Json* p = r.Find("platform")) {
    BCFS_RETURN_IF_ERROR(ExpectObject(*p, doc, r.FieldPath("platform")));
    FieldReader pr(*p, std::string(doc), r.FieldPath("platform"));
    Platform pl;
    BCFS_ASSIGN_OR_RETURN(pl.os, pr.String("os", false));
    BCFS_ASSIGN_OR_RETURN(pl.architecture, pr.String("architecture", false));
    BCFS_ASSIGN_OR_RETURN(pl.variant, pr.String("variant", false));
    d.platform = pl;
  }
  return d;
}

Result<DocKind> SniffDocKind(const Json& j, std::string_view doc) {
  BCFS_RETURN_IF_ERROR(ExpectObject(j, doc, ""));
  FieldReader r(j, std::string(doc), "");
  bool manifest_like = r.Find("config") != nullptr || r.Find("layers") != nullptr;
  BCFS_ASSIGN_OR_RETURN(std::string mt, r.String("mediaType", false));
  DocKind kind = manifest_like ? DocKind::kManifest : DocKind::kIndex;
  if (!mt.empty()) {
    if (IsManifestMediaType(mt) && kind != DocKind::kManifest) {
      return r.Error("mediaType", "\"" + mt + "\" but the document has no config or layers");
    }
    if (IsIndexMediaType(mt) && kind != DocKind::kIndex) {
      return r.Error("mediaType", "\"" + mt + "\" but the document has config or layers");
    }
    if (!IsManifestMediaType(mt) && !IsIndexMediaType(mt)) {
      return r.Error("mediaType", "\"" + mt + "\" is neither a manifest nor an index");
    }
  }
  return kind;
}

bool IsIndexMediaType(std::string_view mt) {
  return mt == media::kOciIndex || mt == media::kDockerManifestList;
}

bool IsManifestMediaType(std::string_view mt) {
  return mt == media::kOciManifest || mt == media::kDockerManifest;
}

Result<ImageIndex> ParseImageIndex(std::string_view text, std::string_view doc) {
  BCFS_ASSIGN_OR_RETURN(Json j, ParseJson(text, doc));
  BCFS_RETURN_IF_ERROR(ExpectObject(j, doc, ""));
  FieldReader r(j, std::string(doc), "");
  ImageIndex idx;
  BCFS_ASSIGN_OR_RETURN(idx.schema_version, SchemaVersion(r));
  BCFS_ASSIGN_OR_RETURN(idx.media_type, r.String("mediaType", false));
  BCFS_ASSIGN_OR_RETURN(idx.manifests, DescriptorList(r, "manifests", false));
  return idx;
}

Result<ImageManifest> ParseImageManifest(std::string_view text, std::string_view doc) {
  BCFS_ASSIGN_OR_RETURN(Json j, ParseJson(text, doc));
  BCFS_RETURN_IF_ERROR(ExpectObject(j, doc, ""));
  FieldReader r(j, std::string(doc), "");
  ImageManifest m;
  BCFS_ASSIGN_OR_RETURN(m.schema_version, SchemaVersion(r));
  BCFS_ASSIGN_OR_RETURN(m.media_type, r.String("mediaType", false));
  const Json* config = r.Find("config");
  if (config == nullptr) return r.Error("config", "missing");
  BCFS_ASSIGN_OR_RETURN(m.config, ParseDescriptor(*config, doc, "config"));
  BCFS_ASSIGN_OR_RETURN(m.layers, DescriptorList(r, "layers", false));
  return m;
}

std::string LayerCompression(const Descriptor& d) {
  const std::string& mt = d.media_type;
  auto ends = [&](std::string_view suffix) {
    return mt.size() >= suffix.size() &&
           mt.compare(mt.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  if (ends("+gzip") || ends(".tar.gzip") || ends(".gzip")) {
    return d.annotations.count(std::string(annotation::kStargzToc)) ? "estargz" : "gzip";
  }
  if (ends("+zstd") || ends(".zstd")) return "zstd";
  if (ends(".tar") || ends("tar")) return "uncompressed";
  return "unknown";
}

}  // namespace bcfs::formats
