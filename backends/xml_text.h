// Text content of XML elements as S3 and Azure Blob listings write it.
//
// Thread-safety: pure function.
#pragma once

#include <string>
#include <string_view>

namespace bcfs::backends {

// `s` with the five predefined entities and numeric character references
// (decimal or hex, written out as UTF-8) decoded; anything else is kept as is.
std::string XmlUnescape(std::string_view s);

}  // namespace bcfs::backends
