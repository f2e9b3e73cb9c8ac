// Tests of the tar indexer. Archives are built in memory with libarchive's
// writer (pax, pax_restricted, gnutar, ustar) or by hand where libarchive
// cannot write the variant (GNU old sparse, pax sparse 0.0/0.1, base-256
// fields, hostile headers); real BuildKit layers are compared with libarchive's
// reader, an independent route over the same bytes.
#include "formats/tar.h"

#include <archive.h>
#include <archive_entry.h>
#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <clocale>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <sstream>

#include "tests/testing.h"

namespace bcfs::formats {
namespace {

namespace fs = std::filesystem;

constexpr char kDoc[] = "layer t";

// ---------------------------------------------------------------------------
// Writing archives with libarchive.

struct Spec {
  std::string path;
  unsigned filetype = AE_IFREG;  // AE_IFREG, AE_IFDIR, AE_IFLNK, AE_IFCHR, AE_IFBLK, AE_IFIFO
  unsigned perm = 0644;
  int64_t uid = 0, gid = 0;
  std::string uname, gname;
  int64_t mtime = 1700000000;
  long mtime_nsec = 0;
  std::string content;  // regular files: the logical content (holes included)
  std::string symlink;
  std::string hardlink;
  unsigned dev_major = 0, dev_minor = 0;
  std::vector<std::pair<std::string, std::string>> xattrs;
  std::vector<std::pair<int64_t, int64_t>>
      sparse;  // data regions for archive_entry_sparse_add_entry
};

la_ssize_t AppendToString(struct archive*, void* client, const void* buf, size_t n) {
  static_cast<std::string*>(client)->append(static_cast<const char*>(buf), n);
  return static_cast<la_ssize_t>(n);
}

// format: ARCHIVE_FORMAT_TAR_PAX_INTERCHANGE, _PAX_RESTRICTED, _GNUTAR or _USTAR.
std::string WriteTar(int format, const std::vector<Spec>& specs, const char* options = nullptr) {
  std::setlocale(LC_CTYPE, "C.UTF-8");  // libarchive converts names through the locale
  std::string out;
  struct archive* a = archive_write_new();
  EXPECT_EQ(archive_write_set_format(a, format), ARCHIVE_OK) << archive_error_string(a);
  if (options != nullptr) {
    EXPECT_EQ(archive_write_set_options(a, options), ARCHIVE_OK) << archive_error_string(a);
  }
  EXPECT_EQ(archive_write_set_bytes_per_block(a, 0), ARCHIVE_OK);
  EXPECT_EQ(archive_write_open(a, &out, nullptr, AppendToString, nullptr), ARCHIVE_OK);
  for (const Spec& s : specs) {
    struct archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, s.path.c_str());
    archive_entry_set_filetype(e, s.filetype);
    archive_entry_set_perm(e, s.perm);
    archive_entry_set_uid(e, s.uid);
    archive_entry_set_gid(e, s.gid);
    if (!s.uname.empty()) archive_entry_set_uname(e, s.uname.c_str());
    if (!s.gname.empty()) archive_entry_set_gname(e, s.gname.c_str());
    archive_entry_set_mtime(e, s.mtime, s.mtime_nsec);
    if (!s.symlink.empty()) archive_entry_set_symlink(e, s.symlink.c_str());
    if (!s.hardlink.empty()) archive_entry_set_hardlink(e, s.hardlink.c_str());
    if (s.filetype == AE_IFCHR || s.filetype == AE_IFBLK) {
      archive_entry_set_rdevmajor(e, s.dev_major);
      archive_entry_set_rdevminor(e, s.dev_minor);
    }
    for (const auto& [k, v] : s.xattrs)
      archive_entry_xattr_add_entry(e, k.c_str(), v.data(), v.size());
    bool has_data = s.filetype == AE_IFREG && s.hardlink.empty();
    archive_entry_set_size(e, has_data ? static_cast<int64_t>(s.content.size()) : 0);
    // After the size: libarchive drops regions that end past it.
    for (const auto& [off, len] : s.sparse) archive_entry_sparse_add_entry(e, off, len);
    EXPECT_EQ(archive_write_header(a, e), ARCHIVE_OK) << s.path << ": " << archive_error_string(a);
    if (has_data && !s.content.empty()) {
      EXPECT_EQ(archive_write_data(a, s.content.data(), s.content.size()),
                static_cast<la_ssize_t>(s.content.size()));
    }
    archive_entry_free(e);
  }
  EXPECT_EQ(archive_write_close(a), ARCHIVE_OK);
  archive_write_free(a);
  return out;
}

// ---------------------------------------------------------------------------
// Writing archives by hand, for what libarchive does not write.

void PutString(std::string* block, size_t off, std::string_view s) {
  std::memcpy(block->data() + off, s.data(), s.size());
}

// len-1 octal digits and a NUL, as tar writers fill numeric fields.
void PutOctal(std::string* block, size_t off, size_t len, uint64_t v) {
  std::string digits(len - 1, '0');
  for (size_t i = len - 1; i-- > 0 && v != 0; v >>= 3) digits[i] = static_cast<char>('0' + (v & 7));
  PutString(block, off, digits);
  (*block)[off + len - 1] = '\0';
}

// GNU base-256: 0x80 (0xff when negative) then the two's complement big-endian.
void PutBase256(std::string* block, size_t off, size_t len, int64_t v) {
  for (size_t i = len, shift = 0; i-- > 1; shift += 8) {
    (*block)[off + i] = static_cast<char>((v >> std::min<size_t>(shift, 63)) & 0xff);
  }
  (*block)[off] = static_cast<char>(v < 0 ? 0xff : 0x80);
}

enum class Magic { kUstar, kGnu, kV7 };

struct Raw {
  std::string name;
  char type = '0';
  uint64_t size = 0;
  uint64_t mode = 0644;
  uint64_t uid = 0, gid = 0;
  uint64_t mtime = 1700000000;
  std::string linkname;
  Magic magic = Magic::kUstar;
  std::string uname, gname;
  std::string prefix;
  uint64_t dev_major = 0, dev_minor = 0;
};

void SetChecksum(std::string* block) {
  std::memset(block->data() + 148, ' ', 8);
  unsigned sum = 0;
  for (unsigned char c : *block) sum += c;
  PutOctal(block, 148, 7, sum);
  (*block)[155] = ' ';
}

std::string HeaderBlock(const Raw& r, const std::function<void(std::string*)>& tweak = nullptr) {
  std::string b(512, '\0');
  PutString(&b, 0, r.name.substr(0, 100));
  PutOctal(&b, 100, 8, r.mode);
  PutOctal(&b, 108, 8, r.uid);
  PutOctal(&b, 116, 8, r.gid);
  PutOctal(&b, 124, 12, r.size);
  PutOctal(&b, 136, 12, r.mtime);
  b[156] = r.type;
  PutString(&b, 157, r.linkname.substr(0, 100));
  if (r.magic == Magic::kUstar) {
    PutString(&b, 257,
              std::string_view("ustar\0"
                               "00",
                               8));
  } else if (r.magic == Magic::kGnu) {
    PutString(&b, 257, std::string_view("ustar  \0", 8));
  }
  if (r.magic != Magic::kV7) {
    PutString(&b, 265, r.uname);
    PutString(&b, 297, r.gname);
    PutOctal(&b, 329, 8, r.dev_major);
    PutOctal(&b, 337, 8, r.dev_minor);
  }
  if (r.magic == Magic::kUstar) PutString(&b, 345, r.prefix);
  if (tweak) tweak(&b);
  SetChecksum(&b);
  return b;
}

std::string Padded(std::string data) {
  data.resize((data.size() + 511) / 512 * 512, '\0');
  return data;
}

// A pax record with a correct length prefix.
std::string PaxRecord(const std::string& key, const std::string& value) {
  std::string kv = " " + key + "=" + value + "\n";
  size_t len = kv.size() + 1;
  while (std::to_string(len).size() + kv.size() != len) ++len;
  return std::to_string(len) + kv;
}

std::string PaxHeader(const std::string& body, char type = 'x') {
  Raw r;
  r.name = "PaxHeaders/x";
  r.type = type;
  r.size = body.size();
  return HeaderBlock(r) + Padded(body);
}

std::string FileEntry(const std::string& name, const std::string& content,
                      Magic m = Magic::kUstar) {
  Raw r;
  r.name = name;
  r.size = content.size();
  r.magic = m;
  return HeaderBlock(r) + Padded(content);
}

const std::string kEnd(1024, '\0');

// ---------------------------------------------------------------------------
// Indexing and reading back.

struct Indexed {
  Status feed;
  Status finish;
  std::vector<TarEntry> entries;
  std::vector<std::string> warnings;
  bool done = false;
};

// Feeds the stream in pieces whose sizes come from next_size.
Indexed IndexWith(std::string_view tar, const std::function<size_t()>& next_size) {
  TarIndexer ix(kDoc);
  Indexed out;
  size_t pos = 0;
  while (pos < tar.size() && out.feed.ok()) {
    size_t n = std::min(next_size(), tar.size() - pos);
    out.feed = ix.Feed(tar.substr(pos, n));
    pos += n;
    for (TarEntry& e : ix.TakeEntries()) out.entries.push_back(std::move(e));
  }
  out.finish = out.feed.ok() ? ix.Finish() : out.feed;
  for (TarEntry& e : ix.TakeEntries()) out.entries.push_back(std::move(e));
  out.warnings = ix.warnings();
  out.done = ix.done();
  return out;
}

Indexed Index(std::string_view tar) {
  return IndexWith(tar, [&tar] { return tar.size() + 1; });
}

Indexed IndexOk(std::string_view tar) {
  Indexed r = Index(tar);
  EXPECT_TRUE(r.feed.ok()) << r.feed.message();
  EXPECT_TRUE(r.finish.ok()) << r.finish.message();
  return r;
}

// The logical content of a regular file, read by offset from the stream.
std::string ReadContent(std::string_view tar, const TarEntry& e) {
  if (e.sparse.empty()) {
    if (e.data_offset + e.size > tar.size()) return "<out of range>";
    return std::string(tar.substr(e.data_offset, e.size));
  }
  std::string out(e.size, '\0');
  for (const TarSparseChunk& c : e.sparse) {
    if (c.stream_offset + c.length > tar.size() || c.logical_offset + c.length > e.size) {
      return "<chunk out of range>";
    }
    std::memcpy(out.data() + c.logical_offset, tar.data() + c.stream_offset, c.length);
  }
  return out;
}

std::string Pattern(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>('a' + rng() % 26);
  return s;
}

// What libarchive's reader says about the same bytes.
struct LaEntry {
  std::string path;  // cleaned like TarEntry::path
  TarType type = TarType::kFile;
  uint32_t mode = 0;
  int64_t uid = 0, gid = 0;
  std::string uname, gname;
  int64_t mtime_sec = 0;
  long mtime_nsec = 0;
  int64_t size = 0;
  std::string link_target;
  unsigned dev_major = 0, dev_minor = 0;
  std::vector<std::pair<std::string, std::string>> xattrs;  // deduplicated, first position
  int64_t header_position = 0;
  std::string content;
};

std::vector<LaEntry> ReadWithLibarchive(std::string_view bytes, std::string* error) {
  std::vector<LaEntry> out;
  struct archive* a = archive_read_new();
  archive_read_support_format_tar(a);
  archive_read_support_filter_gzip(a);
  if (archive_read_open_memory(a, bytes.data(), bytes.size()) != ARCHIVE_OK) {
    *error = archive_error_string(a);
    archive_read_free(a);
    return out;
  }
  struct archive_entry* e = nullptr;
  int r;
  while ((r = archive_read_next_header(a, &e)) == ARCHIVE_OK || r == ARCHIVE_WARN) {
    LaEntry l;
    l.header_position = archive_read_header_position(a);
    Result<std::string> path = CleanTarPath(archive_entry_pathname(e));
    l.path = path.ok() ? *path : std::string("<bad path>");
    const char* hardlink = archive_entry_hardlink(e);
    switch (archive_entry_filetype(e)) {
      case AE_IFDIR:
        l.type = TarType::kDir;
        break;
      case AE_IFLNK:
        l.type = TarType::kSymlink;
        l.link_target = archive_entry_symlink(e);
        break;
      case AE_IFCHR:
        l.type = TarType::kChar;
        break;
      case AE_IFBLK:
        l.type = TarType::kBlock;
        break;
      case AE_IFIFO:
        l.type = TarType::kFifo;
        break;
      default:
        l.type = TarType::kFile;
    }
    if (hardlink != nullptr) {
      l.type = TarType::kHardlink;
      Result<std::string> target = CleanTarPath(hardlink);
      l.link_target = target.ok() ? *target : std::string("<bad target>");
    }
    if (l.type == TarType::kChar || l.type == TarType::kBlock) {
      l.dev_major = archive_entry_rdevmajor(e);
      l.dev_minor = archive_entry_rdevminor(e);
    }
    l.mode = archive_entry_perm(e);
    l.uid = archive_entry_uid(e);
    l.gid = archive_entry_gid(e);
    if (archive_entry_uname(e) != nullptr) l.uname = archive_entry_uname(e);
    if (archive_entry_gname(e) != nullptr) l.gname = archive_entry_gname(e);
    l.mtime_sec = archive_entry_mtime(e);
    l.mtime_nsec = archive_entry_mtime_nsec(e);
    l.size = archive_entry_size(e);
    archive_entry_xattr_reset(e);
    const char* name;
    const void* value;
    size_t size;
    while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK) {
      std::string v(static_cast<const char*>(value), size);
      auto it = std::find_if(l.xattrs.begin(), l.xattrs.end(),
                             [&](const auto& kv) { return kv.first == name; });
      if (it == l.xattrs.end()) {
        l.xattrs.emplace_back(name, v);
      } else {
        it->second = v;
      }
    }
    if (l.type == TarType::kFile) {
      char buf[65536];
      la_ssize_t n;
      while ((n = archive_read_data(a, buf, sizeof(buf))) > 0) l.content.append(buf, n);
      if (n < 0) *error = archive_error_string(a);
      l.content.resize(static_cast<size_t>(l.size), '\0');  // a trailing hole
    }
    out.push_back(std::move(l));
  }
  if (r != ARCHIVE_EOF) *error = archive_error_string(a);
  archive_read_free(a);
  return out;
}

