#include "formats/compression.h"

#include <gtest/gtest.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "core/digest.h"
#include "formats/estargz.h"
#include "formats/oci.h"
#include "tests/testing.h"

namespace bcfs::formats {
namespace {

std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string out(n, '\0');
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = rng();
    std::memcpy(out.data() + i, &v, std::min<size_t>(8, n - i));
  }
  return out;
}

// Text shaped like a `tar -tv` listing: compresses well, long matches.
std::string TarishText(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  static const char* kDirs[] = {"usr/lib/x86_64-linux-gnu", "usr/share/doc", "etc/ssl/certs",
                                "var/lib/dpkg/info", "opt/app/node_modules/left-pad"};
  std::string out;
  while (out.size() < n) {
    out += "-rw-r--r-- root/root ";
    out += std::to_string(rng() % 100000);
    out += " 2025-08-13 10:49 ";
    out += kDirs[rng() % 5];
    out += "/file-" + std::to_string(rng() % 5000) + ".txt\n";
  }
  out.resize(n);
  return out;
}

std::string Gzip(std::string_view data, int level) {
  z_stream s{};
  EXPECT_EQ(deflateInit2(&s, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&s, data.size()), '\0');
  s.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  s.avail_in = static_cast<uInt>(data.size());
  s.next_out = reinterpret_cast<Bytef*>(out.data());
  s.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&s, Z_FINISH), Z_STREAM_END);
  out.resize(s.total_out);
  deflateEnd(&s);
  return out;
}

std::string Zstd(std::string_view data, int level, bool checksum = false) {
  std::string out(ZSTD_compressBound(data.size()), '\0');
  size_t n;
  if (checksum) {
    ZSTD_CCtx* c = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, level);
    ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
    n = ZSTD_compress2(c, out.data(), out.size(), data.data(), data.size());
    ZSTD_freeCCtx(c);
  } else {
    n = ZSTD_compress(out.data(), out.size(), data.data(), data.size(), level);
  }
  EXPECT_FALSE(ZSTD_isError(n)) << ZSTD_getErrorName(n);
  out.resize(n);
  return out;
}

// Records every range read, to prove what a read touched.
class RecordingSource : public ByteSource {
 public:
  explicit RecordingSource(std::string_view data) : mem_(data) {}
  uint64_t size() const override { return mem_.size(); }
  Status ReadAt(uint64_t offset, std::span<char> out) override {
    reads.emplace_back(offset, offset + out.size());
    return mem_.ReadAt(offset, out);
  }
  uint64_t BytesRead() const {
    uint64_t n = 0;
    for (auto [a, b] : reads) n += b - a;
    return n;
  }
  std::vector<std::pair<uint64_t, uint64_t>> reads;

 private:
  MemoryByteSource mem_;
};

struct Built {
  SeekIndex index;
  std::string streamed;
};

Built Build(std::string_view blob, Compression c, uint64_t span = kDefaultSpan) {
  Built b;
  MemoryByteSource src(blob);
  auto index = BuildSeekIndex(
      src, c, "blob b",
      [&](std::string_view chunk) {
        b.streamed.append(chunk);
        return OkStatus();
      },
      span);
  EXPECT_TRUE(index.ok()) << index.status().ToString();
  if (index.ok()) b.index = *index;
  return b;
}

// Reads at random offsets and lengths, and across every seek point, and
// compares each byte with the original.
void CheckReads(std::string_view blob, const SeekIndex& index, std::string_view original,
                uint64_t seed, int count = 60) {
  ASSERT_EQ(index.uncompressed_size, original.size());
  MemoryByteSource src(blob);
  std::mt19937_64 rng(seed);
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (int i = 0; i < count; ++i) {
    uint64_t off = original.empty() ? 0 : rng() % original.size();
    uint64_t len = std::min<uint64_t>(original.size() - off, rng() % (3 * 65536));
    ranges.emplace_back(off, len);
  }
  for (const SeekPoint& p : index.points) {
    uint64_t a = p.out_offset >= 5000 ? p.out_offset - 5000 : 0;
    ranges.emplace_back(a, std::min<uint64_t>(original.size() - a, 10000));
    ranges.emplace_back(p.out_offset, std::min<uint64_t>(original.size() - p.out_offset, 1));
  }
  ranges.emplace_back(0, std::min<uint64_t>(original.size(), 100));
  ranges.emplace_back(original.size() - std::min<uint64_t>(original.size(), 100),
                      std::min<uint64_t>(original.size(), 100));
  for (auto [off, len] : ranges) {
    std::string got(len, '\0');
    Status st = ReadUncompressed(src, index, off, std::span<char>(got));
    ASSERT_TRUE(st.ok()) << "read [" << off << ", +" << len << "): " << st.ToString();
    ASSERT_TRUE(got == original.substr(off, len))
        << "bytes differ in [" << off << ", +" << len << ")";
  }
}

