#include "backends/http/http_client.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "core/metrics.h"

extern char** environ;

namespace bcfs::http {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using Json = nlohmann::json;

// Runs a program to completion with its output discarded; its exit status.
int RunQuiet(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid = 0;
  int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return -1;
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// One tests/servers/faultproxy.py process. Readiness: the script writes its
// port into a FIFO; we poll that FIFO together with a pidfd of the child, so
// a server that dies early fails the test at once instead of hanging it.
class PyServer {
 public:
  static std::unique_ptr<PyServer> Start(const std::string& dir, std::vector<std::string> args,
                                         std::string* error) {
    static int serial = 0;
    std::string fifo = dir + "/ready-" + std::to_string(++serial);
    if (::mkfifo(fifo.c_str(), 0600) != 0) {
      *error = "mkfifo failed";
      return nullptr;
    }
    int fd = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK);
    std::vector<std::string> argv = {BCFS_PYTHON3, BCFS_FAULTPROXY, "--exit-with-stdin"};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.push_back("--ready-file");
    argv.push_back(fifo);
    std::vector<char*> cargs;
    for (std::string& a : argv) cargs.push_back(a.data());
    cargs.push_back(nullptr);
    auto server = std::unique_ptr<PyServer>(new PyServer());
    // The server's stdin is a pipe whose write end only this process holds
    // (O_CLOEXEC): however the test ends, the server sees EOF and exits.
    int lifeline[2];
    if (::pipe2(lifeline, O_CLOEXEC) != 0) {
      ::close(fd);
      *error = "pipe2 failed";
      return nullptr;
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, lifeline[0], 0);
    int rc = posix_spawn(&server->pid_, cargs[0], &actions, nullptr, cargs.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(lifeline[0]);
    server->lifeline_ = lifeline[1];
    if (rc != 0) {
      ::close(fd);
      *error = "cannot run " BCFS_PYTHON3;
      return nullptr;
    }
    int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, server->pid_, 0));
    std::string text;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (text.find('\n') == std::string::npos) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      pollfd fds[2] = {{fd, POLLIN, 0}, {pidfd, POLLIN, 0}};
      int n = ::poll(fds, pidfd >= 0 ? 2 : 1, static_cast<int>(std::max<long>(left.count(), 0)));
      if (n <= 0) break;
      if (fds[0].revents & POLLIN) {
        char buf[64];
        ssize_t got = ::read(fd, buf, sizeof buf);
        if (got > 0) text.append(buf, static_cast<size_t>(got));
      } else if (fds[1].revents & POLLIN) {
        break;  // the server exited before it was ready
      }
    }
    ::close(fd);
    if (pidfd >= 0) ::close(pidfd);
    if (text.find('\n') == std::string::npos) {
      *error = "faultproxy.py did not become ready";
      return nullptr;
    }
    server->port_ = std::stoi(text);
    return server;
  }

  ~PyServer() {
    ::close(lifeline_);
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
    }
  }

  int port() const { return port_; }
  std::string Url(const std::string& path, const std::string& host = "127.0.0.1") const {
    return "http://" + host + ":" + std::to_string(port_) + path;
  }

 private:
  PyServer() = default;
  pid_t pid_ = -1;
  int lifeline_ = -1;
  int port_ = 0;
};

std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = rng();
    std::memcpy(s.data() + i, &v, std::min<size_t>(8, n - i));
  }
  return s;
}

Options FastOptions() {
  Options o;
  o.base_backoff_ms = 1;
  o.max_backoff_ms = 5;
  o.connect_timeout_ms = 2000;
  o.idle_timeout_s = 10;
  return o;
}

class HttpClientTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // Requests to loopback must never go through a proxy of the machine.
    ::setenv("no_proxy", "127.0.0.1,localhost", 1);
    char tmpl[] = "/tmp/bcfs-http-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = new std::string(tmpl);
    fs::create_directories(*dir_ + "/www");
    small_ = new std::string(RandomBytes(100000, 1));
    big_ = new std::string(RandomBytes(20 << 20, 2));
    std::ofstream(*dir_ + "/www/hello.txt", std::ios::binary) << "hello world\n";
    std::ofstream(*dir_ + "/www/small.bin", std::ios::binary) << *small_;
    std::ofstream(*dir_ + "/www/big.bin", std::ios::binary) << *big_;
    std::string error;
    upstream_ =
        PyServer::Start(*dir_, {"--listen", "0", "--serve", *dir_ + "/www"}, &error).release();
    ASSERT_NE(upstream_, nullptr) << error;
    proxy_ = PyServer::Start(*dir_, {"--listen", "0", "--upstream", upstream_->Url("")}, &error)
                 .release();
    ASSERT_NE(proxy_, nullptr) << error;
  }

  static void TearDownTestSuite() {
    delete proxy_;
    delete upstream_;
    if (dir_ != nullptr) fs::remove_all(*dir_);
    delete dir_;
    delete small_;
    delete big_;
  }

  void SetUp() override {
    ASSERT_NE(proxy_, nullptr);
    Control(*proxy_, "POST", "/__proxy__/reset", "");
  }

  // Sends a control request to a faultproxy.py; its JSON answer.
  Json Control(const PyServer& server, const std::string& method, const std::string& path,
               const std::string& body) {
    Request req;
    req.method = method;
    req.url = server.Url(path);
    req.body = body;
    auto resp = control_.Do(req);
    EXPECT_TRUE(resp.ok()) << resp.status().message();
    if (!resp.ok()) return Json();
    EXPECT_EQ(resp->status, 200) << resp->body;
    return Json::parse(resp->body, nullptr, false);
  }
  void Faults(const Json& rules) { Control(*proxy_, "POST", "/__proxy__/faults", rules.dump()); }
  // The requests the proxy saw for paths containing `match`.
  Json Requests(const std::string& match, const PyServer* server = nullptr) {
    Json all = Control(server ? *server : *proxy_, "GET", "/__proxy__/counts", "")["requests"];
    Json out = Json::array();
    for (const Json& r : all) {
      if (r["path"].get<std::string>().find(match) != std::string::npos) out.push_back(r);
    }
    return out;
  }

  // Streams bytes 1000-200999 of big.bin (req's sign hook kept) through the
  // proxy resetting after 5000 bytes; checks the bytes and returns the
  // requests the proxy saw.
  Json StreamResetRange(Request req) {
    Faults({{{"match", "/big.bin"}, {"action", "reset_after"}, {"bytes", 5000}}});
    Client client(FastOptions());
    req.url = proxy_->Url("/big.bin");
    req.range = {{1000, 200999}};
    std::string got;
    auto resp = client.Stream(req, [&](std::string_view b) {
      got.append(b);
      return true;
    });
    EXPECT_TRUE(resp.ok()) << resp.status().message();
    EXPECT_TRUE(got == big_->substr(1000, 200000));
    return Requests("/big.bin");
  }

  static Request Get(const std::string& url) {
    Request req;
    req.url = url;
    return req;
  }

  static std::string* dir_;
  static std::string* small_;
  static std::string* big_;
  static PyServer* upstream_;
  static PyServer* proxy_;
  Client control_{FastOptions()};
};

std::string* HttpClientTest::dir_ = nullptr;
std::string* HttpClientTest::small_ = nullptr;
std::string* HttpClientTest::big_ = nullptr;
PyServer* HttpClientTest::upstream_ = nullptr;
PyServer* HttpClientTest::proxy_ = nullptr;

// --- plain requests ----------------------------------------------------------

TEST_F(HttpClientTest, GetReturnsStatusHeadersAndExactBody) {
  Client client(FastOptions());
  auto resp = client.Do(Get(proxy_->Url("/small.bin")));
  ASSERT_TRUE(resp.ok()) << resp.status().message();
  EXPECT_EQ(resp->status, 200);
  EXPECT_EQ(resp->body, *small_);
  EXPECT_EQ(resp->Get("content-LENGTH"), "100000");
  EXPECT_EQ(resp->Get("X-Absent"), "");
  EXPECT_EQ(resp->url, proxy_->Url("/small.bin"));
  EXPECT_EQ(client.attempts(), 1u);
  EXPECT_EQ(client.retries(), 0u);
}

TEST_F(HttpClientTest, HeadReturnsHeadersWithoutBody) {
  Client client(FastOptions());
  Request req = Get(proxy_->Url("/big.bin"));
  req.method = "HEAD";
  auto resp = client.Do(req);
  ASSERT_TRUE(resp.ok()) << resp.status().message();
  EXPECT_EQ(resp->status, 200);
  EXPECT_EQ(resp->Get("Content-Length"), std::to_string(big_->size()));
  EXPECT_EQ(resp->body, "");
  Json reqs = Requests("/big.bin");
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0]["method"], "HEAD");
}

TEST_F(HttpClientTest, RangeReturns206WithExactBytes) {
  Client client(FastOptions());
  Request req = Get(proxy_->Url("/big.bin"));
  req.range = {{12345, 12345 + 99999}};
  auto resp = client.Do(req);
  ASSERT_TRUE(resp.ok()) << resp.status().message();
  EXPECT_EQ(resp->status, 206);
  EXPECT_EQ(resp->Get("Content-Range"), "bytes 12345-112344/" + std::to_string(big_->size()));
  EXPECT_EQ(resp->body, big_->substr(12345, 100000));
  EXPECT_EQ(Requests("/big.bin")[0]["range"], "bytes=12345-112344");
}

