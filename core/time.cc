#include "core/time.h"

#include <chrono>

namespace bcfs {
namespace {

bool Digits(std::string_view s, size_t pos, size_t n, int* out) {
  if (pos + n > s.size()) return false;
  int v = 0;
  for (size_t i = pos; i < pos + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return true;
}

}  // namespace

Result<TimeNs> ParseRfc3339(std::string_view s) {
  auto bad = [&] { return CorruptError("\"" + std::string(s) + "\" is not an RFC 3339 time"); };
  int year, mon, day, hh, mm, ss;
  if (!Digits(s, 0, 4, &year) || s.size() < 20 || s[4] != '-' || !Digits(s, 5, 2, &mon) ||
      s[7] != '-' || !Digits(s, 8, 2, &day) || (s[10] != 'T' && s[10] != 't') ||
      !Digits(s, 11, 2, &hh) || s[13] != ':' || !Digits(s, 14, 2, &mm) || s[16] != ':' ||
      !Digits(s, 17, 2, &ss)) {
    return bad();
  }
  size_t pos = 19;
  int64_t frac_ns = 0;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    size_t start = pos;
    int64_t scale = 100000000;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
      if (pos - start < 9) frac_ns += (s[pos] - '0') * scale;
      scale /= 10;
      ++pos;
    }
    if (pos == start) return bad();
  }
  int64_t offset_s = 0;
  if (pos < s.size() && (s[pos] == 'Z' || s[pos] == 'z')) {
    ++pos;
  } else if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) {
    int oh, om;
    if (!Digits(s, pos + 1, 2, &oh) || pos + 3 >= s.size() || s[pos + 3] != ':' ||
        !Digits(s, pos + 4, 2, &om)) {
      return bad();
    }
    offset_s = (oh * 3600 + om * 60) * (s[pos] == '-' ? -1 : 1);
    pos += 6;
  } else {
    return bad();
  }
  if (pos != s.size() || mon < 1 || mon > 12 || day < 1 || day > 31 || hh > 23 || mm > 59 ||
      ss > 60) {
    return bad();
  }
  if (year == 1 && mon == 1 && day == 1 && hh == 0 && mm == 0 && ss == 0 && frac_ns == 0 &&
      offset_s == 0) {
    return TimeNs{0};
  }
  // ns since 1970 in int64 covers 1678..2261; anything outside is refused
  // rather than overflowing.
  if (year < 1678 || year > 2261) {
    return CorruptError("\"" + std::string(s) + "\" is outside the years 1678-2261");
  }
  using namespace std::chrono;
  year_month_day ymd{std::chrono::year(year), month(static_cast<unsigned>(mon)),
                     std::chrono::day(static_cast<unsigned>(day))};
  if (!ymd.ok()) return bad();
  int64_t days = sys_days(ymd).time_since_epoch().count();
  int64_t secs = days * 86400 + hh * 3600 + mm * 60 + ss - offset_s;
  return TimeNs{secs * 1000000000 + frac_ns};
}

std::string FormatRfc3339(TimeNs t) {
  if (t == 0) return "";
  using namespace std::chrono;
  int64_t secs = t / 1000000000, ns = t % 1000000000;
  if (ns < 0) {
    ns += 1000000000;
    --secs;
  }
  int64_t days = secs / 86400, rem = secs % 86400;
  if (rem < 0) {
    rem += 86400;
    --days;
  }
  year_month_day ymd{sys_days(std::chrono::days(days))};
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02d", static_cast<int>(ymd.year()),
                static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                static_cast<int>(rem / 3600), static_cast<int>(rem / 60 % 60),
                static_cast<int>(rem % 60));
  std::string out = buf;
  if (ns != 0) {
    char f[16];
    std::snprintf(f, sizeof f, ".%09lld", static_cast<long long>(ns));
    std::string frac = f;
    while (frac.back() == '0') frac.pop_back();
    out += frac;
  }
  out += 'Z';
  return out;
}

TimeNs WallClockNow() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace bcfs
