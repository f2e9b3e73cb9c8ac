// type=azblob caches (FORMATS.md §6): an Azure Blob Storage container holding
// <prefix>/<blobs_prefix>/sha256:<hex> layer blobs and
// <prefix>/<manifests_prefix>/<name> manifest blobs (the cache config with
// per-layer annotations). BuildKit stores no OCI manifest there, so each
// manifest blob becomes a ref whose top-level document is an index-shape
// cache manifest, synthesized exactly as for type=s3 (s3::SynthesizeManifest,
// so one cache gives the same digests in both stores) and served from memory
// under its digest, with the manifest blob itself served as the cache config
// under its own digest: the catalog and the tree see an ordinary ref.
//
// REST calls: List Blobs (paged with NextMarker), Get Blob (ranged), Get Blob
// Properties (HEAD), authorized with Shared Key or a SAS token (azure_auth.h).
// With name= nothing needs listing but ListRoots/ListBlobs (history, orphans):
// a SAS that may read but not list (sp=r) still serves the named refs, and
// ListBlobs then answers kUnsupported with the service's refusal.
//
// Requests are signed per attempt (http::Request::sign), so a GET the HTTP
// client resumes with a new Range carries a Shared Key signature over it.
//
// Thread-safety: the documents and stats learnt from the service sit behind
// one mutex; the HTTP client is thread-safe.

#include <cstring>
#include <ctime>
#include <map>
#include <mutex>
#include <set>

#include "backends/azblob_config.h"
#include "backends/backend.h"
#include "backends/backend_s3.h"
#include "core/log.h"
#include "formats/oci.h"

namespace bcfs::backends {
namespace {

constexpr uint64_t kMaxManifestBlob = 64u << 20;
constexpr int kDefaultListPage = 5000;  // the service's own maximum
constexpr int kMaxListPages = 100000;

// The service's error code: x-ms-error-code, else <Code> of the XML body.
std::string ErrorCode(const http::Response& r) {
  std::string code = r.Get("x-ms-error-code");
  if (!code.empty()) return code;
  size_t a = r.body.find("<Code>");
  size_t b = r.body.find("</Code>");
  if (a != std::string::npos && b != std::string::npos && b > a) {
    code = r.body.substr(a + 6, b - a - 6);
    if (code.size() > 80) code.resize(80);
  }
  return code;
}

int ListPageSize() {
  // Tests shrink pages to exercise NextMarker without thousands of blobs.
  if (auto v = ProcessEnv("BUILDCACHEFS_AZBLOB_LIST_PAGE_SIZE")) {
    int n = std::atoi(v->c_str());
    if (n > 0 && n <= kDefaultListPage) return n;
  }
  return kDefaultListPage;
}

TimeNs LastModified(const http::Response& r) {
  auto t = ParseAzureHttpDate(r.Get("Last-Modified"));
  return t.ok() ? TimeNs(*t) * 1000000000 : 0;
}

class AzblobBackend : public Backend {
 public:
  AzblobBackend(SourceSpec spec, AzblobConfig cfg)
      : spec_(std::move(spec)),
        cfg_(std::move(cfg)),
        client_(http::Options{.metrics_backend = "azblob"}) {}

  std::string Describe() const override { return spec_.Redacted(); }
  bool CheapStat() const override { return false; }

  Result<std::vector<RefEntry>> ListRefs() override;
  Result<std::vector<Digest>> ListRoots() override;
  Result<BlobStat> StatBlob(const Digest& digest) override;
  Result<size_t> ReadBlob(const Digest& digest, uint64_t offset, std::span<char> out) override;
  Result<std::string> ReadDocument(const Digest& digest, uint64_t max_size) override;
  Result<std::vector<Digest>> ListBlobs() override;
  TimeNs RefsModified() override;
  Status StreamBlob(const Digest& digest, uint64_t offset, uint64_t length,
                    const std::function<bool(std::string_view)>& sink) override;
  bool Streams() const override { return true; }
  Result<std::vector<Digest>> RemoveRefs(const std::vector<std::string>& raw_descriptors) override;
  Result<bool> DeleteBlob(const Digest& digest, TimeNs not_after) override;

