// `buildcachefs verify`: not built yet (issue 6).

#include <iostream>

#include "cli/commands.h"

namespace bcfs::cli {

int RunVerify(const std::vector<std::string>& args) {
  (void)args;
  std::cerr << "buildcachefs verify: not implemented yet\n";
  return kExitUsage;
}

}  // namespace bcfs::cli
