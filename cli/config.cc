#include "cli/config.h"

#include <toml++/toml.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/metrics_http.h"
#include "gc/toml_names.h"

namespace bcfs::cli {
namespace {

constexpr char kTopKeys[] =
    "mountpoint, state_dir, options, source, gc, gc_interval, refresh_interval, log_level, "
    "metrics_addr";

std::string Place(std::string_view file, const toml::source_region& where) {
  std::string s(file);
  if (where.begin.line > 0) {
    s += ":" + std::to_string(where.begin.line) + ":" + std::to_string(where.begin.column);
  }
  return s;
}

Status ErrorAt(std::string_view file, const toml::source_region& where, std::string_view path,
               std::string_view msg) {
  std::string s = Place(file, where) + ": ";
  if (!path.empty()) s += std::string(path) + ": ";
  return InvalidArgumentError(s + std::string(msg));
}

// Takes the file's directory for relative paths.
std::string Resolve(const std::string& base_dir, const std::string& path) {
  std::filesystem::path p(path);
  if (!p.is_absolute()) p = std::filesystem::path(base_dir) / p;
  std::string out = p.lexically_normal().string();
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

Result<std::string> StringValue(std::string_view file, const toml::node& n, std::string_view path) {
  if (auto s = n.as_string()) return s->get();
  return ErrorAt(file, n.source(), path,
                 "expected a string, got " + std::string(gc::TomlTypeName(n)));
}

// A field of a source string, quoted as Go's encoding/csv would need it.
std::string CsvField(const std::string& field) {
  if (field.find_first_of(",\"\r\n") == std::string::npos) return field;
  std::string out = "\"";
  for (char c : field) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

// A [[source]] table: either `source = "CSV"` alone, or the CSV's keys.
Result<std::string> SourceText(std::string_view file, const toml::table& t,
                               const std::string& path) {
  if (auto s = t.get("source")) {
    if (t.size() != 1) {
      for (auto&& [k, v] : t) {
        if (k.str() != "source") {
          return ErrorAt(file, k.source(), path,
                         "key \"" + std::string(k.str()) +
                             "\" next to `source`: give a source string or its keys, not both");
        }
      }
    }
    return StringValue(file, *s, path + ".source");
  }
  std::string csv;
  for (auto&& [k, v] : t) {
    std::string value;
    if (auto s = v.as_string()) {
      value = s->get();
    } else if (auto i = v.as_integer()) {
      value = std::to_string(i->get());
    } else if (auto b = v.as_boolean()) {
      value = b->get() ? "true" : "false";
    } else {
      return ErrorAt(file, v.source(), path + "." + std::string(k.str()),
                     "expected a string, got " + std::string(gc::TomlTypeName(v)));
    }
    if (!csv.empty()) csv += ',';
    csv += CsvField(std::string(k.str()) + "=" + value);
  }
  if (csv.empty()) return ErrorAt(file, t.source(), path, "empty source (want type=... keys)");
  return csv;
}

Result<gc::DurationNs> DurationValue(std::string_view file, const toml::node& n,
                                     std::string_view path) {
  Result<gc::DurationNs> d = InvalidArgumentError("");
  if (auto i = n.as_integer()) {
    d = gc::ParseConfigDuration(std::to_string(i->get()));
  } else if (auto s = n.as_string()) {
    d = gc::ParseConfigDuration(s->get());
  } else {
    return ErrorAt(file, n.source(), path,
                   "expected a duration string, got " + std::string(gc::TomlTypeName(n)));
  }
  if (!d.ok()) return ErrorAt(file, n.source(), path, d.status().message());
  return d;
}

// gc::ParseGcConfig names "FILE:LINE: PATH: ..."; the column comes from the
// node at PATH, so that every error of the file has the same shape.
Status AddColumn(const Status& st, std::string_view file, toml::table& doc) {
  const std::string msg(st.message());
  const std::string prefix = std::string(file) + ":";
  if (msg.rfind(prefix, 0) != 0) return st;
  size_t pos = prefix.size();
  size_t digits_end = pos;
  while (digits_end < msg.size() && std::isdigit(static_cast<unsigned char>(msg[digits_end]))) {
    ++digits_end;
  }
  if (digits_end == pos || msg.compare(digits_end, 2, ": ") != 0) return st;
  const size_t path_start = digits_end + 2;
  const size_t path_end = msg.find(": ", path_start);
  if (path_end == std::string::npos) return st;
  toml::node_view<toml::node> node =
      toml::at_path(doc, std::string_view(msg).substr(path_start, path_end - path_start));
  if (!node || node.node()->source().begin.line !=
                   static_cast<toml::source_index>(std::stoul(msg.substr(pos, digits_end - pos)))) {
    return st;
  }
  return InvalidArgumentError(msg.substr(0, digits_end) + ":" +
                              std::to_string(node.node()->source().begin.column) +
                              msg.substr(digits_end));
}

}  // namespace

Result<ServiceConfig> ParseServiceConfig(std::string_view toml_text, std::string_view file_name,
                                         const std::string& base_dir) {
  toml::table doc;
  try {
    doc = toml::parse(toml_text, file_name);
  } catch (const toml::parse_error& e) {
    return InvalidArgumentError(Place(file_name, e.source()) +
                                ": bad TOML: " + std::string(e.description()));
  }
  ServiceConfig cfg;
  for (auto&& [key, node] : doc) {
    const std::string k(key.str());
    if (k == "mountpoint" || k == "state_dir") {
      BCFS_ASSIGN_OR_RETURN(std::string v, StringValue(file_name, node, k));
      if (v.empty()) return ErrorAt(file_name, node.source(), k, "empty path");
      (k == "mountpoint" ? cfg.mountpoint : cfg.state_dir) = Resolve(base_dir, v);
    } else if (k == "options") {
      auto arr = node.as_array();
      if (!arr) {
        return ErrorAt(file_name, node.source(), k,
                       "expected an array of strings, got " + std::string(gc::TomlTypeName(node)));
      }
      cfg.options.emplace();
      for (size_t i = 0; i < arr->size(); ++i) {
        BCFS_ASSIGN_OR_RETURN(std::string v,
                              StringValue(file_name, (*arr)[i], k + "[" + std::to_string(i) + "]"));
        cfg.options->push_back(std::move(v));
      }
    } else if (k == "source") {
      auto arr = node.as_array();
      if (!arr) {
        return ErrorAt(file_name, node.source(), k,
                       "expected [[source]] tables, got " + std::string(gc::TomlTypeName(node)));
      }
      for (size_t i = 0; i < arr->size(); ++i) {
        const toml::node& e = (*arr)[i];
        const std::string path = "source[" + std::to_string(i) + "]";
        auto t = e.as_table();
        if (!t)
          return ErrorAt(file_name, e.source(), path,
                         "expected a table, got " + std::string(gc::TomlTypeName(e)));
        BCFS_ASSIGN_OR_RETURN(std::string text, SourceText(file_name, *t, path));
        const toml::node* at = t->get("source") ? t->get("source") : &e;
        auto spec = backends::ParseSourceString(text);
        if (!spec.ok()) return ErrorAt(file_name, at->source(), path, spec.status().message());
        if (spec->type == backends::SourceType::kLocal && spec->Has("src")) {
          spec->attrs["src"] = Resolve(base_dir, spec->Get("src"));
        }
        cfg.sources.push_back(std::move(*spec));
      }
    } else if (k == "gc") {
      if (!node.as_table()) {
        return ErrorAt(file_name, node.source(), k,
                       "expected a table, got " + std::string(gc::TomlTypeName(node)));
      }
      auto gc = gc::ParseGcConfig(toml_text, file_name);
      if (!gc.ok()) return AddColumn(gc.status(), file_name, doc);
      cfg.gc = std::move(*gc);
      std::ostringstream text;
      text << *node.as_table();
      cfg.gc_text = text.str();
    } else if (k == "gc_interval" || k == "refresh_interval") {
      BCFS_ASSIGN_OR_RETURN(gc::DurationNs d, DurationValue(file_name, node, k));
      (k == "gc_interval" ? cfg.gc_interval : cfg.refresh_interval) = d;
    } else if (k == "log_level") {
      BCFS_ASSIGN_OR_RETURN(std::string v, StringValue(file_name, node, k));
      log::Level level;
      if (!log::ParseLevel(v, &level)) {
        return ErrorAt(file_name, node.source(), k,
                       "unknown log level \"" + v + "\" (want debug, info, warning or error)");
      }
      cfg.log_level = level;
    } else if (k == "metrics_addr") {
      BCFS_ASSIGN_OR_RETURN(std::string v, StringValue(file_name, node, k));
      if (Status st = metrics::ValidateListenAddress(v); !st.ok()) {
        return ErrorAt(file_name, node.source(), k, st.message());
      }
      cfg.metrics_addr = std::move(v);
    } else {
      return ErrorAt(file_name, key.source(), "",
                     "unknown key \"" + k + "\" (want " + kTopKeys + ")");
    }
  }
  return cfg;
}

Result<ServiceConfig> LoadServiceConfig(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return ErrnoError(errno, "read config " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return ErrnoError(errno, "read config " + path);
  std::error_code ec;
  std::filesystem::path abs = std::filesystem::absolute(path, ec);
  const std::string base = ec ? "." : abs.parent_path().string();
  return ParseServiceConfig(ss.str(), path, base);
}

}  // namespace bcfs::cli
