#include "gc/units.h"

#include <gtest/gtest.h>

namespace bcfs::gc {
namespace {

constexpr int64_t kKi = 1024, kMi = kKi * 1024, kGi = kMi * 1024, kTi = kGi * 1024,
                  kPi = kTi * 1024;

int64_t Ram(std::string_view s) {
  auto r = RamInBytes(s);
  EXPECT_TRUE(r.ok()) << s << ": " << r.status().ToString();
  return r.ok() ? *r : -1;
}

DurationNs GoDur(std::string_view s) {
  auto r = ParseGoDuration(s);
  EXPECT_TRUE(r.ok()) << s << ": " << r.status().ToString();
  return r.ok() ? *r : -1;
}

TEST(GoDuration, ParsesGoSyntax) {
  EXPECT_EQ(GoDur("48h"), 172'800'000'000'000);
  EXPECT_EQ(GoDur("1h30m"), 5'400'000'000'000);
  EXPECT_EQ(GoDur("500ms"), 500'000'000);
  EXPECT_EQ(GoDur("1.5h"), 5'400'000'000'000);
  EXPECT_EQ(GoDur("2h45m30.5s"), 9'930'500'000'000);
  EXPECT_EQ(GoDur(".5s"), 500'000'000);
  EXPECT_EQ(GoDur("1.s"), 1'000'000'000);
  EXPECT_EQ(GoDur("-2m"), -120'000'000'000);
  EXPECT_EQ(GoDur("+3ns"), 3);
  EXPECT_EQ(GoDur("1us"), 1000);
  EXPECT_EQ(GoDur("1\xc2\xb5s"), 1000);  // µ (U+00B5)
  EXPECT_EQ(GoDur("1\xce\xbcs"), 1000);  // μ (U+03BC)
  EXPECT_EQ(GoDur("0"), 0);
  EXPECT_EQ(GoDur("2562047h"), 9'223'369'200'000'000'000);
}

TEST(GoDuration, RefusesWhatGoRefuses) {
  for (std::string_view bad :
       {"", "1", "h", "1d", "1.5", "-", ".s", "1h 30m", "2562048h", "9223372036854775808ns"}) {
    auto r = ParseGoDuration(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
    EXPECT_NE(r.status().message().find("\"" + std::string(bad) + "\""), std::string::npos)
        << r.status().message();
  }
  EXPECT_EQ(ParseGoDuration("1d").status().message(),
            "invalid duration \"1d\": unknown unit \"d\"");
  EXPECT_EQ(ParseGoDuration("1").status().message(), "invalid duration \"1\": missing unit");
}

TEST(ConfigDuration, GoStringsOrIntegerSeconds) {
  EXPECT_EQ(*ParseConfigDuration("48h"), 48 * kHour);
  EXPECT_EQ(*ParseConfigDuration("172800"), 48 * kHour);
  EXPECT_EQ(*ParseConfigDuration("0"), 0);
  EXPECT_EQ(*ParseConfigDuration(""), 0);  // unset, as BuildKit's UnmarshalText
  for (std::string_view bad : {"-5s", "-5", "1.5", "2 days", "abc", "+"}) {
    EXPECT_FALSE(ParseConfigDuration(bad).ok()) << bad;
  }
}

TEST(RamInBytes, BinaryUnitsAsGoUnits) {
  EXPECT_EQ(Ram("32"), 32);
  EXPECT_EQ(Ram("32b"), 32);
  EXPECT_EQ(Ram("32B"), 32);
  EXPECT_EQ(Ram("32k"), 32 * kKi);
  EXPECT_EQ(Ram("32K"), 32 * kKi);
  EXPECT_EQ(Ram("32kb"), 32 * kKi);
  EXPECT_EQ(Ram("32Kb"), 32 * kKi);
  EXPECT_EQ(Ram("32Kib"), 32 * kKi);
  EXPECT_EQ(Ram("32KIB"), 32 * kKi);
  EXPECT_EQ(Ram("32KiB"), 32 * kKi);
  EXPECT_EQ(Ram("512MB"), 512 * kMi);
  EXPECT_EQ(Ram("1GB"), kGi);
  EXPECT_EQ(Ram("1 GiB"), kGi);
  EXPECT_EQ(Ram("32Tb"), 32 * kTi);
  EXPECT_EQ(Ram("32Pb"), 32 * kPi);
  EXPECT_EQ(Ram("32P"), 32 * kPi);
  EXPECT_EQ(Ram("32.3"), 32);
  EXPECT_EQ(Ram("32.3 mb"), 33'869'004);  // int64(32.3 * 2^20)
  EXPECT_EQ(Ram("0.3MB"), 314'572);
  EXPECT_EQ(Ram("1i"), 1);  // the regexp allows "i" without a unit
  EXPECT_EQ(Ram("0"), 0);
  EXPECT_EQ(Ram("32 "), 32);  // the optional space of the regexp, with no unit after it
}

TEST(RamInBytes, RefusesWhatGoUnitsRefuses) {
  for (std::string_view bad :
       {"", "hello", "-32", " 32", " 32 ", "32m b", "32bm", "1.2.3", ".5k", "32  k", "10000P"}) {
    auto r = RamInBytes(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  }
  EXPECT_EQ(RamInBytes("12XB").status().message(),
            "invalid size \"12XB\": expected bytes or a number with a binary unit (\"512MB\" = "
            "512 MiB, \"1GB\", \"32k\")");
}

TEST(DiskSpace, ParsesPercentagesAndSizes) {
  EXPECT_EQ(*ParseDiskSpace("10%"), DiskSpace::Percent(10));
  EXPECT_EQ(*ParseDiskSpace("0%"), DiskSpace::Percent(0));
  EXPECT_EQ(*ParseDiskSpace("100%"), DiskSpace::Percent(100));
  EXPECT_EQ(*ParseDiskSpace("512MB"), DiskSpace::Bytes(512 * kMi));
  EXPECT_EQ(*ParseDiskSpace("1024000000"), DiskSpace::Bytes(1'024'000'000));
  EXPECT_TRUE(ParseDiskSpace("")->unset());
  for (std::string_view bad : {"101%", "-1%", "10.5%", "%", "abc%", "1GB%", "1XB"}) {
    EXPECT_FALSE(ParseDiskSpace(bad).ok()) << bad;
  }
  EXPECT_EQ(ParseDiskSpace("150%").status().message(),
            "invalid disk space \"150%\": a percentage is a whole number from 0 to 100");
}

TEST(DiskSpace, PercentagesUseBuildKitRounding) {
  const FsStats gib100{100 * kGi, 0};
  EXPECT_EQ(DiskSpace::Percent(10).AsBytes(gib100), 11'000'000'000);
  EXPECT_EQ(DiskSpace::Percent(80).AsBytes(gib100), 81'000'000'000);
  EXPECT_EQ(DiskSpace::Percent(20).AsBytes(gib100), 21'000'000'000);
  // 10% of 500e9 = 50e9 = 46.57 GiB: floor 46, +1, in decimal GB.
  EXPECT_EQ(DiskSpace::Percent(10).AsBytes(FsStats{500'000'000'000, 0}), 47'000'000'000);
  // Less than a GiB still rounds up to 1e9.
  EXPECT_EQ(DiskSpace::Percent(1).AsBytes(FsStats{kGi, 0}), 1'000'000'000);
  // statfs failed: every percentage is 2e9.
  EXPECT_EQ(DiskSpace::Percent(10).AsBytes(FsStats{}), 2'000'000'000);
  EXPECT_EQ(DiskSpace::Percent(80).AsBytes(FsStats{}), 2'000'000'000);
  // Bytes win; unset is 0 whatever the disk.
  EXPECT_EQ(DiskSpace::Bytes(123).AsBytes(gib100), 123);
  EXPECT_EQ(DiskSpace{}.AsBytes(FsStats{}), 0);
  EXPECT_EQ(DiskSpace::Percent(10).ToString(), "10%");
  EXPECT_EQ(DiskSpace::Bytes(512).ToString(), "512");
}

}  // namespace
}  // namespace bcfs::gc
