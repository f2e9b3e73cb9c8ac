#include "formats/estargz.h"

#include <zlib.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <optional>

#include "core/base64.h"
#include "formats/json_util.h"

namespace bcfs::formats::estargz {
namespace {

constexpr size_t kInChunk = 64u << 10;
constexpr size_t kSkipChunk = 64u << 10;
constexpr size_t kTarBlock = 512;
constexpr uint64_t kMaxTarMetaSize = 1u << 20;  // PAX or GNU long-name records before the TOC

std::string AtOffset(uint64_t offset) { return " at compressed offset " + std::to_string(offset); }

// Inflates gzip data from the blob range [start, end): one member, or with
// `multistream` the members that follow it, as Go's gzip reader does.
class GzipRange {
 public:
  GzipRange(ByteSource& src, uint64_t start, uint64_t end, bool multistream)
      : src_(src),
        end_(std::min(end, src.size())),
        next_read_(start),
        multistream_(multistream),
        in_(kInChunk) {}
  GzipRange(const GzipRange&) = delete;
  GzipRange& operator=(const GzipRange&) = delete;
  ~GzipRange() {
    if (live_) inflateEnd(&s_);
  }

  Status Init() {
    int ret = inflateInit2(&s_, 15 + 16);
    if (ret != Z_OK) return InternalError(std::string("inflateInit2: ") + zError(ret));
    live_ = true;
    return OkStatus();
  }

  // Up to out.size() bytes; fewer only where the data ends.
  Result<size_t> Read(std::span<char> out) {
    size_t filled = 0;
    while (filled < out.size() && !done_) {
      if (s_.avail_in == 0) {
        if (next_read_ >= end_) {
          return CorruptError("gzip: member truncated: input ends" + AtOffset(end_));
        }
        size_t n = static_cast<size_t>(std::min<uint64_t>(in_.size(), end_ - next_read_));
        BCFS_RETURN_IF_ERROR(src_.ReadAt(next_read_, std::span<char>(in_.data(), n)));
        next_read_ += n;
        s_.next_in = reinterpret_cast<Bytef*>(in_.data());
        s_.avail_in = static_cast<uInt>(n);
      }
      uInt room = static_cast<uInt>(std::min<size_t>(out.size() - filled, UINT_MAX));
      s_.next_out = reinterpret_cast<Bytef*>(out.data() + filled);
      s_.avail_out = room;
      int ret = inflate(&s_, Z_NO_FLUSH);
      filled += room - s_.avail_out;
      if (ret == Z_STREAM_END) {
        if (!multistream_ || consumed() >= end_) {
          done_ = true;
          break;
        }
        if (inflateReset(&s_) != Z_OK) return InternalError("inflateReset failed");
        continue;
      }
      if (ret != Z_OK) {
        return CorruptError(std::string("gzip: ") + (s_.msg != nullptr ? s_.msg : zError(ret)) +
                            AtOffset(consumed()));
      }
    }
    return filled;
  }

  Status ReadExact(std::span<char> out) {
    BCFS_ASSIGN_OR_RETURN(size_t n, Read(out));
    if (n < out.size()) {
      return CorruptError("gzip: data ends" + AtOffset(consumed()) + ", " +
                          std::to_string(out.size() - n) + " bytes short");
    }
    return OkStatus();
  }

  Status Skip(uint64_t n) {
    std::vector<char> discard(static_cast<size_t>(std::min<uint64_t>(n, kSkipChunk)));
    while (n > 0) {
      size_t step = static_cast<size_t>(std::min<uint64_t>(n, discard.size()));
      BCFS_RETURN_IF_ERROR(ReadExact(std::span<char>(discard.data(), step)));
      n -= step;
    }
    return OkStatus();
  }

  uint64_t consumed() const { return next_read_ - s_.avail_in; }

