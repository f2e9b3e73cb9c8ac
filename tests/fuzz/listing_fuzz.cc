// libFuzzer target: the XML listings object stores send: S3 ListObjectsV2
// results and error documents (backends/backend_s3.h), Azure List Blobs
// EnumerationResults (backends/azblob_config.h), their entity decoding
// (backends/xml_text.h) and HTTP dates. A page that parses is written back
// as the service would write it and must parse to the same entries.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "backends/azblob_config.h"
#include "backends/azure_auth.h"
#include "backends/backend_s3.h"
#include "backends/xml_text.h"
#include "core/time.h"

using namespace bcfs;
using namespace bcfs::backends;

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

std::string Escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '&') {
      out += "&amp;";
    } else if (c == '<') {
      out += "&lt;";
    } else if (c == '>') {
      out += "&gt;";
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);

  // Decoding never grows the text, and undoes escaping.
  Check(XmlUnescape(text).size() <= size);
  Check(XmlUnescape(Escape(text)) == text);

  if (auto page = s3::ParseListObjectsV2(text); page.ok()) {
    std::string xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult>";
    for (const auto& o : page->objects) {
      xml +=
          "<Contents><Key>" + Escape(o.key) + "</Key><Size>" + std::to_string(o.size) + "</Size>";
      if (o.mtime != 0) xml += "<LastModified>" + FormatRfc3339(o.mtime) + "</LastModified>";
      xml += "</Contents>";
    }
    xml += std::string("<IsTruncated>") + (page->truncated ? "true" : "false") + "</IsTruncated>";
    if (!page->next_token.empty()) {
      xml += "<NextContinuationToken>" + Escape(page->next_token) + "</NextContinuationToken>";
    }
    xml += "</ListBucketResult>";
    auto again = s3::ParseListObjectsV2(xml);
    Check(again.ok() && again->objects.size() == page->objects.size() &&
          again->truncated == page->truncated && again->next_token == page->next_token);
    for (size_t i = 0; i < page->objects.size(); ++i) {
      const auto &x = page->objects[i], &y = again->objects[i];
      Check(x.key == y.key && x.size == y.size && x.mtime == y.mtime);
    }
  }
  (void)s3::ParseErrorDoc(text);
  (void)s3::ParseHttpDate(std::string(text));

  if (auto page = ParseBlobList(text); page.ok()) {
    std::string xml =
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><EnumerationResults ContainerName=\"c\"><Blobs>";
    for (const auto& b : page->blobs) {
      xml += "<Blob><Name>" + Escape(b.name) + "</Name><Properties><Content-Length>" +
             std::to_string(b.size) + "</Content-Length></Properties></Blob>";
    }
    xml +=
        "</Blobs><NextMarker>" + Escape(page->next_marker) + "</NextMarker></EnumerationResults>";
    auto again = ParseBlobList(xml);
    Check(again.ok() && again->blobs.size() == page->blobs.size() &&
          again->next_marker == page->next_marker);
    for (size_t i = 0; i < page->blobs.size(); ++i) {
      Check(page->blobs[i].name == again->blobs[i].name &&
            page->blobs[i].size == again->blobs[i].size);
    }
  }
  if (auto t = ParseAzureHttpDate(text); t.ok()) (void)FormatRfc3339(TimeNs(*t) * 1000000000);
  return 0;
}
