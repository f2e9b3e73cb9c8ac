// A small command-line parser shared by the subcommands: long options with a
// value (`--format json` or `--format=json`), flags, `-h/--help`, and
// positional arguments. Unknown options are errors naming the option.
//
// Thread-safety: values.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/status.h"

namespace bcfs::cli {

struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::vector<std::string>> options;  // "--format" -> {"json"}
  std::set<std::string> flags;                              // "--help", "-f"
  bool help = false;

  std::string Option(const std::string& name, const std::string& fallback = "") const;
};

// value_options take a value, flag_options do not; "-h"/"--help" are always known.
Result<Args> ParseArgs(const std::vector<std::string>& argv,
                       const std::set<std::string>& value_options,
                       const std::set<std::string>& flag_options);

}  // namespace bcfs::cli
