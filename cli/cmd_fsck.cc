// `buildcachefs fsck [--repair]`: checks that the local store, the derived
// copies and the index agree, and with --repair removes what is wrong (it is
// all fetched or made again on demand).

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/digest.h"
#include "core/log.h"
#include "core/paths.h"
#include "index/index.h"
#include "store/content_store.h"
#include "tree/tree.h"

namespace bcfs::cli {
namespace {

using OJson = nlohmann::ordered_json;

constexpr char kFsckHelp[] =
    R"(Usage: buildcachefs fsck [--state-dir DIR] [--repair] [--format table|json]

Checks that the state dir is sound: every complete blob in the content store
hashes to its name; partial fetches have both their data and their record; every
derived uncompressed copy of a layer belongs to an indexed layer, has its size
and matches its block digests; the index database passes SQLite's integrity
check. Stray files are reported too.

With --repair, what is wrong is removed (blobs are fetched again, derived copies
made again, on demand). Repair needs the content store: unmount first.

Options:
  --state-dir DIR       the state dir (default as for mount)
  --repair              remove what is wrong
  --format table|json   lines for people (default) or JSON for scripts
  --log-level LEVEL     debug, info, warning (default), error
  -h, --help            this text

Exit status: 0 sound (or everything repaired), 1 problems remain, 2 usage error.
)";

constexpr uint64_t kDerivedBlock = tree::kDerivedBlockSize;

bool IsHex64(std::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

std::vector<std::string> List(const std::string& dir) {
  std::vector<std::string> out;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != "..") out.push_back(n);
    }
    ::closedir(d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// sha256 of a file, and of each kDerivedBlock of it when `blocks` is set.
Result<Digest> HashFile(const std::string& path, std::string* blocks) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, "open " + path);
  Sha256 whole;
  std::unique_ptr<Sha256> block = std::make_unique<Sha256>();
  uint64_t in_block = 0;
  std::string buf(1 << 20, '\0');
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return ErrnoError(err, "read " + path);
    }
    if (n == 0) break;
    whole.Update(buf.data(), static_cast<size_t>(n));
    if (blocks != nullptr) {
      std::string_view chunk(buf.data(), static_cast<size_t>(n));
      while (!chunk.empty()) {
        size_t take =
            static_cast<size_t>(std::min<uint64_t>(chunk.size(), kDerivedBlock - in_block));
        block->Update(chunk.data(), take);
        in_block += take;
        chunk.remove_prefix(take);
        if (in_block == kDerivedBlock) {
          *blocks += block->Finish().hex();
          block = std::make_unique<Sha256>();
          in_block = 0;
        }
      }
    }
  }
  ::close(fd);
  if (blocks != nullptr && in_block > 0) *blocks += block->Finish().hex();
  return whole.Finish();
}

struct Problem {
  std::string what;  // "corrupt blob", "stray file", ...
  std::string path;
  std::string detail;
  bool repaired = false;
};

}  // namespace