// Checks the index against libarchive's reading of the same bytes: every
// field both know, and the bytes of every regular file.
void ExpectSameAsLibarchive(std::string_view tar, const std::vector<TarEntry>& entries,
                            const std::string& what) {
  std::string error;
  std::vector<LaEntry> la = ReadWithLibarchive(tar, &error);
  ASSERT_EQ(error, "") << what;
  ASSERT_EQ(entries.size(), la.size()) << what;
  for (size_t i = 0; i < la.size(); ++i) {
    const TarEntry& e = entries[i];
    const LaEntry& l = la[i];
    SCOPED_TRACE(what + " entry " + std::to_string(i) + " " + l.path);
    EXPECT_EQ(e.path, l.path);
    EXPECT_EQ(e.type, l.type);
    EXPECT_EQ(e.mode, l.mode);
    EXPECT_EQ(e.uid, l.uid);
    EXPECT_EQ(e.gid, l.gid);
    EXPECT_EQ(e.uname, l.uname);
    EXPECT_EQ(e.gname, l.gname);
    EXPECT_EQ(e.mtime_sec, l.mtime_sec);
    EXPECT_EQ(e.mtime_nsec, l.mtime_nsec);
    EXPECT_EQ(e.link_target, l.link_target);
    EXPECT_EQ(e.dev_major, l.dev_major);
    EXPECT_EQ(e.dev_minor, l.dev_minor);
    // libarchive lists xattrs in reverse archive order; compare as sets.
    auto sorted = [](auto v) {
      std::sort(v.begin(), v.end());
      return v;
    };
    EXPECT_EQ(sorted(e.xattrs), sorted(l.xattrs));
    EXPECT_EQ(static_cast<int64_t>(e.header_offset), l.header_position);
    if (e.type == TarType::kFile) {
      EXPECT_EQ(static_cast<int64_t>(e.size), l.size);
      EXPECT_TRUE(ReadContent(tar, e) == l.content) << "content differs";
    }
  }
}

