#include "backends/azblob_config.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <set>

#include "backends/xml_text.h"

namespace bcfs::backends {
namespace {

std::optional<std::string> Setting(const SourceSpec& spec, std::string_view attr,
                                   std::string_view var, const EnvLookup& env) {
  if (spec.Has(attr)) return spec.Get(attr);
  if (!var.empty()) {
    if (auto v = env(var)) return v;
  }
  return std::nullopt;
}

struct UrlParts {
  std::string scheme, authority, host, path, query;  // host without port; path from '/' on
};

Result<UrlParts> SplitUrl(std::string_view url) {
  UrlParts u;
  size_t scheme = url.find("://");
  if (scheme == std::string_view::npos || scheme == 0) {
    return InvalidArgumentError("the account URL is not an http(s) URL");
  }
  u.scheme = std::string(url.substr(0, scheme));
  for (char& c : u.scheme) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (u.scheme != "http" && u.scheme != "https") {
    return InvalidArgumentError("the account URL is not an http(s) URL");
  }
  std::string_view rest = url.substr(scheme + 3);
  size_t end = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, end);
  rest = end == std::string_view::npos ? "" : rest.substr(end);
  if (size_t at = authority.rfind('@'); at != std::string_view::npos) {
    authority = authority.substr(at + 1);
  }
  u.authority = std::string(authority);
  if (!authority.empty() && authority.front() == '[') {
    size_t close = authority.find(']');
    u.host = std::string(
        authority.substr(0, close == std::string_view::npos ? authority.size() : close + 1));
  } else {
    u.host = std::string(authority.substr(0, authority.find(':')));
  }
  if (u.host.empty()) return InvalidArgumentError("the account URL has no host");
  if (size_t hash = rest.find('#'); hash != std::string_view::npos) rest = rest.substr(0, hash);
  size_t q = rest.find('?');
  u.path = std::string(rest.substr(0, q));
  if (q != std::string_view::npos) u.query = std::string(rest.substr(q + 1));
  return u;
}

bool IpStyleHost(const std::string& host) {
  if (host == "localhost" || (!host.empty() && host.front() == '[')) return true;
  return !host.empty() && std::all_of(host.begin(), host.end(), [](char c) {
    return std::isdigit(static_cast<unsigned char>(c)) || c == '.';
  });
}

std::string StripTrailingSlash(std::string s) {
  while (!s.empty() && s.back() == '/') s.pop_back();
  return s;
}

// The text of the first <tag>…</tag> (or <tag attr…>…</tag>) inside s, nullopt
// when absent; "" for <tag/>.
std::optional<std::string> Element(std::string_view s, std::string_view tag) {
  size_t pos = 0;
  while (true) {
    size_t open = s.find("<" + std::string(tag), pos);
    if (open == std::string_view::npos) return std::nullopt;
    size_t after = open + 1 + tag.size();
    if (after >= s.size()) return std::nullopt;
    char c = s[after];
    if (c != '>' && c != ' ' && c != '/' && c != '\t' && c != '\n' && c != '\r') {
      pos = after;
      continue;
    }
    size_t gt = s.find('>', after);
    if (gt == std::string_view::npos) return std::nullopt;
    if (s[gt - 1] == '/') return std::string();
    size_t close = s.find("</" + std::string(tag) + ">", gt + 1);
    if (close == std::string_view::npos) return std::nullopt;
    return XmlUnescape(s.substr(gt + 1, close - gt - 1));
  }
}

}  // namespace

std::optional<std::string> ProcessEnv(std::string_view name) {
  const char* v = std::getenv(std::string(name).c_str());
  if (v == nullptr) return std::nullopt;
  return std::string(v);
}

std::string AzblobConfig::What() const {
  return "azblob account " + account_name + ", container " + container;
}

std::string AzblobConfig::ContainerUrl() const {
  return account_url + "/" + AzureEscapePath(container);
}

std::string AzblobConfig::BlobKey(std::string_view digest) const {
  return GoPathJoin({prefix, blobs_prefix, digest});
}

std::string AzblobConfig::ManifestKey(std::string_view name) const {
  return GoPathJoin({prefix, manifests_prefix, name});
}

std::string AzblobConfig::BlobsDir() const {
  std::string d = GoPathJoin({prefix, blobs_prefix});
  return d.empty() || d == "/" ? d : d + "/";
}

