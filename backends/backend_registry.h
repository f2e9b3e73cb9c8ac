// The type=registry backend: a cache in an OCI registry (distribution API v2),
// index- or image-manifest-shaped, or inline in an image config
// (FORMATS.md §3, §4). `ref=host/repo:tag` shows that tag (`latest` when none),
// `ref=host/repo:*` every tag; a multi-platform image index gives one ref per
// platform, `<tag>@<os>-<arch>[-<variant>]`, attestation manifests skipped.
// Plain http for loopback registries and `registry.insecure=true`.
//
// Thread-safety: thread-safe (the HTTP client and the auth state are).
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "backends/backend.h"
#include "backends/http/http_client.h"
#include "backends/reference.h"
#include "backends/registry_auth.h"

namespace bcfs::backends {

class RegistryBackend : public Backend {
 public:
  static Result<std::unique_ptr<RegistryBackend>> Open(const SourceSpec& spec);

  std::string Describe() const override;
  Result<std::vector<RefEntry>> ListRefs() override;
  Result<std::vector<Digest>> ListRoots() override;
  Result<BlobStat> StatBlob(const Digest& digest) override;
  Result<size_t> ReadBlob(const Digest& digest, uint64_t offset, std::span<char> out) override;
  Result<std::string> ReadDocument(const Digest& digest, uint64_t max_size) override;
  Result<std::vector<Digest>> ListBlobs() override;
  TimeNs RefsModified() override { return 0; }
  bool CheapStat() const override { return false; }
  Status DeleteManifest(const std::string& tag, const Digest& digest) override;

 private:
  RegistryBackend(SourceSpec spec, Reference ref, Credentials creds, http::Options opts);
  // Sends a request to the registry with authentication, answering one 401
  // (`actions` is the token scope's action list when the challenge has none).
  Result<http::Response> Send(http::Request req, const std::string& actions = "pull");
  Result<http::Response> SendStream(http::Request req,
                                    const std::function<bool(std::string_view)>& sink);
  std::string Url(const std::string& path) const;
  // GET a manifest by tag or digest with every Accept type; caches the bytes.
  Result<std::pair<formats::Descriptor, std::string>> GetManifest(const std::string& ref);
  Result<std::vector<std::string>> ListTags();
  std::string What() const;  // "registry <host>, ref <repo>:<tag>" for messages

  SourceSpec spec_;
  Reference ref_;
  bool insecure_;
  std::unique_ptr<http::Client> client_;
  std::unique_ptr<RegistryAuth> auth_;
  std::mutex mu_;
  std::map<Digest, std::string> manifests_;  // GUARDED_BY(mu_): fetched manifest bytes
  std::vector<Digest> roots_;                // GUARDED_BY(mu_)
};

}  // namespace bcfs::backends
