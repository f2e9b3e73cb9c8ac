// UTF-8 encoding of code points decoded from escapes (XML character
// references, Go string escapes in GC filters).
//
// Thread-safety: pure function.
#pragma once

#include <cstdint>
#include <string>

namespace bcfs {

// Appends `cp` (at most U+10FFFF; callers check) to `out` as UTF-8.
void AppendUtf8(std::string& out, uint32_t cp);

}  // namespace bcfs
