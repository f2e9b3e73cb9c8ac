// SigV4 against AWS's published test suite and the S3 reference's examples
// (backends/testdata/sigv4/README.md), and the AWS credential chain.
#include "backends/s3_sign.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "core/digest.h"

namespace bcfs::backends::s3 {
namespace {

namespace fs = std::filesystem;

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Parses a .req file: "METHOD PATH[?QUERY] HTTP/1.1", headers, a blank line, the body.
struct ParsedReq {
  SigningRequest req;
  std::string body;
};

ParsedReq ParseReq(const std::string& text) {
  ParsedReq out;
  size_t body_at = text.find("\n\n");
  std::string head = text.substr(0, body_at);
  if (body_at != std::string::npos) out.body = text.substr(body_at + 2);
  std::istringstream lines(head);
  std::string line;
  std::getline(lines, line);
  size_t sp = line.find(' ');
  out.req.method = line.substr(0, sp);
  std::string target = line.substr(sp + 1, line.rfind(" HTTP/1.1") - sp - 1);
  size_t q = target.find('?');
  out.req.path = target.substr(0, q);
  if (out.req.path.empty()) out.req.path = "/";
  if (q != std::string::npos) {
    std::string query = target.substr(q + 1);
    size_t pos = 0;
    while (pos <= query.size()) {
      size_t amp = query.find('&', pos);
      if (amp == std::string::npos) amp = query.size();
      std::string kv = query.substr(pos, amp - pos);
      size_t eq = kv.find('=');
      out.req.query.emplace_back(kv.substr(0, eq),
                                 eq == std::string::npos ? "" : kv.substr(eq + 1));
      pos = amp + 1;
    }
  }
  while (std::getline(lines, line)) {
    size_t colon = line.find(':');
    out.req.headers.push_back({line.substr(0, colon), line.substr(colon + 1)});
  }
  return out;
}

std::string NoSpaceAfterComma(std::string s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == ' ' && i > 0 && s[i - 1] == ',') continue;
    out += s[i];
  }
  return out;
}

fs::path TestData() { return fs::path(BCFS_SIGV4_TESTDATA); }

// Every case of a vector folder, checked: the Authorization header and, where
// published, the canonical request and the string to sign.
void CheckFolder(const fs::path& dir, const SigningScope& base_scope, const AwsCredentials& creds,
                 bool payload_from_header, int* checked) {
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename();
    SCOPED_TRACE(name);
    ParsedReq p = ParseReq(ReadFile(entry.path() / (name + ".req")));
    SigningScope scope = base_scope;
    p.req.payload_hash = Digest::Sha256Of(p.body).hex();
    for (const auto& h : p.req.headers) {
      std::string lname = h.name;
      for (char& c : lname) c = static_cast<char>(std::tolower(c));
      std::string v = h.value;
      while (!v.empty() && v.front() == ' ') v.erase(0, 1);
      while (!v.empty() && v.back() == ' ') v.pop_back();
      if (lname == "x-amz-date") scope.amz_date = v;
      if (lname == "x-amz-content-sha256" && payload_from_header) p.req.payload_hash = v;
    }
    SignedRequest s = SignV4(p.req, scope, creds);
    std::string want = ReadFile(entry.path() / (name + ".authz"));
    EXPECT_EQ(NoSpaceAfterComma(s.authorization), NoSpaceAfterComma(want));
    if (fs::exists(entry.path() / (name + ".creq"))) {
      EXPECT_EQ(s.canonical_request, ReadFile(entry.path() / (name + ".creq")));
    }
    if (fs::exists(entry.path() / (name + ".sts"))) {
      EXPECT_EQ(s.string_to_sign, ReadFile(entry.path() / (name + ".sts")));
    }
    ++*checked;
  }
}

