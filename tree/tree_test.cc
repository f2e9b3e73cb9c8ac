#include "tree/tree.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "backends/backend.h"
#include "catalog/catalog.h"
#include "store/content_store.h"
#include "tests/gen/gen.h"
#include "tests/testing.h"

namespace bcfs::tree {
namespace {

namespace fs = std::filesystem;

using testing::ReadFile;

class TreeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/bcfs-tree-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    gen::GenOptions o;
    o.out_dir = dir_ + "/cache";
    o.shape = gen::Shape::kIndex;
    o.refs = 2;
    o.ref_names = {"latest", "feature/x"};
    auto refs = gen::Generate(o);
    ASSERT_TRUE(refs.ok()) << refs.status().message();
    refs_ = *refs;
    auto idx = index::Index::Open(":memory:");
    ASSERT_TRUE(idx.ok());
    index_ = std::move(*idx);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<Tree> Build() {
    auto spec = backends::ParseSourceString("type=local,src=" + dir_ + "/cache");
    EXPECT_TRUE(spec.ok());
    auto b = backends::OpenBackend(*spec);
    EXPECT_TRUE(b.ok());
    std::shared_ptr<backends::Backend> backend = std::move(*b);
    std::vector<SourceInput> in;
    in.push_back({"cache", backend, catalog::ReadSource(*backend, "cache", "local")});
    auto t = Tree::Build(std::move(in), index_.get());
    EXPECT_TRUE(t.ok()) << t.status().message();
    return t.ok() ? std::move(*t) : nullptr;
  }

  std::string ReadAll(Tree& t, const std::string& path) {
    auto a = t.Resolve(path);
    EXPECT_TRUE(a.ok()) << path;
    auto f = t.Open(a->ino);
    EXPECT_TRUE(f.ok()) << path << ": " << f.status().message();
    if (!f.ok()) return "";
    std::string out;
    for (;;) {
      auto span = (*f)->Read(out.size(), 65536);
      EXPECT_TRUE(span.ok());
      if (span->length == 0) break;
      if (span->fd >= 0) {
        std::string buf(span->length, '\0');
        EXPECT_EQ(::pread(span->fd, buf.data(), buf.size(), span->fd_offset),
                  static_cast<ssize_t>(span->length));
        out += buf;
      } else {
        out += span->bytes;
      }
    }
    return out;
  }

  std::vector<std::string> Names(Tree& t, const std::string& path) {
    auto a = t.Resolve(path);
    EXPECT_TRUE(a.ok()) << path;
    auto entries = t.ReadDir(a->ino);
    EXPECT_TRUE(entries.ok());
    std::vector<std::string> out;
    for (const auto& e : *entries) out.push_back(e.name);
    return out;
  }