 private:
  ByteSource& src_;
  uint64_t end_;
  uint64_t next_read_;
  bool multistream_;
  std::vector<char> in_;
  z_stream s_{};
  bool live_ = false;
  bool done_ = false;
};

// One gzip footer candidate: `p` is exactly 51 (or 47, legacy) bytes.
Result<uint64_t> ParseGzipFooter(std::string_view p, bool legacy) {
  std::string what = legacy ? "legacy footer: " : "footer: ";
  if (p.size() < 12 || p.compare(0, 3, "\x1f\x8b\x08") != 0) {
    return CorruptError(what + "not a gzip header");
  }
  auto flags = static_cast<unsigned char>(p[3]);
  if ((flags & 0xe0) != 0) return CorruptError(what + "reserved gzip flags set");
  if ((flags & 0x04) == 0) return CorruptError(what + "no gzip extra field");
  size_t xlen = static_cast<unsigned char>(p[10]) | (static_cast<unsigned char>(p[11]) << 8);
  if (12 + xlen > p.size()) return CorruptError(what + "extra field overruns the footer");
  std::string_view extra = p.substr(12, xlen);
  std::string_view payload;
  if (legacy) {
    payload = extra;
  } else {
    if (xlen < 4 || extra[0] != 'S' || extra[1] != 'G') {
      return CorruptError(what + "no SG subfield");
    }
    size_t slen =
        static_cast<unsigned char>(extra[2]) | (static_cast<unsigned char>(extra[3]) << 8);
    if (slen != 22) return CorruptError(what + "subfield length " + std::to_string(slen));
    payload = extra.substr(4);
  }
  if (payload.size() != 22 || payload.substr(16) != "STARGZ") {
    return CorruptError(what + "no STARGZ magic");
  }
  uint64_t offset = 0;
  for (char c : payload.substr(0, 16)) {
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else {
      return CorruptError(what + "TOC offset is not hex");
    }
    offset = offset << 4 | static_cast<uint64_t>(digit);
  }
  if (offset > static_cast<uint64_t>(INT64_MAX)) {
    return CorruptError(what + "TOC offset out of range");
  }
  return offset;
}

// tar numeric field: octal text, or base-256 when the high bit is set.
std::optional<uint64_t> TarNumber(std::string_view f) {
  if (!f.empty() && (static_cast<unsigned char>(f[0]) & 0x80) != 0) {
    if ((static_cast<unsigned char>(f[0]) & 0x40) != 0) return std::nullopt;  // negative
    uint64_t v = static_cast<unsigned char>(f[0]) & 0x3f;
    for (size_t i = 1; i < f.size(); ++i) {
      if (v >> 56 != 0) return std::nullopt;
      v = v << 8 | static_cast<unsigned char>(f[i]);
    }
    return v;
  }
  uint64_t v = 0;
  size_t i = 0;
  while (i < f.size() && (f[i] == ' ' || f[i] == '\0')) ++i;
  bool any = false;
  for (; i < f.size() && f[i] >= '0' && f[i] <= '7'; ++i) {
    if (v >> 60 != 0) return std::nullopt;
    v = v << 3 | static_cast<uint64_t>(f[i] - '0');
    any = true;
  }
  for (; i < f.size(); ++i) {
    if (f[i] != ' ' && f[i] != '\0') return std::nullopt;
  }
  if (!any) return std::nullopt;
  return v;
}

std::string CString(std::string_view f) { return std::string(f.substr(0, f.find('\0'))); }

// PAX records "<len> <key>=<value>\n": only path and size matter here.
Status ParsePax(std::string_view data, std::optional<std::string>* path,
                std::optional<uint64_t>* size) {
  while (!data.empty()) {
    size_t sp = data.find(' ');
    if (sp == std::string_view::npos || sp == 0) return CorruptError("bad PAX record");
    uint64_t len = 0;
    for (char c : data.substr(0, sp)) {
      if (c < '0' || c > '9' || len > data.size()) return CorruptError("bad PAX record length");
      len = len * 10 + static_cast<uint64_t>(c - '0');
    }
    if (len <= sp + 1 || len > data.size() || data[len - 1] != '\n') {
      return CorruptError("bad PAX record length");
    }
    std::string_view rec = data.substr(sp + 1, len - sp - 2);
    data.remove_prefix(len);
    size_t eq = rec.find('=');
    if (eq == std::string_view::npos) return CorruptError("bad PAX record");
    std::string_view key = rec.substr(0, eq), value = rec.substr(eq + 1);
    if (key == "path") {
      *path = std::string(value);
    } else if (key == "size") {
      uint64_t v = 0;
      if (value.empty()) return CorruptError("bad PAX size");
      for (char c : value) {
        if (c < '0' || c > '9' || v > (UINT64_MAX - 9) / 10) return CorruptError("bad PAX size");
        v = v * 10 + static_cast<uint64_t>(c - '0');
      }
      *size = v;
    }
  }
  return OkStatus();
}

Result<std::string> ReadPadded(GzipRange& gz, uint64_t size) {
  if (size > kMaxTarMetaSize) return CorruptError("tar metadata record too large");
  std::string data(static_cast<size_t>(size), '\0');
  BCFS_RETURN_IF_ERROR(gz.ReadExact(std::span<char>(data)));
  BCFS_RETURN_IF_ERROR(gz.Skip((kTarBlock - size % kTarBlock) % kTarBlock));
  return data;
}

// Reads the first real entry of the TOC tar; returns its name and size,
// leaving `gz` at its content.
Result<std::pair<std::string, uint64_t>> ReadFirstTarEntry(GzipRange& gz) {
  std::optional<std::string> pax_path, long_name;
  std::optional<uint64_t> pax_size;
  for (;;) {
    std::string block(kTarBlock, '\0');
    BCFS_RETURN_IF_ERROR(gz.ReadExact(std::span<char>(block)));
    if (block.find_first_not_of('\0') == std::string::npos) {
      return CorruptError("the TOC tar has no entry");
    }
    auto stored = TarNumber(std::string_view(block).substr(148, 8));
    uint64_t unsigned_sum = 0;
    int64_t signed_sum = 0;
    for (size_t i = 0; i < kTarBlock; ++i) {
      bool in_field = i >= 148 && i < 156;
      unsigned char u = in_field ? ' ' : static_cast<unsigned char>(block[i]);
      signed char sc = in_field ? ' ' : static_cast<signed char>(block[i]);
      unsigned_sum += u;
      signed_sum += sc;
    }
    if (!stored || (*stored != unsigned_sum && static_cast<int64_t>(*stored) != signed_sum)) {
      return CorruptError("the TOC tar header checksum does not match");
    }
    auto size = TarNumber(std::string_view(block).substr(124, 12));
    if (!size) return CorruptError("the TOC tar header has a bad size field");
    char type = block[156];
    if (type == 'x') {
      BCFS_ASSIGN_OR_RETURN(std::string pax, ReadPadded(gz, *size));
      BCFS_RETURN_IF_ERROR(ParsePax(pax, &pax_path, &pax_size));
      continue;
    }
    if (type == 'g') {
      BCFS_ASSIGN_OR_RETURN(std::string ignored, ReadPadded(gz, *size));
      continue;
    }
    if (type == 'L') {
      BCFS_ASSIGN_OR_RETURN(std::string name, ReadPadded(gz, *size));
      long_name = CString(name);
      continue;
    }
    std::string name = CString(std::string_view(block).substr(0, 100));
    if (std::string_view(block).substr(257, 5) == "ustar") {
      std::string prefix = CString(std::string_view(block).substr(345, 155));
      if (!prefix.empty()) name = prefix + "/" + name;
    }
    if (long_name) name = *long_name;
    if (pax_path) name = *pax_path;
    return std::make_pair(name, pax_size ? *pax_size : *size);
  }
}

Result<EntryType> ParseType(std::string_view t) {
  if (t == "dir") return EntryType::kDir;
  if (t == "reg") return EntryType::kReg;
  if (t == "symlink") return EntryType::kSymlink;
  if (t == "hardlink") return EntryType::kHardlink;
  if (t == "char") return EntryType::kChar;
  if (t == "block") return EntryType::kBlock;
  if (t == "fifo") return EntryType::kFifo;
  return NotFoundError(std::string(t));
}

bool Hidden(std::string_view name) {
  return name == kTocName || name == kPrefetchLandmark || name == kNoPrefetchLandmark;
}

Result<uint64_t> NonNegative(const FieldReader& r, std::string_view key) {
  BCFS_ASSIGN_OR_RETURN(std::optional<int64_t> v, r.Int(key));
  if (!v) return uint64_t{0};
  if (*v < 0) return r.Error(key, std::to_string(*v) + " is negative");
  return static_cast<uint64_t>(*v);
}

// The fields of a "reg" or "chunk" entry that place one chunk.
Result<Chunk> ParseChunk(const FieldReader& r) {
  Chunk c;
  BCFS_ASSIGN_OR_RETURN(c.offset, NonNegative(r, "offset"));
  BCFS_ASSIGN_OR_RETURN(c.inner_offset, NonNegative(r, "innerOffset"));
  BCFS_ASSIGN_OR_RETURN(c.chunk_offset, NonNegative(r, "chunkOffset"));
  BCFS_ASSIGN_OR_RETURN(c.chunk_size, NonNegative(r, "chunkSize"));
  BCFS_ASSIGN_OR_RETURN(std::optional<Digest> d, r.DigestField("chunkDigest", false));
  if (d) c.chunk_digest = *d;
  return c;
}

// A data entry (reg or chunk) in TOC order, hidden ones included, for the
// next-member computation.
struct DataRef {
  std::optional<size_t> entry;  // absent when hidden
  size_t chunk = 0;
  uint64_t offset = 0;
  uint64_t inner_offset = 0;
};

}  // namespace

std::string_view EntryTypeName(EntryType t) {
  switch (t) {
    case EntryType::kDir:
      return "dir";
    case EntryType::kReg:
      return "reg";
    case EntryType::kSymlink:
      return "symlink";
    case EntryType::kHardlink:
      return "hardlink";
    case EntryType::kChar:
      return "char";
    case EntryType::kBlock:
      return "block";
    case EntryType::kFifo:
      return "fifo";
  }
  return "unknown";
}

std::string CleanName(std::string_view name) {
  std::vector<std::string_view> parts;
  while (!name.empty()) {
    size_t slash = name.find('/');
    std::string_view part = name.substr(0, slash);
    name.remove_prefix(slash == std::string_view::npos ? name.size() : slash + 1);
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      if (!parts.empty()) parts.pop_back();
      continue;
    }
    parts.push_back(part);
  }
  std::string out;
  for (std::string_view p : parts) {
    if (!out.empty()) out.push_back('/');
    out.append(p);
  }
  return out;
}

