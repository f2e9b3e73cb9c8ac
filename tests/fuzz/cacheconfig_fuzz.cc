// libFuzzer target: the cache documents a source hands us (index.json entries,
// cache manifests in every shape, cache configs and their record chains).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "formats/cache_manifest.h"
#include "formats/cacheconfig.h"
#include "formats/oci.h"

using namespace bcfs::formats;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  (void)ParseIndexEntries(text, "fuzz");
  auto m = ParseCacheManifest(text, "", "fuzz");
  auto c = ParseCacheConfig(text, "fuzz");
  if (c.ok()) {
    auto d = DecodeRecords(
        *c, [&](const bcfs::Digest& x) { return x.hex()[0] < '8'; }, "fuzz");
    if (d.ok()) {
      const auto parents = LayerParents(*c);
      for (const auto& r : d->records) {
        for (const auto& res : r.results) (void)res.Layers(parents);
      }
    }
  }
  if (m.ok() && m->shape == Shape::kInline) (void)ParseInlineCache(text, *m, "fuzz");
  return 0;
}
