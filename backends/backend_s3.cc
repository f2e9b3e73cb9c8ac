// type=s3 caches: not built yet (issue 7).

#include "backends/backend.h"

namespace bcfs::backends {

Result<std::unique_ptr<Backend>> OpenS3Backend(const SourceSpec& spec) {
  return UnsupportedError("source " + spec.Redacted() +
                          ": type=s3 sources are not supported by this build yet");
}

}  // namespace bcfs::backends
