// `buildcachefs warm SOURCE [REF] [--state-dir DIR]`: fetch a remote cache's
// layer blobs into the local content store ahead of a build (issue 6).

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <set>

#include "backends/naming.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "cli/lifecycle_util.h"
#include "core/log.h"
#include "core/paths.h"
#include "core/units.h"
#include "index/index.h"
#include "store/content_store.h"

namespace bcfs::cli {
namespace {

constexpr char kWarmHelp[] =
    R"(Usage: buildcachefs warm SOURCE [REF] [--state-dir DIR]

Fetches every layer blob the refs of a remote BuildKit cache reach (or REF's
only) into the state dir's local content store, verified by sha256, so a later
mount serves them without waiting on the network. Blobs already complete in the
store are skipped; partly fetched ones are resumed. Manifests and cache configs
are not stored: every mount reads them afresh and serves them from memory.
The source is also recorded in the state dir's index (as `ls --state-dir`
does), so `du` without SOURCE shows it.

Local sources (type=local) need no warming: their blobs are read in place.

A running mount of the same state dir holds the content store: warm then stops
with an error (read the files through the mount instead, which fetches them,
or warm before mounting, or give another --state-dir).

Progress goes to stderr when it is a terminal (bytes done / total, rate); a
summary line goes to stdout.

SOURCE is the CSV given to `docker buildx build --cache-from`, e.g.
  type=registry,ref=host/app/cache:main
REF warms one ref (or history entry) only: its raw name, folder name or @<hex12>.

Options:
  --state-dir DIR     the state dir (default: the mount's default)
  --log-level LEVEL   debug, info, warning (default), error
  -h, --help          this text

Exit status: 0 every blob is in the store, 1 a blob could not be fetched or
verified (each named) or the source/store could not be opened, 2 usage error.
)";

struct WarmBlob {
  RefBlob blob;
  std::string ref;  // the first ref reaching it, for messages
};

// The progress line on a terminal: updated at most every 100 ms.
class Progress {
 public:
  Progress(uint64_t total, size_t blobs) : total_(total), blobs_(blobs) {}

