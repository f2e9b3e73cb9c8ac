// Image references as Docker normalises them ("user/cache" ->
// docker.io/user/cache:latest; "host:5000/a/b:tag"; "repo@sha256:..."), and
// the registry endpoint and credential key for a domain.
//
// Thread-safety: pure functions and values.
#pragma once

#include <string>
#include <string_view>

#include "core/status.h"

namespace bcfs::backends {

struct Reference {
  std::string domain;      // "docker.io", "127.0.0.1:5000", "ghcr.io"
  std::string repository;  // "library/alpine", "app/cache"
  std::string tag;         // "latest" when neither tag nor digest was given; "*" = every tag
  std::string digest;      // "sha256:..." when given

  // "https://registry-1.docker.io" for docker.io; http:// for loopback hosts
  // or when insecure is set.
  std::string Endpoint(bool insecure) const;
  // The key docker login stores credentials under ("https://index.docker.io/v1/" for docker.io).
  std::string CredentialKey() const;
  // "domain/repository:tag" or "domain/repository@digest".
  std::string ToString() const;
};

// kInvalidArgument naming the text when it is not a reference.
Result<Reference> ParseReference(std::string_view text);

}  // namespace bcfs::backends
