#include "formats/compression.h"

#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <memory>

#include "formats/estargz.h"

namespace bcfs::formats {
namespace {

using Sink = std::function<Status(std::string_view)>;

constexpr size_t kWindowSize = 32768;  // deflate's maximum back-reference distance
constexpr size_t kInChunk = 256u << 10;
constexpr size_t kOutChunk = 256u << 10;
constexpr size_t kPlainChunk = 1u << 20;

std::string AtOffset(uint64_t offset) { return " at compressed offset " + std::to_string(offset); }

Status CorruptAt(std::string_view doc, std::string_view what, uint64_t offset) {
  std::string msg = doc.empty() ? std::string() : std::string(doc) + ": ";
  return CorruptError(msg + std::string(what) + AtOffset(offset));
}

// The last 32 KiB of output of the current gzip member, kept as a ring.
class Window {
 public:
  Window() : buf_(kWindowSize) {}
  void Reset() { pos_ = filled_ = 0; }
  void Add(const char* p, size_t n) {
    if (n >= kWindowSize) {
      std::memcpy(buf_.data(), p + n - kWindowSize, kWindowSize);
      pos_ = 0;
      filled_ = kWindowSize;
      return;
    }
    size_t first = std::min(n, kWindowSize - pos_);
    std::memcpy(buf_.data() + pos_, p, first);
    std::memcpy(buf_.data(), p + first, n - first);
    pos_ = (pos_ + n) % kWindowSize;
    filled_ = std::min(kWindowSize, filled_ + n);
  }
  // Oldest byte first. Until the ring first wraps, pos_ == filled_.
  std::string Linear() const {
    if (filled_ < kWindowSize) return std::string(buf_.data(), filled_);
    std::string out(buf_.data() + pos_, kWindowSize - pos_);
    out.append(buf_.data(), pos_);
    return out;
  }

 private:
  std::vector<char> buf_;
  size_t pos_ = 0;
  size_t filled_ = 0;
};

// An inflate stream that is always released.
class Inflater {
 public:
  Inflater() = default;
  Inflater(const Inflater&) = delete;
  Inflater& operator=(const Inflater&) = delete;
  ~Inflater() {
    if (live_) inflateEnd(&s_);
  }
  Status Init(int window_bits) {
    int ret = inflateInit2(&s_, window_bits);
    if (ret != Z_OK) return InternalError(std::string("inflateInit2: ") + zError(ret));
    live_ = true;
    return OkStatus();
  }
  z_stream* get() { return &s_; }

 private:
  z_stream s_{};
  bool live_ = false;
};

std::string ZlibMessage(const z_stream* s, int ret) {
  return std::string("gzip: ") + (s->msg != nullptr ? s->msg : zError(ret));
}

struct ZstdDCtxFree {
  void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
};
using ZstdDCtx = std::unique_ptr<ZSTD_DCtx, ZstdDCtxFree>;

// Feeds `avail_in`/`next_in` style decoders from a ByteSource: `next_read`
// is the blob offset just past the buffered bytes.
struct Input {
  Input(ByteSource& s, uint64_t start) : src(s), buf(kInChunk), next_read(start) {}
  bool AtEnd() const { return next_read >= src.size(); }
  // Reads the next chunk into buf; returns its length. Call only when !AtEnd().
  Result<size_t> Refill() {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), src.size() - next_read));
    BCFS_RETURN_IF_ERROR(src.ReadAt(next_read, std::span<char>(buf.data(), n)));
    next_read += n;
    return n;
  }
  ByteSource& src;
  std::vector<char> buf;
  uint64_t next_read;
};

Bytef* Z(char* p) { return reinterpret_cast<Bytef*>(p); }

