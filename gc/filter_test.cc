#include "gc/filter.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace bcfs::gc {
namespace {

using ::testing::HasSubstr;

Item MakeItem(Role role, std::vector<std::string> sources = {}, std::vector<std::string> refs = {},
              std::string media_type = "") {
  Item it;
  it.digest = "sha256:" + std::string(64, 'a');
  it.role = role;
  it.sources = std::move(sources);
  it.refs = std::move(refs);
  it.media_type = std::move(media_type);
  return it;
}

Filter Policy(std::vector<std::string> strings, FilterDialect dialect = FilterDialect::kPolicy) {
  auto f = ParsePolicyFilters(strings, dialect);
  EXPECT_TRUE(f.ok()) << f.status().ToString();
  return f.ok() ? *f : Filter();
}

std::string PolicyError(std::vector<std::string> strings,
                        FilterDialect dialect = FilterDialect::kPolicy) {
  auto f = ParsePolicyFilters(strings, dialect);
  EXPECT_FALSE(f.ok());
  if (!f.ok()) {
    EXPECT_EQ(f.status().code(), Code::kInvalidArgument);
  }
  return f.ok() ? std::string() : f.status().message();
}

const Item kLayer = MakeItem(Role::kLayer, {"cache-a", "cache-b"}, {"main", "dev"},
                             "application/vnd.oci.image.layer.v1.tar+gzip");
const Item kDerived = MakeItem(Role::kDerived, {"cache-a"}, {"main"});
const Item kOrphan = MakeItem(Role::kConfig);

TEST(Filter, EqualAndNotEqualOnRole) {
  Filter f = Policy({"role==derived"});
  EXPECT_TRUE(f.Matches(kDerived));
  EXPECT_FALSE(f.Matches(kLayer));
  Filter g = Policy({"role!=derived"});
  EXPECT_FALSE(g.Matches(kDerived));
  EXPECT_TRUE(g.Matches(kLayer));
  EXPECT_TRUE(Policy({"role==config"}).Matches(kOrphan));
  EXPECT_TRUE(Policy({"role==manifest"}).Matches(MakeItem(Role::kManifest)));
}

TEST(Filter, PresenceTests) {
  EXPECT_TRUE(Policy({"source"}).Matches(kLayer));
  EXPECT_FALSE(Policy({"source"}).Matches(kOrphan));
  EXPECT_TRUE(Policy({"ref"}).Matches(kDerived));
  EXPECT_FALSE(Policy({"ref"}).Matches(kOrphan));
  EXPECT_TRUE(Policy({"mediatype"}).Matches(kLayer));
  EXPECT_FALSE(Policy({"mediatype"}).Matches(kDerived));
  EXPECT_TRUE(Policy({"role"}).Matches(kOrphan));
}

TEST(Filter, MultiValuedFieldsMatchAnyValueAndNotEqualMeansNone) {
  EXPECT_TRUE(Policy({"source==cache-b"}).Matches(kLayer));
  EXPECT_FALSE(Policy({"source==cache-b"}).Matches(kDerived));
  EXPECT_FALSE(Policy({"source!=cache-b"}).Matches(kLayer));
  EXPECT_TRUE(Policy({"source!=cache-b"}).Matches(kDerived));
  EXPECT_TRUE(Policy({"source!=cache-b"}).Matches(kOrphan));  // absent: != holds
  EXPECT_TRUE(Policy({"ref==dev"}).Matches(kLayer));
  EXPECT_FALSE(Policy({"ref==dev"}).Matches(kDerived));
  EXPECT_TRUE(Policy({"ref~=^de"}).Matches(kLayer));
  EXPECT_FALSE(Policy({"ref~=^de"}).Matches(kDerived));
  EXPECT_TRUE(Policy({"ref~=^$"}).Matches(kOrphan));  // absent: matched against ""
}

TEST(Filter, RegexpIsAnUnanchoredSearch) {
  EXPECT_TRUE(Policy({"mediatype~=gzip"}).Matches(kLayer));
  EXPECT_TRUE(Policy({"mediatype~=^application/vnd\\.oci\\."}).Matches(kLayer));
  EXPECT_FALSE(Policy({"mediatype~=^gzip"}).Matches(kLayer));
  EXPECT_FALSE(Policy({"mediatype~=zstd"}).Matches(kLayer));
  EXPECT_TRUE(Policy({"mediatype~=^$"}).Matches(kDerived));
  EXPECT_FALSE(Policy({"mediatype==x"}).Matches(kDerived));
  EXPECT_TRUE(Policy({"mediatype!=x"}).Matches(kDerived));
  EXPECT_TRUE(Policy({"role~=^(layer|config)$"}).Matches(kOrphan));
  EXPECT_FALSE(Policy({"role~=^(layer|config)$"}).Matches(kDerived));
}

TEST(Filter, QuotedValues) {
  const Item spaced = MakeItem(Role::kLayer, {"my cache", "a,b", "tab\there", "A\xc3\xa9"});
  EXPECT_TRUE(Policy({"source==\"my cache\""}).Matches(spaced));
  EXPECT_TRUE(Policy({"source==\"a,b\""}).Matches(spaced));
  EXPECT_TRUE(Policy({"source==\"tab\\there\""}).Matches(spaced));
  EXPECT_TRUE(Policy({"source==\"\\x41\\u00e9\""}).Matches(spaced));
  EXPECT_TRUE(Policy({"source==\"\\101\\U000000e9\""}).Matches(spaced));
  EXPECT_TRUE(Policy({"\"source\"==\"my cache\""}).Matches(spaced));
  // ~= also takes /…/ and |…| quotes.
  EXPECT_TRUE(Policy({"mediatype~=/tar.gzip$/"}).Matches(kLayer));
  EXPECT_TRUE(Policy({"mediatype~=|image/layer|"})
                  .Matches(MakeItem(Role::kLayer, {}, {}, "application/vnd.docker.image/layer")));
  EXPECT_TRUE(Policy({"source == cache-a , role == derived"}).Matches(kDerived));  // spaces
}

TEST(Filter, CommasAndListEntriesOr) {
  Filter f = Policy({"role==layer,source==cache-b"});
  EXPECT_TRUE(f.Matches(kLayer));
  EXPECT_FALSE(f.Matches(MakeItem(Role::kLayer, {"cache-a"})));
  EXPECT_FALSE(f.Matches(MakeItem(Role::kDerived, {"cache-b"})));
  Filter g = Policy({"role==config", "role==manifest"});
  EXPECT_TRUE(g.Matches(kOrphan));
  EXPECT_TRUE(g.Matches(MakeItem(Role::kManifest)));
  EXPECT_FALSE(g.Matches(kLayer));
  EXPECT_EQ(g.alternatives().size(), 2u);
  EXPECT_FALSE(g.MatchesEverything());
}

TEST(Filter, EmptyListAndEmptyStringMatchEverything) {
  EXPECT_TRUE(Policy({}).MatchesEverything());
  EXPECT_TRUE(Policy({}).Matches(kLayer));
  Filter f = Policy({"role==config", ""});
  EXPECT_TRUE(f.MatchesEverything());
  EXPECT_TRUE(f.Matches(kLayer));
}

TEST(Filter, TypeIsRefusedOutsideBuildkitToml) {
  EXPECT_EQ(PolicyError({"type==regular"}),
            "filter \"type==regular\": field \"type\": BuildKit record types do not exist in a "
            "remote cache");
  EXPECT_THAT(PolicyError({"type"}), HasSubstr("BuildKit record types do not exist"));
  auto cli = ParseCommandLineFilters({"type==exec.cachemount"});
  ASSERT_FALSE(cli.ok());
  EXPECT_THAT(cli.status().message(),
              HasSubstr("BuildKit record types do not exist in a remote cache"));
}

TEST(Filter, TypeInBuildkitTomlSelectsNothingWithAWarning) {
  std::vector<std::string> warnings;
  auto f = ParsePolicyFilters({"type==source.local", "type==exec.cachemount"},
                              FilterDialect::kBuildkitToml, &warnings);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  for (const Item* it : {&kLayer, &kDerived, &kOrphan}) EXPECT_FALSE(f->Matches(*it));
  ASSERT_EQ(warnings.size(), 2u);
  EXPECT_EQ(warnings[0],
            "filter \"type==source.local\": BuildKit record types do not exist in a remote "
            "cache; this selector matches nothing here");
  // containerd semantics for an absent field.
  EXPECT_TRUE(Policy({"type!=regular"}, FilterDialect::kBuildkitToml).Matches(kLayer));
  EXPECT_FALSE(Policy({"type"}, FilterDialect::kBuildkitToml).Matches(kLayer));
}

TEST(Filter, BadFiltersAreNamed) {
  EXPECT_EQ(PolicyError({"bogus==1"}),
            "filter \"bogus==1\": unknown field \"bogus\" (fields: source, ref, role, mediatype)");
  EXPECT_THAT(PolicyError({"labels.foo==x"}), HasSubstr("unknown field \"labels.foo\""));
  EXPECT_EQ(PolicyError({"role==blob"}),
            "filter \"role==blob\": role \"blob\" is not one of layer, config, manifest, derived");
  EXPECT_EQ(PolicyError({"role=layer"}),
            "filter \"role=layer\": unsupported operator \"=\" (use \"==\")");
  EXPECT_EQ(PolicyError({"role===layer"}),
            "filter \"role===layer\": unsupported operator \"===\" at offset 4");
  EXPECT_EQ(PolicyError({"role=="}), "filter \"role==\": expected a value at the end");
  EXPECT_EQ(PolicyError({"role==,ref"}),
            "filter \"role==,ref\": expected value or quoted at offset 6");
  EXPECT_EQ(PolicyError({"source==\"open"}),
            "filter \"source==\"open\": quoted literal not terminated at offset 8");
  EXPECT_EQ(PolicyError({"source==\"\\g\""}),
            "filter \"source==\"\\g\"\": illegal escape sequence at offset 11");
  EXPECT_EQ(PolicyError({"source==/abs/"}),
            "filter \"source==/abs/\": invalid quote encountered at offset 8");
  EXPECT_THAT(PolicyError({"mediatype~=("}),
              HasSubstr("filter \"mediatype~=(\": bad regexp \"(\""));
  EXPECT_EQ(PolicyError({"role==layer role==config"}),
            "filter \"role==layer role==config\": unexpected input at offset 12");
  EXPECT_EQ(PolicyError({"size>10"}),
            "filter \"size>10\": expected an operator (\"==\"|\"!=\"|\"~=\") at offset 4");
  EXPECT_EQ(PolicyError({",role"}), "filter \",role\": expected field or quoted at offset 0");
  EXPECT_EQ(PolicyError({"until=24h"}),
            "filter \"until=24h\": \"until\" is a command-line filter; a policy says keepDuration");
  // One bad string spoils the list.
  EXPECT_THAT(PolicyError({"role==layer", "nope"}), HasSubstr("unknown field \"nope\""));
}

TEST(CommandLineFilter, FlagsAndTheirCommasAllAnd) {
  auto f = ParseCommandLineFilters({"role=layer", "source==cache-b,ref!=main"});
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->keep_duration, 0);
  ASSERT_EQ(f->filter.alternatives().size(), 1u);
  EXPECT_EQ(f->filter.alternatives()[0].size(), 3u);
  EXPECT_FALSE(f->filter.Matches(kLayer));  // ref main
  EXPECT_TRUE(f->filter.Matches(MakeItem(Role::kLayer, {"cache-b"}, {"dev"})));
  EXPECT_FALSE(f->filter.Matches(MakeItem(Role::kConfig, {"cache-b"}, {"dev"})));
}

