// Test helpers shared by unit tests: where the real BuildKit fixtures of
// ../shared live, whole-file reads and writes. Header-only; used by tests only.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace bcfs::testing {

// The fixtures/buildkit folder, or "" when absent. Tests that need it call
// BCFS_REQUIRE_FIXTURES(): it skips on a developer machine without ../shared
// and fails under CI, where every fixture must be present.
inline std::string FixturesDir() {
  const char* shared = std::getenv("BCFS_SHARED");
  if (shared == nullptr) return "";
  std::string dir = std::string(shared) + "/fixtures/buildkit";
  return std::filesystem::exists(dir + "/MANIFEST.md") ? dir : "";
}

// The whole file at path ("" when it cannot be read).
inline std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Replaces the file at path with bytes.
inline void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

}  // namespace bcfs::testing

#define BCFS_REQUIRE_FIXTURES()                                                       \
  do {                                                                                \
    if (::bcfs::testing::FixturesDir().empty()) {                                     \
      if (std::getenv("CI") != nullptr) FAIL() << "../shared fixtures missing in CI"; \
      GTEST_SKIP() << "../shared/fixtures/buildkit is absent (set BCFS_SHARED)";      \
    }                                                                                 \
  } while (0)
