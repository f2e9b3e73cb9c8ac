#include "core/digest.h"

#include <openssl/evp.h>

namespace bcfs {
namespace {

bool IsLowerHex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

std::string ToHex(const unsigned char* p, size_t n) {
  static const char kHex[] = "0123456789abcdef";
  std::string out(n * 2, '0');
  for (size_t i = 0; i < n; ++i) {
    out[2 * i] = kHex[p[i] >> 4];
    out[2 * i + 1] = kHex[p[i] & 15];
  }
  return out;
}

}  // namespace

Result<Digest> Digest::Parse(std::string_view text) {
  size_t colon = text.find(':');
  if (colon == std::string_view::npos) {
    return CorruptError("digest \"" + std::string(text) + "\" has no algorithm prefix");
  }
  std::string_view alg = text.substr(0, colon), hex = text.substr(colon + 1);
  size_t want = 0;
  if (alg == "sha256") {
    want = 64;
  } else if (alg == "sha512") {
    want = 128;
  } else {
    return CorruptError("digest \"" + std::string(text) + "\" uses unsupported algorithm \"" +
                        std::string(alg) + "\"");
  }
  if (hex.size() != want || !IsLowerHex(hex)) {
    return CorruptError("digest \"" + std::string(text) + "\" is not " + std::string(alg) +
                        ": followed by " + std::to_string(want) + " lower-case hex digits");
  }
  return Digest(std::string(alg), std::string(hex));
}

Result<Digest> Digest::FromRaw(std::string_view algorithm, std::string_view raw) {
  const size_t want = algorithm == "sha256" ? 32 : algorithm == "sha512" ? 64 : 0;
  if (want == 0) {
    return CorruptError("digest algorithm \"" + std::string(algorithm) + "\" is not supported");
  }
  if (raw.size() != want) {
    return CorruptError(std::string(algorithm) + " digest of " + std::to_string(raw.size()) +
                        " bytes; want " + std::to_string(want));
  }
  return Digest(std::string(algorithm),
                ToHex(reinterpret_cast<const unsigned char*>(raw.data()), raw.size()));
}

void Digest::AppendRaw(std::string& out) const {
  auto nibble = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  for (size_t i = 0; i + 1 < hex_.size(); i += 2) {
    out.push_back(static_cast<char>((nibble(hex_[i]) << 4) | nibble(hex_[i + 1])));
  }
}

Digest Digest::Sha256Of(std::string_view bytes) {
  Sha256 h;
  h.Update(bytes);
  return h.Finish();
}

namespace {

// OpenSSL 3 looks the algorithm up (a locked provider query) on every
// EVP_DigestInit_ex given EVP_sha256(); fetching it once makes a digest of a
// short text (inode numbers, chain IDs: millions per mount) several times cheaper.
const EVP_MD* Sha256Md() {
  static const EVP_MD* const md = [] {
    const EVP_MD* m = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    return m != nullptr ? m : EVP_sha256();
  }();
  return md;
}

}  // namespace

struct Sha256::Impl {
  EVP_MD_CTX* ctx = nullptr;
};

Sha256::Sha256() : impl_(std::make_unique<Impl>()) {
  impl_->ctx = EVP_MD_CTX_new();
  BCFS_CHECK(impl_->ctx != nullptr);
  BCFS_CHECK(EVP_DigestInit_ex(impl_->ctx, Sha256Md(), nullptr) == 1);
}

Sha256::~Sha256() { EVP_MD_CTX_free(impl_->ctx); }

void Sha256::Update(const void* data, size_t len) {
  BCFS_CHECK(EVP_DigestUpdate(impl_->ctx, data, len) == 1);
}

Digest Sha256::Finish() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  BCFS_CHECK(EVP_DigestFinal_ex(impl_->ctx, md, &n) == 1);
  return Digest("sha256", ToHex(md, n));
}

}  // namespace bcfs
