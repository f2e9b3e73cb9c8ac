#include "core/status.h"

#include <cerrno>
#include <cstring>

namespace bcfs {

std::string_view CodeName(Code code) {
  switch (code) {
    case Code::kOk:
      return "ok";
    case Code::kNotFound:
      return "not found";
    case Code::kInvalidArgument:
      return "invalid argument";
    case Code::kCorrupt:
      return "corrupt";
    case Code::kIo:
      return "I/O error";
    case Code::kPermissionDenied:
      return "permission denied";
    case Code::kUnavailable:
      return "unavailable";
    case Code::kUnsupported:
      return "unsupported";
    case Code::kAlreadyExists:
      return "already exists";
    case Code::kNoSpace:
      return "no space";
    case Code::kReadOnly:
      return "read-only";
    case Code::kInternal:
      return "internal error";
  }
  return "unknown";
}

Status Status::WithContext(std::string_view context) const {
  if (ok()) return *this;
  std::string m(context);
  m += ": ";
  m += message_;
  return Status(code_, std::move(m), foreign_);
}

std::string Status::ToString() const { return ok() ? std::string("ok") : message_; }

Status ErrnoError(int err, std::string_view what) {
  Code code = Code::kIo;
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      code = Code::kNotFound;
      break;
    case EACCES:
    case EPERM:
      code = Code::kPermissionDenied;
      break;
    case ENOSPC:
    case EDQUOT:
      code = Code::kNoSpace;
      break;
    case EROFS:
      code = Code::kReadOnly;
      break;
    case EEXIST:
      code = Code::kAlreadyExists;
      break;
    default:
      break;
  }
  std::string m(what);
  m += ": ";
  m += std::strerror(err);
  return Status(code, std::move(m), err);
}

void CheckFailed(const char* file, int line, const char* expr) {
  std::cerr << "CHECK failed at " << file << ":" << line << ": " << expr << std::endl;
  std::abort();
}

}  // namespace bcfs
