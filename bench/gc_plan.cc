// Plans GC over 1,000,000 synthetic store rows with the default policies and
// prints the time against a baseline measured in the same run: std::sort of
// the same 1,000,000 (last_used, use_count, index) keys. Target: plan ≤ 2 s.
//
// Rows: 97% layers, 1% derived, 1% configs, 1% manifests; sizes up to 2 MiB;
// last use spread over 120 days (0.5% never used); use counts 0..20; 0.1%
// pinned; one source and one ref each. The disk is 2 TiB with 100 GiB free,
// so rules 2 and 3 evict most of the store (the expensive case).
//
// Usage: bench_gc_plan [rows] [repeats]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <tuple>
#include <vector>

#include "gc/planner.h"
#include "gc/policy.h"

namespace {

using bcfs::gc::Item;
using Clock = std::chrono::steady_clock;

uint64_t SplitMix(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

std::string Hex64(uint64_t& s) {
  static const char kHex[] = "0123456789abcdef";
  std::string out = "sha256:";
  for (int w = 0; w < 4; ++w) {
    uint64_t v = SplitMix(s);
    for (int i = 0; i < 16; ++i) out += kHex[(v >> (i * 4)) & 0xf];
  }
  return out;
}

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

}  // namespace

int main(int argc, char** argv) {
  const size_t rows = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1'000'000;
  const int repeats = argc > 2 ? std::atoi(argv[2]) : 3;
  const bcfs::TimeNs now = 1'700'000'000 * bcfs::gc::kSecond;
  const int64_t span = 120 * 24 * bcfs::gc::kHour;

  uint64_t seed = 42;
  std::vector<Item> items(rows);
  for (size_t i = 0; i < rows; ++i) {
    Item& it = items[i];
    it.digest = Hex64(seed);
    uint64_t r = SplitMix(seed);
    unsigned kind = r % 100;
    it.role = kind == 0   ? bcfs::gc::Role::kDerived
              : kind == 1 ? bcfs::gc::Role::kConfig
              : kind == 2 ? bcfs::gc::Role::kManifest
                          : bcfs::gc::Role::kLayer;
    it.size = SplitMix(seed) % (2u << 20);
    it.last_used = (r >> 8) % 200 == 0 ? 0 : now - static_cast<int64_t>(SplitMix(seed) % span);
    it.use_count = SplitMix(seed) % 21;
    it.pinned = (r >> 16) % 1000 == 0;
    it.sources = {"cache"};
    it.refs = {"main"};
    it.media_type = "application/vnd.oci.image.layer.v1.tar+gzip";
  }
  const bcfs::gc::FsStats fs{uint64_t{2} << 40, uint64_t{100} << 30};
  const std::vector<bcfs::gc::Policy> policies =
      bcfs::gc::DefaultPolicies(bcfs::gc::GcConfig{}, fs);

  double best_plan = 1e300, best_sort = 1e300;
  bcfs::gc::Plan plan;
  for (int rep = 0; rep < repeats; ++rep) {
    std::vector<std::tuple<int64_t, uint64_t, uint32_t>> keys(rows);
    for (size_t i = 0; i < rows; ++i) {
      keys[i] = {items[i].last_used, items[i].use_count, static_cast<uint32_t>(i)};
    }
    auto t0 = Clock::now();
    std::sort(keys.begin(), keys.end());
    auto t1 = Clock::now();
    plan = bcfs::gc::PlanGc(items, policies, bcfs::gc::PlanInput{now, fs, 64u << 20});
    auto t2 = Clock::now();
    best_sort = std::min(best_sort, Ms(t1 - t0));
    best_plan = std::min(best_plan, Ms(t2 - t1));
    if (keys.empty()) return 1;  // keep the sort observable
  }
  std::printf("gc plan over %zu rows, %zu default policies (best of %d)\n", rows, policies.size(),
              repeats);
  std::printf("  evictions %zu, freed %llu of %llu bytes, enospc %s\n", plan.evictions.size(),
              static_cast<unsigned long long>(plan.bytes_freed),
              static_cast<unsigned long long>(plan.total_before), plan.enospc() ? "yes" : "no");
  for (size_t r = 0; r < plan.rules.size(); ++r) {
    std::printf("  rule %zu: keepBytes %lld, evicted %zu\n", r + 1,
                static_cast<long long>(plan.rules[r].keep_bytes), plan.rules[r].evicted);
  }
  std::printf("  plan          %9.1f ms  (target <= 2000 ms)\n", best_plan);
  std::printf("  std::sort     %9.1f ms  (baseline: same %zu keys)\n", best_sort, rows);
  std::printf("  ratio         %9.2fx\n", best_plan / best_sort);
  return 0;
}
