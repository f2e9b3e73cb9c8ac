#include "catalog/catalog_cache.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <thread>
#include <utility>

#include "core/log.h"

namespace bcfs::catalog {
namespace {

// The layout (all integers little-endian):
//   magic "bcfscat\0" | u32 version | u64 body size | 32-byte SHA-256 of the body | body
//   body = varint count, that many strings (the cache's own keys: fingerprint,
//          source, producer; none from EncodeSourceInfo) | the SourceInfo
// Integers in the body are LEB128 varints (signed ones zigzag), strings and
// lists are a varint count then their items, digests a tag byte (0 empty,
// 1 sha256, 2 sha512, 3 other as text) then their raw bytes.
// Bump kVersion whenever the layout or what ReadSource puts in a SourceInfo
// changes.
constexpr char kMagic[8] = {'b', 'c', 'f', 's', 'c', 'a', 't', '\0'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderSize = sizeof kMagic + 4 + 8 + 32;
constexpr uint64_t kMaxMeta = 16;

// --- writing -----------------------------------------------------------------

class Writer {
 public:
  explicit Writer(std::string& out) : out_(out) {}

  void U(uint64_t v) {
    while (v >= 0x80) {
      out_.push_back(static_cast<char>((v & 0x7f) | 0x80));
      v >>= 7;
    }
    out_.push_back(static_cast<char>(v));
  }
  void I(int64_t v) { U((static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63)); }
  void B(bool v) { out_.push_back(v ? 1 : 0); }
  void S(std::string_view s) {
    U(s.size());
    out_.append(s);
  }
  void D(const Digest& d) {
    if (d.empty()) {
      out_.push_back(0);
    } else if (d.algorithm() == "sha256" && d.hex().size() == 64) {
      out_.push_back(1);
      d.AppendRaw(out_);
    } else if (d.algorithm() == "sha512" && d.hex().size() == 128) {
      out_.push_back(2);
      d.AppendRaw(out_);
    } else {
      out_.push_back(3);
      S(d.ToString());
    }
  }
  void Strings(const std::vector<std::string>& v) {
    U(v.size());
    for (const auto& s : v) S(s);
  }
  void Digests(const std::vector<Digest>& v) {
    U(v.size());
    for (const auto& d : v) D(d);
  }

  void Descriptor(const formats::Descriptor& d) {
    S(d.media_type);
    D(d.digest);
    I(d.size);
    U(d.annotations.size());
    for (const auto& [k, v] : d.annotations) {
      S(k);
      S(v);
    }
    B(d.platform.has_value());
    if (d.platform) {
      S(d.platform->os);
      S(d.platform->architecture);
      S(d.platform->variant);
    }
  }

  void Layer(const LayerInfo& l) {
    I(l.position);
    D(l.blob);
    I(l.parent);
    I(l.size);
    S(l.media_type);
    S(l.compression);
    D(l.diff_id);
    D(l.toc_digest);
    I(l.created);
    B(l.listed);
    B(l.present);
    I(l.actual_size);
  }

  void Record(const formats::DecodedRecord& r) {
    S(r.digest);
    U(r.inputs.size());
    for (const auto& in : r.inputs) {
      U(in.size());
      for (const auto& i : in) {
        S(i.selector);
        I(i.link);
      }
    }
    U(r.results.size());
    for (const auto& res : r.results) {
      I(res.top);
      U(res.explicit_layers.size());
      for (int64_t p : res.explicit_layers) I(p);
      I(res.created_at);
      B(res.explicit_chain);
    }
  }

  void Ref(const RefInfo& r) {
    S(r.name);
    B(r.history);
    Descriptor(r.descriptor);
    S(r.raw_descriptor);
    S(r.shape);
    S(r.media_type);
    Descriptor(r.config);
    U(r.layers.size());
    for (const auto& l : r.layers) Layer(l);
    U(r.records.size());
    for (const auto& rec : r.records) Record(rec);
    U(r.record_count);
    U(r.total_size);
    I(r.created);
    I(r.modified);
    B(r.synthesized);
    Strings(r.warnings);
    Strings(r.errors);
    Digests(r.reaches);
    S(r.manifest_bytes);
    S(r.config_bytes);
    S(r.inline_records_json);
  }

  void Source(const SourceInfo& info) {
    S(info.name);
    S(info.type);
    S(info.location);
    for (const auto* list : {&info.refs, &info.history}) {
      U(list->size());
      for (const auto& r : *list) Ref(r);
    }
    U(info.blob_count);
    U(info.blob_bytes);
    U(info.unreferenced_count);
    U(info.unreferenced_bytes);
    Strings(info.warnings);
    Strings(info.errors);
    Digests(info.blobs);
    U(info.blob_stats.size());
    for (const auto& [d, st] : info.blob_stats) {
      D(d);
      U(st.size);
      I(st.mtime);
      U(st.dev);
      U(st.ino);
      I(st.ctime);
      B(st.synthesized);
    }
    I(info.refs_modified);
  }

 private:
  std::string& out_;
};

void PutFixed(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

std::string Encode(const SourceInfo& info, const std::vector<std::string>& meta) {
  size_t guess = 4096 + info.blobs.size() * 90;
  for (const auto* list : {&info.refs, &info.history}) {
    for (const auto& r : *list) {
      guess += 1024 + r.manifest_bytes.size() + r.config_bytes.size() +
               r.inline_records_json.size() + r.layers.size() * 200 + r.records.size() * 120;
    }
  }
  std::string out;
  out.reserve(guess);
  out.append(kMagic, sizeof kMagic);
  PutFixed(out, kVersion, 4);
  out.append(8 + 32, '\0');  // body size and digest, filled in below
  Writer w(out);
  w.Strings(meta);
  w.Source(info);
  const std::string_view body = std::string_view(out).substr(kHeaderSize);
  std::string size_and_digest;
  PutFixed(size_and_digest, body.size(), 8);
  Digest::Sha256Of(body).AppendRaw(size_and_digest);
  out.replace(sizeof kMagic + 4, size_and_digest.size(), size_and_digest);
  return out;
}

// --- reading -----------------------------------------------------------------

// Bounds-checked reads from the body. The first failure sets error() and
// every later read fails too; callers add where it happened on the way out.
class Reader {
 public:
  Reader(std::string_view bytes, size_t base)
      : p_(bytes.data()), begin_(p_), end_(p_ + bytes.size()), base_(base) {}

  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  size_t left() const { return static_cast<size_t>(end_ - p_); }

  bool Fail(std::string_view field, const std::string& why) {
    if (error_.empty()) {
      error_ = std::string(field) + ": " + why + " (at byte " +
               std::to_string(base_ + static_cast<size_t>(p_ - begin_)) + ")";
    }
    return false;
  }
  // Prefixes the failure with where it happened ("refs[3].").
  bool In(const std::string& where) {
    error_ = where + "." + error_;
    return false;
  }

  bool U(uint64_t& v, std::string_view field) {
    v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p_ == end_) return Fail(field, "truncated");
      const uint8_t b = static_cast<uint8_t>(*p_++);
      if (shift == 63 && b > 1) return Fail(field, "varint overflows 64 bits");
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) return true;
    }
    return Fail(field, "varint longer than 10 bytes");
  }
  bool I(int64_t& v, std::string_view field) {
    uint64_t u;
    if (!U(u, field)) return false;
    v = static_cast<int64_t>((u >> 1) ^ (~(u & 1) + 1));
    return true;
  }
  bool Size(size_t& v, std::string_view field) {
    uint64_t u;
    if (!U(u, field)) return false;
    v = static_cast<size_t>(u);
    return true;
  }
  // A count of items of at least min_bytes each, checked against what is left
  // so that a hostile count never allocates.
  bool Count(size_t& n, std::string_view field, size_t min_bytes = 1) {
    uint64_t u;
    if (!U(u, field)) return false;
    if (u > left() / min_bytes) {
      return Fail(field, "count " + std::to_string(u) + " exceeds the " + std::to_string(left()) +
                             " bytes left");
    }
    n = static_cast<size_t>(u);
    return true;
  }
  bool B(bool& v, std::string_view field) {
    if (p_ == end_) return Fail(field, "truncated");
    const uint8_t b = static_cast<uint8_t>(*p_++);
    if (b > 1) return Fail(field, "boolean byte " + std::to_string(b));
    v = b == 1;
    return true;
  }
  bool S(std::string& s, std::string_view field) {
    uint64_t n;
    if (!U(n, field)) return false;
    if (n > left()) {
      return Fail(field, "length " + std::to_string(n) + " runs past the end (" +
                             std::to_string(left()) + " bytes left)");
    }
    s.assign(p_, static_cast<size_t>(n));
    p_ += n;
    return true;
  }
  bool D(Digest& d, std::string_view field) {
    if (p_ == end_) return Fail(field, "truncated");
    const uint8_t tag = static_cast<uint8_t>(*p_++);
    if (tag == 0) {
      d = Digest();
      return true;
    }
    Result<Digest> got = Digest();
    if (tag == 1 || tag == 2) {
      const size_t n = tag == 1 ? 32 : 64;
      if (left() < n) return Fail(field, "truncated digest");
      got = Digest::FromRaw(tag == 1 ? "sha256" : "sha512", std::string_view(p_, n));
      p_ += n;
    } else if (tag == 3) {
      std::string text;
      if (!S(text, field)) return false;
      got = Digest::Parse(text);
    } else {
      return Fail(field, "digest tag " + std::to_string(tag));
    }
    if (!got.ok()) return Fail(field, got.status().message());
    if (got->empty()) return Fail(field, "empty digest with a non-empty tag");
    d = std::move(*got);
    return true;
  }
  // A list of items of at least min_bytes each. Memory grows with the items
  // actually read, never with what a count claims.
  template <typename T, typename F>
  bool List(std::vector<T>& v, std::string_view field, size_t min_bytes, F&& one) {
    size_t n;
    if (!Count(n, field, min_bytes)) return false;
    v.clear();
    v.reserve(std::min<size_t>(n, 1u << 16));
    for (size_t i = 0; i < n; ++i) {
      if (!one(v.emplace_back())) return In(std::string(field) + "[" + std::to_string(i) + "]");
    }
    return true;
  }
  bool Strings(std::vector<std::string>& v, std::string_view field) {
    return List(v, field, 1, [&](std::string& s) { return S(s, "string"); });
  }
  bool Digests(std::vector<Digest>& v, std::string_view field) {
    return List(v, field, 1, [&](Digest& d) { return D(d, "digest"); });
  }