const Entry* Toc::Find(std::string_view path) const {
  auto it = by_name.find(CleanName(path));
  return it == by_name.end() ? nullptr : &entries[it->second];
}

Result<Footer> ParseFooter(std::string_view tail) {
  if (tail.size() != kFooterSize) {
    return CorruptError("eStargz footer: want the last " + std::to_string(kFooterSize) +
                        " bytes, got " + std::to_string(tail.size()));
  }
  auto current = ParseGzipFooter(tail, false);
  if (current.ok()) return Footer{*current, kFooterSize};
  auto legacy = ParseGzipFooter(tail.substr(kFooterSize - kLegacyFooterSize), true);
  if (legacy.ok()) return Footer{*legacy, kLegacyFooterSize};
  return CorruptError("no eStargz footer (" + current.status().message() + "; " +
                      legacy.status().message() + ")");
}

Result<Footer> ReadFooter(ByteSource& src) {
  const uint64_t size = src.size();
  if (size < kFooterSize) {
    return CorruptError("no eStargz footer: a blob of " + std::to_string(size) +
                        " bytes is shorter than " + std::to_string(kFooterSize));
  }
  std::string tail(kFooterSize, '\0');
  BCFS_RETURN_IF_ERROR(src.ReadAt(size - kFooterSize, std::span<char>(tail)));
  return ParseFooter(tail);
}

