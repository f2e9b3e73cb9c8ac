#include "gc/prune.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "backends/backend_local.h"

namespace bcfs::gc {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr TimeNs kNow = 1'700'000'000 * kSecond;  // the fake clock
constexpr DurationNs kDay = 24 * kHour;
constexpr DurationNs kMinute = 60 * kSecond;

Digest D(const std::string& name) { return Digest::Sha256Of(name); }

PruneRef Ref(const std::string& name, const std::string& manifest, std::vector<std::string> blobs,
             TimeNs written) {
  PruneRef r;
  r.name = name;
  r.raw_descriptor = "{\"ref\":\"" + name + "\"}";
  r.manifest = D(manifest);
  r.media_type = "application/vnd.oci.image.manifest.v1+json";
  r.reaches.push_back(D(manifest));
  for (const auto& b : blobs) r.reaches.push_back(D(b));
  r.size = 100 * (blobs.size() + 1);
  r.written = written;
  return r;
}

PruneBlob Blob(const std::string& name, uint64_t size, TimeNs mtime) {
  return PruneBlob{D(name), size, mtime};
}

PruneOptions Opts() {
  PruneOptions o;
  o.now = kNow;
  return o;
}

Filter Filters(std::vector<std::string> flags) {
  auto f = ParseCommandLineFilters(flags);
  EXPECT_TRUE(f.ok()) << f.status().message();
  return f.ok() ? f->filter : Filter();
}

// "keep name" / "drop name" per ref.
std::vector<std::string> Actions(const PrunePlan& plan) {
  std::vector<std::string> out;
  for (const auto& r : plan.refs) out.push_back((r.keep ? "keep " : "drop ") + r.name);
  return out;
}

// The blob names (as given to D) of decisions, in plan order.
std::vector<std::string> Names(const std::vector<BlobDecision>& v,
                               const std::vector<std::string>& universe) {
  std::map<Digest, std::string> by;
  for (const auto& n : universe) by[D(n)] = n;
  std::vector<std::string> out;
  for (const auto& b : v) out.push_back(by.count(b.digest) ? by[b.digest] : b.digest.ToString());
  std::sort(out.begin(), out.end());
  return out;
}

const std::vector<std::string> kAll = {"m-a", "c-a", "l1",  "l2", "m-b",   "c-b",
                                       "l3",  "m-h", "c-h", "l4", "orphan"};

// Two refs sharing l1, a history manifest sharing l2 with a, an orphan; all
// files two days old.
PruneInput Growth() {
  PruneInput in;
  in.source = "cache";
  in.sweep = true;
  in.refs.push_back(Ref("a", "m-a", {"c-a", "l1", "l2"}, kNow - 10 * kDay));
  in.refs.push_back(Ref("b", "m-b", {"c-b", "l1", "l3"}, kNow - 2 * kDay));
  PruneRef h = Ref("@hist", "m-h", {"c-h", "l2", "l4"}, kNow - 20 * kDay);
  h.raw_descriptor.clear();
  in.history.push_back(h);
  uint64_t size = 1;
  for (const auto& n : kAll) in.blobs.push_back(Blob(n, size++, kNow - 2 * kDay));
  return in;
}

TEST(PlanPrune, WithoutSelectionEveryRefStaysAndOnlyGarbageGoes) {
  PruneInput in = Growth();
  PrunePlan plan = PlanPrune(in, Opts());
  EXPECT_THAT(Actions(plan), ElementsAre("keep a", "keep b"));
  EXPECT_THAT(plan.refs[0].reason, HasSubstr("every ref is kept"));
  // History (m-h), what only it reaches (c-h, l4) and the orphan; l2 stays (a).
  EXPECT_THAT(Names(plan.delete_blobs, kAll), ElementsAre("c-h", "l4", "m-h", "orphan"));
  EXPECT_EQ(plan.kept_blobs, 7u);
  // Sizes are 1..11 in kAll order: c-h 9, l4 10, m-h 8, orphan 11.
  EXPECT_EQ(plan.bytes_freed, 9u + 10 + 8 + 11);
  EXPECT_EQ(plan.kept_bytes, 1u + 2 + 3 + 4 + 5 + 6 + 7);
  EXPECT_THAT(plan.errors, IsEmpty());
  std::map<std::string, std::string> why;
  for (const auto& b : plan.delete_blobs) why[b.digest.ToString()] = b.reason;
  EXPECT_EQ(why[D("m-h").ToString()], "history: a cache manifest no ref reaches");
  EXPECT_EQ(why[D("l4").ToString()], "reached only by history manifests");
  EXPECT_EQ(why[D("orphan").ToString()], "no manifest reaches it");
}

TEST(PlanPrune, KeepDurationDropsRefsLastUsedBeforeTheCutoffAndTheirUnsharedBlobs) {
  PruneInput in = Growth();
  PruneOptions o = Opts();
  o.keep_duration = 5 * kDay;
  PrunePlan plan = PlanPrune(in, o);
  EXPECT_THAT(Actions(plan), ElementsAre("drop a", "keep b"));
  EXPECT_EQ(plan.refs[0].reason, "last used 10d ago, before --keep-duration 120h");
  EXPECT_EQ(plan.refs[1].reason, "used 2d ago, within --keep-duration 120h");
  EXPECT_EQ(plan.refs[0].last_used, kNow - 10 * kDay);
  // a's manifest, config and l2 go (l2 was also history's); l1 is b's too.
  EXPECT_THAT(Names(plan.delete_blobs, kAll),
              ElementsAre("c-a", "c-h", "l2", "l4", "m-a", "m-h", "orphan"));
  std::map<std::string, std::string> why;
  for (const auto& b : plan.delete_blobs) why[b.digest.ToString()] = b.reason;
  EXPECT_EQ(why[D("c-a").ToString()], "reached only by dropped ref a");
  EXPECT_EQ(plan.kept_blobs, 4u);  // m-b, c-b, l1, l3
}

TEST(PlanPrune, TheKeepDurationCutoffIsInclusiveAsBuildKits) {
  PruneInput in;
  in.source = "cache";
  in.sweep = true;
  in.refs.push_back(Ref("at", "m1", {}, kNow - kDay));
  in.refs.push_back(Ref("after", "m2", {}, kNow - kDay + 1));
  PruneOptions o = Opts();
  o.keep_duration = kDay;
  EXPECT_THAT(Actions(PlanPrune(in, o)), ElementsAre("drop at", "keep after"));
}

TEST(PlanPrune, OurAccessTimeToAnyBlobOfTheRefIsAUse) {
  PruneInput in = Growth();
  in.refs[0].accessed = kNow - kHour;  // a layer of a was read an hour ago
  PruneOptions o = Opts();
  o.keep_duration = 5 * kDay;
  PrunePlan plan = PlanPrune(in, o);
  EXPECT_THAT(Actions(plan), ElementsAre("keep a", "keep b"));
  EXPECT_EQ(plan.refs[0].last_used, kNow - kHour);
  EXPECT_EQ(plan.refs[0].reason, "used 1h ago, within --keep-duration 120h");
}

TEST(PlanPrune, FiltersAndKeepDurationAnd) {
  PruneInput in = Growth();
  PruneOptions o = Opts();
  o.filter = Filters({"ref==b"});
  EXPECT_THAT(Actions(PlanPrune(in, o)), ElementsAre("keep a", "drop b"));
  EXPECT_EQ(PlanPrune(in, o).refs[0].reason, "does not match --filter");
  EXPECT_EQ(PlanPrune(in, o).refs[1].reason, "matches --filter");
  // b was written 2 days ago: within a 5-day keep duration, so it stays.
  o.keep_duration = 5 * kDay;
  EXPECT_THAT(Actions(PlanPrune(in, o)), ElementsAre("keep a", "keep b"));
  o.filter = Filters({"ref~=^[ab]$", "source==cache"});
  EXPECT_THAT(Actions(PlanPrune(in, o)), ElementsAre("drop a", "keep b"));
  EXPECT_EQ(PlanPrune(in, o).refs[0].reason,
            "last used 10d ago, before --keep-duration 120h, matches --filter");
  o.filter = Filters({"source==other"});
  EXPECT_THAT(Actions(PlanPrune(in, o)), ElementsAre("keep a", "keep b"));
}

TEST(PlanPrune, AllDropsEveryCandidateButPinnedRefs) {
  PruneInput in = Growth();
  in.refs[1].pinned = "outside the source string's tag a";
  PruneOptions o = Opts();
  o.all = true;
  PrunePlan plan = PlanPrune(in, o);
  EXPECT_THAT(Actions(plan), ElementsAre("drop a", "keep b"));
  EXPECT_EQ(plan.refs[0].reason, "--all");
  EXPECT_EQ(plan.refs[1].reason, "outside the source string's tag a");
}

TEST(PlanPrune, NothingYoungerThanTheGracePeriodIsDeleted) {
  PruneInput in = Growth();
  // The orphan and l4 were written 30 minutes ago; b's manifest 10 minutes ago.
  for (auto& b : in.blobs) {
    if (b.digest == D("orphan") || b.digest == D("l4")) b.mtime = kNow - 30 * kMinute;
  }
  in.refs[1].written = kNow - 10 * kMinute;
  in.ingest.push_back({"old", 7, kNow - 2 * kHour});
  in.ingest.push_back({"new", 5, kNow - 59 * kMinute});
  PruneOptions o = Opts();
  o.all = true;
  PrunePlan plan = PlanPrune(in, o);
  EXPECT_THAT(Actions(plan), ElementsAre("drop a", "keep b"));
  EXPECT_EQ(plan.refs[1].reason, "written 10m ago, within --grace-period 1h");
  EXPECT_THAT(Names(plan.young_blobs, kAll), ElementsAre("l4", "orphan"));
  EXPECT_THAT(plan.young_blobs[0].reason, HasSubstr("within --grace-period 1h"));
  EXPECT_THAT(Names(plan.delete_blobs, kAll), ElementsAre("c-a", "c-h", "l2", "m-a", "m-h"));
  ASSERT_EQ(plan.delete_ingest.size(), 1u);
  EXPECT_EQ(plan.delete_ingest[0].name, "old");
  ASSERT_EQ(plan.young_ingest.size(), 1u);
  EXPECT_EQ(plan.young_ingest[0].name, "new");
  EXPECT_EQ(plan.bytes_freed, 2u + 9 + 4 + 1 + 8 + 7);

  // The boundary: a file exactly grace-period old goes.
  o.grace_period = 30 * kMinute;
  plan = PlanPrune(in, o);
  EXPECT_THAT(plan.young_blobs, IsEmpty());
  EXPECT_THAT(Actions(plan), ElementsAre("drop a", "keep b"));
  o.grace_period = 0;
  EXPECT_THAT(Actions(PlanPrune(in, o)), ElementsAre("drop a", "drop b"));
}

TEST(PlanPrune, AKeptRefWithUnknownReachBlocksTheSweep) {
  PruneInput in = Growth();
  in.refs[1].reach_known = false;
  in.refs[1].reaches = {D("m-b")};
  PrunePlan plan = PlanPrune(in, Opts());
  ASSERT_EQ(plan.errors.size(), 1u);
  EXPECT_THAT(plan.errors[0], HasSubstr("kept ref b"));
  // Dropping that ref lifts the block.
  PruneOptions o = Opts();
  o.filter = Filters({"ref==b"});
  EXPECT_THAT(PlanPrune(in, o).errors, IsEmpty());
}

PruneInput Registry() {
  PruneInput in;
  in.source = "cache";
  in.sweep = false;
  in.refs.push_back(Ref("main", "m1", {"c1", "l1"}, 0));
  in.refs.push_back(Ref("old", "m2", {"c2", "l1"}, 0));
  in.refs.push_back(Ref("alias", "m1", {"c1", "l1"}, 0));
  in.refs.push_back(Ref("old2", "m2", {"c2", "l1"}, 0));
  in.refs.push_back(Ref("never", "m3", {"c3"}, 0));
  return in;
}

TEST(PlanPrune, RegistryRefsWithoutWriteTimeOrAccessAreNotSelectedByAge) {
  PruneInput in = Registry();
  PruneOptions o = Opts();
  o.keep_duration = kDay;
  PrunePlan plan = PlanPrune(in, o);
  EXPECT_THAT(Actions(plan),
              ElementsAre("keep main", "keep old", "keep alias", "keep old2", "keep never"));
  EXPECT_THAT(plan.refs[4].reason, HasSubstr("last use unknown"));
  EXPECT_EQ(plan.refs[4].last_used, 0);
  // A layer's access alone does not make the last use known.
  in.refs[4].accessed = kNow - 3 * kDay;
  EXPECT_THAT(PlanPrune(in, o).refs[4].reason, HasSubstr("last use unknown"));
}

TEST(PlanPrune, RegistryDeletesEachDroppedDigestOnceUnlessAKeptTagSharesIt) {
  PruneInput in = Registry();
  for (auto& r : in.refs) {
    r.manifest_accessed = true;
    r.accessed = kNow - 3 * kDay;
  }
  in.refs[0].accessed = kNow - kHour;  // main (m1) is in use
  PruneOptions o = Opts();
  o.keep_duration = kDay;
  PrunePlan plan = PlanPrune(in, o);
  EXPECT_THAT(Actions(plan),
              ElementsAre("keep main", "drop old", "keep alias", "drop old2", "drop never"));
  EXPECT_THAT(plan.refs[2].reason, HasSubstr("kept tag main points at the same manifest"));
  EXPECT_TRUE(plan.refs[1].delete_manifest);
  EXPECT_FALSE(plan.refs[3].delete_manifest);  // same digest as old: one DELETE
  EXPECT_TRUE(plan.refs[4].delete_manifest);
  EXPECT_THAT(plan.delete_blobs, IsEmpty());
  ASSERT_EQ(plan.notes.size(), 1u);
  EXPECT_THAT(plan.notes[0], HasSubstr("registry's own garbage collection"));
}

// --- ExecutePrune against a fake backend ----------------------------------

class FakeBackend : public backends::Backend {
 public:
  std::map<Digest, std::string> docs;
  std::vector<Digest> roots_after;
  std::vector<std::string> removed_raws;
  std::vector<Digest> deleted;
  std::set<Digest> young;  // DeleteBlob answers "too young" for these
  std::vector<std::pair<std::string, Digest>> deleted_manifests;

