// libFuzzer target: OCI image indexes / manifest lists and image manifests as
// registries and OCI layouts hand them over (formats/oci.h), and the ref
// descriptors of s3 and azblob sources (backends/backend_s3.h). A document
// that parses is written back as JSON and must parse to the same values.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "backends/backend_s3.h"
#include "formats/oci.h"

using namespace bcfs;
using namespace bcfs::formats;

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

Json DescriptorJson(const Descriptor& d) {
  Json j = {{"mediaType", d.media_type}, {"digest", d.digest.ToString()}, {"size", d.size}};
  if (!d.annotations.empty()) j["annotations"] = d.annotations;
  if (d.platform) {
    j["platform"] = {{"os", d.platform->os},
                     {"architecture", d.platform->architecture},
                     {"variant", d.platform->variant}};
  }
  return j;
}

bool Same(const Descriptor& a, const Descriptor& b) {
  return a.media_type == b.media_type && a.digest == b.digest && a.size == b.size &&
         a.annotations == b.annotations && a.platform.has_value() == b.platform.has_value() &&
         (!a.platform || (a.platform->os == b.platform->os &&
                          a.platform->architecture == b.platform->architecture &&
                          a.platform->variant == b.platform->variant));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  Json j = Json::parse(text, nullptr, false);
  if (!j.is_discarded()) (void)SniffDocKind(j, "fuzz");

  if (auto index = ParseImageIndex(text, "fuzz"); index.ok()) {
    Json out = {{"schemaVersion", index->schema_version}, {"manifests", Json::array()}};
    if (!index->media_type.empty()) out["mediaType"] = index->media_type;
    for (const auto& d : index->manifests) {
      Check(d.size >= 0);
      (void)LayerCompression(d);
      out["manifests"].push_back(DescriptorJson(d));
    }
    auto again = ParseImageIndex(out.dump(), "fuzz");
    Check(again.ok() && again->manifests.size() == index->manifests.size());
    for (size_t i = 0; i < index->manifests.size(); ++i) {
      Check(Same(index->manifests[i], again->manifests[i]));
    }
  }

  if (auto m = ParseImageManifest(text, "fuzz"); m.ok()) {
    Json out = {{"schemaVersion", m->schema_version},
                {"config", DescriptorJson(m->config)},
                {"layers", Json::array()}};
    if (!m->media_type.empty()) out["mediaType"] = m->media_type;
    for (const auto& d : m->layers) out["layers"].push_back(DescriptorJson(d));
    auto again = ParseImageManifest(out.dump(), "fuzz");
    Check(again.ok() && Same(again->config, m->config) && again->layers.size() == m->layers.size());
    for (size_t i = 0; i < m->layers.size(); ++i) Check(Same(m->layers[i], again->layers[i]));
  }

  // The ref descriptor of an s3/azblob ref: ours round-trips, theirs parses or is refused.
  if (auto ref = backends::s3::ParseRefDescriptorJson(text); ref.ok()) {
    Descriptor d;
    d.media_type = std::string(media::kOciIndex);
    d.digest = ref->second;
    d.size = 1;
    auto back =
        backends::s3::ParseRefDescriptorJson(backends::s3::RefDescriptorJson(ref->first, d));
    Check(back.ok() && back->first == ref->first && back->second == ref->second);
  }
  return 0;
}
