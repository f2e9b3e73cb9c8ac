// libFuzzer target: compression detection, the gzip/zstd seek-point index and
// random-access reads on arbitrary bytes, and the seek index decoder.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "formats/compression.h"

using namespace bcfs::formats;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  (void)DecodeSeekIndex(bytes);
  MemoryByteSource src(bytes);
  auto c = DetectCompression(src);
  if (!c.ok()) return 0;
  uint64_t total = 0;
  auto index = BuildSeekIndex(
      src, *c == Compression::kEstargz ? Compression::kGzip : *c, "fuzz",
      [&](std::string_view chunk) {
        total += chunk.size();
        // Bounded work: stop a bomb early.
        return total > (64u << 20) ? bcfs::Status(bcfs::Code::kCorrupt, "too big")
                                   : bcfs::OkStatus();
      },
      kMinSpan);
  if (!index.ok()) return 0;
  auto decoded = DecodeSeekIndex(EncodeSeekIndex(*index));
  if (!decoded.ok() || !(*decoded == *index)) __builtin_trap();
  if (index->uncompressed_size > 0) {
    std::string out(std::min<uint64_t>(index->uncompressed_size, 4096), '\0');
    uint64_t at = (size * 2654435761u) % index->uncompressed_size;
    if (at + out.size() > index->uncompressed_size) at = index->uncompressed_size - out.size();
    (void)ReadUncompressed(src, *index, at, std::span<char>(out));
  }
  return 0;
}
