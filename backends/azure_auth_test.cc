// Unit tests of the Azure pieces that need no server: Shared Key
// string-to-sign and signature (vectors from Microsoft's "Authorize with Shared
// Key" examples, signatures computed independently with Python's hmac), SAS URL
// composition, connection strings, and the type=azblob configuration, blob
// names and List Blobs parsing. Azurite checks
// the same code live in tests/e2e/azblob_test.py.
#include "backends/azure_auth.h"

#include <gtest/gtest.h>

#include <map>

#include "backends/azblob_config.h"
#include "backends/http/http_client.h"
#include "core/digest.h"

namespace bcfs::backends {
namespace {

const std::string kKey(kAzuriteKey);

// Microsoft's example (Get Container Metadata with timeout, version 2009-09-19).
TEST(SharedKey, StringToSignOfTheDocumentedGetExampleIsExact) {
  std::vector<http::Header> h = {{"x-ms-date", "Sun, 11 Oct 2009 21:49:13 GMT"},
                                 {"x-ms-version", "2009-09-19"}};
  std::string sts = SharedKeyStringToSign("GET",
                                          "http://myaccount.blob.core.windows.net/"
                                          "mycontainer?restype=container&comp=metadata&timeout=20",
                                          h, "myaccount");
  EXPECT_EQ(sts,
            "GET\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:Sun, 11 Oct 2009 21:49:13 GMT\n"
            "x-ms-version:2009-09-19\n/myaccount/mycontainer\ncomp:metadata\nrestype:container\n"
            "timeout:20");
  // HMAC-SHA256 under Azurite's documented key, base64 (computed with Python's hmac).
  EXPECT_EQ(*SharedKeySignature(sts, kKey), "m649E40iEJ3QQyCg9/WI2Fa9zS+RB/2rEBcLJb0CKs0=");
}

// Microsoft's example for 2015-02-21 and later: a zero Content-Length signs as empty.
TEST(SharedKey, ZeroContentLengthIsAnEmptyLine) {
  std::vector<http::Header> h = {{"x-ms-version", "2015-02-21"},
                                 {"x-ms-date", "Fri, 26 Jun 2015 23:39:12 GMT"},
                                 {"Content-Length", "0"}};
  std::string sts = SharedKeyStringToSign(
      "PUT", "http://myaccount/mycontainer?restype=container&timeout=30", h, "myaccount");
  EXPECT_EQ(sts,
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:Fri, 26 Jun 2015 23:39:12 GMT\n"
            "x-ms-version:2015-02-21\n/myaccount/mycontainer\nrestype:container\ntimeout:30");
  EXPECT_EQ(*SharedKeySignature(sts, kKey), "xGXG0xDZ4LffNUrgvdRqISw8BZe4MJz8EbGZmcCE038=");
  // A non-zero length is signed as given.
  h[2].value = "11";
  EXPECT_NE(SharedKeyStringToSign("PUT", "http://myaccount/mycontainer", h, "myaccount")
                .find("PUT\n\n\n11\n"),
            std::string::npos);
}

// Microsoft's List Blobs example: repeated parameters sorted and comma-joined.
TEST(SharedKey, CanonicalizedResourceOfTheDocumentedListBlobsExample) {
  std::string sts = SharedKeyStringToSign(
      "GET",
      "http://myaccount.blob.core.windows.net/mycontainer?restype=container&comp=list&"
      "include=snapshots&include=metadata&include=uncommittedblobs",
      {}, "myaccount");
  const std::string want =
      "/myaccount/mycontainer\ncomp:list\ninclude:metadata,snapshots,uncommittedblobs\n"
      "restype:container";
  ASSERT_GE(sts.size(), want.size());
  EXPECT_EQ(sts.substr(sts.size() - want.size()), want);
  EXPECT_EQ(sts.substr(0, 15), "GET\n\n\n\n\n\n\n\n\n\n\n\n");
}

TEST(SharedKey, EmulatorPathsNameTheAccountTwiceAndQueryValuesAreDecoded) {
  std::string sts =
      SharedKeySignature("", kKey).ok()
          ? SharedKeyStringToSign("GET",
                                  "http://127.0.0.1:10000/devstoreaccount1/c/blobs/sha256%3Aab?"
                                  "prefix=a%2Fb%20c&Marker=M",
                                  {{"X-MS-Date", "  Sun,   11 Oct 2009 21:49:13 GMT "},
                                   {"x-ms-version", "2021-08-06"},
                                   {"Accept", "*/*"}},
                                  "devstoreaccount1", "bytes=0-15")
          : "";
  EXPECT_EQ(sts,
            "GET\n\n\n\n\n\n\n\n\n\n\nbytes=0-15\nx-ms-date:Sun, 11 Oct 2009 21:49:13 GMT\n"
            "x-ms-version:2021-08-06\n/devstoreaccount1/devstoreaccount1/c/blobs/sha256%3Aab\n"
            "marker:M\nprefix:a/b c");
}

TEST(SharedKey, ABadKeyIsRefusedWithoutShowingIt) {
  auto sig = SharedKeySignature("x", "not base64!");
  ASSERT_FALSE(sig.ok());
  EXPECT_EQ(sig.status().message().find("not base64!"), std::string::npos);
  auto cred = AzureCredential::SharedKey("acct", "s3cr3t-not-b64");
  ASSERT_FALSE(cred.ok());
  EXPECT_NE(cred.status().message().find("acct"), std::string::npos);
  EXPECT_EQ(cred.status().message().find("s3cr3t"), std::string::npos);
}

TEST(SharedKey, SignAddsDateVersionAndAuthorizationOverTheRange) {
  auto cred = AzureCredential::SharedKey("devstoreaccount1", kKey);
  ASSERT_TRUE(cred.ok());
  http::Request req;
  req.url = "http://127.0.0.1:10000/devstoreaccount1/c/b";
  req.range = std::make_pair(uint64_t{5}, uint64_t{9});
  ASSERT_TRUE(cred->Sign(req, 1255297753).ok());  // Sun, 11 Oct 2009 21:49:13 GMT
  std::map<std::string, std::string> h;
  for (const auto& x : req.headers) h[x.name] = x.value;
  EXPECT_EQ(h["x-ms-date"], "Sun, 11 Oct 2009 21:49:13 GMT");
  EXPECT_EQ(h["x-ms-version"], std::string(kAzureApiVersion));
  std::string sts =
      SharedKeyStringToSign("GET", req.url, req.headers, "devstoreaccount1", "bytes=5-9");
  EXPECT_EQ(h["Authorization"], "SharedKey devstoreaccount1:" + *SharedKeySignature(sts, kKey));
  EXPECT_EQ(req.url, "http://127.0.0.1:10000/devstoreaccount1/c/b");  // no query added
}

TEST(Sas, TokenIsAppendedToTheQueryAndNeverLogged) {
  EXPECT_EQ(AppendSas("http://h/a/c/b", "sv=2021-08-06&sig=abc%2B"),
            "http://h/a/c/b?sv=2021-08-06&sig=abc%2B");
  EXPECT_EQ(AppendSas("http://h/a/c?restype=container&comp=list", "?sv=1&sig=x"),
            "http://h/a/c?restype=container&comp=list&sv=1&sig=x");
  EXPECT_EQ(AppendSas("http://h/a/c?", "sv=1&sig=x"), "http://h/a/c?sv=1&sig=x");
  EXPECT_EQ(AppendSas("http://h/a/c", ""), "http://h/a/c");

  AzureCredential sas = AzureCredential::Sas("?sv=2021-08-06&sp=rl&sig=SECRETSIG");
  http::Request req;
  req.url = "http://127.0.0.1:1/devstoreaccount1/c?restype=container&comp=list";
  ASSERT_TRUE(sas.Sign(req, 0).ok());
  EXPECT_EQ(req.url,
            "http://127.0.0.1:1/devstoreaccount1/c?restype=container&comp=list&sv=2021-08-06&"
            "sp=rl&sig=SECRETSIG");
  for (const auto& h : req.headers) EXPECT_NE(h.name, "Authorization");
  EXPECT_EQ(http::RedactUrl(req.url), "http://127.0.0.1:1/devstoreaccount1/c");
}

TEST(HttpDate, FormatsAndParsesRfc1123) {
  EXPECT_EQ(AzureHttpDate(1255297753), "Sun, 11 Oct 2009 21:49:13 GMT");
  EXPECT_EQ(*ParseAzureHttpDate("Sun, 11 Oct 2009 21:49:13 GMT"), 1255297753);
  EXPECT_FALSE(ParseAzureHttpDate("2009-10-11T21:49:13Z").ok());
  // Found by listing_fuzz: a year whose ns since 1970 overflow an int64 (and
  // negative fields) are refused, not multiplied into garbage.
  EXPECT_FALSE(ParseAzureHttpDate("Thu, 26 Nov 4052 20:42:23 GMT").ok());
  EXPECT_FALSE(ParseAzureHttpDate("Thu, 26 Nov 1600 20:42:23 GMT").ok());
  EXPECT_FALSE(ParseAzureHttpDate("Thu, 26 Nov 2026 -1:42:23 GMT").ok());
  EXPECT_EQ(*ParseAzureHttpDate("Tue, 31 Dec 2261 23:59:59 GMT"), 9214646399);
}

TEST(ConnectionString, KeysEndpointsSasAndDevelopmentStorage) {
  auto cs = ParseAzureConnectionString(
      "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=" + kKey +
      ";EndpointSuffix=core.windows.net");
  ASSERT_TRUE(cs.ok());
  EXPECT_EQ(cs->AccountName(), "acct");
  EXPECT_EQ(cs->AccountKey(), kKey);  // '=' inside the value kept
  EXPECT_EQ(cs->BlobEndpoint(), "https://acct.blob.core.windows.net");

  cs = ParseAzureConnectionString(
      "BlobEndpoint=http://127.0.0.1:5020/devstoreaccount1/;SharedAccessSignature=sv=1&sig=a%3D");
  ASSERT_TRUE(cs.ok());
  EXPECT_EQ(cs->BlobEndpoint(), "http://127.0.0.1:5020/devstoreaccount1");
  EXPECT_EQ(cs->Sas(), "sv=1&sig=a%3D");
  EXPECT_EQ(cs->AccountKey(), "");

  cs = ParseAzureConnectionString("UseDevelopmentStorage=true");
  ASSERT_TRUE(cs.ok());
  EXPECT_EQ(cs->BlobEndpoint(), "http://127.0.0.1:10000/devstoreaccount1");
  EXPECT_EQ(cs->AccountName(), "devstoreaccount1");
  EXPECT_EQ(cs->AccountKey(), kKey);

  auto bad = ParseAzureConnectionString("AccountName=a;TOPSECRETKEY");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message().find("TOPSECRET"), std::string::npos);
}

// --- type=azblob configuration -------------------------------------------

SourceSpec Spec(std::map<std::string, std::string> attrs) {
  SourceSpec s;
  s.type = SourceType::kAzblob;
  s.attrs = std::move(attrs);
  return s;
}

EnvLookup Env(std::map<std::string, std::string> vars) {
  return [vars](std::string_view name) -> std::optional<std::string> {
    auto it = vars.find(std::string(name));
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

TEST(AzblobConfig, DefaultsAsBuildKitsGetConfig) {
  auto c =
      ResolveAzblobConfig(Spec({{"account_url", "https://acct.blob.core.windows.net/"}}), Env({}));
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->account_url, "https://acct.blob.core.windows.net");
  EXPECT_EQ(c->account_name, "acct");
  EXPECT_EQ(c->container, "buildkit-cache");
  EXPECT_EQ(c->BlobKey("sha256:ab"), "blobs/sha256:ab");
  EXPECT_EQ(c->ManifestKey("main"), "manifests/main");
  EXPECT_EQ(c->ManifestsDir(), "manifests/");
  EXPECT_TRUE(c->names.empty());
  EXPECT_EQ(c->credential.kind(), AzureCredential::Kind::kAnonymous);
  EXPECT_EQ(c->ContainerUrl(), "https://acct.blob.core.windows.net/buildkit-cache");
  EXPECT_EQ(c->What(), "azblob account acct, container buildkit-cache");
}

TEST(AzblobConfig, AttributesBeatTheBuildkitVariables) {
  auto env = Env({{"BUILDKIT_AZURE_STORAGE_ACCOUNT_URL", "https://envacct.blob.core.windows.net"},
                  {"BUILDKIT_AZURE_STORAGE_ACCOUNT_NAME", "envname"},
                  {"BUILDKIT_AZURE_STORAGE_CONTAINER", "envcont"},
                  {"BUILDKIT_AZURE_STORAGE_PREFIX", "envprefix"}});
  auto c = ResolveAzblobConfig(Spec({}), env);
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->account_url, "https://envacct.blob.core.windows.net");
  EXPECT_EQ(c->account_name, "envname");
  EXPECT_EQ(c->container, "envcont");
  EXPECT_EQ(c->BlobKey("sha256:ab"), "envprefix/blobs/sha256:ab");
  c = ResolveAzblobConfig(Spec({{"account_url", "https://a.blob.core.windows.net"},
                                {"account_name", "n"},
                                {"container", "c"},
                                {"prefix", ""},
                                {"name", "x;y;x;;z"}}),
                          env);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->account_name, "n");
  EXPECT_EQ(c->container, "c");
  EXPECT_EQ(c->BlobKey("sha256:ab"), "blobs/sha256:ab");  // an empty prefix= is given
  EXPECT_EQ(c->names, (std::vector<std::string>{"x", "y", "z"}));
}