uint64_t OffsetIn(const std::string& message) {
  const std::string key = "compressed offset ";
  size_t p = message.find(key);
  if (p == std::string::npos) return UINT64_MAX;
  return std::stoull(message.substr(p + key.size()));
}

// --- detection -------------------------------------------------------------

TEST(DetectCompression, FollowsBuildKitsOrder) {
  std::string text = TarishText(5000, 1);
  struct Case {
    std::string blob;
    Compression want;
  } cases[] = {
      {Gzip(text, 6), Compression::kGzip},
      {Zstd(text, 3), Compression::kZstd},
      {text, Compression::kUncompressed},
      {"", Compression::kUncompressed},
      {"\x1f\x8b", Compression::kUncompressed},  // magic needs 3 bytes
      {std::string("\x1f\x8b\x07rest", 7), Compression::kUncompressed},
      {std::string("\x28\xb5\x2f", 3), Compression::kUncompressed},
  };
  for (const Case& c : cases) {
    MemoryByteSource src(c.blob);
    auto got = DetectCompression(src);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(*got, c.want) << CompressionName(c.want) << " for " << c.blob.size() << " bytes";
  }
}

TEST(DetectCompression, EstargzFooterWinsOverTheGzipMagic) {
  // A gzip member followed by a 51-byte footer member, as eStargz ends.
  std::string footer("\x1f\x8b\x08\x04\0\0\0\0\0\xff\x1a\0SG\x16\0", 16);
  footer += "0000000000000000STARGZ";
  footer += std::string("\x01\0\0\xff\xff\0\0\0\0\0\0\0\0", 13);
  ASSERT_EQ(footer.size(), 51u);
  std::string blob = Gzip("hello", 6) + footer;
  MemoryByteSource src(blob);
  auto got = DetectCompression(src);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, Compression::kEstargz);
  EXPECT_EQ(CompressionName(*got), "estargz");
}

// --- gzip --------------------------------------------------------------------

class GzipLevels : public ::testing::TestWithParam<int> {};

TEST_P(GzipLevels, RandomDataEveryByteMatchesAcrossSpans) {
  std::string data = RandomBytes(10u << 20, 7);
  std::string blob = Gzip(data, GetParam());
  Built b = Build(blob, Compression::kGzip, 1u << 20);
  EXPECT_TRUE(b.streamed == data);
  EXPECT_EQ(b.index.compression, Compression::kGzip);
  EXPECT_EQ(b.index.uncompressed_size, data.size());
  ASSERT_GE(b.index.points.size(), 9u);
  EXPECT_EQ(b.index.points[0].out_offset, 0u);
  EXPECT_EQ(b.index.points[0].in_offset, 10u);  // just after zlib's 10-byte gzip header
  EXPECT_TRUE(b.index.points[0].window.empty());
  for (size_t i = 1; i < b.index.points.size(); ++i) {
    const SeekPoint& p = b.index.points[i];
    EXPECT_EQ(p.window.size(), 32768u);
    EXPECT_TRUE(p.window == std::string_view(data).substr(p.out_offset - 32768, 32768));
    EXPECT_GE(p.out_offset - b.index.points[i - 1].out_offset, 1u << 20);
  }
  CheckReads(blob, b.index, data, 11);
}

