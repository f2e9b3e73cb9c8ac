#!/usr/bin/env python3
"""Timed 4 KiB random reads into the big files of the bench/make_big_layer.py
layer, for bench/layers_big.sh. The same (file, offset) pairs for a seed, under
whatever ROOT holds the layer's tree (a buildcachefs layer folder, the tree
extracted on disk, an archivemount mount).

  python3 bench/random_reads.py LAYER_JSON ROOT [--count 200] [--seed 1]
          [--max-reads N] [--deadline SECONDS] [--status STATUS_JSON] [--check DIR]

Each read is open, posix_fadvise(RANDOM) (no readahead: one 4 KiB request),
pread, close. Pairs are drawn by bytes over the files >= 1 MiB, offsets 4 KiB
aligned. Prints one JSON object: reads done, seconds, reads/s, latencies, why it
stopped; with --status, the deltas of the buildcachefs status.json "layers"
counters; with --check, how many reads differ from the same bytes under DIR.
"""
import argparse
import bisect
import json
import os
import random
import signal
import sys
import time

SIZE = 4096


def pairs(layer, count, seed):
    big = layer["big_files"]
    cum, total = [], 0
    for f in big:
        total += f["size"]
        cum.append(total)
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        i = bisect.bisect_right(cum, rng.randrange(total))
        f = big[i]
        out.append((f["path"], rng.randrange(0, (f["size"] - SIZE) // SIZE + 1) * SIZE))
    return out


def counters(path):
    with open(path) as f:
        return json.load(f)["layers"]


def read_at(root, path, off):
    fd = os.open(os.path.join(root, path), os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        return os.pread(fd, SIZE, off)
    finally:
        os.close(fd)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("layer_json")
    ap.add_argument("root")
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-reads", type=int, default=None)
    ap.add_argument("--deadline", type=float, default=None, help="stop starting reads after this")
    ap.add_argument("--status", default=None)
    ap.add_argument("--check", default=None)
    a = ap.parse_args()
    with open(a.layer_json) as f:
        layer = json.load(f)
    todo = pairs(layer, a.count, a.seed)
    if a.max_reads is not None:
        todo = todo[:a.max_reads]
    before = counters(a.status) if a.status else None
    lat, got, stopped = [], [], "done"

    def report(*_):
        secs = sum(lat)
        res = {"reads": len(lat), "planned": len(todo), "seconds": round(secs, 3),
               "reads_per_s": round(len(lat) / secs, 2) if secs > 0 else 0,
               "p50_ms": round(sorted(lat)[len(lat) // 2] * 1000, 2) if lat else None,
               "max_ms": round(max(lat) * 1000, 2) if lat else None,
               "stopped": stopped}
        if before is not None:
            after = counters(a.status)
            res["delta"] = {k: after[k] - before[k] for k in before}
            res["inflated_per_read"] = (res["delta"]["bytes_inflated_for_reads"] / len(lat)
                                        if lat else None)
        if a.check:
            res["mismatches"] = sum(1 for (p, o), d in zip(todo, got)
                                    if d != read_at(a.check, p, o))
        print(json.dumps(res), flush=True)

    def on_term(*_):
        nonlocal stopped
        stopped = "killed"
        report()
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    start = time.monotonic()
    for p, o in todo:
        if a.deadline is not None and time.monotonic() - start > a.deadline:
            stopped = "deadline"
            break
        t0 = time.monotonic()
        data = read_at(a.root, p, o)
        lat.append(time.monotonic() - t0)
        got.append(data)
        if len(data) != SIZE:
            print("short read: %s @%d: %d bytes" % (p, o, len(data)), file=sys.stderr)
    report()


if __name__ == "__main__":
    main()
