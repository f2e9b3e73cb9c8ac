#include "backends/registry_auth.h"

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>

#include "core/base64.h"
#include "core/strings.h"

namespace bcfs::backends {
namespace {

std::string UrlEncode(std::string_view s) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

}  // namespace

Result<std::vector<Challenge>> ParseChallenges(std::string_view h) {
  std::vector<Challenge> out;
  size_t i = 0;
  auto skip_ws = [&] {
    while (i < h.size() && (h[i] == ' ' || h[i] == '\t')) ++i;
  };
  auto token = [&] {
    size_t start = i;
    while (i < h.size() && h[i] != ' ' && h[i] != '\t' && h[i] != '=' && h[i] != ',') ++i;
    return std::string(h.substr(start, i - start));
  };
  while (true) {
    skip_ws();
    while (i < h.size() && h[i] == ',') {
      ++i;
      skip_ws();
    }
    if (i >= h.size()) break;
    Challenge c;
    c.scheme = AsciiLower(token());
    if (c.scheme.empty()) return InvalidArgumentError("WWW-Authenticate: expected a scheme");
    // Parameters: name=value pairs separated by commas, until the next scheme.
    while (true) {
      skip_ws();
      size_t save = i;
      std::string name = token();
      skip_ws();
      if (name.empty() || i >= h.size() || h[i] != '=') {
        i = save;
        break;
      }
      ++i;
      skip_ws();
      std::string value;
      if (i < h.size() && h[i] == '"') {
        ++i;
        while (i < h.size() && h[i] != '"') {
          if (h[i] == '\\' && i + 1 < h.size()) ++i;
          value += h[i++];
        }
        if (i >= h.size()) {
          return InvalidArgumentError("WWW-Authenticate: unterminated quoted value of " + name);
        }
        ++i;
      } else {
        value = token();
      }
      c.params[AsciiLower(name)] = value;
      skip_ws();
      if (i < h.size() && h[i] == ',') ++i;
    }
    out.push_back(std::move(c));
  }
  if (out.empty()) return InvalidArgumentError("WWW-Authenticate: no challenge");
  return out;
}

RegistryAuth::RegistryAuth(http::Client& client, Credentials creds, std::string what)
    : client_(client), creds_(std::move(creds)), what_(std::move(what)) {}

std::string RegistryAuth::Header() {
  std::lock_guard<std::mutex> lock(mu_);
  return header_;
}

Status RegistryAuth::Answer(const std::string& www_authenticate, const std::string& scope) {
  auto challenges = ParseChallenges(www_authenticate);
  if (!challenges.ok()) return challenges.status().WithContext(what_);
  for (const Challenge& c : *challenges) {
    if (c.scheme == "bearer") return FetchToken(c, scope);
  }
  for (const Challenge& c : *challenges) {
    if (c.scheme != "basic") continue;
    if (creds_.username.empty()) {
      return Status(Code::kPermissionDenied,
                    what_ +
                        ": the registry requires credentials and none are configured "
                        "(docker login, or $DOCKER_CONFIG/config.json)",
                    401);
    }
    std::lock_guard<std::mutex> lock(mu_);
    header_ = "Basic " + Base64Encode(creds_.username + ":" + creds_.password);
    return OkStatus();
  }
  return Status(Code::kUnsupported,
                what_ + ": unsupported authentication scheme \"" + (*challenges)[0].scheme + "\"");
}

Status RegistryAuth::FetchToken(const Challenge& c, const std::string& scope_hint) {
  auto realm_it = c.params.find("realm");
  if (realm_it == c.params.end() || realm_it->second.empty()) {
    return Status(Code::kPermissionDenied, what_ + ": bearer challenge without a realm", 401);
  }
  const std::string service = c.params.count("service") ? c.params.at("service") : "";
  const std::string scope = c.params.count("scope") ? c.params.at("scope") : scope_hint;
  http::Request req;
  if (!creds_.identity_token.empty()) {
    // OAuth2 refresh-token grant, as docker login stores for some registries.
    req.method = "POST";
    req.url = realm_it->second;
    req.headers.push_back({"Content-Type", "application/x-www-form-urlencoded"});
    req.body = "grant_type=refresh_token&client_id=buildcachefs&service=" + UrlEncode(service) +
               "&scope=" + UrlEncode(scope) + "&refresh_token=" + UrlEncode(creds_.identity_token);
  } else {
    req.url = realm_it->second + (realm_it->second.find('?') == std::string::npos ? "?" : "&") +
              "service=" + UrlEncode(service) + "&scope=" + UrlEncode(scope);
    if (!creds_.username.empty()) {
      req.headers.push_back(
          {"Authorization", "Basic " + Base64Encode(creds_.username + ":" + creds_.password)});
    }
  }
  auto resp = client_.Do(req);
  if (!resp.ok()) return resp.status().WithContext(what_ + ": token request");
  if (resp->status == 401 || resp->status == 403) {
    return Status(Code::kPermissionDenied,
                  what_ + ": the token server refused " +
                      (creds_.empty() ? std::string("anonymous access")
                                      : std::string("the configured credentials")) +
                      " (HTTP " + std::to_string(resp->status) + ")",
                  static_cast<int>(resp->status));
  }
  if (resp->status != 200) {
    return Status(Code::kUnavailable,
                  what_ + ": token request failed with HTTP " + std::to_string(resp->status),
                  static_cast<int>(resp->status));
  }
  std::string token;
  try {
    auto j = nlohmann::json::parse(resp->body);
    if (j.contains("token") && j["token"].is_string()) token = j["token"];
    if (token.empty() && j.contains("access_token") && j["access_token"].is_string()) {
      token = j["access_token"];
    }
  } catch (const nlohmann::json::exception&) {
    return CorruptError(what_ + ": the token server's answer is not JSON");
  }
  if (token.empty()) return CorruptError(what_ + ": the token server's answer has no token");
  std::lock_guard<std::mutex> lock(mu_);
  header_ = "Bearer " + token;
  return OkStatus();
}

}  // namespace bcfs::backends
