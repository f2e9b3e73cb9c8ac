// The pure parts of the type=s3 backend: parameters and addressing, the
// ListObjectsV2 and error documents, the synthesized manifest. Requests
// against a real SigV4-checking server are in tests/e2e/s3_test.py (moto).
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <sstream>

#include "backends/backend_s3.h"
#include "formats/cache_manifest.h"
#include "formats/cacheconfig.h"
#include "tests/testing.h"

namespace bcfs::backends::s3 {
namespace {

AwsEnvironment Env(std::map<std::string, std::string> vars = {}) {
  AwsEnvironment e;
  e.getenv = [vars](const char* n) {
    auto it = vars.find(n);
    return it == vars.end() ? std::string() : it->second;
  };
  return e;
}

Location Loc(const std::string& source, std::map<std::string, std::string> vars = {}) {
  auto spec = ParseSourceString(source);
  EXPECT_TRUE(spec.ok()) << spec.status().ToString();
  auto loc = ParseLocation(*spec, Env(vars));
  EXPECT_TRUE(loc.ok()) << loc.status().ToString();
  return loc.ok() ? *loc : Location{};
}

TEST(S3Location, DefaultsAndPrefixesConcatenateAsBuildKit) {
  Location l = Loc("type=s3,bucket=bk,region=eu-west-1,prefix=foo");
  EXPECT_EQ(l.BlobKey(*Digest::Parse("sha256:" + std::string(64, 'a'))),
            "fooblobs/sha256:" + std::string(64, 'a'));
  EXPECT_EQ(l.ManifestKey("main"), "foomanifests/main");
  EXPECT_TRUE(l.names.empty());
  Location p =
      Loc("type=s3,bucket=bk,region=r,prefix=p/,blobs_prefix=b-,manifests_prefix=m/,name=a;b;;a");
  EXPECT_EQ(p.ManifestKey("a"), "p/m/a");
  EXPECT_EQ(p.names, (std::vector<std::string>{"a", "b"}));
}

TEST(S3Location, AwsVirtualHostedUnlessTheBucketIsNoDnsLabel) {
  Location l = Loc("type=s3,bucket=bkt,region=eu-west-1,use_path_style=true");
  EXPECT_EQ(l.host, "bkt.s3.eu-west-1.amazonaws.com");  // use_path_style needs endpoint_url
  EXPECT_EQ(l.UrlOf("blobs/sha256:ab", ""),
            "https://bkt.s3.eu-west-1.amazonaws.com/blobs/sha256%3Aab");
  EXPECT_EQ(l.UrlOf("", "list-type=2&prefix=m%2F"),
            "https://bkt.s3.eu-west-1.amazonaws.com/?list-type=2&prefix=m%2F");
  Location d = Loc("type=s3,bucket=my.bucket,region=us-east-1");
  EXPECT_EQ(d.host, "s3.us-east-1.amazonaws.com");
  EXPECT_EQ(d.UrlOf("k", ""), "https://s3.us-east-1.amazonaws.com/my.bucket/k");
  EXPECT_EQ(Loc("type=s3,bucket=bkt,region=cn-north-1").host, "bkt.s3.cn-north-1.amazonaws.com.cn");
}

TEST(S3Location, EndpointPathStyleVirtualHostedAndIpHosts) {
  Location p =
      Loc("type=s3,bucket=bkt,region=us-east-1,endpoint_url=http://127.0.0.1:5011,"
          "use_path_style=true");
  EXPECT_EQ(p.host, "127.0.0.1:5011");
  EXPECT_EQ(p.UrlOf("manifests/a b", ""), "http://127.0.0.1:5011/bkt/manifests/a%20b");
  EXPECT_EQ(p.PathOf(""), "/bkt");
  // An IP endpoint is path-style whatever use_path_style says (the SDK's rules).
  EXPECT_TRUE(Loc("type=s3,bucket=bkt,region=r,endpoint_url=http://127.0.0.1:9").path_style);
  Location v = Loc("type=s3,bucket=bkt,region=r,endpoint_url=https://minio.example.com:443/base/");
  EXPECT_FALSE(v.path_style);
  EXPECT_EQ(v.host, "bkt.minio.example.com");
  EXPECT_EQ(v.UrlOf("k", ""), "https://bkt.minio.example.com/base/k");
  Location s =
      Loc("type=s3,bucket=bkt,region=r,endpoint_url=https://minio.example.com:9000,"
          "use_path_style=true");
  EXPECT_EQ(s.UrlOf("k", ""), "https://minio.example.com:9000/bkt/k");
}

TEST(S3Location, BucketAndRegionFromTheEnvironmentElseAClearError) {
  Location l = Loc("type=s3", {{"AWS_BUCKET", "envb"}, {"AWS_REGION", "eu-central-1"}});
  EXPECT_EQ(l.bucket, "envb");
  EXPECT_EQ(l.region, "eu-central-1");
  auto spec = ParseSourceString("type=s3,bucket=b,secret_access_key=SECRETVALUE");
  auto bad = ParseLocation(*spec, Env());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("region is required"), std::string::npos);
  EXPECT_EQ(bad.status().message().find("SECRETVALUE"), std::string::npos);
  spec = ParseSourceString("type=s3,region=r");
  EXPECT_NE(ParseLocation(*spec, Env()).status().message().find("bucket is required"),
            std::string::npos);
  spec = ParseSourceString("type=s3,bucket=b,region=r,endpoint_url=ftp://x");
  EXPECT_EQ(ParseLocation(*spec, Env()).status().code(), Code::kInvalidArgument);
}

TEST(S3Xml, ListObjectsV2PagesAndEntities) {
  const std::string xml =
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>b</Name>"
      "<Prefix>manifests/</Prefix><KeyCount>2</KeyCount><MaxKeys>2</MaxKeys>"
      "<IsTruncated>true</IsTruncated>"
      "<Contents><Key>manifests/a&amp;b</Key><LastModified>2026-11-26T20:42:23.000Z</"
      "LastModified><ETag>&quot;x&quot;</ETag><Size>4002</Size></Contents>"
      "<Contents><Key>manifests/&#252;</Key><LastModified>2026-11-26T20:42:24Z</LastModified>"
      "<Size>7</Size></Contents>"
      "<NextContinuationToken>tok/+=</NextContinuationToken></ListBucketResult>";
  auto page = ParseListObjectsV2(xml);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->objects.size(), 2u);
  EXPECT_EQ(page->objects[0].key, "manifests/a&b");
  EXPECT_EQ(page->objects[0].size, 4002u);
  EXPECT_EQ(page->objects[0].mtime, 1795725743LL * 1000000000LL);
  EXPECT_EQ(page->objects[1].key, "manifests/\xc3\xbc");
  EXPECT_TRUE(page->truncated);
  EXPECT_EQ(page->next_token, "tok/+=");
  EXPECT_FALSE(ParseListObjectsV2("<Error/>").ok());
}

