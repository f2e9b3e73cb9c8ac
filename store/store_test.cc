#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <latch>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "core/metrics.h"
#include "store/content_store.h"
#include "tests/testing.h"

namespace bcfs::store {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr uint64_t kPart = 4096;

std::string MakeBlob(size_t n, uint32_t seed = 1) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

// Everything an fd reads from offset 0; closes it.
std::string ReadAllAndClose(int fd) {
  std::string out;
  char buf[8192];
  for (uint64_t off = 0;;) {
    ssize_t n = ::pread(fd, buf, sizeof(buf), static_cast<off_t>(off));
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
    off += static_cast<uint64_t>(n);
  }
  ::close(fd);
  return out;
}

using testing::ReadFile;

using testing::WriteFile;

uint64_t Parts(uint64_t size) { return (size + kPart - 1) / kPart; }

// Counts per part: `before` for parts < n, `after` for the rest.
std::vector<int> Expect(uint64_t nparts, uint64_t n, int before, int after) {
  std::vector<int> v(nparts);
  for (uint64_t i = 0; i < nparts; ++i) v[i] = i < n ? before : after;
  return v;
}

// A source serving one in-memory blob, counting fetches per part and
// checking that each is one aligned part of the size the store was given.
class FakeSource {
 public:
  explicit FakeSource(std::string bytes) : bytes_(std::move(bytes)), expect_size_(bytes_.size()) {}

  // Runs after the bytes are copied into out: may change them or fail.
  // `nth` counts the fetches of this part, from 1.
  std::function<Status(uint64_t part, int nth, std::span<char> out)> hook;
  std::chrono::milliseconds delay{0};
  void ExpectSize(uint64_t size) { expect_size_ = size; }

  FetchRange Fetch() {
    return [this](uint64_t off, std::span<char> out) { return Serve(off, out); };
  }
  std::vector<int> Counts(uint64_t nparts) {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<int> v(nparts, 0);
    for (auto [part, n] : counts_) {
      if (part < nparts) v[part] = n;
    }
    return v;
  }
  int Total() {
    std::lock_guard<std::mutex> lock(mu_);
    int t = 0;
    for (auto [part, n] : counts_) t += n;
    return t;
  }
  uint64_t BytesServed() { return bytes_served_; }
  std::vector<std::string> Problems() {
    std::lock_guard<std::mutex> lock(mu_);
    return problems_;
  }

 private:
  Status Serve(uint64_t off, std::span<char> out) {
    const uint64_t part = off / kPart;
    int nth;
    {
      std::lock_guard<std::mutex> lock(mu_);
      nth = ++counts_[part];
      if (off % kPart != 0 || out.size() != std::min<uint64_t>(kPart, expect_size_ - off)) {
        problems_.push_back("fetch of " + std::to_string(out.size()) + " bytes at " +
                            std::to_string(off));
      }
    }
    if (delay.count() > 0) std::this_thread::sleep_for(delay);
    if (off + out.size() > bytes_.size()) {
      return Status(Code::kUnavailable,
                    "short read: the source has " + std::to_string(bytes_.size()) + " bytes");
    }
    std::memcpy(out.data(), bytes_.data() + off, out.size());
    bytes_served_ += out.size();
    if (hook) return hook(part, nth, out);
    return OkStatus();
  }

  const std::string bytes_;
  uint64_t expect_size_;
  std::atomic<uint64_t> bytes_served_{0};
  std::mutex mu_;
  std::map<uint64_t, int> counts_;     // GUARDED_BY(mu_)
  std::vector<std::string> problems_;  // GUARDED_BY(mu_)
};

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/bcfs-store-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<ContentStore> OpenStore(int parallel = 4, std::string dir = "") {
    StoreOptions o;
    o.part_size = kPart;
    o.parallel = parallel;
    auto s = ContentStore::Open(dir.empty() ? dir_ : dir, o);
    EXPECT_TRUE(s.ok()) << s.status().message();
    return s.ok() ? std::move(*s) : nullptr;
  }

  // Runs a fetch in which parts >= n fail, so parts < n end up recorded
  // (parts are claimed in ascending order and claimed parts always finish).
  void FailAfter(ContentStore& store, const std::string& blob, uint64_t n) {
    FakeSource src(blob);
    src.hook = [n](uint64_t part, int, std::span<char>) {
      return part >= n ? Status(Code::kUnavailable, "boom") : OkStatus();
    };
    const Digest d = Digest::Sha256Of(blob);
    auto fd = store.OpenVerified(d, blob.size(), src.Fetch());
    ASSERT_FALSE(fd.ok());
    EXPECT_EQ(fd.status().code(), Code::kUnavailable);
    EXPECT_THAT(fd.status().message(), StartsWith("fetch blob " + d.ToString() + ": part "));
    EXPECT_THAT(fd.status().message(), HasSubstr(": boom"));
    EXPECT_EQ(src.Counts(n), Expect(n, n, 1, 1));
  }

  std::vector<std::string> List(const std::string& sub) {
    std::vector<std::string> out;
    for (auto& e : fs::directory_iterator(dir_ + "/" + sub)) out.push_back(e.path().filename());
    std::sort(out.begin(), out.end());
    return out;
  }

  std::string dir_;
};

