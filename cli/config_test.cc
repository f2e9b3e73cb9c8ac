#include "cli/config.h"

#include <gtest/gtest.h>

namespace bcfs::cli {
namespace {

Result<ServiceConfig> Parse(std::string_view text) {
  return ParseServiceConfig(text, "bcfs.toml", "/etc/buildcachefs");
}

std::string ErrorOf(std::string_view text) {
  auto c = Parse(text);
  EXPECT_FALSE(c.ok());
  if (c.ok()) return "";
  EXPECT_EQ(c.status().code(), Code::kInvalidArgument);
  return std::string(c.status().message());
}

TEST(ServiceConfig, EveryKeyIsReadAndRelativePathsAreTakenFromTheFilesDirectory) {
  auto c = Parse(R"(mountpoint = "/mnt/bk"
state_dir = "state"
options = ["allow_other", "noatime"]
log_level = "info"
metrics_addr = "127.0.0.1:9101"
gc_interval = "30s"
refresh_interval = 300

[[source]]
source = "type=local,src=cache,as=main"

[[source]]
type = "registry"
ref = "registry.example/app/cache:main"
mode = "max"

[gc]
[[gc.policy]]
keepDuration = "48h"
maxUsedSpace = "1GB"
)");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->mountpoint, "/mnt/bk");
  EXPECT_EQ(c->state_dir, "/etc/buildcachefs/state");
  ASSERT_TRUE(c->options.has_value());
  EXPECT_EQ(*c->options, (std::vector<std::string>{"allow_other", "noatime"}));
  EXPECT_EQ(c->log_level, log::Level::kInfo);
  EXPECT_EQ(c->metrics_addr, "127.0.0.1:9101");
  EXPECT_EQ(c->gc_interval, 30 * gc::kSecond);
  EXPECT_EQ(c->refresh_interval, 300 * gc::kSecond);
  ASSERT_EQ(c->sources.size(), 2u);
  EXPECT_EQ(c->sources[0].Redacted(), "type=local,src=/etc/buildcachefs/cache,as=main");
  EXPECT_EQ(c->sources[1].Redacted(), "type=registry,ref=registry.example/app/cache:main");
  EXPECT_EQ(c->sources[1].ignored_keys, (std::vector<std::string>{"mode"}));
  ASSERT_TRUE(c->gc.has_value());
  ASSERT_EQ(c->gc->policies.size(), 1u);
  EXPECT_EQ(c->gc->policies[0].keep_duration, 48 * gc::kHour);
  EXPECT_EQ(c->gc->policies[0].max_used_space, gc::DiskSpace::Bytes(int64_t{1} << 30));
}

TEST(ServiceConfig, AnEmptyFileGivesNothing) {
  auto c = Parse("");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->mountpoint, "");
  EXPECT_FALSE(c->options.has_value());
  EXPECT_TRUE(c->sources.empty());
  EXPECT_FALSE(c->gc.has_value());
  EXPECT_FALSE(c->log_level.has_value());
}

TEST(ServiceConfig, TableValuesThatNeedQuotingSurviveTheSourceString) {
  auto c = Parse(R"([[source]]
type = "local"
src = "/var/cache/a,b"
)");
  ASSERT_TRUE(c.ok()) << c.status().message();
  ASSERT_EQ(c->sources.size(), 1u);
  EXPECT_EQ(c->sources[0].Get("src"), "/var/cache/a,b");
}

TEST(ServiceConfig, BadTomlNamesLineAndColumn) {
  EXPECT_EQ(ErrorOf("mountpoint = \"/mnt\"\nstate_dir = \n"),
            "bcfs.toml:2:13: bad TOML: Error while parsing key-value pair: expected value, saw "
            "'\\n'");
}

TEST(ServiceConfig, UnknownKeysAreErrorsAtTheirPlace) {
  EXPECT_EQ(ErrorOf("mountpoint = \"/mnt\"\n  mountpont = \"/x\"\n"),
            "bcfs.toml:2:3: unknown key \"mountpont\" (want mountpoint, state_dir, options, "
            "source, gc, gc_interval, refresh_interval, log_level, metrics_addr)");
  EXPECT_EQ(ErrorOf("[gc]\nenabled = true\nkeepStorage = 1\n"),
            "bcfs.toml:3:15: gc.keepStorage: unknown key ([gc] has enabled, reservedSpace, "
            "maxUsedSpace, minFreeSpace, gckeepstorage and [[gc.policy]] tables)");
}

TEST(ServiceConfig, BadSourcesNameTheEntryAndItsPlace) {
  EXPECT_EQ(ErrorOf("[[source]]\nsource = \"type=local,srcs=/x\"\n"),
            "bcfs.toml:2:10: source[0]: unknown key \"srcs\" (type=local takes src, dest, tag, "
            "digest, as, and the export-only keys mode, compression, compression-level, "
            "force-compression, oci-mediatypes, image-manifest, ignore-error, reset, "
            "upload_parallelism, touch_refresh) in source type=local,srcs=***");
  EXPECT_EQ(ErrorOf("[[source]]\nsource = \"type=local,src=/x\"\n[[source]]\ntype = \"nfs\"\n"),
            "bcfs.toml:3:1: source[1]: unknown source type \"nfs\" (want one of local, registry, "
            "s3, azblob, gha) in source type=nfs");
  EXPECT_EQ(ErrorOf("[[source]]\nsource = \"type=local,src=/x\"\nas = \"a\"\n"),
            "bcfs.toml:3:1: source[0]: key \"as\" next to `source`: give a source string or "
            "its keys, not both");
  EXPECT_EQ(ErrorOf("[[source]]\ntype = \"local\"\nsrc = [\"/x\"]\n"),
            "bcfs.toml:3:7: source[0].src: expected a string, got an array");
  EXPECT_EQ(ErrorOf("source = \"type=local,src=/x\"\n"),
            "bcfs.toml:1:10: source: expected [[source]] tables, got a string");
}

TEST(ServiceConfig, BadValuesNameTheirPlace) {
  EXPECT_EQ(ErrorOf("[gc]\n[[gc.policy]]\nmaxUsedSpace = \"1XB\"\n"),
            "bcfs.toml:3:16: gc.policy[0].maxUsedSpace: invalid size \"1XB\": expected bytes or a "
            "number with a binary unit (\"512MB\" = 512 MiB, \"1GB\", \"32k\")");
  EXPECT_EQ(ErrorOf("log_level = \"loud\"\n"),
            "bcfs.toml:1:13: log_level: unknown log level \"loud\" (want debug, info, warning "
            "or error)");
  EXPECT_EQ(ErrorOf("gc_interval = \"soon\"\n"),
            "bcfs.toml:1:15: gc_interval: invalid duration \"soon\": neither a Go duration "
            "(\"48h\") nor integer seconds");
  EXPECT_EQ(ErrorOf("options = \"ro\"\n"),
            "bcfs.toml:1:11: options: expected an array of strings, got a string");
  EXPECT_EQ(ErrorOf("options = [\"ro\", 1]\n"),
            "bcfs.toml:1:18: options[1]: expected a string, got an integer");
  EXPECT_EQ(ErrorOf("metrics_addr = \"0.0.0.0\"\n"),
            "bcfs.toml:1:16: metrics_addr: metrics address \"0.0.0.0\": no port (want HOST:PORT "
            "with an IP address or localhost)");
  EXPECT_EQ(ErrorOf("metrics_addr = \"metrics.example:9101\"\n"),
            "bcfs.toml:1:16: metrics_addr: metrics address \"metrics.example:9101\": not an IP "
            "address (want HOST:PORT with an IP address or localhost)");
  EXPECT_EQ(ErrorOf("mountpoint = 3\n"),
            "bcfs.toml:1:14: mountpoint: expected a string, got an integer");
}

TEST(ServiceConfig, AMissingFileIsNotFound) {
  auto c = LoadServiceConfig("/nonexistent/bcfs.toml");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), Code::kNotFound);
  EXPECT_EQ(c.status().message(), "read config /nonexistent/bcfs.toml: No such file or directory");
}

}  // namespace
}  // namespace bcfs::cli
