// libFuzzer target: docker config.json (`auths`, `credHelpers`, `credsStore`)
// and the JSON a credential helper prints (backends/docker_config.h). No helper
// is run. Credentials read from `auths` are written back and must be read the same.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string_view>

#include "backends/docker_config.h"
#include "core/base64.h"

using namespace bcfs;
using namespace bcfs::backends;

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

bool Same(const Credentials& a, const Credentials& b) {
  return a.username == b.username && a.password == b.password &&
         a.identity_token == b.identity_token;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  for (const char* key : {"127.0.0.1:5000", "https://index.docker.io/v1/", "ghcr.io"}) {
    auto a = ParseDockerConfig(text, key, "config.json");
    if (!a.ok()) {
      Check(a.status().message().rfind("config.json: ", 0) == 0);
      continue;
    }
    if (!a->helper.empty()) {
      Check(a->credentials.empty());
      continue;
    }
    if (a->credentials.empty()) continue;
    // Written back as buildx would store them, they read the same (a user
    // name with ':' cannot be told apart in `auth`: give it as username).
    const Credentials& c = a->credentials;
    nlohmann::json entry = {{"username", c.username}, {"password", c.password}};
    if (c.username.find(':') == std::string::npos && !c.username.empty()) {
      entry = {{"auth", Base64Encode(c.username + ":" + c.password)}};
    }
    if (!c.identity_token.empty()) entry["identitytoken"] = c.identity_token;
    nlohmann::json config = {{"auths", {{key, entry}}}};
    auto back = ParseDockerConfig(config.dump(), key, "config.json");
    Check(back.ok() && back->helper.empty() && Same(back->credentials, c));
  }
  if (auto c = ParseHelperReply(text, "docker-credential-x", "k"); c.ok()) {
    nlohmann::json reply = {
        {"Username", c->identity_token.empty() ? c->username : "<token>"},
        {"Secret", c->identity_token.empty() ? c->password : c->identity_token}};
    auto back = ParseHelperReply(reply.dump(), "docker-credential-x", "k");
    Check(back.ok() && Same(*back, *c));
  } else {
    // The message names the helper and the key, never the reply.
    Check(c.status().message() ==
          "credential helper docker-credential-x gave an unreadable answer for k");
  }
  return 0;
}