  std::string Describe() const override { return "fake"; }
  Result<std::vector<backends::RefEntry>> ListRefs() override {
    return std::vector<backends::RefEntry>();
  }
  Result<std::vector<Digest>> ListRoots() override { return roots_after; }
  Result<backends::BlobStat> StatBlob(const Digest&) override { return NotFoundError("x"); }
  Result<size_t> ReadBlob(const Digest&, uint64_t, std::span<char>) override {
    return NotFoundError("x");
  }
  Result<std::string> ReadDocument(const Digest& d, uint64_t) override {
    auto it = docs.find(d);
    if (it == docs.end()) return NotFoundError("no " + d.ToString());
    return it->second;
  }
  Result<std::vector<Digest>> ListBlobs() override { return std::vector<Digest>(); }
  TimeNs RefsModified() override { return 0; }
  Result<std::vector<Digest>> RemoveRefs(const std::vector<std::string>& raws) override {
    removed_raws = raws;
    return roots_after;
  }
  Result<bool> DeleteBlob(const Digest& d, TimeNs not_after) override {
    EXPECT_EQ(not_after, kNow - kHour);
    if (young.count(d)) return false;
    deleted.push_back(d);
    return true;
  }
  Status DeleteManifest(const std::string& tag, const Digest& d) override {
    deleted_manifests.push_back({tag, d});
    return OkStatus();
  }
};

std::string CacheManifest(const std::vector<std::string>& layers, const std::string& config) {
  std::string j = R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",)"
                  R"("config":{"mediaType":"application/vnd.buildkit.cacheconfig.v0","digest":")" +
                  D(config).ToString() + R"(","size":1},"layers":[)";
  for (size_t i = 0; i < layers.size(); ++i) {
    j += std::string(i ? "," : "") +
         R"({"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":")" +
         D(layers[i]).ToString() + R"(","size":1})";
  }
  return j + "]}";
}

