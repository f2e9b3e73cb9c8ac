#include "cli/args.h"

namespace bcfs::cli {

std::string Args::Option(const std::string& name, const std::string& fallback) const {
  auto it = options.find(name);
  return it == options.end() || it->second.empty() ? fallback : it->second.back();
}

Result<Args> ParseArgs(const std::vector<std::string>& argv,
                       const std::set<std::string>& value_options,
                       const std::set<std::string>& flag_options) {
  Args a;
  bool only_positional = false;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& arg = argv[i];
    if (only_positional || arg.size() < 2 || arg[0] != '-') {
      a.positional.push_back(arg);
      continue;
    }
    if (arg == "--") {
      only_positional = true;
      continue;
    }
    if (arg == "-h" || arg == "--help") {
      a.help = true;
      continue;
    }
    std::string name = arg, value;
    bool has_value = false;
    if (size_t eq = arg.find('='); eq != std::string::npos && arg.rfind("--", 0) == 0) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      has_value = true;
    }
    if (value_options.count(name)) {
      if (!has_value) {
        if (i + 1 >= argv.size()) return InvalidArgumentError("option " + name + " needs a value");
        value = argv[++i];
      }
      a.options[name].push_back(value);
    } else if (flag_options.count(name) && !has_value) {
      a.flags.insert(name);
    } else {
      return InvalidArgumentError("unknown option " + name);
    }
  }
  return a;
}

}  // namespace bcfs::cli
