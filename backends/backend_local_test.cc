#include "backends/backend_local.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <future>

namespace bcfs::backends {
namespace {

namespace fs = std::filesystem;

class LocalBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/bcfs-local-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    fs::create_directories(dir_ + "/blobs/sha256");
  }
  void TearDown() override { fs::remove_all(dir_); }

  Digest Put(const std::string& bytes) {
    Digest d = Digest::Sha256Of(bytes);
    std::ofstream(dir_ + "/blobs/sha256/" + d.hex(), std::ios::binary) << bytes;
    return d;
  }
  void WriteIndex(const std::string& text) {
    std::ofstream(dir_ + "/index.json", std::ios::binary | std::ios::trunc) << text;
  }
  static std::string Entry(const Digest& d, const std::string& annotations) {
    return "{\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"digest\":\"" +
           d.ToString() + "\",\"size\":3" +
           (annotations.empty() ? "" : ",\"annotations\":{" + annotations + "}") + "}";
  }
  std::unique_ptr<LocalBackend> Open(const std::string& extra = "") {
    auto spec = ParseSourceString("type=local,src=" + dir_ + extra);
    EXPECT_TRUE(spec.ok()) << spec.status().message();
    auto b = LocalBackend::Open(*spec);
    EXPECT_TRUE(b.ok()) << b.status().message();
    return b.ok() ? std::move(*b) : nullptr;
  }

  std::string dir_;
};

TEST_F(LocalBackendTest, RefsAreRefNamesAndEntriesWithoutOneAreAtHex12) {
  Digest a = Put("aaa"), b = Put("bbb"), c = Put("ccc");
  WriteIndex("{\"schemaVersion\":2,\"manifests\":[" +
             Entry(a, "\"org.opencontainers.image.ref.name\":\"feature/x\"") + "," + Entry(b, "") +
             "," + Entry(c, "\"org.opencontainers.image.ref.name\":\"feature/x\"") + "]}");
  auto refs = Open()->ListRefs();
  ASSERT_TRUE(refs.ok()) << refs.status().message();
  ASSERT_EQ(refs->size(), 3u);
  EXPECT_EQ((*refs)[0].name, "feature/x");
  EXPECT_EQ((*refs)[0].descriptor.digest, a);
  EXPECT_EQ((*refs)[1].name, "@" + b.hex().substr(0, 12));
  // A second entry with the same ref name cannot share the folder.
  EXPECT_EQ((*refs)[2].name, "@" + c.hex().substr(0, 12));
}

TEST_F(LocalBackendTest, TagPrefersTheImageNameThenTheRefNameAsBuildKit) {
  Digest a = Put("aaa"), b = Put("bbb");
  WriteIndex("{\"schemaVersion\":2,\"manifests\":[" +
             Entry(a, "\"org.opencontainers.image.ref.name\":\"main\"") + "," +
             Entry(b, "\"io.containerd.image.name\":\"main\"") + "]}");
  auto refs = Open(",tag=main")->ListRefs();
  ASSERT_TRUE(refs.ok()) << refs.status().message();
  ASSERT_EQ(refs->size(), 1u);
  EXPECT_EQ((*refs)[0].name, "main");
  EXPECT_EQ((*refs)[0].descriptor.digest, b);
  auto none = Open(",tag=other")->ListRefs();
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), Code::kNotFound);
  EXPECT_EQ(none.status().message(), dir_ + "/index.json: no ref named \"other\" (tag=)");
}

TEST_F(LocalBackendTest, TagTakesTheFirstImageNameMatchAmongManyEntries) {
  std::vector<Digest> d;
  std::string entries;
  for (int i = 0; i < 40; ++i) {
    d.push_back(Put("blob" + std::to_string(i)));
    std::string ann = i == 0 || i == 7 ? "\"io.containerd.image.name\":\"x\"" : "";
    entries += (i ? "," : "") + Entry(d.back(), ann);
  }
  WriteIndex("{\"schemaVersion\":2,\"manifests\":[" + entries + "]}");
  auto refs = Open(",tag=x")->ListRefs();
  ASSERT_TRUE(refs.ok()) << refs.status().message();
  ASSERT_EQ(refs->size(), 1u);
  EXPECT_EQ((*refs)[0].descriptor.digest, d[0]);
  auto roots = Open(",tag=x")->ListRoots();
  ASSERT_TRUE(roots.ok());
  EXPECT_EQ(roots->size(), 40u);
}

