#include "gc/filter.h"

#include <algorithm>
#include <optional>
#include <string>

#include "core/utf8.h"

namespace bcfs::gc {
namespace {

constexpr std::string_view kTypeRefused = "BuildKit record types do not exist in a remote cache";
constexpr std::string_view kFieldList = "source, ref, role, mediatype";

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}
bool IsAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsFieldRune(char c) { return c == '-' || c == '_' || IsAlpha(c) || IsDigit(c); }
bool IsOperatorRune(char c) { return c == '=' || c == '!' || c == '~'; }
bool IsQuoteRune(char c) { return c == '/' || c == '|' || c == '"'; }
bool IsSeparatorRune(char c) { return c == ',' || c == '.'; }
// containerd's isValueRune for ASCII; bytes of UTF-8 sequences pass as letters.
bool IsValueRune(char c) {
  auto u = static_cast<unsigned char>(c);
  return c != ',' && !IsSpace(c) && (u >= 0x80 || (u > 0x20 && u < 0x7f));
}

int HexVal(char c) {
  if (IsDigit(c)) return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return 16;
}

struct ParsedSelector {
  std::string field;
  std::string op;  // "", "==", "!=", "~=", or "=" (command line)
  std::string value;
};

// One filter string, scanned and parsed as containerd's pkg/filters does.
class Parser {
 public:
  explicit Parser(std::string_view input) : in_(input) {}

  Result<std::vector<ParsedSelector>> Selectors() {
    std::vector<ParsedSelector> out;
    for (;;) {
      ParsedSelector sel;
      BCFS_RETURN_IF_ERROR(Selector(sel));
      out.push_back(std::move(sel));
      SkipSpace();
      if (pos_ == in_.size()) return out;
      if (in_[pos_] != ',') return Error("unexpected input");
      ++pos_;
    }
  }

 private:
  Status Error(std::string_view msg) const {
    std::string where = pos_ < in_.size() ? " at offset " + std::to_string(pos_) : " at the end";
    return InvalidArgumentError("filter \"" + std::string(in_) + "\": " + std::string(msg) + where);
  }

  void SkipSpace() {
    while (pos_ < in_.size() && IsSpace(in_[pos_])) ++pos_;
  }

  Status Selector(ParsedSelector& sel) {
    BCFS_RETURN_IF_ERROR(Field(sel.field));
    SkipSpace();
    while (pos_ < in_.size() && in_[pos_] == '.') {  // a field path: kept dotted
      ++pos_;
      std::string more;
      BCFS_RETURN_IF_ERROR(Field(more));
      sel.field += "." + more;
      SkipSpace();
    }
    if (pos_ == in_.size() || in_[pos_] == ',') return OkStatus();  // presence
    if (!IsOperatorRune(in_[pos_])) return Error("expected an operator (\"==\"|\"!=\"|\"~=\")");
    size_t start = pos_;
    while (pos_ < in_.size() && IsOperatorRune(in_[pos_])) ++pos_;
    sel.op = std::string(in_.substr(start, pos_ - start));
    if (sel.op != "==" && sel.op != "!=" && sel.op != "~=" && sel.op != "=") {
      pos_ = start;
      return Error("unsupported operator \"" + sel.op + "\"");
    }
    SkipSpace();
    if (pos_ == in_.size()) return Error("expected a value");
    char c = in_[pos_];
    if (IsQuoteRune(c)) {
      if (c != '"' && sel.op != "~=") return Error("invalid quote encountered");
      return Quoted(sel.value);
    }
    if (IsSeparatorRune(c) || IsOperatorRune(c) || !IsValueRune(c)) {
      return Error("expected value or quoted");
    }
    start = pos_;
    while (pos_ < in_.size() && IsValueRune(in_[pos_])) ++pos_;
    sel.value = std::string(in_.substr(start, pos_ - start));
    return OkStatus();
  }

  Status Field(std::string& out) {
    SkipSpace();
    if (pos_ < in_.size() && in_[pos_] == '"') return Quoted(out);
    size_t start = pos_;
    while (pos_ < in_.size() && IsFieldRune(in_[pos_])) ++pos_;
    if (pos_ == start) return Error("expected field or quoted");
    out = std::string(in_.substr(start, pos_ - start));
    return OkStatus();
  }

