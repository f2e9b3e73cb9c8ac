// `buildcachefs fsck`: not built yet (issue 6).

#include <iostream>

#include "cli/commands.h"

namespace bcfs::cli {

int RunFsck(const std::vector<std::string>& args) {
  (void)args;
  std::cerr << "buildcachefs fsck: not implemented yet\n";
  return kExitUsage;
}

}  // namespace bcfs::cli
