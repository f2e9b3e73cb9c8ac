// The type=gha backend: BuildKit caches in the GitHub Actions cache
// (FORMATS.md §7), read through the cache service the runtime token opens
// (v2: Twirp JSON under <url>/twirp/github.actions.results.api.v1.CacheService/
// whose GetCacheEntryDownloadURL hands out signed Azure Blob URLs; v1, still
// served by GHES: GET <url>/_apis/artifactcache/cache?keys=…&version=… giving
// an archiveLocation), plus the REST listing
// (GET <api>/repos/<owner>/<repo>/actions/caches) when repository and ghtoken
// are known.
//
// Refs are "<scope>@<branch>" for each branch scope of the token whose index
// exists (the newest "#n" entry, as BuildKit loads it); their top-level blob
// is the synthesized index-shape manifest (gha_protocol.h). Blobs are read by
// key "buildkit-blob-1-<digest>" through a signed URL that is looked up once
// and cached; a URL the storage refuses (expired: 401/403) is looked up again
// and the read retried once. 429 and 5xx are retried by the HTTP client
// (Retry-After honoured). A blob GitHub evicted is kNotFound for its own reads
// only, saying so. Without a runtime token (repository+ghtoken only) the REST
// listing gives refs, blobs, sizes and access times, and every read says that
// content needs a runtime token.
//
// Tokens never reach a log or an error: URLs go through RedactUrl, the source
// through Redacted().
//
// Thread-safety: GhaBackend is thread-safe (the HTTP client is; the maps are
// behind a mutex).

#include <algorithm>
#include <cctype>
#include <cstring>
#include <map>
#include <mutex>
#include <set>

#include "backends/backend.h"
#include "backends/gha_protocol.h"
#include "backends/http/http_client.h"
#include "core/log.h"
#include "formats/json_util.h"
#include "formats/oci.h"

namespace bcfs::backends {
namespace {

using formats::Json;

constexpr char kTwirpPrefix[] = "/twirp/github.actions.results.api.v1.CacheService/";
constexpr uint64_t kMaxIndex = 256u << 20;

// RFC 3986 query-component encoding (keys hold '#' and ':').
std::string QueryEscape(std::string_view s) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string Trimmed(std::string s) {
  while (!s.empty() && s.back() == '/') s.pop_back();
  return s;
}

// "HTTP 401 unauthenticated: bad token" from a Twirp, v1 or REST error body.
std::string ErrorText(const http::Response& r) {
  std::string out = "HTTP " + std::to_string(r.status);
  Json j = Json::parse(r.body, nullptr, false);
  if (j.is_object()) {
    auto get = [&](const char* k) {
      auto it = j.find(k);
      return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
    };
    std::string code = get("code"), msg = get("msg");
    if (msg.empty()) msg = get("message");
    if (!code.empty()) out += " " + code;
    if (!msg.empty()) out += ": " + msg;
    return out;
  }
  // Azure Storage: <Error><Code>AuthenticationFailed</Code>…
  size_t a = r.body.find("<Code>"), b = r.body.find("</Code>");
  if (a != std::string::npos && b != std::string::npos && b > a) {
    out += " " + r.body.substr(a + 6, b - a - 6);
  }
  return out;
}

class GhaBackend : public Backend {
 public:
  GhaBackend(SourceSpec spec, gha::Config cfg, std::vector<gha::TokenScope> scopes)
      : spec_(std::move(spec)), cfg_(std::move(cfg)), scopes_(std::move(scopes)) {
    http::Options opts;
    // The service's Retry-After is honoured up to the source's timeout.
    opts.max_retry_after_s = std::max<int64_t>(1, std::min<int64_t>(cfg_.timeout_ms / 1000, 120));
    opts.max_attempts = 8;
    client_ = std::make_unique<http::Client>(opts);
  }

  std::string Describe() const override { return spec_.Redacted(); }

  Result<std::vector<RefEntry>> ListRefs() override {
    if (cfg_.HasService()) return ListRefsFromService();
    return ListRefsFromRest();
  }

  Result<std::vector<Digest>> ListRoots() override {
    std::lock_guard<std::mutex> lock(mu_);
    return roots_;
  }

  Result<BlobStat> StatBlob(const Digest& digest) override {
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
    if (!cfg_.HasService()) return NoContent(digest);
    const std::string key = gha::BlobKey(digest);
    http::Request req;
    req.method = "HEAD";
    BCFS_ASSIGN_OR_RETURN(http::Response resp, Download(key, req));
    BlobStat st;
    st.size = std::strtoull(resp.Get("Content-Length").c_str(), nullptr, 10);
    return st;
  }