TEST(AzblobConfig, MissingAccountUrlIsBuildKitsError) {
  auto c = ResolveAzblobConfig(Spec({}), Env({}));
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), Code::kInvalidArgument);
  EXPECT_NE(c.status().message().find("BUILDKIT_AZURE_STORAGE_ACCOUNT_URL"), std::string::npos);
}

TEST(AzblobConfig, AnIpStyleUrlTakesTheAccountFromItsPath) {
  auto c = ResolveAzblobConfig(Spec({{"account_url", "http://127.0.0.1:5020/devstoreaccount1"},
                                     {"secret_access_key", kKey}}),
                               Env({}));
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->account_name, "devstoreaccount1");
  EXPECT_EQ(c->credential.kind(), AzureCredential::Kind::kSharedKey);
  EXPECT_EQ(c->ContainerUrl(), "http://127.0.0.1:5020/devstoreaccount1/buildkit-cache");
}

TEST(AzblobConfig, PrefixesJoinAsGoFilepathJoin) {
  EXPECT_EQ(GoPathJoin({"foo", "blobs", "sha256:x"}), "foo/blobs/sha256:x");
  EXPECT_EQ(GoPathJoin({"foo/", "/blobs/", "sha256:x"}), "foo/blobs/sha256:x");
  EXPECT_EQ(GoPathJoin({"", "blobs", "sha256:x"}), "blobs/sha256:x");
  EXPECT_EQ(GoPathJoin({"a/./b/../c", "", "n"}), "a/c/n");
  EXPECT_EQ(GoPathJoin({"/root", "m"}), "/root/m");
  EXPECT_EQ(GoPathJoin({"", ""}), "");
  auto c = ResolveAzblobConfig(Spec({{"account_url", "https://a.blob.core.windows.net"},
                                     {"prefix", "team/x/"},
                                     {"blobs_prefix", "b/"},
                                     {"manifests_prefix", "m"}}),
                               Env({}));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->BlobKey("sha256:ab"), "team/x/b/sha256:ab");
  EXPECT_EQ(c->BlobsDir(), "team/x/b/");
  EXPECT_EQ(c->ManifestKey("feature/y"), "team/x/m/feature/y");
}

