// `buildcachefs verify SOURCE [REF] [--presence-only] [--format table|json]`:
// is every blob a cache's refs reach present and intact? (issue 6)

#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <vector>

#include "backends/naming.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "cli/lifecycle_util.h"
#include "core/log.h"
#include "core/units.h"

namespace bcfs::cli {
namespace {

using OJson = nlohmann::ordered_json;

constexpr char kVerifyHelp[] =
    R"(Usage: buildcachefs verify SOURCE [REF] [--presence-only] [--format table|json]

Checks that every blob the refs of a BuildKit cache reach (manifest, cache
config, layers; with no REF also the history entries: cache manifests in
blobs/ that no ref reaches) is present with its descriptor's size and, unless
--presence-only, intact: the sha256 of all its bytes, read from the source in
large ranges, equals its digest. Each problem is printed with the ref, the
blob, its role and what is wrong (missing, size, corrupt, unreadable).

SOURCE is the CSV given to `docker buildx build --cache-from`, e.g.
  type=local,src=/var/cache/buildkit   type=registry,ref=host/app/cache:main
REF checks one ref (or history entry) only: its raw name, folder name or @<hex12>.

Options:
  --presence-only       stat the blobs (size included) without reading them
  --format table|json   lines for people (default) or JSON for scripts
  --log-level LEVEL     debug, info, warning (default), error
  -h, --help            this text

Exit status: 0 every blob present and intact, 1 a problem was found (or the
source could not be read), 2 usage error.
)";

constexpr size_t kReadChunk = 8u << 20;

struct Outcome {
  std::string problem;  // "" when fine: missing, size, corrupt, unreadable
  std::string detail;
};

struct Problem {
  std::string ref;  // "" for source-level problems
  bool history = false;
  RefBlob blob;
  bool has_blob = false;
  Outcome outcome;
};

Outcome CheckBlob(backends::Backend& backend, const RefBlob& b, bool contents) {
  auto st = backend.StatBlob(b.digest);
  if (!st.ok()) {
    if (st.status().code() == Code::kNotFound) return {"missing", "missing from the source"};
    return {"unreadable", "cannot stat it: " + st.status().message()};
  }
  if (st->size != b.size) {
    return {"size", "is " + std::to_string(st->size) + " bytes but its descriptor says " +
                        std::to_string(b.size)};
  }
  if (!contents) return {};
  if (b.role == BlobRole::kManifest) {
    // A registry serves manifests under /manifests/ only: ReadDocument knows
    // where to look, and checks the digest.
    auto text = backend.ReadDocument(b.digest, b.size);
    if (text.ok()) return {};
    if (text.status().code() == Code::kCorrupt) {
      return {"corrupt", "its bytes do not match its digest (" + text.status().message() + ")"};
    }
    return {"unreadable", text.status().message()};
  }
  if (b.digest.algorithm() != "sha256") {
    return {"unreadable", "cannot check a " + b.digest.algorithm() + " digest"};
  }
  Sha256 hash;
  std::vector<char> buf(static_cast<size_t>(std::min<uint64_t>(kReadChunk, b.size)));
  uint64_t off = 0;
  while (off < b.size) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), b.size - off));
    auto n = backend.ReadBlob(b.digest, off, std::span<char>(buf.data(), want));
    if (!n.ok())
      return {"unreadable", "read at " + std::to_string(off) + ": " + n.status().message()};
    if (*n == 0) {
      return {"size", "ends at " + std::to_string(off) + " bytes, before its descriptor's size " +
                          std::to_string(b.size)};
    }
    hash.Update(buf.data(), *n);
    off += *n;
  }
  Digest got = hash.Finish();
  if (got != b.digest) return {"corrupt", "its bytes hash to " + got.ToString()};
  return {};
}

std::string Where(const RefBlob& b) {
  std::string s = BlobRoleName(b.role);
  if (b.role == BlobRole::kLayer) s += " " + std::to_string(b.position);
  return s;
}

}  // namespace