 private:
  struct Doc {
    std::string bytes;
    TimeNs mtime = 0;
  };
  // What one manifest blob gave: the synthesized manifest's descriptor, or
  // why it is unusable (the service's own failures are returned as errors).
  struct ManifestResult {
    formats::Descriptor descriptor;
    std::string error;
    TimeNs modified = 0;
  };
  // Delete Blob of `key`; false when it is gone already or (with
  // If-Unmodified-Since) was written after `not_after`.
  Result<bool> Delete(const std::string& key, std::optional<TimeNs> not_after);

  std::string BlobUrl(const std::string& key) const {
    return cfg_.ContainerUrl() + "/" + AzureEscapePath(key);
  }
  // With `sink`, a 2xx body is streamed to it (http::Client::Stream).
  Result<http::Response> Send(http::Request req,
                              const std::function<bool(std::string_view)>* sink = nullptr);
  // The error for a non-2xx answer to `op` (BlobNotFound is kNotFound).
  Status Failure(const http::Response& r, const std::string& op) const;
  Result<std::vector<ListedBlob>> List(const std::string& prefix);
  Result<ManifestResult> LoadManifest(const std::string& name);
  // The documents of this source once (for reads before any ListRefs).
  void EnsureDocs();
  std::optional<Doc> FindDoc(const Digest& digest);

  SourceSpec spec_;
  AzblobConfig cfg_;
  http::Client client_;

