// `buildcachefs mount [-f] [-o OPTS] [--state-dir DIR] SOURCE... MOUNTPOINT`
// and the form mount.fuse3 runs for fstab entries, `buildcachefs SOURCE
// MOUNTPOINT -o OPTS`: reads every source the way BuildKit does, records it in
// the index, builds the tree and serves it read-only through FUSE.
//
// Without -f the command forks a daemon and returns only once the mount
// answers (exit 0, nothing printed) or failed (the daemon's error printed,
// exit 1). The fork happens before the index and the backends are opened:
// an SQLite connection must not cross a fork (its POSIX locks stay with the
// parent, whose exit would then close the connection under the daemon), and
// nothing started threads yet.
//
// As a systemd service (DESIGN.md §6; systemd/buildcachefs.service) the daemon
// runs with -f and --config: it tells systemd READY=1 (with a STATUS= line)
// only once the mount answers, pings the watchdog at half of $WATCHDOG_USEC
// while a stat of the mountpoint answers, re-reads the config and the refs on SIGHUP
// without unmounting, and unmounts cleanly on SIGTERM. The notification
// protocol is a datagram to $NOTIFY_SOCKET (sd_notify(3)); it is a few lines,
// so libsystemd is not needed.

#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "backends/backend.h"
#include "backends/naming.h"
#include "backends/source.h"
#include "catalog/catalog.h"
#include "catalog/catalog_cache.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "cli/config.h"
#include "cli/gc_service.h"
#include "cli/refresh_service.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/metrics_http.h"
#include "core/paths.h"
#include "fs/fuse_fs.h"
#include "index/index.h"
#include "tree/tree.h"

namespace bcfs::cli {
namespace {

constexpr char kMountHelp[] =
    R"(Usage: buildcachefs mount [-f] [-o OPTS] [--state-dir DIR] SOURCE... MOUNTPOINT
       buildcachefs mount [-f] --config FILE [SOURCE...] [MOUNTPOINT]
       buildcachefs SOURCE MOUNTPOINT -o OPTS     (what mount.fuse3 runs for fstab)

Mounts BuildKit caches read-only at MOUNTPOINT, one folder per SOURCE, laid out
the way a `type=local` cache is (oci-layout, index.json, blobs/sha256/) plus
refs/<ref>/ (manifest, cache config, records, layer links) and history/. Blobs
are verified against their digests before the first byte is served. The layout
works as a `--cache-from type=local,src=MOUNTPOINT/<source>` for buildx.

Without -f the command returns once the mount answers and the daemon serves it
in the background; a failure is printed and nothing stays mounted.

SOURCE is the CSV given to `docker buildx build --cache-from`, e.g.
  type=local,src=/var/cache/buildkit            (as=NAME names its folder)

Options:
  -f                    stay in the foreground until unmounted (what a systemd
                        Type=notify service runs: READY=1 once the mount answers)
  --config FILE         the service config (TOML): mountpoint, state_dir,
                        options, [[source]], [gc], gc_interval, log_level,
                        refresh_interval; see buildcachefs(1). Arguments and
                        flags given here override it (SOURCEs replace its
                        sources, -o its options). SIGHUP re-reads it.
  -d                    libfuse's request trace on stderr (implies -f and
                        --log-level debug)
  -o OPTS               mount options, comma-separated, may repeat (also -oOPTS):
                        allow_other, allow_root, noexec, exec, noatime, atime
                        (noatime also stops recording accesses for GC).
                        Always ro,nosuid,nodev,default_permissions; suid, dev and
                        rw are ignored with a warning, fstab-only options
                        (_netdev, nofail, noauto, user, users, defaults, x-*)
                        silently.
  --state-dir DIR       where the index lives (default /var/lib/buildcachefs for
                        root, else $XDG_STATE_HOME/buildcachefs or
                        ~/.local/state/buildcachefs)
  --gc-config FILE      GC policies for the local store (blobs fetched from
                        remote sources, derived copies of layers): a
                        buildkitd.toml with [[worker.oci.gcpolicy]] blocks, or
                        [gc] / [[gc.policy]] with the same keys; default:
                        BuildKit's default rules plus 48h for derived copies
  --gc-interval DUR     how often GC runs besides after each fetch (default 60s;
                        0 = only after fetches)
  --no-gc               never evict anything
  --refresh-interval DUR
                        re-read every source's refs this often (e.g. 5m; 0 =
                        only on SIGHUP, the default); -o refresh=DUR says the
                        same in an fstab line
  --log-level LEVEL     debug, info, warning (default), error
  --metrics-addr HOST:PORT
                        also serve the Prometheus metrics of
                        .buildcachefs/metrics over HTTP at
                        http://HOST:PORT/metrics, bound to exactly that
                        address (e.g. 127.0.0.1:9101); also -o
                        metrics_addr=HOST:PORT and the config's metrics_addr
  -h, --help            this text