  std::string dir_;
  std::vector<gen::GeneratedRef> refs_;
  std::unique_ptr<index::Index> index_;
};

TEST_F(TreeTest, SourceFolderIsAnOciLayoutWithRefsHistoryAndStatus) {
  auto t = Build();
  EXPECT_EQ(Names(*t, ""), (std::vector<std::string>{".buildcachefs", "cache"}));
  EXPECT_EQ(Names(*t, "cache"),
            (std::vector<std::string>{"blobs", "history", "index.json", "index.json.lock", "ingest",
                                      "layers", "oci-layout", "refs"}));
  auto src = t->Resolve("cache");
  EXPECT_EQ(src->nlink, 7u);  // 2 + blobs, history, ingest, layers, refs
  EXPECT_EQ(src->mode, 0555u);
  EXPECT_EQ(Names(*t, "cache/refs"), (std::vector<std::string>{"feature%2Fx", "latest"}));
  EXPECT_EQ(Names(*t, "cache/ingest"), std::vector<std::string>{});
  EXPECT_EQ(ReadAll(*t, "cache/oci-layout"), "{\"imageLayoutVersion\":\"1.0.0\"}");
  auto lock = t->Resolve("cache/index.json.lock");
  EXPECT_EQ(lock->size, 0u);
  EXPECT_EQ(lock->mode, 0444u);
  auto status = nlohmann::json::parse(ReadAll(*t, ".buildcachefs/status.json"));
  EXPECT_EQ(status["sources"][0]["name"], "cache");
  EXPECT_EQ(status["sources"][0]["refs"], 2);
}

TEST_F(TreeTest, MetricsFileRendersTheProcessRegistryWithThisTreesLayerCounters) {
  auto t = Build();
  EXPECT_EQ(Names(*t, ".buildcachefs"), (std::vector<std::string>{"metrics", "status.json"}));
  auto attr = t->Resolve(".buildcachefs/metrics");
  ASSERT_TRUE(attr.ok());
  EXPECT_EQ(attr->cache, CachePolicy::kDirect);
  const std::string text = ReadAll(*t, ".buildcachefs/metrics");
  EXPECT_NE(text.find("# TYPE buildcachefs_layer_indexing_passes_total counter\n"
                      "buildcachefs_layer_indexing_passes_total 0\n"),
            std::string::npos)
      << text;
  // Two trees alive: one family, one sample (their sum), not two.
  {
    auto other = Build();
    const std::string both = ReadAll(*t, ".buildcachefs/metrics");
    const std::string sample = "\nbuildcachefs_layer_index_loads_total 0\n";
    const size_t at = both.find(sample);
    ASSERT_NE(at, std::string::npos) << both;
    EXPECT_EQ(both.find(sample, at + 1), std::string::npos) << both;
  }
  EXPECT_EQ(text, ReadAll(*t, ".buildcachefs/metrics"));
}

TEST_F(TreeTest, IndexJsonListsRefsSortedWithVerbatimDescriptors) {
  auto t = Build();
  auto index = nlohmann::json::parse(ReadAll(*t, "cache/index.json"));
  auto source = nlohmann::json::parse(ReadFile(dir_ + "/cache/index.json"));
  ASSERT_EQ(index["manifests"].size(), 2u);
  // "feature/x" sorts before "latest"; the source lists latest first.
  EXPECT_EQ(index["manifests"][0], source["manifests"][1]);
  EXPECT_EQ(index["manifests"][1], source["manifests"][0]);
  EXPECT_EQ(index["mediaType"], "application/vnd.oci.image.index.v1+json");
}

TEST_F(TreeTest, RefFolderServesDocumentsAndLayerLinks) {
  auto t = Build();
  const std::string hex = refs_[1].manifest_digest.substr(7);
  EXPECT_EQ(ReadAll(*t, "cache/refs/feature%2Fx/manifest.json"),
            ReadFile(dir_ + "/cache/blobs/sha256/" + hex));
  auto dir = t->Resolve("cache/refs/feature%2Fx");
  EXPECT_EQ(*t->GetXattr(dir->ino, "user.buildcachefs.ref"), "feature/x");
  EXPECT_EQ(*t->GetXattr(dir->ino, "user.buildcachefs.digest"), refs_[1].manifest_digest);
  auto layers = Names(*t, "cache/refs/feature%2Fx/layers");
  ASSERT_EQ(layers.size(), 3u);
  for (const auto& name : layers) {
    auto link = t->Resolve("cache/refs/feature%2Fx/layers/" + name);
    EXPECT_EQ(link->kind, Kind::kSymlink);
    auto target = t->ReadLink(link->ino);
    ASSERT_TRUE(target.ok());
    EXPECT_EQ(target->substr(0, 25), "../../../layers/sha256/" + name.substr(4, 2));
    EXPECT_EQ(target->substr(23, 12), name.substr(4));
    // The link resolves inside the tree to a layer folder; its blob hashes to its name.
    EXPECT_TRUE(t->Resolve("cache/layers/sha256/" + target->substr(23)).ok());
    std::string blob = ReadAll(*t, "cache/blobs/sha256/" + target->substr(23));
    EXPECT_EQ(Digest::Sha256Of(blob).hex(), target->substr(23));
  }
  auto records = nlohmann::json::parse(ReadAll(*t, "cache/refs/latest/records.json"));
  EXPECT_EQ(records.size(), 3u);
}

TEST_F(TreeTest, ABlobWhoseBytesDoNotMatchItsDigestIsNeverServed) {
  auto t0 = Build();
  const std::string hex = t0->ReadLink(t0->Resolve("cache/refs/latest/layers/" +
                                                   Names(*t0, "cache/refs/latest/layers")[2])
                                           ->ino)
                              ->substr(23);
  const std::string path = dir_ + "/cache/blobs/sha256/" + hex;
  std::string bytes = ReadFile(path);
  bytes[bytes.size() / 2] ^= 1;
  fs::permissions(path, fs::perms::owner_write, fs::perm_options::add);
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;

  auto t = Build();
  auto a = t->Resolve("cache/blobs/sha256/" + hex);
  ASSERT_TRUE(a.ok());
  auto f = t->Open(a->ino);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), Code::kCorrupt);
  auto why = t->GetXattr(a->ino, "user.buildcachefs.error");
  ASSERT_TRUE(why.ok());
  EXPECT_EQ(*why, "blob sha256:" + hex + " does not match its digest: its bytes hash to " +
                      Digest::Sha256Of(bytes).ToString());
  // Everything else still reads.
  EXPECT_FALSE(ReadAll(*t, "cache/refs/latest/manifest.json").empty());
}

TEST_F(TreeTest, VerificationIsRememberedAndSingleFlight) {
  auto t = Build();
  // A layer blob (documents are served from the verified bytes in memory).
  auto link = t->Resolve("cache/refs/latest/layers/" + Names(*t, "cache/refs/latest/layers")[0]);
  std::vector<std::string> names = {t->ReadLink(link->ino)->substr(23)};
  auto a = t->Resolve("cache/blobs/sha256/" + names[0]);
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      if (t->Open(a->ino).ok()) ++ok;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok.load(), 8);
  struct stat st;
  ASSERT_EQ(::stat((dir_ + "/cache/blobs/sha256/" + names[0]).c_str(), &st), 0);
  index::FileIdentity id{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino),
                         static_cast<uint64_t>(st.st_size),
                         st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec,
                         st.st_ctim.tv_sec * 1000000000LL + st.st_ctim.tv_nsec};
  auto memo = index_->IsVerified(id, *Digest::Parse("sha256:" + names[0]));
  ASSERT_TRUE(memo.ok());
  EXPECT_TRUE(*memo);
}

