#include "backends/s3_sign.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "core/digest.h"
#include "core/strings.h"

namespace bcfs::backends::s3 {
namespace {

std::string Hex(const unsigned char* data, size_t len) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(len * 2);
  for (size_t i = 0; i < len; ++i) {
    out += kHex[data[i] >> 4];
    out += kHex[data[i] & 0xf];
  }
  return out;
}

std::string HmacSha256(std::string_view key, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  BCFS_CHECK(HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
                  reinterpret_cast<const unsigned char*>(data.data()), data.size(), out,
                  &len) != nullptr);
  return std::string(reinterpret_cast<const char*>(out), len);
}

// Trims the value and collapses runs of spaces into one (SigV4 "Trimall").
std::string TrimAll(std::string_view v) {
  std::string out;
  bool space = false;
  for (char c : v) {
    if (c == ' ' || c == '\t') {
      space = true;
      continue;
    }
    if (space && !out.empty()) out += ' ';
    space = false;
    out += c;
  }
  return out;
}

// One INI file as the AWS shared files are read: sections -> keys -> values.
// Keys are lower-cased; '#' and ';' start comment lines.
using Ini = std::map<std::string, std::map<std::string, std::string>>;

Result<Ini> ReadIni(const std::string& path, bool* exists) {
  Ini out;
  *exists = false;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return out;
  *exists = true;
  std::ifstream in(path);
  if (!in) return ErrnoError(errno, "read " + path);
  std::string line, section;
  while (std::getline(in, line)) {
    std::string t = TrimAscii(line);
    if (t.empty() || t[0] == '#' || t[0] == ';') continue;
    if (t.front() == '[' && t.back() == ']') {
      section = TrimAscii(std::string_view(t).substr(1, t.size() - 2));
      out[section];
      continue;
    }
    size_t eq = t.find('=');
    if (eq == std::string::npos || section.empty()) continue;
    out[section][AsciiLower(TrimAscii(std::string_view(t).substr(0, eq)))] =
        TrimAscii(std::string_view(t).substr(eq + 1));
  }
  return out;
}

std::string Get(const std::map<std::string, std::string>& m, const std::string& key) {
  auto it = m.find(key);
  return it == m.end() ? "" : it->second;
}

}  // namespace

std::string UriEncode(std::string_view text, bool keep_slash) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' ||
        (keep_slash && c == '/')) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    }
  }
  return out;
}

std::string CanonicalQuery(const QueryParams& query) {
  std::vector<std::pair<std::string, std::string>> enc;
  enc.reserve(query.size());
  for (const auto& [k, v] : query) enc.emplace_back(UriEncode(k, false), UriEncode(v, false));
  std::sort(enc.begin(), enc.end());
  std::string out;
  for (const auto& [k, v] : enc) {
    if (!out.empty()) out += '&';
    out += k + "=" + v;
  }
  return out;
}

SignedRequest SignV4(const SigningRequest& req, const SigningScope& scope,
                     const AwsCredentials& creds) {
  // Header names sorted; repeated names joined with ',' in the order given.
  std::map<std::string, std::string> headers;
  for (const auto& h : req.headers) {
    std::string name = AsciiLower(h.name);
    std::string value = TrimAll(h.value);
    auto [it, inserted] = headers.try_emplace(name, value);
    if (!inserted) it->second += "," + value;
  }
  SignedRequest out;
  std::string canonical_headers;
  for (const auto& [name, value] : headers) {
    canonical_headers += name + ":" + value + "\n";
    if (!out.signed_headers.empty()) out.signed_headers += ';';
    out.signed_headers += name;
  }
  out.canonical_request = req.method + "\n" + UriEncode(req.path.empty() ? "/" : req.path, true) +
                          "\n" + CanonicalQuery(req.query) + "\n" + canonical_headers + "\n" +
                          out.signed_headers + "\n" + req.payload_hash;
  const std::string date = scope.amz_date.substr(0, 8);
  const std::string credential_scope =
      date + "/" + scope.region + "/" + scope.service + "/aws4_request";
  out.string_to_sign = "AWS4-HMAC-SHA256\n" + scope.amz_date + "\n" + credential_scope + "\n" +
                       Digest::Sha256Of(out.canonical_request).hex();
  std::string key = HmacSha256("AWS4" + creds.secret_access_key, date);
  key = HmacSha256(key, scope.region);
  key = HmacSha256(key, scope.service);
  key = HmacSha256(key, "aws4_request");
  const std::string sig = HmacSha256(key, out.string_to_sign);
  out.signature = Hex(reinterpret_cast<const unsigned char*>(sig.data()), sig.size());
  out.authorization = "AWS4-HMAC-SHA256 Credential=" + creds.access_key_id + "/" +
                      credential_scope + ", SignedHeaders=" + out.signed_headers +
                      ", Signature=" + out.signature;
  return out;
}

