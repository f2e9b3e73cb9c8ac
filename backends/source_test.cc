#include "backends/source.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace bcfs::backends {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kDigest[] =
    "sha256:4f4fb700ef54461cfa02571ae0db9a0dc1e0cdb5577484a6d75e68dc38e8acc1";

SourceSpec MustParse(std::string_view text) {
  auto r = ParseSourceString(text);
  EXPECT_TRUE(r.ok()) << text << ": " << r.status().ToString();
  return r.ok() ? *r : SourceSpec{};
}

// The message of the kInvalidArgument that `text` must produce.
std::string ErrorOf(std::string_view text) {
  auto r = ParseSourceString(text);
  EXPECT_FALSE(r.ok()) << text << " parsed";
  if (r.ok()) return "";
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << r.status().ToString();
  return r.status().message();
}

using Attrs = std::map<std::string, std::string>;

TEST(SourceTypeName, NamesEveryTypeAsBuildx) {
  EXPECT_EQ(SourceTypeName(SourceType::kLocal), "local");
  EXPECT_EQ(SourceTypeName(SourceType::kRegistry), "registry");
  EXPECT_EQ(SourceTypeName(SourceType::kS3), "s3");
  EXPECT_EQ(SourceTypeName(SourceType::kAzblob), "azblob");
  EXPECT_EQ(SourceTypeName(SourceType::kGha), "gha");
}

TEST(ParseSourceString, LocalTakesSrcTagAndDigest) {
  SourceSpec s = MustParse(std::string("type=local,src=/var/cache/bk,tag=main,digest=") + kDigest);
  EXPECT_EQ(s.type, SourceType::kLocal);
  EXPECT_EQ(s.attrs, (Attrs{{"src", "/var/cache/bk"}, {"tag", "main"}, {"digest", kDigest}}));
  EXPECT_EQ(s.as_name, "");
  EXPECT_TRUE(s.ignored_keys.empty());
}

TEST(ParseSourceString, LocalDestIsStoredAsSrc) {
  SourceSpec s = MustParse("type=local,dest=/var/cache/bk");
  EXPECT_EQ(s.attrs, (Attrs{{"src", "/var/cache/bk"}}));
  EXPECT_FALSE(s.Has("dest"));
}

TEST(ParseSourceString, LocalSrcAndDestTogetherAreADuplicate) {
  EXPECT_THAT(ErrorOf("type=local,src=/a,dest=/b"),
              HasSubstr("key \"src\" given twice (dest is an alias of src) in source "
                        "type=local,src=/a,dest=/b"));
}

TEST(ParseSourceString, LocalNeedsSrc) {
  EXPECT_EQ(ErrorOf("type=local,tag=main"),
            "type=local needs src= (or dest=) in source type=local,tag=main");
  EXPECT_EQ(ErrorOf("type=local,src="), "empty value for key \"src\" in source type=local,src=");
  EXPECT_EQ(ErrorOf("type=local,dest="), "empty value for key \"src\" in source type=local,dest=");
}

TEST(ParseSourceString, LocalDigestMustBeADigest) {
  std::string m = ErrorOf("type=local,src=/x,digest=sha256:abc");
  EXPECT_THAT(m, HasSubstr("bad digest= \"sha256:abc\" ("));
  EXPECT_THAT(m, HasSubstr("in source type=local,src=/x,digest=sha256:abc"));
  EXPECT_THAT(ErrorOf("type=local,src=/x,digest="), HasSubstr("bad digest= \"\""));
}

TEST(ParseSourceString, RegistryTakesRefAndInsecure) {
  SourceSpec s = MustParse("type=registry,ref=host:5000/app/cache:main,registry.insecure=true");
  EXPECT_EQ(s.type, SourceType::kRegistry);
  EXPECT_EQ(s.attrs, (Attrs{{"ref", "host:5000/app/cache:main"}, {"registry.insecure", "true"}}));
}

TEST(ParseSourceString, RegistryNeedsRef) {
  EXPECT_EQ(ErrorOf("type=registry"), "type=registry needs ref= in source type=registry");
  EXPECT_EQ(ErrorOf("type=registry,ref="),
            "empty value for key \"ref\" in source type=registry,ref=");
}

TEST(ParseSourceString, TextWithoutEqualsIsARegistryRef) {
  SourceSpec s = MustParse("user/app:cache");
  EXPECT_EQ(s.type, SourceType::kRegistry);
  EXPECT_EQ(s.attrs, (Attrs{{"ref", "user/app:cache"}}));
  SourceSpec d = MustParse(std::string("host:5000/app@") + kDigest);
  EXPECT_EQ(d.attrs, (Attrs{{"ref", std::string("host:5000/app@") + kDigest}}));
  // Only a single field is the shorthand, as in buildx.
  EXPECT_EQ(ErrorOf("user/app:cache,other"),
            "source string: field 1 \"user/app:cache\" is not key=value");
}

