#include "catalog/catalog_cache.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "backends/backend_local.h"
#include "core/paths.h"
#include "tests/testing.h"

namespace bcfs::catalog {
namespace {

namespace fs = std::filesystem;

using testing::ReadFile;

using testing::WriteFile;

// The local layouts among the fixtures (OCI layouts, whatever the exporter).
const std::vector<std::string> kFixtures = {
    "local-max-gzip", "local-max-zstd", "local-max-estargz",      "local-max-uncompressed",
    "local-growth",   "inline",         "registry-imagemanifest", "registry-max"};

class CatalogCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/bcfs-catcache-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A copy of a fixture (never written in place) and a backend over it.
  std::string Copy(const std::string& fixture) {
    const std::string to = dir_ + "/" + fixture;
    fs::copy(testing::FixturesDir() + "/" + fixture, to, fs::copy_options::recursive);
    for (const auto& e : fs::recursive_directory_iterator(to)) {
      fs::permissions(e.path(), fs::perms::owner_write, fs::perm_options::add);
    }
    return to;
  }
  std::unique_ptr<backends::LocalBackend> Open(const std::string& src) {
    auto spec = backends::ParseSourceString("type=local,src=" + src);
    EXPECT_TRUE(spec.ok());
    auto b = backends::LocalBackend::Open(*spec);
    EXPECT_TRUE(b.ok()) << b.status().message();
    return b.ok() ? std::move(*b) : nullptr;
  }
  // Polls until the source's times are old enough to be trusted (see
  // LocalBackend::kRacyWindow); a deadline, not a sleep, bounds it.
  static void WaitCacheable(backends::Backend& b) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (b.Fingerprint().empty()) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "fingerprint stays racy";
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  std::string dir_;
};

// A SourceInfo with every field set to something not default, including what
// the fixtures lack (platforms, sha512, errors, synthesized blobs).
SourceInfo Synthetic() {
  SourceInfo s;
  s.name = "src";
  s.type = "s3";
  s.location = "type=s3,bucket=b,name=x";
  s.blob_count = 3;
  s.blob_bytes = 1ull << 40;
  s.unreferenced_count = 1;
  s.unreferenced_bytes = 12345;
  s.warnings = {"w1", ""};
  s.errors = {"e1"};
  const Digest a = Digest::Sha256Of("a"), b = Digest::Sha256Of("b");
  const Digest c = *Digest::Parse("sha512:" + std::string(128, 'c'));
  s.blobs = {a, b, c};
  s.blob_stats[a] = {1, -5, 7, 8, 9, false};
  s.blob_stats[c] = {2, 3, 0, 0, 0, true};
  s.refs_modified = 1700000000123456789;
  RefInfo r;
  r.name = "feature/ü";
  r.history = true;
  r.descriptor.media_type = "application/vnd.oci.image.index.v1+json";
  r.descriptor.digest = a;
  r.descriptor.size = 42;
  r.descriptor.annotations = {{"k1", "v1"}, {"k2", std::string("\0x", 2)}};
  r.descriptor.platform = formats::Platform{"linux", "arm64", "v8"};
  r.raw_descriptor = "{\"x\":1}";
  r.shape = "index";
  r.media_type = "mt";
  r.config.digest = c;
  r.config.size = -1;
  LayerInfo l;
  l.position = 3;
  l.blob = b;
  l.parent = -1;
  l.size = -1;
  l.media_type = "application/vnd.oci.image.layer.v1.tar+zstd";
  l.compression = "zstd";
  l.diff_id = a;
  l.toc_digest = c;
  l.created = -7;
  l.listed = false;
  l.present = false;
  l.actual_size = 99;
  r.layers = {l, LayerInfo()};
  formats::DecodedRecord rec;
  rec.digest = "sha256:key";
  rec.inputs = {{{"sel", 2}, {"", 0}}, {}};
  formats::ResolvedResult res;
  res.top = 5;
  res.explicit_layers = {0, 1, -3};
  res.created_at = INT64_MIN;
  res.explicit_chain = true;
  rec.results = {res, formats::ResolvedResult()};
  r.records = {rec};
  r.record_count = 7;
  r.total_size = UINT64_MAX;
  r.created = INT64_MAX;
  r.modified = 1;
  r.synthesized = true;
  r.warnings = {"rw"};
  r.errors = {"re1", "re2"};
  r.reaches = {a, Digest(), c};
  r.manifest_bytes = std::string(300, 'm');
  r.config_bytes = "cfg";
  r.inline_records_json = "[]";
  s.refs = {r, RefInfo()};
  s.history = {r};
  return s;
}

// The header of an encoding rewritten for a new body (a hostile writer can
// always make the digest match).
std::string Reheader(const std::string& enc, std::string body) {
  std::string out = enc.substr(0, 12);
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((body.size() >> (8 * i)) & 0xff));
  Digest::Sha256Of(body).AppendRaw(out);
  return out + body;
}
constexpr size_t kHeader = 52;