TEST_F(TreeTest, InodeNumbersAreStableAcrossBuilds) {
  auto a = Build(), b = Build();
  for (const char* p : {"cache", "cache/refs/latest/manifest.json", "cache/index.json",
                        ".buildcachefs/status.json", ".buildcachefs/metrics"}) {
    EXPECT_EQ(a->Resolve(p)->ino, b->Resolve(p)->ino) << p;
  }
  EXPECT_EQ(a->Resolve("")->ino, Tree::kRootIno);
}

TEST_F(TreeTest, RefFoldersAreFilledOnFirstUseWithThePathsInodeNumbers) {
  auto a = Build(), b = Build();
  // Nothing of a ref folder exists until it is looked into: 2 refs' contents.
  const size_t before = b->NodeCount();
  auto dir = b->Resolve("cache/refs/latest");
  ASSERT_TRUE(dir.ok());
  EXPECT_EQ(dir->nlink, 4u);  // snapshots/ and layers/, counted before they exist
  EXPECT_EQ(b->NodeCount(), before);
  EXPECT_EQ(*b->GetXattr(dir->ino, "user.buildcachefs.ref"), "latest");
  EXPECT_EQ(Names(*b, "cache/refs/latest"),
            (std::vector<std::string>{"cache-config.json", "layers", "manifest.json",
                                      "records.json", "snapshots"}));
  const size_t one = b->NodeCount();
  EXPECT_GT(one, before);
  EXPECT_EQ(b->Resolve("cache/refs/latest")->nlink, 4u);
  // Filled once: a second listing adds nothing.
  Names(*b, "cache/refs/latest");
  EXPECT_EQ(b->NodeCount(), one);
  // Filled in another order (feature/x first in a, by lookup), the inode
  // numbers are the same: they come from the paths.
  for (const char* p : {"cache/refs/feature%2Fx/manifest.json", "cache/refs/latest/snapshots",
                        "cache/refs/latest/layers", "cache/refs/latest/records.json",
                        "cache/refs/feature%2Fx/cache-config.json"}) {
    auto x = a->Resolve(p), y = b->Resolve(p);
    ASSERT_TRUE(x.ok() && y.ok()) << p;
    EXPECT_EQ(x->ino, y->ino) << p;
    EXPECT_EQ(x->size, y->size) << p;
  }
  for (const auto& name : Names(*b, "cache/refs/latest/layers")) {
    EXPECT_EQ(a->Resolve("cache/refs/latest/layers/" + name)->ino,
              b->Resolve("cache/refs/latest/layers/" + name)->ino)
        << name;
  }
}

TEST_F(TreeTest, BlobAndLayerFoldersMakeNodesOnlyForWhatIsLookedUpOrListed) {
  auto a = Build(), b = Build();
  // Nothing under blobs/ and layers/ exists until one of them is used; then
  // their sha256/ folders do, still empty.
  const size_t built = b->NodeCount();
  ASSERT_TRUE(b->Resolve("cache/blobs").ok());
  EXPECT_EQ(b->NodeCount(), built);
  EXPECT_EQ(b->Resolve("cache/blobs")->nlink, 3u);
  ASSERT_TRUE(b->Resolve("cache/blobs/sha256").ok());
  EXPECT_EQ(b->NodeCount(), built + 2);
  const auto blobs = Names(*a, "cache/blobs/sha256");  // a: every node made
  const auto layers = Names(*a, "cache/layers/sha256");
  ASSERT_GE(blobs.size(), 3u);
  ASSERT_GE(layers.size(), 2u);
  // b: the layer folders are counted before any of them exists.
  const auto lay_dir = b->Resolve("cache/layers/sha256");
  ASSERT_TRUE(lay_dir.ok());
  EXPECT_EQ(lay_dir->nlink, 2 + layers.size());
  const uint64_t sha = b->Resolve("cache/blobs/sha256")->ino;
  const size_t before = b->NodeCount();
  // A lookup makes exactly that node, with the inode number of its path.
  auto blob = b->Resolve("cache/blobs/sha256/" + blobs[1]);
  ASSERT_TRUE(blob.ok());
  EXPECT_EQ(b->NodeCount(), before + 1);
  EXPECT_EQ(blob->ino, a->Resolve("cache/blobs/sha256/" + blobs[1])->ino);
  EXPECT_EQ(blob->size, a->Resolve("cache/blobs/sha256/" + blobs[1])->size);
  auto layer = b->Resolve("cache/layers/sha256/" + layers[0]);
  ASSERT_TRUE(layer.ok());
  EXPECT_EQ(layer->kind, Kind::kDir);
  EXPECT_EQ(b->NodeCount(), before + 2);
  EXPECT_EQ(layer->ino, a->Resolve("cache/layers/sha256/" + layers[0])->ino);
  // A name the folder does not hold makes nothing.
  EXPECT_EQ(b->Lookup(sha, std::string(64, '0')).status().code(), Code::kNotFound);
  EXPECT_EQ(b->NodeCount(), before + 2);
  // A listing makes the rest, under the same numbers.
  EXPECT_EQ(Names(*b, "cache/blobs/sha256"), blobs);
  EXPECT_EQ(Names(*b, "cache/layers/sha256"), layers);
  for (const auto& n : blobs) {
    EXPECT_EQ(b->Resolve("cache/blobs/sha256/" + n)->ino,
              a->Resolve("cache/blobs/sha256/" + n)->ino)
        << n;
  }
  EXPECT_EQ(b->Resolve("cache/layers/sha256")->nlink, 2 + layers.size());
  EXPECT_EQ(a->NodeCount(), b->NodeCount());
}

