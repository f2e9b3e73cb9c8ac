#include "tests/gen/gen.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <set>
#include <utility>

#include "core/digest.h"

namespace bcfs::gen {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;  // keeps Go's struct field order

constexpr std::string_view kCacheConfigType = "application/vnd.buildkit.cacheconfig.v0";
constexpr std::string_view kOciManifestType = "application/vnd.oci.image.manifest.v1+json";
constexpr std::string_view kOciIndexType = "application/vnd.oci.image.index.v1+json";
constexpr std::string_view kDockerListType =
    "application/vnd.docker.distribution.manifest.list.v2+json";

constexpr int kMaxRefs = 10000;
constexpr int kMaxLayers = 10000;
constexpr int kMaxFiles = 100000;
constexpr int64_t kMaxFileSize = int64_t{1} << 30;

// 2026-01-02T03:04:05.123456789Z: every timestamp is this plus whole seconds.
constexpr int64_t kBaseNanos = 123456789;
// Records are "created" a little after their layer's snapshot.
constexpr int64_t kRecordDelayNanos = 1000000;

int64_t BaseUnixSeconds() {
  using namespace std::chrono;
  sys_seconds t = sys_days{year{2026} / January / 2} + hours{3} + minutes{4} + seconds{5};
  return t.time_since_epoch().count();
}

// Go's time.Time JSON form: RFC 3339 in UTC with the nanoseconds' trailing
// zeros trimmed (RFC3339Nano), e.g. 2026-01-02T03:04:05.12345Z.
std::string GoTime(int64_t unix_seconds, int64_t nanos) {
  using namespace std::chrono;
  sys_seconds t{seconds{unix_seconds}};
  sys_days day = floor<days>(t);
  year_month_day ymd{day};
  hh_mm_ss<seconds> hms{t - day};
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%04d-%02u-%02uT%02d:%02d:%02d", static_cast<int>(ymd.year()),
                static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                static_cast<int>(hms.hours().count()), static_cast<int>(hms.minutes().count()),
                static_cast<int>(hms.seconds().count()));
  std::string out = buf;
  if (nanos != 0) {
    std::snprintf(buf, sizeof(buf), ".%09lld", static_cast<long long>(nanos));
    std::string frac = buf;
    while (frac.back() == '0') frac.pop_back();
    out += frac;
  }
  return out + "Z";
}

std::string Sha256Text(std::string_view text) { return "sha256:" + Digest::Sha256Of(text).hex(); }

// SplitMix64 keyed by SHA-256 of a label, so that every stream depends only on
// the seed and what it is for (never on generation order).
class Rng {
 public:
  explicit Rng(std::string_view label) {
    std::string hex = Digest::Sha256Of(label).hex().substr(0, 16);
    std::from_chars(hex.data(), hex.data() + hex.size(), state_, 16);
  }
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  uint64_t Uniform(uint64_t n) { return n == 0 ? 0 : Next() % n; }
  std::string Bytes(size_t n) {
    std::string out(n, '\0');
    for (size_t i = 0; i < n; i += 8) {
      uint64_t v = Next();
      std::memcpy(out.data() + i, &v, std::min<size_t>(8, n - i));
    }
    return out;
  }

 private:
  uint64_t state_ = 0;
};

// ---------------------------------------------------------------- tar

struct TarEntry {
  enum Kind { kDir, kFile, kSymlink, kHardlink, kChar, kBlock, kFifo };
  Kind kind;
  std::string path;
  std::string data;  // file contents, or the link target
  // The defaults are what the plain layers use.
  int mode = -1;  // permission bits; -1: 0755 directories, 0777 symlinks, 0644 others
  int64_t uid = 0;
  int64_t gid = 0;
  std::string uname;  // written only when not empty
  std::string gname;
  std::optional<int64_t> mtime;               // seconds; unset: the layer's mtime
  long mtime_nsec = 0;                        // non-zero: a PAX mtime record
  std::map<std::string, std::string> xattrs;  // "user.x" -> value (PAX SCHILY.xattr.*)
  int dev_major = 0;
  int dev_minor = 0;
};

int EffectiveMode(const TarEntry& t) {
  if (t.mode >= 0) return t.mode;
  if (t.kind == TarEntry::kDir) return 0755;
  if (t.kind == TarEntry::kSymlink) return 0777;
  return 0644;
}

la_ssize_t AppendToString(struct archive*, void* client, const void* buf, size_t len) {
  try {
    static_cast<std::string*>(client)->append(static_cast<const char*>(buf), len);
    return static_cast<la_ssize_t>(len);
  } catch (...) {
    return -1;
  }
}

// A pax tar like Go's archive/tar writes it: no padding past the two zero
// end blocks, no atime/ctime, xattrs only as SCHILY.xattr.* records. Entries
// without their own owner and mtime get uid/gid 0 and `mtime`.
Result<std::string> WriteTar(const std::vector<TarEntry>& entries, int64_t mtime) {
  std::string out;
  struct archive* a = archive_write_new();
  if (a == nullptr) return InternalError("archive_write_new failed");
  struct archive_entry* e = archive_entry_new();
  if (e == nullptr) {
    archive_write_free(a);
    return InternalError("archive_entry_new failed");
  }
  auto fail = [&](std::string_view what) -> Status {
    const char* msg = archive_error_string(a);
    Status st = InternalError("write tar: " + std::string(what) + ": " +
                              (msg != nullptr ? msg : "unknown libarchive error"));
    archive_entry_free(e);
    archive_write_free(a);
    return st;
  };
  if (archive_write_set_format_pax(a) != ARCHIVE_OK) return fail("set pax format");
  // libarchive would add LIBARCHIVE.xattr.* copies, which Go never writes.
  if (archive_write_set_format_option(a, "pax", "xattrheader", "SCHILY") != ARCHIVE_OK) {
    return fail("set pax xattrheader");
  }
  if (archive_write_set_bytes_per_block(a, 0) != ARCHIVE_OK) return fail("set block size");
  if (archive_write_open(a, &out, nullptr, AppendToString, nullptr) != ARCHIVE_OK) {
    return fail("open");
  }
  for (const TarEntry& t : entries) {
    archive_entry_clear(e);
    archive_entry_set_pathname(e, t.path.c_str());
    archive_entry_set_uid(e, t.uid);
    archive_entry_set_gid(e, t.gid);
    if (!t.uname.empty()) archive_entry_set_uname(e, t.uname.c_str());
    if (!t.gname.empty()) archive_entry_set_gname(e, t.gname.c_str());
    archive_entry_set_mtime(e, t.mtime.value_or(mtime), t.mtime_nsec);
    archive_entry_set_perm(e, static_cast<mode_t>(EffectiveMode(t)));
    switch (t.kind) {
      case TarEntry::kDir:
        archive_entry_set_filetype(e, AE_IFDIR);
        break;
      case TarEntry::kFile:
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_size(e, static_cast<la_int64_t>(t.data.size()));
        break;
      case TarEntry::kSymlink:
        archive_entry_set_filetype(e, AE_IFLNK);
        archive_entry_set_symlink(e, t.data.c_str());
        break;
      case TarEntry::kHardlink:
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_hardlink(e, t.data.c_str());
        archive_entry_set_size(e, 0);
        break;
      case TarEntry::kChar:
      case TarEntry::kBlock:
        archive_entry_set_filetype(e, t.kind == TarEntry::kChar ? AE_IFCHR : AE_IFBLK);
        archive_entry_set_rdevmajor(e, static_cast<dev_t>(t.dev_major));
        archive_entry_set_rdevminor(e, static_cast<dev_t>(t.dev_minor));
        break;
      case TarEntry::kFifo:
        archive_entry_set_filetype(e, AE_IFIFO);
        break;
    }
    for (const auto& [name, value] : t.xattrs) {
      archive_entry_xattr_add_entry(e, name.c_str(), value.data(), value.size());
    }
    if (archive_write_header(a, e) != ARCHIVE_OK) return fail("header of " + t.path);
    if (t.kind == TarEntry::kFile && !t.data.empty()) {
      la_ssize_t n = archive_write_data(a, t.data.data(), t.data.size());
      if (n < 0 || static_cast<size_t>(n) != t.data.size()) return fail("data of " + t.path);
    }
  }
  if (archive_write_close(a) != ARCHIVE_OK) return fail("close");
  archive_entry_free(e);
  archive_write_free(a);
  return out;
}