  Result<size_t> ReadBlob(const Digest& digest, uint64_t offset, std::span<char> out) override {
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
    if (!cfg_.HasService()) return NoContent(digest);
    http::Request req;
    req.range = std::make_pair(offset, offset + out.size() - 1);
    BCFS_ASSIGN_OR_RETURN(http::Response resp, Download(gha::BlobKey(digest), req));
    if (resp.status == 416) return size_t{0};
    size_t n = std::min(resp.body.size(), out.size());
    std::memcpy(out.data(), resp.body.data(), n);
    return n;
  }

  Result<std::string> ReadDocument(const Digest& digest, uint64_t max_size) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (auto it = docs_.find(digest); it != docs_.end()) {
        if (it->second.bytes.size() > max_size) {
          return CorruptError(What() + ": " + digest.ToString() + " is larger than " +
                              std::to_string(max_size) + " bytes");
        }
        return it->second.bytes;
      }
    }
    if (!cfg_.HasService()) return NoContent(digest);
    const std::string key = gha::BlobKey(digest);
    http::Request req;
    BCFS_ASSIGN_OR_RETURN(http::Response resp, Download(key, req));
    if (resp.body.size() > max_size) {
      return CorruptError(What() + ", key " + key + ": larger than " + std::to_string(max_size) +
                          " bytes");
    }
    if (Digest::Sha256Of(resp.body) != digest) {
      return CorruptError(What() + ", key " + key + ": the bytes do not match the digest");
    }
    return resp.body;
  }