  bool Descriptor(formats::Descriptor& d) {
    size_t n;
    if (!S(d.media_type, "media_type") || !D(d.digest, "digest") || !I(d.size, "size") ||
        !Count(n, "annotations", 2)) {
      return false;
    }
    d.annotations.clear();
    for (size_t i = 0; i < n; ++i) {
      std::string k, v;
      if (!S(k, "annotations key") || !S(v, "annotations value")) {
        return In("annotations[" + std::to_string(i) + "]");
      }
      if (!d.annotations.empty() && !(d.annotations.rbegin()->first < k)) {
        return Fail("annotations", "key \"" + k + "\" out of order or repeated");
      }
      d.annotations.emplace_hint(d.annotations.end(), std::move(k), std::move(v));
    }
    bool has_platform;
    if (!B(has_platform, "platform")) return false;
    d.platform.reset();
    if (has_platform) {
      formats::Platform p;
      if (!S(p.os, "platform.os") || !S(p.architecture, "platform.architecture") ||
          !S(p.variant, "platform.variant")) {
        return false;
      }
      d.platform = std::move(p);
    }
    return true;
  }

  bool Layer(LayerInfo& l) {
    return I(l.position, "position") && D(l.blob, "blob") && I(l.parent, "parent") &&
           I(l.size, "size") && S(l.media_type, "media_type") && S(l.compression, "compression") &&
           D(l.diff_id, "diff_id") && D(l.toc_digest, "toc_digest") && I(l.created, "created") &&
           B(l.listed, "listed") && B(l.present, "present") && I(l.actual_size, "actual_size");
  }