TEST_F(HttpClientTest, NotFoundIsAResponseNotAnError) {
  Client client(FastOptions());
  auto resp = client.Do(Get(proxy_->Url("/absent")));
  ASSERT_TRUE(resp.ok()) << resp.status().message();
  EXPECT_EQ(resp->status, 404);
  EXPECT_EQ(resp->body, "not found\n");
  EXPECT_EQ(client.retries(), 0u);
}

TEST_F(HttpClientTest, StreamOfNotFoundKeepsTheErrorBodyOutOfTheSink) {
  Client client(FastOptions());
  size_t calls = 0;
  auto resp = client.Stream(Get(proxy_->Url("/absent")), [&](std::string_view) {
    ++calls;
    return true;
  });
  ASSERT_TRUE(resp.ok()) << resp.status().message();
  EXPECT_EQ(resp->status, 404);
  EXPECT_EQ(resp->body, "not found\n");
  EXPECT_EQ(calls, 0u);
}

TEST_F(HttpClientTest, InvalidRequestsAreRefused) {
  Client client(FastOptions());
  Request patch = Get(proxy_->Url("/small.bin"));
  patch.method = "PATCH";
  EXPECT_EQ(client.Do(patch).status().code(), Code::kInvalidArgument);
  Request range_header = Get(proxy_->Url("/small.bin"));
  range_header.headers.push_back({"Range", "bytes=0-1"});
  EXPECT_EQ(client.Do(range_header).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(client.Do(Get("ftp://127.0.0.1/x")).status().code(), Code::kInvalidArgument);
  Request backwards = Get(proxy_->Url("/small.bin"));
  backwards.range = {{10, 9}};
  EXPECT_EQ(client.Do(backwards).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(client.attempts(), 0u);
}

// --- streaming ----------------------------------------------------------------

TEST_F(HttpClientTest, StreamDeliversTwentyMiBExactly) {
  Client client(FastOptions());
  std::string got;
  size_t calls = 0;
  auto resp = client.Stream(Get(proxy_->Url("/big.bin")), [&](std::string_view bytes) {
    got.append(bytes);
    ++calls;
    return true;
  });
  ASSERT_TRUE(resp.ok()) << resp.status().message();
  EXPECT_EQ(resp->status, 200);
  EXPECT_EQ(resp->body, "");
  EXPECT_GT(calls, 1u);
  EXPECT_TRUE(got == *big_) << "got " << got.size() << " bytes";
}

TEST_F(HttpClientTest, StreamWithRangeDeliversOnlyTheAskedBytes) {
  Client client(FastOptions());
  Request req = Get(proxy_->Url("/big.bin"));
  req.range = {{7, 1000006}};
  std::string got;
  auto resp = client.Stream(req, [&](std::string_view b) {
    got.append(b);
    return true;
  });
  ASSERT_TRUE(resp.ok()) << resp.status().message();
  EXPECT_EQ(resp->status, 206);
  EXPECT_TRUE(got == big_->substr(7, 1000000));
}

TEST_F(HttpClientTest, SinkReturningFalseStopsTheTransfer) {
  Client client(FastOptions());
  auto resp = client.Stream(Get(proxy_->Url("/big.bin")), [](std::string_view) { return false; });
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.status().code(), Code::kIo);
  EXPECT_THAT(resp.status().message(), HasSubstr("the receiver stopped the transfer"));
  EXPECT_EQ(client.attempts(), 1u);
}

// --- faults ---------------------------------------------------------------------

TEST_F(HttpClientTest, ResetMidBodyResumesWithRangeFromTheNextByte) {
  const uint64_t cut = (5 << 20) + 123;
  Faults({{{"match", "/big.bin"}, {"action", "reset_after"}, {"bytes", cut}}});
  Client client(FastOptions());
  std::string got;
  auto resp = client.Stream(Get(proxy_->Url("/big.bin")), [&](std::string_view b) {
    got.append(b);
    return true;
  });
  ASSERT_TRUE(resp.ok()) << resp.status().message();
  EXPECT_EQ(resp->status, 200);  // the response that started the body
  EXPECT_TRUE(got == *big_) << "got " << got.size() << " bytes";
  Json reqs = Requests("/big.bin");
  ASSERT_EQ(reqs.size(), 2u) << reqs.dump();
  EXPECT_EQ(reqs[0]["range"], "");
  EXPECT_EQ(reqs[1]["range"],
            "bytes=" + std::to_string(cut) + "-" + std::to_string(big_->size() - 1));
  EXPECT_EQ(reqs[1]["status"], 206);
  EXPECT_EQ(client.retries(), 1u);
}

TEST_F(HttpClientTest, ResetInsideARangedStreamResumesInsideTheRange) {
  Json reqs = StreamResetRange(Request());
  ASSERT_EQ(reqs.size(), 2u) << reqs.dump();
  EXPECT_EQ(reqs[0]["range"], "bytes=1000-200999");
  EXPECT_EQ(reqs[1]["range"], "bytes=6000-200999");
}

TEST_F(HttpClientTest, ASignHookSignsEveryAttemptWithTheRangeItAsksFor) {
  Request req;
  int calls = 0;
  req.sign = [&calls](Request& r) {
    ++calls;
    EXPECT_TRUE(r.range.has_value());
    if (!r.range) return InternalError("no range");
    r.url += "?signed=" + std::to_string(r.range->first) + "-" + std::to_string(r.range->second);
    return OkStatus();
  };
  Json reqs = StreamResetRange(req);
  EXPECT_EQ(calls, 2);
  ASSERT_EQ(reqs.size(), 2u) << reqs.dump();
  EXPECT_EQ(reqs[0]["path"], "/big.bin?signed=1000-200999");
  EXPECT_EQ(reqs[1]["path"], "/big.bin?signed=6000-200999");
  EXPECT_EQ(reqs[1]["range"], "bytes=6000-200999");
  // The hook's error ends the request.
  Request bad = Get(proxy_->Url("/hello.txt"));
  bad.sign = [](Request&) { return InvalidArgumentError("cannot sign"); };
  auto refused = Client(FastOptions()).Do(bad);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Code::kInvalidArgument);
  EXPECT_THAT(refused.status().message(), ::testing::HasSubstr("cannot sign"));
}