// ---------------------------------------------------------------- compression

// One gzip member. windowBits 15+16: a gzip wrapper with zlib's default
// header (mtime 0, no name, OS 3), so the output depends only on the input.
// With go_header the OS byte is 255 as Go's compress/gzip writes it (the
// eStargz members); XFL is 0 for the default level either way.
Result<std::string> Gzip(std::string_view in, bool go_header = false) {
  z_stream zs{};
  if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) !=
      Z_OK) {
    return InternalError("gzip: deflateInit2 failed");
  }
  gz_header header{};
  header.os = 255;
  if (go_header && deflateSetHeader(&zs, &header) != Z_OK) {
    deflateEnd(&zs);
    return InternalError("gzip: deflateSetHeader failed");
  }
  std::string out;
  constexpr size_t kChunk = 1 << 20;
  char buf[1 << 14];
  size_t pos = 0;
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    if (zs.avail_in == 0 && pos < in.size()) {
      size_t n = std::min(kChunk, in.size() - pos);
      zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data() + pos));
      zs.avail_in = static_cast<uInt>(n);
      pos += n;
    }
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof(buf);
    rc = deflate(&zs, pos == in.size() ? Z_FINISH : Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) {
      deflateEnd(&zs);
      return InternalError("gzip: deflate failed (" + std::to_string(rc) + ")");
    }
    out.append(buf, sizeof(buf) - zs.avail_out);
  }
  deflateEnd(&zs);
  return out;
}

Result<std::string> Zstd(const std::string& in) {
  // One frame with the content size and a checksum, as klauspost/compress
  // (BuildKit's encoder) writes by default.
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  if (cctx == nullptr) return InternalError("zstd: ZSTD_createCCtx failed");
  std::string out(ZSTD_compressBound(in.size()), '\0');
  size_t n = ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, 3);
  if (!ZSTD_isError(n)) n = ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
  if (!ZSTD_isError(n)) n = ZSTD_compress2(cctx, out.data(), out.size(), in.data(), in.size());
  ZSTD_freeCCtx(cctx);
  if (ZSTD_isError(n)) return InternalError(std::string("zstd: ") + ZSTD_getErrorName(n));
  out.resize(n);
  return out;
}

// ---------------------------------------------------------------- eStargz

// Where one tar entry sits in the tar stream.
struct TarSpan {
  size_t header = 0;  // its first header block (PAX extension headers included)
  size_t data = 0;    // its payload
  int64_t size = 0;   // payload bytes
  char type = 0;      // the typeflag of its main header
};

Result<int64_t> ParseOctal(std::string_view field) {
  int64_t v = 0;
  size_t i = 0;
  while (i < field.size() && (field[i] == ' ' || field[i] == '\0')) ++i;
  for (; i < field.size() && field[i] >= '0' && field[i] <= '7'; ++i) v = v * 8 + (field[i] - '0');
  for (; i < field.size(); ++i) {
    if (field[i] != ' ' && field[i] != '\0') return InternalError("tar: bad octal field");
  }
  return v;
}

// The "size" record of a PAX extended header's data, if any.
std::optional<int64_t> PaxSize(std::string_view records) {
  std::optional<int64_t> size;
  while (!records.empty()) {
    size_t sp = records.find(' ');
    int64_t len = 0;
    auto [p, ec] = std::from_chars(records.data(), records.data() + sp, len);
    if (sp == std::string_view::npos || ec != std::errc() || len <= 0 ||
        static_cast<size_t>(len) > records.size()) {
      break;
    }
    std::string_view rec = records.substr(sp + 1, static_cast<size_t>(len) - sp - 2);
    if (rec.rfind("size=", 0) == 0) {
      int64_t v = 0;
      std::from_chars(rec.data() + 5, rec.data() + rec.size(), v);
      size = v;
    }
    records.remove_prefix(static_cast<size_t>(len));
  }
  return size;
}

// The entries of a tar written by WriteTar, up to its end-of-archive blocks.
Result<std::vector<TarSpan>> ScanTar(std::string_view tar) {
  std::vector<TarSpan> spans;
  size_t pos = 0;
  TarSpan cur;
  bool in_entry = false;
  std::optional<int64_t> pax_size;
  while (true) {
    if (pos + 512 > tar.size()) return InternalError("tar: truncated");
    std::string_view h = tar.substr(pos, 512);
    if (h.find_first_not_of('\0') == std::string_view::npos) break;
    if (!in_entry) {
      cur = TarSpan{};
      cur.header = pos;
      in_entry = true;
    }
    BCFS_ASSIGN_OR_RETURN(int64_t size, ParseOctal(h.substr(124, 12)));
    char type = h[156];
    size_t data = pos + 512;
    size_t padded = (static_cast<size_t>(size) + 511) / 512 * 512;
    if (data + padded > tar.size()) return InternalError("tar: truncated entry");
    if (type == 'x' || type == 'g' || type == 'L' || type == 'K') {
      if (type == 'x') pax_size = PaxSize(tar.substr(data, static_cast<size_t>(size)));
      pos = data + padded;
      continue;
    }
    if (pax_size) size = *pax_size;
    pax_size.reset();
    cur.data = data;
    cur.type = type;
    cur.size = (type == '0' || type == '\0') ? size : 0;
    pos = data + (static_cast<size_t>(cur.size) + 511) / 512 * 512;
    spans.push_back(cur);
    in_entry = false;
  }
  return spans;
}

