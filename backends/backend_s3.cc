#include "backends/backend_s3.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <ctime>

#include "backends/xml_text.h"
#include "core/log.h"
#include "formats/cacheconfig.h"
#include "formats/json_util.h"
#include "formats/oci.h"

namespace bcfs::backends {
namespace s3 {
namespace {

// A bucket name usable as a DNS label of a virtual-hosted request.
bool DnsCompatible(std::string_view b) {
  if (b.size() < 3 || b.size() > 63) return false;
  for (char c : b) {
    if (!(std::islower(static_cast<unsigned char>(c)) ||
          std::isdigit(static_cast<unsigned char>(c)) || c == '-')) {
      return false;
    }
  }
  return b.front() != '-' && b.back() != '-';
}

bool IsIpHost(std::string_view host) {
  if (!host.empty() && host.front() == '[') return true;  // IPv6 literal
  if (host.empty()) return false;
  for (char c : host) {
    if (!std::isdigit(static_cast<unsigned char>(c)) && c != '.') return false;
  }
  return true;
}

// The inner text of each <tag>…</tag> in `xml` (elements do not nest in the
// documents read here); an empty element <tag/> gives "".
std::vector<std::string_view> Elements(std::string_view xml, std::string_view tag) {
  std::vector<std::string_view> out;
  const std::string open = "<" + std::string(tag) + ">";
  const std::string empty = "<" + std::string(tag) + "/>";
  const std::string close = "</" + std::string(tag) + ">";
  size_t pos = 0;
  while (true) {
    size_t a = xml.find(open, pos), e = xml.find(empty, pos);
    if (e != std::string_view::npos && (a == std::string_view::npos || e < a)) {
      out.push_back(std::string_view());
      pos = e + empty.size();
      continue;
    }
    if (a == std::string_view::npos) break;
    size_t b = xml.find(close, a + open.size());
    if (b == std::string_view::npos) break;
    out.push_back(xml.substr(a + open.size(), b - a - open.size()));
    pos = b + close.size();
  }
  return out;
}

std::string First(std::string_view xml, std::string_view tag) {
  auto e = Elements(xml, tag);
  return e.empty() ? "" : XmlUnescape(e[0]);
}

}  // namespace

TimeNs ParseHttpDate(const std::string& text) {
  std::tm tm{};
  const char* end = strptime(text.c_str(), "%a, %d %b %Y %H:%M:%S", &tm);
  if (end == nullptr) return 0;
  // ns since 1970 in int64 covers 1678..2261 (as ParseRfc3339).
  if (tm.tm_year < 1678 - 1900 || tm.tm_year > 2261 - 1900) return 0;
  return static_cast<TimeNs>(timegm(&tm)) * 1000000000LL;
}

std::string Location::PathOf(std::string_view key) const {
  std::string p = base_path;
  if (path_style) p += "/" + bucket;
  if (!key.empty() || !path_style) p += "/" + std::string(key);
  return p;
}

std::string Location::UrlOf(std::string_view key, std::string_view canonical_query) const {
  std::string url = scheme + "://" + host + UriEncode(PathOf(key), true);
  if (!canonical_query.empty()) url += "?" + std::string(canonical_query);
  return url;
}

Result<Location> ParseLocation(const SourceSpec& spec, const AwsEnvironment& env) {
  Location loc;
  const std::string where = "source " + spec.Redacted();
  loc.bucket = spec.Has("bucket") ? spec.Get("bucket") : env.getenv("AWS_BUCKET");
  if (loc.bucket.empty()) {
    return InvalidArgumentError(where + ": bucket is required (bucket= or AWS_BUCKET)");
  }
  loc.region = spec.Has("region") ? spec.Get("region") : env.getenv("AWS_REGION");
  if (loc.region.empty()) {
    return InvalidArgumentError(where + ": region is required (region= or AWS_REGION)");
  }
  loc.prefix = spec.Get("prefix");
  loc.blobs_prefix = spec.Get("blobs_prefix", "blobs/");
  loc.manifests_prefix = spec.Get("manifests_prefix", "manifests/");
  if (spec.Has("name")) {
    std::string names = spec.Get("name");
    size_t pos = 0;
    while (pos <= names.size()) {
      size_t semi = names.find(';', pos);
      if (semi == std::string::npos) semi = names.size();
      std::string n = names.substr(pos, semi - pos);
      if (!n.empty() && std::find(loc.names.begin(), loc.names.end(), n) == loc.names.end()) {
        loc.names.push_back(n);
      }
      pos = semi + 1;
    }
    if (loc.names.empty()) return InvalidArgumentError(where + ": name= names no manifest");
  }
  loc.endpoint = spec.Get("endpoint_url");
  if (loc.endpoint.empty()) {
    const bool china = loc.region.rfind("cn-", 0) == 0;
    const std::string aws_host =
        "s3." + loc.region + (china ? ".amazonaws.com.cn" : ".amazonaws.com");
    // The SDK ignores use_path_style without an endpoint (FORMATS.md §10.10).
    loc.path_style = !DnsCompatible(loc.bucket);
    loc.host = loc.path_style ? aws_host : loc.bucket + "." + aws_host;
    return loc;
  }
  const std::string& url = loc.endpoint;
  size_t sep = url.find("://");
  if (sep == std::string::npos) {
    return InvalidArgumentError(where + ": endpoint_url " + http::RedactUrl(url) +
                                " is not an http:// or https:// URL");
  }
  loc.scheme = url.substr(0, sep);
  for (char& c : loc.scheme) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (loc.scheme != "http" && loc.scheme != "https") {
    return InvalidArgumentError(where + ": endpoint_url " + http::RedactUrl(url) +
                                " is not an http:// or https:// URL");
  }
  std::string rest = url.substr(sep + 3);
  rest = rest.substr(0, rest.find_first_of("?#"));
  size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  loc.base_path = slash == std::string::npos ? "" : rest.substr(slash);
  while (!loc.base_path.empty() && loc.base_path.back() == '/') loc.base_path.pop_back();
  if (size_t at = authority.rfind('@'); at != std::string::npos)
    authority = authority.substr(at + 1);
  // Host without a default port: libcurl's Host header leaves it out too.
  std::string hostname = authority, port;
  size_t colon = authority.rfind(':');
  if (colon != std::string::npos && authority.find(']', colon) == std::string::npos) {
    hostname = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  if (hostname.empty()) {
    return InvalidArgumentError(where + ": endpoint_url " + http::RedactUrl(url) + " has no host");
  }
  if ((loc.scheme == "http" && port == "80") || (loc.scheme == "https" && port == "443")) {
    port.clear();
  }
  const std::string ups = spec.Get("use_path_style");
  const bool want_path = ups == "true" || ups == "1" || ups == "TRUE" || ups == "True" ||
                         ups == "t" || ups == "T";  // Go's strconv.ParseBool
  loc.path_style = want_path || IsIpHost(hostname) || !DnsCompatible(loc.bucket);
  loc.host = (loc.path_style ? "" : loc.bucket + ".") + hostname + (port.empty() ? "" : ":" + port);
  return loc;
}

Result<ListPage> ParseListObjectsV2(std::string_view xml) {
  if (xml.find("<ListBucketResult") == std::string_view::npos) {
    return CorruptError("the listing is not a ListObjectsV2 result");
  }
  ListPage page;
  for (std::string_view c : Elements(xml, "Contents")) {
    ListedObject o;
    o.key = First(c, "Key");
    o.size = std::strtoull(First(c, "Size").c_str(), nullptr, 10);
    if (auto t = ParseRfc3339(First(c, "LastModified")); t.ok()) o.mtime = *t;
    page.objects.push_back(std::move(o));
  }
  page.truncated = First(xml, "IsTruncated") == "true";
  page.next_token = First(xml, "NextContinuationToken");
  return page;
}

ErrorDoc ParseErrorDoc(std::string_view xml) {
  return {First(xml, "Code"), First(xml, "Message"), First(xml, "Region")};
}

Result<std::string> SynthesizeManifest(std::string_view config_text, std::string_view doc) {
  BCFS_ASSIGN_OR_RETURN(formats::CacheConfig config, formats::ParseCacheConfig(config_text, doc));
  using formats::Json;
  auto str = [](std::string_view s) { return Json(std::string(s)).dump(); };
  std::string out =
      "{\"schemaVersion\":2,\"mediaType\":" + str(formats::media::kOciIndex) + ",\"manifests\":[";
  std::vector<Digest> seen;
  for (size_t i = 0; i < config.layers.size(); ++i) {
    const formats::CacheLayer& l = config.layers[i];
    if (std::find(seen.begin(), seen.end(), l.blob) != seen.end()) continue;
    seen.push_back(l.blob);
    const std::string what =
        std::string(doc) + ": layer " + std::to_string(i) + " (" + l.blob.ToString() + ")";
    if (!l.annotations) {
      return CorruptError(what + " has no annotations; BuildKit refuses to import it");
    }
    if (l.annotations->diff_id.empty()) {
      return CorruptError(what + " has no diffID annotation; BuildKit refuses to import it");
    }
    out += "{\"mediaType\":" + str(l.annotations->media_type) +
           ",\"digest\":" + str(l.blob.ToString()) +
           ",\"size\":" + std::to_string(std::max<int64_t>(l.annotations->size, 0)) +
           ",\"annotations\":{";
    if (l.annotations->created_at != 0) {
      out += str(formats::annotation::kCreatedAt) + ":" +
             str(FormatRfc3339(l.annotations->created_at)) + ",";
    }
    out += str(formats::annotation::kUncompressed) + ":" + str(l.annotations->diff_id.ToString()) +
           "}},";
  }
  out += "{\"mediaType\":" + str(formats::media::kCacheConfig) +
         ",\"digest\":" + str(Digest::Sha256Of(config_text).ToString()) +
         ",\"size\":" + std::to_string(config_text.size()) + "}]}";
  return out;
}

std::string RefDescriptorJson(const std::string& name, const formats::Descriptor& d) {
  nlohmann::ordered_json j;
  j["mediaType"] = d.media_type;
  j["digest"] = d.digest.ToString();
  j["size"] = d.size;
  j["annotations"] = {{std::string(formats::annotation::kRefName), name}};
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

Result<std::pair<std::string, Digest>> ParseRefDescriptorJson(std::string_view raw) {
  auto j = formats::ParseJson(raw, "ref descriptor");
  if (!j.ok()) return InvalidArgumentError(j.status().message());
  const formats::Json* name = nullptr;
  if (j->is_object() && j->contains("annotations") && (*j)["annotations"].is_object()) {
    auto it = (*j)["annotations"].find(std::string(formats::annotation::kRefName));
    if (it != (*j)["annotations"].end() && it->is_string()) name = &*it;
  }
  if (name == nullptr || !j->contains("digest") || !(*j)["digest"].is_string()) {
    return InvalidArgumentError("ref descriptor " + std::string(raw.substr(0, 200)) +
                                " has no digest or ref name");
  }
  auto d = Digest::Parse((*j)["digest"].get<std::string>());
  if (!d.ok()) return InvalidArgumentError("ref descriptor: " + d.status().message());
  return std::make_pair(name->get<std::string>(), *d);
}

bool MaybeWrittenAfter(TimeNs mtime, TimeNs not_after) {
  return mtime == 0 || mtime + 999999999 > not_after;
}

}  // namespace s3

// ---------------------------------------------------------------------------

Result<std::unique_ptr<S3Backend>> S3Backend::Open(const SourceSpec& spec,
                                                   const s3::AwsEnvironment& env) {
  BCFS_ASSIGN_OR_RETURN(s3::Location loc, s3::ParseLocation(spec, env));
  auto creds = s3::ResolveAwsCredentials(spec, env);
  if (!creds.ok()) return creds.status().WithContext("source " + spec.Redacted());
  http::Options opts;
  opts.metrics_backend = "s3";
  // As the AWS SDK: a CA bundle in addition to the system store.
  opts.ca_file = env.getenv("AWS_CA_BUNDLE");
  if (spec.Has("retry_max_attempts")) {
    const std::string v = spec.Get("retry_max_attempts");
    char* end = nullptr;
    long n = std::strtol(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0' || n < 1 || n > 100) {
      return InvalidArgumentError("source " + spec.Redacted() +
                                  ": retry_max_attempts must be an integer from 1 to 100");
    }
    opts.max_attempts = static_cast<int>(n);
  }
  return std::unique_ptr<S3Backend>(new S3Backend(spec, std::move(loc), *creds, opts));
}

S3Backend::S3Backend(SourceSpec spec, s3::Location loc, s3::AwsCredentials creds,
                     http::Options opts)
    : spec_(std::move(spec)),
      loc_(std::move(loc)),
      creds_(std::move(creds)),
      client_(std::make_unique<http::Client>(opts)) {}

std::string S3Backend::Describe() const { return spec_.Redacted(); }

std::string S3Backend::What(const std::string& key) const {
  std::string w = "s3 bucket " + loc_.bucket;
  if (!loc_.endpoint.empty()) w += " (" + http::RedactUrl(loc_.endpoint) + ")";
  if (!key.empty()) w += ", key " + key;
  return w;
}

Result<http::Response> S3Backend::Send(const std::string& method, const std::string& key,
                                       const s3::QueryParams& query,
                                       std::optional<std::pair<uint64_t, uint64_t>> range,
                                       const std::function<bool(std::string_view)>* sink) {
  http::Request req;
  req.method = method;
  req.url = loc_.UrlOf(key, s3::CanonicalQuery(query));
  req.range = range;
  req.headers = s3::SignS3Headers(method, loc_.host, loc_.PathOf(key), query, loc_.region, creds_,
                                  WallClockNow());
  auto resp = sink != nullptr ? client_->Stream(req, *sink) : client_->Do(req);
  if (!resp.ok()) return resp.status().WithContext(What(key));
  return resp;
}

Status S3Backend::ErrorOf(const http::Response& resp, const std::string& method,
                          const std::string& key) {
  const s3::ErrorDoc e = s3::ParseErrorDoc(resp.body);
  const int status = static_cast<int>(resp.status);
  const std::string what = What(key) + ": " + method + ": ";
  const std::string creds = creds_.empty()
                                ? std::string(
                                      "no AWS credentials were found (source string, "
                                      "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE and "
                                      "~/.aws files), so the request was anonymous")
                                : "credentials from " + creds_.origin;
  const std::string code = e.code.empty() ? "" : " " + e.code;
  if (resp.status == 404 || e.code == "NoSuchKey" || e.code == "NoSuchBucket") {
    if (e.code == "NoSuchBucket") {
      return Status(Code::kNotFound, what + "the bucket does not exist (HTTP 404 NoSuchBucket)",
                    status);
    }
    return Status(Code::kNotFound, what + "not found (HTTP 404" + code + ")", status);
  }
  if (e.code == "SignatureDoesNotMatch") {
    return Status(Code::kPermissionDenied,
                  what + "the server rejected the request signature (HTTP " +
                      std::to_string(status) +
                      " SignatureDoesNotMatch): the secret access key is wrong for its access "
                      "key id (" +
                      creds + ")",
                  status);
  }
  if (e.code == "InvalidAccessKeyId") {
    return Status(Code::kPermissionDenied,
                  what + "the server does not know the access key id (HTTP " +
                      std::to_string(status) + " InvalidAccessKeyId; " + creds + ")",
                  status);
  }
  if (e.code == "ExpiredToken" || e.code == "InvalidToken" || e.code == "TokenRefreshRequired") {
    return Status(Code::kPermissionDenied,
                  what + "the session token was refused (HTTP " + std::to_string(status) + code +
                      "; " + creds + ")",
                  status);
  }
  if (e.code == "PermanentRedirect" || e.code == "AuthorizationHeaderMalformed" ||
      resp.status == 301) {
    std::string region = e.region.empty() ? resp.Get("x-amz-bucket-region") : e.region;
    return Status(Code::kInvalidArgument,
                  what + "the bucket is not in region " + loc_.region +
                      (region.empty() ? "" : " but in " + region + ": set region=" + region) +
                      " (HTTP " + std::to_string(status) + code + ")",
                  status);
  }
  if (resp.status == 403 || resp.status == 401) {
    return Status(
        Code::kPermissionDenied,
        what + "access denied (HTTP " + std::to_string(status) + code + "; " + creds + ")", status);
  }
  std::string msg = what + "HTTP " + std::to_string(status) + code;
  if (!e.message.empty()) msg += ": " + e.message;
  return Status(resp.status == 400 ? Code::kInvalidArgument : Code::kUnavailable, msg, status);
}

Result<std::vector<s3::ListedObject>> S3Backend::List(const std::string& prefix) {
  std::vector<s3::ListedObject> all;
  std::string token;
  for (int page = 0; page < 1000000; ++page) {
    s3::QueryParams q = {{"list-type", "2"}, {"prefix", prefix}};
    if (!token.empty()) q.push_back({"continuation-token", token});
    BCFS_ASSIGN_OR_RETURN(http::Response resp, Send("GET", "", q));
    if (resp.status != 200) return ErrorOf(resp, "list " + prefix + "*", "");
    auto parsed = s3::ParseListObjectsV2(resp.body);
    if (!parsed.ok()) return parsed.status().WithContext(What("") + ": list " + prefix + "*");
    for (auto& o : parsed->objects) all.push_back(std::move(o));
    if (!parsed->truncated) break;
    if (parsed->next_token.empty() || parsed->next_token == token) {
      return CorruptError(What("") + ": list " + prefix +
                          "*: a truncated page without a new continuation token");
    }
    token = parsed->next_token;
  }
  return all;
}

Result<RefEntry> S3Backend::ReadManifestObject(const std::string& name) {
  const std::string key = loc_.ManifestKey(name);
  BCFS_ASSIGN_OR_RETURN(http::Response resp, Send("GET", key, {}));
  if (resp.status != 200) return ErrorOf(resp, "GET", key);
  const std::string doc = What(key) + ": cache config";
  auto manifest = s3::SynthesizeManifest(resp.body, doc);
  if (!manifest.ok()) return manifest.status();
  const TimeNs mtime = s3::ParseHttpDate(resp.Get("Last-Modified"));
  RefEntry e;
  e.name = name;
  e.descriptor.media_type = std::string(formats::media::kOciIndex);
  e.descriptor.digest = Digest::Sha256Of(*manifest);
  e.descriptor.size = static_cast<int64_t>(manifest->size());
  e.raw_descriptor = s3::RefDescriptorJson(name, e.descriptor);
  e.modified = mtime;
  e.synthesized = true;
  std::lock_guard<std::mutex> lock(mu_);
  docs_[Digest::Sha256Of(resp.body)] = Doc{resp.body, mtime};
  docs_[e.descriptor.digest] = Doc{std::move(*manifest), mtime};
  by_name_[key] = e.descriptor.digest;
  refs_modified_ = std::max(refs_modified_, mtime);
  return e;
}

Result<std::vector<RefEntry>> S3Backend::ListRefs() {
  std::vector<std::string> names = loc_.names;
  if (names.empty()) {
    const std::string mprefix = loc_.prefix + loc_.manifests_prefix;
    BCFS_ASSIGN_OR_RETURN(std::vector<s3::ListedObject> objs, List(mprefix));
    for (const auto& o : objs) {
      std::string n = o.key.substr(mprefix.size());
      if (n.empty() || n.back() == '/') continue;  // folder markers
      names.push_back(n);
    }
  }
  std::vector<RefEntry> refs;
  std::vector<Digest> roots;
  for (const auto& name : names) {
    auto e = ReadManifestObject(name);
    if (e.ok()) {
      roots.push_back(e->descriptor.digest);
      refs.push_back(std::move(*e));
      continue;
    }
    // A missing or malformed manifest is that ref's problem; refused
    // credentials and an unreachable server are the source's.
    if (e.status().code() != Code::kNotFound && e.status().code() != Code::kCorrupt) {
      return e.status();
    }
    RefEntry bad;
    bad.name = name;
    bad.error = e.status().message();
    if (e.status().code() == Code::kNotFound) {
      bad.error += " (BuildKit imports an empty cache for a missing manifest)";
    }
    refs.push_back(std::move(bad));
  }
  std::lock_guard<std::mutex> lock(mu_);
  roots_ = std::move(roots);
  return refs;
}

Result<std::vector<Digest>> S3Backend::ListRoots() {
  // Every manifest object under the manifests prefix is a root, whatever
  // name= narrowed the refs to.
  const std::string mprefix = loc_.prefix + loc_.manifests_prefix;
  BCFS_ASSIGN_OR_RETURN(std::vector<s3::ListedObject> objs, List(mprefix));
  std::vector<Digest> roots;
  for (const auto& o : objs) {
    std::string n = o.key.substr(mprefix.size());
    if (n.empty() || n.back() == '/') continue;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (auto it = by_name_.find(o.key); it != by_name_.end()) {
        roots.push_back(it->second);
        continue;
      }
    }
    auto e = ReadManifestObject(n);
    if (!e.ok()) return e.status();
    roots.push_back(e->descriptor.digest);
  }
  std::sort(roots.begin(), roots.end());
  roots.erase(std::unique(roots.begin(), roots.end()), roots.end());
  return roots;
}

Result<BlobStat> S3Backend::StatBlob(const Digest& digest) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = docs_.find(digest); it != docs_.end()) {
      BlobStat st;
      st.size = it->second.bytes.size();
      st.mtime = it->second.mtime;
      return st;
    }
    if (auto it = listed_.find(digest); it != listed_.end()) return it->second;
  }
  const std::string key = loc_.BlobKey(digest);
  BCFS_ASSIGN_OR_RETURN(http::Response resp, Send("HEAD", key, {}));
  if (resp.status == 200) {
    BlobStat st;
    st.size = std::strtoull(resp.Get("Content-Length").c_str(), nullptr, 10);
    st.mtime = s3::ParseHttpDate(resp.Get("Last-Modified"));
    return st;
  }
  if (resp.status == 404) return ErrorOf(resp, "HEAD", key);
  // A HEAD error has no body: ask again with a one-byte GET to learn why.
  BCFS_ASSIGN_OR_RETURN(http::Response again,
                        Send("GET", key, {}, std::make_pair(uint64_t{0}, uint64_t{0})));
  if (again.status == 200 || again.status == 206) return ErrorOf(resp, "HEAD", key);
  return ErrorOf(again, "GET", key);
}