TEST(SigV4, AwsTestSuiteVectors) {
  AwsCredentials creds{"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "", "test"};
  int checked = 0;
  CheckFolder(TestData() / "suite", {"", "us-east-1", "service"}, creds, false, &checked);
  EXPECT_EQ(checked, 16);
}

TEST(SigV4, S3DocumentationExamples) {
  AwsCredentials creds{"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "",
                       "test"};
  int checked = 0;
  CheckFolder(TestData() / "s3", {"", "us-east-1", "s3"}, creds, true, &checked);
  EXPECT_EQ(checked, 4);
}

TEST(SigV4, UriEncodeKeepsUnreservedAndEncodesTheRestUpperCase) {
  EXPECT_EQ(UriEncode("blobs/sha256:ab", true), "blobs/sha256%3Aab");
  EXPECT_EQ(UriEncode("a b+c/ü~", false), "a%20b%2Bc%2F%C3%BC~");
  EXPECT_EQ(CanonicalQuery({{"prefix", "dir/"}, {"list-type", "2"}, {"a", ""}}),
            "a=&list-type=2&prefix=dir%2F");
}

TEST(SigV4, S3HeadersCarryDateHashTokenAndASignatureOverThem) {
  AwsCredentials creds{"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                       "SESSIONTOKEN", "test"};
  // 2013-05-24T00:00:00Z
  const TimeNs t = 1369353600LL * 1000000000LL;
  auto h = SignS3Headers("GET", "examplebucket.s3.amazonaws.com", "/test.txt", {}, "us-east-1",
                         creds, t);
  std::map<std::string, std::string> m;
  for (const auto& x : h) m[x.name] = x.value;
  EXPECT_EQ(m["x-amz-date"], "20130524T000000Z");
  EXPECT_EQ(m["x-amz-content-sha256"], std::string(kEmptyPayloadHash));
  EXPECT_EQ(m["x-amz-security-token"], "SESSIONTOKEN");
  // Recompute independently from the signing primitives.
  SigningRequest r{"GET",
                   "/test.txt",
                   {},
                   {{"host", "examplebucket.s3.amazonaws.com"},
                    {"x-amz-content-sha256", std::string(kEmptyPayloadHash)},
                    {"x-amz-date", "20130524T000000Z"},
                    {"x-amz-security-token", "SESSIONTOKEN"}},
                   std::string(kEmptyPayloadHash)};
  auto s = SignV4(r, {"20130524T000000Z", "us-east-1", "s3"}, creds);
  EXPECT_EQ(s.signed_headers, "host;x-amz-content-sha256;x-amz-date;x-amz-security-token");
  EXPECT_EQ(m["Authorization"], s.authorization);
  // Anonymous: no Authorization at all.
  auto anon = SignS3Headers("GET", "h", "/k", {}, "us-east-1", AwsCredentials{}, t);
  ASSERT_EQ(anon.size(), 1u);
  EXPECT_EQ(anon[0].name, "x-amz-content-sha256");
}

// --- the credential chain -------------------------------------------------

struct FakeEnv {
  std::map<std::string, std::string> vars;
  fs::path home;
  AwsEnvironment Env() const {
    AwsEnvironment e;
    auto copy = vars;
    e.getenv = [copy](const char* n) {
      auto it = copy.find(n);
      return it == copy.end() ? std::string() : it->second;
    };
    e.home = home;
    return e;
  }
};

class Chain : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("s3sign-" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_ / ".aws");
    env_.home = dir_;
  }
  void TearDown() override { fs::remove_all(dir_); }
  void Write(const fs::path& p, const std::string& text) { std::ofstream(p) << text; }
  SourceSpec Spec(const std::string& s) { return *ParseSourceString(s); }

  fs::path dir_;
  FakeEnv env_;
};

TEST_F(Chain, SourceStringWinsOverEnvironmentOnlyWithBothIdAndSecret) {
  env_.vars = {{"AWS_ACCESS_KEY_ID", "ENVID"}, {"AWS_SECRET_ACCESS_KEY", "ENVSECRET"}};
  auto c = ResolveAwsCredentials(
      Spec("type=s3,bucket=b,region=r,access_key_id=SID,secret_access_key=SS,session_token=T"),
      env_.Env());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->access_key_id, "SID");
  EXPECT_EQ(c->secret_access_key, "SS");
  EXPECT_EQ(c->session_token, "T");
  // Only the id in the source string: BuildKit ignores it; the environment is used.
  c = ResolveAwsCredentials(Spec("type=s3,bucket=b,region=r,access_key_id=SID"), env_.Env());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->access_key_id, "ENVID");
  EXPECT_EQ(c->origin, "the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)");
}

