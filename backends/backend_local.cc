#include "backends/backend_local.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <ctime>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>
#include <unordered_set>

#include "backends/backend_registry.h"
#include "backends/naming.h"
#include "core/log.h"

namespace bcfs::backends {
namespace {

// Closes an fd on scope exit.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

TimeNs ToNs(const struct timespec& ts) {
  return static_cast<TimeNs>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

Result<std::string> ReadAll(int fd, const std::string& path, uint64_t max_size) {
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "read " + path);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > max_size) {
      return CorruptError(path + " is larger than " + std::to_string(max_size) + " bytes");
    }
  }
  return out;
}

// --- index.json surgery for RemoveRefs -------------------------------------
//
// A tiny scanner that finds where each JSON value starts and ends, so that
// prune can cut entries out of index.json and leave every other byte alone
// (nlohmann would re-escape strings and renumber floats).

size_t SkipSpace(std::string_view t, size_t p) {
  while (p < t.size() && (t[p] == ' ' || t[p] == '\t' || t[p] == '\n' || t[p] == '\r')) ++p;
  return p;
}

// The offset just past the value that starts at p; npos when malformed.
size_t SkipValue(std::string_view t, size_t p, int depth) {
  if (p >= t.size() || depth > 512) return std::string_view::npos;
  const char c = t[p];
  if (c == '"') {
    for (size_t i = p + 1; i < t.size(); ++i) {
      if (t[i] == '\\') {
        ++i;
      } else if (t[i] == '"') {
        return i + 1;
      }
    }
    return std::string_view::npos;
  }
  if (c == '{' || c == '[') {
    const char close = c == '{' ? '}' : ']';
    p = SkipSpace(t, p + 1);
    if (p < t.size() && t[p] == close) return p + 1;
    for (;;) {
      if (c == '{') {
        p = SkipValue(t, p, depth + 1);  // the key
        if (p == std::string_view::npos) return p;
        p = SkipSpace(t, p);
        if (p >= t.size() || t[p] != ':') return std::string_view::npos;
        p = SkipSpace(t, p + 1);
      }
      p = SkipValue(t, p, depth + 1);
      if (p == std::string_view::npos) return p;
      p = SkipSpace(t, p);
      if (p >= t.size()) return std::string_view::npos;
      if (t[p] == close) return p + 1;
      if (t[p] != ',') return std::string_view::npos;
      p = SkipSpace(t, p + 1);
    }
  }
  size_t q = p;
  while (q < t.size() && t[q] != ',' && t[q] != '}' && t[q] != ']' && t[q] != ' ' && t[q] != '\t' &&
         t[q] != '\n' && t[q] != '\r') {
    ++q;
  }
  return q == p ? std::string_view::npos : q;
}

