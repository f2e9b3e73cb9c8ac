#include "tree/layer_table.h"

#include <sys/sysmacros.h>

#include <algorithm>
#include <functional>

namespace bcfs::tree {
namespace {

Kind KindOfTar(formats::TarType type) {
  switch (type) {
    case formats::TarType::kDir:
      return Kind::kDir;
    case formats::TarType::kSymlink:
      return Kind::kSymlink;
    case formats::TarType::kChar:
      return Kind::kCharDev;
    case formats::TarType::kBlock:
      return Kind::kBlockDev;
    case formats::TarType::kFifo:
      return Kind::kFifo;
    default:
      return Kind::kFile;
  }
}

}  // namespace

// While building, records are appended in tar order and found by (parent,
// name) through an open-addressing hash of record numbers: 4 bytes a slot,
// no node per entry. A slot holds the record a name shows now; replacing a
// name overwrites its slot, so records of replaced names (and everything
// under a replaced directory) are simply not reached when Finish walks the
// table from the root.
struct LayerTable::Builder::State {
  TimeNs implied_mtime = 0;
  std::vector<Record> records;
  std::string names;
  std::vector<Extra> extras;
  std::vector<uint32_t> slots;  // record numbers, kNone when empty; size a power of two
  size_t used = 0;

  std::string_view NameOf(const Record& r) const {
    return std::string_view(names).substr(r.name_off, r.name_len);
  }

  static size_t Hash(uint32_t parent, std::string_view name) {
    return std::hash<std::string_view>()(name) ^
           (static_cast<size_t>(parent) * 0x9e3779b97f4a7c15ULL);
  }

  // The slot of (parent, name): the one holding it, or the empty one where it goes.
  size_t SlotOf(uint32_t parent, std::string_view name) const {
    const size_t mask = slots.size() - 1;
    for (size_t s = Hash(parent, name) & mask;; s = (s + 1) & mask) {
      const uint32_t r = slots[s];
      if (r == kNone) return s;
      if (records[r].parent == parent && NameOf(records[r]) == name) return s;
    }
  }

  void Grow() {
    std::vector<uint32_t> old = std::move(slots);
    slots.assign(old.empty() ? 1024 : old.size() * 2, kNone);
    for (uint32_t r : old) {
      if (r != kNone) slots[SlotOf(records[r].parent, NameOf(records[r]))] = r;
    }
  }

  // The record `dir` shows as `name` (its hard-link target), or kNone.
  uint32_t Find(uint32_t dir, std::string_view name) const {
    const uint32_t r = slots[SlotOf(dir, name)];
    return r == kNone ? kNone : Shown(r);
  }

  uint32_t Shown(uint32_t r) const {
    return (records[r].flags & kHardlinkFlag) ? static_cast<uint32_t>(records[r].a) : r;
  }

  // Appends a record named `name` in `dir` and makes it what `dir` shows
  // there. kNone when the table is full (4 Gi records or names).
  uint32_t Put(uint32_t dir, std::string_view name, Kind kind) {
    if (records.size() >= kNone - 1 || names.size() + name.size() > UINT32_MAX) return kNone;
    if ((used + 1) * 2 > slots.size()) Grow();
    const size_t s = SlotOf(dir, name);
    const uint32_t old = slots[s];
    if (old != kNone) {
      // The name is replaced: what it showed loses a link.
      Record& o = records[Shown(old)];
      if (o.links > 1) --o.links;
    } else {
      ++used;
    }
    Record& r = records.emplace_back();
    r.parent = dir;
    r.name_off = static_cast<uint32_t>(names.size());
    r.name_len = static_cast<uint32_t>(name.size());
    r.kind = static_cast<uint8_t>(kind);
    names.append(name);
    const uint32_t n = static_cast<uint32_t>(records.size() - 1);
    slots[s] = n;
    return n;
  }

