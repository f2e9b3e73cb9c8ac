#include "backends/backend_registry.h"

#include <cstring>

#include "backends/naming.h"
#include "core/log.h"
#include "formats/cache_manifest.h"
#include "formats/oci.h"

namespace bcfs::backends {
namespace {

constexpr char kAccept[] =
    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.docker.distribution.manifest.v2+json";

constexpr uint64_t kMaxManifest = 64u << 20;

std::string MediaTypeOf(const http::Response& r) {
  std::string ct = r.Get("Content-Type");
  if (size_t semi = ct.find(';'); semi != std::string::npos) ct = ct.substr(0, semi);
  while (!ct.empty() && ct.back() == ' ') ct.pop_back();
  return ct;
}

// The "next" target of a Link header (tags/list pagination), "" when none.
std::string NextLink(const std::string& link) {
  size_t lt = link.find('<'), gt = link.find('>');
  if (lt == std::string::npos || gt == std::string::npos || gt < lt) return "";
  if (link.find("rel=\"next\"", gt) == std::string::npos &&
      link.find("rel=next", gt) == std::string::npos) {
    return "";
  }
  return link.substr(lt + 1, gt - lt - 1);
}

}  // namespace

Result<std::unique_ptr<RegistryBackend>> RegistryBackend::Open(const SourceSpec& spec) {
  BCFS_ASSIGN_OR_RETURN(Reference ref, ParseReference(spec.Get("ref")));
  const std::string insecure_attr = spec.Get("registry.insecure", "false");
  const bool insecure = insecure_attr == "true" || insecure_attr == "1";
  auto creds = LookupCredentials(ref.CredentialKey());
  if (!creds.ok()) return creds.status().WithContext("source " + spec.Redacted());
  http::Options opts;
  opts.verify_tls = !insecure;
  opts.metrics_backend = "registry";
  return std::unique_ptr<RegistryBackend>(new RegistryBackend(spec, ref, *creds, opts));
}

RegistryBackend::RegistryBackend(SourceSpec spec, Reference ref, Credentials creds,
                                 http::Options opts)
    : spec_(std::move(spec)),
      ref_(std::move(ref)),
      insecure_(opts.verify_tls == false),
      client_(std::make_unique<http::Client>(opts)) {
  auth_ = std::make_unique<RegistryAuth>(*client_, std::move(creds), What());
}

std::string RegistryBackend::Describe() const { return spec_.Redacted(); }

std::string RegistryBackend::What() const {
  return "registry " + ref_.domain + ", ref " + ref_.repository +
         (ref_.digest.empty() ? ":" + ref_.tag : "@" + ref_.digest);
}

std::string RegistryBackend::Url(const std::string& path) const {
  return ref_.Endpoint(insecure_) + "/v2/" + ref_.repository + "/" + path;
}

Result<http::Response> RegistryBackend::Send(http::Request req, const std::string& actions) {
  const std::string scope = "repository:" + ref_.repository + ":" + actions;
  for (int round = 0; round < 2; ++round) {
    http::Request r = req;
    if (std::string h = auth_->Header(); !h.empty()) r.headers.push_back({"Authorization", h});
    auto resp = client_->Do(r);
    if (!resp.ok()) return resp.status().WithContext(What());
    if (resp->status != 401) return resp;
    if (round == 1) break;
    BCFS_RETURN_IF_ERROR(auth_->Answer(resp->Get("WWW-Authenticate"), scope));
  }
  return Status(Code::kPermissionDenied,
                What() + ": the registry refused " +
                    (auth_->HasCredentials() ? std::string("the configured credentials")
                                             : std::string("anonymous access")) +
                    " (HTTP 401)",
                401);
}

Result<std::pair<formats::Descriptor, std::string>> RegistryBackend::GetManifest(
    const std::string& ref) {
  http::Request req;
  req.url = Url("manifests/" + ref);
  req.headers.push_back({"Accept", kAccept});
  BCFS_ASSIGN_OR_RETURN(http::Response resp, Send(req));
  if (resp.status == 404) {
    return NotFoundError(What() + ": manifest " + ref + " not found (HTTP 404)");
  }
  if (resp.status != 200) {
    return Status(Code::kUnavailable,
                  What() + ": GET manifest " + ref + ": HTTP " + std::to_string(resp.status),
                  static_cast<int>(resp.status));
  }
  if (resp.body.size() > kMaxManifest) {
    return CorruptError(What() + ": manifest " + ref + " is larger than 64 MiB");
  }
  formats::Descriptor d;
  d.digest = Digest::Sha256Of(resp.body);
  if (std::string h = resp.Get("Docker-Content-Digest"); !h.empty() && h != d.digest.ToString()) {
    auto claimed = Digest::Parse(h);
    if (claimed.ok() && claimed->algorithm() == "sha256") {
      return CorruptError(What() + ": manifest " + ref + " hashes to " + d.digest.ToString() +
                          " but the registry says " + h);
    }
  }
  if (ref.rfind("sha256:", 0) == 0 && ref != d.digest.ToString()) {
    return CorruptError(What() + ": manifest " + ref +
                        " does not match its digest (its bytes hash to " + d.digest.ToString() +
                        ")");
  }
  d.media_type = MediaTypeOf(resp);
  d.size = static_cast<int64_t>(resp.body.size());
  std::lock_guard<std::mutex> lock(mu_);
  manifests_[d.digest] = resp.body;
  return std::make_pair(d, resp.body);
}

Result<std::vector<std::string>> RegistryBackend::ListTags() {
  std::vector<std::string> tags;
  std::string url = Url("tags/list?n=1000");
  for (int page = 0; page < 10000 && !url.empty(); ++page) {
    http::Request req;
    req.url = url;
    BCFS_ASSIGN_OR_RETURN(http::Response resp, Send(req));
    if (resp.status == 404) return NotFoundError(What() + ": repository not found (HTTP 404)");
    if (resp.status != 200) {
      return Status(Code::kUnavailable, What() + ": list tags: HTTP " + std::to_string(resp.status),
                    static_cast<int>(resp.status));
    }
    try {
      auto j = nlohmann::json::parse(resp.body);
      if (j.contains("tags") && j["tags"].is_array()) {
        for (const auto& t : j["tags"]) {
          if (t.is_string()) tags.push_back(t.get<std::string>());
        }
      }
    } catch (const nlohmann::json::exception&) {
      return CorruptError(What() + ": the tag list is not JSON");
    }
    std::string next = NextLink(resp.Get("Link"));
    if (next.empty()) break;
    url = next.rfind("http", 0) == 0 ? next : ref_.Endpoint(insecure_) + next;
  }
  std::sort(tags.begin(), tags.end());
  return tags;
}

Result<std::vector<RefEntry>> RegistryBackend::ListRefs() {
  std::vector<std::pair<std::string, std::string>> wanted;  // (ref name, tag or digest)
  if (!ref_.digest.empty()) {
    auto d = Digest::Parse(ref_.digest);
    wanted.push_back({ref_.tag.empty() ? DigestRefName(*d) : ref_.tag, ref_.digest});
  } else if (ref_.tag == "*") {
    BCFS_ASSIGN_OR_RETURN(std::vector<std::string> tags, ListTags());
    for (const auto& t : tags) wanted.push_back({t, t});
  } else {
    wanted.push_back({ref_.tag, ref_.tag});
  }
  std::vector<RefEntry> refs;
  std::vector<Digest> roots;
  for (const auto& [name, target] : wanted) {
    auto got = GetManifest(target);
    if (!got.ok()) {
      if (wanted.size() == 1) return got.status();
      RefEntry e;
      e.name = name;
      e.error = got.status().message();
      refs.push_back(std::move(e));
      continue;
    }
    auto& [desc, body] = *got;
    roots.push_back(desc.digest);
    // An image index without a cache config is a multi-platform image: one
    // ref per platform (inline caches), attestation manifests skipped.
    auto index = formats::ParseImageIndex(body, "manifest " + desc.digest.ToString());
    bool expanded = false;
    if (index.ok() && !formats::IsManifestMediaType(desc.media_type)) {
      bool has_config = false;
      for (const auto& m : index->manifests) {
        if (m.media_type == formats::media::kCacheConfig) has_config = true;
      }
      if (!has_config && !index->manifests.empty()) {
        for (const auto& m : index->manifests) {
          if (!formats::IsManifestMediaType(m.media_type)) continue;
          if (m.Annotation("vnd.docker.reference.type") == "attestation-manifest") continue;
          if (!m.platform || m.platform->os.empty() || m.platform->os == "unknown") continue;
          RefEntry e;
          e.name = name + "@" + m.platform->os + "-" + m.platform->architecture +
                   (m.platform->variant.empty() ? "" : "-" + m.platform->variant);
          e.descriptor = m;
          roots.push_back(m.digest);
          refs.push_back(std::move(e));
          expanded = true;
        }
      }
    }
    if (!expanded) {
      RefEntry e;
      e.name = name;
      e.descriptor = desc;
      refs.push_back(std::move(e));
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  roots_ = roots;
  return refs;
}

Result<std::vector<Digest>> RegistryBackend::ListRoots() {
  std::lock_guard<std::mutex> lock(mu_);
  return roots_;
}

Result<BlobStat> RegistryBackend::StatBlob(const Digest& digest) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = manifests_.find(digest); it != manifests_.end()) {
      return BlobStat{it->second.size()};
    }
  }
  http::Request req;
  req.method = "HEAD";
  req.url = Url("blobs/" + digest.ToString());
  BCFS_ASSIGN_OR_RETURN(http::Response resp, Send(req));
  if (resp.status == 404)
    return NotFoundError(What() + ": blob " + digest.ToString() + " not found");
  if (resp.status != 200) {
    return Status(
        Code::kUnavailable,
        What() + ": HEAD blob " + digest.ToString() + ": HTTP " + std::to_string(resp.status),
        static_cast<int>(resp.status));
  }
  BlobStat st;
  st.size = std::strtoull(resp.Get("Content-Length").c_str(), nullptr, 10);
  return st;
}

