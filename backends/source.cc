#include "backends/source.h"

#include <algorithm>
#include <span>
#include <utility>

#include "backends/naming.h"
#include "core/digest.h"

namespace bcfs::backends {
namespace {

// Values never shown anywhere: buildx forwards AWS and GitHub credentials as
// attributes (FORMATS.md §5.6, §7.1). access_key_id is not secret by itself, but
// it names the account, so it is hidden too.
constexpr std::string_view kSecretKeys[] = {"access_key_id", "secret_access_key", "session_token",
                                            "token", "ghtoken"};
// URL values whose user-info and query string are hidden (a SAS token or a
// password pasted into a URL).
constexpr std::string_view kUrlKeys[] = {"account_url", "endpoint_url", "url", "url_v2"};

// Keys BuildKit reads only when exporting (--cache-to), for any type. A pasted
// --cache-to string keeps working: they are accepted, ignored and reported.
// Sources: FORMATS.md §2.6 (local), §3 (registry), §5.1 (s3), §7.1 (gha), and
// DESIGN.md §1.2. BuildKit itself ignores attributes a cache type does not read,
// so these are accepted whatever the type.
constexpr std::string_view kExportOnlyKeys[] = {
    "mode",                // min|max: which results are exported
    "compression",         // layer compression on export
    "compression-level",   //
    "force-compression",   //
    "oci-mediatypes",      // media types of the exported manifest
    "image-manifest",      // manifest vs index shape of the exported cache
    "ignore-error",        // a failed export does not fail the build
    "reset",               // since v0.31: start the exported cache from scratch
    "upload_parallelism",  // s3: layers uploaded at once
    "touch_refresh",       // s3: when existing blobs are touched
};

constexpr std::string_view kOwnKeyAs = "as";
constexpr std::string_view kReservedPrefix = "buildcachefs.";

// Import-side keys per type. "dest" is the export-side name of local "src" and
// is stored as "src".
constexpr std::string_view kLocalKeys[] = {"src", "dest", "tag", "digest"};
constexpr std::string_view kRegistryKeys[] = {"ref", "registry.insecure"};
constexpr std::string_view kS3Keys[] = {"bucket",           "region",
                                        "prefix",           "blobs_prefix",
                                        "manifests_prefix", "name",
                                        "endpoint_url",     "use_path_style",
                                        "access_key_id",    "secret_access_key",
                                        "session_token",    "disable_accept_encoding",
                                        "retry_mode",       "retry_max_attempts"};
constexpr std::string_view kAzblobKeys[] = {"account_url", "account_name",     "container",
                                            "prefix",      "blobs_prefix",     "manifests_prefix",
                                            "name",        "secret_access_key"};
constexpr std::string_view kGhaKeys[] = {"scope",   "url",     "url_v2",     "token",
                                         "version", "timeout", "repository", "ghtoken"};

struct TypeInfo {
  SourceType type;
  std::string_view name;
  std::span<const std::string_view> keys;
  // A key that must be given with a non-empty value; "" when none. s3 bucket and
  // region and azblob account_url may come from the daemon's environment, which
  // the parser does not read, so they are not listed.
  std::string_view required;
};

constexpr TypeInfo kTypes[] = {
    {SourceType::kLocal, "local", kLocalKeys, "src"},
    {SourceType::kRegistry, "registry", kRegistryKeys, "ref"},
    {SourceType::kS3, "s3", kS3Keys, ""},
    {SourceType::kAzblob, "azblob", kAzblobKeys, ""},
    {SourceType::kGha, "gha", kGhaKeys, ""},
};

bool Contains(std::span<const std::string_view> list, std::string_view key) {
  return std::find(list.begin(), list.end(), key) != list.end();
}

const TypeInfo* FindType(std::string_view name) {
  for (const TypeInfo& t : kTypes) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

const TypeInfo& InfoOf(SourceType type) {
  for (const TypeInfo& t : kTypes) {
    if (t.type == type) return t;
  }
  BCFS_CHECK(false && "SourceType without a TypeInfo");
  return kTypes[0];
}

// Keys whose values may be shown in messages: every key some type accepts,
// except the secrets. Unknown keys are hidden too: one may be a misspelt secret.
bool IsShowableKey(std::string_view key) {
  if (Contains(kSecretKeys, key)) return false;
  if (key == "type" || key == kOwnKeyAs || Contains(kExportOnlyKeys, key)) return true;
  for (const TypeInfo& t : kTypes) {
    if (Contains(t.keys, key)) return true;
  }
  return false;
}

// "https://user:pw@host/p?sig=x" -> "https://***@host/p?***".
std::string RedactUrl(std::string_view url) {
  std::string out(url);
  size_t query = out.find_first_of("?#");
  if (query != std::string::npos) out = out.substr(0, query) + "?***";
  size_t scheme = out.find("://");
  size_t authority = scheme == std::string::npos ? 0 : scheme + 3;
  size_t authority_end = out.find_first_of("/?", authority);
  if (authority_end == std::string::npos) authority_end = out.size();
  size_t at = out.rfind('@', authority_end == 0 ? 0 : authority_end - 1);
  if (at != std::string::npos && at >= authority && at < authority_end) {
    out.replace(authority, at - authority, "***");
  }
  return out;
}

std::string RedactValue(std::string_view key, std::string_view value) {
  if (value.empty()) return "";
  if (!IsShowableKey(key)) return "***";
  if (Contains(kUrlKeys, key)) return RedactUrl(value);
  return std::string(value);
}

// A field as Go's encoding/csv writes it: quoted when it holds a comma, a quote
// or a line break, or starts with a space.
std::string CsvField(std::string_view field) {
  bool quote = field.find_first_of(",\"\r\n") != std::string_view::npos ||
               (!field.empty() && (field[0] == ' ' || field[0] == '\t'));
  if (!quote) return std::string(field);
  std::string out = "\"";
  for (char c : field) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

using Fields = std::vector<std::pair<std::string, std::string>>;

std::string JoinRedacted(const Fields& fields) {
  std::string out;
  for (const auto& [key, value] : fields) {
    if (!out.empty()) out += ',';
    out += CsvField(key + "=" + RedactValue(key, value));
  }
  return out;
}

std::string Quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

Status SyntaxError(std::string_view what, size_t column) {
  return InvalidArgumentError("source string: " + std::string(what) + " at column " +
                              std::to_string(column));
}

// One record as Go's encoding/csv reads it (Comma ',', no LazyQuotes, no
// TrimLeadingSpace). A line break outside quotes is refused: a source is one
// record. Messages show positions, not text: the text may hold a secret.
Result<std::vector<std::string>> SplitCsvRecord(std::string_view text) {
  std::vector<std::string> fields;
  size_t i = 0;
  while (true) {
    std::string field;
    if (i < text.size() && text[i] == '"') {
      size_t open = i;
      ++i;
      while (true) {
        if (i >= text.size()) {
          return SyntaxError("extraneous or missing \" in quoted field opened", open + 1);
        }
        if (text[i] == '"') {
          if (i + 1 < text.size() && text[i + 1] == '"') {
            field += '"';
            i += 2;
            continue;
          }
          ++i;
          break;
        }
        field += text[i++];
      }
      if (i < text.size() && text[i] != ',') {
        if (text[i] == '\n' || text[i] == '\r') {
          return SyntaxError("line break (a source is one line)", i + 1);
        }
        return SyntaxError("extraneous or missing \" in quoted field", i + 1);
      }
    } else {
      while (i < text.size() && text[i] != ',') {
        if (text[i] == '"') return SyntaxError("bare \" in non-quoted field", i + 1);
        if (text[i] == '\n' || text[i] == '\r') {
          return SyntaxError("line break (a source is one line)", i + 1);
        }
        field += text[i++];
      }
    }
    fields.push_back(std::move(field));
    if (i >= text.size()) break;
    ++i;  // the comma
  }
  return fields;
}

std::string KeyList(std::span<const std::string_view> keys) {
  std::string out;
  for (std::string_view k : keys) {
    if (!out.empty()) out += ", ";
    out += k;
  }
  return out;
}

}  // namespace

std::string_view SourceTypeName(SourceType type) { return InfoOf(type).name; }

std::string SourceSpec::Get(std::string_view key, std::string_view fallback) const {
  auto it = attrs.find(std::string(key));
  return it == attrs.end() ? std::string(fallback) : it->second;
}

bool SourceSpec::Has(std::string_view key) const { return attrs.count(std::string(key)) > 0; }

std::string SourceSpec::Redacted() const {
  Fields fields;
  fields.emplace_back("type", std::string(SourceTypeName(type)));
  for (const auto& [key, value] : attrs) fields.emplace_back(key, value);
  if (!as_name.empty()) fields.emplace_back(std::string(kOwnKeyAs), as_name);
  return JoinRedacted(fields);
}

Result<SourceSpec> ParseSourceString(std::string_view text) {
  if (text.empty()) {
    return InvalidArgumentError(
        "empty source string (want type=local,src=DIR or type=registry,ref=IMAGE...)");
  }
  BCFS_ASSIGN_OR_RETURN(std::vector<std::string> raw_fields, SplitCsvRecord(text));

  Fields fields;
  if (raw_fields.size() == 1 && !raw_fields[0].empty() &&
      raw_fields[0].find('=') == std::string::npos) {
    // buildx: a bare image reference is a registry cache.
    fields.emplace_back("type", "registry");
    fields.emplace_back("ref", raw_fields[0]);
  } else {
    for (size_t i = 0; i < raw_fields.size(); ++i) {
      const std::string& f = raw_fields[i];
      if (f.empty()) {
        return InvalidArgumentError("source string: field " + std::to_string(i + 1) + " of " +
                                    std::to_string(raw_fields.size()) +
                                    " is empty (a trailing or doubled comma?)");
      }
      size_t eq = f.find('=');
      if (eq == std::string::npos) {
        return InvalidArgumentError("source string: field " + std::to_string(i + 1) + " " +
                                    Quoted(f) + " is not key=value");
      }
      fields.emplace_back(f.substr(0, eq), f.substr(eq + 1));
    }
  }
  const std::string shown = JoinRedacted(fields);
  auto fail = [&shown](std::string what) {
    return InvalidArgumentError(std::move(what) + " in source " + shown);
  };

  // Duplicates first: `dest` and `src` name one attribute.
  std::vector<std::string> seen;
  for (const auto& [key, value] : fields) {
    std::string canonical = key == "dest" ? "src" : key;
    if (std::find(seen.begin(), seen.end(), canonical) != seen.end()) {
      if (key == "dest" || key == "src") {
        return fail("key \"src\" given twice (dest is an alias of src)");
      }
      return fail("key " + Quoted(key) + " given twice");
    }
    seen.push_back(std::move(canonical));
  }

  const std::string* type_name = nullptr;
  for (const auto& [key, value] : fields) {
    if (key == "type") type_name = &value;
  }
  std::string type_list;
  for (const TypeInfo& t : kTypes) {
    type_list += type_list.empty() ? "" : ", ";
    type_list += t.name;
  }
  if (type_name == nullptr) {
    return fail("no type= (want one of " + type_list +
                ", or a bare image reference for a registry cache)");
  }
  if (*type_name == "inline") {
    return fail(
        "type=inline cannot be read as such: inline caches live in the image and are read with "
        "type=registry,ref=<image>");
  }
  const TypeInfo* info = FindType(*type_name);
  if (info == nullptr) {
    return fail("unknown source type " + Quoted(*type_name) + " (want one of " + type_list + ")");
  }

  SourceSpec spec;
  spec.type = info->type;
  for (const auto& [key, value] : fields) {
    if (key == "type") continue;
    if (key == kOwnKeyAs) {
      spec.as_name = value;
    } else if (Contains(kExportOnlyKeys, key)) {
      spec.ignored_keys.push_back(key);
    } else if (Contains(info->keys, key)) {
      spec.attrs[key == "dest" ? "src" : key] = value;
    } else if (key.starts_with(kReservedPrefix)) {
      return fail("unknown key " + Quoted(key) + " (keys starting \"" +
                  std::string(kReservedPrefix) +
                  "\" are reserved for buildcachefs and none is defined yet)");
    } else {
      return fail("unknown key " + Quoted(key) + " (type=" + std::string(info->name) + " takes " +
                  KeyList(info->keys) + ", as, and the export-only keys " +
                  KeyList(kExportOnlyKeys) + ")");
    }
  }

  if (!info->required.empty()) {
    std::string key(info->required);
    std::string also = info->type == SourceType::kLocal ? " (or dest=)" : "";
    if (!spec.Has(key)) {
      return fail("type=" + std::string(info->name) + " needs " + key + "=" + also);
    }
    if (spec.Get(key).empty()) return fail("empty value for key " + Quoted(key));
  }
  if (spec.type == SourceType::kLocal && spec.Has("digest")) {
    auto digest = Digest::Parse(spec.Get("digest"));
    if (!digest.ok()) {
      return fail("bad digest= " + Quoted(spec.Get("digest")) + " (" + digest.status().message() +
                  ")");
    }
  }
  for (const auto& [key, value] : fields) {
    if (key != kOwnKeyAs) continue;
    Status st = CheckSourceName(value);
    if (!st.ok()) return fail("bad as=: " + st.message());
  }
  return spec;
}

}  // namespace bcfs::backends