  Result<std::vector<Digest>> ListBlobs() override {
    if (!cfg_.HasRest()) {
      return UnsupportedError(What() + ": blobs are listed only with repository= and ghtoken=");
    }
    BCFS_ASSIGN_OR_RETURN(std::vector<gha::RestEntry> entries, RestList());
    std::map<Digest, BlobStat> stats;
    for (const auto& e : entries) {
      auto d = gha::BlobOfKey(e.key);
      if (!d) continue;
      BlobStat st;
      st.size = e.size;
      st.mtime = std::max(e.last_accessed, e.created);
      auto [it, fresh] = stats.emplace(*d, st);
      if (!fresh) it->second.mtime = std::max(it->second.mtime, st.mtime);
    }
    std::vector<Digest> out;
    for (const auto& [d, st] : stats) out.push_back(d);
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [d, st] : stats) listed_[d] = st;
    return out;
  }

  TimeNs RefsModified() override {
    std::lock_guard<std::mutex> lock(mu_);
    return refs_modified_;
  }

  bool CheapStat() const override { return false; }

 private:
  struct Doc {
    std::string bytes;
    TimeNs mtime = 0;
  };

  std::string ServiceName() const {
    return "GitHub Actions cache service v" + std::to_string(cfg_.version) + " at " +
           http::RedactUrl(cfg_.url);
  }
  std::string What() const { return "source " + spec_.Redacted() + " (" + ServiceName() + ")"; }

  Status NoContent(const Digest& digest) const {
    return Status(Code::kPermissionDenied,
                  "source " + spec_.Redacted() + ": " + digest.ToString() +
                      ": reading content needs an Actions runtime token and cache URL (token= "
                      "and url=, or ACTIONS_RUNTIME_TOKEN and ACTIONS_RESULTS_URL in a workflow "
                      "step); repository= and ghtoken= give keys, sizes and access times only");
  }

  Status Refused(const http::Response& resp, const std::string& what) const {
    return Status(Code::kPermissionDenied,
                  What() + ": " + what + ": the runtime token (" + cfg_.token_origin +
                      ") was refused (" + ErrorText(resp) + ")",
                  static_cast<int>(resp.status));
  }

  // The signed URL of the newest entry whose key starts with `key`, and the
  // key it matched; nullopt when the service has none.
  struct Entry {
    std::string matched_key, url;
  };
  Result<std::optional<Entry>> Lookup(const std::string& key) {
    http::Request req;
    req.headers.push_back({"Authorization", "Bearer " + cfg_.token});
    const std::string version = gha::CacheVersion();
    if (cfg_.version >= 2) {
      req.method = "POST";
      req.url = Trimmed(cfg_.url) + kTwirpPrefix + "GetCacheEntryDownloadURL";
      req.headers.push_back({"Content-Type", "application/json"});
      Json body = {{"key", key}, {"restore_keys", Json::array({key})}, {"version", version}};
      req.body = body.dump();
    } else {
      req.url = Trimmed(cfg_.url) + "/_apis/artifactcache/cache?keys=" + QueryEscape(key) +
                "&version=" + version;
      req.headers.push_back({"Accept", "application/json;api-version=6.0-preview.1"});
    }
    auto resp = client_->Do(req);
    if (!resp.ok()) return resp.status().WithContext(What() + ": look up " + key);
    if (resp->status == 401 || resp->status == 403) return Refused(*resp, "look up " + key);
    if (resp->status == 204 || (resp->status == 404 && cfg_.version >= 2)) {
      return std::optional<Entry>();
    }
    if (resp->status != 200) {
      return Status(Code::kUnavailable, What() + ": look up " + key + ": " + ErrorText(*resp),
                    static_cast<int>(resp->status));
    }
    if (resp->body.empty()) return std::optional<Entry>();
    Json j = Json::parse(resp->body, nullptr, false);
    if (!j.is_object()) {
      return CorruptError(What() + ": look up " + key + ": the answer is not a JSON object");
    }
    auto get = [&](const char* k) {
      auto it = j.find(k);
      return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
    };
    Entry e;
    if (cfg_.version >= 2) {
      auto ok = j.find("ok");
      if (ok == j.end() || !ok->is_boolean() || !ok->get<bool>()) return std::optional<Entry>();
      e.url = get("signed_download_url");
      e.matched_key = get("matched_key");
    } else {
      e.url = get("archiveLocation");
      e.matched_key = get("cacheKey");
    }
    if (e.matched_key.empty()) return std::optional<Entry>();
    if (e.url.empty()) {
      return CorruptError(What() + ": look up " + key + ": the answer has no download URL");
    }
    return std::optional<Entry>(std::move(e));
  }

  Status Evicted(const std::string& key) const {
    return NotFoundError(What() + ": key " + key +
                         " is not in the cache: GitHub evicted it (entries unused for 7 days or "
                         "beyond the repository's size limit are removed) or it was deleted");
  }

  // The cached signed URL of `key`, or one looked up now. Concurrent callers
  // for one key share a single lookup (the service is rate limited).
  Result<std::string> UrlOf(const std::string& key) {
    std::shared_ptr<std::mutex> key_mu;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (auto it = urls_.find(key); it != urls_.end()) return it->second;
      auto& m = lookup_mu_[key];
      if (!m) m = std::make_shared<std::mutex>();
      key_mu = m;
    }
    std::lock_guard<std::mutex> one(*key_mu);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (auto it = urls_.find(key); it != urls_.end()) return it->second;
    }
    BCFS_ASSIGN_OR_RETURN(std::optional<Entry> e, Lookup(key));
    if (!e) return Evicted(key);
    std::lock_guard<std::mutex> lock(mu_);
    urls_[key] = e->url;
    return e->url;
  }

  // GET/HEAD of the entry `key` through its signed URL (req.url is filled
  // in). A URL the storage refuses (expired or revoked: 401/403) is replaced
  // by a fresh one this request looks up itself, and the request is sent once
  // more with it.
  Result<http::Response> Download(const std::string& key, http::Request req) {
    BCFS_ASSIGN_OR_RETURN(std::string url, UrlOf(key));
    for (int attempt = 0; attempt < 2; ++attempt) {
      req.url = url;
      auto resp = client_->Do(req);
      if (!resp.ok()) return resp.status().WithContext(What() + ": key " + key);
      if (resp->status == 200 || resp->status == 206 || resp->status == 416) return resp;
      if ((resp->status == 401 || resp->status == 403) && attempt == 0) {
        LOG_INFO(What() << ": the signed URL of " << key << " was refused (" << ErrorText(*resp)
                        << "); asking for a fresh one");
        BCFS_ASSIGN_OR_RETURN(std::optional<Entry> e, Lookup(key));
        std::lock_guard<std::mutex> lock(mu_);
        if (!e) {
          urls_.erase(key);
          return Evicted(key);
        }
        url = urls_[key] = e->url;
        continue;
      }
      if (resp->status == 404) {
        std::lock_guard<std::mutex> lock(mu_);
        urls_.erase(key);
        return Evicted(key);
      }
      return Status(
          resp->status == 401 || resp->status == 403 ? Code::kPermissionDenied : Code::kUnavailable,
          What() + ": key " + key + ": download from " + http::RedactUrl(url) + ": " +
              ErrorText(*resp) +
              (resp->status == 401 || resp->status == 403 ? " (with a fresh URL)" : ""),
          static_cast<int>(resp->status));
    }
    return InternalError("unreachable");
  }

  Result<std::vector<RefEntry>> ListRefsFromService() {
    std::vector<RefEntry> refs;
    std::vector<Digest> roots;
    std::set<std::string> done;
    std::map<std::string, TimeNs> accessed;  // index key -> REST last access, when listed
    if (cfg_.HasRest()) {
      if (auto entries = RestList(); entries.ok()) {
        for (const auto& e : *entries) accessed[e.key] = std::max(e.last_accessed, e.created);
      } else {
        LOG_WARNING(entries.status().message() << "; access times are unknown");
      }
    }
    TimeNs newest = 0;
    for (const auto& s : scopes_) {
      if (!done.insert(s.scope).second) continue;
      const std::string key = gha::IndexKey(cfg_.scope, s.scope);
      BCFS_ASSIGN_OR_RETURN(std::optional<Entry> e, Lookup(key));
      if (!e) {
        LOG_INFO(What() << ": no cache index for scope " << s.scope << " (" << key << "#…)");
        continue;
      }
      RefEntry ref;
      ref.name = cfg_.scope + "@" + gha::BranchOf(s.scope);
      {
        std::lock_guard<std::mutex> lock(mu_);
        urls_[e->matched_key] = e->url;
      }
      http::Request req;
      auto resp = Download(e->matched_key, req);
      if (!resp.ok()) {
        if (resp.status().code() == Code::kPermissionDenied) return resp.status();
        ref.error = resp.status().message();
        refs.push_back(std::move(ref));
        continue;
      }
      if (resp->body.size() > kMaxIndex) {
        ref.error = What() + ": cache index " + e->matched_key + " is larger than 256 MiB";
        refs.push_back(std::move(ref));
        continue;
      }
      const std::string doc = What() + ": cache index " + e->matched_key;
      auto manifest = gha::SynthesizeManifest(resp->body, doc);
      if (!manifest.ok()) {
        ref.error = manifest.status().message();
        refs.push_back(std::move(ref));
        continue;
      }
      TimeNs mtime = 0;
      if (auto it = accessed.find(e->matched_key); it != accessed.end()) mtime = it->second;
      newest = std::max(newest, mtime);
      ref.descriptor.media_type = std::string(formats::media::kOciIndex);
      ref.descriptor.digest = Digest::Sha256Of(*manifest);
      ref.descriptor.size = static_cast<int64_t>(manifest->size());
      ref.modified = mtime;
      ref.synthesized = true;
      roots.push_back(ref.descriptor.digest);
      {
        std::lock_guard<std::mutex> lock(mu_);
        docs_[Digest::Sha256Of(resp->body)] = Doc{resp->body, mtime};
        docs_[ref.descriptor.digest] = Doc{std::move(*manifest), mtime};
      }
      refs.push_back(std::move(ref));
    }
    std::sort(roots.begin(), roots.end());
    roots.erase(std::unique(roots.begin(), roots.end()), roots.end());
    std::lock_guard<std::mutex> lock(mu_);
    roots_ = std::move(roots);
    refs_modified_ = newest;
    return refs;
  }

  Result<std::vector<RefEntry>> ListRefsFromRest() {
    BCFS_ASSIGN_OR_RETURN(std::vector<gha::RestEntry> entries, RestList());
    // Newest "#n" per scope hash, as the service's prefix lookup would pick.
    std::map<std::string, const gha::RestEntry*> best;
    std::map<std::string, int64_t> best_n;
    TimeNs newest = 0;
    for (const auto& e : entries) {
      auto parts = gha::ParseIndexKey(e.key, cfg_.scope);
      if (!parts) continue;
      if (!best.count(parts->hash) || parts->n > best_n[parts->hash]) {
        best[parts->hash] = &e;
        best_n[parts->hash] = parts->n;
      }
      newest = std::max(newest, std::max(e.created, e.last_accessed));
    }
    std::vector<RefEntry> refs;
    for (const auto& [hash, e] : best) {
      RefEntry ref;
      // The entry's ref is the scope it was written from; its hash says so too.
      const std::string scope = gha::ScopeHash(e->ref) == hash ? e->ref : "";
      ref.name = cfg_.scope + "@" + (scope.empty() ? hash : gha::BranchOf(scope));
      ref.error = "source " + spec_.Redacted() + ": cache index " + e->key + " (" +
                  std::to_string(e->size) +
                  " bytes): its content needs an Actions runtime token and cache URL (token= and "
                  "url=, or ACTIONS_RUNTIME_TOKEN and ACTIONS_RESULTS_URL in a workflow step); "
                  "repository= and ghtoken= give keys, sizes and access times only";
      refs.push_back(std::move(ref));
    }
    std::sort(refs.begin(), refs.end(),
              [](const RefEntry& a, const RefEntry& b) { return a.name < b.name; });
    std::lock_guard<std::mutex> lock(mu_);
    refs_modified_ = newest;
    return refs;
  }

  // Every entry of the repository's cache (all pages).
  Result<std::vector<gha::RestEntry>> RestList() {
    std::vector<gha::RestEntry> all;
    const std::string base = cfg_.api_url + "/repos/" + cfg_.repository + "/actions/caches";
    const std::string what = "GitHub REST API " + http::RedactUrl(base);
    for (int page = 1; page < 100000; ++page) {
      http::Request req;
      req.url = base + "?per_page=100&page=" + std::to_string(page);
      req.headers = {{"Authorization", "Bearer " + cfg_.ghtoken},
                     {"Accept", "application/vnd.github+json"},
                     {"X-GitHub-Api-Version", "2022-11-28"}};
      auto resp = client_->Do(req);
      if (!resp.ok()) return resp.status().WithContext("source " + spec_.Redacted() + ": " + what);
      if (resp->status == 401 || resp->status == 403 || resp->status == 404) {
        return Status(
            resp->status == 404 ? Code::kNotFound : Code::kPermissionDenied,
            "source " + spec_.Redacted() + ": " + what + ": " +
                (resp->status == 404 ? std::string("no such repository, or ") : std::string()) +
                "the ghtoken was refused (" + ErrorText(*resp) + ")",
            static_cast<int>(resp->status));
      }
      if (resp->status != 200) {
        return Status(Code::kUnavailable,
                      "source " + spec_.Redacted() + ": " + what + ": " + ErrorText(*resp),
                      static_cast<int>(resp->status));
      }
      auto p = gha::ParseRestPage(resp->body);
      if (!p.ok()) return p.status().WithContext("source " + spec_.Redacted() + ": " + what);
      const size_t got = p->entries.size();
      for (auto& e : p->entries) all.push_back(std::move(e));
      if (got < 100 || static_cast<int64_t>(all.size()) >= p->total_count) break;
    }
    return all;
  }

  SourceSpec spec_;
  gha::Config cfg_;
  std::vector<gha::TokenScope> scopes_;
  std::unique_ptr<http::Client> client_;
  std::mutex mu_;
  std::map<Digest, Doc> docs_;               // GUARDED_BY(mu_): synthesized manifests, configs
  std::map<Digest, BlobStat> listed_;        // GUARDED_BY(mu_): from the REST listing
  std::map<std::string, std::string> urls_;  // GUARDED_BY(mu_): key -> signed URL
  // GUARDED_BY(mu_): one lookup at a time per key
  std::map<std::string, std::shared_ptr<std::mutex>> lookup_mu_;
  std::vector<Digest> roots_;  // GUARDED_BY(mu_)
  TimeNs refs_modified_ = 0;   // GUARDED_BY(mu_)
};

}  // namespace