// The Build* functions fill `index` as they go: uncompressed_size is always
// the output handed to the sink so far, so a pass that fails or is stopped
// leaves an index that covers exactly that output.
Status BuildGzip(ByteSource& src, Compression c, std::string_view doc, const Sink& sink,
                 uint64_t span, SeekIndex& index) {
  const uint64_t size = src.size();
  if (size == 0) return CorruptAt(doc, "gzip: empty stream", 0);
  Inflater inflater;
  BCFS_RETURN_IF_ERROR(inflater.Init(15 + 16));  // gzip only, as BuildKit's reader
  z_stream* s = inflater.get();
  Input input(src, 0);
  std::vector<char> out(kOutChunk);
  Window window;
  index.compression = c;
  uint64_t total_out = 0;
  uint64_t last_point = 0;
  bool in_header = true;  // the current member's header is not yet fully read
  auto consumed = [&] { return input.next_read - s->avail_in; };

  for (;;) {
    if (s->avail_in == 0) {
      if (input.AtEnd()) return CorruptAt(doc, "gzip: truncated stream: input ends", size);
      BCFS_ASSIGN_OR_RETURN(size_t n, input.Refill());
      s->next_in = Z(input.buf.data());
      s->avail_in = static_cast<uInt>(n);
    }
    s->next_out = Z(out.data());
    s->avail_out = static_cast<uInt>(out.size());
    // Z_BLOCK returns at every deflate block boundary, where a point can go.
    int ret = inflate(s, Z_BLOCK);
    if (ret != Z_OK && ret != Z_STREAM_END) return CorruptAt(doc, ZlibMessage(s, ret), consumed());
    size_t produced = out.size() - s->avail_out;
    if (produced > 0) {
      window.Add(out.data(), produced);
      total_out += produced;
      index.uncompressed_size = total_out;
      if (sink) BCFS_RETURN_IF_ERROR(sink(std::string_view(out.data(), produced)));
    }
    if (ret == Z_STREAM_END) {
      if (consumed() == size) break;
      // Another member follows (Go's gzip reader is multistream by default).
      // History never crosses members, so the window starts empty.
      if (inflateReset(s) != Z_OK) return InternalError("inflateReset failed");
      window.Reset();
      in_header = true;
      continue;
    }
    // Bit 7: stopped at a block boundary (or just after a member header);
    // bit 6: the block being decoded is the member's last one.
    if ((s->data_type & 128) == 0) continue;
    bool due = index.points.empty() || total_out - last_point >= span;
    if (in_header) {
      in_header = false;
      if (!due) continue;
      index.points.push_back(SeekPoint{consumed(), total_out, s->data_type & 7, std::string()});
      last_point = total_out;
    } else if ((s->data_type & 64) == 0 && due) {
      index.points.push_back(SeekPoint{consumed(), total_out, s->data_type & 7, window.Linear()});
      last_point = total_out;
    }
  }
  return OkStatus();
}

Status BuildZstd(ByteSource& src, std::string_view doc, const Sink& sink, SeekIndex& index) {
  const uint64_t size = src.size();
  if (size == 0) return CorruptAt(doc, "zstd: empty stream", 0);
  ZstdDCtx dctx(ZSTD_createDCtx());
  if (dctx == nullptr) return InternalError("ZSTD_createDCtx failed");
  Input input(src, 0);
  std::vector<char> out(ZSTD_DStreamOutSize());
  ZSTD_inBuffer in{input.buf.data(), 0, 0};
  index.compression = Compression::kZstd;
  uint64_t total_out = 0;
  bool frame_done = true;  // at a frame boundary (the start counts as one)
  auto consumed = [&] { return input.next_read - (in.size - in.pos); };

  for (;;) {
    if (in.pos == in.size && !input.AtEnd()) {
      BCFS_ASSIGN_OR_RETURN(size_t n, input.Refill());
      in = ZSTD_inBuffer{input.buf.data(), n, 0};
    }
    bool no_more_input = in.pos == in.size && input.AtEnd();
    if (frame_done) {
      if (no_more_input) break;
      // A frame that produced nothing (skippable or empty) shares the earlier point.
      if (index.points.empty() || index.points.back().out_offset != total_out) {
        index.points.push_back(SeekPoint{consumed(), total_out, 0, std::string()});
      }
      frame_done = false;
    }
    ZSTD_outBuffer o{out.data(), out.size(), 0};
    // The decoder may swallow bytes before it fails, so errors name where it was fed.
    const uint64_t at = consumed();
    size_t ret = ZSTD_decompressStream(dctx.get(), &o, &in);
    if (ZSTD_isError(ret)) {
      return CorruptAt(doc, std::string("zstd: ") + ZSTD_getErrorName(ret), at);
    }
    if (o.pos > 0) {
      total_out += o.pos;
      index.uncompressed_size = total_out;
      if (sink) BCFS_RETURN_IF_ERROR(sink(std::string_view(out.data(), o.pos)));
    }
    if (ret == 0) {
      frame_done = true;  // decoded and flushed; the next byte starts a frame
      continue;
    }
    // A full output buffer may still hold data to flush; anything else with
    // no input left is a frame cut short.
    if (in.pos == in.size && input.AtEnd() && o.pos < o.size) {
      return CorruptAt(doc, "zstd: truncated stream: input ends inside a frame", size);
    }
  }
  return OkStatus();
}