TEST(S3Xml, ErrorDocumentAndHttpDate) {
  auto e = ParseErrorDoc(
      "<?xml version=\"1.0\"?><Error><Code>PermanentRedirect</Code><Message>The bucket you "
      "are attempting to access must be addressed using the specified endpoint.</Message>"
      "<Region>eu-west-1</Region></Error>");
  EXPECT_EQ(e.code, "PermanentRedirect");
  EXPECT_EQ(e.region, "eu-west-1");
  EXPECT_EQ(ParseHttpDate("Wed, 26 Nov 2026 20:42:23 GMT"), 1795725743LL * 1000000000LL);
  EXPECT_EQ(ParseHttpDate("garbage"), 0);
}

TEST(S3Synthesize, IndexShapeManifestFromTheConfigAnnotations) {
  const std::string l1 = "sha256:" + std::string(64, '1'), l2 = "sha256:" + std::string(64, '2');
  const std::string d1 = "sha256:" + std::string(64, 'd'), d2 = "sha256:" + std::string(64, 'e');
  const std::string config =
      "{\"layers\":[{\"blob\":\"" + l1 +
      "\",\"parent\":-1,\"annotations\":{\"mediaType\":\"application/"
      "vnd.oci.image.layer.v1.tar+gzip\",\"diffID\":\"" +
      d1 + "\",\"size\":10,\"createdAt\":\"2025-08-13T10:49:19.455017895Z\"}},{\"blob\":\"" + l2 +
      "\",\"annotations\":{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+zstd\","
      "\"diffID\":\"" +
      d2 + "\",\"size\":20,\"createdAt\":\"0001-01-01T00:00:00Z\"}},{\"blob\":\"" + l1 +
      "\",\"parent\":1,\"annotations\":{\"mediaType\":\"application/"
      "vnd.oci.image.layer.v1.tar+gzip\",\"diffID\":\"" +
      d1 + "\",\"size\":10,\"createdAt\":\"2025-08-13T10:49:19.455017895Z\"}}],\"records\":[]}";
  auto m = SynthesizeManifest(config, "cfg");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  const std::string want =
      "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\","
      "\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\","
      "\"digest\":\"" +
      l1 +
      "\",\"size\":10,\"annotations\":{\"buildkit/createdat\":\"2025-08-13T10:49:19.455017895Z\","
      "\"containerd.io/uncompressed\":\"" +
      d1 + "\"}},{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+zstd\",\"digest\":\"" +
      l2 + "\",\"size\":20,\"annotations\":{\"containerd.io/uncompressed\":\"" + d2 +
      "\"}},{\"mediaType\":\"application/vnd.buildkit.cacheconfig.v0\",\"digest\":\"" +
      Digest::Sha256Of(config).ToString() + "\",\"size\":" + std::to_string(config.size()) + "}]}";
  EXPECT_EQ(*m, want);
  // The catalog reads it as an ordinary index-shaped cache.
  auto parsed = formats::ParseCacheManifest(*m, "", "synth");
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(parsed->shape, formats::Shape::kIndex);
  EXPECT_EQ(parsed->layers.size(), 2u);
  EXPECT_EQ(parsed->config.digest, Digest::Sha256Of(config));
}

