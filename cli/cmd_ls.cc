// `buildcachefs ls SOURCE [REF] [--format table|json] [--state-dir DIR]`:
// what a cache holds, read the way BuildKit reads it, without mounting.

#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "backends/backend.h"
#include "backends/naming.h"
#include "backends/source.h"
#include "catalog/catalog.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "core/log.h"
#include "core/paths.h"
#include "core/units.h"
#include "index/index.h"
#include "tree/tree.h"

namespace bcfs::cli {
namespace {

using OJson = nlohmann::ordered_json;

constexpr char kLsHelp[] =
    R"(Usage: buildcachefs ls SOURCE [REF] [--format table|json] [--tree] [--state-dir DIR]

Lists what a BuildKit cache holds, read the way BuildKit's importer reads it:
refs with their manifest shape, sizes and dates; per ref its layers (position in
the cache config, blob digest, size, media type, compression, createdAt, parent)
and record count; cache manifests no ref reaches any more (history); warnings
(documents over BuildKit's 1 MiB import limit, missing blobs, sizes that
disagree) and errors, each naming its culprit.

SOURCE is the CSV given to `docker buildx build --cache-from`, e.g.
  type=local,src=/var/cache/buildkit            (tag=T / digest=sha256:... narrow it)
REF shows one ref only (its raw name, its folder name, or @<hex12>).

Options:
  --format table|json   human-readable columns (default) or JSON for scripts
  --tree                print the tree a mount of SOURCE shows (paths, modes,
                        sizes, link targets), without mounting
  --state-dir DIR       also record what was read in DIR's index
  --log-level LEVEL     debug, info, warning (default), error
  -h, --help            this text

Exit status: 0 all read, 1 read with errors (still listed), 2 usage error.
)";

std::string DateOrDash(TimeNs t) {
  if (t == 0) return "-";
  std::string s = FormatRfc3339(t);
  // Seconds are enough for people; JSON keeps nanoseconds.
  if (size_t dot = s.find('.'); dot != std::string::npos) s = s.substr(0, dot) + "Z";
  return s;
}

std::string Short(const Digest& d) { return d.empty() ? "-" : d.algorithm() + ":" + d.ShortHex(); }

OJson RefJson(const catalog::RefInfo& r) {
  OJson j;
  j["name"] = r.name;
  j["path_name"] = backends::EncodeRefName(r.name);
  j["history"] = r.history;
  j["digest"] = r.descriptor.digest.ToString();
  j["media_type"] = r.media_type.empty() ? r.descriptor.media_type : r.media_type;
  j["size"] = r.descriptor.size;
  j["shape"] = r.shape;
  OJson cfg = nullptr;
  if (!r.config.digest.empty()) {
    cfg = {{"digest", r.config.digest.ToString()},
           {"size", r.config.size},
           {"media_type", r.config.media_type}};
  }
  j["config"] = cfg;
  j["total_size"] = r.total_size;
  j["created"] = FormatRfc3339(r.created);
  j["modified"] = FormatRfc3339(r.modified);
  j["record_count"] = r.record_count;
  OJson layers = OJson::array();
  for (const auto& l : r.layers) {
    layers.push_back({{"position", l.position},
                      {"digest", l.blob.ToString()},
                      {"size", l.size},
                      {"media_type", l.media_type},
                      {"compression", l.compression},
                      {"diff_id", l.diff_id.ToString()},
                      {"created", FormatRfc3339(l.created)},
                      {"parent", l.parent},
                      {"listed", l.listed},
                      {"present", l.present}});
  }
  j["layers"] = layers;
  j["warnings"] = r.warnings;
  j["errors"] = r.errors;
  return j;
}

void PrintJson(const catalog::SourceInfo& info, const std::vector<const catalog::RefInfo*>& refs,
               const std::vector<const catalog::RefInfo*>& history) {
  OJson j;
  j["source"] = {{"name", info.name}, {"type", info.type}, {"location", info.location}};
  j["blobs"] = {{"count", info.blob_count},
                {"bytes", info.blob_bytes},
                {"unreferenced_count", info.unreferenced_count},
                {"unreferenced_bytes", info.unreferenced_bytes}};
  OJson rj = OJson::array(), hj = OJson::array();
  for (const auto* r : refs) rj.push_back(RefJson(*r));
  for (const auto* r : history) hj.push_back(RefJson(*r));
  j["refs"] = rj;
  j["history"] = hj;
  j["warnings"] = info.warnings;
  j["errors"] = info.errors;
  std::cout << j.dump(2, ' ', false, OJson::error_handler_t::replace) << "\n";
}

// Left-aligned columns separated by two spaces; numeric columns right-aligned.
void PrintTable(std::ostream& os, const std::vector<std::vector<std::string>>& rows,
                const std::vector<bool>& right, const std::string& indent) {
  std::vector<size_t> w;
  for (const auto& r : rows) {
    for (size_t i = 0; i < r.size(); ++i) {
      if (w.size() <= i) w.push_back(0);
      w[i] = std::max(w[i], r[i].size());
    }
  }
  for (const auto& r : rows) {
    std::string line = indent;
    for (size_t i = 0; i < r.size(); ++i) {
      size_t pad = w[i] - r[i].size();
      bool last = i + 1 == r.size();
      if (right[i])
        line += std::string(pad, ' ') + r[i];
      else
        line += r[i] + (last ? "" : std::string(pad, ' '));
      if (!last) line += "  ";
    }
    os << line << "\n";
  }
}

void PrintRefSummary(std::ostream& os, const std::vector<const catalog::RefInfo*>& refs) {
  std::vector<std::vector<std::string>> rows = {
      {"REF", "SHAPE", "MANIFEST", "LAYERS", "RECORDS", "SIZE", "CREATED"}};
  for (const auto* r : refs) {
    rows.push_back({backends::EncodeRefName(r->name), r->shape.empty() ? "?" : r->shape,
                    Short(r->descriptor.digest), std::to_string(r->layers.size()),
                    std::to_string(r->record_count), FormatBytes(r->total_size),
                    DateOrDash(r->created)});
  }
  PrintTable(os, rows, {false, false, false, true, true, true, false}, "");
}

void PrintLayers(std::ostream& os, const catalog::RefInfo& r) {
  os << "\n"
     << (r.history ? "history " : "ref ") << backends::EncodeRefName(r.name) << ": "
     << (r.shape.empty() ? "unreadable" : r.shape) << " " << r.descriptor.digest.ToString()
     << ", config " << Short(r.config.digest) << ", " << r.record_count << " records\n";
  if (r.layers.empty()) return;
  std::vector<std::vector<std::string>> rows = {
      {"POS", "BLOB", "SIZE", "COMPRESSION", "CREATED", "PARENT", "MEDIA TYPE"}};
  char pos[16], parent[16];
  for (const auto& l : r.layers) {
    std::snprintf(pos, sizeof pos, "%03lld", static_cast<long long>(l.position));
    if (l.parent < 0)
      std::snprintf(parent, sizeof parent, "-");
    else
      std::snprintf(parent, sizeof parent, "%03lld", static_cast<long long>(l.parent));
    std::string size = l.size < 0 ? "?" : std::to_string(l.size);
    if (!l.present) size += " (missing)";
    rows.push_back({pos, Short(l.blob), size, l.compression, DateOrDash(l.created), parent,
                    l.media_type.empty() ? "-" : l.media_type});
  }
  PrintTable(os, rows, {false, false, true, false, false, false, false}, "  ");
}

void PrintFormatBytes(const catalog::SourceInfo& info,
                      const std::vector<const catalog::RefInfo*>& refs,
                      const std::vector<const catalog::RefInfo*>& history) {
  std::ostream& os = std::cout;
  os << "source " << info.name << " (" << info.location << "): " << info.refs.size() << " refs, "
     << info.blob_count << " blobs, " << FormatBytes(info.blob_bytes);
  if (info.unreferenced_count > 0) {
    os << "; " << info.unreferenced_count << " blobs (" << FormatBytes(info.unreferenced_bytes)
       << ") no ref reaches";
  }
  os << "\n\n";
  if (!refs.empty()) PrintRefSummary(os, refs);
  for (const auto* r : refs) PrintLayers(os, *r);
  if (!history.empty()) {
    os << "\nHISTORY: cache manifests in blobs/ that no ref reaches\n";
    PrintRefSummary(os, history);
  }
  std::vector<std::string> warnings = info.warnings, errors = info.errors;
  for (const auto* list : {&refs, &history}) {
    for (const auto* r : *list) {
      for (const auto& w : r->warnings)
        warnings.push_back(backends::EncodeRefName(r->name) + ": " + w);
      for (const auto& e : r->errors) errors.push_back(backends::EncodeRefName(r->name) + ": " + e);
    }
  }
  if (!warnings.empty()) {
    os << "\nWARNINGS\n";
    for (const auto& w : warnings) os << "  " << w << "\n";
  }
  if (!errors.empty()) {
    os << "\nERRORS\n";
    for (const auto& e : errors) os << "  " << e << "\n";
  }
}

// Prints every path under the source's folder, depth first, like `find -ls`:
// mode, size, path, and " -> target" for symlinks.
void PrintTree(tree::Tree& t, const std::string& source) {
  auto top = t.Resolve(source);
  if (!top.ok()) return;
  std::vector<std::pair<std::string, tree::Attr>> stack = {{source, *top}};
  while (!stack.empty()) {
    auto [path, a] = stack.back();
    stack.pop_back();
    const char type = a.kind == tree::Kind::kDir ? 'd' : a.kind == tree::Kind::kSymlink ? 'l' : '-';
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", a.mode);
    std::cout << type << mode << " " << std::setw(10) << a.size << "  " << path;
    if (a.kind == tree::Kind::kSymlink) {
      if (auto target = t.ReadLink(a.ino); target.ok()) std::cout << " -> " << *target;
    }
    std::cout << "\n";
    if (a.kind != tree::Kind::kDir) continue;
    auto children = t.ReadDir(a.ino);
    if (!children.ok()) continue;
    for (auto it = children->rbegin(); it != children->rend(); ++it) {
      stack.push_back({path + "/" + it->name, it->attr});
    }
  }
}

}  // namespace

