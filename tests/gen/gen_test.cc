// Checks that buildcachefs-gen writes a valid BuildKit type=local cache
// (FORMATS.md §1–§3), using only nlohmann::json, zlib, zstd, libarchive and
// SHA-256: never the project's own readers.
#include "tests/gen/gen.h"

#include <archive.h>
#include <archive_entry.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <zlib.h>
#include <zstd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "core/digest.h"
#include "tests/testing.h"

namespace bcfs::gen {

// Readable test parameter names in failure messages.
void PrintTo(Shape shape, std::ostream* os) { *os << ShapeName(shape); }
void PrintTo(Compression c, std::ostream* os) { *os << CompressionName(c); }

namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kCacheConfigType[] = "application/vnd.buildkit.cacheconfig.v0";

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::path(::testing::TempDir()) / "bcfs-gen-test-XXXXXX").string();
    char* p = ::mkdtemp(tmpl.data());
    EXPECT_NE(p, nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Sha(std::string_view bytes) { return "sha256:" + Digest::Sha256Of(bytes).hex(); }

std::string Gunzip(const std::string& in) {
  std::string out;
  z_stream zs{};
  EXPECT_EQ(inflateInit2(&zs, 15 + 32), Z_OK);
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  char buf[16384];
  while (true) {
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof(buf);
    int rc = inflate(&zs, Z_NO_FLUSH);
    out.append(buf, sizeof(buf) - zs.avail_out);
    if (rc == Z_STREAM_END) {
      if (zs.avail_in == 0) break;
      inflateReset(&zs);  // another gzip member
      continue;
    }
    if (rc != Z_OK) {
      ADD_FAILURE() << "inflate failed: " << rc;
      break;
    }
  }
  inflateEnd(&zs);
  return out;
}

std::string Unzstd(const std::string& in) {
  std::string out;
  ZSTD_DStream* ds = ZSTD_createDStream();
  ZSTD_initDStream(ds);
  ZSTD_inBuffer ib{in.data(), in.size(), 0};
  std::vector<char> buf(ZSTD_DStreamOutSize());
  while (ib.pos < ib.size) {
    ZSTD_outBuffer ob{buf.data(), buf.size(), 0};
    size_t rc = ZSTD_decompressStream(ds, &ob, &ib);
    if (ZSTD_isError(rc)) {
      ADD_FAILURE() << "zstd: " << ZSTD_getErrorName(rc);
      break;
    }
    out.append(buf.data(), ob.pos);
  }
  ZSTD_freeDStream(ds);
  return out;
}

struct TarItem {
  std::string path;
  mode_t type = 0;
  mode_t perm = 0;  // permission bits with setuid/setgid/sticky
  int64_t size = 0;
  int64_t uid = -1, gid = -1;
  std::string uname, gname;
  int64_t mtime = 0;
  long mtime_nsec = 0;
  bool atime_set = false, ctime_set = false;
  std::string symlink, hardlink, data;
  int64_t dev_major = 0, dev_minor = 0;
  std::map<std::string, std::string> xattrs;
};

std::vector<TarItem> ReadTar(const std::string& tar) {
  std::vector<TarItem> items;
  struct archive* a = archive_read_new();
  archive_read_support_format_tar(a);
  EXPECT_EQ(archive_read_open_memory(a, tar.data(), tar.size()), ARCHIVE_OK);
  struct archive_entry* e;
  while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
    TarItem t;
    t.path = archive_entry_pathname(e);
    t.type = archive_entry_filetype(e);
    t.size = archive_entry_size(e);
    t.uid = archive_entry_uid(e);
    t.gid = archive_entry_gid(e);
    t.perm = archive_entry_perm(e);
    if (const char* u = archive_entry_uname(e)) t.uname = u;
    if (const char* g = archive_entry_gname(e)) t.gname = g;
    t.mtime = archive_entry_mtime(e);
    t.mtime_nsec = archive_entry_mtime_nsec(e);
    t.dev_major = archive_entry_rdevmajor(e);
    t.dev_minor = archive_entry_rdevminor(e);
    archive_entry_xattr_reset(e);
    const char* xname;
    const void* xvalue;
    size_t xsize;
    while (archive_entry_xattr_next(e, &xname, &xvalue, &xsize) == ARCHIVE_OK) {
      t.xattrs[xname] = std::string(static_cast<const char*>(xvalue), xsize);
    }
    t.atime_set = archive_entry_atime_is_set(e);
    t.ctime_set = archive_entry_ctime_is_set(e);
    if (const char* s = archive_entry_symlink(e)) t.symlink = s;
    if (const char* h = archive_entry_hardlink(e)) t.hardlink = h;
    char buf[8192];
    la_ssize_t n;
    while ((n = archive_read_data(a, buf, sizeof(buf))) > 0) t.data.append(buf, n);
    items.push_back(std::move(t));
  }
  archive_read_free(a);
  return items;
}

// Everything under dir: relative path -> (mode, bytes or "<dir>").
std::map<std::string, std::pair<unsigned, std::string>> Tree(const fs::path& dir) {
  std::map<std::string, std::pair<unsigned, std::string>> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    struct stat st;
    EXPECT_EQ(::lstat(e.path().c_str(), &st), 0);
    std::string rel = fs::relative(e.path(), dir).string();
    out[rel] = {st.st_mode & 07777, e.is_directory() ? std::string("<dir>") : ReadFile(e.path())};
  }
  return out;
}

bool IsGoTime(const std::string& s) {
  static const std::regex kRe(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d*[1-9])?Z)");
  return std::regex_match(s, kRe);
}

std::vector<std::string> Keys(const Json& j) {
  std::vector<std::string> keys;
  for (auto it = j.begin(); it != j.end(); ++it) keys.push_back(it.key());
  return keys;
}

// Keys of j, which must be in `order` and in that order.
void ExpectKeyOrder(const Json& j, const std::vector<std::string>& order) {
  std::vector<std::string> keys = Keys(j);
  size_t pos = 0;
  for (const std::string& k : keys) {
    while (pos < order.size() && order[pos] != k) ++pos;
    ASSERT_LT(pos, order.size()) << "key \"" << k << "\" out of order or unknown in " << j.dump();
  }
}

std::string ExpectedLayerType(Shape shape, Compression c) {
  bool docker = shape == Shape::kManifestList;
  switch (c) {
    case Compression::kGzip:
    case Compression::kEstargz:
      return docker ? "application/vnd.docker.image.rootfs.diff.tar.gzip"
                    : "application/vnd.oci.image.layer.v1.tar+gzip";
    case Compression::kZstd:
      return docker ? "application/vnd.docker.image.rootfs.diff.tar.zstd"
                    : "application/vnd.oci.image.layer.v1.tar+zstd";
    case Compression::kUncompressed:
      return docker ? "application/vnd.docker.image.rootfs.diff.tar"
                    : "application/vnd.oci.image.layer.v1.tar";
  }
  return "";
}

std::string ExpectedManifestType(Shape shape) {
  switch (shape) {
    case Shape::kImageManifest:
      return "application/vnd.oci.image.manifest.v1+json";
    case Shape::kIndex:
      return "application/vnd.oci.image.index.v1+json";
    case Shape::kManifestList:
      return "application/vnd.docker.distribution.manifest.list.v2+json";
  }
  return "";
}

// What one ref resolved to.
struct RefView {
  std::string name;
  std::string manifest_digest;
  std::string base_blob;                 // the layer with parent -1
  std::vector<std::string> layer_blobs;  // config-layers order
};

