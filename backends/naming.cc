#include "backends/naming.h"

#include <set>

namespace bcfs::backends {
namespace {

constexpr size_t kNameMax = 255;  // NAME_MAX: the longest path component

std::string Quoted(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '\0') {
      out += "\\0";
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// The text after the last '/', trailing slashes ignored.
std::string_view LastComponent(std::string_view path) {
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

// "host:5000/a/b/cache:main@sha256:..." -> "cache".
std::string_view RepositoryName(std::string_view ref) {
  size_t at = ref.find('@');
  if (at != std::string_view::npos) ref = ref.substr(0, at);
  std::string_view last = LastComponent(ref);
  size_t colon = last.find(':');
  if (colon != std::string_view::npos) last = last.substr(0, colon);
  return last;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

Status CheckSourceName(std::string_view name) {
  if (name.empty()) return InvalidArgumentError("source name \"\" is empty");
  if (name[0] == '.') {
    return InvalidArgumentError("source name " + Quoted(name) +
                                " starts with '.' (reserved for . .. and .buildcachefs)");
  }
  if (name.find('/') != std::string_view::npos) {
    return InvalidArgumentError("source name " + Quoted(name) + " contains '/'");
  }
  if (name.find('\0') != std::string_view::npos) {
    return InvalidArgumentError("source name " + Quoted(name) + " contains NUL");
  }
  if (name.size() > kNameMax) {
    return InvalidArgumentError("source name " + Quoted(name) + " is longer than " +
                                std::to_string(kNameMax) + " bytes");
  }
  return OkStatus();
}

std::string DefaultSourceName(const SourceSpec& spec) {
  switch (spec.type) {
    case SourceType::kLocal:
      return std::string(LastComponent(spec.Get("src")));
    case SourceType::kRegistry:
      return std::string(RepositoryName(spec.Get("ref")));
    case SourceType::kS3:
      return spec.Get("bucket", "s3");
    case SourceType::kAzblob:
      return spec.Get("container", "buildkit-cache");
    case SourceType::kGha:
      return "gha-" + spec.Get("scope", "buildkit");
  }
  return "";
}

Result<std::vector<std::string>> AssignSourceNames(const std::vector<SourceSpec>& specs) {
  std::vector<std::string> names(specs.size());
  std::set<std::string, std::less<>> taken;

  // Explicit names first: the user typed them and may rely on them.
  for (size_t i = 0; i < specs.size(); ++i) {
    const std::string& as = specs[i].as_name;
    if (as.empty()) continue;
    Status st = CheckSourceName(as);
    if (!st.ok()) return st.WithContext("source " + specs[i].Redacted());
    if (!taken.insert(as).second) {
      size_t first = 0;
      while (specs[first].as_name != as) ++first;
      return InvalidArgumentError("source " + specs[i].Redacted() + ": as=" + as +
                                  " is already the name of source " + specs[first].Redacted());
    }
    names[i] = as;
  }

  // Then the defaults, each in its own name when it is the first to want it and no
  // explicit name holds it: "x-2" stays the name of a source whose default is "x-2".
  std::vector<size_t> pending;
  for (size_t i = 0; i < specs.size(); ++i) {
    if (!specs[i].as_name.empty()) continue;
    std::string name = DefaultSourceName(specs[i]);
    Status st = CheckSourceName(name);
    if (!st.ok()) {
      return Status(st.code(), "source " + specs[i].Redacted() + ": default " + st.message() +
                                   "; give it a name with as=NAME");
    }
    names[i] = name;
    if (taken.insert(name).second) continue;
    pending.push_back(i);
  }
  for (size_t i : pending) {
    const std::string base = names[i];
    for (int n = 2;; ++n) {
      std::string candidate = base + "-" + std::to_string(n);
      if (taken.insert(candidate).second) {
        names[i] = candidate;
        break;
      }
    }
    Status st = CheckSourceName(names[i]);
    if (!st.ok()) return st.WithContext("source " + specs[i].Redacted());
  }
  return names;
}

std::string EncodeRefName(std::string_view raw) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(raw[i]);
    if (c == '%' || c == '/' || c == '\0' || (i == 0 && c == '.')) {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 0xF];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::string DecodeRefName(std::string_view encoded) {
  std::string out;
  out.reserve(encoded.size());
  for (size_t i = 0; i < encoded.size(); ++i) {
    if (encoded[i] == '%' && i + 2 < encoded.size() && HexValue(encoded[i + 1]) >= 0 &&
        HexValue(encoded[i + 2]) >= 0) {
      out += static_cast<char>(HexValue(encoded[i + 1]) * 16 + HexValue(encoded[i + 2]));
      i += 2;
    } else {
      out += encoded[i];
    }
  }
  return out;
}

std::string DigestRefName(const Digest& d) { return "@" + d.ShortHex(); }

}  // namespace bcfs::backends