// The store's process-wide counters (core/metrics.h), for deltas.
struct StoreCounts {
  uint64_t hits, misses, joins, fetched;
  int64_t in_flight;
  static StoreCounts Now() {
    auto c = [](const char* name) { return metrics::Global().GetCounter(name, "")->Value(); };
    return {c("buildcachefs_store_hits_total"), c("buildcachefs_store_misses_total"),
            c("buildcachefs_store_fetch_joins_total"), c("buildcachefs_store_fetched_bytes_total"),
            metrics::Global().GetGauge("buildcachefs_store_fetches_in_flight", "")->Value()};
  }
};

TEST_F(StoreTest, FetchesAlignedPartsOnceVerifiesAndServesTheBytes) {
  const std::string blob = MakeBlob(10 * kPart + 2048);  // not a multiple of the part size
  const Digest d = Digest::Sha256Of(blob);
  auto store = OpenStore();
  ASSERT_TRUE(store);
  EXPECT_FALSE(store->IsComplete(d));
  EXPECT_EQ(store->CachedBytes(d), 0u);

  FakeSource src(blob);
  const StoreCounts before = StoreCounts::Now();
  auto fd = store->OpenVerified(d, blob.size(), src.Fetch());
  ASSERT_TRUE(fd.ok()) << fd.status().message();
  const StoreCounts fetched = StoreCounts::Now();
  EXPECT_EQ(fetched.misses - before.misses, 1u);
  EXPECT_EQ(fetched.hits - before.hits, 0u);
  EXPECT_EQ(fetched.fetched - before.fetched, blob.size());
  EXPECT_EQ(fetched.in_flight, 0);
  EXPECT_EQ(::fcntl(*fd, F_GETFL) & O_ACCMODE, O_RDONLY);
  EXPECT_EQ(ReadAllAndClose(*fd), blob);
  EXPECT_EQ(src.Counts(11), std::vector<int>(11, 1));
  EXPECT_EQ(src.Total(), 11);
  EXPECT_TRUE(src.Problems().empty()) << src.Problems().front();

  // Only the verified blob is left, read-only, under its digest.
  struct stat st;
  ASSERT_EQ(::stat(store->layout().Blob(d).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0444u);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), blob.size());
  EXPECT_EQ(store->layout().Blob(d), dir_ + "/blobs/sha256/" + d.hex());
  EXPECT_EQ(List("blobs/sha256"), std::vector<std::string>{d.hex()});
  EXPECT_TRUE(List("partial/sha256").empty());
  EXPECT_TRUE(store->IsComplete(d));
  EXPECT_EQ(store->CachedBytes(d), blob.size());

  // Served again without fetching, and after a restart too.
  auto again = store->OpenVerified(d, blob.size(), src.Fetch());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(ReadAllAndClose(*again), blob);
  store.reset();
  store = OpenStore();
  ASSERT_TRUE(store);
  EXPECT_TRUE(store->IsComplete(d));
  auto after_restart = store->OpenVerified(d, blob.size(), src.Fetch());
  ASSERT_TRUE(after_restart.ok());
  EXPECT_EQ(ReadAllAndClose(*after_restart), blob);
  EXPECT_EQ(src.Total(), 11);
  const StoreCounts after = StoreCounts::Now();
  EXPECT_EQ(after.hits - before.hits, 2u);
  EXPECT_EQ(after.misses - before.misses, 1u);
  EXPECT_EQ(after.fetched - before.fetched, blob.size());
}

TEST_F(StoreTest, ServesBlobsOfOnePartialPartAndOfExactParts) {
  auto store = OpenStore();
  ASSERT_TRUE(store);
  for (uint64_t size : {uint64_t{1}, kPart - 1, kPart, 3 * kPart}) {
    const std::string blob = MakeBlob(size, static_cast<uint32_t>(size));
    const Digest d = Digest::Sha256Of(blob);
    FakeSource src(blob);
    auto fd = store->OpenVerified(d, size, src.Fetch());
    ASSERT_TRUE(fd.ok()) << size << ": " << fd.status().message();
    EXPECT_EQ(ReadAllAndClose(*fd), blob) << size;
    EXPECT_EQ(src.Counts(Parts(size)), std::vector<int>(Parts(size), 1)) << size;
    EXPECT_TRUE(src.Problems().empty()) << size;
  }
}

TEST_F(StoreTest, EmptyBlobNeedsNoFetch) {
  auto store = OpenStore();
  ASSERT_TRUE(store);
  const Digest d = Digest::Sha256Of("");
  FakeSource src("");
  auto fd = store->OpenVerified(d, 0, src.Fetch());
  ASSERT_TRUE(fd.ok()) << fd.status().message();
  struct stat st;
  ASSERT_EQ(::fstat(*fd, &st), 0);
  EXPECT_EQ(st.st_size, 0);
  ::close(*fd);
  EXPECT_EQ(src.Total(), 0);
  EXPECT_TRUE(store->IsComplete(d));
  EXPECT_EQ(store->CachedBytes(d), 0u);

  // Size 0 under another digest: nothing to fetch, and it cannot match.
  const Digest other = Digest::Sha256Of("x");
  auto bad = store->OpenVerified(other, 0, src.Fetch());
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), Code::kCorrupt);
  EXPECT_EQ(bad.status().message(), "blob " + other.ToString() +
                                        " fetched from the source does not match its digest "
                                        "(its bytes hash to " +
                                        d.ToString() + ")");
  EXPECT_FALSE(store->IsComplete(other));
}