  std::mutex mu_;
  std::map<Digest, Doc> docs_;             // GUARDED_BY(mu_)
  std::map<Digest, BlobStat> stats_;       // GUARDED_BY(mu_): from listings and HEADs
  std::map<std::string, Digest> by_name_;  // GUARDED_BY(mu_): manifest name -> synthesized
  bool docs_loaded_ = false;               // GUARDED_BY(mu_)
  std::mutex load_mu_;                     // one EnsureDocs at a time
};

Result<http::Response> AzblobBackend::Send(http::Request req,
                                           const std::function<bool(std::string_view)>* sink) {
  // Signed per attempt: Shared Key covers the Range, which a resume changes.
  req.sign = [this](http::Request& r) { return cfg_.credential.Sign(r, std::time(nullptr)); };
  auto resp = sink != nullptr ? client_.Stream(req, *sink) : client_.Do(req);
  if (!resp.ok()) return resp.status().WithContext(cfg_.What());
  return resp;
}

Status AzblobBackend::Failure(const http::Response& r, const std::string& op) const {
  const std::string code = ErrorCode(r);
  const std::string http = "HTTP " + std::to_string(r.status) + (code.empty() ? "" : " " + code);
  const int status = static_cast<int>(r.status);
  if (r.status == 401 || r.status == 403) {
    std::string hint;
    switch (cfg_.credential.kind()) {
      case AzureCredential::Kind::kSharedKey:
        hint = "is the account key right for account " + cfg_.account_name + "?";
        break;
      case AzureCredential::Kind::kSas:
        hint = "is the SAS token valid, unexpired and allowed to read and list (sp=rl)?";
        break;
      case AzureCredential::Kind::kAnonymous:
        hint =
            "the container is not public: give secret_access_key, a SAS in account_url or "
            "AZURE_STORAGE_CONNECTION_STRING (Microsoft Entra ID credentials are not supported)";
        break;
    }
    return Status(Code::kPermissionDenied,
                  cfg_.What() + ": " + op + ": the storage service refused " +
                      cfg_.credential.Describe() + " (" + http + "); " + hint,
                  status);
  }
  if (r.status == 404 && code == "ContainerNotFound") {
    return Status(Code::kNotFound, cfg_.What() + ": the container does not exist (" + http + ")",
                  status);
  }
  if (r.status == 404) {
    return Status(Code::kNotFound, cfg_.What() + ": " + op + ": not found (" + http + ")", status);
  }
  return Status(Code::kUnavailable, cfg_.What() + ": " + op + ": " + http, status);
}

Result<std::vector<ListedBlob>> AzblobBackend::List(const std::string& prefix) {
  std::vector<ListedBlob> out;
  std::string marker;
  const int page_size = ListPageSize();
  for (int page = 0; page < kMaxListPages; ++page) {
    http::Request req;
    req.url = cfg_.ContainerUrl() +
              "?restype=container&comp=list&maxresults=" + std::to_string(page_size);
    if (!prefix.empty()) req.url += "&prefix=" + AzureEscapeQuery(prefix);
    if (!marker.empty()) req.url += "&marker=" + AzureEscapeQuery(marker);
    BCFS_ASSIGN_OR_RETURN(http::Response resp, Send(req));
    const std::string op = "list blobs under \"" + prefix + "\"";
    if (resp.status != 200) return Failure(resp, op);
    auto parsed = ParseBlobList(resp.body);
    if (!parsed.ok()) return parsed.status().WithContext(cfg_.What() + ": " + op);
    for (auto& b : parsed->blobs) out.push_back(std::move(b));
    if (parsed->next_marker.empty()) return out;
    if (parsed->next_marker == marker) {
      return CorruptError(cfg_.What() + ": " + op + ": the service repeated marker " + marker);
    }
    marker = parsed->next_marker;
  }
  return CorruptError(cfg_.What() + ": list blobs under \"" + prefix + "\": more than " +
                      std::to_string(kMaxListPages) + " pages");
}

Result<AzblobBackend::ManifestResult> AzblobBackend::LoadManifest(const std::string& name) {
  const std::string key = cfg_.ManifestKey(name);
  http::Request req;
  req.url = BlobUrl(key);
  BCFS_ASSIGN_OR_RETURN(http::Response resp, Send(req));
  ManifestResult res;
  if (resp.status == 404 && ErrorCode(resp) != "ContainerNotFound") {
    res.error = cfg_.What() + ": manifest blob " + key + " not found (HTTP 404" +
                (ErrorCode(resp).empty() ? "" : " " + ErrorCode(resp)) + ")";
    return res;
  }
  if (resp.status != 200) return Failure(resp, "get manifest blob " + key);
  if (resp.body.size() > kMaxManifestBlob) {
    res.error = cfg_.What() + ": manifest blob " + key + " is larger than 64 MiB";
    return res;
  }
  const TimeNs mtime = LastModified(resp);
  auto synth = s3::SynthesizeManifest(resp.body, "manifest blob " + key);
  if (!synth.ok()) {
    res.error = cfg_.What() + ": " + synth.status().message();
    return res;
  }
  const Digest config_digest = Digest::Sha256Of(resp.body);
  const Digest manifest_digest = Digest::Sha256Of(*synth);
  res.descriptor.media_type = std::string(formats::media::kOciIndex);
  res.descriptor.digest = manifest_digest;
  res.descriptor.size = static_cast<int64_t>(synth->size());
  res.modified = mtime;
  std::lock_guard<std::mutex> lock(mu_);
  docs_[config_digest] = Doc{std::move(resp.body), mtime};
  docs_[manifest_digest] = Doc{std::move(*synth), mtime};
  by_name_[name] = manifest_digest;
  return res;
}

Result<std::vector<RefEntry>> AzblobBackend::ListRefs() {
  std::vector<std::string> names = cfg_.names;
  if (names.empty()) {
    const std::string dir = cfg_.ManifestsDir();
    BCFS_ASSIGN_OR_RETURN(std::vector<ListedBlob> listed, List(dir));
    for (const auto& b : listed) {
      if (b.name.size() <= dir.size() || b.name.back() == '/') continue;
      // With no prefixes at all every blob is listed: the layer blobs are not refs.
      if (dir.empty() && b.name.rfind(cfg_.BlobsDir(), 0) == 0) continue;
      names.push_back(b.name.substr(dir.size()));
    }
  }
  std::vector<RefEntry> refs;
  for (const auto& name : names) {
    BCFS_ASSIGN_OR_RETURN(ManifestResult m, LoadManifest(name));
    RefEntry e;
    e.name = name;
    e.descriptor = m.descriptor;
    e.error = m.error;
    if (m.error.empty()) {
      e.raw_descriptor = s3::RefDescriptorJson(name, e.descriptor);
      e.modified = m.modified;
      e.synthesized = true;
    }
    refs.push_back(std::move(e));
  }
  std::lock_guard<std::mutex> lock(mu_);
  docs_loaded_ = true;
  return refs;
}

Result<std::vector<Digest>> AzblobBackend::ListRoots() {
  // Every manifest blob under the manifests prefix, whatever name= selected:
  // a blob another name uses is not an orphan.
  const std::string dir = cfg_.ManifestsDir();
  BCFS_ASSIGN_OR_RETURN(std::vector<ListedBlob> listed, List(dir));
  std::vector<Digest> roots;
  for (const auto& b : listed) {
    if (b.name.size() <= dir.size() || b.name.back() == '/') continue;
    if (dir.empty() && b.name.rfind(cfg_.BlobsDir(), 0) == 0) continue;
    const std::string name = b.name.substr(dir.size());
    std::optional<Digest> known;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (auto it = by_name_.find(name); it != by_name_.end()) known = it->second;
    }
    if (!known) {
      BCFS_ASSIGN_OR_RETURN(ManifestResult m, LoadManifest(name));
      if (!m.error.empty()) continue;  // unreadable: it reaches nothing
      known = m.descriptor.digest;
    }
    roots.push_back(*known);
  }
  return roots;
}

void AzblobBackend::EnsureDocs() {
  std::lock_guard<std::mutex> once(load_mu_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (docs_loaded_) return;
  }
  if (auto refs = ListRefs(); !refs.ok()) {
    LOG_WARNING(refs.status().message());
    return;
  }
  (void)ListRoots();
}

std::optional<AzblobBackend::Doc> AzblobBackend::FindDoc(const Digest& digest) {
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = docs_.find(digest); it != docs_.end()) return it->second;
  return std::nullopt;
}

