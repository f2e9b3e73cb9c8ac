#include "index/index.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <stdlib.h>

#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

namespace bcfs::index {
namespace {

// A fresh directory per test, removed (with everything in it) afterwards, even
// when the test fails.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "bcfs-index-XXXXXX").string();
    if (mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  bool ok() const { return !path_.empty(); }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

Digest D(std::string_view content) { return Digest::Sha256Of(content); }

// Runs SQL on the file with a second, raw connection (to forge states the
// Index API cannot produce).
void RawExec(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  EXPECT_EQ(rc, SQLITE_OK) << (err ? err : "");
  sqlite3_free(err);
  sqlite3_close(db);
}

std::unique_ptr<Index> MustOpen(const std::string& path) {
  auto idx = Index::Open(path);
  EXPECT_TRUE(idx.ok()) << idx.status().ToString();
  return idx.ok() ? std::move(idx).value() : nullptr;
}

BlobRow Blob(std::string_view content, uint64_t size, Role role,
             std::string media_type = "application/vnd.oci.image.layer.v1.tar+gzip") {
  return BlobRow{D(content), size, std::move(media_type), role};
}

std::vector<std::string> RefNames(const SourceSnapshot& s) {
  std::vector<std::string> names;
  for (const RefRow& r : s.refs) names.push_back(r.name);
  return names;
}

std::vector<Digest> BlobDigests(const SourceSnapshot& s) {
  std::vector<Digest> out;
  for (const BlobRow& b : s.blobs) out.push_back(b.digest);
  return out;
}

std::vector<Digest> Sorted(std::vector<Digest> v) {
  std::sort(v.begin(), v.end());
  return v;
}

// A source "local-a" with two refs and one history entry.
SourceSnapshot SnapshotA() {
  SourceSnapshot s;
  s.source = {"local-a", "local", "/var/cache/bk"};
  s.refreshed = 1755082159455017895LL;
  s.blobs = {Blob("manifest-main", 500, Role::kManifest, "application/vnd.oci.image.index.v1+json"),
             Blob("manifest-old", 510, Role::kManifest, "application/vnd.oci.image.index.v1+json"),
             Blob("config", 1200, Role::kConfig, "application/vnd.buildkit.cacheconfig.v0"),
             Blob("layer-shared", 1 << 20, Role::kLayer),
             Blob("layer-old", 3000000000ULL, Role::kLayer,
                  "application/vnd.docker.image.rootfs.diff.tar.gzip")};
  RefRow main{"feature/x",
              D("manifest-main"),
              "index",
              1755082000000000000LL,
              1755082100000000000LL,
              false,
              {D("manifest-main"), D("config"), D("layer-shared"), D("layer-shared")}};
  RefRow old{"old",
             D("manifest-old"),
             "index",
             0,
             0,
             false,
             {D("manifest-old"), D("config"), D("layer-old")}};
  RefRow hist{"@" + D("manifest-old").ShortHex(),
              D("manifest-old"),
              "index",
              5,
              6,
              true,
              {D("manifest-old")}};
  s.refs = {old, hist, main};  // deliberately unsorted
  return s;
}

TEST(Role, NamesRoundTripAndUnknownIsInvalidArgument) {
  for (Role r : {Role::kManifest, Role::kConfig, Role::kLayer, Role::kDerived}) {
    auto parsed = ParseRole(RoleName(r));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, r);
  }
  EXPECT_EQ(RoleName(Role::kDerived), "derived");
  auto bad = ParseRole("blob");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), Code::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("\"blob\""), std::string::npos);
}

