#include "backends/http/http_client.h"

#include <curl/curl.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <fstream>
#include <limits>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include "core/log.h"
#include "core/metrics.h"

namespace bcfs::http {
namespace {

constexpr int kMaxRedirects = 10;
constexpr size_t kMaxStreamErrorBody = 1 << 20;
constexpr size_t kMaxPooledHandles = 64;
constexpr long kBufferSize = 256 * 1024;

void GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] {
    // Never paired with curl_global_cleanup(): other threads may still use
    // libcurl while static objects are destroyed at exit.
    CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
    BCFS_CHECK(rc == CURLE_OK);
  });
}

char Lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool IEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (Lower(a[i]) != Lower(b[i])) return false;
  }
  return true;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) {
    s.remove_suffix(1);
  }
  return s;
}

std::optional<uint64_t> ParseUint(std::string_view s) {
  s = Trim(s);
  uint64_t v = 0;
  if (s.empty()) return std::nullopt;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

std::string FindHeader(const std::vector<Header>& headers, std::string_view name) {
  for (auto it = headers.rbegin(); it != headers.rend(); ++it) {
    if (IEquals(it->name, name)) return it->value;
  }
  return "";
}

bool HasHeader(const std::vector<Header>& headers, std::string_view name) {
  for (const Header& h : headers) {
    if (IEquals(h.name, name)) return true;
  }
  return false;
}

struct ContentRange {
  uint64_t first = 0, last = 0;
  std::optional<uint64_t> total;  // nullopt for "*"
};

// "bytes first-last/total" or "bytes first-last/*" (RFC 9110 §14.4).
std::optional<ContentRange> ParseContentRange(std::string_view v) {
  v = Trim(v);
  if (v.substr(0, 6) != "bytes ") return std::nullopt;
  v.remove_prefix(6);
  size_t dash = v.find('-'), slash = v.find('/');
  if (dash == std::string_view::npos || slash == std::string_view::npos || dash > slash) {
    return std::nullopt;
  }
  auto first = ParseUint(v.substr(0, dash));
  auto last = ParseUint(v.substr(dash + 1, slash - dash - 1));
  if (!first || !last || *last < *first) return std::nullopt;
  ContentRange cr{*first, *last, std::nullopt};
  std::string_view total = Trim(v.substr(slash + 1));
  if (total != "*") {
    cr.total = ParseUint(total);
    if (!cr.total || *cr.total <= *last) return std::nullopt;
  }
  return cr;
}

bool IsRedirectStatus(long s) { return s == 301 || s == 302 || s == 303 || s == 307 || s == 308; }
bool IsRetryableStatus(long s) { return s == 429 || (s >= 500 && s <= 599); }
bool IsSuccess(long s) { return s >= 200 && s <= 299; }

struct Origin {
  std::string scheme, host, port;
  bool operator==(const Origin&) const = default;
};

// Owns a CURLU handle.
struct UrlHandle {
  UrlHandle() : u(curl_url()) { BCFS_CHECK(u != nullptr); }
  ~UrlHandle() { curl_url_cleanup(u); }
  UrlHandle(const UrlHandle&) = delete;
  UrlHandle& operator=(const UrlHandle&) = delete;

  std::optional<std::string> Get(CURLUPart part, unsigned flags = 0) const {
    char* out = nullptr;
    if (curl_url_get(u, part, &out, flags) != CURLUE_OK) return std::nullopt;
    std::string s(out);
    curl_free(out);
    return s;
  }
  CURLU* u;
};

Result<Origin> OriginOf(const std::string& url) {
  UrlHandle h;
  if (curl_url_set(h.u, CURLUPART_URL, url.c_str(), 0) != CURLUE_OK) {
    return InvalidArgumentError("malformed URL " + RedactUrl(url));
  }
  Origin o;
  o.scheme = h.Get(CURLUPART_SCHEME).value_or("");
  o.host = h.Get(CURLUPART_HOST).value_or("");
  o.port = h.Get(CURLUPART_PORT, CURLU_DEFAULT_PORT).value_or("");
  for (char& c : o.scheme) c = Lower(c);
  for (char& c : o.host) c = Lower(c);
  if (o.scheme != "http" && o.scheme != "https") {
    return InvalidArgumentError("not an http(s) URL: " + RedactUrl(url));
  }
  return o;
}

// The absolute URL a Location header points to, resolved against `base`.
Result<std::string> ResolveLocation(const std::string& base, const std::string& location) {
  UrlHandle h;
  if (curl_url_set(h.u, CURLUPART_URL, base.c_str(), 0) != CURLUE_OK ||
      curl_url_set(h.u, CURLUPART_URL, location.c_str(), 0) != CURLUE_OK) {
    return InvalidArgumentError("malformed redirect Location " + RedactUrl(location));
  }
  auto out = h.Get(CURLUPART_URL);
  if (!out) return InvalidArgumentError("malformed redirect Location " + RedactUrl(location));
  return *out;
}

std::string ReadFile(const std::string& path, bool* ok) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  *ok = static_cast<bool>(in) || in.eof();
  return ss.str();
}

