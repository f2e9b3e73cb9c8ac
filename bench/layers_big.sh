#!/usr/bin/env bash
# Big-layer benchmark (issue 5, "must show"). Prints ratios against baselines
# measured in the same run on the same layer; not a test, no thresholds.
# One gzip layer of 100,000 entries, ~1 GiB uncompressed (bench/make_big_layer.py,
# generated once into WORKDIR, with its tree extracted once to WORKDIR/extracted):
#   first `find -ls` of the layer folder (fresh state dir: verify + index) vs `tar -tvzf`
#     (and the split: verifying, the decompression pass, saving the index, next to
#     sha256sum and gzip -dc of the blob)
#   `find -ls` after a remount with the same state dir (listed from the index, no
#     decompression) vs `find -ls` of the extracted tree, page cache dropped before each
#   4 KiB random reads into the big files: with the derived copy, without it (seek
#     points), on the extracted tree, and through archivemount (bounded: 50 reads / 60 s)
# Usage: bash bench/layers_big.sh [WORKDIR]   (root: mounts, drops the page cache;
#   default WORKDIR /var/tmp/bcfs-layers-big, ~3.5 GiB of disk; generating and
#   extracting the layer take ~1 min the first time; the rest ~3 min plus however
#   long the first mount takes to save the layer's index, 18-22 min on 2026-11-27)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work="${1:-/var/tmp/bcfs-layers-big}"
mkdir -p "$work"
work=$(cd "$work" && pwd)
# BCFS_BENCH_NO_BUILD=1 uses the binary already in build-release (a shared work
# tree may not build at every moment).
if [ -z "${BCFS_BENCH_NO_BUILD:-}" ]; then
  cmake -S . -B build-release -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBCFS_TESTS=OFF >/dev/null
  ninja -C build-release buildcachefs buildcachefs-gen >/dev/null
