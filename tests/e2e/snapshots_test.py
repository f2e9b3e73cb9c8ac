#!/usr/bin/env python3
"""End-to-end tests of snapshots in the mount: `refs/<ref>/snapshots/<chainid12>/` (and the
same under `history/<hex>/`) is the merged filesystem of every layer chain that is a record
result, keyed by the first 12 hex digits of its OCI ChainID, merged bottom layer first with
overlay rules. Real FUSE mounts, as root.

Every expectation is computed here from the cache's files (another route than the code under
test): chains from the cache config (mount_test's records model), diffIDs from the manifest
descriptors' `containerd.io/uncompressed` annotations (inline caches: the image config's
rootfs.diff_ids), ChainIDs with hashlib, each layer's tree with layers_test's tarfile model,
and the merge by a small overlay implementation below:

  - in each layer, `.wh.<name>` removes <name> (and its subtree) from LOWER layers and
    `.wh..wh..opq` in a directory hides everything lower layers put there; the layer's own
    entries survive whatever the tar order; whiteout files are not shown;
  - a non-directory replaces a lower entry of the same name (a lower directory included);
  - a directory over a lower directory merges, its attributes from the upper one.

  1. FixtureSnapshots / GeneratedSnapshots: every ref and history entry of every local
     fixture and of a generated cache: the snapshot names are exactly the record results'
     ChainIDs; every snapshot's paths, types, modes, owners, sizes, symlink targets, file bytes,
     directory nlinks; files are the inodes of their top-most layer; hard links share one
     inode; the folder xattrs `digest` (ChainID) and `chain` (blobs bottom first).
  2. The main Dockerfile's whiteouts (data/.wh.deleteme.txt, data/opaque/.wh.sub) act in the
     upper snapshots and not in the lower ones.
  3. HandMadeSnapshots: a 3-layer cache (gzip, uncompressed, zstd) with an opaque directory
     whose own entries precede the `.wh..wh..opq`, a whited-out directory with a subtree, a
     file over a lower directory, a directory over a lower file, an upper layer's own entry
     before its own whiteout, a hard link pair, devices.

Run by ctest: snapshots_test.py --bin BUILDCACHEFS --gen BUILDCACHEFS_GEN --shared DIR
Needs root, /dev/fuse, fusermount3, zstd. Outside CI a non-root run skips the module.
"""

import gzip
import hashlib
import json
import os
import stat
import sys
import threading
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import layers_test as lt  # noqa: E402  (tar model, layouts, compression helpers)
import e2e_cli  # noqa: E402
import mount_test as mt  # noqa: E402  (Base: mounts, cleanup, watchdog; RefModel)
from cachefiles import LOCAL_FIXTURES, blob_path, read_blob  # noqa: E402

ARGS = None
X = "user.buildcachefs."
OPQ = ".wh..wh..opq"
WH = ".wh."


# ---------------------------------------------------------------------------
# The independent route: chains, ChainIDs, the overlay merge


def diff_ids(root, r):
    """{layer blob digest: diffID} of a ref model (missing when unknown)."""
    out = {}
    if r.shape == "inline":
        image = json.loads(read_blob(root, r.config_desc["digest"]))
        ids = (image.get("rootfs") or {}).get("diff_ids") or []
        for d, i in zip(r.layer_descs, ids):
            out[d["digest"]] = i
        return out
    for d in r.layer_descs:
        u = (d.get("annotations") or {}).get("containerd.io/uncompressed")
        if u:
            out[d["digest"]] = u
    return out


def chain_id(ids):
    cur = ids[0]
    for d in ids[1:]:
        cur = "sha256:" + hashlib.sha256((cur + " " + d).encode()).hexdigest()
    return cur


def expected_snapshots(root, r):
    """{chainid12: (full ChainID, [candidate blob chains])} of one ref model: every record
    result whose layers all have a diffID."""
    ids = diff_ids(root, r)
    out = {}
    for rec in r.records:
        for res in rec["results"]:
            blobs = res["blobs"]
            if not blobs or any(b not in ids for b in blobs):
                continue
            cid = chain_id([ids[b] for b in blobs])
            short = cid.split(":")[1][:12]
            full, chains = out.setdefault(short, (cid, []))
            if blobs not in chains:
                chains.append(blobs)
    return out