std::string ReadFile(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// ---------------------------------------------------------------------------
// The rich archive: every kind of entry and attribute.

const std::string kCap(
    "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 20);
const std::string kLongName100 = "long/" + std::string(150, 'a');
const std::string kLongName255 = "long/" + std::string(100, 'b') + "/" + std::string(200, 'c');
const std::string kLongTarget = "../" + std::string(300, 't');
const std::string kUnicode = "data/ünïcödé-文件-😀.txt";

std::vector<Spec> RichSpecs() {
  std::vector<Spec> s;
  s.push_back({.path = "dir/",
               .filetype = AE_IFDIR,
               .perm = 01777,
               .uid = 1000,
               .gid = 1001,
               .uname = "alice",
               .gname = "staff",
               .mtime = 1700000000,
               .mtime_nsec = 123456789});
  s.push_back({.path = "dir/setuid",
               .perm = 04755,
               .uid = 0,
               .gid = 0,
               .uname = "root",
               .gname = "root",
               .mtime = 1700000001,
               .mtime_nsec = 500,
               .content = "#!/bin/sh\necho hi\n",
               .xattrs = {{"user.comment", "hello"}, {"security.capability", kCap}}});
  s.push_back({.path = "dir/setgid-empty", .perm = 02750, .uid = 7, .gid = 8});
  s.push_back({.path = "dir/big", .perm = 0600, .content = Pattern(5000, 1)});
  s.push_back({.path = "dir/link", .filetype = AE_IFLNK, .perm = 0777, .symlink = "../target x"});
  s.push_back({.path = "dir/hard", .perm = 04755, .hardlink = "dir/setuid"});
  s.push_back(
      {.path = "dev/null", .filetype = AE_IFCHR, .perm = 0666, .dev_major = 1, .dev_minor = 3});
  s.push_back(
      {.path = "dev/sda", .filetype = AE_IFBLK, .perm = 0660, .dev_major = 8, .dev_minor = 0});
  s.push_back({.path = "run/fifo", .filetype = AE_IFIFO, .perm = 0600});
  s.push_back({.path = kLongName100, .content = "long one"});
  s.push_back({.path = kLongName255, .content = "long two"});
  s.push_back({.path = "dir/longlink", .filetype = AE_IFLNK, .perm = 0777, .symlink = kLongTarget});
  s.push_back({.path = kUnicode, .content = "ünï\n"});
  s.push_back({.path = "data/.wh.deleted", .perm = 0});
  s.push_back({.path = "data/.wh..wh..opq", .perm = 0});
  return s;
}

// Every field of the rich archive, whatever the format could store.
void ExpectRichEntries(std::string_view tar, const std::vector<TarEntry>& entries,
                       uint32_t dir_nsec, uint32_t file_nsec, bool has_xattrs) {
  ASSERT_EQ(entries.size(), 15u);
  const TarEntry& dir = entries[0];
  EXPECT_EQ(dir.path, "dir");
  EXPECT_EQ(dir.type, TarType::kDir);
  EXPECT_EQ(dir.mode, 01777u);
  EXPECT_EQ(dir.uid, 1000u);
  EXPECT_EQ(dir.gid, 1001u);
  EXPECT_EQ(dir.uname, "alice");
  EXPECT_EQ(dir.gname, "staff");
  EXPECT_EQ(dir.mtime_sec, 1700000000);
  EXPECT_EQ(dir.mtime_nsec, dir_nsec);
  EXPECT_EQ(dir.size, 0u);
  EXPECT_EQ(dir.data_offset, 0u);
  EXPECT_EQ(dir.header_offset, 0u);
  EXPECT_TRUE(dir.sparse.empty());
  EXPECT_TRUE(dir.xattrs.empty());

  const TarEntry& su = entries[1];
  EXPECT_EQ(su.path, "dir/setuid");
  EXPECT_EQ(su.type, TarType::kFile);
  EXPECT_EQ(su.mode, 04755u);
  EXPECT_EQ(su.uname, "root");
  EXPECT_EQ(su.mtime_sec, 1700000001);
  EXPECT_EQ(su.mtime_nsec, file_nsec);
  EXPECT_EQ(su.size, 18u);
  EXPECT_EQ(ReadContent(tar, su), "#!/bin/sh\necho hi\n");
  if (has_xattrs) {
    // In archive order, which is the reverse of the order they were added in
    // (libarchive keeps them in a list it prepends to).
    EXPECT_LT(tar.find("SCHILY.xattr.security.capability"), tar.find("SCHILY.xattr.user.comment"));
    std::vector<std::pair<std::string, std::string>> want = {{"security.capability", kCap},
                                                             {"user.comment", "hello"}};
    EXPECT_EQ(su.xattrs, want);
  }

  EXPECT_EQ(entries[2].path, "dir/setgid-empty");
  EXPECT_EQ(entries[2].mode, 02750u);
  EXPECT_EQ(entries[2].uid, 7u);
  EXPECT_EQ(entries[2].gid, 8u);
  EXPECT_EQ(entries[2].size, 0u);
  EXPECT_EQ(ReadContent(tar, entries[2]), "");

  EXPECT_EQ(entries[3].path, "dir/big");
  EXPECT_EQ(entries[3].size, 5000u);
  EXPECT_EQ(ReadContent(tar, entries[3]), Pattern(5000, 1));

  EXPECT_EQ(entries[4].type, TarType::kSymlink);
  EXPECT_EQ(entries[4].link_target, "../target x");
  EXPECT_EQ(entries[4].mode, 0777u);
  EXPECT_EQ(entries[4].size, 0u);

  EXPECT_EQ(entries[5].path, "dir/hard");
  EXPECT_EQ(entries[5].type, TarType::kHardlink);
  EXPECT_EQ(entries[5].link_target, "dir/setuid");
  EXPECT_EQ(entries[5].size, 0u);
  EXPECT_EQ(entries[5].mode, 04755u);

  EXPECT_EQ(entries[6].path, "dev/null");
  EXPECT_EQ(entries[6].type, TarType::kChar);
  EXPECT_EQ(entries[6].dev_major, 1u);
  EXPECT_EQ(entries[6].dev_minor, 3u);
  EXPECT_EQ(entries[6].mode, 0666u);
  EXPECT_EQ(entries[7].type, TarType::kBlock);
  EXPECT_EQ(entries[7].dev_major, 8u);
  EXPECT_EQ(entries[7].dev_minor, 0u);
  EXPECT_EQ(entries[8].path, "run/fifo");
  EXPECT_EQ(entries[8].type, TarType::kFifo);
  EXPECT_EQ(entries[8].mode, 0600u);

  EXPECT_EQ(entries[9].path, kLongName100);
  EXPECT_EQ(ReadContent(tar, entries[9]), "long one");
  EXPECT_EQ(entries[10].path, kLongName255);
  EXPECT_EQ(ReadContent(tar, entries[10]), "long two");
  EXPECT_EQ(entries[11].link_target, kLongTarget);
  EXPECT_EQ(entries[12].path, kUnicode);
  EXPECT_EQ(ReadContent(tar, entries[12]), "ünï\n");
  EXPECT_EQ(entries[13].path, "data/.wh.deleted");
  EXPECT_EQ(entries[13].mode, 0u);
  EXPECT_EQ(entries[14].path, "data/.wh..wh..opq");

  // Entries are contiguous: each one's headers start where the previous
  // entry's data (padded) ended, and a header block sits right before data.
  for (size_t i = 0; i < entries.size(); ++i) {
    const TarEntry& e = entries[i];
    EXPECT_LT(e.header_offset, tar.size());
    EXPECT_EQ(e.header_offset % 512, 0u);
    if (e.type == TarType::kFile) {
      EXPECT_GT(e.data_offset, e.header_offset) << e.path;
      EXPECT_EQ(e.data_offset % 512, 0u);
      if (i + 1 < entries.size()) {
        EXPECT_EQ(entries[i + 1].header_offset, (e.data_offset + e.size + 511) / 512 * 512)
            << e.path;
      }
    }
  }
}

TEST(TarIndexer, PaxArchiveGivesEveryFieldAndTheBytes) {
  std::string tar = WriteTar(ARCHIVE_FORMAT_TAR_PAX_INTERCHANGE, RichSpecs());
  Indexed r = IndexOk(tar);
  EXPECT_TRUE(r.done);
  EXPECT_TRUE(r.warnings.empty());
  ExpectRichEntries(tar, r.entries, /*dir_nsec=*/123456789, /*file_nsec=*/500,
                    /*has_xattrs=*/true);
  ExpectSameAsLibarchive(tar, r.entries, "pax");
}

TEST(TarIndexer, PaxRestrictedArchive) {
  std::string tar = WriteTar(ARCHIVE_FORMAT_TAR_PAX_RESTRICTED, RichSpecs());
  Indexed r = IndexOk(tar);
  // Restricted pax writes an extended header only where ustar cannot hold
  // the entry: not for the directory's nanoseconds, but for the xattrs of
  // the setuid file (and then its mtime goes there with nanoseconds).
  ExpectRichEntries(tar, r.entries, /*dir_nsec=*/0, /*file_nsec=*/500, /*has_xattrs=*/true);
  ExpectSameAsLibarchive(tar, r.entries, "pax_restricted");
  EXPECT_EQ(tar[156], '5');
  EXPECT_EQ(tar[r.entries[1].header_offset + 156], 'x');
  EXPECT_EQ(tar[r.entries[2].header_offset + 156], '0');
}

TEST(TarIndexer, GnuTarArchiveUsesLongNameAndLongLinkHeaders) {
  std::vector<Spec> specs = RichSpecs();
  specs[0].uid = 4000000000;  // over 7 octal digits: base-256
  std::string tar = WriteTar(ARCHIVE_FORMAT_TAR_GNUTAR, specs);
  EXPECT_EQ(static_cast<uint8_t>(tar[108]), 0x80u);
  Indexed r = IndexOk(tar);
  ASSERT_EQ(r.entries.size(), 15u);
  EXPECT_EQ(r.entries[0].uid, 4000000000u);
  ExpectSameAsLibarchive(tar, r.entries, "gnutar");
  r.entries[0].uid = 1000;
  ExpectRichEntries(tar, r.entries, /*dir_nsec=*/0, /*file_nsec=*/0, /*has_xattrs=*/false);
  EXPECT_TRUE(r.entries[1].xattrs.empty());
  // The long names sit in 'L' and 'K' entries before the entry's header.
  EXPECT_EQ(tar[r.entries[9].header_offset + 156], 'L');
  EXPECT_EQ(tar[r.entries[11].header_offset + 156], 'K');
}

TEST(TarIndexer, UstarSplitsLongPathsIntoPrefixAndName) {
  std::string path = std::string(120, 'p') + "/" + std::string(90, 'n');
  std::string tar =
      WriteTar(ARCHIVE_FORMAT_TAR_USTAR, {{.path = path, .uid = 5, .uname = "u", .content = "x"},
                                          {.path = "/abs/./file", .content = "y"}});
  // libarchive keeps the leading '/' in ustar; the index cleans it away.
  Indexed r = IndexOk(tar);
  ASSERT_EQ(r.entries.size(), 2u);
  EXPECT_EQ(r.entries[0].path, path);
  EXPECT_EQ(r.entries[0].uid, 5u);
  EXPECT_EQ(r.entries[0].uname, "u");
  EXPECT_EQ(r.entries[0].header_offset, 0u);
  EXPECT_EQ(r.entries[0].data_offset, 512u);
  EXPECT_EQ(std::string(tar.substr(345, 120)), std::string(120, 'p'));
  EXPECT_EQ(r.entries[1].path, "abs/file");
  EXPECT_EQ(r.entries[1].header_offset, 1024u);
  EXPECT_EQ(r.entries[1].data_offset, 1536u);
  EXPECT_EQ(ReadContent(tar, r.entries[1]), "y");
}

TEST(TarIndexer, XattrsFromLibarchiveHeadersOnlyAreBase64AndUrlDecoded) {
  std::string binary("\x00\xff\x10=\n", 5);
  std::vector<Spec> specs = {
      {.path = "f", .content = "c", .xattrs = {{"user.a b=c%", binary}, {"user.empty", ""}}}};
  for (const char* opt : {"xattrheader=LIBARCHIVE", "xattrheader=SCHILY", "xattrheader=ALL"}) {
    SCOPED_TRACE(opt);
    std::string tar = WriteTar(ARCHIVE_FORMAT_TAR_PAX_INTERCHANGE, specs, opt);
    Indexed r = IndexOk(tar);
    ASSERT_EQ(r.entries.size(), 1u);
    std::vector<std::pair<std::string, std::string>> want = {{"user.empty", ""},
                                                             {"user.a b=c%", binary}};
    if (std::string(opt) == "xattrheader=SCHILY") {
      // libarchive 3.6 %-encodes the name under SCHILY.xattr too; alone, a
      // SCHILY name is kept as stored, as GNU tar, Go and libarchive read it.
      want[1].first = "user.a%20b%3Dc%25";
    }
    EXPECT_EQ(r.entries[0].xattrs, want);
  }
}

// ---------------------------------------------------------------------------
// Sparse files.

// A 1 MiB file with three data regions, the last one at the very end.
struct SparseFile {
  std::string content;
  std::vector<std::pair<int64_t, int64_t>> regions;
};

SparseFile MakeSparse() {
  SparseFile f;
  f.content.assign((1 << 20) + 5, '\0');
  f.regions = {{0, 100}, {65536, 5000}, {(1 << 20), 5}};
  uint32_t seed = 10;
  for (auto [off, len] : f.regions) {
    std::string p = Pattern(static_cast<size_t>(len), seed++);
    std::memcpy(f.content.data() + off, p.data(), p.size());
  }
  return f;
}

TEST(TarIndexer, PaxSparse10MapIsReadFromTheData) {
  SparseFile f = MakeSparse();
  std::string tar =
      WriteTar(ARCHIVE_FORMAT_TAR_PAX_INTERCHANGE,
               {{.path = "a", .content = "before"},
                {.path = "dir/sparse", .perm = 0640, .content = f.content, .sparse = f.regions},
                {.path = "b", .content = "after"}});
  Indexed r = IndexOk(tar);
  ASSERT_EQ(r.entries.size(), 3u);
  const TarEntry& e = r.entries[1];
  EXPECT_EQ(e.path, "dir/sparse");  // GNU.sparse.name, not the GNUSparseFile.0/ name
  EXPECT_EQ(e.type, TarType::kFile);
  EXPECT_EQ(e.mode, 0640u);
  EXPECT_EQ(e.size, f.content.size());
  ASSERT_EQ(e.sparse.size(), 3u);
  EXPECT_EQ(e.sparse[0], (TarSparseChunk{0, 100, e.data_offset}));
  EXPECT_EQ(e.sparse[1], (TarSparseChunk{65536, 5000, e.data_offset + 100}));
  EXPECT_EQ(e.sparse[2], (TarSparseChunk{1 << 20, 5, e.data_offset + 5100}));
  // The map ("3\n0\n100\n...") fills the first data block.
  EXPECT_EQ(tar.substr(e.data_offset - 512, 8), "3\n0\n100\n");
  EXPECT_TRUE(ReadContent(tar, e) == f.content);
  EXPECT_EQ(ReadContent(tar, r.entries[2]), "after");
  ExpectSameAsLibarchive(tar, r.entries, "pax sparse");
}

TEST(TarIndexer, GnuTarFromLibarchiveStoresSparseFilesWhole) {
  // libarchive's gnutar writer ignores the sparse map and writes every byte.
  SparseFile f = MakeSparse();
  std::string tar = WriteTar(ARCHIVE_FORMAT_TAR_GNUTAR,
                             {{.path = "s", .content = f.content, .sparse = f.regions}});
  Indexed r = IndexOk(tar);
  ASSERT_EQ(r.entries.size(), 1u);
  EXPECT_TRUE(r.entries[0].sparse.empty());
  EXPECT_EQ(r.entries[0].size, f.content.size());
  EXPECT_TRUE(ReadContent(tar, r.entries[0]) == f.content);
}

// GNU old sparse: 'S' header with 4 chunks, extension blocks of 21 more.
std::string OldGnuSparse(const std::string& name,
                         const std::vector<std::pair<uint64_t, uint64_t>>& map, uint64_t real_size,
                         const std::string& stored) {
  Raw r;
  r.name = name;
  r.type = 'S';
  r.magic = Magic::kGnu;
  r.size = stored.size();
  std::string out = HeaderBlock(r, [&](std::string* b) {
    for (size_t i = 0; i < map.size() && i < 4; ++i) {
      PutOctal(b, 386 + i * 24, 12, map[i].first);
      PutOctal(b, 386 + i * 24 + 12, 12, map[i].second);
    }
    (*b)[482] = map.size() > 4 ? 1 : 0;
    PutOctal(b, 483, 12, real_size);
  });
  for (size_t i = 4; i < map.size(); i += 21) {
    std::string ext(512, '\0');
    for (size_t j = 0; j < 21 && i + j < map.size(); ++j) {
      PutOctal(&ext, j * 24, 12, map[i + j].first);
      PutOctal(&ext, j * 24 + 12, 12, map[i + j].second);
    }
    ext[504] = i + 21 < map.size() ? 1 : 0;
    out += ext;
  }
  return out + Padded(stored);
}

// A sparse file with n regions of 10 bytes every 1000 bytes, ending in a hole.
struct ManyRegions {
  std::vector<std::pair<uint64_t, uint64_t>> map;
  std::string stored;
  std::string content;
};

ManyRegions MakeManyRegions(size_t n) {
  ManyRegions m;
  m.content.assign(n * 1000 + 777, '\0');
  for (size_t i = 0; i < n; ++i) {
    std::string p = Pattern(10, static_cast<uint32_t>(i));
    m.map.emplace_back(i * 1000 + 3, 10);
    m.stored += p;
    std::memcpy(m.content.data() + i * 1000 + 3, p.data(), 10);
  }
  return m;
}

TEST(TarIndexer, OldGnuSparseWithExtensionHeaders) {
  ManyRegions m = MakeManyRegions(30);  // 4 in the header, 21 + 5 in two extension blocks
  m.map.emplace_back(m.content.size(), 0);
  std::string tar = OldGnuSparse("sp", m.map, m.content.size(), m.stored) +
                    FileEntry("next", "n", Magic::kGnu) + kEnd;
  Indexed r = IndexOk(tar);
  ASSERT_EQ(r.entries.size(), 2u);
  const TarEntry& e = r.entries[0];
  EXPECT_EQ(e.path, "sp");
  EXPECT_EQ(e.size, m.content.size());
  EXPECT_EQ(e.header_offset, 0u);
  EXPECT_EQ(e.data_offset, 3 * 512u);  // after the header and two extension blocks
  ASSERT_EQ(e.sparse.size(), 31u);
  EXPECT_EQ(e.sparse[29], (TarSparseChunk{29003, 10, 3 * 512 + 290}));
  EXPECT_EQ(e.sparse[30], (TarSparseChunk{m.content.size(), 0, 3 * 512 + 300}));
  EXPECT_TRUE(ReadContent(tar, e) == m.content);
  EXPECT_EQ(r.entries[1].header_offset, 4 * 512u);
  ExpectSameAsLibarchive(tar, r.entries, "old GNU sparse");
}

TEST(TarIndexer, PaxSparse00And01) {
  ManyRegions m = MakeManyRegions(3);
  std::string body00 = PaxRecord("GNU.sparse.size", std::to_string(m.content.size())) +
                       PaxRecord("GNU.sparse.numblocks", "3");
  std::string map01;
  for (auto [off, len] : m.map) {
    body00 += PaxRecord("GNU.sparse.offset", std::to_string(off)) +
              PaxRecord("GNU.sparse.numbytes", std::to_string(len));
    map01 += (map01.empty() ? "" : ",") + std::to_string(off) + "," + std::to_string(len);
  }
  std::string body01 = PaxRecord("GNU.sparse.size", std::to_string(m.content.size())) +
                       PaxRecord("GNU.sparse.numblocks", "3") +
                       PaxRecord("GNU.sparse.name", "real/name01") +
                       PaxRecord("GNU.sparse.map", map01);
  std::string tar = PaxHeader(body00) + FileEntry("real/name00", m.stored) + PaxHeader(body01) +
                    FileEntry("GNUSparseFile.1/name01", m.stored) + kEnd;
  Indexed r = IndexOk(tar);
  ASSERT_EQ(r.entries.size(), 2u);
  EXPECT_EQ(r.entries[0].path, "real/name00");
  EXPECT_EQ(r.entries[1].path, "real/name01");
  for (const TarEntry& e : r.entries) {
    SCOPED_TRACE(e.path);
    EXPECT_EQ(e.size, m.content.size());
    ASSERT_EQ(e.sparse.size(), 3u);
    EXPECT_EQ(e.sparse[1], (TarSparseChunk{1003, 10, e.data_offset + 10}));
    EXPECT_TRUE(ReadContent(tar, e) == m.content);
  }
  EXPECT_EQ(r.entries[1].header_offset, 4 * 512u);
  ExpectSameAsLibarchive(tar, r.entries, "pax sparse 0.0/0.1");
}

TEST(TarIndexer, InconsistentSparseMapSkipsOnlyThatEntry) {
  // Overlapping chunks, then chunks that need more bytes than are stored.
  std::string overlap =
      PaxRecord("GNU.sparse.size", "100") + PaxRecord("GNU.sparse.map", "0,10,5,10");
  std::string too_much =
      PaxRecord("GNU.sparse.size", "100") + PaxRecord("GNU.sparse.map", "0,10,50,10");
  std::string tar = PaxHeader(overlap) + FileEntry("bad1", std::string(20, 'x')) +
                    PaxHeader(too_much) + FileEntry("bad2", std::string(15, 'x')) +
                    FileEntry("good", "g") + kEnd;
  Indexed r = IndexOk(tar);
  ASSERT_EQ(r.entries.size(), 1u);
  EXPECT_EQ(r.entries[0].path, "good");
  std::vector<std::string> want = {
      "layer t: entry \"bad1\" (header at offset 0): GNU sparse map chunk at 5+10 overlaps "
      "another or ends past the real size 100; entry skipped",
      "layer t: entry \"bad2\" (header at offset 2048): GNU sparse map needs more than the 15 "
      "stored bytes; entry skipped"};
  EXPECT_EQ(r.warnings, want);
}

// ---------------------------------------------------------------------------
// Chunking.

TEST(TarIndexer, ByteByByteAndRandomChunksGiveTheSameIndex) {
  SparseFile f = MakeSparse();
  std::vector<Spec> specs = RichSpecs();
  specs.push_back({.path = "sparse", .content = f.content, .sparse = f.regions});
  ManyRegions m = MakeManyRegions(30);
  std::string tar = WriteTar(ARCHIVE_FORMAT_TAR_PAX_INTERCHANGE, specs);
  tar.resize(tar.size() - 1024);  // drop the end marker to append GNU entries
  tar += OldGnuSparse("old-sparse", m.map, m.content.size(), m.stored) +
         PaxHeader(PaxRecord("path", "../escape")) + FileEntry("x", "x") +
         WriteTar(ARCHIVE_FORMAT_TAR_GNUTAR, RichSpecs());
  Indexed whole = IndexOk(tar);
  ASSERT_EQ(whole.entries.size(), 15u + 1 + 1 + 15);
  ASSERT_EQ(whole.warnings.size(), 1u);

  Indexed bytewise = IndexWith(tar, [] { return size_t{1}; });
  EXPECT_TRUE(bytewise.finish.ok());
  EXPECT_TRUE(bytewise.entries == whole.entries);
  EXPECT_EQ(bytewise.warnings, whole.warnings);
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    std::mt19937 rng(seed);
    Indexed r = IndexWith(tar, [&rng] {
      // Mostly small pieces around block boundaries, sometimes large ones.
      return rng() % 4 == 0 ? size_t{rng() % 70000 + 1} : size_t{rng() % 1100 + 1};
    });
    EXPECT_TRUE(r.finish.ok()) << seed;
    EXPECT_TRUE(r.entries == whole.entries) << seed;
    EXPECT_EQ(r.warnings, whole.warnings) << seed;
    EXPECT_TRUE(r.done) << seed;
  }
}

// ---------------------------------------------------------------------------
// Ends of streams.

TEST(TarIndexer, TruncatedDataIsCorruptNamingTheEntry) {
  std::string tar = FileEntry("a.txt", std::string(1000, 'a')) + FileEntry("b", "b") + kEnd;
  Indexed r = Index(tar.substr(0, 700));
  EXPECT_TRUE(r.feed.ok());
  EXPECT_EQ(r.finish.code(), Code::kCorrupt);
  EXPECT_EQ(r.finish.message(),
            "layer t: entry \"a.txt\" (header at offset 0): stream ends at offset 700 inside its "
            "data, which runs from 512 to 1512 (188 of 1000 bytes present)");
  ASSERT_EQ(r.entries.size(), 1u);  // known from its header
  EXPECT_EQ(r.entries[0].path, "a.txt");
}

TEST(TarIndexer, TruncatedHeaderIsCorrupt) {
  std::string tar = FileEntry("a.txt", std::string(1000, 'a')) + FileEntry("b", "b") + kEnd;
  Indexed r = Index(tar.substr(0, 1636));
  EXPECT_EQ(r.finish.message(),
            "layer t: stream ends at offset 1636 inside the header at offset 1536 (100 of 512 "
            "bytes)");
  std::string pax = PaxHeader(PaxRecord("path", "long")) + FileEntry("short", "s");
  r = Index(pax.substr(0, 700));
  EXPECT_EQ(r.finish.message(),
            "layer t: stream ends at offset 700 after the pax header at offset 0, before the "
            "entry it describes");
  r = Index(pax.substr(0, 520));
  EXPECT_EQ(r.finish.message(),
            "layer t: stream ends at offset 520 inside the pax header at offset 0 (8 of 13 "
            "bytes)");
}

TEST(TarIndexer, EndInsidePaddingOrAtAnEntryBoundaryIsFine) {
  std::string tar = FileEntry("a.txt", std::string(1000, 'a')) + FileEntry("b", "b") + kEnd;
  Indexed r = IndexOk(tar.substr(0, 1520));
  EXPECT_FALSE(r.done);
  EXPECT_EQ(r.warnings, std::vector<std::string>{"layer t: entry \"a.txt\" (header at offset 0): "
                                                 "stream ends at offset 1520 inside the padding "
                                                 "after its data"});
  r = IndexOk(tar.substr(0, 1536));  // no end marker: EOF right after an entry
  EXPECT_EQ(r.entries.size(), 1u);
  EXPECT_FALSE(r.done);
  EXPECT_TRUE(r.warnings.empty());
  r = IndexOk(tar.substr(0, 3072 + 512));  // one zero block is enough
  EXPECT_EQ(r.entries.size(), 2u);
  EXPECT_TRUE(r.done);
}

TEST(TarIndexer, EveryCutOfAnArchiveIsHandled) {
  std::vector<Spec> specs = RichSpecs();
  SparseFile f = MakeSparse();
  specs.push_back({.path = "sparse",
                   .content = f.content.substr(0, 70000),
                   .sparse = {{0, 100}, {65536, 3000}}});
  std::string tar = WriteTar(ARCHIVE_FORMAT_TAR_PAX_INTERCHANGE, specs);
  Indexed whole = IndexOk(tar);
  for (size_t cut = 0; cut <= tar.size(); cut += (cut % 512 < 8 || cut % 512 > 504) ? 1 : 37) {
    Indexed r = Index(std::string_view(tar).substr(0, cut));
    ASSERT_TRUE(r.feed.ok()) << cut;
    ASSERT_LE(r.entries.size(), whole.entries.size());
    for (size_t i = 0; i < r.entries.size(); ++i) ASSERT_TRUE(r.entries[i] == whole.entries[i]);
    if (!r.finish.ok()) {
      EXPECT_EQ(r.finish.code(), Code::kCorrupt) << cut;
      EXPECT_EQ(r.finish.message().rfind("layer t: ", 0), 0u) << r.finish.message();
    }
  }
}

TEST(TarIndexer, DataAfterTheEndMarkerIsIgnored) {
  std::string tar = WriteTar(ARCHIVE_FORMAT_TAR_PAX_INTERCHANGE, RichSpecs());
  Indexed plain = IndexOk(tar);
  // eStargz appends a TOC tar after the end marker; anything may follow.
  std::string more = tar + FileEntry("stargz.index.json", "{}") + Pattern(3000, 9);
  Indexed r = IndexOk(more);
  EXPECT_TRUE(r.done);
  EXPECT_TRUE(r.entries == plain.entries);
  r = IndexWith(more, [] { return size_t{7}; });
  EXPECT_TRUE(r.finish.ok());
  EXPECT_TRUE(r.entries == plain.entries);
}

// ---------------------------------------------------------------------------
// Hostile input.

TEST(TarIndexer, BadChecksumIsCorruptAndSticky) {
  std::string tar = FileEntry("a", "a") + FileEntry("b", "b") + kEnd;
  tar[1024 + 10] = 'X';  // inside the second header's name
  TarIndexer ix(kDoc);
  Status st = ix.Feed(tar);
  EXPECT_EQ(st.code(), Code::kCorrupt);
  EXPECT_EQ(st.message(), "layer t: bad header checksum at offset 1024");
  EXPECT_EQ(ix.TakeEntries().size(), 1u);
  EXPECT_EQ(ix.Feed("more").message(), st.message());
  EXPECT_EQ(ix.Finish().message(), st.message());
}

TEST(TarIndexer, DotDotPathsSkipTheEntryWithAWarning) {
  std::string tar = FileEntry("ok1", "1") + FileEntry("../evil", "e") +
                    FileEntry("a/../../b", "e") + FileEntry("/abs/path", "p") +
                    FileEntry("./rel/./x//y/z", "r") + PaxHeader(PaxRecord("path", "ok/../..")) +
                    FileEntry("short", "s") + FileEntry("ok2", "2") + kEnd;
  Indexed r = IndexOk(tar);
  std::vector<std::string> paths;
  for (const TarEntry& e : r.entries) paths.push_back(e.path);
  EXPECT_EQ(paths, (std::vector<std::string>{"ok1", "abs/path", "rel/x/y/z", "ok2"}));
  EXPECT_EQ(ReadContent(tar, r.entries[3]), "2");
  std::vector<std::string> want = {
      "layer t: entry \"../evil\" (header at offset 1024): path has a \"..\" component; entry "
      "skipped",
      "layer t: entry \"a/../../b\" (header at offset 2048): path has a \"..\" component; entry "
      "skipped",
      "layer t: entry \"ok/../..\" (header at offset 5120): path has a \"..\" component; entry "
      "skipped"};
  EXPECT_EQ(r.warnings, want);
}

TEST(TarIndexer, HardLinkTargetsAreCleanedAndChecked) {
  Raw good{.name = "h1", .type = '1', .linkname = "./dir//f"};
  Raw bad{.name = "h2", .type = '1', .linkname = "../../etc/shadow"};
  Raw root{.name = "h3", .type = '1', .linkname = "/"};
  std::string tar = HeaderBlock(good) + HeaderBlock(bad) + HeaderBlock(root) + kEnd;
  Indexed r = IndexOk(tar);
  ASSERT_EQ(r.entries.size(), 1u);
  EXPECT_EQ(r.entries[0].link_target, "dir/f");
  std::vector<std::string> want = {
      "layer t: entry \"h2\" (header at offset 512): hard link target \"../../etc/shadow\": path "
      "has a \"..\" component; entry skipped",
      "layer t: entry \"h3\" (header at offset 1024): hard link to the archive root; entry "
      "skipped"};
  EXPECT_EQ(r.warnings, want);
}

TEST(TarIndexer, NulInAPaxPathSkipsTheEntry) {
  std::string tar = PaxHeader(PaxRecord("path", std::string("a\0b", 3))) + FileEntry("x", "x") +
                    FileEntry("y", "y") + kEnd;
  Indexed r = IndexOk(tar);
  ASSERT_EQ(r.entries.size(), 1u);
  EXPECT_EQ(r.entries[0].path, "y");
  EXPECT_EQ(r.warnings, std::vector<std::string>{"layer t: entry \"a\\x00b\" (header at offset "
                                                 "0): path contains a NUL byte; entry skipped"});
}

TEST(TarIndexer, PaxRecordWithAWrongLengthIsCorrupt) {
  Indexed r = Index(PaxHeader("30 path=short\n") + FileEntry("x", "x") + kEnd);
  EXPECT_EQ(r.feed.code(), Code::kCorrupt);
  EXPECT_EQ(r.feed.message(),
            "layer t: pax header at offset 0: record at byte 0: length 30 runs past the end of "
            "the header (14 bytes left)");
  r = Index(PaxHeader(PaxRecord("uid", "1") + "5 path=abc\n") + FileEntry("x", "x") + kEnd);
  EXPECT_EQ(r.feed.message(),
            "layer t: pax header at offset 0: record at byte 8: length 5 does not end at a "
            "newline");
  r = Index(PaxHeader("x1 a=b\n") + FileEntry("x", "x") + kEnd);
  EXPECT_EQ(r.feed.message(),
            "layer t: pax header at offset 0: record at byte 0: length \"x1\" is not a decimal "
            "number");
  r = Index(PaxHeader("9 novalu\n") + FileEntry("x", "x") + kEnd);
  EXPECT_EQ(r.feed.message(),
            "layer t: pax header at offset 0: record at byte 0: no \"key=value\"");
  r = Index(PaxHeader(PaxRecord("size", "-3")) + FileEntry("x", "x") + kEnd);
  EXPECT_EQ(r.feed.message(),
            "layer t: entry \"x\" (pax header of the entry at offset 0): pax size \"-3\" is not a "
            "decimal number below 2^63");
}

TEST(TarIndexer, PaxHeaderOverOneMebibyteIsCorrupt) {
  Raw r{.name = "PaxHeaders/big", .type = 'x', .size = (1 << 20) + 1};
  Indexed x = Index(HeaderBlock(r));
  EXPECT_EQ(x.feed.message(),
            "layer t: pax header at offset 0 is 1048577 bytes, over the 1048576-byte limit");
  r.type = 'L';
  x = Index(HeaderBlock(r));
  EXPECT_EQ(x.feed.message(),
            "layer t: GNU long name header at offset 0 is 1048577 bytes, over the 1048576-byte "
            "limit");
  // Exactly 1 MiB is fine: a path of 1 MiB minus the record overhead.
  std::string path((1 << 20) - std::strlen("1048576 path=\n"), 'p');
  std::string body = PaxRecord("path", path);
  ASSERT_EQ(body.size(), size_t{1} << 20);
  Indexed ok = IndexOk(PaxHeader(body) + FileEntry("x", "x") + kEnd);
  ASSERT_EQ(ok.entries.size(), 1u);
  EXPECT_EQ(ok.entries[0].path, path);
}

TEST(TarIndexer, NegativeAndAbsurdSizes) {
  Raw neg{.name = "neg"};
  Indexed r = Index(HeaderBlock(neg, [](std::string* b) { PutBase256(b, 124, 12, -5); }));
  EXPECT_EQ(r.feed.message(), "layer t: header at offset 0: negative size -5");
  Raw huge{.name = "huge"};
  std::string tar = HeaderBlock(huge, [](std::string* b) { PutBase256(b, 124, 12, 1LL << 62); }) +
                    std::string(4096, 'x');
  r = Index(tar);
  EXPECT_TRUE(r.feed.ok());
  ASSERT_EQ(r.entries.size(), 1u);
  EXPECT_EQ(r.entries[0].size, uint64_t{1} << 62);
  EXPECT_EQ(r.finish.message(),
            "layer t: entry \"huge\" (header at offset 0): stream ends at offset 4608 inside its "
            "data, which runs from 512 to 4611686018427388416 (4096 of 4611686018427387904 bytes "
            "present)");
  Raw junk{.name = "junk"};
  r = Index(HeaderBlock(junk, [](std::string* b) { PutString(b, 124, "12x4"); }));
  EXPECT_EQ(r.feed.message(), "layer t: header at offset 0: field \"size\" is not a number");
  r = Index(HeaderBlock(junk, [](std::string* b) {
    PutBase256(b, 124, 12, 0);
    (*b)[124] = '\x80';
    (*b)[125] = '\xff';
  }));
  EXPECT_EQ(r.feed.message(), "layer t: header at offset 0: field \"size\" is not a number");
}

TEST(TarIndexer, Base256AndOctalFieldVariants) {
  Raw r{.name = "b256", .magic = Magic::kGnu, .uname = "u", .gname = "g"};
  std::string tar =
      HeaderBlock(r,
                  [](std::string* b) {
                    PutBase256(b, 108, 8, 3000000000LL);  // uid
                    PutBase256(b, 136, 12, -86400);       // mtime
                    PutBase256(b, 124, 12, 3);            // size
                    PutString(b, 100,
                              std::string_view("  755 \0\0", 8));  // mode: spaces around the digits
                  }) +
      Padded("abc") + kEnd;
  Indexed x = IndexOk(tar);
  ASSERT_EQ(x.entries.size(), 1u);
  EXPECT_EQ(x.entries[0].uid, 3000000000u);
  EXPECT_EQ(x.entries[0].mtime_sec, -86400);
  EXPECT_EQ(x.entries[0].mode, 0755u);
  EXPECT_EQ(ReadContent(tar, x.entries[0]), "abc");
  ExpectSameAsLibarchive(tar, x.entries, "base-256");
  // A uid that does not fit in 32 bits skips the entry.
  tar = HeaderBlock(r, [](std::string* b) { PutBase256(b, 108, 8, 1LL << 40); }) + kEnd;
  x = IndexOk(tar);
  EXPECT_TRUE(x.entries.empty());
  EXPECT_EQ(x.warnings, std::vector<std::string>{"layer t: entry \"b256\" (header at offset 0): "
                                                 "uid 1099511627776 is out of range; entry "
                                                 "skipped"});
}

TEST(TarIndexer, GlobalHeadersApplyToLaterEntries) {
  std::string g1 = PaxRecord("uid", "42") + PaxRecord("uname", "glob") +
                   PaxRecord("mtime", "5.25") + PaxRecord("path", "not-for-everyone") +
                   PaxRecord("comment", "ignored");
  std::string local = PaxRecord("uid", "") + PaxRecord("mtime", "-1.25");
  std::string g2 = PaxRecord("uname", "");
  std::string tar = PaxHeader(g1, 'g') + FileEntry("a", "a") + PaxHeader(local) +
                    FileEntry("b", "b") + PaxHeader(g2, 'g') + FileEntry("c", "c") + kEnd;
  Indexed r = IndexOk(tar);
  ASSERT_EQ(r.entries.size(), 3u);
  EXPECT_EQ(r.entries[0].path, "a");
  EXPECT_EQ(r.entries[0].header_offset, 1024u);  // the global header is not part of it
  EXPECT_EQ(r.entries[0].uid, 42u);
  EXPECT_EQ(r.entries[0].uname, "glob");
  EXPECT_EQ(r.entries[0].mtime_sec, 5);
  EXPECT_EQ(r.entries[0].mtime_nsec, 250000000u);
  EXPECT_EQ(r.entries[1].path, "b");
  EXPECT_EQ(r.entries[1].header_offset, 2048u);
  EXPECT_EQ(r.entries[1].uid, 0u);  // "uid=" falls back to the header field
  EXPECT_EQ(r.entries[1].uname, "glob");
  EXPECT_EQ(r.entries[1].mtime_sec, -2);  // -1.25 s
  EXPECT_EQ(r.entries[1].mtime_nsec, 750000000u);
  EXPECT_EQ(r.entries[2].uid, 42u);
  EXPECT_EQ(r.entries[2].uname, "");
}

TEST(TarIndexer, HardLinkDataOnlyInPaxArchives) {
  Raw hl{.name = "hl", .type = '1', .size = 5, .linkname = "t"};
  // ustar without pax: the size is ignored, the next header follows.
  std::string ustar = HeaderBlock(hl) + FileEntry("next", "n") + kEnd;
  Indexed r = IndexOk(ustar);
  ASSERT_EQ(r.entries.size(), 2u);
  EXPECT_EQ(r.entries[0].size, 0u);
  EXPECT_EQ(r.entries[1].header_offset, 512u);
  // After a pax header, a hard link carries its data.
  std::string pax = PaxHeader(PaxRecord("mtime", "1.5")) + HeaderBlock(hl) + Padded("hello") +
                    FileEntry("next", "n") + kEnd;
  r = IndexOk(pax);
  ASSERT_EQ(r.entries.size(), 2u);
  EXPECT_EQ(r.entries[0].size, 5u);
  EXPECT_EQ(r.entries[0].data_offset, 1536u);
  EXPECT_EQ(ReadContent(pax, r.entries[0]), "hello");
  EXPECT_EQ(r.entries[1].header_offset, 2048u);
}

TEST(TarIndexer, OldStyleAndUnusualHeaders) {
  Raw v7dir{.name = "olddir/", .type = '\0', .size = 0, .magic = Magic::kV7};
  Raw unknown{.name = "weird", .type = 'Q', .size = 2};
  Raw label{.name = "volume label", .type = 'V', .magic = Magic::kGnu};
  Raw root{.name = "./", .type = '5', .mode = 0700};
  std::string tar = HeaderBlock(root) + HeaderBlock(label) + HeaderBlock(v7dir) +
                    HeaderBlock(unknown) + Padded("qq") + FileEntry("v7file", "v", Magic::kV7) +
                    PaxHeader(PaxRecord("path", "orphan")) + kEnd;
  Indexed r = IndexOk(tar);
  ASSERT_EQ(r.entries.size(), 4u);
  EXPECT_EQ(r.entries[0].path, "");
  EXPECT_EQ(r.entries[0].type, TarType::kDir);
  EXPECT_EQ(r.entries[0].mode, 0700u);
  EXPECT_EQ(r.entries[1].path, "olddir");
  EXPECT_EQ(r.entries[1].type, TarType::kDir);
  EXPECT_EQ(r.entries[1].uname, "");
  EXPECT_EQ(r.entries[2].path, "weird");
  EXPECT_EQ(r.entries[2].type, TarType::kFile);
  EXPECT_EQ(ReadContent(tar, r.entries[2]), "qq");
  EXPECT_EQ(r.entries[3].path, "v7file");
  EXPECT_EQ(ReadContent(tar, r.entries[3]), "v");
  std::vector<std::string> want = {
      "layer t: entry \"weird\" (header at offset 1536) has unknown type flag \"Q\"; shown as a "
      "regular file",
      "layer t: pax header at offset 3584 has no entry before the end-of-archive marker at "
      "offset 4608"};
  EXPECT_EQ(r.warnings, want);
}

TEST(TarIndexer, TooManyExtensionHeadersForOneEntryIsCorrupt) {
  std::string body = PaxRecord("comment", std::string((1 << 20) - 20, 'c'));
  ASSERT_LE(body.size(), size_t{1} << 20);
  std::string tar;
  for (int i = 0; i < 5; ++i) tar += PaxHeader(body);
  Indexed r = Index(tar + FileEntry("x", "x") + kEnd);
  EXPECT_EQ(r.feed.message(),
            "layer t: pax header at offset " + std::to_string(4 * PaxHeader(body).size()) +
                ": extension headers since offset 0 total " + std::to_string(5 * body.size()) +
                " bytes, over the 4194304-byte limit");
}

TEST(TarIndexer, GlobalHeaderAloneBeforeTheEndIsFine) {
  std::string g = PaxHeader(PaxRecord("comment", "git archive"), 'g');
  Indexed r = IndexOk(g);
  EXPECT_TRUE(r.entries.empty());
  EXPECT_TRUE(r.warnings.empty());
  r = IndexOk(g.substr(0, 600));  // inside its padding
  EXPECT_TRUE(r.warnings.empty());
  r = IndexOk(g + kEnd);
  EXPECT_TRUE(r.done);
  EXPECT_TRUE(r.warnings.empty());
}

TEST(TarIndexer, BadXattrAndTimeValuesAreIgnoredWithAWarning) {
  std::string body = PaxRecord("LIBARCHIVE.xattr.user.x", "@@@") + PaxRecord("mtime", "1.2.3") +
                     PaxRecord("SCHILY.xattr.user.ok", "v") + PaxRecord("uid", "12a");
  Indexed r = IndexOk(PaxHeader(body) + FileEntry("f", "f") + kEnd);
  ASSERT_EQ(r.entries.size(), 1u);
  EXPECT_EQ(r.entries[0].mtime_sec, 1700000000);  // the header's value
  EXPECT_EQ(r.entries[0].xattrs,
            (std::vector<std::pair<std::string, std::string>>{{"user.ok", "v"}}));
  std::vector<std::string> want = {
      "layer t: entry \"f\" (pax header of the entry at offset 0): ignoring "
      "\"LIBARCHIVE.xattr.user.x\"=\"@@@\"",
      "layer t: entry \"f\" (pax header of the entry at offset 0): ignoring \"mtime\"=\"1.2.3\"",
      "layer t: entry \"f\" (pax header of the entry at offset 0): ignoring \"uid\"=\"12a\""};
  EXPECT_EQ(r.warnings, want);
}

// Random damage to a rich stream: never a crash or an out-of-bounds read
// (ASan), only OK or kCorrupt, the same index whatever the chunking, and
// entries that keep the promises of TarEntry.
TEST(TarIndexer, RandomDamageKeepsTheInvariants) {
  SparseFile f = MakeSparse();
  std::vector<Spec> specs = RichSpecs();
  specs.push_back({.path = "sparse", .content = f.content, .sparse = f.regions});
  ManyRegions m = MakeManyRegions(30);
  std::string base = WriteTar(ARCHIVE_FORMAT_TAR_PAX_INTERCHANGE, specs);
  base.resize(base.size() - 1024);
  base +=
      OldGnuSparse("old-sparse", m.map, m.content.size(), m.stored) +
      PaxHeader(PaxRecord("GNU.sparse.map", "0,10,100,10") + PaxRecord("GNU.sparse.size", "200")) +
      FileEntry("p01", std::string(20, 's')) + WriteTar(ARCHIVE_FORMAT_TAR_GNUTAR, RichSpecs());
  std::vector<uint64_t> headers;
  for (const TarEntry& e : IndexOk(base).entries) {
    for (uint64_t h = e.header_offset; h < e.data_offset || h == e.header_offset; h += 512) {
      headers.push_back(h);
    }
  }
  const char kSpecial[] = {'/', '.', '\0',   '9',    '7', ' ', '\n',
                           '=', ',', '\x80', '\xff', 'x', 'L', 'S'};
  std::mt19937 rng(42);
  for (int iter = 0; iter < 1500; ++iter) {
    std::string tar = base;
    int mutations = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < mutations; ++k) {
      uint64_t block = headers[rng() % headers.size()];
      size_t pos = rng() % 3 == 0 ? rng() % tar.size() : block + rng() % 512;
      tar[pos] = rng() % 2 ? kSpecial[rng() % sizeof(kSpecial)] : static_cast<char>(rng());
      if (rng() % 4 != 0 && pos / 512 * 512 == block) {
        std::string b = tar.substr(block, 512);
        SetChecksum(&b);
        tar.replace(block, 512, b);
      }
    }
    if (rng() % 5 == 0) tar.resize(rng() % tar.size());
    Indexed whole = Index(tar);
    SCOPED_TRACE("iteration " + std::to_string(iter));
    Status end = whole.feed.ok() ? whole.finish : whole.feed;
    ASSERT_TRUE(end.ok() || end.code() == Code::kCorrupt) << end.ToString();
    Indexed pieces = IndexWith(tar, [&rng] { return size_t{rng() % 1500 + 1}; });
    ASSERT_TRUE(pieces.entries == whole.entries);
    ASSERT_EQ(pieces.warnings, whole.warnings);
    ASSERT_EQ((pieces.feed.ok() ? pieces.finish : pieces.feed).message(), end.message());
    ASSERT_LE(whole.warnings.size(), kTarMaxWarnings + 1);
    uint64_t prev_header = 0;
    for (const TarEntry& e : whole.entries) {
      ASSERT_TRUE(CleanTarPath(e.path).ok());
      ASSERT_EQ(*CleanTarPath(e.path), e.path);
      ASSERT_GE(e.header_offset, prev_header);
      prev_header = e.header_offset + 512;
      if (e.type == TarType::kHardlink) {
        ASSERT_EQ(*CleanTarPath(e.link_target), e.link_target);
      }
      if (e.type != TarType::kFile) {
        ASSERT_TRUE(e.sparse.empty());
        continue;
      }
      ASSERT_GE(e.data_offset, e.header_offset + 512);
      uint64_t logical_end = 0, stream = e.data_offset;
      for (const TarSparseChunk& c : e.sparse) {
        ASSERT_GE(c.logical_offset, logical_end);
        ASSERT_LE(c.logical_offset + c.length, e.size);
        ASSERT_EQ(c.stream_offset, stream);
        logical_end = c.logical_offset + c.length;
        stream += c.length;
      }
    }
  }
}

