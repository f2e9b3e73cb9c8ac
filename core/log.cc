#include "core/log.h"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>

namespace bcfs::log {
namespace {
std::atomic<Level> g_level{Level::kInfo};
}

void SetLevel(Level level) { g_level = level; }
Level GetLevel() { return g_level; }

bool ParseLevel(std::string_view text, Level* out) {
  if (text == "debug")
    *out = Level::kDebug;
  else if (text == "info")
    *out = Level::kInfo;
  else if (text == "warning" || text == "warn")
    *out = Level::kWarning;
  else if (text == "error")
    *out = Level::kError;
  else
    return false;
  return true;
}

bool StderrIsJournal() {
  const char* js = std::getenv("JOURNAL_STREAM");
  if (js == nullptr) return false;
  uintmax_t dev = 0, ino = 0;
  char rest = 0;
  if (std::sscanf(js, "%ju:%ju%c", &dev, &ino, &rest) != 2) return false;
  struct stat st {};
  return ::fstat(STDERR_FILENO, &st) == 0 && static_cast<uintmax_t>(st.st_dev) == dev &&
         static_cast<uintmax_t>(st.st_ino) == ino;
}

void Write(Level level, std::string_view message) {
  static const char* const kNames[] = {"debug", "info", "warning", "error"};
  // sd-daemon.h's SD_DEBUG, SD_INFO, SD_WARNING, SD_ERR.
  static const char* const kPriorities[] = {"<7>", "<6>", "<4>", "<3>"};
  std::string line;
  if (StderrIsJournal()) {
    // journald takes the priority from the prefix and adds its own time and
    // identifier.
    line = kPriorities[static_cast<int>(level)];
  } else {
    line = "buildcachefs: ";
    line += kNames[static_cast<int>(level)];
    line += ": ";
  }
  line += message;
  line += '\n';
  size_t off = 0;
  while (off < line.size()) {
    ssize_t n = ::write(STDERR_FILENO, line.data() + off, line.size() - off);
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
}

}  // namespace bcfs::log
