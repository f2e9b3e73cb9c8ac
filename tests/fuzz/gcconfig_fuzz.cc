// libFuzzer target: GC configuration TOML (gc/policy.h), ours or a pasted
// buildkitd.toml, and the policies derived from it.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "gc/policy.h"

using namespace bcfs::gc;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto config = ParseGcConfig(text, "fuzz.toml");
  if (!config.ok()) return 0;
  Item item;
  item.digest = "sha256:" + std::string(64, 'a');
  item.size = 4096;
  item.sources = {"main"};
  item.refs = {"latest"};
  item.media_type = "application/vnd.oci.image.layer.v1.tar+gzip";
  for (const FsStats fs : {FsStats{0, 0}, FsStats{100'000'000'000, 30'000'000'000}}) {
    for (const auto& p : EffectivePolicies(*config, fs)) (void)p.filter.Matches(item);
  }
  return 0;
}
