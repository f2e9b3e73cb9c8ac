#!/usr/bin/env bash
# Installs what is needed, builds, generates an example BuildKit cache with the
# project's own generator, and shows it with `buildcachefs ls`.
# Usage: bash scripts/demo.sh [DIR]   (the example cache goes to DIR, default a temp dir)
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
cmake -S . -B build-release -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBCFS_TESTS=OFF >/dev/null
ninja -C build-release buildcachefs buildcachefs-gen

dir="${1:-$(mktemp -d /tmp/buildcachefs-demo.XXXXXX)/cache}"
echo
echo "\$ buildcachefs-gen --out $dir --shape index --refs 2 --ref-names latest,feature/x --layers 4"
./build-release/tests/gen/buildcachefs-gen --out "$dir" --shape index --refs 2 \
  --ref-names latest,feature/x --layers 4
echo
echo "\$ buildcachefs ls type=local,src=$dir"
./build-release/cli/buildcachefs ls "type=local,src=$dir"
echo
echo "\$ buildcachefs ls type=local,src=$dir feature/x --format json   (first lines)"
./build-release/cli/buildcachefs ls "type=local,src=$dir" feature/x --format json | head -n 30