TEST(ParseSourceString, S3TakesEveryImportKey) {
  SourceSpec s = MustParse(
      "type=s3,bucket=b,region=eu-west-1,prefix=p/,blobs_prefix=bl/,manifests_prefix=mf/,"
      "name=main;dev,endpoint_url=http://127.0.0.1:9000,use_path_style=true,access_key_id=AKID,"
      "secret_access_key=SECRET,session_token=TOKEN,disable_accept_encoding=true,"
      "retry_mode=adaptive,retry_max_attempts=5");
  EXPECT_EQ(s.type, SourceType::kS3);
  EXPECT_EQ(s.attrs, (Attrs{{"bucket", "b"},
                            {"region", "eu-west-1"},
                            {"prefix", "p/"},
                            {"blobs_prefix", "bl/"},
                            {"manifests_prefix", "mf/"},
                            {"name", "main;dev"},
                            {"endpoint_url", "http://127.0.0.1:9000"},
                            {"use_path_style", "true"},
                            {"access_key_id", "AKID"},
                            {"secret_access_key", "SECRET"},
                            {"session_token", "TOKEN"},
                            {"disable_accept_encoding", "true"},
                            {"retry_mode", "adaptive"},
                            {"retry_max_attempts", "5"}}));
}

TEST(ParseSourceString, S3BucketAndRegionMayComeFromTheEnvironment) {
  SourceSpec s = MustParse("type=s3,name=main");
  EXPECT_EQ(s.attrs, (Attrs{{"name", "main"}}));
}

TEST(ParseSourceString, AzblobTakesEveryImportKey) {
  SourceSpec s = MustParse(
      "type=azblob,account_url=https://acct.blob.core.windows.net,account_name=acct,"
      "container=c,prefix=p,blobs_prefix=b,manifests_prefix=m,name=a;b,secret_access_key=KEY");
  EXPECT_EQ(s.type, SourceType::kAzblob);
  EXPECT_EQ(s.attrs, (Attrs{{"account_url", "https://acct.blob.core.windows.net"},
                            {"account_name", "acct"},
                            {"container", "c"},
                            {"prefix", "p"},
                            {"blobs_prefix", "b"},
                            {"manifests_prefix", "m"},
                            {"name", "a;b"},
                            {"secret_access_key", "KEY"}}));
  // account_url may come from BUILDKIT_AZURE_STORAGE_ACCOUNT_URL.
  EXPECT_EQ(MustParse("type=azblob,name=main").attrs, (Attrs{{"name", "main"}}));
}

TEST(ParseSourceString, GhaTakesEveryImportKeyAndNeedsNone) {
  SourceSpec s = MustParse(
      "type=gha,scope=img,url=https://cache/,url_v2=https://results/,token=JWT,version=2,"
      "timeout=5m,repository=o/r,ghtoken=GHP");
  EXPECT_EQ(s.type, SourceType::kGha);
  EXPECT_EQ(s.attrs, (Attrs{{"scope", "img"},
                            {"url", "https://cache/"},
                            {"url_v2", "https://results/"},
                            {"token", "JWT"},
                            {"version", "2"},
                            {"timeout", "5m"},
                            {"repository", "o/r"},
                            {"ghtoken", "GHP"}}));
  EXPECT_TRUE(MustParse("type=gha").attrs.empty());
}

TEST(ParseSourceString, QuotedFieldsFollowGoCsv) {
  SourceSpec s = MustParse("type=s3,\"name=a,b\",bucket=b");
  EXPECT_EQ(s.Get("name"), "a,b");
  SourceSpec q = MustParse("\"type=local\",\"src=/x \"\"y\"\"\",\"tag=\"");
  EXPECT_EQ(q.attrs, (Attrs{{"src", "/x \"y\""}, {"tag", ""}}));
  // ';' separates s3/azblob names; it is not a field separator.
  EXPECT_EQ(MustParse("type=s3,name=a;b").Get("name"), "a;b");
  // A value may hold '=': the field splits at the first one.
  EXPECT_EQ(MustParse("type=local,src=/a=b").Get("src"), "/a=b");
}

TEST(ParseSourceString, BadQuotingIsRefusedWithItsColumn) {
  EXPECT_EQ(ErrorOf("type=local,src=\"/x\""),
            "source string: bare \" in non-quoted field at column 16");
  EXPECT_EQ(ErrorOf("type=local,\"src=/x"),
            "source string: extraneous or missing \" in quoted field opened at column 12");
  EXPECT_EQ(ErrorOf("type=local,\"src=/x\"y"),
            "source string: extraneous or missing \" in quoted field at column 20");
  EXPECT_EQ(ErrorOf("type=local,src=/x\ntag=a"),
            "source string: line break (a source is one line) at column 18");
}

