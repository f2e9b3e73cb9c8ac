// The GitHub Actions cache layout as BuildKit writes it: keys, the version
// hash, the token's scopes, the attributes completed from the environment,
// the REST listing and the synthesized manifest. Expected values derive from
// moby/buildkit cache/remotecache/gha/gha.go (blobKey, indexKey: the first 8
// hex of the digest of the GitHub scope) and the vendored
// tonistiigi/go-actions-cache (version(): sha256 of "|go-actionscache-1.0";
// New(): ac/exp/nbf claims), computed independently with Python's hashlib.
#include "backends/gha_protocol.h"

#include <gtest/gtest.h>

#include <map>

#include "core/base64.h"

namespace bcfs::backends::gha {
namespace {

std::string B64Url(const std::string& s) {
  std::string b = Base64Encode(s);
  while (!b.empty() && b.back() == '=') b.pop_back();
  for (char& c : b) {
    if (c == '+') c = '-';
    if (c == '/') c = '_';
  }
  return b;
}

std::string Jwt(const std::string& payload) {
  return B64Url("{\"alg\":\"HS256\",\"typ\":\"JWT\"}") + "." + B64Url(payload) + ".c2ln";
}

constexpr int64_t kNow = 1800000000;

TEST(GhaKeys, VersionIsTheSha256OfTheGoActionsCacheConstant) {
  EXPECT_EQ(CacheVersion(), "693bb7016429d80366022f036f84856888c9f13e00145f5f6f4dce303a38d6f2");
}

TEST(GhaKeys, BlobKeyIsLayoutVersionOnePlusTheDigest) {
  auto d = Digest::Parse("sha256:" + std::string(64, 'a'));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(BlobKey(*d), "buildkit-blob-1-sha256:" + std::string(64, 'a'));
  EXPECT_EQ(BlobOfKey(BlobKey(*d)), *d);
  EXPECT_FALSE(BlobOfKey("buildkit-blob-1-sha256:" + std::string(64, 'a') + "-sig"));
  EXPECT_FALSE(BlobOfKey("index-buildkit-1-f921bd05#1"));
}

TEST(GhaKeys, IndexKeyHashesTheGithubScope) {
  EXPECT_EQ(ScopeHash("refs/heads/main"), "f921bd05");
  EXPECT_EQ(ScopeHash("refs/heads/feature/x"), "2bdd6c29");
  EXPECT_EQ(ScopeHash("refs/pull/7/merge"), "3f31b38f");
  EXPECT_EQ(IndexKey("buildkit", "refs/heads/main"), "index-buildkit-1-f921bd05");
  EXPECT_EQ(IndexKey("my-app", "refs/heads/feature/x"), "index-my-app-1-2bdd6c29");
}

TEST(GhaKeys, ParseIndexKeyTakesIndexesOfTheScopeOnlySignedOrNot) {
  auto p = ParseIndexKey("index-buildkit-1-f921bd05#12", "buildkit");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->hash, "f921bd05");
  EXPECT_EQ(p->n, 12);
  EXPECT_FALSE(p->sig);
  auto s = ParseIndexKey("index-buildkit-1-f921bd05-sig#3", "buildkit");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->hash, "f921bd05");
  EXPECT_EQ(s->n, 3);
  EXPECT_TRUE(s->sig);
  EXPECT_FALSE(ParseIndexKey("index-buildkit-1-f921bd05-sig#", "buildkit"));
  EXPECT_FALSE(ParseIndexKey("index-buildkit-1-f921bd05-sog#3", "buildkit"));
  EXPECT_EQ(SigBundleKey(Digest::Sha256Of("x")),
            "buildkit-blob-1-" + Digest::Sha256Of("x").ToString() + "-sig");
  EXPECT_FALSE(ParseIndexKey("index-other-1-f921bd05#3", "buildkit"));
  EXPECT_FALSE(ParseIndexKey("index-buildkit-1-f921bd05#", "buildkit"));
  EXPECT_FALSE(ParseIndexKey("index-buildkit-1-f921bd05", "buildkit"));
  EXPECT_FALSE(ParseIndexKey("index-buildkit-1-F921BD05#1", "buildkit"));
  // A scope attribute with dashes: the prefix is matched whole.
  auto q = ParseIndexKey("index-my-app-1-2bdd6c29#1", "my-app");
  ASSERT_TRUE(q);
  EXPECT_EQ(q->hash, "2bdd6c29");
}

