// libFuzzer target: the eStargz footer and TOC parsers on arbitrary bytes.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "formats/compression.h"
#include "formats/estargz.h"

using namespace bcfs::formats;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  (void)estargz::ParseFooter(bytes);
  auto toc = estargz::ParseToc(bytes, 0, "fuzz");
  if (toc.ok()) {
    for (const auto& e : toc->entries) (void)toc->Find(e.name);
  }
  MemoryByteSource src(bytes);
  (void)estargz::ReadToc(src, "fuzz");
  return 0;
}