TEST_F(StoreTest, ProgressIsReportedAsEachPartLands) {
  const std::string blob = MakeBlob(6 * kPart + 100);
  const Digest d = Digest::Sha256Of(blob);
  auto store = OpenStore();
  ASSERT_TRUE(store);
  std::mutex mu;
  std::vector<uint64_t> seen;
  std::vector<uint64_t> cached;  // CachedBytes asked from inside the callback
  ContentStore* s = store.get();
  store->SetProgressCallback([&](const Digest& got, uint64_t present, uint64_t size) {
    EXPECT_EQ(got, d);
    EXPECT_EQ(size, blob.size());
    uint64_t c = s->CachedBytes(got);
    std::lock_guard<std::mutex> lock(mu);
    seen.push_back(present);
    cached.push_back(c);
  });
  FakeSource src(blob);
  auto fd = store->OpenVerified(d, blob.size(), src.Fetch());
  ASSERT_TRUE(fd.ok());
  ::close(*fd);
  ASSERT_EQ(seen.size(), 7u);
  EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
  EXPECT_EQ(seen.back(), blob.size());
  for (size_t i = 0; i < seen.size(); ++i) EXPECT_GE(cached[i], seen[i]);
}

TEST_F(StoreTest, SixteenConcurrentReadersOfOneColdBlobFetchEachPartOnce) {
  const std::string blob = MakeBlob(12 * kPart + 777);
  const Digest d = Digest::Sha256Of(blob);
  auto store = OpenStore();
  ASSERT_TRUE(store);
  FakeSource src(blob);
  src.delay = std::chrono::milliseconds(3);  // keeps all 16 callers inside the one fetch
  const StoreCounts before = StoreCounts::Now();
  std::latch start(16);
  std::vector<std::string> got(16);
  std::vector<Status> errors(16);
  std::vector<std::thread> threads;
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&, t] {
      start.arrive_and_wait();
      auto fd = store->OpenVerified(d, blob.size(), src.Fetch());
      if (fd.ok()) {
        got[t] = ReadAllAndClose(*fd);
      } else {
        errors[t] = fd.status();
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 16; ++t) {
    EXPECT_TRUE(errors[t].ok()) << errors[t].message();
    EXPECT_EQ(got[t], blob) << "reader " << t;
  }
  EXPECT_EQ(src.Counts(13), std::vector<int>(13, 1));
  EXPECT_EQ(src.Total(), 13);
  EXPECT_TRUE(src.Problems().empty());
  // One fetch; every other caller joined it or, arriving after it, found the blob.
  const StoreCounts after = StoreCounts::Now();
  EXPECT_EQ(after.misses - before.misses, 1u);
  EXPECT_EQ((after.joins - before.joins) + (after.hits - before.hits), 15u);
  EXPECT_EQ(after.fetched - before.fetched, blob.size());
  EXPECT_EQ(after.in_flight, 0);
}

TEST_F(StoreTest, WaitersShareTheLeadersError) {
  const std::string blob = MakeBlob(4 * kPart);
  const Digest d = Digest::Sha256Of(blob);
  auto store = OpenStore(1);
  ASSERT_TRUE(store);
  FakeSource src(blob);
  src.delay = std::chrono::milliseconds(20);
  src.hook = [](uint64_t part, int, std::span<char>) {
    return part == 1 ? Status(Code::kUnavailable, "boom") : OkStatus();
  };
  std::latch start(8);
  std::vector<Status> errors(8);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      start.arrive_and_wait();
      auto fd = store->OpenVerified(d, blob.size(), src.Fetch());
      errors[t] = fd.status();
      if (fd.ok()) ::close(*fd);
    });
  }
  for (auto& th : threads) th.join();
  // Part 0 is fetched once (a caller arriving after the first pass failed
  // starts another one, which resumes it); every caller that joined a pass
  // got its error; no part after the failed one is claimed (one worker).
  std::vector<int> counts = src.Counts(4);
  EXPECT_EQ(counts[0], 1);
  EXPECT_GE(counts[1], 1);
  EXPECT_EQ(counts[2], 0);
  EXPECT_EQ(counts[3], 0);
  for (const Status& st : errors) {
    EXPECT_EQ(st.code(), Code::kUnavailable);
    EXPECT_EQ(st.message(),
              "fetch blob " + d.ToString() + ": part 1 (bytes 4096-8192 of 16384): boom");
  }
  EXPECT_LE(counts[1], 8);
}

TEST_F(StoreTest, DifferentBlobsFetchAtTheSameTime) {
  const std::string a = MakeBlob(kPart, 1), b = MakeBlob(kPart, 2);
  auto store = OpenStore();
  ASSERT_TRUE(store);
  // Each fetch waits until the other one has started: serialised fetches
  // would time out.
  std::mutex mu;
  std::condition_variable cv;
  int started = 0;
  auto both_started = [&](uint64_t, int, std::span<char>) {
    std::unique_lock<std::mutex> lock(mu);
    ++started;
    cv.notify_all();
    bool ok = cv.wait_for(lock, std::chrono::seconds(10), [&] { return started == 2; });
    return ok ? OkStatus() : Status(Code::kUnavailable, "the other blob was not being fetched");
  };
  FakeSource sa(a), sb(b);
  sa.hook = sb.hook = both_started;
  Result<int> fa = InternalError("unset"), fb = InternalError("unset");
  std::thread ta([&] { fa = store->OpenVerified(Digest::Sha256Of(a), a.size(), sa.Fetch()); });
  std::thread tb([&] { fb = store->OpenVerified(Digest::Sha256Of(b), b.size(), sb.Fetch()); });
  ta.join();
  tb.join();
  ASSERT_TRUE(fa.ok()) << fa.status().message();
  ASSERT_TRUE(fb.ok()) << fb.status().message();
  EXPECT_EQ(ReadAllAndClose(*fa), a);
  EXPECT_EQ(ReadAllAndClose(*fb), b);
}