TEST_F(HttpClientTest, ResumeAnsweredWith200SkipsTheBytesAlreadyDelivered) {
  Faults({{{"match", "/big.bin"}, {"action", "reset_after"}, {"bytes", 3 << 20}},
          {{"match", "/big.bin"}, {"action", "ignore_range"}}});
  Client client(FastOptions());
  std::string got;
  auto resp = client.Stream(Get(proxy_->Url("/big.bin")), [&](std::string_view b) {
    got.append(b);
    return true;
  });
  ASSERT_TRUE(resp.ok()) << resp.status().message();
  EXPECT_TRUE(got == *big_) << "got " << got.size() << " bytes";
  Json reqs = Requests("/big.bin");
  ASSERT_EQ(reqs.size(), 2u) << reqs.dump();
  EXPECT_EQ(reqs[1]["range"], "bytes=3145728-" + std::to_string(big_->size() - 1));
  EXPECT_EQ(reqs[1]["status"], 200);
}

TEST_F(HttpClientTest, RangedRequestAnsweredWith200GivesOnlyTheAskedBytes) {
  Faults({{{"match", "/small.bin"}, {"action", "ignore_range"}, {"times", 2}}});
  Client client(FastOptions());
  Request req = Get(proxy_->Url("/small.bin"));
  req.range = {{100, 199}};
  auto resp = client.Do(req);
  ASSERT_TRUE(resp.ok()) << resp.status().message();
  EXPECT_EQ(resp->status, 200);
  EXPECT_EQ(resp->body, small_->substr(100, 100));
  std::string got;
  auto streamed = client.Stream(req, [&](std::string_view b) {
    got.append(b);
    return true;
  });
  ASSERT_TRUE(streamed.ok()) << streamed.status().message();
  EXPECT_EQ(got, small_->substr(100, 100));
  EXPECT_EQ(client.retries(), 0u);
}

TEST_F(HttpClientTest, TruncatedBodyIsRetriedFromTheNextByte) {
  Faults({{{"match", "/small.bin"}, {"action", "truncate"}, {"bytes", 1000}}});
  Client client(FastOptions());
  auto resp = client.Do(Get(proxy_->Url("/small.bin")));
  ASSERT_TRUE(resp.ok()) << resp.status().message();
  EXPECT_EQ(resp->status, 200);
  EXPECT_EQ(resp->body, *small_);
  Json reqs = Requests("/small.bin");
  ASSERT_EQ(reqs.size(), 2u) << reqs.dump();
  EXPECT_EQ(reqs[0]["sent"], 1000);
  EXPECT_EQ(reqs[1]["range"], "bytes=1000-99999");
  EXPECT_EQ(client.retries(), 1u);
}