TEST(TarIndexer, WarningsAreBounded) {
  std::string tar;
  for (int i = 0; i < 150; ++i) tar += FileEntry("../x" + std::to_string(i), "");
  tar += kEnd;
  Indexed r = IndexOk(tar);
  ASSERT_EQ(r.warnings.size(), kTarMaxWarnings + 1);
  EXPECT_EQ(r.warnings.back(), "layer t: 50 more warnings not kept");
}

TEST(TarIndexer, CleanTarPath) {
  EXPECT_EQ(*CleanTarPath("./a/b/"), "a/b");
  EXPECT_EQ(*CleanTarPath("/"), "");
  EXPECT_EQ(*CleanTarPath("."), "");
  EXPECT_EQ(*CleanTarPath("a/.../b"), "a/.../b");
  EXPECT_EQ(*CleanTarPath("..a/b.."), "..a/b..");
  EXPECT_EQ(CleanTarPath("a/..").status().message(), "path has a \"..\" component");
  EXPECT_EQ(CleanTarPath(std::string("a\0", 2)).status().message(), "path contains a NUL byte");
  std::string deep;
  for (int i = 0; i < 10000; ++i) deep += "d/";
  EXPECT_EQ(CleanTarPath(deep)->size(), 19999u);
}

// ---------------------------------------------------------------------------
// Real BuildKit layers.