TEST_P(GzipLevels, TextEveryByteMatchesAcrossSpans) {
  std::string data = TarishText(10u << 20, 3);
  std::string blob = Gzip(data, GetParam());
  Built b = Build(blob, Compression::kGzip);
  EXPECT_TRUE(b.streamed == data);
  ASSERT_GE(b.index.points.size(), 4u);
  bool some_bits = false;
  for (const SeekPoint& p : b.index.points) some_bits |= p.bits != 0;
  EXPECT_TRUE(some_bits || GetParam() == 0) << "compressed blocks rarely end on a byte boundary";
  CheckReads(blob, b.index, data, 12);
}

INSTANTIATE_TEST_SUITE_P(Levels, GzipLevels, ::testing::Values(0, 1, 6, 9));

TEST(Gzip, ReadDecompressesAtMostAboutOneSpan) {
  std::string data = RandomBytes(10u << 20, 9);
  std::string blob = Gzip(data, 6);
  Built b = Build(blob, Compression::kGzip, 1u << 20);
  for (uint64_t off : {uint64_t{0}, uint64_t{3u << 20}, uint64_t{(9u << 20) + 12345}}) {
    RecordingSource src(blob);
    std::string got(4096, '\0');
    ASSERT_TRUE(ReadUncompressed(src, b.index, off, std::span<char>(got)).ok());
    EXPECT_TRUE(got == data.substr(off, 4096));
    // Random data is stored nearly 1:1: one span plus one read-ahead chunk.
    EXPECT_LE(src.BytesRead(), (1u << 20) + (512u << 10)) << "at " << off;
  }
}

TEST(Gzip, MultiMemberStreamsRestartWithAnEmptyWindow) {
  // Member 0 is exactly one span, so member 1 ("x") starts where a point is due.
  std::vector<std::string> pieces = {
      RandomBytes(1u << 20, 1), "x", "", TarishText(5u << 20, 2), RandomBytes(700u << 10, 3),
      TarishText(100, 4)};
  std::string blob, data;
  std::vector<uint64_t> member_in, member_out;
  for (const std::string& p : pieces) {
    member_in.push_back(blob.size());
    member_out.push_back(data.size());
    blob += Gzip(p, 6);
    data += p;
  }
  Built b = Build(blob, Compression::kGzip, 1u << 20);
  EXPECT_TRUE(b.streamed == data);
  EXPECT_EQ(b.index.uncompressed_size, data.size());
  ASSERT_GE(b.index.points.size(), 2u);
  EXPECT_EQ(b.index.points[1], (SeekPoint{member_in[1] + 10, 1u << 20, 0, ""}));
  // Every window holds only history from its own member.
  for (const SeekPoint& p : b.index.points) {
    size_t k = std::upper_bound(member_in.begin(), member_in.end(), p.in_offset - 1) -
               member_in.begin() - 1;
    uint64_t from =
        std::max<uint64_t>(member_out[k], p.out_offset - std::min<uint64_t>(p.out_offset, 32768));
    EXPECT_TRUE(p.window == std::string_view(data).substr(from, p.out_offset - from))
        << "point at " << p.out_offset;
    if (p.window.empty()) {
      EXPECT_EQ(p.in_offset, member_in[k] + 10);
    }
  }
  CheckReads(blob, b.index, data, 13);
  // Without points a read starts at the first member header and crosses members.
  SeekIndex none = b.index;
  none.points.clear();
  CheckReads(blob, none, data, 14, 5);
}

TEST(Gzip, EmptyStreamAndEmptyMember) {
  std::string blob = Gzip("", 6);
  Built b = Build(blob, Compression::kGzip);
  EXPECT_EQ(b.index.uncompressed_size, 0u);
  MemoryByteSource src(blob);
  EXPECT_TRUE(ReadUncompressed(src, b.index, 0, std::span<char>()).ok());

  MemoryByteSource none("");
  auto r = BuildSeekIndex(none, Compression::kGzip, "blob e", nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kCorrupt);
  EXPECT_EQ(r.status().message(), "blob e: gzip: empty stream at compressed offset 0");
}

