#define FUSE_USE_VERSION 34

#include "fs/fuse_fs.h"

#include <fcntl.h>
#include <fuse_log.h>
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <string_view>
#include <system_error>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <utility>

#include "core/log.h"
#include "core/metrics.h"
#include "fs/errno_map.h"

namespace bcfs::fs {
namespace {

// ---------------------------------------------------------------------------
// Mount options

constexpr const char* kForcedOptions[] = {
    "ro", "nosuid", "nodev", "default_permissions", "fsname=buildcachefs", "subtype=buildcachefs",
};
// Passed on to libfuse as given (the forced ones only once).
constexpr std::string_view kAcceptedOptions[] = {
    "allow_other", "allow_root", "ro",    "nosuid",  "nodev",
    "exec",        "noexec",     "atime", "noatime", "default_permissions",
};
// Accepted but not passed on: atime policies are moot on a read-only mount and
// libfuse 3.14 refuses these names.
constexpr std::string_view kDroppedOptions[] = {
    "relatime", "norelatime", "strictatime", "nostrictatime", "diratime", "nodiratime",
};
// What mount.fuse3 adds for root (dev, suid) or a user may ask for: contrary to
// the forced ro,nosuid,nodev, so ignored with a warning.
constexpr std::string_view kContraryOptions[] = {"suid", "dev", "rw"};
// fstab options meant for mount(8), mount.fuse3 and systemd.
constexpr std::string_view kFstabOptions[] = {
    "", "_netdev", "nofail", "noauto", "auto", "user", "nouser", "users", "defaults",
};

template <typename List>
bool Contains(const List& list, std::string_view s) {
  for (std::string_view item : list) {
    if (item == s) return true;
  }
  return false;
}

// exec/noexec and atime/noatime are flags where the last one given wins.
std::string_view Opposite(std::string_view opt) {
  if (opt == "exec") return "noexec";
  if (opt == "noexec") return "exec";
  if (opt == "atime") return "noatime";
  if (opt == "noatime") return "atime";
  return {};
}

// EffectiveOptions without the warning, so ServeMount can apply the options a
// caller already validated without warning twice.
Result<std::vector<std::string>> FilterOptions(const std::vector<std::string>& given,
                                               std::vector<std::string>* contrary) {
  std::vector<std::string> out(std::begin(kForcedOptions), std::end(kForcedOptions));
  for (const std::string& opt : given) {
    if (Contains(kAcceptedOptions, opt)) {
      if (Contains(kForcedOptions, opt)) continue;
      const std::string_view opposite = Opposite(opt);
      std::erase_if(out, [&](const std::string& o) { return o == opt || o == opposite; });
      out.push_back(opt);
    } else if (Contains(kContraryOptions, opt)) {
      if (contrary != nullptr && !Contains(*contrary, opt)) contrary->push_back(opt);
    } else if (Contains(kDroppedOptions, opt) || Contains(kFstabOptions, opt) ||
               opt.rfind("x-", 0) == 0) {
      continue;
    } else {
      return InvalidArgumentError("unsupported mount option \"" + opt + "\"");
    }
  }
  if (Contains(out, "allow_other") && Contains(out, "allow_root")) {
    return InvalidArgumentError("mount options allow_other and allow_root exclude each other");
  }
  return out;
}

std::string JoinOptions(const std::vector<std::string>& options) {
  std::string joined;
  for (const std::string& o : options) joined += (joined.empty() ? "" : ",") + o;
  return joined;
}

// ---------------------------------------------------------------------------
// Error accounting: one counter per errno, bumped by the reply helper.

// Above every Linux errno (EHWPOISON is 133); that last slot also collects
// anything out of range, so no reply goes uncounted.
constexpr int kMaxCountedErrno = 134;
std::array<std::atomic<uint64_t>, kMaxCountedErrno + 1> g_error_counts{};

int ErrnoSlot(int err) { return err > 0 && err < kMaxCountedErrno ? err : kMaxCountedErrno; }

// The errno of the reply the current request got (0: success); set by
// ReplyErrno, read by the metrics wrapper around each handler (MakeOps).
thread_local int t_reply_errno = 0;

void CountError(int err) {
  g_error_counts[ErrnoSlot(err)].fetch_add(1, std::memory_order_relaxed);
  t_reply_errno = err;
}

// Metrics of one operation: requests by result ("ok" or the errno's name) and
// latency. The result children are registered on first use and kept, so a
// request costs two atomic adds after the first of its kind.
class OpMetrics {
 public:
  explicit OpMetrics(const char* op)
      : op_(op),
        ok_(Requests("ok")),
        latency_(metrics::Global().GetHistogram(
            "buildcachefs_fuse_request_duration_seconds",
            "Time from the start of a FUSE request's handler to its answer, by operation.",
            metrics::LatencyBuckets(), {{"op", op}})) {}