long BackoffMs(const Options& o, int retry) {
  long cap = std::max<long>(o.base_backoff_ms, 0);
  for (int i = 1; i < retry && cap < o.max_backoff_ms; ++i) cap *= 2;
  cap = std::min(cap, o.max_backoff_ms);
  if (cap <= 0) return 0;
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return std::uniform_int_distribution<long>(0, cap)(rng);
}

// What survives from one attempt to the next: where the caller's byte stream
// stands and what the resource looked like when it started.
struct Progress {
  uint64_t next = 0;            // absolute offset of the next wanted byte
  std::optional<uint64_t> end;  // absolute offset after the last wanted byte
  uint64_t delivered = 0;       // bytes handed to the sink
  bool started = false;         // a 2xx body began; status and headers below
  long status = 0;
  std::vector<Header> headers;
  std::string etag;
  std::optional<uint64_t> total;  // size of the whole resource, once known
};

// One exchange with the server (one curl_easy_perform).
struct Attempt {
  Progress* progress = nullptr;
  const std::function<bool(std::string_view)>* sink = nullptr;
  bool head = false;
  bool range_sent = false;
  uint64_t range_first = 0;  // the first byte asked in the Range header
  size_t error_body_cap = std::numeric_limits<size_t>::max();

  long status = 0;
  std::vector<Header> headers;
  bool decided = false;
  enum class Mode { kBody, kErrorBody, kDiscard } mode = Mode::kDiscard;
  uint64_t pos = 0;       // absolute offset of the next incoming body byte
  uint64_t received = 0;  // body bytes of this response
  std::optional<uint64_t> content_length;
  std::string error_body;
  bool sink_refused = false;
  bool finished_early = false;  // stopped reading once every wanted byte was in
  Status fatal;                 // a final error found inside a callback

  // Idle detection: libcurl's own low-speed check averages over a window of
  // several seconds, so it fires seconds late; this one fires within ~1 s.
  long idle_timeout_s = 0;
  bool idle_expired = false;
  std::chrono::steady_clock::time_point last_activity = std::chrono::steady_clock::now();
  curl_off_t last_down = 0, last_up = 0;

  std::string Get(std::string_view name) const { return FindHeader(headers, name); }

