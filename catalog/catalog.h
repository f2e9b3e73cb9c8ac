// The catalog reads a source the way BuildKit's importer does: refs ->
// top-level cache blobs -> cache configs (or inline caches) -> layers and
// records with their chains, and finds the cache manifests no ref reaches
// (history). Manifests and configs are small and always verified against their
// digests; layer blobs are only stat()ed here.
//
// Problems with one ref never hide the others: they are recorded as that ref's
// errors and warnings and reading goes on. The result is plain data that `ls`
// prints, the index stores and (later) the tree serves.
//
// Thread-safety: ReadSource is reentrant; the values are plain data.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "formats/cache_manifest.h"
#include "formats/cacheconfig.h"
#include "index/index.h"

namespace bcfs::catalog {

// BuildKit's registry and local importers refuse larger manifests and configs
// (FORMATS.md §1.5).
inline constexpr uint64_t kBuildKitDocumentLimit = 1u << 20;
// We read documents up to this size (and warn above kBuildKitDocumentLimit).
inline constexpr uint64_t kMaxDocumentSize = 64u << 20;

struct LayerInfo {
  int64_t position = 0;  // index in the cache config's `layers`
  Digest blob;
  int64_t parent = -1;  // position of the parent, -1 for a base layer
  int64_t size = -1;    // from the descriptor, -1 when unknown
  std::string media_type;
  std::string compression;  // gzip, zstd, estargz, uncompressed, unknown
  Digest diff_id;
  Digest toc_digest;  // eStargz: containerd.io/snapshot/stargz/toc.digest, empty when none
  TimeNs created = 0;
  bool listed = true;        // the manifest (or annotations) lists the blob
  bool present = true;       // the source holds the blob
  int64_t actual_size = -1;  // size in the source, -1 when absent/unknown
};

struct RefInfo {
  std::string name;                // raw ref name or "@<hex12>"
  bool history = false;            // a cache manifest that no ref reaches
  formats::Descriptor descriptor;  // the top-level blob as the source described it
  std::string raw_descriptor;      // its JSON as the source wrote it ("" when none)
  std::string shape;           // image-manifest, index, manifest-list, inline ("" when unreadable)
  std::string media_type;      // of the top-level document
  formats::Descriptor config;  // the cache config (or image config for inline)
  std::vector<LayerInfo> layers;
  std::vector<formats::DecodedRecord> records;
  size_t record_count = 0;
  uint64_t total_size = 0;   // manifest + config + distinct layer blobs (descriptor sizes)
  TimeNs created = 0;        // newest createdAt of layers and results
  TimeNs modified = 0;       // the source's write time of the top-level blob
  bool synthesized = false;  // the top-level blob is synthesized, not stored (s3, azblob, gha)
  std::vector<std::string> warnings;
  std::vector<std::string> errors;

  // Every blob the manifest names: itself, its config and its layer descriptors
  // (what BuildKit's reset=true walk keeps), empty when unreadable.
  std::vector<Digest> reaches;

  // The documents, verified against their digests (empty when unreadable).
  std::string manifest_bytes;
  std::string config_bytes;
  std::string inline_records_json;  // inline caches: the decoded records array as stored
};

struct SourceInfo {
  std::string name;                                         // folder name
  std::string type;                                         // local, registry, ...
  std::string location;                                     // the redacted source string
  std::vector<RefInfo> refs;                                // in the source's order
  std::vector<RefInfo> history;                             // sorted by digest
  uint64_t blob_count = 0, blob_bytes = 0;                  // every blob the source holds
  uint64_t unreferenced_count = 0, unreferenced_bytes = 0;  // blobs no ref reaches
  std::vector<std::string> warnings;
  std::vector<std::string> errors;  // source-level (e.g. index.json unreadable)
  std::vector<Digest> blobs;        // every blob the source holds (when it can list them)
  std::map<Digest, backends::BlobStat> blob_stats;  // their stats, taken once while listing
  TimeNs refs_modified = 0;                         // the source's write time of its ref list

  bool HasErrors() const;
};

// Reads everything the catalog knows about one source. Never fails: every
// problem is an error or warning in the result, naming its culprit.
SourceInfo ReadSource(backends::Backend& backend, const std::string& name, const std::string& type);

// The rows the index keeps for a source (DESIGN.md §2).
index::SourceSnapshot ToSnapshot(const SourceInfo& info, TimeNs refreshed);

// Stores what `info` says in the index. `key` is the backend's Fingerprint()
// taken before `info` was read ("" when it has none): when the index holds
// the source under that key already, only its refresh time changes (no
// snapshot is made: a warm mount of 100,000 blobs skips that work). A read
// with errors is stored by content (a retry may read more under the same key).
Status RecordSource(index::Index& index, const SourceInfo& info, const std::string& key,
                    TimeNs now);

}  // namespace bcfs::catalog
