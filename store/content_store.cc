#include "store/content_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <limits>
#include <optional>
#include <system_error>
#include <thread>
#include <vector>

#include "core/log.h"
#include "core/metrics.h"

namespace bcfs::store {

// ---------------------------------------------------------------------------
// Layout: the only place that spells a path of the store.

std::string Layout::LockFile() const { return dir_ + "/LOCK"; }
std::string Layout::BlobDir(std::string_view algorithm) const {
  return dir_ + "/blobs/" + std::string(algorithm);
}
std::string Layout::Blob(const Digest& digest) const {
  return BlobDir(digest.algorithm()) + "/" + digest.hex();
}
std::string Layout::PartialDir(std::string_view algorithm) const {
  return dir_ + "/partial/" + std::string(algorithm);
}
std::string Layout::PartialData(const Digest& digest) const {
  return PartialDir(digest.algorithm()) + "/" + digest.hex() + ".data";
}
std::string Layout::PartialRanges(const Digest& digest) const {
  return PartialDir(digest.algorithm()) + "/" + digest.hex() + ".ranges";
}

namespace {

// The only algorithm the store can verify (and so the only one it stores).
constexpr std::string_view kAlgorithm = "sha256";
constexpr std::string_view kRangesMagic = "bcfs-ranges";
constexpr std::string_view kRangesVersion = "1";
constexpr size_t kCheckHexLen = 16;
// Read-back unit when hashing parts from the .data file.
constexpr size_t kHashChunk = 1 << 20;

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    reset(o.release());
    return *this;
  }
  ~UniqueFd() { reset(); }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

Status PwriteAll(int fd, const char* p, size_t n, uint64_t off, const std::string& what) {
  while (n > 0) {
    ssize_t w = ::pwrite(fd, p, n, static_cast<off_t>(off));
    if (w < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "write " + what);
    }
    p += w;
    n -= static_cast<size_t>(w);
    off += static_cast<uint64_t>(w);
  }
  return OkStatus();
}

Status PreadAll(int fd, char* p, size_t n, uint64_t off, const std::string& what) {
  while (n > 0) {
    ssize_t r = ::pread(fd, p, n, static_cast<off_t>(off));
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "read " + what);
    }
    if (r == 0) return CorruptError("read " + what + ": unexpected end of file");
    p += r;
    n -= static_cast<size_t>(r);
    off += static_cast<uint64_t>(r);
  }
  return OkStatus();
}

// Appends with one write(2) per call when the kernel allows it; callers
// serialise appends, so a short write is simply continued.
Status AppendAll(int fd, std::string_view s, const std::string& what) {
  while (!s.empty()) {
    ssize_t w = ::write(fd, s.data(), s.size());
    if (w < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "append to " + what);
    }
    s.remove_prefix(static_cast<size_t>(w));
  }
  return OkStatus();
}

Status SyncFd(int fd, bool data_only, const std::string& what) {
  int rc;
  do {
    rc = data_only ? ::fdatasync(fd) : ::fsync(fd);
  } while (rc != 0 && errno == EINTR);
  return rc == 0 ? OkStatus() : ErrnoError(errno, "sync " + what);
}

// Makes renames, creations and unlinks in `dir` durable.
Status FsyncDir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoError(errno, "open directory " + dir);
  return SyncFd(fd.get(), false, "directory " + dir);
}

// OK when the file is gone afterwards; *removed says whether it was there.
Status UnlinkIfExists(const std::string& path, bool* removed = nullptr) {
  if (::unlink(path.c_str()) == 0) {
    if (removed != nullptr) *removed = true;
    return OkStatus();
  }
  if (errno == ENOENT) return OkStatus();
  return ErrnoError(errno, "remove " + path);
}

// The whole file, or kNotFound. Records are small (a line per part).
Result<std::string> ReadWholeFile(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoError(errno, "open " + path);
  std::string out;
  char buf[16384];
  for (;;) {
    ssize_t r = ::read(fd.get(), buf, sizeof(buf));
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "read " + path);
    }
    if (r == 0) break;
    out.append(buf, static_cast<size_t>(r));
  }
  return out;
}

uint64_t PartCount(uint64_t size, uint64_t part_size) { return (size + part_size - 1) / part_size; }