class Entry:
    """One name in the merged tree: the layer Node it shows, the layer it comes from, and
    (directories) the merged children."""

    def __init__(self, node, layer, kids=None):
        self.node, self.layer, self.kids = node, layer, kids


def nest(paths):
    """layers_test.tar_model's {path: Node} as {name: (Node, {name: ...} or None)}."""
    root = {}
    for p in sorted(paths, key=lambda q: q.count("/")):
        parts = p.split("/")
        d = root
        for part in parts[:-1]:
            d = d[part][1]
        node = paths[p]
        d[parts[-1]] = (node, {} if node.kind == "d" else None)
    return root


def overlay(merged, upper, layer):
    """Overlays one layer's directory (nested) onto a merged directory (name -> Entry)."""
    for name in upper:
        if name == OPQ:
            merged.clear()
        elif name.startswith(WH):
            merged.pop(name[len(WH):], None)
    for name, (node, kids) in upper.items():
        if name.startswith(WH):
            continue
        if node.kind != "d":
            merged[name] = Entry(node, layer)
            continue
        old = merged.get(name)
        below = old.kids if old is not None and old.node.kind == "d" else {}
        merged[name] = Entry(node, layer, below)
        overlay(below, kids, layer)


def merge_chain(layer_trees, chain):
    """{path: Entry} of the merged chain (blob digests bottom first)."""
    top = {}
    for blob in chain:
        overlay(top, layer_trees[blob], blob)
    flat = {}

    def walk(d, prefix):
        for name, e in d.items():
            p = prefix + name
            flat[p] = e
            if e.kids is not None:
                walk(e.kids, p + "/")
    walk(top, "")
    return flat


# ---------------------------------------------------------------------------


