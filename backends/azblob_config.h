// The pure pieces of type=azblob sources (FORMATS.md §6), kept apart from the
// network code so that tests call them directly:
//   - ResolveAzblobConfig: the attributes and environment BuildKit's
//     cache/remotecache/azblob getConfig reads, plus the credentials we find
//     (secret_access_key, a SAS in account_url, AZURE_STORAGE_CONNECTION_STRING,
//     AZURE_STORAGE_KEY / AZURE_STORAGE_SAS_TOKEN).
//   - blob names joined as Go's filepath.Join does;
//   - the List Blobs XML answer.
//
// Thread-safety: pure functions and values.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "backends/azure_auth.h"
#include "backends/source.h"
#include "core/status.h"
#include "core/time.h"

namespace bcfs::backends {

// Reads one environment variable; nullopt when unset (set-but-empty is "").
using EnvLookup = std::function<std::optional<std::string>(std::string_view)>;
// The process environment.
std::optional<std::string> ProcessEnv(std::string_view name);

struct AzblobConfig {
  std::string account_url;  // without query string or trailing '/'
  std::string account_name;
  std::string container;
  std::string prefix, blobs_prefix, manifests_prefix;
  // From name= (';'-separated, duplicates dropped, order kept); empty when no
  // name= was given: every manifest blob is a ref then (DESIGN.md §1.4).
  std::vector<std::string> names;
  AzureCredential credential;

  // "azblob account <a>, container <c>": the start of every message.
  std::string What() const;
  // <account_url>/<container>
  std::string ContainerUrl() const;
  // The blob names of a layer blob and of a manifest (Go filepath.Join).
  std::string BlobKey(std::string_view digest) const;
  std::string ManifestKey(std::string_view name) const;
  // The listing prefixes: "<prefix>/<blobs_prefix>/" and the manifests one
  // ("" when prefix and sub-prefix are both empty).
  std::string BlobsDir() const;
  std::string ManifestsDir() const;
};

// Precedence, as BuildKit's getConfig (attributes first, then its
// BUILDKIT_AZURE_STORAGE_* variables, then defaults):
//   account_url       attr, BUILDKIT_AZURE_STORAGE_ACCOUNT_URL, else the
//                     connection string's blob endpoint; required
//   account_name      attr, BUILDKIT_AZURE_STORAGE_ACCOUNT_NAME, the connection
//                     string's AccountName when the URL came from it, else the
//                     first DNS label of the URL's host — or, where BuildKit
//                     would take "127" from an IP-style (Azurite) URL such as
//                     http://127.0.0.1:10000/devstoreaccount1, the first path
//                     segment, as the Azure SDKs do for IP endpoints
//   container         attr, BUILDKIT_AZURE_STORAGE_CONTAINER, "buildkit-cache"
//   prefix            attr, BUILDKIT_AZURE_STORAGE_PREFIX, ""
//   blobs_prefix      attr, "blobs";  manifests_prefix  attr, "manifests"
// Credentials, first found: secret_access_key (Shared Key); a SAS query in
// account_url; AZURE_STORAGE_CONNECTION_STRING when it is for this account
// (its AccountKey, else its SharedAccessSignature); AZURE_STORAGE_KEY, then
// AZURE_STORAGE_SAS_TOKEN (when AZURE_STORAGE_ACCOUNT is unset or names this
// account); else anonymous. Errors (kInvalidArgument) never show a secret.
Result<AzblobConfig> ResolveAzblobConfig(const SourceSpec& spec, const EnvLookup& env);

// Go's filepath.Join on '/': non-empty parts joined, then Clean (duplicate
// slashes, "." and ".." resolved, no trailing slash; a leading '/' kept).
std::string GoPathJoin(const std::vector<std::string_view>& parts);

// One entry of a List Blobs answer.
struct ListedBlob {
  std::string name;
  uint64_t size = 0;
  TimeNs modified = 0;  // Last-Modified, 0 when absent
};
struct BlobListPage {
  std::vector<ListedBlob> blobs;
  std::string next_marker;  // "" on the last page
};
// Parses the EnumerationResults XML; kCorrupt when it is not one.
Result<BlobListPage> ParseBlobList(std::string_view xml);

}  // namespace bcfs::backends
