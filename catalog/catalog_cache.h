// A catalog read before, kept on disk so that a mount of an unchanged source
// skips ReadSource (parsing every manifest and cache config, a stat of every
// blob). Backend::Fingerprint says whether the source may have changed; the
// file holds the fingerprint it was read under, the source it belongs to and
// the whole SourceInfo in a compact versioned binary encoding whose payload is
// checked against a SHA-256 before use. The cache is an optimisation only: any
// problem with it (missing, unreadable, corrupt, another version) means the
// source is read again, and a read with errors is never kept, so a transient
// failure is retried by the next mount.
//
// Thread-safety: reentrant; concurrent writers of one file each write a temp
// file and rename it into place, the last one wins.
#pragma once

#include <string>
#include <string_view>

#include "backends/backend.h"
#include "catalog/catalog.h"
#include "core/status.h"

namespace bcfs::catalog {

// Every field of a SourceInfo (its refs, history, layers, records,
// descriptors and blob stats included) as bytes: a header with a magic, the
// format version and the SHA-256 of the payload, then the payload.
std::string EncodeSourceInfo(const SourceInfo& info);
// Reads what EncodeSourceInfo wrote. kCorrupt naming what is wrong (a bad
// magic, another version, a digest mismatch, the field that is truncated or
// malformed) for any other input; never trusts a length it has not checked.
Result<SourceInfo> DecodeSourceInfo(std::string_view bytes);

// ReadSource through the cache in cache_dir (paths::CatalogCacheDir; created
// 0700 when missing; "" disables the cache). The backend's fingerprint is
// taken first, so that a change during the read makes the next use miss.
// When the fingerprint is not "" and <cache_dir>/<key>.bin holds the same
// fingerprint and source (type, name, backend.Describe()), its SourceInfo is
// returned and *from_cache set to true. Otherwise the source is read and,
// when the read has no errors (warnings are fine), kept there. key is the
// sha256 hex of type, name and Describe(). Problems with the cache are logged
// as one warning naming the file and never fail the read. *version (when
// given) is set to what identifies the result: the fingerprint and this
// binary's encoding ("" when the backend has no fingerprint), the key under
// which RecordSource can store it in the index.
SourceInfo ReadSourceCached(backends::Backend& backend, const std::string& name,
                            const std::string& type, const std::string& cache_dir,
                            bool* from_cache = nullptr, std::string* version = nullptr);

// The file ReadSourceCached uses for a source (exposed for tests and tools).
std::string CatalogCacheFile(backends::Backend& backend, const std::string& name,
                             const std::string& type, const std::string& cache_dir);

}  // namespace bcfs::catalog