  void Record(int err, std::chrono::steady_clock::time_point start) {
    metrics::Counter* c = ok_;
    if (err != 0) {
      std::atomic<metrics::Counter*>& slot = errors_[ErrnoSlot(err)];
      c = slot.load(std::memory_order_acquire);
      if (c == nullptr) {
        const char* name = err < kMaxCountedErrno ? ::strerrorname_np(err) : nullptr;
        c = Requests(name != nullptr ? name : "other");
        slot.store(c, std::memory_order_release);
      }
    }
    c->Inc();
    latency_->ObserveSince(start);
  }

 private:
  metrics::Counter* Requests(const std::string& result) {
    return metrics::Global().GetCounter(
        "buildcachefs_fuse_requests_total",
        "FUSE requests answered, by operation and result (ok, or the errno's name).",
        {{"op", op_}, {"result", result}});
  }

  const char* const op_;
  metrics::Counter* const ok_;
  metrics::Histogram* const latency_;
  std::array<std::atomic<metrics::Counter*>, kMaxCountedErrno + 1> errors_{};
};

// Wraps a handler: times it and counts its reply. Every handler answers
// before it returns, so the reply's errno is known here.
template <const char* kOp, auto Handler>
struct Instrumented;
template <const char* kOp, typename... Args, void (*Handler)(fuse_req_t, Args...)>
struct Instrumented<kOp, Handler> {
  static void Call(fuse_req_t req, Args... args) {
    static OpMetrics m(kOp);
    const auto start = std::chrono::steady_clock::now();
    t_reply_errno = 0;
    Handler(req, args...);
    m.Record(t_reply_errno, start);
  }
};

// ---------------------------------------------------------------------------
// libfuse's own messages go to our log; while mounting, its errors are also
// kept so the Status can say why the mount failed.

std::mutex g_fuse_log_mu;
std::string* g_fuse_log_capture = nullptr;  // GUARDED_BY(g_fuse_log_mu)

void FuseLog(enum fuse_log_level level, const char* fmt, va_list ap) {
  char buf[1024];
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  std::string_view msg(buf);
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.remove_suffix(1);
  if (msg.empty()) return;
  {
    std::lock_guard<std::mutex> lock(g_fuse_log_mu);
    if (g_fuse_log_capture != nullptr && level <= FUSE_LOG_ERR) {
      if (!g_fuse_log_capture->empty()) *g_fuse_log_capture += "; ";
      *g_fuse_log_capture += msg;
      LOG_DEBUG("libfuse: " << msg);
      return;
    }
  }
  if (level <= FUSE_LOG_WARNING) {
    LOG_WARNING("libfuse: " << msg);
  } else if (level <= FUSE_LOG_INFO) {
    LOG_INFO("libfuse: " << msg);
  } else {
    LOG_DEBUG("libfuse: " << msg);
  }
}

// Collects libfuse's error messages for as long as it lives.
class FuseLogCapture {
 public:
  FuseLogCapture() {
    std::lock_guard<std::mutex> lock(g_fuse_log_mu);
    g_fuse_log_capture = &text_;
  }
  ~FuseLogCapture() {
    std::lock_guard<std::mutex> lock(g_fuse_log_mu);
    g_fuse_log_capture = nullptr;
  }
  FuseLogCapture(const FuseLogCapture&) = delete;
  FuseLogCapture& operator=(const FuseLogCapture&) = delete;

  std::string Take() {
    std::lock_guard<std::mutex> lock(g_fuse_log_mu);
    return std::move(text_);
  }

 private:
  std::string text_;  // GUARDED_BY(g_fuse_log_mu)
};

// ---------------------------------------------------------------------------
// Per-mount state, reached from each request through fuse_req_userdata().

// An open file. The kernel may send several reads on one handle at once, and
// tree.h does not promise that OpenFile::Read is reentrant, so Read is
// serialized; the bytes themselves are spliced after the lock is released.
struct FileHandle {
  std::unique_ptr<tree::OpenFile> file;
  std::mutex mu;
};

// An open directory: the listing is taken once at opendir so that the offsets
// handed to the kernel stay meaningful across readdir calls.
struct DirHandle {
  tree::Attr self;
  tree::Attr parent;
  std::vector<tree::DirEntry> entries;
};

class MountState {
 public:
  explicit MountState(tree::Tree& tree) : tree_(tree) {}

  tree::Tree& tree() { return tree_; }

  // Directories have exactly one parent; it is learnt from lookups and
  // directory listings (the kernel reaches every directory through one of
  // them) and only used for the inode number of "..".
  void RememberParent(uint64_t dir, uint64_t parent) {
    std::lock_guard<std::mutex> lock(mu_);
    parents_.emplace(dir, parent);
  }
  uint64_t ParentOf(uint64_t dir) {
    if (dir == tree::Tree::kRootIno) return dir;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = parents_.find(dir);
    return it == parents_.end() ? dir : it->second;
  }