// The text of index.json without the entries of its "manifests" array whose
// flag in `drop` is set; the kept entries, their separators and everything
// around them are copied byte for byte.
Result<std::string> CutEntries(std::string_view text, const std::vector<bool>& drop,
                               const std::string& doc) {
  auto bad = [&](const std::string& why) {
    return CorruptError(doc + ": " + why + "; not rewriting it");
  };
  size_t p = SkipSpace(text, 0);
  if (p >= text.size() || text[p] != '{') return bad("not a JSON object");
  size_t open = std::string_view::npos, close = std::string_view::npos;
  std::vector<std::pair<size_t, size_t>> spans;
  p = SkipSpace(text, p + 1);
  while (p < text.size() && text[p] != '}') {
    const size_t key_end = SkipValue(text, p, 1);
    if (key_end == std::string_view::npos || text[p] != '"') return bad("unreadable key");
    const std::string_view key = text.substr(p, key_end - p);
    p = SkipSpace(text, key_end);
    if (p >= text.size() || text[p] != ':') return bad("unreadable member");
    p = SkipSpace(text, p + 1);
    const size_t value_end = SkipValue(text, p, 1);
    if (value_end == std::string_view::npos) return bad("unreadable value");
    if (key == "\"manifests\"") {
      if (open != std::string_view::npos) return bad("\"manifests\" appears twice");
      if (text[p] != '[') return bad("\"manifests\" is not an array");
      open = p;
      close = value_end - 1;
      size_t q = SkipSpace(text, p + 1);
      while (q < close) {
        const size_t end = SkipValue(text, q, 2);
        if (end == std::string_view::npos) return bad("unreadable entry");
        spans.push_back({q, end});
        q = SkipSpace(text, end);
        if (q < close && text[q] == ',') q = SkipSpace(text, q + 1);
      }
    }
    p = SkipSpace(text, value_end);
    if (p < text.size() && text[p] == ',') p = SkipSpace(text, p + 1);
  }
  if (open == std::string_view::npos) return bad("no \"manifests\" array");
  if (spans.size() != drop.size()) return bad("entries counted differently by two readers");
  if (spans.empty()) return std::string(text);
  // The space after '[' and before ']' stays, and each kept entry but the
  // first is preceded by the separator that followed the kept entry before it.
  std::string out(text.substr(0, spans.front().first));
  size_t prev = spans.size();
  for (size_t i = 0; i < spans.size(); ++i) {
    if (drop[i]) continue;
    if (prev != spans.size()) {
      out.append(text.substr(spans[prev].second, spans[prev + 1].first - spans[prev].second));
    }
    out.append(text.substr(spans[i].first, spans[i].second - spans[i].first));
    prev = i;
  }
  out.append(text.substr(spans.back().second));
  return out;
}

// An exclusive flock of <dir>/index.json.lock, as BuildKit's ociindex Put
// takes it. BuildKit's writers try once without blocking and its readers
// unlink the file after unlocking, so: retry for a bounded time, and after
// locking make sure the path still names the locked file.
class IndexLock {
 public:
  ~IndexLock() {
    if (fd_ < 0) return;
    // Mirror ociindex: the lock file goes when the writer is done, but only
    // when this writer created it.
    if (created_) ::unlink(path_.c_str());
    ::flock(fd_, LOCK_UN);
    ::close(fd_);
  }
  static Result<std::unique_ptr<IndexLock>> Take(const std::string& dir) {
    auto lock = std::unique_ptr<IndexLock>(new IndexLock(dir + "/index.json.lock"));
    const char* path = lock->path_.c_str();
    for (int attempt = 0; attempt < 100; ++attempt) {
      bool created = true;
      int fd = ::open(path, O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
      if (fd < 0 && errno == EEXIST) {
        created = false;
        fd = ::open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        if (fd < 0 && errno == ENOENT) continue;  // unlinked between the two opens
      }
      if (fd < 0) return ErrnoError(errno, "open " + lock->path_);
      struct stat held, now;
      if (::fstat(fd, &held) != 0 || !S_ISREG(held.st_mode)) {
        ::close(fd);
        return CorruptError(lock->path_ + " is not a regular file");
      }
      if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        const int err = errno;
        ::close(fd);
        if (err != EWOULDBLOCK) return ErrnoError(err, "flock " + lock->path_);
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        continue;
      }
      if (::stat(path, &now) != 0 || now.st_ino != held.st_ino || now.st_dev != held.st_dev) {
        ::close(fd);  // the previous holder removed the file it had locked
        continue;
      }
      lock->fd_ = fd;
      lock->created_ = created;
      return lock;
    }
    return Status(Code::kUnavailable,
                  lock->path_ + " stays locked by another writer (an export in progress?)");
  }

 private:
  explicit IndexLock(std::string path) : path_(std::move(path)) {}
  std::string path_;
  int fd_ = -1;
  bool created_ = false;
};