TEST_F(HttpClientTest, StalledTransferIsAbortedByTheIdleTimeoutAndResumed) {
  Faults({{{"match", "/small.bin"}, {"action", "stall"}, {"bytes", 1000}, {"seconds", 60}}});
  Options opts = FastOptions();
  opts.idle_timeout_s = 1;
  Client client(opts);
  auto resp = client.Do(Get(proxy_->Url("/small.bin")));
  ASSERT_TRUE(resp.ok()) << resp.status().message();
  EXPECT_EQ(resp->body, *small_);
  Json reqs = Requests("/small.bin");
  ASSERT_EQ(reqs.size(), 2u) << reqs.dump();
  EXPECT_EQ(reqs[1]["range"], "bytes=1000-99999");
  EXPECT_EQ(client.retries(), 1u);
}

TEST_F(HttpClientTest, CorruptFaultFlipsExactlyOneByte) {
  // A self-test of the proxy: the client cannot see this (the store's digest
  // check does), so the bytes arrive flipped.
  Faults({{{"match", "/small.bin"}, {"action", "corrupt"}, {"bytes", 70000}}});
  Client client(FastOptions());
  auto resp = client.Do(Get(proxy_->Url("/small.bin")));
  ASSERT_TRUE(resp.ok()) << resp.status().message();
  std::string want = *small_;
  want[70000] = static_cast<char>(want[70000] ^ 0xFF);
  EXPECT_TRUE(resp->body == want);
}

TEST_F(HttpClientTest, ServiceUnavailableTwiceThenSucceeds) {
  Faults({{{"match", "/small.bin"}, {"action", "status"}, {"status", 503}, {"times", 2}}});
  Client client(FastOptions());
  auto resp = client.Do(Get(proxy_->Url("/small.bin")));
  ASSERT_TRUE(resp.ok()) << resp.status().message();
  EXPECT_EQ(resp->status, 200);
  EXPECT_EQ(resp->body, *small_);
  Json reqs = Requests("/small.bin");
  ASSERT_EQ(reqs.size(), 3u);
  EXPECT_EQ(reqs[0]["status"], 503);
  EXPECT_EQ(reqs[1]["status"], 503);
  EXPECT_EQ(reqs[2]["status"], 200);
  EXPECT_EQ(client.attempts(), 3u);
  EXPECT_EQ(client.retries(), 2u);
}

TEST_F(HttpClientTest, MetricsCountExchangesByStatusClassRetriesAndFinalErrors) {
  auto counter = [](const std::string& name, metrics::Labels labels) {
    return metrics::Global().GetCounter(name, "", labels)->Value();
  };
  auto exchanges = [&](const char* code) {
    return counter("buildcachefs_http_requests_total",
                   {{"backend", "t-metrics"}, {"method", "GET"}, {"code", code}});
  };
  const metrics::Labels backend = {{"backend", "t-metrics"}};
  Faults({{{"match", "/small.bin"}, {"action", "status"}, {"status", 503}, {"times", 2}}});
  Options opts = FastOptions();
  opts.metrics_backend = "t-metrics";
  opts.max_attempts = 2;
  Client client(opts);
  // 503, 503: the budget of two attempts is spent, a final error.
  ASSERT_FALSE(client.Do(Get(proxy_->Url("/small.bin"))).ok());
  // Then 200.
  auto resp = client.Do(Get(proxy_->Url("/small.bin")));
  ASSERT_TRUE(resp.ok()) << resp.status().message();
  EXPECT_EQ(exchanges("5xx"), 2u);
  EXPECT_EQ(exchanges("2xx"), 1u);
  EXPECT_EQ(exchanges("4xx"), 0u);
  EXPECT_EQ(counter("buildcachefs_http_retries_total", backend), 1u);
  EXPECT_EQ(counter("buildcachefs_http_errors_total", backend), 1u);
  EXPECT_GE(counter("buildcachefs_http_received_bytes_total", backend), small_->size());
  const std::string text = metrics::Global().Render();
  EXPECT_THAT(
      text,
      HasSubstr("buildcachefs_http_exchange_duration_seconds_count{backend=\"t-metrics\"} 3\n"));
  EXPECT_THAT(text, Not(HasSubstr(proxy_->Url("/"))));
}

TEST_F(HttpClientTest, TooManyRequestsIsRetriedAfterRetryAfter) {
  Faults({{{"match", "/hello.txt"}, {"action", "status"}, {"status", 429}, {"retry_after", 1}}});
  Client client(FastOptions());
  auto start = std::chrono::steady_clock::now();
  auto resp = client.Do(Get(proxy_->Url("/hello.txt")));
  auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(resp.ok()) << resp.status().message();
  EXPECT_EQ(resp->body, "hello world\n");
  Json reqs = Requests("/hello.txt");
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[0]["status"], 429);
  EXPECT_EQ(reqs[1]["status"], 200);
  EXPECT_EQ(client.retries(), 1u);
  // A lower bound only: the wait was Retry-After's, not the 1-5 ms backoff.
  EXPECT_GE(elapsed, std::chrono::milliseconds(1000));
}