TEST(Gzip, TruncatedInputIsCorruptAtItsEnd) {
  std::string data = TarishText(1u << 20, 5);
  std::string blob = Gzip(data, 6);
  for (size_t cut : {size_t{5}, size_t{10}, blob.size() / 2, blob.size() - 4, blob.size() - 1}) {
    std::string part = blob.substr(0, cut);
    MemoryByteSource src(part);
    auto r = BuildSeekIndex(src, Compression::kGzip, "blob t", nullptr);
    ASSERT_FALSE(r.ok()) << cut;
    EXPECT_EQ(r.status().code(), Code::kCorrupt);
    EXPECT_EQ(
        r.status().message(),
        "blob t: gzip: truncated stream: input ends at compressed offset " + std::to_string(cut));
  }
}

TEST(Gzip, CorruptInputNamesTheDocumentAndOffset) {
  std::string data = TarishText(1u << 20, 6);
  std::string blob = Gzip(data, 6);
  // A bad compression method in the header.
  std::string bad_method = blob;
  bad_method[2] = 7;
  // Trailing bytes that are not a gzip member (Go's reader rejects them too).
  std::string trailing = blob + "NOT GZIP";
  // A bad CRC in the trailer.
  std::string bad_crc = blob;
  bad_crc[blob.size() - 6] ^= 1;
  struct Case {
    std::string blob;
    std::string reason;
    uint64_t min_offset, max_offset;
  } cases[] = {
      {bad_method, "gzip: unknown compression method", 2, 4},
      {trailing, "gzip: incorrect header check", blob.size(), blob.size() + 2},
      {bad_crc, "gzip: incorrect data check", blob.size() - 8, blob.size()},
  };
  for (const Case& c : cases) {
    MemoryByteSource src(c.blob);
    auto r = BuildSeekIndex(src, Compression::kGzip, "blob c", nullptr);
    ASSERT_FALSE(r.ok()) << c.reason;
    EXPECT_EQ(r.status().code(), Code::kCorrupt);
    EXPECT_EQ(r.status().message().rfind("blob c: " + c.reason + " at compressed offset ", 0), 0u)
        << r.status().message();
    uint64_t at = OffsetIn(r.status().message());
    EXPECT_GE(at, c.min_offset) << r.status().message();
    EXPECT_LE(at, c.max_offset) << r.status().message();
  }
}

TEST(Gzip, ReadOfADamagedBlobIsCorrupt) {
  std::string data = TarishText(4u << 20, 8);
  std::string blob = Gzip(data, 6);
  Built b = Build(blob, Compression::kGzip, 1u << 20);
  std::string cut = blob.substr(0, blob.size() / 2);
  MemoryByteSource src(cut);
  // From point 0 the data runs out at the cut.
  std::string got(data.size(), '\0');
  Status st = ReadUncompressed(src, b.index, 0, std::span<char>(got));
  EXPECT_EQ(st.code(), Code::kCorrupt) << st.ToString();
  EXPECT_EQ(st.message(), "gzip: stream ends at compressed offset " + std::to_string(cut.size()) +
                              " before uncompressed offset " + std::to_string(data.size()));
  // The last point lies beyond the cut blob.
  got.resize(10);
  st = ReadUncompressed(src, b.index, data.size() - 10, std::span<char>(got));
  EXPECT_EQ(st.code(), Code::kCorrupt) << st.ToString();
  // A point that does not match the data.
  SeekIndex wrong = b.index;
  wrong.points.back().in_offset += 1;
  MemoryByteSource whole(blob);
  got.assign(1u << 20, '\0');
  st = ReadUncompressed(whole, wrong, wrong.points.back().out_offset, std::span<char>(got));
  EXPECT_TRUE(st.code() == Code::kCorrupt ||
              got != data.substr(wrong.points.back().out_offset, got.size()));
}

TEST(Gzip, SinkErrorsStopThePass) {
  std::string blob = Gzip(TarishText(1u << 20, 1), 6);
  MemoryByteSource src(blob);
  int calls = 0;
  auto r = BuildSeekIndex(src, Compression::kGzip, "blob s", [&](std::string_view) {
    ++calls;
    return Status(Code::kNoSpace, "disk full");
  });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kNoSpace);
  EXPECT_EQ(calls, 1);
}