TEST(ExecutePrune, RemovesDroppedEntriesThenKeepsWhatANewEntryReaches) {
  PruneInput in = Growth();
  PruneOptions o = Opts();
  o.keep_duration = 5 * kDay;
  PrunePlan plan = PlanPrune(in, o);
  ASSERT_THAT(Actions(plan), ElementsAre("drop a", "keep b"));

  FakeBackend fake;
  // Meanwhile an export added ref "c" reaching l2 (planned for deletion).
  const std::string mc = CacheManifest({"l2"}, "c-c");
  fake.docs[Digest::Sha256Of(mc)] = mc;
  fake.roots_after = {D("m-b"), Digest::Sha256Of(mc)};
  fake.young = {D("orphan")};  // rewritten since the plan
  PruneResult res = ExecutePrune(fake, in, plan, o);
  EXPECT_THAT(fake.removed_raws, ElementsAre("{\"ref\":\"a\"}"));
  EXPECT_THAT(res.refs_removed, ElementsAre("a"));
  std::vector<std::string> deleted;
  for (const auto& d : fake.deleted) {
    for (const auto& n : kAll) {
      if (D(n) == d) deleted.push_back(n);
    }
  }
  std::sort(deleted.begin(), deleted.end());
  EXPECT_THAT(deleted, ElementsAre("c-a", "c-h", "l4", "m-a", "m-h"));
  EXPECT_EQ(res.blobs_deleted, 5u);
  EXPECT_EQ(res.skipped.size(), 2u);  // l2 (new ref) and orphan (young now)
  EXPECT_THAT(res.errors, IsEmpty());
}

