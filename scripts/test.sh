#!/usr/bin/env bash
# Installs what is needed, builds with ASan+UBSan (Debug) and runs every test.
# Usage: bash scripts/test.sh [ctest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

stage() { echo; echo "=== $1 ($(date -u +%H:%M:%S))"; }
start=$(date +%s)

stage "install dependencies"
bash scripts/install-deps.sh
# Test servers that do not come from Debian packages (each script is idempotent).
for extra in scripts/deps-*.sh; do
  [ -e "$extra" ] && bash "$extra"
done

shared="${BCFS_SHARED:-$root/../shared}"
if [ ! -d "$shared/fixtures/buildkit" ]; then
  echo "test.sh: $shared/fixtures/buildkit is absent: tests that need the real BuildKit fixtures will skip (set BCFS_SHARED)"
fi

stage "configure and build (Debug, ASan+UBSan)"
t=$(date +%s)
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DBCFS_SANITIZE=ON \
  -DBCFS_SHARED="$shared" >/dev/null
ninja -C build-asan
echo "build: $(( $(date +%s) - t )) s"

stage "tests (ASan+UBSan)"
t=$(date +%s)
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_string_checks=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
ctest --test-dir build-asan --output-on-failure -j "$(nproc)" "$@"
echo "tests: $(( $(date +%s) - t )) s"

stage "TSan: the concurrency tests"
t=$(date +%s)
# Only the executables whose tests run threads (single-flight fetches, the access
# batcher, concurrent tree lookups, the HTTP client, FUSE's worker threads).
tsan_tests=(store_test index_test http_client_test backend_local_test tree_test fuse_fs_test)
cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DBCFS_TSAN=ON \
  -DBCFS_SHARED="$shared" >/dev/null
ninja -C build-tsan -j "${BCFS_JOBS:-2}" "${tsan_tests[@]}"
# ctest names tests Suite.Name: select the suites of the executables built above.
suites=$(for name in "${tsan_tests[@]}"; do
  exe=$(find build-tsan -name "$name" -type f -perm -u+x | head -n 1)
  "$exe" --gtest_list_tests | grep -v '^ ' | cut -d' ' -f1 | sed 's/\.$//'
done | sort -u | paste -sd '|')
TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1" \
  ctest --test-dir build-tsan --output-on-failure -j 2 -R "^(${suites})\."
echo "tsan: $(( $(date +%s) - t )) s"

stage "fuzzers (clang-16, fixed seed, bounded)"
t=$(date +%s)
# 13 targets: 12 s each keeps the stage near 3 minutes with the build.
bash scripts/fuzz.sh 12
echo "fuzz: $(( $(date +%s) - t )) s"

stage "clang-format"
if ! git ls-files '*.cc' '*.h' | xargs clang-format-14 --dry-run --Werror; then
  echo "test.sh: clang-format-14 differences (run: git ls-files '*.cc' '*.h' | xargs clang-format-14 -i)"
  exit 1
fi

echo
echo "all tests passed in $(( $(date +%s) - start )) s"