// A pass stopped by its sink or cut short by damage keeps an index of exactly
// the output handed over, and every byte of it reads back.
TEST(SeekPass, StoppedOrTruncatedPassesServeTheOutputBeforeTheEnd) {
  const std::string data = TarishText(12u << 20, 7);
  struct Case {
    Compression c;
    std::string blob;
  };
  std::vector<Case> cases = {{Compression::kGzip, Gzip(data, 6)},
                             {Compression::kUncompressed, data}};
  for (const Case& k : cases) {
    SCOPED_TRACE(CompressionName(k.c));
    // Stop once 5 MiB were handed over.
    {
      MemoryByteSource src(k.blob);
      std::string streamed;
      SeekPass pass = BuildSeekIndexUntil(
          src, k.c, "blob p",
          [&](std::string_view chunk) -> Result<bool> {
            streamed.append(chunk);
            return streamed.size() < (5u << 20);
          },
          kMinSpan);
      ASSERT_TRUE(pass.status.ok()) << pass.status.ToString();
      EXPECT_TRUE(pass.stopped);
      EXPECT_GE(streamed.size(), 5u << 20);
      EXPECT_LT(streamed.size(), data.size());
      EXPECT_EQ(pass.index.uncompressed_size, streamed.size());
      for (const SeekPoint& p : pass.index.points) EXPECT_LE(p.out_offset, streamed.size());
      CheckReads(k.blob, pass.index, data.substr(0, streamed.size()), 3);
    }
    if (k.c == Compression::kUncompressed) continue;
    // Truncated in the middle: corrupt, but the prefix stays readable.
    {
      const std::string part = k.blob.substr(0, k.blob.size() / 2);
      MemoryByteSource src(part);
      std::string streamed;
      SeekPass pass = BuildSeekIndexUntil(
          src, k.c, "blob p",
          [&](std::string_view chunk) -> Result<bool> {
            streamed.append(chunk);
            return true;
          },
          kMinSpan);
      EXPECT_EQ(pass.status.code(), Code::kCorrupt);
      EXPECT_FALSE(pass.stopped);
      EXPECT_EQ(pass.index.uncompressed_size, streamed.size());
      EXPECT_GT(streamed.size(), 1u << 20);
      EXPECT_EQ(streamed, data.substr(0, streamed.size()));
      CheckReads(part, pass.index, streamed, 4);
    }
  }
}

TEST(SeekPass, SinkErrorsAreReturnedNotTakenForAStop) {
  const std::string blob = Zstd(TarishText(1u << 20, 2), 3);
  MemoryByteSource src(blob);
  SeekPass pass = BuildSeekIndexUntil(
      src, Compression::kZstd, "blob z",
      [&](std::string_view) -> Result<bool> { return Status(Code::kNoSpace, "disk full"); });
  EXPECT_EQ(pass.status.code(), Code::kNoSpace);
  EXPECT_EQ(pass.status.message(), "disk full");
  EXPECT_FALSE(pass.stopped);
}

TEST(SeekIndex, SpanOutsideTheLimitsIsInvalid) {
  std::string blob = Gzip("abc", 6);
  MemoryByteSource src(blob);
  for (uint64_t span : {kMinSpan - 1, kMaxSpan + 1}) {
    auto r = BuildSeekIndex(src, Compression::kGzip, "b", nullptr, span);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  }
}

TEST(SeekIndex, ReadPastTheEndIsInvalid) {
  std::string blob = Gzip("abcdef", 6);
  Built b = Build(blob, Compression::kGzip);
  MemoryByteSource src(blob);
  std::string got(3, '\0');
  EXPECT_EQ(ReadUncompressed(src, b.index, 4, std::span<char>(got)).code(), Code::kInvalidArgument);
  EXPECT_EQ(ReadUncompressed(src, b.index, UINT64_MAX, std::span<char>(got)).code(),
            Code::kInvalidArgument);
  ASSERT_TRUE(ReadUncompressed(src, b.index, 3, std::span<char>(got)).ok());
  EXPECT_EQ(got, "def");
}