// Go's fmt.Sprintf("%0*o", ...) as archive/tar's formatOctal: digits then NUL.
void PutOctal(char* field, size_t len, uint64_t v) {
  std::string digits(len - 1, '0');
  for (size_t i = len - 1; i-- > 0 && v != 0; v /= 8) digits[i] = static_cast<char>('0' + v % 8);
  std::memcpy(field, digits.data(), len - 1);
  field[len - 1] = '\0';
}

// The tar holding only stargz.index.json, byte for byte as Go's archive/tar
// writes tar.Header{Typeflag: TypeReg, Name: TOCTarName, Size: n} (USTAR, zero
// mode, owner and mtime), then the padding and the two zero end blocks.
std::string TocTar(std::string_view toc_json) {
  char h[512] = {};
  std::memcpy(h, "stargz.index.json", 17);
  PutOctal(h + 100, 8, 0);                 // mode
  PutOctal(h + 108, 8, 0);                 // uid
  PutOctal(h + 116, 8, 0);                 // gid
  PutOctal(h + 124, 12, toc_json.size());  // size
  PutOctal(h + 136, 12, 0);                // mtime
  h[156] = '0';                            // typeflag
  std::memcpy(h + 257,
              "ustar\0"
              "00",
              8);           // magic, version
  PutOctal(h + 329, 8, 0);  // devmajor
  PutOctal(h + 337, 8, 0);  // devminor
  std::memset(h + 148, ' ', 8);
  uint64_t sum = 0;
  for (char c : h) sum += static_cast<unsigned char>(c);
  PutOctal(h + 148, 7, sum);
  h[155] = ' ';
  std::string out(h, sizeof(h));
  out.append(toc_json);
  out.append((512 - toc_json.size() % 512) % 512, '\0');
  out.append(1024, '\0');
  return out;
}

// The 51-byte footer: an empty gzip member, stored, whose FEXTRA holds the
// subfield 'S','G' with "%016xSTARGZ" of the TOC member's offset
// (gzipFooterBytes in stargz-snapshotter).
std::string EstargzFooter(uint64_t toc_offset) {
  char subfield[32];
  std::snprintf(subfield, sizeof(subfield), "%016llxSTARGZ",
                static_cast<unsigned long long>(toc_offset));
  std::string out("\x1f\x8b\x08\x04\0\0\0\0\0\xff", 10);  // FEXTRA, mtime 0, OS 255
  out.append("\x1a\x00", 2);                              // XLEN 26
  out.append("SG\x16\x00", 4);                            // SI1 SI2 LEN=22
  out.append(subfield, 22);
  out.append("\x01\x00\x00\xff\xff", 5);  // final stored block, empty
  out.append(8, '\0');                    // CRC32 and ISIZE of nothing
  return out;
}