// Every entry under a folder: its path relative to the folder, its attributes
// and, for files, its bytes.
struct Walked {
  std::map<std::string, Attr> attrs;
  std::map<std::string, std::string> bytes;
};

void Walk(Tree& t, uint64_t dir, const std::string& prefix, Walked* out) {
  auto entries = t.ReadDir(dir);
  ASSERT_TRUE(entries.ok()) << prefix << ": " << entries.status().message();
  for (const auto& e : *entries) {
    const std::string path = prefix + e.name;
    out->attrs[path] = e.attr;
    auto looked = t.Lookup(dir, e.name);
    ASSERT_TRUE(looked.ok()) << path;
    EXPECT_EQ(looked->ino, e.attr.ino) << path;
    EXPECT_EQ(t.GetAttr(e.attr.ino)->size, e.attr.size) << path;
    if (e.attr.kind == Kind::kDir) {
      Walk(t, e.attr.ino, path + "/", out);
    } else if (e.attr.kind == Kind::kFile) {
      auto f = t.Open(e.attr.ino);
      ASSERT_TRUE(f.ok()) << path << ": " << f.status().message();
      std::string data;
      for (;;) {
        auto span = (*f)->Read(data.size(), 65536);
        ASSERT_TRUE(span.ok()) << path << ": " << span.status().message();
        if (span->length == 0) break;
        if (span->fd >= 0) {
          std::string buf(span->length, '\0');
          ASSERT_EQ(::pread(span->fd, buf.data(), buf.size(), span->fd_offset),
                    static_cast<ssize_t>(span->length));
          data += buf;
        } else {
          data += span->bytes;
        }
      }
      out->bytes[path] = data;
    }
  }
}

TEST_F(TreeTest, LayerEntriesHaveComputedInodesAndReadTheSameWithoutTheDerivedCopy) {
  const std::string derived = dir_ + "/derived";
  ASSERT_EQ(::mkdir(derived.c_str(), 0700), 0);
  auto spec = backends::ParseSourceString("type=local,src=" + dir_ + "/cache");
  ASSERT_TRUE(spec.ok());
  auto opened = backends::OpenBackend(*spec);
  ASSERT_TRUE(opened.ok());
  std::shared_ptr<backends::Backend> backend = std::move(*opened);
  auto build = [&] {
    std::vector<SourceInput> in;
    in.push_back({"cache", backend, catalog::ReadSource(*backend, "cache", "local")});
    auto t = Tree::Build(std::move(in), index_.get(), nullptr, derived);
    EXPECT_TRUE(t.ok());
    return std::move(*t);
  };
  auto a = build();
  const std::vector<std::string> layers = Names(*a, "cache/layers/sha256");
  ASSERT_FALSE(layers.empty());
  std::map<std::string, Walked> first;
  size_t files = 0;
  for (const auto& hex : layers) {
    auto dir = a->Resolve("cache/layers/sha256/" + hex);
    ASSERT_TRUE(dir.ok());
    EXPECT_LT(dir->ino, 1ull << 62);  // the folder is a node, numbered by its path
    Walk(*a, dir->ino, "", &first[hex]);
    for (const auto& [path, attr] : first[hex].attrs) {
      // Entries are numbered by their layer's slot and their record: bit 62
      // set, below 2^63 for tools that read inode numbers as signed.
      EXPECT_EQ(attr.ino >> 62, 1u) << path;
      EXPECT_EQ(attr.cache, CachePolicy::kImmutable) << path;
      EXPECT_EQ(*a->Resolve("cache/layers/sha256/" + hex + "/" + path), attr) << path;
    }
    files += first[hex].bytes.size();
    EXPECT_EQ(a->Lookup(dir->ino, "no-such-entry").status().code(), Code::kNotFound);
  }
  ASSERT_GT(files, 0u);
  // An unknown entry of a known layer, and of an unknown one.
  const uint64_t some = first.begin()->second.attrs.begin()->second.ino;
  EXPECT_EQ(a->GetAttr(some | 0xffffffffull).status().code(), Code::kNotFound);
  EXPECT_EQ(a->GetAttr((1ull << 62) | 0x3ffffffeull << 32 | 1).status().code(), Code::kNotFound);
  EXPECT_EQ(a->ReadLink(first.begin()->second.attrs.begin()->second.ino).status().code(),
            first.begin()->second.attrs.begin()->second.kind == Kind::kSymlink
                ? Code::kOk
                : Code::kInvalidArgument);

  // Another tree lists them from the index: the same numbers, attributes, bytes.
  auto b = build();
  for (const auto& hex : layers) {
    Walked again;
    Walk(*b, b->Resolve("cache/layers/sha256/" + hex)->ino, "", &again);
    EXPECT_EQ(again.attrs, first[hex].attrs) << hex;
    EXPECT_EQ(again.bytes, first[hex].bytes) << hex;
  }
  // Without the derived copies the reads go through the seek points (dropped
  // while the copies served): from the index, or, for a layer whose row is
  // gone, from one more pass over the blob.
  std::vector<Digest> digests;
  for (const auto& hex : layers) digests.push_back(*Digest::Parse("sha256:" + hex));
  ASSERT_TRUE(index_->RemoveLayerIndex(digests.front()).ok());
  b->DerivedEvicted(digests);
  for (const auto& hex : layers) {
    Walked again;
    Walk(*b, b->Resolve("cache/layers/sha256/" + hex)->ino, "", &again);
    EXPECT_EQ(again.bytes, first[hex].bytes) << hex;
  }
  auto status = nlohmann::json::parse(ReadAll(*b, ".buildcachefs/status.json"));
  EXPECT_GT(status["layers"]["bytes_inflated_for_reads"].get<uint64_t>(), 0u);
  EXPECT_EQ(status["layers"]["loaded_from_index"].get<uint64_t>(), layers.size());
}