TEST(CatalogCodecTest, SyntheticRoundTripKeepsEveryField) {
  const SourceInfo s = Synthetic();
  const std::string enc = EncodeSourceInfo(s);
  auto dec = DecodeSourceInfo(enc);
  ASSERT_TRUE(dec.ok()) << dec.status().message();
  EXPECT_EQ(EncodeSourceInfo(*dec), enc);
  EXPECT_EQ(dec->location, s.location);
  EXPECT_EQ(dec->blob_bytes, 1ull << 40);
  EXPECT_EQ(dec->blobs, s.blobs);
  ASSERT_EQ(dec->blob_stats.size(), 2u);
  EXPECT_EQ(dec->blob_stats.at(Digest::Sha256Of("a")).mtime, -5);
  EXPECT_EQ(dec->blob_stats.at(Digest::Sha256Of("a")).ino, 8u);
  EXPECT_TRUE(dec->blob_stats.rbegin()->second.synthesized);
  EXPECT_EQ(dec->refs_modified, 1700000000123456789);
  ASSERT_EQ(dec->refs.size(), 2u);
  ASSERT_EQ(dec->history.size(), 1u);
  const RefInfo& r = dec->refs[0];
  EXPECT_EQ(r.name, "feature/ü");
  EXPECT_TRUE(r.history);
  EXPECT_EQ(r.descriptor.annotations.at("k2"), std::string("\0x", 2));
  ASSERT_TRUE(r.descriptor.platform.has_value());
  EXPECT_EQ(r.descriptor.platform->variant, "v8");
  EXPECT_FALSE(dec->refs[1].descriptor.platform.has_value());
  EXPECT_EQ(r.config.digest.algorithm(), "sha512");
  EXPECT_EQ(r.config.size, -1);
  ASSERT_EQ(r.layers.size(), 2u);
  EXPECT_EQ(r.layers[0].toc_digest, s.refs[0].layers[0].toc_digest);
  EXPECT_EQ(r.layers[0].created, -7);
  EXPECT_FALSE(r.layers[0].listed);
  EXPECT_EQ(r.layers[0].actual_size, 99);
  EXPECT_TRUE(r.layers[1].listed);
  ASSERT_EQ(r.records.size(), 1u);
  EXPECT_EQ(r.records[0].inputs[0][0].selector, "sel");
  EXPECT_EQ(r.records[0].inputs[0][0].link, 2);
  EXPECT_TRUE(r.records[0].inputs[1].empty());
  EXPECT_EQ(r.records[0].results[0].explicit_layers, (std::vector<int64_t>{0, 1, -3}));
  EXPECT_EQ(r.records[0].results[0].created_at, INT64_MIN);
  EXPECT_EQ(r.total_size, UINT64_MAX);
  EXPECT_EQ(r.created, INT64_MAX);
  EXPECT_EQ(r.reaches, s.refs[0].reaches);
  EXPECT_EQ(r.errors, (std::vector<std::string>{"re1", "re2"}));
  EXPECT_EQ(r.manifest_bytes, std::string(300, 'm'));
  EXPECT_EQ(r.inline_records_json, "[]");
}