TEST(ParseSourceString, AsNamesTheFolderAndIsNotAnAttribute) {
  SourceSpec s = MustParse("type=local,src=/x,as=mine");
  EXPECT_EQ(s.as_name, "mine");
  EXPECT_EQ(s.attrs, (Attrs{{"src", "/x"}}));
  EXPECT_FALSE(s.Has("as"));
}

TEST(ParseSourceString, AsIsCheckedByTheNamingRules) {
  EXPECT_EQ(ErrorOf("type=local,src=/x,as="),
            "bad as=: source name \"\" is empty in source type=local,src=/x,as=");
  EXPECT_THAT(ErrorOf("type=local,src=/x,as=a/b"),
              HasSubstr("bad as=: source name \"a/b\" contains '/'"));
  EXPECT_THAT(ErrorOf("type=local,src=/x,as=.hidden"),
              HasSubstr("bad as=: source name \".hidden\" starts with '.'"));
  EXPECT_THAT(ErrorOf(std::string_view("type=local,src=/x,as=a\0b", 24)),
              HasSubstr("bad as=: source name \"a\\0b\" contains NUL"));
}

TEST(ParseSourceString, EveryExportOnlyKeyIsIgnoredAndReported) {
  for (const char* key :
       {"mode", "compression", "compression-level", "force-compression", "oci-mediatypes",
        "image-manifest", "ignore-error", "reset", "upload_parallelism", "touch_refresh"}) {
    SCOPED_TRACE(key);
    SourceSpec s = MustParse(std::string("type=registry,ref=r/c,") + key + "=x");
    EXPECT_EQ(s.attrs, (Attrs{{"ref", "r/c"}}));
    EXPECT_THAT(s.ignored_keys, ElementsAre(key));
  }
  SourceSpec pasted = MustParse(
      "type=s3,bucket=b,region=r,mode=max,compression=zstd,upload_parallelism=8,touch_refresh=1h");
  EXPECT_EQ(pasted.attrs, (Attrs{{"bucket", "b"}, {"region", "r"}}));
  EXPECT_THAT(pasted.ignored_keys,
              ElementsAre("mode", "compression", "upload_parallelism", "touch_refresh"));
  EXPECT_EQ(pasted.Redacted(), "type=s3,bucket=b,region=r");
}

TEST(ParseSourceString, UnknownKeyIsNamedWithItsValueHidden) {
  std::string m = ErrorOf("type=local,src=/x,secret_acces_key=hunter2");
  EXPECT_THAT(m, HasSubstr("unknown key \"secret_acces_key\" (type=local takes src, dest, tag, "
                           "digest, as, and the export-only keys mode, compression"));
  EXPECT_THAT(m, HasSubstr(" in source type=local,src=/x,secret_acces_key=***"));
  EXPECT_THAT(m, Not(HasSubstr("hunter2")));
}

TEST(ParseSourceString, KeyOfAnotherTypeIsUnknown) {
  EXPECT_THAT(ErrorOf("type=local,src=/x,bucket=b"),
              HasSubstr("unknown key \"bucket\" (type=local takes src, dest, tag, digest, as"));
  EXPECT_THAT(
      ErrorOf("type=gha,secret_access_key=hunter2"),
      AllOf(HasSubstr("unknown key \"secret_access_key\" (type=gha takes scope, url"),
            HasSubstr("in source type=gha,secret_access_key=***"), Not(HasSubstr("hunter2"))));
}

TEST(ParseSourceString, KeysAreCaseSensitive) {
  EXPECT_THAT(ErrorOf("type=local,SRC=/x"), HasSubstr("unknown key \"SRC\""));
  EXPECT_THAT(ErrorOf("Type=local,src=/x"), HasSubstr("no type="));
}

TEST(ParseSourceString, BuildcachefsKeysAreReserved) {
  EXPECT_EQ(ErrorOf("type=local,src=/x,buildcachefs.refresh=1m"),
            "unknown key \"buildcachefs.refresh\" (keys starting \"buildcachefs.\" are reserved "
            "for buildcachefs and none is defined yet) in source "
            "type=local,src=/x,buildcachefs.refresh=***");
}

TEST(ParseSourceString, DuplicateKeyIsNamed) {
  EXPECT_EQ(ErrorOf("type=s3,bucket=a,bucket=b"),
            "key \"bucket\" given twice in source type=s3,bucket=a,bucket=b");
  EXPECT_THAT(ErrorOf("type=local,type=registry,ref=x"), HasSubstr("key \"type\" given twice"));
  EXPECT_THAT(ErrorOf("type=local,src=/x,as=a,as=b"), HasSubstr("key \"as\" given twice"));
  EXPECT_THAT(ErrorOf("type=local,src=/x,mode=min,mode=max"),
              HasSubstr("key \"mode\" given twice"));
  // A duplicated secret is named, its values stay hidden.
  std::string m = ErrorOf("type=s3,token=aaa,token=bbb");
  EXPECT_THAT(m, HasSubstr("key \"token\" given twice in source type=s3,token=***,token=***"));
}