Result<BlobStat> AzblobBackend::StatBlob(const Digest& digest) {
  for (int round = 0; round < 2; ++round) {
    if (auto doc = FindDoc(digest)) return BlobStat{doc->bytes.size(), doc->mtime};
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (auto it = stats_.find(digest); it != stats_.end()) return it->second;
    }
    const std::string key = cfg_.BlobKey(digest.ToString());
    http::Request req;
    req.method = "HEAD";
    req.url = BlobUrl(key);
    BCFS_ASSIGN_OR_RETURN(http::Response resp, Send(req));
    if (resp.status == 200) {
      BlobStat st;
      st.size = std::strtoull(resp.Get("Content-Length").c_str(), nullptr, 10);
      st.mtime = LastModified(resp);
      std::lock_guard<std::mutex> lock(mu_);
      stats_[digest] = st;
      return st;
    }
    if (resp.status == 404 && ErrorCode(resp) != "ContainerNotFound" && round == 0) {
      EnsureDocs();  // a synthesized document asked for before any ListRefs
      continue;
    }
    return Failure(resp, "get properties of blob " + key);
  }
  return InternalError("unreachable");
}

Result<size_t> AzblobBackend::ReadBlob(const Digest& digest, uint64_t offset, std::span<char> out) {
  if (out.empty()) return size_t{0};
  for (int round = 0; round < 2; ++round) {
    if (auto doc = FindDoc(digest)) {
      if (offset >= doc->bytes.size()) return size_t{0};
      size_t n = std::min<uint64_t>(out.size(), doc->bytes.size() - offset);
      std::memcpy(out.data(), doc->bytes.data() + offset, n);
      return n;
    }
    const std::string key = cfg_.BlobKey(digest.ToString());
    http::Request req;
    req.url = BlobUrl(key);
    req.range = std::make_pair(offset, offset + out.size() - 1);
    BCFS_ASSIGN_OR_RETURN(http::Response resp, Send(req));
    if (resp.status == 416) return size_t{0};
    if (resp.status == 200 || resp.status == 206) {
      size_t n = std::min(resp.body.size(), out.size());
      std::memcpy(out.data(), resp.body.data(), n);
      return n;
    }
    if (resp.status == 404 && ErrorCode(resp) != "ContainerNotFound" && round == 0) {
      EnsureDocs();
      continue;
    }
    return Failure(resp, "get blob " + key);
  }
  return InternalError("unreachable");
}