// --- zstd --------------------------------------------------------------------

TEST(Zstd, SingleFrameHasOnePointAndReadsFromTheStart) {
  std::string data = RandomBytes(5u << 20, 21) + TarishText(5u << 20, 22);
  std::string blob = Zstd(data, 3);
  Built b = Build(blob, Compression::kZstd);
  EXPECT_TRUE(b.streamed == data);
  EXPECT_EQ(b.index.compression, Compression::kZstd);
  ASSERT_EQ(b.index.points.size(), 1u);
  EXPECT_EQ(b.index.points[0], (SeekPoint{0, 0, 0, ""}));
  EXPECT_TRUE(SingleFrame(b.index));
  CheckReads(blob, b.index, data, 23, 20);
}

TEST(Zstd, EveryFrameStartIsAPoint) {
  std::vector<std::string> pieces = {TarishText(3u << 20, 31), RandomBytes(2u << 20, 32),
                                     TarishText(1, 33), TarishText(4u << 20, 34),
                                     RandomBytes(12345, 35)};
  std::string blob, data;
  std::vector<SeekPoint> want;
  for (const std::string& p : pieces) {
    want.push_back(SeekPoint{blob.size(), data.size(), 0, ""});
    blob += Zstd(p, 5);
    data += p;
  }
  Built b = Build(blob, Compression::kZstd);
  EXPECT_TRUE(b.streamed == data);
  EXPECT_EQ(b.index.points, want);
  EXPECT_FALSE(SingleFrame(b.index));
  CheckReads(blob, b.index, data, 36);

  // A read inside frame 3 starts reading at that frame.
  RecordingSource src(blob);
  std::string got(100, '\0');
  uint64_t off = want[3].out_offset + 1000;
  ASSERT_TRUE(ReadUncompressed(src, b.index, off, std::span<char>(got)).ok());
  EXPECT_TRUE(got == data.substr(off, 100));
  ASSERT_FALSE(src.reads.empty());
  EXPECT_EQ(src.reads.front().first, want[3].in_offset);
}

TEST(Zstd, SkippableAndEmptyFramesShareThePointBeforeThem) {
  std::string a = TarishText(100000, 41), c = TarishText(50000, 42);
  std::string skippable("\x50\x2a\x4d\x18\x04\0\0\0abcd", 12);
  std::string blob = Zstd(a, 3);
  uint64_t second = blob.size();
  blob += skippable + Zstd("", 3) + Zstd(c, 3);
  Built b = Build(blob, Compression::kZstd);
  EXPECT_TRUE(b.streamed == a + c);
  EXPECT_EQ(b.index.points, (std::vector<SeekPoint>{{0, 0, 0, ""}, {second, a.size(), 0, ""}}));
  CheckReads(blob, b.index, a + c, 43);
}

TEST(Zstd, TruncatedAndDamagedInputIsCorrupt) {
  std::string data = TarishText(1u << 20, 51);
  std::string blob = Zstd(data, 3, /*checksum=*/true);
  for (size_t cut : {size_t{3}, blob.size() / 2, blob.size() - 1}) {
    std::string part = blob.substr(0, cut);
    MemoryByteSource src(part);
    auto r = BuildSeekIndex(src, Compression::kZstd, "blob z", nullptr);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), Code::kCorrupt);
    EXPECT_EQ(r.status().message(),
              "blob z: zstd: truncated stream: input ends inside a frame at compressed offset " +
                  std::to_string(cut));
  }
  for (size_t at : {size_t{4}, blob.size() / 3, blob.size() - 2}) {
    std::string bad = blob;
    bad[at] ^= 0x40;
    MemoryByteSource src(bad);
    auto r = BuildSeekIndex(src, Compression::kZstd, "blob z", nullptr);
    ASSERT_FALSE(r.ok()) << at;
    EXPECT_EQ(r.status().code(), Code::kCorrupt);
    EXPECT_EQ(r.status().message().rfind("blob z: zstd: ", 0), 0u);
    EXPECT_LE(OffsetIn(r.status().message()), bad.size()) << r.status().message();
  }
  std::string trailing = blob + "junk";
  MemoryByteSource src(trailing);
  auto r = BuildSeekIndex(src, Compression::kZstd, "blob z", nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kCorrupt);
  EXPECT_EQ(OffsetIn(r.status().message()), blob.size()) << r.status().message();
}