  bool Record(formats::DecodedRecord& r) {
    if (!S(r.digest, "digest")) return false;
    const bool ok = List(r.inputs, "inputs", 1, [&](std::vector<formats::CacheInput>& in) {
      return List(in, "input", 2, [&](formats::CacheInput& i) {
        return S(i.selector, "selector") && I(i.link, "link");
      });
    });
    return ok && List(r.results, "results", 4, [&](formats::ResolvedResult& res) {
             return I(res.top, "top") &&
                    List(res.explicit_layers, "explicit_layers", 1,
                         [&](int64_t& x) { return I(x, "position"); }) &&
                    I(res.created_at, "created_at") && B(res.explicit_chain, "explicit_chain");
           });
  }

  bool Ref(RefInfo& r) {
    if (!S(r.name, "name") || !B(r.history, "history")) return false;
    if (!Descriptor(r.descriptor)) return In("descriptor");
    if (!S(r.raw_descriptor, "raw_descriptor") || !S(r.shape, "shape") ||
        !S(r.media_type, "media_type")) {
      return false;
    }
    if (!Descriptor(r.config)) return In("config");
    if (!List(r.layers, "layers", 12, [&](LayerInfo& l) { return Layer(l); }) ||
        !List(r.records, "records", 3, [&](formats::DecodedRecord& x) { return Record(x); })) {
      return false;
    }
    return Size(r.record_count, "record_count") && U(r.total_size, "total_size") &&
           I(r.created, "created") && I(r.modified, "modified") &&
           B(r.synthesized, "synthesized") && Strings(r.warnings, "warnings") &&
           Strings(r.errors, "errors") && Digests(r.reaches, "reaches") &&
           S(r.manifest_bytes, "manifest_bytes") && S(r.config_bytes, "config_bytes") &&
           S(r.inline_records_json, "inline_records_json");
  }

