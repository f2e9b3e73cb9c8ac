// The type=s3 backend: a cache in BuildKit's S3 layout (FORMATS.md §5) in AWS
// S3 or any S3-compatible store, read with SigV4-signed REST calls through the
// shared HTTP client (HEAD, ranged GET, ListObjectsV2 with continuation tokens).
//
// Objects: blobs at <prefix><blobs_prefix>sha256:<hex>, cache configs at
// <prefix><manifests_prefix><name> (plain concatenation, as BuildKit). With
// `name=a;b` the refs are exactly those names (BuildKit imports only the first;
// we show all); without, every object under the manifests prefix, key minus
// the prefix (DESIGN.md §1.4). S3 stores no manifest, so each ref's top-level
// blob is a synthesized index-shape cache manifest (DESIGN.md §1.5): the layer
// descriptors built from the config's annotations as BuildKit's importer
// builds them, the config last. Synthesized manifests and the configs are held
// in memory and served by StatBlob/ReadBlob/ReadDocument like stored blobs.
//
// Addressing: without endpoint_url, https://<bucket>.s3.<region>.amazonaws.com
// (path style when the bucket name is not a DNS label, e.g. has dots); with
// endpoint_url, virtual-hosted unless use_path_style=true or the endpoint's
// host is an IP address (as the AWS SDK's endpoint rules). TLS is verified;
// AWS_CA_BUNDLE adds a CA bundle as in the SDK.
//
// Thread-safety: S3Backend is thread-safe (the HTTP client is; the document
// and stat caches are behind a mutex).
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "backends/backend.h"
#include "backends/http/http_client.h"
#include "backends/s3_sign.h"
#include "formats/oci.h"

namespace bcfs::backends {
namespace s3 {

// Where a source's objects live and how requests address them.
struct Location {
  std::string bucket, region;
  std::string prefix, blobs_prefix = "blobs/", manifests_prefix = "manifests/";
  std::vector<std::string> names;  // from name=, ';'-separated; empty: list the prefix
  std::string scheme = "https";
  std::string host;       // the Host header: bucket.host for virtual-hosted requests
  std::string base_path;  // the endpoint URL's path, "" or "/p" (no trailing '/')
  bool path_style = false;
  std::string endpoint;  // endpoint_url as given ("" for AWS), for messages via RedactUrl

  // The decoded request path of an object key ("" = the bucket, for listing).
  std::string PathOf(std::string_view key) const;
  // The URL of an object key with an encoded query ("" for none).
  std::string UrlOf(std::string_view key, std::string_view canonical_query) const;
  std::string BlobKey(const Digest& d) const { return prefix + blobs_prefix + d.ToString(); }
  std::string ManifestKey(std::string_view name) const {
    return prefix + manifests_prefix + std::string(name);
  }
};

// Reads bucket, region, prefixes, names and the endpoint from the source
// string, falling back to AWS_BUCKET and AWS_REGION as BuildKit does.
// kInvalidArgument names a missing bucket or region or a bad endpoint_url.
Result<Location> ParseLocation(const SourceSpec& spec, const AwsEnvironment& env);

struct ListedObject {
  std::string key;
  uint64_t size = 0;
  TimeNs mtime = 0;
};

struct ListPage {
  std::vector<ListedObject> objects;
  bool truncated = false;
  std::string next_token;
};

// A ListObjectsV2 result document. kCorrupt when it is not one.
Result<ListPage> ParseListObjectsV2(std::string_view xml);

// <Error><Code>…</Code><Message>…</Message></Error> of an S3 error reply
// ("" fields when absent); `region` from <Region> when present.
struct ErrorDoc {
  std::string code, message, region;
};
ErrorDoc ParseErrorDoc(std::string_view xml);

// An HTTP-date ("Wed, 26 Nov 2026 20:42:23 GMT") in ns; 0 when unparsable or
// outside the years 1678-2261.
TimeNs ParseHttpDate(const std::string& text);

// The index-shape cache manifest BuildKit's s3 importer builds in memory from
// a cache config (FORMATS.md §5.5): one descriptor per distinct layer blob, in
// the config's order ({mediaType, digest, size, annotations:
// {buildkit/createdat?, containerd.io/uncompressed}}), then the config
// ({mediaType: cacheconfig, digest, size}). Compact JSON, fixed key order.
// kCorrupt (naming `doc`) when the config does not parse or a layer lacks
// annotations or a diffID, which BuildKit refuses too.
Result<std::string> SynthesizeManifest(std::string_view config_text, std::string_view doc);

// The descriptor of a ref whose source stores none (s3, azblob): compact
// {mediaType, digest, size, annotations: {org.opencontainers.image.ref.name}},
// as index.json in the tree shows it. RemoveRefs reads the name back from it.
std::string RefDescriptorJson(const std::string& name, const formats::Descriptor& d);
// The ref name and digest of RefDescriptorJson's output; kInvalidArgument
// when `raw` is not such a descriptor.
Result<std::pair<std::string, Digest>> ParseRefDescriptorJson(std::string_view raw);

// Seconds-precision times (HTTP dates) are floored by the server: whether an
// object whose Last-Modified reads `mtime` may have been written after
// `not_after` (an unknown time, 0, counts as young).
bool MaybeWrittenAfter(TimeNs mtime, TimeNs not_after);

}  // namespace s3

class S3Backend : public Backend {
 public:
  static Result<std::unique_ptr<S3Backend>> Open(const SourceSpec& spec,
                                                 const s3::AwsEnvironment& env);