Result<size_t> S3Backend::ReadBlob(const Digest& digest, uint64_t offset, std::span<char> out) {
  if (out.empty()) return size_t{0};
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = docs_.find(digest); it != docs_.end()) {
      const std::string& b = it->second.bytes;
      if (offset >= b.size()) return size_t{0};
      size_t n = std::min<uint64_t>(out.size(), b.size() - offset);
      std::memcpy(out.data(), b.data() + offset, n);
      return n;
    }
  }
  const std::string key = loc_.BlobKey(digest);
  BCFS_ASSIGN_OR_RETURN(http::Response resp,
                        Send("GET", key, {}, std::make_pair(offset, offset + out.size() - 1)));
  if (resp.status == 416) return size_t{0};
  if (resp.status != 200 && resp.status != 206) return ErrorOf(resp, "GET", key);
  size_t n = std::min(resp.body.size(), out.size());
  std::memcpy(out.data(), resp.body.data(), n);
  return n;
}

Status S3Backend::StreamBlob(const Digest& digest, uint64_t offset, uint64_t length,
                             const std::function<bool(std::string_view)>& sink) {
  if (length == 0) return OkStatus();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = docs_.find(digest); it != docs_.end()) {
      const std::string& b = it->second.bytes;
      if (offset > b.size() || length > b.size() - offset) {
        return CorruptError(What("") + ": " + digest.ToString() + " has " +
                            std::to_string(b.size()) + " bytes, fewer than asked");
      }
      if (!sink(std::string_view(b).substr(offset, length))) {
        return Status(Code::kIo, "the receiver stopped the transfer");
      }
      return OkStatus();
    }
  }
  const std::string key = loc_.BlobKey(digest);
  BCFS_ASSIGN_OR_RETURN(http::Response resp,
                        Send("GET", key, {}, std::make_pair(offset, offset + length - 1), &sink));
  if (resp.status != 200 && resp.status != 206) return ErrorOf(resp, "GET", key);
  return OkStatus();
}