TEST(ExecutePrune, APlanWithErrorsChangesNothing) {
  PruneInput in = Growth();
  in.refs[1].reach_known = false;
  PrunePlan plan = PlanPrune(in, Opts());
  FakeBackend fake;
  PruneResult res = ExecutePrune(fake, in, plan, Opts());
  EXPECT_THAT(fake.deleted, IsEmpty());
  EXPECT_THAT(fake.removed_raws, IsEmpty());
  EXPECT_EQ(res.errors.size(), 1u);
}

TEST(ExecutePrune, RegistryDeletesPlannedManifestsOnly) {
  PruneInput in = Registry();
  for (auto& r : in.refs) {
    r.manifest_accessed = true;
    r.accessed = kNow - 3 * kDay;
  }
  in.refs[0].accessed = kNow - kHour;
  PruneOptions o = Opts();
  o.keep_duration = kDay;
  PrunePlan plan = PlanPrune(in, o);
  FakeBackend fake;
  PruneResult res = ExecutePrune(fake, in, plan, o);
  ASSERT_EQ(fake.deleted_manifests.size(), 2u);
  EXPECT_EQ(fake.deleted_manifests[0], std::make_pair(std::string("old"), D("m2")));
  EXPECT_EQ(fake.deleted_manifests[1], std::make_pair(std::string("never"), D("m3")));
  EXPECT_THAT(res.refs_removed, ElementsAre("old", "never"));
}

