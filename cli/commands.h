// The subcommands of the `buildcachefs` binary. Each takes its arguments
// (after the subcommand name) and returns the process exit code:
// 0 success, 1 the command ran but found errors (printed), 2 usage errors.
//
// Thread-safety: called once from main.
#pragma once

#include <string>
#include <vector>

namespace bcfs::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitErrors = 1;
inline constexpr int kExitUsage = 2;

int RunLs(const std::vector<std::string>& args);
// `mount ...`, or with fuse3_form the `SOURCE MOUNTPOINT -o OPTS` form that
// mount.fuse3 runs (exactly one source).
int RunMount(const std::vector<std::string>& args, bool fuse3_form);
// Cache lifecycle (issue 6): each in its own cmd_<name>.cc.
int RunDu(const std::vector<std::string>& args);
int RunPrune(const std::vector<std::string>& args);
int RunGc(const std::vector<std::string>& args);
int RunVerify(const std::vector<std::string>& args);
int RunWarm(const std::vector<std::string>& args);
int RunFsck(const std::vector<std::string>& args);

}  // namespace bcfs::cli
