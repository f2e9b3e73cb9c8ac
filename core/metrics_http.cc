#include "core/metrics_http.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <string_view>
#include <system_error>

#include "core/log.h"
#include "core/metrics.h"

namespace bcfs::metrics {
namespace {

constexpr size_t kMaxRequest = 8192;
constexpr int kClientTimeoutMs = 5000;

bool SendAll(int fd, std::string_view s) {
  while (!s.empty()) {
    ssize_t n = ::send(fd, s.data(), s.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    s.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

std::string Reply(std::string_view status, std::string_view content_type, const std::string& body,
                  bool head, std::string_view extra_headers = {}) {
  std::string out = "HTTP/1.1 " + std::string(status) + "\r\n";
  out += "Content-Type: " + std::string(content_type) + "\r\n";
  out += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  out += extra_headers;
  out += "Connection: close\r\n\r\n";
  if (!head) out += body;
  return out;
}

// HOST:PORT as a socket address.
Status ParseAddress(const std::string& addr, sockaddr_storage* ss, socklen_t* len) {
  auto bad = [&addr](std::string_view why) {
    return InvalidArgumentError("metrics address \"" + addr + "\": " + std::string(why) +
                                " (want HOST:PORT with an IP address or localhost)");
  };
  const size_t colon = addr.rfind(':');
  if (colon == std::string::npos) return bad("no port");
  if (colon == 0) return bad("no host");
  std::string host = addr.substr(0, colon);
  const std::string port_text = addr.substr(colon + 1);
  if (port_text.empty() || port_text.size() > 5 ||
      port_text.find_first_not_of("0123456789") != std::string::npos ||
      std::stoul(port_text) > 65535) {
    return bad("bad port");
  }
  const auto port = static_cast<uint16_t>(std::stoul(port_text));
  *ss = sockaddr_storage{};
  if (host == "localhost") host = "127.0.0.1";
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    auto* a6 = reinterpret_cast<sockaddr_in6*>(ss);
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons(port);
    if (::inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), &a6->sin6_addr) != 1) {
      return bad("not an IPv6 address");
    }
    *len = sizeof *a6;
  } else {
    auto* a4 = reinterpret_cast<sockaddr_in*>(ss);
    a4->sin_family = AF_INET;
    a4->sin_port = htons(port);
    if (::inet_pton(AF_INET, host.c_str(), &a4->sin_addr) != 1) return bad("not an IP address");
    *len = sizeof *a4;
  }
  return OkStatus();
}

}  // namespace

Status ValidateListenAddress(const std::string& addr) {
  sockaddr_storage ss;
  socklen_t len;
  return ParseAddress(addr, &ss, &len);
}

Result<std::unique_ptr<HttpServer>> HttpServer::Start(const std::string& addr,
                                                      std::function<std::string()> render) {
  sockaddr_storage ss{};
  socklen_t len = 0;
  BCFS_RETURN_IF_ERROR(ParseAddress(addr, &ss, &len));
  const size_t colon = addr.rfind(':');
  const int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return ErrnoError(errno, "metrics socket");
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (ss.ss_family == AF_INET6) ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || ::listen(fd, 16) != 0) {
    const int err = errno;
    ::close(fd);
    return ErrnoError(err, "listen for metrics on " + addr);
  }
  sockaddr_storage bound{};
  socklen_t blen = sizeof bound;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &blen);
  const uint16_t got =
      ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                        : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  int wake[2];
  if (::pipe2(wake, O_CLOEXEC | O_NONBLOCK) != 0) {
    const int err = errno;
    ::close(fd);
    return ErrnoError(err, "metrics pipe");
  }
  std::unique_ptr<HttpServer> server(new HttpServer(fd, wake, got, std::move(render)));
  // The thread must not take SIGTERM/SIGINT/SIGHUP from the threads that
  // wait for them.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  Status st;
  try {
    server->thread_ = std::thread([s = server.get()] { s->Run(); });
  } catch (const std::system_error& e) {
    st = InternalError(std::string("start the metrics thread: ") + e.what());
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (!st.ok()) return st;
  LOG_INFO("serving metrics on http://" << addr.substr(0, colon) << ":" << got << "/metrics");
  return server;
}

HttpServer::HttpServer(int listen_fd, int wake_fd[2], uint16_t port,
                       std::function<std::string()> render)
    : listen_fd_(listen_fd),
      wake_{wake_fd[0], wake_fd[1]},
      port_(port),
      render_(std::move(render)) {}

HttpServer::~HttpServer() {
  Stop();
  ::close(wake_[0]);
  ::close(wake_[1]);
}

void HttpServer::Stop() {
  if (thread_.joinable()) {
    const char c = 'q';
    while (::write(wake_[1], &c, 1) < 0 && errno == EINTR) {
    }
    thread_.join();
  }
  // Closed here, not at destruction: once stopped, connecting is refused
  // rather than left waiting in the backlog.
  if (listen_fd_ >= 0) ::close(listen_fd_);
  listen_fd_ = -1;
}

void HttpServer::Run() {
  while (true) {
    pollfd p[2] = {{wake_[0], POLLIN, 0}, {listen_fd_, POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      LOG_ERROR("metrics listener: poll: " << std::strerror(errno));
      return;
    }
    if (p[0].revents != 0) return;
    if ((p[1].revents & POLLIN) == 0) continue;
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;  // EAGAIN (the client left), EMFILE: try again later
    Serve(fd);
    ::close(fd);
  }
}

void HttpServer::Serve(int fd) {
  std::string req;
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(kClientTimeoutMs);
  while (req.find("\r\n\r\n") == std::string::npos) {
    if (req.size() > kMaxRequest) {
      SendAll(fd, Reply("400 Bad Request", "text/plain", "request too large\n", false));
      return;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) return;
    // The stop pipe is watched too: a silent client must not hold up Stop().
    pollfd p[2] = {{fd, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    if (::poll(p, 2, static_cast<int>(left)) <= 0 || p[1].revents != 0) return;
    char buf[2048];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return;
    req.append(buf, static_cast<size_t>(n));
  }
  const std::string line = req.substr(0, req.find("\r\n"));
  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == std::string::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string::npos || line.compare(sp2 + 1, 5, "HTTP/") != 0) {
    SendAll(fd, Reply("400 Bad Request", "text/plain", "malformed request line\n", false));
    return;
  }
  const std::string method = line.substr(0, sp1);
  std::string path = line.substr(sp1 + 1, sp2 - sp1 - 1);
  if (size_t q = path.find('?'); q != std::string::npos) path.resize(q);
  const bool head = method == "HEAD";
  if (method != "GET" && !head) {
    SendAll(fd, Reply("405 Method Not Allowed", "text/plain", "only GET and HEAD\n", false,
                      "Allow: GET, HEAD\r\n"));
    return;
  }
  if (path != "/metrics") {
    SendAll(fd, Reply("404 Not Found", "text/plain", "not found; try /metrics\n", head));
    return;
  }
  SendAll(fd, Reply("200 OK", kContentType, render_(), head));
}

}  // namespace bcfs::metrics