TEST_F(StoreTest, WrongBytesOnceAreDiscardedAndFetchedAgain) {
  const std::string blob = MakeBlob(5 * kPart + 10);
  const Digest d = Digest::Sha256Of(blob);
  auto store = OpenStore();
  ASSERT_TRUE(store);
  FakeSource src(blob);
  src.hook = [](uint64_t part, int nth, std::span<char> out) {
    if (part == 2 && nth == 1) out[7] ^= 0x01;
    return OkStatus();
  };
  auto fd = store->OpenVerified(d, blob.size(), src.Fetch());
  ASSERT_TRUE(fd.ok()) << fd.status().message();
  EXPECT_EQ(ReadAllAndClose(*fd), blob);
  EXPECT_EQ(src.Counts(6), std::vector<int>(6, 2));  // two full passes
  EXPECT_TRUE(List("partial/sha256").empty());
}

TEST_F(StoreTest, AlwaysWrongBytesAreCorruptAndNothingIsStored) {
  const std::string blob = MakeBlob(3 * kPart + 5);
  const Digest d = Digest::Sha256Of(blob);
  std::string wrong = blob;
  wrong[kPart + 7] ^= 0x01;
  auto store = OpenStore();
  ASSERT_TRUE(store);
  FakeSource src(blob);
  src.hook = [](uint64_t part, int, std::span<char> out) {
    if (part == 1) out[7] ^= 0x01;
    return OkStatus();
  };
  auto fd = store->OpenVerified(d, blob.size(), src.Fetch());
  ASSERT_FALSE(fd.ok());
  EXPECT_EQ(fd.status().code(), Code::kCorrupt);
  EXPECT_EQ(fd.status().message(), "blob " + d.ToString() +
                                       " fetched from the source does not match its digest (its "
                                       "bytes hash to " +
                                       Digest::Sha256Of(wrong).ToString() + ")");
  EXPECT_EQ(src.Counts(4), std::vector<int>(4, 2));
  EXPECT_TRUE(List("blobs/sha256").empty());
  EXPECT_TRUE(List("partial/sha256").empty());
  EXPECT_FALSE(store->IsComplete(d));
  EXPECT_EQ(store->CachedBytes(d), 0u);

  // A later call tries again (and succeeds once the source is right).
  src.hook = nullptr;
  auto later = store->OpenVerified(d, blob.size(), src.Fetch());
  ASSERT_TRUE(later.ok()) << later.status().message();
  EXPECT_EQ(ReadAllAndClose(*later), blob);
  EXPECT_EQ(src.Counts(4), std::vector<int>(4, 3));
}

TEST_F(StoreTest, FailedFetchKeepsRecordedPartsAndANewStoreFetchesOnlyTheRest) {
  const std::string blob = MakeBlob(9 * kPart + 321);
  const Digest d = Digest::Sha256Of(blob);
  auto store = OpenStore(4);
  ASSERT_TRUE(store);
  FailAfter(*store, blob, 3);
  EXPECT_EQ(store->CachedBytes(d), 3 * kPart);
  EXPECT_FALSE(store->IsComplete(d));
  EXPECT_TRUE(List("blobs/sha256").empty());
  EXPECT_EQ(List("partial/sha256"),
            (std::vector<std::string>{d.hex() + ".data", d.hex() + ".ranges"}));
  struct stat st;
  ASSERT_EQ(::stat(store->layout().PartialData(d).c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), blob.size());  // sparse, full size

  store.reset();
  store = OpenStore(4);
  ASSERT_TRUE(store);
  EXPECT_EQ(store->CachedBytes(d), 3 * kPart);
  FakeSource src(blob);
  auto fd = store->OpenVerified(d, blob.size(), src.Fetch());
  ASSERT_TRUE(fd.ok()) << fd.status().message();
  EXPECT_EQ(ReadAllAndClose(*fd), blob);
  EXPECT_EQ(src.Counts(10), Expect(10, 3, 0, 1));
  EXPECT_EQ(src.BytesServed(), blob.size() - 3 * kPart);
  EXPECT_TRUE(List("partial/sha256").empty());
}

