// Content digests ("sha256:<64 hex>") and incremental SHA-256 (OpenSSL).
//
// Thread-safety: Digest is a value. A Sha256 hasher is used by one thread at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "core/status.h"

namespace bcfs {

class Digest {
 public:
  Digest() = default;
  // Accepts "sha256:<64 lower-case hex>" and "sha512:<128 lower-case hex>", as
  // the OCI image spec's registered algorithms; anything else is kCorrupt with a
  // message saying what is wrong with the text.
  static Result<Digest> Parse(std::string_view text);
  static Digest Sha256Of(std::string_view bytes);
  // From the bytes AppendRaw wrote: kCorrupt unless `algorithm` is sha256 with
  // 32 bytes or sha512 with 64.
  static Result<Digest> FromRaw(std::string_view algorithm, std::string_view raw);
  // Appends the digest's bytes (32 for sha256, 64 for sha512; nothing when empty).
  void AppendRaw(std::string& out) const;

  bool empty() const { return hex_.empty(); }
  const std::string& algorithm() const { return algorithm_; }
  const std::string& hex() const { return hex_; }
  std::string ShortHex() const { return hex_.substr(0, 12); }
  std::string ToString() const { return empty() ? std::string() : algorithm_ + ":" + hex_; }

  friend bool operator==(const Digest&, const Digest&) = default;
  friend auto operator<=>(const Digest&, const Digest&) = default;

 private:
  friend class Sha256;
  Digest(std::string algorithm, std::string hex)
      : algorithm_(std::move(algorithm)), hex_(std::move(hex)) {}
  std::string algorithm_;
  std::string hex_;
};

// Incremental SHA-256.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(const void* data, size_t len);
  void Update(std::string_view s) { Update(s.data(), s.size()); }
  Digest Finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace bcfs

template <>
struct std::hash<bcfs::Digest> {
  size_t operator()(const bcfs::Digest& d) const noexcept {
    return std::hash<std::string>()(d.hex());
  }
};