uint64_t PartLen(uint64_t index, uint64_t size, uint64_t part_size) {
  return std::min(part_size, size - index * part_size);
}

// ---------------------------------------------------------------------------
// The .ranges record.
//
// Why an append-only log and not a rewritten file: recording a part costs one
// small O_APPEND write and one fdatasync, where an atomic rewrite costs a
// temp file write + fsync + rename + a directory fsync (a journal commit)
// and rewrites O(parts) bytes each time. The one hazard of appending, a
// line torn by a crash, is caught by the per-line check and cut off on
// resume; lines after a bad one are ignored too (a crash can persist a later
// append before an earlier one), which only costs refetching those parts. A
// fresh fetch always starts a new file, so lines never mix across passes.

std::string CheckOf(std::string_view body) {
  return Digest::Sha256Of(body).hex().substr(0, kCheckHexLen);
}

std::string CheckedLine(const std::string& body) { return body + " " + CheckOf(body) + "\n"; }

std::string HeaderLine(const Digest& digest, uint64_t size, uint64_t part_size) {
  return CheckedLine(std::string(kRangesMagic) + " " + std::string(kRangesVersion) + " " +
                     digest.ToString() + " " + std::to_string(size) + " " +
                     std::to_string(part_size));
}

std::string PartLine(uint64_t index) { return CheckedLine(std::to_string(index)); }

// The body of one "<body> <check>" line when its check holds.
std::optional<std::string_view> CheckedBody(std::string_view line) {
  size_t sp = line.rfind(' ');
  if (sp == std::string_view::npos) return std::nullopt;
  std::string_view body = line.substr(0, sp);
  if (line.substr(sp + 1) != CheckOf(body)) return std::nullopt;
  return body;
}

std::optional<uint64_t> ParseU64(std::string_view s) {
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

struct RangesRecord {
  bool valid = false;  // the header is intact and names this digest
  uint64_t size = 0;
  uint64_t part_size = 0;
  std::vector<uint64_t> parts;  // in record order
  size_t valid_len = 0;         // bytes of intact lines from the start of the file
};

RangesRecord ParseRanges(std::string_view text, const Digest& digest) {
  RangesRecord rec;
  size_t pos = 0;
  auto next_line = [&]() -> std::optional<std::string_view> {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) return std::nullopt;  // torn: no terminator
    std::string_view line = text.substr(pos, nl - pos);
    pos = nl + 1;
    return line;
  };
  auto header = next_line();
  if (!header) return rec;
  auto body = CheckedBody(*header);
  if (!body) return rec;
  // magic version digest size part_size
  std::vector<std::string_view> f;
  for (size_t start = 0;;) {
    size_t sp = body->find(' ', start);
    f.push_back(body->substr(start, sp == std::string_view::npos ? sp : sp - start));
    if (sp == std::string_view::npos) break;
    start = sp + 1;
  }
  if (f.size() != 5 || f[0] != kRangesMagic || f[1] != kRangesVersion ||
      f[2] != digest.ToString()) {
    return rec;
  }
  auto size = ParseU64(f[3]);
  auto part_size = ParseU64(f[4]);
  if (!size || !part_size || *part_size == 0) return rec;
  rec.valid = true;
  rec.size = *size;
  rec.part_size = *part_size;
  rec.valid_len = pos;
  const uint64_t nparts = PartCount(rec.size, rec.part_size);
  while (auto line = next_line()) {
    auto b = CheckedBody(*line);
    if (!b) break;
    auto index = ParseU64(*b);
    if (!index || *index >= nparts) break;
    rec.parts.push_back(*index);
    rec.valid_len = pos;
  }
  return rec;
}

// Per-part presence and the bytes it adds up to.
std::vector<bool> PresentParts(const RangesRecord& rec, uint64_t* bytes) {
  std::vector<bool> present(PartCount(rec.size, rec.part_size), false);
  *bytes = 0;
  for (uint64_t i : rec.parts) {
    if (present[i]) continue;
    present[i] = true;
    *bytes += PartLen(i, rec.size, rec.part_size);
  }
  return present;
}

