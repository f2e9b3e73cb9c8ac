// libFuzzer target: what the GitHub Actions cache sends (backends/gha_protocol.h):
// Twirp / v1 lookup answers, REST cache listings, the runtime token's claims,
// entry keys, Go durations, and the manifest synthesized from a cache config.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string_view>

#include "backends/gha_protocol.h"
#include "core/base64.h"
#include "core/time.h"
#include "formats/oci.h"

using namespace bcfs;
using namespace bcfs::backends::gha;

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

std::string Base64Url(std::string_view bytes) {
  std::string s = Base64Encode(bytes);
  while (!s.empty() && s.back() == '=') s.pop_back();
  for (char& c : s) c = c == '+' ? '-' : c == '/' ? '_' : c;
  return s;
}

constexpr int64_t kNow = 1795000000;  // 2026-11

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);

  for (int version : {1, 2}) {
    auto a = ParseLookupAnswer(text, version);
    if (a.ok() && *a) Check(!(*a)->matched_key.empty() && !(*a)->url.empty());
  }

  // A REST page written back as GitHub writes it reads the same.
  if (auto page = ParseRestPage(text); page.ok()) {
    nlohmann::json out = {{"total_count", page->total_count},
                          {"actions_caches", nlohmann::json::array()}};
    for (const auto& e : page->entries) {
      Check(!e.key.empty());
      nlohmann::json j = {{"id", e.id},
                          {"ref", e.ref},
                          {"key", e.key},
                          {"version", e.version},
                          {"size_in_bytes", static_cast<int64_t>(e.size)}};
      if (e.last_accessed != 0) j["last_accessed_at"] = FormatRfc3339(e.last_accessed);
      if (e.created != 0) j["created_at"] = FormatRfc3339(e.created);
      out["actions_caches"].push_back(j);
    }
    auto again = ParseRestPage(out.dump());
    Check(again.ok() && again->total_count == page->total_count &&
          again->entries.size() == page->entries.size());
    for (size_t i = 0; i < page->entries.size(); ++i) {
      const auto &x = page->entries[i], &y = again->entries[i];
      Check(x.id == y.id && x.ref == y.ref && x.key == y.key && x.version == y.version &&
            x.size == y.size && x.last_accessed == y.last_accessed && x.created == y.created);
    }
  }

  // The runtime token: the text as a whole JWT, and as the payload of one.
  for (const std::string& jwt : {std::string(text), "e30." + Base64Url(text) + ".c2ln"}) {
    auto t = ParseRuntimeToken(jwt, kNow);
    if (t.ok()) {
      Check(t->not_before <= kNow && kNow <= t->expires);
      for (const auto& s : t->scopes) Check(!s.scope.empty());
    } else {
      // Messages never quote the token (a JWT: two dots, which no message has).
      const bool jwt_like = jwt.size() >= 16 && std::count(jwt.begin(), jwt.end(), '.') >= 2;
      Check(!jwt_like || t.status().message().find(jwt) == std::string::npos);
    }
  }

  if (auto d = ParseGoDuration(text); d.ok()) Check(*d >= 0);

  // Keys: what parses is what the key builders write.
  if (auto p = ParseIndexKey(text, "buildkit")) {
    std::string key = "index-buildkit-1-" + p->hash + (p->sig ? "-sig" : "") + "#";
    Check(text.substr(0, key.size()) == key && p->n >= 0);
  }
  if (auto d = BlobOfKey(text)) Check(BlobKey(*d) == text);

  if (auto m = SynthesizeManifest(text, "fuzz"); m.ok()) {
    auto index = formats::ParseImageIndex(*m, "fuzz");
    Check(index.ok() && !index->manifests.empty() &&
          index->manifests.back().digest == Digest::Sha256Of(text) &&
          index->manifests.back().size == static_cast<int64_t>(size));
  }
  return 0;
}
