// HTTP client for the remote backends: the only libcurl user (DESIGN.md §4).
//
// One Client serves every request of a process or of a backend. It reuses
// connections (a pool of libcurl easy handles, each keeping its live
// connections, plus a share of the DNS cache and TLS sessions), speaks HTTP/2
// where the server offers it over TLS, takes proxies from the standard
// variables (http_proxy, https_proxy, no_proxy; libcurl's rules), verifies TLS
// by default, follows redirects itself (so that Authorization never leaves its
// host) and retries transient failures with exponential backoff and full
// jitter. A retry goes to the URL that failed (after redirects: a signed
// storage URL, not the registry again). A GET that fails after part of the
// body arrived is resumed with a Range request, so a consumer sees every byte
// exactly once and in order. Errors name the method and the URL that failed
// (plus the original one after a redirect).
//
// What is retried: connect errors, timeouts (connect, or no byte for
// idle_timeout_s), resets, empty replies, truncated bodies (fewer bytes than
// Content-Length or than the Content-Range promised), TLS handshake errors
// other than verification, HTTP 5xx and 429 (waiting for Retry-After, capped
// at max_retry_after_s). Everything else is final: any other status is
// returned as a Response; TLS verification failures, malformed requests and a
// sink that refuses bytes are errors at once.
//
// Secrets: header values (Authorization!) and query strings (signed URLs)
// never appear in the log or in an error. URLs in messages go through
// RedactUrl().
//
// Thread-safety: Client is thread-safe; any number of threads may call Do()
// and Stream() at once (each call uses its own easy handle from the pool). A
// Stream() sink runs on the calling thread. Request, Response and Options are
// plain values.
#pragma once

#include <atomic>
#include <cstdint>
#include <ctime>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/status.h"

namespace bcfs::http {

struct Header {
  std::string name, value;
};

struct Request {
  std::string method = "GET";  // GET, HEAD, POST, PUT, DELETE
  std::string url;             // http:// or https://
  // Sent as given (e.g. Authorization, Accept). Do not put a Range header
  // here: use `range` (the client must know it to resume); one is refused.
  std::vector<Header> headers;
  // Inclusive [first, last], sent as "Range: bytes=first-last".
  std::optional<std::pair<uint64_t, uint64_t>> range;
  std::string body;  // sent for POST and PUT (and DELETE when not empty)
  // Signs each attempt afresh, for signatures that cover the Range header
  // (Azure Shared Key): a resume asks from the next byte and needs its own.
  // When set, it is called before every attempt to the request's own URL
  // (not after a redirect) with a copy of this request whose `range` is what
  // that attempt asks for (nullopt for none, or for an open-ended resume of
  // an unranged GET, which then goes unsigned); the attempt sends the URL
  // and headers it leaves there. An error ends the request.
  std::function<Status(Request&)> sign;
};

struct Response {
  long status = 0;
  // Of the final response after redirects. When a transfer was resumed, the
  // status and headers are those of the response that started the body (so
  // a plain GET still reads 200 with its Content-Length).
  std::vector<Header> headers;
  // Do(): the whole body. Stream(): empty for 2xx (the bytes went to the
  // sink); for other statuses the error document, at most 1 MiB.
  std::string body;
  std::string url;  // final URL after redirects (with its query string)

  // Case-insensitive; the last value when repeated; "" when absent.
  std::string Get(std::string_view name) const;
};

struct Options {
  // Extra CA bundle (PEM file) or hashed CA directory, trusted in addition
  // to the system store. Use them for a registry with a private CA.
  std::string ca_file, ca_path;
  bool verify_tls = true;  // TLS verification is ON by default
  long connect_timeout_ms = 10000;
  // Abort (and retry) when no byte moves either way this long; 0: never.
  // Checked about once a second (libcurl's CURLOPT_LOW_SPEED_* averages over
  // a window of seconds and would fire several seconds late).
  long idle_timeout_s = 30;
  // Failed attempts allowed per request, the first included; redirects are
  // not attempts of their own.
  int max_attempts = 5;
  // Backoff before retry n: uniform in [0, min(max, base * 2^(n-1))] ms.
  long base_backoff_ms = 200, max_backoff_ms = 10000;
  long max_retry_after_s = 60;  // cap on a server's Retry-After
  std::string user_agent = "buildcachefs/0.1";
  // The `backend` label of this client's metrics (core/metrics.h): the
  // source type ("registry", "s3", ...), never a URL or anything secret.
  std::string metrics_backend = "other";
};

class Client {
 public:
  explicit Client(Options opts = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Sends `req`, following redirects and retrying as the header paragraph
  // says. Returns the final Response for any status that is not retried
  // (2xx, 3xx without Location, 4xx but 429; 2xx bodies are complete: a
  // truncated one is retried). With `range`, body holds exactly the asked
  // bytes (clamped to the end of the resource) whether the server answered
  // 206 or ignored the range with 200.
  // Errors: kInvalidArgument for a malformed request (method, URL, Range
  // header, unreadable ca_file); kUnavailable once the retry budget is spent
  // ("GET http://host/path: HTTP 503 (gave up after 5 attempts)"; foreign() =
  // the last HTTP status or 0), on TLS verification failure, too many
  // redirects, or a non-2xx answer after part of the body was delivered;
  // kCorrupt when a 206 does not carry the asked Content-Range.
  Result<Response> Do(const Request& req);

  // As Do(), but a 2xx body goes to `sink` as it arrives, every byte exactly
  // once and in order, across retries (resumed with Range from the next byte;
  // a 200 to a resumed or ranged request is cut to the wanted bytes). Not
  // called for other statuses. `sink` returning false stops the transfer with
  // a kIo error saying so (not retried). A resumed transfer whose resource
  // changed (other ETag or size) fails with kUnavailable.
  Result<Response> Stream(const Request& req, const std::function<bool(std::string_view)>& sink);

  // For tests and metrics: exchanges attempted (redirect hops included) and
  // retries done since construction.
  uint64_t attempts() const { return attempts_.load(); }
  uint64_t retries() const { return retries_.load(); }

 private:
  class Impl;
  Result<Response> Execute(const Request& req, const std::function<bool(std::string_view)>& sink,
                           bool streaming);

  std::unique_ptr<Impl> impl_;
  std::atomic<uint64_t> attempts_{0};
  std::atomic<uint64_t> retries_{0};
};

// "scheme://host[:port]/path" of `url`: user info, query and fragment removed.
// Use it whenever a URL goes into a log line or an error.
std::string RedactUrl(std::string_view url);

// Seconds to wait for a Retry-After value (delta-seconds or HTTP-date,
// RFC 9110 §10.2.3) at time `now`; a date in the past gives 0; nullopt when
// the value is not valid.
std::optional<long> RetryAfterSeconds(std::string_view value, std::time_t now);

}  // namespace bcfs::http