  bool Source(SourceInfo& info) {
    if (!S(info.name, "name") || !S(info.type, "type") || !S(info.location, "location")) {
      return false;
    }
    if (!List(info.refs, "refs", 28, [&](RefInfo& r) { return Ref(r); }) ||
        !List(info.history, "history", 28, [&](RefInfo& r) { return Ref(r); })) {
      return false;
    }
    size_t n;
    if (!U(info.blob_count, "blob_count") || !U(info.blob_bytes, "blob_bytes") ||
        !U(info.unreferenced_count, "unreferenced_count") ||
        !U(info.unreferenced_bytes, "unreferenced_bytes") || !Strings(info.warnings, "warnings") ||
        !Strings(info.errors, "errors") || !Digests(info.blobs, "blobs") ||
        !Count(n, "blob_stats", 7)) {
      return false;
    }
    info.blob_stats.clear();
    for (size_t i = 0; i < n; ++i) {
      Digest d;
      backends::BlobStat st;
      if (!D(d, "digest") || !U(st.size, "size") || !I(st.mtime, "mtime") || !U(st.dev, "dev") ||
          !U(st.ino, "ino") || !I(st.ctime, "ctime") || !B(st.synthesized, "synthesized")) {
        return In("blob_stats[" + std::to_string(i) + "]");
      }
      if (!info.blob_stats.empty() && !(info.blob_stats.rbegin()->first < d)) {
        Fail("blob_stats", d.ToString() + " out of order or repeated");
        return In("blob_stats[" + std::to_string(i) + "]");
      }
      info.blob_stats.emplace_hint(info.blob_stats.end(), std::move(d), st);
    }
    return I(info.refs_modified, "refs_modified");
  }

  bool AtEnd() {
    if (p_ != end_) return Fail("end", std::to_string(left()) + " bytes after the last field");
    return true;
  }