Status AzblobBackend::StreamBlob(const Digest& digest, uint64_t offset, uint64_t length,
                                 const std::function<bool(std::string_view)>& sink) {
  if (length == 0) return OkStatus();
  if (auto doc = FindDoc(digest)) {
    if (offset > doc->bytes.size() || length > doc->bytes.size() - offset) {
      return CorruptError(cfg_.What() + ": " + digest.ToString() + " has " +
                          std::to_string(doc->bytes.size()) + " bytes, fewer than asked");
    }
    if (!sink(std::string_view(doc->bytes).substr(offset, length))) {
      return Status(Code::kIo, "the receiver stopped the transfer");
    }
    return OkStatus();
  }
  // Layer blobs only: documents are known once the refs were listed, which
  // happens before any blob is opened.
  const std::string key = cfg_.BlobKey(digest.ToString());
  http::Request req;
  req.url = BlobUrl(key);
  req.range = std::make_pair(offset, offset + length - 1);
  BCFS_ASSIGN_OR_RETURN(http::Response resp, Send(req, &sink));
  if (resp.status != 200 && resp.status != 206) return Failure(resp, "get blob " + key);
  return OkStatus();
}

Result<std::string> AzblobBackend::ReadDocument(const Digest& digest, uint64_t max_size) {
  for (int round = 0; round < 2; ++round) {
    std::string bytes;
    const std::string key = cfg_.BlobKey(digest.ToString());
    if (auto doc = FindDoc(digest)) {
      bytes = std::move(doc->bytes);
    } else {
      http::Request req;
      req.url = BlobUrl(key);
      BCFS_ASSIGN_OR_RETURN(http::Response resp, Send(req));
      if (resp.status == 404 && ErrorCode(resp) != "ContainerNotFound" && round == 0) {
        EnsureDocs();
        continue;
      }
      if (resp.status != 200) return Failure(resp, "get blob " + key);
      bytes = std::move(resp.body);
    }
    if (bytes.size() > max_size) {
      return CorruptError(cfg_.What() + ": " + digest.ToString() + " is larger than " +
                          std::to_string(max_size) + " bytes");
    }
    Digest got = Digest::Sha256Of(bytes);
    if (got != digest) {
      return CorruptError(cfg_.What() + ": blob " + key +
                          " does not match its digest (its bytes hash to " + got.ToString() + ")");
    }
    return bytes;
  }
  return InternalError("unreachable");
}

Result<std::vector<Digest>> AzblobBackend::ListBlobs() {
  const std::string dir = cfg_.BlobsDir();
  auto listing = List(dir);
  if (!listing.ok() && listing.status().code() == Code::kPermissionDenied && !cfg_.names.empty()) {
    // A read-only SAS (sp=r) reads the named manifests and their blobs but
    // cannot list: the refs still work, only orphans stay unknown.
    return UnsupportedError(listing.status().message());
  }
  if (!listing.ok()) return listing.status();
  std::vector<ListedBlob> listed = std::move(*listing);
  std::set<Digest> out;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& b : listed) {
    if (b.name.size() <= dir.size()) continue;
    auto d = Digest::Parse(std::string_view(b.name).substr(dir.size()));
    if (!d.ok()) continue;  // not BuildKit's: ignored
    stats_[*d] = BlobStat{b.size, b.modified};
    out.insert(*d);
  }
  return std::vector<Digest>(out.begin(), out.end());
}