TEST_F(CatalogCacheTest, FixturesRoundTripAndMatchAFreshRead) {
  BCFS_REQUIRE_FIXTURES();
  for (const auto& fixture : kFixtures) {
    SCOPED_TRACE(fixture);
    auto b = Open(Copy(fixture));
    ASSERT_NE(b, nullptr);
    const SourceInfo info = ReadSource(*b, fixture, "local");
    ASSERT_FALSE(info.refs.empty());
    const std::string enc = EncodeSourceInfo(info);
    auto dec = DecodeSourceInfo(enc);
    ASSERT_TRUE(dec.ok()) << dec.status().message();
    EXPECT_EQ(EncodeSourceInfo(*dec), enc);

    const SourceInfo fresh = ReadSource(*b, fixture, "local");
    EXPECT_EQ(dec->name, fixture);
    EXPECT_EQ(dec->blobs, fresh.blobs);
    EXPECT_EQ(dec->blob_count, fresh.blob_count);
    EXPECT_EQ(dec->unreferenced_bytes, fresh.unreferenced_bytes);
    EXPECT_EQ(dec->warnings, fresh.warnings);
    ASSERT_EQ(dec->blob_stats.size(), fresh.blob_stats.size());
    for (const auto& [d, st] : fresh.blob_stats) {
      const auto& got = dec->blob_stats.at(d);
      EXPECT_EQ(got.size, st.size);
      EXPECT_EQ(got.mtime, st.mtime);
      EXPECT_EQ(got.ino, st.ino);
      EXPECT_EQ(got.ctime, st.ctime);
    }
    ASSERT_EQ(dec->refs.size(), fresh.refs.size());
    ASSERT_EQ(dec->history.size(), fresh.history.size());
    for (size_t i = 0; i < fresh.refs.size(); ++i) {
      const RefInfo &got = dec->refs[i], &want = fresh.refs[i];
      EXPECT_EQ(got.name, want.name);
      EXPECT_EQ(got.shape, want.shape);
      EXPECT_EQ(got.descriptor.digest, want.descriptor.digest);
      EXPECT_EQ(got.descriptor.annotations, want.descriptor.annotations);
      EXPECT_EQ(got.raw_descriptor, want.raw_descriptor);
      EXPECT_EQ(got.config.digest, want.config.digest);
      EXPECT_EQ(got.warnings, want.warnings);
      EXPECT_EQ(got.manifest_bytes, want.manifest_bytes);
      EXPECT_EQ(got.config_bytes, want.config_bytes);
      EXPECT_EQ(got.inline_records_json, want.inline_records_json);
      EXPECT_EQ(got.total_size, want.total_size);
      EXPECT_EQ(got.created, want.created);
      ASSERT_EQ(got.layers.size(), want.layers.size());
      for (size_t j = 0; j < want.layers.size(); ++j) {
        EXPECT_EQ(got.layers[j].blob, want.layers[j].blob);
        EXPECT_EQ(got.layers[j].parent, want.layers[j].parent);
        EXPECT_EQ(got.layers[j].size, want.layers[j].size);
        EXPECT_EQ(got.layers[j].actual_size, want.layers[j].actual_size);
        EXPECT_EQ(got.layers[j].compression, want.layers[j].compression);
        EXPECT_EQ(got.layers[j].diff_id, want.layers[j].diff_id);
        EXPECT_EQ(got.layers[j].toc_digest, want.layers[j].toc_digest);
      }
      ASSERT_EQ(got.records.size(), want.records.size());
      for (size_t j = 0; j < want.records.size(); ++j) {
        EXPECT_EQ(got.records[j].digest, want.records[j].digest);
        ASSERT_EQ(got.records[j].results.size(), want.records[j].results.size());
        for (size_t k = 0; k < want.records[j].results.size(); ++k) {
          EXPECT_EQ(got.records[j].results[k].top, want.records[j].results[k].top);
          EXPECT_EQ(got.records[j].results[k].explicit_layers,
                    want.records[j].results[k].explicit_layers);
        }
        ASSERT_EQ(got.records[j].inputs.size(), want.records[j].inputs.size());
      }
    }
    for (size_t i = 0; i < fresh.history.size(); ++i) {
      EXPECT_EQ(dec->history[i].name, fresh.history[i].name);
      EXPECT_EQ(dec->history[i].layers.size(), fresh.history[i].layers.size());
    }
  }
}

