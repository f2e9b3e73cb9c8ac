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

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "backends/naming.h"
#include "backends/source.h"
#include "catalog/catalog.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "cli/gc_service.h"
#include "core/log.h"
#include "core/paths.h"
#include "fs/fuse_fs.h"
#include "index/index.h"
#include "tree/tree.h"

namespace bcfs::cli {
namespace {

constexpr char kMountHelp[] =
    R"(Usage: buildcachefs mount [-f] [-o OPTS] [--state-dir DIR] SOURCE... MOUNTPOINT
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
  -f                    stay in the foreground until unmounted
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
  --log-level LEVEL     debug, info, warning (default), error
  -h, --help            this text

Unmount with `fusermount3 -u MOUNTPOINT` (or `umount MOUNTPOINT` as root), or
send the daemon SIGTERM or SIGINT (SIGHUP is ignored: it will mean reload).

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
};

// Opens the index and every source, builds the tree and serves it. Returns
// the error that stopped it; `on_ready` runs once the mount answers.
Status OpenAndServe(const Plan& plan, const std::function<void()>& on_ready) {
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
    catalog::SourceInfo info =
        catalog::ReadSource(**backend, name, std::string(backends::SourceTypeName(spec.type)));
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
    if (Status st = idx->ReplaceSource(catalog::ToSnapshot(info, Now())); !st.ok()) {
      LOG_WARNING("source " << name << ": not recorded in the index: " << st.message());
    }
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
  BCFS_ASSIGN_OR_RETURN(std::unique_ptr<tree::Tree> tree,
                        tree::Tree::Build(std::move(inputs), idx.get(), content.get(), derived));
  // noatime: no access times, ours included.
  for (const auto& o : plan.mount.options) {
    if (o == "noatime") tree->SetAccessTracking(false);
  }
  GcServiceOptions gc_opts;
  gc_opts.state_dir = plan.state_dir;
  gc_opts.interval = plan.gc_interval;
  BCFS_ASSIGN_OR_RETURN(gc::FsStats fs_stats, gc::StatFs(plan.state_dir));
  gc_opts.policies = gc::EffectivePolicies(plan.gc, fs_stats);
  GcService gc_service(*tree, content.get(), gc_opts);
  BCFS_RETURN_IF_ERROR(gc_service.Start());
  const size_t n = plan.specs.size();
  const std::string& mnt = plan.mount.mountpoint;
  Status st = fs::ServeMount(*tree, plan.mount, [&] {
    LOG_INFO("mounted " << n << (n == 1 ? " source" : " sources") << " at " << mnt);
    if (on_ready) on_ready();
  });
  if (st.ok()) LOG_INFO("unmounted " << mnt);
  gc_service.Stop();
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
                        {"-o", "--state-dir", "--log-level", "--gc-config", "--gc-interval"},
                        {"-f", "-d", "--no-gc"});
  if (!args.ok()) {
    std::cerr << "buildcachefs mount: " << args.status().message() << "\n\n" << kMountHelp;
    return kExitUsage;
  }
  if (args->help) {
    std::cout << kMountHelp;
    return kExitOk;
  }
  const size_t npos = args->positional.size();
  if (fuse3_form ? npos != 2 : npos < 2) {
    std::cerr << "buildcachefs mount: want "
              << (fuse3_form ? "SOURCE MOUNTPOINT" : "SOURCE... MOUNTPOINT") << "\n\n"
              << kMountHelp;
    return kExitUsage;
  }
  // libfuse's request trace (-d) is logged at debug level.
  log::Level level = args->flags.count("-d") ? log::Level::kDebug : log::Level::kWarning;
  if (args->options.count("--log-level") && !log::ParseLevel(args->Option("--log-level"), &level)) {
    std::cerr << "buildcachefs mount: unknown log level \"" << args->Option("--log-level")
              << "\"\n";
    return kExitUsage;
  }
  log::SetLevel(level);

  Plan plan;
  for (size_t i = 0; i + 1 < npos; ++i) {
    auto spec = backends::ParseSourceString(args->positional[i]);
    if (!spec.ok()) {
      std::cerr << "buildcachefs mount: " << spec.status().message() << "\n";
      return kExitUsage;
    }
    if (!spec->ignored_keys.empty()) {
      std::string keys;
      for (const auto& k : spec->ignored_keys) keys += (keys.empty() ? "" : ", ") + k;
      LOG_WARNING("source " << spec->Redacted() << ": ignoring export-only keys: " << keys);
    }
    AbsolutizeLocalSource(*spec);
    plan.specs.push_back(std::move(*spec));
  }
  auto names = backends::AssignSourceNames(plan.specs);
  if (!names.ok()) {
    std::cerr << "buildcachefs mount: " << names.status().message() << "\n";
    return kExitUsage;
  }
  plan.names = std::move(*names);

  auto given = args->options.find("-o");
  plan.mount.options =
      given == args->options.end() ? std::vector<std::string>{} : SplitCommas(given->second);
  auto effective = fs::EffectiveOptions(plan.mount.options);
  if (!effective.ok()) {
    std::cerr << "buildcachefs mount: " << effective.status().message() << "\n";
    return kExitUsage;
  }
  plan.mount.debug = args->flags.count("-d") > 0;
  const bool foreground = plan.mount.debug || args->flags.count("-f") > 0;

  std::error_code ec;
  const std::string mnt_arg = args->positional.back();
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

  std::string state = args->Option("--state-dir", paths::DefaultStateDir());
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
