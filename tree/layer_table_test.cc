#include "tree/layer_table.h"

#include <gtest/gtest.h>
#include <sys/sysmacros.h>

#include <string>
#include <vector>

namespace bcfs::tree {
namespace {

constexpr TimeNs kLayerMtime = 1700000000000000000;

formats::TarEntry Entry(std::string path, formats::TarType type, uint32_t mode = 0644) {
  formats::TarEntry e;
  e.path = std::move(path);
  e.type = type;
  e.mode = mode;
  e.uid = 1000;
  e.gid = 100;
  e.mtime_sec = 1600000000;
  e.mtime_nsec = 5;
  return e;
}

formats::TarEntry File(std::string path, uint64_t offset, uint64_t size) {
  formats::TarEntry e = Entry(std::move(path), formats::TarType::kFile);
  e.data_offset = offset;
  e.size = size;
  return e;
}

formats::TarEntry Dir(std::string path, uint32_t mode = 0700) {
  return Entry(std::move(path), formats::TarType::kDir, mode);
}

formats::TarEntry Link(std::string path, formats::TarType type, std::string target) {
  formats::TarEntry e = Entry(std::move(path), type, 0777);
  e.link_target = std::move(target);
  return e;
}

struct Built {
  std::shared_ptr<const LayerTable> table;
  std::vector<std::string> warnings;
};

Built Build(const std::vector<formats::TarEntry>& entries) {
  LayerTable::Builder b(kLayerMtime);
  Built out;
  for (const auto& e : entries) b.Add(e, &out.warnings);
  out.table = b.Finish();
  return out;
}

// The record a cleaned path shows, from the root.
uint32_t Find(const LayerTable& t, std::string_view path) {
  uint32_t cur = LayerTable::kRoot;
  size_t pos = 0;
  while (cur != LayerTable::kNone) {
    const size_t slash = path.find('/', pos);
    cur = t.Lookup(cur, path.substr(pos, slash == std::string_view::npos ? slash : slash - pos));
    if (slash == std::string_view::npos) break;
    pos = slash + 1;
  }
  return cur;
}

std::vector<std::string> Names(const LayerTable& t, uint32_t dir) {
  std::vector<std::string> out;
  for (uint32_t i = t.ChildBegin(dir); i < t.ChildEnd(dir); ++i) out.emplace_back(t.Name(i));
  return out;
}

TEST(LayerTableTest, FileAttributesAreTheTarsOwn) {
  formats::TarEntry f = File("etc/passwd", 1536, 42);
  f.mode = 04755;
  f.uid = 7;
  f.gid = 8;
  f.mtime_sec = 1650000000;
  f.mtime_nsec = 123456789;
  Built b = Build({Dir("etc", 0750), f});
  ASSERT_TRUE(b.warnings.empty());
  const LayerTable& t = *b.table;
  const uint32_t i = Find(t, "etc/passwd");
  ASSERT_NE(i, LayerTable::kNone);
  Attr a = t.AttrOf(i, 99);
  EXPECT_EQ(a.ino, 99u);
  EXPECT_EQ(a.kind, Kind::kFile);
  EXPECT_EQ(a.mode, 04755u);
  EXPECT_EQ(a.uid, 7u);
  EXPECT_EQ(a.gid, 8u);
  EXPECT_EQ(a.mtime, 1650000000123456789);
  EXPECT_EQ(a.size, 42u);
  EXPECT_EQ(a.nlink, 1u);
  EXPECT_EQ(a.rdev, 0u);
  EXPECT_EQ(a.cache, CachePolicy::kImmutable);
  EXPECT_EQ(t.DataOffset(i), 1536u);
  EXPECT_EQ(t.DataSize(i), 42u);
  EXPECT_TRUE(t.Sparse(i).empty());
  EXPECT_TRUE(t.Xattrs(i).empty());
  Attr d = t.AttrOf(Find(t, "etc"), 5);
  EXPECT_EQ(d.kind, Kind::kDir);
  EXPECT_EQ(d.mode, 0750u);
  EXPECT_EQ(d.nlink, 2u);
  EXPECT_EQ(d.mtime, 1600000000000000005);
  EXPECT_FALSE(t.Implied(Find(t, "etc")));
}

TEST(LayerTableTest, ChildrenAreSortedByteWiseAndLookupsOfMissingNamesFail) {
  Built b = Build({File("z", 0, 1), File("B", 0, 1), File("a", 0, 1), File("\xc3\xa9", 0, 1),
                   Dir("m"), File("m/x", 0, 1), File("_", 0, 1)});
  const LayerTable& t = *b.table;
  EXPECT_EQ(Names(t, LayerTable::kRoot),
            (std::vector<std::string>{"B", "_", "a", "m", "z", "\xc3\xa9"}));
  EXPECT_EQ(Names(t, Find(t, "m")), (std::vector<std::string>{"x"}));
  EXPECT_EQ(t.Lookup(LayerTable::kRoot, "c"), LayerTable::kNone);
  EXPECT_EQ(t.Lookup(LayerTable::kRoot, ""), LayerTable::kNone);
  EXPECT_EQ(t.Lookup(LayerTable::kRoot, "zz"), LayerTable::kNone);
  EXPECT_EQ(t.Lookup(LayerTable::kRoot, "0"), LayerTable::kNone);
  // A file is no directory: nothing is found in it.
  EXPECT_EQ(t.Lookup(Find(t, "a"), "x"), LayerTable::kNone);
  EXPECT_EQ(t.ChildBegin(Find(t, "a")), t.ChildEnd(Find(t, "a")));
  EXPECT_EQ(t.AttrOf(LayerTable::kRoot, 1).nlink, 3u);  // m
}

TEST(LayerTableTest, ImpliedDirectoriesTakeTheLayersTimeUntilListed) {
  Built b = Build({File("a/b/c", 0, 3), Dir("a/b", 0711)});
  ASSERT_TRUE(b.warnings.empty());
  const LayerTable& t = *b.table;
  const uint32_t a = Find(t, "a");
  Attr aa = t.AttrOf(a, 2);
  EXPECT_TRUE(t.Implied(a));
  EXPECT_EQ(aa.mode, 0755u);
  EXPECT_EQ(aa.mtime, kLayerMtime);
  EXPECT_EQ(aa.uid, 0u);
  EXPECT_EQ(aa.nlink, 3u);
  // A later entry for an implied directory gives it its metadata, keeps its contents.
  const uint32_t ab = Find(t, "a/b");
  EXPECT_FALSE(t.Implied(ab));
  EXPECT_EQ(t.AttrOf(ab, 3).mode, 0711u);
  EXPECT_EQ(t.AttrOf(ab, 3).uid, 1000u);
  EXPECT_EQ(Names(t, ab), (std::vector<std::string>{"c"}));
}

TEST(LayerTableTest, LaterEntriesReplaceEarlierOnes) {
  formats::TarEntry x = Dir("d", 0700);
  x.xattrs = {{"user.k", "v"}};
  Built b = Build({File("f", 0, 1), File("f", 512, 2), Dir("d/sub"), File("d/sub/g", 0, 1), x,
                   Dir("d", 0755), File("d/sub", 1024, 9), Dir("e"), File("e/h", 0, 1),
                   File("e", 2048, 4)});
  ASSERT_TRUE(b.warnings.empty());
  const LayerTable& t = *b.table;
  EXPECT_EQ(t.DataOffset(Find(t, "f")), 512u);
  EXPECT_EQ(t.AttrOf(Find(t, "f"), 1).size, 2u);
  // A later dir entry: its metadata (and xattrs: none now) win, its contents stay.
  const uint32_t d = Find(t, "d");
  EXPECT_EQ(t.AttrOf(d, 1).mode, 0755u);
  EXPECT_TRUE(t.Xattrs(d).empty());
  EXPECT_EQ(t.AttrOf(d, 1).nlink, 2u);  // d/sub is a file now
  EXPECT_EQ(t.KindOf(Find(t, "d/sub")), Kind::kFile);
  EXPECT_EQ(t.AttrOf(Find(t, "d/sub"), 1).size, 9u);
  EXPECT_EQ(Find(t, "d/sub/g"), LayerTable::kNone);
  EXPECT_EQ(t.KindOf(Find(t, "e")), Kind::kFile);
  EXPECT_EQ(Names(t, LayerTable::kRoot), (std::vector<std::string>{"d", "e", "f"}));
  // Only what is shown is kept (the root, d, d/sub, e, f).
  EXPECT_EQ(t.size(), 5u);
}

TEST(LayerTableTest, HardLinksShareTheirTargetAndCountItsNames) {
  Built b = Build({File("a", 512, 10), Link("b", formats::TarType::kHardlink, "a"), Dir("d"),
                   Link("d/c", formats::TarType::kHardlink, "a"),
                   Link("b", formats::TarType::kHardlink, "a"),
                   Link("x", formats::TarType::kHardlink, "missing"),
                   Link("y", formats::TarType::kHardlink, "d")});
  EXPECT_EQ(b.warnings, (std::vector<std::string>{"\"x\": hard link to missing \"missing\"",
                                                  "\"y\": hard link to missing \"d\""}));
  const LayerTable& t = *b.table;
  const uint32_t a = Find(t, "a");
  EXPECT_EQ(Find(t, "b"), a);
  EXPECT_EQ(Find(t, "d/c"), a);
  EXPECT_EQ(t.AttrOf(a, 1).nlink, 3u);
  EXPECT_EQ(t.DataOffset(Find(t, "d/c")), 512u);
  EXPECT_EQ(Names(t, LayerTable::kRoot), (std::vector<std::string>{"a", "b", "d"}));
  // The listing shows the target for every name.
  for (uint32_t i = t.ChildBegin(LayerTable::kRoot); i < t.ChildEnd(LayerTable::kRoot); ++i) {
    if (t.Name(i) != "d") {
      EXPECT_EQ(t.Child(i), a);
    }
  }
}

TEST(LayerTableTest, ReplacingAHardLinkedNameKeepsTheOtherNames) {
  Built b =
      Build({File("a", 512, 10), Link("b", formats::TarType::kHardlink, "a"), File("a", 4096, 1)});
  const LayerTable& t = *b.table;
  const uint32_t old = Find(t, "b"), now = Find(t, "a");
  ASSERT_NE(old, now);
  EXPECT_EQ(t.DataOffset(old), 512u);
  EXPECT_EQ(t.AttrOf(old, 1).nlink, 1u);
  EXPECT_EQ(t.AttrOf(now, 1).nlink, 1u);
  EXPECT_EQ(t.DataOffset(now), 4096u);
  EXPECT_EQ(t.size(), 4u);  // the root, a, b and b's unlisted target
}

TEST(LayerTableTest, EntriesUnderAFileAreSkippedWithAWarning) {
  Built b = Build({File("f", 0, 1), File("f/g", 0, 1), Link("s", formats::TarType::kSymlink, "f"),
                   File("s/t", 0, 1)});
  EXPECT_EQ(b.warnings, (std::vector<std::string>{"\"f/g\": \"f\" is not a directory",
                                                  "\"s/t\": \"s\" is not a directory"}));
  EXPECT_EQ(Names(*b.table, LayerTable::kRoot), (std::vector<std::string>{"f", "s"}));
}

TEST(LayerTableTest, SymlinksDevicesXattrsAndSparseMaps) {
  formats::TarEntry dev = Entry("dev/null", formats::TarType::kChar, 0666);
  dev.dev_major = 1;
  dev.dev_minor = 3;
  formats::TarEntry blk = Entry("dev/sda", formats::TarType::kBlock, 0660);
  blk.dev_major = 8;
  formats::TarEntry fifo = Entry("dev/fifo", formats::TarType::kFifo, 0600);
  formats::TarEntry sp = File("sparse", 1024, 1 << 20);
  sp.sparse = {{0, 10, 1024}, {1 << 20, 0, 1034}};
  sp.xattrs = {{"user.b", "2"}, {"security.capability", std::string("\x01\x00", 2)}};
  Built b = Build({Link("lnk", formats::TarType::kSymlink, "../etc/hosts"), dev, blk, fifo, sp,
                   Entry("", formats::TarType::kDir, 0700)});
  ASSERT_TRUE(b.warnings.empty());
  const LayerTable& t = *b.table;
  const uint32_t l = Find(t, "lnk");
  EXPECT_EQ(t.KindOf(l), Kind::kSymlink);
  EXPECT_EQ(t.Target(l), "../etc/hosts");
  EXPECT_EQ(t.AttrOf(l, 1).size, 12u);
  EXPECT_EQ(t.AttrOf(l, 1).mode, 0777u);
  EXPECT_EQ(t.AttrOf(Find(t, "dev/null"), 1).rdev, makedev(1, 3));
  EXPECT_EQ(t.AttrOf(Find(t, "dev/null"), 1).kind, Kind::kCharDev);
  EXPECT_EQ(t.AttrOf(Find(t, "dev/null"), 1).size, 0u);
  EXPECT_EQ(t.AttrOf(Find(t, "dev/sda"), 1).rdev, makedev(8, 0));
  EXPECT_EQ(t.AttrOf(Find(t, "dev/sda"), 1).kind, Kind::kBlockDev);
  EXPECT_EQ(t.AttrOf(Find(t, "dev/fifo"), 1).kind, Kind::kFifo);
  EXPECT_EQ(t.AttrOf(Find(t, "dev/fifo"), 1).rdev, 0u);
  const uint32_t s = Find(t, "sparse");
  EXPECT_EQ(t.Sparse(s), sp.sparse);
  EXPECT_EQ(t.Xattrs(s), sp.xattrs);
  EXPECT_EQ(t.AttrOf(s, 1).size, 1u << 20);
  // "./" is the layer folder itself: not an entry.
  EXPECT_EQ(Names(t, LayerTable::kRoot), (std::vector<std::string>{"dev", "lnk", "sparse"}));
}

TEST(LayerTableTest, WhiteoutsAreKeptAsNames) {
  Built b = Build({File(".wh.gone", 0, 0), Dir("d"), File("d/.wh..wh..opq", 0, 0)});
  const LayerTable& t = *b.table;
  EXPECT_EQ(Names(t, LayerTable::kRoot), (std::vector<std::string>{".wh.gone", "d"}));
  EXPECT_EQ(Names(t, Find(t, "d")), (std::vector<std::string>{".wh..wh..opq"}));
}

TEST(LayerTableTest, ManyEntriesStayCompactAndFindable) {
  LayerTable::Builder builder(kLayerMtime);
  std::vector<std::string> warnings;
  for (int d = 0; d < 100; ++d) {
    for (int f = 0; f < 500; ++f) {
      builder.Add(File("dir" + std::to_string(d) + "/file" + std::to_string(f), f, 1), &warnings);
    }
  }
  auto t = builder.Finish();
  EXPECT_TRUE(warnings.empty());
  EXPECT_EQ(t->size(), 1u + 100 + 100 * 500);
  EXPECT_EQ(t->DataOffset(Find(*t, "dir42/file417")), 417u);
  EXPECT_EQ(t->AttrOf(LayerTable::kRoot, 1).nlink, 102u);
  EXPECT_LT(t->MemoryBytes(), t->size() * 70);
}

}  // namespace
}  // namespace bcfs::tree
