// Status and Result<T>: the typed errors every module returns.
//
// A Status carries a code, a message that grows a chain of context as it
// travels up ("list refs of local-max-gzip: read index.json: No such file"),
// and the foreign error it came from (errno, HTTP status or SQLite code), so
// the FUSE edge can map it to one errno in one place. Exceptions never cross a
// module boundary; broken invariants abort through BCFS_CHECK.
//
// Thread-safety: values; safe to copy between threads.
#pragma once

#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace bcfs {

enum class Code {
  kOk = 0,
  kNotFound,         // the thing asked for does not exist
  kInvalidArgument,  // bad input from the user: source string, flag, config
  kCorrupt,          // malformed document, wrong digest or size
  kIo,               // the OS failed a call
  kPermissionDenied,
  kUnavailable,  // a server or file that may come back later
  kUnsupported,  // known but not (yet) implemented
  kAlreadyExists,
  kNoSpace,
  kReadOnly,
  kInternal,
};

std::string_view CodeName(Code code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Code code, std::string message, int foreign = 0)
      : code_(code), message_(std::move(message)), foreign_(foreign) {}

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  // The original errno / HTTP status / SQLite code, 0 when none.
  int foreign() const { return foreign_; }

  // Returns a copy whose message is "<context>: <message>".
  Status WithContext(std::string_view context) const;
  std::string ToString() const;

 private:
  Code code_ = Code::kOk;
  std::string message_;
  int foreign_ = 0;
};

inline Status OkStatus() { return Status(); }
inline Status NotFoundError(std::string m) { return Status(Code::kNotFound, std::move(m)); }
inline Status InvalidArgumentError(std::string m) {
  return Status(Code::kInvalidArgument, std::move(m));
}
inline Status CorruptError(std::string m) { return Status(Code::kCorrupt, std::move(m)); }
inline Status UnsupportedError(std::string m) { return Status(Code::kUnsupported, std::move(m)); }
inline Status InternalError(std::string m) { return Status(Code::kInternal, std::move(m)); }
// "<what>: <strerror(err)>", with the code chosen from err (ENOENT is
// kNotFound, EACCES/EPERM kPermissionDenied, ENOSPC kNoSpace, else kIo).
Status ErrnoError(int err, std::string_view what);

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {  // NOLINT
    if (std::get<Status>(v_).ok()) v_ = Status(Code::kInternal, "Result built from an OK status");
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  Status status() const { return ok() ? Status() : std::get<Status>(v_); }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

[[noreturn]] void CheckFailed(const char* file, int line, const char* expr);

}  // namespace bcfs

#define BCFS_CHECK(cond) ((cond) ? (void)0 : ::bcfs::CheckFailed(__FILE__, __LINE__, #cond))

#define BCFS_CONCAT_INNER(a, b) a##b
#define BCFS_CONCAT(a, b) BCFS_CONCAT_INNER(a, b)

#define BCFS_RETURN_IF_ERROR(expr)       \
  do {                                   \
    ::bcfs::Status _bcfs_st = (expr);    \
    if (!_bcfs_st.ok()) return _bcfs_st; \
  } while (0)

#define BCFS_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return tmp.status();              \
  lhs = std::move(tmp).value()

#define BCFS_ASSIGN_OR_RETURN(lhs, expr) \
  BCFS_ASSIGN_OR_RETURN_IMPL(BCFS_CONCAT(_bcfs_res_, __LINE__), lhs, expr)
