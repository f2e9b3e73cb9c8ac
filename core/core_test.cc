#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "core/digest.h"
#include "core/log.h"
#include "core/status.h"
#include "core/strings.h"
#include "core/time.h"
#include "core/units.h"

namespace bcfs {
namespace {

TEST(Digest, ParsesSha256AndRejectsMalformedTextNamingIt) {
  auto d = Digest::Parse("sha256:4f4fb700ef54461cfa02571ae0db9a0dc1e0cdb5577484a6d75e68dc38e8acc1");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->algorithm(), "sha256");
  EXPECT_EQ(d->ShortHex(), "4f4fb700ef54");
  EXPECT_EQ(d->ToString(),
            "sha256:4f4fb700ef54461cfa02571ae0db9a0dc1e0cdb5577484a6d75e68dc38e8acc1");

  auto upper =
      Digest::Parse("sha256:4F4FB700EF54461CFA02571AE0DB9A0DC1E0CDB5577484A6D75E68DC38E8ACC1");
  ASSERT_FALSE(upper.ok());
  EXPECT_EQ(upper.status().code(), Code::kCorrupt);
  EXPECT_NE(upper.status().message().find("lower-case hex"), std::string::npos);
  EXPECT_FALSE(Digest::Parse("sha256:abc").ok());
  EXPECT_FALSE(Digest::Parse("4f4fb700").ok());
  auto md5 = Digest::Parse("md5:d41d8cd98f00b204e9800998ecf8427e");
  ASSERT_FALSE(md5.ok());
  EXPECT_NE(md5.status().message().find("\"md5\""), std::string::npos);
}

TEST(Digest, Sha256MatchesKnownVectorsIncrementally) {
  EXPECT_EQ(Digest::Sha256Of("").hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  Sha256 h;
  h.Update("a");
  h.Update("bc");
  EXPECT_EQ(h.Finish().hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Time, ParsesGoRfc3339WithNanosecondsAndOffsets) {
  auto t = ParseRfc3339("2025-08-13T10:49:19.455017895Z");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(*t, 1755082159455017895LL);
  EXPECT_EQ(FormatRfc3339(*t), "2025-08-13T10:49:19.455017895Z");
  auto off = ParseRfc3339("2025-08-13T12:49:19.5+02:00");
  ASSERT_TRUE(off.ok());
  EXPECT_EQ(*off, 1755082159500000000LL);
  EXPECT_EQ(FormatRfc3339(*off), "2025-08-13T10:49:19.5Z");
  EXPECT_EQ(*ParseRfc3339("0001-01-01T00:00:00Z"), 0);
  EXPECT_EQ(FormatRfc3339(0), "");
  EXPECT_FALSE(ParseRfc3339("2025-08-13 10:49:19Z").ok());
  EXPECT_FALSE(ParseRfc3339("2025-13-13T10:49:19Z").ok());
  EXPECT_FALSE(ParseRfc3339("2025-08-13T10:49:19").ok());
  auto far = ParseRfc3339("9999-12-31T23:59:59Z");
  ASSERT_FALSE(far.ok());
  EXPECT_EQ(far.status().message(), "\"9999-12-31T23:59:59Z\" is outside the years 1678-2261");
}

TEST(Status, ContextChainsKeepCodeAndForeignError) {
  Status s = ErrnoError(2, "open index.json").WithContext("list refs of demo");
  EXPECT_EQ(s.code(), Code::kNotFound);
  EXPECT_EQ(s.foreign(), 2);
  EXPECT_EQ(s.message(), "list refs of demo: open index.json: No such file or directory");
  Result<int> r = s;
  EXPECT_FALSE(r.ok());
  Result<int> bad = OkStatus();
  EXPECT_EQ(bad.status().code(), Code::kInternal);
}

TEST(Units, FormatBytesUsesBinaryUnitsWithOneDecimal) {
  EXPECT_EQ(FormatBytes(0), "0 B");
  EXPECT_EQ(FormatBytes(1023), "1023 B");
  EXPECT_EQ(FormatBytes(1024), "1.0 KiB");
  EXPECT_EQ(FormatBytes(1237213), "1.2 MiB");
  EXPECT_EQ(FormatBytes(3ull << 30), "3.0 GiB");
}

// What log::Write puts on stderr while stderr is a temporary file; with
// `journal` $JOURNAL_STREAM names that file (as systemd sets it).
std::string LogLinesTo(bool journal, const std::string& stream_value = "") {
  char path[] = "/tmp/bcfs-log-XXXXXX";
  const int fd = ::mkstemp(path);
  const int saved = ::dup(STDERR_FILENO);
  ::dup2(fd, STDERR_FILENO);
  struct stat st {};
  ::fstat(fd, &st);
  const std::string value = !stream_value.empty()
                                ? stream_value
                                : std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
  if (journal) ::setenv("JOURNAL_STREAM", value.c_str(), 1);
  const bool detected = log::StderrIsJournal();
  log::Write(log::Level::kError, "e1");
  log::Write(log::Level::kWarning, "w1");
  log::Write(log::Level::kInfo, "i1");
  log::Write(log::Level::kDebug, "d1");
  ::unsetenv("JOURNAL_STREAM");
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  ::close(fd);
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  ::unlink(path);
  return (detected ? "journal\n" : "plain\n") + ss.str();
}

TEST(Log, PrefixesSdDaemonPrioritiesOnlyWhenStderrIsTheJournal) {
  EXPECT_EQ(LogLinesTo(/*journal=*/true), "journal\n<3>e1\n<4>w1\n<6>i1\n<7>d1\n");
  EXPECT_EQ(LogLinesTo(/*journal=*/false),
            "plain\nbuildcachefs: error: e1\nbuildcachefs: warning: w1\n"
            "buildcachefs: info: i1\nbuildcachefs: debug: d1\n");
  // $JOURNAL_STREAM naming another file (stderr was redirected since): plain.
  EXPECT_EQ(LogLinesTo(/*journal=*/true, "1:2"),
            "plain\nbuildcachefs: error: e1\nbuildcachefs: warning: w1\n"
            "buildcachefs: info: i1\nbuildcachefs: debug: d1\n");
  EXPECT_EQ(LogLinesTo(/*journal=*/true, "garbage").substr(0, 6), "plain\n");
}

TEST(Strings, AsciiLowerAndTrimTouchOnlyAscii) {
  EXPECT_EQ(AsciiLower("X-Ms-Date: \xC3\x84"
                       "B"),
            "x-ms-date: \xC3\x84"
            "b");
  EXPECT_EQ(TrimAscii(" \t\r\n\v\f key = v \r\n"), "key = v");
  EXPECT_EQ(TrimAscii(" \t "), "");
  EXPECT_EQ(TrimAscii(""), "");
}

}  // namespace
}  // namespace bcfs
