// buildcachefs: BuildKit build caches as an ordinary read-only directory tree.

#include <iostream>
#include <string>
#include <vector>

#include "cli/commands.h"

namespace {

constexpr char kHelp[] = R"(Usage: buildcachefs COMMAND [ARGS...]

BuildKit build caches (docker buildx --cache-to type=local|registry|inline|s3|azblob|gha)
as something you can see into.

Commands:
  mount [-f] [-o OPTS] [--config FILE] SOURCE... MOUNTPOINT
                                    show caches as a read-only directory tree (FUSE)
  ls SOURCE [REF] [--format json]   refs, layers, records and history of a cache, without mounting
  du [SOURCE...]                    bytes per ref: total, shared, unique, cached, last use
  verify SOURCE [REF]               every blob present and intact (exit status says so)
  warm SOURCE [REF]                 fetch a remote cache's blobs into the local store
  prune SOURCE [--yes]              delete what no kept ref of the cache reaches
  gc [--max-used-space SIZE]        evict from the local store, least recently used first
  fsck [--repair]                   check that the local store and the index agree
  version                           print the version

  buildcachefs SOURCE MOUNTPOINT -o OPTS
                                    the mount form mount.fuse3 runs for fstab entries
                                    (type fuse.buildcachefs)

SOURCE is the CSV given to buildx --cache-from, e.g. type=local,src=/var/cache/bk.
Run `buildcachefs COMMAND --help` for a command's options.
)";

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
    std::cout << kHelp;
    return args.empty() ? bcfs::cli::kExitUsage : bcfs::cli::kExitOk;
  }
  const std::string cmd = args[0];
  if (cmd == "mount") return bcfs::cli::RunMount({args.begin() + 1, args.end()}, false);
  if (cmd == "ls") return bcfs::cli::RunLs({args.begin() + 1, args.end()});
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (cmd == "du") return bcfs::cli::RunDu(rest);
  if (cmd == "prune") return bcfs::cli::RunPrune(rest);
  if (cmd == "gc") return bcfs::cli::RunGc(rest);
  if (cmd == "verify") return bcfs::cli::RunVerify(rest);
  if (cmd == "warm") return bcfs::cli::RunWarm(rest);
  if (cmd == "fsck") return bcfs::cli::RunFsck(rest);
  if (cmd == "version" || cmd == "--version") {
    std::cout << "buildcachefs " << BCFS_VERSION << "\n";
    return bcfs::cli::kExitOk;
  }
  // mount.fuse3 runs `buildcachefs SOURCE MOUNTPOINT -o OPTS`; a source string
  // always has a '=' (type=...), a command never does.
  if (cmd.find('=') != std::string::npos) return bcfs::cli::RunMount(args, true);
  std::cerr << "buildcachefs: unknown command \"" << cmd << "\"\n\n" << kHelp;
  return bcfs::cli::kExitUsage;
}