// Reads a blob by "sha256:<hex>", checking its name against its bytes and
// the size a descriptor claims.
std::string ReadBlob(const fs::path& dir, const Json& desc) {
  std::string digest = desc.at("digest").get<std::string>();
  EXPECT_EQ(digest.rfind("sha256:", 0), 0u) << digest;
  fs::path p = dir / "blobs" / "sha256" / digest.substr(7);
  EXPECT_TRUE(fs::is_regular_file(p)) << p;
  std::string bytes = ReadFile(p);
  EXPECT_EQ(Sha(bytes), digest);
  EXPECT_EQ(static_cast<int64_t>(bytes.size()), desc.at("size").get<int64_t>()) << digest;
  return bytes;
}

// Go's encoding/json output: compact, and the key order we parsed is what
// re-serialising gives back.
void ExpectCompactJson(const std::string& bytes) {
  Json j = Json::parse(bytes);
  EXPECT_EQ(j.dump(), bytes);
  EXPECT_EQ(bytes.find('\n'), std::string::npos);
}

// One gzip member of a blob: where it starts and what it inflates to.
struct GzipMember {
  size_t start = 0;
  std::string header;  // its first 10 bytes
  std::string out;
};

// Splits a multi-member gzip blob member by member (each inflated alone).
std::vector<GzipMember> GzipMembers(const std::string& blob) {
  std::vector<GzipMember> members;
  size_t pos = 0;
  while (pos < blob.size()) {
    GzipMember m;
    m.start = pos;
    m.header = blob.substr(pos, 10);
    z_stream zs{};
    EXPECT_EQ(inflateInit2(&zs, 15 + 16), Z_OK);
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(blob.data() + pos));
    zs.avail_in = static_cast<uInt>(blob.size() - pos);
    char buf[16384];
    int rc = Z_OK;
    while (rc == Z_OK) {
      zs.next_out = reinterpret_cast<Bytef*>(buf);
      zs.avail_out = sizeof(buf);
      rc = inflate(&zs, Z_NO_FLUSH);
      m.out.append(buf, sizeof(buf) - zs.avail_out);
    }
    EXPECT_EQ(rc, Z_STREAM_END) << "member at " << pos;
    pos = blob.size() - zs.avail_in;
    inflateEnd(&zs);
    members.push_back(std::move(m));
    if (rc != Z_STREAM_END) break;
  }
  return members;
}

std::string B64Decode(const std::string& in) {
  std::string out;
  std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  uint32_t v = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=') break;
    size_t i = alphabet.find(c);
    EXPECT_NE(i, std::string::npos) << in;
    v = (v << 6) | static_cast<uint32_t>(i);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((v >> bits) & 0xff);
    }
  }
  return out;
}

