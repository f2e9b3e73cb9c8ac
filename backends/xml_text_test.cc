// XmlUnescape: the entities and character references of S3 and Azure listings.
#include "backends/xml_text.h"

#include <gtest/gtest.h>

namespace bcfs::backends {
namespace {

TEST(XmlUnescape, DecodesEntitiesAndCharacterReferences) {
  EXPECT_EQ(XmlUnescape("a&amp;b&lt;c&gt;d&quot;e&apos;f"), "a&b<c>d\"e'f");
  EXPECT_EQ(XmlUnescape("&#65;&#x41;&#252;&#x20AC;&#x1F600;"),
            "AA\xC3\xBC\xE2\x82\xAC\xF0\x9F\x98\x80");
  EXPECT_EQ(XmlUnescape("&#9;&#xA;&#13;"), "\t\n\r");
}

TEST(XmlUnescape, ReferencesToCharactersXmlForbidsAreKeptAsText) {
  // Seen writing listing_fuzz: "&#0;" decoded to a NUL byte inside a key, a
  // surrogate or a code point beyond U+10FFFF to invalid UTF-8, and "&#x;",
  // "&#-1;" or "&# 65;" went through strtoul.
  for (const char* kept : {"&#0;", "&#xD800;", "&#x110000;", "&#4294967361;", "&#x;", "&#;",
                           "&#-1;", "&# 65;", "&#65x;", "&#X41;", "&#x1;", "&#xFFFE;"}) {
    EXPECT_EQ(XmlUnescape(kept), kept) << kept;
  }
}

TEST(XmlUnescape, AStrayAmpersandDoesNotSwallowTheNextReference) {
  EXPECT_EQ(XmlUnescape("a&b&amp;c"), "a&b&c");
  EXPECT_EQ(XmlUnescape("&& &amp;"), "&& &");
  EXPECT_EQ(XmlUnescape("tail&"), "tail&");
  EXPECT_EQ(XmlUnescape("&bogus;x"), "&bogus;x");
}

}  // namespace
}  // namespace bcfs::backends