Result<std::string> ReadTocJson(ByteSource& src, const Footer& footer, std::string_view doc) {
  const uint64_t size = src.size();
  if (footer.size > size || footer.toc_offset >= size - footer.size) {
    return CorruptError(std::string(doc) + ": eStargz TOC offset " +
                        std::to_string(footer.toc_offset) + " is not inside the " +
                        std::to_string(size) + "-byte blob before its footer");
  }
  auto context = std::string(doc) + ": eStargz TOC at offset " + std::to_string(footer.toc_offset);
  GzipRange gz(src, footer.toc_offset, size - footer.size, /*multistream=*/false);
  BCFS_RETURN_IF_ERROR(gz.Init());
  auto first = ReadFirstTarEntry(gz);
  if (!first.ok()) return first.status().WithContext(context);
  auto [name, toc_size] = *first;
  if (name != kTocName) {
    return CorruptError(context + ": first tar entry is \"" + name + "\", want \"" +
                        std::string(kTocName) + "\"");
  }
  if (toc_size > kMaxTocSize) {
    return CorruptError(context + ": " + std::to_string(toc_size) + " bytes is over the limit of " +
                        std::to_string(kMaxTocSize));
  }
  std::string json(static_cast<size_t>(toc_size), '\0');
  Status st = gz.ReadExact(std::span<char>(json));
  if (!st.ok()) return st.WithContext(context);
  return json;
}