// Go's formatModtime: UTC RFC 3339, rounded to the second.
std::string TocModtime(int64_t sec, long nsec) {
  time_t t = static_cast<time_t>(sec + (nsec >= 500000000 ? 1 : 0));
  struct tm tm;
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string TocTypeOf(const TarItem& t) {
  if (!t.hardlink.empty()) return "hardlink";
  switch (t.type) {
    case AE_IFREG:
      return "reg";
    case AE_IFDIR:
      return "dir";
    case AE_IFLNK:
      return "symlink";
    case AE_IFCHR:
      return "char";
    case AE_IFBLK:
      return "block";
    case AE_IFIFO:
      return "fifo";
  }
  return "?";
}

// An eStargz blob (FORMATS.md §9.2) against the tar entries a plain reader
// sees in it and its descriptor annotations: the footer byte for byte, the
// members, the TOC tar and JSON, and every chunk.
void CheckEstargz(const std::string& blob, const Json& annotations,
                  const std::vector<TarItem>& items, int64_t chunk_size) {
  ASSERT_GT(blob.size(), 51u);
  std::string footer = blob.substr(blob.size() - 51);
  uint64_t toc_offset = std::stoull(footer.substr(16, 16), nullptr, 16);
  std::string want_footer = std::string("\x1f\x8b\x08\x04\0\0\0\0\0\xff\x1a\x00SG\x16\x00", 16);
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(toc_offset));
  want_footer +=
      std::string(hex) + "STARGZ" + std::string("\x01\x00\x00\xff\xff", 5) + std::string(8, '\0');
  ASSERT_EQ(footer, want_footer);

  std::vector<GzipMember> members = GzipMembers(blob);
  ASSERT_GE(members.size(), 3u);
  EXPECT_EQ(members.back().start, blob.size() - 51) << "the footer is a member of its own";
  EXPECT_EQ(members.back().out, "");
  ASSERT_EQ(members[members.size() - 2].start, toc_offset) << "the TOC is the last member";
  std::map<size_t, const GzipMember*> by_start;
  std::string payload;  // what the members before the TOC inflate to
  for (size_t i = 0; i + 1 < members.size(); ++i) {
    EXPECT_EQ(members[i].header, std::string("\x1f\x8b\x08\0\0\0\0\0\0\xff", 10))
        << "Go's gzip header (mtime 0, OS 255) on the member at " << members[i].start;
    by_start[members[i].start] = &members[i];
    if (i + 2 < members.size()) payload += members[i].out;
  }

  // The TOC tar: one USTAR entry as Go's archive/tar writes it, then the end.
  const std::string& toc_tar = members[members.size() - 2].out;
  ASSERT_GE(toc_tar.size(), 512u + 1024u);
  std::string h = toc_tar.substr(0, 512);
  EXPECT_EQ(h.substr(0, 100), "stargz.index.json" + std::string(83, '\0'));
  EXPECT_EQ(h.substr(100, 24), std::string("0000000\0"
                                           "0000000\0"
                                           "0000000\0",
                                           24));
  EXPECT_EQ(h.substr(136, 12), std::string("00000000000\0", 12));
  EXPECT_EQ(h[156], '0');
  EXPECT_EQ(h.substr(157, 100), std::string(100, '\0'));
  EXPECT_EQ(h.substr(257, 8), std::string("ustar\0"
                                          "00",
                                          8));
  EXPECT_EQ(h.substr(265, 64), std::string(64, '\0')) << "no user or group name";
  EXPECT_EQ(h.substr(329, 16), std::string("0000000\0"
                                           "0000000\0",
                                           16));
  EXPECT_EQ(h.substr(345), std::string(167, '\0'));
  unsigned sum = 0;
  for (size_t i = 0; i < 512; ++i) {
    sum += (i >= 148 && i < 156) ? ' ' : static_cast<unsigned char>(h[i]);
  }
  char chk[8];
  std::snprintf(chk, sizeof(chk), "%06o", sum);
  EXPECT_EQ(h.substr(148, 8), std::string(chk) + std::string("\0 ", 2));
  size_t json_size = std::stoull(h.substr(124, 11), nullptr, 8);
  EXPECT_EQ(h.substr(124, 12), [&] {
    char b[13];
    std::snprintf(b, sizeof(b), "%011zo", json_size);
    return std::string(b, 11) + '\0';
  }());
  size_t padded = (json_size + 511) / 512 * 512;
  ASSERT_EQ(toc_tar.size(), 512 + padded + 1024);
  EXPECT_EQ(toc_tar.substr(512 + json_size), std::string(padded - json_size + 1024, '\0'));
  std::string toc_json = toc_tar.substr(512, json_size);

  EXPECT_EQ(annotations.at("containerd.io/snapshot/stargz/toc.digest"), Sha(toc_json));
  EXPECT_EQ(annotations.at("io.containers.estargz.uncompressed-size"),
            std::to_string(payload.size() + toc_tar.size()));
  EXPECT_EQ(annotations.at("containerd.io/uncompressed"), Sha(payload + toc_tar))
      << "the diffID covers the TOC tar too";

  Json toc = Json::parse(toc_json);
  EXPECT_EQ(toc.dump(1, '\t'), toc_json) << "json.MarshalIndent(toc, \"\", \"\\t\")";
  EXPECT_THAT(Keys(toc), ElementsAre("version", "entries"));
  EXPECT_EQ(toc["version"], 1);

  // Entries, in tar order; a regular file's reg entry is followed by its chunks.
  std::set<size_t> chunk_starts;
  std::map<int64_t, std::string> last_uname, last_gname;
  size_t e = 0;
  const Json& entries = toc["entries"];
  for (const TarItem& t : items) {
    SCOPED_TRACE(t.path);
    ASSERT_LT(e, entries.size());
    const Json& ent = entries[e++];
    ExpectKeyOrder(ent, {"name", "type", "size", "modtime", "linkName", "mode", "uid", "gid",
                         "userName", "groupName", "offset", "innerOffset", "devMajor", "devMinor",
                         "xattrs", "digest", "chunkOffset", "chunkSize", "chunkDigest"});
    EXPECT_FALSE(ent.contains("innerOffset")) << "BuildKit has no MinChunkSize";
    EXPECT_EQ(ent["name"], t.path);
    EXPECT_EQ(ent["type"], TocTypeOf(t));
    EXPECT_EQ(ent.value("modtime", ""), t.mtime == 0 ? "" : TocModtime(t.mtime, t.mtime_nsec));
    EXPECT_EQ(ent.value("mode", 0), static_cast<int>(t.perm));
    EXPECT_EQ(ent.value("uid", int64_t{0}), t.uid);
    EXPECT_EQ(ent.value("gid", int64_t{0}), t.gid);
    std::string want_u = t.uname.empty() || last_uname[t.uid] == t.uname ? "" : t.uname;
    std::string want_g = t.gname.empty() || last_gname[t.gid] == t.gname ? "" : t.gname;
    if (!want_u.empty()) last_uname[t.uid] = want_u;
    if (!want_g.empty()) last_gname[t.gid] = want_g;
    EXPECT_EQ(ent.value("userName", ""), want_u) << "left out when it repeats";
    EXPECT_EQ(ent.value("groupName", ""), want_g);
    std::string link = !t.hardlink.empty() ? t.hardlink : t.symlink;
    EXPECT_EQ(ent.value("linkName", ""), link);
    EXPECT_EQ(ent.value("devMajor", int64_t{0}), t.dev_major);
    EXPECT_EQ(ent.value("devMinor", int64_t{0}), t.dev_minor);
    std::map<std::string, std::string> xattrs;
    if (ent.contains("xattrs")) {
      for (auto it = ent["xattrs"].begin(); it != ent["xattrs"].end(); ++it) {
        xattrs[it.key()] = B64Decode(it.value());
      }
    }
    EXPECT_EQ(xattrs, t.xattrs);
    if (TocTypeOf(t) != "reg") {
      EXPECT_FALSE(ent.contains("offset") || ent.contains("digest") || ent.contains("size"));
      continue;
    }
    EXPECT_EQ(ent.value("size", int64_t{0}), t.size);
    EXPECT_EQ(ent.value("digest", ""), Sha(t.data)) << "the whole payload, on the reg entry";
    if (t.size == 0) {
      EXPECT_FALSE(ent.contains("offset") || ent.contains("chunkDigest"));
      continue;
    }
    // The chunks: contiguous, each at the start of its own member.
    int64_t covered = 0;
    for (const Json* c = &ent;;) {
      EXPECT_EQ((*c)["name"], t.path);
      EXPECT_EQ(c->value("chunkOffset", int64_t{0}), covered);
      int64_t rest = t.size - covered;
      int64_t n = c->value("chunkSize", int64_t{0});
      if (rest >= chunk_size) {
        EXPECT_EQ(n, chunk_size);
      } else {
        EXPECT_EQ(n, 0) << "the last, short chunk says 0: to the end";
        n = rest;
      }
      std::string chunk = t.data.substr(static_cast<size_t>(covered), static_cast<size_t>(n));
      EXPECT_EQ((*c)["chunkDigest"], Sha(chunk));
      size_t off = (*c)["offset"].get<size_t>();
      chunk_starts.insert(off);
      auto m = by_start.find(off);
      if (m == by_start.end()) {
        ADD_FAILURE() << "chunk at " << covered << ": offset " << off << " starts no member";
      } else {
        EXPECT_EQ(m->second->out.substr(0, chunk.size()), chunk) << "chunk at " << covered;
        if (covered + n < t.size) {
          EXPECT_EQ(m->second->out.size(), chunk.size()) << "the next chunk starts a member";
        }
      }
      covered += n;
      if (covered >= t.size) break;
      ASSERT_LT(e, entries.size());
      c = &entries[e++];
      EXPECT_EQ((*c)["type"], "chunk");
      EXPECT_THAT(Keys(*c), ::testing::IsSubsetOf({"name", "type", "offset", "chunkOffset",
                                                   "chunkSize", "chunkDigest"}));
    }
  }
  EXPECT_EQ(e, entries.size()) << "no TOC entry beyond the tar's";
  // Members start at 0, at each chunk, at the TOC and at the footer: nowhere else.
  std::set<size_t> starts;
  for (const GzipMember& m : members) starts.insert(m.start);
  std::set<size_t> want = chunk_starts;
  want.insert({0, static_cast<size_t>(toc_offset), blob.size() - 51});
  EXPECT_EQ(starts, want);
}