std::string Base64(std::string_view in) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = static_cast<unsigned char>(in[i]) << 16 |
                 static_cast<unsigned char>(in[i + 1]) << 8 | static_cast<unsigned char>(in[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out += kAlphabet[(v >> s) & 63];
  }
  if (i + 1 == in.size()) {
    uint32_t v = static_cast<unsigned char>(in[i]) << 16;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    uint32_t v = static_cast<unsigned char>(in[i]) << 16 | static_cast<unsigned char>(in[i + 1])
                                                               << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

std::string_view TocType(TarEntry::Kind kind) {
  switch (kind) {
    case TarEntry::kDir:
      return "dir";
    case TarEntry::kFile:
      return "reg";
    case TarEntry::kSymlink:
      return "symlink";
    case TarEntry::kHardlink:
      return "hardlink";
    case TarEntry::kChar:
      return "char";
    case TarEntry::kBlock:
      return "block";
    case TarEntry::kFifo:
      return "fifo";
  }
  return "";
}

char TarTypeflag(TarEntry::Kind kind) {
  switch (kind) {
    case TarEntry::kDir:
      return '5';
    case TarEntry::kFile:
      return '0';
    case TarEntry::kSymlink:
      return '2';
    case TarEntry::kHardlink:
      return '1';
    case TarEntry::kChar:
      return '3';
    case TarEntry::kBlock:
      return '4';
    case TarEntry::kFifo:
      return '6';
  }
  return '?';
}

struct Estargz {
  std::string blob;
  std::string toc_digest;  // "sha256:<hex>" of the TOC JSON
  std::string diff_id;     // of everything the members inflate to: the tar and the TOC tar
  int64_t uncompressed_size = 0;
};

// The eStargz blob BuildKit makes from `tar` (estargz.NewWriterLevel(...).
// AppendTarLossLess, then Close): the tar's bytes unchanged, cut into gzip
// members so that each chunk of each non-empty regular file's payload starts
// one (the headers and padding before it stay in the member before); then
// the TOC tar in a member of its own; then the footer. `entries` are what
// WriteTar wrote `tar` from, in order. Deflate streams come from zlib, not
// Go's compress/flate, so the compressed bytes differ from BuildKit's; the
// layout, the uncompressed bytes, the TOC and the footer do not.
Result<Estargz> MakeEstargz(const std::string& tar, const std::vector<TarEntry>& entries,
                            int64_t layer_mtime, int64_t chunk_size) {
  BCFS_ASSIGN_OR_RETURN(std::vector<TarSpan> spans, ScanTar(tar));
  if (spans.size() != entries.size()) {
    return InternalError("estargz: the tar has " + std::to_string(spans.size()) + " entries, not " +
                         std::to_string(entries.size()));
  }
  // Pass 1: the members.
  std::vector<size_t> cuts;
  for (size_t i = 0; i < spans.size(); ++i) {
    if (spans[i].type != TarTypeflag(entries[i].kind)) {
      return InternalError("estargz: tar entry " + entries[i].path + " has an unexpected type");
    }
    for (int64_t off = 0; off < spans[i].size; off += chunk_size) {
      cuts.push_back(spans[i].data + static_cast<size_t>(off));
    }
  }
  Estargz out;
  std::vector<int64_t> member_offset;  // of the member starting at cuts[k]
  size_t start = 0;
  for (size_t k = 0; k <= cuts.size(); ++k) {
    size_t end = k < cuts.size() ? cuts[k] : tar.size();
    BCFS_ASSIGN_OR_RETURN(std::string member,
                          Gzip(std::string_view(tar).substr(start, end - start), true));
    out.blob += member;
    if (k < cuts.size()) member_offset.push_back(static_cast<int64_t>(out.blob.size()));
    start = end;
  }

  // Pass 2: the TOC, fields in TOCEntry's order, Go's omitempty applied.
  Json toc_entries = Json::array();
  std::map<int64_t, std::string> last_uname, last_gname;
  auto name_if_changed = [](std::map<int64_t, std::string>& last, int64_t id,
                            const std::string& name) -> std::string {
    if (name.empty() || last[id] == name) return "";
    last[id] = name;
    return name;
  };
  size_t next_member = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    const TarEntry& t = entries[i];
    Json ent = Json::object();
    ent["name"] = t.path;
    ent["type"] = TocType(t.kind);
    if (t.kind == TarEntry::kFile && !t.data.empty()) {
      ent["size"] = static_cast<int64_t>(t.data.size());
    }
    // formatModtime: UTC, rounded to the second, empty for the epoch.
    int64_t sec = t.mtime.value_or(layer_mtime);
    if (sec != 0) ent["modtime"] = GoTime(sec + (t.mtime_nsec >= 500000000 ? 1 : 0), 0);
    if (t.kind == TarEntry::kSymlink || t.kind == TarEntry::kHardlink) ent["linkName"] = t.data;
    if (EffectiveMode(t) != 0) ent["mode"] = EffectiveMode(t);
    if (t.uid != 0) ent["uid"] = t.uid;
    if (t.gid != 0) ent["gid"] = t.gid;
    if (std::string u = name_if_changed(last_uname, t.uid, t.uname); !u.empty()) {
      ent["userName"] = u;
    }
    if (std::string g = name_if_changed(last_gname, t.gid, t.gname); !g.empty()) {
      ent["groupName"] = g;
    }
    const int64_t size = spans[i].size;
    if (size > 0) ent["offset"] = member_offset[next_member];
    if (t.kind == TarEntry::kChar || t.kind == TarEntry::kBlock) {
      if (t.dev_major != 0) ent["devMajor"] = t.dev_major;
      if (t.dev_minor != 0) ent["devMinor"] = t.dev_minor;
    }
    if (!t.xattrs.empty()) {
      Json x = Json::object();  // Go map: sorted keys; []byte: base64
      for (const auto& [k, v] : t.xattrs) x[k] = Base64(v);
      ent["xattrs"] = std::move(x);
    }
    if (t.kind != TarEntry::kFile) {
      toc_entries.push_back(std::move(ent));
      continue;
    }
    ent["digest"] = Sha256Text(t.data);
    if (size == 0) {
      toc_entries.push_back(std::move(ent));
      continue;
    }
    for (int64_t off = 0; off < size; off += chunk_size) {
      if (off > 0) {
        ent = Json::object();
        ent["name"] = t.path;
        ent["type"] = "chunk";
        ent["offset"] = member_offset[next_member];
        ent["chunkOffset"] = off;
      }
      ++next_member;
      int64_t n = std::min(chunk_size, size - off);
      if (size - off >= chunk_size) ent["chunkSize"] = chunk_size;  // 0: to the end
      ent["chunkDigest"] = Sha256Text(
          std::string_view(t.data).substr(static_cast<size_t>(off), static_cast<size_t>(n)));
      toc_entries.push_back(std::move(ent));
    }
  }
  Json toc = Json::object();
  toc["version"] = 1;
  toc["entries"] = std::move(toc_entries);
  // json.MarshalIndent(toc, "", "\t"). The names here need none of the
  // escapes where Go and nlohmann differ (<, >, &, U+2028, U+2029).
  std::string toc_json = toc.dump(1, '\t');
  std::string toc_tar = TocTar(toc_json);
  uint64_t toc_offset = out.blob.size();
  BCFS_ASSIGN_OR_RETURN(std::string toc_member, Gzip(toc_tar, true));
  out.blob += toc_member;
  out.blob += EstargzFooter(toc_offset);
  out.toc_digest = Sha256Text(toc_json);
  Sha256 diff;
  diff.Update(tar);
  diff.Update(toc_tar);
  out.diff_id = diff.Finish().ToString();
  out.uncompressed_size = static_cast<int64_t>(tar.size() + toc_tar.size());
  return out;
}

std::string LayerMediaType(Shape shape, Compression c) {
  bool docker = shape == Shape::kManifestList;
  switch (c) {
    case Compression::kGzip:
    case Compression::kEstargz:  // FORMATS.md §3.4: the gzip type plus the TOC annotations
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

std::string_view ManifestMediaType(Shape shape) {
  switch (shape) {
    case Shape::kImageManifest:
      return kOciManifestType;
    case Shape::kIndex:
      return kOciIndexType;
    case Shape::kManifestList:
      return kDockerListType;
  }
  return "";
}

// ---------------------------------------------------------------- files

Status MakeDir(const fs::path& p) {
  if (::mkdir(p.c_str(), 0755) != 0 && errno != EEXIST) {
    return ErrnoError(errno, "create directory " + p.string());
  }
  if (::chmod(p.c_str(), 0755) != 0) return ErrnoError(errno, "chmod " + p.string());
  return OkStatus();
}

Status WriteFile(const fs::path& p, std::string_view bytes, mode_t mode) {
  int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return ErrnoError(errno, "create " + p.string());
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      ::unlink(p.c_str());
      return ErrnoError(err, "write " + p.string());
    }
    done += static_cast<size_t>(n);
  }
  if (::fchmod(fd, mode) != 0) {
    int err = errno;
    ::close(fd);
    return ErrnoError(err, "chmod " + p.string());
  }
  if (::close(fd) != 0) return ErrnoError(errno, "close " + p.string());
  return OkStatus();
}

Status PrepareOutDir(const fs::path& out) {
  std::error_code ec;
  fs::file_status st = fs::status(out, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return ErrnoError(ec.value(), "stat --out " + out.string());
  }
  if (fs::exists(st)) {
    if (!fs::is_directory(st)) {
      return InvalidArgumentError("--out " + out.string() + " exists and is not a directory");
    }
    if (!fs::is_empty(out, ec) || ec) {
      return InvalidArgumentError("--out " + out.string() + " exists and is not empty");
    }
  } else {
    fs::create_directories(out, ec);
    if (ec) return ErrnoError(ec.value(), "create --out " + out.string());
  }
  BCFS_RETURN_IF_ERROR(MakeDir(out));
  BCFS_RETURN_IF_ERROR(MakeDir(out / "blobs"));
  BCFS_RETURN_IF_ERROR(MakeDir(out / "blobs" / "sha256"));
  return MakeDir(out / "ingest");
}

// ---------------------------------------------------------------- generator

// Everything except the state of --out.
Status ValidateOptions(const GenOptions& o) {
  if (o.out_dir.empty()) return InvalidArgumentError("--out DIR is required (see --help)");
  if (o.layers < 1 || o.layers > kMaxLayers) {
    return InvalidArgumentError("--layers must be between 1 and " + std::to_string(kMaxLayers));
  }
  if (o.files < 0 || o.files > kMaxFiles) {
    return InvalidArgumentError("--files must be between 0 and " + std::to_string(kMaxFiles));
  }
  if (o.file_size < 0 || o.file_size > kMaxFileSize) {
    return InvalidArgumentError("--file-size must be between 0 and " +
                                std::to_string(kMaxFileSize));
  }
  if (o.estargz_chunk_size < 1 || o.estargz_chunk_size > kMaxFileSize) {
    return InvalidArgumentError("--estargz-chunk-size must be between 1 and " +
                                std::to_string(kMaxFileSize));
  }
  return ResolveRefNames(o).status();
}

struct Descriptor {
  std::string media_type;
  std::string digest;  // "sha256:<hex>"
  int64_t size = 0;
};

struct LayerInfo {
  Descriptor desc;
  std::string diff_id;
  std::string created_at;
  std::string record_digest;
  std::string record_created_at;
  std::string selector;  // of the record's input, empty for none
  // eStargz only (FORMATS.md §1.4): the TOC digest and the uncompressed size.
  std::string toc_digest;
  int64_t uncompressed_size = 0;
};

class Generator {
 public:
  explicit Generator(const GenOptions& o)
      : o_(o), blob_dir_(fs::path(o.out_dir) / "blobs/sha256") {}

  // Content-addressed: a blob already written (the shared base) is kept.
  Result<Descriptor> PutBlob(std::string media_type, std::string_view bytes) {
    Digest d = Digest::Sha256Of(bytes);
    if (written_.insert(d.hex()).second) {
      BCFS_RETURN_IF_ERROR(WriteFile(blob_dir_ / d.hex(), bytes, 0444));
    }
    return Descriptor{std::move(media_type), d.ToString(), static_cast<int64_t>(bytes.size())};
  }

  // What --rich adds to layer `layer` (GenOptions::rich). The lower layer of
  // layer L is layer L-1 (the base for L = 1), so each upper layer whites out
  // layer<L-1>/rich/doomed.txt, and each one's opaque shared/ hides the
  // shared/from-layer<L-1>.txt below.
  void AddRichEntries(int layer, const std::string& prefix, std::vector<TarEntry>* out) {
    Rng rng(prefix + " rich");
    const std::string l = std::to_string(layer);
    const std::string dir = "layer" + l + "/rich/";
    auto add = [&](TarEntry::Kind kind, std::string path, std::string data, int mode, int64_t uid,
                   int64_t gid) -> TarEntry& {
      TarEntry t{kind, std::move(path), std::move(data)};
      t.mode = mode;
      t.uid = uid;
      t.gid = gid;
      static const std::map<int64_t, std::string> kUsers = {{1000, "builder"}, {1001, "tester"}};
      static const std::map<int64_t, std::string> kGroups = {
          {1000, "builder"}, {1002, "testers"}, {6, "disk"}};
      if (auto it = kUsers.find(uid); it != kUsers.end()) t.uname = it->second;
      if (auto it = kGroups.find(gid); it != kGroups.end()) t.gname = it->second;
      t.mtime = BaseUnixSeconds() + 1000 + static_cast<int64_t>(rng.Uniform(1000));
      t.mtime_nsec = 1 + static_cast<long>(rng.Uniform(999999999));
      out->push_back(std::move(t));
      return out->back();
    };
    auto text = [&](std::string_view what) {
      return std::string(what) + " (layer " + l + ", " + Digest::Sha256Of(rng.Bytes(8)).hex() +
             ")\n";
    };
    // Whiteouts as containerd writes them: empty, mode 0, root, the layer's mtime.
    auto whiteout = [&](std::string path) { out->push_back({TarEntry::kFile, path, "", 0}); };

    add(TarEntry::kDir, dir, "", 0755, 1000, 1000);
    add(TarEntry::kFile, dir + "plain.txt", text("plain"), 0644, 1000, 1000);
    add(TarEntry::kFile, dir + "doomed.txt", text("whited out by the layer above"), 0600, 1001,
        1002);
    // A name past ustar's 100-byte name field that no prefix split can hold.
    std::string long_name = "long-name";
    for (int i = 0; i < 11; ++i) long_name += "-0123456789";
    long_name += ".txt";
    add(TarEntry::kFile, dir + long_name, rng.Bytes(300), 0644, 1000, 1000);
    add(TarEntry::kSymlink, dir + "long-symlink", long_name, 0777, 1000, 1000);
    add(TarEntry::kFile, dir + "hardlink-target", text("two names"), 0640, 1001, 1002);
    add(TarEntry::kHardlink, dir + "hardlink", dir + "hardlink-target", 0640, 1001, 1002);
    add(TarEntry::kHardlink, dir + "hardlink-to-long", dir + long_name, 0644, 1000, 1000);
    TarEntry& chr = add(TarEntry::kChar, dir + "chardev", "", 0666, 0, 0);
    chr.dev_major = 1;
    chr.dev_minor = 3;
    TarEntry& blk = add(TarEntry::kBlock, dir + "blockdev", "", 0660, 0, 6);
    blk.dev_major = 8;
    blk.dev_minor = 1;
    add(TarEntry::kFifo, dir + "fifo", "", 0620, 1000, 1000);
    add(TarEntry::kFile, dir + "xattrs", text("with xattrs"), 0644, 1000, 1000).xattrs = {
        {"user.comment", "written by buildcachefs-gen"}, {"user.layer", l}};
    add(TarEntry::kDir, dir + "xattr-dir/", "", 0755, 1000, 1000).xattrs = {
        {"user.dir", "a directory with an xattr"}};
    add(TarEntry::kFile, dir + "setuid", text("#!/bin/sh setuid"), 04755, 0, 0);
    add(TarEntry::kFile, dir + "setgid", text("setgid"), 02711, 1000, 1000);
    add(TarEntry::kDir, dir + "sticky/", "", 01777, 0, 0);
    add(TarEntry::kFile, dir + "sticky/inside", text("in a sticky directory"), 0644, 1001, 1002);
    add(TarEntry::kFile, dir + "empty", "", 0644, 1000, 1000);
    // Exactly --file-size bytes: a whole number of eStargz chunks when the
    // size is a multiple of the chunk size (the last chunkSize is then kept).
    add(TarEntry::kFile, dir + "exact.bin", rng.Bytes(static_cast<size_t>(o_.file_size)), 0644,
        1000, 1000);
    add(TarEntry::kDir, "shared/", "", 0755, 0, 0);
    if (layer > 0) whiteout("shared/.wh..wh..opq");
    add(TarEntry::kFile, "shared/from-layer" + l + ".txt", text("shared"), 0644, 0, 0);
    if (layer > 0) whiteout("layer" + std::to_string(layer - 1) + "/rich/.wh.doomed.txt");
  }

  Result<LayerInfo> MakeLayer(int ref, int layer) {
    bool base = layer == 0;
    std::string who =
        base ? "base" : "ref=" + std::to_string(ref) + " layer=" + std::to_string(layer);
    std::string prefix = "bcfs-gen seed=" + std::to_string(o_.seed) + " " + who;
    Rng rng(prefix + " content");

    std::string dir = "layer" + std::to_string(layer);
    std::vector<TarEntry> entries;
    entries.push_back({TarEntry::kDir, dir + "/", ""});
    int64_t delta = o_.file_size / 8;
    for (int i = 0; i < o_.files; ++i) {
      int64_t size = o_.file_size - delta +
                     static_cast<int64_t>(rng.Uniform(static_cast<uint64_t>(2 * delta + 1)));
      entries.push_back({TarEntry::kFile, dir + "/file" + std::to_string(i) + ".bin",
                         rng.Bytes(static_cast<size_t>(size))});
    }
    if (!base && o_.files > 0) {
      std::string target =
          "file" + std::to_string(rng.Uniform(static_cast<uint64_t>(o_.files))) + ".bin";
      entries.push_back({TarEntry::kSymlink, dir + "/symlink", target});
      entries.push_back({TarEntry::kHardlink, dir + "/hardlink", dir + "/" + target});
    }
    if (o_.rich) AddRichEntries(layer, prefix, &entries);
    int64_t offset = base ? 0 : int64_t{ref} * o_.layers + layer;
    int64_t when = BaseUnixSeconds() + offset;
    BCFS_ASSIGN_OR_RETURN(std::string tar, WriteTar(entries, BaseUnixSeconds()));

    LayerInfo info;
    info.diff_id = Sha256Text(tar);
    std::string blob;
    switch (o_.compression) {
      case Compression::kEstargz: {
        BCFS_ASSIGN_OR_RETURN(Estargz e,
                              MakeEstargz(tar, entries, BaseUnixSeconds(), o_.estargz_chunk_size));
        blob = std::move(e.blob);
        info.diff_id = std::move(e.diff_id);
        info.toc_digest = std::move(e.toc_digest);
        info.uncompressed_size = e.uncompressed_size;
        break;
      }
      case Compression::kGzip: {
        BCFS_ASSIGN_OR_RETURN(blob, Gzip(tar));
        break;
      }
      case Compression::kZstd: {
        BCFS_ASSIGN_OR_RETURN(blob, Zstd(tar));
        break;
      }
      case Compression::kUncompressed:
        blob = std::move(tar);
        break;
    }
    BCFS_ASSIGN_OR_RETURN(info.desc, PutBlob(LayerMediaType(o_.shape, o_.compression), blob));
    info.created_at = GoTime(when, kBaseNanos);
    info.record_digest = Sha256Text(prefix + " record");
    info.record_created_at = GoTime(when, kBaseNanos + kRecordDelayNanos);
    if (layer % 2 == 1) info.selector = Sha256Text(prefix + " selector");
    return info;
  }

  // One ref: its layers, cache config and top-level manifest.
  Result<GeneratedRef> MakeRef(int ref, const std::string& name) {
    std::vector<LayerInfo> chain;
    for (int l = 0; l < o_.layers; ++l) {
      if (l == 0 && base_.has_value()) {
        chain.push_back(*base_);
        continue;
      }
      BCFS_ASSIGN_OR_RETURN(LayerInfo info, MakeLayer(ref, l));
      if (l == 0) base_ = info;
      chain.push_back(std::move(info));
    }
    const int n = static_cast<int>(chain.size());

    // Layers, as BuildKit's sortConfig orders them: by (blob, old parent
    // index), then parents renumbered.
    std::vector<int> old_parent(n);
    for (int l = 0; l < n; ++l) old_parent[l] = l - 1;  // -1 for the base
    std::vector<int> order(n);                          // new position -> chain index
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
      if (chain[a].desc.digest != chain[b].desc.digest) {
        return chain[a].desc.digest < chain[b].desc.digest;
      }
      return old_parent[a] < old_parent[b];
    });
    std::vector<int> layer_pos(n);  // chain index -> new position
    for (int i = 0; i < n; ++i) layer_pos[order[i]] = i;

    // Records: one per layer result, sorted by digest.
    std::vector<int> rec_order(n);
    std::iota(rec_order.begin(), rec_order.end(), 0);
    std::stable_sort(rec_order.begin(), rec_order.end(),
                     [&](int a, int b) { return chain[a].record_digest < chain[b].record_digest; });
    std::vector<int> rec_pos(n);
    for (int i = 0; i < n; ++i) rec_pos[rec_order[i]] = i;

    Json config = Json::object();
    Json layers = Json::array();
    for (int i = 0; i < n; ++i) {
      int l = order[i];
      Json entry = Json::object();
      entry["blob"] = chain[l].desc.digest;
      int parent = old_parent[l] < 0 ? -1 : layer_pos[old_parent[l]];
      if (parent != 0) entry["parent"] = parent;  // Go omitempty drops 0
      layers.push_back(std::move(entry));
    }
    Json records = Json::array();
    for (int i = 0; i < n; ++i) {
      int l = rec_order[i];
      Json rec = Json::object();
      Json result = Json::object();
      result["layer"] = layer_pos[l];
      result["createdAt"] = chain[l].record_created_at;
      rec["layers"] = Json::array({std::move(result)});
      rec["digest"] = chain[l].record_digest;
      if (l > 0) {
        Json input = Json::object();
        if (!chain[l].selector.empty()) input["selector"] = chain[l].selector;
        input["link"] = rec_pos[l - 1];
        rec["inputs"] = Json::array({Json::array({std::move(input)})});
      }
      records.push_back(std::move(rec));
    }
    config["layers"] = std::move(layers);
    config["records"] = std::move(records);
    BCFS_ASSIGN_OR_RETURN(Descriptor config_desc,
                          PutBlob(std::string(kCacheConfigType), config.dump()));

    Json descs = Json::array();
    for (int i = 0; i < n; ++i) {
      const LayerInfo& li = chain[order[i]];
      Json d = Json::object();
      d["mediaType"] = li.desc.media_type;
      d["digest"] = li.desc.digest;
      d["size"] = li.desc.size;
      Json ann = Json::object();  // Go map keys: sorted
      ann["buildkit/createdat"] = li.created_at;
      if (!li.toc_digest.empty()) ann["containerd.io/snapshot/stargz/toc.digest"] = li.toc_digest;
      ann["containerd.io/uncompressed"] = li.diff_id;
      if (!li.toc_digest.empty()) {
        ann["io.containers.estargz.uncompressed-size"] = std::to_string(li.uncompressed_size);
      }
      d["annotations"] = std::move(ann);
      descs.push_back(std::move(d));
    }
    Json config_json = Json::object();
    config_json["mediaType"] = config_desc.media_type;
    config_json["digest"] = config_desc.digest;
    config_json["size"] = config_desc.size;

    std::string media_type(ManifestMediaType(o_.shape));
    Json manifest = Json::object();
    manifest["schemaVersion"] = 2;
    manifest["mediaType"] = media_type;
    if (o_.shape == Shape::kImageManifest) {
      manifest["config"] = std::move(config_json);
      manifest["layers"] = std::move(descs);
    } else {
      descs.push_back(std::move(config_json));
      manifest["manifests"] = std::move(descs);
    }
    BCFS_ASSIGN_OR_RETURN(Descriptor top, PutBlob(media_type, manifest.dump()));
    return GeneratedRef{name, top.digest, media_type};
  }

  Result<std::vector<GeneratedRef>> Run() {
    BCFS_RETURN_IF_ERROR(ValidateOptions(o_));
    BCFS_ASSIGN_OR_RETURN(std::vector<std::string> names, ResolveRefNames(o_));
    BCFS_RETURN_IF_ERROR(PrepareOutDir(o_.out_dir));

    std::vector<GeneratedRef> refs;
    for (size_t r = 0; r < names.size(); ++r) {
      BCFS_ASSIGN_OR_RETURN(GeneratedRef g, MakeRef(static_cast<int>(r), names[r]));
      refs.push_back(std::move(g));
    }

    // What the client writes after the export (FORMATS.md §2.3).
    Json manifests = Json::array();
    for (const GeneratedRef& g : refs) {
      Json d = Json::object();
      d["mediaType"] = g.manifest_media_type;
      d["digest"] = g.manifest_digest;
      BCFS_ASSIGN_OR_RETURN(int64_t size, BlobSize(g.manifest_digest));
      d["size"] = size;
      d["annotations"] = Json::object({{"org.opencontainers.image.ref.name", g.name}});
      manifests.push_back(std::move(d));
    }
    Json index = Json::object();
    index["schemaVersion"] = 2;
    index["mediaType"] = kOciIndexType;
    index["manifests"] = std::move(manifests);
    fs::path out(o_.out_dir);
    BCFS_RETURN_IF_ERROR(WriteFile(out / "oci-layout", R"({"imageLayoutVersion":"1.0.0"})", 0644));
    BCFS_RETURN_IF_ERROR(WriteFile(out / "index.json", index.dump(), 0644));
    return refs;
  }

 private:
  Result<int64_t> BlobSize(const std::string& digest) {
    fs::path p = blob_dir_ / digest.substr(7);
    struct stat st;
    if (::stat(p.c_str(), &st) != 0) return ErrnoError(errno, "stat " + p.string());
    return static_cast<int64_t>(st.st_size);
  }

  const GenOptions& o_;
  fs::path blob_dir_;
  std::set<std::string> written_;
  std::optional<LayerInfo> base_;
};