  // Follows a cleaned path from the root; kNone when a part is missing.
  uint32_t Resolve(std::string_view path) const {
    uint32_t cur = kRoot;
    size_t pos = 0;
    while (true) {
      const size_t slash = path.find('/', pos);
      cur = Find(cur, path.substr(pos, slash == std::string_view::npos ? slash : slash - pos));
      if (cur == kNone || slash == std::string_view::npos) return cur;
      pos = slash + 1;
    }
  }
};

LayerTable::Builder::Builder(TimeNs implied_mtime) : s_(std::make_unique<State>()) {
  s_->implied_mtime = implied_mtime;
  Record& root = s_->records.emplace_back();
  root.kind = static_cast<uint8_t>(Kind::kDir);
  root.mode = 0755;
  root.mtime = implied_mtime;
  s_->Grow();
}

LayerTable::Builder::~Builder() = default;

void LayerTable::Builder::Add(const formats::TarEntry& e, std::vector<std::string>* warnings) {
  State& s = *s_;
  if (e.path.empty()) return;  // "./": the layer folder itself
  const std::string_view path = e.path;
  auto full = [&] { warnings->push_back("\"" + e.path + "\": too many entries in one layer"); };
  uint32_t dir = kRoot;
  size_t pos = 0;
  for (size_t slash; (slash = path.find('/', pos)) != std::string_view::npos; pos = slash + 1) {
    const std::string_view part = path.substr(pos, slash - pos);
    uint32_t next = s.Find(dir, part);
    if (next != kNone && KindOfRecord(s.records[next]) != Kind::kDir) {
      warnings->push_back("\"" + e.path + "\": \"" + std::string(part) + "\" is not a directory");
      return;
    }
    if (next == kNone) {
      // A directory the tar implies without listing it.
      next = s.Put(dir, part, Kind::kDir);
      if (next == kNone) return full();
      Record& d = s.records[next];
      d.mode = 0755;
      d.mtime = s.implied_mtime;
      d.flags = kImpliedFlag;
    }
    dir = next;
  }
  const std::string_view name = path.substr(pos);
  if (e.type == formats::TarType::kHardlink) {
    const uint32_t target = s.Resolve(e.link_target);
    if (target == kNone || KindOfRecord(s.records[target]) == Kind::kDir) {
      warnings->push_back("\"" + e.path + "\": hard link to missing \"" + e.link_target + "\"");
      return;
    }
    if (s.Find(dir, name) == target) return;
    const uint32_t n = s.Put(dir, name, KindOfRecord(s.records[target]));
    if (n == kNone) return full();
    s.records[n].flags = kHardlinkFlag;
    s.records[n].a = target;
    ++s.records[target].links;
    return;
  }
  const Kind kind = KindOfTar(e.type);
  uint32_t n = s.Find(dir, name);
  if (n == kNone || kind != Kind::kDir || KindOfRecord(s.records[n]) != Kind::kDir) {
    n = s.Put(dir, name, kind);
    if (n == kNone) return full();
  }
  // else: a later entry for the same directory: its metadata wins.
  Record& r = s.records[n];
  r.flags = 0;
  r.mode = static_cast<uint16_t>(e.mode & 07777);
  r.uid = e.uid;
  r.gid = e.gid;
  r.mtime = static_cast<TimeNs>(e.mtime_sec) * 1000000000 + e.mtime_nsec;
  if (kind == Kind::kFile) {
    r.a = e.size;
    r.b = e.data_offset;
  }
  Extra x;
  if (kind == Kind::kSymlink) x.target = e.link_target;
  if (kind == Kind::kCharDev || kind == Kind::kBlockDev) x.rdev = makedev(e.dev_major, e.dev_minor);
  x.xattrs = e.xattrs;
  if (kind == Kind::kFile) x.sparse = e.sparse;
  if (x.target.empty() && x.rdev == 0 && x.xattrs.empty() && x.sparse.empty()) {
    r.extra = kNone;  // a directory's earlier extras, if any, are dropped by Finish
  } else if (r.extra != kNone) {
    s.extras[r.extra] = std::move(x);
  } else {
    r.extra = static_cast<uint32_t>(s.extras.size());
    s.extras.push_back(std::move(x));
  }
}

std::shared_ptr<const LayerTable> LayerTable::Builder::Finish() {
  State& s = *s_;
  // What each directory shows: the filled slots, by parent then name.
  std::vector<uint32_t> shown;
  shown.reserve(s.used);
  for (uint32_t r : s.slots) {
    if (r != kNone) shown.push_back(r);
  }
  s.slots = {};
  std::sort(shown.begin(), shown.end(), [&](uint32_t x, uint32_t y) {
    const Record &a = s.records[x], &b = s.records[y];
    if (a.parent != b.parent) return a.parent < b.parent;
    return s.NameOf(a) < s.NameOf(b);
  });
  // Breadth first from the root: each directory's children take the next
  // positions, so they are contiguous and in name order.
  auto out = std::make_shared<LayerTable>();
  std::vector<uint32_t> order{kRoot};  // old record numbers in their new order
  std::vector<uint32_t> renumber(s.records.size(), kNone);
  renumber[kRoot] = 0;
  std::vector<std::pair<uint32_t, uint32_t>> spans(1);  // per new position: children [first, end)
  for (size_t q = 0; q < order.size(); ++q) {
    const uint32_t old = order[q];
    const Record& r = s.records[old];
    if ((r.flags & kHardlinkFlag) || KindOfRecord(r) != Kind::kDir) continue;
    auto lo = std::lower_bound(shown.begin(), shown.end(), old,
                               [&](uint32_t x, uint32_t p) { return s.records[x].parent < p; });
    const uint32_t first = static_cast<uint32_t>(order.size());
    for (auto it = lo; it != shown.end() && s.records[*it].parent == old; ++it) {
      renumber[*it] = static_cast<uint32_t>(order.size());
      order.push_back(*it);
    }
    spans.resize(order.size());
    spans[q] = {first, static_cast<uint32_t>(order.size())};
  }
  shown = {};
  // Hard-link targets whose own name was replaced: kept, unlisted.
  const size_t listed = order.size();
  for (size_t q = 0; q < listed; ++q) {
    const Record& r = s.records[order[q]];
    if (!(r.flags & kHardlinkFlag)) continue;
    const uint32_t t = static_cast<uint32_t>(r.a);
    if (renumber[t] == kNone) {
      renumber[t] = static_cast<uint32_t>(order.size());
      order.push_back(t);
    }
  }
  spans.resize(order.size());
  out->records_.reserve(order.size());
  size_t name_bytes = 0;
  for (uint32_t old : order) name_bytes += s.records[old].name_len;
  out->names_.reserve(name_bytes);
  for (size_t q = 0; q < order.size(); ++q) {
    Record r = s.records[order[q]];
    const std::string_view name = s.NameOf(r);
    r.name_off = static_cast<uint32_t>(out->names_.size());
    out->names_.append(name);
    r.parent = q == 0 ? 0 : renumber[r.parent];  // kNone for an unlisted target
    if (r.flags & kHardlinkFlag) {
      r.a = renumber[static_cast<uint32_t>(r.a)];
    } else if (KindOfRecord(r) == Kind::kDir) {
      const auto [first, end] = spans[q];
      uint64_t subdirs = 0;
      for (uint32_t c = first; c < end; ++c) {
        const Record& child = s.records[order[c]];
        if (!(child.flags & kHardlinkFlag) && KindOfRecord(child) == Kind::kDir) ++subdirs;
      }
      r.a = first | static_cast<uint64_t>(end - first) << 32;
      r.b = subdirs;
    }
    if (r.extra != kNone) {
      out->extras_.push_back(std::move(s.extras[r.extra]));
      r.extra = static_cast<uint32_t>(out->extras_.size() - 1);
    }
    out->records_.push_back(r);
  }
  s_ = std::make_unique<State>();
  return out;
}

uint32_t LayerTable::ChildBegin(uint32_t dir) const {
  if (dir >= records_.size() || KindOf(dir) != Kind::kDir ||
      (records_[dir].flags & kHardlinkFlag)) {
    return 0;
  }
  return static_cast<uint32_t>(records_[dir].a);
}

uint32_t LayerTable::ChildEnd(uint32_t dir) const {
  if (dir >= records_.size() || KindOf(dir) != Kind::kDir ||
      (records_[dir].flags & kHardlinkFlag)) {
    return 0;
  }
  return static_cast<uint32_t>(records_[dir].a) + static_cast<uint32_t>(records_[dir].a >> 32);
}

uint32_t LayerTable::Child(uint32_t i) const {
  return (records_[i].flags & kHardlinkFlag) ? static_cast<uint32_t>(records_[i].a) : i;
}

std::string_view LayerTable::Name(uint32_t i) const {
  return std::string_view(names_).substr(records_[i].name_off, records_[i].name_len);
}

uint32_t LayerTable::Lookup(uint32_t dir, std::string_view name) const {
  const uint32_t begin = ChildBegin(dir), end = ChildEnd(dir);
  uint32_t lo = begin, hi = end;
  while (lo < hi) {
    const uint32_t mid = lo + (hi - lo) / 2;
    if (Name(mid) < name) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo < end && Name(lo) == name ? Child(lo) : kNone;
}

Attr LayerTable::AttrOf(uint32_t i, uint64_t ino) const {
  const Record& r = records_[i];
  Attr a;
  a.ino = ino;
  a.kind = KindOf(i);
  a.mode = r.mode;
  a.mtime = r.mtime;
  a.cache = CachePolicy::kImmutable;
  a.uid = r.uid;
  a.gid = r.gid;
  a.nlink = r.links;
  if (r.extra != kNone) a.rdev = extras_[r.extra].rdev;
  switch (a.kind) {
    case Kind::kDir:
      a.nlink = 2 + r.b;
      break;
    case Kind::kSymlink:
      a.size = Target(i).size();
      break;
    case Kind::kFile:
      a.size = r.a;
      break;
    default:
      break;
  }
  return a;
}

const std::string& LayerTable::Target(uint32_t i) const {
  static const std::string kEmpty;
  return records_[i].extra == kNone ? kEmpty : extras_[records_[i].extra].target;
}

const std::vector<std::pair<std::string, std::string>>& LayerTable::Xattrs(uint32_t i) const {
  static const std::vector<std::pair<std::string, std::string>> kEmpty;
  return records_[i].extra == kNone ? kEmpty : extras_[records_[i].extra].xattrs;
}

const std::vector<formats::TarSparseChunk>& LayerTable::Sparse(uint32_t i) const {
  static const std::vector<formats::TarSparseChunk> kEmpty;
  return records_[i].extra == kNone ? kEmpty : extras_[records_[i].extra].sparse;
}

size_t LayerTable::MemoryBytes() const {
  size_t n =
      records_.capacity() * sizeof(Record) + names_.capacity() + extras_.capacity() * sizeof(Extra);
  for (const Extra& x : extras_) {
    n += x.target.capacity() + x.sparse.capacity() * sizeof(formats::TarSparseChunk);
    for (const auto& [k, v] : x.xattrs) n += k.size() + v.size() + sizeof(k) + sizeof(v);
  }
  return n;
}

}  // namespace bcfs::tree
