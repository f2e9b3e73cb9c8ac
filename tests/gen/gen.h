// The fixture generator: writes a BuildKit-format `type=local` cache directory
// (FORMATS.md §1–§3) deterministically from a seed. Layers are gzip, zstd,
// uncompressed or eStargz (§9.2, as BuildKit's lossless eStargz writer lays
// them out), optionally "rich": every tar entry kind and PAX feature a layer
// can carry, and overlay whiteouts between the layers of a chain.
//
// It is the independent route the tests compare the readers against, so it
// uses no project module except core/digest.h for SHA-256. Every function here
// is noexcept: failures come back as a Status with a message naming the
// problem.
//
// Thread-safety: stateless; concurrent calls must use different output dirs.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace bcfs::gen {

// The three top-level cache manifest shapes (FORMATS.md §3.2).
enum class Shape {
  kImageManifest,  // application/vnd.oci.image.manifest.v1+json, config = cache config
  kIndex,          // application/vnd.oci.image.index.v1+json, config last in manifests[]
  kManifestList,   // application/vnd.docker.distribution.manifest.list.v2+json
};

enum class Compression { kGzip, kZstd, kUncompressed, kEstargz };

// stargz-snapshotter's default chunk size (BuildKit keeps it).
inline constexpr int64_t kDefaultEstargzChunkSize = int64_t{4} << 20;

struct GenOptions {
  std::string out_dir;  // created; must not exist or be an empty directory
  Shape shape = Shape::kImageManifest;
  Compression compression = Compression::kGzip;
  int refs = 1;
  // One name per ref; empty means "latest", "ref1", "ref2", ….
  std::vector<std::string> ref_names;
  int layers = 3;            // layers per ref, base layer included
  int files = 4;             // regular files per layer
  int64_t file_size = 4096;  // approximate size of each file
  uint64_t seed = 1;
  // eStargz only: uncompressed bytes per chunk; every chunk of every regular
  // file starts a new gzip member.
  int64_t estargz_chunk_size = kDefaultEstargzChunkSize;
  // Adds to every layer: PAX long names and link targets, hard links, char and
  // block devices, a fifo, xattrs, nanosecond mtimes, setuid/setgid/sticky,
  // non-root owners with user and group names, a file of exactly file_size
  // bytes, an opaque directory and (above the base) a whiteout of a file of
  // the layer below. Off by default: the plain layers stay byte-identical.
  bool rich = false;
};

struct ParsedArgs {
  GenOptions options;
  bool help = false;  // --help was given; nothing else is meaningful
};

// One generated tag.
struct GeneratedRef {
  std::string name;                 // org.opencontainers.image.ref.name
  std::string manifest_digest;      // "sha256:<hex>" of the top-level manifest/index blob
  std::string manifest_media_type;  // its media type
};

// "image-manifest" | "index" | "manifest-list".
Result<Shape> ParseShape(std::string_view text) noexcept;
// "gzip" | "zstd" | "uncompressed" | "estargz".
Result<Compression> ParseCompression(std::string_view text) noexcept;
std::string_view ShapeName(Shape shape) noexcept;
std::string_view CompressionName(Compression compression) noexcept;

// Parses the command line without argv[0]. Accepts "--flag value" and
// "--flag=value".
Result<ParsedArgs> ParseArgs(const std::vector<std::string>& args) noexcept;
std::string Usage() noexcept;

// The ref names Generate will use for `options` (defaults filled in), or an
// error when the options are inconsistent.
Result<std::vector<std::string>> ResolveRefNames(const GenOptions& options) noexcept;

// Writes the cache directory. Returns one entry per ref, in index.json order.
Result<std::vector<GeneratedRef>> Generate(const GenOptions& options) noexcept;

}  // namespace bcfs::gen
