// type=gha caches: not built yet (issue 9).

#include "backends/backend.h"

namespace bcfs::backends {

Result<std::unique_ptr<Backend>> OpenGhaBackend(const SourceSpec& spec) {
  return UnsupportedError("source " + spec.Redacted() +
                          ": type=gha sources are not supported by this build yet");
}

}  // namespace bcfs::backends