  // A quoted string in Go syntax with `quote` as its delimiter (containerd's
  // unquote): \a \b \f \n \r \t \v \\ \<quote> \ooo \xhh \uhhhh \Uhhhhhhhh.
  Status Quoted(std::string& out) {
    size_t start = pos_;
    char quote = in_[pos_++];
    out.clear();
    for (;;) {
      if (pos_ >= in_.size() || in_[pos_] == '\n') {
        pos_ = start;
        return Error("quoted literal not terminated");
      }
      char c = in_[pos_++];
      if (c == quote) return OkStatus();
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= in_.size()) continue;  // reported as not terminated above
      char e = in_[pos_++];
      switch (e) {
        case 'a':
          out += '\a';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'v':
          out += '\v';
          break;
        case '\\':
          out += '\\';
          break;
        case 'x':
        case 'u':
        case 'U': {
          int n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          uint32_t v = 0;
          for (int k = 0; k < n; ++k) {
            if (pos_ >= in_.size() || HexVal(in_[pos_]) > 15) {
              return Error("illegal numeric escape sequence");
            }
            v = v * 16 + static_cast<uint32_t>(HexVal(in_[pos_++]));
          }
          if (e == 'x') {
            out += static_cast<char>(v);
          } else {
            if (v > 0x10ffff || (v >= 0xd800 && v < 0xe000)) return Error("invalid Unicode escape");
            AppendUtf8(out, v);
          }
          break;
        }
        default:
          if (e == quote) {
            out += e;
          } else if (e >= '0' && e <= '7') {
            uint32_t v = static_cast<uint32_t>(e - '0');
            for (int k = 0; k < 2; ++k) {
              if (pos_ >= in_.size() || in_[pos_] < '0' || in_[pos_] > '7') {
                return Error("illegal numeric escape sequence");
              }
              v = v * 8 + static_cast<uint32_t>(in_[pos_++] - '0');
            }
            if (v > 255) return Error("octal escape value > 255");
            out += static_cast<char>(v);
          } else {
            return Error("illegal escape sequence");
          }
      }
    }
  }

  std::string_view in_;
  size_t pos_ = 0;
};

Status FilterError(std::string_view text, std::string_view msg) {
  return InvalidArgumentError("filter \"" + std::string(text) + "\": " + std::string(msg));
}

// Checks one parsed selector against our fields and turns it into a Selector.
// `type` in kBuildkitToml becomes a selector on a field no item has.
Result<Selector> Build(std::string_view text, const ParsedSelector& p, FilterDialect dialect,
                       std::vector<std::string>* warnings) {
  Selector s;
  if (p.field == "until" || p.field == "unused-for") {
    return FilterError(text,
                       "\"" + p.field + "\" is a command-line filter; a policy says keepDuration");
  }
  if (p.op.empty()) {
    s.op = FilterOp::kPresent;
  } else if (p.op == "==") {
    s.op = FilterOp::kEqual;
  } else if (p.op == "!=") {
    s.op = FilterOp::kNotEqual;
  } else if (p.op == "~=") {
    s.op = FilterOp::kMatches;
  } else if (dialect == FilterDialect::kCommandLine) {  // "=": buildx's key=value
    s.op = FilterOp::kEqual;
  } else {
    return FilterError(text, "unsupported operator \"=\" (use \"==\")");
  }
  s.value = p.value;
  if (p.field == "source") {
    s.field = FilterField::kSource;
  } else if (p.field == "ref") {
    s.field = FilterField::kRef;
  } else if (p.field == "role") {
    s.field = FilterField::kRole;
    if ((s.op == FilterOp::kEqual || s.op == FilterOp::kNotEqual) && !ParseRole(s.value)) {
      return FilterError(text,
                         "role \"" + s.value + "\" is not one of layer, config, manifest, derived");
    }
  } else if (p.field == "mediatype") {
    s.field = FilterField::kMediaType;
  } else if (p.field == "type") {
    if (dialect != FilterDialect::kBuildkitToml) {
      return FilterError(text, "field \"type\": " + std::string(kTypeRefused));
    }
    s.field = FilterField::kType;
    if (warnings) {
      warnings->push_back("filter \"" + std::string(text) + "\": " + std::string(kTypeRefused) +
                          "; this selector matches nothing here");
    }
  } else {
    return FilterError(
        text, "unknown field \"" + p.field + "\" (fields: " + std::string(kFieldList) + ")");
  }
  if (s.op == FilterOp::kMatches) {
    try {
      s.re = std::make_shared<const std::regex>(s.value, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      return FilterError(text, "bad regexp \"" + s.value + "\": " + e.what());
    }
  }
  return s;
}

bool AnyEquals(const std::vector<std::string>& values, const std::string& v) {
  return std::find(values.begin(), values.end(), v) != values.end();
}

bool AnySearch(const std::vector<std::string>& values, const std::regex& re) {
  if (values.empty()) return std::regex_search(std::string(), re);
  for (const auto& v : values) {
    if (std::regex_search(v, re)) return true;
  }
  return false;
}

bool MatchOne(FilterOp op, const std::string& want, const std::regex* re, bool present,
              std::string_view value) {
  switch (op) {
    case FilterOp::kPresent:
      return present;
    case FilterOp::kEqual:
      return present && value == want;
    case FilterOp::kNotEqual:
      return !present || value != want;
    case FilterOp::kMatches:
      return std::regex_search(value.begin(), value.end(), *re);
  }
  return false;
}

bool MatchMany(FilterOp op, const std::string& want, const std::regex* re,
               const std::vector<std::string>& values) {
  switch (op) {
    case FilterOp::kPresent:
      return !values.empty();
    case FilterOp::kEqual:
      return AnyEquals(values, want);
    case FilterOp::kNotEqual:
      return !AnyEquals(values, want);
    case FilterOp::kMatches:
      return AnySearch(values, *re);
  }
  return false;
}

}  // namespace

