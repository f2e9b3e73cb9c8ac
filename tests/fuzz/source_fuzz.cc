// libFuzzer target: source strings (backends/source.h), the CSV a user pastes
// from a buildx `--cache-from`. A string that parses must print a redacted form
// that parses again to the same redacted form (status.json and the tree show it,
// and `buildcachefs ls` reads it back).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "backends/source.h"

using namespace bcfs::backends;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto spec = ParseSourceString(text);
  if (!spec.ok()) return 0;
  (void)SourceTypeName(spec->type);
  const std::string redacted = spec->Redacted();
  auto again = ParseSourceString(redacted);
  if (!again.ok() || again->type != spec->type || again->Redacted() != redacted) {
    __builtin_trap();
  }
  return 0;
}