// --- LocalBackend's write API -----------------------------------------------

class LocalWrite : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/bcfs-prune-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    std::filesystem::create_directories(dir_ + "/blobs/sha256");
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  void Write(const std::string& rel, const std::string& text) {
    std::ofstream(dir_ + "/" + rel, std::ios::binary) << text;
  }
  std::string Read(const std::string& rel) {
    std::ifstream f(dir_ + "/" + rel, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
  }
  void SetMtime(const std::string& rel, TimeNs t) {
    struct timeval tv[2];
    tv[0].tv_sec = tv[1].tv_sec = t / kSecond;
    tv[0].tv_usec = tv[1].tv_usec = 0;
    ASSERT_EQ(::utimes((dir_ + "/" + rel).c_str(), tv), 0);
  }
  std::unique_ptr<backends::LocalBackend> Open() {
    backends::SourceSpec spec;
    spec.type = backends::SourceType::kLocal;
    spec.attrs["src"] = dir_;
    auto b = backends::LocalBackend::Open(spec);
    EXPECT_TRUE(b.ok());
    return std::move(*b);
  }
  std::string dir_;
};

TEST_F(LocalWrite, RemoveRefsCutsEntriesAndLeavesEveryOtherByte) {
  const std::string a = R"({"mediaType":"m","digest":")" + D("a").ToString() +
                        R"(","size":1,"annotations":{"org.opencontainers.image.ref.name":"a"}})";
  const std::string b =
      R"({"mediaType":"m","digest":")" + D("b").ToString() +
      R"(", "size" : 2,"annotations":{"org.opencontainers.image.ref.name":"b\u003c\u00e9"}})";
  const std::string c = R"({"mediaType":"m","digest":")" + D("c").ToString() +
                        R"(","size":3,"annotations":{"org.opencontainers.image.ref.name":"c"}})";
  const std::string head = "{\"schemaVersion\":2,\"x\":[1, {\"manifests\":[]}],\"manifests\":[ ";
  const std::string tail = "\n ],\"z\":\"\\\"]\"}";
  Write("index.json", head + a + ",\n" + b + " , " + c + tail);
  ::chmod((dir_ + "/index.json").c_str(), 0640);
  auto backend = Open();
  auto refs = backend->ListRefs();
  ASSERT_TRUE(refs.ok()) << refs.status().message();
  ASSERT_EQ(refs->size(), 3u);
  auto roots = backend->RemoveRefs({(*refs)[0].raw_descriptor, (*refs)[2].raw_descriptor});
  ASSERT_TRUE(roots.ok()) << roots.status().message();
  EXPECT_THAT(*roots, ElementsAre(D("b")));
  EXPECT_EQ(Read("index.json"), head + b + tail);
  struct stat st;
  ASSERT_EQ(::stat((dir_ + "/index.json").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  // The lock file this call created is gone again, as ociindex leaves it.
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/index.json.lock"));
  // The kept entries keep the separators that followed them.
  Write("index.json", "{\"manifests\":[" + a + " ,\n" + b + "," + c + "],\"schemaVersion\":2}");
  refs = backend->ListRefs();
  ASSERT_TRUE(refs.ok());
  roots = backend->RemoveRefs({(*refs)[1].raw_descriptor});
  ASSERT_TRUE(roots.ok()) << roots.status().message();
  EXPECT_THAT(*roots, ElementsAre(D("a"), D("c")));
  EXPECT_EQ(Read("index.json"), "{\"manifests\":[" + a + " ,\n" + c + "],\"schemaVersion\":2}");
  // Nothing matches: the file is not rewritten.
  ASSERT_EQ(::stat((dir_ + "/index.json").c_str(), &st), 0);
  const ino_t ino = st.st_ino;
  roots = backend->RemoveRefs({"{\"no\":1}"});
  ASSERT_TRUE(roots.ok());
  ASSERT_EQ(::stat((dir_ + "/index.json").c_str(), &st), 0);
  EXPECT_EQ(st.st_ino, ino);
}

TEST_F(LocalWrite, RemoveRefsWaitsForTheExclusiveLockAndGivesUp) {
  Write("index.json", R"({"schemaVersion":2,"manifests":[]})");
  Write("index.json.lock", "");
  const int fd = ::open((dir_ + "/index.json.lock").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_SH), 0);  // a reader holds it
  auto backend = Open();
  auto roots = backend->RemoveRefs({"x"});
  ::close(fd);
  ASSERT_FALSE(roots.ok());
  EXPECT_EQ(roots.status().code(), Code::kUnavailable);
  // A lock file that was there before stays.
  roots = backend->RemoveRefs({"x"});
  ASSERT_TRUE(roots.ok()) << roots.status().message();
  EXPECT_TRUE(std::filesystem::exists(dir_ + "/index.json.lock"));
}