fi
bin=$root/build-release/cli/buildcachefs
now() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'; }
timeit() { local t0 t1; t0=$(now); "$@" >/dev/null 2>&1 || true; t1=$(now); secs "$t0" "$t1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }'; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
jget() { python3 -c 'import json,sys; d=json.load(sys.stdin)
for k in sys.argv[1].split("."): d=d[k]
print(d)' "$1"; }

layer_json="$work/big-layer.json"
if [ ! -f "$layer_json" ]; then
  rm -rf "$work/cache" "$work/extracted" "$work/extracted.done"
  echo "generating the layer into $work (once)..." >&2
  python3 bench/make_big_layer.py "$work" >&2
fi
digest=$(jget digest <"$layer_json")
hex=${digest#sha256:}
src="$work/cache/blobs/sha256/$hex"
if [ ! -f "$work/extracted.done" ]; then
  echo "extracting the layer into $work/extracted (once)..." >&2
  rm -rf "$work/extracted"
  mkdir -p "$work/extracted"
  tar -xzf "$src" -C "$work/extracted"
  touch "$work/extracted.done"
fi
if ! command -v archivemount >/dev/null; then
  apt-get install -y archivemount >/dev/null 2>&1 || echo "archivemount not installed: its rows are skipped" >&2
fi

mnt="$work/mnt"
amnt="$work/amnt"
state="$work/state"
derived="$state/derived/sha256/$hex"
aside="$work/derived.aside"
mkdir -p "$mnt" "$amnt"
cleanup() {
  fusermount3 -u "$mnt" 2>/dev/null || true
  fusermount3 -u "$amnt" 2>/dev/null || true
  if [ -f "$aside" ]; then mv "$aside" "$derived"; fi
}
trap cleanup EXIT
cleanup
bench_t0=$(now)
mount_() { "$bin" mount --state-dir "$1" "type=local,src=$work/cache" "$mnt"; }
umount_() { fusermount3 -u "$mnt"; }
layer="$mnt/cache/layers/sha256/$hex"
status="$mnt/.buildcachefs/status.json"
reads() { python3 bench/random_reads.py "$layer_json" "$@"; }

# 2. First listing: fresh state dir (the blob is verified, the tar indexed and the
#    derived copy written in one pass, the entries saved to index.db) vs tar -tvzf.
#    The split: verifying alone is timed on another fresh state dir (reading one
#    byte of the blob waits for its whole-blob sha256, nothing is indexed); the
#    decompression pass ends when the derived copy is last written (its mtime),
#    before the entries are saved to SQLite and listed.
rm -rf "$state" "$work/state-split"
mount_ "$work/state-split"
drop
t0=$(now); head -c 1 "$mnt/cache/blobs/sha256/$hex" >/dev/null; t1=$(now)
split_verify=$(secs "$t0" "$t1")
umount_
rm -rf "$work/state-split"
mount_ "$state"
drop
echo "first find -ls of the layer folder (indexes the layer)..." >&2
t0=$(now); find "$layer" -ls >/dev/null; t1=$(now)
first=$(secs "$t0" "$t1")
pass_end=$(stat -c %.9Y "$derived" | tr -d .)
split_pass=$(secs "$t0" "$pass_end")
split_save=$(secs "$pass_end" "$t1")
passes1=$(jget layers.indexing_passes <"$status")
entries=$(find "$layer" | wc -l)
umount_
drop
tar_t=$(timeit tar -tvzf "$src")
drop
sha_t=$(timeit sha256sum "$src")
drop
gunzip_t=$(timeit sh -c "gzip -dc '$src' >/dev/null")

# 3. Remount with the same state dir: listed from the index.
drop
t0=$(now); mount_ "$state"; t1=$(now)
remount_t=$(secs "$t0" "$t1")
drop
again=$(timeit find "$layer" -ls)
hot=$(timeit find "$layer" -ls)
passes2=$(jget layers.indexing_passes <"$status")
loaded2=$(jget layers.loaded_from_index <"$status")
umount_
drop
ext_t=$(timeit find "$work/extracted" -ls)
ext_hot=$(timeit find "$work/extracted" -ls)

# 4. 4 KiB random reads (200 pairs over the files >= 1 MiB, same pairs everywhere).
drop
mount_ "$state"
drop
r_derived=$(reads "$layer" --status "$status" --check "$work/extracted")
umount_
mv "$derived" "$aside"
drop
mount_ "$state"
drop
r_seek=$(reads "$layer" --status "$status" --check "$work/extracted")
umount_
mv "$aside" "$derived"
drop
r_disk=$(reads "$work/extracted")
am_mount="-" r_am='{"reads": 0, "reads_per_s": 0, "p50_ms": null, "stopped": "not run"}'
if command -v archivemount >/dev/null; then
  drop
  t0=$(now)
  if timeout 300 archivemount -o ro,readonly "$src" "$amnt" >/dev/null 2>&1; then
    t1=$(now)
    am_mount=$(secs "$t0" "$t1")
    drop
    r_am=$(timeout -k 30 90 python3 bench/random_reads.py "$layer_json" "$amnt" \
      --max-reads 50 --deadline 60 --check "$work/extracted" ||
      echo '{"reads": 0, "reads_per_s": 0, "p50_ms": null, "stopped": "timeout"}')
    fusermount3 -u "$amnt"
  else
    am_mount="failed"
  fi
fi

rget() { echo "$1" | jget "$2"; }
row() { printf '%-58s %12s %12s %7s\n' "$@"; }
size=$(stat -c %s "$src")
tar_size=$(jget tar_size <"$layer_json")
echo "machine: $(nproc) cores, $(uname -r); layer: $((size / 1048576)) MiB gzip, $((tar_size / 1048576)) MiB tar, $entries entries (find, with the folder)"
row "measure" "baseline" "buildcachefs" "ratio"
row "first find -ls (verify+index+derived copy) vs tar -tvzf, s" "$tar_t" "$first" "$(ratio "$tar_t" "$first")"
row "  verifying alone (fresh state) vs sha256sum of the blob, s" "$sha_t" "$split_verify" "$(ratio "$sha_t" "$split_verify")"
row "  start to derived copy written (verify+inflate+tar parse), s" "" "$split_pass" ""
row "    less verifying, vs gzip -dc >/dev/null, s" "$gunzip_t" "$(sub "$split_pass" "$split_verify")" "$(ratio "$gunzip_t" "$(sub "$split_pass" "$split_verify")")"
row "  derived copy written to listing done (index.db save, list), s" "" "$split_save" ""
row "remount, same state dir (until it answers), s" "" "$remount_t" ""
row "find -ls after remount vs find -ls of extracted tree, s" "$ext_t" "$again" "$(ratio "$ext_t" "$again")"
row "  again, hot (page and dentry caches), s" "$ext_hot" "$hot" "$(ratio "$ext_hot" "$hot")"
echo "status.json layers: first mount indexing_passes=$passes1; after remount indexing_passes=$passes2 loaded_from_index=$loaded2"
rr() { # label, result json, baseline reads/s
  local rps
  rps=$(rget "$2" reads_per_s)
  row "$1" "$3" "$rps" "$(ratio "$rps" "$3")"
}
disk_rps=$(rget "$r_disk" reads_per_s)
rr "4 KiB random reads/s, derived copy vs extracted tree" "$r_derived" "$disk_rps"
rr "4 KiB random reads/s, seek points (no derived) vs extracted" "$r_seek" "$disk_rps"
row "  bytes inflated per read, seek points (span 2 MiB)" "" "$(rget "$r_seek" inflated_per_read | cut -d. -f1)" ""
row "  bytes inflated per read, derived copy" "" "$(rget "$r_derived" inflated_per_read | cut -d. -f1)" ""
row "  derived bytes sha256-checked per read, derived copy" "" "$(awk -v a="$(rget "$r_derived" delta.derived_bytes_checked)" -v b="$(rget "$r_derived" reads)" 'BEGIN { printf "%d", a / b }')" ""
row "archivemount: mount time, s" "" "$am_mount" ""
row "4 KiB random reads/s, seek points vs archivemount" "$(rget "$r_am" reads_per_s)" "$(rget "$r_seek" reads_per_s)" \
  "$( [ "$(rget "$r_am" reads)" = 0 ] && echo - || ratio "$(rget "$r_seek" reads_per_s)" "$(rget "$r_am" reads_per_s)")"
echo "reads: derived $(rget "$r_derived" reads) (p50 $(rget "$r_derived" p50_ms) ms, mismatches $(rget "$r_derived" mismatches)); seek points $(rget "$r_seek" reads) (p50 $(rget "$r_seek" p50_ms) ms, mismatches $(rget "$r_seek" mismatches)); extracted $(rget "$r_disk" reads) (p50 $(rget "$r_disk" p50_ms) ms); archivemount $(rget "$r_am" reads) of 50 (p50 $(rget "$r_am" p50_ms) ms, stopped: $(rget "$r_am" stopped))"
echo "bench: $(( ($(now) - bench_t0) / 1000000000 )) s (without generating and extracting)"
echo "ratio = baseline time / buildcachefs time, or buildcachefs reads/s / baseline reads/s (1.00 = as fast as the baseline)"