// The store's metrics (process totals over every store object).
struct StoreMetrics {
  metrics::Counter* hits = metrics::Global().GetCounter(
      "buildcachefs_store_hits_total",
      "Opens of remote blobs served from the local content store without fetching.");
  metrics::Counter* misses = metrics::Global().GetCounter(
      "buildcachefs_store_misses_total",
      "Opens of remote blobs that started a fetch into the content store.");
  metrics::Counter* joins = metrics::Global().GetCounter(
      "buildcachefs_store_fetch_joins_total",
      "Opens of remote blobs that waited for a fetch another open had started.");
  metrics::Counter* fetched = metrics::Global().GetCounter(
      "buildcachefs_store_fetched_bytes_total",
      "Bytes fetched from sources into the content store (parts written and recorded).");
  metrics::Counter* failures = metrics::Global().GetCounter(
      "buildcachefs_store_fetch_failures_total",
      "Fetches into the content store that failed (the open got an error).");
  metrics::Counter* mismatches = metrics::Global().GetCounter(
      "buildcachefs_store_digest_mismatches_total",
      "Fetched blobs whose bytes did not hash to their digest (discarded).");
  metrics::Gauge* in_flight = metrics::Global().GetGauge(
      "buildcachefs_store_fetches_in_flight", "Blobs being fetched into the content store now.");
};

StoreMetrics& Metrics() {
  static StoreMetrics* m = new StoreMetrics();
  return *m;
}

}  // namespace

// ---------------------------------------------------------------------------

// One in-flight fetch of a blob, shared by its leader and its waiters.
struct ContentStore::Flight {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;  // GUARDED_BY(mu)
  Status result;      // GUARDED_BY(mu)
  // Bytes present (recorded) right now, for CachedBytes and progress.
  std::atomic<uint64_t> present{0};
  // Serialises progress reports so they reach the callback in order.
  std::mutex progress_mu;
};

// The open partial files of the blob a leader is filling.
struct ContentStore::Partial {
  UniqueFd data;
  UniqueFd ranges;  // O_APPEND
  std::vector<bool> present;
  uint64_t present_bytes = 0;
};

ContentStore::ContentStore(Layout layout, StoreOptions opts, int lock_fd)
    : layout_(std::move(layout)), opts_(opts), lock_fd_(lock_fd) {}

ContentStore::~ContentStore() { ::close(lock_fd_); }

