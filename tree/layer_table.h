// LayerTable: the entries of one indexed layer as one compact, immutable
// table (DESIGN.md §1.4), instead of a tree node per tar entry: a layer of a
// million entries costs ~60 bytes per entry plus its name, not ~1 KB.
//
// Built once from the layer's tar entries in stream order with the
// semantics a tar extraction has: directories a path implies are created
// (mode 0755, the layer's mtime, marked implied); a later entry replaces an
// earlier one of the same name, except that a later directory entry for a
// directory only updates its metadata (its contents stay); a hard link
// shares its target's record (one inode, nlink counts its names) and a name
// it replaces loses one link; an entry under a name that is not a directory,
// and a hard link to a missing name or to a directory, are skipped with a
// warning. Whiteouts (.wh.<name>) are kept as plain names; snapshots apply them.
//
// Layout: records in breadth-first order, each directory's children
// contiguous and sorted by name (Lookup is a binary search, a listing a
// slice); names in one pool; the rare facts (symlink target, device
// number, tar xattrs, sparse map) in a side table. Record 0 is the layer's
// root. A record of a hard link name points at its target's record, which
// is what callers see (Lookup and Child return it); a target whose own name
// was replaced stays, unlisted, after the listed records.
//
// Thread-safety: the Builder is single-threaded; a finished table is
// immutable and may be read from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/time.h"
#include "formats/tar.h"
#include "tree/tree.h"

namespace bcfs::tree {

class LayerTable {
 public:
  static constexpr uint32_t kRoot = 0;
  static constexpr uint32_t kNone = UINT32_MAX;

  class Builder {
   public:
    // `implied_mtime`: the mtime of directories the tar implies without
    // listing them (the layer blob's).
    explicit Builder(TimeNs implied_mtime);
    ~Builder();
    Builder(const Builder&) = delete;
    Builder& operator=(const Builder&) = delete;

    // Adds the next entry of the tar (in stream order); skipped entries add
    // a warning naming them to *warnings.
    void Add(const formats::TarEntry& e, std::vector<std::string>* warnings);
    // The finished table; the builder is empty afterwards.
    std::shared_ptr<const LayerTable> Finish();

   private:
    struct State;
    std::unique_ptr<State> s_;
  };

  // Records, listed or not (the root included).
  size_t size() const { return records_.size(); }

  // The record a directory `dir` shows as `name` (a hard link's target), or
  // kNone when there is none or `dir` is not a directory.
  uint32_t Lookup(uint32_t dir, std::string_view name) const;
  // The children of a directory are the records [ChildBegin, ChildEnd), in
  // name order; Child(i) is what record i shows (its hard-link target, or itself).
  uint32_t ChildBegin(uint32_t dir) const;
  uint32_t ChildEnd(uint32_t dir) const;
  uint32_t Child(uint32_t i) const;

  std::string_view Name(uint32_t i) const;
  Kind KindOf(uint32_t i) const { return static_cast<Kind>(records_[i].kind); }
  // A directory the tar implies without listing it.
  bool Implied(uint32_t i) const { return (records_[i].flags & kImpliedFlag) != 0; }
  // The attributes of record i (not a hard-link name: use Child first)
  // with inode number `ino`, as the tree shows them.
  Attr AttrOf(uint32_t i, uint64_t ino) const;
  // Symlinks: the target as stored.
  const std::string& Target(uint32_t i) const;
  // The tar's own extended attributes, in archive order.
  const std::vector<std::pair<std::string, std::string>>& Xattrs(uint32_t i) const;
  // Regular files: where their bytes are in the tar stream.
  uint64_t DataOffset(uint32_t i) const { return records_[i].b; }
  uint64_t DataSize(uint32_t i) const { return records_[i].a; }
  const std::vector<formats::TarSparseChunk>& Sparse(uint32_t i) const;

  // Bytes this table holds (records, names, side table), for the docs and tests.
  size_t MemoryBytes() const;

 private:
  static constexpr uint8_t kImpliedFlag = 1;
  static constexpr uint8_t kHardlinkFlag = 2;

  struct Record {
    TimeNs mtime = 0;
    // Files: a = size, b = data offset. Directories: a = first child |
    // child count << 32, b = subdirectories. Hard-link names: a = target.
    uint64_t a = 0, b = 0;
    uint32_t parent = 0;
    uint32_t name_off = 0, name_len = 0;
    uint32_t uid = 0, gid = 0;
    uint32_t links = 1;
    uint32_t extra = kNone;  // index into extras_
    uint16_t mode = 0;
    uint8_t kind = 0;
    uint8_t flags = 0;
  };
  static_assert(sizeof(Record) == 56);
  static Kind KindOfRecord(const Record& r) { return static_cast<Kind>(r.kind); }

  struct Extra {
    std::string target;
    uint64_t rdev = 0;
    std::vector<std::pair<std::string, std::string>> xattrs;
    std::vector<formats::TarSparseChunk> sparse;
  };

  std::vector<Record> records_;
  std::string names_;
  std::vector<Extra> extras_;
};

}  // namespace bcfs::tree
