#!/usr/bin/env bash
# Installs what is needed, builds, generates an example BuildKit cache with the
# project's own generator, mounts it, shows the tree, and unmounts.
# Usage: bash scripts/demo.sh [DIR]   (the example goes to DIR, default a temp dir)
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
cmake -S . -B build-release -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBCFS_TESTS=OFF >/dev/null
ninja -C build-release buildcachefs buildcachefs-gen
bin=./build-release/cli/buildcachefs

work="${1:-$(mktemp -d /tmp/buildcachefs-demo.XXXXXX)}"
mkdir -p "$work"
cache="$work/cache"
run() { echo; echo "\$ $*"; "$@"; }

[ -d "$cache" ] || run ./build-release/tests/gen/buildcachefs-gen --out "$cache" --shape index \
  --refs 2 --ref-names latest,feature/x --layers 4
run "$bin" ls "type=local,src=$cache"

if [ ! -w /dev/fuse ]; then
  echo; echo "demo: /dev/fuse is not usable here (run as root to mount); stopping after ls"
  exit 0
fi
mnt="$work/mnt"
mkdir -p "$mnt"
trap 'fusermount3 -u "$mnt" 2>/dev/null || true' EXIT
run "$bin" mount --state-dir "$work/state" "type=local,src=$cache" "$mnt"
run ls -la "$mnt/cache" "$mnt/cache/refs/feature%2Fx" "$mnt/cache/refs/feature%2Fx/layers"
run cat "$mnt/cache/index.json"; echo
link=$(ls "$mnt/cache/refs/latest/layers/" | head -n 1)
hex=$(basename "$(readlink "$mnt/cache/refs/latest/layers/$link")")
echo; echo "\$ sha256sum $mnt/cache/blobs/sha256/$hex   (a blob's digest is its name)"
sha256sum "$mnt/cache/blobs/sha256/$hex"
run ls -lR "$mnt/cache/refs/latest/layers/$link/"
run ls "$mnt/cache/refs/latest/snapshots/"
run python3 -c "import os,sys; p=sys.argv[1]; [print(n, '=', os.getxattr(p, n).decode()) for n in os.listxattr(p)]" \
  "$mnt/cache/refs/feature%2Fx"
run touch "$mnt/cache/new-file" || echo "(read-only, as it should be)"
run fusermount3 -u "$mnt"
trap - EXIT
