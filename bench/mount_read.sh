#!/usr/bin/env bash
# Mount read benchmark (issue 3). Prints ratios against baselines measured in
# the same run on the same data; not a test, no thresholds.
#
#   1 GiB blob, dd bs=1M, median of 5:
#     first-ever read through the mount (includes the whole-blob sha256)
#     cold: page cache dropped before each read, blob verified in an earlier run
#     warm: page cache hot
#   find -ls over a mount of ~10,000 blobs vs over the source directory
#
# Usage: bash bench/mount_read.sh [WORKDIR]   (needs root for the mount and drop_caches)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work="${1:-$(mktemp -d /var/tmp/bcfs-bench.XXXXXX)}"
mkdir -p "$work"

cmake -S . -B build-release -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBCFS_TESTS=OFF >/dev/null
ninja -C build-release buildcachefs buildcachefs-gen >/dev/null
bin=$root/build-release/cli/buildcachefs
gen=$root/build-release/tests/gen/buildcachefs-gen

mounts=()
cleanup() {
  for m in "${mounts[@]}"; do fusermount3 -u "$m" 2>/dev/null || true; done
}
trap cleanup EXIT

now() { date +%s%N; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
# seconds (3 decimals) a command takes
timeit() { local t0 t1; t0=$(now); "$@" >/dev/null 2>&1; t1=$(now); echo "scale=3; ($t1-$t0)/1000000000" | bc; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { echo "scale=2; $1/$2" | bc; }
readblob() { dd if="$1" of=/dev/null bs=1M 2>/dev/null; }

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"

# ---- 1 GiB blob ----
if [ ! -d "$work/big" ]; then
  "$gen" --out "$work/big" --layers 1 --files 1 --file-size $((1024 * 1024 * 1024 - 65536)) \
    --compression uncompressed >/dev/null
fi
blob=$(ls -S "$work/big/blobs/sha256" | head -n 1)
src="$work/big/blobs/sha256/$blob"
size=$(stat -c %s "$src")
mkdir -p "$work/mnt-big"
rm -rf "$work/state"
"$bin" mount --state-dir "$work/state" "type=local,src=$work/big" "$work/mnt-big"
mounts+=("$work/mnt-big")
via="$work/mnt-big/big/blobs/sha256/$blob"

drop
first=$(timeit readblob "$via")   # hashes the whole blob before the first byte
direct_cold=(); mount_cold=()
for _ in 1 2 3 4 5; do
  drop; direct_cold+=("$(timeit readblob "$src")")
  drop; mount_cold+=("$(timeit readblob "$via")")
done
readblob "$src"; readblob "$via"
direct_warm=(); mount_warm=()
for _ in 1 2 3 4 5; do
  direct_warm+=("$(timeit readblob "$src")")
  mount_warm+=("$(timeit readblob "$via")")
done
dc=$(median "${direct_cold[@]}"); mc=$(median "${mount_cold[@]}")
dw=$(median "${direct_warm[@]}"); mw=$(median "${mount_warm[@]}")
fusermount3 -u "$work/mnt-big"; mounts=()

# ---- find -ls over ~10,000 blobs ----
if [ ! -d "$work/many" ]; then
  "$gen" --out "$work/many" --refs 1000 --layers 10 --files 1 --file-size 256 >/dev/null
fi
nblobs=$(ls "$work/many/blobs/sha256" | wc -l)
mkdir -p "$work/mnt-many"
t0=$(now)
"$bin" mount --state-dir "$work/state" "type=local,src=$work/many" "$work/mnt-many"
t1=$(now)
mounts+=("$work/mnt-many")
startup=$(echo "scale=3; ($t1-$t0)/1000000000" | bc)
# The same 11,000-odd blob files on both sides: blobs/ of the source and of the mount.
find "$work/many/blobs" -ls >/dev/null; find "$work/mnt-many/many/blobs" -ls >/dev/null
find_src=(); find_mnt=()
for _ in 1 2 3 4 5; do
  find_src+=("$(timeit find "$work/many/blobs" -ls)")
  find_mnt+=("$(timeit find "$work/mnt-many/many/blobs" -ls)")
done
# The whole mount (refs/, layer links, documents: about 2.5x the entries), once.
find_all=$(timeit find "$work/mnt-many/many" -ls)
fs_=$(median "${find_src[@]}"); fm=$(median "${find_mnt[@]}")

mib=$(echo "scale=1; $size/1048576" | bc)
printf '\n%-44s %10s %10s %8s\n' "measure" "baseline s" "mount s" "ratio"
printf '%-44s %10s %10s %8s\n' "read $mib MiB blob, cold (direct/mount)" "$dc" "$mc" "$(ratio "$dc" "$mc")"
printf '%-44s %10s %10s %8s\n' "read $mib MiB blob, warm (direct/mount)" "$dw" "$mw" "$(ratio "$dw" "$mw")"
printf '%-44s %10s %10s %8s\n' "first-ever read incl. sha256 (direct cold)" "$dc" "$first" "$(ratio "$dc" "$first")"
printf '%-44s %10s %10s %8s\n' "find -ls, $nblobs blobs (source/mount)" "$fs_" "$fm" "$(ratio "$fs_" "$fm")"
printf '%-44s %10s %10s\n' "find -ls of the whole mount (refs, links...)" "" "$find_all"
printf '%-44s %10s\n' "mount start-up, $nblobs blobs, 1000 refs (s)" "$startup"
echo "ratio = baseline time / mount time (1.00 = as fast as the baseline)"
