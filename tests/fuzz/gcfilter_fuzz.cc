// libFuzzer target: GC filters in containerd's syntax (gc/filter.h), from
// policies, pasted buildkitd.toml files and `--filter` flags. The input's lines
// are the strings of one list.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "gc/filter.h"

using namespace bcfs::gc;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // std::regex compiles and matches recursively: a user's own filter of
  // thousands of nested groups exhausting the stack is not what this looks for.
  if (size > 512) return 0;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> lines;
  for (size_t start = 0; start <= text.size();) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    lines.emplace_back(text.substr(start, end - start));
    start = end + 1;
  }
  Item item;
  item.digest = "sha256:" + std::string(64, 'b');
  item.role = Role::kDerived;
  item.sources = {"main", "other"};
  item.refs = {"latest", "feature/x"};
  item.media_type = "application/vnd.oci.image.layer.v1.tar+zstd";
  Item bare;
  for (auto dialect :
       {FilterDialect::kPolicy, FilterDialect::kBuildkitToml, FilterDialect::kCommandLine}) {
    std::vector<std::string> warnings;
    auto f = ParsePolicyFilters(lines, dialect, &warnings);
    if (f.ok()) {
      (void)f->Matches(item);
      (void)f->Matches(bare);
      (void)f->MatchesEverything();
    }
  }
  auto c = ParseCommandLineFilters(lines);
  if (c.ok()) (void)c->filter.Matches(item);
  return 0;
}