bool ValidRefNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         std::string_view("._-/:@+").find(c) != std::string_view::npos;
}

template <typename T>
Result<T> ParseNumber(std::string_view flag, std::string_view text) {
  T v{};
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || p != text.data() + text.size()) {
    return InvalidArgumentError(std::string(flag) + ": \"" + std::string(text) +
                                "\" is not a valid number");
  }
  return v;
}

Result<ParsedArgs> ParseArgsImpl(const std::vector<std::string>& args) {
  ParsedArgs out;
  bool refs_given = false;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string flag = args[i];
    std::optional<std::string> value;
    if (size_t eq = flag.find('='); flag.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag.resize(eq);
    }
    if (flag == "--help" || flag == "-h") {
      if (value) return InvalidArgumentError("--help takes no value");
      out.help = true;
      continue;
    }
    if (flag == "--rich") {
      if (value) return InvalidArgumentError("--rich takes no value");
      out.options.rich = true;
      continue;
    }
    static const std::set<std::string> kFlags = {
        "--out",    "--shape", "--compression", "--refs", "--ref-names",
        "--layers", "--files", "--file-size",   "--seed", "--estargz-chunk-size"};
    if (kFlags.count(flag) == 0) {
      return InvalidArgumentError("unknown argument \"" + args[i] + "\" (see --help)");
    }
    if (!value) {
      if (i + 1 >= args.size()) return InvalidArgumentError(flag + " needs a value");
      value = args[++i];
    }
    GenOptions& o = out.options;
    if (flag == "--out") {
      if (value->empty()) return InvalidArgumentError("--out needs a non-empty path");
      o.out_dir = *value;
    } else if (flag == "--shape") {
      BCFS_ASSIGN_OR_RETURN(o.shape, ParseShape(*value));
    } else if (flag == "--compression") {
      BCFS_ASSIGN_OR_RETURN(o.compression, ParseCompression(*value));
    } else if (flag == "--refs") {
      BCFS_ASSIGN_OR_RETURN(o.refs, ParseNumber<int>(flag, *value));
      refs_given = true;
    } else if (flag == "--ref-names") {
      o.ref_names.clear();
      size_t start = 0;
      while (true) {
        size_t comma = value->find(',', start);
        o.ref_names.push_back(value->substr(start, comma - start));
        if (comma == std::string::npos) break;
        start = comma + 1;
      }
    } else if (flag == "--layers") {
      BCFS_ASSIGN_OR_RETURN(o.layers, ParseNumber<int>(flag, *value));
    } else if (flag == "--files") {
      BCFS_ASSIGN_OR_RETURN(o.files, ParseNumber<int>(flag, *value));
    } else if (flag == "--file-size") {
      BCFS_ASSIGN_OR_RETURN(o.file_size, ParseNumber<int64_t>(flag, *value));
    } else if (flag == "--seed") {
      BCFS_ASSIGN_OR_RETURN(o.seed, ParseNumber<uint64_t>(flag, *value));
    } else if (flag == "--estargz-chunk-size") {
      BCFS_ASSIGN_OR_RETURN(o.estargz_chunk_size, ParseNumber<int64_t>(flag, *value));
    }
  }
  if (out.help) return out;
  GenOptions& o = out.options;
  if (!refs_given && !o.ref_names.empty()) o.refs = static_cast<int>(o.ref_names.size());
  BCFS_RETURN_IF_ERROR(ValidateOptions(o));
  return out;
}

}  // namespace