TEST(Index, CreateThenReopenKeepsDataAndSchemaVersion3) {
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  std::string path = dir.File("index.db");
  {
    auto idx = MustOpen(path);
    ASSERT_NE(idx, nullptr);
    EXPECT_EQ(idx->path(), path);
    ASSERT_TRUE(idx->ReplaceSource(SnapshotA()).ok());
    ASSERT_TRUE(idx->RecordAccesses({{D("config"), 42, 3}}).ok());
  }
  auto idx = MustOpen(path);
  ASSERT_NE(idx, nullptr);
  auto version = idx->SchemaVersion();
  ASSERT_TRUE(version.ok());
  EXPECT_EQ(*version, 3);
  EXPECT_EQ(Index::kSchemaVersion, 3);

  auto names = idx->ListSources();
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(*names, std::vector<std::string>{"local-a"});

  auto snap = idx->LoadSource("local-a");
  ASSERT_TRUE(snap.ok()) << snap.status().ToString();
  EXPECT_EQ(snap->source.name, "local-a");
  EXPECT_EQ(snap->source.type, "local");
  EXPECT_EQ(snap->source.location, "/var/cache/bk");
  EXPECT_EQ(snap->refreshed, 1755082159455017895LL);

  // Blobs sorted by digest, every field kept (a size above 2^31 included).
  SourceSnapshot want = SnapshotA();
  ASSERT_EQ(snap->blobs.size(), 5u);
  EXPECT_EQ(BlobDigests(*snap), Sorted(BlobDigests(want)));
  for (const BlobRow& got : snap->blobs) {
    for (const BlobRow& w : want.blobs) {
      if (w.digest != got.digest) continue;
      EXPECT_EQ(got.size, w.size) << w.digest.ToString();
      EXPECT_EQ(got.media_type, w.media_type);
      EXPECT_EQ(got.role, w.role);
    }
  }

  // Refs sorted by (history, name), blobs in position order with duplicates.
  ASSERT_EQ(snap->refs.size(), 3u);
  EXPECT_EQ(RefNames(*snap),
            (std::vector<std::string>{"feature/x", "old", "@" + D("manifest-old").ShortHex()}));
  const RefRow& main = snap->refs[0];
  EXPECT_EQ(main.manifest, D("manifest-main"));
  EXPECT_EQ(main.shape, "index");
  EXPECT_EQ(main.created, 1755082000000000000LL);
  EXPECT_EQ(main.modified, 1755082100000000000LL);
  EXPECT_FALSE(main.history);
  EXPECT_EQ(main.blobs, (std::vector<Digest>{D("manifest-main"), D("config"), D("layer-shared"),
                                             D("layer-shared")}));
  EXPECT_TRUE(snap->refs[2].history);
  EXPECT_EQ(snap->refs[2].created, 5);
  EXPECT_EQ(snap->refs[2].modified, 6);
  EXPECT_EQ(snap->refs[2].blobs, std::vector<Digest>{D("manifest-old")});

  auto access = idx->GetAccess(D("config"));
  ASSERT_TRUE(access.ok());
  ASSERT_TRUE(access->has_value());
  EXPECT_EQ((*access)->last_access, 42);
  EXPECT_EQ((*access)->use_count, 3u);
}

TEST(Index, InMemoryDatabaseWorks) {
  auto idx = MustOpen(":memory:");
  ASSERT_NE(idx, nullptr);
  ASSERT_TRUE(idx->ReplaceSource(SnapshotA()).ok());
  auto snap = idx->LoadSource("local-a");
  ASSERT_TRUE(snap.ok());
  EXPECT_EQ(snap->refs.size(), 3u);
}

TEST(Index, NewerSchemaVersionIsRefusedNamingPathAndBothVersions) {
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  std::string path = dir.File("future.db");
  RawExec(path, "CREATE TABLE t(x); PRAGMA user_version = 99;");
  auto idx = Index::Open(path);
  ASSERT_FALSE(idx.ok());
  EXPECT_EQ(idx.status().code(), Code::kUnsupported);
  const std::string msg = idx.status().message();
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("schema version 99"), std::string::npos) << msg;
  EXPECT_NE(msg.find("version 3 "), std::string::npos) << msg;

  // Refused without being touched: still version 99 and not in WAL mode.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &stmt, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(stmt, 0), 99);
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  EXPECT_FALSE(std::filesystem::exists(path + "-wal"));
}

TEST(Index, OpenInMissingDirectoryFailsNamingThePath) {
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  std::string path = dir.File("no/such/dir/index.db");
  auto idx = Index::Open(path);
  ASSERT_FALSE(idx.ok());
  EXPECT_EQ(idx.status().code(), Code::kNotFound) << idx.status().ToString();
  EXPECT_EQ(idx.status().foreign(), SQLITE_CANTOPEN);
  const std::string msg = idx.status().message();
  EXPECT_NE(msg.find("index database " + path + ": open"), std::string::npos) << msg;
  EXPECT_NE(msg.find("No such file or directory"), std::string::npos) << msg;
}

TEST(Index, OpenOfAFileThatIsNotADatabaseIsCorruptNamingThePath) {
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  std::string path = dir.File("index.db");
  FILE* f = fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr);
  fputs("this is not an SQLite database, just text long enough to have a header........", f);
  fclose(f);
  auto idx = Index::Open(path);
  ASSERT_FALSE(idx.ok());
  EXPECT_EQ(idx.status().code(), Code::kCorrupt) << idx.status().ToString();
  EXPECT_EQ(idx.status().foreign(), SQLITE_NOTADB);
  EXPECT_NE(idx.status().message().find("index database " + path + ": open"), std::string::npos)
      << idx.status().message();
}

