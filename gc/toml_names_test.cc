#include "gc/toml_names.h"

#include <gtest/gtest.h>

namespace bcfs::gc {
namespace {

TEST(TomlTypeName, NamesEveryKindOfValueAsErrorMessagesSayIt) {
  toml::table t = toml::parse(
      "t = {}\na = []\ns = \"x\"\ni = 1\nf = 1.5\nb = true\n"
      "d = 2026-11-27\ntm = 07:00:00\ndt = 2026-11-27T07:00:00Z\n");
  const std::vector<std::pair<const char*, const char*>> want = {
      {"t", "a table"},    {"a", "an array"}, {"s", "a string"},
      {"i", "an integer"}, {"f", "a float"},  {"b", "a boolean"},
      {"d", "a date"},     {"tm", "a time"},  {"dt", "a date-time"}};
  for (const auto& [key, name] : want) {
    const toml::node* n = t.get(key);
    ASSERT_NE(n, nullptr) << key;
    EXPECT_EQ(TomlTypeName(*n), name) << key;
  }
}

}  // namespace
}  // namespace bcfs::gc