Status BuildPlain(ByteSource& src, const Sink& sink, SeekIndex& index) {
  index.compression = Compression::kUncompressed;
  if (!sink) {
    index.uncompressed_size = src.size();
    return OkStatus();
  }
  std::vector<char> buf(kPlainChunk);
  for (uint64_t pos = 0; pos < src.size();) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), src.size() - pos));
    BCFS_RETURN_IF_ERROR(src.ReadAt(pos, std::span<char>(buf.data(), n)));
    pos += n;
    index.uncompressed_size = pos;
    BCFS_RETURN_IF_ERROR(sink(std::string_view(buf.data(), n)));
  }
  return OkStatus();
}

// The last point at or before `offset`, or nullptr.
const SeekPoint* FindPoint(const SeekIndex& index, uint64_t offset) {
  auto it = std::upper_bound(index.points.begin(), index.points.end(), offset,
                             [](uint64_t off, const SeekPoint& p) { return off < p.out_offset; });
  return it == index.points.begin() ? nullptr : &*std::prev(it);
}

Status ReadGzip(ByteSource& src, const SeekIndex& index, uint64_t offset, std::span<char> out) {
  const uint64_t size = src.size();
  const SeekPoint* p = FindPoint(index, offset);
  Inflater inflater;
  bool raw = p != nullptr;  // a point resumes raw deflate data; the start is a gzip header
  Input input(src, p != nullptr ? p->in_offset : 0);
  uint64_t out_pos = p != nullptr ? p->out_offset : 0;
  if (p != nullptr) {
    if (p->in_offset > size || p->bits < 0 || p->bits > 7 || (p->bits > 0 && p->in_offset == 0) ||
        p->window.size() > kWindowSize) {
      return CorruptError("gzip: seek point at uncompressed offset " +
                          std::to_string(p->out_offset) + " does not fit a blob of " +
                          std::to_string(size) + " bytes");
    }
    BCFS_RETURN_IF_ERROR(inflater.Init(-15));
    if (p->bits > 0) {
      char byte = 0;
      BCFS_RETURN_IF_ERROR(src.ReadAt(p->in_offset - 1, std::span<char>(&byte, 1)));
      int value = static_cast<unsigned char>(byte) >> (8 - p->bits);
      if (inflatePrime(inflater.get(), p->bits, value) != Z_OK) {
        return InternalError("inflatePrime failed");
      }
    }
    if (!p->window.empty() &&
        inflateSetDictionary(inflater.get(), reinterpret_cast<const Bytef*>(p->window.data()),
                             static_cast<uInt>(p->window.size())) != Z_OK) {
      return InternalError("inflateSetDictionary failed");
    }
  } else {
    BCFS_RETURN_IF_ERROR(inflater.Init(15 + 16));
  }
  z_stream* s = inflater.get();
  uint64_t skip = offset - out_pos;
  std::vector<char> discard(static_cast<size_t>(std::min<uint64_t>(skip, kOutChunk)));
  size_t filled = 0;
  auto consumed = [&] { return input.next_read - s->avail_in; };
  while (filled < out.size()) {
    if (s->avail_in == 0) {
      if (input.AtEnd()) {
        return CorruptError("gzip: stream ends" + AtOffset(size) + " before uncompressed offset " +
                            std::to_string(offset + out.size()));
      }
      BCFS_ASSIGN_OR_RETURN(size_t n, input.Refill());
      s->next_in = Z(input.buf.data());
      s->avail_in = static_cast<uInt>(n);
    }
    uInt room;
    if (skip > 0) {
      room = static_cast<uInt>(std::min<uint64_t>(skip, discard.size()));
      s->next_out = Z(discard.data());
    } else {
      room = static_cast<uInt>(std::min<size_t>(out.size() - filled, UINT_MAX));
      s->next_out = Z(out.data() + filled);
    }
    s->avail_out = room;
    int ret = inflate(s, Z_NO_FLUSH);
    size_t produced = room - s->avail_out;
    if (skip > 0) {
      skip -= produced;
    } else {
      filled += produced;
    }
    if (ret == Z_STREAM_END) {
      if (raw) {
        // zlib read raw deflate data, so the member's 8-byte trailer is ours to skip.
        size_t k = std::min<size_t>(8, s->avail_in);
        s->next_in += k;
        s->avail_in -= static_cast<uInt>(k);
        input.next_read += 8 - k;
        raw = false;
      }
      if (inflateReset2(s, 15 + 16) != Z_OK) return InternalError("inflateReset2 failed");
      continue;
    }
    if (ret != Z_OK) return CorruptError(ZlibMessage(s, ret) + AtOffset(consumed()));
  }
  return OkStatus();
}