Result<Shape> ParseShape(std::string_view text) noexcept {
  if (text == "image-manifest") return Shape::kImageManifest;
  if (text == "index") return Shape::kIndex;
  if (text == "manifest-list") return Shape::kManifestList;
  return InvalidArgumentError("--shape: \"" + std::string(text) +
                              "\" is not one of image-manifest, index, manifest-list");
}

Result<Compression> ParseCompression(std::string_view text) noexcept {
  if (text == "gzip") return Compression::kGzip;
  if (text == "zstd") return Compression::kZstd;
  if (text == "uncompressed") return Compression::kUncompressed;
  if (text == "estargz") return Compression::kEstargz;
  return InvalidArgumentError("--compression: \"" + std::string(text) +
                              "\" is not one of gzip, zstd, uncompressed, estargz");
}

std::string_view ShapeName(Shape shape) noexcept {
  switch (shape) {
    case Shape::kImageManifest:
      return "image-manifest";
    case Shape::kIndex:
      return "index";
    case Shape::kManifestList:
      return "manifest-list";
  }
  return "?";
}

std::string_view CompressionName(Compression compression) noexcept {
  switch (compression) {
    case Compression::kGzip:
      return "gzip";
    case Compression::kZstd:
      return "zstd";
    case Compression::kUncompressed:
      return "uncompressed";
    case Compression::kEstargz:
      return "estargz";
  }
  return "?";
}