TEST(CommandLineFilter, UntilAndUnusedForBecomeTheKeepDuration) {
  auto f = ParseCommandLineFilters({"until=24h", "role==derived"});
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->keep_duration, 24 * kHour);
  EXPECT_TRUE(f->filter.Matches(kDerived));
  EXPECT_FALSE(f->filter.Matches(kLayer));
  auto g = ParseCommandLineFilters({"unused-for=1h30m"});
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->keep_duration, 90 * 60 * kSecond);
  EXPECT_TRUE(g->filter.MatchesEverything());
  auto h = ParseCommandLineFilters({"until==500ms"});
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->keep_duration, 500'000'000);
  EXPECT_TRUE(ParseCommandLineFilters({})->filter.MatchesEverything());
}

TEST(CommandLineFilter, BadUntilIsRefused) {
  auto both = ParseCommandLineFilters({"until=24h", "unused-for=1h"});
  ASSERT_FALSE(both.ok());
  EXPECT_EQ(both.status().message(),
            "filter \"unused-for=1h\": conflicting filters \"until\" and \"unused-for\"");
  auto twice = ParseCommandLineFilters({"until=24h", "until=1h"});
  ASSERT_FALSE(twice.ok());
  EXPECT_EQ(twice.status().message(),
            "filter \"until=1h\": \"until\" filter expects only one value");
  auto bare = ParseCommandLineFilters({"until=24"});
  ASSERT_FALSE(bare.ok());
  EXPECT_EQ(bare.status().message(),
            "filter \"until=24\": \"until\" filter expects a duration (e.g. '24h'): invalid "
            "duration \"24\": missing unit");
  EXPECT_FALSE(ParseCommandLineFilters({"until"}).ok());
  EXPECT_FALSE(ParseCommandLineFilters({"until~=1h"}).ok());
  EXPECT_FALSE(ParseCommandLineFilters({"until=-1h"}).ok());
  EXPECT_FALSE(ParseCommandLineFilters({"role=blob"}).ok());
  EXPECT_FALSE(ParseCommandLineFilters({"nope=1"}).ok());
}

}  // namespace
}  // namespace bcfs::gc
