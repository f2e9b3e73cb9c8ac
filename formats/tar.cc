#include "formats/tar.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <optional>
#include <tuple>
#include <unordered_map>
#include <unordered_set>

#include "core/base64.h"

namespace bcfs::formats {
namespace {

// Header layout (POSIX ustar; GNU reuses the prefix area for its own fields).
constexpr size_t kNameOff = 0, kNameLen = 100;
constexpr size_t kModeOff = 100, kUidOff = 108, kGidOff = 116, kIdLen = 8;
constexpr size_t kSizeOff = 124, kMtimeOff = 136, kNumLen = 12;
constexpr size_t kChksumOff = 148, kChksumLen = 8;
constexpr size_t kTypeOff = 156;
constexpr size_t kLinkOff = 157, kLinkLen = 100;
constexpr size_t kMagicOff = 257;
constexpr size_t kUnameOff = 265, kGnameOff = 297, kOwnerLen = 32;
constexpr size_t kDevMajorOff = 329, kDevMinorOff = 337, kDevLen = 8;
constexpr size_t kPrefixOff = 345, kPrefixLen = 155;
constexpr size_t kGnuSparseOff = 386, kGnuIsExtendedOff = 482, kGnuRealSizeOff = 483;
constexpr size_t kGnuSparseHeaderChunks = 4;
constexpr size_t kGnuExtChunks = 21, kGnuExtIsExtendedOff = 504;
constexpr size_t kSparseMapMaxLine = 100;  // as libarchive reads it

constexpr uint64_t kInt64Max = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());

std::string_view Field(std::string_view block, size_t off, size_t len) {
  return block.substr(off, len);
}

// The bytes of a header field up to its first NUL.
std::string CString(std::string_view block, size_t off, size_t len) {
  std::string_view f = Field(block, off, len);
  return std::string(f.substr(0, f.find('\0')));
}

// A numeric header field: octal digits padded with spaces or NULs, or GNU
// base-256 (high bit of the first byte set; 0x40 of it is the sign).
std::optional<int64_t> ParseNumeric(std::string_view f) {
  if (!f.empty() && (static_cast<uint8_t>(f[0]) & 0x80) != 0) {
    uint8_t inv = (static_cast<uint8_t>(f[0]) & 0x40) != 0 ? 0xff : 0x00;
    uint64_t x = 0;
    for (size_t i = 0; i < f.size(); ++i) {
      uint8_t c = static_cast<uint8_t>(f[i]) ^ inv;
      if (i == 0) c &= 0x7f;
      if ((x >> 56) != 0) return std::nullopt;
      x = (x << 8) | c;
    }
    if ((x >> 63) != 0) return std::nullopt;
    return inv == 0xff ? ~static_cast<int64_t>(x) : static_cast<int64_t>(x);
  }
  size_t i = 0;
  while (i < f.size() && (f[i] == ' ' || f[i] == '\0')) ++i;
  uint64_t v = 0;
  while (i < f.size() && f[i] >= '0' && f[i] <= '7') {
    v = v * 8 + static_cast<uint64_t>(f[i] - '0');  // 12 digits at most: no overflow
    ++i;
  }
  for (; i < f.size(); ++i) {
    if (f[i] != ' ' && f[i] != '\0') return std::nullopt;
  }
  return static_cast<int64_t>(v);
}

std::optional<uint64_t> ParseDecimal(std::string_view s) {
  if (s.empty() || s.size() > 20) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (std::numeric_limits<uint64_t>::max() - d) / 10) return std::nullopt;
    v = v * 10 + d;
  }
  return v;
}

