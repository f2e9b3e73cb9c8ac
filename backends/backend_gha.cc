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
// exists (the newest "#n" entry, as BuildKit loads it), and
// "<scope>@<branch>:sig" for its signed index ("-sig#n"; a git branch name
// cannot hold ':'); their top-level blob is the synthesized index-shape
// manifest (gha_protocol.h). Signature bundles ("buildkit-blob-1-<digest of
// the index>-sig") are not blobs: they are not listed, and go with their
// index. With the REST listing, older index generations are held as history
// (their synthesized manifests are listed as blobs no ref reaches), and the
// indexes of scopes the token cannot read are refs with an error. Prune
// deletes entries by id through the REST API. Blobs are read by
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
#include <functional>
#include <limits>
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

// The newest generation (highest "#n") of each index among `entries` whose
// scope hash `want` accepts, keyed by (scope hash, signed): what the
// service's prefix lookup hands out.
using IndexId = std::pair<std::string, bool>;
std::map<IndexId, const gha::RestEntry*> NewestIndexes(
    const std::vector<gha::RestEntry>& entries, std::string_view scope_attr,
    const std::function<bool(const std::string&)>& want) {
  std::map<IndexId, const gha::RestEntry*> best;
  std::map<IndexId, int64_t> best_n;
  for (const auto& e : entries) {
    auto p = gha::ParseIndexKey(e.key, scope_attr);
    if (!p || !want(p->hash)) continue;
    IndexId k{p->hash, p->sig};
    if (!best.count(k) || p->n > best_n[k]) {
      best[k] = &e;
      best_n[k] = p->n;
    }
  }
  return best;
}

class GhaBackend : public Backend {
 public:
  GhaBackend(SourceSpec spec, gha::Config cfg, std::vector<gha::TokenScope> scopes)
      : spec_(std::move(spec)), cfg_(std::move(cfg)), scopes_(std::move(scopes)) {
    http::Options opts;
    // The service's Retry-After is honoured up to the source's timeout.
    opts.max_retry_after_s = std::max<int64_t>(1, std::min<int64_t>(cfg_.timeout_ms / 1000, 120));
    opts.max_attempts = 8;
    opts.metrics_backend = "gha";
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
        st.synthesized = it->second.synthesized;
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
    std::lock_guard<std::mutex> lock(mu_);
    // Older index generations are held by the source too (as their
    // synthesized manifests): nothing reaches them, so they show as history.
    for (const auto& [d, e] : history_) {
      if (auto it = docs_.find(d); it != docs_.end()) {
        BlobStat st;
        st.size = it->second.bytes.size();
        st.mtime = it->second.mtime;
        st.synthesized = true;
        stats.emplace(d, st);
      }
    }
    std::vector<Digest> out;
    for (const auto& [d, st] : stats) out.push_back(d);
    for (auto& [d, st] : stats) listed_[d] = st;
    return out;
  }

  // Prune (DESIGN.md §3) deletes cache entries through the REST API, which
  // needs repository= and ghtoken=. A ref's entry is its newest index
  // generation (with its signature bundle when signed): BuildKit then loads
  // the generation before it, which the sweep deletes too when nothing keeps
  // it.
  Result<std::vector<Digest>> RemoveRefs(const std::vector<std::string>& raw_descriptors) override {
    BCFS_RETURN_IF_ERROR(CanDelete());
    for (const auto& raw : raw_descriptors) {
      IndexEntry entry;
      {
        std::lock_guard<std::mutex> lock(mu_);
        auto it = ref_index_.find(raw);
        if (it == ref_index_.end()) {
          return InvalidArgumentError(What() + ": no ref has the descriptor " + raw);
        }
        entry = it->second;
      }
      BCFS_RETURN_IF_ERROR(DeleteIndex(entry, std::numeric_limits<TimeNs>::max()).status());
    }
    return NewestRoots();
  }