int RunFsck(const std::vector<std::string>& argv) {
  auto args = ParseArgs(argv, {"--state-dir", "--format", "--log-level"}, {"--repair"});
  if (!args.ok()) {
    std::cerr << "buildcachefs fsck: " << args.status().message() << "\n\n" << kFsckHelp;
    return kExitUsage;
  }
  if (args->help) {
    std::cout << kFsckHelp;
    return kExitOk;
  }
  if (!args->positional.empty()) {
    std::cerr << "buildcachefs fsck: unexpected argument \"" << args->positional[0] << "\"\n";
    return kExitUsage;
  }
  const std::string format = args->Option("--format", "table");
  if (format != "table" && format != "json") {
    std::cerr << "buildcachefs fsck: --format must be table or json\n";
    return kExitUsage;
  }
  log::SetLevel(log::Level::kWarning);
  const std::string state = args->Option("--state-dir", paths::DefaultStateDir());
  const bool repair = args->flags.count("--repair") > 0;
  struct stat st {};
  if (::stat(state.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    std::cerr << "buildcachefs fsck: state dir " << state << " does not exist\n";
    return kExitErrors;
  }

  std::vector<Problem> problems;
  auto idx = index::Index::Open(paths::IndexDb(state));
  if (!idx.ok()) {
    problems.push_back({"unusable index", paths::IndexDb(state), idx.status().message()});
  } else {
    auto bad = (*idx)->IntegrityCheck();
    if (!bad.ok()) {
      problems.push_back({"unusable index", paths::IndexDb(state), bad.status().message()});
    } else {
      for (const auto& b : *bad) problems.push_back({"index damage", paths::IndexDb(state), b});
    }
  }

  std::unique_ptr<store::ContentStore> store;
  const store::Layout layout(paths::StoreDir(state));
  if (repair && ::stat(layout.dir().c_str(), &st) == 0) {
    auto opened = store::ContentStore::Open(layout.dir());
    if (!opened.ok()) {
      std::cerr << "buildcachefs fsck: --repair needs the content store: "
                << opened.status().message()
                << (opened.status().code() == Code::kUnavailable ? " (unmount first)" : "") << "\n";
      return kExitErrors;
    }
    store = std::move(*opened);
  }
  auto remove = [&](Problem& p, const Digest* evict) {
    if (!repair) return;
    Status s;
    if (evict != nullptr && store) {
      s = store->Evict(*evict);
    } else if (::unlink(p.path.c_str()) != 0 && errno != ENOENT) {
      s = ErrnoError(errno, "unlink " + p.path);
    }
    if (s.ok())
      p.repaired = true;
    else
      p.detail += " (not repaired: " + s.message() + ")";
  };

  // Complete blobs: each must hash to its name.
  const std::string blob_dir = layout.BlobDir("sha256");
  for (const auto& name : List(blob_dir)) {
    Problem p{"", blob_dir + "/" + name, ""};
    if (!IsHex64(name)) {
      p.what = "stray file";
      p.detail = "not named by a sha256 digest";
      remove(p, nullptr);
      problems.push_back(p);
      continue;
    }
    auto got = HashFile(p.path, nullptr);
    if (!got.ok() || got->hex() != name) {
      p.what = "corrupt blob";
      p.detail = got.ok() ? "its bytes hash to " + got->ToString() : got.status().message();
      auto d = Digest::Parse("sha256:" + name);
      remove(p, d.ok() ? &*d : nullptr);
      problems.push_back(p);
    }
  }
  // Partial fetches: data and record come in pairs.
  const std::string partial_dir = layout.PartialDir("sha256");
  const std::vector<std::string> partial = List(partial_dir);
  for (const auto& name : partial) {
    const bool data = name.ends_with(".data"), ranges = name.ends_with(".ranges");
    const std::string hex = name.substr(0, name.find('.'));
    Problem p{"", partial_dir + "/" + name, ""};
    if ((!data && !ranges) || !IsHex64(hex)) {
      p.what = "stray file";
      p.detail = "not a partial fetch";
    } else {
      const std::string other = hex + (data ? ".ranges" : ".data");
      if (std::binary_search(partial.begin(), partial.end(), other)) continue;
      p.what = "half a partial fetch";
      p.detail = "its " + std::string(data ? "record" : "data") + " file is missing";
    }
    remove(p, nullptr);
    problems.push_back(p);
  }
  // Derived copies: each belongs to an indexed layer and matches its digests.
  const std::string derived_dir = paths::DerivedDir(state) + "/sha256";
  for (const auto& name : List(derived_dir)) {
    Problem p{"", derived_dir + "/" + name, ""};
    if (!IsHex64(name)) {
      p.what = "stray file";
      p.detail = "not named by a layer digest";
    } else if (!idx.ok()) {
      continue;  // cannot tell without the index
    } else {
      auto row = (*idx)->LoadLayerIndex(*Digest::Parse("sha256:" + name));
      std::string blocks;
      if (!row.ok()) {
        p.what = "unchecked derived copy";
        p.detail = row.status().message();
      } else if (!row->has_value() || (*row)->derived_digests.empty()) {
        p.what = "orphaned derived copy";
        p.detail = "no indexed layer claims it";
      } else if (::stat(p.path.c_str(), &st) != 0 ||
                 static_cast<uint64_t>(st.st_size) != (*row)->uncompressed_size) {
        p.what = "damaged derived copy";
        p.detail = "size " + std::to_string(st.st_size) + ", want " +
                   std::to_string((*row)->uncompressed_size);
      } else if (auto h = HashFile(p.path, &blocks); !h.ok() || blocks != (*row)->derived_digests) {
        p.what = "damaged derived copy";
        p.detail = h.ok() ? "its blocks do not match their digests" : h.status().message();
      } else {
        continue;
      }
    }
    remove(p, nullptr);
    problems.push_back(p);
  }

  size_t left = 0;
  for (const auto& p : problems) left += p.repaired ? 0 : 1;
  if (format == "json") {
    OJson list = OJson::array();
    for (const auto& p : problems) {
      list.push_back(
          {{"problem", p.what}, {"path", p.path}, {"detail", p.detail}, {"repaired", p.repaired}});
    }
    OJson out;
    out["state_dir"] = state;
    out["problems"] = list;
    out["remaining"] = left;
    std::cout << out.dump(2) << "\n";
  } else {
    for (const auto& p : problems) {
      std::cout << (p.repaired ? "repaired: " : "") << p.what << ": " << p.path << ": " << p.detail
                << "\n";
    }
    std::cout << state << ": "
              << (problems.empty() ? "sound"
                                   : std::to_string(problems.size()) + " problem" +
                                         (problems.size() == 1 ? "" : "s") + ", " +
                                         std::to_string(left) + " left")
              << "\n";
  }
  return left == 0 ? kExitOk : kExitErrors;
}

}  // namespace bcfs::cli