// A streaming source: records each request (offset, length) and sends the
// bytes in chunks of `chunk`; `fail_after` > 0 makes the first request fail
// (kUnavailable) after that many bytes were sent.
struct StreamSource {
  std::string bytes;
  size_t chunk = 1000;  // not a divisor of the part size: chunks straddle parts
  uint64_t fail_after = 0;
  std::vector<std::pair<uint64_t, uint64_t>> calls;
  FetchStream Stream() {
    return [this](uint64_t off, uint64_t len, const ByteSink& sink) -> Status {
      calls.emplace_back(off, len);
      uint64_t sent = 0;
      while (sent < len) {
        if (fail_after > 0 && calls.size() == 1 && sent >= fail_after) {
          return Status(Code::kUnavailable, "connection reset");
        }
        const size_t n = static_cast<size_t>(std::min<uint64_t>(chunk, len - sent));
        if (!sink(std::string_view(bytes).substr(off + sent, n))) {
          return Status(Code::kIo, "stopped");
        }
        sent += n;
      }
      return OkStatus();
    };
  }
};

using Calls = std::vector<std::pair<uint64_t, uint64_t>>;

// Opens `blob` through `src` (a ranged source too, which must not be asked),
// checks the bytes served, and returns the stream requests made.
Calls OpenStreamed(ContentStore& store, const std::string& blob, StreamSource& src) {
  FakeSource ranges(blob);
  auto fd = store.OpenVerified(Digest::Sha256Of(blob), blob.size(), ranges.Fetch(), src.Stream());
  EXPECT_TRUE(fd.ok()) << fd.status().message();
  if (fd.ok()) EXPECT_EQ(ReadAllAndClose(*fd), blob);
  EXPECT_EQ(ranges.Total(), 0);
  return src.calls;
}

TEST_F(StoreTest, AStreamingSourceIsAskedOnceForTheWholeBlob) {
  const std::string blob = MakeBlob(10 * kPart + 2048);
  auto store = OpenStore();
  ASSERT_TRUE(store);
  StreamSource src{blob};
  std::vector<uint64_t> progress;
  store->SetProgressCallback(
      [&](const Digest&, uint64_t present, uint64_t) { progress.push_back(present); });
  EXPECT_EQ(OpenStreamed(*store, blob, src), (Calls{{0, blob.size()}}));
  ASSERT_FALSE(progress.empty());
  EXPECT_EQ(progress.back(), blob.size());
  EXPECT_TRUE(std::is_sorted(progress.begin(), progress.end()));
  EXPECT_TRUE(List("partial/sha256").empty());
}

TEST_F(StoreTest, AStreamThatBreaksIsAskedAgainFromTheFirstIncompletePart) {
  const std::string blob = MakeBlob(9 * kPart + 321);
  auto store = OpenStore();
  ASSERT_TRUE(store);
  StreamSource src{blob};
  src.fail_after = 3 * kPart + 500;  // parts 0-2 whole, part 3 begun
  EXPECT_EQ(OpenStreamed(*store, blob, src),
            (Calls{{0, blob.size()}, {3 * kPart, blob.size() - 3 * kPart}}));
}

TEST_F(StoreTest, AStreamingSourceIsAskedForEachRunOfMissingPartsAfterAResume) {
  const std::string blob = MakeBlob(9 * kPart + 321);
  const Digest d = Digest::Sha256Of(blob);
  auto store = OpenStore();
  ASSERT_TRUE(store);
  FailAfter(*store, blob, 3);  // parts 0-2 recorded (parallel ranges)
  StreamSource src{blob};
  src.chunk = 3 * kPart;  // bigger than a part
  EXPECT_EQ(OpenStreamed(*store, blob, src), (Calls{{3 * kPart, blob.size() - 3 * kPart}}));
  EXPECT_EQ(store->CachedBytes(d), blob.size());
}

TEST_F(StoreTest, AStreamThatKeepsFailingKeepsTheWholePartsItBroughtAndNamesTheBytes) {
  const std::string blob = MakeBlob(6 * kPart);
  const Digest d = Digest::Sha256Of(blob);
  auto store = OpenStore();
  ASSERT_TRUE(store);
  FakeSource ranges(blob);
  auto stream = [&](uint64_t off, uint64_t len, const ByteSink& sink) -> Status {
    // Always breaks before part 2 is whole.
    const uint64_t stop = std::min<uint64_t>(off + len, 2 * kPart + 10);
    if (stop > off && !sink(std::string_view(blob).substr(off, stop - off))) {
      return Status(Code::kIo, "stopped");
    }
    return Status(Code::kUnavailable, "connection reset");
  };
  auto fd = store->OpenVerified(d, blob.size(), ranges.Fetch(), stream);
  ASSERT_FALSE(fd.ok());
  EXPECT_EQ(fd.status().code(), Code::kUnavailable);
  EXPECT_THAT(fd.status().message(), HasSubstr("connection reset"));
  EXPECT_THAT(fd.status().message(), HasSubstr("of " + std::to_string(blob.size())));
  EXPECT_EQ(store->CachedBytes(d), 2 * kPart);
  EXPECT_TRUE(List("blobs/sha256").empty());
}

TEST_F(StoreTest, ACorruptedRecordedPartFailsTheWholeBlobAndEverythingIsFetchedAgain) {
  const std::string blob = MakeBlob(8 * kPart);
  const Digest d = Digest::Sha256Of(blob);
  auto store = OpenStore();
  ASSERT_TRUE(store);
  FailAfter(*store, blob, 3);
  store.reset();

  const std::string data = Layout(dir_).PartialData(d);
  std::string bytes = ReadFile(data);
  ASSERT_EQ(bytes.size(), blob.size());
  bytes[kPart + 10] ^= 0x40;
  WriteFile(data, bytes);

  store = OpenStore();
  ASSERT_TRUE(store);
  FakeSource src(blob);
  auto fd = store->OpenVerified(d, blob.size(), src.Fetch());
  ASSERT_TRUE(fd.ok()) << fd.status().message();
  EXPECT_EQ(ReadAllAndClose(*fd), blob);
  // Resume fetched parts 3..7, the mismatch discarded all, the second pass
  // fetched all.
  EXPECT_EQ(src.Counts(8), Expect(8, 3, 1, 2));
}

