#!/usr/bin/env python3
"""Registry read benchmark (issue 4). Prints ratios against baselines measured
in the same run on the same data; not a test, no thresholds.

  1 GiB blob in a local docker-registry (open mode):
    baseline: curl -o /dev/null of the blob from the registry (median of 3)
    cold:     first read through a fresh mount (fresh state dir): open() waits for
              fetch + sha256 (hashed in order while parts arrive), then read() serves
    warm:     the same blob again (page cache) vs a native file read (median of 5)

Usage (root): python3 bench/registry_read.py [--work DIR] [--bin B] [--gen G]
"""
import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "servers"))
from registry_harness import Registry  # noqa: E402


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def read_file(path, bs=1 << 20):
    n = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(bs)
            if not b:
                return n
            n += len(b)


def drop_caches():
    subprocess.run(["sync"])
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/var/tmp/bcfs-bench")
    ap.add_argument("--bin", default=os.path.join(ROOT, "build-release/cli/buildcachefs"))
    ap.add_argument("--gen", default=os.path.join(ROOT, "build-release/tests/gen/buildcachefs-gen"))
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    big = os.path.join(a.work, "big")
    if not os.path.isdir(big):
        subprocess.run([a.gen, "--out", big, "--layers", "1", "--files", "1", "--file-size",
                        str((1 << 30) - 65536), "--compression", "uncompressed"], check=True,
                       stdout=subprocess.DEVNULL)
    blobs = os.path.join(big, "blobs", "sha256")
    blob = max(os.listdir(blobs), key=lambda h: os.path.getsize(os.path.join(blobs, h)))
    native = os.path.join(blobs, blob)
    size = os.path.getsize(native)
    tmp = tempfile.mkdtemp(prefix="bcfs-regbench-", dir=a.work)
    mnt = os.path.join(tmp, "mnt")
    os.makedirs(mnt)
    try:
        with Registry("open") as reg:
            reg.push_layout(big, "bench/cache", tag="big")
            url = "%s/v2/bench/cache/blobs/sha256:%s" % (reg.url, blob)
            curl = []
            for _ in range(3):
                t, _ = timed(lambda: subprocess.run(["curl", "-sf", "-o", "/dev/null", url],
                                                    check=True))
                curl.append(t)
            state = os.path.join(tmp, "state")
            subprocess.run([a.bin, "mount", "--state-dir", state,
                            "type=registry,ref=%s/bench/cache:big" % reg.host, mnt], check=True)
            try:
                path = os.path.join(mnt, "cache", "blobs", "sha256", blob)
                t0 = time.perf_counter()
                fd = os.open(path, os.O_RDONLY)   # waits for fetch + whole-blob sha256
                t_open = time.perf_counter() - t0
                n = 0
                h = hashlib.sha256()
                while True:
                    b = os.read(fd, 1 << 20)
                    if not b:
                        break
                    n += len(b)
                    h.update(b)
                os.close(fd)
                t_cold = time.perf_counter() - t0
                assert n == size and h.hexdigest() == blob, "wrong bytes through the mount"
                # OpenSSL's sha256, as the store uses, over the same bytes (page cache).
                read_file(native)
                hash_alone, _ = timed(lambda: subprocess.run(
                    ["openssl", "dgst", "-sha256", native], check=True, stdout=subprocess.DEVNULL))
                warm_mnt, warm_nat = [], []
                read_file(path)
                read_file(native)
                for _ in range(5):
                    warm_mnt.append(timed(lambda: read_file(path))[0])
                    warm_nat.append(timed(lambda: read_file(native))[0])
            finally:
                subprocess.run(["fusermount3", "-u", mnt])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    c = statistics.median(curl)
    wm, wn = statistics.median(warm_mnt), statistics.median(warm_nat)
    mib = size / (1 << 20)
    print("machine: %d cores, %s" % (os.cpu_count(), os.uname().release))
    print("%-52s %10s %10s %7s" % ("measure", "baseline s", "mount s", "ratio"))
    print("%-52s %10.3f %10.3f %7.2f" % ("cold read %.0f MiB (curl / first read via mount)" % mib,
                                         c, t_cold, c / t_cold))
    print("%-52s %10s %10.3f" % ("  of which open(): fetch + sha256 in order", "", t_open))
    print("%-52s %10s %10.3f" % ("  of which read(): serving the verified file", "", t_cold - t_open))
    print("%-52s %10s %10.3f" % ("  openssl sha256 of the same bytes (page cache)", "", hash_alone))
    print("%-52s %10.3f %10.3f %7.2f" % ("warm read (native file / mount)", wn, wm, wn / wm))
    print("ratio = baseline time / mount time (1.00 = as fast as the baseline)")


if __name__ == "__main__":
    main()
