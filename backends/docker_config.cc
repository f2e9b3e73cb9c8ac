#include "backends/docker_config.h"

#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "core/base64.h"

namespace bcfs::backends {
namespace {

std::string ConfigPath() {
  if (const char* d = std::getenv("DOCKER_CONFIG"); d != nullptr && d[0] != '\0') {
    return std::string(d) + "/config.json";
  }
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "/root") + "/.docker/config.json";
}

// "https://host/v1/" and "host" name the same registry in config.json.
std::string Normalize(std::string key) {
  if (key == "https://index.docker.io/v1/" || key == "index.docker.io" || key == "docker.io" ||
      key == "registry-1.docker.io") {
    return "https://index.docker.io/v1/";
  }
  for (const char* scheme : {"https://", "http://"}) {
    if (key.rfind(scheme, 0) == 0) key = key.substr(std::string(scheme).size());
  }
  if (size_t slash = key.find('/'); slash != std::string::npos) key = key.substr(0, slash);
  return key;
}

// Runs `docker-credential-<helper> get` with the key on stdin.
Result<Credentials> RunHelper(const std::string& helper, const std::string& key) {
  const std::string prog = "docker-credential-" + helper;
  int in[2], out[2];
  if (::pipe(in) != 0 || ::pipe(out) != 0) return ErrnoError(errno, "pipe for " + prog);
  pid_t pid = ::fork();
  if (pid < 0) return ErrnoError(errno, "fork for " + prog);
  if (pid == 0) {
    ::dup2(in[0], 0);
    ::dup2(out[1], 1);
    ::close(in[1]);
    ::close(out[0]);
    ::execlp(prog.c_str(), prog.c_str(), "get", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(in[0]);
  ::close(out[1]);
  std::string request = key;
  {
    // A helper that exits without reading its stdin must not kill us with
    // SIGPIPE: block it for this thread while writing, then drop a pending one.
    sigset_t pipe_set, old_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old_set);
    const bool was_pending = [&] {
      sigset_t pending;
      sigpending(&pending);
      return sigismember(&pending, SIGPIPE) == 1;
    }();
    const ssize_t wrote = ::write(in[1], request.data(), request.size());
    if (wrote < 0 && errno == EPIPE && !was_pending) {
      const timespec zero{0, 0};
      sigtimedwait(&pipe_set, nullptr, &zero);
    }
    pthread_sigmask(SIG_SETMASK, &old_set, nullptr);
  }
  ::close(in[1]);
  std::string reply;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(out[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    reply.append(buf, static_cast<size_t>(n));
  }
  ::close(out[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    // "credentials not found" is an answer, not a failure.
    if (reply.find("credentials not found") != std::string::npos) return Credentials();
    return Status(Code::kUnavailable,
                  "credential helper " + prog + " failed for " + key +
                      (WIFEXITED(status) && WEXITSTATUS(status) == 127 ? " (not installed)" : ""));
  }
  return ParseHelperReply(reply, prog, key);
}

}  // namespace

Result<Credentials> ParseHelperReply(std::string_view reply, const std::string& prog,
                                     const std::string& key) {
  auto j = nlohmann::json::parse(reply, nullptr, false);
  auto str = [&](const char* k) -> std::optional<std::string> {
    auto it = j.find(k);
    if (it == j.end()) return std::string();
    if (!it->is_string()) return std::nullopt;
    return it->get<std::string>();
  };
  std::optional<std::string> user, secret;
  if (j.is_object()) user = str("Username"), secret = str("Secret");
  if (!user || !secret) {
    return CorruptError("credential helper " + prog + " gave an unreadable answer for " + key);
  }
  Credentials c;
  if (*user == "<token>") {
    c.identity_token = *secret;
  } else {
    c.username = *user;
    c.password = *secret;
  }
  return c;
}

Result<ConfigAnswer> ParseDockerConfig(std::string_view text, const std::string& key,
                                       const std::string& path) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded()) return CorruptError(path + ": not valid JSON");
  if (!j.is_object()) return CorruptError(path + ": not a JSON object");
  const std::string want = Normalize(key);
  ConfigAnswer answer;
  // As the docker CLI: credHelpers for the key wins over credsStore; an empty
  // one means config.json itself.
  bool file_store = false;
  if (auto helpers = j.find("credHelpers"); helpers != j.end() && helpers->is_object()) {
    for (auto it = helpers->begin(); it != helpers->end(); ++it) {
      if (Normalize(it.key()) != want || !it->is_string()) continue;
      answer.helper = *it;
      if (!answer.helper.empty()) return answer;
      file_store = true;
    }
  }
  if (auto auths = j.find("auths"); auths != j.end() && auths->is_object()) {
    for (auto it = auths->begin(); it != auths->end(); ++it) {
      if (Normalize(it.key()) != want || !it->is_object()) continue;
      Credentials c;
      const auto& a = *it;
      if (auto v = a.find("auth");
          v != a.end() && v->is_string() && !v->get<std::string>().empty()) {
        auto decoded = Base64Decode(v->get<std::string>());
        if (!decoded.ok())
          return CorruptError(path + ": auths[\"" + it.key() + "\"].auth is not base64");
        size_t colon = decoded->find(':');
        if (colon == std::string::npos) {
          return CorruptError(path + ": auths[\"" + it.key() + "\"].auth is not user:password");
        }
        c.username = decoded->substr(0, colon);
        c.password = decoded->substr(colon + 1);
      }
      if (auto v = a.find("username"); v != a.end() && v->is_string() && c.username.empty()) {
        c.username = *v;
      }
      if (auto v = a.find("password"); v != a.end() && v->is_string() && c.password.empty()) {
        c.password = *v;
      }
      if (auto v = a.find("identitytoken"); v != a.end() && v->is_string()) c.identity_token = *v;
      if (!c.empty()) {
        answer.credentials = std::move(c);
        return answer;
      }
    }
  }
  if (auto store = j.find("credsStore");
      !file_store && store != j.end() && store->is_string() && !store->get<std::string>().empty()) {
    answer.helper = *store;
  }
  return answer;
}

Result<Credentials> LookupCredentials(const std::string& key) {
  const std::string path = ConfigPath();
  std::ifstream f(path);
  if (!f) return Credentials();  // no config: anonymous
  std::stringstream ss;
  ss << f.rdbuf();
  BCFS_ASSIGN_OR_RETURN(ConfigAnswer answer, ParseDockerConfig(ss.str(), key, path));
  if (!answer.helper.empty()) return RunHelper(answer.helper, key);
  return answer.credentials;
}

}  // namespace bcfs::backends