// Replaces path with text atomically: a temp file beside it (the old file's
// owner and mode), fsync, rename, fsync of the directory.
Status ReplaceFile(const std::string& dir, const std::string& path, const std::string& text,
                   const struct stat& old) {
  const std::string tmp = path + ".buildcachefs-prune." + std::to_string(::getpid());
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
               old.st_mode & 07777));
  if (fd.get() < 0) return ErrnoError(errno, "create " + tmp);
  auto fail = [&](int err, const std::string& what) {
    ::unlink(tmp.c_str());
    return ErrnoError(err, what + " " + tmp);
  };
  // Root pruning a user's cache must leave index.json writable by that user.
  if (::fchown(fd.get(), old.st_uid, old.st_gid) != 0 && errno != EPERM) {
    return fail(errno, "chown");
  }
  if (::fchmod(fd.get(), old.st_mode & 07777) != 0) return fail(errno, "chmod");
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd.get(), text.data() + done, text.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(errno, "write");
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd.get()) != 0) return fail(errno, "fsync");
  if (::rename(tmp.c_str(), path.c_str()) != 0) return fail(errno, "rename to " + path + ":");
  Fd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (d.get() >= 0) ::fsync(d.get());
  return OkStatus();
}

}  // namespace

Result<std::unique_ptr<Backend>> OpenBackend(const SourceSpec& spec) {
  if (spec.type == SourceType::kLocal) {
    BCFS_ASSIGN_OR_RETURN(auto b, LocalBackend::Open(spec));
    return std::unique_ptr<Backend>(std::move(b));
  }
  if (spec.type == SourceType::kRegistry) {
    BCFS_ASSIGN_OR_RETURN(auto b, RegistryBackend::Open(spec));
    return std::unique_ptr<Backend>(std::move(b));
  }
  if (spec.type == SourceType::kS3) return OpenS3Backend(spec);
  if (spec.type == SourceType::kAzblob) return OpenAzblobBackend(spec);
  if (spec.type == SourceType::kGha) return OpenGhaBackend(spec);
  return UnsupportedError("source " + spec.Redacted() +
                          ": type=" + std::string(SourceTypeName(spec.type)) +
                          " sources are not supported by this build yet");
}

Result<std::unique_ptr<LocalBackend>> LocalBackend::Open(const SourceSpec& spec) {
  std::string dir = spec.Get("src");
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) {
    return ErrnoError(errno, "source " + spec.Redacted() + ": cache directory " + dir);
  }
  if (!S_ISDIR(st.st_mode)) {
    return InvalidArgumentError("source " + spec.Redacted() + ": " + dir + " is not a directory");
  }
  return std::unique_ptr<LocalBackend>(new LocalBackend(spec, dir));
}

std::string LocalBackend::Describe() const { return spec_.Redacted(); }

std::string LocalBackend::BlobPath(const Digest& digest) const {
  return dir_ + "/blobs/" + digest.algorithm() + "/" + digest.hex();
}