class Base(lt.Base):
    def layer_trees(self, root, blobs):
        """{blob digest: nested tree} for the given layer blobs."""
        out = {}
        for d in blobs:
            paths, _ = lt.tar_model(lt.decompress(read_blob(root, d)),
                                    os.stat(blob_path(root, d)).st_mtime_ns)
            out[d] = nest(paths)
        return out

    def compare_snapshot(self, snap, flat, src, digests_seen):
        """Problems between the snapshot folder snap and the merged model flat. src is the
        source folder in the mount (for the layer folders). digests_seen caches file
        sha256s by inode (a file is one inode of a layer, read once per mount)."""
        bad = []
        try:
            got = lt.walk_paths(snap)
        except OSError as e:
            return ["walk: %s" % e]
        want = set(flat)
        if got != want:
            bad.append("paths shown but not in the merge: %s" % sorted(got - want)[:20])
            bad.append("paths in the merge but not shown: %s" % sorted(want - got)[:20])
        wh = sorted(p for p in got if p.rsplit("/", 1)[-1].startswith(WH))
        if wh:
            bad.append("whiteout names shown: %s" % wh[:20])
        subdirs = {}
        for p, e in flat.items():
            if e.node.kind == "d":
                parent = p.rsplit("/", 1)[0] if "/" in p else ""
                subdirs[parent] = subdirs.get(parent, 0) + 1
        inodes = {}
        for rel in sorted(want & got):
            e, node = flat[rel], flat[rel].node
            path = os.path.join(snap, rel)
            try:
                st = os.lstat(path)
            except OSError as ex:
                bad.append("%s: lstat: %s" % (rel, ex))
                continue
            if stat.S_IFMT(st.st_mode) != lt.KINDS[node.kind]:
                bad.append("%s: type %o, want %o (from layer %s)" % (
                    rel, stat.S_IFMT(st.st_mode), lt.KINDS[node.kind], e.layer[7:19]))
                continue
            if node.kind != "l" and stat.S_IMODE(st.st_mode) != node.mode:
                bad.append("%s: mode %04o, want %04o" % (rel, stat.S_IMODE(st.st_mode), node.mode))
            if (st.st_uid, st.st_gid) != (node.uid, node.gid):
                bad.append("%s: owner %d:%d, want %d:%d" % (rel, st.st_uid, st.st_gid,
                                                            node.uid, node.gid))
            if st.st_mtime_ns != node.mtime_ns:
                bad.append("%s: mtime %d, want %d" % (rel, st.st_mtime_ns, node.mtime_ns))
            if node.kind == "d":
                if st.st_nlink != 2 + subdirs.get(rel, 0):
                    bad.append("%s: nlink %d, want %d" % (rel, st.st_nlink,
                                                          2 + subdirs.get(rel, 0)))
                continue
            inodes.setdefault(id(node), set()).add(st.st_ino)
            # Not a directory: the very inode of its top-most layer's folder.
            lpath = os.path.join(src, "layers", "sha256", e.layer.split(":")[1], rel)
            try:
                lst = os.lstat(lpath)
            except OSError as ex:
                bad.append("%s: lstat in its layer %s: %s" % (rel, e.layer[7:19], ex))
            else:
                if lst.st_ino != st.st_ino:
                    bad.append("%s: inode %d, its layer %s shows inode %d" % (
                        rel, st.st_ino, e.layer[7:19], lst.st_ino))
            if node.kind in "fl" and st.st_size != node.size:
                bad.append("%s: size %d, want %d" % (rel, st.st_size, node.size))
            if node.kind in "cb" and st.st_rdev != node.rdev:
                bad.append("%s: rdev %d, want %d" % (rel, st.st_rdev, node.rdev))
            if node.kind == "l":
                try:
                    t = os.readlink(path)
                except OSError as ex:
                    bad.append("%s: readlink: %s" % (rel, ex))
                else:
                    if t != node.target:
                        bad.append("%s -> %r, want %r" % (rel, t, node.target))
            if node.kind == "f":
                h = digests_seen.get(st.st_ino)
                if h is None:
                    try:
                        with open(path, "rb") as f:
                            h = hashlib.sha256(f.read()).hexdigest()
                    except OSError as ex:
                        bad.append("%s: read: %s" % (rel, ex))
                        continue
                    digests_seen[st.st_ino] = h
                if h != hashlib.sha256(node.data).hexdigest():
                    bad.append("%s: bytes differ from the layer %s's tar" % (rel, e.layer[7:19]))
        for nid, inos in inodes.items():
            if len(inos) != 1:
                bad.append("hard-linked names have inodes %s" % sorted(inos))
        want_top = 2 + subdirs.get("", 0)
        if os.lstat(snap).st_nlink != want_top:
            bad.append("snapshot folder: nlink %d, want %d" % (os.lstat(snap).st_nlink, want_top))
        return bad

    def check_source_snapshots(self, mnt, name, root):
        """Every snapshot of every ref and history entry of one source. Returns
        {(ref folder, chainid12): (chain, merged model)}."""
        model = mt.SourceModel(root, name, self.local(root))
        src = os.path.join(mnt, name)
        trees = self.layer_trees(root, sorted(lt.layer_blobs(model)))
        digests_seen = {}
        merged_cache = {}
        out = {}
        total = 0
        for r in model.refs + model.history:
            base = os.path.join(src, "history" if r.history else "refs", r.folder)
            want = expected_snapshots(root, r)
            total += len(want)
            sdir = os.path.join(base, "snapshots")
            with self.subTest(ref=r.name, check="snapshot names are the results' ChainIDs"):
                self.assertTrue(os.path.isdir(sdir), "%s has no snapshots/" % base)
                self.assertEqual(sorted(os.listdir(sdir)), sorted(want))
            for short, (full, chains) in sorted(want.items()):
                snap = os.path.join(sdir, short)
                with self.subTest(ref=r.name, snapshot=short):
                    if not os.path.isdir(snap):
                        self.fail("snapshot %s is missing" % short)
                    x = mt.xattrs(snap)
                    self.assertEqual(x.get("digest"), full, "user.buildcachefs.digest")
                    self.assertIn(x.get("chain"), [",".join(c) for c in chains],
                                  "user.buildcachefs.chain")
                    self.assertNotIn("error", x)
                    chain = next(c for c in chains if ",".join(c) == x.get("chain"))
                    key = tuple(chain)
                    if key not in merged_cache:
                        merged_cache[key] = merge_chain(trees, chain)
                    flat = merged_cache[key]
                    bad = self.compare_snapshot(snap, flat, src, digests_seen)
                    self.assertEqual(bad, [])
                    out[(base, short)] = (chain, flat)
        self.assertGreater(total, 0, "%s: no record result has a full diffID chain" % name)
        return out