TEST(AzblobConfig, CredentialsInOrderSecretThenUrlSasThenConnectionString) {
  const std::string url = "http://127.0.0.1:5020/devstoreaccount1";
  const std::string cs_key =
      "AccountName=devstoreaccount1;AccountKey=" + kKey + ";BlobEndpoint=" + url;
  // secret_access_key first.
  auto c =
      ResolveAzblobConfig(Spec({{"account_url", url + "?sv=1&sig=x"}, {"secret_access_key", kKey}}),
                          Env({{"AZURE_STORAGE_CONNECTION_STRING", cs_key}}));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->credential.kind(), AzureCredential::Kind::kSharedKey);
  EXPECT_EQ(c->credential.Describe(), "the Shared Key (secret_access_key)");
  EXPECT_EQ(c->account_url, url);  // the query is not part of the account URL
  // A SAS in account_url next.
  c = ResolveAzblobConfig(Spec({{"account_url", url + "/?sv=1&sig=x"}}),
                          Env({{"AZURE_STORAGE_CONNECTION_STRING", cs_key}}));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->credential.kind(), AzureCredential::Kind::kSas);
  EXPECT_EQ(c->account_url, url);
  // Then the connection string, which can also give the account URL.
  c = ResolveAzblobConfig(Spec({{"name", "main"}}),
                          Env({{"AZURE_STORAGE_CONNECTION_STRING", cs_key}}));
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->account_url, url);
  EXPECT_EQ(c->account_name, "devstoreaccount1");
  EXPECT_EQ(c->credential.kind(), AzureCredential::Kind::kSharedKey);
  EXPECT_EQ(c->credential.Describe(), "the Shared Key (AZURE_STORAGE_CONNECTION_STRING)");
  c = ResolveAzblobConfig(Spec({}),
                          Env({{"AZURE_STORAGE_CONNECTION_STRING",
                                "BlobEndpoint=" + url + ";SharedAccessSignature=sv=1&sig=y"}}));
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->credential.kind(), AzureCredential::Kind::kSas);
  // A connection string for another account is not used.
  c = ResolveAzblobConfig(Spec({{"account_url", "https://other.blob.core.windows.net"}}),
                          Env({{"AZURE_STORAGE_CONNECTION_STRING", cs_key}}));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->credential.kind(), AzureCredential::Kind::kAnonymous);
  // AZURE_STORAGE_KEY / AZURE_STORAGE_SAS_TOKEN last.
  c = ResolveAzblobConfig(Spec({{"account_url", url}}),
                          Env({{"AZURE_STORAGE_KEY", kKey}, {"AZURE_STORAGE_SAS_TOKEN", "sig=z"}}));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->credential.kind(), AzureCredential::Kind::kSharedKey);
  c = ResolveAzblobConfig(
      Spec({{"account_url", url}}),
      Env({{"AZURE_STORAGE_ACCOUNT", "someoneelse"}, {"AZURE_STORAGE_KEY", kKey}}));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->credential.kind(), AzureCredential::Kind::kAnonymous);
}

