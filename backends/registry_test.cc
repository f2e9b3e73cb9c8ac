// Unit tests of the registry pieces that need no server: references,
// WWW-Authenticate challenges and credentials from a docker config.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "backends/docker_config.h"
#include "backends/reference.h"
#include "backends/registry_auth.h"

namespace bcfs::backends {
namespace {

TEST(Reference, DockerHubNamesAreNormalisedAsDockerDoes) {
  auto r = ParseReference("user/cache");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->ToString(), "docker.io/user/cache:latest");
  EXPECT_EQ(r->Endpoint(false), "https://registry-1.docker.io");
  EXPECT_EQ(r->CredentialKey(), "https://index.docker.io/v1/");
  EXPECT_EQ(ParseReference("alpine")->repository, "library/alpine");
  EXPECT_EQ(ParseReference("index.docker.io/library/alpine:3")->ToString(),
            "docker.io/library/alpine:3");
}

TEST(Reference, HostsPortsTagsDigestsAndEveryTag) {
  auto r = ParseReference("127.0.0.1:5000/app/cache:main");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->domain, "127.0.0.1:5000");
  EXPECT_EQ(r->repository, "app/cache");
  EXPECT_EQ(r->tag, "main");
  EXPECT_EQ(r->Endpoint(false), "http://127.0.0.1:5000");  // loopback: plain http
  EXPECT_EQ(r->CredentialKey(), "127.0.0.1:5000");
  EXPECT_EQ(ParseReference("ghcr.io/o/c")->Endpoint(false), "https://ghcr.io");
  EXPECT_EQ(ParseReference("reg.example:443/c")->Endpoint(true), "http://reg.example:443");
  EXPECT_EQ(ParseReference("localhost/c:*")->tag, "*");
  const std::string d = "sha256:" + std::string(64, 'a');
  auto byd = ParseReference("ghcr.io/o/c@" + d);
  ASSERT_TRUE(byd.ok());
  EXPECT_EQ(byd->digest, d);
  EXPECT_EQ(byd->tag, "");
}

TEST(Reference, MalformedReferencesAreNamed) {
  for (const char* bad :
       {"", "Upper/Case", "host/repo:", "host/repo@sha256:zz", "a//b", "host/repo:bad/tag"}) {
    auto r = ParseReference(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok() && bad[0] != '\0') {
      EXPECT_NE(r.status().message().find(std::string("\"") + bad + "\""), std::string::npos)
          << r.status().message();
    }
  }
}

TEST(Challenges, BearerAndBasicWithQuotedParameters) {
  auto c = ParseChallenges(
      "Bearer realm=\"http://127.0.0.1:5002/token\",service=\"test-registry\","
      "scope=\"repository:app/cache:pull\", Basic realm=\"basic \\\"realm\\\"\"");
  ASSERT_TRUE(c.ok()) << c.status().message();
  ASSERT_EQ(c->size(), 2u);
  EXPECT_EQ((*c)[0].scheme, "bearer");
  EXPECT_EQ((*c)[0].params.at("realm"), "http://127.0.0.1:5002/token");
  EXPECT_EQ((*c)[0].params.at("service"), "test-registry");
  EXPECT_EQ((*c)[0].params.at("scope"), "repository:app/cache:pull");
  EXPECT_EQ((*c)[1].scheme, "basic");
  EXPECT_EQ((*c)[1].params.at("realm"), "basic \"realm\"");
  EXPECT_FALSE(ParseChallenges("").ok());
  auto open = ParseChallenges("Bearer realm=\"unterminated");
  ASSERT_FALSE(open.ok());
  EXPECT_NE(open.status().message().find("unterminated"), std::string::npos);
}

class DockerConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/bcfs-dcfg-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    const char* old = std::getenv("DOCKER_CONFIG");
    old_ = old ? old : "";
    had_ = old != nullptr;
    ::setenv("DOCKER_CONFIG", dir_.c_str(), 1);
  }
  void TearDown() override {
    if (had_)
      ::setenv("DOCKER_CONFIG", old_.c_str(), 1);
    else
      ::unsetenv("DOCKER_CONFIG");
    std::filesystem::remove_all(dir_);
  }
  void Write(const std::string& json) { std::ofstream(dir_ + "/config.json") << json; }
  std::string dir_, old_;
  bool had_ = false;
};