 private:
  const char* p_;
  const char* begin_;
  const char* end_;
  size_t base_;
  std::string error_;
};

uint64_t GetFixed(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}

// The parts of an encoding: the header checked (but not yet the digest).
struct Parsed {
  std::vector<std::string> meta;
  std::string_view body;
  std::string_view digest;  // the raw SHA-256 the header claims for body
  std::string_view after_meta;
  size_t after_meta_offset = 0;
};

Result<Parsed> ParseHeader(std::string_view bytes) {
  auto bad = [](const std::string& why) { return CorruptError("catalog cache: " + why); };
  if (bytes.size() < kHeaderSize) {
    return bad("truncated header (" + std::to_string(bytes.size()) + " bytes)");
  }
  if (std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0) return bad("bad magic");
  const uint64_t version = GetFixed(bytes.data() + 8, 4);
  if (version != kVersion) {
    return bad("format version " + std::to_string(version) + ", this build reads " +
               std::to_string(kVersion));
  }
  const uint64_t body_size = GetFixed(bytes.data() + 12, 8);
  if (body_size != bytes.size() - kHeaderSize) {
    return bad("the header says " + std::to_string(body_size) + " bytes follow it but " +
               std::to_string(bytes.size() - kHeaderSize) + " do");
  }
  Parsed p;
  p.digest = bytes.substr(20, 32);
  p.body = bytes.substr(kHeaderSize);
  Reader r(p.body, kHeaderSize);
  size_t n = 0;
  if (!r.Count(n, "header keys") || n > kMaxMeta) {
    return bad(r.ok() ? "too many header keys" : r.error());
  }
  p.meta.resize(n);
  for (size_t i = 0; i < n; ++i) {
    if (!r.S(p.meta[i], "header key")) return bad(r.error());
  }
  p.after_meta_offset = p.body.size() - r.left();
  p.after_meta = p.body.substr(p.after_meta_offset);
  return p;
}

Result<SourceInfo> DecodeParsed(const Parsed& p) {
  // A large body is hashed on another thread while it is decoded: decoding
  // is bounds-checked, so reading a body that then fails its digest is safe,
  // and the result is only returned once the digest matched.
  std::string got;
  std::thread hasher;
  if (p.body.size() >= (1u << 20)) {
    hasher = std::thread([&] { Digest::Sha256Of(p.body).AppendRaw(got); });
  } else {
    Digest::Sha256Of(p.body).AppendRaw(got);
    if (got != p.digest) return CorruptError("catalog cache: the body does not match its SHA-256");
  }
  SourceInfo info;
  Reader r(p.after_meta, kHeaderSize + p.after_meta_offset);
  const bool decoded = r.Source(info) && r.AtEnd();
  if (hasher.joinable()) hasher.join();
  if (got != p.digest) return CorruptError("catalog cache: the body does not match its SHA-256");
  if (!decoded) return CorruptError("catalog cache: " + r.error());
  return info;
}

std::string SourceKey(backends::Backend& backend, const std::string& name,
                      const std::string& type) {
  return type + "\n" + name + "\n" + backend.Describe();
}

// Which build wrote a file: a new binary may read sources differently.
std::string Producer() {
  static const std::string producer = [] {
    struct stat st;
    if (::stat("/proc/self/exe", &st) != 0) return std::string("unknown");
    return "exe " + std::to_string(st.st_size) + " " + std::to_string(st.st_mtim.tv_sec) + "." +
           std::to_string(st.st_mtim.tv_nsec);
  }();
  return producer + " v" + std::to_string(kVersion);
}

// A file mapped read-only (no copy, no zero-filled buffer: a warm catalog
// is read straight from the page cache).
class Mapping {
 public:
  ~Mapping() {
    if (data_ != nullptr) ::munmap(data_, size_);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  std::string_view bytes() const { return {static_cast<const char*>(data_), size_}; }

  static Result<std::unique_ptr<Mapping>> Open(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) return ErrnoError(errno, "open " + path);
    struct stat st;
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      return CorruptError(path + " is not a regular file");
    }
    auto m = std::unique_ptr<Mapping>(new Mapping());
    m->size_ = static_cast<size_t>(st.st_size);
    if (m->size_ > 0) {
      void* p = ::mmap(nullptr, m->size_, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
      if (p == MAP_FAILED) {
        const int err = errno;
        ::close(fd);
        return ErrnoError(err, "map " + path);
      }
      m->data_ = p;
    }
    ::close(fd);
    return m;
  }