Status ReadZstd(ByteSource& src, const SeekIndex& index, uint64_t offset, std::span<char> out) {
  const uint64_t size = src.size();
  const SeekPoint* p = FindPoint(index, offset);
  uint64_t start = p != nullptr ? p->in_offset : 0;
  uint64_t out_pos = p != nullptr ? p->out_offset : 0;
  if (start > size) {
    return CorruptError("zstd: seek point" + AtOffset(start) + " is beyond the blob's " +
                        std::to_string(size) + " bytes");
  }
  ZstdDCtx dctx(ZSTD_createDCtx());
  if (dctx == nullptr) return InternalError("ZSTD_createDCtx failed");
  Input input(src, start);
  ZSTD_inBuffer in{input.buf.data(), 0, 0};
  uint64_t skip = offset - out_pos;
  std::vector<char> discard(static_cast<size_t>(std::min<uint64_t>(skip, ZSTD_DStreamOutSize())));
  size_t filled = 0;
  while (filled < out.size()) {
    if (in.pos == in.size && !input.AtEnd()) {
      BCFS_ASSIGN_OR_RETURN(size_t n, input.Refill());
      in = ZSTD_inBuffer{input.buf.data(), n, 0};
    }
    ZSTD_outBuffer o;
    if (skip > 0) {
      o = ZSTD_outBuffer{discard.data(),
                         static_cast<size_t>(std::min<uint64_t>(skip, discard.size())), 0};
    } else {
      o = ZSTD_outBuffer{out.data() + filled, out.size() - filled, 0};
    }
    uint64_t at = input.next_read - (in.size - in.pos);
    size_t ret = ZSTD_decompressStream(dctx.get(), &o, &in);
    if (ZSTD_isError(ret)) {
      return CorruptError(std::string("zstd: ") + ZSTD_getErrorName(ret) + AtOffset(at));
    }
    if (skip > 0) {
      skip -= o.pos;
    } else {
      filled += o.pos;
    }
    if (o.pos < o.size && in.pos == in.size && input.AtEnd() && filled < out.size()) {
      return CorruptError("zstd: stream ends" + AtOffset(size) + " before uncompressed offset " +
                          std::to_string(offset + out.size()));
    }
  }
  return OkStatus();
}

void PutVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

bool GetVarint(std::string_view* in, uint64_t* v) {
  uint64_t result = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (in->empty()) return false;
    uint64_t byte = static_cast<unsigned char>(in->front());
    in->remove_prefix(1);
    if (shift == 63 && byte > 1) return false;  // would overflow 64 bits
    result |= (byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) {
      *v = result;
      return true;
    }
  }
  return false;
}

void PutFixed32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint32_t GetFixed32(std::string_view in) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i)
    v |= static_cast<uint32_t>(static_cast<unsigned char>(in[i])) << (8 * i);
  return v;
}

uint32_t Crc32(std::string_view bytes) {
  return static_cast<uint32_t>(crc32(crc32(0, nullptr, 0),
                                     reinterpret_cast<const Bytef*>(bytes.data()),
                                     static_cast<uInt>(bytes.size())));
}

constexpr std::string_view kIndexMagic = "bcSI";
constexpr uint8_t kIndexVersion = 1;

Status BadIndex(std::string_view why) { return CorruptError("seek index: " + std::string(why)); }

}  // namespace

Status MemoryByteSource::ReadAt(uint64_t offset, std::span<char> out) {
  if (offset > data_.size() || out.size() > data_.size() - offset) {
    return Status(Code::kIo, "read of " + std::to_string(out.size()) + " bytes at offset " +
                                 std::to_string(offset) + " is beyond the end of " +
                                 std::to_string(data_.size()) + " bytes");
  }
  if (!out.empty()) std::memcpy(out.data(), data_.data() + offset, out.size());
  return OkStatus();
}

