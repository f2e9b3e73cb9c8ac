// AWS Signature Version 4 (HMAC-SHA256 with OpenSSL) and the AWS credential
// chain, for the type=s3 backend (FORMATS.md §5.6).
//
// SignV4() computes the canonical request, the string to sign and the
// Authorization header of one request exactly as AWS's SigV4 documentation
// and test suite define them (S3 flavour: the path is URI-encoded once and
// never normalised). SignS3Headers() adds what S3 wants on every request:
// x-amz-date, x-amz-content-sha256 (the payload hash) and, for temporary
// credentials, x-amz-security-token, all signed.
//
// ResolveAwsCredentials() follows the AWS SDK's order: static keys of the
// source string (only when both the id and the secret are given, as
// BuildKit), then AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
// AWS_SESSION_TOKEN, then the shared files of the profile AWS_PROFILE
// (default "default"): AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials
// first, then AWS_CONFIG_FILE or ~/.aws/config. Web identity, SSO,
// credential_process and instance metadata are not implemented.
//
// Secrets never go into messages: errors name where a credential came from,
// never its value.
//
// Thread-safety: pure functions and values.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "backends/http/http_client.h"
#include "backends/source.h"
#include "core/status.h"
#include "core/time.h"

namespace bcfs::backends::s3 {

// SHA-256 of the empty payload (GET and HEAD bodies).
inline constexpr std::string_view kEmptyPayloadHash =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

struct AwsCredentials {
  std::string access_key_id, secret_access_key, session_token;
  // Where they came from, for messages: "the source string",
  // "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY", "profile p in /x/credentials";
  // "" when none were found (requests are sent unsigned).
  std::string origin;

  bool empty() const { return access_key_id.empty() || secret_access_key.empty(); }
};

// Percent-encodes every byte but A-Z a-z 0-9 - _ . ~ as %XX (upper-case hex);
// '/' is kept when keep_slash (paths), encoded otherwise (query values).
std::string UriEncode(std::string_view text, bool keep_slash);

using QueryParams = std::vector<std::pair<std::string, std::string>>;

// The canonical query string: names and values URI-encoded, sorted by name
// then value, "name=" for an empty value, joined with '&'. Also the query an
// S3 request is sent with, so that what is signed is what is sent.
std::string CanonicalQuery(const QueryParams& query);

struct SigningRequest {
  std::string method;  // GET, HEAD, PUT, POST
  std::string path;    // decoded, starting with '/'; URI-encoded once when signed
  QueryParams query;   // decoded names and values
  // Every header to sign, Host included; names in any case, values untrimmed;
  // a repeated name is signed as its values joined with ','.
  std::vector<http::Header> headers;
  std::string payload_hash;  // lower-case hex SHA-256 of the body, or "UNSIGNED-PAYLOAD"
};

struct SigningScope {
  std::string amz_date;  // "20150830T123600Z"
  std::string region;    // "us-east-1"
  std::string service;   // "s3"
};

struct SignedRequest {
  std::string canonical_request;
  std::string string_to_sign;
  std::string signed_headers;  // "host;x-amz-date"
  std::string signature;       // lower-case hex
  // "AWS4-HMAC-SHA256 Credential=<id>/<scope>, SignedHeaders=..., Signature=..."
  std::string authorization;
};

SignedRequest SignV4(const SigningRequest& req, const SigningScope& scope,
                     const AwsCredentials& creds);

// "20150830T123600Z" for a wall-clock time.
std::string AmzDate(TimeNs t);

// The headers to send with one S3 request to `host` (as in the Host header:
// the port only when it is not the scheme's default): x-amz-date,
// x-amz-content-sha256, x-amz-security-token when there is a session token,
// and Authorization. Without credentials only x-amz-content-sha256 (an
// anonymous request). Range is not signed: the HTTP client may resume a
// transfer with another Range.
std::vector<http::Header> SignS3Headers(const std::string& method, const std::string& host,
                                        const std::string& path, const QueryParams& query,
                                        const std::string& region, const AwsCredentials& creds,
                                        TimeNs now,
                                        std::string_view payload_hash = kEmptyPayloadHash);

// How the credential chain sees the process: its environment and home.
struct AwsEnvironment {
  std::function<std::string(const char*)> getenv;  // "" when unset
  std::string home;                                // for ~/.aws

  static AwsEnvironment Process();  // the real environment
};

// The credentials for `spec` (see the header paragraph). An empty result
// (origin "") when nothing is configured. kInvalidArgument when only one of
// access_key_id and secret_access_key is usable anywhere the chain stops
// (a profile with an id but no secret), or when AWS_PROFILE names a profile
// that neither shared file holds; kIo when a shared file exists but cannot
// be read.
Result<AwsCredentials> ResolveAwsCredentials(const SourceSpec& spec, const AwsEnvironment& env);

}  // namespace bcfs::backends::s3