  void StartBlob(uint64_t base) { base_ = base; }
  void Update(uint64_t present, bool force = false) {
    std::lock_guard<std::mutex> lock(mu_);
    const auto now = std::chrono::steady_clock::now();
    if (!force && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    const uint64_t done = base_ + present;
    const double secs = std::chrono::duration<double>(now - start_).count();
    const uint64_t rate = secs > 0 ? static_cast<uint64_t>((done - first_) / secs) : 0;
    std::cerr << "\rwarm: " << FormatBytes(done) << " / " << FormatBytes(total_) << ", blob "
              << std::min(done_blobs_ + 1, blobs_) << " of " << blobs_ << ", " << FormatBytes(rate)
              << "/s   " << std::flush;
  }
  void FinishBlob() { ++done_blobs_; }
  void SetFirst(uint64_t first) { first_ = first; }

 private:
  std::mutex mu_;
  const uint64_t total_;
  const size_t blobs_;
  std::atomic<uint64_t> base_{0};
  uint64_t first_ = 0;  // bytes present before this run (not counted in the rate)
  size_t done_blobs_ = 0;
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_{};
};

}  // namespace

int RunWarm(const std::vector<std::string>& argv) {
  auto args = ParseArgs(argv, {"--state-dir", "--log-level"}, {});
  if (!args.ok()) {
    std::cerr << "buildcachefs warm: " << args.status().message() << "\n\n" << kWarmHelp;
    return kExitUsage;
  }
  if (args->help) {
    std::cout << kWarmHelp;
    return kExitOk;
  }
  if (args->positional.empty() || args->positional.size() > 2) {
    std::cerr << "buildcachefs warm: want SOURCE [REF]\n\n" << kWarmHelp;
    return kExitUsage;
  }
  if (!ApplyLogLevel("warm", args->Option("--log-level"))) return kExitUsage;
  auto named = ParseSources({args->positional[0]});
  if (!named.ok()) {
    std::cerr << "buildcachefs warm: " << named.status().message() << "\n";
    return kExitUsage;
  }
  const NamedSpec& spec = (*named)[0];
  if (spec.spec.type == backends::SourceType::kLocal) {
    std::cout << "warm " << spec.name
              << ": a local source needs no warming (its blobs are read in place)\n";
    return kExitOk;
  }

  const std::string state_dir = args->Option("--state-dir", paths::DefaultStateDir());
  std::error_code ec;
  std::filesystem::create_directories(state_dir, ec);
  if (ec) {
    std::cerr << "buildcachefs warm: create state dir " << state_dir << ": " << ec.message()
              << "\n";
    return kExitErrors;
  }
  auto store = store::ContentStore::Open(paths::StoreDir(state_dir));
  if (!store.ok()) {
    std::cerr << "buildcachefs warm: " << store.status().message() << "\n";
    if (store.status().code() == Code::kUnavailable) {
      std::cerr << "buildcachefs warm: another buildcachefs process (most likely a running mount "
                   "of state dir "
                << state_dir
                << ") holds the content store; a mount fetches blobs when they are read, so read "
                   "them through it, or warm before mounting, or use another --state-dir\n";
    }
    return kExitErrors;
  }

  auto src = OpenSource(spec);
  if (!src.ok()) {
    std::cerr << "buildcachefs warm: " << src.status().message() << "\n";
    return kExitErrors;
  }
  const catalog::SourceInfo& info = src->info;
  const std::string want = args->positional.size() > 1 ? args->positional[1] : "";
  std::vector<const catalog::RefInfo*> refs = SelectRefs(info, want, !want.empty());
  if (!want.empty() && refs.empty()) {
    std::cerr << "buildcachefs warm: source " << info.name << " has no ref \"" << want << "\"\n";
    return kExitErrors;
  }
  int rc = kExitOk;
  for (const auto& e : info.errors) {
    std::cerr << "buildcachefs warm: source " << info.name << ": " << e << "\n";
    rc = kExitErrors;
  }
  for (const auto* r : refs) {
    for (const auto& e : r->errors) {
      std::cerr << "buildcachefs warm: ref " << backends::EncodeRefName(r->name) << ": " << e
                << "\n";
      rc = kExitErrors;
    }
  }

  // Recorded like `ls --state-dir`: du and gc learn the source and its blobs.
  if (auto idx = index::Index::Open(paths::IndexDb(state_dir)); !idx.ok()) {
    LOG_WARNING("cannot record the source in the index: " << idx.status().message());
  } else if (Status st = (*idx)->ReplaceSource(catalog::ToSnapshot(info, NowNs())); !st.ok()) {
    LOG_WARNING("cannot record the source in the index: " << st.message());
  }

  std::vector<WarmBlob> todo;
  std::set<Digest> seen;
  uint64_t total = 0, cached_bytes = 0, to_fetch = 0;
  size_t cached_blobs = 0;
  for (const auto* r : refs) {
    for (const RefBlob& b : RefBlobs(*r)) {
      if (b.role != BlobRole::kLayer || !seen.insert(b.digest).second) continue;
      total += b.size;
      if ((*store)->IsComplete(b.digest)) {
        ++cached_blobs;
        cached_bytes += b.size;
        continue;
      }
      to_fetch += b.size;
      todo.push_back({b, backends::EncodeRefName(r->name)});
    }
  }

  const bool tty = ::isatty(STDERR_FILENO) == 1;
  Progress progress(total, seen.size());
  progress.SetFirst(cached_bytes);
  if (tty) {
    (*store)->SetProgressCallback(
        [&progress](const Digest&, uint64_t present, uint64_t) { progress.Update(present); });
  }
  const auto start = std::chrono::steady_clock::now();
  uint64_t done = cached_bytes, fetched_bytes = 0;
  size_t fetched = 0, failed = 0;
  for (const WarmBlob& w : todo) {
    progress.StartBlob(done);
    if (tty) progress.Update(0, true);
    auto fd = (*store)->OpenVerified(w.blob.digest, w.blob.size,
                                     FetchFromBackend(*src->backend, w.blob.digest),
                                     StreamFromBackend(*src->backend, w.blob.digest));
    progress.FinishBlob();
    done += w.blob.size;
    if (!fd.ok()) {
      if (tty) std::cerr << "\n";
      std::cerr << "buildcachefs warm: ref " << w.ref << ": layer " << w.blob.position << " "
                << w.blob.digest.ToString() << ": " << fd.status().message() << "\n";
      ++failed;
      continue;
    }
    ::close(*fd);
    ++fetched;
    fetched_bytes += w.blob.size;
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (tty) {
    progress.StartBlob(done);
    progress.Update(0, true);
    std::cerr << "\n";
  }
  char secs_text[32];
  std::snprintf(secs_text, sizeof secs_text, "%.2f", secs);
  std::cout << "warm " << info.name << ": " << refs.size()
            << (refs.size() == 1 ? " ref, " : " refs, ") << seen.size() << " layer blobs ("
            << FormatBytes(total) << "): fetched " << fetched << " (" << FormatBytes(fetched_bytes)
            << ") in " << secs_text << " s";
  if (fetched_bytes > 0 && secs > 0) {
    std::cout << " (" << FormatBytes(static_cast<uint64_t>(fetched_bytes / secs)) << "/s)";
  }
  std::cout << ", " << cached_blobs << " already cached (" << FormatBytes(cached_bytes) << ")";
  if (failed > 0) std::cout << ", " << failed << " failed";
  std::cout << "; store " << (*store)->layout().dir() << "\n";
  (void)to_fetch;
  return failed > 0 ? kExitErrors : rc;
}

}  // namespace bcfs::cli
