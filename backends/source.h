// Source strings: the CSV a user gives buildx `--cache-from` (DESIGN.md §1.2).
//
// ParseSourceString() turns "type=s3,region=eu-west-1,bucket=b,name=main" into a
// SourceSpec: the cache type, the import-side attributes BuildKit would read
// (FORMATS.md §2.6, §3.1, §5.1, §6, §7.1), our own `as=` folder name, and the
// export-only keys that were pasted from a `--cache-to` string (accepted, ignored,
// reported so the caller can warn once). Everything else is refused with a
// kInvalidArgument that names the culprit and never shows a secret. The parser is
// pure: it reads no environment, so keys BuildKit may take from the daemon's
// environment (s3 bucket/region, azblob account_url) are not required here; the
// backend that opens the source decides.
//
// Thread-safety: free functions without state; SourceSpec is a value.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace bcfs::backends {

enum class SourceType { kLocal, kRegistry, kS3, kAzblob, kGha };

// "local", "registry", "s3", "azblob", "gha": the `type=` value.
std::string_view SourceTypeName(SourceType type);

struct SourceSpec {
  SourceType type = SourceType::kLocal;
  // Accepted import-side keys and their values. `dest` is stored as `src`; `as`
  // and export-only keys are not in here.
  std::map<std::string, std::string> attrs;
  // From `as=`; "" when absent.
  std::string as_name;
  // Export-only keys that were given, in the order given (accepted and ignored).
  std::vector<std::string> ignored_keys;

  // The value of `key`, or `fallback` when the key was not given. A key given
  // with an empty value returns "".
  std::string Get(std::string_view key, std::string_view fallback = "") const;
  bool Has(std::string_view key) const;
  // Canonical CSV "type=<t>,<k>=<v>,...[,as=<name>]" (attributes sorted by key),
  // with the values of secret keys (access_key_id, secret_access_key,
  // session_token, token, ghtoken) replaced by "***" and the user-info and query
  // of URL values (account_url, endpoint_url, url, url_v2) hidden. Safe for logs,
  // status.json and the tree; ParseSourceString() reads it back.
  std::string Redacted() const;

  friend bool operator==(const SourceSpec&, const SourceSpec&) = default;
};

// Parses one source string as Go's encoding/csv reads one record: fields split
// at commas, a field may be double-quoted ("" inside quotes is a quote), each
// field is key=value split at the first '='. Keys are case-sensitive. A string
// with a single field and no '=' at all is buildx's shorthand for
// `type=registry,ref=<text>`.
// Returns kInvalidArgument for: an empty string or empty field (a trailing or
// doubled comma), bad quoting, a field without '=', a missing or unknown type,
// type=inline, an unknown key (keys starting "buildcachefs." included, reserved
// for us), a key given twice (`src` and `dest` count as one), an empty required
// value (local src, registry ref), a local digest= that is not a digest, and an
// as= name that NamingRules refuse (see backends/naming.h).
Result<SourceSpec> ParseSourceString(std::string_view text);

}  // namespace bcfs::backends