Result<std::string> LocalBackend::ReadIndexJson() const {
  const std::string path = dir_ + "/index.json";
  // BuildKit's ociindex writes index.json under an exclusive flock of
  // index.json.lock and readers take a shared one. Opening read-only never
  // creates the lock file, so a source without one is read unlocked. The wait
  // is bounded: a stuck exporter must not wedge a mount or `ls`, and O_NONBLOCK
  // keeps a FIFO planted under either name from blocking the open.
  Fd lock(::open((dir_ + "/index.json.lock").c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  struct stat st;
  if (lock.get() >= 0 && ::fstat(lock.get(), &st) == 0 && S_ISREG(st.st_mode)) {
    bool locked = false;
    for (int i = 0; i < 50 && !locked; ++i) {
      locked = ::flock(lock.get(), LOCK_SH | LOCK_NB) == 0;
      if (!locked && errno != EWOULDBLOCK) break;  // EPERM/EROFS...: read unlocked, as BuildKit
      if (!locked) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (!locked)
      LOG_WARNING(dir_ << "/index.json.lock is held by a writer; reading index.json anyway");
  }
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (fd.get() < 0) return ErrnoError(errno, "open " + path);
  if (::fstat(fd.get(), &st) != 0) return ErrnoError(errno, "stat " + path);
  if (!S_ISREG(st.st_mode)) return CorruptError(path + " is not a regular file");
  return ReadAll(fd.get(), path, 64u << 20);
}

Result<std::vector<formats::IndexEntry>> LocalBackend::ReadIndex() const {
  const std::string doc = dir_ + "/index.json";
  Result<std::vector<formats::IndexEntry>> entries = std::vector<formats::IndexEntry>();
  for (int attempt = 0; attempt < 2; ++attempt) {
    BCFS_ASSIGN_OR_RETURN(std::string text, ReadIndexJson());
    entries = formats::ParseIndexEntries(text, doc);
    if (entries.ok()) break;
    if (attempt == 0) {
      // A writer that does not lock may be halfway through: read it once more.
      LOG_DEBUG(entries.status().message() << "; reading it once more");
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  return entries;
}

Result<std::vector<RefEntry>> LocalBackend::ListRefs() {
  const std::string doc = dir_ + "/index.json";
  std::vector<RefEntry> refs;
  if (spec_.Has("digest")) {
    // digest= names the top-level blob and skips index.json (FORMATS.md §2.5).
    BCFS_ASSIGN_OR_RETURN(Digest d, Digest::Parse(spec_.Get("digest")));
    BCFS_ASSIGN_OR_RETURN(BlobStat st, StatBlob(d));
    RefEntry e;
    e.name = DigestRefName(d);
    e.descriptor.digest = d;
    e.descriptor.size = static_cast<int64_t>(st.size);
    refs.push_back(std::move(e));
    return refs;
  }
  BCFS_ASSIGN_OR_RETURN(std::vector<formats::IndexEntry> entries, ReadIndex());

  const std::string tag = spec_.Get("tag");
  if (!tag.empty()) {
    // As ociindex.Get: the first io.containerd.image.name match, else the
    // first ref name match.
    const formats::IndexEntry* chosen = nullptr;
    for (const auto& e : entries) {
      if (e.descriptor && e.descriptor->Annotation(formats::annotation::kImageName) == tag) {
        chosen = &e;
        break;
      }
    }
    for (size_t i = 0; chosen == nullptr && i < entries.size(); ++i) {
      if (entries[i].ref_name == tag) chosen = &entries[i];
    }
    if (chosen == nullptr) return NotFoundError(doc + ": no ref named \"" + tag + "\" (tag=)");
    RefEntry e;
    e.name = tag;
    if (chosen->descriptor) e.descriptor = *chosen->descriptor;
    e.raw_descriptor = chosen->raw;
    e.error = chosen->error;
    return std::vector<RefEntry>{e};
  }

  std::set<std::string> used;
  for (size_t i = 0; i < entries.size(); ++i) {
    const formats::IndexEntry& ie = entries[i];
    RefEntry e;
    e.raw_descriptor = ie.raw;
    e.error = ie.error;
    if (ie.descriptor) e.descriptor = *ie.descriptor;
    // A name that is missing or taken falls back to @<hex12> (then #<n>), so
    // every entry gets a folder of its own.
    e.name = ie.ref_name;
    if (e.name.empty() || used.count(e.name)) {
      e.name = ie.descriptor ? DigestRefName(ie.descriptor->digest) : "@entry" + std::to_string(i);
    }
    for (int n = 2; used.count(e.name); ++n) {
      e.name =
          (ie.descriptor ? DigestRefName(ie.descriptor->digest) : "@entry" + std::to_string(i)) +
          "#" + std::to_string(n);
    }
    used.insert(e.name);
    refs.push_back(std::move(e));
  }
  return refs;
}

Result<std::vector<Digest>> LocalBackend::ListRoots() {
  std::vector<Digest> roots;
  if (spec_.Has("digest")) {
    if (auto d = Digest::Parse(spec_.Get("digest")); d.ok()) roots.push_back(*d);
  }
  // Every entry of index.json, whatever tag=/digest= narrowed the refs to.
  auto entries = ReadIndex();
  if (!entries.ok()) {
    if (spec_.Has("digest") && entries.status().code() == Code::kNotFound) return roots;
    return entries.status();
  }
  for (const auto& e : *entries) {
    if (e.digest.empty()) {
      return CorruptError(dir_ + "/index.json: an entry without a readable digest (" + e.error +
                          "), so what it reaches is unknown");
    }
    roots.push_back(e.digest);
  }
  return roots;
}

namespace {

BlobStat ToBlobStat(const struct stat& st) {
  BlobStat out;
  out.size = static_cast<uint64_t>(st.st_size);
  out.mtime = ToNs(st.st_mtim);
  out.ctime = ToNs(st.st_ctim);
  out.dev = st.st_dev;
  out.ino = st.st_ino;
  return out;
}

}  // namespace

Result<BlobStat> LocalBackend::StatBlob(const Digest& digest) {
  const std::string path = BlobPath(digest);
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return ErrnoError(errno, "stat " + path);
  if (!S_ISREG(st.st_mode)) return CorruptError(path + " is not a regular file");
  return ToBlobStat(st);
}

std::vector<std::optional<BlobStat>> LocalBackend::StatBlobs(const std::vector<Digest>& digests) {
  std::vector<std::optional<BlobStat>> out;
  out.reserve(digests.size());
  // One fd per blobs/<alg>/ for this call only: a folder replaced meanwhile
  // is seen by the next call, as with StatBlob.
  std::map<std::string, std::unique_ptr<Fd>> dirs;
  for (const Digest& d : digests) {
    auto& dir = dirs[d.algorithm()];
    if (dir == nullptr) {
      const std::string path = dir_ + "/blobs/" + d.algorithm();
      dir = std::make_unique<Fd>(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    }
    struct stat st;
    if (dir->get() < 0) {
      auto one = StatBlob(d);
      out.push_back(one.ok() ? std::optional<BlobStat>(*one) : std::nullopt);
    } else if (::fstatat(dir->get(), d.hex().c_str(), &st, 0) == 0 && S_ISREG(st.st_mode)) {
      out.push_back(ToBlobStat(st));
    } else {
      out.push_back(std::nullopt);
    }
  }
  return out;
}

Result<size_t> LocalBackend::ReadBlob(const Digest& digest, uint64_t offset, std::span<char> out) {
  const std::string path = BlobPath(digest);
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoError(errno, "open " + path);
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n =
        ::pread(fd.get(), out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "read " + path);
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return done;
}

Result<std::string> LocalBackend::ReadDocument(const Digest& digest, uint64_t max_size) {
  const std::string path = BlobPath(digest);
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoError(errno, "open " + path);
  BCFS_ASSIGN_OR_RETURN(std::string text, ReadAll(fd.get(), path, max_size));
  Digest got = digest.algorithm() == "sha256" ? Digest::Sha256Of(text) : Digest();
  if (got != digest) {
    return CorruptError(path + " does not match its digest (its bytes hash to " +
                        (got.empty() ? std::string("an unsupported algorithm") : got.ToString()) +
                        ")");
  }
  return text;
}

TimeNs LocalBackend::RefsModified() {
  struct stat st;
  if (::stat((dir_ + "/index.json").c_str(), &st) == 0 || ::stat(dir_.c_str(), &st) == 0) {
    return ToNs(st.st_mtim);
  }
  return 0;
}

std::string LocalBackend::Fingerprint() {
  // The clock is read before the stats: a change after it has a time at least
  // as new, which the window then catches.
  struct timespec now_ts;
  ::clock_gettime(CLOCK_REALTIME, &now_ts);
  const TimeNs now = ToNs(now_ts);
  std::string out = "local v1\n" + dir_ + "\n" + Describe() + "\n";
  TimeNs newest = 0;
  auto add = [&](const char* label, const std::string& path, bool with_size) {
    struct stat st;
    out += label;
    if (::stat(path.c_str(), &st) != 0) {
      out += " absent " + std::to_string(errno) + "\n";
      return;
    }
    out += " dev " + std::to_string(st.st_dev) + " ino " + std::to_string(st.st_ino);
    if (with_size) out += " size " + std::to_string(st.st_size);
    out += " mtime " + std::to_string(ToNs(st.st_mtim)) + " ctime " +
           std::to_string(ToNs(st.st_ctim)) + "\n";
    newest = std::max({newest, ToNs(st.st_mtim), ToNs(st.st_ctim)});
  };
  add("index.json", dir_ + "/index.json", true);
  add("blobs", dir_ + "/blobs", false);
  // The folders ListBlobs reads.
  add("blobs/sha256", dir_ + "/blobs/sha256", false);
  add("blobs/sha512", dir_ + "/blobs/sha512", false);
  if (now - newest < kRacyWindow) return "";
  return out;
}

Result<int> LocalBackend::OpenBlobFd(const Digest& digest) {
  const std::string path = BlobPath(digest);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, "open " + path);
  return fd;
}

Result<std::vector<Digest>> LocalBackend::ListBlobs() {
  std::vector<Digest> out;
  for (const char* alg : {"sha256", "sha512"}) {
    const std::string path = dir_ + "/blobs/" + alg;
    DIR* d = ::opendir(path.c_str());
    if (d == nullptr) {
      if (errno == ENOENT) continue;
      return ErrnoError(errno, "list " + path);
    }
    while (struct dirent* e = ::readdir(d)) {
      if (e->d_name[0] == '.') continue;
      auto digest = Digest::Parse(std::string(alg) + ":" + e->d_name);
      if (digest.ok()) out.push_back(*digest);
    }
    ::closedir(d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

Result<std::vector<Digest>> LocalBackend::RemoveRefs(
    const std::vector<std::string>& raw_descriptors) {
  const std::string path = dir_ + "/index.json";
  BCFS_ASSIGN_OR_RETURN(auto lock, IndexLock::Take(dir_));
  // Read again under the lock: an export may have changed the list since the
  // plan was made, and only entries that are still exactly as planned go.
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW));
  if (fd.get() < 0) return ErrnoError(errno, "open " + path);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoError(errno, "stat " + path);
  if (!S_ISREG(st.st_mode)) return CorruptError(path + " is not a regular file");
  BCFS_ASSIGN_OR_RETURN(std::string text, ReadAll(fd.get(), path, 64u << 20));
  BCFS_ASSIGN_OR_RETURN(std::vector<formats::IndexEntry> entries,
                        formats::ParseIndexEntries(text, path));
  const std::unordered_set<std::string> gone(raw_descriptors.begin(), raw_descriptors.end());
  std::vector<bool> drop(entries.size(), false);
  std::vector<Digest> roots;
  bool any = false;
  for (size_t i = 0; i < entries.size(); ++i) {
    drop[i] = !entries[i].raw.empty() && gone.count(entries[i].raw) > 0;
    any = any || drop[i];
    if (!drop[i] && !entries[i].digest.empty()) roots.push_back(entries[i].digest);
  }
  if (!any) return roots;
  BCFS_ASSIGN_OR_RETURN(std::string cut, CutEntries(text, drop, path));
  // Whatever the cut produced must read back as the entries kept.
  BCFS_ASSIGN_OR_RETURN(std::vector<formats::IndexEntry> check,
                        formats::ParseIndexEntries(cut, path + " (rewritten)"));
  size_t kept = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    if (drop[i]) continue;
    if (kept >= check.size() || check[kept].raw != entries[i].raw) {
      return InternalError(path + ": the rewritten list lost an entry; not written");
    }
    ++kept;
  }
  if (kept != check.size()) return InternalError(path + ": the rewritten list grew; not written");
  BCFS_RETURN_IF_ERROR(ReplaceFile(dir_, path, cut, st));
  return roots;
}

Result<bool> LocalBackend::DeleteBlob(const Digest& digest, TimeNs not_after) {
  const std::string path = BlobPath(digest);
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return false;
    return ErrnoError(errno, "stat " + path);
  }
  if (!S_ISREG(st.st_mode)) return CorruptError(path + " is not a regular file; not deleted");
  if (ToNs(st.st_mtim) > not_after) return false;
  if (::unlink(path.c_str()) != 0) {
    if (errno == ENOENT) return false;
    return ErrnoError(errno, "delete " + path);
  }
  return true;
}

namespace {

// Adds up the regular files under path (no symlinks followed) and finds the
// newest mtime there, the folder's own included.
Status ScanTree(const std::string& path, uint64_t* bytes, TimeNs* newest, int depth) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return ErrnoError(errno, "stat " + path);
  *newest = std::max(*newest, ToNs(st.st_mtim));
  if (S_ISREG(st.st_mode)) *bytes += static_cast<uint64_t>(st.st_size);
  if (!S_ISDIR(st.st_mode) || depth > 8) return OkStatus();
  DIR* d = ::opendir(path.c_str());
  if (d == nullptr) return ErrnoError(errno, "list " + path);
  Status out;
  while (struct dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    out = ScanTree(path + "/" + name, bytes, newest, depth + 1);
    if (!out.ok()) break;
  }
  ::closedir(d);
  return out;
}

Status RemoveTree(const std::string& path, int depth) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    return errno == ENOENT ? OkStatus() : ErrnoError(errno, "stat " + path);
  }
  if (S_ISDIR(st.st_mode) && depth <= 8) {
    DIR* d = ::opendir(path.c_str());
    if (d == nullptr) return ErrnoError(errno, "list " + path);
    std::vector<std::string> names;
    while (struct dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name != "." && name != "..") names.push_back(name);
    }
    ::closedir(d);
    for (const auto& n : names) BCFS_RETURN_IF_ERROR(RemoveTree(path + "/" + n, depth + 1));
    if (::rmdir(path.c_str()) != 0 && errno != ENOENT) return ErrnoError(errno, "remove " + path);
    return OkStatus();
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return ErrnoError(errno, "delete " + path);
  return OkStatus();
}

}  // namespace

Result<std::vector<IngestEntry>> LocalBackend::ListIngest() {
  std::vector<IngestEntry> out;
  const std::string root = dir_ + "/ingest";
  DIR* d = ::opendir(root.c_str());
  if (d == nullptr) {
    if (errno == ENOENT) return out;
    return ErrnoError(errno, "list " + root);
  }
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  for (const auto& name : names) {
    IngestEntry e;
    e.name = name;
    Status st = ScanTree(root + "/" + name, &e.bytes, &e.mtime, 0);
    if (!st.ok()) {
      if (st.code() == Code::kNotFound) continue;  // finished meanwhile
      return st;
    }
    out.push_back(std::move(e));
  }
  return out;
}

Result<bool> LocalBackend::DeleteIngest(const std::string& name, TimeNs not_after) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos) {
    return InvalidArgumentError("ingest entry \"" + name + "\" is not a folder name");
  }
  const std::string path = dir_ + "/ingest/" + name;
  uint64_t bytes = 0;
  TimeNs newest = 0;
  Status st = ScanTree(path, &bytes, &newest, 0);
  if (!st.ok()) return st.code() == Code::kNotFound ? Result<bool>(false) : Result<bool>(st);
  if (newest > not_after) return false;
  BCFS_RETURN_IF_ERROR(RemoveTree(path, 0));
  return true;
}

}  // namespace bcfs::backends