// The entries --rich adds to the layer at `depth` of its chain (its folder is
// layer<depth>), read from the tar by libarchive, and the PAX records in the
// raw tar bytes.
void CheckRichLayer(const std::string& tar, const std::vector<TarItem>& items, int depth,
                    int64_t file_size) {
  std::map<std::string, const TarItem*> by_path;
  for (const TarItem& t : items) by_path[t.path] = &t;
  const std::string l = std::to_string(depth);
  const std::string dir = "layer" + l + "/rich/";
  auto get = [&](const std::string& p) -> const TarItem& {
    static const TarItem kMissing;
    auto it = by_path.find(p);
    EXPECT_NE(it, by_path.end()) << p << " missing";
    return it == by_path.end() ? kMissing : *it->second;
  };
  std::string long_name = "long-name";
  for (int i = 0; i < 11; ++i) long_name += "-0123456789";
  long_name += ".txt";
  ASSERT_GT(long_name.size(), 100u);

  const TarItem& root = get(dir);
  EXPECT_EQ(root.type, AE_IFDIR);
  EXPECT_EQ(std::make_tuple(root.uid, root.gid, root.uname, root.gname),
            std::make_tuple(int64_t{1000}, int64_t{1000}, std::string("builder"),
                            std::string("builder")));
  EXPECT_EQ(get(dir + long_name).size, 300);
  EXPECT_EQ(get(dir + "long-symlink").symlink, long_name);
  EXPECT_EQ(get(dir + "hardlink").hardlink, dir + "hardlink-target");
  EXPECT_EQ(get(dir + "hardlink-to-long").hardlink, dir + long_name);
  EXPECT_EQ(get(dir + "hardlink-target").perm, 0640u);
  const TarItem& chr = get(dir + "chardev");
  EXPECT_EQ(std::make_tuple(chr.type, chr.dev_major, chr.dev_minor, chr.perm),
            std::make_tuple(mode_t{AE_IFCHR}, int64_t{1}, int64_t{3}, mode_t{0666}));
  const TarItem& blk = get(dir + "blockdev");
  EXPECT_EQ(
      std::make_tuple(blk.type, blk.dev_major, blk.dev_minor, blk.gid, blk.gname),
      std::make_tuple(mode_t{AE_IFBLK}, int64_t{8}, int64_t{1}, int64_t{6}, std::string("disk")));
  EXPECT_EQ(get(dir + "fifo").type, AE_IFIFO);
  EXPECT_EQ(get(dir + "xattrs").xattrs,
            (std::map<std::string, std::string>{{"user.comment", "written by buildcachefs-gen"},
                                                {"user.layer", l}}));
  EXPECT_EQ(get(dir + "xattr-dir/").xattrs,
            (std::map<std::string, std::string>{{"user.dir", "a directory with an xattr"}}));
  EXPECT_EQ(get(dir + "setuid").perm, 04755u);
  EXPECT_EQ(get(dir + "setgid").perm, 02711u);
  EXPECT_EQ(get(dir + "sticky/").perm, 01777u);
  EXPECT_EQ(get(dir + "doomed.txt").uid, 1001);
  EXPECT_EQ(get(dir + "doomed.txt").gid, 1002);
  EXPECT_EQ(get(dir + "empty").size, 0);
  EXPECT_EQ(get(dir + "exact.bin").size, file_size);
  EXPECT_EQ(get("shared/from-layer" + l + ".txt").type, AE_IFREG);
  int ns = 0;
  for (const TarItem& t : items) {
    if (t.path.rfind(dir, 0) == 0) {
      EXPECT_NE(t.mtime_nsec, 0) << t.path << ": nanosecond mtime";
      ++ns;
    }
  }
  EXPECT_EQ(ns, 19);
  const bool upper = depth > 0;
  for (const std::string& wh : {std::string("shared/.wh..wh..opq"),
                                "layer" + std::to_string(depth - 1) + "/rich/.wh.doomed.txt"}) {
    auto it = by_path.find(wh);
    EXPECT_EQ(it != by_path.end(), upper) << wh;
    if (it != by_path.end()) {
      EXPECT_EQ(std::make_tuple(it->second->type, it->second->perm, it->second->size),
                std::make_tuple(mode_t{AE_IFREG}, mode_t{0}, int64_t{0}));
    }
  }
  // How the tar says it: PAX records for what ustar cannot hold, as Go writes them.
  EXPECT_THAT(tar, HasSubstr(" path=" + dir + long_name + "\n"));
  EXPECT_THAT(tar, HasSubstr(" linkpath=" + long_name + "\n"));
  EXPECT_THAT(tar, HasSubstr(" linkpath=" + dir + long_name + "\n"));
  EXPECT_THAT(tar, HasSubstr(" SCHILY.xattr.user.comment=written by buildcachefs-gen\n"));
  EXPECT_THAT(tar, ::testing::Not(HasSubstr("LIBARCHIVE.")));
  EXPECT_THAT(tar, HasSubstr(" mtime="));
}

struct CheckOptions {
  int files_per_layer = 4;
  bool rich = false;
  int64_t file_size = 4096;
  int64_t chunk_size = kDefaultEstargzChunkSize;
};

