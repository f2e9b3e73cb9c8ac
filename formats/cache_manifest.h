// The top-level blob of a BuildKit cache, in each shape BuildKit writes
// (FORMATS.md §3.2, §4):
//   image-manifest  OCI manifest, cache config as `config`, layers in `layers`
//   index           OCI index whose `manifests` are layers, cache config last
//   manifest-list   the same as a Docker manifest list
//   inline          an image manifest whose image config carries
//                   `moby.buildkit.cache.v0` (records only; layers = image layers)
//
// Thread-safety: pure functions and values.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "formats/cacheconfig.h"
#include "formats/oci.h"

namespace bcfs::formats {

enum class Shape { kImageManifest, kIndex, kManifestList, kInline };
std::string_view ShapeName(Shape shape);

struct CacheManifest {
  Shape shape = Shape::kImageManifest;
  std::string media_type;          // the document's own media type (sniffed when absent)
  Descriptor config;               // the cache config, or for inline the image config
  std::vector<Descriptor> layers;  // layer descriptors in document order (may repeat)

  // The descriptor of a layer blob, or nullptr when the manifest does not list it.
  const Descriptor* FindLayer(const Digest& d) const;
};

// Parses a top-level cache blob, sniffing its kind as BuildKit does; the
// referring descriptor's media type (`declared_media_type`) is not trusted.
// Errors name `doc`: not JSON, not a manifest or index, no cache config (an
// index of image manifests is kUnsupported: multi-platform inline caches), a
// malformed descriptor.
Result<CacheManifest> ParseCacheManifest(std::string_view text,
                                         std::string_view declared_media_type,
                                         std::string_view doc);

// The inline cache (FORMATS.md §4): reads `moby.buildkit.cache.v0` from the
// image config and rebuilds the config: layers[i] = {blob: manifest layer i,
// parent: i-1, diffID: rootfs.diff_ids[i], createdAt: i-th non-empty history
// entry}. kNotFound when the image config has no inline cache; kCorrupt when
// diff_ids and layers disagree or the value is not base64 of a records array.
struct InlineCache {
  CacheConfig config;
  std::string records_json;  // the decoded records array, as stored
};
Result<InlineCache> ParseInlineCache(std::string_view image_config_text,
                                     const CacheManifest& manifest, std::string_view doc);

}  // namespace bcfs::formats