Unmount with `fusermount3 -u MOUNTPOINT` (or `umount MOUNTPOINT` as root), or
send the daemon SIGTERM or SIGINT. SIGHUP reloads: the config file is read
again and its log level and refresh_interval applied without unmounting
(sources, mountpoint, options, state dir and GC settings take effect on the
next mount), then every source's refs are read again (refresh: new refs and
tags appear, vanished ones go, files already open keep reading; a source
whose read fails keeps its refs and says why in .buildcachefs/status.json).

Exit status: 0 mounted (with -f: served and cleanly unmounted), 1 the mount
failed (a source, the mountpoint, the index or FUSE; printed), 2 usage error.
)";

constexpr char kReadyLine[] = "ok";

TimeNs Now() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// "-oro,allow_other" is "-o" "ro,allow_other", as mount(8) and FUSE spell it.
std::vector<std::string> SplitGluedOptions(const std::vector<std::string>& argv) {
  std::vector<std::string> out;
  bool only_positional = false;
  for (const std::string& a : argv) {
    if (!only_positional && a.size() > 2 && a.rfind("-o", 0) == 0) {
      out.push_back("-o");
      out.push_back(a.substr(2));
      continue;
    }
    if (a == "--") only_positional = true;
    out.push_back(a);
  }
  return out;
}

std::vector<std::string> SplitCommas(const std::vector<std::string>& values) {
  std::vector<std::string> out;
  for (const std::string& v : values) {
    size_t start = 0;
    while (true) {
      size_t comma = v.find(',', start);
      out.push_back(
          v.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  }
  return out;
}

// A local src relative to the caller's directory would break once the daemon
// leaves it (chdir "/", so the mount does not keep that directory busy), and
// a normalized absolute path also gives `src=.` a usable default name.
void AbsolutizeLocalSource(backends::SourceSpec& spec) {
  if (spec.type != backends::SourceType::kLocal || !spec.Has("src")) return;
  std::filesystem::path src(spec.Get("src"));
  if (src.is_absolute()) return;
  std::error_code ec;
  std::filesystem::path abs = std::filesystem::absolute(src, ec);
  if (ec) return;
  std::string normal = abs.lexically_normal().string();
  while (normal.size() > 1 && normal.back() == '/') normal.pop_back();
  spec.attrs["src"] = normal;
}

// mkdir -p with mode 0700 for every directory it creates.
Status MakeDirs(const std::string& path) {
  std::string prefix;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    prefix = path.substr(0, pos);
    if (prefix.empty() || prefix == "/") continue;
    if (::mkdir(prefix.c_str(), 0700) != 0 && errno != EEXIST) {
      return ErrnoError(errno, "create state dir " + prefix);
    }
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return ErrnoError(errno, "state dir " + path);
  if (!S_ISDIR(st.st_mode))
    return InvalidArgumentError("state dir " + path + " is not a directory");
  return OkStatus();
}

// Everything `mount` decided before the work starts.
struct Plan {
  std::vector<backends::SourceSpec> specs;
  std::vector<std::string> names;
  fs::MountOptions mount;
  std::string state_dir;
  gc::GcConfig gc;  // policies before percentages are resolved
  std::chrono::seconds gc_interval{60};
  // How often refs are re-read (0 = only on SIGHUP); fixed by the command
  // line (--refresh-interval, -o refresh=) or else the config's.
  std::chrono::nanoseconds refresh_interval{0};
  bool cli_refresh = false;
  std::string metrics_addr;  // "" = no metrics listener
  // For SIGHUP: the config file (absolute; "" without --config), what it
  // said at start, and the log level the command line fixed (it wins).
  std::string config_path;
  ServiceConfig config;
  std::optional<log::Level> cli_level;
};

// sd_notify(3): one datagram of "KEY=VALUE" lines to the AF_UNIX socket named
// by $NOTIFY_SOCKET ('@' = the abstract namespace). Best effort: without the
// variable, or when sending fails, nothing happens.
class Notifier {
 public:
  Notifier() {
    const char* path = std::getenv("NOTIFY_SOCKET");
    if (path == nullptr || path[0] == '\0' || (path[0] != '/' && path[0] != '@')) return;
    const size_t len = std::strlen(path);
    if (len >= sizeof addr_.sun_path) return;
    addr_.sun_family = AF_UNIX;
    std::memcpy(addr_.sun_path, path, len);
    if (path[0] == '@') addr_.sun_path[0] = '\0';
    addr_len_ = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len);
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    // $WATCHDOG_USEC is for us unless $WATCHDOG_PID names another process.
    const char* usec = std::getenv("WATCHDOG_USEC");
    const char* pid = std::getenv("WATCHDOG_PID");
    if (usec != nullptr && (pid == nullptr || std::atol(pid) == ::getpid())) {
      watchdog_usec_ = std::strtoull(usec, nullptr, 10);
    }
  }
  ~Notifier() {
    if (fd_ >= 0) ::close(fd_);
  }
  Notifier(const Notifier&) = delete;
  Notifier& operator=(const Notifier&) = delete;

  // 0 = no watchdog.
  uint64_t watchdog_usec() const { return fd_ >= 0 ? watchdog_usec_ : 0; }

  void Send(const std::string& state) const {
    if (fd_ < 0) return;
    if (::sendto(fd_, state.data(), state.size(), MSG_NOSIGNAL,
                 reinterpret_cast<const sockaddr*>(&addr_), addr_len_) < 0) {
      LOG_DEBUG("sd_notify " << std::getenv("NOTIFY_SOCKET") << ": " << std::strerror(errno));
    }
  }

 private:
  int fd_ = -1;
  sockaddr_un addr_{};
  socklen_t addr_len_ = 0;
  uint64_t watchdog_usec_ = 0;
};

uint64_t MonotonicUsec() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000 + static_cast<uint64_t>(ts.tv_nsec) / 1000;
}

