// What a TOML value is, in the words error messages use ("expected a string,
// got an integer"): shared by the GC policy parser and the mount config.
//
// Thread-safety: a pure function.
#pragma once

#include <toml++/toml.h>

#include <string_view>

namespace bcfs::gc {

// "a table", "an array", "a string", "an integer", "a float", "a boolean",
// "a date", "a time", "a date-time".
std::string_view TomlTypeName(const toml::node& n);

}  // namespace bcfs::gc