  // Runs once the headers are complete: how to treat the body.
  void Decide() {
    decided = true;
    Progress& p = *progress;
    if (!IsSuccess(status)) {
      bool follow = IsRedirectStatus(status) && !Get("Location").empty();
      mode = (follow || IsRetryableStatus(status)) ? Mode::kDiscard : Mode::kErrorBody;
      return;
    }
    mode = Mode::kBody;
    if (head) return;
    content_length = ParseUint(Get("Content-Length"));
    std::optional<uint64_t> total;
    if (status == 206) {
      std::string header = Get("Content-Range");
      auto cr = ParseContentRange(header);
      if (!range_sent || !cr) {
        fatal = CorruptError("HTTP 206 without " +
                             std::string(range_sent ? "a valid Content-Range (\"" + header + "\")"
                                                    : "a Range request"));
        return;
      }
      if (cr->first != range_first) {
        fatal = CorruptError("asked for bytes from " + std::to_string(range_first) +
                             ", got Content-Range \"" + header + "\"");
        return;
      }
      pos = cr->first;
      total = cr->total;
      if (!total && !p.end) p.end = cr->last + 1;
    } else {
      pos = 0;
      total = content_length;
    }
    std::string etag = Get("ETag");
    if (p.started && ((!p.etag.empty() && !etag.empty() && etag != p.etag) ||
                      (p.total && total && *p.total != *total))) {
      fatal = Status(Code::kUnavailable, "the resource changed while being read (other " +
                                             std::string(etag != p.etag ? "ETag" : "size") + ")");
      return;
    }
    if (total) {
      p.total = total;
      p.end = std::min(p.end.value_or(*total), *total);
    }
    if (!p.started) {
      p.started = true;
      p.status = status;
      p.headers = headers;
      p.etag = etag;
    }
  }

  size_t OnBody(const char* data, size_t n) {
    if (!decided) Decide();
    if (!fatal.ok()) return 0;
    if (mode == Mode::kDiscard) {
      received += n;
      return n;
    }
    if (mode == Mode::kErrorBody) {
      received += n;
      error_body.append(data,
                        std::min(n, error_body_cap - std::min(error_body_cap, error_body.size())));
      return n;
    }
    Progress& p = *progress;
    uint64_t first = pos;
    pos += n;
    received += n;
    if (first > p.next) {  // cannot happen: Decide() checked where the body starts
      fatal = InternalError("gap in the body at offset " + std::to_string(p.next));
      return 0;
    }
    uint64_t lo = p.next;
    uint64_t hi = std::min(pos, p.end.value_or(std::numeric_limits<uint64_t>::max()));
    if (lo < hi) {
      if (!(*sink)(std::string_view(data + (lo - first), hi - lo))) {
        sink_refused = true;
        return 0;
      }
      p.next = hi;
      p.delivered += hi - lo;
    }
    if (p.end && p.next >= *p.end && (!content_length || received < *content_length)) {
      // Every wanted byte is in (a 200 answering a ranged request): stop
      // instead of downloading the rest of the resource.
      finished_early = true;
      return 0;
    }
    return n;
  }

  static size_t WriteCallback(char* data, size_t size, size_t nmemb, void* self) {
    return static_cast<Attempt*>(self)->OnBody(data, size * nmemb);
  }

  // Called often while bytes flow, about once a second when none do.
  static int ProgressCallback(void* self, curl_off_t, curl_off_t down, curl_off_t, curl_off_t up) {
    auto* a = static_cast<Attempt*>(self);
    auto now = std::chrono::steady_clock::now();
    if (down != a->last_down || up != a->last_up) {
      a->last_down = down;
      a->last_up = up;
      a->last_activity = now;
      return 0;
    }
    if (a->idle_timeout_s > 0 &&
        now - a->last_activity >= std::chrono::seconds(a->idle_timeout_s)) {
      a->idle_expired = true;
      return 1;  // CURLE_ABORTED_BY_CALLBACK
    }
    return 0;
  }

  static size_t HeaderCallback(char* data, size_t size, size_t nmemb, void* self) {
    auto* a = static_cast<Attempt*>(self);
    size_t n = size * nmemb;
    a->last_activity = std::chrono::steady_clock::now();
    std::string_view line(data, n);
    if (line.substr(0, 5) == "HTTP/") {
      // A new response (after 1xx): start over.
      a->headers.clear();
      a->status = 0;
      size_t sp = line.find(' ');
      if (sp != std::string_view::npos) {
        std::string_view code = line.substr(sp + 1, 3);
        a->status = static_cast<long>(ParseUint(code).value_or(0));
      }
      return n;
    }
    std::string_view trimmed = Trim(line);
    if (trimmed.empty()) return n;  // end of a header block
    if ((line.front() == ' ' || line.front() == '\t') && !a->headers.empty()) {
      a->headers.back().value += " ";
      a->headers.back().value += trimmed;  // obsolete line folding
      return n;
    }
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) return n;
    a->headers.push_back(Header{std::string(Trim(line.substr(0, colon))),
                                std::string(Trim(line.substr(colon + 1)))});
    return n;
  }
};