class RefreshTest : public TreeTest {
 protected:
  void SetUp() override {
    TreeTest::SetUp();
    for (const auto& r : refs_) digest_[r.name] = r.manifest_digest;
    index_doc_ = nlohmann::json::parse(ReadFile(dir_ + "/cache/index.json"));
    for (const auto& d : index_doc_["manifests"]) descriptors_[d["digest"]] = d;
  }
  // Rewrites the cache's index.json: one entry per (name, manifest digest of
  // a generated ref), the descriptor copied from that ref's.
  void WriteIndex(const std::vector<std::pair<std::string, std::string>>& refs) {
    nlohmann::json out = index_doc_;
    out["manifests"] = nlohmann::json::array();
    for (const auto& [name, digest] : refs) {
      nlohmann::json d = descriptors_.at(digest);
      d["annotations"]["org.opencontainers.image.ref.name"] = name;
      out["manifests"].push_back(d);
    }
    std::ofstream(dir_ + "/cache/index.json", std::ios::trunc) << out.dump();
  }
  void Record(Tree& t) {
    t.SetInvalidator([this](uint64_t ino) {
      std::lock_guard<std::mutex> lock(mu_);
      inodes_.push_back(ino);
    });
    t.SetEntryInvalidator([this](uint64_t parent, const std::string& name) {
      std::lock_guard<std::mutex> lock(mu_);
      entries_.emplace_back(parent, name);
    });
  }
  bool EntryInvalidated(uint64_t parent, const std::string& name) {
    std::lock_guard<std::mutex> lock(mu_);
    return std::find(entries_.begin(), entries_.end(), std::make_pair(parent, name)) !=
           entries_.end();
  }
  std::string Blob(const std::string& digest) {
    return ReadFile(dir_ + "/cache/blobs/sha256/" + digest.substr(7));
  }

  std::map<std::string, std::string> digest_;
  nlohmann::json index_doc_;
  std::map<std::string, nlohmann::json> descriptors_;
  std::mutex mu_;
  std::vector<uint64_t> inodes_;
  std::vector<std::pair<uint64_t, std::string>> entries_;
};

