// Standard base64 (RFC 4648, padded), as Go encodes []byte in JSON.
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>

#include "core/status.h"

namespace bcfs {

// kCorrupt naming the offending position when text is not padded standard base64.
Result<std::string> Base64Decode(std::string_view text);
std::string Base64Encode(std::string_view bytes);

}  // namespace bcfs
