#include "backends/reference.h"

#include "core/digest.h"

namespace bcfs::backends {
namespace {

bool IsLoopback(std::string_view host) {
  std::string_view h = host;
  if (size_t colon = h.rfind(':'); colon != std::string_view::npos && h.front() != '[') {
    h = h.substr(0, colon);
  }
  return h == "localhost" || h == "127.0.0.1" || h.rfind("127.", 0) == 0 || h == "[::1]";
}

bool ValidComponent(std::string_view c) {
  if (c.empty()) return false;
  for (char ch : c) {
    bool ok =
        (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

Result<Reference> ParseReference(std::string_view text) {
  auto bad = [&](const std::string& why) {
    return InvalidArgumentError("image reference \"" + std::string(text) + "\": " + why);
  };
  if (text.empty()) return bad("empty");
  Reference r;
  std::string rest(text);
  if (size_t at = rest.find('@'); at != std::string::npos) {
    r.digest = rest.substr(at + 1);
    if (!Digest::Parse(r.digest).ok()) return bad("bad digest \"" + r.digest + "\"");
    rest = rest.substr(0, at);
  }
  // A tag is after the last ':' that follows the last '/'.
  size_t slash = rest.rfind('/');
  size_t colon = rest.rfind(':');
  if (colon != std::string::npos && (slash == std::string::npos || colon > slash)) {
    r.tag = rest.substr(colon + 1);
    rest = rest.substr(0, colon);
    if (r.tag.empty()) return bad("empty tag");
    if (r.tag != "*") {
      for (char ch : r.tag) {
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' || ch == '-';
        if (!ok) return bad("bad tag \"" + r.tag + "\"");
      }
    }
  }
  size_t first = rest.find('/');
  std::string head = first == std::string::npos ? "" : rest.substr(0, first);
  if (first != std::string::npos && (head.find('.') != std::string::npos ||
                                     head.find(':') != std::string::npos || head == "localhost")) {
    r.domain = head;
    r.repository = rest.substr(first + 1);
  } else {
    r.domain = "docker.io";
    r.repository = rest;
  }
  if (r.domain == "index.docker.io") r.domain = "docker.io";
  if (r.domain == "docker.io" && r.repository.find('/') == std::string::npos) {
    r.repository = "library/" + r.repository;
  }
  size_t pos = 0;
  while (pos <= r.repository.size()) {
    size_t next = r.repository.find('/', pos);
    std::string_view comp =
        std::string_view(r.repository)
            .substr(pos, next == std::string::npos ? std::string::npos : next - pos);
    if (!ValidComponent(comp)) return bad("bad repository \"" + r.repository + "\"");
    if (next == std::string::npos) break;
    pos = next + 1;
  }
  if (r.tag.empty() && r.digest.empty()) r.tag = "latest";
  return r;
}

std::string Reference::Endpoint(bool insecure) const {
  if (domain == "docker.io") return "https://registry-1.docker.io";
  return std::string(insecure || IsLoopback(domain) ? "http://" : "https://") + domain;
}

std::string Reference::CredentialKey() const {
  return domain == "docker.io" ? "https://index.docker.io/v1/" : domain;
}

std::string Reference::ToString() const {
  std::string s = domain + "/" + repository;
  if (!tag.empty()) s += ":" + tag;
  if (!digest.empty()) s += "@" + digest;
  return s;
}

}  // namespace bcfs::backends
