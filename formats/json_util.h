// Helpers for reading JSON documents the way Go's encoding/json does (unknown
// keys ignored, keys matched exactly first and then case-insensitively) and
// for errors that name the document, the field and the problem:
//   cache config sha256:16966e6ea17e: field "layers[3].parent": 12 is out of range
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "core/digest.h"
#include "core/status.h"
#include "core/time.h"

namespace bcfs::formats {

using Json = nlohmann::json;

// Parses text as one JSON value; errors name `doc` and the parser's reason.
Result<Json> ParseJson(std::string_view text, std::string_view doc);

// Reads fields of one JSON object; every error says "<doc>: field "<path>": ...".
class FieldReader {
 public:
  FieldReader(const Json& obj, std::string doc, std::string path)
      : obj_(obj), doc_(std::move(doc)), path_(std::move(path)) {}

  // The member named key (exact match first, then case-insensitive as Go), or
  // nullptr when absent or null.
  const Json* Find(std::string_view key) const;
  std::string FieldPath(std::string_view key) const;
  Status Error(std::string_view key, std::string_view problem) const;

  Result<std::string> String(std::string_view key, bool required) const;
  Result<std::optional<int64_t>> Int(std::string_view key) const;
  Result<std::optional<Digest>> DigestField(std::string_view key, bool required) const;
  Result<TimeNs> Time(std::string_view key) const;  // absent = 0
  Result<std::map<std::string, std::string>> StringMap(std::string_view key) const;

  const std::string& doc() const { return doc_; }
  const std::string& path() const { return path_; }

 private:
  const Json& obj_;
  std::string doc_;
  std::string path_;
};

// Checks that j is an object; the error names doc and path.
Status ExpectObject(const Json& j, std::string_view doc, std::string_view path);
std::string_view JsonTypeName(const Json& j);

}  // namespace bcfs::formats