TEST_F(StoreTest, ATornLastRecordLineIsIgnored) {
  const std::string blob = MakeBlob(6 * kPart + 1);
  const Digest d = Digest::Sha256Of(blob);
  auto store = OpenStore(1);  // one worker: records land in order 0, 1, 2
  ASSERT_TRUE(store);
  FailAfter(*store, blob, 3);
  store.reset();

  const std::string ranges = Layout(dir_).PartialRanges(d);
  std::string rec = ReadFile(ranges);
  ASSERT_EQ(std::count(rec.begin(), rec.end(), '\n'), 4);  // header + 3 parts
  ASSERT_EQ(::truncate(ranges.c_str(), static_cast<off_t>(rec.size() - 5)), 0);

  store = OpenStore(1);
  ASSERT_TRUE(store);
  EXPECT_EQ(store->CachedBytes(d), 2 * kPart);
  FakeSource src(blob);
  auto fd = store->OpenVerified(d, blob.size(), src.Fetch());
  ASSERT_TRUE(fd.ok()) << fd.status().message();
  EXPECT_EQ(ReadAllAndClose(*fd), blob);
  EXPECT_EQ(src.Counts(7), Expect(7, 2, 0, 1));
}

TEST_F(StoreTest, ADamagedRecordCountsAsNothingRecorded) {
  const std::string blob = MakeBlob(5 * kPart + 9);
  const Digest d = Digest::Sha256Of(blob);
  const std::vector<std::string> damaged = {
      "",                                                                  // empty
      "bcfs-ranges 1 sha256:",                                             // header torn
      std::string("\x00\x00\x00\x00\x00\x00\x00\n", 8),                    // zeros
      "garbage\n0 0123456789abcdef\n",                                     // garbage header
      "bcfs-ranges 1 " + d.ToString() + " 20489 4096 0123456789abcdef\n",  // bad check
  };
  for (size_t k = 0; k < damaged.size(); ++k) {
    SCOPED_TRACE(k);
    const std::string dir = dir_ + "/case" + std::to_string(k);
    auto store = OpenStore(4, dir);
    ASSERT_TRUE(store);
    FailAfter(*store, blob, 2);
    EXPECT_EQ(store->CachedBytes(d), 2 * kPart);
    store.reset();
    WriteFile(Layout(dir).PartialRanges(d), damaged[k]);

    store = OpenStore(4, dir);
    ASSERT_TRUE(store);
    EXPECT_EQ(store->CachedBytes(d), 0u);
    FakeSource src(blob);
    auto fd = store->OpenVerified(d, blob.size(), src.Fetch());
    ASSERT_TRUE(fd.ok()) << fd.status().message();
    EXPECT_EQ(ReadAllAndClose(*fd), blob);
    EXPECT_EQ(src.Counts(6), std::vector<int>(6, 1));
  }
}

TEST_F(StoreTest, ARecordOfAnotherPartSizeIsDiscarded) {
  const std::string blob = MakeBlob(4 * kPart);
  const Digest d = Digest::Sha256Of(blob);
  auto store = OpenStore();
  ASSERT_TRUE(store);
  FailAfter(*store, blob, 2);
  store.reset();

  StoreOptions o;
  o.part_size = 2 * kPart;
  auto big = ContentStore::Open(dir_, o);
  ASSERT_TRUE(big.ok());
  EXPECT_EQ((*big)->CachedBytes(d), 2 * kPart);  // as recorded
  std::atomic<int> calls{0};
  auto fd = (*big)->OpenVerified(d, blob.size(), [&](uint64_t off, std::span<char> out) {
    ++calls;
    std::memcpy(out.data(), blob.data() + off, out.size());
    return OkStatus();
  });
  ASSERT_TRUE(fd.ok()) << fd.status().message();
  EXPECT_EQ(ReadAllAndClose(*fd), blob);
  EXPECT_EQ(calls, 2);  // both of its parts: nothing reused
}