TEST(Index, ReplaceSourceReplacesAllRefsAndKeepsBlobsTheSourceStillHolds) {
  auto idx = MustOpen(":memory:");
  ASSERT_NE(idx, nullptr);
  ASSERT_TRUE(idx->ReplaceSource(SnapshotA()).ok());

  // Second refresh: ref "old" and the history entry are gone, "new" appeared;
  // layer-old is still in the source's blob list (no ref uses it), while
  // manifest-old is dropped from it.
  SourceSnapshot s2;
  s2.source = {"local-a", "local", "/srv/other"};
  s2.refreshed = 2000;
  s2.blobs = {Blob("manifest-main", 500, Role::kManifest),
              Blob("manifest-new", 700, Role::kManifest), Blob("config", 1200, Role::kConfig),
              Blob("layer-shared", 1 << 20, Role::kLayer),
              Blob("layer-old", 3000000000ULL, Role::kLayer)};
  s2.refs = {RefRow{"feature/x",
                    D("manifest-main"),
                    "index",
                    1,
                    2,
                    false,
                    {D("manifest-main"), D("config"), D("layer-shared")}},
             RefRow{"new",
                    D("manifest-new"),
                    "image-manifest",
                    3,
                    4,
                    false,
                    {D("manifest-new"), D("config"), D("layer-shared")}}};
  ASSERT_TRUE(idx->ReplaceSource(s2).ok());

  auto snap = idx->LoadSource("local-a");
  ASSERT_TRUE(snap.ok());
  EXPECT_EQ(snap->source.location, "/srv/other");
  EXPECT_EQ(snap->refreshed, 2000);
  EXPECT_EQ(RefNames(*snap), (std::vector<std::string>{"feature/x", "new"}));
  EXPECT_EQ(snap->refs[0].blobs,
            (std::vector<Digest>{D("manifest-main"), D("config"), D("layer-shared")}));
  EXPECT_EQ(snap->refs[1].shape, "image-manifest");
  EXPECT_EQ(BlobDigests(*snap), Sorted(BlobDigests(s2)));

  EXPECT_TRUE(*idx->HasBlob(D("layer-shared")));
  EXPECT_TRUE(*idx->HasBlob(D("layer-old")));      // held, though no ref uses it
  EXPECT_FALSE(*idx->HasBlob(D("manifest-old")));  // no source holds it any more
  EXPECT_TRUE(*idx->HasBlob(D("manifest-new")));
  auto names = idx->ListSources();
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(*names, std::vector<std::string>{"local-a"});
}

TEST(Index, ReplaceSourceRejectsRefUsingUnlistedBlobAndChangesNothing) {
  auto idx = MustOpen(":memory:");
  ASSERT_NE(idx, nullptr);
  ASSERT_TRUE(idx->ReplaceSource(SnapshotA()).ok());

  SourceSnapshot bad = SnapshotA();
  bad.blobs.pop_back();  // layer-old, which ref "old" uses
  bad.source.location = "/changed";
  Status st = idx->ReplaceSource(bad);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  EXPECT_EQ(st.foreign(), SQLITE_CONSTRAINT_FOREIGNKEY);
  EXPECT_NE(st.message().find("index database :memory:: replace source \"local-a\""),
            std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find("ref \"old\": blob 2 (" + D("layer-old").ToString() +
                              ") is not in the source's blob list"),
            std::string::npos)
      << st.message();

  SourceSnapshot dup = SnapshotA();
  dup.refs.push_back(dup.refs[0]);
  st = idx->ReplaceSource(dup);
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  EXPECT_NE(st.message().find("ref \"old\": the name is used twice"), std::string::npos)
      << st.message();

  SourceSnapshot unnamed = SnapshotA();
  unnamed.source.name = "";
  EXPECT_EQ(idx->ReplaceSource(unnamed).code(), Code::kInvalidArgument);

  auto snap = idx->LoadSource("local-a");
  ASSERT_TRUE(snap.ok());
  EXPECT_EQ(snap->source.location, "/var/cache/bk");
  EXPECT_EQ(snap->refs.size(), 3u);
  EXPECT_EQ(snap->blobs.size(), 5u);
}

