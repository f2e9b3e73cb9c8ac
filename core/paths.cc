#include "core/paths.h"

#include <unistd.h>

#include <cstdlib>

namespace bcfs::paths {

std::string DefaultStateDir() {
  if (::geteuid() == 0) return "/var/lib/buildcachefs";
  if (const char* x = std::getenv("XDG_STATE_HOME"); x != nullptr && x[0] == '/') {
    return std::string(x) + "/buildcachefs";
  }
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "/tmp") + "/.local/state/buildcachefs";
}

std::string IndexDb(const std::string& state_dir) { return state_dir + "/index.db"; }

std::string StoreDir(const std::string& state_dir) { return state_dir + "/store"; }

}  // namespace bcfs::paths

namespace bcfs::paths {

std::string DerivedDir(const std::string& state_dir) { return state_dir + "/derived"; }

std::string CatalogCacheDir(const std::string& state_dir) { return state_dir + "/catalog"; }

}  // namespace bcfs::paths
