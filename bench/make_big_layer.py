#!/usr/bin/env python3
"""Writes the big-layer fixture for bench/layers_big.sh (issue 5): one gzip layer
of 100,000 tar entries, about 1 GiB uncompressed, in a local BuildKit cache dir.

  python3 bench/make_big_layer.py OUTDIR [--entries N] [--bytes N] [--seed N]

OUTDIR/cache/ gets blobs/sha256/, index.json, oci-layout, a cache config and an
OCI manifest (the layout of a `type=local` cache export); OUTDIR/big-layer.json
describes the layer (blob digest, entry count, uncompressed size, its big files).

The tree looks like an image layer: a few thousand directories (some a dozen
levels deep), ~95,000 small files (lognormal sizes, median 1.5 KiB), a few dozen
files of 1-32 MiB filling it up to the byte target, symlinks and hard links.
Contents mix word text (source, configs), semi-binary (runs of text, zeros and
noise, like object code) and incompressible bytes (like already compressed
assets), so gzip's ratio is realistic. Deterministic for a seed (gzip -n).
"""
import argparse
import hashlib
import io
import json
import math
import os
import random
import subprocess
import sys
import tarfile
import time

MIB = 1 << 20
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CACHECONFIG = "application/vnd.buildkit.cacheconfig.v0"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
MTIME = 1700000000
POOL = 16 * MIB


