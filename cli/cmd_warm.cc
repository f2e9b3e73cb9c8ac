// `buildcachefs warm`: not built yet (issue 6).

#include <iostream>

#include "cli/commands.h"

namespace bcfs::cli {

int RunWarm(const std::vector<std::string>& args) {
  (void)args;
  std::cerr << "buildcachefs warm: not implemented yet\n";
  return kExitUsage;
}

}  // namespace bcfs::cli