TEST_F(HttpClientTest, RetryAfterIsCappedByOptions) {
  Faults({{{"match", "/hello.txt"}, {"action", "status"}, {"status", 503}, {"retry_after", 3600}}});
  Options opts = FastOptions();
  opts.max_retry_after_s = 0;
  Client client(opts);
  auto resp = client.Do(Get(proxy_->Url("/hello.txt")));
  ASSERT_TRUE(resp.ok()) << resp.status().message();
  EXPECT_EQ(resp->status, 200);
  EXPECT_EQ(client.retries(), 1u);
}

TEST_F(HttpClientTest, SpentBudgetNamesMethodUrlWithoutQueryAndLastCause) {
  Faults({{{"match", "/small.bin"}, {"action", "status"}, {"status", 503}, {"times", 10}}});
  Options opts = FastOptions();
  opts.max_attempts = 3;
  Client client(opts);
  Request req = Get(proxy_->Url("/small.bin?X-Amz-Signature=topsecret1&x=1"));
  req.headers.push_back({"Authorization", "Bearer topsecret2"});
  auto resp = client.Do(req);
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.status().code(), Code::kUnavailable);
  EXPECT_EQ(resp.status().foreign(), 503);
  const std::string m = resp.status().message();
  EXPECT_THAT(m, HasSubstr("GET " + proxy_->Url("/small.bin") + ": HTTP 503"));
  EXPECT_THAT(m, HasSubstr("3 attempts"));
  EXPECT_THAT(m, Not(HasSubstr("topsecret")));
  EXPECT_THAT(m, Not(HasSubstr("?")));
  EXPECT_EQ(client.attempts(), 3u);
  EXPECT_EQ(Requests("/small.bin").size(), 3u);
}

TEST_F(HttpClientTest, RefusedConnectionIsRetriedThenReported) {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&addr), len), 0);
  ASSERT_EQ(::getsockname(s, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  ::close(s);  // nothing listens there now
  Options opts = FastOptions();
  opts.max_attempts = 3;
  Client client(opts);
  std::string url = "http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)) + "/x?sig=abc";
  auto resp = client.Do(Get(url));
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.status().code(), Code::kUnavailable);
  EXPECT_EQ(resp.status().foreign(), 0);
  EXPECT_THAT(resp.status().message(), HasSubstr("cannot connect"));
  EXPECT_THAT(resp.status().message(), Not(HasSubstr("sig=abc")));
  EXPECT_EQ(client.attempts(), 3u);
}

// --- redirects -----------------------------------------------------------------------

TEST_F(HttpClientTest, CrossHostRedirectDropsAuthorization) {
  // 127.0.0.1 -> localhost is another host, as a registry -> storage redirect.
  std::string location = upstream_->Url("/__echo__/blob?sig=1", "localhost");
  Faults(
      {{{"match", "/v2/blob"}, {"action", "redirect"}, {"status", 307}, {"location", location}}});
  Client client(FastOptions());
  Request req = Get(proxy_->Url("/v2/blob"));
  req.headers = {{"Authorization", "Bearer s3cret"}, {"Accept", "application/x-test"}};
  auto resp = client.Do(req);
  ASSERT_TRUE(resp.ok()) << resp.status().message();
  EXPECT_EQ(resp->status, 200);
  EXPECT_EQ(resp->url, location);
  Json echo = Json::parse(resp->body);
  EXPECT_EQ(echo["path"], "/__echo__/blob?sig=1");
  bool has_auth = false, has_accept = false;
  for (const Json& h : echo["headers"]) {
    if (h[0] == "Authorization") has_auth = true;
    if (h[0] == "Accept" && h[1] == "application/x-test") has_accept = true;
  }
  EXPECT_FALSE(has_auth) << echo.dump();
  EXPECT_TRUE(has_accept) << echo.dump();
}

TEST_F(HttpClientTest, SameHostRedirectKeepsAuthorization) {
  Faults({{{"match", "/v2/blob"}, {"action", "redirect"}, {"location", "/__echo__/same"}}});
  Client client(FastOptions());
  Request req = Get(proxy_->Url("/v2/blob"));
  req.headers = {{"Authorization", "Bearer s3cret"}};
  auto resp = client.Do(req);
  ASSERT_TRUE(resp.ok()) << resp.status().message();
  EXPECT_EQ(resp->url, proxy_->Url("/__echo__/same"));  // relative Location resolved
  Json echo = Json::parse(resp->body);
  bool has_auth = false;
  for (const Json& h : echo["headers"]) {
    if (h[0] == "Authorization" && h[1] == "Bearer s3cret") has_auth = true;
  }
  EXPECT_TRUE(has_auth) << echo.dump();
}