std::string_view CompressionName(Compression c) {
  switch (c) {
    case Compression::kUncompressed:
      return "uncompressed";
    case Compression::kGzip:
      return "gzip";
    case Compression::kZstd:
      return "zstd";
    case Compression::kEstargz:
      return "estargz";
  }
  return "unknown";
}

Result<Compression> DetectCompression(ByteSource& src) {
  const uint64_t size = src.size();
  // BuildKit reads exactly the last 51 bytes, so a shorter blob is never eStargz.
  if (size >= estargz::kFooterSize) {
    std::string tail(estargz::kFooterSize, '\0');
    BCFS_RETURN_IF_ERROR(src.ReadAt(size - tail.size(), std::span<char>(tail)));
    if (estargz::ParseFooter(tail).ok()) return Compression::kEstargz;
  }
  std::string head(static_cast<size_t>(std::min<uint64_t>(size, 4)), '\0');
  BCFS_RETURN_IF_ERROR(src.ReadAt(0, std::span<char>(head)));
  if (head.size() >= 3 && head.compare(0, 3, "\x1f\x8b\x08") == 0) return Compression::kGzip;
  if (head.size() >= 4 && head == std::string_view("\x28\xb5\x2f\xfd", 4)) {
    return Compression::kZstd;
  }
  return Compression::kUncompressed;
}

namespace {

Status RunPass(ByteSource& src, Compression c, std::string_view doc, const Sink& sink,
               uint64_t span, SeekIndex& index) {
  if (span < kMinSpan || span > kMaxSpan) {
    return InvalidArgumentError("seek index span " + std::to_string(span) + " is outside [" +
                                std::to_string(kMinSpan) + ", " + std::to_string(kMaxSpan) + "]");
  }
  switch (c) {
    case Compression::kGzip:
    case Compression::kEstargz:
      return BuildGzip(src, c, doc, sink, span, index);
    case Compression::kZstd:
      return BuildZstd(src, doc, sink, index);
    case Compression::kUncompressed:
      return BuildPlain(src, sink, index);
  }
  return InvalidArgumentError("unknown compression");
}

}  // namespace

Result<SeekIndex> BuildSeekIndex(ByteSource& src, Compression c, std::string_view doc,
                                 const std::function<Status(std::string_view)>& sink,
                                 uint64_t span) {
  SeekIndex index;
  BCFS_RETURN_IF_ERROR(RunPass(src, c, doc, sink, span, index));
  return index;
}

SeekPass BuildSeekIndexUntil(ByteSource& src, Compression c, std::string_view doc,
                             const std::function<Result<bool>(std::string_view)>& sink,
                             uint64_t span) {
  SeekPass pass;
  Status sink_error;
  // The sink's "stop" travels through the pass as an error only this wrapper
  // can produce, and is turned back into a clean end here.
  auto wrapped = [&](std::string_view chunk) -> Status {
    Result<bool> more = sink(chunk);
    if (!more.ok()) {
      sink_error = more.status();
      return sink_error;
    }
    if (!*more) {
      pass.stopped = true;
      return InternalError("seek pass stopped by its sink");
    }
    return OkStatus();
  };
  Status st = RunPass(src, c, doc, wrapped, span, pass.index);
  if (pass.stopped) st = OkStatus();
  pass.status = st;
  // Points past the output handed over cannot be used.
  auto& points = pass.index.points;
  while (!points.empty() && points.back().out_offset > pass.index.uncompressed_size) {
    points.pop_back();
  }
  return pass;
}

bool SingleFrame(const SeekIndex& index) {
  return index.compression == Compression::kZstd && index.points.size() <= 1;
}

Status ReadUncompressed(ByteSource& src, const SeekIndex& index, uint64_t offset,
                        std::span<char> out) {
  if (offset > index.uncompressed_size || out.size() > index.uncompressed_size - offset) {
    return InvalidArgumentError("uncompressed range [" + std::to_string(offset) + ", +" +
                                std::to_string(out.size()) + ") ends beyond the stream's " +
                                std::to_string(index.uncompressed_size) + " bytes");
  }
  if (out.empty()) return OkStatus();
  switch (index.compression) {
    case Compression::kGzip:
    case Compression::kEstargz:
      return ReadGzip(src, index, offset, out);
    case Compression::kZstd:
      return ReadZstd(src, index, offset, out);
    case Compression::kUncompressed:
      return src.ReadAt(offset, out);
  }
  return InvalidArgumentError("unknown compression");
}