  // Open handles are owned here, not by the kernel: when the mount ends with
  // files still open (a lazy unmount, a signal) no release ever comes, and
  // the leftovers must go before the tree their OpenFiles point into.
  template <typename Handle>
  Handle* Adopt(std::unique_ptr<Handle> h) {
    Handle* raw = h.get();
    std::lock_guard<std::mutex> lock(mu_);
    Handles<Handle>().emplace(raw, std::move(h));
    return raw;
  }
  template <typename Handle>
  void Release(Handle* h) {
    std::unique_ptr<Handle> owned;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = Handles<Handle>().find(h);
      if (it == Handles<Handle>().end()) return;
      owned = std::move(it->second);
      Handles<Handle>().erase(it);
    }
    // Destroyed outside the lock: closing a blob may do I/O.
  }

 private:
  template <typename Handle>
  std::unordered_map<Handle*, std::unique_ptr<Handle>>& Handles() {
    if constexpr (std::is_same_v<Handle, FileHandle>) {
      return files_;
    } else {
      return dirs_;
    }
  }

  tree::Tree& tree_;
  std::mutex mu_;
  std::unordered_map<uint64_t, uint64_t> parents_;                      // GUARDED_BY(mu_)
  std::unordered_map<FileHandle*, std::unique_ptr<FileHandle>> files_;  // GUARDED_BY(mu_)
  std::unordered_map<DirHandle*, std::unique_ptr<DirHandle>> dirs_;     // GUARDED_BY(mu_)
};

MountState& State(fuse_req_t req) { return *static_cast<MountState*>(fuse_req_userdata(req)); }

// ---------------------------------------------------------------------------
// Replies. Every request gets exactly one reply: each handler returns right
// after the fuse_reply_* call that answers it, and every error goes through
// ReplyErrno so it is logged and counted in one place.

void ReplyErrno(fuse_req_t req, int err, std::string_view op, uint64_t ino,
                std::string_view why = {}) {
  CountError(err);
  if (err == EIO) {
    LOG_WARNING("fuse " << op << " inode " << ino << ": " << std::strerror(err)
                        << (why.empty() ? "" : ": ") << why);
  } else {
    LOG_DEBUG("fuse " << op << " inode " << ino << ": " << std::strerror(err)
                      << (why.empty() ? "" : ": ") << why);
  }
  fuse_reply_err(req, err);
}

void ReplyError(fuse_req_t req, const Status& status, std::string_view op, uint64_t ino) {
  ReplyErrno(req, ToErrno(status), op, ino, status.message());
}

double TimeoutFor(tree::CachePolicy policy) {
  switch (policy) {
    case tree::CachePolicy::kImmutable:
      return 3600.0;
    case tree::CachePolicy::kShort:
      return 1.0;
    case tree::CachePolicy::kDirect:
      return 0.0;
  }
  return 0.0;
}

// How long the kernel may remember that a name does not exist. Short: a
// refresh may add blobs and refs under a name that was missing.
constexpr double kNegativeTimeout = 1.0;

mode_t TypeBits(tree::Kind kind) {
  switch (kind) {
    case tree::Kind::kDir:
      return S_IFDIR;
    case tree::Kind::kFile:
      return S_IFREG;
    case tree::Kind::kSymlink:
      return S_IFLNK;
    case tree::Kind::kCharDev:
      return S_IFCHR;
    case tree::Kind::kBlockDev:
      return S_IFBLK;
    case tree::Kind::kFifo:
      return S_IFIFO;
  }
  return S_IFREG;
}

struct stat ToStat(const tree::Attr& a) {
  struct stat st {};
  st.st_ino = a.ino;
  st.st_mode = TypeBits(a.kind) | (a.mode & 07777);
  st.st_nlink = a.nlink;
  st.st_size = static_cast<off_t>(a.size);
  st.st_uid = a.uid;
  st.st_gid = a.gid;
  st.st_rdev = static_cast<dev_t>(a.rdev);
  st.st_blksize = 4096;
  st.st_blocks = static_cast<blkcnt_t>((a.size + 511) / 512);
  // Floor division keeps tv_nsec in [0, 1e9) for times before 1970.
  constexpr int64_t kNs = 1'000'000'000;
  int64_t sec = a.mtime / kNs, nsec = a.mtime % kNs;
  if (nsec < 0) {
    nsec += kNs;
    --sec;
  }
  st.st_mtim.tv_sec = sec;
  st.st_mtim.tv_nsec = nsec;
  st.st_atim = st.st_mtim;
  st.st_ctim = st.st_mtim;
  return st;
}

fuse_entry_param ToEntry(const tree::Attr& a) {
  fuse_entry_param e{};
  e.ino = a.ino;
  e.generation = 0;  // inode numbers are never reused while mounted
  e.attr = ToStat(a);
  e.attr_timeout = TimeoutFor(a.cache);
  e.entry_timeout = TimeoutFor(a.cache);
  return e;
}

// ---------------------------------------------------------------------------
// Operations

void OpInit(void* /*userdata*/, fuse_conn_info* conn) {
  // Blob reads hand the kernel a file descriptor; splicing spares a copy
  // through our memory.
  if (conn->capable & FUSE_CAP_SPLICE_WRITE) conn->want |= FUSE_CAP_SPLICE_WRITE;
  if (conn->capable & FUSE_CAP_SPLICE_MOVE) conn->want |= FUSE_CAP_SPLICE_MOVE;
  // Nothing is ever written.
  conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
  // Blobs are read front to back in big pieces (dd, tar, BuildKit's
  // importer): a large readahead window means fewer, bigger requests.
  conn->max_readahead = 4u << 20;
  conn->max_background = 64;
}

void OpLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  MountState& s = State(req);
  Result<tree::Attr> attr = s.tree().Lookup(parent, name);
  if (!attr.ok()) {
    if (attr.status().code() == Code::kNotFound) {
      // A negative entry (ino 0) lets the kernel cache the miss; it takes no
      // lookup count.
      fuse_entry_param e{};
      e.ino = 0;
      e.entry_timeout = kNegativeTimeout;
      t_reply_errno = ENOENT;  // counted as what it is
      fuse_reply_entry(req, &e);
      return;
    }
    ReplyError(req, attr.status(), "lookup", parent);
    return;
  }
  if (attr->kind == tree::Kind::kDir) s.RememberParent(attr->ino, parent);
  // The kernel now holds one lookup count on attr->ino; forget will return
  // it, and since nodes live as long as the tree there is nothing to track.
  fuse_entry_param e = ToEntry(*attr);
  fuse_reply_entry(req, &e);
}