TEST(Index, ReplaceSourceWithTheSameContentOnlyUpdatesTheRefreshTime) {
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  const std::string path = dir.File("index.db");
  auto idx = MustOpen(path);
  ASSERT_NE(idx, nullptr);
  ASSERT_TRUE(idx->ReplaceSource(SnapshotA()).ok());
  // Forge a change behind the index's back: a rewrite would undo it.
  RawExec(path, "UPDATE refs SET shape = 'forged' WHERE name = 'old'");

  SourceSnapshot same = SnapshotA();
  same.refreshed = 42;
  ASSERT_TRUE(idx->ReplaceSource(same).ok());
  auto snap = idx->LoadSource("local-a");
  ASSERT_TRUE(snap.ok()) << snap.status().ToString();
  EXPECT_EQ(snap->refreshed, 42);
  ASSERT_EQ(RefNames(*snap),
            (std::vector<std::string>{"feature/x", "old", "@" + D("manifest-old").ShortHex()}));
  EXPECT_EQ(snap->refs[1].shape, "forged");  // not rewritten

  // Any stored fact that differs rewrites everything: here one blob's media type.
  SourceSnapshot changed = SnapshotA();
  changed.blobs[3].media_type = "application/vnd.oci.image.layer.v1.tar";
  ASSERT_TRUE(idx->ReplaceSource(changed).ok());
  snap = idx->LoadSource("local-a");
  ASSERT_TRUE(snap.ok());
  EXPECT_EQ(snap->refreshed, SnapshotA().refreshed);
  EXPECT_EQ(snap->refs[1].shape, "index");
  auto shared = std::find_if(snap->blobs.begin(), snap->blobs.end(),
                             [](const BlobRow& b) { return b.digest == D("layer-shared"); });
  ASSERT_NE(shared, snap->blobs.end());
  EXPECT_EQ(shared->media_type, "application/vnd.oci.image.layer.v1.tar");

  // A ref's blob list in another order is another snapshot too.
  SourceSnapshot reordered = changed;
  std::swap(reordered.refs[0].blobs[1], reordered.refs[0].blobs[2]);
  RawExec(path, "UPDATE refs SET shape = 'forged' WHERE name = 'feature/x'");
  ASSERT_TRUE(idx->ReplaceSource(reordered).ok());
  snap = idx->LoadSource("local-a");
  ASSERT_TRUE(snap.ok());
  EXPECT_EQ(snap->refs[1].name, "old");
  EXPECT_EQ(snap->refs[1].blobs,
            (std::vector<Digest>{D("manifest-old"), D("layer-old"), D("config")}));
  EXPECT_EQ(snap->refs[0].shape, "index");

  // A removed source is stored again in full.
  ASSERT_TRUE(idx->RemoveSource("local-a").ok());
  ASSERT_TRUE(idx->ReplaceSource(reordered).ok());
  EXPECT_EQ(idx->LoadSource("local-a")->refs.size(), 3u);
}

TEST(Index, TouchSourceConfirmsOnlyRowsStoredUnderTheSameKeyTypeAndLocation) {
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  const std::string path = dir.File("index.db");
  auto idx = MustOpen(path);
  ASSERT_NE(idx, nullptr);
  const SourceRow source = SnapshotA().source;
  // Nothing stored yet: nothing to confirm.
  EXPECT_FALSE(*idx->TouchSource(source, "fp-1", 7));
  ASSERT_TRUE(idx->ReplaceSource(SnapshotA(), "fp-1").ok());
  EXPECT_TRUE(*idx->TouchSource(source, "fp-1", 7));
  auto snap = idx->LoadSource("local-a");
  ASSERT_TRUE(snap.ok()) << snap.status().ToString();
  EXPECT_EQ(snap->refreshed, 7);
  EXPECT_EQ(snap->refs.size(), 3u);
  // Another key, type or location confirms nothing and changes nothing.
  SourceRow moved = source;
  moved.location = source.location + "-elsewhere";
  SourceRow retyped = source;
  retyped.type = "registry";
  EXPECT_FALSE(*idx->TouchSource(source, "fp-2", 8));
  EXPECT_FALSE(*idx->TouchSource(moved, "fp-1", 8));
  EXPECT_FALSE(*idx->TouchSource(retyped, "fp-1", 8));
  EXPECT_EQ(idx->LoadSource("local-a")->refreshed, 7);
  // Rows stored by content (no key) are not confirmed by any key...
  SourceSnapshot by_content = SnapshotA();
  by_content.refs.pop_back();
  ASSERT_TRUE(idx->ReplaceSource(by_content).ok());
  EXPECT_EQ(idx->LoadSource("local-a")->refs.size(), 2u);
  EXPECT_FALSE(*idx->TouchSource(source, "fp-1", 9));
  // ...and a keyed replace with a new key rewrites them in full.
  ASSERT_TRUE(idx->ReplaceSource(SnapshotA(), "fp-3").ok());
  EXPECT_EQ(idx->LoadSource("local-a")->refs.size(), 3u);
  EXPECT_TRUE(*idx->TouchSource(source, "fp-3", 10));
}