std::string FixturesRoot() {
  std::string dir = bcfs::testing::FixturesDir();
  if (!dir.empty()) return dir;
  // Run by hand without BCFS_SHARED: ../shared next to the checkout.
  fs::path guess = fs::path(__FILE__).parent_path() / "../../shared/fixtures/buildkit";
  return fs::exists(guess / "MANIFEST.md") ? fs::canonical(guess).string() : "";
}

bool IsZeroBlockForTest(std::string_view b) {
  return std::all_of(b.begin(), b.end(), [](char c) { return c == '\0'; });
}

// gzip (several members, as eStargz writes) to the plain stream.
std::string Gunzip(const std::string& in) {
  std::string out;
  z_stream zs{};
  EXPECT_EQ(inflateInit2(&zs, 15 + 16), Z_OK);
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  char buf[65536];
  while (true) {
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof(buf);
    int rc = inflate(&zs, Z_NO_FLUSH);
    out.append(buf, sizeof(buf) - zs.avail_out);
    if (rc == Z_STREAM_END) {
      if (zs.avail_in == 0) break;
      inflateReset(&zs);
      continue;
    }
    if (rc != Z_OK) {
      ADD_FAILURE() << "inflate: " << rc;
      break;
    }
  }
  inflateEnd(&zs);
  return out;
}

