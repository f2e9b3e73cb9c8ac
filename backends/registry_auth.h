// Registry authentication (distribution API v2): parses WWW-Authenticate
// challenges and answers them with Basic credentials or a bearer token from the
// challenge's realm (token cache and refresh; `identitytoken` refresh tokens
// exchanged through the OAuth2 endpoint as docker login does).
//
// Thread-safety: RegistryAuth is thread-safe; ParseChallenges is pure.
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "backends/docker_config.h"
#include "backends/http/http_client.h"
#include "core/status.h"

namespace bcfs::backends {

struct Challenge {
  std::string scheme;                         // lower-case: "basic", "bearer"
  std::map<std::string, std::string> params;  // keys lower-case: realm, service, scope
};

// Parses a WWW-Authenticate value (one or more challenges with quoted or token
// parameters). kInvalidArgument naming the problem when it cannot be read.
Result<std::vector<Challenge>> ParseChallenges(std::string_view header);

class RegistryAuth {
 public:
  // `what` names the registry and ref in errors ("registry 127.0.0.1:5000, ref app:main").
  RegistryAuth(http::Client& client, Credentials creds, std::string what);

  // The Authorization header value to send now ("" when none is known yet).
  std::string Header();
  // Answers a 401's challenges for `scope` ("repository:app/cache:pull"):
  // afterwards Header() carries the new credentials. kPermissionDenied when the
  // registry wants credentials that are not configured or refuses the token request.
  Status Answer(const std::string& www_authenticate, const std::string& scope);
  bool HasCredentials() const { return !creds_.empty(); }

 private:
  Status FetchToken(const Challenge& c, const std::string& scope);

  http::Client& client_;
  const Credentials creds_;
  const std::string what_;
  std::mutex mu_;
  std::string header_;  // GUARDED_BY(mu_)
};

}  // namespace bcfs::backends
