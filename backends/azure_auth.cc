#include "backends/azure_auth.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>

#include "core/base64.h"
#include "core/strings.h"

namespace bcfs::backends {
namespace {

constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

bool Unreserved(unsigned char c) {
  return std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

std::string Escape(std::string_view s, bool keep_slash) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (Unreserved(c) || (keep_slash && c == '/')) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// URL-decodes a query component ('+' is a space, as in form encoding).
std::string Unescape(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      int hi = HexValue(s[i + 1]), lo = HexValue(s[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
        continue;
      }
    }
    out += s[i] == '+' ? ' ' : s[i];
  }
  return out;
}

// Header value with linear whitespace folded to one space and trimmed.
std::string FoldWhitespace(std::string_view v) {
  std::string out;
  bool space = false;
  for (char c : v) {
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
      space = true;
      continue;
    }
    if (space && !out.empty()) out += ' ';
    space = false;
    out += c;
  }
  return out;
}

}  // namespace

std::string AzureHttpDate(std::time_t t) {
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT", kDays[tm.tm_wday],
                tm.tm_mday, kMonths[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                tm.tm_sec);
  return buf;
}

Result<std::time_t> ParseAzureHttpDate(std::string_view text) {
  // "Sun, 11 Oct 2009 21:49:13 GMT"
  char day[4] = {}, mon[4] = {}, zone[4] = {};
  int d = 0, y = 0, h = 0, mi = 0, s = 0;
  std::string t(text);
  if (std::sscanf(t.c_str(), "%3s, %d %3s %d %d:%d:%d %3s", day, &d, mon, &y, &h, &mi, &s, zone) !=
          8 ||
      std::strcmp(zone, "GMT") != 0) {
    return CorruptError("not an HTTP date: \"" + t + "\"");
  }
  int m = -1;
  for (int i = 0; i < 12; ++i) {
    if (std::strcmp(mon, kMonths[i]) == 0) m = i;
  }
  // Years as ParseRfc3339 takes them: their ns since 1970 fit an int64.
  if (m < 0 || d < 1 || d > 31 || h < 0 || h > 23 || mi < 0 || mi > 59 || s < 0 || s > 60 ||
      y < 1678 || y > 2261) {
    return CorruptError("not an HTTP date: \"" + t + "\"");
  }
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = m;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = s;
  return timegm(&tm);
}

std::string AzureEscapePath(std::string_view name) { return Escape(name, true); }
std::string AzureEscapeQuery(std::string_view value) { return Escape(value, false); }

std::string SharedKeyStringToSign(std::string_view method, std::string_view url,
                                  const std::vector<http::Header>& headers,
                                  std::string_view account, std::string_view range) {
  auto header = [&](std::string_view name) -> std::string {
    std::string value;
    for (const auto& h : headers) {
      if (AsciiLower(h.name) == name) value = TrimAscii(h.value);
    }
    return value;
  };
  std::string s(method);
  s += '\n';
  for (std::string_view name :
       {"content-encoding", "content-language", "content-length", "content-md5", "content-type",
        "date", "if-modified-since", "if-match", "if-none-match", "if-unmodified-since"}) {
    std::string v = header(name);
    // Version 2015-02-21 and later: a zero Content-Length signs as empty.
    if (name == "content-length" && v == "0") v.clear();
    s += v;
    s += '\n';
  }
  std::string r = range.empty() ? header("range") : std::string(range);
  s += r;
  s += '\n';

  std::map<std::string, std::string> ms;
  for (const auto& h : headers) {
    std::string n = AsciiLower(TrimAscii(h.name));
    if (n.rfind("x-ms-", 0) == 0) ms[n] = FoldWhitespace(h.value);
  }
  for (const auto& [n, v] : ms) s += n + ":" + v + "\n";

  // Canonicalized resource: /<account><path as sent>, then the query.
  std::string_view rest = url;
  if (size_t scheme = rest.find("://"); scheme != std::string_view::npos) {
    rest = rest.substr(scheme + 3);
  }
  size_t slash = rest.find('/');
  std::string_view path_query = slash == std::string_view::npos ? "/" : rest.substr(slash);
  if (size_t hash = path_query.find('#'); hash != std::string_view::npos) {
    path_query = path_query.substr(0, hash);
  }
  size_t q = path_query.find('?');
  std::string_view path = path_query.substr(0, q);
  std::string_view query = q == std::string_view::npos ? "" : path_query.substr(q + 1);
  s += "/";
  s += account;
  s += path.empty() ? "/" : std::string(path);
  std::map<std::string, std::vector<std::string>> params;
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view kv = query.substr(0, amp);
    query = amp == std::string_view::npos ? "" : query.substr(amp + 1);
    if (kv.empty()) continue;
    size_t eq = kv.find('=');
    std::string name = AsciiLower(Unescape(kv.substr(0, eq)));
    std::string value = eq == std::string_view::npos ? "" : Unescape(kv.substr(eq + 1));
    params[name].push_back(value);
  }
  for (auto& [name, values] : params) {
    std::sort(values.begin(), values.end());
    s += "\n" + name + ":";
    for (size_t i = 0; i < values.size(); ++i) s += (i ? "," : "") + values[i];
  }
  return s;
}

Result<std::string> SharedKeySignature(std::string_view string_to_sign,
                                       std::string_view base64_key) {
  auto key = Base64Decode(TrimAscii(base64_key));
  if (!key.ok() || key->empty()) {
    return InvalidArgumentError("the account key is not base64 (an Azure storage key is)");
  }
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), key->data(), static_cast<int>(key->size()),
           reinterpret_cast<const unsigned char*>(string_to_sign.data()), string_to_sign.size(),
           mac, &len) == nullptr) {
    return InternalError("HMAC-SHA256 failed");
  }
  return Base64Encode(std::string_view(reinterpret_cast<const char*>(mac), len));
}

