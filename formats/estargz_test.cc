#include "formats/estargz.h"

#include <archive.h>
#include <archive_entry.h>
#include <gtest/gtest.h>
#include <zlib.h>

#include <clocale>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "core/base64.h"
#include "formats/json_util.h"
#include "formats/oci.h"
#include "tests/testing.h"

namespace bcfs::formats::estargz {
namespace {

std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string out(n, '\0');
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<char>(rng() & 0xff);
  return out;
}

std::string Gzip(std::string_view data) {
  z_stream s{};
  EXPECT_EQ(deflateInit2(&s, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
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

std::string Octal(uint64_t v, size_t width) {
  std::string digits;
  do {
    digits.insert(digits.begin(), static_cast<char>('0' + (v & 7)));
    v >>= 3;
  } while (v != 0);
  return std::string(width - 1 - digits.size(), '0') + digits + '\0';
}

// A ustar header, as Go's archive/tar writes one for short names.
std::string TarHeader(const std::string& name, char type, uint64_t size, uint32_t mode,
                      const std::string& link = "") {
  std::string h(512, '\0');
  auto put = [&](size_t at, const std::string& s) { h.replace(at, s.size(), s); };
  put(0, name);
  put(100, Octal(mode, 8));
  put(108, Octal(0, 8));
  put(116, Octal(0, 8));
  put(124, Octal(size, 12));
  put(136, Octal(1700000000, 12));
  put(148, "        ");
  h[156] = type;
  put(157, link);
  put(257, std::string("ustar\0", 6) + "00");
  put(265, "root");
  put(297, "root");
  unsigned sum = 0;
  for (unsigned char c : h) sum += c;
  put(148, Octal(sum, 7) + " ");
  return h;
}

std::string Pad(uint64_t n) { return std::string((512 - n % 512) % 512, '\0'); }

std::string FooterBytes(uint64_t toc_offset, bool legacy) {
  char hex[17];
  snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(toc_offset));
  std::string f("\x1f\x8b\x08\x04\0\0\0\0\0\xff", 10);
  if (legacy) {
    f += std::string("\x16\0", 2);
  } else {
    f += std::string("\x1a\0SG\x16\0", 6);
  }
  f += std::string(hex) + "STARGZ";
  f += std::string("\x01\0\0\xff\xff\0\0\0\0\0\0\0\0", 13);
  return f;
}

// A small eStargz blob written the way estargz.Writer lays one out: every
// payload (and every 4 MiB chunk) starts a new gzip member, two small files
// share a member (innerOffset), a landmark, the TOC member, the footer.
struct Synthetic {
  std::string blob;
  std::string uncompressed;  // the whole decompressed stream
  std::string json;
  uint64_t toc_offset = 0;
  std::string big, a, b;
  std::vector<uint64_t> big_members;  // blob offsets of big.bin's chunks
  uint64_t ab_member = 0, b_inner = 0, landmark_member = 0;
};

Synthetic MakeSynthetic(bool legacy_footer = false) {
  Synthetic s;
  std::string pending;
  auto cut = [&] {
    if (!pending.empty()) {
      s.blob += Gzip(pending);
      s.uncompressed += pending;
      pending.clear();
    }
    return static_cast<uint64_t>(s.blob.size());
  };
  const uint64_t kChunk = 4u << 20;
  s.big = RandomBytes((9u << 20) + 123, 5);
  s.a = "hello from a\n";
  s.b = std::string(3000, 'b') + "end";
  Json entries = Json::array();

  pending += TarHeader("./", '5', 0, 0755);
  entries.push_back({{"name", "./"}, {"type", "dir"}, {"mode", 493}});
  pending += TarHeader("dir/", '5', 0, 0755);
  entries.push_back({{"name", "dir/"},
                     {"type", "dir"},
                     {"mode", 493},
                     {"uid", 1000},
                     {"gid", 1000},
                     {"userName", "alice"},
                     {"groupName", "staff"},
                     {"modtime", "2023-11-14T22:13:20Z"}});

  pending += TarHeader("dir/big.bin", '0', s.big.size(), 0644);
  for (uint64_t off = 0; off < s.big.size(); off += kChunk) {
    uint64_t member = cut();
    s.big_members.push_back(member);
    std::string part = s.big.substr(off, kChunk);
    pending += part;
    Json e = {{"offset", member}, {"chunkDigest", Digest::Sha256Of(part).ToString()}};
    if (off == 0) {
      e["name"] = "dir/big.bin";
      e["type"] = "reg";
      e["size"] = s.big.size();
      e["mode"] = 420;
      e["uid"] = 1000;  // userName left out: the same as for uid 1000 before
      e["gid"] = 1000;
      e["digest"] = Digest::Sha256Of(s.big).ToString();
    } else {
      e["name"] = off == kChunk ? "dir/big.bin" : "some/other/name";  // readers override it
      e["type"] = "chunk";
      e["chunkOffset"] = off;
    }
    if (off + kChunk < s.big.size()) e["chunkSize"] = kChunk;  // 0 (absent) on the last
    entries.push_back(e);
  }
  pending += Pad(s.big.size());

  pending += TarHeader("dir/a.txt", '0', s.a.size(), 0600);
  s.ab_member = cut();
  pending += s.a + Pad(s.a.size());
  pending += TarHeader("dir/b.txt", '0', s.b.size(), 04755);
  s.b_inner = pending.size();
  pending += s.b + Pad(s.b.size());
  entries.push_back({{"name", "dir/a.txt"},
                     {"type", "reg"},
                     {"size", s.a.size()},
                     {"mode", 384},
                     {"offset", s.ab_member},
                     {"xattrs", {{"user.bin", Base64Encode(std::string("v\0\xff", 3))}}},
                     {"digest", Digest::Sha256Of(s.a).ToString()},
                     {"chunkDigest", Digest::Sha256Of(s.a).ToString()}});
  entries.push_back({{"name", "dir/b.txt"},
                     {"type", "reg"},
                     {"size", s.b.size()},
                     {"mode", 04755},
                     {"offset", s.ab_member},
                     {"innerOffset", s.b_inner},
                     {"digest", Digest::Sha256Of(s.b).ToString()},
                     {"chunkDigest", Digest::Sha256Of(s.b).ToString()}});

  pending += TarHeader(".prefetch.landmark", '0', 1, 0644);
  s.landmark_member = cut();
  pending += "\x0f" + Pad(1);
  entries.push_back({{"name", ".prefetch.landmark"},
                     {"type", "reg"},
                     {"size", 1},
                     {"offset", s.landmark_member},
                     {"digest", Digest::Sha256Of("\x0f").ToString()},
                     {"chunkDigest", Digest::Sha256Of("\x0f").ToString()}});

  pending += TarHeader("dir/link", '2', 0, 0777, "big.bin");
  entries.push_back({{"name", "dir/link"}, {"type", "symlink"}, {"linkName", "big.bin"}});
  pending += TarHeader("dir/hard", '1', 0, 0600, "dir/a.txt");
  entries.push_back({{"name", "dir/hard"}, {"type", "hardlink"}, {"linkName", "./dir/a.txt"}});
  pending += TarHeader("dir/null", '3', 0, 0666);
  entries.push_back(
      {{"name", "dir/null"}, {"type", "char"}, {"devMajor", 1}, {"devMinor", 3}, {"mode", 438}});
  pending += TarHeader("dir/fifo", '6', 0, 0644);
  entries.push_back({{"name", "/dir/fifo"}, {"type", "fifo"}, {"uid", 1000}, {"gid", 1000}});
  pending += TarHeader("dir/empty", '0', 0, 0644);
  entries.push_back(
      {{"name", "dir/empty"}, {"type", "reg"}, {"digest", Digest::Sha256Of("").ToString()}});
  pending += std::string(1024, '\0');
  s.toc_offset = cut();

  Json toc = {{"version", 1}, {"entries", entries}};
  s.json = toc.dump(1, '\t');
  std::string toc_tar = TarHeader(std::string(kTocName), '0', s.json.size(), 0444) + s.json +
                        Pad(s.json.size()) + std::string(1024, '\0');
  s.blob += Gzip(toc_tar);
  s.uncompressed += toc_tar;
  s.blob += FooterBytes(s.toc_offset, legacy_footer);
  return s;
}

class RecordingSource : public ByteSource {
 public:
  explicit RecordingSource(std::string_view data) : mem_(data) {}
  uint64_t size() const override { return mem_.size(); }
  Status ReadAt(uint64_t offset, std::span<char> out) override {
    reads.emplace_back(offset, offset + out.size());
    return mem_.ReadAt(offset, out);
  }
  std::vector<std::pair<uint64_t, uint64_t>> reads;

 private:
  MemoryByteSource mem_;
};

// Every read made while reading [offset, offset+len) of `e` stays inside the
// members of the chunks that overlap that range.
void ExpectReadsInsideChunks(const RecordingSource& src, const Entry& e, uint64_t offset,
                             uint64_t len) {
  for (auto [a, b] : src.reads) {
    bool inside = false;
    for (const Chunk& c : e.chunks) {
      bool overlaps = c.chunk_offset < offset + len && offset < c.chunk_offset + c.chunk_size;
      if (overlaps && a >= c.offset && b <= c.next_offset) inside = true;
    }
    EXPECT_TRUE(inside) << e.name << ": read [" << a << ", " << b << ") for range [" << offset
                        << ", +" << len << ")";
  }
}

// --- footer ----------------------------------------------------------------

TEST(Footer, ParsesTheCurrentAndTheLegacyForm) {
  std::string f = FooterBytes(0x10f, false);
  ASSERT_EQ(f.size(), kFooterSize);
  auto got = ParseFooter(f);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->toc_offset, 0x10fu);
  EXPECT_EQ(got->size, kFooterSize);

  std::string legacy = FooterBytes(0xabcdef0123, true);
  ASSERT_EQ(legacy.size(), kLegacyFooterSize);
  got = ParseFooter("tail" + legacy);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->toc_offset, 0xabcdef0123u);
  EXPECT_EQ(got->size, kLegacyFooterSize);

  // The footer is itself a valid, empty gzip member.
  z_stream s{};
  ASSERT_EQ(inflateInit2(&s, 31), Z_OK);
  char out[8];
  s.next_in = reinterpret_cast<Bytef*>(f.data());
  s.avail_in = static_cast<uInt>(f.size());
  s.next_out = reinterpret_cast<Bytef*>(out);
  s.avail_out = sizeof(out);
  EXPECT_EQ(inflate(&s, Z_FINISH), Z_STREAM_END);
  EXPECT_EQ(s.total_out, 0u);
  EXPECT_EQ(s.avail_in, 0u);
  inflateEnd(&s);
}

TEST(Footer, RejectsWhatIsNotAFooter) {
  std::string good = FooterBytes(0x20, false);
  std::vector<std::pair<std::string, std::string>> cases;
  auto with = [&](size_t at, char c) {
    std::string f = good;
    f[at] = c;
    return f;
  };
  cases.emplace_back(with(0, 'x'), "magic");
  cases.emplace_back(with(3, 0), "no FEXTRA");
  cases.emplace_back(with(12, 'X'), "subfield id");
  cases.emplace_back(with(14, 21), "subfield length");
  cases.emplace_back(with(20, 'g'), "non-hex digit");
  cases.emplace_back(with(16, '+'), "sign");
  cases.emplace_back(with(37, 'Y'), "magic string");
  cases.emplace_back(std::string(51, '\0'), "zeros");
  for (auto& [f, why] : cases) {
    auto got = ParseFooter(f);
    ASSERT_FALSE(got.ok()) << why;
    EXPECT_EQ(got.status().code(), Code::kCorrupt) << why;
  }
  EXPECT_FALSE(ParseFooter(good.substr(1)).ok());
  MemoryByteSource short_blob(good.substr(0, 50));
  EXPECT_EQ(ReadFooter(short_blob).status().code(), Code::kCorrupt);
}

TEST(CleanName, AsStargzSnapshotter) {
  EXPECT_EQ(CleanName("./a/b"), "a/b");
  EXPECT_EQ(CleanName("/a/../b/"), "b");
  EXPECT_EQ(CleanName("../../x"), "x");
  EXPECT_EQ(CleanName("./"), "");
  EXPECT_EQ(CleanName("a//b/./c/"), "a/b/c");
  EXPECT_EQ(CleanName("..."), "...");
}

// --- TOC -----------------------------------------------------------------------

TEST(Toc, SyntheticBlobParsesWithFilledNamesFoldedChunksAndHiddenLandmarks) {
  Synthetic s = MakeSynthetic();
  MemoryByteSource src(s.blob);
  auto c = DetectCompression(src);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(*c, Compression::kEstargz);
  auto toc = ReadToc(src, "layer l", Digest::Sha256Of(s.json));
  ASSERT_TRUE(toc.ok()) << toc.status().ToString();
  EXPECT_EQ(toc->digest, Digest::Sha256Of(s.json));
  EXPECT_EQ(toc->toc_offset, s.toc_offset);

  std::vector<std::string> names;
  for (const Entry& e : toc->entries) names.push_back(e.name);
  EXPECT_EQ(names, (std::vector<std::string>{"", "dir", "dir/big.bin", "dir/a.txt", "dir/b.txt",
                                             "dir/link", "dir/hard", "dir/null", "dir/fifo",
                                             "dir/empty"}));
  EXPECT_EQ(toc->Find(".prefetch.landmark"), nullptr);
  EXPECT_EQ(toc->Find("stargz.index.json"), nullptr);

  const Entry* dir = toc->Find("./dir/");
  ASSERT_NE(dir, nullptr);
  EXPECT_EQ(dir->mtime, int64_t{1700000000} * 1000000000);
  const Entry* big = toc->Find("dir/big.bin");
  ASSERT_NE(big, nullptr);
  EXPECT_EQ(big->user_name, "alice");  // filled from uid 1000 on "dir"
  EXPECT_EQ(big->group_name, "staff");
  EXPECT_EQ(big->mode, 0644u);
  EXPECT_EQ(big->size, s.big.size());
  EXPECT_EQ(big->digest, Digest::Sha256Of(s.big));
  ASSERT_EQ(big->chunks.size(), 3u);
  const uint64_t kChunk = 4u << 20;
  for (size_t k = 0; k < 3; ++k) {
    const Chunk& ch = big->chunks[k];
    EXPECT_EQ(ch.offset, s.big_members[k]);
    EXPECT_EQ(ch.chunk_offset, k * kChunk);
    EXPECT_EQ(ch.inner_offset, 0u);
    EXPECT_EQ(ch.next_offset, k < 2 ? s.big_members[k + 1] : s.ab_member);
    EXPECT_EQ(ch.chunk_digest, Digest::Sha256Of(s.big.substr(k * kChunk, kChunk)));
  }
  EXPECT_EQ(big->chunks[2].chunk_size, s.big.size() - 2 * kChunk);  // normalised from 0

  const Entry* a = toc->Find("dir/a.txt");
  const Entry* b = toc->Find("dir/b.txt");
  ASSERT_TRUE(a != nullptr && b != nullptr);
  EXPECT_EQ(a->xattrs,
            (std::map<std::string, std::string>{{"user.bin", std::string("v\0\xff", 3)}}));
  EXPECT_EQ(a->user_name, "");  // uid 0 never had a name
  EXPECT_EQ(b->mode, 04755u);
  EXPECT_EQ(b->chunks[0].inner_offset, s.b_inner);
  // b shares a's member, so both read up to the landmark's member.
  EXPECT_EQ(a->chunks[0].next_offset, s.landmark_member);
  EXPECT_EQ(b->chunks[0].next_offset, s.landmark_member);

  EXPECT_EQ(toc->Find("dir/link")->link_name, "big.bin");
  EXPECT_EQ(toc->Find("dir/hard")->link_name, "dir/a.txt");
  const Entry* null = toc->Find("dir/null");
  EXPECT_EQ(null->type, EntryType::kChar);
  EXPECT_EQ(null->dev_major, 1);
  EXPECT_EQ(null->dev_minor, 3);
  EXPECT_EQ(toc->Find("dir/fifo")->group_name, "staff");
  EXPECT_TRUE(toc->Find("dir/empty")->chunks.empty());
}

TEST(Toc, LegacyFooterBlobReads) {
  Synthetic s = MakeSynthetic(/*legacy_footer=*/true);
  MemoryByteSource src(s.blob);
  auto c = DetectCompression(src);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(*c, Compression::kEstargz);
  auto toc = ReadToc(src, "legacy");
  ASSERT_TRUE(toc.ok()) << toc.status().ToString();
  std::string got(s.a.size(), '\0');
  ASSERT_TRUE(ReadFileRange(src, *toc, "dir/a.txt", 0, std::span<char>(got), true).ok());
  EXPECT_EQ(got, s.a);
}

TEST(Toc, WrongAnnotationDigestIsCorrupt) {
  Synthetic s = MakeSynthetic();
  MemoryByteSource src(s.blob);
  Digest other = Digest::Sha256Of("other");
  auto toc = ReadToc(src, "layer l", other);
  ASSERT_FALSE(toc.ok());
  EXPECT_EQ(toc.status().code(), Code::kCorrupt);
  EXPECT_EQ(toc.status().message(), "layer l: eStargz TOC digest " +
                                        Digest::Sha256Of(s.json).ToString() +
                                        " does not match the annotation " + other.ToString());
}

TEST(Toc, MalformedDocumentsAreRejected) {
  auto entry = [](const std::string& body) { return "{\"version\":1,\"entries\":[" + body + "]}"; };
  struct Case {
    std::string json;
    Code code;
    std::string message;
  } cases[] = {
      {"{\"version\":2,\"entries\":[]}", Code::kUnsupported, "toc t: eStargz TOC version 2"},
      {"{\"entries\":[]}", Code::kCorrupt, "toc t: field \"version\": missing"},
      {entry("{\"name\":\"x\",\"type\":\"chunk\",\"offset\":5}"), Code::kCorrupt,
       "toc t: field \"entries[0].type\": a chunk with no reg entry before it"},
      {entry("{\"name\":\"x\",\"type\":\"socket\"}"), Code::kCorrupt,
       "toc t: field \"entries[0].type\": unknown type \"socket\""},
      {entry("{\"name\":\"x\",\"type\":\"reg\",\"xattrs\":{\"user.a\":\"!!\"}}"), Code::kCorrupt,
       "toc t: field \"entries[0].xattrs.user.a\": base64 text of 2 characters is not a "
       "multiple of 4"},
      {entry("{\"name\":\"x\",\"type\":\"reg\",\"size\":-1}"), Code::kCorrupt,
       "toc t: field \"entries[0].size\": -1 is negative"},
      {entry("{\"name\":\"x\",\"type\":\"reg\",\"size\":10,\"offset\":5,\"chunkSize\":4}"),
       Code::kCorrupt, "toc t: eStargz entry \"x\": chunks cover 4 of 10 bytes"},
      {entry("{\"name\":\"x\",\"type\":\"reg\",\"size\":10,\"offset\":5,\"chunkSize\":4},"
             "{\"name\":\"x\",\"type\":\"chunk\",\"offset\":9,\"chunkOffset\":5}"),
       Code::kCorrupt, "toc t: eStargz entry \"x\": chunk 1 starts at 5, want 4"},
      {entry("{\"name\":\"x\",\"type\":\"reg\",\"size\":10,\"offset\":5,\"chunkSize\":11}"),
       Code::kCorrupt, "toc t: eStargz entry \"x\": chunk 0 ends past the file size 10"},
      {entry("{\"name\":\"x\",\"type\":\"reg\",\"size\":10,\"offset\":1000}"), Code::kCorrupt,
       "toc t: eStargz entry \"x\": chunk 0 offset 1000 is not before the TOC at 1000"},
      {entry("{\"name\":\"./\",\"type\":\"reg\"}"), Code::kCorrupt,
       "toc t: field \"entries[0].name\": empty name for a reg entry"},
      {entry("{\"name\":\"x\",\"type\":\"dir\",\"modtime\":\"yesterday\"}"), Code::kCorrupt, ""},
      {"[1]", Code::kCorrupt, "toc t: the document is an array, want an object"},
  };
  for (const Case& c : cases) {
    auto toc = ParseToc(c.json, 1000, "toc t");
    ASSERT_FALSE(toc.ok()) << c.json;
    EXPECT_EQ(toc.status().code(), c.code) << c.json;
    if (!c.message.empty()) {
      EXPECT_EQ(toc.status().message(), c.message);
    }
  }
}

TEST(Toc, DuplicateNamesResolveToTheLastAndHiddenRegsSwallowTheirChunks) {
  std::string json =
      "{\"version\":1,\"entries\":["
      "{\"name\":\"f\",\"type\":\"reg\",\"size\":1,\"offset\":10},"
      "{\"name\":\".no.prefetch.landmark\",\"type\":\"reg\",\"size\":2,\"offset\":20,"
      "\"chunkSize\":1},"
      "{\"name\":\".no.prefetch.landmark\",\"type\":\"chunk\",\"offset\":30,\"chunkOffset\":1},"
      "{\"name\":\"./f\",\"type\":\"reg\",\"size\":3,\"offset\":40}]}";
  auto toc = ParseToc(json, 100, "toc d");
  ASSERT_TRUE(toc.ok()) << toc.status().ToString();
  ASSERT_EQ(toc->entries.size(), 2u);
  EXPECT_EQ(toc->Find("f")->size, 3u);
  // The hidden chunk entries still bound the member before them.
  EXPECT_EQ(toc->entries[0].chunks[0].next_offset, 20u);
  EXPECT_EQ(toc->entries[1].chunks[0].next_offset, 100u);
}

TEST(Toc, TocMemberThatIsNotStargzIndexIsCorrupt) {
  std::string body = "{}";
  std::string tar = TarHeader("other.json", '0', body.size(), 0644) + body + Pad(body.size());
  std::string blob = Gzip("x");
  uint64_t toc_offset = blob.size();
  blob += Gzip(tar) + FooterBytes(toc_offset, false);
  MemoryByteSource src(blob);
  auto toc = ReadToc(src, "layer o");
  ASSERT_FALSE(toc.ok());
  EXPECT_EQ(toc.status().code(), Code::kCorrupt);
  EXPECT_EQ(toc.status().message(),
            "layer o: eStargz TOC at offset " + std::to_string(toc_offset) +
                ": first tar entry is \"other.json\", want \"stargz.index.json\"");

  // A footer pointing past the payload.
  std::string bad = Gzip("x") + FooterBytes(1000, false);
  MemoryByteSource bad_src(bad);
  EXPECT_EQ(ReadToc(bad_src, "layer p").status().code(), Code::kCorrupt);
}

// --- file reads ----------------------------------------------------------------

TEST(ReadFileRange, EveryRangeMatchesAndTouchesOnlyItsChunks) {
  Synthetic s = MakeSynthetic();
  MemoryByteSource mem(s.blob);
  auto toc = ReadToc(mem, "layer l");
  ASSERT_TRUE(toc.ok()) << toc.status().ToString();
  const Entry* big = toc->Find("dir/big.bin");
  std::mt19937_64 rng(99);
  std::vector<std::pair<uint64_t, uint64_t>> ranges = {
      {0, s.big.size()},
      {(4u << 20) - 10, 20},  // across the first chunk boundary
      {(8u << 20) - 1, 2},
      {s.big.size() - 1, 1},
      {0, 0}};
  for (int i = 0; i < 30; ++i) {
    uint64_t off = rng() % s.big.size();
    ranges.emplace_back(off, std::min<uint64_t>(s.big.size() - off, rng() % (5u << 20)));
  }
  for (bool verify : {false, true}) {
    for (auto [off, len] : ranges) {
      RecordingSource src(s.blob);
      std::string got(len, '\0');
      Status st = ReadFileRange(src, *toc, "dir/big.bin", off, std::span<char>(got), verify);
      ASSERT_TRUE(st.ok()) << st.ToString();
      ASSERT_TRUE(got == s.big.substr(off, len)) << off << " +" << len;
      ExpectReadsInsideChunks(src, *big, off, len);
    }
  }
  for (bool verify : {false, true}) {
    std::string got(s.b.size() - 100, '\0');
    ASSERT_TRUE(ReadFileRange(mem, *toc, "dir/b.txt", 100, std::span<char>(got), verify).ok());
    EXPECT_EQ(got, s.b.substr(100));
    got.assign(s.a.size(), '\0');
    ASSERT_TRUE(ReadFileRange(mem, *toc, "dir/hard", 0, std::span<char>(got), verify).ok());
    EXPECT_EQ(got, s.a);
  }
}

TEST(ReadFileRange, WrongPathsAndRanges) {
  Synthetic s = MakeSynthetic();
  MemoryByteSource src(s.blob);
  auto toc = ReadToc(src, "layer l");
  ASSERT_TRUE(toc.ok());
  std::string buf(4, '\0');
  EXPECT_EQ(ReadFileRange(src, *toc, "nope", 0, std::span<char>(buf), false).code(),
            Code::kNotFound);
  EXPECT_EQ(ReadFileRange(src, *toc, ".prefetch.landmark", 0, std::span<char>(buf), false).code(),
            Code::kNotFound);
  EXPECT_EQ(ReadFileRange(src, *toc, "dir/link", 0, std::span<char>(buf), false).code(),
            Code::kInvalidArgument);
  EXPECT_EQ(ReadFileRange(src, *toc, "dir", 0, std::span<char>(buf), false).code(),
            Code::kInvalidArgument);
  EXPECT_EQ(
      ReadFileRange(src, *toc, "dir/a.txt", s.a.size() - 3, std::span<char>(buf), false).code(),
      Code::kInvalidArgument);
  EXPECT_TRUE(ReadFileRange(src, *toc, "dir/empty", 0, std::span<char>(), true).ok());
  EXPECT_TRUE(ReadFileRange(src, *toc, "./dir/a.txt", 0, std::span<char>(buf), true).ok());
  EXPECT_EQ(buf, "hell");
}

TEST(ReadFileRange, AFlippedByteFailsVerification) {
  Synthetic s = MakeSynthetic();
  MemoryByteSource clean(s.blob);
  auto toc = ReadToc(clean, "layer l");
  ASSERT_TRUE(toc.ok());
  const Chunk& c = toc->Find("dir/big.bin")->chunks[1];
  std::string bad = s.blob;
  bad[(c.offset + c.next_offset) / 2] ^= 0x01;  // inside a stored block of random data
  MemoryByteSource src(bad);
  std::string got(100, '\0');
  Status st = ReadFileRange(src, *toc, "dir/big.bin", c.chunk_offset + 5, std::span<char>(got),
                            /*verify_chunks=*/true);
  ASSERT_EQ(st.code(), Code::kCorrupt) << st.ToString();
  EXPECT_EQ(st.message().rfind("eStargz: \"dir/big.bin\" chunk at file offset 4194304", 0), 0u)
      << st.message();
  // Unverified, the damage shows only when the member's CRC happens to be
  // read (the chunk ends its member here) or not at all.
  got.assign(c.chunk_size, '\0');
  st = ReadFileRange(src, *toc, "dir/big.bin", c.chunk_offset, std::span<char>(got), false);
  EXPECT_TRUE(st.code() == Code::kCorrupt || got != s.big.substr(c.chunk_offset, c.chunk_size));
  // A changed byte with its CRC fixed up: only the chunk digest notices.
  bad = s.blob;
  std::string member = s.blob.substr(c.offset, c.next_offset - c.offset);
  std::string plain = s.big.substr(c.chunk_offset, c.chunk_size);
  plain[12345] ^= 0x01;
  bad.replace(c.offset, member.size(), Gzip(plain));
  ASSERT_EQ(bad.size(), s.blob.size());  // random data is stored: same length
  MemoryByteSource forged(bad);
  got.assign(c.chunk_size, '\0');
  ASSERT_TRUE(
      ReadFileRange(forged, *toc, "dir/big.bin", c.chunk_offset, std::span<char>(got), false).ok());
  EXPECT_TRUE(got == plain);
  st = ReadFileRange(forged, *toc, "dir/big.bin", c.chunk_offset, std::span<char>(got), true);
  ASSERT_EQ(st.code(), Code::kCorrupt);
  EXPECT_NE(st.message().find("does not match the TOC's " + c.chunk_digest.ToString()),
            std::string::npos)
      << st.message();
  got.assign(100, '\0');
  EXPECT_TRUE(ReadFileRange(src, *toc, "dir/big.bin", 0, std::span<char>(got), true).ok());
}

TEST(ReadFileRange, ChunkWithoutDigestCannotBeVerified) {
  Synthetic s = MakeSynthetic();
  MemoryByteSource src(s.blob);
  auto toc = ReadToc(src, "layer l");
  ASSERT_TRUE(toc.ok());
  Toc copy = *toc;
  copy.entries[copy.by_name.at("dir/a.txt")].chunks[0].chunk_digest = Digest();
  std::string got(s.a.size(), '\0');
  EXPECT_EQ(ReadFileRange(src, copy, "dir/a.txt", 0, std::span<char>(got), true).code(),
            Code::kCorrupt);
  EXPECT_TRUE(ReadFileRange(src, copy, "dir/a.txt", 0, std::span<char>(got), false).ok());
}

// --- real BuildKit eStargz layers ------------------------------------------------

using testing::ReadFile;

// An independent view of the blob: libarchive's gunzip + tar walk.
struct TarEntry {
  EntryType type = EntryType::kReg;
  uint64_t size = 0;
  uint32_t perm = 0;
  int64_t uid = 0, gid = 0;
  std::string uname, gname, link, data;
  int64_t mtime = 0;
  uint64_t dev_major = 0, dev_minor = 0;
  std::map<std::string, std::string> xattrs;
};

std::string TrimName(std::string n) {
  while (n.rfind("./", 0) == 0 || n.rfind("/", 0) == 0) n.erase(0, n[0] == '.' ? 2 : 1);
  while (!n.empty() && n.back() == '/') n.pop_back();
  return n == "." ? "" : n;
}

std::map<std::string, TarEntry> WalkTar(const std::string& blob) {
  std::map<std::string, TarEntry> out;
  setlocale(LC_CTYPE, "C.UTF-8");  // names are UTF-8 (one fixture file is "ünïcödé-文件-😀.txt")
  archive* a = archive_read_new();
  archive_read_support_filter_gzip(a);
  archive_read_support_format_tar(a);
  EXPECT_EQ(archive_read_open_memory(a, blob.data(), blob.size()), ARCHIVE_OK);
  archive_entry* e = nullptr;
  int r;
  while ((r = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
    TarEntry t;
    t.perm = archive_entry_perm(e);
    t.uid = archive_entry_uid(e);
    t.gid = archive_entry_gid(e);
    t.uname = archive_entry_uname(e) ? archive_entry_uname(e) : "";
    t.gname = archive_entry_gname(e) ? archive_entry_gname(e) : "";
    t.mtime = archive_entry_mtime(e);
    if (archive_entry_hardlink(e) != nullptr) {
      t.type = EntryType::kHardlink;
      t.link = TrimName(archive_entry_hardlink(e));
    } else {
      switch (archive_entry_filetype(e)) {
        case AE_IFREG:
          t.type = EntryType::kReg;
          break;
        case AE_IFDIR:
          t.type = EntryType::kDir;
          break;
        case AE_IFLNK:
          t.type = EntryType::kSymlink;
          t.link = archive_entry_symlink(e);
          break;
        case AE_IFCHR:
          t.type = EntryType::kChar;
          break;
        case AE_IFBLK:
          t.type = EntryType::kBlock;
          break;
        case AE_IFIFO:
          t.type = EntryType::kFifo;
          break;
        default:
          ADD_FAILURE() << "unexpected tar type for " << archive_entry_pathname(e);
      }
    }
    if (t.type == EntryType::kChar || t.type == EntryType::kBlock) {
      t.dev_major = archive_entry_rdevmajor(e);
      t.dev_minor = archive_entry_rdevminor(e);
    }
    archive_entry_xattr_reset(e);
    const char* name;
    const void* value;
    size_t size;
    while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK) {
      t.xattrs[name] = std::string(static_cast<const char*>(value), size);
    }
    if (t.type == EntryType::kReg) {
      t.size = archive_entry_size(e);
      char buf[65536];
      la_ssize_t n;
      while ((n = archive_read_data(a, buf, sizeof(buf))) > 0) t.data.append(buf, n);
      EXPECT_EQ(n, 0) << archive_error_string(a);
    }
    out[TrimName(archive_entry_pathname(e))] = std::move(t);
  }
  EXPECT_EQ(r, ARCHIVE_EOF) << archive_error_string(a);
  archive_read_free(a);
  return out;
}

std::vector<Descriptor> EstargzLayers(const std::string& dir) {
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

TEST(Fixtures, EveryEstargzLayerMatchesAnIndependentTarWalk) {
  BCFS_REQUIRE_FIXTURES();
  const std::string dir = testing::FixturesDir() + "/local-max-estargz";
  std::vector<Descriptor> layers = EstargzLayers(dir);
  ASSERT_EQ(layers.size(), 10u);
  size_t files = 0;
  for (const Descriptor& d : layers) {
    SCOPED_TRACE(d.digest.ToString());
    std::string blob = ReadFile(dir + "/blobs/sha256/" + d.digest.hex());
    auto annotated = Digest::Parse(d.Annotation(annotation::kStargzToc));
    ASSERT_TRUE(annotated.ok()) << "descriptor lacks the TOC digest annotation";
    MemoryByteSource mem(blob);
    auto footer = ReadFooter(mem);
    ASSERT_TRUE(footer.ok()) << footer.status().ToString();
    EXPECT_EQ(footer->size, kFooterSize);
    auto toc = ReadToc(mem, d.digest.ToString(), *annotated);
    ASSERT_TRUE(toc.ok()) << toc.status().ToString();
    EXPECT_EQ(toc->digest, *annotated);

    std::map<std::string, TarEntry> tar = WalkTar(blob);
    std::map<std::string, const Entry*> by_name;
    for (const Entry& e : toc->entries) by_name[e.name] = toc->Find(e.name);
    ASSERT_EQ(by_name.size(), tar.size());
    for (const auto& [name, t] : tar) {
      SCOPED_TRACE(name);
      ASSERT_EQ(by_name.count(name), 1u);
      const Entry& e = *by_name[name];
      EXPECT_EQ(e.type, t.type);
      EXPECT_EQ(e.mode & 07777, t.perm);
      EXPECT_EQ(e.uid, t.uid);
      EXPECT_EQ(e.gid, t.gid);
      EXPECT_EQ(e.user_name, t.uname);
      EXPECT_EQ(e.group_name, t.gname);
      EXPECT_EQ(e.xattrs, t.xattrs);
      EXPECT_LE(std::abs(e.mtime / 1000000000 - t.mtime), 1);
      if (t.type == EntryType::kSymlink || t.type == EntryType::kHardlink) {
        EXPECT_EQ(e.link_name, t.link);
      }
      if (t.type == EntryType::kChar || t.type == EntryType::kBlock) {
        EXPECT_EQ(static_cast<uint64_t>(e.dev_major), t.dev_major);
        EXPECT_EQ(static_cast<uint64_t>(e.dev_minor), t.dev_minor);
      }
      if (t.type != EntryType::kReg) continue;
      ++files;
      ASSERT_EQ(e.size, t.data.size());
      for (bool verify : {true, false}) {
        RecordingSource src(blob);
        std::string got(e.size, '\0');
        Status st = ReadFileRange(src, *toc, name, 0, std::span<char>(got), verify);
        ASSERT_TRUE(st.ok()) << st.ToString();
        EXPECT_TRUE(got == t.data);
        ExpectReadsInsideChunks(src, e, 0, e.size);
      }
      if (e.size > 2) {
        std::string got(e.size / 2, '\0');
        ASSERT_TRUE(ReadFileRange(mem, *toc, name, e.size / 3, std::span<char>(got), true).ok());
        EXPECT_TRUE(got == t.data.substr(e.size / 3, e.size / 2));
      }
    }
  }
  EXPECT_GT(files, 10u);
}

TEST(Fixtures, AFlippedByteInARealChunkFailsVerification) {
  BCFS_REQUIRE_FIXTURES();
  const std::string dir = testing::FixturesDir() + "/local-max-estargz";
  // The layer with the 3 MiB random file (MANIFEST.md).
  std::string blob = ReadFile(
      dir + "/blobs/sha256/45cdb01edc194836977b379849520b3b8c094c66cb291b1d8c4d5c3983d6ef42");
  ASSERT_FALSE(blob.empty());
  MemoryByteSource mem(blob);
  auto toc = ReadToc(mem, "random layer");
  ASSERT_TRUE(toc.ok()) << toc.status().ToString();
  const Entry* e = toc->Find("data/random.bin");
  ASSERT_NE(e, nullptr);
  ASSERT_EQ(e->chunks.size(), 1u);
  const Chunk& c = e->chunks[0];
  std::string original(e->size, '\0');
  ASSERT_TRUE(ReadFileRange(mem, *toc, "data/random.bin", 0, std::span<char>(original), true).ok());
  EXPECT_EQ(Digest::Sha256Of(original), e->digest);

  std::string bad = blob;
  bad[(c.offset + c.next_offset) / 2] ^= 0x10;
  MemoryByteSource src(bad);
  std::string got(4096, '\0');
  Status st = ReadFileRange(src, *toc, "data/random.bin", 0, std::span<char>(got), true);
  EXPECT_EQ(st.code(), Code::kCorrupt) << st.ToString();
  EXPECT_NE(st.message().find("data/random.bin"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace bcfs::formats::estargz
