#include "fs/errno_map.h"

#include <gtest/gtest.h>

#include <cerrno>

namespace bcfs::fs {
namespace {

TEST(ErrnoMapTest, EachCodeMapsToItsErrno) {
  EXPECT_EQ(ToErrno(Status(Code::kNotFound, "x")), ENOENT);
  EXPECT_EQ(ToErrno(Status(Code::kCorrupt, "x")), EIO);
  EXPECT_EQ(ToErrno(Status(Code::kIo, "x")), EIO);
  EXPECT_EQ(ToErrno(Status(Code::kPermissionDenied, "x")), EACCES);
  EXPECT_EQ(ToErrno(Status(Code::kReadOnly, "x")), EROFS);
  EXPECT_EQ(ToErrno(Status(Code::kUnsupported, "x")), ENOTSUP);
  EXPECT_EQ(ToErrno(Status(Code::kInvalidArgument, "x")), EINVAL);
  EXPECT_EQ(ToErrno(Status(Code::kUnavailable, "x")), EIO);
  EXPECT_EQ(ToErrno(Status(Code::kNoSpace, "x")), ENOSPC);
  EXPECT_EQ(ToErrno(Status(Code::kAlreadyExists, "x")), EEXIST);
  EXPECT_EQ(ToErrno(Status(Code::kInternal, "x")), EIO);
}

TEST(ErrnoMapTest, OkStatusIsNeverASuccessReply) { EXPECT_EQ(ToErrno(OkStatus()), EIO); }

TEST(ErrnoMapTest, IoPassesAForeignErrnoThrough) {
  EXPECT_EQ(ToErrno(Status(Code::kIo, "x", ETIMEDOUT)), ETIMEDOUT);
  EXPECT_EQ(ToErrno(Status(Code::kIo, "x", EMFILE)), EMFILE);
  EXPECT_EQ(ToErrno(ErrnoError(ENXIO, "read")), ENXIO);
}

TEST(ErrnoMapTest, IoWithAForeignCodeThatIsNoErrnoIsEio) {
  EXPECT_EQ(ToErrno(Status(Code::kIo, "x", 0)), EIO);
  EXPECT_EQ(ToErrno(Status(Code::kIo, "x", 10)), EIO);   // SQLITE_IOERR, not ECHILD
  EXPECT_EQ(ToErrno(Status(Code::kIo, "x", 266)), EIO);  // SQLITE_IOERR_READ
  EXPECT_EQ(ToErrno(Status(Code::kIo, "x", 503)), EIO);  // HTTP
  EXPECT_EQ(ToErrno(Status(Code::kIo, "x", -5)), EIO);
  EXPECT_EQ(ToErrno(Status(Code::kIo, "x", EINTR)), EIO);
}

TEST(ErrnoMapTest, TheForeignErrnoOnlyMattersForIo) {
  EXPECT_EQ(ToErrno(Status(Code::kCorrupt, "x", ETIMEDOUT)), EIO);
  EXPECT_EQ(ToErrno(Status(Code::kUnavailable, "x", ECONNRESET)), EIO);
  EXPECT_EQ(ToErrno(ErrnoError(ENOENT, "open")), ENOENT);
  EXPECT_EQ(ToErrno(ErrnoError(EACCES, "open")), EACCES);
}

}  // namespace
}  // namespace bcfs::fs
