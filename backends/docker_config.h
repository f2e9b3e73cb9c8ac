// Registry credentials where buildx finds them: $DOCKER_CONFIG/config.json or
// ~/.docker/config.json (`auths` with `auth` / `username`+`password` /
// `identitytoken`, `credHelpers`, `credsStore`), running
// `docker-credential-<helper> get` for helpers. Secrets never leave this
// module except in the returned value.
//
// Thread-safety: pure functions (they read files and run helpers).
#pragma once

#include <string>
#include <string_view>

#include "core/status.h"

namespace bcfs::backends {

struct Credentials {
  std::string username, password;
  std::string identity_token;  // an OAuth refresh token (docker login for some registries)
  bool empty() const { return username.empty() && password.empty() && identity_token.empty(); }
};

// What config.json (its text `text`, read from `path`) says about a registry
// key: credentials from `auths`, or the helper to run (credHelpers for the key,
// else credsStore). kCorrupt naming `path` and the entry (never a secret) when
// the text is not a JSON object or an `auth` is not base64 of user:password.
struct ConfigAnswer {
  Credentials credentials;
  std::string helper;  // "" when no helper is to be run
};
Result<ConfigAnswer> ParseDockerConfig(std::string_view text, const std::string& key,
                                       const std::string& path);

// The JSON a `docker-credential-<helper> get` printed ({"Username", "Secret"};
// Username "<token>" makes Secret an identity token). kCorrupt naming `prog`
// and `key` (never the reply) when it is not such an object.
Result<Credentials> ParseHelperReply(std::string_view reply, const std::string& prog,
                                     const std::string& key);

// Credentials for a registry key ("127.0.0.1:5000", "https://index.docker.io/v1/").
// Empty credentials when none are configured; an error naming the file (never
// a secret) when the config is unreadable or a helper fails.
Result<Credentials> LookupCredentials(const std::string& key);

}  // namespace bcfs::backends