void OpForget(fuse_req_t req, fuse_ino_t /*ino*/, uint64_t /*nlookup*/) { fuse_reply_none(req); }

void OpForgetMulti(fuse_req_t req, size_t /*count*/, fuse_forget_data* /*forgets*/) {
  fuse_reply_none(req);
}

void OpGetattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* /*fi*/) {
  Result<tree::Attr> attr = State(req).tree().GetAttr(ino);
  if (!attr.ok()) return ReplyError(req, attr.status(), "getattr", ino);
  struct stat st = ToStat(*attr);
  fuse_reply_attr(req, &st, TimeoutFor(attr->cache));
}

void OpReadlink(fuse_req_t req, fuse_ino_t ino) {
  Result<std::string> target = State(req).tree().ReadLink(ino);
  if (!target.ok()) return ReplyError(req, target.status(), "readlink", ino);
  fuse_reply_readlink(req, target->c_str());
}

void OpOpendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  MountState& s = State(req);
  Result<tree::Attr> self = s.tree().GetAttr(ino);
  if (!self.ok()) return ReplyError(req, self.status(), "opendir", ino);
  if (self->kind != tree::Kind::kDir) return ReplyErrno(req, ENOTDIR, "opendir", ino);
  Result<std::vector<tree::DirEntry>> entries = s.tree().ReadDir(ino);
  if (!entries.ok()) return ReplyError(req, entries.status(), "opendir", ino);
  tree::Attr parent = *self;
  if (uint64_t p = s.ParentOf(ino); p != ino) {
    if (Result<tree::Attr> pa = s.tree().GetAttr(p); pa.ok()) parent = *pa;
  }
  for (const tree::DirEntry& e : *entries) {
    if (e.attr.kind == tree::Kind::kDir) s.RememberParent(e.attr.ino, ino);
  }
  DirHandle* h =
      s.Adopt(std::make_unique<DirHandle>(DirHandle{*self, parent, std::move(*entries)}));
  fi->fh = reinterpret_cast<uint64_t>(h);
  // Content-addressed folders (layers, snapshots) never change once listed:
  // the kernel may keep their listing. Asked again after ReadDir, because an
  // unindexed layer folder is not cacheable until it has been indexed.
  if (Result<tree::Attr> now = s.tree().GetAttr(ino);
      now.ok() && now->cache == tree::CachePolicy::kImmutable) {
    fi->cache_readdir = 1;
    fi->keep_cache = 1;
  }
  // When the reply cannot be delivered (the opendir was interrupted) no
  // releasedir will follow, so the handle is ours to free.
  if (fuse_reply_open(req, fi) != 0) s.Release(h);
}