std::string AzblobConfig::ManifestsDir() const {
  std::string d = GoPathJoin({prefix, manifests_prefix});
  return d.empty() || d == "/" ? d : d + "/";
}

std::string GoPathJoin(const std::vector<std::string_view>& parts) {
  std::string joined;
  for (std::string_view p : parts) {
    if (p.empty()) continue;
    if (!joined.empty()) joined += '/';
    joined += p;
  }
  if (joined.empty()) return "";
  const bool rooted = joined.front() == '/';
  std::vector<std::string> out;
  size_t i = 0;
  while (i <= joined.size()) {
    size_t slash = joined.find('/', i);
    if (slash == std::string::npos) slash = joined.size();
    std::string seg = joined.substr(i, slash - i);
    i = slash + 1;
    if (seg.empty() || seg == ".") continue;
    if (seg == "..") {
      if (!out.empty() && out.back() != "..") {
        out.pop_back();
      } else if (!rooted) {
        out.push_back(seg);
      }
      continue;
    }
    out.push_back(seg);
  }
  std::string clean = rooted ? "/" : "";
  for (size_t k = 0; k < out.size(); ++k) clean += (k ? "/" : "") + out[k];
  if (clean.empty()) clean = ".";
  return clean;
}

Result<AzblobConfig> ResolveAzblobConfig(const SourceSpec& spec, const EnvLookup& env) {
  AzblobConfig c;
  // The connection string is read first: it may supply the account URL.
  std::optional<AzureConnectionString> cs;
  if (auto text = env("AZURE_STORAGE_CONNECTION_STRING"); text && !text->empty()) {
    auto parsed = ParseAzureConnectionString(*text);
    if (!parsed.ok()) {
      return parsed.status().WithContext("AZURE_STORAGE_CONNECTION_STRING");
    }
    cs = std::move(*parsed);
  }

  bool url_from_cs = false;
  std::string url_text;
  if (auto u = Setting(spec, "account_url", "BUILDKIT_AZURE_STORAGE_ACCOUNT_URL", env)) {
    url_text = *u;
  } else if (cs && !cs->BlobEndpoint().empty()) {
    url_text = cs->BlobEndpoint();
    url_from_cs = true;
  } else {
    return InvalidArgumentError(
        "either ${BUILDKIT_AZURE_STORAGE_ACCOUNT_URL} or account_url attribute is required for "
        "azblob cache (or AZURE_STORAGE_CONNECTION_STRING with a blob endpoint)");
  }
  auto url = SplitUrl(url_text);
  if (!url.ok()) return url.status().WithContext("azblob account_url");
  c.account_url = StripTrailingSlash(url->scheme + "://" + url->authority + url->path);
  const std::string url_sas = url->query;

  if (auto n = Setting(spec, "account_name", "BUILDKIT_AZURE_STORAGE_ACCOUNT_NAME", env)) {
    c.account_name = *n;
  } else if (url_from_cs && !cs->AccountName().empty()) {
    c.account_name = cs->AccountName();
  } else if (IpStyleHost(url->host)) {
    std::string_view p = url->path;
    while (!p.empty() && p.front() == '/') p.remove_prefix(1);
    c.account_name = std::string(p.substr(0, p.find('/')));
  } else {
    c.account_name = url->host.substr(0, url->host.find('.'));
  }
  if (c.account_name.empty()) {
    return InvalidArgumentError(
        "unable to retrieve account name from account url or "
        "${BUILDKIT_AZURE_STORAGE_ACCOUNT_NAME} or account_name attribute for azblob cache");
  }
  c.container = Setting(spec, "container", "BUILDKIT_AZURE_STORAGE_CONTAINER", env)
                    .value_or("buildkit-cache");
  if (c.container.empty()) return InvalidArgumentError("azblob container is empty");
  c.prefix = Setting(spec, "prefix", "BUILDKIT_AZURE_STORAGE_PREFIX", env).value_or("");
  c.blobs_prefix = spec.Has("blobs_prefix") ? spec.Get("blobs_prefix") : "blobs";
  c.manifests_prefix = spec.Has("manifests_prefix") ? spec.Get("manifests_prefix") : "manifests";
  if (spec.Has("name")) {
    std::set<std::string> seen;
    std::string names = spec.Get("name");
    size_t i = 0;
    while (i <= names.size()) {
      size_t semi = names.find(';', i);
      if (semi == std::string::npos) semi = names.size();
      std::string n = names.substr(i, semi - i);
      i = semi + 1;
      if (!n.empty() && seen.insert(n).second) c.names.push_back(n);
    }
    if (c.names.empty()) return InvalidArgumentError("azblob name= names no manifest");
  }

  // Credentials, first found.
  if (std::string key = spec.Get("secret_access_key"); !key.empty()) {
    BCFS_ASSIGN_OR_RETURN(c.credential, AzureCredential::SharedKey(c.account_name, key));
    c.credential.set_origin("secret_access_key");
    return c;
  }
  if (!url_sas.empty() && url_sas.find("sig=") != std::string::npos) {
    c.credential = AzureCredential::Sas(url_sas);
    c.credential.set_origin("account_url");
    return c;
  }
  if (cs) {
    const bool applies = url_from_cs || cs->AccountName() == c.account_name ||
                         StripTrailingSlash(cs->BlobEndpoint()) == c.account_url;
    if (applies && !cs->AccountKey().empty()) {
      auto cred = AzureCredential::SharedKey(c.account_name, cs->AccountKey());
      if (!cred.ok()) return cred.status().WithContext("AZURE_STORAGE_CONNECTION_STRING");
      c.credential = *cred;
      c.credential.set_origin("AZURE_STORAGE_CONNECTION_STRING");
      return c;
    }
    if (applies && !cs->Sas().empty()) {
      c.credential = AzureCredential::Sas(cs->Sas());
      c.credential.set_origin("AZURE_STORAGE_CONNECTION_STRING");
      return c;
    }
  }
  auto account_env = env("AZURE_STORAGE_ACCOUNT");
  if (!account_env || account_env->empty() || *account_env == c.account_name) {
    if (auto key = env("AZURE_STORAGE_KEY"); key && !key->empty()) {
      auto cred = AzureCredential::SharedKey(c.account_name, *key);
      if (!cred.ok()) return cred.status().WithContext("AZURE_STORAGE_KEY");
      c.credential = *cred;
      c.credential.set_origin("AZURE_STORAGE_KEY");
      return c;
    }
    if (auto sas = env("AZURE_STORAGE_SAS_TOKEN"); sas && !sas->empty()) {
      c.credential = AzureCredential::Sas(*sas);
      c.credential.set_origin("AZURE_STORAGE_SAS_TOKEN");
      return c;
    }
  }
  c.credential = AzureCredential::Anonymous();
  return c;
}