TEST_F(Chain, EnvironmentWithSessionToken) {
  env_.vars = {{"AWS_ACCESS_KEY_ID", "ENVID"},
               {"AWS_SECRET_ACCESS_KEY", "ENVSECRET"},
               {"AWS_SESSION_TOKEN", "TOK"}};
  Write(dir_ / ".aws/credentials",
        "[default]\naws_access_key_id=FILEID\naws_secret_access_key=F\n");
  auto c = ResolveAwsCredentials(Spec("type=s3,bucket=b"), env_.Env());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->access_key_id, "ENVID");
  EXPECT_EQ(c->session_token, "TOK");
}

TEST_F(Chain, DefaultProfileFromHomeCredentialsThenConfig) {
  Write(dir_ / ".aws/credentials",
        "# comment\n[default]\naws_access_key_id = FILEID\naws_secret_access_key = FILESECRET\n"
        "aws_session_token = FILETOK\n");
  auto c = ResolveAwsCredentials(Spec("type=s3,bucket=b"), env_.Env());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->access_key_id, "FILEID");
  EXPECT_EQ(c->secret_access_key, "FILESECRET");
  EXPECT_EQ(c->session_token, "FILETOK");
  EXPECT_EQ(c->origin, "profile default in " + (dir_ / ".aws/credentials").string());
  fs::remove(dir_ / ".aws/credentials");
  Write(dir_ / ".aws/config",
        "[default]\nregion = us-east-1\naws_access_key_id=CID\naws_secret_access_key=CS\n");
  c = ResolveAwsCredentials(Spec("type=s3,bucket=b"), env_.Env());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->access_key_id, "CID");
}

TEST_F(Chain, NamedProfileAndExplicitFiles) {
  Write(dir_ / "creds", "[default]\naws_access_key_id=D\naws_secret_access_key=DS\n");
  Write(dir_ / "config",
        "[profile ci]\naws_access_key_id=CIID\naws_secret_access_key=CISECRET\n"
        "aws_session_token=CITOK\n");
  env_.vars = {{"AWS_PROFILE", "ci"},
               {"AWS_SHARED_CREDENTIALS_FILE", (dir_ / "creds").string()},
               {"AWS_CONFIG_FILE", (dir_ / "config").string()}};
  auto c = ResolveAwsCredentials(Spec("type=s3,bucket=b"), env_.Env());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->access_key_id, "CIID");
  EXPECT_EQ(c->session_token, "CITOK");
  EXPECT_EQ(c->origin, "profile ci in " + (dir_ / "config").string());
}

TEST_F(Chain, UnknownProfileAndHalfACredentialAreErrorsWithoutSecrets) {
  Write(dir_ / ".aws/credentials", "[other]\naws_access_key_id=X\naws_secret_access_key=Y\n");
  env_.vars = {{"AWS_PROFILE", "nope"}};
  auto c = ResolveAwsCredentials(Spec("type=s3,bucket=b"), env_.Env());
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), Code::kInvalidArgument);
  EXPECT_NE(c.status().message().find("profile nope"), std::string::npos);
  Write(dir_ / ".aws/credentials", "[nope]\naws_access_key_id=HALFID\n");
  c = ResolveAwsCredentials(Spec("type=s3,bucket=b"), env_.Env());
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message().find("HALFID"), std::string::npos);
}

TEST_F(Chain, NothingConfiguredIsAnonymous) {
  auto c = ResolveAwsCredentials(Spec("type=s3,bucket=b"), env_.Env());
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->empty());
  EXPECT_EQ(c->origin, "");
}

}  // namespace
}  // namespace bcfs::backends::s3