TEST(GhaKeys, BranchOfStripsRefsHeads) {
  EXPECT_EQ(BranchOf("refs/heads/main"), "main");
  EXPECT_EQ(BranchOf("refs/heads/feature/x"), "feature/x");
  EXPECT_EQ(BranchOf("refs/pull/7/merge"), "pull/7/merge");
  EXPECT_EQ(BranchOf("main"), "main");
}

TEST(GhaToken, ScopesComeFromTheAcStringClaim) {
  const std::string ac =
      "[{\\\"Scope\\\":\\\"refs/heads/feature/x\\\",\\\"Permission\\\":3},"
      "{\\\"Scope\\\":\\\"refs/heads/main\\\",\\\"Permission\\\":1}]";
  auto t = ParseRuntimeToken(Jwt("{\"ac\":\"" + ac + "\",\"exp\":" + std::to_string(kNow + 60) +
                                 ",\"nbf\":" + std::to_string(kNow - 60) + "}"),
                             kNow);
  ASSERT_TRUE(t.ok()) << t.status().message();
  ASSERT_EQ(t->scopes.size(), 2u);
  EXPECT_EQ(t->scopes[0].scope, "refs/heads/feature/x");
  EXPECT_EQ(t->scopes[0].permission, 3);
  EXPECT_EQ(t->scopes[1].scope, "refs/heads/main");
  EXPECT_EQ(t->scopes[1].permission, 1);
  EXPECT_EQ(t->expires, kNow + 60);
}

TEST(GhaToken, RefusesExpiredNotYetValidAndMalformedTokens) {
  const std::string ac = "\"[]\"";
  auto expired = ParseRuntimeToken(Jwt("{\"ac\":" + ac + ",\"exp\":" + std::to_string(kNow - 1) +
                                       ",\"nbf\":" + std::to_string(kNow - 60) + "}"),
                                   kNow);
  EXPECT_EQ(expired.status().code(), Code::kPermissionDenied);
  EXPECT_NE(expired.status().message().find("expired"), std::string::npos);
  auto early = ParseRuntimeToken(Jwt("{\"ac\":" + ac + ",\"exp\":" + std::to_string(kNow + 60) +
                                     ",\"nbf\":" + std::to_string(kNow + 30) + "}"),
                                 kNow);
  EXPECT_EQ(early.status().code(), Code::kPermissionDenied);
  EXPECT_EQ(ParseRuntimeToken("not-a-jwt", kNow).status().code(), Code::kInvalidArgument);
  auto no_ac = ParseRuntimeToken(Jwt("{\"exp\":1,\"nbf\":0}"), kNow);
  EXPECT_NE(no_ac.status().message().find("\"ac\""), std::string::npos);
  auto list_ac = ParseRuntimeToken(Jwt("{\"ac\":[],\"exp\":1,\"nbf\":0}"), kNow);
  EXPECT_NE(list_ac.status().message().find("not a string"), std::string::npos);
  // The token's text never appears in a message.
  const std::string secret = Jwt("{\"ac\":\"x\",\"exp\":1,\"nbf\":0,\"s\":\"TOPSECRET\"}");
  auto bad = ParseRuntimeToken(secret, kNow);
  EXPECT_EQ(bad.status().message().find("TOPSECRET"), std::string::npos);
}

TEST(GhaToken, TimesBeyondWhatNanosecondsHoldAreRefused) {
  // Seen writing gha_fuzz: "exp": 1e300 was cast to int64 (undefined) and a large
  // one overflowed when the message formatted it in ns.
  for (const char* exp : {"1e300", "9300000000", "-1e19"}) {
    auto t =
        ParseRuntimeToken(Jwt(std::string("{\"ac\":\"[]\",\"exp\":") + exp + ",\"nbf\":0}"), kNow);
    EXPECT_EQ(t.status().code(), Code::kInvalidArgument) << exp;
    EXPECT_EQ(t.status().message(), "the runtime token's \"exp\" claim is out of range") << exp;
  }
  auto nbf = ParseRuntimeToken(
      Jwt("{\"ac\":\"[]\",\"exp\":" + std::to_string(kNow + 60) + ",\"nbf\":-9.3e9}"), kNow);
  EXPECT_EQ(nbf.status().message(), "the runtime token's \"nbf\" claim is out of range");
}