TEST_F(LocalWrite, DeleteBlobAndIngestRecheckTheirAge) {
  const Digest d = D("blob");
  Write("blobs/sha256/" + d.hex(), "bytes");
  SetMtime("blobs/sha256/" + d.hex(), kNow);
  auto backend = Open();
  auto r = backend->DeleteBlob(d, kNow - 1);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(*r);
  r = backend->DeleteBlob(d, kNow);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(*r);
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/blobs/sha256/" + d.hex()));
  r = backend->DeleteBlob(d, kNow);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(*r);

  std::filesystem::create_directories(dir_ + "/ingest/abc");
  Write("ingest/abc/data", "12345");
  Write("ingest/abc/ref", "layer-sha256:x");
  SetMtime("ingest/abc/data", kNow - kHour);
  SetMtime("ingest/abc/ref", kNow - 2 * kHour);
  SetMtime("ingest/abc", kNow - 2 * kHour);
  auto list = backend->ListIngest();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].name, "abc");
  EXPECT_EQ((*list)[0].bytes, 5u + 14);
  EXPECT_EQ((*list)[0].mtime, kNow - kHour);
  r = backend->DeleteIngest("abc", kNow - kHour - 1);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(*r);
  r = backend->DeleteIngest("abc", kNow - kHour);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(*r);
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/ingest/abc"));
  EXPECT_FALSE(backend->DeleteIngest("../blobs", kNow).ok());
}

}  // namespace
}  // namespace bcfs::gc