Result<Toc> ParseToc(std::string_view json, uint64_t toc_offset, std::string_view doc) {
  BCFS_ASSIGN_OR_RETURN(Json j, ParseJson(json, doc));
  BCFS_RETURN_IF_ERROR(ExpectObject(j, doc, ""));
  FieldReader r(j, std::string(doc), "");
  BCFS_ASSIGN_OR_RETURN(std::optional<int64_t> version, r.Int("version"));
  if (!version) return r.Error("version", "missing");
  if (*version != 1) {
    return Status(Code::kUnsupported,
                  std::string(doc) + ": eStargz TOC version " + std::to_string(*version));
  }
  Toc toc;
  toc.digest = Digest::Sha256Of(json);
  toc.toc_offset = toc_offset;
  const Json* list = r.Find("entries");
  if (list != nullptr && !list->is_array()) {
    return r.Error("entries", std::string(JsonTypeName(*list)) + ", want an array");
  }
  std::map<int64_t, std::string> unames, gnames;
  std::vector<DataRef> data;
  std::optional<size_t> last_reg;  // index into toc.entries
  bool have_reg = false;           // a reg entry (maybe hidden) came before
  const size_t count = list == nullptr ? 0 : list->size();
  for (size_t i = 0; i < count; ++i) {
    std::string path = "entries[" + std::to_string(i) + "]";
    const Json& item = (*list)[i];
    BCFS_RETURN_IF_ERROR(ExpectObject(item, doc, path));
    FieldReader er(item, std::string(doc), path);
    BCFS_ASSIGN_OR_RETURN(std::string raw_name, er.String("name", false));
    BCFS_ASSIGN_OR_RETURN(std::string type_name, er.String("type", true));
    if (type_name == "chunk") {
      if (!have_reg) return er.Error("type", "a chunk with no reg entry before it");
      BCFS_ASSIGN_OR_RETURN(Chunk c, ParseChunk(er));
      DataRef ref{std::nullopt, 0, c.offset, c.inner_offset};
      if (last_reg) {
        ref.entry = *last_reg;
        ref.chunk = toc.entries[*last_reg].chunks.size();
        toc.entries[*last_reg].chunks.push_back(std::move(c));
      }
      data.push_back(ref);
      continue;
    }
    auto type = ParseType(type_name);
    if (!type.ok()) return er.Error("type", "unknown type \"" + type_name + "\"");
    Entry e;
    e.type = *type;
    e.name = CleanName(raw_name);
    if (e.name.empty() && e.type != EntryType::kDir) {
      return er.Error("name", "empty name for a " + type_name + " entry");
    }
    BCFS_ASSIGN_OR_RETURN(e.size, NonNegative(er, "size"));
    BCFS_ASSIGN_OR_RETURN(e.mtime, er.Time("modtime"));
    BCFS_ASSIGN_OR_RETURN(e.link_name, er.String("linkName", false));
    if (e.type == EntryType::kHardlink) e.link_name = CleanName(e.link_name);
    BCFS_ASSIGN_OR_RETURN(uint64_t mode, NonNegative(er, "mode"));
    if (mode > UINT32_MAX) return er.Error("mode", std::to_string(mode) + " is out of range");
    e.mode = static_cast<uint32_t>(mode);
    BCFS_ASSIGN_OR_RETURN(uint64_t uid, NonNegative(er, "uid"));
    BCFS_ASSIGN_OR_RETURN(uint64_t gid, NonNegative(er, "gid"));
    e.uid = static_cast<int64_t>(uid);
    e.gid = static_cast<int64_t>(gid);
    BCFS_ASSIGN_OR_RETURN(e.user_name, er.String("userName", false));
    BCFS_ASSIGN_OR_RETURN(e.group_name, er.String("groupName", false));
    // The writer leaves a name out when it equals the last one written for
    // the same id (FORMATS.md §9.2).
    if (!e.user_name.empty()) {
      unames[e.uid] = e.user_name;
    } else if (auto it = unames.find(e.uid); it != unames.end()) {
      e.user_name = it->second;
    }
    if (!e.group_name.empty()) {
      gnames[e.gid] = e.group_name;
    } else if (auto it = gnames.find(e.gid); it != gnames.end()) {
      e.group_name = it->second;
    }
    BCFS_ASSIGN_OR_RETURN(uint64_t major, NonNegative(er, "devMajor"));
    BCFS_ASSIGN_OR_RETURN(uint64_t minor, NonNegative(er, "devMinor"));
    e.dev_major = static_cast<int64_t>(major);
    e.dev_minor = static_cast<int64_t>(minor);
    BCFS_ASSIGN_OR_RETURN(auto xattrs, er.StringMap("xattrs"));
    for (auto& [key, value] : xattrs) {
      auto bytes = Base64Decode(value);
      if (!bytes.ok()) return er.Error("xattrs." + key, bytes.status().message());
      e.xattrs[key] = std::move(*bytes);
    }
    BCFS_ASSIGN_OR_RETURN(std::optional<Digest> digest, er.DigestField("digest", false));
    if (digest) e.digest = *digest;

    const bool hidden = Hidden(e.name);
    std::optional<size_t> index;
    if (!hidden) index = toc.entries.size();
    if (e.type == EntryType::kReg) {
      have_reg = true;
      last_reg = index;
      BCFS_ASSIGN_OR_RETURN(Chunk c, ParseChunk(er));
      DataRef ref{index, 0, c.offset, c.inner_offset};
      // An empty file has no payload member; its offset fields are meaningless.
      if (e.size > 0) {
        e.chunks.push_back(std::move(c));
        data.push_back(ref);
      }
    }
    if (!hidden) toc.entries.push_back(std::move(e));
  }

  // Each chunk is read up to the next member start: the next data entry
  // with a non-zero offset that begins its member (stargz's nextOffset),
  // and the TOC member for the last ones.
  uint64_t next = toc_offset;
  for (auto it = data.rbegin(); it != data.rend(); ++it) {
    if (it->entry) {
      Chunk& c = toc.entries[*it->entry].chunks[it->chunk];
      c.next_offset = next > c.offset ? next : toc_offset;
    }
    if (it->offset != 0 && it->inner_offset == 0) next = it->offset;
  }

  for (size_t i = 0; i < toc.entries.size(); ++i) {
    Entry& e = toc.entries[i];
    if (e.type != EntryType::kReg) continue;
    std::string where = std::string(doc) + ": eStargz entry \"" + e.name + "\": ";
    uint64_t expect = 0;
    for (size_t k = 0; k < e.chunks.size(); ++k) {
      Chunk& c = e.chunks[k];
      if (c.chunk_offset != expect) {
        return CorruptError(where + "chunk " + std::to_string(k) + " starts at " +
                            std::to_string(c.chunk_offset) + ", want " + std::to_string(expect));
      }
      if (c.chunk_offset >= e.size) {
        return CorruptError(where + "chunk " + std::to_string(k) + " starts past the file size " +
                            std::to_string(e.size));
      }
      if (c.chunk_size == 0) c.chunk_size = e.size - c.chunk_offset;
      if (c.chunk_size > e.size - c.chunk_offset) {
        return CorruptError(where + "chunk " + std::to_string(k) + " ends past the file size " +
                            std::to_string(e.size));
      }
      if (c.offset >= toc_offset) {
        return CorruptError(where + "chunk " + std::to_string(k) + " offset " +
                            std::to_string(c.offset) + " is not before the TOC at " +
                            std::to_string(toc_offset));
      }
      expect += c.chunk_size;
    }
    if (expect != e.size) {
      return CorruptError(where + "chunks cover " + std::to_string(expect) + " of " +
                          std::to_string(e.size) + " bytes");
    }
  }
  for (size_t i = 0; i < toc.entries.size(); ++i) toc.by_name[toc.entries[i].name] = i;
  return toc;
}