TEST_F(LocalBackendTest, DigestNamesTheTopLevelBlobWithoutIndexJson) {
  Digest a = Put("{\"manifests\":[]}");
  auto refs = Open(",digest=" + a.ToString())->ListRefs();
  ASSERT_TRUE(refs.ok()) << refs.status().message();
  ASSERT_EQ(refs->size(), 1u);
  EXPECT_EQ((*refs)[0].name, "@" + a.hex().substr(0, 12));
  EXPECT_EQ((*refs)[0].descriptor.size, 16);
  EXPECT_EQ((*refs)[0].descriptor.media_type, "");
}

TEST_F(LocalBackendTest, MissingOrCorruptIndexJsonIsNamed) {
  auto missing = Open()->ListRefs();
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
  EXPECT_EQ(missing.status().message(), "open " + dir_ + "/index.json: No such file or directory");
  WriteIndex("{\"schemaVersion\":2,\"manifests\":[{");
  auto corrupt = Open()->ListRefs();
  ASSERT_FALSE(corrupt.ok());
  EXPECT_EQ(corrupt.status().code(), Code::kCorrupt);
  EXPECT_EQ(corrupt.status().message().rfind(dir_ + "/index.json: not valid JSON", 0), 0u)
      << corrupt.status().message();
}

TEST_F(LocalBackendTest, ReadsIndexJsonOnlyOnceTheExporterReleasesItsLock) {
  Digest a = Put("aaa");
  int lock = ::open((dir_ + "/index.json.lock").c_str(), O_CREAT | O_RDWR, 0644);
  ASSERT_GE(lock, 0);
  ASSERT_EQ(::flock(lock, LOCK_EX), 0);
  WriteIndex("{\"schemaVersion\":2,\"manif");  // the exporter is half-way
  auto backend = Open();
  auto refs = std::async(std::launch::async, [&] { return backend->ListRefs(); });
  WriteIndex("{\"schemaVersion\":2,\"manifests\":[" +
             Entry(a, "\"org.opencontainers.image.ref.name\":\"latest\"") + "]}");
  ASSERT_EQ(::flock(lock, LOCK_UN), 0);
  ::close(lock);
  auto got = refs.get();
  ASSERT_TRUE(got.ok()) << got.status().message();
  ASSERT_EQ(got->size(), 1u);
  EXPECT_EQ((*got)[0].name, "latest");
}

TEST_F(LocalBackendTest, StatReadAndVerifiedDocuments) {
  Digest a = Put("0123456789");
  auto b = Open();
  auto st = b->StatBlob(a);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->size, 10u);
  EXPECT_NE(st->ino, 0u);
  char buf[4];
  auto n = b->ReadBlob(a, 8, std::span<char>(buf, 4));
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 2u);
  EXPECT_EQ(std::string(buf, 2), "89");
  auto doc = b->ReadDocument(a, 100);
  ASSERT_TRUE(doc.ok());
  EXPECT_EQ(*doc, "0123456789");
  auto big = b->ReadDocument(a, 5);
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.status().message(), b->BlobPath(a) + " is larger than 5 bytes");

  // Bytes that do not hash to their name are never returned.
  std::ofstream(b->BlobPath(a), std::ios::binary | std::ios::trunc) << "0123456780";
  auto bad = b->ReadDocument(a, 100);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), Code::kCorrupt);
  EXPECT_NE(bad.status().message().find("does not match its digest"), std::string::npos);

  Digest absent = Digest::Sha256Of("nope");
  EXPECT_EQ(b->StatBlob(absent).status().code(), Code::kNotFound);
  EXPECT_EQ(b->ReadDocument(absent, 100).status().code(), Code::kNotFound);
}

