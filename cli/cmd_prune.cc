// `buildcachefs prune`: not built yet (issue 6).

#include <iostream>

#include "cli/commands.h"

namespace bcfs::cli {

int RunPrune(const std::vector<std::string>& args) {
  (void)args;
  std::cerr << "buildcachefs prune: not implemented yet\n";
  return kExitUsage;
}

}  // namespace bcfs::cli
