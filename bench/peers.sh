#!/usr/bin/env bash
# buildcachefs against `rclone mount` (issue 10), the same data in the same run:
#   local: a cache directory of ~10,000 blobs and a 256 MiB blob; rclone mounts the
#          directory (--read-only, no VFS cache), buildcachefs mounts it as type=local:
#          find -ls of blobs/ (warm, median of 3) and a cold read of the big blob (page
#          cache dropped; buildcachefs verified it once before: its verification memo);
#   s3:    the same 256 MiB blob as a layer of a cache in BuildKit's s3 layout in moto;
#          rclone mounts the bucket (no VFS cache), buildcachefs mounts type=s3 with a fresh
#          state dir each time (fetch into the store + sha256 before the first byte).
# Also the native read of the file as the floor. Ratio = rclone time / buildcachefs time
# (> 1: buildcachefs faster). Not a test, no thresholds. Prints RESULT| lines for bench/run.
# Usage: bash bench/peers.sh [WORKDIR]   (root: mounts, drop_caches; installs rclone)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
. bench/lib.sh
work="${1:-/var/tmp/bcfs-bench-peers}"
mkdir -p "$work"
build_release "$root"
bin=$root/build-release/cli/buildcachefs
gen=$root/build-release/tests/gen/buildcachefs-gen
command -v rclone >/dev/null || apt-get install -y rclone >/dev/null 2>&1
command -v rclone >/dev/null || { echo "peers.sh: rclone is not installed" >&2; exit 1; }
bash scripts/deps-moto.sh >/dev/null

moto_pid=""
mounts=()
cleanup() {
  for m in "${mounts[@]}"; do fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  if [ -n "$moto_pid" ]; then kill "$moto_pid" 2>/dev/null || true; wait "$moto_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT
machine

# rclone mount as a daemon, ready when the mountpoint is a mountpoint.
rclone_mount() {  # REMOTE MNT
  mkdir -p "$2"
  env -u AWS_CA_BUNDLE rclone mount "$1" "$2" --read-only --vfs-cache-mode off --daemon --log-file "$work/rclone.log" \
    --config /dev/null
  mounts+=("$2")
  local i
  for i in $(seq 1 200); do mountpoint -q "$2" && return 0; sleep 0.05; done
  echo "peers.sh: rclone mount $1 did not come up (see $work/rclone.log)" >&2; exit 1
}
unmount() { fusermount3 -u "$1"; mounts=("${mounts[@]/$1}"); }
timed() { local t0 t1; t0=$(now); "$@" >/dev/null 2>&1; t1=$(now); secs "$t0" "$t1"; }
readfile() { dd if="$1" of=/dev/null bs=1M 2>/dev/null; }

# ---- data ----
if [ ! -d "$work/cache" ]; then
  "$gen" --out "$work/cache" --refs 1000 --layers 10 --files 1 --file-size 256 >/dev/null
fi
if [ ! -f "$work/big.bin" ]; then head -c $((256 << 20)) /dev/urandom >"$work/big.bin"; fi
bighex=$(sha256sum "$work/big.bin" | cut -d' ' -f1)
cp -n "$work/big.bin" "$work/cache/blobs/sha256/$bighex"
nblobs=$(ls "$work/cache/blobs/sha256" | wc -l)

# ---- local ----
rclone_mount "$work/cache" "$work/mnt-rclone"
mkdir -p "$work/mnt-bcfs"
rm -rf "$work/state"
"$bin" mount --state-dir "$work/state" "type=local,src=$work/cache,as=c" "$work/mnt-bcfs"
mounts+=("$work/mnt-bcfs")
readfile "$work/mnt-bcfs/c/blobs/sha256/$bighex"  # verification memo
find "$work/mnt-rclone/blobs" -ls >/dev/null; find "$work/mnt-bcfs/c/blobs" -ls >/dev/null
fr=(); fb=(); fn=(); rr=(); rb=(); rn=()
for _ in 1 2 3; do
  fn+=("$(timed find "$work/cache/blobs" -ls)")
  fr+=("$(timed find "$work/mnt-rclone/blobs" -ls)")
  fb+=("$(timed find "$work/mnt-bcfs/c/blobs" -ls)")
  drop_caches; rn+=("$(timed readfile "$work/cache/blobs/sha256/$bighex")")
  drop_caches; rr+=("$(timed readfile "$work/mnt-rclone/blobs/sha256/$bighex")")
  drop_caches; rb+=("$(timed readfile "$work/mnt-bcfs/c/blobs/sha256/$bighex")")
done
unmount "$work/mnt-rclone"; unmount "$work/mnt-bcfs"
FN=$(median "${fn[@]}"); FR=$(median "${fr[@]}"); FB=$(median "${fb[@]}")
RN=$(median "${rn[@]}"); RR=$(median "${rr[@]}"); RB=$(median "${rb[@]}")
echo "local, find -ls of $nblobs blobs: native ${fn[*]}, rclone ${fr[*]}, buildcachefs ${fb[*]} s"
echo "local, cold read of 256 MiB: native ${rn[*]}, rclone ${rr[*]}, buildcachefs ${rb[*]} s"

# ---- s3 ----
start_moto "$work"
digest=$(put_s3_layer "$moto_url" bench "$work/big.bin")
export RCLONE_CONFIG_MOTO_TYPE=s3 RCLONE_CONFIG_MOTO_PROVIDER=Other \
  RCLONE_CONFIG_MOTO_ENDPOINT="$moto_url" RCLONE_CONFIG_MOTO_ACCESS_KEY_ID=bench \
  RCLONE_CONFIG_MOTO_SECRET_ACCESS_KEY=bench RCLONE_CONFIG_MOTO_REGION=us-east-1 \
  RCLONE_CONFIG_MOTO_FORCE_PATH_STYLE=true
sr=(); sb=(); sc=()
for i in 1 2 3; do
  sc+=("$(timed curl -sf -o /dev/null "$moto_url/bench/blobs/$digest")")
  rclone_mount "moto:bench" "$work/mnt-rclone-s3"
  drop_caches; sr+=("$(timed readfile "$work/mnt-rclone-s3/blobs/$digest")")
  unmount "$work/mnt-rclone-s3"
  rm -rf "$work/state-s3"; mkdir -p "$work/mnt-bcfs-s3"
  "$bin" mount --state-dir "$work/state-s3" \
    "type=s3,bucket=bench,endpoint_url=$moto_url,use_path_style=true,region=us-east-1,name=bench,as=s" \
    "$work/mnt-bcfs-s3"
  mounts+=("$work/mnt-bcfs-s3")
  sb+=("$(timed readfile "$work/mnt-bcfs-s3/s/blobs/sha256/${digest#sha256:}")")
  unmount "$work/mnt-bcfs-s3"
done
SR=$(median "${sr[@]}"); SB=$(median "${sb[@]}"); SC=$(median "${sc[@]}")
echo "s3 (moto), cold read of 256 MiB: curl ${sc[*]}, rclone ${sr[*]}, buildcachefs ${sb[*]} s"
echo "RESULT|local: find -ls of $nblobs blobs|rclone mount|$FR|$FB|"
echo "RESULT|local: find -ls of $nblobs blobs|native|$FN|$FB|"
echo "RESULT|local: cold read of a 256 MiB blob|rclone mount|$RR|$RB|"
echo "RESULT|local: cold read of a 256 MiB blob|native|$RN|$RB|"
echo "RESULT|s3: cold read of a 256 MiB blob|rclone mount|$SR|$SB|"
echo "RESULT|s3: cold read of a 256 MiB blob|curl|$SC|$SB|"