// --- uncompressed --------------------------------------------------------------

TEST(Uncompressed, NoPointsAndDirectReads) {
  std::string data = TarishText(3u << 20, 61);
  Built b = Build(data, Compression::kUncompressed);
  EXPECT_TRUE(b.streamed == data);
  EXPECT_TRUE(b.index.points.empty());
  EXPECT_FALSE(SingleFrame(b.index));
  CheckReads(data, b.index, data, 62);
}

// --- encoding ----------------------------------------------------------------

TEST(SeekIndexEncoding, RoundTripsEveryKind) {
  std::string text = TarishText(3u << 20, 71);
  std::string gz = Gzip(text, 6);
  std::vector<std::pair<std::string, Compression>> blobs = {
      {gz, Compression::kGzip},
      {Zstd(text.substr(0, 1u << 20), 3) + Zstd(text.substr(1u << 20), 3), Compression::kZstd},
      {text, Compression::kUncompressed}};
  for (auto& [blob, c] : blobs) {
    Built b = Build(blob, c, 1u << 20);
    std::string enc = EncodeSeekIndex(b.index);
    auto dec = DecodeSeekIndex(enc);
    ASSERT_TRUE(dec.ok()) << dec.status().ToString();
    EXPECT_EQ(*dec, b.index);
    CheckReads(blob, *dec, text, 72, 10);
  }
  SeekIndex hand{Compression::kEstargz, 1000, {{10, 0, 0, ""}, {300, 600, 5, "window"}}};
  auto dec = DecodeSeekIndex(EncodeSeekIndex(hand));
  ASSERT_TRUE(dec.ok());
  EXPECT_EQ(*dec, hand);
}

TEST(SeekIndexEncoding, EveryDamagedByteOrTruncationIsCorrupt) {
  SeekIndex index{Compression::kGzip, 5000, {{10, 0, 0, ""}, {300, 2000, 3, "abcdefgh"}}};
  std::string enc = EncodeSeekIndex(index);
  for (size_t i = 0; i < enc.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string bad = enc;
      bad[i] ^= static_cast<char>(1 << bit);
      auto r = DecodeSeekIndex(bad);
      ASSERT_FALSE(r.ok()) << i << ":" << bit;
      EXPECT_EQ(r.status().code(), Code::kCorrupt);
    }
  }
  for (size_t n = 0; n < enc.size(); ++n) {
    auto r = DecodeSeekIndex(std::string_view(enc).substr(0, n));
    ASSERT_FALSE(r.ok()) << n;
    EXPECT_EQ(r.status().code(), Code::kCorrupt);
  }
  auto r = DecodeSeekIndex(enc + "x");
  EXPECT_EQ(r.status().code(), Code::kCorrupt);
}

