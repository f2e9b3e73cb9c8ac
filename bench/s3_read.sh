#!/usr/bin/env bash
# S3 read benchmark (issue 7): a cold 1 GiB layer blob read through the mount of a
# type=s3 source vs curl of the same object from the same moto server, in the same run.
# Prints the throughput ratio mount/curl (target >= 0.6). Not a test, no thresholds.
#
# moto runs without auth here (tests/servers/moto_harness.py --no-auth): moto's presigned
# URLs crash with auth on (TEST-SERVERS.md §2.2), so curl reads the object unauthenticated;
# the mount still sends SigV4-signed requests (moto accepts them). moto keeps the object in
# RAM (~1 GiB, plus a copy while uploading).
#
# "Cold": a fresh state dir for every mount read, so the whole blob is fetched (one
# ranged GET streamed into the content store, each 8 MiB part synced and recorded as it
# completes) and hashed before the first byte is served.
#
# Baseline: curl with SigV4 (--aws-sigv4), one GET of the object from the same server.
# RANGES=1 adds the old request pattern (8 MiB ranges 4 at a time) as a second baseline;
# moto 5.2.1 copies the whole object for every ranged GET, so that one is slow.
#
# Usage: bash bench/s3_read.sh [WORKDIR]   (root for the mount; BCFS_BIN=path to use a
# given buildcachefs, else build-release is configured and built, Release; SIZE_MIB=1024,
# RUNS=3)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work="${1:-$(mktemp -d /var/tmp/bcfs-s3bench.XXXXXX)}"
mkdir -p "$work"
size_mib="${SIZE_MIB:-1024}"
runs="${RUNS:-3}"

if [ -n "${BCFS_BIN:-}" ]; then
  bin=$BCFS_BIN
else
  [ -f build-release/CMakeCache.txt ] ||
    cmake -S . -B build-release -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  ninja -C build-release -j2 cli/buildcachefs >/dev/null
  bin=$root/build-release/cli/buildcachefs
fi
bash scripts/deps-moto.sh >/dev/null

moto_pid=""
mounts=()
cleanup() {
  for m in "${mounts[@]}"; do fusermount3 -u "$m" 2>/dev/null || true; done
  if [ -n "$moto_pid" ]; then kill "$moto_pid" 2>/dev/null || true; wait "$moto_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT

now() { date +%s%N; }
secs() { echo "scale=3; ($2-$1)/1000000000" | bc; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg)"

# moto prints one JSON line once it listens; read it through a fifo.
rm -f "$work/ready"  # a run killed before its cleanup leaves it
mkfifo "$work/ready"
env -u AWS_CA_BUNDLE python3 tests/servers/moto_harness.py --serve --no-auth \
  >"$work/ready" 2>"$work/moto.log" &
moto_pid=$!
read -r -t 60 line <"$work/ready"
port=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["port"])' "$line")
url="http://127.0.0.1:$port"
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1

# One uncompressed layer of SIZE_MIB random MiB and a cache config naming it.
digest=$(env -u AWS_CA_BUNDLE python3 - "$url" "$size_mib" "$work" <<'PY'
import hashlib, json, os, sys, boto3
from botocore.config import Config
url, mib, work = sys.argv[1], int(sys.argv[2]), sys.argv[3]
path = os.path.join(work, "blob")
h = hashlib.sha256()
with open(path, "wb") as f:
    for _ in range(mib):
        b = os.urandom(1 << 20); h.update(b); f.write(b)
d = "sha256:" + h.hexdigest()
c = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                 config=Config(s3={"addressing_style": "path"}))
c.create_bucket(Bucket="bench")
c.upload_file(path, "bench", "blobs/" + d)
size = os.path.getsize(path)
os.unlink(path)
cfg = {"layers": [{"blob": d, "parent": -1, "annotations": {
    "mediaType": "application/vnd.oci.image.layer.v1.tar", "diffID": d, "size": size,
    "createdAt": "2026-01-01T00:00:00Z"}}],
    "records": [{"layers": [{"layer": 0, "createdAt": "2026-01-01T00:00:00Z"}],
                 "digest": "sha256:" + "0" * 64}]}
c.put_object(Bucket="bench", Key="manifests/bench", Body=json.dumps(cfg).encode())
print(d)
PY
)
hex=${digest#sha256:}
obj="$url/bench/blobs/$digest"
echo "object: $size_mib MiB at $obj"

sig=(--aws-sigv4 "aws:amz:us-east-1:s3" --user "bench:bench")
size=$((size_mib * 1048576)); part=$((8 * 1048576))
ranges() { for ((o = 0; o < size; o += part)); do e=$((o + part - 1)); [ $e -ge $size ] && e=$((size - 1)); echo "$o-$e"; done; }
curl_t=(); range_t=(); mount_t=()
for i in $(seq 1 "$runs"); do
  t0=$(now); curl -sf "${sig[@]}" -o /dev/null "$obj"; t1=$(now)
  curl_t+=("$(secs "$t0" "$t1")")
  if [ "${RANGES:-0}" = 1 ]; then
    t0=$(now); ranges | xargs -P 4 -I R curl -sf "${sig[@]}" -r R -o /dev/null "$obj"; t1=$(now)
    range_t+=("$(secs "$t0" "$t1")")
  fi
  state="$work/state-$i"; mnt="$work/mnt-$i"; mkdir -p "$mnt"
  "$bin" mount --state-dir "$state" \
    "type=s3,bucket=bench,endpoint_url=$url,use_path_style=true,region=us-east-1,name=bench" "$mnt"
  mounts+=("$mnt")
  t0=$(now); dd if="$mnt/bench/blobs/sha256/$hex" of=/dev/null bs=1M 2>/dev/null; t1=$(now)
  mount_t+=("$(secs "$t0" "$t1")")
  fusermount3 -u "$mnt"; mounts=()
  rm -rf "$state"
done
c=$(median "${curl_t[@]}"); m=$(median "${mount_t[@]}")
echo "curl, one GET of the object:        ${curl_t[*]} s (median $c s, $(echo "scale=0; $size_mib/$c" | bc) MiB/s)"
if [ "${RANGES:-0}" = 1 ]; then
  r=$(median "${range_t[@]}")
  echo "curl, 8 MiB ranges 4 at a time:     ${range_t[*]} s (median $r s, $(echo "scale=0; $size_mib/$r" | bc) MiB/s)"
fi
echo "cold read through the mount:        ${mount_t[*]} s (median $m s, $(echo "scale=0; $size_mib/$m" | bc) MiB/s)"
echo "ratio mount/curl one GET:    $(echo "scale=2; $c/$m" | bc)  (target >= 0.6)"