Result<std::unique_ptr<Backend>> OpenGhaBackend(const SourceSpec& spec) {
  auto getenv = [](const char* name) {
    const char* v = std::getenv(name);
    return v ? std::string(v) : std::string();
  };
  BCFS_ASSIGN_OR_RETURN(gha::Config cfg, gha::ResolveConfig(spec, getenv));
  std::vector<gha::TokenScope> scopes;
  if (cfg.HasService()) {
    auto t = gha::ParseRuntimeToken(cfg.token, WallClockNow() / 1000000000LL);
    if (!t.ok()) {
      return t.status().WithContext("source " + spec.Redacted() + " (runtime token from " +
                                    cfg.token_origin + ")");
    }
    scopes = std::move(t->scopes);
    if (scopes.empty()) {
      return InvalidArgumentError("source " + spec.Redacted() + ": the runtime token (" +
                                  cfg.token_origin + ") grants no cache scopes");
    }
  } else if (!cfg.token.empty() || !cfg.url.empty()) {
    LOG_WARNING("source " << spec.Redacted() << ": "
                          << (cfg.token.empty() ? "a cache URL but no runtime token"
                                                : "a runtime token but no cache URL")
                          << "; listing through the REST API only");
  }
  return std::unique_ptr<Backend>(new GhaBackend(spec, std::move(cfg), std::move(scopes)));
}

}  // namespace bcfs::backends