  std::string Describe() const override;
  Result<std::vector<RefEntry>> ListRefs() override;
  Result<std::vector<Digest>> ListRoots() override;
  Result<BlobStat> StatBlob(const Digest& digest) override;
  Result<size_t> ReadBlob(const Digest& digest, uint64_t offset, std::span<char> out) override;
  Result<std::string> ReadDocument(const Digest& digest, uint64_t max_size) override;
  Result<std::vector<Digest>> ListBlobs() override;
  TimeNs RefsModified() override;
  bool CheapStat() const override { return false; }
  // One ranged GET streamed to `sink` (documents from memory).
  Status StreamBlob(const Digest& digest, uint64_t offset, uint64_t length,
                    const std::function<bool(std::string_view)>& sink) override;
  bool Streams() const override { return true; }
  // Deletes <manifests_prefix><name> of each ref named (when it still holds
  // what the descriptor says), then lists the roots afresh.
  Result<std::vector<Digest>> RemoveRefs(const std::vector<std::string>& raw_descriptors) override;
  // HEAD for Last-Modified, then DELETE.
  Result<bool> DeleteBlob(const Digest& digest, TimeNs not_after) override;

 private:
  S3Backend(SourceSpec spec, s3::Location loc, s3::AwsCredentials creds, http::Options opts);

  struct Doc {
    std::string bytes;
    TimeNs mtime = 0;
  };

  // Signs and sends one request for `key` ("" = the bucket). Transport
  // failures come back as errors naming the bucket and the key.
  // With `sink`, a 2xx body is streamed to it (http::Client::Stream).
  Result<http::Response> Send(const std::string& method, const std::string& key,
                              const s3::QueryParams& query,
                              std::optional<std::pair<uint64_t, uint64_t>> range = std::nullopt,
                              const std::function<bool(std::string_view)>* sink = nullptr);
  // The Status for a non-2xx answer to `method` on `key`.
  Status ErrorOf(const http::Response& resp, const std::string& method, const std::string& key);
  // Every object under `prefix` (all pages).
  Result<std::vector<s3::ListedObject>> List(const std::string& prefix);
  // The manifest object of `name` turned into a ref; kNotFound when absent.
  Result<RefEntry> ReadManifestObject(const std::string& name);
  std::string What(const std::string& key) const;  // "s3 bucket b (endpoint), key k"

  SourceSpec spec_;
  s3::Location loc_;
  s3::AwsCredentials creds_;
  std::unique_ptr<http::Client> client_;
  std::mutex mu_;
  std::map<Digest, Doc> docs_;             // GUARDED_BY(mu_): synthesized manifests, configs
  std::map<Digest, BlobStat> listed_;      // GUARDED_BY(mu_): stats from the last ListBlobs
  std::vector<Digest> roots_;              // GUARDED_BY(mu_)
  TimeNs refs_modified_ = 0;               // GUARDED_BY(mu_)
  std::map<std::string, Digest> by_name_;  // GUARDED_BY(mu_): manifest key -> synthesized digest
};

}  // namespace bcfs::backends