TEST_F(StoreTest, ASizeTheSourceDoesNotHaveIsAnErrorAndNothingIsPromoted) {
  const std::string blob = MakeBlob(3 * kPart + 50);
  const Digest d = Digest::Sha256Of(blob);
  auto store = OpenStore();
  ASSERT_TRUE(store);

  FakeSource longer(blob);
  longer.ExpectSize(blob.size() + 1);
  auto fd = store->OpenVerified(d, blob.size() + 1, longer.Fetch());
  ASSERT_FALSE(fd.ok());
  EXPECT_EQ(fd.status().code(), Code::kUnavailable);
  EXPECT_EQ(fd.status().message(), "fetch blob " + d.ToString() +
                                       ": part 3 (bytes 12288-12339 of " +
                                       "12339): short read: the source has 12338 bytes");
  EXPECT_FALSE(store->IsComplete(d));
  EXPECT_TRUE(List("blobs/sha256").empty());

  FakeSource shorter(blob);
  shorter.ExpectSize(blob.size() - 1);
  fd = store->OpenVerified(d, blob.size() - 1, shorter.Fetch());
  ASSERT_FALSE(fd.ok());
  EXPECT_EQ(fd.status().code(), Code::kCorrupt);
  EXPECT_EQ(fd.status().message(),
            "blob " + d.ToString() +
                " fetched from the source does not match its digest (its bytes hash to " +
                Digest::Sha256Of(blob.substr(0, blob.size() - 1)).ToString() + ")");
  EXPECT_TRUE(List("blobs/sha256").empty());
  EXPECT_TRUE(List("partial/sha256").empty());

  // The right size still works, whatever the failures left behind.
  FakeSource right(blob);
  fd = store->OpenVerified(d, blob.size(), right.Fetch());
  ASSERT_TRUE(fd.ok()) << fd.status().message();
  EXPECT_EQ(ReadAllAndClose(*fd), blob);
}

TEST_F(StoreTest, ACompleteBlobOfTheWrongSizeIsEvictedAndFetchedAgain) {
  const std::string blob = MakeBlob(3 * kPart);
  const Digest d = Digest::Sha256Of(blob);
  auto store = OpenStore();
  ASSERT_TRUE(store);
  FakeSource src(blob);
  auto fd = store->OpenVerified(d, blob.size(), src.Fetch());
  ASSERT_TRUE(fd.ok());
  ::close(*fd);
  // Damage after verification (say, a truncated file).
  ASSERT_EQ(::truncate(store->layout().Blob(d).c_str(), 100), 0);
  EXPECT_EQ(store->CachedBytes(d), 100u);

  fd = store->OpenVerified(d, blob.size(), src.Fetch());
  ASSERT_TRUE(fd.ok()) << fd.status().message();
  EXPECT_EQ(ReadAllAndClose(*fd), blob);
  EXPECT_EQ(src.Counts(3), std::vector<int>(3, 2));
}

TEST_F(StoreTest, EvictRemovesCompleteAndPartialData) {
  const std::string blob = MakeBlob(4 * kPart + 3);
  const Digest d = Digest::Sha256Of(blob);
  auto store = OpenStore();
  ASSERT_TRUE(store);
  EXPECT_TRUE(store->Evict(d).ok());  // nothing there: fine

  FakeSource src(blob);
  auto fd = store->OpenVerified(d, blob.size(), src.Fetch());
  ASSERT_TRUE(fd.ok());
  ASSERT_TRUE(store->Evict(d).ok());
  EXPECT_EQ(ReadAllAndClose(*fd), blob);  // an open fd stays readable
  EXPECT_FALSE(store->IsComplete(d));
  EXPECT_EQ(store->CachedBytes(d), 0u);
  EXPECT_TRUE(List("blobs/sha256").empty());

  FailAfter(*store, blob, 2);
  EXPECT_EQ(store->CachedBytes(d), 2 * kPart);
  ASSERT_TRUE(store->Evict(d).ok());
  EXPECT_EQ(store->CachedBytes(d), 0u);
  EXPECT_TRUE(List("partial/sha256").empty());

  fd = store->OpenVerified(d, blob.size(), src.Fetch());
  ASSERT_TRUE(fd.ok());
  EXPECT_EQ(ReadAllAndClose(*fd), blob);
  EXPECT_EQ(src.Counts(5), std::vector<int>(5, 2));
}

TEST_F(StoreTest, EvictDuringAFetchIsRefused) {
  const std::string blob = MakeBlob(2 * kPart);
  const Digest d = Digest::Sha256Of(blob);
  auto store = OpenStore(1);
  ASSERT_TRUE(store);
  std::mutex mu;
  std::condition_variable cv;
  bool started = false, release = false;
  FakeSource src(blob);
  src.hook = [&](uint64_t part, int, std::span<char>) {
    if (part != 1) return OkStatus();
    std::unique_lock<std::mutex> lock(mu);
    started = true;
    cv.notify_all();
    cv.wait(lock, [&] { return release; });
    return OkStatus();
  };
  Result<int> fd = InternalError("unset");
  std::thread t([&] { fd = store->OpenVerified(d, blob.size(), src.Fetch()); });
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return started; });
  }
  EXPECT_EQ(store->CachedBytes(d), kPart);  // live, while part 1 is in flight
  Status st = store->Evict(d);
  EXPECT_EQ(st.code(), Code::kUnavailable);
  EXPECT_EQ(st.message(), "evict blob " + d.ToString() + ": it is being fetched");
  {
    std::lock_guard<std::mutex> lock(mu);
    release = true;
  }
  cv.notify_all();
  t.join();
  ASSERT_TRUE(fd.ok());
  EXPECT_EQ(ReadAllAndClose(*fd), blob);
}

TEST_F(StoreTest, OneStorePerDirectory) {
  auto store = OpenStore();
  ASSERT_TRUE(store);
  auto second = ContentStore::Open(dir_);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), Code::kUnavailable);
  EXPECT_EQ(second.status().message(), "content store " + dir_ + " is in use by another process (" +
                                           dir_ + "/LOCK is locked)");
  store.reset();
  EXPECT_TRUE(ContentStore::Open(dir_).ok());
}