TEST(TarIndexer, RealBuildKitLayersMatchLibarchive) {
  std::string root = FixturesRoot();
  if (root.empty()) {
    if (std::getenv("CI") != nullptr) FAIL() << "../shared fixtures missing in CI";
    GTEST_SKIP() << "../shared/fixtures/buildkit is absent (set BCFS_SHARED)";
  }
  size_t layers = 0, files = 0;
  bool saw_whiteout = false, saw_hardlink = false;
  for (const char* fixture : {"local-max-uncompressed", "local-max-gzip", "local-max-estargz"}) {
    fs::path blobs = fs::path(root) / fixture / "blobs/sha256";
    if (!fs::exists(blobs)) {
      if (std::getenv("CI") != nullptr) FAIL() << blobs << " missing in CI";
      continue;
    }
    for (const auto& de : fs::directory_iterator(blobs)) {
      std::string blob = ReadFile(de.path());
      bool gzip = blob.size() > 2 && blob[0] == '\x1f' && blob[1] == '\x8b';
      std::string tar = gzip ? Gunzip(blob) : blob;
      bool is_tar = tar.size() >= 512 &&
                    (tar.compare(257, 5, "ustar") == 0 || IsZeroBlockForTest(tar.substr(0, 512)));
      if (!is_tar) continue;  // a JSON config or manifest
      ++layers;
      std::string what = std::string(fixture) + "/" + de.path().filename().string();
      Indexed r = IndexOk(tar);
      EXPECT_TRUE(r.warnings.empty()) << what;
      ExpectSameAsLibarchive(tar, r.entries, what);
      for (const TarEntry& e : r.entries) {
        if (e.type == TarType::kFile) ++files;
        if (e.path.find(".wh.") != std::string::npos) saw_whiteout = true;
        if (e.type == TarType::kHardlink) saw_hardlink = true;
      }
      // The same through small random pieces.
      std::mt19937 rng(static_cast<uint32_t>(tar.size()));
      Indexed pieces = IndexWith(tar, [&rng] { return size_t{rng() % 3000 + 1}; });
      EXPECT_TRUE(pieces.entries == r.entries) << what;
    }
  }
  EXPECT_GE(layers, 10u);
  EXPECT_GT(files, 0u);
  EXPECT_TRUE(saw_whiteout);
  EXPECT_TRUE(saw_hardlink);
}

}  // namespace
}  // namespace bcfs::formats