// The log level in force: -d / --log-level, else the config's, else warning.
log::Level EffectiveLevel(const Plan& plan, const ServiceConfig& config) {
  if (plan.cli_level) return *plan.cli_level;
  return config.log_level.value_or(log::Level::kWarning);
}

std::string LevelName(log::Level level) {
  static const char* const kNames[] = {"debug", "info", "warning", "error"};
  return kNames[static_cast<int>(level)];
}

// The write end of the service thread's pipe, for the SIGHUP handler.
std::atomic<int> g_wake_fd{-1};

void OnSighup(int) {
  const int saved = errno;
  const int fd = g_wake_fd.load();
  if (fd >= 0) {
    const char c = 'h';
    if (::write(fd, &c, 1) < 0) {
      // The pipe is full: a reload is already pending.
    }
  }
  errno = saved;
}

// The service side of a running mount, on a thread of its own (every signal
// blocked): reloads on SIGHUP (the handler only writes to a pipe; the work
// happens here, where it may take locks and log), and pings systemd's
// watchdog while a stat of the mountpoint answers with the FUSE root, so a
// hung loop stops the pings and systemd restarts the service.
class ServiceThread {
 public:
  ServiceThread(const Plan& plan, const Notifier& notifier, std::string status,
                RefreshService& refresh)
      : plan_(plan),
        notifier_(notifier),
        config_(plan.config),
        status_(std::move(status)),
        refresh_(refresh) {}
  ~ServiceThread() { Stop(); }

  // Installs the SIGHUP handler (before ServeMount, so libfuse leaves SIGHUP
  // to us) and starts the thread.
  Status Start() {
    if (::pipe2(pipe_, O_CLOEXEC | O_NONBLOCK) != 0) return ErrnoError(errno, "pipe");
    g_wake_fd.store(pipe_[1]);
    struct sigaction sa {};
    sa.sa_handler = OnSighup;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    ::sigaction(SIGHUP, &sa, nullptr);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    Status st;
    try {
      thread_ = std::thread([this] { Run(); });
    } catch (const std::system_error& e) {
      st = InternalError(std::string("start the service thread: ") + e.what());
    }
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    return st;
  }

  void SetReady() { ready_.store(true); }

  // Call after the mount is gone (a watchdog stat may wait on the mount).
  void Stop() {
    if (pipe_[0] < 0) return;
    ::signal(SIGHUP, SIG_IGN);
    g_wake_fd.store(-1);
    if (thread_.joinable()) {
      const char c = 'q';
      while (::write(pipe_[1], &c, 1) < 0 && errno == EINTR) {
      }
      thread_.join();
    }
    ::close(pipe_[0]);
    ::close(pipe_[1]);
    pipe_[0] = pipe_[1] = -1;
  }

 private:
  void Run() {
    const uint64_t wd = notifier_.watchdog_usec();
    const int timeout_ms = wd == 0 ? -1 : static_cast<int>(std::max<uint64_t>(wd / 2000, 1));
    while (true) {
      pollfd p{pipe_[0], POLLIN, 0};
      const int n = ::poll(&p, 1, timeout_ms);
      if (n < 0 && errno != EINTR) return;
      if (n > 0) {
        char buf[64];
        const ssize_t got = ::read(pipe_[0], buf, sizeof buf);
        bool hup = false;
        for (ssize_t i = 0; i < got; ++i) {
          if (buf[i] == 'q') return;
          hup = hup || buf[i] == 'h';
        }
        if (hup) Reload();
      }
      if (wd != 0 && ready_.load() && Healthy()) notifier_.Send("WATCHDOG=1");
    }
  }

