// libFuzzer target: WWW-Authenticate values (backends/registry_auth.h), which a
// registry or anything in the network path chooses.
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "backends/registry_auth.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view header(reinterpret_cast<const char*>(data), size);
  auto challenges = bcfs::backends::ParseChallenges(header);
  if (!challenges.ok()) return 0;
  // Schemes and parameter names come out lower-case, as the header says.
  auto lower = [](std::string_view s) {
    for (unsigned char c : s) {
      if (std::isupper(c)) return false;
    }
    return true;
  };
  for (const auto& c : *challenges) {
    if (!lower(c.scheme)) __builtin_trap();
    for (const auto& [k, v] : c.params) {
      if (!lower(k)) __builtin_trap();
    }
  }
  return 0;
}