class FilterBuilder {
 public:
  static void Add(Filter& f, std::vector<Selector> all) {
    f.alternatives_.push_back(std::move(all));
  }
};

bool Selector::Matches(const Item& item) const {
  switch (field) {
    case FilterField::kSource:
      return MatchMany(op, value, re.get(), item.sources);
    case FilterField::kRef:
      return MatchMany(op, value, re.get(), item.refs);
    case FilterField::kRole:
      return MatchOne(op, value, re.get(), true, RoleName(item.role));
    case FilterField::kMediaType:
      return MatchOne(op, value, re.get(), !item.media_type.empty(), item.media_type);
    case FilterField::kType:
      return MatchOne(op, value, re.get(), false, "");
  }
  return false;
}

bool Filter::MatchesEverything() const {
  if (alternatives_.empty()) return true;
  for (const auto& all : alternatives_) {
    if (all.empty()) return true;
  }
  return false;
}

bool Filter::Matches(const Item& item) const {
  if (alternatives_.empty()) return true;
  for (const auto& all : alternatives_) {
    bool ok = true;
    for (const auto& s : all) {
      if (!s.Matches(item)) {
        ok = false;
        break;
      }
    }
    if (ok) return true;
  }
  return false;
}

Result<Filter> ParsePolicyFilters(const std::vector<std::string>& strings, FilterDialect dialect,
                                  std::vector<std::string>* warnings) {
  Filter f;
  std::vector<std::string> local_warnings;
  for (const auto& text : strings) {
    std::vector<Selector> all;
    if (!text.empty()) {  // containerd: "" is Always
      BCFS_ASSIGN_OR_RETURN(auto parsed, Parser(text).Selectors());
      for (const auto& p : parsed) {
        BCFS_ASSIGN_OR_RETURN(Selector s, Build(text, p, dialect, &local_warnings));
        all.push_back(std::move(s));
      }
    }
    FilterBuilder::Add(f, std::move(all));
  }
  if (warnings) warnings->insert(warnings->end(), local_warnings.begin(), local_warnings.end());
  return f;
}

Result<CommandLineFilter> ParseCommandLineFilters(const std::vector<std::string>& flags) {
  CommandLineFilter out;
  std::vector<Selector> all;
  std::optional<std::string> until_key;
  for (const auto& text : flags) {
    if (text.empty()) continue;
    BCFS_ASSIGN_OR_RETURN(auto parsed, Parser(text).Selectors());
    for (const auto& p : parsed) {
      if (p.field == "until" || p.field == "unused-for") {
        if (until_key && *until_key != p.field) {
          return FilterError(text, "conflicting filters \"until\" and \"unused-for\"");
        }
        if (until_key)
          return FilterError(text, "\"" + p.field + "\" filter expects only one value");
        if (p.op != "=" && p.op != "==") {
          return FilterError(text, "\"" + p.field + "\" filter expects a duration (e.g. '24h')");
        }
        auto d = ParseGoDuration(p.value);
        if (!d.ok()) {
          return FilterError(text, "\"" + p.field + "\" filter expects a duration (e.g. '24h'): " +
                                       d.status().message());
        }
        if (*d < 0) return FilterError(text, "\"" + p.field + "\" filter: negative duration");
        until_key = p.field;
        out.keep_duration = *d;
        continue;
      }
      BCFS_ASSIGN_OR_RETURN(Selector s, Build(text, p, FilterDialect::kCommandLine, nullptr));
      all.push_back(std::move(s));
    }
  }
  if (!all.empty()) FilterBuilder::Add(out.filter, std::move(all));
  return out;
}

}  // namespace bcfs::gc