  bool Healthy() const {
    struct stat st {};
    return ::stat(plan_.mount.mountpoint.c_str(), &st) == 0 && st.st_ino == tree::Tree::kRootIno;
  }

  void Reload() {
    notifier_.Send("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(MonotonicUsec()) +
                   "\nSTATUS=Reloading");
    if (plan_.config_path.empty()) {
      log::Write(log::Level::kInfo, "SIGHUP: reloaded (no --config file; refreshing the refs)");
      Refresh("");
      return;
    }
    auto fresh = LoadServiceConfig(plan_.config_path);
    if (!fresh.ok()) {
      LOG_ERROR(
          "SIGHUP: not reloaded, the running configuration stays: " << fresh.status().message());
      Refresh("reload failed: " + std::string(fresh.status().message()) + "; ");
      return;
    }
    const log::Level level = EffectiveLevel(plan_, *fresh);
    log::SetLevel(level);
    // Only what a running mount can change is applied; the rest is named.
    std::vector<std::string> later;
    if (fresh->mountpoint != config_.mountpoint) later.push_back("mountpoint");
    if (fresh->state_dir != config_.state_dir) later.push_back("state_dir");
    if (fresh->options != config_.options) later.push_back("options");
    if (fresh->metrics_addr != config_.metrics_addr) later.push_back("metrics_addr");
    if (fresh->sources != config_.sources) later.push_back("source");
    if (fresh->gc_text != config_.gc_text) later.push_back("gc");
    if (fresh->gc_interval != config_.gc_interval) later.push_back("gc_interval");
    if (fresh->refresh_interval != config_.refresh_interval && !plan_.cli_refresh) {
      refresh_.SetInterval(std::chrono::nanoseconds(fresh->refresh_interval.value_or(0)));
    }
    if (!later.empty()) {
      std::string keys;
      for (const auto& k : later) keys += (keys.empty() ? "" : ", ") + k;
      LOG_WARNING("SIGHUP: " << plan_.config_path << ": " << keys
                             << " changed; applied at the next mount, not to this one");
    }
    config_ = std::move(*fresh);
    // Always written, whatever the level: the journal should show a reload.
    log::Write(log::Level::kInfo,
               "SIGHUP: reloaded " + plan_.config_path + " (log level " + LevelName(level) + ")");
    Refresh("config reloaded; ");
  }

  // Re-reads every source's refs (DESIGN.md §1.6) on the refresh thread (this
  // one keeps pinging the watchdog meanwhile); READY=1 follows once it is
  // done, its STATUS= line saying `reloaded` and what the refresh did.
  void Refresh(std::string reloaded) {
    refresh_.RunSoon([this, reloaded](const tree::RefreshReport& report) {
      const std::string what = DescribeRefresh(report);
      log::Write(log::Level::kInfo, "SIGHUP: " + what);
      notifier_.Send("READY=1\nSTATUS=" + status_ + " (" + reloaded + what + ")");
    });
  }

  const Plan& plan_;
  const Notifier& notifier_;
  ServiceConfig config_;
  const std::string status_;
  RefreshService& refresh_;
  int pipe_[2] = {-1, -1};
  std::atomic<bool> ready_{false};
  std::thread thread_;
};

Status ServeSources(const Plan& plan, const std::function<void()>& on_ready,
                    const Notifier& notifier, const std::string& serving);

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// Opens the index and every source, builds the tree and serves it. Returns
// the error that stopped it; `on_ready` runs once the mount answers. Tells
// systemd what happens when $NOTIFY_SOCKET is set.
Status OpenAndServe(const Plan& plan, const std::function<void()>& on_ready) {
  Notifier notifier;
  const size_t n = plan.specs.size();
  const std::string& mnt = plan.mount.mountpoint;
  const std::string serving =
      "Serving " + std::to_string(n) + (n == 1 ? " source" : " sources") + " at " + mnt;
  notifier.Send("STATUS=Reading " + std::to_string(n) + (n == 1 ? " source" : " sources"));
  Status st = ServeSources(plan, on_ready, notifier, serving);
  if (st.ok()) {
    notifier.Send("STOPPING=1\nSTATUS=Unmounted " + mnt);
  } else {
    notifier.Send("STATUS=Failed: " + std::string(st.message()));
  }
  return st;
}