  Result<bool> DeleteBlob(const Digest& digest, TimeNs not_after) override {
    BCFS_RETURN_IF_ERROR(CanDelete());
    std::optional<IndexEntry> index;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (auto it = history_.find(digest); it != history_.end()) index = it->second;
    }
    if (index) return DeleteIndex(*index, not_after);
    BCFS_ASSIGN_OR_RETURN(size_t n, DeleteEntries(gha::BlobKey(digest), not_after));
    return n > 0;
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
    bool synthesized = false;  // a manifest made from an index (the index is stored)
  };

  // One generation of a scope's cache index.
  struct IndexEntry {
    std::string key;  // "index-<scope>-1-<hash>[-sig]#<n>"
    TimeNs created = 0;
    Digest config;  // sha256 of its bytes: what its signature bundle is named by
    bool sig = false;
  };
  // An index read and turned into documents (both kept in docs_).
  struct LoadedIndex {
    formats::Descriptor manifest;
    Digest config;
  };

  Status CanDelete() const {
    if (cfg_.HasRest()) return Status();
    return UnsupportedError("source " + spec_.Redacted() +
                            ": deleting cache entries needs the GitHub REST API "
                            "(repository= and ghtoken=, a token allowed to write actions)");
  }

  // Deletes the index entry `e` (and its signature bundle when signed)
  // unless written after `not_after`; true when the index entry went.
  Result<bool> DeleteIndex(const IndexEntry& e, TimeNs not_after) {
    BCFS_ASSIGN_OR_RETURN(size_t n, DeleteEntries(e.key, not_after));
    if (n > 0 && e.sig) {
      BCFS_RETURN_IF_ERROR(DeleteEntries(gha::SigBundleKey(e.config), not_after).status());
    }
    return n > 0;
  }

  // Deletes every entry of the repository's cache whose key is exactly `key`
  // (one per branch scope that wrote it) and that was created at or before
  // `not_after`, by id: DELETE <api>/repos/<repo>/actions/caches/<id>.
  // Returns how many went; entries already gone do not count.
  Result<size_t> DeleteEntries(const std::string& key, TimeNs not_after) {
    BCFS_ASSIGN_OR_RETURN(std::vector<gha::RestEntry> entries, RestList(key));
    size_t n = 0;
    for (const auto& e : entries) {
      if (e.key != key || e.created > not_after) continue;
      const std::string url = RestBase() + "/" + std::to_string(e.id);
      http::Request req;
      req.method = "DELETE";
      req.url = url;
      req.headers = RestHeaders();
      auto resp = client_->Do(req);
      const std::string what =
          "source " + spec_.Redacted() + ": GitHub REST API: delete cache entry " + key;
      if (!resp.ok()) return resp.status().WithContext(what);
      if (resp->status == 404) continue;
      if (resp->status != 204 && resp->status != 200) {
        return Status(resp->status == 401 || resp->status == 403 ? Code::kPermissionDenied
                                                                 : Code::kUnavailable,
                      what + " (id " + std::to_string(e.id) + "): " + ErrorText(*resp),
                      static_cast<int>(resp->status));
      }
      LOG_INFO(what << " (id " << e.id << ", " << e.ref << ")");
      ++n;
      std::lock_guard<std::mutex> lock(mu_);
      urls_.erase(key);
    }
    return n;
  }

  // The synthesized manifests of the newest index generation of every scope
  // the token reads, as the REST API lists them now (what a concurrent export
  // wrote included).
  Result<std::vector<Digest>> NewestRoots() {
    BCFS_ASSIGN_OR_RETURN(std::vector<gha::RestEntry> entries, RestList());
    std::set<std::string> readable;
    for (const auto& s : scopes_) readable.insert(gha::ScopeHash(s.scope));
    std::vector<Digest> roots;
    for (const auto& [k, e] : NewestIndexes(
             entries, cfg_.scope, [&](const std::string& h) { return readable.count(h) > 0; })) {
      std::optional<Digest> known;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (auto it = key_manifest_.find(e->key); it != key_manifest_.end()) known = it->second;
      }
      if (!known) {
        BCFS_ASSIGN_OR_RETURN(std::optional<LoadedIndex> loaded, LoadExact(e->key, e->created));
        if (!loaded) continue;  // gone meanwhile
        known = loaded->manifest.digest;
      }
      roots.push_back(*known);
    }
    std::sort(roots.begin(), roots.end());
    return roots;
  }

  // Reads the index entry `key` (whose signed URL UrlOf knows or looks up)
  // and keeps it and its synthesized manifest as documents.
  Result<LoadedIndex> LoadIndex(const std::string& key, TimeNs mtime) {
    http::Request req;
    BCFS_ASSIGN_OR_RETURN(http::Response resp, Download(key, req));
    if (resp.body.size() > kMaxIndex) {
      return CorruptError(What() + ": cache index " + key + " is larger than 256 MiB");
    }
    BCFS_ASSIGN_OR_RETURN(std::string manifest,
                          gha::SynthesizeManifest(resp.body, What() + ": cache index " + key));
    LoadedIndex out;
    out.manifest.media_type = std::string(formats::media::kOciIndex);
    out.manifest.digest = Digest::Sha256Of(manifest);
    out.manifest.size = static_cast<int64_t>(manifest.size());
    out.config = Digest::Sha256Of(resp.body);
    std::lock_guard<std::mutex> lock(mu_);
    docs_[out.config] = Doc{std::move(resp.body), mtime};
    docs_[out.manifest.digest] = Doc{std::move(manifest), mtime, true};
    key_manifest_[key] = out.manifest.digest;
    return out;
  }

  // LoadIndex of exactly `key` (the service looks keys up by prefix);
  // nullopt when the cache no longer holds it.
  Result<std::optional<LoadedIndex>> LoadExact(const std::string& key, TimeNs mtime) {
    BCFS_ASSIGN_OR_RETURN(std::optional<Entry> e, Lookup(key));
    if (!e || e->matched_key != key) return std::optional<LoadedIndex>();
    {
      std::lock_guard<std::mutex> lock(mu_);
      urls_[key] = e->url;
    }
    BCFS_ASSIGN_OR_RETURN(LoadedIndex loaded, LoadIndex(key, mtime));
    return std::optional<LoadedIndex>(std::move(loaded));
  }

  // The descriptor a gha ref has in the mount's index.json (there is no
  // stored one): how RemoveRefs is told which refs go.
  static std::string RawDescriptor(const RefEntry& ref) {
    Json name = ref.name;
    return "{\"mediaType\":\"" + ref.descriptor.media_type + "\",\"digest\":\"" +
           ref.descriptor.digest.ToString() + "\",\"size\":" + std::to_string(ref.descriptor.size) +
           ",\"annotations\":{\"" + std::string(formats::annotation::kRefName) +
           "\":" + name.dump() + "}}";
  }

  // "<scope>@<branch>[:sig]" of an index the REST API lists: the entry's ref
  // is the scope it was written from (its hash says so too); the hash when not.
  std::string RefName(const gha::RestEntry& e, const IndexId& id) const {
    const bool known = gha::ScopeHash(e.ref) == id.first;
    return cfg_.scope + "@" + (known ? gha::BranchOf(e.ref) : id.first) + (id.second ? ":sig" : "");
  }

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
    auto answer = gha::ParseLookupAnswer(resp->body, cfg_.version);
    if (!answer.ok()) return answer.status().WithContext(What() + ": look up " + key);
    if (!*answer) return std::optional<Entry>();
    return std::optional<Entry>(
        Entry{std::move((*answer)->matched_key), std::move((*answer)->url)});
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

  // The newest index of every scope the token reads, unsigned and "-sig"
  // (ref "<scope>@<branch>:sig"; a branch name cannot hold ':'). With the
  // REST listing also the older generations (history) and the indexes of
  // scopes the token cannot read (refs with an error: prune must not sweep
  // what they may reach).
  Result<std::vector<RefEntry>> ListRefsFromService() {
    {
      // A refresh lists afresh: entries deleted since are no refs or history.
      std::lock_guard<std::mutex> lock(mu_);
      ref_index_.clear();
      history_.clear();
    }
    std::vector<RefEntry> refs;
    std::vector<Digest> roots;
    std::vector<gha::RestEntry> rest;
    bool have_rest = false;
    if (cfg_.HasRest()) {
      if (auto entries = RestList(); entries.ok()) {
        rest = std::move(*entries);
        have_rest = true;
      } else {
        LOG_WARNING(entries.status().message()
                    << "; access times, older index generations and other scopes are unknown");
      }
    }
    std::map<std::string, const gha::RestEntry*> by_key;
    for (const auto& e : rest) by_key.emplace(e.key, &e);
    auto rest_time = [&](const std::string& key) -> TimeNs {
      auto it = by_key.find(key);
      return it == by_key.end() ? 0 : std::max(it->second->last_accessed, it->second->created);
    };
    auto rest_created = [&](const std::string& key) -> TimeNs {
      auto it = by_key.find(key);
      return it == by_key.end() ? 0 : it->second->created;
    };
    std::set<std::string> newest_keys, readable, done;
    TimeNs newest = 0;
    for (const auto& s : scopes_) {
      if (!done.insert(s.scope).second) continue;
      readable.insert(gha::ScopeHash(s.scope));
      for (bool sig : {false, true}) {
        const std::string prefix = gha::IndexKey(cfg_.scope, s.scope) + (sig ? "-sig#" : "#");
        BCFS_ASSIGN_OR_RETURN(std::optional<Entry> e, Lookup(prefix));
        if (!e) {
          if (!sig)
            LOG_INFO(What() << ": no cache index for scope " << s.scope << " (" << prefix << "…)");
          continue;
        }
        newest_keys.insert(e->matched_key);
        RefEntry ref;
        ref.name = cfg_.scope + "@" + gha::BranchOf(s.scope) + (sig ? ":sig" : "");
        {
          std::lock_guard<std::mutex> lock(mu_);
          urls_[e->matched_key] = e->url;
        }
        const TimeNs mtime = rest_time(e->matched_key);
        auto loaded = LoadIndex(e->matched_key, mtime);
        if (!loaded.ok()) {
          if (loaded.status().code() == Code::kPermissionDenied) return loaded.status();
          ref.error = loaded.status().message();
          refs.push_back(std::move(ref));
          continue;
        }
        newest = std::max(newest, mtime);
        ref.modified = mtime;  // the REST API's last_accessed_at: BuildKit's "last use"
        ref.synthesized = true;
        ref.descriptor = loaded->manifest;
        ref.raw_descriptor = RawDescriptor(ref);
        roots.push_back(ref.descriptor.digest);
        {
          std::lock_guard<std::mutex> lock(mu_);
          ref_index_[ref.raw_descriptor] =
              IndexEntry{e->matched_key, rest_created(e->matched_key), loaded->config, sig};
        }
        refs.push_back(std::move(ref));
      }
    }
    if (have_rest) {
      // Older generations of the scopes the token reads.
      for (const auto& e : rest) {
        auto p = gha::ParseIndexKey(e.key, cfg_.scope);
        if (!p || newest_keys.count(e.key) || !readable.count(p->hash)) continue;
        auto loaded = LoadExact(e.key, std::max(e.last_accessed, e.created));
        if (!loaded.ok()) {
          if (loaded.status().code() == Code::kPermissionDenied) return loaded.status();
          LOG_WARNING(loaded.status().message() << "; not shown in history/");
          continue;
        }
        if (!*loaded) continue;  // gone meanwhile
        std::lock_guard<std::mutex> lock(mu_);
        history_[(*loaded)->manifest.digest] =
            IndexEntry{e.key, e.created, (*loaded)->config, p->sig};
      }
      // The indexes of scopes it does not read.
      for (const auto& [k, e] : NewestIndexes(
               rest, cfg_.scope, [&](const std::string& h) { return readable.count(h) == 0; })) {
        RefEntry ref;
        ref.name = RefName(*e, k);
        ref.error = "source " + spec_.Redacted() + ": cache index " + e->key + " (" +
                    std::to_string(e->size) + " bytes) of scope " + e->ref +
                    ": the runtime token (" + cfg_.token_origin +
                    ") does not grant this scope, so its content cannot be read";
        refs.push_back(std::move(ref));
      }
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
    TimeNs newest = 0;
    for (const auto& e : entries) {
      if (gha::ParseIndexKey(e.key, cfg_.scope)) {
        newest = std::max(newest, std::max(e.created, e.last_accessed));
      }
    }
    std::vector<RefEntry> refs;
    for (const auto& [k, e] :
         NewestIndexes(entries, cfg_.scope, [](const std::string&) { return true; })) {
      RefEntry ref;
      ref.name = RefName(*e, k);
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

  std::string RestBase() const {
    return cfg_.api_url + "/repos/" + cfg_.repository + "/actions/caches";
  }
  std::vector<http::Header> RestHeaders() const {
    return {{"Authorization", "Bearer " + cfg_.ghtoken},
            {"Accept", "application/vnd.github+json"},
            {"X-GitHub-Api-Version", "2022-11-28"}};
  }

  // Every entry of the repository's cache whose key starts with `key_prefix`
  // (all pages).
  Result<std::vector<gha::RestEntry>> RestList(const std::string& key_prefix = "") {
    std::vector<gha::RestEntry> all;
    const std::string base = RestBase();
    const std::string what = "GitHub REST API " + http::RedactUrl(base);
    for (int page = 1; page < 100000; ++page) {
      http::Request req;
      req.url = base + "?per_page=100&page=" + std::to_string(page);
      if (!key_prefix.empty()) req.url += "&key=" + QueryEscape(key_prefix);
      req.headers = RestHeaders();
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
  // GUARDED_BY(mu_): the index entry of each ref, by its raw descriptor
  std::map<std::string, IndexEntry> ref_index_;
  std::map<Digest, IndexEntry> history_;        // GUARDED_BY(mu_): older generations
  std::map<std::string, Digest> key_manifest_;  // GUARDED_BY(mu_): index key -> manifest
  TimeNs refs_modified_ = 0;                    // GUARDED_BY(mu_)
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
