// `buildcachefs du`: not built yet (issue 6).

#include <iostream>

#include "cli/commands.h"

namespace bcfs::cli {

int RunDu(const std::vector<std::string>& args) {
  (void)args;
  std::cerr << "buildcachefs du: not implemented yet\n";
  return kExitUsage;
}

}  // namespace bcfs::cli
