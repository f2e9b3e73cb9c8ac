#include "backends/backend_local.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

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

Result<BlobStat> LocalBackend::StatBlob(const Digest& digest) {
  const std::string path = BlobPath(digest);
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return ErrnoError(errno, "stat " + path);
  if (!S_ISREG(st.st_mode)) return CorruptError(path + " is not a regular file");
  BlobStat out;
  out.size = static_cast<uint64_t>(st.st_size);
  out.mtime = ToNs(st.st_mtim);
  out.ctime = ToNs(st.st_ctim);
  out.dev = st.st_dev;
  out.ino = st.st_ino;
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

}  // namespace bcfs::backends