std::string Usage() noexcept {
  return "usage: buildcachefs-gen --out DIR [--shape image-manifest|index|manifest-list]\n"
         "                        [--compression gzip|zstd|uncompressed|estargz]\n"
         "                        [--estargz-chunk-size BYTES] [--rich] [--refs N]\n"
         "                        [--ref-names a,b,...] [--layers N] [--files N]\n"
         "                        [--file-size BYTES] [--seed N] [--help]\n"
         "\n"
         "Writes a BuildKit type=local cache directory (oci-layout, index.json, blobs/sha256,\n"
         "ingest/) that is byte-for-byte the same for the same options and seed, and prints\n"
         "\"<ref name> <manifest digest>\" for each ref.\n"
         "\n"
         "  --out DIR          directory to create (must not exist, or be empty)\n"
         "  --shape S          top-level cache manifest: image-manifest (default), index,\n"
         "                     manifest-list (Docker media types)\n"
         "  --compression C    layer compression: gzip (default), zstd, uncompressed,\n"
         "                     estargz (BuildKit's lossless eStargz: a gzip member per file\n"
         "                     chunk, the TOC stargz.index.json, the 51-byte footer)\n"
         "  --estargz-chunk-size BYTES  eStargz chunk size, default 4194304\n"
         "  --rich             add to every layer: PAX long names and link targets, hard\n"
         "                     links, devices, a fifo, xattrs, nanosecond mtimes,\n"
         "                     setuid/setgid/sticky, non-root owners, whiteouts of the\n"
         "                     layer below and an opaque directory\n"
         "  --refs N           number of refs (tags), default 1\n"
         "  --ref-names LIST   comma-separated tags; default latest, ref1, ref2, ...\n"
         "  --layers N         layers per ref, base layer (shared by all refs) included; default "
         "3\n"
         "  --files N          regular files per layer, default 4\n"
         "  --file-size BYTES  approximate size of each file, default 4096\n"
         "  --seed N           seed for contents and record digests, default 1\n";
}