TEST(Index, TwoSourcesSharingABlobKeepItUntilNeitherHoldsIt) {
  auto idx = MustOpen(":memory:");
  ASSERT_NE(idx, nullptr);
  SourceSnapshot a;
  a.source = {"a", "local", "/a"};
  a.blobs = {Blob("shared", 10, Role::kLayer, "application/vnd.oci.image.layer.v1.tar+gzip"),
             Blob("only-a", 11, Role::kConfig)};
  a.refs = {RefRow{"main", D("only-a"), "index", 0, 0, false, {D("only-a"), D("shared")}}};
  SourceSnapshot b;
  b.source = {"b", "s3", "s3://bucket"};
  b.blobs = {Blob("shared", 10, Role::kLayer, "application/vnd.docker.image.rootfs.diff.tar.gzip")};
  b.refs = {RefRow{"main", D("shared"), "inline", 0, 0, false, {D("shared")}}};
  ASSERT_TRUE(idx->ReplaceSource(b).ok());
  ASSERT_TRUE(idx->ReplaceSource(a).ok());

  auto names = idx->ListSources();
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(*names, (std::vector<std::string>{"a", "b"}));
  auto holders = idx->SourcesHolding(D("shared"));
  ASSERT_TRUE(holders.ok());
  EXPECT_EQ(*holders, (std::vector<std::string>{"a", "b"}));

  // Each source keeps the media type it gave the shared blob.
  auto sb = idx->LoadSource("b");
  ASSERT_TRUE(sb.ok());
  ASSERT_EQ(sb->blobs.size(), 1u);
  EXPECT_EQ(sb->blobs[0].media_type, "application/vnd.docker.image.rootfs.diff.tar.gzip");

  // a drops the shared blob: b still holds it.
  a.blobs = {Blob("only-a", 11, Role::kConfig)};
  a.refs = {RefRow{"main", D("only-a"), "index", 0, 0, false, {D("only-a")}}};
  ASSERT_TRUE(idx->ReplaceSource(a).ok());
  EXPECT_TRUE(*idx->HasBlob(D("shared")));
  EXPECT_EQ(*idx->SourcesHolding(D("shared")), std::vector<std::string>{"b"});

  ASSERT_TRUE(idx->RemoveSource("b").ok());
  EXPECT_FALSE(*idx->HasBlob(D("shared")));
  EXPECT_TRUE(idx->SourcesHolding(D("shared"))->empty());
  EXPECT_TRUE(*idx->HasBlob(D("only-a")));
}

TEST(Index, RemoveSourceDeletesItsRowsAndReportsNotFoundWhenAbsent) {
  auto idx = MustOpen(":memory:");
  ASSERT_NE(idx, nullptr);
  ASSERT_TRUE(idx->ReplaceSource(SnapshotA()).ok());
  ASSERT_TRUE(idx->RecordAccesses({{D("config"), 7, 1}}).ok());

  ASSERT_TRUE(idx->RemoveSource("local-a").ok());
  EXPECT_TRUE(idx->ListSources()->empty());
  for (const BlobRow& b : SnapshotA().blobs) EXPECT_FALSE(*idx->HasBlob(b.digest));
  // Access rows outlive the source: the local store may still hold the bytes.
  EXPECT_TRUE(idx->GetAccess(D("config"))->has_value());

  auto gone = idx->LoadSource("local-a");
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.status().code(), Code::kNotFound);
  EXPECT_EQ(gone.status().message(),
            "index database :memory:: load source \"local-a\": no such source");
  Status again = idx->RemoveSource("local-a");
  EXPECT_EQ(again.code(), Code::kNotFound);
  EXPECT_EQ(again.message(), "index database :memory:: remove source \"local-a\": no such source");

  // The name can be used again from scratch.
  ASSERT_TRUE(idx->ReplaceSource(SnapshotA()).ok());
  EXPECT_EQ(idx->LoadSource("local-a")->refs.size(), 3u);
}

TEST(Index, RecordAccessesKeepsNewestTimeAndSumsCounts) {
  auto idx = MustOpen(":memory:");
  ASSERT_NE(idx, nullptr);
  auto none = idx->GetAccess(D("x"));
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  EXPECT_TRUE(idx->RecordAccesses({}).ok());

  ASSERT_TRUE(idx->RecordAccesses({{D("x"), 100, 2}, {D("y"), 50, 1}, {D("x"), 80, 5}}).ok());
  ASSERT_TRUE(idx->RecordAccesses({{D("x"), 90, 1}, {D("y"), 60, 10}}).ok());

  auto x = idx->GetAccess(D("x"));
  ASSERT_TRUE(x.ok());
  ASSERT_TRUE(x->has_value());
  EXPECT_EQ((*x)->last_access, 100);
  EXPECT_EQ((*x)->use_count, 8u);
  auto y = idx->GetAccess(D("y"));
  ASSERT_TRUE(y.ok() && y->has_value());
  EXPECT_EQ((*y)->last_access, 60);
  EXPECT_EQ((*y)->use_count, 11u);

  // An empty digest fails the whole batch: nothing from it is recorded.
  Status st = idx->RecordAccesses({{D("x"), 500, 1}, {Digest(), 1, 1}});
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  EXPECT_EQ((*idx->GetAccess(D("x")))->last_access, 100);
}

