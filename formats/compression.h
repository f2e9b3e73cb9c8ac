// Layer compression: detection as BuildKit does it (FORMATS.md §9.1) and
// random access into gzip, zstd and uncompressed streams through a seek index
// built in one pass over the compressed bytes.
//
// gzip keeps a seek point every `span` bytes of output at a deflate block
// boundary, with the 32 KiB of history needed to resume there (the zlib
// Z_BLOCK / inflatePrime / inflateSetDictionary technique). zstd keeps one
// point per frame; a single-frame stream can only be read from its start, so
// callers keep an uncompressed copy of those (SingleFrame()). The module is
// pure: compressed bytes come through ByteSource and nothing here touches files.
//
// Thread-safety: free functions keep no state; a call uses its ByteSource from
// the calling thread only. SeekIndex is a value.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace bcfs::formats {

// Reads bytes of a compressed blob (from the content store or a local file).
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  virtual uint64_t size() const = 0;
  // Fills `out` with exactly out.size() bytes starting at `offset`; a range
  // beyond size() is an error.
  virtual Status ReadAt(uint64_t offset, std::span<char> out) = 0;
};

// A ByteSource over bytes in memory (not copied: `data` must outlive it).
class MemoryByteSource : public ByteSource {
 public:
  explicit MemoryByteSource(std::string_view data) : data_(data) {}
  uint64_t size() const override { return data_.size(); }
  Status ReadAt(uint64_t offset, std::span<char> out) override;

 private:
  std::string_view data_;
};

enum class Compression { kUncompressed, kGzip, kZstd, kEstargz };
// "uncompressed", "gzip", "zstd", "estargz" (BuildKit's names).
std::string_view CompressionName(Compression c);

// Detection as BuildKit (FORMATS.md §9.1): an eStargz footer at the end first,
// then the gzip magic 1f 8b 08, then the zstd magic 28 b5 2f fd, else
// uncompressed. Fails only when the source cannot be read.
Result<Compression> DetectCompression(ByteSource& src);

// Where decompression can resume. For gzip, `in_offset` counts whole bytes of
// the blob consumed; when `bits` is non-zero, the low `bits` bits of the byte
// at in_offset - 1 still belong to the next deflate block. `window` is the
// history (at most 32 KiB, empty at the start of a gzip member) that
// back-references after the point may use. For zstd a point is a frame start:
// bits 0, window empty.
struct SeekPoint {
  uint64_t in_offset = 0;
  uint64_t out_offset = 0;
  int bits = 0;
  std::string window;

  friend bool operator==(const SeekPoint&, const SeekPoint&) = default;
};

// A seek index into the uncompressed stream. Points are sorted by out_offset
// (strictly increasing). Uncompressed streams need no points.
struct SeekIndex {
  Compression compression = Compression::kUncompressed;
  uint64_t uncompressed_size = 0;
  std::vector<SeekPoint> points;

  friend bool operator==(const SeekIndex&, const SeekIndex&) = default;
};

inline constexpr uint64_t kDefaultSpan = 2u << 20;
inline constexpr uint64_t kMinSpan = 64u << 10;
inline constexpr uint64_t kMaxSpan = 64u << 20;

// One pass over the whole compressed stream. Calls `sink` (when set) with
// every uncompressed chunk in order, so a caller can index the tar and hash
// the diffID in the same pass; a sink error stops the pass and is returned.
// Records seek points:
//   gzip / estargz: at the first deflate block boundary after every `span`
//     bytes of output (kMinSpan..kMaxSpan; the daemon uses 1-4 MiB), with the
//     window; a gzip member that starts a span gets a point with an empty
//     window. Multi-member streams are read to the end as Go's gzip reader does,
//     so any trailing bytes that are not a gzip member are an error.
//   zstd: a point at each frame start (found by decoding frame by frame;
//     frames that produce no output share the point before them).
//   uncompressed: none.
// Returns kCorrupt naming `doc` and the compressed offset for malformed or
// truncated input, kInvalidArgument for a bad span, or the source's error.
Result<SeekIndex> BuildSeekIndex(ByteSource& src, Compression c, std::string_view doc,
                                 const std::function<Status(std::string_view)>& sink,
                                 uint64_t span = kDefaultSpan);

// A pass that may end early (BuildSeekIndexUntil): `index` covers exactly
// the output handed to the sink (uncompressed_size is its length; no point
// lies past it), whether the stream ended, the sink stopped the pass or an
// error cut it short, so the bytes before a damaged spot stay readable.
struct SeekPass {
  SeekIndex index;
  Status status;         // OK when the stream ended cleanly or the sink stopped it
  bool stopped = false;  // the sink returned false
};

// BuildSeekIndex whose sink returns false to end the pass after that chunk
// (a tar indexer that saw the end of the archive, a bound on the output) or
// an error to abort it (returned in `status`).
SeekPass BuildSeekIndexUntil(ByteSource& src, Compression c, std::string_view doc,
                             const std::function<Result<bool>(std::string_view)>& sink,
                             uint64_t span = kDefaultSpan);

// True when random reads of this zstd index must decompress from the start
// (at most one frame start), so the caller should keep an uncompressed copy.
// False for every other compression.
bool SingleFrame(const SeekIndex& index);

// Reads uncompressed [offset, offset + out.size()), decompressing from the
// nearest seek point at or before offset (gzip: at most about one span; zstd:
// from the frame start). kInvalidArgument when the range ends beyond
// uncompressed_size; kCorrupt (naming the compressed offset) when the blob does
// not match the index or is damaged; or the source's error.
Status ReadUncompressed(ByteSource& src, const SeekIndex& index, uint64_t offset,
                        std::span<char> out);

// A compact binary form (magic, version, varints, CRC-32) to persist a
// SeekIndex in SQLite or a blob file. Decoding checks the checksum and every
// invariant above; anything wrong is kCorrupt.
std::string EncodeSeekIndex(const SeekIndex& index);
Result<SeekIndex> DecodeSeekIndex(std::string_view bytes);

}  // namespace bcfs::formats
