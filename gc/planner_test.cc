#include "gc/planner.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace bcfs::gc {
namespace {

constexpr TimeNs kNow = 1'700'000'000 * kSecond;  // the fake clock
constexpr uint64_t kGB = 1'000'000'000;
constexpr DurationNs kDay = 24 * kHour;

Item Blob(std::string name, uint64_t size, TimeNs last_used, uint64_t use_count = 1,
          Role role = Role::kLayer, bool pinned = false) {
  Item it;
  it.digest = "sha256:" + name;
  it.size = size;
  it.last_used = last_used;
  it.use_count = use_count;
  it.role = role;
  it.pinned = pinned;
  return it;
}

// Digest names of the evictions, each with its rule: "a@0".
std::vector<std::string> Evicted(const Plan& plan, const std::vector<Item>& items) {
  std::vector<std::string> out;
  for (const auto& e : plan.evictions) {
    out.push_back(items[e.item].digest.substr(7) + "@" + std::to_string(e.rule));
  }
  return out;
}

Policy MaxUsed(int64_t bytes) {
  Policy p;
  p.max_used_space = DiskSpace::Bytes(bytes);
  return p;
}

Filter Parsed(std::vector<std::string> strings) {
  auto f = ParsePolicyFilters(strings, FilterDialect::kPolicy);
  EXPECT_TRUE(f.ok());
  return *f;
}

using Names = std::vector<std::string>;

TEST(CalculateKeepBytes, FollowsBuildKit) {
  EXPECT_EQ(CalculateKeepBytes(100, 10, 0, 0, 0), 0);     // no limits: no cap
  EXPECT_EQ(CalculateKeepBytes(100, 10, 0, 60, 0), 60);   // maxUsed
  EXPECT_EQ(CalculateKeepBytes(100, 10, 0, 0, 30), 80);   // minFree: total − (30 − 10)
  EXPECT_EQ(CalculateKeepBytes(100, 10, 0, 50, 30), 50);  // min(maxUsed, total − excess)
  EXPECT_EQ(CalculateKeepBytes(100, 10, 0, 90, 30), 80);
  EXPECT_EQ(CalculateKeepBytes(100, 50, 0, 0, 30), 100);  // minFree met, no maxUsed: total
  EXPECT_EQ(CalculateKeepBytes(100, 50, 0, 70, 30), 70);  // minFree met: maxUsed
  EXPECT_EQ(CalculateKeepBytes(100, 10, 40, 10, 0), 40);  // never below reserved
  EXPECT_EQ(CalculateKeepBytes(100, 10, 95, 0, 30), 95);
  // total − excess < 0, then max with reserved 0: 0, no cap, every candidate goes.
  EXPECT_EQ(CalculateKeepBytes(10, 0, 0, 0, 100), 0);
  EXPECT_EQ(CalculateKeepBytes(10, 0, 0, 5, 100), 0);
  EXPECT_EQ(CalculateKeepBytes(100, 10, 40, 0, 0), 40);  // reserved alone
}

TEST(Planner, EvictsLeastRecentlyUsedUntilUnderMaxUsed) {
  std::vector<Item> items = {Blob("new", 30, kNow - 1 * kHour), Blob("old", 30, kNow - 3 * kDay),
                             Blob("mid", 30, kNow - 2 * kDay)};
  std::vector<Policy> policies = {MaxUsed(50)};
  Plan plan = PlanGc(items, policies, PlanInput{kNow, FsStats{1000, 500}, 0});
  EXPECT_EQ(Evicted(plan, items), (Names{"old@0", "mid@0"}));
  EXPECT_EQ(plan.bytes_freed, 60u);
  EXPECT_EQ(plan.total_before, 90u);
  EXPECT_EQ(plan.total_after, 30u);
  ASSERT_EQ(plan.rules.size(), 1u);
  EXPECT_EQ(plan.rules[0].keep_bytes, 50);
  EXPECT_EQ(plan.rules[0].total_before, 90u);
  EXPECT_EQ(plan.rules[0].free_before, 500u);
  EXPECT_EQ(plan.rules[0].freed, 60u);
  EXPECT_EQ(plan.rules[0].evicted, 2u);
  EXPECT_FALSE(plan.enospc());
}

TEST(Planner, KeepsEvictingWhileTotalEqualsTheLimit) {
  // BuildKit stops only when total < keepBytes.
  std::vector<Item> items = {Blob("a", 10, kNow - 3 * kHour), Blob("b", 10, kNow - 2 * kHour),
                             Blob("c", 10, kNow - 1 * kHour)};
  std::vector<Policy> policies = {MaxUsed(20)};
  Plan plan = PlanGc(items, policies, PlanInput{kNow, {}, 0});
  EXPECT_EQ(Evicted(plan, items), (Names{"a@0", "b@0"}));
  EXPECT_EQ(plan.total_after, 10u);
}

TEST(Planner, TieBreaksNeverUsedThenUseCountThenDigest) {
  const TimeNs t = kNow - kDay;
  std::vector<Item> items = {Blob("d", 1, t, 5), Blob("c", 1, t, 2), Blob("b", 1, t, 2),
                             Blob("never", 1, 0, 9), Blob("a", 1, t + 1, 0)};
  std::vector<Policy> policies = {Policy{}};  // no limits: everything, in order
  Plan plan = PlanGc(items, policies, PlanInput{kNow, {}, 0});
  EXPECT_EQ(Evicted(plan, items), (Names{"never@0", "b@0", "c@0", "d@0", "a@0"}));
}

TEST(Planner, KeepDurationProtectsRecentlyUsedButNotNeverUsed) {
  const DurationNs keep = 2 * kHour;
  std::vector<Item> items = {
      Blob("recent", 10, kNow - kHour), Blob("at-cutoff", 10, kNow - keep),  // not after the cutoff
      Blob("just-inside", 10, kNow - keep + 1), Blob("never", 10, 0), Blob("old", 10, kNow - kDay)};
  Policy p;
  p.keep_duration = keep;
  std::vector<Policy> policies = {p};
  Plan plan = PlanGc(items, policies, PlanInput{kNow, {}, 0});
  EXPECT_EQ(Evicted(plan, items), (Names{"never@0", "old@0", "at-cutoff@0"}));
  EXPECT_EQ(plan.total_after, 20u);
}

TEST(Planner, MinFreeSpaceUsesTheFilesystemFreeBytes) {
  std::vector<Item> items = {Blob("a", 10, kNow - 4 * kHour), Blob("b", 10, kNow - 3 * kHour),
                             Blob("c", 10, kNow - 2 * kHour), Blob("d", 10, kNow - kHour)};
  Policy p;
  p.min_free_space = DiskSpace::Bytes(35);
  std::vector<Policy> policies = {p};
  // free 10, want 35: excess 25, keep = 40 − 25 = 15: evict until total < 15.
  Plan plan = PlanGc(items, policies, PlanInput{kNow, FsStats{1000, 10}, 0});
  EXPECT_EQ(plan.rules[0].keep_bytes, 15);
  EXPECT_EQ(Evicted(plan, items), (Names{"a@0", "b@0", "c@0"}));
}

TEST(Planner, MinFreeSpaceAloneAndAlreadyMetStillTakesOneItem) {
  // keepBytes = total and the stop test is total < keepBytes: BuildKit
  // deletes one record in this case, and so does the plan (FORMATS.md §8.4).
  std::vector<Item> items = {Blob("a", 10, kNow - 2 * kHour), Blob("b", 10, kNow - kHour)};
  Policy p;
  p.min_free_space = DiskSpace::Bytes(5);
  std::vector<Policy> policies = {p};
  Plan plan = PlanGc(items, policies, PlanInput{kNow, FsStats{1000, 500}, 0});
  EXPECT_EQ(plan.rules[0].keep_bytes, 20);
  EXPECT_EQ(Evicted(plan, items), (Names{"a@0"}));
}

TEST(Planner, ReservedSpaceIsAFloor) {
  std::vector<Item> items = {Blob("a", 10, kNow - 3 * kHour), Blob("b", 10, kNow - 2 * kHour),
                             Blob("c", 10, kNow - kHour)};
  Policy p;
  p.max_used_space = DiskSpace::Bytes(1);
  p.reserved_space = DiskSpace::Bytes(25);
  std::vector<Policy> policies = {p};
  Plan plan = PlanGc(items, policies, PlanInput{kNow, {}, 0});
  EXPECT_EQ(plan.rules[0].keep_bytes, 25);
  EXPECT_EQ(Evicted(plan, items), (Names{"a@0"}));
}

TEST(Planner, PercentagesResolveAgainstTheFilesystem) {
  std::vector<Item> items = {Blob("a", 2 * kGB, kNow - 2 * kHour), Blob("b", kGB, kNow - kHour)};
  Policy p;
  p.max_used_space = DiskSpace::Percent(1);  // 1% of 100 GiB = 1.07e9: (1 + 1) * 1e9
  std::vector<Policy> policies = {p};
  Plan plan = PlanGc(items, policies, PlanInput{kNow, FsStats{uint64_t{100} << 30, 0}, 0});
  EXPECT_EQ(plan.rules[0].keep_bytes, 2'000'000'000);
  EXPECT_EQ(Evicted(plan, items), (Names{"a@0"}));
}

TEST(Planner, FilterPicksCandidatesButTheTotalCountsEverything) {
  std::vector<Item> items = {Blob("layer", 100, kNow - 3 * kDay),
                             Blob("d1", 10, kNow - 2 * kDay, 1, Role::kDerived),
                             Blob("d2", 10, kNow - kDay, 1, Role::kDerived)};
  Policy p = MaxUsed(115);
  p.filters = {"role==derived"};
  p.filter = Parsed(p.filters);
  std::vector<Policy> policies = {p};
  Plan plan = PlanGc(items, policies, PlanInput{kNow, {}, 0});
  // 120 ≥ 115: d1 goes; 110 < 115: stop. The layer is not a candidate.
  EXPECT_EQ(Evicted(plan, items), (Names{"d1@0"}));
}

TEST(Planner, ExtraUsedBytesCountButNeverGo) {
  std::vector<Item> items = {Blob("a", 10, kNow - 2 * kHour), Blob("b", 10, kNow - kHour)};
  std::vector<Policy> policies = {MaxUsed(25)};
  Plan without = PlanGc(items, policies, PlanInput{kNow, {}, 0});
  EXPECT_TRUE(without.evictions.empty());
  Plan with = PlanGc(items, policies, PlanInput{kNow, {}, 6});  // 26 ≥ 25
  EXPECT_EQ(Evicted(with, items), (Names{"a@0"}));
  EXPECT_EQ(with.total_before, 26u);
  EXPECT_EQ(with.total_after, 16u);
}

TEST(Planner, LaterPoliciesSeeEarlierEvictionsAsFreeSpace) {
  std::vector<Item> items = {Blob("a", 10, kNow - 3 * kHour), Blob("b", 10, kNow - 2 * kHour),
                             Blob("c", 10, kNow - kHour)};
  Policy first = MaxUsed(25);
  Policy second;
  second.min_free_space = DiskSpace::Bytes(20);
  std::vector<Policy> policies = {first, second};
  // Rule 0 evicts a (free 5 → 15). Rule 1: excess 20 − 15 = 5, keep = 20 − 5 = 15:
  // b goes. Without the freed bytes it would have been keep = 20 − 15 = 5: b and c.
  Plan plan = PlanGc(items, policies, PlanInput{kNow, FsStats{100, 5}, 0});
  EXPECT_EQ(Evicted(plan, items), (Names{"a@0", "b@1"}));
  EXPECT_EQ(plan.rules[1].free_before, 15u);
  EXPECT_EQ(plan.rules[1].total_before, 20u);
  EXPECT_EQ(plan.rules[1].keep_bytes, 15);
}

TEST(Planner, PinnedItemsNeverGo) {
  std::vector<Item> items = {Blob("pinned-old", 10, 0, 0, Role::kLayer, true),
                             Blob("a", 10, kNow - kHour)};
  std::vector<Policy> policies = {Policy{}};
  Plan plan = PlanGc(items, policies, PlanInput{kNow, {}, 0});
  EXPECT_EQ(Evicted(plan, items), (Names{"a@0"}));
  EXPECT_EQ(plan.pinned_bytes, 10u);
  EXPECT_FALSE(plan.enospc());  // no limit to exceed
}

TEST(Planner, EnospcWhenPinnedBytesAloneExceedACeiling) {
  std::vector<Item> items = {Blob("p1", 8, kNow - kHour, 1, Role::kLayer, true),
                             Blob("p2", 5, kNow - kHour, 1, Role::kLayer, true),
                             Blob("free", 4, kNow - kDay)};
  std::vector<Policy> policies = {MaxUsed(12)};
  Plan plan = PlanGc(items, policies, PlanInput{kNow, {}, 2});
  EXPECT_EQ(Evicted(plan, items), (Names{"free@0"}));
  EXPECT_EQ(plan.total_after, 15u);
  ASSERT_TRUE(plan.enospc());
  ASSERT_EQ(plan.over_limits.size(), 1u);
  const OverLimit& o = plan.over_limits[0];
  EXPECT_EQ(o.rule, 0u);
  EXPECT_EQ(o.ceiling, 12);
  EXPECT_EQ(o.pinned_bytes, 13u);
  EXPECT_EQ(o.extra_bytes, 2u);
  EXPECT_EQ(o.unevictable(), 15u);
  EXPECT_EQ(o.Message(),
            "pinned blobs (13 B) and the index (2 B) exceed the limit of GC rule 1 (12 B); "
            "nothing else can be evicted to make room");
}

TEST(Planner, NoEnospcWhenPinnedFitOrTheRuleIsFiltered) {
  std::vector<Item> items = {Blob("p", 10, kNow, 1, Role::kLayer, true)};
  Plan fits = PlanGc(items, std::vector<Policy>{MaxUsed(10)}, PlanInput{kNow, {}, 0});
  EXPECT_FALSE(fits.enospc());  // 10 does not exceed 10
  Policy filtered = MaxUsed(1);
  filtered.filters = {"role==derived"};
  filtered.filter = Parsed(filtered.filters);
  Plan plan = PlanGc(items, std::vector<Policy>{filtered}, PlanInput{kNow, {}, 0});
  EXPECT_FALSE(plan.enospc());
}

TEST(Planner, DefaultPoliciesOnA100GiBDisk) {
  const FsStats fs{uint64_t{100} << 30, 10 * kGB};
  std::vector<Item> items = {
      Blob("d-old", kGB, kNow - 3 * kDay, 1, Role::kDerived),
      Blob("d-new", kGB, kNow - kHour, 1, Role::kDerived),
      Blob("l-70d", 5 * kGB, kNow - 70 * kDay),
      Blob("l-10d-count3", 10 * kGB, kNow - 10 * kDay, 3),
      Blob("l-10d-count1", 10 * kGB, kNow - 10 * kDay, 1),
      Blob("l-new", 4 * kGB, kNow - 60 * kSecond),
      Blob("pinned", 3 * kGB, 0, 0, Role::kLayer, true),
  };
  std::vector<Policy> policies = DefaultPolicies(GcConfig{}, fs);
  Plan plan = PlanGc(items, policies, PlanInput{kNow, fs, 0});
  // Rule 1 (index 0): derived unused for 48h while total ≥ 512e6.
  // Rule 2: free 11e9 < 21e9, keep = min(81e9, 33e9 − 10e9) = 23e9; only l-70d is
  //   older than 60 days. Rule 3: free 16e9, keep = min(81e9, 28e9 − 5e9) = 23e9:
  //   the lower use count of the two 10-day layers goes. Rule 4: 18e9 < 81e9.
  EXPECT_EQ(Evicted(plan, items), (Names{"d-old@0", "l-70d@1", "l-10d-count1@2"}));
  ASSERT_EQ(plan.rules.size(), 4u);
  EXPECT_EQ(plan.rules[0].keep_bytes, 512'000'000);
  EXPECT_EQ(plan.rules[1].keep_bytes, 23'000'000'000);
  EXPECT_EQ(plan.rules[2].keep_bytes, 23'000'000'000);
  EXPECT_EQ(plan.rules[3].keep_bytes, 81'000'000'000);
  EXPECT_EQ(plan.rules[3].free_before, 26 * kGB);
  EXPECT_EQ(plan.total_before, 34 * kGB);
  EXPECT_EQ(plan.total_after, 18 * kGB);
  EXPECT_EQ(plan.bytes_freed, 16 * kGB);
  EXPECT_EQ(plan.pinned_bytes, 3 * kGB);
  EXPECT_FALSE(plan.enospc());
}

TEST(Planner, DefaultPoliciesSayEnospcWhenPinnedExceedTheCap) {
  const FsStats fs{uint64_t{100} << 30, 50 * kGB};
  std::vector<Item> items = {Blob("pinned", 90 * kGB, kNow, 1, Role::kLayer, true),
                             Blob("other", kGB, kNow - kDay)};
  Plan plan = PlanGc(items, DefaultPolicies(GcConfig{}, fs), PlanInput{kNow, fs, 0});
  EXPECT_EQ(Evicted(plan, items), (Names{"other@2"}));  // rule 2 protects it (60 days)
  ASSERT_EQ(plan.over_limits.size(), 3u);               // rules 2, 3, 4: 90e9 > 81e9
  EXPECT_EQ(plan.over_limits[0].rule, 1u);
  EXPECT_EQ(plan.over_limits[0].ceiling, 81'000'000'000);
  EXPECT_EQ(plan.over_limits[0].pinned_bytes, 90 * kGB);
}

TEST(Planner, EmptyInputs) {
  Plan none = PlanGc({}, DefaultPolicies(GcConfig{}, FsStats{}), PlanInput{kNow, {}, 0});
  EXPECT_TRUE(none.evictions.empty());
  EXPECT_EQ(none.rules.size(), 4u);
  std::vector<Item> items = {Blob("a", 1, kNow)};
  Plan no_policies = PlanGc(items, {}, PlanInput{kNow, {}, 0});
  EXPECT_TRUE(no_policies.evictions.empty());
  EXPECT_EQ(no_policies.total_after, 1u);
}

}  // namespace
}  // namespace bcfs::gc