int RunLs(const std::vector<std::string>& argv) {
  auto args = ParseArgs(argv, {"--format", "--state-dir", "--log-level"}, {"--tree"});
  if (!args.ok()) {
    std::cerr << "buildcachefs ls: " << args.status().message() << "\n\n" << kLsHelp;
    return kExitUsage;
  }
  if (args->help) {
    std::cout << kLsHelp;
    return kExitOk;
  }
  if (args->positional.empty() || args->positional.size() > 2) {
    std::cerr << "buildcachefs ls: want SOURCE [REF]\n\n" << kLsHelp;
    return kExitUsage;
  }
  log::Level level = log::Level::kWarning;
  if (args->options.count("--log-level") && !log::ParseLevel(args->Option("--log-level"), &level)) {
    std::cerr << "buildcachefs ls: unknown log level \"" << args->Option("--log-level") << "\"\n";
    return kExitUsage;
  }
  log::SetLevel(level);
  const std::string format = args->Option("--format", "table");
  if (format != "table" && format != "json") {
    std::cerr << "buildcachefs ls: unknown format \"" << format << "\" (want table or json)\n";
    return kExitUsage;
  }
  auto spec = backends::ParseSourceString(args->positional[0]);
  if (!spec.ok()) {
    std::cerr << "buildcachefs ls: " << spec.status().message() << "\n";
    return kExitUsage;
  }
  if (!spec->ignored_keys.empty()) {
    std::string keys;
    for (const auto& k : spec->ignored_keys) keys += (keys.empty() ? "" : ", ") + k;
    LOG_WARNING("source " << spec->Redacted() << ": ignoring export-only keys: " << keys);
  }
  auto names = backends::AssignSourceNames({*spec});
  if (!names.ok()) {
    std::cerr << "buildcachefs ls: " << names.status().message() << "\n";
    return kExitUsage;
  }
  auto backend = backends::OpenBackend(*spec);
  if (!backend.ok()) {
    std::cerr << "buildcachefs ls: " << backend.status().message() << "\n";
    return kExitErrors;
  }
  catalog::SourceInfo info = catalog::ReadSource(**backend, (*names)[0],
                                                 std::string(backends::SourceTypeName(spec->type)));

  std::vector<const catalog::RefInfo*> refs, history;
  const std::string want = args->positional.size() > 1 ? args->positional[1] : "";
  auto match = [&](const catalog::RefInfo& r) {
    return want.empty() || r.name == want || backends::EncodeRefName(r.name) == want;
  };
  for (const auto& r : info.refs) {
    if (match(r)) refs.push_back(&r);
  }
  for (const auto& r : info.history) {
    if (match(r)) history.push_back(&r);
  }
  if (!want.empty() && refs.empty() && history.empty()) {
    std::cerr << "buildcachefs ls: source " << info.name << " has no ref \"" << want << "\"\n";
    return kExitErrors;
  }

  if (args->options.count("--state-dir")) {
    const std::string db = paths::IndexDb(args->Option("--state-dir"));
    auto idx = index::Index::Open(db);
    Status st = idx.ok() ? (*idx)->ReplaceSource(catalog::ToSnapshot(
                               info, std::chrono::duration_cast<std::chrono::nanoseconds>(
                                         std::chrono::system_clock::now().time_since_epoch())
                                         .count()))
                         : idx.status();
    if (!st.ok()) {
      std::cerr << "buildcachefs ls: " << st.message() << "\n";
      return kExitErrors;
    }
  }

  if (args->flags.count("--tree")) {
    const bool errors = info.HasErrors();
    std::vector<tree::SourceInput> in;
    in.push_back({info.name, std::move(*backend), std::move(info)});
    auto t = tree::Tree::Build(std::move(in), nullptr);
    if (!t.ok()) {
      std::cerr << "buildcachefs ls: " << t.status().message() << "\n";
      return kExitErrors;
    }
    PrintTree(**t, (*names)[0]);
    return errors ? kExitErrors : kExitOk;
  }
  if (format == "json") {
    PrintJson(info, refs, history);
  } else {
    PrintFormatBytes(info, refs, history);
  }
  return info.HasErrors() ? kExitErrors : kExitOk;
}

}  // namespace bcfs::cli