TEST_F(DockerConfigTest, AuthsWithAuthUsernamePasswordAndIdentityToken) {
  // "dGVzdHVzZXI6dGVzdHBhc3M=" is base64 of testuser:testpass.
  Write(R"({"auths":{"127.0.0.1:5000":{"auth":"dGVzdHVzZXI6dGVzdHBhc3M="},
            "https://index.docker.io/v1/":{"username":"u","password":"p"},
            "https://ghcr.io/v2/":{"identitytoken":"refresh-me"}}})");
  auto a = LookupCredentials("127.0.0.1:5000");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->username, "testuser");
  EXPECT_EQ(a->password, "testpass");
  auto hub = LookupCredentials("https://index.docker.io/v1/");
  EXPECT_EQ(hub->username, "u");
  auto ghcr = LookupCredentials("ghcr.io");
  EXPECT_EQ(ghcr->identity_token, "refresh-me");
  EXPECT_TRUE(LookupCredentials("other.example")->empty());
}

TEST(DockerConfigText, HelpersEmptyHelpersAndBadAuthsWithoutSecrets) {
  auto helper = ParseDockerConfig(
      R"({"credHelpers":{"reg.example":"pass"},"credsStore":"desktop"})", "reg.example", "c.json");
  ASSERT_TRUE(helper.ok());
  EXPECT_EQ(helper->helper, "pass");
  EXPECT_EQ(ParseDockerConfig(R"({"credsStore":"desktop"})", "x", "c.json")->helper, "desktop");
  // An empty credHelpers entry means config.json itself, not credsStore (as docker).
  auto file = ParseDockerConfig(
      R"({"credHelpers":{"x":""},"credsStore":"desktop","auths":{"x":{"username":"u"}}})", "x",
      "c.json");
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(file->helper, "");
  EXPECT_EQ(file->credentials.username, "u");
  // "c2VjcmV0" is base64 of "secret": no colon; the message never shows it.
  auto bad = ParseDockerConfig(R"({"auths":{"x":{"auth":"c2VjcmV0"}}})", "x", "c.json");
  EXPECT_EQ(bad.status().message(), "c.json: auths[\"x\"].auth is not user:password");
  EXPECT_EQ(ParseDockerConfig("[1]", "x", "c.json").status().message(),
            "c.json: not a JSON object");
  EXPECT_EQ(ParseDockerConfig("{", "x", "c.json").status().message(), "c.json: not valid JSON");
}

TEST(DockerConfigText, HelperRepliesUserSecretAndToken) {
  auto c = ParseHelperReply(R"({"ServerURL":"r","Username":"hu","Secret":"hs"})", "p", "r");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->username, "hu");
  EXPECT_EQ(c->password, "hs");
  auto t = ParseHelperReply(R"({"Username":"<token>","Secret":"rt"})", "p", "r");
  EXPECT_EQ(t->identity_token, "rt");
  EXPECT_TRUE(t->username.empty());
  for (const char* bad : {"[]", R"({"Username":1,"Secret":"TOPSECRET"})", "TOPSECRET"}) {
    EXPECT_EQ(ParseHelperReply(bad, "docker-credential-p", "r").status().message(),
              "credential helper docker-credential-p gave an unreadable answer for r");
  }
}

TEST_F(DockerConfigTest, CredentialHelpersAreRunWithTheKeyOnStdin) {
  // A helper on PATH that answers for one server only.
  const std::string helper = dir_ + "/docker-credential-test";
  std::ofstream(helper)
      << "#!/bin/sh\nread key\nif [ \"$key\" = \"reg.example\" ]; then\n"
         "echo '{\"ServerURL\":\"reg.example\",\"Username\":\"hu\",\"Secret\":\"hs\"}'\n"
         "else echo 'credentials not found in native keychain'; exit 1; fi\n";
  ::chmod(helper.c_str(), 0755);
  const std::string path = std::getenv("PATH") ? std::getenv("PATH") : "";
  ::setenv("PATH", (dir_ + ":" + path).c_str(), 1);
  Write(R"({"credHelpers":{"reg.example":"test"},"credsStore":"test"})");
  auto c = LookupCredentials("reg.example");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->username, "hu");
  EXPECT_EQ(c->password, "hs");
  auto none = LookupCredentials("elsewhere.example");
  ASSERT_TRUE(none.ok()) << none.status().message();
  EXPECT_TRUE(none->empty());
  Write(R"({"credsStore":"missing-helper"})");
  auto broken = LookupCredentials("reg.example");
  ASSERT_FALSE(broken.ok());
  EXPECT_NE(broken.status().message().find("docker-credential-missing-helper"), std::string::npos);
  ::setenv("PATH", path.c_str(), 1);
}

TEST_F(DockerConfigTest, AnUnreadableConfigIsNamedWithoutSecrets) {
  Write("{\"auths\":{\"h\":{\"auth\":\"c2VjcmV0\"}");
  auto c = LookupCredentials("h");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(), dir_ + "/config.json: not valid JSON");
}

}  // namespace
}  // namespace bcfs::backends