TEST_F(LocalBackendTest, ListBlobsSkipsNamesThatAreNotDigests) {
  Digest a = Put("a"), b = Put("b");
  std::ofstream(dir_ + "/blobs/sha256/not-a-digest") << "x";
  std::ofstream(dir_ + "/blobs/sha256/.tmp") << "x";
  auto blobs = Open()->ListBlobs();
  ASSERT_TRUE(blobs.ok());
  std::vector<Digest> want = {a, b};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(*blobs, want);
}

TEST_F(LocalBackendTest, OpeningAMissingDirOrAFileIsNamed) {
  auto spec = ParseSourceString("type=local,src=" + dir_ + "/nope");
  auto missing = LocalBackend::Open(*spec);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
  EXPECT_EQ(missing.status().message(), "source type=local,src=" + dir_ +
                                            "/nope: cache directory " + dir_ +
                                            "/nope: No such file or directory");
  std::ofstream(dir_ + "/file") << "x";
  auto file = LocalBackend::Open(*ParseSourceString("type=local,src=" + dir_ + "/file"));
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), Code::kInvalidArgument);
}

TEST_F(LocalBackendTest, ReadingNeverWritesToTheSource) {
  Digest a = Put("aaa");
  WriteIndex("{\"schemaVersion\":2,\"manifests\":[" + Entry(a, "") + "]}");
  auto listing = [&] {
    std::vector<std::string> out;
    for (const auto& e : fs::recursive_directory_iterator(dir_)) {
      struct stat st;
      ::lstat(e.path().c_str(), &st);
      out.push_back(e.path().string() + " " + std::to_string(st.st_size) + " " +
                    std::to_string(st.st_mtim.tv_nsec) + " " + std::to_string(st.st_mode));
    }
    std::sort(out.begin(), out.end());
    return out;
  };
  auto before = listing();
  auto b = Open();
  ASSERT_TRUE(b->ListRefs().ok());
  ASSERT_TRUE(b->ListBlobs().ok());
  ASSERT_TRUE(b->ReadDocument(a, 10).ok());
  EXPECT_EQ(listing(), before);  // no index.json.lock, no ingest/, nothing touched
}

TEST_F(LocalBackendTest, StatBlobsMatchesStatBlobAndLeavesOutWhatItRefuses) {
  const Digest a = Put("aaa"), b = Put("bbbb");
  const Digest missing = Digest::Sha256Of("missing");
  const Digest dir = Digest::Sha256Of("a folder");
  fs::create_directories(dir_ + "/blobs/sha256/" + dir.hex());
  const Digest sha512 = *Digest::Parse("sha512:" + std::string(128, 'a'));
  auto backend = Open();
  const std::vector<Digest> digests = {a, missing, b, dir, sha512};
  const auto got = backend->StatBlobs(digests);
  ASSERT_EQ(got.size(), 5u);
  for (size_t i : {0u, 2u}) {
    auto one = backend->StatBlob(digests[i]);
    ASSERT_TRUE(one.ok());
    ASSERT_TRUE(got[i].has_value()) << i;
    EXPECT_EQ(got[i]->size, one->size);
    EXPECT_EQ(got[i]->mtime, one->mtime);
    EXPECT_EQ(got[i]->ctime, one->ctime);
    EXPECT_EQ(got[i]->dev, one->dev);
    EXPECT_EQ(got[i]->ino, one->ino);
  }
  EXPECT_EQ(got[2]->size, 4u);
  EXPECT_FALSE(got[1].has_value());
  EXPECT_FALSE(got[3].has_value());  // not a regular file, as StatBlob refuses it
  EXPECT_FALSE(got[4].has_value());  // no blobs/sha512/ at all
  EXPECT_TRUE(backend->StatBlobs({}).empty());
}

}  // namespace
}  // namespace bcfs::backends
