#include "backends/gha_protocol.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "backends/backend_s3.h"
#include "core/base64.h"
#include "formats/cacheconfig.h"
#include "formats/json_util.h"
#include "formats/oci.h"

namespace bcfs::backends::gha {
namespace {

using formats::Json;

constexpr std::string_view kBlobPrefix = "buildkit-blob-1-";

bool IsLowerHex(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// Go's strconv.ParseBool.
std::optional<bool> ParseBool(std::string_view v) {
  if (v == "1" || v == "t" || v == "T" || v == "true" || v == "TRUE" || v == "True") return true;
  if (v == "0" || v == "f" || v == "F" || v == "false" || v == "FALSE" || v == "False") {
    return false;
  }
  return std::nullopt;
}

// base64url without padding (RFC 7515 §2) into bytes.
Result<std::string> Base64UrlDecode(std::string_view text) {
  std::string s(text);
  for (char& c : s) {
    if (c == '-') c = '+';
    if (c == '_') c = '/';
  }
  while (s.size() % 4 != 0) s += '=';
  return Base64Decode(s);
}

Result<int64_t> NumericClaim(const Json& claims, const char* name) {
  auto it = claims.find(name);
  if (it == claims.end() || !it->is_number()) {
    return InvalidArgumentError(std::string("the runtime token has no numeric \"") + name +
                                "\" claim");
  }
  // Unix seconds whose nanoseconds fit an int64 (until 2262); anything else
  // cannot be a real token's time and would overflow.
  const double v = it->get<double>();
  if (!(v > -9.2e9 && v < 9.2e9)) {
    return InvalidArgumentError(std::string("the runtime token's \"") + name +
                                "\" claim is out of range");
  }
  return static_cast<int64_t>(v);
}

}  // namespace

std::string CacheVersion() { return Digest::Sha256Of("|go-actionscache-1.0").hex(); }

std::string BlobKey(const Digest& digest) { return std::string(kBlobPrefix) + digest.ToString(); }

std::optional<Digest> BlobOfKey(std::string_view key) {
  if (key.substr(0, kBlobPrefix.size()) != kBlobPrefix) return std::nullopt;
  auto d = Digest::Parse(key.substr(kBlobPrefix.size()));
  if (!d.ok()) return std::nullopt;
  return *d;
}

std::string ScopeHash(std::string_view github_scope) {
  return Digest::Sha256Of(github_scope).hex().substr(0, 8);
}

std::string IndexKey(std::string_view scope_attr, std::string_view github_scope) {
  return "index-" + std::string(scope_attr) + "-" + std::string(kLayoutVersion) + "-" +
         ScopeHash(github_scope);
}

std::optional<IndexKeyParts> ParseIndexKey(std::string_view key, std::string_view scope_attr) {
  const std::string prefix =
      "index-" + std::string(scope_attr) + "-" + std::string(kLayoutVersion) + "-";
  if (key.substr(0, prefix.size()) != prefix) return std::nullopt;
  std::string_view rest = key.substr(prefix.size());
  constexpr std::string_view kSig = "-sig#";
  const bool sig = rest.size() > 8 && rest.substr(8, kSig.size()) == kSig;
  const size_t num_at = sig ? 8 + kSig.size() : 9;
  if (rest.size() <= num_at || (!sig && rest[8] != '#')) return std::nullopt;
  std::string_view hash = rest.substr(0, 8), num = rest.substr(num_at);
  if (!IsLowerHex(hash) || num.empty() || num.size() > 18) return std::nullopt;
  if (!std::all_of(num.begin(), num.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  return IndexKeyParts{std::string(hash), std::strtoll(std::string(num).c_str(), nullptr, 10), sig};
}

std::string SigBundleKey(const Digest& index_digest) { return BlobKey(index_digest) + "-sig"; }

std::string BranchOf(std::string_view github_scope) {
  constexpr std::string_view kHeads = "refs/heads/", kRefs = "refs/";
  if (github_scope.substr(0, kHeads.size()) == kHeads) {
    return std::string(github_scope.substr(kHeads.size()));
  }
  if (github_scope.substr(0, kRefs.size()) == kRefs) {
    return std::string(github_scope.substr(kRefs.size()));
  }
  return std::string(github_scope);
}

Result<RuntimeToken> ParseRuntimeToken(std::string_view jwt, int64_t now_s) {
  const size_t dot1 = jwt.find('.');
  const size_t dot2 = dot1 == std::string_view::npos ? dot1 : jwt.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos) {
    return InvalidArgumentError("the runtime token is not a JWT (want three dot-separated parts)");
  }
  auto payload = Base64UrlDecode(jwt.substr(dot1 + 1, dot2 - dot1 - 1));
  if (!payload.ok()) return InvalidArgumentError("the runtime token's payload is not base64url");
  Json claims = Json::parse(*payload, nullptr, false);
  if (!claims.is_object()) {
    return InvalidArgumentError("the runtime token's payload is not a JSON object");
  }
  auto ac = claims.find("ac");
  if (ac == claims.end()) {
    return InvalidArgumentError("the runtime token has no access controls (claim \"ac\")");
  }
  if (!ac->is_string()) {
    return InvalidArgumentError(std::string("the runtime token's \"ac\" claim is a JSON ") +
                                std::string(formats::JsonTypeName(*ac)) + ", not a string");
  }
  RuntimeToken t;
  BCFS_ASSIGN_OR_RETURN(t.expires, NumericClaim(claims, "exp"));
  BCFS_ASSIGN_OR_RETURN(t.not_before, NumericClaim(claims, "nbf"));
  Json scopes = Json::parse(ac->get<std::string>(), nullptr, false);
  if (!scopes.is_array()) {
    return InvalidArgumentError("the runtime token's \"ac\" claim is not a JSON list of scopes");
  }
  for (const Json& s : scopes) {
    if (!s.is_object()) continue;
    formats::FieldReader r(s, "runtime token", "ac");
    TokenScope ts;
    if (const Json* v = r.Find("Scope"); v && v->is_string()) ts.scope = v->get<std::string>();
    if (const Json* v = r.Find("Permission"); v && v->is_number_integer()) {
      ts.permission = v->get<int>();
    }
    if (!ts.scope.empty()) t.scopes.push_back(std::move(ts));
  }
  if (now_s > t.expires) {
    return Status(Code::kPermissionDenied,
                  "the runtime token expired at " + FormatRfc3339(t.expires * 1000000000LL));
  }
  if (now_s < t.not_before) {
    return Status(Code::kPermissionDenied, "the runtime token is not valid before " +
                                               FormatRfc3339(t.not_before * 1000000000LL));
  }
  return t;
}

Result<int64_t> ParseGoDuration(std::string_view text) {
  const std::string bad = "\"" + std::string(text) + "\" is not a duration (e.g. 10m, 1h30m, 90s)";
  std::string_view s = text;
  if (s == "0") return int64_t{0};
  if (s.empty()) return InvalidArgumentError(bad);
  double total_ms = 0;
  while (!s.empty()) {
    size_t i = 0;
    while (i < s.size() && ((s[i] >= '0' && s[i] <= '9') || s[i] == '.')) ++i;
    if (i == 0) return InvalidArgumentError(bad);
    const double n = std::strtod(std::string(s.substr(0, i)).c_str(), nullptr);
    s.remove_prefix(i);
    size_t j = 0;
    while (j < s.size() && !((s[j] >= '0' && s[j] <= '9') || s[j] == '.')) ++j;
    const std::string_view unit = s.substr(0, j);
    s.remove_prefix(j);
    double ms;
    if (unit == "ns") {
      ms = 1e-6;
    } else if (unit == "us" || unit == "µs") {
      ms = 1e-3;
    } else if (unit == "ms") {
      ms = 1;
    } else if (unit == "s") {
      ms = 1000;
    } else if (unit == "m") {
      ms = 60000;
    } else if (unit == "h") {
      ms = 3600000;
    } else {
      return InvalidArgumentError(bad);
    }
    total_ms += n * ms;
  }
  return static_cast<int64_t>(std::llround(total_ms));
}

Result<Config> ResolveConfig(const SourceSpec& spec, const Getenv& getenv) {
  const std::string where = "source " + spec.Redacted();
  Config c;
  c.scope = spec.Get("scope", "buildkit");
  // The client's defaults (buildx/buildctl loadGithubEnv): token and URLs
  // from the runner's variables when the source string has none.
  if (spec.Has("token")) {
    c.token = spec.Get("token");
    c.token_origin = "token=";
  } else {
    c.token = getenv("ACTIONS_RUNTIME_TOKEN");
    c.token_origin = "$ACTIONS_RUNTIME_TOKEN";
  }
  std::string url = spec.Get("url"), url_v2 = spec.Get("url_v2"), version = spec.Get("version");
  std::string url_origin = "url=", url_v2_origin = "url_v2=";
  if (!spec.Has("url")) {
    url = getenv("ACTIONS_CACHE_URL");
    url_origin = "$ACTIONS_CACHE_URL";
    if (url.empty()) {
      url = getenv("ACTIONS_RESULTS_URL");
      url_origin = "$ACTIONS_RESULTS_URL";
    }
  }
  if (ParseBool(getenv("ACTIONS_CACHE_SERVICE_V2")).value_or(false)) {
    if (!spec.Has("url_v2")) {
      url_v2 = getenv("ACTIONS_RESULTS_URL");
      url_v2_origin = "$ACTIONS_RESULTS_URL";
    }
    if (!spec.Has("version")) version = "2";
  }
  // The daemon's choice (gha.go getConfig).
  int v = 0;
  if (!version.empty()) {
    char* end = nullptr;
    long n = std::strtol(version.c_str(), &end, 10);
    if (*end != '\0' || n < 0) {
      return InvalidArgumentError(where + ": version=" + version +
                                  " is not a positive integer (1 or 2)");
    }
    v = static_cast<int>(n);
  }
  if (v != 1 && !url_v2.empty()) {
    c.url = url_v2;
    c.url_origin = url_v2_origin;
    v = 2;
  }
  if (c.url.empty()) {
    c.url = url;
    c.url_origin = url_origin;
  }
  if (v == 0 && !c.url.empty()) {
    v = c.url.find("results-receiver.actions.githubusercontent.com") != std::string::npos ? 2 : 1;
  }
  c.version = v > 1 ? 2 : v;
  if (spec.Has("timeout")) {
    auto t = ParseGoDuration(spec.Get("timeout"));
    if (!t.ok()) return t.status().WithContext(where + ": timeout");
    c.timeout_ms = *t;
  }
  // buildx fills repository and ghtoken from the workflow's variables.
  c.repository = spec.Has("repository") ? spec.Get("repository") : getenv("GITHUB_REPOSITORY");
  c.ghtoken = spec.Has("ghtoken") ? spec.Get("ghtoken") : getenv("GITHUB_TOKEN");
  if (std::string api = getenv("GITHUB_API_URL"); !api.empty()) {
    while (!api.empty() && api.back() == '/') api.pop_back();
    c.api_url = api;
  }
  if (!c.repository.empty() && (c.repository.find('/') == std::string::npos ||
                                c.repository.front() == '/' || c.repository.back() == '/')) {
    return InvalidArgumentError(where + ": repository=" + c.repository + " is not owner/repo");
  }
  if (!c.HasService() && !c.HasRest()) {
    return InvalidArgumentError(
        where +
        ": no GitHub Actions cache credentials: give token= and url= (or run inside a workflow "
        "step that exports ACTIONS_RUNTIME_TOKEN and ACTIONS_RESULTS_URL/ACTIONS_CACHE_URL), or "
        "repository= and ghtoken= (GITHUB_REPOSITORY, GITHUB_TOKEN) to list entries without "
        "their content");
  }
  return c;
}

Result<RestPage> ParseRestPage(std::string_view text) {
  Json j = Json::parse(text, nullptr, false);
  if (!j.is_object()) return CorruptError("the cache listing is not a JSON object");
  RestPage page;
  if (auto it = j.find("total_count"); it != j.end() && it->is_number_integer()) {
    page.total_count = it->get<int64_t>();
  }
  auto caches = j.find("actions_caches");
  if (caches == j.end() || !caches->is_array()) {
    return CorruptError("the cache listing has no \"actions_caches\" list");
  }
  for (const Json& e : *caches) {
    if (!e.is_object()) return CorruptError("an \"actions_caches\" entry is not an object");
    RestEntry r;
    auto str = [&](const char* k) {
      auto it = e.find(k);
      return it != e.end() && it->is_string() ? it->get<std::string>() : std::string();
    };
    auto num = [&](const char* k) {
      auto it = e.find(k);
      return it != e.end() && it->is_number_integer() ? it->get<int64_t>() : int64_t{0};
    };
    r.id = num("id");
    r.ref = str("ref");
    r.key = str("key");
    r.version = str("version");
    r.size = static_cast<uint64_t>(std::max<int64_t>(num("size_in_bytes"), 0));
    if (auto t = ParseRfc3339(str("last_accessed_at")); t.ok()) r.last_accessed = *t;
    if (auto t = ParseRfc3339(str("created_at")); t.ok()) r.created = *t;
    if (r.key.empty()) return CorruptError("an \"actions_caches\" entry has no key");
    page.entries.push_back(std::move(r));
  }
  return page;
}

Result<std::optional<LookupAnswer>> ParseLookupAnswer(std::string_view body, int version) {
  Json j = Json::parse(body, nullptr, false);
  if (!j.is_object()) return CorruptError("the answer is not a JSON object");
  auto get = [&](const char* k) {
    auto it = j.find(k);
    return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  LookupAnswer a;
  if (version >= 2) {
    auto ok = j.find("ok");
    if (ok == j.end() || !ok->is_boolean() || !ok->get<bool>())
      return std::optional<LookupAnswer>();
    a.url = get("signed_download_url");
    a.matched_key = get("matched_key");
  } else {
    a.url = get("archiveLocation");
    a.matched_key = get("cacheKey");
  }
  if (a.matched_key.empty()) return std::optional<LookupAnswer>();
  if (a.url.empty()) return CorruptError("the answer has no download URL");
  return std::optional<LookupAnswer>(std::move(a));
}

Result<std::string> SynthesizeManifest(std::string_view config_text, std::string_view doc) {
  // The same document BuildKit's s3 and azblob importers build.
  return s3::SynthesizeManifest(config_text, doc);
}

}  // namespace bcfs::backends::gha
