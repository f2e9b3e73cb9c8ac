// The GitHub Actions cache as BuildKit's type=gha uses it (FORMATS.md §7):
// the entry keys and the version string every request carries, the runtime
// token's claims (the branch scopes it may read), the source attributes
// completed from the runner's environment as buildx/buildctl do, the REST
// listing of cache entries, and the index-shape cache manifest synthesized
// from a cache config (DESIGN.md §1.5). Pure functions: no I/O, no clock
// (callers pass `now`), no environment (callers pass a lookup).
//
// Thread-safety: pure functions and values.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "backends/source.h"
#include "core/digest.h"
#include "core/status.h"
#include "core/time.h"

namespace bcfs::backends::gha {

// The layout version inside keys (BuildKit's gha.go constant "1").
inline constexpr std::string_view kLayoutVersion = "1";

// The `version` string of every request: hex sha256 of "|go-actionscache-1.0",
// the same for every key (go-actions-cache version()).
std::string CacheVersion();

// "buildkit-blob-1-sha256:<hex>".
std::string BlobKey(const Digest& digest);
// The blob a key names; nullopt for other keys (index entries, "-sig" bundles).
std::optional<Digest> BlobOfKey(std::string_view key);

// The first 8 hex characters of sha256(<GitHub scope>), e.g. "refs/heads/main"
// gives "f921bd05".
std::string ScopeHash(std::string_view github_scope);
// "index-<scope attr>-1-<ScopeHash(github scope)>": the prefix BuildKit loads
// (the newest "#<n>" entry wins).
std::string IndexKey(std::string_view scope_attr, std::string_view github_scope);

// An index key of `scope_attr`: "index-<scope attr>-1-<8 hex>#<n>", or
// "index-<scope attr>-1-<8 hex>-sig#<n>" when BuildKit signed the cache
// (FORMATS.md §7.3). nullopt for anything else (other scopes, blobs).
struct IndexKeyParts {
  std::string hash;  // the 8 hex characters
  int64_t n = 0;
  bool sig = false;  // a "-sig" index
};
std::optional<IndexKeyParts> ParseIndexKey(std::string_view key, std::string_view scope_attr);

// "buildkit-blob-1-sha256:<hex>-sig": the sigstore bundle of a signed index
// whose bytes hash to `index_digest`.
std::string SigBundleKey(const Digest& index_digest);

// The branch of a GitHub scope ("refs/heads/main" -> "main"); other scopes
// ("refs/pull/7/merge", "refs/tags/v1") are returned minus "refs/".
std::string BranchOf(std::string_view github_scope);

// The claims of ACTIONS_RUNTIME_TOKEN that matter, read as go-actions-cache
// does: the JWT's payload without checking its signature.
struct TokenScope {
  std::string scope;   // "refs/heads/main"
  int permission = 0;  // bit 1 read, bit 2 write
};
struct RuntimeToken {
  std::vector<TokenScope> scopes;       // in the token's order
  int64_t expires = 0, not_before = 0;  // Unix seconds
};
// kInvalidArgument when the text is not a JWT or lacks the claims `ac` (a
// JSON string holding the scope list), `exp` or `nbf`; kPermissionDenied when
// it expired or is not valid yet at `now_s`. Messages never quote the token.
Result<RuntimeToken> ParseRuntimeToken(std::string_view jwt, int64_t now_s);

// A Go duration ("10m", "1h30m", "2.5s", "500ms") in milliseconds.
Result<int64_t> ParseGoDuration(std::string_view text);

// The source's attributes completed from the environment as the client
// (buildx/buildctl) and the daemon (gha.go getConfig) do (FORMATS.md §7.1).
struct Config {
  std::string scope = "buildkit";
  std::string token;                // runtime token; "" when none (REST-only metadata)
  std::string url;                  // cache service base URL ("" when none)
  int version = 0;                  // 1 or 2 when url is set
  std::string repository, ghtoken;  // REST listing, used when both are set
  std::string api_url = "https://api.github.com";
  int64_t timeout_ms = 10 * 60 * 1000;
  // Who supplied the token and url, for messages ("token=", "$ACTIONS_RUNTIME_TOKEN").
  std::string token_origin, url_origin;

  bool HasService() const { return !token.empty() && !url.empty(); }
  bool HasRest() const { return !repository.empty() && !ghtoken.empty(); }
};
using Getenv = std::function<std::string(const char*)>;
// kInvalidArgument for a bad version, timeout or repository, and when
// neither a runtime token with a URL nor repository+ghtoken are available.
Result<Config> ResolveConfig(const SourceSpec& spec, const Getenv& getenv);

// One entry of GET /repos/{owner}/{repo}/actions/caches.
struct RestEntry {
  int64_t id = 0;
  std::string ref, key, version;
  uint64_t size = 0;
  TimeNs last_accessed = 0, created = 0;
};
struct RestPage {
  int64_t total_count = 0;
  std::vector<RestEntry> entries;
};
// kCorrupt when the text is not such a page.
Result<RestPage> ParseRestPage(std::string_view text);

// The answer to a cache lookup: Twirp GetCacheEntryDownloadURL (version 2:
// {ok, signed_download_url, matched_key}) or the v1 GET _apis/artifactcache/cache
// ({cacheKey, archiveLocation}). nullopt when the service has no entry (v2
// "ok": false, or no matched key); kCorrupt when the body is not a JSON object
// or a matched entry has no download URL.
struct LookupAnswer {
  std::string matched_key, url;
};
Result<std::optional<LookupAnswer>> ParseLookupAnswer(std::string_view body, int version);

// The index-shape cache manifest BuildKit's gha importer builds in memory
// from a cache config (gha.go makeDescriptorProviderPair): one descriptor per
// distinct layer blob in the config's order ({mediaType, digest, size,
// annotations: {buildkit/createdat?, containerd.io/uncompressed}}), then the
// config ({mediaType: cacheconfig, digest, size}). Compact JSON, fixed key
// order. kCorrupt (naming `doc`) when the config does not parse or a layer
// lacks annotations or a diffID, which BuildKit refuses too.
Result<std::string> SynthesizeManifest(std::string_view config_text, std::string_view doc);

}  // namespace bcfs::backends::gha