// Offsets: 0 starts the listing; entry i (".", "..", then the children) is
// followed by offset i + 1, which is what the kernel sends back to continue.
void DoReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi,
               bool plus) {
  auto* h = reinterpret_cast<DirHandle*>(fi->fh);
  std::unique_ptr<char[]> buf(new (std::nothrow) char[size]);
  if (!buf) return ReplyErrno(req, ENOMEM, plus ? "readdirplus" : "readdir", ino);
  size_t used = 0;
  const size_t total = h->entries.size() + 2;
  for (size_t i = off < 0 ? 0 : static_cast<size_t>(off); i < total; ++i) {
    const char* name;
    const tree::Attr* attr;
    if (i == 0) {
      name = ".";
      attr = &h->self;
    } else if (i == 1) {
      name = "..";
      attr = &h->parent;
    } else {
      name = h->entries[i - 2].name.c_str();
      attr = &h->entries[i - 2].attr;
    }
    size_t n;
    if (plus) {
      // Each entry that fits counts as a lookup of that inode, except "."
      // and ".." which the kernel skips; forget is a no-op, so there is no
      // count to take back for the entry that did not fit.
      fuse_entry_param e = ToEntry(*attr);
      n = fuse_add_direntry_plus(req, buf.get() + used, size - used, name, &e,
                                 static_cast<off_t>(i + 1));
    } else {
      struct stat st = ToStat(*attr);
      n = fuse_add_direntry(req, buf.get() + used, size - used, name, &st,
                            static_cast<off_t>(i + 1));
    }
    if (n > size - used) break;
    used += n;
  }
  fuse_reply_buf(req, buf.get(), used);
}

void OpReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  DoReaddir(req, ino, size, off, fi, /*plus=*/false);
}

void OpReaddirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  DoReaddir(req, ino, size, off, fi, /*plus=*/true);
}

void OpReleasedir(fuse_req_t req, fuse_ino_t /*ino*/, fuse_file_info* fi) {
  State(req).Release(reinterpret_cast<DirHandle*>(fi->fh));
  fuse_reply_err(req, 0);
}

void OpOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC) != 0) {
    return ReplyErrno(req, EROFS, "open", ino);
  }
  MountState& s = State(req);
  Result<tree::Attr> attr = s.tree().GetAttr(ino);
  if (!attr.ok()) return ReplyError(req, attr.status(), "open", ino);
  if (attr->kind == tree::Kind::kDir) return ReplyErrno(req, EISDIR, "open", ino);
  Result<std::unique_ptr<tree::OpenFile>> file = s.tree().Open(ino);
  if (!file.ok()) return ReplyError(req, file.status(), "open", ino);
  auto owned = std::make_unique<FileHandle>();
  owned->file = std::move(*file);
  FileHandle* h = s.Adopt(std::move(owned));
  fi->fh = reinterpret_cast<uint64_t>(h);
  fi->keep_cache = attr->cache == tree::CachePolicy::kImmutable ? 1 : 0;
  fi->direct_io = attr->cache == tree::CachePolicy::kDirect ? 1 : 0;
  // As in opendir: an undelivered reply means no release will come.
  if (fuse_reply_open(req, fi) != 0) s.Release(h);
}

void OpRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  auto* h = reinterpret_cast<FileHandle*>(fi->fh);
  Result<tree::ReadSpan> span = [&]() -> Result<tree::ReadSpan> {
    std::lock_guard<std::mutex> lock(h->mu);
    return h->file->Read(off < 0 ? 0 : static_cast<uint64_t>(off), size);
  }();
  if (!span.ok()) return ReplyError(req, span.status(), "read", ino);
  fuse_bufvec bv{};
  bv.count = 1;
  if (span->fd >= 0) {
    // libfuse splices from the descriptor at fd_offset (falling back to a
    // read into memory where splicing is unavailable) and, should reading
    // the descriptor fail, answers with that error itself.
    bv.buf[0].size = span->length;
    bv.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
    bv.buf[0].fd = span->fd;
    bv.buf[0].pos = static_cast<off_t>(span->fd_offset);
  } else {
    bv.buf[0].size = span->bytes.size();
    bv.buf[0].mem = span->bytes.data();
  }
  fuse_reply_data(req, &bv, FUSE_BUF_SPLICE_MOVE);
}

void OpRelease(fuse_req_t req, fuse_ino_t /*ino*/, fuse_file_info* fi) {
  State(req).Release(reinterpret_cast<FileHandle*>(fi->fh));
  fuse_reply_err(req, 0);
}

// Shared by getxattr and listxattr: size 0 asks for the length only.
void ReplyXattrValue(fuse_req_t req, const std::string& value, size_t size, std::string_view op,
                     uint64_t ino) {
  if (size == 0) {
    fuse_reply_xattr(req, value.size());
  } else if (size < value.size()) {
    ReplyErrno(req, ERANGE, op, ino);
  } else {
    fuse_reply_buf(req, value.data(), value.size());
  }
}

void OpGetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  Result<std::string> value = State(req).tree().GetXattr(ino, name);
  if (!value.ok()) {
    if (value.status().code() == Code::kNotFound) {
      return ReplyErrno(req, ENODATA, "getxattr", ino, name);
    }
    return ReplyError(req, value.status(), "getxattr", ino);
  }
  ReplyXattrValue(req, *value, size, "getxattr", ino);
}

void OpListxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  Result<std::vector<std::string>> names = State(req).tree().ListXattrs(ino);
  if (!names.ok()) return ReplyError(req, names.status(), "listxattr", ino);
  std::string list;
  for (const std::string& n : *names) {
    list += n;
    list += '\0';
  }
  ReplyXattrValue(req, list, size, "listxattr", ino);
}

void OpStatfs(fuse_req_t req, fuse_ino_t /*ino*/) {
  struct statvfs st {};
  st.f_bsize = 4096;
  st.f_frsize = 4096;
  st.f_files = State(req).tree().NodeCount();
  st.f_namemax = 255;
  fuse_reply_statfs(req, &st);
}

// Every write operation: the mount is read-only whatever the kernel's flags.
void OpSetattr(fuse_req_t req, fuse_ino_t ino, struct stat*, int, fuse_file_info*) {
  ReplyErrno(req, EROFS, "setattr", ino);
}
void OpMknod(fuse_req_t req, fuse_ino_t parent, const char*, mode_t, dev_t) {
  ReplyErrno(req, EROFS, "mknod", parent);
}
void OpMkdir(fuse_req_t req, fuse_ino_t parent, const char*, mode_t) {
  ReplyErrno(req, EROFS, "mkdir", parent);
}
void OpUnlink(fuse_req_t req, fuse_ino_t parent, const char*) {
  ReplyErrno(req, EROFS, "unlink", parent);
}
void OpRmdir(fuse_req_t req, fuse_ino_t parent, const char*) {
  ReplyErrno(req, EROFS, "rmdir", parent);
}
void OpSymlink(fuse_req_t req, const char*, fuse_ino_t parent, const char*) {
  ReplyErrno(req, EROFS, "symlink", parent);
}
void OpRename(fuse_req_t req, fuse_ino_t parent, const char*, fuse_ino_t, const char*,
              unsigned int) {
  ReplyErrno(req, EROFS, "rename", parent);
}
void OpLink(fuse_req_t req, fuse_ino_t ino, fuse_ino_t, const char*) {
  ReplyErrno(req, EROFS, "link", ino);
}
void OpWrite(fuse_req_t req, fuse_ino_t ino, const char*, size_t, off_t, fuse_file_info*) {
  ReplyErrno(req, EROFS, "write", ino);
}
void OpCreate(fuse_req_t req, fuse_ino_t parent, const char*, mode_t, fuse_file_info*) {
  ReplyErrno(req, EROFS, "create", parent);
}
void OpSetxattr(fuse_req_t req, fuse_ino_t ino, const char*, const char*, size_t, int) {
  ReplyErrno(req, EROFS, "setxattr", ino);
}
void OpRemovexattr(fuse_req_t req, fuse_ino_t ino, const char*) {
  ReplyErrno(req, EROFS, "removexattr", ino);
}
void OpFallocate(fuse_req_t req, fuse_ino_t ino, int, off_t, off_t, fuse_file_info*) {
  ReplyErrno(req, EROFS, "fallocate", ino);
}
void OpCopyFileRange(fuse_req_t req, fuse_ino_t, off_t, fuse_file_info*, fuse_ino_t ino_out, off_t,
                     fuse_file_info*, size_t, int) {
  ReplyErrno(req, EROFS, "copy_file_range", ino_out);
}

// Operation names, as metrics labels (template arguments need linkage).
constexpr char kOpLookup[] = "lookup";
constexpr char kOpForget[] = "forget";
constexpr char kOpForgetMulti[] = "forget_multi";
constexpr char kOpGetattr[] = "getattr";
constexpr char kOpReadlink[] = "readlink";
constexpr char kOpOpendir[] = "opendir";
constexpr char kOpReaddir[] = "readdir";
constexpr char kOpReaddirplus[] = "readdirplus";
constexpr char kOpReleasedir[] = "releasedir";
constexpr char kOpOpen[] = "open";
constexpr char kOpRead[] = "read";
constexpr char kOpRelease[] = "release";
constexpr char kOpGetxattr[] = "getxattr";
constexpr char kOpListxattr[] = "listxattr";
constexpr char kOpStatfs[] = "statfs";
constexpr char kOpSetattr[] = "setattr";
constexpr char kOpMknod[] = "mknod";
constexpr char kOpMkdir[] = "mkdir";
constexpr char kOpUnlink[] = "unlink";
constexpr char kOpRmdir[] = "rmdir";
constexpr char kOpSymlink[] = "symlink";
constexpr char kOpRename[] = "rename";
constexpr char kOpLink[] = "link";
constexpr char kOpWrite[] = "write";
constexpr char kOpCreate[] = "create";
constexpr char kOpSetxattr[] = "setxattr";
constexpr char kOpRemovexattr[] = "removexattr";
constexpr char kOpFallocate[] = "fallocate";
constexpr char kOpCopyFileRange[] = "copy_file_range";