Result<std::vector<std::string>> ResolveRefNames(const GenOptions& o) noexcept {
  try {
    if (o.refs < 1 || o.refs > kMaxRefs) {
      return InvalidArgumentError("--refs must be between 1 and " + std::to_string(kMaxRefs));
    }
    std::vector<std::string> names = o.ref_names;
    if (names.empty()) {
      names.push_back("latest");
      for (int i = 1; i < o.refs; ++i) names.push_back("ref" + std::to_string(i));
    } else if (static_cast<int>(names.size()) != o.refs) {
      return InvalidArgumentError("--refs is " + std::to_string(o.refs) +
                                  " but --ref-names lists " + std::to_string(names.size()) +
                                  (names.size() == 1 ? " name" : " names"));
    }
    std::set<std::string> seen;
    for (const std::string& n : names) {
      if (n.empty()) return InvalidArgumentError("--ref-names: empty ref name");
      if (n.size() > 255) return InvalidArgumentError("--ref-names: ref name longer than 255");
      if (!std::all_of(n.begin(), n.end(), ValidRefNameChar)) {
        return InvalidArgumentError("--ref-names: \"" + n +
                                    "\" has a character outside [A-Za-z0-9._-/:@+]");
      }
      if (!seen.insert(n).second) {
        return InvalidArgumentError("--ref-names: \"" + n + "\" is listed twice");
      }
    }
    return names;
  } catch (const std::exception& e) {
    return InternalError(std::string("resolve ref names: ") + e.what());
  }
}

Result<ParsedArgs> ParseArgs(const std::vector<std::string>& args) noexcept {
  try {
    return ParseArgsImpl(args);
  } catch (const std::exception& e) {
    return InternalError(std::string("parse arguments: ") + e.what());
  }
}

Result<std::vector<GeneratedRef>> Generate(const GenOptions& options) noexcept {
  try {
    Generator g(options);
    return g.Run();
  } catch (const std::exception& e) {
    return InternalError("generate " + options.out_dir + ": " + e.what());
  } catch (...) {
    return InternalError("generate " + options.out_dir + ": unknown exception");
  }
}

}  // namespace bcfs::gen