TEST(GhaLookup, TwirpAndV1AnswersHitMissAndBroken) {
  auto v2 = ParseLookupAnswer(
      R"({"ok":true,"signed_download_url":"http://h/b?sig=s","matched_key":"index-k#2"})", 2);
  ASSERT_TRUE(v2.ok() && *v2);
  EXPECT_EQ((*v2)->url, "http://h/b?sig=s");
  EXPECT_EQ((*v2)->matched_key, "index-k#2");
  auto miss = ParseLookupAnswer(R"({"ok":false,"signed_download_url":"x","matched_key":"k"})", 2);
  ASSERT_TRUE(miss.ok());
  EXPECT_FALSE(*miss);
  auto v1 =
      ParseLookupAnswer(R"({"cacheKey":"k","scope":"refs/heads/main","archiveLocation":"u"})", 1);
  ASSERT_TRUE(v1.ok() && *v1);
  EXPECT_EQ((*v1)->url, "u");
  EXPECT_EQ((*v1)->matched_key, "k");
  EXPECT_EQ(ParseLookupAnswer("[]", 2).status().message(), "the answer is not a JSON object");
  EXPECT_EQ(ParseLookupAnswer(R"({"cacheKey":"k"})", 1).status().message(),
            "the answer has no download URL");
}

TEST(GhaDuration, ParsesGoDurations) {
  EXPECT_EQ(*ParseGoDuration("10m"), 600000);
  EXPECT_EQ(*ParseGoDuration("1h30m"), 5400000);
  EXPECT_EQ(*ParseGoDuration("2.5s"), 2500);
  EXPECT_EQ(*ParseGoDuration("500ms"), 500);
  EXPECT_EQ(*ParseGoDuration("0"), 0);
  EXPECT_FALSE(ParseGoDuration("10").ok());
  EXPECT_FALSE(ParseGoDuration("ten minutes").ok());
}

struct Env {
  std::map<std::string, std::string> vars;
  Getenv fn() const {
    return [this](const char* n) {
      auto it = vars.find(n);
      return it == vars.end() ? std::string() : it->second;
    };
  }
};

SourceSpec Spec(const std::string& text) {
  auto s = ParseSourceString(text);
  EXPECT_TRUE(s.ok()) << s.status().message();
  return *s;
}

TEST(GhaConfig, V2FromTheRunnerVariablesWhenTheServiceFlagIsSet) {
  Env env{{{"ACTIONS_RUNTIME_TOKEN", "tok"},
           {"ACTIONS_RESULTS_URL", "https://results-receiver.example/"},
           {"ACTIONS_CACHE_SERVICE_V2", "True"}}};
  auto c = ResolveConfig(Spec("type=gha"), env.fn());
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->version, 2);
  EXPECT_EQ(c->url, "https://results-receiver.example/");
  EXPECT_EQ(c->token, "tok");
  EXPECT_EQ(c->scope, "buildkit");
  EXPECT_EQ(c->timeout_ms, 600000);
}

TEST(GhaConfig, V1ForACacheUrlWithoutTheServiceFlag) {
  Env env{{{"ACTIONS_RUNTIME_TOKEN", "tok"},
           {"ACTIONS_CACHE_URL", "https://ghes.example/_services/cache/"},
           {"ACTIONS_RESULTS_URL", "https://results.example/"}}};
  auto c = ResolveConfig(Spec("type=gha,scope=app"), env.fn());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->version, 1);
  EXPECT_EQ(c->url, "https://ghes.example/_services/cache/");
  EXPECT_EQ(c->scope, "app");
}

