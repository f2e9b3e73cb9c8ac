#include "cli/args.h"

#include <gtest/gtest.h>

namespace bcfs::cli {
namespace {

TEST(Args, OptionsFlagsAndPositionalsInAnyOrder) {
  auto a = ParseArgs({"src", "--format", "json", "ref", "--state-dir=/tmp/s", "-f"},
                     {"--format", "--state-dir"}, {"-f"});
  ASSERT_TRUE(a.ok()) << a.status().message();
  EXPECT_EQ(a->positional, (std::vector<std::string>{"src", "ref"}));
  EXPECT_EQ(a->Option("--format"), "json");
  EXPECT_EQ(a->Option("--state-dir"), "/tmp/s");
  EXPECT_TRUE(a->flags.count("-f"));
  EXPECT_FALSE(a->help);
}

TEST(Args, UnknownOptionAndMissingValueAreNamed) {
  auto u = ParseArgs({"--nope"}, {"--format"}, {});
  ASSERT_FALSE(u.ok());
  EXPECT_EQ(u.status().message(), "unknown option --nope");
  auto m = ParseArgs({"x", "--format"}, {"--format"}, {});
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().message(), "option --format needs a value");
  auto h = ParseArgs({"--help", "--", "--format"}, {"--format"}, {});
  ASSERT_TRUE(h.ok());
  EXPECT_TRUE(h->help);
  EXPECT_EQ(h->positional, (std::vector<std::string>{"--format"}));
}

}  // namespace
}  // namespace bcfs::cli