Result<size_t> RegistryBackend::ReadBlob(const Digest& digest, uint64_t offset,
                                         std::span<char> out) {
  if (out.empty()) return size_t{0};
  http::Request req;
  req.url = Url("blobs/" + digest.ToString());
  req.range = std::make_pair(offset, offset + out.size() - 1);
  BCFS_ASSIGN_OR_RETURN(http::Response resp, Send(req));
  if (resp.status == 416) return size_t{0};
  if (resp.status == 404)
    return NotFoundError(What() + ": blob " + digest.ToString() + " not found");
  if (resp.status != 200 && resp.status != 206) {
    return Status(
        Code::kUnavailable,
        What() + ": GET blob " + digest.ToString() + ": HTTP " + std::to_string(resp.status),
        static_cast<int>(resp.status));
  }
  size_t n = std::min(resp.body.size(), out.size());
  std::memcpy(out.data(), resp.body.data(), n);
  return n;
}

Result<std::string> RegistryBackend::ReadDocument(const Digest& digest, uint64_t max_size) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = manifests_.find(digest); it != manifests_.end()) {
      if (it->second.size() > max_size) {
        return CorruptError(What() + ": " + digest.ToString() + " is larger than " +
                            std::to_string(max_size) + " bytes");
      }
      return it->second;
    }
  }
  http::Request req;
  req.url = Url("blobs/" + digest.ToString());
  BCFS_ASSIGN_OR_RETURN(http::Response resp, Send(req));
  if (resp.status == 404) {
    // Platform manifests of an image index are manifests, not blobs.
    auto m = GetManifest(digest.ToString());
    if (!m.ok()) return m.status();
    return m->second;
  }
  if (resp.status != 200) {
    return Status(
        Code::kUnavailable,
        What() + ": GET blob " + digest.ToString() + ": HTTP " + std::to_string(resp.status),
        static_cast<int>(resp.status));
  }
  if (resp.body.size() > max_size) {
    return CorruptError(What() + ": blob " + digest.ToString() + " is larger than " +
                        std::to_string(max_size) + " bytes");
  }
  Digest got = Digest::Sha256Of(resp.body);
  if (got != digest) {
    return CorruptError(What() + ": blob " + digest.ToString() +
                        " does not match its digest (its bytes hash to " + got.ToString() + ")");
  }
  return resp.body;
}