TEST_F(StoreTest, RejectsBadOptionsAndUnverifiableDigests) {
  StoreOptions o;
  o.part_size = 0;
  EXPECT_EQ(ContentStore::Open(dir_, o).status().code(), Code::kInvalidArgument);
  o = StoreOptions();
  o.parallel = 0;
  EXPECT_EQ(ContentStore::Open(dir_, o).status().code(), Code::kInvalidArgument);

  auto store = OpenStore();
  ASSERT_TRUE(store);
  auto sha512 = Digest::Parse("sha512:" + std::string(128, 'a'));
  ASSERT_TRUE(sha512.ok());
  FakeSource src("abc");
  auto fd = store->OpenVerified(*sha512, 3, src.Fetch());
  EXPECT_EQ(fd.status().code(), Code::kUnsupported);
  EXPECT_EQ(src.Total(), 0);
  EXPECT_EQ(store->OpenVerified(Digest(), 3, src.Fetch()).status().code(), Code::kInvalidArgument);
}

// A child process fetches a blob; once it reports N parts recorded the parent
// kills it with SIGKILL, then opens the store and resumes.
class Child {
 public:
  ~Child() { Kill(); }
  pid_t pid = -1;
  int Kill() {
    if (pid <= 0) return -1;
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    pid = -1;
    return status;
  }
};

TEST_F(StoreTest, KillDashNineDuringAFetchThenResumeFetchesOnlyTheMissingParts) {
  constexpr uint64_t kRecorded = 5;
  const std::string blob = MakeBlob(12 * kPart - 100);
  const Digest d = Digest::Sha256Of(blob);
  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  Child child;
  child.pid = ::fork();
  ASSERT_GE(child.pid, 0);
  if (child.pid == 0) {
    ::close(pipefd[0]);
    StoreOptions o;
    o.part_size = kPart;
    o.parallel = 4;
    auto store = ContentStore::Open(dir_, o);
    if (!store.ok()) ::_exit(2);
    std::atomic<bool> told{false};
    (*store)->SetProgressCallback([&](const Digest&, uint64_t present, uint64_t) {
      if (present >= kRecorded * kPart && !told.exchange(true)) {
        char c = 'k';
        if (::write(pipefd[1], &c, 1) != 1) ::_exit(4);
      }
    });
    auto fd = (*store)->OpenVerified(d, blob.size(), [&](uint64_t off, std::span<char> out) {
      if (off >= kRecorded * kPart) {
        for (;;) ::pause();  // blocks forever: the parent kills us here
      }
      std::memcpy(out.data(), blob.data() + off, out.size());
      return OkStatus();
    });
    ::_exit(3);
  }
  ::close(pipefd[1]);
  pollfd p{pipefd[0], POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 30000), 1) << "the child never reported its parts";
  char c = 0;
  ASSERT_EQ(::read(pipefd[0], &c, 1), 1);
  ::close(pipefd[0]);
  ASSERT_EQ(c, 'k');
  int status = child.Kill();
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGKILL);

  auto store = OpenStore();
  ASSERT_TRUE(store);
  EXPECT_FALSE(store->IsComplete(d));
  EXPECT_EQ(store->CachedBytes(d), kRecorded * kPart);
  FakeSource src(blob);
  auto fd = store->OpenVerified(d, blob.size(), src.Fetch());
  ASSERT_TRUE(fd.ok()) << fd.status().message();
  EXPECT_EQ(ReadAllAndClose(*fd), blob);
  EXPECT_EQ(src.Counts(12), Expect(12, kRecorded, 0, 1));
}

TEST_F(StoreTest, KillDashNineAtRandomMomentsNeverServesBadBytesNorRefetchesRecordedParts) {
  const std::string blob = MakeBlob(24 * kPart + 17);
  const Digest d = Digest::Sha256Of(blob);
  std::mt19937 rng(7);
  for (int round = 0; round < 8; ++round) {
    SCOPED_TRACE(round);
    const std::string dir = dir_ + "/round" + std::to_string(round);
    Child child;
    child.pid = ::fork();
    ASSERT_GE(child.pid, 0);
    if (child.pid == 0) {
      StoreOptions o;
      o.part_size = kPart;
      auto store = ContentStore::Open(dir, o);
      if (!store.ok()) ::_exit(2);
      auto fd = (*store)->OpenVerified(d, blob.size(), [&](uint64_t off, std::span<char> out) {
        ::usleep(1000);
        std::memcpy(out.data(), blob.data() + off, out.size());
        return OkStatus();
      });
      ::_exit(fd.ok() ? 0 : 1);
    }
    ::usleep(static_cast<useconds_t>(rng() % 60000));
    child.Kill();

    auto store = OpenStore(4, dir);
    ASSERT_TRUE(store);
    const uint64_t cached = store->CachedBytes(d);
    SCOPED_TRACE("bytes recorded before the kill: " + std::to_string(cached));
    FakeSource src(blob);
    auto fd = store->OpenVerified(d, blob.size(), src.Fetch());
    ASSERT_TRUE(fd.ok()) << fd.status().message();
    EXPECT_EQ(ReadAllAndClose(*fd), blob);
    for (int n : src.Counts(25)) EXPECT_LE(n, 1);
    EXPECT_EQ(src.BytesServed(), blob.size() - cached);
  }
}

}  // namespace
}  // namespace bcfs::store
