// The `--metrics-addr` listener: a minimal HTTP/1.1 responder for Prometheus
// scrapes. GET (or HEAD) /metrics answers 200 with the text a render function
// returns; any other path 404, any other method 405, a malformed or oversized
// request 400. One connection at a time, each closed after its answer
// (Connection: close); a client that sends nothing for 5 s is dropped.
//
// It binds exactly the address it is given (no wildcard default): an IPv4
// literal, "[IPv6]" literal or "localhost", with a port (0: any free port).
//
// Thread-safety: Start/Stop from one thread; the render function runs on the
// server's own thread (started with every signal blocked, so SIGTERM/SIGHUP
// still reach the thread that expects them).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "core/status.h"

namespace bcfs::metrics {

// OK when `addr` is a HOST:PORT that HttpServer::Start accepts; else its
// kInvalidArgument error.
Status ValidateListenAddress(const std::string& addr);

class HttpServer {
 public:
  // Binds and listens on `addr` ("127.0.0.1:9101", "[::1]:9101",
  // "localhost:9101") and starts the thread. kInvalidArgument naming `addr`
  // when it is malformed, the OS error (e.g. "bind 127.0.0.1:80: Address
  // already in use") when it cannot listen.
  static Result<std::unique_ptr<HttpServer>> Start(const std::string& addr,
                                                   std::function<std::string()> render);
  ~HttpServer();  // Stop()
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Stops the thread and closes the listening socket; idempotent.
  void Stop();
  // The port bound (useful with port 0).
  uint16_t port() const { return port_; }

 private:
  HttpServer(int listen_fd, int wake_fd[2], uint16_t port, std::function<std::string()> render);
  void Run();
  void Serve(int fd);

  int listen_fd_;
  int wake_[2];
  const uint16_t port_;
  const std::function<std::string()> render_;
  std::thread thread_;
};

}  // namespace bcfs::metrics