TEST(CatalogCodecTest, EveryTruncationAndFlippedByteIsCorrupt) {
  const std::string enc = EncodeSourceInfo(Synthetic());
  // Cut anywhere, header left as it was.
  for (size_t n = 0; n < enc.size(); ++n) {
    auto dec = DecodeSourceInfo(std::string_view(enc).substr(0, n));
    ASSERT_FALSE(dec.ok()) << n;
    ASSERT_EQ(dec.status().code(), Code::kCorrupt) << n;
  }
  // Cut anywhere with a header that matches: the field decoders must notice.
  const std::string body = enc.substr(kHeader);
  for (size_t n = 0; n < body.size(); ++n) {
    auto dec = DecodeSourceInfo(Reheader(enc, body.substr(0, n)));
    ASSERT_FALSE(dec.ok()) << n;
    ASSERT_EQ(dec.status().code(), Code::kCorrupt) << n;
  }
  // A flipped bit anywhere; and, with a matching header, at least no crash.
  for (size_t i = 0; i < enc.size(); ++i) {
    std::string bad = enc;
    bad[i] = static_cast<char>(bad[i] ^ 0x10);
    auto dec = DecodeSourceInfo(bad);
    ASSERT_FALSE(dec.ok()) << i;
    ASSERT_EQ(dec.status().code(), Code::kCorrupt) << i;
    if (i >= kHeader) {
      auto hostile = DecodeSourceInfo(Reheader(enc, bad.substr(kHeader)));
      if (!hostile.ok()) {
        ASSERT_EQ(hostile.status().code(), Code::kCorrupt) << i;
      }
    }
  }
  // The messages name what is wrong.
  EXPECT_EQ(DecodeSourceInfo("").status().message(), "catalog cache: truncated header (0 bytes)");
  std::string v2 = enc;
  v2[8] = 2;
  EXPECT_EQ(DecodeSourceInfo(v2).status().message(),
            "catalog cache: format version 2, this build reads 1");
  std::string flipped = enc;
  flipped.back() ^= 1;
  EXPECT_EQ(DecodeSourceInfo(flipped).status().message(),
            "catalog cache: the body does not match its SHA-256");
  auto cut = DecodeSourceInfo(Reheader(enc, body.substr(0, body.size() - 1)));
  EXPECT_EQ(cut.status().message(), "catalog cache: refs_modified: truncated (at byte " +
                                        std::to_string(enc.size() - 1) + ")");
  // A hostile count allocates nothing: one varint claiming 2^62 header keys.
  auto huge =
      DecodeSourceInfo(Reheader(enc, std::string("\x80\x80\x80\x80\x80\x80\x80\x80\x40", 9)));
  EXPECT_EQ(huge.status().code(), Code::kCorrupt);
  EXPECT_NE(huge.status().message().find("header keys: count 4611686018427387904 exceeds"),
            std::string::npos)
      << huge.status().message();
}

TEST(CatalogCodecTest, ALargeBodyIsCheckedAgainstItsDigestToo) {
  // Bodies of 1 MiB and more are hashed while they are decoded.
  SourceInfo s = Synthetic();
  s.refs[0].config_bytes = std::string(3u << 20, 'c');
  const std::string enc = EncodeSourceInfo(s);
  auto dec = DecodeSourceInfo(enc);
  ASSERT_TRUE(dec.ok()) << dec.status().message();
  EXPECT_EQ(dec->refs[0].config_bytes, s.refs[0].config_bytes);
  for (size_t at : {kHeader + 3, enc.size() / 2, enc.size() - 1}) {
    std::string bad = enc;
    bad[at] ^= 1;
    EXPECT_EQ(DecodeSourceInfo(bad).status().message(),
              "catalog cache: the body does not match its SHA-256")
        << at;
  }
  auto cut = DecodeSourceInfo(Reheader(enc, enc.substr(kHeader, enc.size() / 2)));
  EXPECT_EQ(cut.status().code(), Code::kCorrupt);
  EXPECT_NE(cut.status().message().find("refs[0].config_bytes: length 3145728 runs past the end"),
            std::string::npos)
      << cut.status().message();
}

