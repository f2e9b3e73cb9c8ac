// Registry credentials where buildx finds them: $DOCKER_CONFIG/config.json or
// ~/.docker/config.json (`auths` with `auth` / `username`+`password` /
// `identitytoken`, `credHelpers`, `credsStore`), running
// `docker-credential-<helper> get` for helpers. Secrets never leave this
// module except in the returned value.
//
// Thread-safety: pure functions (they read files and run helpers).
#pragma once

#include <string>

#include "core/status.h"

namespace bcfs::backends {

struct Credentials {
  std::string username, password;
  std::string identity_token;  // an OAuth refresh token (docker login for some registries)
  bool empty() const { return username.empty() && password.empty() && identity_token.empty(); }
};

// Credentials for a registry key ("127.0.0.1:5000", "https://index.docker.io/v1/").
// Empty credentials when none are configured; an error naming the file (never
// a secret) when the config is unreadable or a helper fails.
Result<Credentials> LookupCredentials(const std::string& key);

}  // namespace bcfs::backends
