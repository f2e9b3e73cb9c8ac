// libFuzzer target: the service config file of `buildcachefs mount --config`
// (cli/config.h): TOML with sources, options, intervals and [gc]. Errors are
// kInvalidArgument naming the file; a config that parses has absolute paths
// and parses the same twice.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "cli/config.h"

using namespace bcfs;
using namespace bcfs::cli;

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto c = ParseServiceConfig(text, "fuzz.toml", "/etc/buildcachefs");
  if (!c.ok()) {
    Check(c.status().code() == Code::kInvalidArgument &&
          c.status().message().rfind("fuzz.toml:", 0) == 0);
    return 0;
  }
  Check(c->mountpoint.empty() || c->mountpoint[0] == '/');
  Check(c->state_dir.empty() || c->state_dir[0] == '/');
  Check(c->gc.has_value() || c->gc_text.empty());
  if (c->gc_interval) Check(*c->gc_interval >= 0);
  if (c->refresh_interval) Check(*c->refresh_interval >= 0);
  auto again = ParseServiceConfig(text, "fuzz.toml", "/etc/buildcachefs");
  Check(again.ok() && again->sources == c->sources && again->gc_text == c->gc_text &&
        again->options == c->options && again->mountpoint == c->mountpoint);
  return 0;
}