Result<Toc> ReadToc(ByteSource& src, std::string_view doc, const Digest& expected) {
  auto footer = ReadFooter(src);
  if (!footer.ok()) return footer.status().WithContext(doc);
  BCFS_ASSIGN_OR_RETURN(std::string json, ReadTocJson(src, *footer, doc));
  BCFS_ASSIGN_OR_RETURN(Toc toc, ParseToc(json, footer->toc_offset, doc));
  if (!expected.empty() && toc.digest != expected) {
    return CorruptError(std::string(doc) + ": eStargz TOC digest " + toc.digest.ToString() +
                        " does not match the annotation " + expected.ToString());
  }
  return toc;
}

Status ReadFileRange(ByteSource& src, const Toc& toc, const std::string& path, uint64_t offset,
                     std::span<char> out, bool verify_chunks) {
  const Entry* e = toc.Find(path);
  if (e == nullptr) return NotFoundError("eStargz: no entry \"" + path + "\"");
  if (e->type == EntryType::kHardlink) {
    const Entry* target = toc.Find(e->link_name);
    if (target == nullptr) {
      return NotFoundError("eStargz: hard link \"" + path + "\" points at missing \"" +
                           e->link_name + "\"");
    }
    e = target;
  }
  if (e->type != EntryType::kReg) {
    return InvalidArgumentError("eStargz: \"" + path + "\" is a " +
                                std::string(EntryTypeName(e->type)) + ", not a regular file");
  }
  if (offset > e->size || out.size() > e->size - offset) {
    return InvalidArgumentError("eStargz: range [" + std::to_string(offset) + ", +" +
                                std::to_string(out.size()) + ") of \"" + path +
                                "\" ends past its size " + std::to_string(e->size));
  }
  if (out.empty()) return OkStatus();
  const uint64_t end = offset + out.size();
  // The first chunk that ends after `offset`.
  auto it = std::upper_bound(
      e->chunks.begin(), e->chunks.end(), offset,
      [](uint64_t off, const Chunk& c) { return off < c.chunk_offset + c.chunk_size; });
  std::vector<char> buf;
  for (; it != e->chunks.end() && it->chunk_offset < end; ++it) {
    const Chunk& c = *it;
    std::string context = "eStargz: \"" + e->name + "\" chunk at file offset " +
                          std::to_string(c.chunk_offset) + " (member at blob offset " +
                          std::to_string(c.offset) + ")";
    const uint64_t lo = std::max(offset, c.chunk_offset) - c.chunk_offset;
    const uint64_t hi = std::min(end, c.chunk_offset + c.chunk_size) - c.chunk_offset;
    char* dest = out.data() + (c.chunk_offset + lo - offset);
    if (verify_chunks && c.chunk_digest.empty()) {
      return CorruptError(context + ": no chunkDigest to verify against");
    }
    GzipRange gz(src, c.offset, c.next_offset, /*multistream=*/true);
    BCFS_RETURN_IF_ERROR(gz.Init());
    Status st = gz.Skip(c.inner_offset);
    if (st.ok() && !verify_chunks) {
      st = gz.Skip(lo);
      if (st.ok()) st = gz.ReadExact(std::span<char>(dest, static_cast<size_t>(hi - lo)));
    } else if (st.ok()) {
      // The whole chunk is inflated and hashed; only [lo, hi) is copied out.
      Sha256 hash;
      buf.resize(static_cast<size_t>(std::min<uint64_t>(c.chunk_size, kSkipChunk)));
      for (uint64_t pos = 0; st.ok() && pos < c.chunk_size;) {
        size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), c.chunk_size - pos));
        st = gz.ReadExact(std::span<char>(buf.data(), n));
        if (!st.ok()) break;
        hash.Update(buf.data(), n);
        uint64_t from = std::max(pos, lo), to = std::min(pos + n, hi);
        if (from < to) std::memcpy(dest + (from - lo), buf.data() + (from - pos), to - from);
        pos += n;
      }
      if (st.ok()) {
        Digest got = hash.Finish();
        if (got != c.chunk_digest) {
          st = CorruptError("chunk digest " + got.ToString() + " does not match the TOC's " +
                            c.chunk_digest.ToString());
        }
      }
    }
    if (!st.ok()) return st.WithContext(context);
  }
  return OkStatus();
}

}  // namespace bcfs::formats::estargz