Result<std::vector<Digest>> RegistryBackend::ListBlobs() {
  return UnsupportedError("a registry cannot list its blobs");
}

Status RegistryBackend::DeleteManifest(const std::string& tag, const Digest& digest) {
  // The distribution API deletes manifests by digest only; every tag pointing
  // at the digest goes with it (the caller checks that no kept tag does).
  const std::string what = What() + ": DELETE manifest " + digest.ToString() + " (tag " + tag + ")";
  http::Request req;
  req.method = "DELETE";
  req.url = Url("manifests/" + digest.ToString());
  // The registry challenges with its own scope (distribution: "delete");
  // the hint only matters when a challenge names none.
  auto resp = Send(req, "delete");
  if (!resp.ok()) return resp.status().WithContext("DELETE manifest " + digest.ToString());
  switch (resp->status) {
    case 200:
    case 202:
      return OkStatus();
    case 404:
      return NotFoundError(what + ": already gone (HTTP 404)");
    case 405:
      return Status(Code::kUnsupported,
                    what +
                        ": the registry has deletion disabled (HTTP 405; docker-registry "
                        "needs storage.delete.enabled=true)",
                    405);
    case 403:
      return Status(Code::kPermissionDenied,
                    what + ": refused (HTTP 403); the credentials lack delete rights", 403);
    default:
      return Status(Code::kUnavailable, what + ": HTTP " + std::to_string(resp->status),
                    static_cast<int>(resp->status));
  }
}

}  // namespace bcfs::backends
