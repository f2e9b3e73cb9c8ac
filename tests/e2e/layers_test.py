#!/usr/bin/env python3
"""End-to-end tests of layer contents in the mount: `<source>/layers/sha256/<hex>/` shows one
layer blob's tar as a directory, and `refs/<ref>/layers/NNN-<hex12>` links point at it
(docs/TREE.md, "Layer contents"). Real FUSE mounts, as root.

Every expectation is computed here from the layer blobs with Python's tarfile, gzip and the
`zstd` command line tool (another route than the code under test): paths (cleaned, implied
parents added, the later duplicate winning), types, permission bits, owners, mtimes (PAX
nanoseconds exactly), sizes, symlink targets, hard links, devices, fifos, xattrs and every
byte of every regular file. Fixtures from ../shared are copied to a temp dir first; nothing
in ../shared is written.

  1. FixtureLayers / GeneratedLayers: every layer of every fixture and generated cache,
     including generated eStargz layers in 64 KiB chunks and `--rich` layers (PAX long
     names and link targets, hard links, devices, a fifo, xattrs, ns mtimes, special modes,
     owners, whiteouts, an opaque dir) in gzip, zstd, uncompressed and eStargz.
  2. The refs/<ref>/layers/NNN-<hex12> links resolve to the layer folders.
  3. HandMadeLayers: layers built here with what the fixtures lack (devices, fifos, PAX
     mtimes, xattrs, setuid/setgid/sticky, big uids, hard links with 4 names, duplicates,
     implied dirs, GNU long names, multi-member gzip, multi-frame zstd, 5 MiB random and
     7 MiB text files read across the 2 MiB seek points).
  4. HostileLayer: `..`, absolute paths, symlinks out, hard links to nothing, PAX `..`.
  5. DigestMismatch: a layer blob whose bytes do not match its digest shows nothing.

Mounts and cleanup come from mount_test.Base (fusermount3 -u in a cleanup, a watchdog).

Run by ctest: layers_test.py --bin BUILDCACHEFS --gen BUILDCACHEFS_GEN --shared DIR
Needs root, /dev/fuse, fusermount3, zstd. Outside CI a non-root run skips the module; under
CI any missing prerequisite is a failure.
"""

import errno
import gzip
import hashlib
import io
import json
import os
import random
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import unittest
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import e2e_cli  # noqa: E402
import mount_test as mt  # noqa: E402  (Base: mounts, cleanup, watchdog; helpers)
from cachefiles import CACHECONFIG, LOCAL_FIXTURES, blob_path, read_blob  # noqa: E402

ARGS = None
X = "user.buildcachefs."
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MIB = 1 << 20
SEEK_SPAN = 2 * MIB          # gzip/eStargz seek points (TREE.md)
BIG = 64 * 1024              # files above this also get random pread ranges
BLOB_MTIME_NS = 1_600_000_000_123_456_789  # set on hand-made blobs (implied dirs show it)
VARIANTS = None            # the hand-made layer blobs, built once


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------
# The independent route: blob -> tar bytes -> expected tree


def decompress(blob):
    """The uncompressed tar, detected from the bytes as BuildKit does (FORMATS.md §9.1;
    eStargz is a valid multi-member tar.gz)."""
    if blob[:3] == b"\x1f\x8b\x08":
        return gzip.decompress(blob)
    if blob[:4] == b"\x28\xb5\x2f\xfd":
        p = subprocess.run(["zstd", "-dc", "-q"], input=blob, capture_output=True, timeout=120)
        if p.returncode != 0:
            raise RuntimeError("zstd -dc: " + p.stderr.decode(errors="replace"))
        return p.stdout
    return blob


def pax_mtime_ns(text):
    """A PAX mtime record ("1700000000.123456789", maybe signed) in nanoseconds, exactly."""
    neg = text.startswith("-")
    whole, _, frac = text.lstrip("+-").partition(".")
    ns = int(whole or "0") * 10 ** 9 + int((frac + "000000000")[:9])
    return -ns if neg else ns