Status ServeSources(const Plan& plan, const std::function<void()>& on_ready,
                    const Notifier& notifier, const std::string& serving) {
  BCFS_ASSIGN_OR_RETURN(std::unique_ptr<index::Index> idx,
                        index::Index::Open(paths::IndexDb(plan.state_dir)));
  std::vector<tree::SourceInput> inputs;
  for (size_t i = 0; i < plan.specs.size(); ++i) {
    const backends::SourceSpec& spec = plan.specs[i];
    const std::string& name = plan.names[i];
    auto backend = backends::OpenBackend(spec);
    if (!backend.ok()) {
      // Backends usually name their source already; say it once.
      const std::string where = spec.Redacted();
      return backend.status().message().find(where) == std::string::npos
                 ? backend.status().WithContext("source " + where)
                 : backend.status();
    }
    const auto read_start = std::chrono::steady_clock::now();
    // An unchanged source is read from the catalog cache (its fingerprint says so).
    bool cached = false;
    std::string version;
    catalog::SourceInfo info =
        catalog::ReadSourceCached(**backend, name, std::string(backends::SourceTypeName(spec.type)),
                                  paths::CatalogCacheDir(plan.state_dir), &cached, &version);
    const auto read_end = std::chrono::steady_clock::now();
    for (const auto& e : info.errors) LOG_WARNING("source " << name << ": " << e);
    for (const auto* list : {&info.refs, &info.history}) {
      for (const auto& r : *list) {
        for (const auto& e : r.errors) {
          LOG_WARNING("source " << name << " ref " << backends::EncodeRefName(r.name) << ": " << e);
        }
      }
    }
    // The index feeds du/prune/gc; a failure there must not keep the cache
    // from being shown.
    if (Status st = catalog::RecordSource(*idx, info, version, Now()); !st.ok()) {
      LOG_WARNING("source " << name << ": not recorded in the index: " << st.message());
    }
    LOG_DEBUG("source " << name << ": " << info.refs.size() << " refs, " << info.blobs.size()
                        << " blobs; catalog read" << (cached ? " from its cache" : "") << " in "
                        << Seconds(read_end - read_start) << " s, index updated in "
                        << Seconds(std::chrono::steady_clock::now() - read_end) << " s");
    inputs.push_back(tree::SourceInput{
        name, std::shared_ptr<backends::Backend>(std::move(*backend)), std::move(info)});
  }
  // Remote sources fetch into the content store. Only they open it: the store
  // takes a lock on its directory, and mounts of local caches need none.
  std::unique_ptr<store::ContentStore> content;
  for (const auto& in : inputs) {
    if (in.backend->CheapStat()) continue;
    BCFS_ASSIGN_OR_RETURN(content, store::ContentStore::Open(paths::StoreDir(plan.state_dir)));
    content->SetProgressCallback([](const Digest& d, uint64_t have, uint64_t size) {
      LOG_DEBUG("fetch " << d.ToString() << ": " << have << " of " << size << " bytes");
    });
    break;
  }
  const std::string derived = paths::DerivedDir(plan.state_dir);
  if (::mkdir(derived.c_str(), 0700) != 0 && errno != EEXIST) {
    LOG_WARNING("derived copies disabled: mkdir " << derived << ": " << std::strerror(errno));
  }
  const auto build_start = std::chrono::steady_clock::now();
  BCFS_ASSIGN_OR_RETURN(std::unique_ptr<tree::Tree> tree,
                        tree::Tree::Build(std::move(inputs), idx.get(), content.get(), derived,
                                          paths::CatalogCacheDir(plan.state_dir)));
  LOG_DEBUG("tree built in " << Seconds(std::chrono::steady_clock::now() - build_start) << " s, "
                             << tree->NodeCount() << " nodes");
  // noatime: no access times, ours included.
  for (const auto& o : plan.mount.options) {
    if (o == "noatime") tree->SetAccessTracking(false);
  }
  GcServiceOptions gc_opts;
  gc_opts.state_dir = plan.state_dir;
  gc_opts.interval = plan.gc_interval;
  BCFS_ASSIGN_OR_RETURN(gc::FsStats fs_stats, gc::StatFs(plan.state_dir));
  gc_opts.policies = gc::EffectivePolicies(plan.gc, fs_stats);
  // Destroyed (which stops it once more) before the tree it hooks into.
  auto gc_service = std::make_unique<GcService>(*tree, content.get(), gc_opts);
  BCFS_RETURN_IF_ERROR(gc_service->Start());
  const size_t n = plan.specs.size();
  const std::string& mnt = plan.mount.mountpoint;
  // Listening before READY=1, so a scrape right after start-up is answered.
  std::unique_ptr<metrics::HttpServer> metrics_server;
  if (!plan.metrics_addr.empty()) {
    BCFS_ASSIGN_OR_RETURN(metrics_server, metrics::HttpServer::Start(plan.metrics_addr, [] {
                            return metrics::Global().Render();
                          }));
  }
  // Timer refreshes say what they did in the STATUS= line (SIGHUP's own
  // refresh goes with its READY=1).
  RefreshService refresh(
      *tree, plan.refresh_interval, [&notifier, serving](const tree::RefreshReport& report) {
        notifier.Send("STATUS=" + serving + " (" + DescribeRefresh(report) + ")");
      });
  BCFS_RETURN_IF_ERROR(refresh.Start());
  ServiceThread service(plan, notifier, serving, refresh);
  if (Status st = service.Start(); !st.ok()) return st;
  Status st = fs::ServeMount(*tree, plan.mount, [&] {
    LOG_INFO("mounted " << n << (n == 1 ? " source" : " sources") << " at " << mnt);
    // After the stat from a non-FUSE thread answered: the mount serves.
    notifier.Send("READY=1\nSTATUS=" + serving);
    service.SetReady();
    if (on_ready) on_ready();
  });
  service.Stop();
  refresh.Stop();
  if (metrics_server) metrics_server->Stop();
  if (st.ok()) LOG_INFO("unmounted " << mnt);
  gc_service.reset();
  // The tree goes before the index and the store it keeps pointers to.
  tree.reset();
  content.reset();
  return st;
}