 private:
  Mapping() = default;
  void* data_ = nullptr;
  size_t size_ = 0;
};

Status WriteFileAtomically(const std::string& dir, const std::string& path,
                           const std::string& bytes) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(dir).parent_path(), ec);
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
      return ErrnoError(errno, "create " + dir);
    }
  }
  static std::atomic<uint64_t> counter{0};
  const std::string tmp =
      path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter.fetch_add(1));
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return ErrnoError(errno, "create " + tmp);
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return ErrnoError(err, "write " + tmp);
    }
    done += static_cast<size_t>(n);
  }
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return ErrnoError(err, "write " + tmp);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return ErrnoError(err, "rename " + tmp + " to " + path);
  }
  return OkStatus();
}

}  // namespace

std::string EncodeSourceInfo(const SourceInfo& info) { return Encode(info, {}); }

Result<SourceInfo> DecodeSourceInfo(std::string_view bytes) {
  BCFS_ASSIGN_OR_RETURN(Parsed p, ParseHeader(bytes));
  return DecodeParsed(p);
}

std::string CatalogCacheFile(backends::Backend& backend, const std::string& name,
                             const std::string& type, const std::string& cache_dir) {
  return cache_dir + "/" + Digest::Sha256Of(SourceKey(backend, name, type)).hex() + ".bin";
}

SourceInfo ReadSourceCached(backends::Backend& backend, const std::string& name,
                            const std::string& type, const std::string& cache_dir, bool* from_cache,
                            std::string* version) {
  if (from_cache != nullptr) *from_cache = false;
  // First: whatever changes from here on makes the next use miss.
  const std::string fingerprint = backend.Fingerprint();
  if (version != nullptr) *version = fingerprint.empty() ? "" : fingerprint + "\n" + Producer();
  const bool usable = !cache_dir.empty() && !fingerprint.empty();
  const std::string key = SourceKey(backend, name, type);
  const std::string file = usable ? CatalogCacheFile(backend, name, type, cache_dir) : "";
  if (usable) {
    auto mapped = Mapping::Open(file);
    if (!mapped.ok()) {
      if (mapped.status().code() != Code::kNotFound) {
        LOG_WARNING(file << ": " << mapped.status().message() << "; reading " << name
                         << " from its source");
      }
    } else if (auto p = ParseHeader((*mapped)->bytes()); !p.ok()) {
      LOG_WARNING(file << ": " << p.status().message() << "; reading " << name
                       << " from its source");
    } else if (p->meta.size() != 3) {
      LOG_WARNING(file << ": catalog cache: " << p->meta.size() << " header keys, want 3; reading "
                       << name << " from its source");
    } else if (p->meta[1] != key) {
      LOG_WARNING(file << ": catalog cache: written for another source; reading " << name
                       << " from its source");
    } else if (p->meta[0] == fingerprint && p->meta[2] == Producer()) {
      auto info = DecodeParsed(*p);
      if (info.ok()) {
        if (from_cache != nullptr) *from_cache = true;
        return std::move(*info);
      }
      LOG_WARNING(file << ": " << info.status().message() << "; reading " << name
                       << " from its source");
    }
    // Else the source or the binary changed since: read again, silently.
  }
  SourceInfo info = ReadSource(backend, name, type);
  if (usable && !info.HasErrors()) {
    Status st = WriteFileAtomically(cache_dir, file, Encode(info, {fingerprint, key, Producer()}));
    if (!st.ok()) LOG_WARNING("catalog cache of " << name << ": " << st.message());
  }
  return info;
}

}  // namespace bcfs::catalog