TEST_F(CatalogCacheTest, SecondReadComesFromTheCacheUntilTheSourceChanges) {
  BCFS_REQUIRE_FIXTURES();
  const std::string src = Copy("local-growth");
  const std::string cache = paths::CatalogCacheDir(dir_ + "/state");
  auto b = Open(src);
  ASSERT_NE(b, nullptr);
  WaitCacheable(*b);

  bool hit = true;
  const SourceInfo first = ReadSourceCached(*b, "g", "local", cache, &hit);
  EXPECT_FALSE(hit);
  const std::string file = CatalogCacheFile(*b, "g", "local", cache);
  ASSERT_TRUE(fs::exists(file));
  struct stat st;
  ASSERT_EQ(::stat(cache.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  const SourceInfo second = ReadSourceCached(*b, "g", "local", cache, &hit);
  EXPECT_TRUE(hit);
  EXPECT_EQ(EncodeSourceInfo(second), EncodeSourceInfo(first));
  // Another name for the same source is another file.
  ReadSourceCached(*b, "other", "local", cache, &hit);
  EXPECT_FALSE(hit);

  // A new blob: read again, and it shows.
  const Digest added = Digest::Sha256Of("a new blob");
  WriteFile(src + "/blobs/sha256/" + added.hex(), "a new blob");
  SourceInfo after = ReadSourceCached(*b, "g", "local", cache, &hit);
  EXPECT_FALSE(hit);
  EXPECT_EQ(after.blob_count, first.blob_count + 1);
  EXPECT_EQ(after.unreferenced_count, first.unreferenced_count + 1);
  EXPECT_EQ(after.blob_stats.at(added).size, 10u);
  WaitCacheable(*b);
  ReadSourceCached(*b, "g", "local", cache, &hit);
  EXPECT_FALSE(hit);
  after = ReadSourceCached(*b, "g", "local", cache, &hit);
  EXPECT_TRUE(hit);
  EXPECT_EQ(after.blob_stats.at(added).size, 10u);

  // index.json touched (same bytes): read again.
  WriteFile(src + "/index.json", ReadFile(src + "/index.json"));
  ReadSourceCached(*b, "g", "local", cache, &hit);
  EXPECT_FALSE(hit);
  WaitCacheable(*b);
  ReadSourceCached(*b, "g", "local", cache, &hit);
  ReadSourceCached(*b, "g", "local", cache, &hit);
  EXPECT_TRUE(hit);

  // A layer blob removed: read again, and the ref warns of it.
  const RefInfo& ref = first.refs.front();
  const LayerInfo& layer = ref.layers.back();
  ASSERT_TRUE(fs::remove(src + "/blobs/sha256/" + layer.blob.hex()));
  after = ReadSourceCached(*b, "g", "local", cache, &hit);
  EXPECT_FALSE(hit);
  EXPECT_FALSE(after.refs.front().layers.back().present);
  EXPECT_EQ(after.refs.front().warnings.back(), "blob " + layer.blob.ToString() + " (layer " +
                                                    std::to_string(layer.position) +
                                                    ") is missing from the source");
  EXPECT_EQ(after.blob_stats.count(layer.blob), 0u);
  WaitCacheable(*b);
  ReadSourceCached(*b, "g", "local", cache, &hit);
  after = ReadSourceCached(*b, "g", "local", cache, &hit);
  EXPECT_TRUE(hit);  // warnings are kept
  EXPECT_FALSE(after.refs.front().layers.back().present);

  // No cache dir: always read.
  ReadSourceCached(*b, "g", "local", "", &hit);
  EXPECT_FALSE(hit);
}

TEST_F(CatalogCacheTest, ACorruptCacheFileFallsBackWithAWarningAndIsRewritten) {
  BCFS_REQUIRE_FIXTURES();
  const std::string src = Copy("local-max-gzip");
  const std::string cache = dir_ + "/catalog";
  auto b = Open(src);
  ASSERT_NE(b, nullptr);
  WaitCacheable(*b);
  bool hit = true;
  const SourceInfo first = ReadSourceCached(*b, "c", "local", cache, &hit);
  EXPECT_FALSE(hit);
  const std::string file = CatalogCacheFile(*b, "c", "local", cache);
  std::string bytes = ReadFile(file);
  ASSERT_GT(bytes.size(), 100u);
  bytes[bytes.size() - 5] ^= 0x40;
  WriteFile(file, bytes);

  ::testing::internal::CaptureStderr();
  const SourceInfo again = ReadSourceCached(*b, "c", "local", cache, &hit);
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_FALSE(hit);
  EXPECT_EQ(EncodeSourceInfo(again), EncodeSourceInfo(first));
  EXPECT_NE(log.find(file + ": catalog cache: the body does not match its SHA-256; reading c "
                            "from its source"),
            std::string::npos)
      << log;
  ReadSourceCached(*b, "c", "local", cache, &hit);
  EXPECT_TRUE(hit);

  // Not a cache file at all.
  WriteFile(file, "garbage");
  ::testing::internal::CaptureStderr();
  ReadSourceCached(*b, "c", "local", cache, &hit);
  const std::string log2 = ::testing::internal::GetCapturedStderr();
  EXPECT_FALSE(hit);
  EXPECT_NE(log2.find(file + ": catalog cache: truncated header (7 bytes)"), std::string::npos)
      << log2;
}

TEST_F(CatalogCacheTest, AReadWithErrorsIsNotKept) {
  BCFS_REQUIRE_FIXTURES();
  const std::string src = Copy("local-max-gzip");
  const std::string cache = dir_ + "/catalog";
  auto b = Open(src);
  ASSERT_NE(b, nullptr);
  const SourceInfo clean = ReadSource(*b, "c", "local");
  ASSERT_FALSE(clean.HasErrors());
  ASSERT_TRUE(fs::remove(src + "/blobs/sha256/" + clean.refs.front().config.digest.hex()));
  WaitCacheable(*b);
  bool hit = true;
  const SourceInfo info = ReadSourceCached(*b, "c", "local", cache, &hit);
  EXPECT_FALSE(hit);
  ASSERT_EQ(info.refs.front().errors.size(), 1u);
  EXPECT_EQ(info.refs.front().errors[0].rfind("cache config " +
                                                  clean.refs.front().config.digest.ToString() +
                                                  " is missing from the source",
                                              0),
            0u)
      << info.refs.front().errors[0];
  EXPECT_FALSE(fs::exists(CatalogCacheFile(*b, "c", "local", cache)));
}

TEST_F(CatalogCacheTest, FingerprintFollowsTheLayout) {
  BCFS_REQUIRE_FIXTURES();
  const std::string src = Copy("local-max-gzip");
  auto b = Open(src);
  ASSERT_NE(b, nullptr);
  WaitCacheable(*b);
  const std::string fp = b->Fingerprint();
  EXPECT_NE(fp.find(src + "\n"), std::string::npos);
  EXPECT_NE(fp.find("blobs/sha512 absent"), std::string::npos) << fp;
  EXPECT_EQ(b->Fingerprint(), fp);
  // tag= reads something else.
  auto tagged = Open(src + ",tag=latest");
  WaitCacheable(*tagged);
  EXPECT_NE(tagged->Fingerprint(), fp);
  // A blob removed changes blobs/sha256's times: racy now, different later.
  const SourceInfo info = ReadSource(*b, "c", "local");
  ASSERT_TRUE(fs::remove(src + "/blobs/sha256/" + info.blobs.front().hex()));
  EXPECT_NE(b->Fingerprint(), fp);
  WaitCacheable(*b);
  EXPECT_NE(b->Fingerprint(), fp);
}

}  // namespace
}  // namespace bcfs::catalog