std::string AmzDate(TimeNs t) {
  std::time_t secs = static_cast<std::time_t>(t / 1000000000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

std::vector<http::Header> SignS3Headers(const std::string& method, const std::string& host,
                                        const std::string& path, const QueryParams& query,
                                        const std::string& region, const AwsCredentials& creds,
                                        TimeNs now, std::string_view payload_hash) {
  std::vector<http::Header> send;
  send.push_back({"x-amz-content-sha256", std::string(payload_hash)});
  if (creds.empty()) return send;
  send.push_back({"x-amz-date", AmzDate(now)});
  if (!creds.session_token.empty()) {
    send.push_back({"x-amz-security-token", creds.session_token});
  }
  SigningRequest req;
  req.method = method;
  req.path = path;
  req.query = query;
  req.headers = send;
  req.headers.push_back({"host", host});
  req.payload_hash = std::string(payload_hash);
  SigningScope scope{send[1].value, region, "s3"};
  send.push_back({"Authorization", SignV4(req, scope, creds).authorization});
  return send;
}

AwsEnvironment AwsEnvironment::Process() {
  AwsEnvironment env;
  env.getenv = [](const char* name) {
    const char* v = std::getenv(name);
    return v == nullptr ? std::string() : std::string(v);
  };
  env.home = env.getenv("HOME");
  return env;
}

Result<AwsCredentials> ResolveAwsCredentials(const SourceSpec& spec, const AwsEnvironment& env) {
  AwsCredentials c;
  // 1. The source string (buildx forwards the client's credentials this way).
  //    BuildKit uses them only when both the id and the secret are set.
  if (!spec.Get("access_key_id").empty() && !spec.Get("secret_access_key").empty()) {
    c.access_key_id = spec.Get("access_key_id");
    c.secret_access_key = spec.Get("secret_access_key");
    c.session_token = spec.Get("session_token");
    c.origin = "the source string (access_key_id, secret_access_key)";
    return c;
  }
  // 2. The environment (the SDK also reads the older AWS_ACCESS_KEY and AWS_SECRET_KEY).
  std::string id = env.getenv("AWS_ACCESS_KEY_ID");
  if (id.empty()) id = env.getenv("AWS_ACCESS_KEY");
  std::string secret = env.getenv("AWS_SECRET_ACCESS_KEY");
  if (secret.empty()) secret = env.getenv("AWS_SECRET_KEY");
  if (!id.empty() && !secret.empty()) {
    c.access_key_id = id;
    c.secret_access_key = secret;
    c.session_token = env.getenv("AWS_SESSION_TOKEN");
    c.origin = "the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)";
    return c;
  }
  // 3. The shared files of the profile.
  const bool profile_named = !env.getenv("AWS_PROFILE").empty();
  const std::string profile = profile_named ? env.getenv("AWS_PROFILE") : "default";
  std::string creds_file = env.getenv("AWS_SHARED_CREDENTIALS_FILE");
  if (creds_file.empty() && !env.home.empty()) creds_file = env.home + "/.aws/credentials";
  std::string config_file = env.getenv("AWS_CONFIG_FILE");
  if (config_file.empty() && !env.home.empty()) config_file = env.home + "/.aws/config";
  bool found_profile = false;
  struct File {
    std::string path, section;
  };
  const File files[] = {
      {creds_file, profile},
      // The config file names non-default profiles "[profile <name>]".
      {config_file, profile == "default" ? "default" : "profile " + profile},
  };
  for (const File& f : files) {
    if (f.path.empty()) continue;
    bool exists = false;
    BCFS_ASSIGN_OR_RETURN(Ini ini, ReadIni(f.path, &exists));
    auto sec = ini.find(f.section);
    if (sec == ini.end() && f.section != profile) sec = ini.find(profile);  // lenient
    if (sec == ini.end()) continue;
    found_profile = true;
    std::string fid = Get(sec->second, "aws_access_key_id");
    std::string fsecret = Get(sec->second, "aws_secret_access_key");
    if (fid.empty() && fsecret.empty()) continue;  // e.g. only a region in config
    const std::string where = "profile " + profile + " in " + f.path;
    if (fid.empty() || fsecret.empty()) {
      return InvalidArgumentError(where + " has " +
                                  (fid.empty() ? "aws_secret_access_key but no aws_access_key_id"
                                               : "aws_access_key_id but no aws_secret_access_key"));
    }
    c.access_key_id = fid;
    c.secret_access_key = fsecret;
    c.session_token = Get(sec->second, "aws_session_token");
    c.origin = where;
    return c;
  }
  if (profile_named && !found_profile) {
    return InvalidArgumentError(
        "AWS_PROFILE names profile " + profile + ", which neither " +
        (creds_file.empty() ? std::string("~/.aws/credentials") : creds_file) + " nor " +
        (config_file.empty() ? std::string("~/.aws/config") : config_file) + " holds");
  }
  return c;  // nothing configured: anonymous requests
}

}  // namespace bcfs::backends::s3