TimeNs AzblobBackend::RefsModified() {
  const std::string dir = cfg_.ManifestsDir();
  auto listed = List(dir);
  if (!listed.ok()) return 0;
  std::set<std::string> wanted(cfg_.names.begin(), cfg_.names.end());
  TimeNs newest = 0;
  for (const auto& b : *listed) {
    if (b.name.size() <= dir.size()) continue;
    if (!wanted.empty() && !wanted.count(b.name.substr(dir.size()))) continue;
    newest = std::max(newest, b.modified);
  }
  return newest;
}

Result<bool> AzblobBackend::Delete(const std::string& key, std::optional<TimeNs> not_after) {
  http::Request req;
  req.method = "DELETE";
  req.url = BlobUrl(key);
  if (not_after) {
    // The service keeps Last-Modified in whole seconds: not after the second
    // before `not_after` is surely not after `not_after`.
    req.headers.push_back(
        {"If-Unmodified-Since", AzureHttpDate(static_cast<std::time_t>(*not_after / 1000000000 -
                                                                       (*not_after < 0 ? 1 : 0)))});
  }
  BCFS_ASSIGN_OR_RETURN(http::Response resp, Send(req));
  if (resp.status == 202 || resp.status == 200) {
    LOG_INFO(cfg_.What() + ": deleted blob " + key + " (prune)");
    return true;
  }
  if (resp.status == 412) return false;  // written since
  if (resp.status == 404 && ErrorCode(resp) != "ContainerNotFound") return false;
  return Failure(resp, "delete blob " + key);
}

Result<std::vector<Digest>> AzblobBackend::RemoveRefs(
    const std::vector<std::string>& raw_descriptors) {
  for (const std::string& raw : raw_descriptors) {
    BCFS_ASSIGN_OR_RETURN(auto ref, s3::ParseRefDescriptorJson(raw));
    // Only what the plan saw goes: a manifest an export rewrote meanwhile
    // stays (and the roots listed below keep what it reaches).
    BCFS_ASSIGN_OR_RETURN(ManifestResult now, LoadManifest(ref.first));
    if (!now.error.empty() || now.descriptor.digest != ref.second) continue;
    BCFS_ASSIGN_OR_RETURN(bool deleted, Delete(cfg_.ManifestKey(ref.first), std::nullopt));
    (void)deleted;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    by_name_.clear();  // read every manifest again: exports may have run meanwhile
  }
  return ListRoots();
}

Result<bool> AzblobBackend::DeleteBlob(const Digest& digest, TimeNs not_after) {
  const std::string key = cfg_.BlobKey(digest.ToString());
  http::Request head;
  head.method = "HEAD";
  head.url = BlobUrl(key);
  BCFS_ASSIGN_OR_RETURN(http::Response props, Send(head));
  if (props.status == 404 && ErrorCode(props) != "ContainerNotFound") return false;
  if (props.status != 200) return Failure(props, "get properties of blob " + key);
  if (s3::MaybeWrittenAfter(LastModified(props), not_after)) return false;
  BCFS_ASSIGN_OR_RETURN(bool deleted, Delete(key, not_after));
  std::lock_guard<std::mutex> lock(mu_);
  stats_.erase(digest);
  return deleted;
}

}  // namespace

Result<std::unique_ptr<Backend>> OpenAzblobBackend(const SourceSpec& spec) {
  auto cfg = ResolveAzblobConfig(spec, ProcessEnv);
  if (!cfg.ok()) return cfg.status().WithContext("source " + spec.Redacted());
  return std::unique_ptr<Backend>(new AzblobBackend(spec, std::move(*cfg)));
}

}  // namespace bcfs::backends