TEST_F(RefreshTest, NewRefsAppearVanishedOnesGoUnchangedOnesKeepTheirNodes) {
  auto t = Build();
  Record(*t);
  const uint64_t refs = t->Resolve("cache/refs")->ino, src = t->Resolve("cache")->ino;
  const uint64_t latest = t->Resolve("cache/refs/latest/manifest.json")->ino;
  const uint64_t index = t->Resolve("cache/index.json")->ino;
  auto held = t->Open(t->Resolve("cache/refs/feature%2Fx/manifest.json")->ino);
  ASSERT_TRUE(held.ok());
  const uint64_t feature_dir = t->Resolve("cache/refs/feature%2Fx")->ino;

  WriteIndex({{"latest", digest_["latest"]}, {"again", digest_["latest"]}});
  RefreshReport r = t->Refresh();
  EXPECT_EQ(r.errors, std::vector<std::string>{});
  EXPECT_EQ((std::vector<size_t>{r.generation, r.added, r.removed, r.changed}),
            (std::vector<size_t>{1, 1, 1, 0}));
  EXPECT_EQ(t->RefreshGeneration(), 1u);
  EXPECT_EQ(Names(*t, "cache/refs"), (std::vector<std::string>{"again", "latest"}));
  EXPECT_EQ(ReadAll(*t, "cache/refs/again/manifest.json"), Blob(digest_["latest"]));
  EXPECT_EQ(t->Resolve("cache/refs/latest/manifest.json")->ino, latest);
  auto gone = t->Lookup(refs, "feature%2Fx");
  EXPECT_EQ(gone.status().code(), Code::kNotFound);
  // What the kernel still knows of the vanished ref keeps working.
  auto span = (*held)->Read(0, 1 << 20);
  ASSERT_TRUE(span.ok());
  EXPECT_EQ(span->bytes, Blob(digest_["feature/x"]));
  EXPECT_TRUE(t->GetAttr(feature_dir).ok());
  EXPECT_EQ(t->Lookup(feature_dir, "manifest.json")->size, Blob(digest_["feature/x"]).size());
  // Its manifest, no longer reached by a ref, is history now.
  EXPECT_EQ(ReadAll(*t, "cache/history/" + digest_["feature/x"].substr(7) + "/manifest.json"),
            Blob(digest_["feature/x"]));
  // index.json is a new node with the new list.
  auto now = t->Resolve("cache/index.json");
  EXPECT_NE(now->ino, index);
  auto listed = nlohmann::json::parse(ReadAll(*t, "cache/index.json"));
  ASSERT_EQ(listed["manifests"].size(), 2u);
  EXPECT_EQ(listed["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"], "again");
  EXPECT_TRUE(EntryInvalidated(refs, "again"));
  EXPECT_TRUE(EntryInvalidated(refs, "feature%2Fx"));
  EXPECT_TRUE(EntryInvalidated(src, "index.json"));
  EXPECT_FALSE(EntryInvalidated(refs, "latest"));
  {
    std::lock_guard<std::mutex> lock(mu_);
    EXPECT_NE(std::find(inodes_.begin(), inodes_.end(), refs), inodes_.end());
  }
  auto status = nlohmann::json::parse(ReadAll(*t, ".buildcachefs/status.json"));
  EXPECT_EQ(status["refresh"]["generation"], 1);
  EXPECT_EQ(status["sources"][0]["refs"], 2);
  EXPECT_EQ(status["sources"][0]["refresh_error"], "");

  // Nothing changed: nothing is invalidated, the generation still counts.
  entries_.clear();
  r = t->Refresh();
  EXPECT_EQ((std::vector<size_t>{r.generation, r.added, r.removed, r.changed}),
            (std::vector<size_t>{2, 0, 0, 0}));
  EXPECT_EQ(entries_, (std::vector<std::pair<uint64_t, std::string>>{}));
  EXPECT_EQ(t->Resolve("cache/index.json")->ino, now->ino);
}

TEST_F(RefreshTest, BlobsAddedToTheSourceAreShownAndNamesLookedUpBeforeAreInvalidated) {
  auto t = Build();
  Record(*t);
  const uint64_t sha = t->Resolve("cache/blobs/sha256")->ino;
  const auto blobs = Names(*t, "cache/blobs/sha256");
  const std::string kept = blobs[0];
  const uint64_t kept_ino = t->Resolve("cache/blobs/sha256/" + kept)->ino;
  // A new blob, looked up (and missed) before it exists.
  const std::string bytes = "a blob written after the mount";
  const std::string hex = Digest::Sha256Of(bytes).hex();
  EXPECT_EQ(t->Lookup(sha, hex).status().code(), Code::kNotFound);
  std::ofstream(dir_ + "/cache/blobs/sha256/" + hex) << bytes;
  RefreshReport r = t->Refresh();
  EXPECT_EQ(r.errors, std::vector<std::string>{});
  EXPECT_TRUE(EntryInvalidated(sha, hex));
  EXPECT_EQ(ReadAll(*t, "cache/blobs/sha256/" + hex), bytes);
  // What was made before and did not change keeps its node.
  EXPECT_FALSE(EntryInvalidated(sha, kept));
  EXPECT_EQ(t->Resolve("cache/blobs/sha256/" + kept)->ino, kept_ino);
  auto listed = Names(*t, "cache/blobs/sha256");
  EXPECT_EQ(listed.size(), blobs.size() + 1);
  // A blob that goes away is invalidated and no longer found.
  entries_.clear();
  ASSERT_EQ(::unlink((dir_ + "/cache/blobs/sha256/" + hex).c_str()), 0);
  r = t->Refresh();
  EXPECT_TRUE(EntryInvalidated(sha, hex));
  EXPECT_EQ(t->Lookup(sha, hex).status().code(), Code::kNotFound);
  EXPECT_EQ(Names(*t, "cache/blobs/sha256"), blobs);
}

TEST_F(RefreshTest, AChangedTagShowsTheNewManifestUnderANewInode) {
  auto t = Build();
  const uint64_t before = t->Resolve("cache/refs/latest/manifest.json")->ino;
  WriteIndex({{"latest", digest_["feature/x"]}, {"feature/x", digest_["feature/x"]}});
  RefreshReport r = t->Refresh();
  EXPECT_EQ((std::vector<size_t>{r.added, r.removed, r.changed}), (std::vector<size_t>{0, 0, 1}));
  auto after = t->Resolve("cache/refs/latest/manifest.json");
  EXPECT_NE(after->ino, before);
  EXPECT_EQ(ReadAll(*t, "cache/refs/latest/manifest.json"), Blob(digest_["feature/x"]));
  EXPECT_EQ(*t->GetXattr(t->Resolve("cache/refs/latest")->ino, "user.buildcachefs.digest"),
            digest_["feature/x"]);
}

