#include "backends/xml_text.h"

#include <cstdint>
#include <optional>

#include "core/utf8.h"

namespace bcfs::backends {
namespace {

// The code point of a character reference's body ("#65", "#x41"); nullopt
// unless it is digits only and names a character XML allows (a reference to
// NUL, a surrogate or beyond U+10FFFF is kept as text, never decoded).
std::optional<uint32_t> CharRef(std::string_view ent) {
  if (ent.size() < 2 || ent[0] != '#') return std::nullopt;
  const bool hex = ent[1] == 'x';
  std::string_view digits = ent.substr(hex ? 2 : 1);
  if (digits.empty()) return std::nullopt;
  uint32_t cp = 0;
  for (char c : digits) {
    int v;
    if (c >= '0' && c <= '9') {
      v = c - '0';
    } else if (hex && c >= 'a' && c <= 'f') {
      v = c - 'a' + 10;
    } else if (hex && c >= 'A' && c <= 'F') {
      v = c - 'A' + 10;
    } else {
      return std::nullopt;
    }
    cp = cp * (hex ? 16 : 10) + static_cast<uint32_t>(v);
    if (cp > 0x10ffff) return std::nullopt;
  }
  const bool allowed = cp == 0x9 || cp == 0xa || cp == 0xd || (cp >= 0x20 && cp <= 0xd7ff) ||
                       (cp >= 0xe000 && cp <= 0xfffd) || cp >= 0x10000;
  if (!allowed) return std::nullopt;
  return cp;
}

}  // namespace

std::string XmlUnescape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '&') {
      out += s[i];
      continue;
    }
    size_t semi = s.find(';', i);
    if (semi == std::string_view::npos) {
      out += s[i];
      continue;
    }
    std::string_view ent = s.substr(i + 1, semi - i - 1);
    if (ent == "amp") {
      out += '&';
    } else if (ent == "lt") {
      out += '<';
    } else if (ent == "gt") {
      out += '>';
    } else if (ent == "quot") {
      out += '"';
    } else if (ent == "apos") {
      out += '\'';
    } else if (auto cp = CharRef(ent)) {
      AppendUtf8(out, *cp);
    } else {
      // Not a reference: a stray '&', and whatever follows is read afresh
      // ("a&b&amp;c" is "a&b&c").
      out += '&';
      continue;
    }
    i = semi;
  }
  return out;
}

}  // namespace bcfs::backends
