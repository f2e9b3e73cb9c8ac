#!/usr/bin/env bash
# Mount start-up benchmark (issue 10): a local cache of 1,000 refs and ~100,000 blobs
# (buildcachefs-gen: 1,000 refs x 99 layers sharing the base layer, plus a manifest and a
# config per ref). Times `buildcachefs mount` until it returns (the daemon answers: READY)
#   cold: a fresh state dir (every manifest and config read and verified, every blob
#         stat()ed, the index written);
#   warm: a second mount with the same state dir (target < 1 s).
# Baseline in the same run: `find -ls` of the source's blobs/ (what a stat of every blob
# costs natively). Not a test, no thresholds. Prints RESULT| lines for bench/run.
# Usage: bash bench/startup.sh [WORKDIR]   (root: mounts; BCFS_BENCH_NO_BUILD=1 uses build-release)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work="${1:-/var/tmp/bcfs-bench-startup}"
mkdir -p "$work"
. bench/lib.sh
build_release "$root"
bin=$root/build-release/cli/buildcachefs
gen=$root/build-release/tests/gen/buildcachefs-gen
mnt=$work/mnt
cleanup() { fusermount3 -u "$mnt" 2>/dev/null || true; }
trap cleanup EXIT

if [ ! -d "$work/cache" ]; then
  echo "generating 1,000 refs x 99 layers into $work/cache (once)..." >&2
  "$gen" --out "$work/cache" --refs 1000 --layers 99 --files 1 --file-size 64 >/dev/null
fi
nblobs=$(ls "$work/cache/blobs/sha256" | wc -l)
nrefs=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["manifests"]))' "$work/cache/index.json")
mkdir -p "$mnt"
rm -rf "$work/state"

mount_once() {
  local t0 t1
  t0=$(now)
  "$bin" mount --state-dir "$work/state" "type=local,src=$work/cache,as=c" "$mnt"
  t1=$(now)
  [ -e "$mnt/c/refs" ] || { echo "startup.sh: the mount shows no refs/" >&2; exit 1; }
  fusermount3 -u "$mnt"
  secs "$t0" "$t1"
}
cold=$(mount_once)
warm=()
for _ in 1 2 3 4 5; do warm+=("$(mount_once)"); done
w=$(median "${warm[@]}")
find "$work/cache/blobs" -ls >/dev/null
base=()
for _ in 1 2 3; do
  t0=$(now); find "$work/cache/blobs" -ls >/dev/null; t1=$(now); base+=("$(secs "$t0" "$t1")")
done
b=$(median "${base[@]}")
echo "cache: $nrefs refs, $nblobs blobs"
echo "mount start-up, cold (fresh state dir): $cold s"
echo "mount start-up, warm: ${warm[*]} s (median $w s; target < 1 s)"
echo "find -ls of the source's blobs/: ${base[*]} s (median $b s)"
echo "RESULT|mount start-up, $nrefs refs, $nblobs blobs, warm|find -ls of blobs/|$b|$w|< 1 s"
echo "RESULT|mount start-up, $nrefs refs, $nblobs blobs, cold|find -ls of blobs/|$b|$cold|"