# ---------------------------------------------------------------------------
# 1-2. Fixtures and a generated cache


class FixtureSnapshots(Base):
    def check_main_whiteouts(self, snaps):
        """data/.wh.deleteme.txt and data/opaque/.wh.sub act above their layer only."""
        trees = {}
        seen_below = seen_above = 0
        for (base, short), (chain, flat) in sorted(snaps.items()):
            # The position of the whiteout layer in this chain, if any.
            pos = None
            for i, blob in enumerate(chain):
                t = trees.get(blob)
                if t is None:
                    t = trees[blob] = set(self._paths[blob])
                if "data/.wh.deleteme.txt" in t:
                    pos = i
            had = any("data/deleteme.txt" in trees[b] for b in chain)
            snap = os.path.join(base, "snapshots", short)
            deleteme = os.path.join(snap, "data", "deleteme.txt")
            old = os.path.join(snap, "data", "opaque", "sub", "old.txt")
            if pos is not None:
                seen_above += 1
                self.assertFalse(os.path.lexists(deleteme), snap)
                self.assertFalse(os.path.lexists(os.path.join(snap, "data", "opaque", "sub")),
                                 snap)
                self.assertEqual(mt.read_all(os.path.join(snap, "data", "opaque", "new.txt")),
                                 b"new\n")
                self.assertFalse(os.path.lexists(os.path.join(snap, "data", ".wh.deleteme.txt")))
                self.assertFalse(os.path.lexists(os.path.join(snap, "data", "opaque", ".wh.sub")))
            elif had:
                seen_below += 1
                self.assertEqual(mt.read_all(deleteme), b"to be deleted\n")
                self.assertEqual(mt.read_all(old), b"old\n")
                self.assertFalse(os.path.lexists(os.path.join(snap, "data", "opaque", "new.txt")))
        return seen_below, seen_above

    def run_fixture(self, fixture):
        root = self.fixture(fixture)
        mnt = self.mount([self.local(root)])
        snaps = self.check_source_snapshots(mnt, fixture, root)
        model = mt.SourceModel(root, fixture, "")
        self._paths = {}
        for d in lt.layer_blobs(model):
            paths, _ = lt.tar_model(lt.decompress(read_blob(root, d)), 0)
            self._paths[d] = paths
        main = any("data/.wh.deleteme.txt" in p for p in self._paths.values())
        if fixture.startswith("local-max"):
            self.assertTrue(main, "%s is built from the main Dockerfile" % fixture)
        if main:
            with self.subTest(check="the main Dockerfile's whiteouts act in upper snapshots only"):
                below, above = self.check_main_whiteouts(snaps)
                self.assertGreater(above, 0, "no snapshot above the whiteout layer")
                self.assertGreater(below, 0, "no snapshot holding data/deleteme.txt")


def make_fixture_test(fixture):
    def test(self):
        self.run_fixture(fixture)
    test.__name__ = "test_%s_snapshots_match_the_overlay_merge" % fixture.replace("-", "_")
    return test


for _f in LOCAL_FIXTURES:
    setattr(FixtureSnapshots, "test_%s_snapshots_match_the_overlay_merge" % _f.replace("-", "_"),
            make_fixture_test(_f))


class GeneratedSnapshots(Base):
    def test_generated_index_cache_snapshots_match_the_overlay_merge(self):
        root = self.generate("index", out=os.path.join(self.tmp, "gen-zstd"),
                             compression="zstd")
        mnt = self.mount([self.local(root)])
        self.check_source_snapshots(mnt, "gen-zstd", root)


# ---------------------------------------------------------------------------
# 3. A hand-made 3-layer cache