bool WriteAll(int fd, std::string_view s) {
  while (!s.empty()) {
    ssize_t n = ::write(fd, s.data(), s.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    s.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

void RedirectToDevNull(int target) {
  int fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (fd < 0) return;
  ::dup2(fd, target);  // dup2 clears FD_CLOEXEC on the target
  if (fd != target) ::close(fd);
}

// The daemon side of the fork; its outcome travels through `report_fd`, so it
// never returns into code that would print to the caller.
[[noreturn]] void RunDaemon(const Plan& plan, int report_fd) {
  ::setsid();
  RedirectToDevNull(STDIN_FILENO);
  RedirectToDevNull(STDOUT_FILENO);
  if (::chdir("/") != 0) {
    // Harmless: every path in the plan is absolute.
  }
  // Reported once: "ok" from on_ready, or the error if serving never got there.
  std::atomic<int> report{report_fd};
  auto send = [&report](const std::string& line) {
    int fd = report.exchange(-1);
    if (fd < 0) return false;
    WriteAll(fd, line + "\n");
    ::close(fd);
    return true;
  };
  Status st = OpenAndServe(plan, [&] {
    // A caller reading our stderr through a pipe (a shell's $(...), a test
    // harness) waits for EOF; once the parent has exited that would be the
    // whole life of the mount. Terminals, files and the journal's socket keep
    // the daemon's log.
    struct stat err_st {};
    if (::fstat(STDERR_FILENO, &err_st) == 0 && S_ISFIFO(err_st.st_mode)) {
      RedirectToDevNull(STDERR_FILENO);
    }
    send(kReadyLine);
  });
  // Before readiness the caller prints the error; after it, only the log can.
  if (!st.ok() && !send(st.message())) LOG_ERROR(st.message());
  std::exit(st.ok() ? kExitOk : kExitErrors);
}

// The caller's side: waits for the daemon's one-line report.
int WaitForDaemon(pid_t pid, int report_fd) {
  std::string text;
  char buf[512];
  while (true) {
    ssize_t n = ::read(report_fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  ::close(report_fd);
  while (!text.empty() && text.back() == '\n') text.pop_back();
  if (text == kReadyLine) return kExitOk;
  if (!text.empty()) {
    // The daemon reported a failure and is exiting: wait for it, so that
    // nothing of this mount is left running when the command returns.
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    std::cerr << "buildcachefs mount: " << text << "\n";
    return kExitErrors;
  }
  int status = 0;
  std::string how = "without reporting";
  if (::waitpid(pid, &status, 0) == pid) {
    if (WIFSIGNALED(status)) {
      how = std::string("on signal ") + std::to_string(WTERMSIG(status)) + " (" +
            strsignal(WTERMSIG(status)) + ")";
    } else if (WIFEXITED(status)) {
      how = "with status " + std::to_string(WEXITSTATUS(status));
    }
  }
  std::cerr << "buildcachefs mount: the mount daemon exited " << how
            << " before the mount was ready\n";
  return kExitErrors;
}

}  // namespace

int RunMount(const std::vector<std::string>& argv, bool fuse3_form) {
  auto args = ParseArgs(SplitGluedOptions(argv),
                        {"-o", "--state-dir", "--log-level", "--gc-config", "--gc-interval",
                         "--config", "--refresh-interval", "--metrics-addr"},
                        {"-f", "-d", "--no-gc"});
  if (!args.ok()) {
    std::cerr << "buildcachefs mount: " << args.status().message() << "\n\n" << kMountHelp;
    return kExitUsage;
  }
  if (args->help) {
    std::cout << kMountHelp;
    return kExitOk;
  }
  // Large blocks (a big layer's table, its index rows while it is indexed,
  // seek points) come straight from mmap and go back whole when freed.
  // glibc's adaptive threshold would move them into a worker thread's heap,
  // whose top stays resident even after malloc_trim: ~15 MB more RSS after
  // indexing a layer of 1,000,000 entries (bench/rss_entries.sh).
  ::mallopt(M_MMAP_THRESHOLD, 256 << 10);
  const size_t npos = args->positional.size();
  const bool with_config = !fuse3_form && args->options.count("--config") > 0;
  if (fuse3_form ? npos != 2 : (npos < 2 && !with_config)) {
    std::cerr << "buildcachefs mount: want "
              << (fuse3_form ? "SOURCE MOUNTPOINT" : "SOURCE... MOUNTPOINT") << "\n\n"
              << kMountHelp;
    return kExitUsage;
  }
  Plan plan;
  if (with_config) {
    std::error_code cec;
    const std::string given_path = args->Option("--config");
    plan.config_path = std::filesystem::absolute(given_path, cec).lexically_normal().string();
    if (cec) plan.config_path = given_path;
    auto config = LoadServiceConfig(given_path);
    if (!config.ok()) {
      std::cerr << "buildcachefs mount: " << config.status().message() << "\n";
      return config.status().code() == Code::kInvalidArgument ? kExitUsage : kExitErrors;
    }
    plan.config = std::move(*config);
  }
  // libfuse's request trace (-d) is logged at debug level.
  if (args->flags.count("-d")) plan.cli_level = log::Level::kDebug;
  if (args->options.count("--log-level")) {
    log::Level level;
    if (!log::ParseLevel(args->Option("--log-level"), &level)) {
      std::cerr << "buildcachefs mount: unknown log level \"" << args->Option("--log-level")
                << "\"\n";
      return kExitUsage;
    }
    plan.cli_level = level;
  }
  log::SetLevel(EffectiveLevel(plan, plan.config));

  // Sources: the arguments before MOUNTPOINT, else the config's.
  std::vector<backends::SourceSpec> specs;
  for (size_t i = 0; i + 1 < npos; ++i) {
    auto spec = backends::ParseSourceString(args->positional[i]);
    if (!spec.ok()) {
      std::cerr << "buildcachefs mount: " << spec.status().message() << "\n";
      return kExitUsage;
    }
    specs.push_back(std::move(*spec));
  }
  if (specs.empty()) specs = plan.config.sources;
  if (specs.empty()) {
    std::cerr << "buildcachefs mount: no SOURCE given and no [[source]] in " << plan.config_path
              << "\n";
    return kExitUsage;
  }
  for (backends::SourceSpec& spec : specs) {
    if (!spec.ignored_keys.empty()) {
      std::string keys;
      for (const auto& k : spec.ignored_keys) keys += (keys.empty() ? "" : ", ") + k;
      LOG_WARNING("source " << spec.Redacted() << ": ignoring export-only keys: " << keys);
    }
    AbsolutizeLocalSource(spec);
    plan.specs.push_back(std::move(spec));
  }
  auto names = backends::AssignSourceNames(plan.specs);
  if (!names.ok()) {
    std::cerr << "buildcachefs mount: " << names.status().message() << "\n";
    return kExitUsage;
  }
  plan.names = std::move(*names);

  auto given = args->options.find("-o");
  plan.mount.options = given != args->options.end()
                           ? SplitCommas(given->second)
                           : plan.config.options.value_or(std::vector<std::string>{});
  // refresh=DUR is ours (fstab lines can only say -o), not a FUSE option.
  if (plan.config.refresh_interval) {
    plan.refresh_interval = std::chrono::nanoseconds(*plan.config.refresh_interval);
  }
  std::vector<std::string> refresh_given;
  if (args->options.count("--refresh-interval")) {
    refresh_given.push_back("--refresh-interval " + args->Option("--refresh-interval"));
  }
  std::erase_if(plan.mount.options, [&refresh_given](const std::string& o) {
    if (o.rfind("refresh=", 0) != 0) return false;
    refresh_given.push_back(o);
    return true;
  });
  for (const std::string& given_refresh : refresh_given) {
    const size_t cut = given_refresh.find_first_of("= ");
    auto d = gc::ParseConfigDuration(given_refresh.substr(cut + 1));
    if (!d.ok()) {
      std::cerr << "buildcachefs mount: " << given_refresh.substr(0, cut) << ": "
                << d.status().message() << "\n";
      return kExitUsage;
    }
    plan.refresh_interval = std::chrono::nanoseconds(*d);
    plan.cli_refresh = true;
  }
  // metrics_addr=HOST:PORT is ours, not a mount option (fstab's way to say
  // --metrics-addr); the last one wins, the flag over it, it over the config.
  plan.metrics_addr = plan.config.metrics_addr;
  std::erase_if(plan.mount.options, [&plan](const std::string& o) {
    if (o.rfind("metrics_addr=", 0) != 0) return false;
    plan.metrics_addr = o.substr(std::strlen("metrics_addr="));
    return true;
  });
  if (args->options.count("--metrics-addr")) plan.metrics_addr = args->Option("--metrics-addr");
  if (!plan.metrics_addr.empty()) {
    if (Status st = metrics::ValidateListenAddress(plan.metrics_addr); !st.ok()) {
      std::cerr << "buildcachefs mount: " << st.message() << "\n";
      return kExitUsage;
    }
  }
  auto effective = fs::EffectiveOptions(plan.mount.options);
  if (!effective.ok()) {
    std::cerr << "buildcachefs mount: " << effective.status().message() << "\n";
    return kExitUsage;
  }
  plan.mount.debug = args->flags.count("-d") > 0;
  const bool foreground = plan.mount.debug || args->flags.count("-f") > 0;

  std::error_code ec;
  const std::string mnt_arg = npos > 0 ? args->positional.back() : plan.config.mountpoint;
  if (mnt_arg.empty()) {
    std::cerr << "buildcachefs mount: no MOUNTPOINT given and no mountpoint in " << plan.config_path
              << "\n";
    return kExitUsage;
  }
  struct stat mst {};
  if (::stat(mnt_arg.c_str(), &mst) != 0) {
    const int err = errno;
    std::cerr << "buildcachefs mount: mountpoint " << mnt_arg
              << (err == ENOENT ? " does not exist" : std::string(": ") + std::strerror(err))
              << "\n";
    return kExitErrors;
  }
  if (!S_ISDIR(mst.st_mode)) {
    std::cerr << "buildcachefs mount: mountpoint " << mnt_arg << " is not a directory\n";
    return kExitErrors;
  }
  plan.mount.mountpoint = std::filesystem::absolute(mnt_arg, ec).lexically_normal().string();
  if (ec) plan.mount.mountpoint = mnt_arg;
  while (plan.mount.mountpoint.size() > 1 && plan.mount.mountpoint.back() == '/') {
    plan.mount.mountpoint.pop_back();
  }

  std::string state =
      args->Option("--state-dir", plan.config.state_dir.empty() ? paths::DefaultStateDir()
                                                                : plan.config.state_dir);
  plan.state_dir = std::filesystem::absolute(state, ec).lexically_normal().string();
  if (ec) plan.state_dir = state;
  if (Status st = MakeDirs(plan.state_dir); !st.ok()) {
    std::cerr << "buildcachefs mount: " << st.message() << "\n";
    return kExitErrors;
  }

  if (args->options.count("--gc-config")) {
    auto config = gc::LoadGcConfig(args->Option("--gc-config"));
    if (!config.ok()) {
      std::cerr << "buildcachefs mount: " << config.status().message() << "\n";
      return kExitUsage;
    }
    for (const auto& w : config->warnings) LOG_WARNING("gc config: " << w);
    plan.gc = std::move(*config);
  } else if (plan.config.gc) {
    for (const auto& w : plan.config.gc->warnings) LOG_WARNING("gc config: " << w);
    plan.gc = *plan.config.gc;
  }
  if (plan.config.gc_interval) {
    plan.gc_interval = std::chrono::duration_cast<std::chrono::seconds>(
        std::chrono::nanoseconds(*plan.config.gc_interval));
  }
  if (args->flags.count("--no-gc")) plan.gc.enabled = false;
  if (args->options.count("--gc-interval")) {
    auto d = gc::ParseConfigDuration(args->Option("--gc-interval"));
    if (!d.ok()) {
      std::cerr << "buildcachefs mount: --gc-interval: " << d.status().message() << "\n";
      return kExitUsage;
    }
    plan.gc_interval =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::nanoseconds(*d));
  }

  if (foreground) {
    Status st = OpenAndServe(plan, nullptr);
    if (!st.ok()) {
      std::cerr << "buildcachefs mount: " << st.message() << "\n";
      return kExitErrors;
    }
    return kExitOk;
  }

  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) {
    std::cerr << "buildcachefs mount: pipe: " << std::strerror(errno) << "\n";
    return kExitErrors;
  }
  std::cout.flush();
  std::cerr.flush();
  const pid_t pid = ::fork();
  if (pid < 0) {
    std::cerr << "buildcachefs mount: fork: " << std::strerror(errno) << "\n";
    ::close(report[0]);
    ::close(report[1]);
    return kExitErrors;
  }
  if (pid == 0) {
    ::close(report[0]);
    RunDaemon(plan, report[1]);
  }
  ::close(report[1]);
  return WaitForDaemon(pid, report[0]);
}

}  // namespace bcfs::cli