// Checks a whole cache directory; fills one view per index.json entry.
void CheckCacheDir(const fs::path& dir, Shape shape, Compression comp, const CheckOptions& co,
                   std::vector<RefView>* views) {
  const int files_per_layer = co.files_per_layer;
  views->clear();
  std::set<std::string> referenced;
  EXPECT_EQ(ReadFile(dir / "oci-layout"), R"({"imageLayoutVersion":"1.0.0"})");
  EXPECT_TRUE(fs::is_directory(dir / "ingest"));
  EXPECT_TRUE(fs::is_empty(dir / "ingest"));
  for (const char* d : {"", "blobs", "blobs/sha256", "ingest"}) {
    struct stat st;
    EXPECT_EQ(::stat((dir / d).c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0755u) << d;
  }

  // Every blob's name is its digest, and it is read-only.
  for (const auto& e : fs::directory_iterator(dir / "blobs" / "sha256")) {
    std::string bytes = ReadFile(e.path());
    EXPECT_EQ(Sha(bytes), "sha256:" + e.path().filename().string());
    struct stat st;
    EXPECT_EQ(::stat(e.path().c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0444u) << e.path();
  }

  std::string index_bytes = ReadFile(dir / "index.json");
  ExpectCompactJson(index_bytes);
  Json index = Json::parse(index_bytes);
  EXPECT_THAT(Keys(index), ElementsAre("schemaVersion", "mediaType", "manifests"));
  EXPECT_EQ(index["schemaVersion"], 2);
  EXPECT_EQ(index["mediaType"], "application/vnd.oci.image.index.v1+json");
  for (const Json& top : index["manifests"]) {
    EXPECT_THAT(Keys(top), ElementsAre("mediaType", "digest", "size", "annotations"));
    EXPECT_EQ(top["mediaType"], ExpectedManifestType(shape));
    RefView view;
    view.name = top["annotations"]["org.opencontainers.image.ref.name"];
    EXPECT_EQ(top["annotations"].size(), 1u);
    view.manifest_digest = top["digest"];
    referenced.insert(view.manifest_digest);

    std::string manifest_bytes = ReadBlob(dir, top);
    ExpectCompactJson(manifest_bytes);
    Json manifest = Json::parse(manifest_bytes);
    EXPECT_EQ(manifest["schemaVersion"], 2);
    EXPECT_EQ(manifest["mediaType"], ExpectedManifestType(shape));
    Json config_desc;
    std::vector<Json> layer_descs;
    if (shape == Shape::kImageManifest) {
      EXPECT_THAT(Keys(manifest), ElementsAre("schemaVersion", "mediaType", "config", "layers"));
      config_desc = manifest["config"];
      for (const Json& d : manifest["layers"]) layer_descs.push_back(d);
    } else {
      EXPECT_THAT(Keys(manifest), ElementsAre("schemaVersion", "mediaType", "manifests"));
      const Json& m = manifest["manifests"];
      EXPECT_GE(m.size(), 2u);
      config_desc = m.back();
      for (size_t i = 0; i + 1 < m.size(); ++i) layer_descs.push_back(m[i]);
    }
    EXPECT_THAT(Keys(config_desc), ElementsAre("mediaType", "digest", "size"));
    EXPECT_EQ(config_desc["mediaType"], kCacheConfigType);
    referenced.insert(config_desc["digest"].get<std::string>());

    std::string config_bytes = ReadBlob(dir, config_desc);
    ExpectCompactJson(config_bytes);
    Json config = Json::parse(config_bytes);
    EXPECT_THAT(Keys(config), ElementsAre("layers", "records"));
    const Json& layers = config["layers"];
    const Json& records = config["records"];
    EXPECT_EQ(layers.size(), layer_descs.size());
    EXPECT_EQ(records.size(), layers.size());  // one record per layer result
    const int n = static_cast<int>(layers.size());

    // Layers: sorted by (blob, parent), parents in range, chains end at -1.
    std::vector<int> parent(n);
    for (int i = 0; i < n; ++i) {
      ExpectKeyOrder(layers[i], {"blob", "parent", "annotations"});
      EXPECT_FALSE(layers[i].contains("annotations"));
      if (layers[i].contains("parent")) {
        EXPECT_NE(layers[i]["parent"], 0) << "Go omitempty drops a parent of 0";
      }
      parent[i] = layers[i].value("parent", 0);
      EXPECT_TRUE(parent[i] == -1 || (parent[i] >= 0 && parent[i] < n)) << parent[i];
      EXPECT_NE(parent[i], i);
      if (i > 0) {
        std::string a = layers[i - 1]["blob"], b = layers[i]["blob"];
        EXPECT_TRUE(a < b || (a == b && parent[i - 1] <= parent[i])) << a << " vs " << b;
      }
      view.layer_blobs.push_back(layers[i]["blob"]);
    }
    std::vector<int> depth(n, -1);
    int bases = 0;
    for (int i = 0; i < n; ++i) {
      int d = 0;
      for (int j = i; parent[j] != -1; j = parent[j]) {
        ++d;
        ASSERT_LE(d, n) << "parent loop at layer " << i;
      }
      depth[i] = d;
      if (d == 0) {
        ++bases;
        view.base_blob = layers[i]["blob"];
      }
    }
    EXPECT_EQ(bases, 1);
    std::set<int> depths(depth.begin(), depth.end());
    EXPECT_EQ(static_cast<int>(depths.size()), n) << "one linear chain";

    // Layer descriptors: config-layers order, sizes, diffIDs, tar contents.
    for (int i = 0; i < n; ++i) {
      const Json& d = layer_descs[i];
      EXPECT_THAT(Keys(d), ElementsAre("mediaType", "digest", "size", "annotations"));
      EXPECT_EQ(d["digest"], layers[i]["blob"]);
      EXPECT_EQ(d["mediaType"], ExpectedLayerType(shape, comp));
      if (comp == Compression::kEstargz) {
        EXPECT_THAT(
            Keys(d["annotations"]),
            ElementsAre("buildkit/createdat", "containerd.io/snapshot/stargz/toc.digest",
                        "containerd.io/uncompressed", "io.containers.estargz.uncompressed-size"));
      } else {
        EXPECT_THAT(Keys(d["annotations"]),
                    ElementsAre("buildkit/createdat", "containerd.io/uncompressed"));
      }
      EXPECT_TRUE(IsGoTime(d["annotations"]["buildkit/createdat"])) << d.dump();
      referenced.insert(d["digest"].get<std::string>());
      std::string blob = ReadBlob(dir, d);
      std::string tar;
      switch (comp) {
        case Compression::kGzip:
        case Compression::kEstargz:
          ASSERT_GE(blob.size(), 10u);
          EXPECT_EQ(blob.substr(0, 3), std::string("\x1f\x8b\x08", 3));
          EXPECT_EQ(blob.substr(4, 4), std::string(4, '\0')) << "gzip header mtime";
          tar = Gunzip(blob);
          break;
        case Compression::kZstd:
          EXPECT_EQ(blob.substr(0, 4), std::string("\x28\xb5\x2f\xfd", 4));
          tar = Unzstd(blob);
          break;
        case Compression::kUncompressed:
          tar = blob;
          break;
      }
      EXPECT_EQ(Sha(tar), d["annotations"]["containerd.io/uncompressed"]);
      EXPECT_EQ(tar.size() % 512, 0u);
      EXPECT_EQ(tar.substr(tar.size() - 1024), std::string(1024, '\0'));

      std::vector<TarItem> items = ReadTar(tar);
      if (comp == Compression::kEstargz) {
        SCOPED_TRACE("eStargz layer " + d["digest"].get<std::string>());
        CheckEstargz(blob, d["annotations"], items, co.chunk_size);
      }
      if (co.rich) {
        SCOPED_TRACE("rich layer " + d["digest"].get<std::string>());
        CheckRichLayer(tar, items, depth[i], co.file_size);
        continue;
      }
      int regular = 0, dirs = 0, symlinks = 0, hardlinks = 0;
      std::map<std::string, std::string> contents;
      for (const TarItem& t : items) {
        EXPECT_EQ(t.uid, 0);
        EXPECT_EQ(t.gid, 0);
        EXPECT_EQ(t.mtime, items[0].mtime);
        EXPECT_FALSE(t.atime_set);
        EXPECT_FALSE(t.ctime_set);
        if (!t.hardlink.empty()) {
          ++hardlinks;
          EXPECT_TRUE(contents.count(t.hardlink)) << t.hardlink;
        } else if (t.type == AE_IFREG) {
          ++regular;
          EXPECT_EQ(static_cast<int64_t>(t.data.size()), t.size);
          contents[t.path] = t.data;
        } else if (t.type == AE_IFDIR) {
          ++dirs;
        } else if (t.type == AE_IFLNK) {
          ++symlinks;
          EXPECT_FALSE(t.symlink.empty());
        }
      }
      EXPECT_EQ(dirs, 1);
      EXPECT_EQ(regular, files_per_layer);
      int links = depth[i] > 0 && files_per_layer > 0 ? 1 : 0;
      EXPECT_EQ(symlinks, links) << "layer depth " << depth[i];
      EXPECT_EQ(hardlinks, links) << "layer depth " << depth[i];
    }

    // Records: sorted by digest; one result each; inputs follow the chain.
    for (int r = 0; r < n; ++r) {
      const Json& rec = records[r];
      ExpectKeyOrder(rec, {"layers", "chains", "digest", "inputs"});
      if (r > 0) {
        EXPECT_LT(records[r - 1]["digest"], rec["digest"]);
      }
      EXPECT_EQ(rec["digest"].get<std::string>().size(), 71u);
      ASSERT_EQ(rec["layers"].size(), 1u);
      const Json& res = rec["layers"][0];
      EXPECT_THAT(Keys(res), ElementsAre("layer", "createdAt"));
      EXPECT_TRUE(IsGoTime(res["createdAt"]));
      int l = res["layer"];
      ASSERT_TRUE(l >= 0 && l < n);
      if (parent[l] == -1) {
        EXPECT_FALSE(rec.contains("inputs")) << "base record has no inputs";
        continue;
      }
      ASSERT_TRUE(rec.contains("inputs"));
      ASSERT_EQ(rec["inputs"].size(), 1u);
      ASSERT_EQ(rec["inputs"][0].size(), 1u);
      const Json& in = rec["inputs"][0][0];
      ExpectKeyOrder(in, {"selector", "link"});
      int link = in["link"];
      ASSERT_TRUE(link >= 0 && link < n && link != r);
      EXPECT_EQ(records[link]["layers"][0]["layer"], parent[l])
          << "input record must hold the layer below";
    }
    views->push_back(std::move(view));
  }
  for (const std::string& d : referenced) {
    EXPECT_TRUE(fs::exists(dir / "blobs" / "sha256" / d.substr(7))) << d;
  }
  size_t files =
      std::distance(fs::directory_iterator(dir / "blobs" / "sha256"), fs::directory_iterator());
  EXPECT_EQ(files, referenced.size()) << "no unreferenced blobs";
}

GenOptions Options(const fs::path& out, Shape shape, Compression c) {
  GenOptions o;
  o.out_dir = out.string();
  o.shape = shape;
  o.compression = c;
  return o;
}

class GenShapeTest : public ::testing::TestWithParam<std::tuple<Shape, Compression>> {};

TEST_P(GenShapeTest, WritesValidCache) {
  auto [shape, comp] = GetParam();
  TempDir tmp;
  GenOptions o = Options(tmp.path() / "cache", shape, comp);
  o.refs = 3;
  o.layers = 5;
  o.files = 3;
  o.file_size = 3000;
  Result<std::vector<GeneratedRef>> refs = Generate(o);
  ASSERT_TRUE(refs.ok()) << refs.status().ToString();
  ASSERT_EQ(refs->size(), 3u);
  std::vector<RefView> views;
  ASSERT_NO_FATAL_FAILURE(
      CheckCacheDir(o.out_dir, shape, comp, {.files_per_layer = o.files}, &views));
  ASSERT_EQ(views.size(), 3u);
  std::vector<std::string> names;
  for (size_t i = 0; i < views.size(); ++i) {
    names.push_back(views[i].name);
    EXPECT_EQ(views[i].manifest_digest, (*refs)[i].manifest_digest);
    EXPECT_EQ((*refs)[i].name, views[i].name);
    EXPECT_EQ(views[i].layer_blobs.size(), 5u);
  }
  EXPECT_THAT(names, ElementsAre("latest", "ref1", "ref2"));

  // The base layer is the same blob everywhere; the other layers differ.
  std::map<std::string, int> uses;
  for (const RefView& v : views) {
    EXPECT_EQ(v.base_blob, views[0].base_blob);
    for (const std::string& b : v.layer_blobs) ++uses[b];
  }
  for (const auto& [blob, count] : uses) {
    EXPECT_EQ(count, blob == views[0].base_blob ? 3 : 1) << blob;
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllShapes, GenShapeTest,
    ::testing::Combine(::testing::Values(Shape::kImageManifest, Shape::kIndex,
                                         Shape::kManifestList),
                       ::testing::Values(Compression::kGzip, Compression::kZstd,
                                         Compression::kUncompressed, Compression::kEstargz)),
    [](const auto& info) {
      std::string name = std::string(ShapeName(std::get<0>(info.param))) + "_" +
                         std::string(CompressionName(std::get<1>(info.param)));
      for (char& c : name) {
        if (c == '-') c = '_';
      }
      return name;
    });

TEST(GenTest, SameSeedSameBytesOtherSeedDiffers) {
  TempDir tmp;
  for (Compression c : {Compression::kGzip, Compression::kZstd}) {
    GenOptions a = Options(tmp.path() / ("a" + std::string(CompressionName(c))), Shape::kIndex, c);
    a.refs = 2;
    GenOptions b = a;
    b.out_dir = (tmp.path() / ("b" + std::string(CompressionName(c)))).string();
    GenOptions other = a;
    other.out_dir = (tmp.path() / ("c" + std::string(CompressionName(c)))).string();
    other.seed = 2;
    auto ra = Generate(a);
    auto rb = Generate(b);
    auto rc = Generate(other);
    ASSERT_TRUE(ra.ok() && rb.ok() && rc.ok());
    EXPECT_EQ(Tree(a.out_dir), Tree(b.out_dir));
    EXPECT_EQ((*ra)[0].manifest_digest, (*rb)[0].manifest_digest);
    EXPECT_NE((*ra)[0].manifest_digest, (*rc)[0].manifest_digest);
    EXPECT_NE(ReadFile(fs::path(a.out_dir) / "index.json"),
              ReadFile(fs::path(other.out_dir) / "index.json"));
    // Not a single layer blob in common.
    auto ta = Tree(a.out_dir), tc = Tree(other.out_dir);
    for (const auto& [path, v] : ta) {
      if (path.rfind("blobs/sha256/", 0) == 0 && path.size() > 13) {
        EXPECT_EQ(tc.count(path), 0u) << path;
      }
    }
  }
}

TEST(GenTest, RefNamesWithSlashesAndSingleLayer) {
  TempDir tmp;
  GenOptions o = Options(tmp.path() / "c", Shape::kImageManifest, Compression::kUncompressed);
  o.refs = 2;
  o.ref_names = {"feature/x", "main"};
  o.layers = 1;
  o.files = 0;
  auto refs = Generate(o);
  ASSERT_TRUE(refs.ok()) << refs.status().ToString();
  std::vector<RefView> views;
  ASSERT_NO_FATAL_FAILURE(
      CheckCacheDir(o.out_dir, o.shape, o.compression, {.files_per_layer = 0}, &views));
  ASSERT_EQ(views.size(), 2u);
  EXPECT_EQ(views[0].name, "feature/x");
  EXPECT_EQ(views[1].name, "main");
  // Same single base layer, same record: the two refs are the same cache.
  EXPECT_EQ(views[0].manifest_digest, views[1].manifest_digest);
  Json index = Json::parse(ReadFile(fs::path(o.out_dir) / "index.json"));
  EXPECT_EQ(index["manifests"].size(), 2u);
}

TEST(GenTest, ConfigLooksLikeBuildKits) {
  TempDir tmp;
  GenOptions o = Options(tmp.path() / "c", Shape::kIndex, Compression::kGzip);
  o.layers = 6;
  auto refs = Generate(o);
  ASSERT_TRUE(refs.ok()) << refs.status().ToString();
  Json manifest = Json::parse(
      ReadFile(fs::path(o.out_dir) / "blobs/sha256" / (*refs)[0].manifest_digest.substr(7)));
  const Json& config_desc = manifest["manifests"].back();
  std::string config = ReadFile(fs::path(o.out_dir) / "blobs/sha256" /
                                config_desc["digest"].get<std::string>().substr(7));
  EXPECT_THAT(config, HasSubstr(R"("parent":-1})"));
  EXPECT_THAT(config, ::testing::Not(HasSubstr(R"("parent":0)")));
  EXPECT_THAT(config, HasSubstr(R"({"selector":"sha256:)"));
  EXPECT_THAT(config, HasSubstr(R"(,"inputs":[[{"link":)"));
  EXPECT_THAT(config, HasSubstr(R"("createdAt":"2026-01-02T03:04:05.124456789Z")"));
  Json c = Json::parse(config);
  // With 6 layers in one chain some parent is index 0 and therefore omitted.
  bool omitted = false;
  for (const Json& l : c["layers"]) omitted |= !l.contains("parent");
  EXPECT_TRUE(omitted || c["layers"][0]["parent"] == -1);
}

// The key orders we write are the ones in BuildKit's real output.
TEST(GenTest, KeyOrderMatchesRealFixture) {
  BCFS_REQUIRE_FIXTURES();
  fs::path config = fs::path(bcfs::testing::FixturesDir()) / "local-max-gzip/blobs/sha256" /
                    "16966e6ea17ee8c7bc6f38ed8267be821918957d4e7583d7cf96f3a46b387d91";
  ASSERT_TRUE(fs::exists(config)) << config << " missing";
  std::string bytes = ReadFile(config);
  ExpectCompactJson(bytes);
  Json c = Json::parse(bytes);
  EXPECT_THAT(Keys(c), ElementsAre("layers", "records"));
  for (const Json& l : c["layers"]) ExpectKeyOrder(l, {"blob", "parent", "annotations"});
  for (const Json& r : c["records"]) {
    ExpectKeyOrder(r, {"layers", "chains", "digest", "inputs"});
    if (r.contains("layers")) {
      EXPECT_THAT(Keys(r["layers"][0]), ElementsAre("layer", "createdAt"));
    }
    if (r.contains("inputs")) {
      for (const Json& slot : r["inputs"]) {
        for (const Json& in : slot) ExpectKeyOrder(in, {"selector", "link"});
      }
    }
  }
}

TEST(GenTest, RefusesNonEmptyOutDir) {
  TempDir tmp;
  std::ofstream(tmp.path() / "junk") << "x";
  GenOptions o = Options(tmp.path(), Shape::kIndex, Compression::kGzip);
  auto r = Generate(o);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("not empty"));

  // An existing empty directory is fine.
  fs::create_directory(tmp.path() / "empty");
  o.out_dir = (tmp.path() / "empty").string();
  EXPECT_TRUE(Generate(o).ok());
}

// Small chunks: files of several chunks, one of exactly three (its last
// chunk keeps chunkSize), one shorter than a chunk, empty files.
TEST(GenEstargzTest, SmallChunksEachStartAMemberAndTheTocDescribesThem) {
  TempDir tmp;
  for (Shape shape : {Shape::kImageManifest, Shape::kManifestList}) {
    SCOPED_TRACE(std::string(ShapeName(shape)));
    GenOptions o =
        Options(tmp.path() / std::string(ShapeName(shape)), shape, Compression::kEstargz);
    o.refs = 2;
    o.layers = 3;
    o.files = 3;
    o.file_size = 3000;
    o.estargz_chunk_size = 1000;
    o.rich = true;
    auto refs = Generate(o);
    ASSERT_TRUE(refs.ok()) << refs.status().ToString();
    std::vector<RefView> views;
    ASSERT_NO_FATAL_FAILURE(CheckCacheDir(
        o.out_dir, shape, o.compression,
        {.files_per_layer = 3, .rich = true, .file_size = 3000, .chunk_size = 1000}, &views));
    ASSERT_EQ(views.size(), 2u);
  }
}

TEST(GenEstargzTest, TocOfOneLayerInDetail) {
  TempDir tmp;
  GenOptions o = Options(tmp.path() / "c", Shape::kImageManifest, Compression::kEstargz);
  o.layers = 1;
  o.files = 1;
  o.file_size = 2000;
  o.estargz_chunk_size = 1024;
  o.rich = true;
  auto refs = Generate(o);
  ASSERT_TRUE(refs.ok()) << refs.status().ToString();
  fs::path blobs = fs::path(o.out_dir) / "blobs/sha256";
  Json manifest = Json::parse(ReadFile(blobs / (*refs)[0].manifest_digest.substr(7)));
  ASSERT_EQ(manifest["layers"].size(), 1u);
  std::string blob = ReadBlob(o.out_dir, manifest["layers"][0]);
  std::vector<GzipMember> members = GzipMembers(blob);
  const std::string& toc_tar = members[members.size() - 2].out;
  std::string toc_json = toc_tar.substr(512, std::stoull(toc_tar.substr(124, 11), nullptr, 8));
  EXPECT_EQ(
      toc_json.rfind("{\n\t\"version\": 1,\n\t\"entries\": [\n\t\t{\n\t\t\t\"name\": \"layer0/\",\n"
                     "\t\t\t\"type\": \"dir\",\n\t\t\t\"modtime\": \"2026-01-02T03:04:05Z\",\n"
                     "\t\t\t\"mode\": 493\n\t\t},\n",
                     0),
      0u)
      << toc_json.substr(0, 300);
  EXPECT_EQ(toc_json.substr(toc_json.size() - 5), "\n\t]\n}") << "no trailing newline";
  Json toc = Json::parse(toc_json);
  std::map<std::string, Json> first;  // name -> first entry
  int chunks = 0, want_chunks = 0;
  for (const Json& e : toc["entries"]) {
    first.emplace(e["name"].get<std::string>(), e);
    chunks += e["type"] == "chunk";
    if (e["type"] == "reg" && e.contains("size")) {
      want_chunks += static_cast<int>((e["size"].get<int64_t>() + 1023) / 1024) - 1;
    }
  }
  EXPECT_EQ(chunks, want_chunks);
  EXPECT_GE(chunks, 2) << "file0.bin and exact.bin: about 2000 bytes in 1024-byte chunks";
  const Json& dev = first.at("layer0/rich/chardev");
  EXPECT_EQ(dev["devMajor"], 1);
  EXPECT_EQ(dev["devMinor"], 3);
  EXPECT_FALSE(dev.contains("uid"));
  EXPECT_EQ(first.at("layer0/rich/blockdev")["groupName"], "disk");
  EXPECT_EQ(first.at("layer0/rich/xattrs")["xattrs"],
            Json::parse(
                R"({"user.comment":"d3JpdHRlbiBieSBidWlsZGNhY2hlZnMtZ2Vu","user.layer":"MA=="})"));
  EXPECT_EQ(first.at("layer0/rich/setuid")["mode"], 04755);
  EXPECT_EQ(first.at("layer0/rich/empty")["digest"],
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_FALSE(first.at("layer0/rich/empty").contains("offset"));
  // userName/groupName only where they change: the first uid-1000 entry has them.
  EXPECT_EQ(first.at("layer0/rich/")["userName"], "builder");
  EXPECT_FALSE(first.at("layer0/rich/plain.txt").contains("userName"));
  EXPECT_EQ(first.at("layer0/rich/doomed.txt")["userName"], "tester");
}

TEST(GenRichTest, EveryCompressionCarriesTheRichEntries) {
  TempDir tmp;
  for (Compression c : {Compression::kGzip, Compression::kZstd, Compression::kUncompressed,
                        Compression::kEstargz}) {
    SCOPED_TRACE(std::string(CompressionName(c)));
    GenOptions o = Options(tmp.path() / std::string(CompressionName(c)), Shape::kIndex, c);
    o.refs = 2;
    o.layers = 4;
    o.files = 2;
    o.file_size = 5000;
    o.rich = true;
    auto refs = Generate(o);
    ASSERT_TRUE(refs.ok()) << refs.status().ToString();
    std::vector<RefView> views;
    ASSERT_NO_FATAL_FAILURE(CheckCacheDir(
        o.out_dir, o.shape, c, {.files_per_layer = 2, .rich = true, .file_size = 5000}, &views));
  }
}

TEST(GenRichTest, SameSeedSameBytesAndRichChangesOnlyRichOutput) {
  TempDir tmp;
  GenOptions a = Options(tmp.path() / "a", Shape::kIndex, Compression::kEstargz);
  a.rich = true;
  a.estargz_chunk_size = 1500;
  GenOptions b = a;
  b.out_dir = (tmp.path() / "b").string();
  ASSERT_TRUE(Generate(a).ok());
  ASSERT_TRUE(Generate(b).ok());
  EXPECT_EQ(Tree(a.out_dir), Tree(b.out_dir));
  // A plain run is unaffected by the rich-only options.
  GenOptions plain = Options(tmp.path() / "p", Shape::kIndex, Compression::kGzip);
  GenOptions plain2 = plain;
  plain2.out_dir = (tmp.path() / "p2").string();
  plain2.estargz_chunk_size = 1500;
  ASSERT_TRUE(Generate(plain).ok());
  ASSERT_TRUE(Generate(plain2).ok());
  EXPECT_EQ(Tree(plain.out_dir), Tree(plain2.out_dir));
}

TEST(GenArgsTest, Defaults) {
  auto p = ParseArgs({"--out", "/tmp/x"});
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_FALSE(p->help);
  EXPECT_EQ(p->options.out_dir, "/tmp/x");
  EXPECT_EQ(p->options.shape, Shape::kImageManifest);
  EXPECT_EQ(p->options.compression, Compression::kGzip);
  EXPECT_EQ(p->options.refs, 1);
  EXPECT_EQ(p->options.layers, 3);
  EXPECT_EQ(p->options.files, 4);
  EXPECT_EQ(p->options.file_size, 4096);
  EXPECT_EQ(p->options.seed, 1u);
  EXPECT_EQ(p->options.estargz_chunk_size, 4 << 20);
  EXPECT_FALSE(p->options.rich);
  auto names = ResolveRefNames(p->options);
  ASSERT_TRUE(names.ok());
  EXPECT_THAT(*names, ElementsAre("latest"));
  GenOptions three;
  three.refs = 3;
  EXPECT_THAT(*ResolveRefNames(three), ElementsAre("latest", "ref1", "ref2"));
}

TEST(GenArgsTest, AllFlags) {
  auto p = ParseArgs({"--out=/o", "--shape", "manifest-list", "--compression=zstd", "--ref-names",
                      "a,feature/x", "--layers", "7", "--files=0", "--file-size", "10", "--seed",
                      "18446744073709551615"});
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->options.shape, Shape::kManifestList);
  EXPECT_EQ(p->options.compression, Compression::kZstd);
  EXPECT_EQ(p->options.refs, 2);
  EXPECT_THAT(p->options.ref_names, ElementsAre("a", "feature/x"));
  EXPECT_EQ(p->options.layers, 7);
  EXPECT_EQ(p->options.files, 0);
  EXPECT_EQ(p->options.file_size, 10);
  EXPECT_EQ(p->options.seed, 18446744073709551615u);
  EXPECT_TRUE(ParseArgs({"--help"})->help);
  p = ParseArgs({"--out", "o", "--compression", "estargz", "--estargz-chunk-size=65536", "--rich"});
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->options.compression, Compression::kEstargz);
  EXPECT_EQ(p->options.estargz_chunk_size, 65536);
  EXPECT_TRUE(p->options.rich);
}

TEST(GenArgsTest, Errors) {
  auto msg = [](std::vector<std::string> args) {
    auto p = ParseArgs(args);
    return p.ok() ? std::string("OK") : p.status().message();
  };
  EXPECT_THAT(msg({}), HasSubstr("--out"));
  EXPECT_THAT(msg({"--out", "d", "--shape", "oci"}), HasSubstr("--shape"));
  EXPECT_THAT(msg({"--out", "d", "--compression", "lz4"}), HasSubstr("--compression"));
  EXPECT_THAT(msg({"--out", "d", "--refs", "x"}), HasSubstr("--refs"));
  EXPECT_THAT(msg({"--out", "d", "--refs", "0"}), HasSubstr("--refs"));
  EXPECT_THAT(msg({"--out", "d", "--layers", "0"}), HasSubstr("--layers"));
  EXPECT_THAT(msg({"--out", "d", "--files", "-1"}), HasSubstr("--files"));
  EXPECT_THAT(msg({"--out", "d", "--file-size", "1k"}), HasSubstr("--file-size"));
  EXPECT_THAT(msg({"--out", "d", "--seed", "-3"}), HasSubstr("--seed"));
  EXPECT_THAT(msg({"--out", "d", "--refs", "3", "--ref-names", "a,b"}), HasSubstr("--ref-names"));
  EXPECT_THAT(msg({"--out", "d", "--ref-names", "a,a"}), HasSubstr("twice"));
  EXPECT_THAT(msg({"--out", "d", "--ref-names", "a,,b"}), HasSubstr("empty"));
  EXPECT_THAT(msg({"--out", "d", "--ref-names", "a<b"}), HasSubstr("character"));
  EXPECT_THAT(msg({"--out", "d", "--bogus"}), HasSubstr("--bogus"));
  EXPECT_THAT(msg({"--out"}), HasSubstr("needs a value"));
  EXPECT_THAT(msg({"--out", "d", "--estargz-chunk-size", "0"}), HasSubstr("--estargz-chunk-size"));
  EXPECT_THAT(msg({"--out", "d", "--estargz-chunk-size"}), HasSubstr("needs a value"));
  EXPECT_THAT(msg({"--out", "d", "--rich=yes"}), HasSubstr("--rich takes no value"));
}

#ifdef BCFS_GEN_BINARY
struct RunResult {
  int exit_code = -1;
  std::string out;
};

RunResult RunGen(const std::string& args, const fs::path& stderr_file) {
  RunResult r;
  std::string cmd = std::string(BCFS_GEN_BINARY) + " " + args + " 2>" + stderr_file.string();
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
  int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

TEST(GenCliTest, PrintsOneLinePerRef) {
  TempDir tmp;
  fs::path out = tmp.path() / "cache";
  RunResult r =
      RunGen("--out " + out.string() + " --refs 2 --ref-names latest,feature/x --shape index",
             tmp.path() / "err");
  ASSERT_EQ(r.exit_code, 0) << ReadFile(tmp.path() / "err");
  std::vector<RefView> views;
  ASSERT_NO_FATAL_FAILURE(CheckCacheDir(out, Shape::kIndex, Compression::kGzip, {}, &views));
  ASSERT_EQ(views.size(), 2u);
  EXPECT_EQ(r.out, "latest " + views[0].manifest_digest + "\nfeature/x " +
                       views[1].manifest_digest + "\n");
}

// GNU tar reads an eStargz blob as a plain tar.gz and stops before the TOC.
TEST(GenCliTest, EstargzRichLayersAreTarGzForGnuTar) {
  TempDir tmp;
  fs::path out = tmp.path() / "cache";
  RunResult r = RunGen("--out " + out.string() +
                           " --compression estargz --estargz-chunk-size 4096 --rich --layers 2",
                       tmp.path() / "err");
  ASSERT_EQ(r.exit_code, 0) << ReadFile(tmp.path() / "err");
  int layers = 0;
  for (const auto& e : fs::directory_iterator(out / "blobs/sha256")) {
    std::string bytes = ReadFile(e.path());
    if (bytes.substr(0, 2) != "\x1f\x8b") continue;
    ++layers;
    std::string cmd = "tar -tzf " + e.path().string() + " 2>&1";
    FILE* p = ::popen(cmd.c_str(), "r");
    ASSERT_NE(p, nullptr);
    std::string listing;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) listing.append(buf, n);
    int status = ::pclose(p);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << listing;
    EXPECT_THAT(listing, HasSubstr("/rich/long-name-0123456789"));
    EXPECT_THAT(listing, HasSubstr("/rich/fifo\n"));
    EXPECT_THAT(listing, ::testing::Not(HasSubstr("stargz.index.json")));
  }
  EXPECT_EQ(layers, 2);
}

TEST(GenCliTest, BadArgumentsExitOne) {
  TempDir tmp;
  RunResult r =
      RunGen("--out " + (tmp.path() / "c").string() + " --shape nope", tmp.path() / "err");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_THAT(ReadFile(tmp.path() / "err"), HasSubstr("buildcachefs-gen: --shape"));
  r = RunGen("--help", tmp.path() / "err");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("usage: buildcachefs-gen --out DIR"));
}
#endif

}  // namespace
}  // namespace bcfs::gen
