// Small ASCII string helpers shared by the parsers and signers (HTTP header
// names, INI and connection-string keys): locale-independent on purpose.
#pragma once

#include <string>
#include <string_view>

namespace bcfs {

// `s` with A-Z lowered; other bytes as they are.
std::string AsciiLower(std::string_view s);

// `s` without leading and trailing ASCII whitespace (space, \t, \n, \v, \f, \r).
std::string TrimAscii(std::string_view s);

}  // namespace bcfs
