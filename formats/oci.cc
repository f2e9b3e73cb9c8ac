#include "formats/oci.h"

#include <strings.h>

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

Result<std::vector<IndexEntry>> ParseIndexEntries(std::string_view text, std::string_view doc) {
  nlohmann::ordered_json j;
  try {
    j = nlohmann::ordered_json::parse(text.begin(), text.end());
  } catch (const nlohmann::ordered_json::exception& e) {
    std::string why = e.what();
    if (size_t p = why.find("] "); p != std::string::npos) why = why.substr(p + 2);
    return CorruptError(std::string(doc) + ": not valid JSON: " + why);
  }
  // Whole-document checks go through the same reader as ParseImageIndex.
  BCFS_ASSIGN_OR_RETURN(Json plain, ParseJson(text, doc));
  BCFS_RETURN_IF_ERROR(ExpectObject(plain, doc, ""));
  FieldReader r(plain, std::string(doc), "");
  BCFS_RETURN_IF_ERROR(SchemaVersion(r).status());
  const Json* manifests = r.Find("manifests");
  std::vector<IndexEntry> out;
  if (manifests == nullptr) return out;
  if (!manifests->is_array()) {
    return r.Error("manifests", std::string(JsonTypeName(*manifests)) + ", want an array");
  }
  // The same member FieldReader chose (exact name first, then any case), in
  // the order-keeping parse, for the entries' raw JSON.
  const nlohmann::ordered_json* ordered = nullptr;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (strcasecmp(it.key().c_str(), "manifests") != 0 || !it->is_array()) continue;
    if (ordered == nullptr || it.key() == "manifests") ordered = &*it;
  }
  for (size_t i = 0; i < manifests->size(); ++i) {
    IndexEntry e;
    if (ordered != nullptr && i < ordered->size()) {
      e.raw = (*ordered)[i].dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
    }
    const Json& m = (*manifests)[i];
    auto d = ParseDescriptor(m, doc, Index("manifests", i));
    if (d.ok()) {
      e.ref_name = d->Annotation(annotation::kRefName);
      e.digest = d->digest;
      e.descriptor = std::move(*d);
    } else {
      e.error = d.status().message();
      if (m.is_object()) {
        auto dg = m.find("digest");
        if (dg != m.end() && dg->is_string()) {
          if (auto parsed = Digest::Parse(dg->get<std::string>()); parsed.ok()) e.digest = *parsed;
        }
        auto a = m.find("annotations");
        if (a != m.end() && a->is_object()) {
          auto n = a->find(std::string(annotation::kRefName));
          if (n != a->end() && n->is_string()) e.ref_name = n->get<std::string>();
        }
      }
    }
    out.push_back(std::move(e));
  }
  return out;
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