TEST_F(HttpClientTest, SeeOtherTurnsPostIntoGetAndTemporaryRedirectKeepsIt) {
  Faults({{{"match", "/form303"},
           {"action", "redirect"},
           {"status", 303},
           {"location", "/__echo__/a"}},
          {{"match", "/form307"},
           {"action", "redirect"},
           {"status", 307},
           {"location", "/__echo__/b"}}});
  Client client(FastOptions());
  Request req = Get(proxy_->Url("/form303"));
  req.method = "POST";
  req.body = "x=1";
  auto resp = client.Do(req);
  ASSERT_TRUE(resp.ok()) << resp.status().message();
  Json echo = Json::parse(resp->body);
  EXPECT_EQ(echo["method"], "GET");
  EXPECT_EQ(echo["body"], "");
  req.url = proxy_->Url("/form307");
  resp = client.Do(req);
  ASSERT_TRUE(resp.ok()) << resp.status().message();
  echo = Json::parse(resp->body);
  EXPECT_EQ(echo["method"], "POST");
  EXPECT_EQ(echo["body"], "x=1");
}

TEST_F(HttpClientTest, ResetAfterARedirectResumesAtTheRedirectTarget) {
  // The registry case: blob GET -> 307 to storage with a signed URL; the
  // storage connection resets; the retry resumes at storage, not the registry.
  Control(*upstream_, "POST", "/__proxy__/reset", "");
  std::string location = upstream_->Url("/big.bin?sig=s3cr3t", "localhost");
  Faults({{{"match", "/v2/blobs/x"},
           {"action", "redirect"},
           {"status", 307},
           {"location", location}}});
  Json reset = {{{"match", "/big.bin"}, {"action", "reset_after"}, {"bytes", 1 << 20}}};
  Control(*upstream_, "POST", "/__proxy__/faults", reset.dump());
  Client client(FastOptions());
  std::string got;
  auto resp = client.Stream(Get(proxy_->Url("/v2/blobs/x")), [&](std::string_view b) {
    got.append(b);
    return true;
  });
  ASSERT_TRUE(resp.ok()) << resp.status().message();
  EXPECT_EQ(resp->url, location);
  EXPECT_TRUE(got == *big_) << "got " << got.size() << " bytes";
  EXPECT_EQ(Requests("/v2/blobs/x").size(), 1u);
  Json storage = Requests("/big.bin", upstream_);
  ASSERT_EQ(storage.size(), 2u) << storage.dump();
  EXPECT_EQ(storage[1]["path"], "/big.bin?sig=s3cr3t");
  EXPECT_EQ(storage[1]["range"], "bytes=1048576-" + std::to_string(big_->size() - 1));
}

TEST_F(HttpClientTest, SpentBudgetAfterARedirectNamesBothUrls) {
  std::string location = proxy_->Url("/storage/blob?sig=s3cr3t", "localhost");
  Faults(
      {{{"match", "/v2/blobs/y"}, {"action", "redirect"}, {"status", 307}, {"location", location}},
       {{"match", "/storage/blob"}, {"action", "status"}, {"status", 500}, {"times", 5}}});
  Options opts = FastOptions();
  opts.max_attempts = 2;
  Client client(opts);
  auto resp = client.Do(Get(proxy_->Url("/v2/blobs/y")));
  ASSERT_FALSE(resp.ok());
  EXPECT_EQ(resp.status().foreign(), 500);
  EXPECT_THAT(resp.status().message(),
              HasSubstr("GET " + proxy_->Url("/storage/blob", "localhost") + " (redirected from " +
                        proxy_->Url("/v2/blobs/y") + "): HTTP 500"));
  EXPECT_THAT(resp.status().message(), Not(HasSubstr("s3cr3t")));
}

TEST_F(HttpClientTest, RedirectLoopIsAnError) {
  Faults({{{"match", "/loop"}, {"action", "redirect"}, {"location", "/loop"}, {"times", 50}}});
  Client client(FastOptions());
  auto resp = client.Do(Get(proxy_->Url("/loop")));
  ASSERT_FALSE(resp.ok());
  EXPECT_THAT(resp.status().message(), HasSubstr("too many redirects"));
  EXPECT_EQ(Requests("/loop").size(), 11u);  // the request and 10 redirects
}

// --- connections and threads ------------------------------------------------------

