#include "gc/runner.h"

#include <dirent.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>

#include "core/log.h"

namespace bcfs::gc {
namespace {

Role ToGcRole(index::Role r) {
  switch (r) {
    case index::Role::kManifest:
      return Role::kManifest;
    case index::Role::kConfig:
      return Role::kConfig;
    case index::Role::kDerived:
      return Role::kDerived;
    case index::Role::kLayer:
      break;
  }
  return Role::kLayer;
}

bool IsHex64(std::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

// The names in `dir`; an absent folder has none.
Result<std::vector<std::string>> List(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    if (errno == ENOENT) return out;
    return ErrnoError(errno, "list " + dir);
  }
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") out.push_back(std::move(name));
  }
  ::closedir(d);
  return out;
}

}  // namespace

std::string_view PlaceName(Place place) {
  switch (place) {
    case Place::kBlob:
      return "blob";
    case Place::kPartial:
      return "partial";
    case Place::kDerived:
      return "derived";
  }
  return "?";
}

Result<std::vector<StoredItem>> CollectItems(const store::Layout* layout,
                                             const std::string& derived_dir,
                                             const std::vector<index::BlobUse>& uses,
                                             const std::set<Digest>& pinned) {
  std::map<std::string, const index::BlobUse*> by_digest;
  for (const auto& u : uses) by_digest[u.digest.ToString()] = &u;
  std::vector<StoredItem> out;
  auto add = [&](Place place, const std::string& path, const std::string& hex) -> Status {
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) {
      if (errno == ENOENT) return OkStatus();  // gone meanwhile
      return ErrnoError(errno, "stat " + path);
    }
    if (!S_ISREG(st.st_mode)) return OkStatus();
    StoredItem s;
    s.place = place;
    s.path = path;
    s.item.digest = "sha256:" + hex;
    s.item.size = static_cast<uint64_t>(st.st_blocks) * 512;
    s.item.role = place == Place::kDerived ? Role::kDerived : Role::kLayer;
    if (auto it = by_digest.find(s.item.digest); it != by_digest.end()) {
      const index::BlobUse& u = *it->second;
      s.item.sources = u.sources;
      s.item.refs = u.refs;
      s.item.media_type = u.media_type;
      if (place != Place::kDerived && u.role) s.item.role = ToGcRole(*u.role);
      s.item.last_used = u.last_access;
      s.item.use_count = u.use_count;
    }
    if (s.item.last_used == 0) {
      // Never accessed through a mount (e.g. fetched by `warm`): its file
      // time stands in, so fresh content is not the first to go.
      s.item.last_used = static_cast<TimeNs>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    }
    auto d = Digest::Parse(s.item.digest);
    s.item.pinned = d.ok() && pinned.count(*d) > 0;
    out.push_back(std::move(s));
    return OkStatus();
  };
  const std::string blob_dir = layout ? layout->BlobDir("sha256") : "";
  BCFS_ASSIGN_OR_RETURN(std::vector<std::string> blobs,
                        layout ? List(blob_dir) : std::vector<std::string>());
  for (const auto& name : blobs) {
    if (IsHex64(name)) BCFS_RETURN_IF_ERROR(add(Place::kBlob, blob_dir + "/" + name, name));
  }
  const std::string partial_dir = layout ? layout->PartialDir("sha256") : "";
  BCFS_ASSIGN_OR_RETURN(std::vector<std::string> partials,
                        layout ? List(partial_dir) : std::vector<std::string>());
  for (const auto& name : partials) {
    const std::string_view suffix = ".data";
    if (name.size() == 64 + suffix.size() && name.ends_with(suffix) &&
        IsHex64(name.substr(0, 64))) {
      const std::string hex = name.substr(0, 64);
      BCFS_RETURN_IF_ERROR(add(Place::kPartial, partial_dir + "/" + name, hex));
      // Its record counts too.
      struct stat st {};
      const std::string ranges = partial_dir + "/" + hex + ".ranges";
      if (::lstat(ranges.c_str(), &st) == 0 && !out.empty() &&
          out.back().place == Place::kPartial) {
        out.back().item.size += static_cast<uint64_t>(st.st_blocks) * 512;
      }
    }
  }
  if (!derived_dir.empty()) {
    const std::string dir = derived_dir + "/sha256";
    BCFS_ASSIGN_OR_RETURN(std::vector<std::string> derived, List(dir));
    for (const auto& name : derived) {
      if (IsHex64(name)) BCFS_RETURN_IF_ERROR(add(Place::kDerived, dir + "/" + name, name));
    }
  }
  return out;
}

uint64_t IndexBytes(const std::string& index_path) {
  uint64_t total = 0;
  for (const char* suffix : {"", "-wal", "-shm"}) {
    struct stat st {};
    if (::stat((index_path + suffix).c_str(), &st) == 0) {
      total += static_cast<uint64_t>(st.st_blocks) * 512;
    }
  }
  return total;
}

Result<FsStats> StatFs(const std::string& dir) {
  struct statvfs vfs {};
  if (::statvfs(dir.c_str(), &vfs) != 0) return ErrnoError(errno, "statfs " + dir);
  FsStats fs;
  fs.total = static_cast<uint64_t>(vfs.f_blocks) * vfs.f_frsize;
  fs.free = static_cast<uint64_t>(vfs.f_bfree) * vfs.f_frsize;
  return fs;
}

Result<GcRun> RunGc(const GcRequest& req) {
  BCFS_CHECK(req.index != nullptr);
  BCFS_ASSIGN_OR_RETURN(std::vector<index::BlobUse> uses, req.index->ListBlobUses());
  GcRun run;
  BCFS_ASSIGN_OR_RETURN(run.items, CollectItems(req.layout, req.derived_dir, uses, req.pinned));
  BCFS_ASSIGN_OR_RETURN(FsStats fs, StatFs(req.layout ? req.layout->dir() : req.derived_dir));
  std::vector<Item> items;
  items.reserve(run.items.size());
  for (const auto& s : run.items) items.push_back(s.item);
  PlanInput in;
  in.now = req.now;
  in.fs = fs;
  in.extra_used = IndexBytes(req.index_path);
  run.plan = PlanGc(items, req.policies, in);
  if (!req.execute) return run;
  for (const Eviction& e : run.plan.evictions) {
    const StoredItem& s = run.items[e.item];
    Status st;
    if (s.place == Place::kDerived) {
      if (::unlink(s.path.c_str()) != 0 && errno != ENOENT)
        st = ErrnoError(errno, "unlink " + s.path);
    } else if (req.store == nullptr) {
      st = InternalError("no content store to evict from");
    } else {
      auto d = Digest::Parse(s.item.digest);
      st = d.ok() ? req.store->Evict(*d) : d.status();
    }
    if (!st.ok()) {
      run.errors.push_back(std::string(PlaceName(s.place)) + " " + s.item.digest + ": " +
                           st.message());
      continue;
    }
    run.evicted.push_back(e.item);
    run.bytes_freed += s.item.size;
    LOG_INFO("gc: evicted " << PlaceName(s.place) << " " << s.item.digest << " (" << s.item.size
                            << " bytes, rule " << e.rule + 1 << ")");
  }
  return run;
}

}  // namespace bcfs::gc