bool IsRetryableCurlCode(CURLcode rc) {
  switch (rc) {
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_HTTP3:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_AGAIN:
      return true;
    default:
      return false;
  }
}

// A short reason for a failed transfer, without URL parts.
std::string DescribeCurlError(CURLcode rc, long os_errno, std::string detail,
                              const std::string& query) {
  if (!query.empty()) {
    for (size_t at; (at = detail.find(query)) != std::string::npos;) detail.erase(at, query.size());
  }
  if (detail.empty()) detail = curl_easy_strerror(rc);
  switch (rc) {
    case CURLE_COULDNT_CONNECT:
      return "cannot connect (" + detail + ")";
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
      return "cannot resolve (" + detail + ")";
    case CURLE_OPERATION_TIMEDOUT:
      return "timed out (" + detail + ")";
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
      if (os_errno == ECONNRESET || detail.find("reset") != std::string::npos) {
        return "connection reset";
      }
      return "connection failed (" + detail + ")";
    case CURLE_PARTIAL_FILE:
      return "truncated body (" + detail + ")";
    case CURLE_GOT_NOTHING:
      return "empty reply from server";
    default:
      return detail;
  }
}

std::string QueryOf(const std::string& url) {
  size_t q = url.find('?');
  if (q == std::string::npos) return "";
  size_t hash = url.find('#', q);
  return url.substr(q + 1, hash == std::string::npos ? std::string::npos : hash - q - 1);
}

}  // namespace

std::string Response::Get(std::string_view name) const { return FindHeader(headers, name); }

std::string RedactUrl(std::string_view url) {
  size_t cut = url.find_first_of("?#");
  if (cut != std::string_view::npos) url = url.substr(0, cut);
  size_t scheme_end = url.find("://");
  size_t authority = scheme_end == std::string_view::npos ? 0 : scheme_end + 3;
  size_t path = url.find('/', authority);
  std::string_view auth = url.substr(
      authority, path == std::string_view::npos ? std::string_view::npos : path - authority);
  size_t at = auth.rfind('@');
  std::string out(url.substr(0, authority));
  out += at == std::string_view::npos ? auth : auth.substr(at + 1);
  if (path != std::string_view::npos) out += url.substr(path);
  return out;
}

std::optional<long> RetryAfterSeconds(std::string_view value, std::time_t now) {
  value = Trim(value);
  if (value.empty()) return std::nullopt;
  if (value.find_first_not_of("0123456789") == std::string_view::npos) {
    auto v = ParseUint(value);
    constexpr uint64_t kMax = std::numeric_limits<long>::max();
    return static_cast<long>(std::min(v.value_or(kMax), kMax));
  }
  std::string text(value);
  std::time_t when = curl_getdate(text.c_str(), nullptr);
  if (when == -1) return std::nullopt;
  return when > now ? static_cast<long>(when - now) : 0L;
}

// The client's metrics, labelled with Options::metrics_backend (the source
// type, never a URL). Exchange counters by method and status class are
// registered on first use and kept.
class ClientMetrics {
 public:
  explicit ClientMetrics(std::string backend)
      : backend_(std::move(backend)),
        retries_(metrics::Global().GetCounter(
            "buildcachefs_http_retries_total",
            "HTTP attempts that failed transiently and were tried again, by backend.",
            {{"backend", backend_}})),
        errors_(metrics::Global().GetCounter(
            "buildcachefs_http_errors_total",
            "HTTP requests that failed for good (after their retries), by backend.",
            {{"backend", backend_}})),
        received_(metrics::Global().GetCounter(
            "buildcachefs_http_received_bytes_total",
            "Response body bytes received over HTTP, by backend.", {{"backend", backend_}})),
        latency_(metrics::Global().GetHistogram(
            "buildcachefs_http_exchange_duration_seconds",
            "Time of one HTTP exchange (one attempt or redirect hop), by backend.",
            metrics::LatencyBuckets(), {{"backend", backend_}})) {}

