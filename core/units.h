// Byte sizes for people ("1.2 MiB": binary units, one decimal).
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>

namespace bcfs {

std::string FormatBytes(uint64_t n);

}  // namespace bcfs
