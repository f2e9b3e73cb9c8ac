// type=azblob caches: not built yet (issue 7).

#include "backends/backend.h"

namespace bcfs::backends {

Result<std::unique_ptr<Backend>> OpenAzblobBackend(const SourceSpec& spec) {
  return UnsupportedError("source " + spec.Redacted() +
                          ": type=azblob sources are not supported by this build yet");
}

}  // namespace bcfs::backends