TEST_F(HttpClientTest, SequentialRequestsReuseOneConnection) {
  Control(*upstream_, "POST", "/__proxy__/reset", "");
  Client client(FastOptions());
  for (int i = 0; i < 5; ++i) {
    auto resp = client.Do(Get(upstream_->Url("/hello.txt")));
    ASSERT_TRUE(resp.ok()) << resp.status().message();
    EXPECT_EQ(resp->body, "hello world\n");
  }
  Json reqs = Requests("/hello.txt", upstream_);
  ASSERT_EQ(reqs.size(), 5u);
  for (const Json& r : reqs) EXPECT_EQ(r["conn"], reqs[0]["conn"]) << reqs.dump();
}

TEST_F(HttpClientTest, ManyThreadsShareOneClient) {
  Client client(FastOptions());
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 8; ++i) {
        Request req = Get(upstream_->Url(i % 2 ? "/small.bin" : "/big.bin"));
        uint64_t first = static_cast<uint64_t>(t * 8 + i) * 511;  // < 100000 - 65536
        req.range = {{first, first + 65535}};
        auto resp = client.Do(req);
        const std::string& file = i % 2 ? *small_ : *big_;
        std::string want = file.substr(first, 65536);
        if (!resp.ok() || resp->body != want) ++wrong;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(client.attempts(), 64u);
}

// --- TLS ----------------------------------------------------------------------------

TEST_F(HttpClientTest, TlsVerificationIsOnByDefault) {
  std::string cert = *dir_ + "/cert.pem", key = *dir_ + "/key.pem";
  ASSERT_EQ(
      RunQuiet({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert, "-days",
                "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"}),
      0);
  std::string error;
  auto tls = PyServer::Start(
      *dir_, {"--listen", "0", "--serve", *dir_ + "/www", "--tls-cert", cert, "--tls-key", key},
      &error);
  ASSERT_NE(tls, nullptr) << error;
  std::string url = "https://127.0.0.1:" + std::to_string(tls->port()) + "/hello.txt";

  Client strict(FastOptions());
  auto refused = strict.Do(Get(url));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Code::kUnavailable);
  EXPECT_THAT(refused.status().message(), HasSubstr("TLS verification failed for host 127.0.0.1"));
  EXPECT_THAT(refused.status().message(), HasSubstr("ca_file"));
  EXPECT_EQ(strict.attempts(), 1u);  // not retried

  Options with_ca = FastOptions();
  with_ca.ca_file = cert;
  Client trusting(with_ca);
  auto ok = trusting.Do(Get(url));
  ASSERT_TRUE(ok.ok()) << ok.status().message();
  EXPECT_EQ(ok->body, "hello world\n");

  Options unverified = FastOptions();
  unverified.verify_tls = false;
  Client lax(unverified);
  auto ok2 = lax.Do(Get(url));
  ASSERT_TRUE(ok2.ok()) << ok2.status().message();
  EXPECT_EQ(ok2->body, "hello world\n");

  Options missing = FastOptions();
  missing.ca_file = *dir_ + "/absent.pem";
  EXPECT_EQ(Client(missing).Do(Get(url)).status().code(), Code::kInvalidArgument);
}

// --- helpers -------------------------------------------------------------------------

TEST(HttpHelpersTest, RedactUrlRemovesUserInfoQueryAndFragment) {
  EXPECT_EQ(RedactUrl("https://user:pw@s3.example.com:9000/b/k?X-Amz-Signature=abc#f"),
            "https://s3.example.com:9000/b/k");
  EXPECT_EQ(RedactUrl("http://h/p"), "http://h/p");
  EXPECT_EQ(RedactUrl("http://h?q=1"), "http://h");
  EXPECT_EQ(RedactUrl("http://a@b"), "http://b");
}

TEST(HttpHelpersTest, RetryAfterTakesSecondsOrAnHttpDate) {
  const std::time_t now = 784111777;  // Sun, 06 Nov 1994 08:49:37 GMT
  EXPECT_EQ(RetryAfterSeconds("120", now), 120);
  EXPECT_EQ(RetryAfterSeconds(" 0 ", now), 0);
  EXPECT_EQ(RetryAfterSeconds("Sun, 06 Nov 1994 08:49:47 GMT", now), 10);
  EXPECT_EQ(RetryAfterSeconds("Sun, 06 Nov 1994 08:00:00 GMT", now), 0);  // past
  EXPECT_EQ(RetryAfterSeconds("soon", now), std::nullopt);
  EXPECT_EQ(RetryAfterSeconds("", now), std::nullopt);
}

TEST(HttpHelpersTest, ResponseGetIsCaseInsensitiveAndTakesTheLastValue) {
  Response r;
  r.headers = {{"Link", "a"}, {"content-type", "x"}, {"LINK", "b"}};
  EXPECT_EQ(r.Get("link"), "b");
  EXPECT_EQ(r.Get("Content-Type"), "x");
  EXPECT_EQ(r.Get("ETag"), "");
}

}  // namespace
}  // namespace bcfs::http