std::string AppendSas(std::string_view url, std::string_view sas) {
  while (!sas.empty() && (sas.front() == '?' || sas.front() == '&')) sas.remove_prefix(1);
  std::string out(url);
  if (sas.empty()) return out;
  if (out.find('?') == std::string::npos) {
    out += '?';
  } else if (out.back() != '?' && out.back() != '&') {
    out += '&';
  }
  out += sas;
  return out;
}

std::string AzureConnectionString::Get(std::string_view key) const {
  auto it = values.find(AsciiLower(key));
  return it == values.end() ? std::string() : it->second;
}

std::string AzureConnectionString::AccountName() const {
  std::string name = Get("AccountName");
  if (name.empty() && AsciiLower(Get("UseDevelopmentStorage")) == "true") {
    name = std::string(kAzuriteAccount);
  }
  return name;
}

std::string AzureConnectionString::AccountKey() const {
  std::string key = Get("AccountKey");
  if (key.empty() && AsciiLower(Get("UseDevelopmentStorage")) == "true")
    key = std::string(kAzuriteKey);
  return key;
}

std::string AzureConnectionString::Sas() const { return Get("SharedAccessSignature"); }

std::string AzureConnectionString::BlobEndpoint() const {
  std::string ep = Get("BlobEndpoint");
  if (ep.empty() && AsciiLower(Get("UseDevelopmentStorage")) == "true") {
    std::string proxy = Get("DevelopmentStorageProxyUri");
    ep = (proxy.empty() ? std::string("http://127.0.0.1") : proxy) + ":10000/" +
         std::string(kAzuriteAccount);
  }
  if (ep.empty() && !Get("AccountName").empty()) {
    std::string proto = Get("DefaultEndpointsProtocol");
    std::string suffix = Get("EndpointSuffix");
    ep = (proto.empty() ? "https" : proto) + "://" + Get("AccountName") + ".blob." +
         (suffix.empty() ? "core.windows.net" : suffix);
  }
  while (!ep.empty() && ep.back() == '/') ep.pop_back();
  return ep;
}

Result<AzureConnectionString> ParseAzureConnectionString(std::string_view text) {
  AzureConnectionString cs;
  size_t index = 0;
  while (!text.empty()) {
    size_t semi = text.find(';');
    std::string_view seg = text.substr(0, semi);
    text = semi == std::string_view::npos ? "" : text.substr(semi + 1);
    ++index;
    if (TrimAscii(seg).empty()) continue;
    size_t eq = seg.find('=');
    if (eq == std::string_view::npos || eq == 0) {
      return InvalidArgumentError("the Azure connection string's segment " + std::to_string(index) +
                                  " is not Key=Value");
    }
    cs.values[AsciiLower(TrimAscii(seg.substr(0, eq)))] = TrimAscii(seg.substr(eq + 1));
  }
  if (cs.values.empty()) return InvalidArgumentError("the Azure connection string is empty");
  return cs;
}

AzureCredential AzureCredential::Anonymous() { return AzureCredential(); }

Result<AzureCredential> AzureCredential::SharedKey(std::string account, std::string base64_key) {
  auto check = SharedKeySignature("", base64_key);
  if (!check.ok()) {
    return InvalidArgumentError("the account key of storage account " + account +
                                " is not base64 (an Azure storage key is)");
  }
  AzureCredential c;
  c.kind_ = Kind::kSharedKey;
  c.account_ = std::move(account);
  c.key_ = TrimAscii(base64_key);
  return c;
}

AzureCredential AzureCredential::Sas(std::string token) {
  AzureCredential c;
  c.kind_ = Kind::kSas;
  while (!token.empty() && token.front() == '?') token.erase(0, 1);
  c.sas_ = std::move(token);
  return c;
}

std::string AzureCredential::Describe() const {
  std::string what;
  switch (kind_) {
    case Kind::kAnonymous:
      what = "anonymous access";
      break;
    case Kind::kSharedKey:
      what = "the Shared Key";
      break;
    case Kind::kSas:
      what = "the SAS token";
      break;
  }
  return origin_.empty() ? what : what + " (" + origin_ + ")";
}

Status AzureCredential::Sign(http::Request& req, std::time_t now) const {
  req.headers.push_back({"x-ms-date", AzureHttpDate(now)});
  req.headers.push_back({"x-ms-version", std::string(kAzureApiVersion)});
  switch (kind_) {
    case Kind::kAnonymous:
      return OkStatus();
    case Kind::kSas:
      req.url = AppendSas(req.url, sas_);
      return OkStatus();
    case Kind::kSharedKey: {
      std::string range;
      if (req.range) {
        range =
            "bytes=" + std::to_string(req.range->first) + "-" + std::to_string(req.range->second);
      }
      // curl sends a body's length; sign what it will send.
      std::vector<http::Header> headers = req.headers;
      if (!req.body.empty()) headers.push_back({"Content-Length", std::to_string(req.body.size())});
      auto sig = SharedKeySignature(
          SharedKeyStringToSign(req.method, req.url, headers, account_, range), key_);
      if (!sig.ok()) return sig.status();
      req.headers.push_back({"Authorization", "SharedKey " + account_ + ":" + *sig});
      return OkStatus();
    }
  }
  return OkStatus();
}

}  // namespace bcfs::backends
