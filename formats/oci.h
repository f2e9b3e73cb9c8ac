// OCI image index and manifest, Docker manifest list and schema2 manifest:
// the documents that carry BuildKit caches in local and registry layouts.
// Pure parsers: no I/O. Unknown fields are ignored; a malformed document is
// rejected with an error naming the document, the field and the problem.
//
// Thread-safety: pure functions and values.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/digest.h"
#include "core/status.h"
#include "formats/json_util.h"

namespace bcfs::formats {

namespace media {
inline constexpr std::string_view kOciIndex = "application/vnd.oci.image.index.v1+json";
inline constexpr std::string_view kOciManifest = "application/vnd.oci.image.manifest.v1+json";
inline constexpr std::string_view kOciImageConfig = "application/vnd.oci.image.config.v1+json";
inline constexpr std::string_view kDockerManifestList =
    "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr std::string_view kDockerManifest =
    "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr std::string_view kDockerImageConfig =
    "application/vnd.docker.container.image.v1+json";
inline constexpr std::string_view kCacheConfig = "application/vnd.buildkit.cacheconfig.v0";
}  // namespace media

namespace annotation {
inline constexpr std::string_view kRefName = "org.opencontainers.image.ref.name";
inline constexpr std::string_view kImageName = "io.containerd.image.name";
inline constexpr std::string_view kUncompressed = "containerd.io/uncompressed";
inline constexpr std::string_view kCreatedAt = "buildkit/createdat";
inline constexpr std::string_view kStargzToc = "containerd.io/snapshot/stargz/toc.digest";
inline constexpr std::string_view kEstargzUncompressedSize =
    "io.containers.estargz.uncompressed-size";
}  // namespace annotation

struct Platform {
  std::string os, architecture, variant;
};

struct Descriptor {
  std::string media_type;
  Digest digest;
  int64_t size = 0;
  std::map<std::string, std::string> annotations;
  std::optional<Platform> platform;

  std::string Annotation(std::string_view key) const;
};

struct ImageIndex {
  int schema_version = 0;
  std::string media_type;
  std::vector<Descriptor> manifests;
};

struct ImageManifest {
  int schema_version = 0;
  std::string media_type;
  Descriptor config;
  std::vector<Descriptor> layers;
};

// Reads one descriptor object found at `path` of document `doc`.
Result<Descriptor> ParseDescriptor(const Json& j, std::string_view doc, std::string_view path);
Result<ImageIndex> ParseImageIndex(std::string_view text, std::string_view doc);

// An OCI layout's index.json read leniently: a malformed entry is reported on
// its own and the other entries are still read. Errors for the whole document
// (not JSON, not an object, bad schemaVersion, "manifests" not an array).
struct IndexEntry {
  std::optional<Descriptor> descriptor;  // absent when the entry is malformed
  std::string raw;                       // the entry's JSON as written (key order kept)
  std::string ref_name;                  // its ref name annotation when readable
  Digest digest;                         // its digest when readable, even if malformed otherwise
  std::string error;                     // why the entry is malformed
};
Result<std::vector<IndexEntry>> ParseIndexEntries(std::string_view text, std::string_view doc);
Result<ImageManifest> ParseImageManifest(std::string_view text, std::string_view doc);

// What a JSON blob is, sniffed as BuildKit does (util/imageutil,
// DetectManifestBlobMediaType): "config" or "layers" present means a manifest,
// otherwise an index. A "mediaType" in the document must agree.
enum class DocKind { kManifest, kIndex };
Result<DocKind> SniffDocKind(const Json& j, std::string_view doc);

bool IsIndexMediaType(std::string_view mt);
bool IsManifestMediaType(std::string_view mt);

// Layer compression from the media type and the eStargz annotation:
// "gzip", "zstd", "estargz", "uncompressed", or "unknown".
std::string LayerCompression(const Descriptor& d);

}  // namespace bcfs::formats
