#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "core/base64.h"
#include "formats/cache_manifest.h"
#include "formats/cacheconfig.h"
#include "formats/oci.h"
#include "tests/testing.h"

namespace bcfs::formats {
namespace {

const char kL0[] = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
const char kL1[] = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const char kL2[] = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
const char kCfg[] = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

Digest D(const char* s) { return *Digest::Parse(s); }

std::string Desc(const std::string& mt, const char* digest, int size,
                 const std::string& extra = "") {
  return "{\"mediaType\":\"" + mt + "\",\"digest\":\"" + digest +
         "\",\"size\":" + std::to_string(size) + extra + "}";
}

const std::string kGzip = "application/vnd.oci.image.layer.v1.tar+gzip";

TEST(CacheManifest, ImageManifestShapeTakesConfigFromConfig) {
  std::string text = "{\"schemaVersion\":2,\"mediaType\":\"" + std::string(media::kOciManifest) +
                     "\",\"config\":" + Desc(std::string(media::kCacheConfig), kCfg, 10) +
                     ",\"layers\":[" + Desc(kGzip, kL0, 5) + "," + Desc(kGzip, kL1, 6) +
                     "],\"unknownField\":{\"x\":1}}";
  auto m = ParseCacheManifest(text, media::kOciManifest, "manifest m");
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ(m->shape, Shape::kImageManifest);
  EXPECT_EQ(ShapeName(m->shape), "image-manifest");
  EXPECT_EQ(m->config.digest, D(kCfg));
  EXPECT_EQ(m->config.size, 10);
  ASSERT_EQ(m->layers.size(), 2u);
  EXPECT_EQ(m->layers[1].digest, D(kL1));
  EXPECT_EQ(m->layers[1].size, 6);
  EXPECT_NE(m->FindLayer(D(kL0)), nullptr);
  EXPECT_EQ(m->FindLayer(D(kL2)), nullptr);
}

TEST(CacheManifest, IndexShapeTakesConfigFromTheCacheConfigEntry) {
  std::string text = "{\"schemaVersion\":2,\"mediaType\":\"" + std::string(media::kOciIndex) +
                     "\",\"manifests\":[" + Desc(kGzip, kL0, 5) + "," + Desc(kGzip, kL0, 5) + "," +
                     Desc(std::string(media::kCacheConfig), kCfg, 10) + "]}";
  auto m = ParseCacheManifest(text, "", "index i");
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ(m->shape, Shape::kIndex);
  EXPECT_EQ(m->config.digest, D(kCfg));
  EXPECT_EQ(m->layers.size(), 2u);  // duplicates kept, as BuildKit lists them
}

TEST(CacheManifest, DockerManifestListShape) {
  std::string docker_gzip = "application/vnd.docker.image.rootfs.diff.tar.gzip";
  std::string text = "{\"schemaVersion\":2,\"mediaType\":\"" +
                     std::string(media::kDockerManifestList) + "\",\"manifests\":[" +
                     Desc(docker_gzip, kL0, 5) + "," +
                     Desc(std::string(media::kCacheConfig), kCfg, 10) + "]}";
  auto m = ParseCacheManifest(text, media::kDockerManifestList, "list");
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ(m->shape, Shape::kManifestList);
  EXPECT_EQ(LayerCompression(m->layers[0]), "gzip");
}

TEST(CacheManifest, DockerSchema2ImageIsInline) {
  std::string text = "{\"schemaVersion\":2,\"mediaType\":\"" + std::string(media::kDockerManifest) +
                     "\",\"config\":" + Desc(std::string(media::kDockerImageConfig), kCfg, 10) +
                     ",\"layers\":[" +
                     Desc("application/vnd.docker.image.rootfs.diff.tar.gzip", kL0, 5) + "]}";
  auto m = ParseCacheManifest(text, "", "img");
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ(m->shape, Shape::kInline);
}

TEST(CacheManifest, MalformedDocumentsNameDocumentFieldAndProblem) {
  auto not_json = ParseCacheManifest("{\"schemaVersion\":2,", "", "manifest sha256:ab12");
  ASSERT_FALSE(not_json.ok());
  EXPECT_EQ(not_json.status().code(), Code::kCorrupt);
  EXPECT_NE(not_json.status().message().find("manifest sha256:ab12: not valid JSON"),
            std::string::npos);

  std::string bad_size = "{\"schemaVersion\":2,\"manifests\":[" + Desc(kGzip, kL0, -5) + "]}";
  auto neg = ParseCacheManifest(bad_size, "", "idx");
  ASSERT_FALSE(neg.ok());
  EXPECT_EQ(neg.status().message(), "idx: field \"manifests[0].size\": -5 is negative");

  std::string bad_digest =
      "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"x\",\"digest\":\"sha256:zz\",\"size\":"
      "1}]}";
  auto bd = ParseCacheManifest(bad_digest, "", "idx");
  ASSERT_FALSE(bd.ok());
  EXPECT_NE(bd.status().message().find("idx: field \"manifests[0].digest\": digest \"sha256:zz\""),
            std::string::npos);

  std::string no_config = "{\"schemaVersion\":2,\"manifests\":[" + Desc(kGzip, kL0, 5) + "]}";
  auto nc = ParseCacheManifest(no_config, "", "idx");
  ASSERT_FALSE(nc.ok());
  EXPECT_NE(nc.status().message().find("no descriptor has media type "
                                       "application/vnd.buildkit.cacheconfig.v0"),
            std::string::npos);

  auto v1 = ParseCacheManifest("{\"schemaVersion\":1,\"manifests\":[]}", "", "idx");
  ASSERT_FALSE(v1.ok());
  EXPECT_EQ(v1.status().message(), "idx: field \"schemaVersion\": 1, want 2");

  auto arr = ParseCacheManifest("[1,2]", "", "idx");
  ASSERT_FALSE(arr.ok());
  EXPECT_EQ(arr.status().message(), "idx: the document is an array, want an object");

  std::string index_text = "{\"schemaVersion\":2,\"mediaType\":\"" + std::string(media::kOciIndex) +
                           "\",\"manifests\":[" + Desc(std::string(media::kCacheConfig), kCfg, 10) +
                           "]}";
  // The referring descriptor's media type is not trusted (BuildKit sniffs).
  auto disagree = ParseCacheManifest(index_text, media::kOciManifest, "idx");
  ASSERT_TRUE(disagree.ok()) << disagree.status().message();
  EXPECT_EQ(disagree->shape, Shape::kIndex);

  std::string mt_lies = "{\"schemaVersion\":2,\"mediaType\":\"" + std::string(media::kOciManifest) +
                        "\",\"manifests\":[]}";
  auto lies = ParseCacheManifest(mt_lies, "", "idx");
  ASSERT_FALSE(lies.ok());
  EXPECT_NE(lies.status().message().find("field \"mediaType\""), std::string::npos);

  std::string image_index = "{\"schemaVersion\":2,\"mediaType\":\"" +
                            std::string(media::kOciIndex) + "\",\"manifests\":[" +
                            Desc(std::string(media::kOciManifest), kL0, 5) + "]}";
  auto ii = ParseCacheManifest(image_index, "", "idx");
  ASSERT_FALSE(ii.ok());
  EXPECT_EQ(ii.status().code(), Code::kUnsupported);
}

TEST(Oci, LayerCompressionFromMediaTypeAndStargzAnnotation) {
  Descriptor d;
  d.media_type = "application/vnd.oci.image.layer.v1.tar+zstd";
  EXPECT_EQ(LayerCompression(d), "zstd");
  d.media_type = "application/vnd.docker.image.rootfs.diff.tar.zstd";
  EXPECT_EQ(LayerCompression(d), "zstd");
  d.media_type = "application/vnd.oci.image.layer.v1.tar";
  EXPECT_EQ(LayerCompression(d), "uncompressed");
  d.media_type = "application/vnd.docker.image.rootfs.diff.tar";
  EXPECT_EQ(LayerCompression(d), "uncompressed");
  d.media_type = kGzip;
  EXPECT_EQ(LayerCompression(d), "gzip");
  d.annotations[std::string(annotation::kStargzToc)] = "sha256:x";
  EXPECT_EQ(LayerCompression(d), "estargz");
  d.media_type = "application/x-foo";
  EXPECT_EQ(LayerCompression(d), "unknown");
}

// layers sorted by digest with a parent after its child, a missing parent
// meaning 0, and -1 as base: L0 (index 0, base) <- L2 (index 2, parent omitted = 0)
// <- L1 (index 1, parent 2).
const std::string kConfig = std::string("{\"layers\":[") + "{\"blob\":\"" + kL0 +
                            "\",\"parent\":-1}," + "{\"blob\":\"" + kL1 + "\",\"parent\":2}," +
                            "{\"blob\":\"" + kL2 + "\"}]," +
                            "\"records\":["
                            "{\"digest\":\"sha256:r0\",\"layers\":[{\"layer\":0,\"createdAt\":"
                            "\"2026-01-01T00:00:00.5Z\"}]},"
                            "{\"digest\":\"sha256:r1\",\"layers\":[{\"layer\":1,\"createdAt\":"
                            "\"2026-01-01T00:00:01Z\"}],\"inputs\":[[{\"selector\":\"sel\","
                            "\"link\":0},{\"link\":2}]]},"
                            "{\"digest\":\"sha256:r2\",\"chains\":[{\"layers\":[1,0],\"createdAt\":"
                            "\"0001-01-01T00:00:00Z\"}],\"inputs\":[[{\"link\":0}]]}]}";

TEST(CacheConfig, ParsesLayersWithGoOmitemptyParentsAndRecords) {
  auto c = ParseCacheConfig(kConfig, "cache config c");
  ASSERT_TRUE(c.ok()) << c.status().message();
  ASSERT_EQ(c->layers.size(), 3u);
  EXPECT_EQ(c->layers[0].parent, -1);
  EXPECT_EQ(c->layers[1].parent, 2);
  EXPECT_EQ(c->layers[2].parent, 0);  // omitted: Go's omitempty dropped 0
  ASSERT_EQ(c->records.size(), 3u);
  EXPECT_EQ(c->records[1].inputs[0][0].selector, "sel");
  EXPECT_EQ(c->records[1].inputs[0][1].link, 2);
  EXPECT_EQ(c->records[0].results[0].created_at, 1767225600500000000LL);
  EXPECT_EQ(c->records[2].chains[0].created_at, 0);
}

TEST(CacheConfig, ResultsFollowParentsAndChainsIgnoreThem) {
  auto c = ParseCacheConfig(kConfig, "cc");
  ASSERT_TRUE(c.ok());
  auto d = DecodeRecords(
      *c, [](const Digest&) { return true; }, "cc");
  ASSERT_TRUE(d.ok()) << d.status().message();
  ASSERT_EQ(d->records.size(), 3u);
  const auto parents = LayerParents(*c);
  EXPECT_EQ(d->records[0].results[0].Layers(parents), (std::vector<int64_t>{0}));
  // r1: layer 1 -> parent 2 -> parent 0 (omitted) -> -1; bottom first.
  EXPECT_EQ(d->records[1].results[0].Layers(parents), (std::vector<int64_t>{0, 2, 1}));
  EXPECT_FALSE(d->records[1].results[0].explicit_chain);
  // r2: explicit chain [1, 0], parents not followed.
  EXPECT_EQ(d->records[2].results[0].Layers(parents), (std::vector<int64_t>{1, 0}));
  EXPECT_TRUE(d->records[2].results[0].explicit_chain);
  EXPECT_TRUE(d->dropped.empty());
}

TEST(CacheConfig, AResultWithAMissingBlobIsDroppedNotAnError) {
  auto c = ParseCacheConfig(kConfig, "cc");
  ASSERT_TRUE(c.ok());
  auto d = DecodeRecords(
      *c, [](const Digest& x) { return x != D(kL2); }, "cc");
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_EQ(d->records[0].results.size(), 1u);
  EXPECT_EQ(d->records[1].results.size(), 0u);
  EXPECT_EQ(d->records[2].results.size(), 1u);  // chain [1,0] does not use L2
  ASSERT_EQ(d->dropped.size(), 1u);
  EXPECT_NE(d->dropped[0].find(std::string("blob ") + kL2), std::string::npos);
  EXPECT_NE(d->dropped[0].find("sha256:r1"), std::string::npos);
}

TEST(CacheConfig, KeysMatchCaseInsensitivelyAsGoDoesAndUnknownKeysAreIgnored) {
  std::string text = std::string("{\"LAYERS\":[{\"Blob\":\"") + kL0 +
                     "\",\"parent\":-1,\"extra\":true}],\"records\":[{\"digest\":\"k\","
                     "\"layers\":[{\"layer\":0,\"createdat\":\"2026-01-01T00:00:00Z\"}]}],"
                     "\"future\":[1,2,3]}";
  auto c = ParseCacheConfig(text, "cc");
  ASSERT_TRUE(c.ok()) << c.status().message();
  ASSERT_EQ(c->layers.size(), 1u);
  EXPECT_EQ(c->layers[0].blob, D(kL0));
  EXPECT_EQ(c->records[0].results[0].created_at, 1767225600000000000LL);
}

TEST(CacheConfig, S3StyleLayerAnnotations) {
  std::string text = std::string("{\"layers\":[{\"blob\":\"") + kL0 +
                     "\",\"parent\":-1,\"annotations\":{\"mediaType\":\"" + kGzip +
                     "\",\"diffID\":\"" + kL1 +
                     "\",\"size\":42,\"createdAt\":\"0001-01-01T00:00:00Z\"}}]}";
  auto c = ParseCacheConfig(text, "cc");
  ASSERT_TRUE(c.ok()) << c.status().message();
  ASSERT_TRUE(c->layers[0].annotations.has_value());
  EXPECT_EQ(c->layers[0].annotations->media_type, kGzip);
  EXPECT_EQ(c->layers[0].annotations->diff_id, D(kL1));
  EXPECT_EQ(c->layers[0].annotations->size, 42);
  EXPECT_EQ(c->layers[0].annotations->created_at, 0);
}

struct BadConfig {
  std::string text;
  std::string want;
};

TEST(CacheConfig, BrokenGraphsAreErrorsNamingTheField) {
  auto all = [](const Digest&) { return true; };
  std::string l0 = std::string("{\"blob\":\"") + kL0 + "\"";
  std::vector<BadConfig> cases = {
      {"{\"layers\":[" + l0 + ",\"parent\":5}],\"records\":[{\"layers\":[{\"layer\":0}]}]}",
       "parent 5 is out of range (1 layers)"},
      {"{\"layers\":[" + l0 + "}],\"records\":[{\"layers\":[{\"layer\":0}]}]}",
       "invalid looping layer"},  // missing parent = 0 = itself
      {"{\"layers\":[" + l0 + ",\"parent\":-1}],\"records\":[{\"layers\":[{\"layer\":3}]}]}",
       "records[0].layers[0]: cc: layer index 3 is out of range (1 layers)"},
      {"{\"layers\":[" + l0 + ",\"parent\":-1}],\"records\":[{\"chains\":[{\"layers\":[0,7]}]}]}",
       "field \"records[0].chains[0]\": layer index 7 is out of range"},
      {"{\"records\":[{\"inputs\":[[]]}]}", "field \"records[0].inputs[0]\": invalid empty input"},
      {"{\"records\":[{\"inputs\":[[{\"link\":4}]]}]}",
       "field \"records[0].inputs[0][0].link\": 4 is out of range (1 records)"},
      {"{\"records\":[{\"inputs\":[[{\"link\":1}]]},{\"inputs\":[[{\"link\":0}]]}]}",
       "invalid loop among records"},
  };
  for (const auto& bc : cases) {
    auto c = ParseCacheConfig(bc.text, "cc");
    ASSERT_TRUE(c.ok()) << bc.text << ": " << c.status().message();
    auto d = DecodeRecords(*c, all, "cc");
    ASSERT_FALSE(d.ok()) << bc.text;
    EXPECT_EQ(d.status().code(), Code::kCorrupt);
    EXPECT_NE(d.status().message().find(bc.want), std::string::npos)
        << d.status().message() << " lacks " << bc.want;
  }
}

TEST(CacheConfig, MalformedFieldsAreRejectedNamingThem) {
  std::vector<BadConfig> cases = {
      {"{\"layers\":{}}", "cc: field \"layers\": an object, want an array"},
      {"{\"layers\":[{\"parent\":-1}]}", "cc: field \"layers[0].blob\": missing"},
      {"{\"layers\":[{\"blob\":\"sha256:1\"}]}", "cc: field \"layers[0].blob\": digest"},
      {std::string("{\"layers\":[{\"blob\":\"") + kL0 + "\",\"parent\":\"1\"}]}",
       "cc: field \"layers[0].parent\": a string, want an integer"},
      {std::string("{\"layers\":[{\"blob\":\"") + kL0 + "\",\"parent\":-2}]}",
       "cc: field \"layers[0].parent\": -2 is below -1"},
      {"{\"records\":[{\"layers\":[{\"layer\":0,\"createdAt\":\"yesterday\"}]}]}",
       "cc: field \"records[0].layers[0].createdAt\": \"yesterday\" is not an RFC 3339 time"},
      {"{\"records\":[{\"inputs\":[{\"link\":0}]}]}",
       "cc: field \"records[0].inputs[0]\": an object, want an array"},
      {"{\"records\":[{\"chains\":[{\"layers\":[\"a\"]}]}]}",
       "cc: field \"records[0].chains[0].layers[0]\": a string, want an integer"},
      {"nul", "cc: not valid JSON"},
  };
  for (const auto& bc : cases) {
    auto c = ParseCacheConfig(bc.text, "cc");
    ASSERT_FALSE(c.ok()) << bc.text;
    EXPECT_EQ(c.status().code(), Code::kCorrupt);
    EXPECT_NE(c.status().message().find(bc.want), std::string::npos)
        << c.status().message() << " lacks " << bc.want;
  }
}

TEST(Inline, RecordsFromTheImageConfigAndLayersFromTheManifest) {
  std::string records =
      "[{\"layers\":[{\"layer\":1,\"createdAt\":\"2026-01-01T00:00:02Z\"}],\"digest\":\"k1\","
      "\"inputs\":[[{\"link\":1}]]},{\"digest\":\"k0\",\"chains\":[{\"layers\":[0]}]}]";
  std::string config =
      "{\"architecture\":\"amd64\",\"moby.buildkit.cache.v0\":\"" + Base64Encode(records) +
      "\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"" + kL2 + "\",\"" + kCfg +
      "\"]},\"history\":[{\"created\":\"2026-01-01T00:00:00Z\"},{\"created\":"
      "\"2026-01-01T00:00:05Z\",\"empty_layer\":true},{\"created\":"
      "\"2026-01-01T00:00:01Z\"}]}";
  CacheManifest m;
  m.shape = Shape::kInline;
  Descriptor a, b;
  a.digest = D(kL0);
  a.size = 5;
  b.digest = D(kL1);
  b.size = 6;
  m.layers = {a, b};
  auto ic = ParseInlineCache(config, m, "image config");
  ASSERT_TRUE(ic.ok()) << ic.status().message();
  EXPECT_EQ(ic->records_json, records);
  ASSERT_EQ(ic->config.layers.size(), 2u);
  EXPECT_EQ(ic->config.layers[0].parent, -1);
  EXPECT_EQ(ic->config.layers[1].parent, 0);
  EXPECT_EQ(ic->config.layers[1].blob, D(kL1));
  EXPECT_EQ(ic->config.layers[1].annotations->diff_id, D(kCfg));
  EXPECT_EQ(ic->config.layers[1].annotations->created_at, 1767225601000000000LL);
  auto d = DecodeRecords(
      ic->config, [](const Digest&) { return true; }, "image config");
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_EQ(d->records[0].results[0].Layers(LayerParents(ic->config)),
            (std::vector<int64_t>{0, 1}));

  m.layers.pop_back();
  auto mismatch = ParseInlineCache(config, m, "image config");
  ASSERT_FALSE(mismatch.ok());
  EXPECT_NE(mismatch.status().message().find("2 entries but the image has 1 layers"),
            std::string::npos);
  auto none = ParseInlineCache("{\"architecture\":\"amd64\"}", m, "image config");
  EXPECT_EQ(none.status().code(), Code::kNotFound);
  auto bad64 = ParseInlineCache("{\"moby.buildkit.cache.v0\":\"@@@@\"}", m, "image config");
  ASSERT_FALSE(bad64.ok());
  EXPECT_NE(bad64.status().message().find("field \"moby.buildkit.cache.v0\""), std::string::npos);
}

// The real BuildKit exports in ../shared (FORMATS.md fixtures): each parses
// with the shape MANIFEST.md records.
std::string ReadFixture(const std::string& rel) {
  std::ifstream f(bcfs::testing::FixturesDir() + "/" + rel, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

TEST(Fixtures, RealBuildKitExportsParseInEveryShape) {
  BCFS_REQUIRE_FIXTURES();
  struct Case {
    std::string top, config;
    Shape shape;
    size_t layers, records;
  };
  std::vector<Case> cases = {
      {"local-max-gzip/blobs/sha256/"
       "1775718c4e0f0234849b1c58e4f30a994431341386cd7b486b8773011d782b48",
       "local-max-gzip/blobs/sha256/"
       "16966e6ea17ee8c7bc6f38ed8267be821918957d4e7583d7cf96f3a46b387d91",
       Shape::kIndex, 10, 13},
      {"registry-imagemanifest/blobs/sha256/"
       "f88f6c151b2131acb741544ca25463ffc053ec29716d348d4b368efc95977635",
       "registry-imagemanifest/blobs/sha256/"
       "2c4ce9dd11cedb8c4daffedf0107b86d6541091b3de91e0427b08d6f2f7bff03",
       Shape::kImageManifest, 10, 13},
  };
  for (const auto& c : cases) {
    auto m = ParseCacheManifest(ReadFixture(c.top), "", c.top);
    ASSERT_TRUE(m.ok()) << m.status().message();
    EXPECT_EQ(m->shape, c.shape);
    auto cfg = ParseCacheConfig(ReadFixture(c.config), c.config);
    ASSERT_TRUE(cfg.ok()) << cfg.status().message();
    EXPECT_EQ(cfg->layers.size(), c.layers);
    EXPECT_EQ(cfg->records.size(), c.records);
    auto d = DecodeRecords(
        *cfg, [&](const Digest& x) { return m->FindLayer(x) != nullptr; }, c.config);
    ASSERT_TRUE(d.ok()) << d.status().message();
    EXPECT_TRUE(d->dropped.empty());
  }
  std::string inline_top =
      "inline/blobs/sha256/d5becf95318ae61f85503003c5a5ce3b43f5b3f55eb5f2729041c7b374f04d71";
  auto im = ParseCacheManifest(ReadFixture(inline_top), "", inline_top);
  ASSERT_TRUE(im.ok()) << im.status().message();
  EXPECT_EQ(im->shape, Shape::kInline);
  auto ic = ParseInlineCache(
      ReadFixture("inline/blobs/sha256/"
                  "8408234037330c059d6f9eeeec855ff988cde4b04f732303e877d81043a0d099"),
      *im, "inline config");
  ASSERT_TRUE(ic.ok()) << ic.status().message();
  EXPECT_EQ(ic->config.layers.size(), 9u);
  EXPECT_EQ(ic->config.records.size(), 13u);
  EXPECT_EQ(ic->config.layers[0].blob.hex(),
            "b4345cd53f3e33300c56c9f70b7e631d4ccc0558cfd1f202673f089df7565533");
  EXPECT_EQ(ic->config.layers[0].annotations->diff_id.hex(),
            "e8925b5a826724c148367fd9b2a5f9d920ebe3df813984373013b54a24d30dd0");
  EXPECT_EQ(FormatRfc3339(ic->config.layers[0].annotations->created_at),
            "2026-11-26T20:35:43.838220653Z");
}

}  // namespace
}  // namespace bcfs::formats
