// Azure Blob Storage request authorization, as the REST reference documents it
// ("Authorize with Shared Key", "Create a service/account SAS"):
//   - Shared Key: Authorization "SharedKey <account>:<base64 HMAC-SHA256 of the
//     string-to-sign under the base64-decoded account key>"; the string-to-sign
//     is the verb, twelve standard header values, the canonicalized x-ms-*
//     headers and the canonicalized resource (/<account><encoded path> plus the
//     lower-cased, sorted, URL-decoded query parameters).
//   - SAS: a ready-made token (sv=…&sig=…) appended to every request URL; the
//     token is a secret and, as every query string, stays out of logs and
//     errors (http::RedactUrl).
//   - Connection strings (AZURE_STORAGE_CONNECTION_STRING): AccountName,
//     AccountKey, BlobEndpoint, SharedAccessSignature, DefaultEndpointsProtocol,
//     EndpointSuffix and UseDevelopmentStorage=true (Azurite's well-known
//     account).
//
// Thread-safety: pure functions; AzureCredential is immutable after creation
// and may sign requests from any number of threads.
#pragma once

#include <ctime>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "backends/http/http_client.h"
#include "core/status.h"

namespace bcfs::backends {

// The service version we speak (x-ms-version); Azurite 3.35 and Azure accept it.
inline constexpr std::string_view kAzureApiVersion = "2021-08-06";

// Azurite's development account (documented, public; not a secret).
inline constexpr std::string_view kAzuriteAccount = "devstoreaccount1";
inline constexpr std::string_view kAzuriteKey =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

// RFC 1123 date as x-ms-date wants it: "Sun, 11 Oct 2009 21:49:13 GMT".
std::string AzureHttpDate(std::time_t t);
// Parses that format (Last-Modified); kCorrupt when it is not one or its year
// is outside 1678-2261 (ns since 1970 must fit an int64).
Result<std::time_t> ParseAzureHttpDate(std::string_view text);

// Percent-encodes a blob name for a URL path: every byte but unreserved
// characters (A-Z a-z 0-9 - . _ ~) and '/' ("sha256:ab" -> "sha256%3Aab").
std::string AzureEscapePath(std::string_view name);
// Percent-encodes a query parameter value (everything but unreserved).
std::string AzureEscapeQuery(std::string_view value);

// The Shared Key string-to-sign of a blob-service request (service version
// 2015-02-21 or later: a zero Content-Length is an empty line). `url` is the
// request URL exactly as sent (path percent-encoded as on the wire);
// `headers` the request's headers (names case-insensitive); `range`, when not
// empty, the value of the Range header the HTTP client adds ("bytes=0-15").
std::string SharedKeyStringToSign(std::string_view method, std::string_view url,
                                  const std::vector<http::Header>& headers,
                                  std::string_view account, std::string_view range = "");

// Base64 of HMAC-SHA256(string_to_sign) under the base64-decoded key;
// kInvalidArgument when the key is not base64 (the message never shows it).
Result<std::string> SharedKeySignature(std::string_view string_to_sign,
                                       std::string_view base64_key);

// `url` with the SAS token appended to its query ('?' or '&'); a leading '?'
// of the token is dropped. An empty token leaves the URL as it is.
std::string AppendSas(std::string_view url, std::string_view sas);

// A parsed connection string: keys as Azure spells them (matching is
// case-insensitive), values verbatim. kInvalidArgument for a segment without
// '=' (never quoting the segment: it may hold the key).
struct AzureConnectionString {
  std::map<std::string, std::string> values;  // lower-cased key -> value

  std::string Get(std::string_view key) const;  // "" when absent
  // BlobEndpoint, else <protocol>://<account>.blob.<suffix>, else for
  // UseDevelopmentStorage=true http://127.0.0.1:10000/devstoreaccount1; "" when
  // none can be made.
  std::string BlobEndpoint() const;
  std::string AccountName() const;  // devstoreaccount1 for UseDevelopmentStorage
  std::string AccountKey() const;   // Azurite's key for UseDevelopmentStorage
  std::string Sas() const;          // SharedAccessSignature
};
Result<AzureConnectionString> ParseAzureConnectionString(std::string_view text);

// How requests to one account are authorized.
class AzureCredential {
 public:
  enum class Kind { kAnonymous, kSharedKey, kSas };

  static AzureCredential Anonymous();
  // kInvalidArgument when the key is not base64 (message names only the account).
  static Result<AzureCredential> SharedKey(std::string account, std::string base64_key);
  static AzureCredential Sas(std::string token);

  Kind kind() const { return kind_; }
  // "Shared Key", "a SAS token" or "anonymous access", plus where it came from
  // (set by the caller with set_origin): for messages.
  std::string Describe() const;
  void set_origin(std::string origin) { origin_ = std::move(origin); }

  // Authorizes `req` in place: adds x-ms-date (at `now`) and x-ms-version, then
  // Authorization (Shared Key; signs req.range as the Range header) or appends
  // the SAS token to req.url.
  Status Sign(http::Request& req, std::time_t now) const;

 private:
  Kind kind_ = Kind::kAnonymous;
  std::string account_;
  std::string key_;  // base64, checked at creation
  std::string sas_;
  std::string origin_;
};

}  // namespace bcfs::backends
