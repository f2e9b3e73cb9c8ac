// Helpers shared by the cache lifecycle commands `du`, `verify` and `warm`
// (issue 6): opening sources from their strings, choosing refs, the blobs a
// ref reaches, a store FetchRange over a backend, aligned text tables.
//
// Thread-safety: plain functions; FetchFromBackend's result may be called
// from several threads at once (backends are thread-safe).
#pragma once

#include <cstdint>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "backends/source.h"
#include "catalog/catalog.h"
#include "core/digest.h"
#include "core/status.h"
#include "store/content_store.h"

namespace bcfs::cli {

// One source string, parsed and named (as= or its default folder name).
struct NamedSpec {
  backends::SourceSpec spec;
  std::string name;
};

// Parses every source string and assigns folder names as a mount would.
// kInvalidArgument (a usage error) naming the bad string or name. Warns once
// per source about export-only keys.
Result<std::vector<NamedSpec>> ParseSources(const std::vector<std::string>& texts);

// A source opened and read by the catalog.
struct OpenedSource {
  NamedSpec named;
  std::unique_ptr<backends::Backend> backend;
  catalog::SourceInfo info;
};

// Opens the backend and reads the source (catalog::ReadSource never fails; its
// problems are in info). Fails only when the backend cannot be opened.
Result<OpenedSource> OpenSource(const NamedSpec& named);

// What a blob is to a ref.
enum class BlobRole { kManifest, kConfig, kLayer };
const char* BlobRoleName(BlobRole role);

struct RefBlob {
  Digest digest;
  uint64_t size = 0;  // the descriptor's size
  BlobRole role = BlobRole::kLayer;
  int64_t position = -1;  // layers: position in the cache config
};

// Every distinct blob a ref reaches, in the order manifest, config, layers:
// the blobs the index records for it (catalog::ToSnapshot). The config and
// layers are absent when the manifest is unreadable; layers the manifest does
// not list (unknown size) are skipped.
std::vector<RefBlob> RefBlobs(const catalog::RefInfo& ref);

// The refs (then history entries, when include_history) whose raw name, path
// name or @<hex12> is `want`; all of them when want is "".
std::vector<const catalog::RefInfo*> SelectRefs(const catalog::SourceInfo& info,
                                                const std::string& want, bool include_history);

// A store::FetchRange reading `digest` from the backend: exactly out.size()
// bytes or an error (kCorrupt when the blob ends early).
store::FetchRange FetchFromBackend(backends::Backend& backend, const Digest& digest);
// The backend's one-request stream of a blob, or an empty function where the
// backend does not stream (the store then fetches parts in parallel).
store::FetchStream StreamFromBackend(backends::Backend& backend, const Digest& digest);

// Left-aligned columns separated by two spaces; columns marked in `right` are
// right-aligned. rows[0] is the header.
void PrintColumns(std::ostream& os, const std::vector<std::vector<std::string>>& rows,
                  const std::vector<bool>& right);

// "3 minutes ago", "2 days ago" (as buildx du prints LAST ACCESSED); "-" for 0.
std::string Ago(TimeNs t, TimeNs now);

TimeNs NowNs();

// "--log-level" handling shared by the commands: false (after a message on
// stderr) when the level is unknown.
bool ApplyLogLevel(const std::string& command, const std::string& text);

}  // namespace bcfs::cli
