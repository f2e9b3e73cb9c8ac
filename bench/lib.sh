# Shared helpers of the bench/ scripts (sourced, not run).
now() { date +%s%N; }
# seconds (3 decimals) between two now() values
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }'; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
machine() {
  echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
}

# build_release ROOT: the RelWithDebInfo build every bench uses (skipped with
# BCFS_BENCH_NO_BUILD=1, as bench/run does after building once).
build_release() {
  if [ -z "${BCFS_BENCH_NO_BUILD:-}" ]; then
    cmake -S "$1" -B "$1/build-release" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DBCFS_TESTS=OFF >/dev/null
    ninja -C "$1/build-release" buildcachefs buildcachefs-gen >/dev/null
  fi
}

# start_moto WORKDIR: moto's S3 server without auth (moto's presigned URLs crash with
# auth on, so curl and rclone read unauthenticated; TEST-SERVERS.md §2.2). Sets
# moto_pid and moto_url; the caller kills moto_pid on exit.
start_moto() {
  rm -f "$1/moto.ready"
  mkfifo "$1/moto.ready"
  env -u AWS_CA_BUNDLE python3 tests/servers/moto_harness.py --serve --no-auth \
    >"$1/moto.ready" 2>"$1/moto.log" &
  moto_pid=$!
  local line
  read -r -t 60 line <"$1/moto.ready"
  moto_url="http://127.0.0.1:$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["port"])' "$line")"
  export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
}

# put_s3_layer URL BUCKET FILE: uploads FILE as an uncompressed layer blob of a cache in
# BuildKit's s3 layout (blobs/<digest>, manifests/bench naming it); prints the digest.
put_s3_layer() {
  env -u AWS_CA_BUNDLE python3 - "$@" <<'PY'
import hashlib, json, os, sys, boto3
from botocore.config import Config
url, bucket, path = sys.argv[1:4]
h = hashlib.sha256()
with open(path, "rb") as f:
    for b in iter(lambda: f.read(1 << 20), b""):
        h.update(b)
d = "sha256:" + h.hexdigest()
c = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                 config=Config(s3={"addressing_style": "path"}))
c.create_bucket(Bucket=bucket)
c.upload_file(path, bucket, "blobs/" + d)
size = os.path.getsize(path)
cfg = {"layers": [{"blob": d, "parent": -1, "annotations": {
    "mediaType": "application/vnd.oci.image.layer.v1.tar", "diffID": d, "size": size,
    "createdAt": "2026-01-01T00:00:00Z"}}],
    "records": [{"layers": [{"layer": 0, "createdAt": "2026-01-01T00:00:00Z"}],
                 "digest": "sha256:" + "0" * 64}]}
c.put_object(Bucket=bucket, Key="manifests/bench", Body=json.dumps(cfg).encode())
print(d)
PY
}