TEST(BlobList, ParsesNamesSizesTimesAndTheNextMarker) {
  const std::string xml =
      "\xEF\xBB\xBF<?xml version=\"1.0\" encoding=\"utf-8\"?><EnumerationResults "
      "ServiceEndpoint=\"http://127.0.0.1/devstoreaccount1\" "
      "ContainerName=\"c\"><Prefix>m/</Prefix>"
      "<MaxResults>2</MaxResults><Blobs><Blob><Name>m/a&amp;b</Name><Properties>"
      "<Creation-Time>Sun, 11 Oct 2009 21:00:00 GMT</Creation-Time>"
      "<Last-Modified>Sun, 11 Oct 2009 21:49:13 GMT</Last-Modified><Etag>0x1</Etag>"
      "<Content-Length>42</Content-Length></Properties></Blob><Blob><Name>m/&#252;</Name>"
      "<Properties><Content-Length>0</Content-Length></Properties></Blob></Blobs>"
      "<NextMarker>tok/2</NextMarker></EnumerationResults>";
  auto page = ParseBlobList(xml);
  ASSERT_TRUE(page.ok()) << page.status().message();
  ASSERT_EQ(page->blobs.size(), 2u);
  EXPECT_EQ(page->blobs[0].name, "m/a&b");
  EXPECT_EQ(page->blobs[0].size, 42u);
  EXPECT_EQ(page->blobs[0].modified, TimeNs{1255297753} * 1000000000);
  EXPECT_EQ(page->blobs[1].name, "m/\xC3\xBC");
  EXPECT_EQ(page->next_marker, "tok/2");
  auto last = ParseBlobList("<EnumerationResults><Blobs /><NextMarker /></EnumerationResults>");
  ASSERT_TRUE(last.ok());
  EXPECT_TRUE(last->blobs.empty());
  EXPECT_EQ(last->next_marker, "");
  EXPECT_FALSE(ParseBlobList("<Error><Code>AuthorizationFailure</Code></Error>").ok());
}

TEST(BlobList, ALastModifiedBeyond2261IsUnknown) {
  // Found by listing_fuzz: signed overflow of the year 4052 in ns.
  auto page = ParseBlobList(
      "<EnumerationResults><Blobs><Blob><Name>b</Name><Properties><Last-Modified>Thu, 26 Nov "
      "4052 20:42:23 GMT</Last-Modified></Properties></Blob></Blobs></EnumerationResults>");
  ASSERT_TRUE(page.ok()) << page.status().message();
  ASSERT_EQ(page->blobs.size(), 1u);
  EXPECT_EQ(page->blobs[0].modified, 0);
}

}  // namespace
}  // namespace bcfs::backends
