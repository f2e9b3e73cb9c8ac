// buildcachefs-gen: writes a deterministic BuildKit type=local cache directory
// (see gen.h and --help).
#include <iostream>
#include <string>
#include <vector>

#include "tests/gen/gen.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  bcfs::Result<bcfs::gen::ParsedArgs> parsed = bcfs::gen::ParseArgs(args);
  if (!parsed.ok()) {
    std::cerr << "buildcachefs-gen: " << parsed.status().message() << "\n";
    return 1;
  }
  if (parsed->help) {
    std::cout << bcfs::gen::Usage();
    return 0;
  }
  bcfs::Result<std::vector<bcfs::gen::GeneratedRef>> refs = bcfs::gen::Generate(parsed->options);
  if (!refs.ok()) {
    std::cerr << "buildcachefs-gen: " << refs.status().message() << "\n";
    return 1;
  }
  for (const bcfs::gen::GeneratedRef& r : *refs) {
    std::cout << r.name << " " << r.manifest_digest << "\n";
  }
  std::cout.flush();
  if (!std::cout) {
    std::cerr << "buildcachefs-gen: write to stdout failed\n";
    return 1;
  }
  return 0;
}
