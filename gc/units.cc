#include "gc/units.h"

#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>

namespace bcfs::gc {
namespace {

Status BadDuration(std::string_view text, std::string_view why) {
  return InvalidArgumentError("invalid duration \"" + std::string(text) +
                              "\": " + std::string(why));
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// The unit table of Go's time package (µ is U+00B5, μ is U+03BC).
uint64_t UnitNs(std::string_view u) {
  if (u == "ns") return 1;
  if (u == "us" || u == "\xc2\xb5s" || u == "\xce\xbcs") return 1'000;
  if (u == "ms") return 1'000'000;
  if (u == "s") return 1'000'000'000;
  if (u == "m") return 60ull * 1'000'000'000;
  if (u == "h") return 3600ull * 1'000'000'000;
  return 0;
}

}  // namespace

Result<DurationNs> ParseGoDuration(std::string_view text) {
  // Follows time.ParseDuration step by step, overflow checks included.
  constexpr uint64_t kMax = uint64_t{1} << 63;
  std::string_view s = text;
  bool neg = false;
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
    neg = s[0] == '-';
    s.remove_prefix(1);
  }
  if (s == "0") return DurationNs{0};
  if (s.empty()) return BadDuration(text, "empty");
  uint64_t d = 0;
  while (!s.empty()) {
    if (!(s[0] == '.' || IsDigit(s[0]))) return BadDuration(text, "expected a number");
    uint64_t v = 0;
    size_t i = 0;
    for (; i < s.size() && IsDigit(s[i]); ++i) {
      if (v > (kMax - 1) / 10) return BadDuration(text, "overflow");
      v = v * 10 + static_cast<uint64_t>(s[i] - '0');
      if (v > kMax) return BadDuration(text, "overflow");
    }
    bool pre = i != 0;
    s.remove_prefix(i);
    uint64_t f = 0;
    double scale = 1;
    bool post = false;
    if (!s.empty() && s[0] == '.') {
      s.remove_prefix(1);
      size_t j = 0;
      bool overflow = false;
      for (; j < s.size() && IsDigit(s[j]); ++j) {
        if (overflow) continue;
        if (f > (kMax - 1) / 10) {  // Go drops the digits that no longer fit
          overflow = true;
          continue;
        }
        uint64_t y = f * 10 + static_cast<uint64_t>(s[j] - '0');
        if (y > kMax) {
          overflow = true;
          continue;
        }
        f = y;
        scale *= 10;
      }
      post = j != 0;
      s.remove_prefix(j);
    }
    if (!pre && !post) return BadDuration(text, "expected a number");
    size_t k = 0;
    while (k < s.size() && s[k] != '.' && !IsDigit(s[k])) ++k;
    if (k == 0) return BadDuration(text, "missing unit");
    uint64_t unit = UnitNs(s.substr(0, k));
    if (unit == 0) return BadDuration(text, "unknown unit \"" + std::string(s.substr(0, k)) + "\"");
    s.remove_prefix(k);
    if (v > kMax / unit) return BadDuration(text, "overflow");
    v *= unit;
    if (f > 0) {
      v += static_cast<uint64_t>(static_cast<double>(f) * (static_cast<double>(unit) / scale));
      if (v > kMax) return BadDuration(text, "overflow");
    }
    d += v;
    if (d > kMax) return BadDuration(text, "overflow");
  }
  if (neg) return static_cast<DurationNs>(-static_cast<__int128>(d));
  if (d > kMax - 1) return BadDuration(text, "overflow");
  return static_cast<DurationNs>(d);
}

Result<DurationNs> ParseConfigDuration(std::string_view text) {
  if (text.empty()) return DurationNs{0};
  DurationNs d = 0;
  if (auto go = ParseGoDuration(text); go.ok()) {
    d = *go;
  } else {
    // strconv.ParseInt(text, 10, 64): optional sign, decimal digits only.
    std::string_view digits = text;
    bool neg = false;
    if (digits[0] == '+' || digits[0] == '-') {
      neg = digits[0] == '-';
      digits.remove_prefix(1);
    }
    if (digits.empty()) return go.status();
    __int128 n = 0;
    for (char c : digits) {
      if (!IsDigit(c)) {
        return InvalidArgumentError("invalid duration \"" + std::string(text) +
                                    "\": neither a Go duration (\"48h\") nor integer seconds");
      }
      n = n * 10 + (c - '0');
      if (n > std::numeric_limits<int64_t>::max() / kSecond) {
        return BadDuration(text, "overflow");
      }
    }
    d = static_cast<DurationNs>(neg ? -n : n) * kSecond;
  }
  if (d < 0) return BadDuration(text, "negative");
  return d;
}

Result<int64_t> RamInBytes(std::string_view text) {
  auto bad = [&] {
    return InvalidArgumentError("invalid size \"" + std::string(text) +
                                "\": expected bytes or a number with a binary unit "
                                "(\"512MB\" = 512 MiB, \"1GB\", \"32k\")");
  };
  // ^(\d+(\.\d+)*) ?([kmgtp])?i?b?$ by hand; the number part must then be a
  // valid float, which rules out "1.2.3" as ParseFloat does.
  size_t i = 0;
  int dots = 0;
  auto digits = [&] {
    size_t start = i;
    while (i < text.size() && IsDigit(text[i])) ++i;
    return i > start;
  };
  if (!digits()) return bad();
  while (i < text.size() && text[i] == '.') {
    ++i;
    if (!digits()) return bad();
    ++dots;
  }
  if (dots > 1) return bad();
  std::string number(text.substr(0, i));
  if (i < text.size() && text[i] == ' ') ++i;
  int shift = 0;
  if (i < text.size()) {
    switch (text[i] | 0x20) {
      case 'k':
        shift = 10;
        ++i;
        break;
      case 'm':
        shift = 20;
        ++i;
        break;
      case 'g':
        shift = 30;
        ++i;
        break;
      case 't':
        shift = 40;
        ++i;
        break;
      case 'p':
        shift = 50;
        ++i;
        break;
      default:
        break;
    }
  }
  if (i < text.size() && (text[i] | 0x20) == 'i') ++i;
  if (i < text.size() && (text[i] | 0x20) == 'b') ++i;
  if (i != text.size()) return bad();
  double size = std::strtod(number.c_str(), nullptr);
  size *= static_cast<double>(uint64_t{1} << shift);
  if (!(size < 9223372036854775808.0)) {
    return InvalidArgumentError("invalid size \"" + std::string(text) + "\": too large");
  }
  return static_cast<int64_t>(size);
}

int64_t DiskSpace::AsBytes(const FsStats& fs) const {
  if (bytes != 0) return bytes;
  if (percentage == 0) return 0;
  if (fs.total == 0) return kDefaultCap;
  // Integer arithmetic as in Go: avail = Total*pct/100; (avail/2^30 + 1) * 1e9.
  __int128 avail = static_cast<__int128>(fs.total) * percentage / 100;
  __int128 rounded = (avail / (int64_t{1} << 30) + 1) * 1'000'000'000;
  if (rounded > std::numeric_limits<int64_t>::max()) return std::numeric_limits<int64_t>::max();
  return static_cast<int64_t>(rounded);
}

std::string DiskSpace::ToString() const {
  if (bytes == 0 && percentage != 0) return std::to_string(percentage) + "%";
  return std::to_string(bytes);
}

Result<DiskSpace> ParseDiskSpace(std::string_view text) {
  if (text.empty()) return DiskSpace{};
  if (text.back() == '%') {
    std::string_view n = text.substr(0, text.size() - 1);
    int64_t pct = 0;
    bool ok = !n.empty() && n.size() <= 3;
    for (char c : n) ok = ok && IsDigit(c);
    if (ok) pct = std::strtoll(std::string(n).c_str(), nullptr, 10);
    if (!ok || pct > 100) {
      return InvalidArgumentError("invalid disk space \"" + std::string(text) +
                                  "\": a percentage is a whole number from 0 to 100");
    }
    return DiskSpace::Percent(pct);
  }
  auto bytes = RamInBytes(text);
  if (!bytes.ok()) return bytes.status();
  return DiskSpace::Bytes(*bytes);
}

}  // namespace bcfs::gc