TEST(AccessBatcher, TouchManyThenFlushRecordsExactCountsAndClears) {
  auto idx = MustOpen(":memory:");
  ASSERT_NE(idx, nullptr);
  AccessBatcher batcher;
  EXPECT_EQ(batcher.PendingCount(), 0u);
  EXPECT_TRUE(batcher.Flush(*idx).ok());  // nothing pending: no-op

  constexpr int kThreads = 4, kTouches = 1000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&batcher, t] {
      for (int i = 0; i < kTouches; ++i) {
        batcher.Touch(D("a"), 1000 + t * kTouches + i);
        if (i % 2 == 0) batcher.Touch(D("b"), 5);
      }
    });
  }
  for (std::thread& th : threads) th.join();
  batcher.Touch(Digest(), 1);  // ignored
  EXPECT_EQ(batcher.PendingCount(), 2u);

  ASSERT_TRUE(batcher.Flush(*idx).ok());
  EXPECT_EQ(batcher.PendingCount(), 0u);
  auto a = idx->GetAccess(D("a"));
  ASSERT_TRUE(a.ok() && a->has_value());
  EXPECT_EQ((*a)->use_count, 4000u);
  EXPECT_EQ((*a)->last_access, 1000 + 3 * kTouches + kTouches - 1);
  auto b = idx->GetAccess(D("b"));
  ASSERT_TRUE(b.ok() && b->has_value());
  EXPECT_EQ((*b)->use_count, 2000u);
  EXPECT_EQ((*b)->last_access, 5);

  // A second flush adds only what was touched since.
  batcher.Touch(D("b"), 4);
  ASSERT_TRUE(batcher.Flush(*idx).ok());
  EXPECT_EQ((*idx->GetAccess(D("b")))->use_count, 2001u);
  EXPECT_EQ((*idx->GetAccess(D("b")))->last_access, 5);
}

TEST(AccessBatcher, FailedFlushKeepsEverythingPendingAndReportsTheSqliteError) {
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  std::string path = dir.File("index.db");
  auto idx = MustOpen(path);
  ASSERT_NE(idx, nullptr);
  RawExec(path,
          "CREATE TRIGGER fail_access BEFORE INSERT ON accesses "
          "BEGIN SELECT RAISE(ABORT, 'injected failure'); END;");

  AccessBatcher batcher;
  batcher.Touch(D("a"), 10);
  batcher.Touch(D("a"), 20);
  batcher.Touch(D("b"), 30);
  Status st = batcher.Flush(*idx);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.foreign(), SQLITE_CONSTRAINT_TRIGGER);
  EXPECT_NE(st.message().find("index database " + path + ": record 2 accesses"), std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find("injected failure"), std::string::npos) << st.message();
  EXPECT_EQ(batcher.PendingCount(), 2u);
  EXPECT_FALSE(idx->GetAccess(D("a"))->has_value());

  batcher.Touch(D("a"), 15);  // arrives after the failure: merged, not lost
  RawExec(path, "DROP TRIGGER fail_access;");
  ASSERT_TRUE(batcher.Flush(*idx).ok());
  EXPECT_EQ(batcher.PendingCount(), 0u);
  EXPECT_EQ((*idx->GetAccess(D("a")))->use_count, 3u);
  EXPECT_EQ((*idx->GetAccess(D("a")))->last_access, 20);
  EXPECT_EQ((*idx->GetAccess(D("b")))->use_count, 1u);
}

TEST(Index, VerificationMemoMatchesOnlyTheExactIdentityAndDigest) {
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  std::string path = dir.File("index.db");
  // Values above INT64_MAX check the unsigned round trip.
  const FileIdentity file{0xfd00000000000001ULL, 1234567, 3000000000ULL, 1755082159455017895LL,
                          1755082159455017896LL};
  const Digest digest = D("blob bytes");
  {
    auto idx = MustOpen(path);
    ASSERT_NE(idx, nullptr);
    auto before = idx->IsVerified(file, digest);
    ASSERT_TRUE(before.ok());
    EXPECT_FALSE(*before);
    ASSERT_TRUE(idx->RememberVerified(file, digest).ok());
    EXPECT_EQ(idx->RememberVerified(file, Digest()).code(), Code::kInvalidArgument);
  }
  auto idx = MustOpen(path);
  ASSERT_NE(idx, nullptr);
  EXPECT_TRUE(*idx->IsVerified(file, digest));

  FileIdentity f = file;
  f.dev += 1;
  EXPECT_FALSE(*idx->IsVerified(f, digest));
  f = file;
  f.ino += 1;
  EXPECT_FALSE(*idx->IsVerified(f, digest));
  f = file;
  f.size -= 1;
  EXPECT_FALSE(*idx->IsVerified(f, digest));
  f = file;
  f.mtime_ns += 1;
  EXPECT_FALSE(*idx->IsVerified(f, digest));
  f = file;
  f.ctime_ns += 1;
  EXPECT_FALSE(*idx->IsVerified(f, digest));
  EXPECT_FALSE(*idx->IsVerified(file, D("other bytes")));
  EXPECT_FALSE(*idx->IsVerified(file, Digest()));

  // The file changed and was verified again: the old identity no longer matches.
  f = file;
  f.mtime_ns += 7;
  ASSERT_TRUE(idx->RememberVerified(f, D("new bytes")).ok());
  EXPECT_TRUE(*idx->IsVerified(f, D("new bytes")));
  EXPECT_FALSE(*idx->IsVerified(file, digest));
}