Result<std::string> S3Backend::ReadDocument(const Digest& digest, uint64_t max_size) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = docs_.find(digest); it != docs_.end()) {
      if (it->second.bytes.size() > max_size) {
        return CorruptError(What("") + ": " + digest.ToString() + " is larger than " +
                            std::to_string(max_size) + " bytes");
      }
      return it->second.bytes;
    }
  }
  const std::string key = loc_.BlobKey(digest);
  BCFS_ASSIGN_OR_RETURN(http::Response resp, Send("GET", key, {}));
  if (resp.status != 200) return ErrorOf(resp, "GET", key);
  if (resp.body.size() > max_size) {
    return CorruptError(What(key) + ": larger than " + std::to_string(max_size) + " bytes");
  }
  Digest got = Digest::Sha256Of(resp.body);
  if (got != digest) {
    return CorruptError(What(key) + ": does not match its digest (its bytes hash to " +
                        got.ToString() + ")");
  }
  return resp.body;
}

Result<std::vector<Digest>> S3Backend::ListBlobs() {
  const std::string bprefix = loc_.prefix + loc_.blobs_prefix;
  BCFS_ASSIGN_OR_RETURN(std::vector<s3::ListedObject> objs, List(bprefix));
  std::vector<Digest> out;
  std::map<Digest, BlobStat> stats;
  for (const auto& o : objs) {
    auto d = Digest::Parse(std::string_view(o.key).substr(bprefix.size()));
    if (!d.ok()) continue;  // not a blob of this layout
    BlobStat st;
    st.size = o.size;
    st.mtime = o.mtime;
    stats[*d] = st;
    out.push_back(*d);
  }
  std::sort(out.begin(), out.end());
  std::lock_guard<std::mutex> lock(mu_);
  listed_ = std::move(stats);
  return out;
}

