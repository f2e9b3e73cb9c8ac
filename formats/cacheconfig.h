// BuildKit's cache config (application/vnd.buildkit.cacheconfig.v0,
// FORMATS.md §1) and how its records turn into layer chains (§1.2).
//
// Gotchas kept here (FORMATS.md §10): a missing "parent" means 0 and -1 means
// base; inside records "layers" are results (one top layer, parents followed)
// and "chains" are explicit bottom-first lists (parents ignored); layers are
// sorted by digest, so a parent may come after its child; one blob may head
// several layer entries; keys match case-insensitively as in Go.
//
// Thread-safety: pure functions and values.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/digest.h"
#include "core/status.h"
#include "core/time.h"
#include "formats/json_util.h"

namespace bcfs::formats {

// Only s3, gha and azblob write these (no manifest holds descriptor annotations there).
struct LayerAnnotations {
  std::string media_type;
  Digest diff_id;
  int64_t size = -1;  // -1 = absent
  TimeNs created_at = 0;
};

struct CacheLayer {
  Digest blob;
  int64_t parent = 0;  // -1 = base layer; a missing key is 0 (Go omitempty)
  std::optional<LayerAnnotations> annotations;
};

struct CacheResult {
  int64_t layer = 0;
  TimeNs created_at = 0;
};

struct ChainedResult {
  std::vector<int64_t> layers;  // bottom first
  TimeNs created_at = 0;
};

struct CacheInput {
  std::string selector;
  int64_t link = 0;
};

struct CacheRecord {
  std::string digest;                 // the cache key; opaque
  std::vector<CacheResult> results;   // JSON "layers"
  std::vector<ChainedResult> chains;  // JSON "chains"
  std::vector<std::vector<CacheInput>> inputs;
};

struct CacheConfig {
  std::vector<CacheLayer> layers;
  std::vector<CacheRecord> records;
};

// Parses a whole cache config document named `doc` in errors.
Result<CacheConfig> ParseCacheConfig(std::string_view text, std::string_view doc);
// Parses a bare JSON array of records (the inline cache, FORMATS.md §4).
Result<std::vector<CacheRecord>> ParseCacheRecords(const Json& array, std::string_view doc,
                                                   std::string_view path);

// One result of a record as a layer chain. Parent-following results keep only
// their top layer (chains share ancestors; a cache of long chains would
// otherwise cost chains x length); Layers() materializes the chain.
struct ResolvedResult {
  int64_t top = -1;                      // "layers" results: the top layer entry
  std::vector<int64_t> explicit_layers;  // "chains" results: positions, bottom first
  TimeNs created_at = 0;
  bool explicit_chain = false;  // came from "chains" rather than "layers"

  // The chain as positions in the config's layers, bottom first. `parents[i]`
  // is layers[i].parent; DecodeRecords has checked the chain is well formed.
  std::vector<int64_t> Layers(const std::vector<int64_t>& parents) const;
};

struct DecodedRecord {
  std::string digest;
  std::vector<std::vector<CacheInput>> inputs;
  std::vector<ResolvedResult> results;
};

struct DecodedConfig {
  std::vector<DecodedRecord> records;
  // Results dropped because a blob of their chain is not in the blob set (as
  // BuildKit drops them silently); one line each, naming record and blob.
  std::vector<std::string> dropped;
};

// Resolves every record's results into chains as BuildKit's parse.go does.
// has_blob says whether a blob is in the cache's blob set (the manifest's
// descriptors, or the layer annotations for s3/gha/azblob). Errors (kCorrupt,
// naming doc and field): a layer index or parent out of range, a parent loop
// ("invalid looping layer"), an empty input list, a link out of range, a loop
// among records.
Result<DecodedConfig> DecodeRecords(const CacheConfig& config,
                                    const std::function<bool(const Digest&)>& has_blob,
                                    std::string_view doc);

// The parent of every layer entry, for ResolvedResult::Layers.
std::vector<int64_t> LayerParents(const CacheConfig& config);

}  // namespace bcfs::formats