LayerIndexRow SampleLayer(std::string_view seed, int entries) {
  LayerIndexRow row;
  row.digest = D(seed);
  row.format = 3;
  row.uncompressed_size = 1ull << 40;  // beyond 32 bits
  row.seek_index = std::string("bcSI\0\x01\xff", 7);
  row.warnings = "\"a/../b\": skipped\nsecond";
  row.derived_digests = std::string(64, '\x7f');
  row.indexed = 1700000000123456789;
  for (int i = 0; i < entries; ++i) {
    LayerEntryRow e;
    e.path = "dir/file" + std::to_string(i);
    e.type = i % 2 ? "file" : "hardlink";
    e.mode = 04755;
    e.uid = 4000000000u;  // beyond int32
    e.gid = 7;
    e.size = (1ull << 33) + i;
    e.mtime_sec = -5;  // before 1970
    e.mtime_nsec = 999999999;
    e.link_target = i % 2 ? "" : "dir/file0";
    e.dev_major = 8;
    e.dev_minor = 1;
    e.data_offset = (1ull << 35) + 512 * i;
    e.extra = std::string("x\0y", 3);
    row.entries.push_back(e);
  }
  return row;
}

TEST(Index, LayerIndexRoundTripsEveryFieldInTarOrderAndSurvivesReopen) {
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  const std::string path = dir.File("index.db");
  const LayerIndexRow row = SampleLayer("layer", 1000);
  {
    auto idx = MustOpen(path);
    ASSERT_NE(idx, nullptr);
    auto none = idx->LoadLayerIndex(row.digest);
    ASSERT_TRUE(none.ok()) << none.status().ToString();
    EXPECT_FALSE(none->has_value());
    ASSERT_TRUE(idx->SaveLayerIndex(row).ok());
  }
  auto idx = MustOpen(path);
  ASSERT_NE(idx, nullptr);
  auto got = idx->LoadLayerIndex(row.digest);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ(**got, row);
}

TEST(Index, SaveLayerIndexReplacesTheOldRowAndRemoveForgetsIt) {
  auto idx = MustOpen(":memory:");
  ASSERT_NE(idx, nullptr);
  LayerIndexRow first = SampleLayer("layer", 5);
  LayerIndexRow second = SampleLayer("layer", 2);
  second.format = 4;
  const LayerIndexRow other = SampleLayer("other", 1);
  ASSERT_TRUE(idx->SaveLayerIndex(first).ok());
  ASSERT_TRUE(idx->SaveLayerIndex(other).ok());
  ASSERT_TRUE(idx->SaveLayerIndex(second).ok());
  auto got = idx->LoadLayerIndex(first.digest);
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ(**got, second);
  ASSERT_TRUE(idx->RemoveLayerIndex(first.digest).ok());
  ASSERT_TRUE(idx->RemoveLayerIndex(first.digest).ok());  // nothing left: still OK
  got = idx->LoadLayerIndex(first.digest);
  ASSERT_TRUE(got.ok());
  EXPECT_FALSE(got->has_value());
  got = idx->LoadLayerIndex(other.digest);
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ(**got, other);
}

TEST(Index, LayerEntriesStreamInAndOutOneAtATime) {
  auto idx = MustOpen(":memory:");
  ASSERT_NE(idx, nullptr);
  const LayerIndexRow row = SampleLayer("layer", 50);
  // Saved from a source that reuses one row object for every entry.
  LayerIndexRow head = row;
  head.entries.clear();
  size_t given = 0;
  LayerEntryRow scratch;
  ASSERT_TRUE(idx->SaveLayerIndex(head,
                                  [&]() -> const LayerEntryRow* {
                                    if (given == row.entries.size()) return nullptr;
                                    scratch = row.entries[given++];
                                    return &scratch;
                                  })
                  .ok());
  // Loaded into a sink: every entry in tar order, after the row's other fields.
  std::vector<LayerEntryRow> seen;
  auto got = idx->LoadLayerIndex(row.digest, [&](LayerIndexRow& h, LayerEntryRow&& e) -> Status {
    EXPECT_EQ(h.seek_index, row.seek_index);
    EXPECT_EQ(h.format, row.format);
    EXPECT_TRUE(h.entries.empty());
    seen.push_back(std::move(e));
    return OkStatus();
  });
  ASSERT_TRUE(got.ok() && got->has_value()) << got.status().ToString();
  EXPECT_EQ(seen, row.entries);
  EXPECT_TRUE((*got)->entries.empty());
  EXPECT_EQ((*got)->derived_digests, row.derived_digests);
  // A sink's error stops the load and is returned; a null sink reads no entries.
  size_t calls = 0;
  got = idx->LoadLayerIndex(row.digest, [&](LayerIndexRow&, LayerEntryRow&&) -> Status {
    return ++calls == 3 ? CorruptError("enough") : OkStatus();
  });
  EXPECT_EQ(calls, 3u);
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.status().message().find("enough"), std::string::npos) << got.status().message();
  got = idx->LoadLayerIndex(row.digest, nullptr);
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_TRUE((*got)->entries.empty());
  EXPECT_EQ((*got)->seek_index, row.seek_index);
}