TEST_F(RefreshTest, AFailedReadKeepsThePreviousRefsAndNamesTheFile) {
  auto t = Build();
  const uint64_t src = t->Resolve("cache")->ino;
  std::ofstream(dir_ + "/cache/index.json", std::ios::trunc) << "{\"manifests\": [";
  RefreshReport r = t->Refresh();
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_NE(r.errors[0].find("source cache: refresh failed, the refs read before stay: "),
            std::string::npos)
      << r.errors[0];
  EXPECT_NE(r.errors[0].find(dir_ + "/cache/index.json"), std::string::npos) << r.errors[0];
  EXPECT_EQ(r.generation, 1u);
  EXPECT_EQ(Names(*t, "cache/refs"), (std::vector<std::string>{"feature%2Fx", "latest"}));
  EXPECT_EQ(ReadAll(*t, "cache/refs/latest/manifest.json"), Blob(digest_["latest"]));
  auto error = t->GetXattr(src, "user.buildcachefs.error");
  ASSERT_TRUE(error.ok());
  EXPECT_EQ("source cache: " + *error, r.errors[0]);
  auto status = nlohmann::json::parse(ReadAll(*t, ".buildcachefs/status.json"));
  EXPECT_EQ(status["sources"][0]["refresh_error"], *error);
  EXPECT_EQ(status["sources"][0]["refs"], 2);
  // Repaired: the error goes.
  WriteIndex({{"latest", digest_["latest"]}});
  r = t->Refresh();
  EXPECT_EQ(r.errors, std::vector<std::string>{});
  EXPECT_EQ(Names(*t, "cache/refs"), std::vector<std::string>{"latest"});
  EXPECT_EQ(t->GetXattr(src, "user.buildcachefs.error").status().code(), Code::kNotFound);
}

TEST_F(RefreshTest, ARefWhoseManifestCannotBeReadKeepsWhatItShowed) {
  auto t = Build();
  const uint64_t before = t->Resolve("cache/refs/feature%2Fx/manifest.json")->ino;
  const std::string path = dir_ + "/cache/blobs/sha256/" + digest_["feature/x"].substr(7);
  const std::string bytes = ReadFile(path);
  ASSERT_EQ(::rename(path.c_str(), (path + ".away").c_str()), 0);
  RefreshReport r = t->Refresh();
  EXPECT_EQ(r.errors, std::vector<std::string>{});
  EXPECT_EQ((std::vector<size_t>{r.added, r.removed, r.changed}), (std::vector<size_t>{0, 0, 0}));
  EXPECT_EQ(t->Resolve("cache/refs/feature%2Fx/manifest.json")->ino, before);
  EXPECT_EQ(ReadAll(*t, "cache/refs/feature%2Fx/manifest.json"), bytes);
  auto status = nlohmann::json::parse(ReadAll(*t, ".buildcachefs/status.json"));
  std::string warning;
  for (const std::string w : status["sources"][0]["warnings"]) {
    if (w.rfind("ref feature/x: not read again (", 0) == 0) warning = w;
  }
  ASSERT_NE(warning, "") << status.dump();
  EXPECT_NE(warning.find("manifest " + digest_["feature/x"] + " is missing from the source"),
            std::string::npos)
      << warning;
  EXPECT_NE(warning.find("); showing what was read before"), std::string::npos) << warning;
  // A ref that now names another manifest is not kept.
  WriteIndex({{"latest", digest_["latest"]}, {"feature/x", digest_["latest"]}});
  r = t->Refresh();
  EXPECT_EQ(ReadAll(*t, "cache/refs/feature%2Fx/manifest.json"), Blob(digest_["latest"]));
  ASSERT_EQ(::rename((path + ".away").c_str(), path.c_str()), 0);
}

// Run under TSan in CI: refreshes swap folder contents while readers look up,
// list and read.
TEST_F(RefreshTest, RefreshesRaceWithLookupsListingsAndReads) {
  auto t = Build();
  const std::string one = Blob(digest_["latest"]), two = Blob(digest_["feature/x"]);
  std::atomic<bool> stop{false};
  std::atomic<int> bad{0}, reads{0};
  std::vector<std::thread> readers;
  for (int i = 0; i < 4; ++i) {
    readers.emplace_back([&] {
      while (!stop.load()) {
        auto m = t->Resolve("cache/refs/latest/manifest.json");
        if (!m.ok()) {
          ++bad;
          continue;
        }
        auto f = t->Open(m->ino);
        if (!f.ok()) {
          ++bad;
          continue;
        }
        auto span = (*f)->Read(0, 1 << 20);
        if (!span.ok() || (span->bytes != one && span->bytes != two)) ++bad;
        auto refs = t->Resolve("cache/refs");
        auto names = t->ReadDir(refs->ino);
        if (!names.ok() || names->empty()) ++bad;
        (void)t->Lookup(refs->ino, "feature%2Fx");
        (void)t->GetAttr(refs->ino);
        (void)t->GetXattr(t->Resolve("cache")->ino, "user.buildcachefs.error");
        ++reads;
      }
    });
  }
  for (int i = 0; i < 10; ++i) {
    if (i % 2 == 0) {
      WriteIndex({{"latest", digest_["feature/x"]}});
    } else {
      WriteIndex({{"latest", digest_["latest"]}, {"feature/x", digest_["feature/x"]}});
    }
    EXPECT_EQ(t->Refresh().errors, std::vector<std::string>{});
  }
  stop.store(true);
  for (auto& th : readers) th.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_GT(reads.load(), 0);
  EXPECT_EQ(t->RefreshGeneration(), 10u);
}

