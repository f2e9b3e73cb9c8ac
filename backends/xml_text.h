// Text content of XML elements as S3 and Azure Blob listings write it.
//
// Thread-safety: pure function.
#pragma once

#include <string>
#include <string_view>

namespace bcfs::backends {

// `s` with the five predefined entities and numeric character references
// (decimal "&#65;" or hex "&#x41;", written out as UTF-8) decoded; anything
// else, including a reference to a character XML does not allow (NUL, a
// surrogate, beyond U+10FFFF) or with stray characters, is kept as is.
std::string XmlUnescape(std::string_view s);

}  // namespace bcfs::backends
