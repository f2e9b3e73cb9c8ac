#!/usr/bin/env bash
# Throughput cost of access tracking (issue 6): the same daemon-served reads with
# accesses recorded (the default) and with `-o noatime` (nothing recorded), page
# cache dropped before every pass, passes alternated. Prints the ratio; no thresholds.
#   1. open + read every file of a 20,000-file layer (one access per open)
#   2. read a 256 MiB blob (one access per open, many reads)
# Usage: bash bench/access_tracking.sh [WORKDIR]   (root: mounts, drop_caches)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work="${1:-$(mktemp -d /var/tmp/bcfs-access.XXXXXX)}"
mkdir -p "$work"
cmake -S . -B build-release -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBCFS_TESTS=OFF >/dev/null
ninja -C build-release buildcachefs buildcachefs-gen >/dev/null
bin=$root/build-release/cli/buildcachefs
gen=$root/build-release/tests/gen/buildcachefs-gen
now() { date +%s%N; }
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }

if [ ! -d "$work/cache" ]; then
  "$gen" --out "$work/cache" --layers 2 --files 20000 --file-size 2048 --compression uncompressed >/dev/null
  # One big blob of its own, in the same cache (an unreferenced file is still a blob).
  head -c $((256 << 20)) /dev/urandom >"$work/big"
  hex=$(sha256sum "$work/big" | cut -d' ' -f1)
  mv "$work/big" "$work/cache/blobs/sha256/$hex"
fi
layer=$(ls -S "$work/cache/blobs/sha256" | sed -n 2p)  # the biggest is the 256 MiB blob
big=$(ls -S "$work/cache/blobs/sha256" | head -n 1)
mnt="$work/mnt"
mkdir -p "$mnt"
trap 'fusermount3 -u "$mnt" 2>/dev/null || true' EXIT

# pass MODE WHAT -> seconds
pass() {
  local opts=() t0 t1
  [ "$1" = off ] && opts=(-o noatime)
  rm -rf "$work/state"
  "$bin" mount --state-dir "$work/state" --no-gc "${opts[@]}" "type=local,src=$work/cache" "$mnt"
  find "$mnt/cache/layers/sha256/$layer" -type f >/dev/null  # index the layer first
  drop
  t0=$(now)
  if [ "$2" = files ]; then
    find "$mnt/cache/layers/sha256/$layer" -type f -print0 | xargs -0 cat >/dev/null
  else
    cat "$mnt/cache/blobs/sha256/$big" >/dev/null
  fi
  t1=$(now)
  fusermount3 -u "$mnt"
  echo "scale=3; ($t1-$t0)/1000000000" | bc
}
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }

for what in files blob; do
  on=(); off=()
  for i in 1 2 3 4 5; do
    on+=("$(pass on "$what")")
    off+=("$(pass off "$what")")
  done
  m_on=$(median "${on[@]}"); m_off=$(median "${off[@]}")
  printf '%-44s tracking off %6ss  on %6ss  cost %s%%\n' \
    "$( [ "$what" = files ] && echo "open+read 20,000 files of a layer" || echo "read a 256 MiB blob")" \
    "$m_off" "$m_on" "$(echo "scale=1; 100*($m_on-$m_off)/$m_off" | bc)"
done
echo "median of 5 alternated passes each, page cache dropped before every pass; cost = (on - off) / off"