// Layout: "bcSI", version (1 byte), compression (1 byte), varint
// uncompressed_size, varint point count, then per point varint in_offset,
// varint out_offset, bits (1 byte), varint window length, window bytes; last a
// little-endian CRC-32 of everything before it.
std::string EncodeSeekIndex(const SeekIndex& index) {
  std::string out(kIndexMagic);
  out.push_back(static_cast<char>(kIndexVersion));
  out.push_back(static_cast<char>(index.compression));
  PutVarint(&out, index.uncompressed_size);
  PutVarint(&out, index.points.size());
  for (const SeekPoint& p : index.points) {
    PutVarint(&out, p.in_offset);
    PutVarint(&out, p.out_offset);
    out.push_back(static_cast<char>(p.bits));
    PutVarint(&out, p.window.size());
    out.append(p.window);
  }
  PutFixed32(&out, Crc32(out));
  return out;
}

Result<SeekIndex> DecodeSeekIndex(std::string_view bytes) {
  if (bytes.size() < kIndexMagic.size() + 2 + 2 + 4) {
    return BadIndex(std::to_string(bytes.size()) + " bytes is too short");
  }
  if (bytes.substr(0, kIndexMagic.size()) != kIndexMagic) return BadIndex("bad magic");
  std::string_view body = bytes.substr(0, bytes.size() - 4);
  if (GetFixed32(bytes.substr(bytes.size() - 4)) != Crc32(body)) {
    return BadIndex("checksum mismatch");
  }
  std::string_view in = body.substr(kIndexMagic.size());
  uint8_t version = static_cast<uint8_t>(in[0]);
  if (version != kIndexVersion) {
    return BadIndex("version " + std::to_string(version) + ", want " +
                    std::to_string(kIndexVersion));
  }
  uint8_t c = static_cast<uint8_t>(in[1]);
  if (c > static_cast<uint8_t>(Compression::kEstargz)) {
    return BadIndex("unknown compression " + std::to_string(c));
  }
  in.remove_prefix(2);
  SeekIndex index;
  index.compression = static_cast<Compression>(c);
  uint64_t count = 0;
  if (!GetVarint(&in, &index.uncompressed_size) || !GetVarint(&in, &count)) {
    return BadIndex("truncated header");
  }
  // Every point takes at least 4 bytes, which bounds the allocation below.
  if (count > in.size() / 4) return BadIndex(std::to_string(count) + " points cannot fit");
  const bool gzip =
      index.compression == Compression::kGzip || index.compression == Compression::kEstargz;
  if (index.compression == Compression::kUncompressed && count != 0) {
    return BadIndex("an uncompressed stream has seek points");
  }
  index.points.reserve(count);
  for (uint64_t i = 0; i < count; ++i) {
    std::string where = "point " + std::to_string(i) + ": ";
    SeekPoint p;
    uint64_t window_size = 0;
    if (!GetVarint(&in, &p.in_offset) || !GetVarint(&in, &p.out_offset) || in.empty()) {
      return BadIndex(where + "truncated");
    }
    p.bits = static_cast<unsigned char>(in[0]);
    in.remove_prefix(1);
    if (!GetVarint(&in, &window_size) || window_size > in.size()) {
      return BadIndex(where + "truncated window");
    }
    if (p.bits > (gzip ? 7 : 0)) return BadIndex(where + "bits " + std::to_string(p.bits));
    if (p.bits > 0 && p.in_offset == 0) return BadIndex(where + "bits before offset 0");
    if (window_size > (gzip ? kWindowSize : 0)) {
      return BadIndex(where + "window of " + std::to_string(window_size) + " bytes");
    }
    if (p.out_offset > index.uncompressed_size) {
      return BadIndex(where + "beyond the uncompressed size");
    }
    if (!index.points.empty() && (p.out_offset <= index.points.back().out_offset ||
                                  p.in_offset < index.points.back().in_offset)) {
      return BadIndex(where + "out of order");
    }
    p.window.assign(in.substr(0, window_size));
    in.remove_prefix(window_size);
    index.points.push_back(std::move(p));
  }
  if (!in.empty()) return BadIndex(std::to_string(in.size()) + " trailing bytes");
  return index;
}

}  // namespace bcfs::formats