TEST(ParseSourceString, TypeIsRequiredAndMustBeKnown) {
  EXPECT_EQ(ErrorOf("src=/x"),
            "no type= (want one of local, registry, s3, azblob, gha, or a bare image reference "
            "for a registry cache) in source src=/x");
  EXPECT_EQ(ErrorOf("type=docker,src=/x"),
            "unknown source type \"docker\" (want one of local, registry, s3, azblob, gha) in "
            "source type=docker,src=/x");
  EXPECT_THAT(ErrorOf("type=Local,src=/x"), HasSubstr("unknown source type \"Local\""));
}

TEST(ParseSourceString, InlineIsReadThroughRegistry) {
  EXPECT_THAT(ErrorOf("type=inline"), HasSubstr("inline caches live in the image and are read with "
                                                "type=registry,ref=<image> in source type=inline"));
}

TEST(ParseSourceString, EmptyStringIsRefused) {
  EXPECT_THAT(ErrorOf(""), HasSubstr("empty source string"));
  EXPECT_EQ(ErrorOf("\"\""), "source string: field 1 of 1 is empty (a trailing or doubled comma?)");
}

TEST(ParseSourceString, TrailingOrDoubledCommaIsRefused) {
  EXPECT_EQ(ErrorOf("type=local,src=/x,"),
            "source string: field 3 of 3 is empty (a trailing or doubled comma?)");
  EXPECT_EQ(ErrorOf("type=local,,src=/x"),
            "source string: field 2 of 3 is empty (a trailing or doubled comma?)");
}

TEST(ParseSourceString, FieldWithoutEqualsIsRefused) {
  EXPECT_EQ(ErrorOf("type=local,/x"), "source string: field 2 \"/x\" is not key=value");
}

TEST(SourceSpec, GetAndHasTellAbsentFromEmpty) {
  SourceSpec s = MustParse("type=local,src=/x,tag=");
  EXPECT_TRUE(s.Has("tag"));
  EXPECT_EQ(s.Get("tag", "latest"), "");
  EXPECT_FALSE(s.Has("digest"));
  EXPECT_EQ(s.Get("digest", "none"), "none");
  EXPECT_EQ(s.Get("digest"), "");
}

TEST(SourceSpec, RedactedHidesEverySecret) {
  SourceSpec s3 = MustParse(
      "type=s3,bucket=b,region=r,access_key_id=AKIA1,secret_access_key=SECRET2,"
      "session_token=TOKEN3,endpoint_url=https://user:pw4@minio:9000/x?sig=SIG5,as=s");
  std::string r = s3.Redacted();
  EXPECT_EQ(r,
            "type=s3,access_key_id=***,bucket=b,endpoint_url=https://***@minio:9000/x?***,"
            "region=r,secret_access_key=***,session_token=***,as=s");
  for (const char* secret : {"AKIA1", "SECRET2", "TOKEN3", "pw4", "SIG5"}) {
    EXPECT_THAT(r, Not(HasSubstr(secret)));
  }
  SourceSpec gha = MustParse("type=gha,token=JWT1,ghtoken=GHP2,url=https://cache/?x=1");
  EXPECT_EQ(gha.Redacted(), "type=gha,ghtoken=***,token=***,url=https://cache/?***");
  SourceSpec az = MustParse(
      "type=azblob,account_url=https://a.blob.core.windows.net/?sv=2022&sig=SAS,"
      "secret_access_key=KEY");
  EXPECT_EQ(az.Redacted(),
            "type=azblob,account_url=https://a.blob.core.windows.net/?***,secret_access_key=***");
}

TEST(SourceSpec, RedactedIsCanonicalAndParsesBack) {
  SourceSpec s = MustParse("\"name=a,b\",region=r,type=s3,bucket=b,mode=max,as=x");
  EXPECT_EQ(s.Redacted(), "type=s3,bucket=b,\"name=a,b\",region=r,as=x");
  SourceSpec back = MustParse(s.Redacted());
  EXPECT_EQ(back.attrs, s.attrs);
  EXPECT_EQ(back.as_name, "x");
  EXPECT_EQ(MustParse("user/app:cache").Redacted(), "type=registry,ref=user/app:cache");
  EXPECT_EQ(MustParse("type=local,dest=/d").Redacted(), "type=local,src=/d");
}

}  // namespace
}  // namespace bcfs::backends
