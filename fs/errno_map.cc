#include "fs/errno_map.h"

#include <cerrno>

namespace bcfs::fs {

bool LooksLikeErrno(int foreign) {
  switch (foreign) {
    // Storage and resources.
    case EIO:
    case ENXIO:
    case ENODEV:
    case ENOMEM:
    case ENFILE:
    case EMFILE:
    case EFBIG:
    case EOVERFLOW:
    case ESTALE:
    case EREMOTEIO:
    case ENAMETOOLONG:
    case ELOOP:
    // Network (remote backends): HTTP statuses never fall in this range
    // because 1xx responses are not errors.
    case ETIMEDOUT:
    case ECONNRESET:
    case ECONNREFUSED:
    case ECONNABORTED:
    case ENETDOWN:
    case ENETUNREACH:
    case ENETRESET:
    case EHOSTDOWN:
    case EHOSTUNREACH:
    case ENOTCONN:
      return true;
    default:
      return false;
  }
}

int ToErrno(const Status& status) {
  switch (status.code()) {
    case Code::kNotFound:
      return ENOENT;
    case Code::kCorrupt:
      return EIO;
    case Code::kIo:
      return LooksLikeErrno(status.foreign()) ? status.foreign() : EIO;
    case Code::kPermissionDenied:
      return EACCES;
    case Code::kReadOnly:
      return EROFS;
    case Code::kUnsupported:
      return ENOTSUP;
    case Code::kInvalidArgument:
      return EINVAL;
    case Code::kUnavailable:
      return EIO;
    case Code::kNoSpace:
      return ENOSPC;
    case Code::kAlreadyExists:
      return EEXIST;
    case Code::kInternal:
    case Code::kOk:
      return EIO;
  }
  return EIO;
}

}  // namespace bcfs::fs