Result<std::unique_ptr<ContentStore>> ContentStore::Open(const std::string& dir,
                                                         StoreOptions opts) {
  Metrics();  // registered now, so that a scrape shows zeros before the first fetch
  if (opts.part_size == 0 || opts.parallel < 1 || opts.attempts < 1) {
    return InvalidArgumentError("content store " + dir +
                                ": part_size, parallel and attempts must be positive");
  }
  Layout layout(dir);
  for (const std::string& d : {layout.BlobDir(kAlgorithm), layout.PartialDir(kAlgorithm)}) {
    std::error_code ec;
    std::filesystem::create_directories(d, ec);
    if (ec) return ErrnoError(ec.value(), "create content store directory " + d);
  }
  // Make the folders themselves durable, so a promoted blob cannot vanish
  // with a folder that a crash forgot.
  for (const std::string& d : {dir, dir + "/blobs", dir + "/partial"}) {
    BCFS_RETURN_IF_ERROR(FsyncDir(d));
  }
  UniqueFd lock(::open(layout.LockFile().c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (lock.get() < 0) return ErrnoError(errno, "open " + layout.LockFile());
  if (::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return Status(Code::kUnavailable,
                    "content store " + dir + " is in use by another process (" + layout.LockFile() +
                        " is locked)",
                    EWOULDBLOCK);
    }
    return ErrnoError(errno, "lock " + layout.LockFile());
  }
  return std::unique_ptr<ContentStore>(new ContentStore(std::move(layout), opts, lock.release()));
}

void ContentStore::SetProgressCallback(ProgressCallback cb) {
  auto p = cb ? std::make_shared<const ProgressCallback>(std::move(cb)) : nullptr;
  std::lock_guard<std::mutex> lock(mu_);
  progress_ = std::move(p);
}

bool ContentStore::IsComplete(const Digest& digest) {
  if (digest.empty()) return false;
  struct stat st;
  return ::stat(layout_.Blob(digest).c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

uint64_t ContentStore::CachedBytes(const Digest& digest) {
  if (digest.empty()) return 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = flights_.find(digest);
    if (it != flights_.end()) return it->second->present.load();
  }
  struct stat st;
  if (::stat(layout_.Blob(digest).c_str(), &st) == 0) return static_cast<uint64_t>(st.st_size);
  // A record only counts with its data file beside it, as on resume.
  if (::stat(layout_.PartialData(digest).c_str(), &st) != 0) return 0;
  auto text = ReadWholeFile(layout_.PartialRanges(digest));
  if (!text.ok()) return 0;
  RangesRecord rec = ParseRanges(*text, digest);
  if (!rec.valid || static_cast<uint64_t>(st.st_size) != rec.size) return 0;
  uint64_t bytes = 0;
  PresentParts(rec, &bytes);
  return bytes;
}

Status ContentStore::RemoveFiles(const Digest& digest) {
  bool blob = false, partial = false;
  BCFS_RETURN_IF_ERROR(UnlinkIfExists(layout_.Blob(digest), &blob));
  // The record goes before its data, so a record never outlives its bytes.
  BCFS_RETURN_IF_ERROR(UnlinkIfExists(layout_.PartialRanges(digest), &partial));
  BCFS_RETURN_IF_ERROR(UnlinkIfExists(layout_.PartialData(digest), &partial));
  if (blob) BCFS_RETURN_IF_ERROR(FsyncDir(layout_.BlobDir(digest.algorithm())));
  if (partial) BCFS_RETURN_IF_ERROR(FsyncDir(layout_.PartialDir(digest.algorithm())));
  return OkStatus();
}

Status ContentStore::Evict(const Digest& digest) {
  if (digest.empty()) return InvalidArgumentError("evict blob: empty digest");
  std::lock_guard<std::mutex> lock(mu_);
  if (flights_.count(digest) != 0) {
    return Status(Code::kUnavailable, "evict blob " + digest.ToString() + ": it is being fetched",
                  EBUSY);
  }
  return RemoveFiles(digest).WithContext("evict blob " + digest.ToString());
}

Result<int> ContentStore::OpenCompleteLocked(const Digest& digest, uint64_t size) {
  const std::string path = layout_.Blob(digest);
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    if (errno == ENOENT) return -1;
    return ErrnoError(errno, "open " + path);
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoError(errno, "stat " + path);
  if (static_cast<uint64_t>(st.st_size) == size) return fd.release();
  // Only verified bytes are renamed here, so a wrong size means the file was
  // damaged afterwards (or the caller's size is wrong, which the refetch will
  // show): treat it as corrupt.
  LOG_WARNING("blob " << digest.ToString() << " in the store is " << st.st_size
                      << " bytes, expected " << size << ": evicting it and fetching it again");
  fd.reset();
  BCFS_RETURN_IF_ERROR(RemoveFiles(digest).WithContext("evict blob " + digest.ToString()));
  return -1;
}

Result<int> ContentStore::OpenVerified(const Digest& digest, uint64_t size,
                                       const FetchRange& fetch) {
  return OpenVerified(digest, size, fetch, nullptr);
}

Result<int> ContentStore::OpenVerified(const Digest& digest, uint64_t size, const FetchRange& fetch,
                                       const FetchStream& stream) {
  if (digest.empty()) return InvalidArgumentError("open blob: empty digest");
  if (digest.algorithm() != kAlgorithm) {
    return UnsupportedError("blob " + digest.ToString() + ": only sha256 blobs can be verified");
  }
  if (size > static_cast<uint64_t>(std::numeric_limits<off_t>::max())) {
    return InvalidArgumentError("blob " + digest.ToString() + ": size " + std::to_string(size) +
                                " is too large");
  }
  StoreMetrics& m = Metrics();
  for (bool first = true;; first = false) {
    std::shared_ptr<Flight> flight;
    bool leader = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = flights_.find(digest);
      if (it != flights_.end()) {
        flight = it->second;
      } else {
        Result<int> fd = OpenCompleteLocked(digest, size);
        if (fd.ok() && *fd >= 0 && first) m.hits->Inc();
        if (!fd.ok() || *fd >= 0) return fd;
        flight = std::make_shared<Flight>();
        flights_.emplace(digest, flight);
        leader = true;
      }
    }
    (leader ? m.misses : m.joins)->Inc();
    if (!leader) {
      std::unique_lock<std::mutex> lock(flight->mu);
      flight->cv.wait(lock, [&] { return flight->done; });
      if (!flight->result.ok()) return flight->result;
      continue;  // open the blob the leader promoted (checking our size)
    }

    m.in_flight->Add(1);
    Status st = FetchAndPromote(digest, size, fetch, stream, *flight);
    m.in_flight->Add(-1);
    if (!st.ok()) m.failures->Inc();
    Result<int> out = st.ok() ? Result<int>(-1) : Result<int>(st);
    {
      std::lock_guard<std::mutex> lock(mu_);
      flights_.erase(digest);
      if (st.ok()) {
        out = OpenCompleteLocked(digest, size);
        if (out.ok() && *out < 0) {
          out = InternalError("blob " + digest.ToString() + " vanished right after it was stored");
        }
      }
    }
    {
      std::lock_guard<std::mutex> lock(flight->mu);
      flight->done = true;
      flight->result = out.status();
    }
    flight->cv.notify_all();
    return out;
  }
}

Status ContentStore::FetchAndPromote(const Digest& digest, uint64_t size, const FetchRange& fetch,
                                     const FetchStream& stream, Flight& flight) {
  const std::string what = "fetch blob " + digest.ToString();
  const auto start = std::chrono::steady_clock::now();
  for (int attempt = 1;; ++attempt) {
    // The first pass resumes what earlier runs recorded; a pass after a
    // mismatch starts from nothing.
    BCFS_ASSIGN_OR_RETURN(std::unique_ptr<Partial> partial,
                          OpenPartial(digest, size, /*resume=*/attempt == 1));
    flight.present = partial->present_bytes;
    LOG_INFO(what << " (" << size << " bytes, " << partial->present_bytes << " present), attempt "
                  << attempt << " of " << opts_.attempts);
    Digest got;
    BCFS_RETURN_IF_ERROR(
        FillAndHash(digest, size, fetch, stream, flight, *partial, &got).WithContext(what));
    if (got == digest) {
      BCFS_RETURN_IF_ERROR(Promote(digest, *partial).WithContext(what));
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::steady_clock::now() - start)
                          .count();
      LOG_INFO("stored blob " << digest.ToString() << " (" << size << " bytes, verified) in " << ms
                              << " ms");
      return OkStatus();
    }
    partial.reset();
    Metrics().mismatches->Inc();
    LOG_WARNING("blob " << digest.ToString() << " fetched from the source hashes to "
                        << got.ToString() << " (attempt " << attempt << " of " << opts_.attempts
                        << "): discarding its data");
    BCFS_RETURN_IF_ERROR(DiscardPartial(digest).WithContext(what));
    flight.present = 0;
    if (attempt >= opts_.attempts) {
      return CorruptError("blob " + digest.ToString() +
                          " fetched from the source does not match its digest (its bytes hash to " +
                          got.ToString() + ")");
    }
  }
}