def handmade_layers():
    l0 = lt.TarBuilder()
    l0.add("keep.txt", data=b"keep\n")
    l0.add("again.txt", data=b"lower again\n")
    l0.add("wh-file.txt", data=b"whited out as a file\n")
    l0.add("link-lower", "l", target="keep.txt")
    l0.add("opq/", "d", mode=0o755)
    l0.add("opq/lower1", data=b"lower1\n")
    l0.add("opq/lowersub/", "d")
    l0.add("opq/lowersub/x", data=b"x\n")
    l0.add("gone/", "d")
    l0.add("gone/a", data=b"a\n")
    l0.add("gone/sub/", "d")
    l0.add("gone/sub/b", data=b"b\n")
    l0.add("gone/sub/deeper/c", data=b"c\n")          # deeper/ is implied
    l0.add("f2d/", "d", mode=0o750)
    l0.add("f2d/inner", data=b"inner\n")
    l0.add("f2d/innerdir/z", data=b"z\n")
    l0.add("d2f", data=b"was a file\n", mode=0o640)
    l0.add("merge/", "d", mode=0o755, mtime=1700000001)
    l0.add("merge/lower.txt", data=b"lower\n")
    l0.add("merge/lower2.txt", data=b"lower2\n")

    l1 = lt.TarBuilder()
    # The opaque directory's own entries come BEFORE its .wh..wh..opq marker.
    l1.add("opq/", "d", mode=0o700, uid=11, gid=12, mtime=1700000100)
    l1.add("opq/own1", data=b"own1\n")
    l1.add("opq/ownsub/", "d")
    l1.add("opq/ownsub/y", data=b"y\n")
    l1.add("opq/.wh..wh..opq", data=b"", mode=0)
    l1.add("opq/own2", data=b"own2\n")
    l1.add(".wh.gone", data=b"", mode=0)               # a directory with a subtree
    l1.add("f2d", data=b"now a file\n", mode=0o600, uid=3)
    l1.add("d2f/", "d", mode=0o751, gid=4, mtime=1700000200)
    l1.add("d2f/child", data=b"child\n")
    l1.add("d2f/child2", data=b"child2\n")
    l1.add("merge/", "d", mode=0o711, uid=5, gid=6, mtime=1700000300)
    l1.add("merge/upper.txt", data=b"upper\n")
    l1.add("hl/", "d")
    l1.add("hl/orig", data=b"hard linked\n", mode=0o604, uid=21, gid=22)
    l1.add("hl/link", "h", target="hl/orig")
    l1.add(".wh.wh-file.txt", data=b"", mode=0)
    l1.add("dev/", "d")
    l1.add("dev/null", "c", mode=0o666, dev=(1, 3))
    l1.add("dev/fifo", "p", mode=0o600)

    l2 = lt.TarBuilder()
    l2.add("again.txt", data=b"upper again\n", mode=0o600)
    l2.add(".wh.again.txt", data=b"", mode=0)          # after its own layer's entry
    l2.add("gone", "l", target="keep.txt")              # the name comes back as a symlink
    l2.add("merge/", "d", mode=0o700, uid=7, gid=8, mtime=1700000400)
    l2.add("merge/.wh.lower.txt", data=b"", mode=0)
    l2.add("merge/top.txt", data=b"top\n")
    l2.add("d2f/", "d", mode=0o751, gid=4, mtime=1700000500)
    l2.add("d2f/.wh.child", data=b"", mode=0)
    l2.add("hl/", "d")
    l2.add("hl/third", data=b"third\n")
    l2.add("opq/", "d", mode=0o700, uid=11, gid=12, mtime=1700000600)
    l2.add("opq/own3", data=b"own3\n")
    l2.add("opq/own1", data=b"own1 replaced\n")
    return [l0.bytes(), l1.bytes(), l2.bytes()]


