// Every on-disk path the daemon owns, named in one place (LevelDB's
// filename.h habit): the state dir and what lives in it.
//
// Thread-safety: pure functions (DefaultStateDir reads the environment).
#pragma once

#include <string>

namespace bcfs::paths {

// /var/lib/buildcachefs for root, else $XDG_STATE_HOME/buildcachefs, else
// ~/.local/state/buildcachefs (DESIGN.md §1.1).
std::string DefaultStateDir();
// The SQLite index inside a state dir.
std::string IndexDb(const std::string& state_dir);
// The local content store (fetched blobs) inside a state dir.
std::string StoreDir(const std::string& state_dir);
// Derived content (uncompressed copies of layers) inside a state dir.
std::string DerivedDir(const std::string& state_dir);
// Catalogs read before, kept to skip reading an unchanged source again
// (catalog/catalog_cache.h), inside a state dir.
std::string CatalogCacheDir(const std::string& state_dir);

}  // namespace bcfs::paths