  // One exchange: `status` 0 when no HTTP answer came.
  void Exchange(std::string_view method, long status, uint64_t body_bytes,
                std::chrono::steady_clock::time_point start) {
    static constexpr std::string_view kMethods[] = {"GET", "HEAD", "POST", "PUT", "DELETE"};
    size_t m = 0;
    while (m + 1 < std::size(kMethods) && kMethods[m] != method) ++m;
    const size_t cls = status >= 100 && status < 600 ? static_cast<size_t>(status / 100) : 0;
    std::atomic<metrics::Counter*>& slot = exchanges_[m * 6 + cls];
    metrics::Counter* c = slot.load(std::memory_order_acquire);
    if (c == nullptr) {
      c = metrics::Global().GetCounter(
          "buildcachefs_http_requests_total",
          "HTTP exchanges (attempts and redirect hops), by backend, method and status class "
          "(\"error\": no HTTP answer).",
          {{"backend", backend_},
           {"method", std::string(kMethods[m])},
           {"code", cls == 0 ? "error" : std::to_string(cls) + "xx"}});
      slot.store(c, std::memory_order_release);
    }
    c->Inc();
    received_->Inc(body_bytes);
    latency_->ObserveSince(start);
  }
  void Retry() { retries_->Inc(); }
  void Error() { errors_->Inc(); }

 private:
  const std::string backend_;
  metrics::Counter* const retries_;
  metrics::Counter* const errors_;
  metrics::Counter* const received_;
  metrics::Histogram* const latency_;
  std::array<std::atomic<metrics::Counter*>, 5 * 6> exchanges_{};
};

class Client::Impl {
 public:
  explicit Impl(Options o) : opts(std::move(o)), metrics(opts.metrics_backend) {
    GlobalInit();
    share_ = curl_share_init();
    BCFS_CHECK(share_ != nullptr);
    curl_share_setopt(share_, CURLSHOPT_LOCKFUNC, &Impl::Lock);
    curl_share_setopt(share_, CURLSHOPT_UNLOCKFUNC, &Impl::Unlock);
    curl_share_setopt(share_, CURLSHOPT_USERDATA, this);
    curl_share_setopt(share_, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(share_, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    if (!opts.ca_file.empty()) LoadCaBundle();
  }

  ~Impl() {
    for (CURL* h : pool_) curl_easy_cleanup(h);
    curl_share_cleanup(share_);
  }

  CURL* Acquire() {
    {
      std::lock_guard<std::mutex> lock(pool_mu_);
      if (!pool_.empty()) {
        CURL* h = pool_.back();
        pool_.pop_back();
        return h;
      }
    }
    CURL* h = curl_easy_init();
    BCFS_CHECK(h != nullptr);
    // Kept across curl_easy_reset().
    curl_easy_setopt(h, CURLOPT_SHARE, share_);
    return h;
  }

  void Release(CURL* h) {
    // Keeps the handle's live connections for the next request.
    curl_easy_reset(h);
    {
      std::lock_guard<std::mutex> lock(pool_mu_);
      if (pool_.size() < kMaxPooledHandles) {
        pool_.push_back(h);
        return;
      }
    }
    curl_easy_cleanup(h);
  }

  // The options every request shares.
  void Configure(CURL* h) const {
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_2TLS));
    curl_easy_setopt(h, CURLOPT_USERAGENT, opts.user_agent.c_str());
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, opts.connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, opts.verify_tls ? 1L : 0L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, opts.verify_tls ? 2L : 0L);
    if (!ca_blob_.empty()) {
      curl_blob blob{const_cast<char*>(ca_blob_.data()), ca_blob_.size(), CURL_BLOB_NOCOPY};
      curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &blob);
    }
    if (!opts.ca_path.empty()) curl_easy_setopt(h, CURLOPT_CAPATH, opts.ca_path.c_str());
    curl_easy_setopt(h, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_BUFFERSIZE, kBufferSize);
  }

  const Options opts;
  ClientMetrics metrics;
  Status init_status;  // a bad ca_file: every request fails with it

 private:
  // ca_file is trusted in addition to the system store: libcurl would use it
  // instead, so both go into one in-memory bundle.
  void LoadCaBundle() {
    bool ok = false;
    std::string extra = ReadFile(opts.ca_file, &ok);
    if (!ok || extra.empty()) {
      init_status = InvalidArgumentError("cannot read the CA bundle ca_file=" + opts.ca_file);
      return;
    }
    std::string system;
    CURL* h = curl_easy_init();
    BCFS_CHECK(h != nullptr);
    char* default_ca = nullptr;
    if (curl_easy_getinfo(h, CURLINFO_CAINFO, &default_ca) == CURLE_OK && default_ca != nullptr) {
      bool sys_ok = false;
      system = ReadFile(default_ca, &sys_ok);
      if (!sys_ok) system.clear();
    }
    curl_easy_cleanup(h);
    ca_blob_ = system + "\n" + extra;
  }

  static void Lock(CURL*, curl_lock_data data, curl_lock_access, void* self) {
    static_cast<Impl*>(self)->share_mu_[data % CURL_LOCK_DATA_LAST].lock();
  }
  static void Unlock(CURL*, curl_lock_data data, void* self) {
    static_cast<Impl*>(self)->share_mu_[data % CURL_LOCK_DATA_LAST].unlock();
  }

  CURLSH* share_ = nullptr;
  std::string ca_blob_;
  std::mutex share_mu_[CURL_LOCK_DATA_LAST];
  std::mutex pool_mu_;
  std::vector<CURL*> pool_;  // GUARDED_BY(pool_mu_)
};

