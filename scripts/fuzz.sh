#!/usr/bin/env bash
# Builds the libFuzzer targets with clang-16 (ASan+UBSan) and runs each from its
# committed corpus with a fixed seed for a bounded time (DESIGN.md §5).
# Usage: bash scripts/fuzz.sh [SECONDS per target, default 15]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-15}"
targets=(tar_fuzz seek_fuzz estargz_fuzz cacheconfig_fuzz source_fuzz challenge_fuzz gcconfig_fuzz
  gcfilter_fuzz oci_fuzz listing_fuzz gha_fuzz dockerconfig_fuzz mountconfig_fuzz
  catalogcache_fuzz)
CC=clang-16 CXX=clang++-16 cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=Debug \
  -DBCFS_SANITIZE=ON -DBCFS_FUZZ=ON -DBCFS_TESTS=OFF >/dev/null
ninja -C build-fuzz -j "${BCFS_JOBS:-2}" "${targets[@]}"
for t in "${targets[@]}"; do
  # New inputs go to a scratch dir; the committed corpus is only read.
  scratch=$(mktemp -d)
  echo "=== $t (${secs} s, seed 1)"
  ./build-fuzz/tests/fuzz/"$t" -seed=1 -max_total_time="$secs" -rss_limit_mb=2048 \
    -timeout=10 -print_final_stats=1 "$scratch" tests/fuzz/corpus/"$t" 2>&1 | tail -n 4
  rm -rf "$scratch"
done