def make_pools(rng):
    """Three 16 MiB pools files are sliced from (gzip's window is 32 KiB, so a
    slice reused far away compresses like fresh data)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 11))) for _ in range(6000)]
    vocab += ["{", "}", "(", ")", "=", "==", "return", "if", "for", "self", "import", "0", "1",
              "None", "const", "let", "def", "struct", "int", "#include", "//", "->", "&&"]
    weights = [1.0 / (i + 1) for i in range(len(vocab))]  # Zipf-like
    rng.shuffle(vocab)
    out, size = [], 0
    while size < POOL:
        words = rng.choices(vocab, cum_weights=list(_accumulate(weights)), k=200_000)
        line = []
        for i, w in enumerate(words):
            line.append(w)
            if i % rng.randint(6, 14) == 0:
                chunk = " ".join(line) + "\n" + " " * (4 * rng.randint(0, 3))
                out.append(chunk)
                size += len(chunk)
                line = []
    text = "".join(out).encode()[:POOL]

    noise = rng.randbytes(POOL)
    parts, size = [], 0
    while size < POOL:  # object-code-like: text, zero runs, noise, repeated structs
        kind = rng.random()
        n = rng.randint(16, 4096)
        off = rng.randrange(0, POOL - n)
        if kind < 0.35:
            b = text[off:off + n]
        elif kind < 0.60:
            b = bytes(n)
        elif kind < 0.80:
            b = noise[off:off + n]
        else:
            rec = rng.randbytes(rng.randint(8, 32))
            b = (rec * (n // len(rec) + 1))[:n]
        parts.append(b)
        size += n
    binary = b"".join(parts)[:POOL]
    return {"text": text, "binary": binary, "random": rng.randbytes(POOL)}


def _accumulate(ws):
    s = 0.0
    for w in ws:
        s += w
        yield s


def content(rng, pools, kind, size):
    pool = pools[kind]
    parts, left = [], size
    while left > 0:
        n = min(left, POOL // 2)
        off = rng.randrange(0, POOL - n + 1)
        parts.append(pool[off:off + n])
        left -= n
    return b"".join(parts)


def plan_tree(rng, n_entries, target_bytes):
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 10)))
             for _ in range(3000)]
    roots = ["usr", "usr/lib", "usr/share", "usr/bin", "usr/include", "etc", "opt", "app",
             "app/node_modules", "var", "var/lib", "srv"]
    dirs = list(roots)
    depth = {d: d.count("/") + 1 for d in dirs}
    n_dirs = 3000
    while len(dirs) < n_dirs - 14:
        parent = rng.choice(dirs)
        if depth[parent] >= 12:
            continue
        d = parent + "/" + rng.choice(words)
        if d in depth:
            continue
        dirs.append(d)
        depth[d] = depth[parent] + 1
    # One deliberately deep chain (about 14 levels, paths past 100 characters).
    d = "opt/deep"
    dirs.append(d)
    for i in range(13):
        d += "/level%02d-%s" % (i, rng.choice(words))
        dirs.append(d)
    n_symlinks, n_hardlinks = 1000, 300
    # Big files: 1-32 MiB log-uniform until the byte target, after the small ones.
    n_small_guess = n_entries - len(dirs) - n_symlinks - n_hardlinks - 60
    small = [min(int(rng.lognormvariate(math.log(1536), 1.5)), 1 * MIB)
             for _ in range(n_small_guess)]
    overhead = lambda n: 512 + (-n % 512) + 256  # header, padding, some PAX
    used = sum(s + overhead(s) for s in small) + 512 * (len(dirs) + n_symlinks + n_hardlinks)
    big = []
    while used < target_bytes:
        s = min(int(math.exp(rng.uniform(math.log(1 * MIB), math.log(32 * MIB)))),
                target_bytes - used)
        s = max(s, 1 * MIB)
        big.append(s)
        used += s + overhead(s)
    n_small = n_entries - len(dirs) - n_symlinks - n_hardlinks - len(big)
    small = small[:n_small] + [1024] * max(0, n_small - len(small))

    entries = {}  # path -> (kind, size/target, content kind, mode)
    for d in dirs:
        entries[d] = ("d", 0, None, 0o755)
    exts_text = [".py", ".js", ".c", ".h", ".txt", ".md", ".conf", ".json", ".yaml", ".html"]
    exts_bin = [".so", ".o", ".pyc", ".a", ".bin", ""]
    exts_rand = [".png", ".gz", ".jar", ".woff2", ".jpg", ".zip"]

    def new_path(ext):
        while True:
            p = "%s/%s%s" % (rng.choice(dirs), rng.choice(words), ext)
            if p not in entries:
                return p

    for s in small:
        r = rng.random()
        kind, ext = (("text", rng.choice(exts_text)) if r < 0.60 else
                     ("binary", rng.choice(exts_bin)) if r < 0.90 else
                     ("random", rng.choice(exts_rand)))
        mode = 0o755 if kind == "binary" and rng.random() < 0.3 else 0o644
        entries[new_path(ext)] = ("f", s, kind, mode)
    for s in big:
        r = rng.random()
        kind, ext = (("random", ".tar.gz") if r < 0.15 else
                     ("binary", ".so") if r < 0.6 else ("text", ".log"))
        entries[new_path(ext)] = ("f", s, kind, 0o644)
    files = [p for p, e in entries.items() if e[0] == "f"]
    for _ in range(n_symlinks):
        t = rng.choice(files)
        entries[new_path("")] = ("l", "/" + t, None, 0o777)
    for _ in range(n_hardlinks):
        entries[new_path(".link")] = ("h", None, None, 0o644)
    assert len(entries) == n_entries, (len(entries), n_entries)
    return entries


class HashingWriter:
    def __init__(self, f):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def write(self, b):
        self.h.update(b)
        self.n += len(b)
        self.f.write(b)
        return len(b)

    def flush(self):
        self.f.flush()


def write_tar_gz(path, entries, rng, pools):
    """Streams the tar, in path order (directories before what they hold), into gzip -n."""
    with open(path, "wb") as out:
        gz = subprocess.Popen(["gzip", "-n", "-6", "-c"], stdin=subprocess.PIPE, stdout=out)
        hw = HashingWriter(gz.stdin)
        tf = tarfile.open(fileobj=hw, mode="w|", format=tarfile.PAX_FORMAT, bufsize=1 << 20)
        emitted_files = []
        for p in sorted(entries):
            kind, arg, ckind, mode = entries[p]
            ti = tarfile.TarInfo(p + "/" if kind == "d" else p)
            ti.mode, ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = mode, MTIME, 0, 0, "", ""
            if kind == "h" and not emitted_files:
                kind, arg, ckind = "f", 100, "text"
            if kind == "d":
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            elif kind == "l":
                ti.type, ti.linkname = tarfile.SYMTYPE, arg[1:] if rng.random() < 0.5 else arg
                tf.addfile(ti)
            elif kind == "h":
                ti.type, ti.linkname = tarfile.LNKTYPE, rng.choice(emitted_files)
                tf.addfile(ti)
            else:
                data = content(rng, pools, ckind, arg)
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
                if arg < 64 * 1024:
                    emitted_files.append(p)
        tf.close()
        gz.stdin.close()
        if gz.wait() != 0:
            sys.exit("gzip failed")
    return "sha256:" + hw.h.hexdigest(), hw.n


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(8 * MIB)
            if not b:
                return "sha256:" + h.hexdigest()
            h.update(b)


def write_layout(root, digest, size, diff_id):
    """Around the layer blob already in blobs/sha256: a cache config, an OCI manifest
    (config of the cacheconfig media type), index.json naming the ref, oci-layout;
    one layer (parent -1: Go's omitempty would read a missing parent as 0), one record."""
    bdir = os.path.join(root, "blobs", "sha256")
    os.makedirs(os.path.join(root, "ingest"), exist_ok=True)

    def put(data):
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        with open(os.path.join(bdir, d.split(":")[1]), "wb") as f:
            f.write(data)
        return d

    config = {"layers": [{"blob": digest, "parent": -1}],
              "records": [{"digest": "sha256:" + hashlib.sha256(b"big record").hexdigest(),
                           "layers": [{"layer": 0, "createdAt": "2026-01-01T00:00:00Z"}]}]}
    cbytes = json.dumps(config, separators=(",", ":")).encode()
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": CACHECONFIG, "digest": put(cbytes), "size": len(cbytes)},
                "layers": [{"mediaType": LAYER_GZIP, "digest": digest, "size": size,
                            "annotations": {"containerd.io/uncompressed": diff_id,
                                            "buildkit/createdat": "2026-01-01T00:00:00Z"}}]}
    mbytes = json.dumps(manifest, separators=(",", ":")).encode()
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX,
             "manifests": [{"mediaType": OCI_MANIFEST, "digest": put(mbytes),
                            "size": len(mbytes), "annotations": {REF_NAME: "big"}}]}
    with open(os.path.join(root, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(root, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--bytes", type=int, default=1 << 30, help="uncompressed tar size, about")
    ap.add_argument("--seed", type=int, default=5)
    a = ap.parse_args()
    t0 = time.time()
    rng = random.Random(a.seed)
    pools = make_pools(rng)
    entries = plan_tree(rng, a.entries, a.bytes)
    cache = os.path.join(a.outdir, "cache")
    bdir = os.path.join(cache, "blobs", "sha256")
    os.makedirs(bdir, exist_ok=True)
    tmp = os.path.join(bdir, ".layer.tmp")
    diff_id, tar_size = write_tar_gz(tmp, entries, rng, pools)
    digest, size = sha256_file(tmp), os.path.getsize(tmp)
    os.rename(tmp, os.path.join(bdir, digest.split(":")[1]))
    write_layout(cache, digest, size, diff_id)
    big = sorted(((p, e[1]) for p, e in entries.items() if e[0] == "f" and e[1] >= MIB),
                 key=lambda x: x[0])
    desc = {"digest": digest, "blob_size": size, "diff_id": diff_id, "tar_size": tar_size,
            "entries": len(entries), "big_files": [{"path": p, "size": s} for p, s in big]}
    with open(os.path.join(a.outdir, "big-layer.json"), "w") as f:
        json.dump(desc, f, indent=1)
    print("%s: %d entries, %.0f MiB tar, %.0f MiB gzip (%.2fx), %d files >= 1 MiB, %.0f s"
          % (digest, len(entries), tar_size / MIB, size / MIB, tar_size / size, len(big),
             time.time() - t0))


if __name__ == "__main__":
    main()