TEST(GhaConfig, TheDaemonsVersionRules) {
  Env none;
  // url_v2 wins unless version=1.
  auto a = ResolveConfig(Spec("type=gha,token=t,url=http://v1/,url_v2=http://v2/"), none.fn());
  EXPECT_EQ(a->url, "http://v2/");
  EXPECT_EQ(a->version, 2);
  auto b =
      ResolveConfig(Spec("type=gha,token=t,url=http://v1/,url_v2=http://v2/,version=1"), none.fn());
  EXPECT_EQ(b->url, "http://v1/");
  EXPECT_EQ(b->version, 1);
  // No version known: the results-receiver host means v2.
  auto c = ResolveConfig(
      Spec("type=gha,token=t,url=https://results-receiver.actions.githubusercontent.com/x/"),
      none.fn());
  EXPECT_EQ(c->version, 2);
  auto d = ResolveConfig(Spec("type=gha,token=t,url=http://127.0.0.1:1/"), none.fn());
  EXPECT_EQ(d->version, 1);
  EXPECT_EQ(
      ResolveConfig(Spec("type=gha,token=t,url=http://x/,version=two"), none.fn()).status().code(),
      Code::kInvalidArgument);
  EXPECT_EQ(
      *&ResolveConfig(Spec("type=gha,token=t,url=http://x/,timeout=90s"), none.fn())->timeout_ms,
      90000);
}

TEST(GhaConfig, RestOnlyAndNothingAtAll) {
  Env gh{{{"GITHUB_REPOSITORY", "o/r"}, {"GITHUB_TOKEN", "ght"}, {"GITHUB_API_URL", "http://a/"}}};
  auto c = ResolveConfig(Spec("type=gha"), gh.fn());
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(c->HasService());
  EXPECT_TRUE(c->HasRest());
  EXPECT_EQ(c->api_url, "http://a");
  Env none;
  auto n = ResolveConfig(Spec("type=gha,ghtoken=SECRETX"), none.fn());
  EXPECT_EQ(n.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(n.status().message().find("SECRETX"), std::string::npos);
  auto bad = ResolveConfig(Spec("type=gha,repository=norepo,ghtoken=x"), none.fn());
  EXPECT_EQ(bad.status().code(), Code::kInvalidArgument);
}

TEST(GhaRest, ParsesAPage) {
  auto p = ParseRestPage(R"({"total_count":2,"actions_caches":[
    {"id":5,"ref":"refs/heads/main","key":"index-buildkit-1-f921bd05#1","version":"v",
     "last_accessed_at":"2026-01-02T03:04:05.5Z","created_at":"2026-01-01T00:00:00Z",
     "size_in_bytes":123},
    {"id":6,"ref":"refs/heads/main","key":"k2","size_in_bytes":7}]})");
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ(p->total_count, 2);
  ASSERT_EQ(p->entries.size(), 2u);
  EXPECT_EQ(p->entries[0].id, 5);
  EXPECT_EQ(p->entries[0].size, 123u);
  EXPECT_EQ(p->entries[0].last_accessed, *ParseRfc3339("2026-01-02T03:04:05.5Z"));
  EXPECT_EQ(p->entries[1].key, "k2");
  EXPECT_FALSE(ParseRestPage("[]").ok());
  EXPECT_FALSE(ParseRestPage(R"({"actions_caches":[{"id":1}]})").ok());
}

TEST(GhaSynthesize, IndexShapeManifestFromTheConfigAnnotations) {
  const std::string l1 = "sha256:" + std::string(64, '1'), d1 = "sha256:" + std::string(64, 'd');
  const std::string config =
      R"({"layers":[{"blob":")" + l1 +
      R"(","parent":-1,"annotations":{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","diffID":")" +
      d1 + R"(","size":42,"createdAt":"2026-01-01T00:00:00Z"}}],"records":[{"digest":"sha256:)" +
      std::string(64, 'r') + R"(","layers":[{"layer":0,"createdAt":"0001-01-01T00:00:00Z"}]}]})";
  auto m = SynthesizeManifest(config, "cfg");
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ(*m,
            "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\","
            "\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\","
            "\"digest\":\"" +
                l1 +
                "\",\"size\":42,\"annotations\":{\"buildkit/createdat\":\"2026-01-01T00:00:"
                "00Z\",\"containerd.io/uncompressed\":\"" +
                d1 +
                "\"}},{\"mediaType\":\"application/vnd.buildkit.cacheconfig.v0\","
                "\"digest\":\"" +
                Digest::Sha256Of(config).ToString() +
                "\",\"size\":" + std::to_string(config.size()) + "}]}");
  auto no_diff = SynthesizeManifest(
      R"({"layers":[{"blob":")" + l1 + R"(","parent":-1,"annotations":{"size":1}}]})", "cfg");
  EXPECT_EQ(no_diff.status().code(), Code::kCorrupt);
}

}  // namespace
}  // namespace bcfs::backends::gha