Status ContentStore::DiscardPartial(const Digest& digest) {
  BCFS_RETURN_IF_ERROR(UnlinkIfExists(layout_.PartialRanges(digest)));
  BCFS_RETURN_IF_ERROR(UnlinkIfExists(layout_.PartialData(digest)));
  return FsyncDir(layout_.PartialDir(digest.algorithm()));
}

Result<std::unique_ptr<ContentStore::Partial>> ContentStore::OpenPartial(const Digest& digest,
                                                                         uint64_t size,
                                                                         bool resume) {
  const std::string data_path = layout_.PartialData(digest);
  const std::string ranges_path = layout_.PartialRanges(digest);
  auto p = std::make_unique<Partial>();
  const uint64_t nparts = PartCount(size, opts_.part_size);

  if (resume) {
    // Anything unusable is discarded below and fetched again; the reason is
    // logged when there was something.
    std::string why;
    UniqueFd data(::open(data_path.c_str(), O_RDWR | O_CLOEXEC));
    struct stat st;
    if (data.get() < 0) {
      if (errno != ENOENT) why = "cannot open its data";
    } else if (::fstat(data.get(), &st) != 0 || static_cast<uint64_t>(st.st_size) != size) {
      why = "its data file has another size";
    } else if (auto text = ReadWholeFile(ranges_path); !text.ok()) {
      why = "its record is missing";
    } else if (RangesRecord rec = ParseRanges(*text, digest); !rec.valid) {
      why = "its record is damaged";
    } else if (rec.size != size || rec.part_size != opts_.part_size) {
      why = "it was recorded with another size or part size";
    } else {
      UniqueFd ranges(::open(ranges_path.c_str(), O_RDWR | O_APPEND | O_CLOEXEC));
      if (ranges.get() < 0) return ErrnoError(errno, "open " + ranges_path);
      if (text->size() > rec.valid_len) {
        // A torn tail: cut it off so new lines follow intact ones.
        LOG_WARNING("partial blob " << digest.ToString() << ": ignoring "
                                    << text->size() - rec.valid_len
                                    << " bytes of a torn record tail");
        if (::ftruncate(ranges.get(), static_cast<off_t>(rec.valid_len)) != 0) {
          return ErrnoError(errno, "truncate " + ranges_path);
        }
        BCFS_RETURN_IF_ERROR(SyncFd(ranges.get(), true, ranges_path));
      }
      p->data = std::move(data);
      p->ranges = std::move(ranges);
      p->present = PresentParts(rec, &p->present_bytes);
      return p;
    }
    if (!why.empty()) {
      LOG_WARNING("partial blob " << digest.ToString() << ": " << why << "; fetching it anew");
    }
  }

  // Fresh start: old record first (it must never describe new data), then
  // the data; the new record gets its header only once the data file has its
  // full size, and the directory is synced before any part is recorded.
  BCFS_RETURN_IF_ERROR(DiscardPartial(digest));
  p->data.reset(::open(data_path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (p->data.get() < 0) return ErrnoError(errno, "create " + data_path);
  if (::ftruncate(p->data.get(), static_cast<off_t>(size)) != 0) {
    return ErrnoError(errno, "size " + data_path);
  }
  BCFS_RETURN_IF_ERROR(SyncFd(p->data.get(), false, data_path));
  p->ranges.reset(
      ::open(ranges_path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644));
  if (p->ranges.get() < 0) return ErrnoError(errno, "create " + ranges_path);
  BCFS_RETURN_IF_ERROR(
      AppendAll(p->ranges.get(), HeaderLine(digest, size, opts_.part_size), ranges_path));
  BCFS_RETURN_IF_ERROR(SyncFd(p->ranges.get(), true, ranges_path));
  BCFS_RETURN_IF_ERROR(FsyncDir(layout_.PartialDir(digest.algorithm())));
  p->present.assign(nparts, false);
  p->present_bytes = 0;
  return p;
}

void ContentStore::ReportProgress(const Digest& digest, uint64_t size, Flight& flight) {
  std::lock_guard<std::mutex> order(flight.progress_mu);
  const uint64_t present = flight.present.load();
  std::shared_ptr<const ProgressCallback> cb;
  {
    std::lock_guard<std::mutex> lock(mu_);
    cb = progress_;
  }
  LOG_DEBUG("blob " << digest.ToString() << ": " << present << " of " << size << " bytes present");
  if (cb) (*cb)(digest, present, size);
}

Status ContentStore::FillAndHash(const Digest& digest, uint64_t size, const FetchRange& fetch,
                                 const FetchStream& stream, Flight& flight, Partial& partial,
                                 Digest* got) {
  const uint64_t part_size = opts_.part_size;
  const uint64_t nparts = PartCount(size, part_size);
  const std::string data_path = layout_.PartialData(digest);
  const std::string ranges_path = layout_.PartialRanges(digest);

  // State shared by the workers and the hasher (this thread).
  std::mutex mu;
  std::condition_variable cv;
  std::vector<bool> present = partial.present;  // GUARDED_BY(mu)
  uint64_t next_claim = 0;                      // GUARDED_BY(mu)
  Status error;          // GUARDED_BY(mu); the first failure, which stops new claims
  std::mutex record_mu;  // serialises appends to .ranges

  // One worker: claims the lowest missing part, fetches it into its own
  // buffer (so at most parallel * part_size bytes are buffered), writes and
  // syncs it, then records it and syncs the record. Parts already claimed
  // finish even after another part failed: their records save a refetch.
  auto work = [&] {
    std::vector<char> buf;
    for (;;) {
      uint64_t i;
      {
        std::lock_guard<std::mutex> lock(mu);
        while (next_claim < nparts && present[next_claim]) ++next_claim;
        if (!error.ok() || next_claim >= nparts) return;
        i = next_claim++;
      }
      const uint64_t off = i * part_size;
      const uint64_t len = PartLen(i, size, part_size);
      buf.resize(len);
      Status st;
      try {
        st = fetch(off, std::span<char>(buf.data(), len));
      } catch (...) {
        st = InternalError("the fetch threw an exception");
      }
      if (st.ok()) st = PwriteAll(partial.data.get(), buf.data(), len, off, data_path);
      if (st.ok()) st = SyncFd(partial.data.get(), true, data_path);
      if (st.ok()) {
        std::lock_guard<std::mutex> lock(record_mu);
        st = AppendAll(partial.ranges.get(), PartLine(i), ranges_path);
      }
      if (st.ok()) st = SyncFd(partial.ranges.get(), true, ranges_path);
      {
        std::lock_guard<std::mutex> lock(mu);
        if (st.ok()) {
          present[i] = true;
          Metrics().fetched->Inc(len);
        } else if (error.ok()) {
          error =
              st.WithContext("part " + std::to_string(i) + " (bytes " + std::to_string(off) + "-" +
                             std::to_string(off + len) + " of " + std::to_string(size) + ")");
        }
      }
      cv.notify_all();
      if (st.ok()) {
        flight.present += len;
        ReportProgress(digest, size, flight);
      }
    }
  };

  // Streaming: one thread receives each run of missing parts in one request
  // and writes the bytes where they belong as they arrive; a second syncs
  // the data and records the parts completed meanwhile (one fdatasync for
  // all of them), so the transfer never waits for the disk.
  std::vector<uint64_t> written;  // GUARDED_BY(mu): parts whose bytes are all written
  bool streaming_done = false;    // GUARDED_BY(mu)
  auto syncer = [&] {
    for (;;) {
      std::vector<uint64_t> batch;
      bool last = false;
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return !written.empty() || streaming_done; });
        batch.swap(written);
        last = streaming_done;
      }
      Status st;
      if (!batch.empty()) {
        st = SyncFd(partial.data.get(), true, data_path);
        std::string lines;
        for (uint64_t i : batch) lines += PartLine(i);
        if (st.ok()) st = AppendAll(partial.ranges.get(), lines, ranges_path);
        if (st.ok()) st = SyncFd(partial.ranges.get(), true, ranges_path);
      }
      {
        std::lock_guard<std::mutex> lock(mu);
        if (st.ok()) {
          for (uint64_t i : batch) {
            present[i] = true;
            Metrics().fetched->Inc(PartLen(i, size, part_size));
          }
        } else if (error.ok()) {
          error = st;
        }
      }
      cv.notify_all();
      if (st.ok() && !batch.empty()) {
        for (uint64_t i : batch) flight.present += PartLen(i, size, part_size);
        ReportProgress(digest, size, flight);
      }
      if (last || !st.ok()) return;
    }
  };
  auto streamer = [&] {
    Status st;
    uint64_t i = 0;
    int stalled = 0;  // failed requests in a row that brought no new part
    while (st.ok()) {
      {
        std::lock_guard<std::mutex> lock(mu);
        if (!error.ok()) break;
      }
      while (i < nparts && partial.present[i]) ++i;
      if (i >= nparts) break;
      uint64_t j = i;
      while (j < nparts && !partial.present[j]) ++j;
      // Parts [i, j): one request; bytes go to their place as they come.
      const uint64_t first = i * part_size;
      const uint64_t end = (j - 1) * part_size + PartLen(j - 1, size, part_size);
      uint64_t pos = first;
      Status werr;
      auto sink = [&](std::string_view bytes) {
        if (bytes.size() > end - pos) bytes = bytes.substr(0, static_cast<size_t>(end - pos));
        werr = PwriteAll(partial.data.get(), bytes.data(), bytes.size(), pos, data_path);
        if (!werr.ok()) return false;
        const uint64_t before = pos / part_size;
        pos += bytes.size();
        const uint64_t complete = pos == size ? nparts : pos / part_size;
        if (complete > before) {
          {
            std::lock_guard<std::mutex> lock(mu);
            for (uint64_t k = before; k < complete; ++k) written.push_back(k);
            if (!error.ok()) return false;
          }
          cv.notify_all();
        }
        return true;
      };
      Status got;
      try {
        got = stream(first, end - first, sink);
      } catch (...) {
        got = InternalError("the fetch threw an exception");
      }
      if (!werr.ok()) got = werr;
      const uint64_t reached = pos == size ? nparts : pos / part_size;
      if (got.ok() && pos < end) {
        got = CorruptError("the source ended the transfer at byte " + std::to_string(pos) +
                           ", before byte " + std::to_string(end));
      }
      if (!got.ok()) {
        // Resume from the first part not yet written, with a new request,
        // while requests keep bringing parts.
        stalled = reached > i ? 0 : stalled + 1;
        if (stalled >= 2) {
          st = got.WithContext("bytes " + std::to_string(pos) + "-" + std::to_string(end) + " of " +
                               std::to_string(size));
          break;
        }
        LOG_INFO("blob " << digest.ToString() << ": " << got.message()
                         << "; asking again from byte " << reached * part_size);
      }
      i = std::max(i, reached);
      if (got.ok()) i = j;
    }
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!st.ok() && error.ok()) error = st;
      streaming_done = true;
    }
    cv.notify_all();
  };

  const uint64_t missing =
      static_cast<uint64_t>(std::count(partial.present.begin(), partial.present.end(), false));
  const uint64_t nworkers = std::min<uint64_t>(static_cast<uint64_t>(opts_.parallel), missing);
  std::vector<std::thread> workers;
  try {
    if (stream && missing > 0) {
      workers.emplace_back(syncer);
      try {
        workers.emplace_back(streamer);
      } catch (...) {
        {
          std::lock_guard<std::mutex> lock(mu);
          streaming_done = true;
        }
        cv.notify_all();
        throw;
      }
    } else {
      for (uint64_t w = 0; w < nworkers; ++w) workers.emplace_back(work);
    }
  } catch (const std::system_error& e) {
    std::lock_guard<std::mutex> lock(mu);
    if (error.ok()) error = InternalError(std::string("start a fetch thread: ") + e.what());
  }

  // Hash in order while parts arrive: wait for part i, feed it, go on. The
  // bytes are read back from the .data file (the page cache), so the hasher
  // needs one kHashChunk buffer however far ahead the workers are.
  Sha256 hasher;
  std::vector<char> buf(static_cast<size_t>(std::min<uint64_t>(kHashChunk, part_size)));
  for (uint64_t i = 0; i < nparts; ++i) {
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return present[i] || !error.ok(); });
      if (!error.ok()) break;
    }
    const uint64_t end = i * part_size + PartLen(i, size, part_size);
    Status st;
    for (uint64_t off = i * part_size; off < end && st.ok();) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), end - off));
      st = PreadAll(partial.data.get(), buf.data(), n, off, data_path);
      if (st.ok()) hasher.Update(buf.data(), n);
      off += n;
    }
    if (!st.ok()) {
      std::lock_guard<std::mutex> lock(mu);
      if (error.ok()) error = st;
      break;
    }
  }
  for (auto& t : workers) t.join();
  // Workers are joined: no lock needed any more, but keep the discipline.
  std::lock_guard<std::mutex> lock(mu);
  if (!error.ok()) return error;
  *got = hasher.Finish();
  return OkStatus();
}

Status ContentStore::Promote(const Digest& digest, Partial& partial) {
  const std::string data_path = layout_.PartialData(digest);
  const std::string blob_path = layout_.Blob(digest);
  if (::fchmod(partial.data.get(), 0444) != 0) return ErrnoError(errno, "chmod " + data_path);
  BCFS_RETURN_IF_ERROR(SyncFd(partial.data.get(), false, data_path));
  if (::rename(data_path.c_str(), blob_path.c_str()) != 0) {
    return ErrnoError(errno, "rename " + data_path + " to " + blob_path);
  }
  BCFS_RETURN_IF_ERROR(FsyncDir(layout_.BlobDir(digest.algorithm())));
  // A crash before this leaves a stray record without data: harmless, since
  // the blob is complete, and removed by Evict.
  partial.ranges.reset();
  BCFS_RETURN_IF_ERROR(UnlinkIfExists(layout_.PartialRanges(digest)));
  return FsyncDir(layout_.PartialDir(digest.algorithm()));
}

}  // namespace bcfs::store