Client::Client(Options opts) : impl_(std::make_unique<Impl>(std::move(opts))) {}
Client::~Client() = default;

Result<Response> Client::Do(const Request& req) {
  Result<Response> r = Execute(req, nullptr, /*streaming=*/false);
  if (!r.ok()) impl_->metrics.Error();
  return r;
}

Result<Response> Client::Stream(const Request& req,
                                const std::function<bool(std::string_view)>& sink) {
  Result<Response> r = Execute(req, sink, /*streaming=*/true);
  if (!r.ok()) impl_->metrics.Error();
  return r;
}

Result<Response> Client::Execute(const Request& req,
                                 const std::function<bool(std::string_view)>& user_sink,
                                 bool streaming) {
  const Options& opts = impl_->opts;
  std::string method = req.method;
  std::string url = req.url;
  std::string body = req.body;
  std::vector<Header> headers = req.headers;
  int failures = 0, redirects = 0;
  auto fail = [&](Status s) {
    std::string where = method + " " + RedactUrl(url);
    if (redirects > 0) where += " (redirected from " + RedactUrl(req.url) + ")";
    return s.WithContext(where);
  };

  if (method != "GET" && method != "HEAD" && method != "POST" && method != "PUT" &&
      method != "DELETE") {
    return fail(InvalidArgumentError("unsupported HTTP method"));
  }
  if (HasHeader(headers, "Range")) {
    return fail(InvalidArgumentError("pass a byte range as Request::range, not as a header"));
  }
  if (req.range && req.range->first > req.range->second) {
    return fail(InvalidArgumentError("empty byte range"));
  }
  if (!impl_->init_status.ok()) return fail(impl_->init_status);
  auto origin = OriginOf(url);
  if (!origin.ok()) return fail(origin.status());

  std::string collected;  // Do(): the 2xx body
  const std::function<bool(std::string_view)> collect = [&collected](std::string_view bytes) {
    collected.append(bytes);
    return true;
  };
  const std::function<bool(std::string_view)>& sink = streaming ? user_sink : collect;

  Progress progress;
  auto reset_progress = [&] {
    progress = Progress();
    if (req.range) {
      progress.next = req.range->first;
      progress.end = req.range->second + 1;
    }
  };
  reset_progress();

  const int max_attempts = std::max(opts.max_attempts, 1);
  for (;;) {
    bool resuming = progress.delivered > 0;
    if (resuming && method != "GET") {
      if (streaming) {
        return fail(Status(Code::kUnavailable,
                           "transfer failed after " + std::to_string(progress.delivered) +
                               " bytes and a " + method + " cannot be resumed"));
      }
      collected.clear();
      reset_progress();
      resuming = false;
    }

    Attempt a;
    a.progress = &progress;
    a.sink = &sink;
    a.head = method == "HEAD";
    if (streaming) a.error_body_cap = kMaxStreamErrorBody;
    a.idle_timeout_s = opts.idle_timeout_s;
    std::string range_header;
    if (resuming || req.range) {
      a.range_sent = true;
      a.range_first = progress.next;
      range_header = "Range: bytes=" + std::to_string(progress.next) + "-" +
                     (progress.end ? std::to_string(*progress.end - 1) : "");
    }

    std::string attempt_url = url;
    std::vector<Header> attempt_headers = headers;
    if (req.sign && redirects == 0) {
      Request signed_req;
      signed_req.method = method;
      signed_req.url = url;
      signed_req.headers = headers;
      signed_req.body = body;
      if (a.range_sent && progress.end) {
        signed_req.range = std::make_pair(progress.next, *progress.end - 1);
      }
      Status st = req.sign(signed_req);
      if (!st.ok()) return fail(st);
      attempt_url = std::move(signed_req.url);
      attempt_headers = std::move(signed_req.headers);
    }

    curl_slist* list = nullptr;
    for (const Header& h : attempt_headers) {
      std::string line = h.name + (h.value.empty() ? ";" : ": " + h.value);
      list = curl_slist_append(list, line.c_str());
    }
    if (!range_header.empty()) list = curl_slist_append(list, range_header.c_str());
    list = curl_slist_append(list, "Expect:");
    if (!body.empty() && !HasHeader(headers, "Content-Type")) {
      list = curl_slist_append(list, "Content-Type:");
    }

    CURL* h = impl_->Acquire();
    impl_->Configure(h);
    char errbuf[CURL_ERROR_SIZE] = {0};
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_URL, attempt_url.c_str());
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, &Attempt::HeaderCallback);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &a);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &Attempt::WriteCallback);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &a);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, &Attempt::ProgressCallback);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, &a);
    if (method == "HEAD") {
      curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (method == "GET") {
      curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    } else {
      if (method != "POST") curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method.c_str());
      if (method != "DELETE" || !body.empty()) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.data());
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
      }
    }

    const auto started = std::chrono::steady_clock::now();
    CURLcode rc = curl_easy_perform(h);
    long os_errno = 0;
    curl_easy_getinfo(h, CURLINFO_OS_ERRNO, &os_errno);
    if (a.status == 0) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &a.status);
    impl_->Release(h);
    curl_slist_free_all(list);
    attempts_.fetch_add(1);
    impl_->metrics.Exchange(method, a.status, a.received, started);

    if (rc == CURLE_WRITE_ERROR && a.finished_early) rc = CURLE_OK;
    if (rc == CURLE_OK && !a.decided) a.Decide();
    if (!a.fatal.ok()) return fail(a.fatal);
    if (a.sink_refused) {
      return fail(Status(Code::kIo, "the receiver stopped the transfer after " +
                                        std::to_string(progress.delivered) + " bytes"));
    }

    std::string cause;
    long cause_status = 0;
    std::optional<long> retry_after;
    if (rc != CURLE_OK) {
      std::string detail = DescribeCurlError(rc, os_errno, errbuf, QueryOf(url));
      if (rc == CURLE_ABORTED_BY_CALLBACK && a.idle_expired) {
        rc = CURLE_OPERATION_TIMEDOUT;
        detail = "timed out (no data for " + std::to_string(opts.idle_timeout_s) + " s)";
      }
      if (rc == CURLE_PEER_FAILED_VERIFICATION) {
        auto o = OriginOf(url);
        return fail(Status(Code::kUnavailable,
                           "TLS verification failed for host " + (o.ok() ? o->host : "?") + " (" +
                               detail +
                               "); if it uses a private CA, give its PEM bundle as ca_file "
                               "(or a hashed directory as ca_path)"));
      }
      if (rc == CURLE_SSL_CACERT_BADFILE) {
        return fail(InvalidArgumentError("cannot use the CA bundle (ca_file/ca_path): " + detail));
      }
      if (!IsRetryableCurlCode(rc)) return fail(Status(Code::kUnavailable, detail));
      cause = detail;
    } else if (IsRetryableStatus(a.status)) {
      cause = "HTTP " + std::to_string(a.status);
      cause_status = a.status;
      std::string ra = a.Get("Retry-After");
      if (!ra.empty()) retry_after = RetryAfterSeconds(ra, std::time(nullptr));
    } else if (IsSuccess(a.status) && !a.head) {
      if (a.content_length && a.received < *a.content_length && !a.finished_early) {
        cause = "truncated body (" + std::to_string(a.received) + " of " +
                std::to_string(*a.content_length) + " bytes)";
      } else if (progress.end && progress.next < *progress.end) {
        cause = "short body (ended at byte " + std::to_string(progress.next) + " of " +
                std::to_string(*progress.end) + ")";
      }
    }

    if (!cause.empty()) {
      ++failures;
      if (failures >= max_attempts) {
        return fail(Status(Code::kUnavailable,
                           cause + " (gave up after " + std::to_string(failures) + " attempts)",
                           static_cast<int>(cause_status)));
      }
      long wait_ms = retry_after ? std::min(*retry_after, opts.max_retry_after_s) * 1000
                                 : BackoffMs(opts, failures);
      LOG_INFO(method << " " << RedactUrl(url) << ": " << cause << "; retry " << failures << " of "
                      << (max_attempts - 1) << " in " << wait_ms << " ms"
                      << (progress.delivered > 0 ? " from byte " + std::to_string(progress.next)
                                                 : std::string()));
      retries_.fetch_add(1);
      impl_->metrics.Retry();
      if (wait_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms));
      continue;
    }

    if (IsRedirectStatus(a.status) && !a.Get("Location").empty()) {
      if (++redirects > kMaxRedirects) {
        return fail(Status(Code::kUnavailable,
                           "too many redirects (more than " + std::to_string(kMaxRedirects) + ")",
                           static_cast<int>(a.status)));
      }
      auto next = ResolveLocation(url, a.Get("Location"));
      if (!next.ok()) return fail(next.status());
      auto next_origin = OriginOf(*next);
      if (!next_origin.ok()) return fail(next_origin.status());
      if (!(*next_origin == *origin)) {
        // Registries redirect blob GETs to storage with signed URLs: their
        // credentials must not follow.
        std::erase_if(headers, [](const Header& h) { return IEquals(h.name, "Authorization"); });
      }
      if (a.status == 303 && method != "HEAD") {
        method = "GET";
        body.clear();
        std::erase_if(headers, [](const Header& h) { return IEquals(h.name, "Content-Type"); });
      }
      LOG_DEBUG(method << " " << RedactUrl(url) << ": HTTP " << a.status << " to "
                       << RedactUrl(*next));
      url = std::move(*next);
      origin = std::move(next_origin);
      continue;
    }

    if (progress.delivered > 0 && !IsSuccess(a.status)) {
      return fail(Status(Code::kUnavailable,
                         "HTTP " + std::to_string(a.status) + " after " +
                             std::to_string(progress.delivered) + " bytes were received",
                         static_cast<int>(a.status)));
    }

    Response resp;
    resp.url = url;
    if (progress.started && IsSuccess(a.status)) {
      resp.status = progress.status;
      resp.headers = std::move(progress.headers);
      resp.body = std::move(collected);
    } else {
      resp.status = a.status;
      resp.headers = std::move(a.headers);
      resp.body = IsSuccess(a.status) ? std::move(collected) : std::move(a.error_body);
    }
    LOG_DEBUG(method << " " << RedactUrl(url) << ": HTTP " << resp.status);
    return resp;
  }
}

}  // namespace bcfs::http