int RunVerify(const std::vector<std::string>& argv) {
  auto args = ParseArgs(argv, {"--format", "--log-level"}, {"--presence-only"});
  if (!args.ok()) {
    std::cerr << "buildcachefs verify: " << args.status().message() << "\n\n" << kVerifyHelp;
    return kExitUsage;
  }
  if (args->help) {
    std::cout << kVerifyHelp;
    return kExitOk;
  }
  if (args->positional.empty() || args->positional.size() > 2) {
    std::cerr << "buildcachefs verify: want SOURCE [REF]\n\n" << kVerifyHelp;
    return kExitUsage;
  }
  if (!ApplyLogLevel("verify", args->Option("--log-level"))) return kExitUsage;
  const std::string format = args->Option("--format", "table");
  if (format != "table" && format != "json") {
    std::cerr << "buildcachefs verify: unknown format \"" << format << "\" (want table or json)\n";
    return kExitUsage;
  }
  const bool contents = !args->flags.count("--presence-only");
  auto named = ParseSources({args->positional[0]});
  if (!named.ok()) {
    std::cerr << "buildcachefs verify: " << named.status().message() << "\n";
    return kExitUsage;
  }
  auto src = OpenSource((*named)[0]);
  if (!src.ok()) {
    std::cerr << "buildcachefs verify: " << src.status().message() << "\n";
    return kExitErrors;
  }
  const catalog::SourceInfo& info = src->info;
  const std::string want = args->positional.size() > 1 ? args->positional[1] : "";
  std::vector<const catalog::RefInfo*> refs = SelectRefs(info, want, true);
  if (!want.empty() && refs.empty()) {
    std::cerr << "buildcachefs verify: source " << info.name << " has no ref \"" << want << "\"\n";
    return kExitErrors;
  }

  std::vector<Problem> problems;
  for (const auto& e : info.errors) problems.push_back({"", false, {}, false, {"unreadable", e}});
  std::map<Digest, Outcome> checked;  // each blob is read once, however many refs reach it
  uint64_t bytes = 0;
  for (const auto* r : refs) {
    const std::string ref = backends::EncodeRefName(r->name);
    bool found = false;
    for (const RefBlob& b : RefBlobs(*r)) {
      auto it = checked.find(b.digest);
      if (it == checked.end()) {
        LOG_INFO("verify " << b.digest.ToString() << " (" << b.size << " bytes)");
        it = checked.emplace(b.digest, CheckBlob(*src->backend, b, contents)).first;
        bytes += b.size;
      }
      if (!it->second.problem.empty()) {
        problems.push_back({ref, r->history, b, true, it->second});
        found = true;
      }
    }
    // What the blob checks cannot see (an unparsable document, a config of the
    // wrong kind): the catalog's own errors for the ref.
    if (!found) {
      for (const auto& e : r->errors)
        problems.push_back({ref, r->history, {}, false, {"unreadable", e}});
    }
  }

  if (format == "json") {
    OJson j;
    j["source"] = {{"name", info.name}, {"type", info.type}, {"location", info.location}};
    OJson rj = OJson::array();
    for (const auto* r : refs) rj.push_back({{"name", r->name}, {"history", r->history}});
    j["refs"] = rj;
    j["checked"] = {{"blobs", checked.size()}, {"bytes", bytes}, {"contents", contents}};
    OJson pj = OJson::array();
    for (const auto& p : problems) {
      OJson o;
      o["ref"] = p.ref.empty() ? OJson(nullptr) : OJson(p.ref);
      o["history"] = p.history;
      o["blob"] = p.has_blob ? OJson(p.blob.digest.ToString()) : OJson(nullptr);
      o["role"] = p.has_blob ? OJson(BlobRoleName(p.blob.role)) : OJson(nullptr);
      o["position"] =
          p.has_blob && p.blob.role == BlobRole::kLayer ? OJson(p.blob.position) : OJson(nullptr);
      o["size"] = p.has_blob ? OJson(p.blob.size) : OJson(nullptr);
      o["problem"] = p.outcome.problem;
      o["detail"] = p.outcome.detail;
      pj.push_back(o);
    }
    j["problems"] = pj;
    j["ok"] = problems.empty();
    std::cout << j.dump(2, ' ', false, OJson::error_handler_t::replace) << "\n";
  } else {
    for (const auto& p : problems) {
      std::string who =
          p.ref.empty() ? "source " + info.name : (p.history ? "history " : "ref ") + p.ref;
      if (p.has_blob) {
        std::cout << who << ": " << Where(p.blob) << " " << p.blob.digest.ToString() << ": "
                  << p.outcome.problem << ": " << p.outcome.detail << "\n";
      } else {
        std::cout << who << ": " << p.outcome.detail << "\n";
      }
    }
    size_t hist = 0;
    for (const auto* r : refs) hist += r->history ? 1 : 0;
    std::cout << "verify " << info.name << ": " << refs.size() - hist
              << (refs.size() - hist == 1 ? " ref, " : " refs, ");
    if (hist > 0) std::cout << hist << (hist == 1 ? " history entry, " : " history entries, ");
    std::cout << checked.size() << " blobs (" << FormatBytes(bytes) << ") checked: ";
    if (problems.empty()) {
      std::cout << (contents ? "all present and intact\n"
                             : "all present with the right sizes (contents not read: "
                               "--presence-only)\n");
    } else {
      std::cout << problems.size() << (problems.size() == 1 ? " problem\n" : " problems\n");
    }
  }
  return problems.empty() ? kExitOk : kExitErrors;
}

}  // namespace bcfs::cli
