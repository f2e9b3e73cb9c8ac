#include "backends/naming.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace bcfs::backends {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

SourceSpec Parse(std::string_view text) {
  auto r = ParseSourceString(text);
  EXPECT_TRUE(r.ok()) << text << ": " << r.status().ToString();
  return r.ok() ? *r : SourceSpec{};
}

std::vector<SourceSpec> ParseAll(std::initializer_list<std::string_view> texts) {
  std::vector<SourceSpec> out;
  for (std::string_view t : texts) out.push_back(Parse(t));
  return out;
}

std::string AssignError(const std::vector<SourceSpec>& specs) {
  auto r = AssignSourceNames(specs);
  EXPECT_FALSE(r.ok());
  if (r.ok()) return "";
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  return r.status().message();
}

TEST(DefaultSourceName, LocalIsTheBasenameOfSrc) {
  EXPECT_EQ(DefaultSourceName(Parse("type=local,src=/var/cache/bk")), "bk");
  EXPECT_EQ(DefaultSourceName(Parse("type=local,src=/var/cache/bk///")), "bk");
  EXPECT_EQ(DefaultSourceName(Parse("type=local,dest=bk")), "bk");
  EXPECT_EQ(DefaultSourceName(Parse("type=local,src=/")), "");
}

TEST(DefaultSourceName, RegistryIsTheLastRepositoryComponent) {
  EXPECT_EQ(DefaultSourceName(Parse("type=registry,ref=host:5000/a/b/cache:main")), "cache");
  EXPECT_EQ(DefaultSourceName(Parse("user/app:cache")), "app");
  EXPECT_EQ(DefaultSourceName(Parse("ubuntu")), "ubuntu");
  EXPECT_EQ(DefaultSourceName(Parse("host:5000/repo")), "repo");
  EXPECT_EQ(DefaultSourceName(Parse("host/repo:*")), "repo");
  EXPECT_EQ(
      DefaultSourceName(Parse("host:5000/app/cache:v1@sha256:"
                              "4f4fb700ef54461cfa02571ae0db9a0dc1e0cdb5577484a6d75e68dc38e8acc1")),
      "cache");
}

TEST(DefaultSourceName, S3IsTheBucket) {
  EXPECT_EQ(DefaultSourceName(Parse("type=s3,bucket=ci-cache,region=r")), "ci-cache");
  // Without bucket= it comes from AWS_BUCKET, which naming does not read.
  EXPECT_EQ(DefaultSourceName(Parse("type=s3,region=r")), "s3");
}

TEST(DefaultSourceName, AzblobIsTheContainer) {
  EXPECT_EQ(DefaultSourceName(Parse("type=azblob,account_url=https://a,container=c1")), "c1");
  EXPECT_EQ(DefaultSourceName(Parse("type=azblob,account_url=https://a")), "buildkit-cache");
}

TEST(DefaultSourceName, GhaIsGhaDashScope) {
  EXPECT_EQ(DefaultSourceName(Parse("type=gha,scope=img")), "gha-img");
  EXPECT_EQ(DefaultSourceName(Parse("type=gha")), "gha-buildkit");
}

TEST(AssignSourceNames, AsWinsOverTheDefault) {
  auto r = AssignSourceNames(ParseAll({"type=local,src=/a/bk,as=mine", "type=gha"}));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_THAT(*r, ElementsAre("mine", "gha-buildkit"));
}

TEST(AssignSourceNames, CollisionsGetSuffixesInCommandLineOrder) {
  auto r = AssignSourceNames(ParseAll({"type=local,src=/a/x", "type=local,src=/b/x",
                                       "type=registry,ref=h/x:t", "type=s3,bucket=y,region=r"}));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_THAT(*r, ElementsAre("x", "x-2", "x-3", "y"));
}

TEST(AssignSourceNames, GeneratedSuffixSkipsAnExplicitName) {
  auto r = AssignSourceNames(
      ParseAll({"type=local,src=/a/x", "type=local,src=/b/x", "type=local,src=/c,as=x-2"}));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_THAT(*r, ElementsAre("x", "x-3", "x-2"));
}

TEST(AssignSourceNames, GeneratedSuffixSkipsALaterDefaultName) {
  auto r = AssignSourceNames(
      ParseAll({"type=local,src=/a/x", "type=local,src=/b/x", "type=local,src=/c/x-2"}));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_THAT(*r, ElementsAre("x", "x-3", "x-2"));
}

TEST(AssignSourceNames, ExplicitNameKeepsItsNameBeforeAnEarlierDefault) {
  auto r = AssignSourceNames(ParseAll({"type=local,src=/a/x", "type=gha,as=x"}));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_THAT(*r, ElementsAre("x-2", "x"));
}

TEST(AssignSourceNames, TwoSourcesAskingForOneNameAreRefused) {
  EXPECT_EQ(AssignError(ParseAll({"type=local,src=/a,as=x", "type=gha,token=T,as=x"})),
            "source type=gha,token=***,as=x: as=x is already the name of source "
            "type=local,src=/a,as=x");
}

