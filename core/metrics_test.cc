#include "core/metrics.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>
#include <vector>

#include "core/metrics_http.h"

namespace bcfs::metrics {
namespace {

TEST(Registry, RendersCountersGaugesAndHistogramsInExpositionFormat) {
  Registry r;
  Counter* hits = r.GetCounter("t_hits_total", "Store hits.", {{"source", "app"}});
  Counter* misses = r.GetCounter("t_hits_total", "ignored", {{"source", "base"}});
  hits->Inc();
  hits->Inc(4);
  misses->Inc(2);
  // The same labels give the same child.
  EXPECT_EQ(r.GetCounter("t_hits_total", "", {{"source", "app"}}), hits);
  Gauge* inflight = r.GetGauge("t_in_flight", "Fetches now.");
  inflight->Add(3);
  inflight->Add(-1);
  Histogram* lat = r.GetHistogram("t_seconds", "Latency.", {0.001, 0.5, 2}, {{"op", "read"}});
  lat->Observe(0.0005);
  lat->Observe(0.5);  // on a bound: that bucket
  lat->Observe(0.25);
  lat->Observe(7);
  EXPECT_EQ(r.Render(),
            "# HELP t_hits_total Store hits.\n"
            "# TYPE t_hits_total counter\n"
            "t_hits_total{source=\"app\"} 5\n"
            "t_hits_total{source=\"base\"} 2\n"
            "# HELP t_in_flight Fetches now.\n"
            "# TYPE t_in_flight gauge\n"
            "t_in_flight 2\n"
            "# HELP t_seconds Latency.\n"
            "# TYPE t_seconds histogram\n"
            "t_seconds_bucket{op=\"read\",le=\"0.001\"} 1\n"
            "t_seconds_bucket{op=\"read\",le=\"0.5\"} 3\n"
            "t_seconds_bucket{op=\"read\",le=\"2\"} 3\n"
            "t_seconds_bucket{op=\"read\",le=\"+Inf\"} 4\n"
            "t_seconds_sum{op=\"read\"} 7.7505\n"
            "t_seconds_count{op=\"read\"} 4\n");
}

TEST(Registry, EscapesHelpAndLabelValues) {
  Registry r;
  r.GetCounter("t_total", "a \\ b\nc \"q\"", {{"name", "x\"y\\z\nw"}})->Inc();
  EXPECT_EQ(r.Render(),
            "# HELP t_total a \\\\ b\\nc \"q\"\n"
            "# TYPE t_total counter\n"
            "t_total{name=\"x\\\"y\\\\z\\nw\"} 1\n");
}

TEST(Registry, EmptyRegistryRendersNothingAndUnlabelledHistogramHasOnlyLe) {
  Registry r;
  EXPECT_EQ(r.Render(), "");
  r.GetHistogram("t_bytes", "Sizes.", {1024})->Observe(4096);
  EXPECT_EQ(r.Render(),
            "# HELP t_bytes Sizes.\n"
            "# TYPE t_bytes histogram\n"
            "t_bytes_bucket{le=\"1024\"} 0\n"
            "t_bytes_bucket{le=\"+Inf\"} 1\n"
            "t_bytes_sum 4096\n"
            "t_bytes_count 1\n");
}

TEST(Registry, CollectorSamplesAreAddedUpAndMergedWithRegisteredOnes) {
  Registry r;
  r.GetCounter("t_passes_total", "Passes.")->Inc(1);
  auto collect = [](uint64_t n) {
    return [n](Sink& s) {
      s.Counter("t_passes_total", "Passes.", {}, n);
      s.Gauge("t_open", "Open files.", {{"kind", "blob"}}, 2);
    };
  };
  const uint64_t a = r.AddCollector(collect(10));
  const uint64_t b = r.AddCollector(collect(100));
  EXPECT_EQ(r.Render(),
            "# HELP t_open Open files.\n"
            "# TYPE t_open gauge\n"
            "t_open{kind=\"blob\"} 4\n"
            "# HELP t_passes_total Passes.\n"
            "# TYPE t_passes_total counter\n"
            "t_passes_total 111\n");
  r.RemoveCollector(a);
  r.RemoveCollector(b);
  EXPECT_EQ(r.Render(),
            "# HELP t_passes_total Passes.\n"
            "# TYPE t_passes_total counter\n"
            "t_passes_total 1\n");
}

TEST(Registry, CountsExactlyUnderConcurrentIncrements) {
  Registry r;
  Counter* c = r.GetCounter("t_total", "");
  Histogram* h = r.GetHistogram("t_seconds", "", {1});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        c->Inc();
        h->Observe(0.5);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(c->Value(), 40000u);
  Histogram::Snapshot s = h->Take();
  EXPECT_EQ(s.count, 40000u);
  EXPECT_EQ(s.cumulative, (std::vector<uint64_t>{40000, 40000}));
  EXPECT_DOUBLE_EQ(s.sum, 20000.0);
}

TEST(RegistryDeathTest, RefusesBadNamesAndDisagreeingRegistrations) {
  Registry r;
  EXPECT_DEATH(r.GetCounter("t_hits", ""), "_total");
  EXPECT_DEATH(r.GetGauge("0bad", ""), "ValidName");
  r.GetCounter("t_total", "", {{"a", "1"}});
  EXPECT_DEATH(r.GetCounter("t_total", "", {{"b", "1"}}), "label_names");
  EXPECT_DEATH(r.GetGauge("t_total", ""), "type");
  EXPECT_DEATH(r.GetHistogram("t_h", "", {1}, {{"le", "x"}}), "le");
}

// One request over a fresh connection; returns everything the server sent.
std::string Exchange(uint16_t port, const std::string& request) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return "connect failed";
  }
  ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

TEST(HttpServer, AnswersGetMetricsAnd404ElsewhereThenStops) {
  auto server = HttpServer::Start("127.0.0.1:0", [] { return std::string("m_total 1\n"); });
  ASSERT_TRUE(server.ok()) << server.status().message();
  const uint16_t port = (*server)->port();
  ASSERT_NE(port, 0);
  EXPECT_EQ(Exchange(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            "HTTP/1.1 200 OK\r\n"
            "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
            "Content-Length: 10\r\n"
            "Connection: close\r\n\r\n"
            "m_total 1\n");
  EXPECT_EQ(Exchange(port, "HEAD /metrics?x=1 HTTP/1.0\r\n\r\n"),
            "HTTP/1.1 200 OK\r\n"
            "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
            "Content-Length: 10\r\n"
            "Connection: close\r\n\r\n");
  EXPECT_EQ(Exchange(port, "GET / HTTP/1.1\r\n\r\n"),
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 24\r\n"
            "Connection: close\r\n\r\nnot found; try /metrics\n");
  EXPECT_EQ(Exchange(port, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").substr(0, 32),
            "HTTP/1.1 405 Method Not Allowed\r");
  EXPECT_EQ(Exchange(port, "garbage\r\n\r\n").substr(0, 24), "HTTP/1.1 400 Bad Request");
  EXPECT_EQ(Exchange(port, std::string(10000, 'a')).substr(0, 24), "HTTP/1.1 400 Bad Request");
  (*server)->Stop();
  EXPECT_EQ(Exchange(port, "GET /metrics HTTP/1.1\r\n\r\n"), "connect failed");
}

TEST(HttpServer, StopDoesNotWaitForASilentClient) {
  auto server = HttpServer::Start("localhost:0", [] { return std::string(); });
  ASSERT_TRUE(server.ok()) << server.status().message();
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons((*server)->port());
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  server->reset();  // returns although the client never sends a byte
  // Closed whether the server had accepted it (EOF) or not yet (reset).
  char c;
  const ssize_t n = ::recv(fd, &c, 1, 0);
  EXPECT_TRUE(n == 0 || (n < 0 && errno == ECONNRESET)) << n << " " << std::strerror(errno);
  ::close(fd);
}

TEST(HttpServer, RefusesMalformedAddressesNamingThem) {
  for (const char* bad : {"9100", ":9100", "127.0.0.1:", "127.0.0.1:99999", "example.com:9100",
                          "[::1:9100", "127.0.0.1:9x"}) {
    auto s = HttpServer::Start(bad, [] { return std::string(); });
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_EQ(s.status().code(), Code::kInvalidArgument) << bad;
    EXPECT_NE(s.status().message().find(std::string("\"") + bad + "\""), std::string::npos)
        << s.status().message();
  }
  auto first = HttpServer::Start("127.0.0.1:0", [] { return std::string(); });
  ASSERT_TRUE(first.ok());
  const std::string taken = "127.0.0.1:" + std::to_string((*first)->port());
  auto second = HttpServer::Start(taken, [] { return std::string(); });
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().message(),
            "listen for metrics on " + taken + ": Address already in use");
}

}  // namespace
}  // namespace bcfs::metrics
