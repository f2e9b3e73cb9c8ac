// libFuzzer target: the catalog cache file a mount reads back from its state
// dir (catalog/catalog_cache.h). Each input is decoded as it is, and again
// with its header rewritten to match the rest (as a hostile writer would), so
// that mutations reach the field decoders behind the SHA-256 check. A decoded
// SourceInfo must encode and decode back to the same bytes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "catalog/catalog_cache.h"

using namespace bcfs;

namespace {

constexpr size_t kHeader = 52;  // magic, version, body size, body SHA-256

void Check(std::string_view bytes) {
  auto dec = catalog::DecodeSourceInfo(bytes);
  if (!dec.ok()) {
    if (dec.status().code() != Code::kCorrupt) std::abort();
    return;
  }
  const std::string enc = catalog::EncodeSourceInfo(*dec);
  auto again = catalog::DecodeSourceInfo(enc);
  if (!again.ok() || catalog::EncodeSourceInfo(*again) != enc) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  Check(in);
  if (size >= 12) {
    std::string_view body = size >= kHeader ? in.substr(kHeader) : std::string_view();
    std::string fixed(in.substr(0, 12));
    for (int i = 0; i < 8; ++i) fixed.push_back(static_cast<char>((body.size() >> (8 * i)) & 0xff));
    Digest::Sha256Of(body).AppendRaw(fixed);
    fixed.append(body);
    Check(fixed);
  }
  return 0;
}