def clean(name):
    """A tar name as the mount shows it: no leading ./ or /, no empty or . components.
    None when a component is `..` (skipped), "" for the root itself."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None
    return "/".join(parts)


class Node:
    """One inode of the expected tree (hard links share one)."""

    def __init__(self, kind, mode, uid, gid, mtime_ns, size=0, data=None, target=None,
                 rdev=None, xattrs=None, implied=False):
        self.kind, self.mode, self.uid, self.gid = kind, mode, uid, gid
        self.mtime_ns, self.size, self.data, self.target = mtime_ns, size, data, target
        self.rdev, self.xattrs, self.implied = rdev, dict(xattrs or {}), implied


KINDS = {"f": stat.S_IFREG, "d": stat.S_IFDIR, "l": stat.S_IFLNK, "c": stat.S_IFCHR,
         "b": stat.S_IFBLK, "p": stat.S_IFIFO}


def tar_model(raw, blob_mtime_ns):
    """(path -> Node, skipped names) for the tar bytes; tarfile stops at the first end
    marker, so whatever follows it (the eStargz TOC) is ignored."""
    tf = tarfile.open(fileobj=io.BytesIO(raw), mode="r:")
    paths, skipped = {}, []
    for m in tf:
        p = clean(m.name)
        if p is None:
            skipped.append(m.name)
            continue
        if p == "":
            continue  # the layer folder itself
        if m.islnk():
            t = clean(m.linkname)
            if not t or t not in paths:
                skipped.append(m.name)
                continue
            paths[p] = paths[t]
            continue
        if "mtime" in m.pax_headers:
            mtime = pax_mtime_ns(m.pax_headers["mtime"])
        else:
            mtime = int(m.mtime) * 10 ** 9
        xattrs = {k[len("SCHILY.xattr."):]: v.encode("utf-8", "surrogateescape")
                  for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")}
        common = dict(mode=m.mode & 0o7777, uid=m.uid, gid=m.gid, mtime_ns=mtime, xattrs=xattrs)
        if m.isreg():
            data = tf.extractfile(m).read()
            node = Node("f", size=len(data), data=data, **common)
        elif m.isdir():
            node = Node("d", **common)
        elif m.issym():
            node = Node("l", target=m.linkname, size=len(os.fsencode(m.linkname)), **common)
        elif m.ischr() or m.isblk():
            node = Node("c" if m.ischr() else "b", rdev=os.makedev(m.devmajor, m.devminor),
                        **common)
        elif m.isfifo():
            node = Node("p", **common)
        else:
            raise AssertionError("tar member %r has type %r the tests do not model"
                                 % (m.name, m.type))
        paths[p] = node
    for p in list(paths):
        parts = p.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent not in paths:
                paths[parent] = Node("d", 0o755, 0, 0, blob_mtime_ns, implied=True)
    return paths, skipped


def names_per_node(paths):
    count = {}
    for node in paths.values():
        count[id(node)] = count.get(id(node), 0) + 1
    return count


def subdir_counts(paths):
    """relative dir ("" = the layer folder) -> number of subdirectories."""
    subdirs = {}
    for p, node in paths.items():
        if node.kind == "d":
            parent = p.rsplit("/", 1)[0] if "/" in p else ""
            subdirs[parent] = subdirs.get(parent, 0) + 1
    return subdirs


def walk_paths(top):
    """Every path below top (relative), os.walk without following links."""
    got = set()

    def boom(e):
        raise e
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False, onerror=boom):
        rel = os.path.relpath(dirpath, top)
        for n in dirnames + filenames:
            got.add(n if rel == "." else rel + "/" + n)
    return got


def layer_blobs(model):
    """{layer digest: media type or None} of every layer any ref or history entry's cache
    config names."""
    out = {}
    for r in model.refs + model.history:
        for l in r.config_layers:
            out[l["blob"]] = model.media.get(l["blob"])
    return out


# ---------------------------------------------------------------------------
# Hand-made caches


def write_layout(root, layers, ref="latest"):
    """A local cache directory holding layers [(blob bytes, media type)] as one chain
    (bottom first): blobs, a cache config, an OCI image manifest whose config has the
    cacheconfig media type, index.json with the ref name, oci-layout. Returns the digests."""
    bdir = os.path.join(root, "blobs", "sha256")
    os.makedirs(bdir)
    os.makedirs(os.path.join(root, "ingest"))

    def put(data, mtime_ns=None):
        d = sha256(data)
        path = os.path.join(bdir, d.split(":")[1])
        with open(path, "wb") as f:
            f.write(data)
        if mtime_ns is not None:
            os.utime(path, ns=(mtime_ns, mtime_ns))
        return d

    digests, descs = [], []
    for blob, media in layers:
        d = put(blob, BLOB_MTIME_NS)
        digests.append(d)
        descs.append({"mediaType": media, "digest": d, "size": len(blob),
                      "annotations": {"containerd.io/uncompressed": sha256(decompress(blob)),
                                      "buildkit/createdat": "2026-01-01T00:00:00Z"}})
    config = {"layers": [], "records": []}
    for i, d in enumerate(digests):
        entry = {"blob": d}
        if i != 1:  # Go omitempty drops a parent of 0
            entry["parent"] = i - 1
        config["layers"].append(entry)
        rec = {"digest": sha256(b"record %d" % i),
               "layers": [{"layer": i, "createdAt": "2026-01-01T00:00:00Z"}]}
        if i > 0:
            rec["inputs"] = [[{"link": i - 1}]]
        config["records"].append(rec)
    cbytes = json.dumps(config, separators=(",", ":")).encode()
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": CACHECONFIG, "digest": put(cbytes), "size": len(cbytes)},
                "layers": descs}
    mbytes = json.dumps(manifest, separators=(",", ":")).encode()
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX,
             "manifests": [{"mediaType": OCI_MANIFEST, "digest": put(mbytes),
                            "size": len(mbytes), "annotations": {REF_NAME: ref}}]}
    with open(os.path.join(root, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(root, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    return digests


class TarBuilder:
    def __init__(self, fmt=tarfile.PAX_FORMAT):
        self.buf = io.BytesIO()
        self.tf = tarfile.open(fileobj=self.buf, mode="w", format=fmt)

    def add(self, name, kind="f", data=b"", mode=None, uid=0, gid=0, mtime=1700000000,
            target="", pax=None, dev=(0, 0)):
        if mode is None:
            mode = {"d": 0o755, "l": 0o777}.get(kind, 0o644)
        ti = tarfile.TarInfo(name)
        ti.type = {"f": tarfile.REGTYPE, "d": tarfile.DIRTYPE, "l": tarfile.SYMTYPE,
                   "h": tarfile.LNKTYPE, "c": tarfile.CHRTYPE, "b": tarfile.BLKTYPE,
                   "p": tarfile.FIFOTYPE}[kind]
        ti.mode, ti.uid, ti.gid, ti.mtime = mode, uid, gid, mtime
        ti.uname = ti.gname = ""
        ti.linkname = target
        ti.devmajor, ti.devminor = dev
        if pax:
            ti.pax_headers = dict(pax)
        if kind == "f":
            ti.size = len(data)
            self.tf.addfile(ti, io.BytesIO(data))
        else:
            self.tf.addfile(ti)

    def bytes(self):
        self.tf.close()
        return self.buf.getvalue()


def rich_tar():
    """What the BuildKit fixtures lack, in one PAX tar."""
    rng = random.Random(4242)
    t = TarBuilder()
    t.add("rich/", "d", mode=0o755, mtime=1700000100)
    t.add("rich/hello.txt", data=b"hello, layer\n")
    t.add("rich/setuid", data=b"#!/bin/sh\necho suid\n", mode=0o4755)
    t.add("rich/setgid", data=b"sgid\n", mode=0o2750, gid=50)
    t.add("rich/sticky/", "d", mode=0o1777)
    t.add("rich/sticky/in-sticky", data=b"x")
    t.add("rich/owned", data=b"owned\n", mode=0o600, uid=1234, gid=5678)
    t.add("rich/biguid", data=b"big ids\n", uid=3_000_000, gid=4_000_000)  # PAX uid/gid
    t.add("rich/pax-mtime", data=b"ns\n", pax={"mtime": "1700000000.123456789"})
    t.add("rich/pax-mtime-up", data=b"ns\n", mtime=1700000001,
          pax={"mtime": "1700000000.999999999"})
    t.add("rich/pax-mtime-dir/", "d", mode=0o750, pax={"mtime": "1699999999.5"})
    t.add("rich/pax-mtime-link", "l", target="hello.txt", pax={"mtime": "1700000002.000000001"})
    t.add("rich/xattrs", data=b"with xattrs\n",
          pax={"SCHILY.xattr.user.comment": "a comment", "SCHILY.xattr.user.two": "2"})
    t.add("rich/xattr-bin", data=b"binary xattr value (hdrcharset=BINARY)\n",
          pax={"SCHILY.xattr.user.bin": b"\x00\x01\xfe\xff".decode("utf-8", "surrogateescape")})
    t.add("rich/xattr-dir/", "d", pax={"SCHILY.xattr.user.dir": "on a dir"})
    t.add("rich/dev/", "d")
    t.add("rich/dev/null", "c", mode=0o666, dev=(1, 3))
    t.add("rich/dev/sda1", "b", mode=0o660, gid=6, dev=(8, 1))
    t.add("rich/dev/bigdev", "c", mode=0o600, dev=(259, 70000))
    t.add("rich/dev/fifo", "p", mode=0o620)
    t.add("rich/hl/", "d")
    t.add("rich/hl/orig", data=b"four names\n" * 100, mode=0o640, uid=7, gid=8)
    t.add("rich/hl/link1", "h", target="rich/hl/orig")
    t.add("rich/hl/link2", "h", target="./rich/hl/orig")
    t.add("rich/other/link3", "h", target="rich/hl/orig")  # other/ is implied
    t.add("rich/links/abs", "l", target="/etc/hostname")
    t.add("rich/links/rel", "l", target="../hello.txt")
    t.add("rich/links/dangling", "l", target="no/such/thing")
    t.add("rich/links/long", "l", target="../" + "long-target-" * 20)  # PAX linkpath
    t.add("rich/links/ünï-😀", "l", target="ziel-ünï")
    t.add("rich/" + "/".join("level%02d-with-a-longish-name" % i for i in range(8)) + "/f",
          data=b"deep and long\n")  # PAX path, implied dirs
    t.add("rich/dup.txt", data=b"first\n", mode=0o600)
    t.add("rich/dup.txt", data=b"second, longer\n", mode=0o644, mtime=1700000500)
    t.add("implied/a/b/file.txt", data=b"parents implied\n")
    t.add("./dotted/file.txt", data=b"dot prefix\n")
    t.add("/rooted/file.txt", data=b"slash prefix\n")
    t.add("rich/empty", data=b"")
    t.add("rich/emptydir/", "d", mode=0o700)
    t.add("rich/.wh.gone", data=b"", mode=0o000)
    t.add("rich/opq/", "d")
    t.add("rich/opq/.wh..wh..opq", data=b"")
    t.add("rich/ünïcödé-文件-😀.txt", data="unicode ✓\n".encode())
    t.add("rich/big/random.bin", data=rng.randbytes(5 * MIB + 12345))
    t.add("rich/big/text.txt", data=b"".join(b"line %08d %s\n" % (i, b"abcdefgh" * (i % 13))
                                             for i in range(130000)))
    t.add("rich/big/exact-2mib.bin", data=rng.randbytes(SEEK_SPAN))
    t.add("rich/", "d", mode=0o711, uid=1, gid=2, mtime=1700000200)  # listed again: wins
    return t.bytes()


def gnu_tar():
    """GNU format: ././@LongLink names and link targets, base-256 ids."""
    t = TarBuilder(tarfile.GNU_FORMAT)
    long_dir = "gnu/" + "d" * 120
    t.add("gnu/", "d")
    t.add(long_dir + "/", "d")
    t.add(long_dir + "/" + "f" * 150, data=b"gnu long name\n")
    t.add("gnu/longlink", "l", target="x" * 200)
    t.add("gnu/hardlong", "h", target=long_dir + "/" + "f" * 150)
    t.add("gnu/bigid", data=b"base-256\n", uid=10_000_000, gid=20_000_000)
    return t.bytes()


def gzip_members(raw, size):
    return b"".join(gzip.compress(raw[i:i + size], mtime=0) for i in range(0, len(raw), size))


def zstd(raw):
    p = subprocess.run(["zstd", "-c", "-q", "-3"], input=raw, capture_output=True, timeout=120,
                       check=True)
    return p.stdout


def zstd_frames(raw, size):
    return b"".join(zstd(raw[i:i + size]) for i in range(0, len(raw), size))


def hostile_tar():
    t = TarBuilder()
    t.add("good.txt", data=b"the good one\n")
    t.add("../escape", data=b"escaped!\n")
    t.add("/abs/file", data=b"absolute\n")
    t.add("a/../../b", data=b"dotdot\n")
    t.add("passwd-link", "l", target="/etc/passwd")
    t.add("up", "l", target="../../../..")
    t.add("up/escaped.txt", data=b"through the symlink\n")
    t.add("hl-missing", "h", target="no/such/file")
    t.add("hl-dotdot", "h", target="../../../../etc/passwd")
    # The ustar name is harmless; the PAX path (which wins) is not.
    t.add("benign-name", data=b"pax escape\n", pax={"path": "x/../../paxescape"})
    t.add("zz-last.txt", data=b"after the hostile ones\n")
    return t.bytes()


# ---------------------------------------------------------------------------


class Base(mt.Base):
    def layer_dir(self, mnt, name, digest):
        return os.path.join(mnt, name, "layers", "sha256", digest.split(":")[1])

    def compare_layer(self, top, paths, source=None, digest=None, media=None, error=False):
        """Problems (strings) between the folder top and the expected tree."""
        bad = []
        try:
            got = walk_paths(top)
        except OSError as e:
            return ["%s: walk: %s" % (top, e)]
        want = set(paths)
        if got != want:
            extra, missing = sorted(got - want), sorted(want - got)
            bad.append("paths shown but not in the tar: %s" % extra[:20])
            bad.append("paths in the tar but not shown: %s" % missing[:20])
        names = names_per_node(paths)
        subdirs = subdir_counts(paths)
        inodes = {}
        for rel in sorted(want & got):
            node = paths[rel]
            path = os.path.join(top, rel)
            try:
                st = os.lstat(path)
            except OSError as e:
                bad.append("%s: lstat: %s" % (rel, e))
                continue
            inodes.setdefault(id(node), set()).add(st.st_ino)
            if stat.S_IFMT(st.st_mode) != KINDS[node.kind]:
                bad.append("%s: type %o, want %o" % (rel, stat.S_IFMT(st.st_mode),
                                                     KINDS[node.kind]))
                continue
            if node.kind != "l" and stat.S_IMODE(st.st_mode) != node.mode:
                bad.append("%s: mode %04o, want %04o" % (rel, stat.S_IMODE(st.st_mode), node.mode))
            if (st.st_uid, st.st_gid) != (node.uid, node.gid):
                bad.append("%s: owner %d:%d, want %d:%d" % (rel, st.st_uid, st.st_gid,
                                                            node.uid, node.gid))
            if st.st_mtime_ns != node.mtime_ns:
                bad.append("%s: mtime %d ns, want %d ns" % (rel, st.st_mtime_ns, node.mtime_ns))
            want_nlink = 2 + subdirs.get(rel, 0) if node.kind == "d" else names[id(node)]
            if st.st_nlink != want_nlink:
                bad.append("%s: nlink %d, want %d" % (rel, st.st_nlink, want_nlink))
            if node.kind in "fl" and st.st_size != node.size:
                bad.append("%s: size %d, want %d" % (rel, st.st_size, node.size))
            if node.kind in "cb" and st.st_rdev != node.rdev:
                bad.append("%s: rdev %d:%d, want %d:%d" % (
                    rel, os.major(st.st_rdev), os.minor(st.st_rdev),
                    os.major(node.rdev), os.minor(node.rdev)))
            if node.kind == "l":
                try:
                    t = os.readlink(path)
                except OSError as e:
                    bad.append("%s: readlink: %s" % (rel, e))
                else:
                    if t != node.target:
                        bad.append("%s -> %r, want %r" % (rel, t, node.target))
            if node.kind == "f":
                bad += self.compare_bytes(rel, path, node.data)
            try:
                xnames = set(os.listxattr(path, follow_symlinks=False))
            except OSError as e:
                bad.append("%s: listxattr: %s" % (rel, e))
            else:
                if xnames != set(node.xattrs):
                    bad.append("%s: xattrs %s, want %s" % (rel, sorted(xnames),
                                                           sorted(node.xattrs)))
                if node.kind in "fd":  # Linux refuses user.* on other types itself
                    for k in sorted(xnames & set(node.xattrs)):
                        try:
                            v = os.getxattr(path, k, follow_symlinks=False)
                        except OSError as e:
                            bad.append("%s: getxattr %s: %s" % (rel, k, e))
                            continue
                        if v != node.xattrs[k]:
                            bad.append("%s: %s = %r, want %r" % (rel, k, v, node.xattrs[k]))
        seen = {}
        for nid, inos in inodes.items():
            if len(inos) != 1:
                bad.append("hard-linked names have inodes %s" % sorted(inos))
            for i in inos:
                if i in seen and seen[i] != nid:
                    bad.append("inode %d is shared by unrelated entries" % i)
                seen[i] = nid
        if not stat.S_ISDIR(os.lstat(top).st_mode):
            bad.append("layer folder is not a directory")
        if digest is not None:
            bad += self.check_folder_xattrs(top, source, digest, media, error)
        return bad

    def check_folder_nlinks(self, folders):
        """folders: [(layer folder, expected tree)], all walked already (so indexed): each
        reports nlink 2 + its top-level directories (TREE.md: nlink 1 only until then)."""
        with self.subTest(check="layer folders report nlink 2 + subdirectories once indexed"):
            bad = []
            for top, paths in folders:
                want = 2 + subdir_counts(paths).get("", 0)
                got = os.lstat(top).st_nlink
                if got != want:
                    bad.append("%s: nlink %d, want %d" % (os.path.basename(top)[:12], got, want))
            self.assertEqual(bad, [])

    def compare_bytes(self, rel, path, data):
        bad = []
        try:
            with open(path, "rb") as f:
                got = f.read()
        except OSError as e:
            return ["%s: read: %s" % (rel, e)]
        if got != data:
            return ["%s: %d bytes read differ from the tar's %d (first difference at %s)" % (
                rel, len(got), len(data),
                next((i for i, (a, b) in enumerate(zip(got, data)) if a != b),
                     min(len(got), len(data))))]
        if len(data) <= BIG:
            return bad
        rng = random.Random(rel)
        ranges = [(rng.randrange(len(data)), rng.randrange(1, 200000)) for _ in range(6)]
        ranges += [(len(data) - 1, 10), (len(data), 10), (0, 1)]
        # Across the 2 MiB seek points of compressed layers.
        ranges += [(k * SEEK_SPAN - 777, 1554) for k in range(1, len(data) // SEEK_SPAN + 1)]
        fd = os.open(path, os.O_RDONLY)
        try:
            for off, n in ranges:
                try:
                    chunk = os.pread(fd, n, off)
                except OSError as e:
                    bad.append("%s: pread(%d, %d): %s" % (rel, n, off, e))
                    continue
                if chunk != data[off:off + n]:
                    bad.append("%s: pread(%d bytes at %d) differs" % (rel, n, off))
        finally:
            os.close(fd)
        return bad

    def check_folder_xattrs(self, top, source, digest, media, error):
        bad = []
        want = {"digest": digest, "source": source}
        if media:
            want["mediatype"] = media
        got = {}
        for n in os.listxattr(top):
            if not n.startswith(X):
                bad.append("layer folder: unexpected xattr %s" % n)
                continue
            got[n[len(X):]] = os.getxattr(top, n).decode()
        for k, v in want.items():
            if got.get(k) != v:
                bad.append("layer folder: %s%s = %r, want %r" % (X, k, got.get(k), v))
        extra = set(got) - set(want) - {"mediatype"}
        if not error and extra:
            bad.append("layer folder: unexpected %s" % {k: got[k] for k in extra})
        return bad

    def check_source_layers(self, mnt, name, root):
        """Every layer folder of source name against its blob, then the ref links."""
        model = mt.SourceModel(root, name, self.local(root))
        src = os.path.join(mnt, name)
        blobs = layer_blobs(model)
        self.assertTrue(blobs, "the cache names no layers")
        with self.subTest(check="layers/ and layers/sha256/ list exactly the config layers"):
            self.assertEqual(os.listdir(os.path.join(src, "layers")), ["sha256"])
            self.assertEqual(sorted(os.listdir(os.path.join(src, "layers", "sha256"))),
                             sorted(d.split(":")[1] for d in blobs))
        folders = []
        for digest, media in sorted(blobs.items()):
            with self.subTest(layer=digest):
                blob = read_blob(root, digest)
                paths, _ = tar_model(decompress(blob),
                                     os.stat(blob_path(root, digest)).st_mtime_ns)
                folders.append((self.layer_dir(mnt, name, digest), paths))
                bad = self.compare_layer(self.layer_dir(mnt, name, digest), paths,
                                         self.local(root), digest, media)
                self.assertEqual(bad, [])
        self.check_folder_nlinks(folders)
        self.check_links(mnt, name, model)
        return model

    def check_links(self, mnt, name, model):
        src = os.path.join(mnt, name)
        with self.subTest(check="refs/<ref>/layers/NNN-<hex12> resolve to the layer folders"):
            bad = []
            for r in model.refs + model.history:
                base = os.path.join(src, "history" if r.history else "refs", r.folder, "layers")
                for lname, bd in r.links:
                    hexd = bd.split(":")[1]
                    link = os.path.join(base, lname)
                    target = os.readlink(link)
                    if target != "../../../layers/sha256/" + hexd:
                        bad.append("%s -> %s" % (link, target))
                    if os.path.realpath(link) != os.path.join(src, "layers", "sha256", hexd):
                        bad.append("%s resolves to %s" % (link, os.path.realpath(link)))
                    if not os.path.isdir(link):
                        bad.append("%s is not a directory through the link" % link)
            self.assertEqual(bad, [])
        with self.subTest(check="ls -la through a layer link"):
            r = model.refs[0]
            base = os.path.join(src, "refs", r.folder, "layers")
            for lname, bd in r.links:
                p = subprocess.run(["ls", "-la", "--quoting-style=literal",
                                    os.path.join(base, lname) + "/"],
                                   capture_output=True, text=True, timeout=60)
                self.assertEqual(p.returncode, 0, "ls -la %s/: %s" % (lname, p.stderr))
                listed = os.listdir(os.path.join(src, "layers", "sha256", bd.split(":")[1]))
                lines = p.stdout.splitlines()
                self.assertEqual(len(lines), 3 + len(listed), p.stdout)  # total, ., ..
                self.assertTrue(all(" " + n in p.stdout for n in listed), p.stdout)


# ---------------------------------------------------------------------------
# 1-2. Every layer of the fixtures and generated caches


class FixtureLayers(Base):
    pass


def make_fixture_test(fixture):
    def test(self):
        root = self.fixture(fixture)
        mnt = self.mount([self.local(root)])
        self.check_source_layers(mnt, fixture, root)
    test.__name__ = "test_%s_layers_match_their_tars" % fixture.replace("-", "_")
    return test


for _f in LOCAL_FIXTURES:
    setattr(FixtureLayers, "test_%s_layers_match_their_tars" % _f.replace("-", "_"),
            make_fixture_test(_f))


class GeneratedLayers(Base):
    def check_generated(self, compression):
        root = self.generate("index", out=os.path.join(self.tmp, "gen-" + compression),
                             compression=compression)
        mnt = self.mount([self.local(root)])
        self.check_source_layers(mnt, "gen-" + compression, root)

    def test_generated_gzip_layers_match_their_tars(self):
        self.check_generated("gzip")

    def test_generated_zstd_layers_match_their_tars(self):
        self.check_generated("zstd")

    def test_generated_uncompressed_layers_match_their_tars(self):
        self.check_generated("uncompressed")

    def generate_variant(self, name, compression, rich=False, file_size=None, chunk=None):
        out = os.path.join(self.tmp, name)
        cmd = [ARGS.gen, "--out", out, "--shape", "index", "--compression", compression,
               "--refs", "2", "--ref-names", "latest,feature/x", "--seed", "5"]
        if rich:
            cmd.append("--rich")
        if file_size is not None:
            cmd += ["--file-size", str(file_size)]
        if chunk is not None:
            cmd += ["--estargz-chunk-size", str(chunk)]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        return out

    def check_estargz_blobs(self, root, chunk):
        """The generated layers are eStargz (FORMATS.md §9.2), checked here by another
        route than the generator's own test: the footer points at a gzip member holding
        only stargz.index.json, whose SHA-256 is the descriptor's toc.digest annotation,
        and whose chunks cover each file with their digests."""
        descs = {}
        with open(os.path.join(root, "index.json")) as f:
            index = json.load(f)
        for m in index["manifests"]:
            top = json.loads(read_blob(root, m["digest"]))
            for d in top.get("layers", []) + top.get("manifests", []):
                if d["mediaType"] != CACHECONFIG:
                    descs[d["digest"]] = d
        self.assertTrue(descs)
        multi = 0
        for digest, d in sorted(descs.items()):
            with self.subTest(estargz=digest):
                self.assertEqual(d["mediaType"], LAYER_GZIP)
                blob = read_blob(root, digest)
                footer = blob[-51:]
                self.assertEqual(footer[:16], b"\x1f\x8b\x08\x04\0\0\0\0\0\xff\x1a\x00SG\x16\x00")
                self.assertEqual(footer[32:38], b"STARGZ")
                toc_off = int(footer[16:32], 16)
                z = zlib.decompressobj(16 + zlib.MAX_WBITS)
                toc_tar = z.decompress(blob[toc_off:])
                self.assertEqual(z.unused_data, footer, "the TOC member ends at the footer")
                members = tarfile.open(fileobj=io.BytesIO(toc_tar), mode="r:").getmembers()
                self.assertEqual([m.name for m in members], ["stargz.index.json"])
                toc_json = toc_tar[512:512 + members[0].size]
                ann = d["annotations"]
                self.assertEqual(ann["containerd.io/snapshot/stargz/toc.digest"], sha256(toc_json))
                whole = gzip.decompress(blob)
                self.assertEqual(ann["io.containers.estargz.uncompressed-size"], str(len(whole)))
                self.assertEqual(ann["containerd.io/uncompressed"], sha256(whole))
                files = {m.name: m for m in tarfile.open(fileobj=io.BytesIO(whole), mode="r:")}
                tf = tarfile.open(fileobj=io.BytesIO(whole), mode="r:")
                data = {m.name: tf.extractfile(m).read() for m in tf if m.isreg()}
                name = None
                for e in json.loads(toc_json)["entries"]:
                    if e["type"] == "reg":
                        name = e["name"]
                        self.assertEqual(e.get("size", 0), files[name].size)
                        self.assertEqual(e["digest"], sha256(data[name]))
                    if e["type"] not in ("reg", "chunk") or "offset" not in e:
                        continue
                    self.assertEqual(e["name"], name)
                    off = e.get("chunkOffset", 0)
                    size = e.get("chunkSize", 0) or len(data[name]) - off
                    multi += off > 0
                    piece = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(
                        blob[e["offset"]:])[:size]
                    self.assertEqual(piece, data[name][off:off + size], (name, off))
                    self.assertEqual(e["chunkDigest"], sha256(piece))
                    self.assertLessEqual(size, chunk)
        self.assertGreater(multi, 0, "some file has several chunks")

    def test_generated_estargz_layers_in_small_chunks_match_their_tars(self):
        root = self.generate_variant("gen-estargz", "estargz", file_size=200000, chunk=65536)
        self.check_estargz_blobs(root, 65536)
        mnt = self.mount([self.local(root)])
        self.check_source_layers(mnt, "gen-estargz", root)

    def check_rich(self, compression):
        name = "gen-rich-" + compression
        # 2 x 64 KiB: exact.bin is a whole number of eStargz chunks.
        root = self.generate_variant(name, compression, rich=True, file_size=131072,
                                     chunk=65536 if compression == "estargz" else None)
        if compression == "estargz":
            self.check_estargz_blobs(root, 65536)
        model = mt.SourceModel(root, name, self.local(root))
        with self.subTest(check="the generated layers have what --rich promises"):
            for digest in sorted(layer_blobs(model)):
                paths, skipped = tar_model(decompress(read_blob(root, digest)), 0)
                self.assertEqual(skipped, [])
                nodes = list(paths.values())
                kinds = {n.kind for n in nodes}
                self.assertTrue({"f", "d", "l", "c", "b", "p"} <= kinds, kinds)
                self.assertTrue(any(n.xattrs for n in nodes if n.kind == "f"))
                self.assertTrue(any(n.xattrs for n in nodes if n.kind == "d"))
                self.assertTrue(any(n.mtime_ns % 10 ** 9 for n in nodes), "ns mtimes")
                for bit in (0o4000, 0o2000, 0o1000):
                    self.assertTrue(any(n.mode & bit for n in nodes), oct(bit))
                self.assertTrue(any(n.uid not in (0,) and n.gid not in (0,) for n in nodes))
                self.assertTrue(any(len(p.rsplit("/", 1)[-1]) > 100 for p in paths))
                self.assertTrue(any(n.kind == "l" and len(n.target) > 100 for n in nodes))
                self.assertGreaterEqual(max(names_per_node(paths).values()), 2, "hard links")
        mnt = self.mount([self.local(root)])
        self.check_source_layers(mnt, name, root)
        with self.subTest(check="whiteouts and the opaque marker are shown as they are"):
            upper = 0
            for digest in sorted(layer_blobs(model)):
                top = self.layer_dir(mnt, name, digest)
                if os.path.lexists(os.path.join(top, "shared", ".wh..wh..opq")):
                    upper += 1
                    whs = [p for p in walk_paths(top) if p.endswith("/rich/.wh.doomed.txt")]
                    self.assertEqual(len(whs), 1, whs)
                    self.assertEqual(os.lstat(os.path.join(top, whs[0])).st_size, 0)
            self.assertEqual(upper, len(layer_blobs(model)) - 1, "every layer but the base")

    def test_generated_rich_gzip_layers_match_their_tars(self):
        self.check_rich("gzip")

    def test_generated_rich_zstd_layers_match_their_tars(self):
        self.check_rich("zstd")

    def test_generated_rich_uncompressed_layers_match_their_tars(self):
        self.check_rich("uncompressed")

    def test_generated_rich_estargz_layers_match_their_tars(self):
        self.check_rich("estargz")

    def test_find_as_the_first_access_lists_every_entry(self):
        # Before indexing the folder reports nlink 1 so that find does not skip
        # subdirectories from a stale count; after it, 2 + subdirectories.
        root = self.generate("index", compression="gzip")
        name = os.path.basename(root)
        model = mt.SourceModel(root, name, "")
        mnt = self.mount([self.local(root)])
        for digest in sorted(layer_blobs(model)):
            top = self.layer_dir(mnt, name, digest)
            paths, _ = tar_model(decompress(read_blob(root, digest)), 0)
            want_nlink = 2 + subdir_counts(paths).get("", 0)
            with self.subTest(layer=digest):
                before = os.lstat(top).st_nlink
                self.assertIn(before, (1, want_nlink), "nlink before the folder is indexed")
                p = subprocess.run(["find", top], capture_output=True, text=True, timeout=120)
                self.assertEqual(p.returncode, 0, p.stderr)
                got = {os.path.relpath(l, top) for l in p.stdout.splitlines()} - {"."}
                self.assertEqual(got, set(paths))
                self.assertEqual(os.lstat(top).st_nlink, want_nlink,
                                 "nlink once the folder is indexed (was %d before)" % before)


# ---------------------------------------------------------------------------
# 3. Hand-made layers: what the fixtures lack


class HandMadeLayers(Base):
    def make(self):
        global VARIANTS
        if VARIANTS is None:
            VARIANTS = self.build_variants()
        self.variants = VARIANTS
        root = os.path.join(self.tmp, "handmade")
        digests = write_layout(root, [(b, m) for _, b, m in self.variants])
        return root, digests

    @staticmethod
    def build_variants():
        rich, gnu = rich_tar(), gnu_tar()
        return [
            ("rich, uncompressed", rich, LAYER_TAR),
            ("rich, gzip", gzip.compress(rich, compresslevel=6, mtime=0), LAYER_GZIP),
            ("rich, gzip in 1 MiB members", gzip_members(rich, MIB + 7), LAYER_GZIP),
            ("rich, zstd", zstd(rich), LAYER_ZSTD),
            ("rich, zstd in 768 KiB frames", zstd_frames(rich, 768 * 1024 + 3), LAYER_ZSTD),
            ("gnu, gzip", gzip.compress(gnu, mtime=0), LAYER_GZIP),
            # Detected from the bytes, not the media type (BuildKit does the same).
            ("gnu, zstd labelled gzip", zstd(gnu), LAYER_GZIP),
        ]

    def test_every_entry_kind_and_every_byte_match(self):
        root, digests = self.make()
        mnt = self.mount([self.local(root)])
        folders = []
        for (label, blob, media), digest in zip(self.variants, digests):
            with self.subTest(layer=label):
                paths, skipped = tar_model(decompress(blob), BLOB_MTIME_NS)
                self.assertEqual(skipped, [])
                folders.append((self.layer_dir(mnt, "handmade", digest), paths))
                bad = self.compare_layer(self.layer_dir(mnt, "handmade", digest), paths,
                                         self.local(root), digest, media)
                self.assertEqual(bad, [])
        self.check_folder_nlinks(folders)
        model = mt.SourceModel(root, "handmade", self.local(root))
        self.check_links(mnt, "handmade", model)

    def test_spot_checks_of_the_contract_in_plain_terms(self):
        # The same facts compare_layer checks, stated one by one for readable failures.
        root, digests = self.make()
        mnt = self.mount([self.local(root)])
        top = self.layer_dir(mnt, "handmade", digests[1])
        r = os.path.join(top, "rich")
        st = os.lstat(r)
        self.assertEqual((stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns),
                         (0o711, 1, 2, 1700000200 * 10 ** 9), "the later listing of rich/ wins")
        self.assertEqual(mt.read_all(os.path.join(r, "dup.txt")), b"second, longer\n")
        self.assertEqual(stat.S_IMODE(os.lstat(os.path.join(r, "setuid")).st_mode), 0o4755)
        self.assertEqual(stat.S_IMODE(os.lstat(os.path.join(r, "setgid")).st_mode), 0o2750)
        self.assertEqual(stat.S_IMODE(os.lstat(os.path.join(r, "sticky")).st_mode), 0o1777)
        self.assertEqual(os.lstat(os.path.join(r, "pax-mtime")).st_mtime_ns,
                         1700000000123456789)
        self.assertEqual(os.lstat(os.path.join(r, "pax-mtime-up")).st_mtime_ns,
                         1700000000999999999)
        self.assertEqual(os.lstat(os.path.join(r, "pax-mtime-link")).st_mtime_ns,
                         1700000002000000001)
        self.assertEqual((os.lstat(os.path.join(r, "biguid")).st_uid,
                          os.lstat(os.path.join(r, "biguid")).st_gid), (3000000, 4000000))
        orig = os.lstat(os.path.join(r, "hl", "orig"))
        self.assertEqual(orig.st_nlink, 4)
        for other in ("hl/link1", "hl/link2", "other/link3"):
            self.assertEqual(os.lstat(os.path.join(r, other)).st_ino, orig.st_ino, other)
        self.assertEqual(os.lstat(os.path.join(r, "dev", "null")).st_rdev, os.makedev(1, 3))
        self.assertTrue(stat.S_ISBLK(os.lstat(os.path.join(r, "dev", "sda1")).st_mode))
        self.assertTrue(stat.S_ISFIFO(os.lstat(os.path.join(r, "dev", "fifo")).st_mode))
        self.assertEqual(os.getxattr(os.path.join(r, "xattrs"), "user.comment"), b"a comment")
        self.assertEqual(os.getxattr(os.path.join(r, "xattr-bin"), "user.bin"),
                         b"\x00\x01\xfe\xff")
        imp = os.lstat(os.path.join(top, "implied", "a"))
        self.assertEqual((stat.S_IMODE(imp.st_mode), imp.st_uid, imp.st_gid, imp.st_mtime_ns),
                         (0o755, 0, 0, BLOB_MTIME_NS), "an implied directory")
        self.assertTrue(os.path.isfile(os.path.join(top, "dotted", "file.txt")))
        self.assertTrue(os.path.isfile(os.path.join(top, "rooted", "file.txt")))
        self.assertEqual(os.readlink(os.path.join(r, "links", "abs")), "/etc/hostname")
        for n in (".wh.gone", "opq/.wh..wh..opq"):
            self.assertTrue(os.path.lexists(os.path.join(r, n)), "whiteout %s shown as is" % n)
        self.assertFalse([n for n in os.listxattr(r) if n.startswith(X)],
                         "nodes in layers carry no user.buildcachefs.* attributes")

    def test_writes_inside_a_layer_fail_with_erofs(self):
        root, digests = self.make()
        mnt = self.mount([self.local(root)])
        r = os.path.join(self.layer_dir(mnt, "handmade", digests[0]), "rich")
        ops = [
            ("create", lambda: os.open(os.path.join(r, "new"), os.O_CREAT | os.O_WRONLY, 0o644)),
            ("open for write", lambda: os.open(os.path.join(r, "hello.txt"), os.O_WRONLY)),
            ("mkdir", lambda: os.mkdir(os.path.join(r, "newdir"))),
            ("unlink", lambda: os.unlink(os.path.join(r, "hello.txt"))),
            ("rename", lambda: os.rename(os.path.join(r, "hello.txt"), os.path.join(r, "x"))),
            ("chmod", lambda: os.chmod(os.path.join(r, "hello.txt"), 0o777)),
            ("setxattr", lambda: os.setxattr(os.path.join(r, "hello.txt"), "user.x", b"1")),
        ]
        for label, op in ops:
            with self.subTest(op=label):
                with self.assertRaises(OSError) as cm:
                    op()
                self.assertEqual(cm.exception.errno, errno.EROFS)

    def test_concurrent_first_readers_of_a_cold_layer_agree(self):
        root, digests = self.make()
        mnt = self.mount([self.local(root)])
        blob = self.variants[4][1]  # zstd frames
        paths, _ = tar_model(decompress(blob), BLOB_MTIME_NS)
        top = self.layer_dir(mnt, "handmade", digests[4])
        files = sorted(p for p, n in paths.items() if n.kind == "f" and n.size > BIG)
        errors = []

        def reader(i):
            try:
                rel = files[i % len(files)]
                data = paths[rel].data
                rng = random.Random(i)
                with open(os.path.join(top, rel), "rb") as f:
                    for _ in range(20):
                        off = rng.randrange(len(data))
                        f.seek(off)
                        if f.read(70000) != data[off:off + 70000]:
                            errors.append("%s at %d: wrong bytes (reader %d)" % (rel, off, i))
                if set(os.listdir(os.path.join(top, "rich"))) != {
                        p.split("/", 1)[1].split("/")[0] for p in paths if p.startswith("rich/")}:
                    errors.append("reader %d: listing of rich/ differs" % i)
            except OSError as e:
                errors.append("reader %d: %s" % (i, e))
        threads = [threading.Thread(target=reader, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=240)
        self.assertFalse(any(t.is_alive() for t in threads), "readers hung")
        self.assertEqual(errors, [])


# ---------------------------------------------------------------------------
# 4. A hostile layer


class HostileLayer(Base):
    def test_nothing_escapes_the_layer_folder_and_the_skipped_entries_are_named(self):
        root = os.path.join(self.tmp, "hostile")
        blob = gzip.compress(hostile_tar(), mtime=0)
        digest = write_layout(root, [(blob, LAYER_GZIP)])[0]
        mnt = self.mount([self.local(root)])
        src = os.path.join(mnt, "hostile")
        top = self.layer_dir(mnt, "hostile", digest)
        got = walk_paths(top)

        with self.subTest(check="no entry resolves outside the layer folder"):
            outside = [p for p in got if not os.path.islink(os.path.join(top, p)) and
                       not os.path.realpath(os.path.join(top, p)).startswith(top + "/")]
            self.assertEqual(outside, [])
            self.assertFalse([p for p in got if ".." in p.split("/")])
            for d in (mnt, src, os.path.join(src, "layers"), os.path.join(src, "layers", "sha256")):
                names = set(os.listdir(d))
                self.assertFalse(names & {"escape", "b", "paxescape", "escaped.txt", "abs",
                                          "benign-name", "file"}, d)
            self.assertEqual(sorted(os.listdir(os.path.join(src, "layers", "sha256"))),
                             [digest.split(":")[1]])

        with self.subTest(check="`..` entries are absent, the PAX path wins"):
            bases = {p.rsplit("/", 1)[-1] for p in got}
            self.assertFalse(bases & {"escape", "b", "paxescape", "benign-name"}, sorted(got))

        with self.subTest(check="/abs/file appears as abs/file"):
            self.assertTrue(stat.S_ISDIR(os.lstat(os.path.join(top, "abs")).st_mode))
            self.assertEqual(mt.read_all(os.path.join(top, "abs", "file")), b"absolute\n")

        with self.subTest(check="good entries before and after the hostile ones are shown"):
            self.assertEqual(mt.read_all(os.path.join(top, "good.txt")), b"the good one\n")
            self.assertEqual(mt.read_all(os.path.join(top, "zz-last.txt")),
                             b"after the hostile ones\n")

        with self.subTest(check="symlinks are shown with their stored targets"):
            p = os.path.join(top, "passwd-link")
            self.assertTrue(stat.S_ISLNK(os.lstat(p).st_mode))
            self.assertEqual(os.readlink(p), "/etc/passwd")
            self.assertEqual(os.lstat(p).st_size, len("/etc/passwd"))

        with self.subTest(check="up -> ../../../.. is never followed by the daemon"):
            up = os.path.join(top, "up")
            st = os.lstat(up)
            if stat.S_ISLNK(st.st_mode):
                self.assertEqual(os.readlink(up), "../../../..")
                self.assertNotIn("up/escaped.txt", got)
            else:
                # up/escaped.txt replaced the link by an (implied) directory: inside.
                self.assertTrue(stat.S_ISDIR(st.st_mode))
                self.assertEqual(os.path.realpath(os.path.join(up, "escaped.txt")),
                                 os.path.join(top, "up", "escaped.txt"))
            self.assertFalse(os.path.exists(os.path.join(mnt, "escaped.txt")))

        with self.subTest(check="hard links to a missing target or out of the layer are absent"):
            self.assertFalse(os.path.lexists(os.path.join(top, "hl-missing")))
            self.assertFalse(os.path.lexists(os.path.join(top, "hl-dotdot")))

        with self.subTest(check="user.buildcachefs.error on the layer folder names the skips"):
            err = os.getxattr(top, X + "error").decode()
            self.assertTrue(err.strip())
            self.assertNotIn("\n", err.strip(), "one line")
            self.assertIn("..", err)
            self.assertEqual(os.getxattr(top, X + "digest").decode(), digest)

        with self.subTest(check="the rest of the tree matches the tar"):
            paths, skipped = tar_model(hostile_tar(), BLOB_MTIME_NS)
            self.assertIn("../escape", skipped)
            self.assertIn("a/../../b", skipped)
            # The model keeps up/escaped.txt under an implied dir and hard links to nothing
            # skipped; compare the entries outside that disputed corner.
            for p in ("up", "up/escaped.txt"):
                paths.pop(p, None)
            got_rest = {p for p in got if p.split("/")[0] != "up"}
            self.assertEqual(got_rest, set(paths))


# ---------------------------------------------------------------------------
# 5. A layer blob whose bytes do not match its digest


class DigestMismatch(Base):
    def corrupt_and_check(self, fixture, flip_in_file_data):
        root = self.fixture(fixture)
        model = mt.SourceModel(root, fixture, self.local(root))
        blobs = layer_blobs(model)
        # The smallest layer with a regular file in it.
        candidates = []
        for d in blobs:
            members = tarfile.open(fileobj=io.BytesIO(decompress(read_blob(root, d))),
                                   mode="r:")
            files = [m for m in members.getmembers() if m.isreg() and m.size > 0]
            if files:
                candidates.append((os.path.getsize(blob_path(root, d)), d, files[0]))
        candidates.sort()
        size, victim, member = candidates[0]
        path = blob_path(root, victim)
        os.chmod(path, 0o644)
        with open(path, "r+b") as f:
            # Uncompressed: a byte of file data, so the tar itself stays valid and only the
            # digest tells. Compressed: a byte in the middle.
            pos = member.offset_data if flip_in_file_data else size // 2
            f.seek(pos)
            b = f.read(1)
            f.seek(pos)
            f.write(bytes([b[0] ^ 0x20]))
        mnt = self.mount([self.local(root)])
        top = self.layer_dir(mnt, fixture, victim)
        with self.subTest(check="the mismatched layer shows nothing"):
            try:
                listed = os.listdir(top)
            except OSError as e:
                listed = "listing fails: %s" % e.strerror
            if isinstance(listed, list):
                self.assertEqual(listed, [])
            first = clean(member.name).split("/")[0]
            self.assertFalse(os.path.lexists(os.path.join(top, first)),
                             "a lookup in the mismatched layer succeeds")
            self.assertFalse(os.path.lexists(os.path.join(top, clean(member.name))))
        with self.subTest(check="user.buildcachefs.error names the digest mismatch"):
            err = os.getxattr(top, X + "error").decode()
            self.assertIn("digest", err.lower())
            self.assertNotIn("\n", err.strip(), "one line")
        with self.subTest(check="the other layers work"):
            for digest, media in sorted(blobs.items()):
                if digest == victim:
                    continue
                paths, _ = tar_model(decompress(read_blob(root, digest)),
                                     os.stat(blob_path(root, digest)).st_mtime_ns)
                bad = self.compare_layer(self.layer_dir(mnt, fixture, digest), paths,
                                         self.local(root), digest, media)
                self.assertEqual(bad, [], digest)

    def test_an_uncompressed_layer_with_one_flipped_file_byte_is_not_shown(self):
        self.corrupt_and_check("local-max-uncompressed", True)

    def test_a_gzip_layer_with_one_flipped_byte_is_not_shown(self):
        self.corrupt_and_check("local-max-gzip", False)

    def test_a_layer_blob_missing_from_the_source_shows_an_empty_folder_saying_so(self):
        root = self.fixture("local-max-zstd")
        model = mt.SourceModel(root, "local-max-zstd", self.local(root))
        blobs = layer_blobs(model)
        gone = sorted(blobs, key=lambda d: os.path.getsize(blob_path(root, d)))[-1]
        os.chmod(os.path.dirname(blob_path(root, gone)), 0o755)
        os.remove(blob_path(root, gone))
        mnt = self.mount([self.local(root)])
        top = self.layer_dir(mnt, "local-max-zstd", gone)
        self.assertIn(gone.split(":")[1],
                      os.listdir(os.path.join(mnt, "local-max-zstd", "layers", "sha256")))
        try:
            self.assertEqual(os.listdir(top), [])
        except OSError:
            pass  # a failing listing is as good as an empty one
        self.assertFalse(os.path.lexists(os.path.join(top, "data")))
        err = os.getxattr(top, X + "error").decode()
        self.assertIn("missing", err)
        self.assertIn(gone, err)
        for digest, media in sorted(blobs.items()):
            if digest != gone:
                with self.subTest(layer=digest):
                    paths, _ = tar_model(decompress(read_blob(root, digest)),
                                         os.stat(blob_path(root, digest)).st_mtime_ns)
                    self.assertEqual(self.compare_layer(self.layer_dir(mnt, "local-max-zstd",
                                                                       digest),
                                                        paths, self.local(root), digest,
                                                        media), [])


class LayerInodes(Base):
    def test_inode_numbers_in_layers_are_stable_across_remounts(self):
        root = self.fixture("local-growth")
        model = mt.SourceModel(root, "local-growth", "")
        mnt = tempfile.mkdtemp(prefix="mnt-", dir=self.tmp)

        def sample():
            out = {}
            for digest in sorted(layer_blobs(model)):
                top = self.layer_dir(mnt, "local-growth", digest)
                out[digest] = os.lstat(top).st_ino
                for rel in sorted(walk_paths(top)):
                    out[digest + "/" + rel] = os.lstat(os.path.join(top, rel)).st_ino
            return out

        self.mount([self.local(root)], mnt=mnt)
        first = sample()
        self.assertTrue(all(0 < i < 2 ** 63 for i in first.values()))
        self.unmount(mnt)
        self.mount([self.local(root)], mnt=mnt)  # a fresh state dir
        self.assertEqual(sample(), first)


# ---------------------------------------------------------------------------


def setUpModule():
    mt.check_prerequisites("layer tests", ARGS, ("zstd", "ls", "find"))
    mt.ARGS = ARGS  # mount_test's helpers read their own module's ARGS


if __name__ == "__main__":
    e2e_cli.main()