// A pax time "[-]seconds[.fraction]"; a negative time with a fraction is
// normalised so that nsec is in [0, 1e9), as Go's archive/tar does.
bool ParsePaxTime(std::string_view s, int64_t* sec, uint32_t* nsec) {
  bool negative = !s.empty() && s[0] == '-';
  if (negative) s.remove_prefix(1);
  std::string_view whole = s, frac;
  if (size_t dot = s.find('.'); dot != std::string_view::npos) {
    whole = s.substr(0, dot);
    frac = s.substr(dot + 1);
  }
  std::optional<uint64_t> w = ParseDecimal(whole);
  if (!w || *w > kInt64Max) return false;
  uint32_t n = 0;
  for (size_t i = 0; i < frac.size(); ++i) {
    if (frac[i] < '0' || frac[i] > '9') return false;
    if (i < 9) n = n * 10 + static_cast<uint32_t>(frac[i] - '0');
  }
  for (size_t i = frac.size(); i < 9; ++i) n *= 10;
  int64_t v = static_cast<int64_t>(*w);
  if (negative) {
    v = -v;
    if (n != 0) {
      v -= 1;
      n = 1000000000u - n;
    }
  }
  *sec = v;
  *nsec = n;
  return true;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// libarchive writes LIBARCHIVE.xattr.<name> with the name %-encoded.
std::optional<std::string> UrlDecode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out.push_back(s[i]);
      continue;
    }
    if (i + 2 >= s.size()) return std::nullopt;
    int hi = HexValue(s[i + 1]), lo = HexValue(s[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

// libarchive writes LIBARCHIVE.xattr.* values as standard base64 without
// padding; padded text is accepted too.
std::optional<std::string> DecodeUnpaddedBase64(std::string_view s) {
  std::string text(s);
  if (text.size() % 4 == 1) return std::nullopt;
  while (text.size() % 4 != 0) text.push_back('=');
  Result<std::string> r = Base64Decode(text);
  if (!r.ok()) return std::nullopt;
  return std::move(r).value();
}

// For messages: escapes quotes, backslashes and control bytes; keeps UTF-8;
// cuts very long names so a warning stays small.
std::string Quote(std::string_view s) {
  constexpr size_t kMax = 256;
  std::string out = "\"";
  for (size_t i = 0; i < s.size() && i < kMax; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c < 0x20 || c == 0x7f) {
      static const char kHex[] = "0123456789abcdef";
      out += "\\x";
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  if (s.size() > kMax) out += "...";
  out += "\"";
  return out;
}

uint64_t Padded(uint64_t n) { return (n + kTarBlockSize - 1) / kTarBlockSize * kTarBlockSize; }

bool IsZeroBlock(std::string_view block) {
  return std::all_of(block.begin(), block.end(), [](char c) { return c == '\0'; });
}

// Unsigned sum as POSIX specifies; signed sum as some old tars wrote it.
bool ChecksumMatches(std::string_view block) {
  std::string_view field = Field(block, kChksumOff, kChksumLen);
  if (!field.empty() && (static_cast<uint8_t>(field[0]) & 0x80) != 0) return false;
  std::optional<int64_t> want = ParseNumeric(field);
  if (!want) return false;
  int64_t unsigned_sum = 0, signed_sum = 0;
  for (size_t i = 0; i < block.size(); ++i) {
    bool in_field = i >= kChksumOff && i < kChksumOff + kChksumLen;
    unsigned_sum += in_field ? ' ' : static_cast<uint8_t>(block[i]);
    signed_sum += in_field ? ' ' : static_cast<int8_t>(block[i]);
  }
  return *want == unsigned_sum || *want == signed_sum;
}

std::string MetaKind(char type) {
  switch (type) {
    case 'g':
      return "pax global header";
    case 'L':
      return "GNU long name header";
    case 'K':
      return "GNU long link header";
    default:
      return "pax header";
  }
}

// One "<length> <key>=<value>\n" record after another; values may be binary.
// On failure *problem says what is wrong and where.
bool ParsePaxRecords(std::string_view body,
                     std::vector<std::pair<std::string, std::string>>* records,
                     std::string* problem) {
  size_t pos = 0;
  while (pos < body.size()) {
    std::string_view rest = body.substr(pos);
    if (IsZeroBlock(rest)) break;  // NUL padding some writers leave at the end
    std::string where = "record at byte " + std::to_string(pos);
    size_t space = rest.find(' ');
    if (space == std::string_view::npos || space == 0 || space > 7) {
      *problem = where + ": no decimal length before a space";
      return false;
    }
    std::optional<uint64_t> len = ParseDecimal(rest.substr(0, space));
    if (!len) {
      *problem = where + ": length " + Quote(rest.substr(0, space)) + " is not a decimal number";
      return false;
    }
    if (*len > rest.size()) {
      *problem = where + ": length " + std::to_string(*len) + " runs past the end of the header (" +
                 std::to_string(rest.size()) + " bytes left)";
      return false;
    }
    if (*len < space + 3 || rest[*len - 1] != '\n') {
      *problem = where + ": length " + std::to_string(*len) + " does not end at a newline";
      return false;
    }
    std::string_view kv = rest.substr(space + 1, *len - space - 2);
    size_t eq = kv.find('=');
    if (eq == std::string_view::npos || eq == 0) {
      *problem = where + ": no \"key=value\"";
      return false;
    }
    records->emplace_back(std::string(kv.substr(0, eq)), std::string(kv.substr(eq + 1)));
    pos += *len;
  }
  return true;
}

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// Keys a global header may not set for every later entry.
bool IsPerEntryKey(std::string_view key) {
  return key == "path" || key == "linkpath" || key == "size" || StartsWith(key, "GNU.sparse.");
}

bool IsXattrKey(std::string_view key) {
  return StartsWith(key, "SCHILY.xattr.") || StartsWith(key, "LIBARCHIVE.xattr.") ||
         key == "RHT.security.selinux";
}

}  // namespace

std::string_view TarTypeName(TarType type) {
  switch (type) {
    case TarType::kFile:
      return "file";
    case TarType::kDir:
      return "dir";
    case TarType::kSymlink:
      return "symlink";
    case TarType::kHardlink:
      return "hardlink";
    case TarType::kChar:
      return "char";
    case TarType::kBlock:
      return "block";
    case TarType::kFifo:
      return "fifo";
  }
  return "unknown";
}

Result<std::string> CleanTarPath(std::string_view raw) {
  if (raw.find('\0') != std::string_view::npos) {
    return CorruptError("path contains a NUL byte");
  }
  std::string out;
  out.reserve(raw.size());
  size_t pos = 0;
  while (pos <= raw.size()) {
    size_t slash = raw.find('/', pos);
    if (slash == std::string_view::npos) slash = raw.size();
    std::string_view comp = raw.substr(pos, slash - pos);
    if (comp == "..") return CorruptError("path has a \"..\" component");
    if (!comp.empty() && comp != ".") {
      if (!out.empty()) out.push_back('/');
      out.append(comp);
    }
    pos = slash + 1;
  }
  return out;
}

TarIndexer::TarIndexer(std::string doc) : doc_(std::move(doc)) {}

Status TarIndexer::Fail(std::string message) {
  error_ = CorruptError(doc_ + ": " + message);
  state_ = State::kFailed;
  return error_;
}

void TarIndexer::Warn(std::string message) {
  if (warnings_.size() < kTarMaxWarnings) {
    warnings_.push_back(doc_ + ": " + message);
  } else {
    ++dropped_warnings_;
  }
}

std::vector<std::string> TarIndexer::warnings() const {
  std::vector<std::string> out = warnings_;
  if (dropped_warnings_ > 0) {
    out.push_back(doc_ + ": " + std::to_string(dropped_warnings_) + " more warnings not kept");
  }
  return out;
}

std::vector<TarEntry> TarIndexer::TakeEntries() {
  std::vector<TarEntry> out = std::move(entries_);
  entries_.clear();
  return out;
}

std::string TarIndexer::EntryName() const {
  return "entry " + Quote(entry_raw_path_) + " (header at offset " +
         std::to_string(entry_header_offset_) + ")";
}

void TarIndexer::SkipEntry(std::string reason) {
  if (skip_reason_.empty()) skip_reason_ = std::move(reason);
}

Status TarIndexer::Feed(std::string_view bytes) {
  while (!bytes.empty()) {
    switch (state_) {
      case State::kFailed:
        return error_;
      case State::kDone:
        offset_ += bytes.size();
        return OkStatus();
      case State::kSkip: {
        uint64_t n = std::min<uint64_t>(skip_remaining_, bytes.size());
        offset_ += n;
        skip_remaining_ -= n;
        bytes.remove_prefix(n);
        if (skip_remaining_ == 0) state_ = State::kHeader;
        break;
      }
      case State::kMetaBody: {
        uint64_t n = std::min<uint64_t>(meta_size_ - meta_.size(), bytes.size());
        meta_.append(bytes.substr(0, n));
        offset_ += n;
        bytes.remove_prefix(n);
        if (meta_.size() == meta_size_) BCFS_RETURN_IF_ERROR(FinishMeta());
        break;
      }
      case State::kHeader:
      case State::kSparseExt:
      case State::kSparseMap: {
        if (block_.empty() && bytes.size() >= kTarBlockSize) {
          std::string_view block = bytes.substr(0, kTarBlockSize);
          offset_ += kTarBlockSize;
          bytes.remove_prefix(kTarBlockSize);
          BCFS_RETURN_IF_ERROR(ConsumeBlock(block, offset_ - kTarBlockSize));
          break;
        }
        size_t n = std::min<size_t>(kTarBlockSize - block_.size(), bytes.size());
        block_.append(bytes.substr(0, n));
        offset_ += n;
        bytes.remove_prefix(n);
        if (block_.size() == kTarBlockSize) {
          std::string block = std::move(block_);
          block_.clear();
          BCFS_RETURN_IF_ERROR(ConsumeBlock(block, offset_ - kTarBlockSize));
        }
        break;
      }
    }
  }
  return state_ == State::kFailed ? error_ : OkStatus();
}

Status TarIndexer::ConsumeBlock(std::string_view block, uint64_t block_offset) {
  switch (state_) {
    case State::kHeader:
      return ParseHeader(block, block_offset);
    case State::kSparseExt:
      return ParseSparseExt(block, block_offset);
    case State::kSparseMap:
      return ParseSparseMapBlock(block, block_offset);
    default:
      return InternalError("tar: block consumed in the wrong state");
  }
}

Status TarIndexer::Finish() {
  std::string at = " at offset " + std::to_string(offset_);
  switch (state_) {
    case State::kFailed:
      return error_;
    case State::kDone:
      return OkStatus();
    case State::kMetaBody:
      return Fail("stream ends" + at + " inside the " + MetaKind(meta_type_) + " at offset " +
                  std::to_string(meta_offset_) + " (" + std::to_string(meta_.size()) + " of " +
                  std::to_string(meta_size_) + " bytes)");
    case State::kSparseExt:
      return Fail(EntryName() + ": stream ends" + at + " inside its sparse extension headers");
    case State::kSparseMap:
      return Fail(EntryName() + ": stream ends" + at + " inside its sparse map");
    case State::kHeader:
      if (!block_.empty()) {
        return Fail("stream ends" + at + " inside the header at offset " +
                    std::to_string(offset_ - block_.size()) + " (" + std::to_string(block_.size()) +
                    " of 512 bytes)");
      }
      break;
    case State::kSkip:
      if (!skip_is_data_) break;  // the padding of a pax header or long name
      if (offset_ < data_end_) {
        return Fail(EntryName() + ": stream ends" + at + " inside its data, which runs from " +
                    std::to_string(data_start_) + " to " + std::to_string(data_end_) + " (" +
                    std::to_string(offset_ - data_start_) + " of " +
                    std::to_string(data_end_ - data_start_) + " bytes present)");
      }
      Warn(EntryName() + ": stream ends" + at + " inside the padding after its data");
      return OkStatus();
  }
  if (pending_.active) {
    return Fail("stream ends" + at + " after the " + MetaKind(meta_type_) + " at offset " +
                std::to_string(meta_offset_) + ", before the entry it describes");
  }
  return OkStatus();
}

Status TarIndexer::FinishMeta() {
  uint64_t pad = Padded(meta_size_) - meta_size_;
  std::string where = MetaKind(meta_type_) + " at offset " + std::to_string(meta_offset_);
  if (meta_type_ == 'L' || meta_type_ == 'K') {
    std::string value = meta_.substr(0, meta_.find('\0'));
    if (meta_type_ == 'L') {
      pending_.has_long_name = true;
      pending_.long_name = std::move(value);
    } else {
      pending_.has_long_link = true;
      pending_.long_link = std::move(value);
    }
  } else {
    std::vector<std::pair<std::string, std::string>> records;
    std::string problem;
    if (!ParsePaxRecords(meta_, &records, &problem)) return Fail(where + ": " + problem);
    if (meta_type_ == 'g') {
      for (auto& [key, value] : records) {
        if (auto it = global_.find(key); it != global_.end()) {
          global_bytes_ -= it->first.size() + it->second.size();
          global_.erase(it);
        }
        if (value.empty() && !IsXattrKey(key)) continue;  // an empty value deletes the key
        global_bytes_ += key.size() + value.size();
        global_.emplace(std::move(key), std::move(value));
      }
      if (global_bytes_ > kTarMaxGlobalBytes) {
        return Fail(where + ": global pax keys total " + std::to_string(global_bytes_) +
                    " bytes, over the " + std::to_string(kTarMaxGlobalBytes) + "-byte limit");
      }
      // A global header stands alone: it does not start an entry.
      if (pending_.meta_bytes == 0 && pending_.pax.empty() && !pending_.has_long_name &&
          !pending_.has_long_link && pending_.header_offset == meta_offset_) {
        pending_ = Pending{};
      }
    } else {
      for (auto& r : records) pending_.pax.push_back(std::move(r));
    }
  }
  meta_.clear();
  meta_.shrink_to_fit();
  StartSkip(pad, /*is_data=*/false);
  return OkStatus();
}

Status TarIndexer::ParseHeader(std::string_view block, uint64_t block_offset) {
  std::string at = " at offset " + std::to_string(block_offset);
  if (IsZeroBlock(block)) {
    if (pending_.active) {
      Warn(MetaKind(meta_type_) + " at offset " + std::to_string(meta_offset_) +
           " has no entry before the end-of-archive marker" + at);
      pending_ = Pending{};
    }
    state_ = State::kDone;
    return OkStatus();
  }
  if (!ChecksumMatches(block)) return Fail("bad header checksum" + at);
  if (!pending_.active) {
    pending_ = Pending{};
    pending_.active = true;
    pending_.header_offset = block_offset;
  }
  const char type = block[kTypeOff];
  const bool gnu = Field(block, kMagicOff, 8) == std::string_view("ustar  \0", 8);
  const bool ustar = !gnu && Field(block, kMagicOff, 6) == std::string_view("ustar\0", 6);
  std::optional<int64_t> size = ParseNumeric(Field(block, kSizeOff, kNumLen));
  if (!size) return Fail("header" + at + ": field \"size\" is not a number");
  if (*size < 0) return Fail("header" + at + ": negative size " + std::to_string(*size));

  if (type == 'x' || type == 'X' || type == 'g' || type == 'L' || type == 'K') {
    uint64_t n = static_cast<uint64_t>(*size);
    if (n > kTarMaxMetaBytes) {
      return Fail(MetaKind(type) + at + " is " + std::to_string(n) + " bytes, over the " +
                  std::to_string(kTarMaxMetaBytes) + "-byte limit");
    }
    if (type != 'g') {
      pending_.meta_bytes += n;
      if (pending_.meta_bytes > kTarMaxPendingMetaBytes) {
        return Fail(MetaKind(type) + at + ": extension headers since offset " +
                    std::to_string(pending_.header_offset) + " total " +
                    std::to_string(pending_.meta_bytes) + " bytes, over the " +
                    std::to_string(kTarMaxPendingMetaBytes) + "-byte limit");
      }
    }
    if (type != 'L' && type != 'K') pax_seen_ = true;
    meta_type_ = type;
    meta_offset_ = block_offset;
    meta_size_ = n;
    meta_.clear();
    meta_.reserve(n);
    state_ = State::kMetaBody;
    if (n == 0) return FinishMeta();
    return OkStatus();
  }

  // An entry header: the header's fields, then the pax keys (global, then
  // local), then the GNU long names; pax wins over 'L'/'K', GNU.sparse.name
  // over both.
  entry_ = TarEntry{};
  skip_reason_.clear();
  sparse_ = false;
  sparse_10_ = false;
  map_ = SparseMapReader{};
  entry_.header_offset = pending_.header_offset;
  entry_header_offset_ = pending_.header_offset;

  std::string raw_name = CString(block, kNameOff, kNameLen);
  if (ustar) {
    std::string prefix = CString(block, kPrefixOff, kPrefixLen);
    if (!prefix.empty()) raw_name = prefix + (prefix.back() == '/' ? "" : "/") + raw_name;
  }
  std::string raw_link = CString(block, kLinkOff, kLinkLen);
  entry_raw_path_ = raw_name;

  struct NumField {
    const char* name;
    size_t off, len;
    int64_t value;
  };
  NumField mode{"mode", kModeOff, kIdLen, 0}, uid{"uid", kUidOff, kIdLen, 0},
      gid{"gid", kGidOff, kIdLen, 0}, mtime{"mtime", kMtimeOff, kNumLen, 0};
  for (NumField* f : {&mode, &uid, &gid, &mtime}) {
    std::optional<int64_t> v = ParseNumeric(Field(block, f->off, f->len));
    if (!v) return Fail("header" + at + ": field \"" + f->name + "\" is not a number");
    f->value = *v;
  }
  entry_.mode = static_cast<uint32_t>(static_cast<uint64_t>(mode.value) & 07777);
  entry_.mtime_sec = mtime.value;
  SetId("uid", uid.value, &entry_.uid);
  SetId("gid", gid.value, &entry_.gid);
  if (ustar || gnu) {
    entry_.uname = CString(block, kUnameOff, kOwnerLen);
    entry_.gname = CString(block, kGnameOff, kOwnerLen);
  }

  // Whether data blocks follow the header, whatever the size field says.
  bool has_data = true;
  bool old_sparse = false;
  switch (type) {
    case '0':
    case '\0':
    case '7':
      entry_.type = TarType::kFile;
      break;
    case 'S':
      entry_.type = TarType::kFile;
      old_sparse = gnu;
      break;
    case '1':
      entry_.type = TarType::kHardlink;
      // pax lets a hard link carry data; older formats put sizes there that
      // no data follows (libarchive's rule).
      has_data = pax_seen_ && ustar;
      break;
    case '2':
      entry_.type = TarType::kSymlink;
      has_data = false;
      break;
    case '3':
      entry_.type = TarType::kChar;
      has_data = false;
      break;
    case '4':
      entry_.type = TarType::kBlock;
      has_data = false;
      break;
    case '5':
      entry_.type = TarType::kDir;
      has_data = false;
      break;
    case '6':
      entry_.type = TarType::kFifo;
      has_data = false;
      break;
    case 'D':  // GNU dumpdir: a directory whose data lists its contents
      entry_.type = TarType::kDir;
      break;
    case 'V':  // GNU volume label: not a file
      pending_ = Pending{};
      entry_raw_path_ = raw_name;
      data_start_ = offset_;
      data_end_ = offset_ + static_cast<uint64_t>(*size);
      StartSkip(Padded(static_cast<uint64_t>(*size)), /*is_data=*/true);
      return OkStatus();
    case 'M':
      entry_.type = TarType::kFile;
      SkipEntry("GNU multi-volume continuation entries are not supported");
      break;
    default:  // POSIX: read unknown types as regular files
      entry_.type = TarType::kFile;
      Warn("entry " + Quote(raw_name) + " (header" + at + ") has unknown type flag " +
           Quote(std::string_view(&type, 1)) + "; shown as a regular file");
      break;
  }
  if ((entry_.type == TarType::kChar || entry_.type == TarType::kBlock) && (ustar || gnu)) {
    for (auto [name, off, out] : {std::tuple{"devmajor", kDevMajorOff, &entry_.dev_major},
                                  std::tuple{"devminor", kDevMinorOff, &entry_.dev_minor}}) {
      std::optional<int64_t> v = ParseNumeric(Field(block, off, kDevLen));
      if (!v) return Fail("header" + at + ": field \"" + name + "\" is not a number");
      SetId(name, *v, out);
    }
  }

  PaxOverrides pax;
  BCFS_RETURN_IF_ERROR(ApplyPax(raw_name, &pax));
  uint64_t stored = pax.size.value_or(static_cast<uint64_t>(*size));
  if (pax.path) {
    raw_name = *pax.path;
  } else if (pending_.has_long_name) {
    raw_name = pending_.long_name;
  }
  if (pax.sparse_name) raw_name = *pax.sparse_name;
  if (pax.link) {
    raw_link = *pax.link;
  } else if (pending_.has_long_link) {
    raw_link = pending_.long_link;
  }
  entry_raw_path_ = raw_name;
  entry_raw_link_ = raw_link;

  // An old-style regular file whose name ends in '/' is a directory (V7 tar
  // and some broken writers); no data follows (libarchive's rule).
  if (entry_.type == TarType::kFile && !old_sparse && !pax.sparse_keys && !raw_name.empty() &&
      raw_name.back() == '/' && (type == '0' || type == '\0' || type == '7')) {
    entry_.type = TarType::kDir;
    has_data = false;
  }
  stored_size_ = has_data ? stored : 0;

  if (!pax.sparse_keys && !old_sparse) return AfterHeaders();
  if (entry_.type != TarType::kFile) {
    Warn(EntryName() + ": ignoring sparse metadata on a " + std::string(TarTypeName(entry_.type)) +
         " entry");
    return AfterHeaders();
  }
  sparse_ = true;
  entry_.sparse = std::move(pax.chunks);
  if (pax.bad_map) SkipEntry("malformed GNU sparse map");
  if (old_sparse && block[kGnuRealSizeOff] != '\0') {
    std::optional<int64_t> v = ParseNumeric(Field(block, kGnuRealSizeOff, kNumLen));
    if (!v || *v < 0) {
      SkipEntry("malformed GNU sparse real size");
    } else {
      pax.real_size = static_cast<uint64_t>(*v);
    }
  }
  real_size_ = pax.real_size.value_or(stored_size_);
  if (pax.sparse_major || pax.sparse_minor) {
    if (pax.sparse_major.value_or(0) == 1 && pax.sparse_minor.value_or(0) == 0) {
      sparse_10_ = true;
    } else {
      SkipEntry("unsupported GNU sparse format " + std::to_string(pax.sparse_major.value_or(0)) +
                "." + std::to_string(pax.sparse_minor.value_or(0)));
    }
  }
  if (old_sparse) {
    AddOldSparseChunks(Field(block, kGnuSparseOff, kGnuSparseHeaderChunks * 24), block_offset);
    if (block[kGnuIsExtendedOff] != '\0') {
      state_ = State::kSparseExt;
      return OkStatus();
    }
  }
  return AfterHeaders();
}

void TarIndexer::SetId(const char* what, int64_t value, uint32_t* out) {
  if (value < 0 || value > std::numeric_limits<uint32_t>::max()) {
    SkipEntry(std::string(what) + " " + std::to_string(value) + " is out of range");
  } else {
    *out = static_cast<uint32_t>(value);
  }
}

Status TarIndexer::ApplyPax(std::string_view name, PaxOverrides* out) {
  std::string pax_at =
      " (pax header of the entry at offset " + std::to_string(pending_.header_offset) + ")";
  auto ignore = [&](const std::string& key, const std::string& value) {
    Warn("entry " + Quote(name) + pax_at + ": ignoring " + Quote(key) + "=" + Quote(value));
  };
  auto id = [](uint64_t v) { return v > kInt64Max ? int64_t{-1} : static_cast<int64_t>(v); };

  // The global keys a local empty value does not cancel, then the local ones.
  struct Record {
    const std::string& key;
    const std::string& value;
  };
  std::unordered_set<std::string_view> cancelled;
  for (const auto& [key, value] : pending_.pax) {
    if (value.empty()) cancelled.insert(key);
  }
  std::vector<Record> records;
  for (const auto& [key, value] : global_) {
    if (!IsPerEntryKey(key) && !cancelled.contains(key)) records.push_back({key, value});
  }
  for (const auto& [key, value] : pending_.pax) {
    if (value.empty() && !IsXattrKey(key)) continue;  // "use the header's value"
    records.push_back({key, value});
  }

  // libarchive 3.6 writes each xattr twice, as LIBARCHIVE.xattr.<%-encoded
  // name> and as SCHILY.xattr.<the same encoded name>: pair them up.
  std::unordered_map<std::string_view, std::string> decoded_names;
  for (const Record& rec : records) {
    std::string_view key = rec.key;
    if (!StartsWith(key, "LIBARCHIVE.xattr.")) continue;
    if (std::optional<std::string> decoded = UrlDecode(key.substr(17))) {
      decoded_names.emplace(key.substr(17), std::move(*decoded));
    }
  }
  std::unordered_map<std::string, size_t> xattr_index;
  auto add_xattr = [this, &xattr_index](std::string xname, std::string value) {
    auto [it, inserted] = xattr_index.emplace(xname, entry_.xattrs.size());
    if (inserted) {
      entry_.xattrs.emplace_back(std::move(xname), std::move(value));
    } else {
      entry_.xattrs[it->second].second = std::move(value);
    }
  };
  auto add_chunk = [out](uint64_t off, uint64_t len) {
    if (out->chunks.size() >= kTarMaxSparseChunks) {
      out->bad_map = true;
    } else {
      out->chunks.push_back(TarSparseChunk{off, len, 0});
    }
  };
  std::optional<uint64_t> sp_offset, sp_numbytes;  // GNU sparse 0.0 pairs

  for (const Record& rec : records) {
    const std::string& key = rec.key;
    const std::string& value = rec.value;
    if (key == "path") {
      out->path = value;
    } else if (key == "linkpath") {
      out->link = value;
    } else if (key == "size") {
      std::optional<uint64_t> v = ParseDecimal(value);
      if (!v || *v > kInt64Max) {
        return Fail("entry " + Quote(name) + pax_at + ": pax size " + Quote(value) +
                    " is not a decimal number below 2^63");
      }
      out->size = *v;
    } else if (key == "uid" || key == "gid") {
      if (std::optional<uint64_t> v = ParseDecimal(value)) {
        SetId(key.c_str(), id(*v), key == "uid" ? &entry_.uid : &entry_.gid);
      } else {
        ignore(key, value);
      }
    } else if (key == "uname") {
      entry_.uname = value;
    } else if (key == "gname") {
      entry_.gname = value;
    } else if (key == "mtime") {
      if (!ParsePaxTime(value, &entry_.mtime_sec, &entry_.mtime_nsec)) ignore(key, value);
    } else if (key == "SCHILY.devmajor" || key == "SCHILY.devminor") {
      if (entry_.type != TarType::kChar && entry_.type != TarType::kBlock) continue;
      if (std::optional<uint64_t> v = ParseDecimal(value)) {
        bool major = key == "SCHILY.devmajor";
        SetId(major ? "devmajor" : "devminor", id(*v),
              major ? &entry_.dev_major : &entry_.dev_minor);
      } else {
        ignore(key, value);
      }
    } else if (StartsWith(key, "SCHILY.xattr.")) {
      auto decoded = decoded_names.find(std::string_view(key).substr(13));
      add_xattr(decoded != decoded_names.end() ? decoded->second : key.substr(13), value);
    } else if (StartsWith(key, "LIBARCHIVE.xattr.")) {
      std::optional<std::string> xname = UrlDecode(std::string_view(key).substr(17));
      std::optional<std::string> decoded = DecodeUnpaddedBase64(value);
      if (!xname || xname->empty() || !decoded) {
        ignore(key, value);
      } else {
        add_xattr(std::move(*xname), std::move(*decoded));
      }
    } else if (key == "RHT.security.selinux") {
      add_xattr("security.selinux", value);
    } else if (StartsWith(key, "GNU.sparse.")) {
      out->sparse_keys = true;
      std::string_view sub = std::string_view(key).substr(11);
      if (sub == "name") {
        out->sparse_name = value;
      } else if (sub == "map") {  // 0.1: "offset,length,offset,length..."
        out->chunks.clear();
        std::optional<uint64_t> off;
        for (size_t pos = 0; pos <= value.size() && !out->bad_map;) {
          size_t comma = std::min(value.find(',', pos), value.size());
          std::optional<uint64_t> v =
              ParseDecimal(std::string_view(value).substr(pos, comma - pos));
          if (!v) {
            out->bad_map = true;
          } else if (!off) {
            off = v;
          } else {
            add_chunk(*off, *v);
            off.reset();
          }
          pos = comma + 1;
        }
        if (off) out->bad_map = true;
      } else if (std::optional<uint64_t> v = ParseDecimal(value); !v) {
        out->bad_map = true;
      } else if (sub == "major") {
        out->sparse_major = *v;
      } else if (sub == "minor") {
        out->sparse_minor = *v;
      } else if (sub == "size" || sub == "realsize") {  // 0.x and 1.0 spellings
        out->real_size = *v;
      } else if (sub == "numblocks") {  // 0.0: offset/numbytes pairs follow
        if (*v > kTarMaxSparseChunks) out->bad_map = true;
        out->chunks.clear();
        sp_offset.reset();
        sp_numbytes.reset();
      } else if (sub == "offset" || sub == "numbytes") {
        (sub == "offset" ? sp_offset : sp_numbytes) = v;
        if (sp_offset && sp_numbytes) {
          add_chunk(*sp_offset, *sp_numbytes);
          sp_offset.reset();
          sp_numbytes.reset();
        }
      }
    }
  }
  return OkStatus();
}

void TarIndexer::AddOldSparseChunks(std::string_view area, uint64_t block_offset) {
  for (size_t i = 0; i + 24 <= area.size() && area[i] != '\0'; i += 24) {
    std::optional<int64_t> off = ParseNumeric(area.substr(i, 12));
    std::optional<int64_t> len = ParseNumeric(area.substr(i + 12, 12));
    if (!off || !len || *off < 0 || *len < 0) {
      SkipEntry("malformed GNU sparse map in the block at offset " + std::to_string(block_offset));
      return;
    }
    if (entry_.sparse.size() >= kTarMaxSparseChunks) {
      SkipEntry("GNU sparse map has over " + std::to_string(kTarMaxSparseChunks) + " chunks");
      return;
    }
    entry_.sparse.push_back(
        TarSparseChunk{static_cast<uint64_t>(*off), static_cast<uint64_t>(*len), 0});
  }
}

Status TarIndexer::AfterHeaders() {
  data_start_ = offset_;
  if (sparse_10_ && skip_reason_.empty()) {
    if (stored_size_ == 0) {
      SkipEntry("GNU sparse 1.0 entry has no room for its map");
    } else {
      state_ = State::kSparseMap;
      return OkStatus();
    }
  }
  CommitEntry(data_start_, stored_size_);
  StartSkip(Padded(stored_size_), /*is_data=*/true);
  return OkStatus();
}

Status TarIndexer::ParseSparseExt(std::string_view block, uint64_t block_offset) {
  AddOldSparseChunks(block.substr(0, kGnuExtChunks * 24), block_offset);
  if (block[kGnuExtIsExtendedOff] != '\0') return OkStatus();  // another block follows
  return AfterHeaders();
}

Status TarIndexer::ParseSparseMapBlock(std::string_view block, uint64_t block_offset) {
  (void)block_offset;
  map_.bytes += kTarBlockSize;
  bool complete = false;
  std::string problem;
  for (char c : block) {
    if (complete || !problem.empty()) break;
    if (c != '\n') {
      if (map_.line.size() >= kSparseMapMaxLine) {
        problem = "GNU sparse 1.0 map has an overlong line";
      } else {
        map_.line.push_back(c);
      }
      continue;
    }
    std::string line = std::move(map_.line);
    map_.line.clear();
    if (!line.empty() && line[0] == '#') continue;  // comments, which libarchive allows
    std::optional<uint64_t> v = ParseDecimal(line);
    if (!v) {
      problem = "GNU sparse 1.0 map has a bad number " + Quote(line);
    } else if (!map_.count_known) {
      map_.count_known = true;
      map_.count = *v;
      if (map_.count > kTarMaxSparseChunks) {
        problem = "GNU sparse map has over " + std::to_string(kTarMaxSparseChunks) + " chunks";
      }
    } else {
      map_.numbers.push_back(*v);
    }
    if (map_.count_known && map_.numbers.size() == 2 * map_.count) complete = true;
  }
  if (problem.empty() && !complete && map_.bytes >= stored_size_) {
    problem = "GNU sparse 1.0 map runs past the entry's data";
  }
  if (problem.empty() && !complete) return OkStatus();  // the map goes on in the next block
  if (problem.empty() && map_.bytes > stored_size_) {
    problem = "GNU sparse 1.0 map runs past the entry's data";
  }
  if (!problem.empty()) {
    SkipEntry(problem);
  } else {
    entry_.sparse.clear();
    for (size_t i = 0; i + 1 < map_.numbers.size(); i += 2) {
      entry_.sparse.push_back(TarSparseChunk{map_.numbers[i], map_.numbers[i + 1], 0});
    }
  }
  uint64_t consumed = map_.bytes;
  uint64_t data_bytes = stored_size_ > consumed ? stored_size_ - consumed : 0;
  CommitEntry(data_start_ + consumed, data_bytes);
  uint64_t padded = Padded(stored_size_);
  StartSkip(padded > consumed ? padded - consumed : 0, /*is_data=*/true);
  return OkStatus();
}

void TarIndexer::CommitEntry(uint64_t data_start, uint64_t data_len) {
  data_start_ = data_start;
  data_end_ = data_start + data_len;
  pending_ = Pending{};

  Result<std::string> path = CleanTarPath(entry_raw_path_);
  if (!path.ok()) {
    SkipEntry(path.status().message());
  } else {
    entry_.path = std::move(path).value();
    if (entry_.path.empty() && entry_.type != TarType::kDir) {
      SkipEntry("a " + std::string(TarTypeName(entry_.type)) + " cannot be the archive root");
    }
  }
  if (entry_.type == TarType::kHardlink) {
    Result<std::string> target = CleanTarPath(entry_raw_link_);
    if (!target.ok()) {
      SkipEntry("hard link target " + Quote(entry_raw_link_) + ": " + target.status().message());
    } else if (target->empty()) {
      SkipEntry("hard link to the archive root");
    } else {
      entry_.link_target = std::move(target).value();
    }
  } else if (entry_.type == TarType::kSymlink) {
    if (entry_raw_link_.find('\0') != std::string::npos) {
      SkipEntry("symlink target contains a NUL byte");
    } else {
      entry_.link_target = entry_raw_link_;
    }
  }

  if (entry_.type == TarType::kFile && sparse_ && skip_reason_.empty()) {
    uint64_t logical_end = 0, stream = data_start;
    for (TarSparseChunk& c : entry_.sparse) {
      if (c.logical_offset < logical_end || c.length > real_size_ ||
          c.logical_offset > real_size_ - c.length) {
        SkipEntry("GNU sparse map chunk at " + std::to_string(c.logical_offset) + "+" +
                  std::to_string(c.length) + " overlaps another or ends past the real size " +
                  std::to_string(real_size_));
        break;
      }
      if (c.length > data_start + data_len - stream) {
        SkipEntry("GNU sparse map needs more than the " + std::to_string(data_len) +
                  " stored bytes");
        break;
      }
      logical_end = c.logical_offset + c.length;
      c.stream_offset = stream;
      stream += c.length;
    }
    if (real_size_ > kInt64Max) SkipEntry("GNU sparse real size is over 2^63");
    if (entry_.sparse.empty()) {
      // A file that is all hole: one empty chunk keeps `sparse` non-empty.
      entry_.sparse.push_back(TarSparseChunk{real_size_, 0, data_start});
    }
    entry_.size = real_size_;
    entry_.data_offset = data_start;
  } else if (entry_.type == TarType::kFile) {
    entry_.size = data_len;
    entry_.data_offset = data_start;
  } else if (entry_.type == TarType::kHardlink && data_len > 0) {
    entry_.size = data_len;
    entry_.data_offset = data_start;
  }

  if (!skip_reason_.empty()) {
    Warn(EntryName() + ": " + skip_reason_ + "; entry skipped");
    return;
  }
  entries_.push_back(std::move(entry_));
  entry_ = TarEntry{};
}

void TarIndexer::StartSkip(uint64_t bytes, bool is_data) {
  skip_remaining_ = bytes;
  skip_is_data_ = is_data;
  state_ = bytes > 0 ? State::kSkip : State::kHeader;
}

}  // namespace bcfs::formats