class HandMadeSnapshots(Base):
    def make(self):
        raw = handmade_layers()
        blobs = [(gzip.compress(raw[0], mtime=0), lt.LAYER_GZIP), (raw[1], lt.LAYER_TAR),
                 (lt.zstd(raw[2]), lt.LAYER_ZSTD)]
        root = os.path.join(self.tmp, "handmade")
        digests = lt.write_layout(root, blobs)
        return root, digests, raw

    def test_every_snapshot_matches_the_overlay_merge(self):
        root, digests, raw = self.make()
        mnt = self.mount([self.local(root)])
        snaps = self.check_source_snapshots(mnt, "handmade", root)
        self.assertEqual(len(snaps), 3, "one snapshot per chain prefix")
        self.assertEqual(sorted(len(c) for c, _ in snaps.values()), [1, 2, 3])

    def snaps(self, mnt, root, digests, raw):
        ids = [lt.sha256(r) for r in raw]
        base = os.path.join(mnt, "handmade", "refs", "latest", "snapshots")
        return [os.path.join(base, chain_id(ids[:n]).split(":")[1][:12]) for n in (1, 2, 3)]

    def test_overlay_rules_in_plain_terms(self):
        root, digests, raw = self.make()
        mnt = self.mount([self.local(root)])
        s0, s1, s2 = self.snaps(mnt, root, digests, raw)
        layer = [os.path.join(mnt, "handmade", "layers", "sha256", d.split(":")[1])
                 for d in digests]
        ls = lambda *p: sorted(os.listdir(os.path.join(*p)))  # noqa: E731

        with self.subTest(check="the bottom snapshot is layer 0 as it is"):
            self.assertEqual(ls(s0), sorted(os.listdir(layer[0])))
            self.assertEqual(ls(s0, "gone", "sub"), ["b", "deeper"])

        with self.subTest(check="opaque dir: own entries before the marker survive"):
            self.assertEqual(ls(s1, "opq"), ["own1", "own2", "ownsub"])
            self.assertEqual(ls(s1, "opq", "ownsub"), ["y"])
            st = os.lstat(os.path.join(s1, "opq"))
            self.assertEqual((stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid), (0o700, 11, 12))
            self.assertEqual(ls(s2, "opq"), ["own1", "own2", "own3", "ownsub"])
            self.assertEqual(mt.read_all(os.path.join(s2, "opq", "own1")), b"own1 replaced\n")
            self.assertEqual(ls(s0, "opq"), ["lower1", "lowersub"])

        with self.subTest(check="a whited-out directory takes its subtree along"):
            self.assertFalse(os.path.lexists(os.path.join(s1, "gone")))
            self.assertFalse(os.path.lexists(os.path.join(s1, "gone", "sub", "deeper", "c")))
            self.assertEqual(os.readlink(os.path.join(s2, "gone")), "keep.txt")
            self.assertTrue(os.path.isdir(os.path.join(s0, "gone", "sub", "deeper")))

        with self.subTest(check="a file replaces a lower directory"):
            st = os.lstat(os.path.join(s1, "f2d"))
            self.assertTrue(stat.S_ISREG(st.st_mode))
            self.assertEqual((stat.S_IMODE(st.st_mode), st.st_uid), (0o600, 3))
            self.assertEqual(mt.read_all(os.path.join(s2, "f2d")), b"now a file\n")
            self.assertTrue(os.path.isdir(os.path.join(s0, "f2d", "innerdir")))

        with self.subTest(check="a directory replaces a lower file"):
            st = os.lstat(os.path.join(s1, "d2f"))
            self.assertTrue(stat.S_ISDIR(st.st_mode))
            self.assertEqual((stat.S_IMODE(st.st_mode), st.st_gid), (0o751, 4))
            self.assertEqual(ls(s1, "d2f"), ["child", "child2"])
            self.assertEqual(ls(s2, "d2f"), ["child2"])
            self.assertEqual(mt.read_all(os.path.join(s0, "d2f")), b"was a file\n")

        with self.subTest(check="a directory over a directory merges, attributes from above"):
            self.assertEqual(ls(s1, "merge"), ["lower.txt", "lower2.txt", "upper.txt"])
            self.assertEqual(ls(s2, "merge"), ["lower2.txt", "top.txt", "upper.txt"])
            st = os.lstat(os.path.join(s2, "merge"))
            self.assertEqual((stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns),
                             (0o700, 7, 8, 1700000400 * 10 ** 9))

        with self.subTest(check="a layer's own entry survives its own whiteout"):
            self.assertEqual(mt.read_all(os.path.join(s2, "again.txt")), b"upper again\n")
            self.assertEqual(mt.read_all(os.path.join(s1, "again.txt")), b"lower again\n")

        with self.subTest(check="a whited-out file is gone above, present below"):
            self.assertFalse(os.path.lexists(os.path.join(s1, "wh-file.txt")))
            self.assertTrue(os.path.isfile(os.path.join(s0, "wh-file.txt")))

        with self.subTest(check="a hard link pair in an upper layer is one inode"):
            for s in (s1, s2):
                a = os.lstat(os.path.join(s, "hl", "orig"))
                b = os.lstat(os.path.join(s, "hl", "link"))
                self.assertEqual(a.st_ino, b.st_ino)
                self.assertEqual(a.st_ino, os.lstat(os.path.join(layer[1], "hl", "orig")).st_ino)
                self.assertEqual(mt.read_all(os.path.join(s, "hl", "link")), b"hard linked\n")

        with self.subTest(check="devices and fifos are the layer's inodes"):
            for n in ("null", "fifo"):
                self.assertEqual(os.lstat(os.path.join(s2, "dev", n)).st_ino,
                                 os.lstat(os.path.join(layer[1], "dev", n)).st_ino)
            self.assertEqual(os.lstat(os.path.join(s2, "dev", "null")).st_rdev, os.makedev(1, 3))

        with self.subTest(check="no whiteout names in any snapshot"):
            for s in (s0, s1, s2):
                self.assertFalse([p for p in lt.walk_paths(s)
                                  if p.rsplit("/", 1)[-1].startswith(WH)], s)

        with self.subTest(check="xattrs digest and chain"):
            ids = [lt.sha256(r) for r in raw]
            for n, s in enumerate((s0, s1, s2), 1):
                self.assertEqual(os.getxattr(s, X + "digest").decode(), chain_id(ids[:n]))
                self.assertEqual(os.getxattr(s, X + "chain").decode(), ",".join(digests[:n]))

    def test_cold_lookups_and_concurrent_first_readers(self):
        # A deep lookup as the very first access of a snapshot (no listing before it),
        # then twelve threads reading the others' first time at once.
        root, digests, raw = self.make()
        mnt = self.mount([self.local(root)])
        s0, s1, s2 = self.snaps(mnt, root, digests, raw)
        self.assertEqual(mt.read_all(os.path.join(s2, "opq", "ownsub", "y")), b"y\n")
        self.assertEqual(mt.read_all(os.path.join(s2, "hl", "link")), b"hard linked\n")
        self.assertFalse(os.path.lexists(os.path.join(s2, "gone", "a")))
        errors = []

        def reader(i):
            s = (s0, s1)[i % 2]
            try:
                want = ["keep.txt", "opq"] if s == s0 else ["keep.txt", "opq", "hl"]
                for n in want:
                    if not os.path.lexists(os.path.join(s, n)):
                        errors.append("reader %d: %s missing" % (i, n))
                lt.walk_paths(s)
            except OSError as e:
                errors.append("reader %d: %s" % (i, e))
        threads = [threading.Thread(target=reader, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        self.assertFalse(any(t.is_alive() for t in threads), "readers hung")
        self.assertEqual(errors, [])
        self.check_source_snapshots(mnt, "handmade", root)

    def test_a_result_whose_layer_lacks_a_diffid_has_no_snapshot(self):
        root, digests, raw = self.make()
        # Drop the annotation of the middle layer: chains [0,1] and [0,1,2] lose their IDs.
        model = mt.SourceModel(root, "handmade", "")
        mpath = blob_path(root, model.refs[0].digest)
        m = json.loads(read_blob(root, model.refs[0].digest))
        del m["layers"][1]["annotations"]["containerd.io/uncompressed"]
        mbytes = json.dumps(m, separators=(",", ":")).encode()
        d = lt.sha256(mbytes)
        os.chmod(os.path.dirname(mpath), 0o755)
        with open(blob_path(root, d), "wb") as f:
            f.write(mbytes)
        os.remove(mpath)
        ipath = os.path.join(root, "index.json")
        index = mt.load_json(ipath)
        index["manifests"][0]["digest"] = d
        index["manifests"][0]["size"] = len(mbytes)
        with open(ipath, "w") as f:
            json.dump(index, f)
        mnt = self.mount([self.local(root)])
        base = os.path.join(mnt, "handmade", "refs", "latest", "snapshots")
        self.assertEqual(os.listdir(base), [lt.sha256(raw[0]).split(":")[1][:12]])
        self.check_source_snapshots(mnt, "handmade", root)


# ---------------------------------------------------------------------------


def setUpModule():
    lt.ARGS = ARGS
    lt.setUpModule()


if __name__ == "__main__":
    e2e_cli.main()
