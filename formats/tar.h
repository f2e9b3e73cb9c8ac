// Incremental indexer of an uncompressed tar stream: for every entry it
// records the metadata and where the entry's data lies in the stream, so a
// file read can later be served by offset without another pass.
//
// Formats: V7, ustar (prefix + name), GNU tar (long names 'L', long links
// 'K', base-256 numeric fields, old sparse 'S' with extension blocks), POSIX
// pax ('x' per entry, 'g' global) including GNU sparse 0.0, 0.1 and 1.0,
// SCHILY.xattr.*, LIBARCHIVE.xattr.* and RHT.security.selinux.
//
// Reading rules where tar variants disagree: a global 'g' header applies
// its keys to every later entry except path, linkpath, size and GNU.sparse.*;
// an empty pax value means "use the header field" (an empty xattr stays an
// empty xattr); a hard link carries data only in a pax archive, as libarchive
// reads it; symlinks, devices, fifos and directories never carry data.
//
// Hostile input: every read is bounded by the block being parsed; a metadata
// entry (pax header, GNU long name) over kTarMaxMetaBytes and more than
// kTarMaxPendingMetaBytes of them before one entry are kCorrupt, as are bad
// header checksums, malformed pax records, unparsable numeric fields and sizes
// that do not fit in int64. Problems confined to one entry (a ".." component,
// NUL in a name, an inconsistent sparse map, an out-of-range uid) skip that
// entry and add a warning, so the rest of the layer stays readable. Whiteouts
// (".wh.*") are ordinary entries here.
//
// Thread-safety: a TarIndexer is a value with no shared state; use one per
// thread (or guard it). CleanTarPath and TarTypeName are pure functions.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/status.h"

namespace bcfs::formats {

enum class TarType { kFile, kDir, kSymlink, kHardlink, kChar, kBlock, kFifo };

// "file", "dir", "symlink", "hardlink", "char", "block", "fifo".
std::string_view TarTypeName(TarType type);

// One data region of a sparse file: `length` bytes of the logical file that
// start at `logical_offset` are stored in the stream at `stream_offset`.
// Chunks are in ascending, non-overlapping logical order; the gaps are holes
// (zeros). Chunks of length 0 are kept as the archive lists them (GNU tar
// ends a map with one at the real size); a file that is all hole gets one.
struct TarSparseChunk {
  uint64_t logical_offset = 0;
  uint64_t length = 0;
  uint64_t stream_offset = 0;

  bool operator==(const TarSparseChunk&) const = default;
};

struct TarEntry {
  // Cleaned: no leading "./" or "/", no trailing "/", empty and "."
  // components removed. "" is the archive's root directory ("./" or "/").
  std::string path;
  TarType type = TarType::kFile;
  uint32_t mode = 0;  // permission bits incl. setuid/setgid/sticky (07777)
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::string uname;
  std::string gname;
  int64_t mtime_sec = 0;
  uint32_t mtime_nsec = 0;  // from a pax mtime with a fraction, else 0
  // Regular file: the logical size (sparse: the real size). Hard link: the
  // size of the data it carries (pax archives only; usually 0). Else 0.
  uint64_t size = 0;
  // Stream offset of the first data byte: regular files (sparse ones: the
  // first byte after a GNU 1.0 map) and hard links that carry data; else 0.
  uint64_t data_offset = 0;
  std::vector<TarSparseChunk> sparse;  // non-empty exactly for sparse files
  // Symlink: the target as stored. Hard link: the cleaned target path.
  std::string link_target;
  uint32_t dev_major = 0;  // char and block devices only
  uint32_t dev_minor = 0;
  // Extended attributes in archive order, one per name (a name given twice,
  // as libarchive writes LIBARCHIVE.xattr.* and SCHILY.xattr.*, keeps its
  // first position and its last value).
  std::vector<std::pair<std::string, std::string>> xattrs;
  // Stream offset of the entry's first header block, pax and GNU extension
  // headers included.
  uint64_t header_offset = 0;

  bool operator==(const TarEntry&) const = default;
};

inline constexpr uint64_t kTarBlockSize = 512;
inline constexpr uint64_t kTarMaxMetaBytes = 1 << 20;         // one pax header or long name
inline constexpr uint64_t kTarMaxPendingMetaBytes = 4 << 20;  // all of them before one entry
inline constexpr uint64_t kTarMaxGlobalBytes = 1 << 20;       // all 'g' headers together
inline constexpr size_t kTarMaxSparseChunks = 1 << 18;        // per entry
inline constexpr size_t kTarMaxWarnings = 100;                // kept; the rest are counted

// Cleans an archive path as TarEntry::path describes. kCorrupt (with the
// reason, no document name) when it has a ".." component or a NUL byte.
Result<std::string> CleanTarPath(std::string_view raw);

class TarIndexer {
 public:
  // doc names the stream in errors and warnings ("layer sha256:ab12…").
  explicit TarIndexer(std::string doc);

  // Consumes the next bytes of the stream, in chunks of any size. Entries
  // become available as soon as their headers are parsed. Returns kCorrupt
  // naming the offset on a stream-level problem (bad checksum, malformed pax
  // header, unparsable size); the error is sticky and later calls return it
  // again. Bytes after the end-of-archive marker are ignored (eStargz puts its
  // TOC there).
  Status Feed(std::string_view bytes);

