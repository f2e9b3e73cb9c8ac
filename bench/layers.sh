#!/usr/bin/env bash
# Layer-contents benchmark (issue 5). Prints ratios against baselines measured in
# the same run on the same layer; not a test, no thresholds.
#   first `find -ls` of a layer folder (verifies the blob, indexes the tar) vs `tar -tvzf` of the blob
#   warm `find -ls` of the same folder vs the same tar -t
#   `du -s` of the folder; `grep -r` over the folder vs tar -xzf to stdout | grep
# Usage: bash bench/layers.sh [WORKDIR]   (root: mounts)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work="${1:-$(mktemp -d /var/tmp/bcfs-layers.XXXXXX)}"
mkdir -p "$work"
cmake -S . -B build-release -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBCFS_TESTS=OFF >/dev/null
ninja -C build-release buildcachefs buildcachefs-gen >/dev/null
bin=$root/build-release/cli/buildcachefs
gen=$root/build-release/tests/gen/buildcachefs-gen
now() { date +%s%N; }
timeit() { local t0 t1; t0=$(now); "$@" >/dev/null 2>&1 || true; t1=$(now); echo "scale=3; ($t1-$t0)/1000000000" | bc; }
ratio() { echo "scale=2; $1/$2" | bc; }

if [ ! -d "$work/cache" ]; then
  "$gen" --out "$work/cache" --layers 2 --files 20000 --file-size 4096 >/dev/null
fi
# The biggest layer blob.
blob=$(ls -S "$work/cache/blobs/sha256" | head -n 1)
src="$work/cache/blobs/sha256/$blob"
mnt="$work/mnt"
mkdir -p "$mnt"
rm -rf "$work/state"
"$bin" mount --state-dir "$work/state" "type=local,src=$work/cache" "$mnt"
trap 'fusermount3 -u "$mnt" 2>/dev/null || true' EXIT
layer="$mnt/cache/layers/sha256/$blob"

tar_t=$(timeit tar -tvzf "$src")
first=$(timeit find "$layer" -ls)
warm=$(timeit find "$layer" -ls)
du_=$(timeit du -s "$layer")
grep_tar=$(timeit sh -c "tar -xzOf '$src' | grep -c zzzz")
grep_mnt=$(timeit grep -rc zzzz "$layer")
entries=$(find "$layer" | wc -l)
size=$(stat -c %s "$src")

echo "machine: $(nproc) cores, $(uname -r); layer: $((size / 1048576)) MiB gzip, $entries entries"
printf '%-46s %10s %10s %7s\n' "measure" "baseline s" "mount s" "ratio"
printf '%-46s %10s %10s %7s\n' "first find -ls (verify+index) vs tar -tvzf" "$tar_t" "$first" "$(ratio "$tar_t" "$first")"
printf '%-46s %10s %10s %7s\n' "warm find -ls vs tar -tvzf" "$tar_t" "$warm" "$(ratio "$tar_t" "$warm")"
printf '%-46s %10s %10s\n' "du -s of the layer folder" "" "$du_"
printf '%-46s %10s %10s %7s\n' "grep -r vs tar -xzO | grep" "$grep_tar" "$grep_mnt" "$(ratio "$grep_tar" "$grep_mnt")"
echo "ratio = baseline time / mount time (1.00 = as fast as the baseline)"