TEST(S3RefDescriptor, CompactJsonWithTheRefNameAndBackAgain) {
  formats::Descriptor d;
  d.media_type = "application/vnd.oci.image.index.v1+json";
  d.digest = Digest::Sha256Of("x");
  d.size = 42;
  const std::string raw = RefDescriptorJson("feature/\"x\"", d);
  EXPECT_EQ(raw, "{\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"digest\":\"" +
                     d.digest.ToString() +
                     "\",\"size\":42,\"annotations\":{\"org.opencontainers.image.ref.name\":"
                     "\"feature/\\\"x\\\"\"}}");
  auto back = ParseRefDescriptorJson(raw);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->first, "feature/\"x\"");
  EXPECT_EQ(back->second, d.digest);
  for (const char* bad : {"", "{}", "{\"digest\":\"sha256:00\",\"annotations\":{}}", "[1]"}) {
    EXPECT_EQ(ParseRefDescriptorJson(bad).status().code(), Code::kInvalidArgument) << bad;
  }
}

TEST(S3RefDescriptor, WholeSecondTimesAreYoungUntilTheirLastNanosecondPassed) {
  const TimeNs s = 1700000000LL * 1000000000;
  EXPECT_FALSE(MaybeWrittenAfter(s, s + 999999999));
  EXPECT_TRUE(MaybeWrittenAfter(s, s + 999999998));
  EXPECT_TRUE(MaybeWrittenAfter(s, s));
  EXPECT_TRUE(MaybeWrittenAfter(0, s));  // unknown: never deleted
}

TEST(S3Synthesize, ALayerWithoutDiffIdIsRefusedAsBuildKitDoes) {
  const std::string l1 = "sha256:" + std::string(64, '1');
  auto m = SynthesizeManifest(
      "{\"layers\":[{\"blob\":\"" + l1 + "\",\"parent\":-1,\"annotations\":{\"size\":3}}]}",
      "manifests/x");
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), Code::kCorrupt);
  EXPECT_NE(m.status().message().find("no diffID"), std::string::npos);
  m = SynthesizeManifest("{\"layers\":[{\"blob\":\"" + l1 + "\",\"parent\":-1}]}", "x");
  EXPECT_NE(m.status().message().find("no annotations"), std::string::npos);
}

TEST(S3Synthesize, EveryFixtureManifestSynthesizesAndParses) {
  BCFS_REQUIRE_FIXTURES();
  const std::string dir = ::bcfs::testing::FixturesDir() + "/s3-bucket";
  for (const std::string rel : {"manifests/main", "manifests/growth", "manifests/growth-alias",
                                "v0.11.6/manifests/v0.11.6"}) {
    SCOPED_TRACE(rel);
    std::ifstream in(dir + "/" + rel, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    auto m = SynthesizeManifest(ss.str(), rel);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    auto parsed = formats::ParseCacheManifest(*m, "", rel);
    ASSERT_TRUE(parsed.ok());
    auto config = formats::ParseCacheConfig(ss.str(), rel);
    ASSERT_TRUE(config.ok());
    for (const auto& l : config->layers) EXPECT_NE(parsed->FindLayer(l.blob), nullptr);
  }
}

}  // namespace
TEST(S3Xml, HttpDatesBeyond2261AreUnknown) {
  // Found by listing_fuzz: the year 4052 overflowed int64 ns.
  EXPECT_EQ(s3::ParseHttpDate("Thu, 26 Nov 4052 20:42:23 GMT"), 0);
  EXPECT_EQ(s3::ParseHttpDate("Thu, 26 Nov 1600 20:42:23 GMT"), 0);
  EXPECT_EQ(s3::ParseHttpDate("Thu, 26 Nov 2026 20:42:23 GMT"), TimeNs{1795725743} * 1000000000);
}

}  // namespace bcfs::backends::s3