  // Declares the end of the stream. OK when it ended at an entry boundary or
  // after the end-of-archive marker (done() tells which). kCorrupt naming the
  // entry and the offsets when it ended inside a header, a pax header, a
  // sparse map or an entry's data; a stream that ends inside the zero padding
  // after the last data byte is only a warning.
  Status Finish();

  // The entries parsed since the last call, in stream order.
  std::vector<TarEntry> TakeEntries();

  // Problems that skipped an entry or were tolerated, in stream order; at
  // most kTarMaxWarnings, then one line counting the others.
  std::vector<std::string> warnings() const;

  // True once the end-of-archive marker (a zero block) was seen. Like GNU tar
  // and libarchive, one zero block ends the archive; the second is optional.
  bool done() const { return state_ == State::kDone; }

  // Bytes consumed so far.
  uint64_t offset() const { return offset_; }

 private:
  enum class State { kHeader, kMetaBody, kSparseExt, kSparseMap, kSkip, kDone, kFailed };

  // The entry whose headers are being read; reset after each entry.
  struct Pending {
    bool active = false;                                   // a header of this entry was seen
    uint64_t header_offset = 0;                            // first header block of the entry
    uint64_t meta_bytes = 0;                               // pax and long-name bytes so far
    std::vector<std::pair<std::string, std::string>> pax;  // local records, in order
    bool has_long_name = false;
    std::string long_name;
    bool has_long_link = false;
    std::string long_link;
  };

  // The sparse map of a GNU 1.0 entry, parsed line by line from data blocks.
  struct SparseMapReader {
    std::string line;  // partial line carried across blocks
    std::vector<uint64_t> numbers;
    bool count_known = false;
    uint64_t count = 0;
    uint64_t bytes = 0;  // map bytes consumed (whole blocks)
  };

  // What the pax keys of one entry set besides entry_'s own fields.
  struct PaxOverrides {
    std::optional<std::string> path, link, sparse_name;
    std::optional<uint64_t> size;  // of the stored data
    bool sparse_keys = false;      // any GNU.sparse.* key
    std::optional<uint64_t> sparse_major, sparse_minor, real_size;
    std::vector<TarSparseChunk> chunks;  // GNU sparse 0.0 and 0.1 maps
    bool bad_map = false;
  };

  Status ConsumeBlock(std::string_view block, uint64_t block_offset);
  Status ParseHeader(std::string_view block, uint64_t block_offset);
  Status FinishMeta();
  // Applies the global and local pax records to entry_; `name` is for
  // messages. kCorrupt only for a bad "size", which loses the stream's place.
  Status ApplyPax(std::string_view name, PaxOverrides* out);
  // Stores an id (uid, gid, device number) or skips the entry when it does
  // not fit in 32 bits.
  void SetId(const char* what, int64_t value, uint32_t* out);
  // Old GNU sparse (offset, length) pairs of 12-byte numeric fields.
  void AddOldSparseChunks(std::string_view area, uint64_t block_offset);
  Status ParseSparseExt(std::string_view block, uint64_t block_offset);
  Status ParseSparseMapBlock(std::string_view block, uint64_t block_offset);
  // Completes entry_ once its headers (and sparse map) are known: validates,
  // records or skips it, then arranges to skip its data.
  void CommitEntry(uint64_t data_start, uint64_t data_len);
  // After the last header block of an entry: reads a GNU 1.0 map next, or
  // commits the entry and skips its data.
  Status AfterHeaders();
  // Skips `bytes` (an entry's data and padding, or a pax header's padding).
  void StartSkip(uint64_t bytes, bool is_data);
  void SkipEntry(std::string reason);
  void Warn(std::string message);
  Status Fail(std::string message);
  std::string EntryName() const;

  std::string doc_;
  State state_ = State::kHeader;
  Status error_;
  uint64_t offset_ = 0;  // stream offset of the next byte Feed sees

  std::string block_;  // a partial 512-byte block

  // kMetaBody: the body of a pax or GNU long-name header.
  char meta_type_ = 0;
  uint64_t meta_offset_ = 0;
  uint64_t meta_size_ = 0;
  std::string meta_;

  // kSkip: bytes left to skip, and where the current entry's data ends.
  uint64_t skip_remaining_ = 0;
  uint64_t data_end_ = 0;
  uint64_t data_start_ = 0;
  bool skip_is_data_ = false;  // kSkip is inside an entry's data, not a header's padding

  Pending pending_;
  std::map<std::string, std::string> global_;  // 'g' records in force
  uint64_t global_bytes_ = 0;
  bool pax_seen_ = false;  // any 'x' or 'g' header so far (hard links may carry data)

  // The entry being assembled across sparse extension blocks or a 1.0 map.
  TarEntry entry_;
  std::string entry_raw_path_;  // before cleaning, for messages
  std::string entry_raw_link_;
  uint64_t entry_header_offset_ = 0;
  std::string skip_reason_;   // non-empty: the entry is dropped with this warning
  uint64_t stored_size_ = 0;  // bytes of data that follow the headers
  bool sparse_ = false;       // a GNU sparse file (any format)
  bool sparse_10_ = false;    // its map is at the start of the data
  uint64_t real_size_ = 0;    // the sparse file's logical size
  SparseMapReader map_;

  std::vector<TarEntry> entries_;
  std::vector<std::string> warnings_;
  uint64_t dropped_warnings_ = 0;
};

}  // namespace bcfs::formats
