#!/usr/bin/env bash
# Memory benchmark (issue 10): the daemon's resident set with one layer of 1,000,000 tar
# entries indexed (bench/make_big_layer.py --entries 1000000, generated once).
#   first listing: `find | wc -l` of the layer folder in a fresh mount (verify + index),
#     then VmRSS and VmHWM of the daemon (target RSS < 100 MB);
#   after a remount with the same state dir (listed from the index): the same.
# Baseline in the same run: `tar -tzf | wc -l` of the blob for the listing time.
# Not a test, no thresholds. Prints RESULT| lines for bench/run.
# Usage: bash bench/rss_entries.sh [WORKDIR]   (root: mounts; BCFS_BENCH_NO_BUILD=1 uses build-release)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work="${1:-/var/tmp/bcfs-bench-rss}"
mkdir -p "$work"
. bench/lib.sh
build_release "$root"
bin=$root/build-release/cli/buildcachefs
mnt=$work/mnt
cleanup() { fusermount3 -u "$mnt" 2>/dev/null || true; }
trap cleanup EXIT

if [ ! -f "$work/big-layer.json" ]; then
  echo "generating a layer of 1,000,000 entries into $work (once)..." >&2
  python3 bench/make_big_layer.py "$work" --entries 1000000 --bytes $((400 << 20)) >/dev/null
fi
digest=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["digest"])' "$work/big-layer.json")
hex=${digest#sha256:}
blob=$work/cache/blobs/sha256/$hex
mkdir -p "$mnt"
rm -rf "$work/state"

kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
daemon_pid() { pgrep -f -n "buildcachefs mount --state-dir $work/state" ; }
listing() {  # prints "seconds entries rss_kb hwm_kb"
  local t0 t1 n pid
  "$bin" mount --state-dir "$work/state" "type=local,src=$work/cache,as=c" "$mnt"
  pid=$(daemon_pid)
  t0=$(now); n=$(find "$mnt/c/layers/sha256/$hex" | wc -l); t1=$(now)
  echo "$(secs "$t0" "$t1") $n $(kb "$pid" VmRSS) $(kb "$pid" VmHWM)"
  fusermount3 -u "$mnt"
}
read -r t1 n1 rss1 hwm1 < <(listing)
read -r t2 n2 rss2 hwm2 < <(listing)
t0=$(now); nt=$(tar -tzf "$blob" | wc -l); t3=$(now)
tt=$(secs "$t0" "$t3")
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
echo "layer: $digest, tar -t lists $nt entries; find lists $n1 (first) / $n2 (after remount) paths"
echo "first listing (index the layer): $t1 s; daemon RSS $(mb "$rss1") MB, peak $(mb "$hwm1") MB"
echo "after remount (from the index):  $t2 s; daemon RSS $(mb "$rss2") MB, peak $(mb "$hwm2") MB"
echo "tar -tzf | wc -l: $tt s"
echo "RESULT|RSS with $nt layer entries indexed (MB), first listing|||$(mb "$rss1")|< 100 MB"
echo "RESULT|RSS with $nt layer entries indexed (MB), after remount|||$(mb "$rss2")|< 100 MB"
echo "RESULT|listing $nt entries, first (find, indexes the layer)|tar -tzf|$tt|$t1|"
echo "RESULT|listing $nt entries, after remount|tar -tzf|$tt|$t2|"
