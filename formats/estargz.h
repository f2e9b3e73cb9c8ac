// eStargz layers (FORMATS.md §9.2): the footer that locates the TOC, the TOC
// (`stargz.index.json`, a tar entry in its own gzip member) parsed into
// entries, and file reads that inflate only the gzip members holding the
// wanted chunks, optionally checking each chunk against its chunkDigest.
//
// Entry names are cleaned as stargz-snapshotter does (no "./", no leading
// "/", ".." resolved). The landmark files and stargz.index.json are hidden.
// Pure: blob bytes come through ByteSource.
//
// Thread-safety: free functions keep no state; Toc is an immutable value once
// built and may be shared between threads (each call brings its own source).
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/digest.h"
#include "core/status.h"
#include "core/time.h"
#include "formats/compression.h"

namespace bcfs::formats::estargz {

inline constexpr size_t kFooterSize = 51;
inline constexpr size_t kLegacyFooterSize = 47;
inline constexpr std::string_view kTocName = "stargz.index.json";
inline constexpr std::string_view kPrefetchLandmark = ".prefetch.landmark";
inline constexpr std::string_view kNoPrefetchLandmark = ".no.prefetch.landmark";
// Bounds the inflated TOC tar held in memory (a 100,000-entry TOC is ~30 MB).
inline constexpr uint64_t kMaxTocSize = 512u << 20;

struct Footer {
  uint64_t toc_offset = 0;  // blob offset of the TOC's gzip member
  size_t size = 0;          // kFooterSize, or kLegacyFooterSize for legacy stargz
};

// Parses `tail`, the last kFooterSize bytes of a blob: first as the 51-byte
// footer, then its last 47 bytes as the legacy footer (estargz.OpenFooter).
// kCorrupt saying why neither fits.
Result<Footer> ParseFooter(std::string_view tail);
// Reads and parses the footer of `src`; kCorrupt when there is none (a blob
// shorter than 51 bytes has none, as in BuildKit), or the source's error.
Result<Footer> ReadFooter(ByteSource& src);

enum class EntryType { kDir, kReg, kSymlink, kHardlink, kChar, kBlock, kFifo };
std::string_view EntryTypeName(EntryType t);  // the TOC's spelling: "dir", "reg", ...

// One chunk of a regular file's payload.
struct Chunk {
  uint64_t offset = 0;        // blob offset of the gzip member holding the chunk
  uint64_t inner_offset = 0;  // uncompressed offset of the chunk inside that member
  uint64_t chunk_offset = 0;  // offset of the chunk inside the file
  uint64_t chunk_size = 0;    // normalised: never 0 (a TOC's 0 means "to the end")
  uint64_t next_offset = 0;   // blob offset where the next member begins (read bound)
  Digest chunk_digest;        // sha256 of the chunk's bytes; empty when the TOC has none
};

struct Entry {
  std::string name;  // cleaned; "" is the layer root
  EntryType type = EntryType::kReg;
  uint64_t size = 0;  // regular files
  TimeNs mtime = 0;
  std::string link_name;  // symlink target as stored; hard-link target cleaned
  uint32_t mode = 0;      // tar mode bits (permissions, setuid/setgid/sticky)
  int64_t uid = 0;
  int64_t gid = 0;
  std::string user_name;   // gaps filled from earlier entries with the same uid
  std::string group_name;  // likewise by gid
  int64_t dev_major = 0;
  int64_t dev_minor = 0;
  std::map<std::string, std::string> xattrs;  // decoded bytes
  Digest digest;                              // sha256 of the whole payload (regular files)
  std::vector<Chunk> chunks;                  // regular files: contiguous, covering [0, size)
};

struct Toc {
  Digest digest;  // sha256 of the JSON bytes
  uint64_t toc_offset = 0;
  std::vector<Entry> entries;  // TOC order, chunk entries folded in, hidden names left out

  // The entry named `path` (cleaned first); the last one when a name repeats,
  // as tar extraction would leave it. nullptr when absent or hidden.
  const Entry* Find(std::string_view path) const;

  std::unordered_map<std::string, size_t> by_name;  // name -> index into entries
};

// "Clean" as stargz-snapshotter's cleanEntryName: path.Clean("/" + name)
// without the leading "/".
std::string CleanName(std::string_view name);

// Parses the TOC JSON (`{"version":1,"entries":[...]}`). `toc_offset` bounds
// chunk offsets and ends the last member. Errors are kCorrupt naming `doc`
// and the field; another TOC version is kUnsupported.
Result<Toc> ParseToc(std::string_view json, uint64_t toc_offset, std::string_view doc);

// Inflates the single gzip member at footer.toc_offset and returns the bytes
// of its first tar entry, which must be named stargz.index.json.
Result<std::string> ReadTocJson(ByteSource& src, const Footer& footer, std::string_view doc);

// Footer, TOC JSON and ParseToc in one call. When `expected` is not empty the
// TOC digest must equal it (the descriptor annotation
// containerd.io/snapshot/stargz/toc.digest), else kCorrupt.
Result<Toc> ReadToc(ByteSource& src, std::string_view doc, const Digest& expected = Digest());

// Reads [offset, offset + out.size()) of the regular file `path` (a hard link
// reads its target), inflating only the members of the chunks that overlap
// the range. With verify_chunks every chunk touched is inflated whole and
// checked against its chunkDigest (a chunk without one fails). kNotFound for
// an unknown path, kInvalidArgument for a non-file or a range past the end,
// kCorrupt for damaged data or a digest mismatch, or the source's error.
Status ReadFileRange(ByteSource& src, const Toc& toc, const std::string& path, uint64_t offset,
                     std::span<char> out, bool verify_chunks);

}  // namespace bcfs::formats::estargz