fuse_lowlevel_ops MakeOps() {
  fuse_lowlevel_ops ops{};
  ops.init = OpInit;
  ops.lookup = Instrumented<kOpLookup, OpLookup>::Call;
  ops.forget = Instrumented<kOpForget, OpForget>::Call;
  ops.forget_multi = Instrumented<kOpForgetMulti, OpForgetMulti>::Call;
  ops.getattr = Instrumented<kOpGetattr, OpGetattr>::Call;
  ops.readlink = Instrumented<kOpReadlink, OpReadlink>::Call;
  ops.opendir = Instrumented<kOpOpendir, OpOpendir>::Call;
  ops.readdir = Instrumented<kOpReaddir, OpReaddir>::Call;
  ops.readdirplus = Instrumented<kOpReaddirplus, OpReaddirplus>::Call;
  ops.releasedir = Instrumented<kOpReleasedir, OpReleasedir>::Call;
  ops.open = Instrumented<kOpOpen, OpOpen>::Call;
  ops.read = Instrumented<kOpRead, OpRead>::Call;
  ops.release = Instrumented<kOpRelease, OpRelease>::Call;
  ops.getxattr = Instrumented<kOpGetxattr, OpGetxattr>::Call;
  ops.listxattr = Instrumented<kOpListxattr, OpListxattr>::Call;
  ops.statfs = Instrumented<kOpStatfs, OpStatfs>::Call;
  ops.setattr = Instrumented<kOpSetattr, OpSetattr>::Call;
  ops.mknod = Instrumented<kOpMknod, OpMknod>::Call;
  ops.mkdir = Instrumented<kOpMkdir, OpMkdir>::Call;
  ops.unlink = Instrumented<kOpUnlink, OpUnlink>::Call;
  ops.rmdir = Instrumented<kOpRmdir, OpRmdir>::Call;
  ops.symlink = Instrumented<kOpSymlink, OpSymlink>::Call;
  ops.rename = Instrumented<kOpRename, OpRename>::Call;
  ops.link = Instrumented<kOpLink, OpLink>::Call;
  ops.write = Instrumented<kOpWrite, OpWrite>::Call;
  ops.create = Instrumented<kOpCreate, OpCreate>::Call;
  ops.setxattr = Instrumented<kOpSetxattr, OpSetxattr>::Call;
  ops.removexattr = Instrumented<kOpRemovexattr, OpRemovexattr>::Call;
  ops.fallocate = Instrumented<kOpFallocate, OpFallocate>::Call;
  ops.copy_file_range = Instrumented<kOpCopyFileRange, OpCopyFileRange>::Call;
  // No flock/getlk/setlk: without them the kernel keeps locks locally, which
  // is what BuildKit's importer needs for its flock on index.json.lock.
  return ops;
}

// ---------------------------------------------------------------------------
// Readiness: a thread outside the FUSE loop stats the mountpoint until the
// FUSE root answers, then calls on_ready.

class ReadyWatcher {
 public:
  ReadyWatcher(std::string mountpoint, dev_t underlying_dev, std::function<void()> on_ready)
      : mountpoint_(std::move(mountpoint)),
        underlying_dev_(underlying_dev),
        on_ready_(std::move(on_ready)) {}
  ~ReadyWatcher() { Stop(); }

  Status Start() {
    if (!on_ready_) return OkStatus();
    // The thread must not take SIGTERM/SIGINT/SIGHUP away from the thread
    // running the FUSE loop, so it starts with every signal blocked.
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    Status st;
    try {
      thread_ = std::thread([this] { Run(); });
    } catch (const std::system_error& e) {
      st = InternalError(std::string("start the readiness thread: ") + e.what());
    }
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    return st;
  }

