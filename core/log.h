// Logging to stderr with levels. Messages are whole lines written with one
// write(2), so lines from several threads never interleave. Lines read
// "buildcachefs: LEVEL: message"; when stderr is the journal (systemd's
// $JOURNAL_STREAM names stderr's device and inode) they read "<N>message"
// instead, N being sd-daemon.h's priority (SD_ERR 3, SD_WARNING 4, SD_INFO 6,
// SD_DEBUG 7), so journald records each line's priority.
//
// Secrets must never reach the log: callers pass redacted source strings
// (backends/source.h) and never credentials.
//
// Thread-safety: all functions are thread-safe.
#pragma once

#include <sstream>
#include <string>
#include <string_view>

namespace bcfs::log {

enum class Level { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

void SetLevel(Level level);
Level GetLevel();
// Parses "debug", "info", "warning"/"warn", "error"; false when unknown.
bool ParseLevel(std::string_view text, Level* out);
void Write(Level level, std::string_view message);
// True when $JOURNAL_STREAM ("DEV:INO") names the file stderr is now.
bool StderrIsJournal();

}  // namespace bcfs::log

#define BCFS_LOG(level, expr)                                        \
  do {                                                               \
    if (::bcfs::log::Level::level >= ::bcfs::log::GetLevel()) {      \
      std::ostringstream _bcfs_os;                                   \
      _bcfs_os << expr;                                              \
      ::bcfs::log::Write(::bcfs::log::Level::level, _bcfs_os.str()); \
    }                                                                \
  } while (0)
#define LOG_DEBUG(expr) BCFS_LOG(kDebug, expr)
#define LOG_INFO(expr) BCFS_LOG(kInfo, expr)
#define LOG_WARNING(expr) BCFS_LOG(kWarning, expr)
#define LOG_ERROR(expr) BCFS_LOG(kError, expr)
