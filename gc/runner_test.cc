#include "gc/runner.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

namespace bcfs::gc {
namespace {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "bcfs-gc-XXXXXX").string();
    if (mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// 100 KiB of one byte value: whole 4 KiB blocks, so on-disk size = length.
std::string Content(char c) { return std::string(25 * 4096, c); }

TEST(Runner, EvictsLeastRecentlyUsedUnpinnedContentUntilUnderTheLimit) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  auto store = store::ContentStore::Open(dir.path() + "/store");
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  const std::string derived = dir.path() + "/derived";
  std::filesystem::create_directories(derived + "/sha256");
  auto index = index::Index::Open(":memory:");
  ASSERT_TRUE(index.ok());

  std::vector<Digest> blobs;
  for (char c : {'a', 'b', 'c'}) {
    const std::string bytes = Content(c);
    const Digest d = Digest::Sha256Of(bytes);
    auto fd = (*store)->OpenVerified(d, bytes.size(), [&](uint64_t off, std::span<char> out) {
      std::memcpy(out.data(), bytes.data() + off, out.size());
      return OkStatus();
    });
    ASSERT_TRUE(fd.ok()) << fd.status().ToString();
    ::close(*fd);
    blobs.push_back(d);
  }
  // A derived copy of blob c's layer.
  {
    std::ofstream f(derived + "/sha256/" + blobs[2].hex(), std::ios::binary);
    f << Content('d');
  }
  index::SourceSnapshot snap;
  snap.source = {"src", "registry", "r/x"};
  for (const Digest& d : blobs) {
    snap.blobs.push_back({d, Content('a').size(), "application/vnd.oci.image.layer.v1.tar+gzip",
                          index::Role::kLayer});
  }
  snap.refs = {{"latest", blobs[0], "index", 0, 0, false, {blobs[0], blobs[1], blobs[2]}}};
  ASSERT_TRUE((*index)->ReplaceSource(snap).ok());
  // a and b were accessed through a mount; c and the derived copy never were
  // (their file times, i.e. now, stand in).
  ASSERT_TRUE((*index)->RecordAccesses({{blobs[0], 10, 1}, {blobs[1], 30, 1}}).ok());

  GcRequest req;
  store::Layout layout = (*store)->layout();
  req.layout = &layout;
  req.store = store->get();
  req.derived_dir = derived;
  req.index = index->get();
  req.index_path = ":memory:";
  Policy p;
  p.max_used_space = DiskSpace::Bytes(250000);
  req.policies = {p};
  req.pinned = {blobs[0]};
  req.now = 1000;

  // Plan only first: nothing is removed.
  GcRequest dry = req;
  dry.execute = false;
  auto plan = RunGc(dry);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  ASSERT_EQ(plan->items.size(), 4u);
  EXPECT_TRUE(plan->evicted.empty());
  EXPECT_TRUE((*store)->IsComplete(blobs[1]));

  auto run = RunGc(req);
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  EXPECT_TRUE(run->errors.empty());
  std::vector<std::string> evicted;
  for (size_t i : run->evicted) {
    evicted.push_back(std::string(PlaceName(run->items[i].place)) + " " +
                      run->items[i].item.digest);
  }
  // a is pinned; b (30) goes, then c (its file time, older than the derived
  // copy's), and then the total is under the limit.
  EXPECT_EQ(evicted, (std::vector<std::string>{"blob " + blobs[1].ToString(),
                                               "blob " + blobs[2].ToString()}));
  EXPECT_EQ(run->bytes_freed, 2 * Content('a').size());
  EXPECT_TRUE((*store)->IsComplete(blobs[0]));  // pinned, though least recently used
  EXPECT_FALSE((*store)->IsComplete(blobs[1]));
  EXPECT_FALSE((*store)->IsComplete(blobs[2]));
  EXPECT_TRUE(std::filesystem::exists(derived + "/sha256/" + blobs[2].hex()));
  for (const auto& s : run->items) {
    if (s.place == Place::kDerived) {
      EXPECT_EQ(s.item.role, Role::kDerived);
      EXPECT_EQ(s.item.refs, (std::vector<std::string>{"latest"}));
    } else {
      EXPECT_EQ(s.item.role, Role::kLayer);
      EXPECT_EQ(s.item.sources, (std::vector<std::string>{"src"}));
    }
  }
}

TEST(Runner, StrayFilesAreNotContentAndEmptyStoresPlanNothing) {
  TempDir dir;
  auto store = store::ContentStore::Open(dir.path() + "/store");
  ASSERT_TRUE(store.ok());
  std::filesystem::create_directories(dir.path() + "/store/blobs/sha256");
  { std::ofstream(dir.path() + "/store/blobs/sha256/not-a-digest") << "x"; }
  auto index = index::Index::Open(":memory:");
  ASSERT_TRUE(index.ok());
  auto items = CollectItems(&(*store)->layout(), dir.path() + "/absent", {}, {});
  ASSERT_TRUE(items.ok()) << items.status().ToString();
  EXPECT_TRUE(items->empty());
}

}  // namespace
}  // namespace bcfs::gc