TimeNs S3Backend::RefsModified() {
  std::lock_guard<std::mutex> lock(mu_);
  return refs_modified_;
}

Result<std::vector<Digest>> S3Backend::RemoveRefs(const std::vector<std::string>& raw_descriptors) {
  for (const std::string& raw : raw_descriptors) {
    BCFS_ASSIGN_OR_RETURN(auto ref, s3::ParseRefDescriptorJson(raw));
    const std::string key = loc_.ManifestKey(ref.first);
    // Only what the plan saw goes: a manifest an export rewrote meanwhile
    // stays (and the roots listed below keep what it reaches).
    auto now = ReadManifestObject(ref.first);
    if (!now.ok() && now.status().code() == Code::kNotFound) continue;
    if (!now.ok()) return now.status();
    if (now->descriptor.digest != ref.second) continue;
    BCFS_ASSIGN_OR_RETURN(http::Response resp, Send("DELETE", key, {}));
    if (resp.status != 204 && resp.status != 200 && resp.status != 404) {
      return ErrorOf(resp, "DELETE", key);
    }
    LOG_INFO(What(key) + ": deleted (prune)");
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    by_name_.clear();  // read every manifest again: exports may have run meanwhile
  }
  return ListRoots();
}

Result<bool> S3Backend::DeleteBlob(const Digest& digest, TimeNs not_after) {
  const std::string key = loc_.BlobKey(digest);
  BCFS_ASSIGN_OR_RETURN(http::Response head, Send("HEAD", key, {}));
  if (head.status == 404) return false;
  if (head.status != 200) return ErrorOf(head, "HEAD", key);
  if (s3::MaybeWrittenAfter(s3::ParseHttpDate(head.Get("Last-Modified")), not_after)) {
    return false;
  }
  BCFS_ASSIGN_OR_RETURN(http::Response resp, Send("DELETE", key, {}));
  if (resp.status == 404) return false;
  if (resp.status != 204 && resp.status != 200) return ErrorOf(resp, "DELETE", key);
  std::lock_guard<std::mutex> lock(mu_);
  listed_.erase(digest);
  return true;
}

Result<std::unique_ptr<Backend>> OpenS3Backend(const SourceSpec& spec) {
  auto b = S3Backend::Open(spec, s3::AwsEnvironment::Process());
  if (!b.ok()) return b.status();
  return std::unique_ptr<Backend>(std::move(*b));
}

}  // namespace bcfs::backends