Result<BlobListPage> ParseBlobList(std::string_view xml) {
  if (xml.find("<EnumerationResults") == std::string_view::npos) {
    return CorruptError("the List Blobs answer is not an EnumerationResults document");
  }
  BlobListPage page;
  size_t pos = 0;
  while (true) {
    size_t open = xml.find("<Blob>", pos);
    if (open == std::string_view::npos) break;
    size_t close = xml.find("</Blob>", open);
    if (close == std::string_view::npos) {
      return CorruptError("the List Blobs answer has an unterminated <Blob>");
    }
    std::string_view item = xml.substr(open + 6, close - open - 6);
    pos = close + 7;
    auto name = Element(item, "Name");
    if (!name) return CorruptError("a <Blob> of the List Blobs answer has no <Name>");
    ListedBlob b;
    b.name = *name;
    if (auto len = Element(item, "Content-Length"))
      b.size = std::strtoull(len->c_str(), nullptr, 10);
    if (auto lm = Element(item, "Last-Modified")) {
      if (auto t = ParseAzureHttpDate(*lm); t.ok()) b.modified = TimeNs(*t) * 1000000000;
    }
    page.blobs.push_back(std::move(b));
  }
  // NextMarker sits after </Blobs>; a <Name> inside a blob is never called that.
  size_t blobs_end = xml.rfind("</Blobs>");
  std::string_view tail = blobs_end == std::string_view::npos ? xml : xml.substr(blobs_end);
  if (auto next = Element(tail, "NextMarker")) page.next_marker = *next;
  return page;
}

}  // namespace bcfs::backends