// Well-checksummed encodings that break an invariant.
TEST(SeekIndexEncoding, InvariantsAreChecked) {
  std::string big_window(32769, 'w');
  struct Case {
    SeekIndex index;
    std::string why;
  } cases[] = {
      {{Compression::kGzip, 100, {{10, 0, 8, ""}}}, "point 0: bits 8"},
      {{Compression::kGzip, 100, {{0, 0, 3, ""}}}, "point 0: bits before offset 0"},
      {{Compression::kGzip, 100, {{10, 0, 0, big_window}}}, "point 0: window of 32769 bytes"},
      {{Compression::kZstd, 100, {{10, 0, 1, ""}}}, "point 0: bits 1"},
      {{Compression::kZstd, 100, {{10, 0, 0, "w"}}}, "point 0: window of 1 bytes"},
      {{Compression::kGzip, 100, {{10, 101, 0, ""}}}, "point 0: beyond the uncompressed size"},
      {{Compression::kGzip, 100, {{10, 50, 0, ""}, {20, 50, 0, ""}}}, "point 1: out of order"},
      {{Compression::kGzip, 100, {{30, 10, 0, ""}, {20, 50, 0, ""}}}, "point 1: out of order"},
      {{Compression::kUncompressed, 100, {{0, 0, 0, ""}}},
       "an uncompressed stream has seek points"},
      {{static_cast<Compression>(7), 100, {}}, "unknown compression 7"},
  };
  for (const Case& c : cases) {
    auto r = DecodeSeekIndex(EncodeSeekIndex(c.index));
    ASSERT_FALSE(r.ok()) << c.why;
    EXPECT_EQ(r.status().code(), Code::kCorrupt);
    EXPECT_EQ(r.status().message(), "seek index: " + c.why);
  }
  // A version this build does not know, with a valid checksum.
  std::string enc = EncodeSeekIndex(SeekIndex{});
  enc[4] = 2;
  enc.resize(enc.size() - 4);
  uint32_t crc = static_cast<uint32_t>(
      crc32(0, reinterpret_cast<const Bytef*>(enc.data()), static_cast<uInt>(enc.size())));
  for (int i = 0; i < 4; ++i) enc.push_back(static_cast<char>((crc >> (8 * i)) & 0xff));
  auto r = DecodeSeekIndex(enc);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "seek index: version 2, want 1");
}

// --- real BuildKit layers ------------------------------------------------------

using testing::ReadFile;

// The layer descriptors of an index-shaped local cache.
std::vector<Descriptor> FixtureLayers(const std::string& dir) {
  auto top = ParseImageIndex(ReadFile(dir + "/index.json"), "index.json");
  EXPECT_TRUE(top.ok());
  if (!top.ok() || top->manifests.empty()) return {};
  const Digest& root = top->manifests[0].digest;
  auto index = ParseImageIndex(ReadFile(dir + "/blobs/sha256/" + root.hex()), root.ToString());
  EXPECT_TRUE(index.ok());
  std::vector<Descriptor> out;
  for (const Descriptor& d : index->manifests) {
    if (d.media_type.find(".layer.") != std::string::npos) out.push_back(d);
  }
  return out;
}

TEST(Fixtures, DetectionAndDiffIdsMatchEveryLocalMaxLayer) {
  BCFS_REQUIRE_FIXTURES();
  const std::string root = testing::FixturesDir();
  struct Want {
    std::string fixture;
    Compression c;
  } wants[] = {{"local-max-gzip", Compression::kGzip},
               {"local-max-zstd", Compression::kZstd},
               {"local-max-estargz", Compression::kEstargz},
               {"local-max-uncompressed", Compression::kUncompressed}};
  for (const Want& w : wants) {
    std::string dir = root + "/" + w.fixture;
    std::vector<Descriptor> layers = FixtureLayers(dir);
    EXPECT_EQ(layers.size(), 10u) << w.fixture;  // MANIFEST.md: 10 layers each
    for (const Descriptor& d : layers) {
      std::string blob = ReadFile(dir + "/blobs/sha256/" + d.digest.hex());
      ASSERT_EQ(blob.size(), static_cast<size_t>(d.size));
      MemoryByteSource src(blob);
      auto c = DetectCompression(src);
      ASSERT_TRUE(c.ok());
      EXPECT_EQ(*c, w.c) << w.fixture << " " << d.digest.ToString();
      // One pass: the sink's SHA-256 is the diffID (the whole stream, an
      // eStargz TOC included, FORMATS.md §9.2).
      Sha256 diff;
      std::string all;
      auto index = BuildSeekIndex(src, *c, d.digest.ToString(), [&](std::string_view chunk) {
        diff.Update(chunk);
        all.append(chunk);
        return OkStatus();
      });
      ASSERT_TRUE(index.ok()) << index.status().ToString();
      EXPECT_EQ(diff.Finish().ToString(), d.Annotation(annotation::kUncompressed))
          << w.fixture << " " << d.digest.ToString();
      CheckReads(blob, *index, all, 81, 10);
    }
  }
}

}  // namespace
}  // namespace bcfs::formats