TEST(AssignSourceNames, DefaultNameStartingWithDotIsRefusedNamingTheSource) {
  EXPECT_EQ(AssignError(ParseAll({"type=local,src=/var/.bk"})),
            "source type=local,src=/var/.bk: default source name \".bk\" starts with '.' "
            "(reserved for . .. and .buildcachefs); give it a name with as=NAME");
  EXPECT_THAT(AssignError(ParseAll({"type=local,src=/"})),
              HasSubstr("source type=local,src=/: default source name \"\" is empty"));
  EXPECT_THAT(AssignError(ParseAll({"type=gha,scope=feature/x,token=T"})),
              HasSubstr("source type=gha,scope=feature/x,token=***: default source name "
                        "\"gha-feature/x\" contains '/'; give it a name with as=NAME"));
}

TEST(AssignSourceNames, BadExplicitNamesAreRefusedNamingTheSource) {
  // The parser refuses these too; specs built in code go through the same rule.
  SourceSpec s = Parse("type=local,src=/a");
  s.as_name = ".x";
  EXPECT_THAT(AssignError({s}),
              HasSubstr("source type=local,src=/a,as=.x: source name \".x\" starts with '.'"));
  s.as_name = "a/b";
  EXPECT_THAT(AssignError({s}), HasSubstr("source name \"a/b\" contains '/'"));
  s.as_name = std::string("a\0b", 3);
  EXPECT_THAT(AssignError({s}), HasSubstr("source name \"a\\0b\" contains NUL"));
  s.as_name = std::string(256, 'n');
  EXPECT_THAT(AssignError({s}), HasSubstr("is longer than 255 bytes"));
}

TEST(CheckSourceName, AcceptsOrdinaryNames) {
  EXPECT_TRUE(CheckSourceName("cache").ok());
  EXPECT_TRUE(CheckSourceName("a.b-c_d@e").ok());
  EXPECT_TRUE(CheckSourceName("gr\xc3\xbc\xc3\x9f").ok());
  EXPECT_TRUE(CheckSourceName(std::string(255, 'n')).ok());
}

TEST(EncodeRefName, PercentEncodesSlashPercentNulAndLeadingDot) {
  EXPECT_EQ(EncodeRefName("feature/x"), "feature%2Fx");
  EXPECT_EQ(EncodeRefName(".hidden"), "%2Ehidden");
  EXPECT_EQ(EncodeRefName("a%b"), "a%25b");
  EXPECT_EQ(EncodeRefName(std::string("a\0b", 3)), "a%00b");
  EXPECT_EQ(EncodeRefName("."), "%2E");
  EXPECT_EQ(EncodeRefName(".."), "%2E.");
  EXPECT_EQ(EncodeRefName("v1.2/.git"), "v1.2%2F.git");
  EXPECT_EQ(EncodeRefName("latest"), "latest");
  EXPECT_EQ(EncodeRefName("main@linux-arm64-v8"), "main@linux-arm64-v8");
  EXPECT_EQ(EncodeRefName("caf\xc3\xa9/\xe6\x97\xa5"), "caf\xc3\xa9%2F\xe6\x97\xa5");
  EXPECT_EQ(EncodeRefName(""), "");
}

TEST(DecodeRefName, ReversesEncodeAndKeepsStrayPercents) {
  EXPECT_EQ(DecodeRefName("feature%2Fx"), "feature/x");
  EXPECT_EQ(DecodeRefName("feature%2fx"), "feature/x");
  EXPECT_EQ(DecodeRefName("%2E"), ".");
  EXPECT_EQ(DecodeRefName("a%00b"), std::string("a\0b", 3));
  EXPECT_EQ(DecodeRefName("100%"), "100%");
  EXPECT_EQ(DecodeRefName("%4"), "%4");
  EXPECT_EQ(DecodeRefName("%zz"), "%zz");
}

TEST(EncodeRefName, RoundTripsEveryByte) {
  std::string all;
  for (int c = 0; c < 256; ++c) all += static_cast<char>(c);
  for (const std::string& raw :
       {all, std::string("."), std::string(".."), std::string("%2F"), std::string("%%"),
        std::string("a/b/c"), std::string("caf\xc3\xa9/\xe6\x97\xa5/\xf0\x9f\x90\xb3"),
        std::string("\0\0", 2), std::string("/")}) {
    std::string enc = EncodeRefName(raw);
    EXPECT_EQ(enc.find('/'), std::string::npos);
    EXPECT_EQ(enc.find('\0'), std::string::npos);
    EXPECT_NE(enc.front(), '.');
    EXPECT_EQ(DecodeRefName(enc), raw);
  }
}

TEST(DigestRefName, IsAtAndTwelveHex) {
  auto d = Digest::Parse("sha256:4f4fb700ef54461cfa02571ae0db9a0dc1e0cdb5577484a6d75e68dc38e8acc1");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(DigestRefName(*d), "@4f4fb700ef54");
}

}  // namespace
}  // namespace bcfs::backends
