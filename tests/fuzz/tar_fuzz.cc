// libFuzzer target: the tar indexer on arbitrary bytes, fed in chunks whose
// sizes come from the input, so chunk boundaries fall everywhere.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "formats/tar.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t step = 1 + data[0] % 97;
  std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  bcfs::formats::TarIndexer tar("fuzz");
  for (size_t off = 0; off < bytes.size(); off += step) {
    if (!tar.Feed(bytes.substr(off, step)).ok()) break;
  }
  (void)tar.Finish();
  for (const auto& e : tar.TakeEntries()) {
    // Every recorded data range lies inside what was fed.
    if (e.sparse.empty() && e.type == bcfs::formats::TarType::kFile &&
        e.data_offset + e.size > bytes.size() + 512) {
      __builtin_trap();
    }
  }
  return 0;
}