// Fault injection only: the generated local cache seen as a remote source (no
// local descriptors, so blobs go through the content store) whose blob reads
// fail while `down` is set.
class FlakyRemote : public backends::Backend {
 public:
  explicit FlakyRemote(std::shared_ptr<backends::Backend> inner) : inner_(std::move(inner)) {}
  std::atomic<bool> down{false};
  std::string Describe() const override { return "flaky " + inner_->Describe(); }
  Result<std::vector<backends::RefEntry>> ListRefs() override { return inner_->ListRefs(); }
  Result<std::vector<Digest>> ListRoots() override { return inner_->ListRoots(); }
  Result<backends::BlobStat> StatBlob(const Digest& d) override { return inner_->StatBlob(d); }
  Result<size_t> ReadBlob(const Digest& d, uint64_t off, std::span<char> out) override {
    if (down.load()) return Status(Code::kUnavailable, "the server is down (test)");
    return inner_->ReadBlob(d, off, out);
  }
  Result<std::string> ReadDocument(const Digest& d, uint64_t max) override {
    return inner_->ReadDocument(d, max);
  }
  Result<std::vector<Digest>> ListBlobs() override { return inner_->ListBlobs(); }
  TimeNs RefsModified() override { return inner_->RefsModified(); }
  bool CheapStat() const override { return false; }

 private:
  std::shared_ptr<backends::Backend> inner_;
};

class RemoteTreeTest : public TreeTest {
 protected:
  void SetUp() override {
    TreeTest::SetUp();
    auto s = store::ContentStore::Open(dir_ + "/store");
    ASSERT_TRUE(s.ok()) << s.status().message();
    store_ = std::move(*s);
    auto spec = backends::ParseSourceString("type=local,src=" + dir_ + "/cache");
    ASSERT_TRUE(spec.ok());
    auto b = backends::OpenBackend(*spec);
    ASSERT_TRUE(b.ok());
    remote_ = std::make_shared<FlakyRemote>(std::shared_ptr<backends::Backend>(std::move(*b)));
    std::vector<SourceInput> in;
    in.push_back({"cache", remote_, catalog::ReadSource(*remote_, "cache", "local")});
    auto t = Tree::Build(std::move(in), index_.get(), store_.get());
    ASSERT_TRUE(t.ok()) << t.status().message();
    tree_ = std::move(*t);
  }

  std::unique_ptr<store::ContentStore> store_;
  std::shared_ptr<FlakyRemote> remote_;
  std::unique_ptr<Tree> tree_;
};

TEST_F(RemoteTreeTest, ALayerWhoseBlobCannotBeFetchedNowIsIndexedOnTheNextUse) {
  auto layers = Names(*tree_, "cache/layers/sha256");
  ASSERT_FALSE(layers.empty());
  auto dir = tree_->Resolve("cache/layers/sha256/" + layers.front());
  ASSERT_TRUE(dir.ok());
  remote_->down = true;
  auto failed = tree_->ReadDir(dir->ino);
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().code(), Code::kUnavailable) << failed.status().message();
  EXPECT_FALSE(tree_->Lookup(dir->ino, "anything").ok());
  remote_->down = false;
  auto listed = tree_->ReadDir(dir->ino);
  ASSERT_TRUE(listed.ok()) << listed.status().message();
  EXPECT_FALSE(listed->empty());
  auto err = tree_->GetXattr(dir->ino, "user.buildcachefs.error");
  EXPECT_FALSE(err.ok()) << "a passing outage must not stay as the folder's error: " << *err;
}

TEST_F(RemoteTreeTest, ClosingAPinnedFileLiftsTheGcFetchBlock) {
  // Layer blobs (documents are served from what the catalog read).
  auto blobs = Names(*tree_, "cache/layers/sha256");
  ASSERT_GE(blobs.size(), 2u);
  auto a = tree_->Resolve("cache/blobs/sha256/" + blobs[0]);
  auto b = tree_->Resolve("cache/blobs/sha256/" + blobs[1]);
  ASSERT_TRUE(a.ok() && b.ok());
  auto held = tree_->Open(a->ino);
  ASSERT_TRUE(held.ok()) << held.status().message();
  tree_->SetFetchBlock("pinned content alone exceeds maxUsedSpace (test)");
  auto refused = tree_->Open(b->ino);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Code::kNoSpace);
  EXPECT_NE(refused.status().message().find("pinned content alone exceeds"), std::string::npos);
  held->reset();  // less is pinned now: the next fetch may try
  auto opened = tree_->Open(b->ino);
  ASSERT_TRUE(opened.ok()) << opened.status().message();
  EXPECT_EQ(ReadAll(*tree_, "cache/blobs/sha256/" + blobs[1]),
            ReadFile(dir_ + "/cache/blobs/sha256/" + blobs[1]));
}

}  // namespace
}  // namespace bcfs::tree
