#include "formats/json_util.h"

#include <strings.h>

namespace bcfs::formats {

Result<Json> ParseJson(std::string_view text, std::string_view doc) {
  try {
    return Json::parse(text.begin(), text.end());
  } catch (const Json::exception& e) {
    std::string why = e.what();
    // nlohmann prefixes "[json.exception.parse_error.101] parse error at ...".
    if (size_t p = why.find("] "); p != std::string::npos) why = why.substr(p + 2);
    return CorruptError(std::string(doc) + ": not valid JSON: " + why);
  }
}

std::string_view JsonTypeName(const Json& j) {
  switch (j.type()) {
    case Json::value_t::null:
      return "null";
    case Json::value_t::object:
      return "an object";
    case Json::value_t::array:
      return "an array";
    case Json::value_t::string:
      return "a string";
    case Json::value_t::boolean:
      return "a boolean";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
      return "an integer";
    case Json::value_t::number_float:
      return "a number";
    default:
      return "an unexpected value";
  }
}

Status ExpectObject(const Json& j, std::string_view doc, std::string_view path) {
  if (j.is_object()) return OkStatus();
  std::string where =
      path.empty() ? std::string("the document") : "field \"" + std::string(path) + "\"";
  return CorruptError(std::string(doc) + ": " + where + " is " + std::string(JsonTypeName(j)) +
                      ", want an object");
}

const Json* FieldReader::Find(std::string_view key) const {
  if (!obj_.is_object()) return nullptr;
  auto it = obj_.find(std::string(key));
  if (it != obj_.end()) return it->is_null() ? nullptr : &*it;
  for (auto i = obj_.begin(); i != obj_.end(); ++i) {
    if (i.key().size() == key.size() && strncasecmp(i.key().data(), key.data(), key.size()) == 0) {
      return i->is_null() ? nullptr : &*i;
    }
  }
  return nullptr;
}

std::string FieldReader::FieldPath(std::string_view key) const {
  return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
}

Status FieldReader::Error(std::string_view key, std::string_view problem) const {
  return CorruptError(doc_ + ": field \"" + FieldPath(key) + "\": " + std::string(problem));
}

Result<std::string> FieldReader::String(std::string_view key, bool required) const {
  const Json* v = Find(key);
  if (v == nullptr) {
    if (required) return Error(key, "missing");
    return std::string();
  }
  if (!v->is_string()) return Error(key, std::string(JsonTypeName(*v)) + ", want a string");
  return v->get<std::string>();
}

Result<std::optional<int64_t>> FieldReader::Int(std::string_view key) const {
  const Json* v = Find(key);
  if (v == nullptr) return std::optional<int64_t>();
  if (v->is_number_integer()) return std::optional<int64_t>(v->get<int64_t>());
  if (v->is_number_unsigned()) {
    uint64_t u = v->get<uint64_t>();
    if (u > static_cast<uint64_t>(INT64_MAX)) return Error(key, "integer out of range");
    return std::optional<int64_t>(static_cast<int64_t>(u));
  }
  return Error(key, std::string(JsonTypeName(*v)) + ", want an integer");
}

Result<std::optional<Digest>> FieldReader::DigestField(std::string_view key, bool required) const {
  BCFS_ASSIGN_OR_RETURN(std::string s, String(key, required));
  if (s.empty()) {
    if (required) return Error(key, "empty digest");
    return std::optional<Digest>();
  }
  auto d = Digest::Parse(s);
  if (!d.ok()) return Error(key, d.status().message());
  return std::optional<Digest>(*d);
}

Result<TimeNs> FieldReader::Time(std::string_view key) const {
  BCFS_ASSIGN_OR_RETURN(std::string s, String(key, false));
  if (s.empty()) return TimeNs{0};
  auto t = ParseRfc3339(s);
  if (!t.ok()) return Error(key, t.status().message());
  return *t;
}

Result<std::map<std::string, std::string>> FieldReader::StringMap(std::string_view key) const {
  std::map<std::string, std::string> out;
  const Json* v = Find(key);
  if (v == nullptr) return out;
  if (!v->is_object()) return Error(key, std::string(JsonTypeName(*v)) + ", want an object");
  for (auto it = v->begin(); it != v->end(); ++it) {
    if (!it->is_string()) {
      return Error(std::string(key) + "." + it.key(),
                   std::string(JsonTypeName(*it)) + ", want a string");
    }
    out[it.key()] = it->get<std::string>();
  }
  return out;
}

}  // namespace bcfs::formats