  // Call only after the mount is gone: a stat blocked on the FUSE connection
  // returns once the connection is closed, not before.
  void Stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }

 private:
  void Run() {
    while (!stop_.load()) {
      struct stat st {};
      // This stat is answered by our own getattr (after the kernel's INIT),
      // so it also proves the loop serves requests.
      if (::stat(mountpoint_.c_str(), &st) == 0 && st.st_ino == tree::Tree::kRootIno &&
          st.st_dev != underlying_dev_) {
        if (!stop_.load()) on_ready_();
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  const std::string mountpoint_;
  const dev_t underlying_dev_;
  const std::function<void()> on_ready_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Owns a fuse_session and undoes what was done to it, in order.
class Session {
 public:
  Session() = default;
  ~Session() {
    if (se_ == nullptr) return;
    if (mounted_) fuse_session_unmount(se_);
    if (signals_) fuse_remove_signal_handlers(se_);
    fuse_session_destroy(se_);
  }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  fuse_session* se_ = nullptr;
  bool signals_ = false;
  bool mounted_ = false;
};

}  // namespace

Result<std::vector<std::string>> EffectiveOptions(const std::vector<std::string>& given) {
  std::vector<std::string> contrary;
  Result<std::vector<std::string>> out = FilterOptions(given, &contrary);
  if (out.ok() && !contrary.empty()) {
    LOG_WARNING("ignoring mount option(s) " << JoinOptions(contrary)
                                            << ": the mount is always ro,nosuid,nodev");
  }
  return out;
}

Status ServeMount(tree::Tree& tree, const MountOptions& opts, std::function<void()> on_ready) {
  const std::string& mnt = opts.mountpoint;
  auto fail = [&mnt](const Status& st) { return st.WithContext("mount " + mnt); };

  Result<std::vector<std::string>> options = FilterOptions(opts.options, nullptr);
  if (!options.ok()) return fail(options.status());

  struct stat before {};
  if (::stat(mnt.c_str(), &before) != 0) return fail(ErrnoError(errno, "mountpoint"));
  if (!S_ISDIR(before.st_mode)) return fail(InvalidArgumentError("mountpoint is not a directory"));

  fuse_set_log_func(FuseLog);
  const std::string joined = JoinOptions(*options);
  std::vector<const char*> argv = {"buildcachefs", "-o", joined.c_str()};
  if (opts.debug) argv.push_back("-d");
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), const_cast<char**>(argv.data()));

  MountState state(tree);
  const fuse_lowlevel_ops ops = MakeOps();
  Session session;
  {
    FuseLogCapture capture;
    session.se_ = fuse_session_new(&args, &ops, sizeof ops, &state);
    fuse_opt_free_args(&args);
    if (session.se_ == nullptr) {
      return fail(Status(Code::kIo, "cannot start a FUSE session: " + capture.Take()));
    }
    // libfuse takes a signal only while its disposition is SIG_DFL, and stops
    // the session on SIGHUP too; under systemd SIGHUP means "reload"
    // (DESIGN.md §6): a caller's own handler stays, else SIGHUP is ignored.
    struct sigaction hup_before {};
    ::sigaction(SIGHUP, nullptr, &hup_before);
    if (fuse_set_signal_handlers(session.se_) != 0) {
      return fail(Status(Code::kIo, "cannot install signal handlers: " + capture.Take()));
    }
    session.signals_ = true;
    if (hup_before.sa_handler == SIG_DFL) ::signal(SIGHUP, SIG_IGN);
    if (fuse_session_mount(session.se_, mnt.c_str()) != 0) {
      std::string why = capture.Take();
      return fail(Status(Code::kIo, why.empty() ? "mount failed" : why));
    }
    session.mounted_ = true;
  }
  // Evicted blobs lose their kernel cache, so the next read comes to us.
  fuse_session* se = session.se_;
  tree.SetInvalidator([se](uint64_t ino) {
    int rc = fuse_lowlevel_notify_inval_inode(se, ino, 0, 0);
    if (rc != 0 && rc != -ENOENT)
      LOG_DEBUG("invalidate inode " << ino << ": " << std::strerror(-rc));
  });
  // A refresh drops the names it added, removed or replaced (DESIGN.md §1.6).
  tree.SetEntryInvalidator([se](uint64_t parent, const std::string& name) {
    int rc = fuse_lowlevel_notify_inval_entry(se, parent, name.data(), name.size());
    if (rc != 0 && rc != -ENOENT)
      LOG_DEBUG("invalidate entry " << parent << "/" << name << ": " << std::strerror(-rc));
  });
  struct ClearInvalidator {
    tree::Tree& t;
    ~ClearInvalidator() {
      t.SetInvalidator(nullptr);
      t.SetEntryInvalidator(nullptr);
    }
  } clear{tree};

  ReadyWatcher watcher(mnt, before.st_dev, std::move(on_ready));
  if (Status st = watcher.Start(); !st.ok()) return fail(st);

  fuse_loop_config config{};
  config.clone_fd = 0;
  config.max_idle_threads = 10;
  // Returns 0 when the kernel ends the session (unmounted from outside), the
  // signal number when one of the handlers asked it to stop, -errno on error.
  const int rc = fuse_session_loop_mt(session.se_, &config);

  // Unmounting closes the connection, which also frees a readiness stat that
  // may still be waiting for an answer; only then can the watcher be joined.
  fuse_session_unmount(session.se_);
  session.mounted_ = false;
  watcher.Stop();
  if (rc < 0) return fail(ErrnoError(-rc, "serve FUSE requests"));
  if (rc > 0) LOG_DEBUG("mount " << mnt << ": stopping on signal " << rc);
  return OkStatus();
}

std::map<int, uint64_t> ErrorCounts() {
  std::map<int, uint64_t> out;
  for (int i = 0; i <= kMaxCountedErrno; ++i) {
    const uint64_t n = g_error_counts[i].load(std::memory_order_relaxed);
    if (n != 0) out[i] = n;
  }
  return out;
}

}  // namespace bcfs::fs