TEST(Index, SaveLayerIndexWithAnEmptyDigestIsInvalidArgument) {
  auto idx = MustOpen(":memory:");
  ASSERT_NE(idx, nullptr);
  LayerIndexRow row = SampleLayer("x", 1);
  row.digest = Digest();
  Status st = idx->SaveLayerIndex(row);
  EXPECT_EQ(st.code(), Code::kInvalidArgument) << st.ToString();
}

TEST(Index, Version1DatabaseIsMigratedAndKeepsItsRows) {
  TempDir dir;
  ASSERT_TRUE(dir.ok());
  const std::string path = dir.File("index.db");
  // A database as schema version 1 left it (the accesses table is enough).
  RawExec(path,
          "CREATE TABLE accesses (digest TEXT PRIMARY KEY, last_access_ns INTEGER NOT NULL, "
          "use_count INTEGER NOT NULL) WITHOUT ROWID;"
          "INSERT INTO accesses VALUES('" +
              D("a").ToString() +
              "', 5, 2);"
              "PRAGMA user_version = 1;");
  auto idx = MustOpen(path);
  ASSERT_NE(idx, nullptr);
  auto v = idx->SchemaVersion();
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, 3);
  auto a = idx->GetAccess(D("a"));
  ASSERT_TRUE(a.ok() && a->has_value());
  EXPECT_EQ((*a)->use_count, 2u);
  ASSERT_TRUE(idx->SaveLayerIndex(SampleLayer("layer", 1)).ok());
}

TEST(Index, ListBlobUsesJoinsSourcesRefsRolesAndAccesses) {
  auto idx = MustOpen(":memory:");
  ASSERT_NE(idx, nullptr);
  ASSERT_TRUE(idx->ReplaceSource(SnapshotA()).ok());
  SourceSnapshot b;
  b.source = {"reg-b", "registry", "r.example/x"};
  b.blobs = {Blob("layer-shared", 1 << 20, Role::kLayer)};
  b.refs = {RefRow{"t", D("layer-shared"), "index", 0, 0, false, {D("layer-shared")}}};
  ASSERT_TRUE(idx->ReplaceSource(b).ok());
  ASSERT_TRUE(idx->RecordAccesses({{D("config"), 42, 3}, {D("gone"), 7, 1}}).ok());
  auto uses = idx->ListBlobUses();
  ASSERT_TRUE(uses.ok()) << uses.status().ToString();
  std::map<std::string, BlobUse> by;
  for (const auto& u : *uses) by[u.digest.ToString()] = u;
  ASSERT_EQ(by.size(), 6u);  // five blobs of the sources and one accessed digest
  const BlobUse& shared = by[D("layer-shared").ToString()];
  EXPECT_EQ(shared.sources, (std::vector<std::string>{"local-a", "reg-b"}));
  EXPECT_EQ(shared.refs, (std::vector<std::string>{"feature/x", "t"}));
  EXPECT_EQ(shared.role, Role::kLayer);
  EXPECT_EQ(shared.last_access, 0);
  const BlobUse& config = by[D("config").ToString()];
  EXPECT_EQ(config.refs, (std::vector<std::string>{"feature/x", "old"}));
  EXPECT_EQ(config.media_type, "application/vnd.buildkit.cacheconfig.v0");
  EXPECT_EQ(config.role, Role::kConfig);
  EXPECT_EQ(config.last_access, 42);
  EXPECT_EQ(config.use_count, 3u);
  const BlobUse& old = by[D("manifest-old").ToString()];
  EXPECT_EQ(old.refs, (std::vector<std::string>{"@" + D("manifest-old").ShortHex(), "old"}));
  const BlobUse& gone = by[D("gone").ToString()];
  EXPECT_TRUE(gone.sources.empty());
  EXPECT_FALSE(gone.role.has_value());
  EXPECT_EQ(gone.use_count, 1u);
  for (size_t i = 1; i < uses->size(); ++i) {
    EXPECT_LT((*uses)[i - 1].digest.ToString(), (*uses)[i].digest.ToString());
  }
}

TEST(Index, IntegrityCheckOfASoundDatabaseIsEmpty) {
  auto idx = MustOpen(":memory:");
  ASSERT_NE(idx, nullptr);
  ASSERT_TRUE(idx->ReplaceSource(SnapshotA()).ok());
  auto problems = idx->IntegrityCheck();
  ASSERT_TRUE(problems.ok()) << problems.status().ToString();
  EXPECT_TRUE(problems->empty());
}

}  // namespace
}  // namespace bcfs::index
