#!/usr/bin/env python3
"""End-to-end tests of `buildcachefs mount`: real FUSE mounts, as root.

Every expectation is computed here from the cache's files with Python's json,
base64 and hashlib (another route than the code under test), following the
exact tree contract in docs/TREE.md (DESIGN.md §1.3-1.6). Fixtures from
../shared are copied to a temp dir first; nothing in ../shared is written.

Every test mounts into its own temp dir with its own --state-dir and always
unmounts (fusermount3 -u in a cleanup, even on failure; a daemon still alive
after that is killed and reported). A watchdog lazily unmounts and kills the
daemon of a test that hangs, so a stuck daemon never blocks the suite.

Run by ctest: mount_test.py --bin BUILDCACHEFS --gen BUILDCACHEFS_GEN --shared DIR
Needs root, /dev/fuse, fusermount3 and mount(8). Outside CI, a non-root run
skips the whole module; under CI any missing prerequisite is a failure.
"""

import base64
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_cli  # noqa: E402
from cachefiles import (CACHECONFIG, IMAGE_CONFIGS, LOCAL_FIXTURES, blob_path,  # noqa: E402
                        cache_manifest_info, load_json, read_blob, sha256)

ARGS = None
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_TYPES = ("application/vnd.oci.image.index.v1+json",
                  "application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json",
                  "application/vnd.docker.distribution.manifest.list.v2+json")
REF_NAME = "org.opencontainers.image.ref.name"
SHAPES = ("image-manifest", "index", "manifest-list")
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
X = "user.buildcachefs."
HEX64 = re.compile(r"^[0-9a-f]{64}$")
MOUNT_TIMEOUT = 120       # seconds for `buildcachefs mount` to return
EXIT_TIMEOUT = 30         # seconds for the daemon to exit after fusermount3 -u
WATCHDOG_SECONDS = 300    # a test that takes longer is hung: unmount and kill


def in_ci():
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


# ---------------------------------------------------------------------------
# Reading the cache files (the independent route)


def encode_ref(name):
    """EncodeRefName (DESIGN §1.4): %, /, NUL and a leading . are percent-encoded."""
    out = []
    for i, ch in enumerate(name):
        if ch in "%/\0" or (i == 0 and ch == "."):
            out.append("".join("%%%02X" % b for b in ch.encode()))
        else:
            out.append(ch)
    return "".join(out)


def layer_chain(config_layers, top):
    """Positions bottom first: `top` plus its ancestors through `parent` (-1 ends)."""
    chain, k, seen = [], top, set()
    while k != -1:
        if k in seen or not 0 <= k < len(config_layers):
            raise ValueError("bad parent chain from layer %d" % top)
        seen.add(k)
        chain.append(k)
        k = config_layers[k].get("parent", 0)
    chain.reverse()
    return chain


def expected_records(config_layers, records):
    """records.json as TREE.md says, decoded (compared as JSON values)."""
    out = []
    for j, r in enumerate(records):
        inputs = []
        for slot in r.get("inputs") or []:
            alts = []
            for inp in slot:
                a = {}
                if inp.get("selector"):
                    a["selector"] = inp["selector"]
                a["link"] = inp["link"]
                alts.append(a)
            inputs.append(alts)
        results = []
        for res in r.get("layers") or []:
            chain = layer_chain(config_layers, res["layer"])
            results.append({"layers": chain,
                            "blobs": [config_layers[p]["blob"] for p in chain],
                            "createdAt": res["createdAt"], "chain": False})
        for res in r.get("chains") or []:
            chain = list(res["layers"])
            results.append({"layers": chain,
                            "blobs": [config_layers[p]["blob"] for p in chain],
                            "createdAt": res["createdAt"], "chain": True})
        out.append({"index": j, "digest": r["digest"], "inputs": inputs, "results": results})
    return out


class RefModel:
    """One ref (or history entry) computed from the files."""

    def __init__(self, root, name, digest, media_type, size, history):
        self.name = name
        self.digest = digest
        self.hex = digest.split(":")[1]
        self.history = history
        self.folder = self.hex if history else encode_ref(name)
        self.size = size
        self.manifest_bytes = read_blob(root, digest)
        mdoc = json.loads(self.manifest_bytes)
        self.media_type = media_type or mdoc.get("mediaType")
        self.mtime = os.stat(blob_path(root, digest)).st_mtime_ns
        self.shape, cfg, layer_descs = cache_manifest_info(root, digest)
        self.config_desc = cfg
        self.layer_descs = layer_descs
        self.media = {digest: self.media_type, cfg["digest"]: cfg["mediaType"]}
        self.sizes = {digest: size, cfg["digest"]: cfg["size"]}
        for d in layer_descs:
            self.media[d["digest"]] = d["mediaType"]
            self.sizes[d["digest"]] = d["size"]
        if self.shape == "inline":
            image = json.loads(read_blob(root, cfg["digest"]))
            self.inline_records_bytes = base64.b64decode(image["moby.buildkit.cache.v0"])
            records = json.loads(self.inline_records_bytes)
            self.config_layers = [{"blob": d["digest"], "parent": i - 1}
                                  for i, d in enumerate(layer_descs)]
            self.config_bytes = None  # synthesized by the mount
            self.config_mtime = None
        else:
            self.inline_records_bytes = None
            self.config_bytes = read_blob(root, cfg["digest"])
            config = json.loads(self.config_bytes)
            self.config_layers = config.get("layers") or []
            records = config.get("records") or []
            self.config_mtime = os.stat(blob_path(root, cfg["digest"])).st_mtime_ns
        self.record_count = len(records)
        self.records = expected_records(self.config_layers, records)
        # diffIDs by config layer position, for the snapshot folders' ChainIDs.
        if self.shape == "inline":
            diff_ids = image["rootfs"]["diff_ids"]
        else:
            by_blob = {d["digest"]: (d.get("annotations") or {}).get(
                "containerd.io/uncompressed", "") for d in layer_descs}
            diff_ids = [by_blob.get(l["blob"], "") for l in self.config_layers]
        self.snapshots = {}  # chainid12 -> full ChainID
        for rec in self.records:
            for res in rec["results"]:
                ids = [diff_ids[p] for p in res["layers"]]
                if not ids or not all(ids):
                    continue
                chain = ids[0]
                for d in ids[1:]:
                    chain = "sha256:" + hashlib.sha256((chain + " " + d).encode()).hexdigest()
                self.snapshots[chain.split(":")[1][:12]] = (chain, ",".join(res["blobs"]))
        width = max(3, len(str(len(self.config_layers) - 1)))
        self.links = []  # (name, blob digest)
        for i, l in enumerate(self.config_layers):
            self.links.append(("%0*d-%s" % (width, i, l["blob"].split(":")[1][:12]), l["blob"]))
        self.reached = ({digest, cfg["digest"]} | {d["digest"] for d in layer_descs} |
                        {l["blob"] for l in self.config_layers})


class SourceModel:
    """What <source>/ must look like, from the cache directory's files."""

    def __init__(self, root, name, source_string):
        self.root, self.name, self.source = root, name, source_string
        index_path = os.path.join(root, "index.json")
        self.index_mtime = os.stat(index_path if os.path.exists(index_path) else root).st_mtime_ns
        with open(index_path, "rb") as f:
            raw = f.read()
        index = json.loads(raw)  # dicts keep the file's key order
        ordered = json.loads(raw, object_pairs_hook=lambda p: p)
        refs = []
        for d, pairs in zip(index["manifests"], dict(ordered)["manifests"]):
            rname = ((d.get("annotations") or {}).get(REF_NAME) or
                     "@" + d["digest"].split(":")[1][:12])
            refs.append((rname.encode(), RefModel(root, rname, d["digest"], d.get("mediaType"),
                                                  d["size"], False), d, pairs))
        refs.sort(key=lambda t: t[0])  # by raw ref name, byte order
        self.refs = [t[1] for t in refs]
        self.index_descriptor_pairs = [t[3] for t in refs]
        self.index_json = json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [t[2] for t in refs]},
            separators=(",", ":"), ensure_ascii=False).encode()
        reached = set()
        for r in self.refs:
            reached |= r.reached
        bdir = os.path.join(root, "blobs", "sha256")
        self.files = sorted(h for h in os.listdir(bdir) if HEX64.match(h))
        self.history = []
        for h in self.files:
            d = "sha256:" + h
            if d in reached or cache_manifest_info(root, d) is None:
                continue
            self.history.append(RefModel(root, "@" + h[:12], d, None,
                                         os.path.getsize(os.path.join(bdir, h)), True))
        self.media, self.desc_size = {}, {}
        for r in self.history + self.refs:
            self.media.update(r.media)
        for r in self.refs:
            self.desc_size.update(r.sizes)
        self.reached = reached
        self.synthesized = {}      # hex -> bytes of synthesized blobs (inline configs)
        self.synthesized_for = {}  # manifest digest -> its synthesized cache config

    def nodes(self):
        """relative path (from the mount root) -> node spec."""
        n = {}
        s = self.name
        src = {"source": self.source}

        def add(rel, kind, size=None, content=None, target=None, xreq=None, xopt=None,
                mtime=None, blob=False, layer=False):
            n[rel] = {"kind": kind, "size": size, "content": content, "target": target,
                      "xreq": dict(xreq or {}), "xopt": dict(xopt or {}), "mtime": mtime,
                      "blob": blob, "layer": layer}

        im = self.index_mtime
        add(s, "d", xreq=src, mtime=im)
        add(s + "/oci-layout", "f", len(OCI_LAYOUT), OCI_LAYOUT, xreq=src, mtime=im)
        add(s + "/index.json", "f", len(self.index_json), self.index_json, xreq=src, mtime=im)
        add(s + "/index.json.lock", "f", 0, b"", xreq=src, mtime=im)
        add(s + "/ingest", "d", xreq=src, mtime=im)
        add(s + "/blobs", "d", xreq=src, mtime=im)
        add(s + "/blobs/sha256", "d", xreq=src)
        add(s + "/refs", "d", xreq=src, mtime=im)
        add(s + "/history", "d", xreq=src, mtime=im)
        add(s + "/layers", "d", xreq=src, mtime=im)
        add(s + "/layers/sha256", "d", xreq=src, mtime=im)
        # One folder per layer a cache config names; its contents are checked by
        # layers_test.py (the walk below does not descend into them).
        for bd in sorted({bd for r in self.refs + self.history for _, bd in r.links}):
            lx = dict(src, digest=bd)
            xopt = {"error": None}
            if self.media.get(bd):
                lx["mediatype"] = self.media[bd]
            else:
                xopt["mediatype"] = None
            add(s + "/layers/sha256/" + bd.split(":")[1], "d", xreq=lx, xopt=xopt, layer=True)
        bdir = os.path.join(self.root, "blobs", "sha256")
        for h in self.files:
            d = "sha256:" + h
            p = os.path.join(bdir, h)
            st = os.stat(p)
            size = self.desc_size.get(d, st.st_size)
            xreq = dict(src, digest=d, cached=str(st.st_size))
            xopt = {}
            if self.media.get(d):
                xreq["mediatype"] = self.media[d]
            else:
                xopt["mediatype"] = None
            add(s + "/blobs/sha256/" + h, "f", size, xreq=xreq, xopt=xopt, mtime=st.st_mtime_ns,
                blob=True)
        for h, data in self.synthesized.items():
            add(s + "/blobs/sha256/" + h, "f", len(data), data, blob=True,
                xreq=dict(src, digest="sha256:" + h, synthesized="1"),
                xopt={"mediatype": CACHECONFIG, "cached": None})
        for r in self.refs + self.history:
            base = s + ("/history/" if r.history else "/refs/") + r.folder
            rx = dict(src, ref=r.name)
            add(base, "d", xreq=dict(rx, digest=r.digest), mtime=r.mtime)
            mx = dict(rx, digest=r.digest)
            if r.media_type:
                mx["mediatype"] = r.media_type
            add(base + "/manifest.json", "f", len(r.manifest_bytes), r.manifest_bytes,
                xreq=mx, xopt={} if r.media_type else {"mediatype": None}, mtime=r.mtime)
            if r.config_bytes is not None:
                add(base + "/cache-config.json", "f", len(r.config_bytes), r.config_bytes,
                    xreq=dict(rx, digest=r.config_desc["digest"], mediatype=r.config_desc["mediaType"]),
                    mtime=r.config_mtime)
            else:
                synth = self.synthesized_for.get(r.digest)
                add(base + "/cache-config.json", "f", None if synth is None else len(synth), synth,
                    xreq=dict(rx, digest=None if synth is None else sha256(synth),
                              mediatype=CACHECONFIG, synthesized="1"))
                # Decoded from the image config, not a stored blob: synthesized (TREE.md).
                add(base + "/inline-records.json", "f", len(r.inline_records_bytes),
                    r.inline_records_bytes, xreq=dict(rx, synthesized="1"))
            add(base + "/records.json", "f", xreq=rx, mtime=r.mtime)
            add(base + "/snapshots", "d", xreq=rx)
            for short, (chain, blobs) in sorted(r.snapshots.items()):
                # Contents: snapshots_test.py (the walk does not descend into them).
                add(base + "/snapshots/" + short, "d", xreq=dict(rx, digest=chain, chain=blobs),
                    xopt={"error": None}, layer=True)
            add(base + "/layers", "d", xreq=rx)
            for lname, bd in r.links:
                target = "../../../layers/sha256/" + bd.split(":")[1]
                # No xattrs on symlinks: Linux refuses user.* there (TREE.md).
                add(base + "/layers/" + lname, "l", len(target), target=target, xreq={})
        return n


def with_nlinks(nodes):
    """Directory nlink = 2 + subdirectories; files and symlinks 1."""
    subdirs = {}
    for rel, spec in nodes.items():
        if spec["kind"] == "d" and "/" in rel:
            parent = rel.rsplit("/", 1)[0]
            subdirs[parent] = subdirs.get(parent, 0) + 1
    for rel, spec in nodes.items():
        spec["nlink"] = 2 + subdirs.get(rel, 0) if spec["kind"] == "d" else 1
    return nodes


# ---------------------------------------------------------------------------
# Mounts and processes


def unescape_mountinfo(s):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def mountinfo():
    """[(mount point, per-mount options, fstype, super options)] of this namespace."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.rstrip("\n").split(" - ", 1)
            fields = left.split(" ")
            rfields = right.split(" ")
            out.append((unescape_mountinfo(fields[4]), fields[5].split(","), rfields[0],
                        rfields[2].split(",") if len(rfields) > 2 else []))
    return out


def mount_entry(path):
    """The last (topmost) mountinfo entry for path, or None."""
    found = None
    for e in mountinfo():
        if e[0] == path:
            found = e
    return found


def is_mounted(path):
    return mount_entry(path) is not None


def daemon_pids(mnt):
    """Live processes whose argv names this (unique, temp) mountpoint: our daemons."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if os.fsencode(mnt) in argv and process_alive(int(d)):
            pids.append(int(d))
    return pids


def process_alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def read_all(path):
    with open(path, "rb") as f:
        return f.read()


def read_errno(path):
    """0 when the whole file reads, else the errno of the failing open/read."""
    try:
        read_all(path)
    except OSError as e:
        return e.errno
    return 0


def xattrs(path, follow=True):
    """{short name: value} of user.buildcachefs.* attributes (and others raw)."""
    out = {}
    for name in os.listxattr(path, follow_symlinks=follow):
        key = name[len(X):] if name.startswith(X) else name
        try:
            out[key] = os.getxattr(path, name, follow_symlinks=follow).decode()
        except OSError as e:
            out[key] = OSError(e.errno, "getxattr(%s): %s" % (name, os.strerror(e.errno)))
    return out


def json_strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from json_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from json_strings(v)


# ---------------------------------------------------------------------------


class Base(unittest.TestCase):
    def setUp(self):
        self.tmp = os.path.realpath(tempfile.mkdtemp(prefix="bcfs-mount-"))
        self._mounts, self._binds, self._hung = [], [], False
        self.logs = {}  # mountpoint -> file with the command's and the daemon's output
        self.addCleanup(self._final_cleanup)
        timer = threading.Timer(WATCHDOG_SECONDS, self._watchdog)
        timer.daemon = True
        timer.start()
        self.addCleanup(timer.cancel)

    # -- cleanup ----------------------------------------------------------

    def _watchdog(self):
        self._hung = True
        sys.stderr.write("\nwatchdog: %s hung for %d s; unmounting and killing its daemons\n"
                         % (self.id(), WATCHDOG_SECONDS))
        for b in list(self._binds):
            subprocess.run(["umount", "-l", b], capture_output=True)
        for mnt in list(self._mounts):
            for pid in daemon_pids(mnt):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            subprocess.run(["fusermount3", "-u", "-z", mnt], capture_output=True)

    def _final_cleanup(self):
        # Nothing may stay mounted below tmp before it is removed.
        left = [e[0] for e in mountinfo() if e[0] == self.tmp or e[0].startswith(self.tmp + "/")]
        for m in reversed(left):
            subprocess.run(["umount", "-l", m], capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self._hung:
            raise AssertionError("watchdog: test hung for more than %d s" % WATCHDOG_SECONDS)
        if left:
            raise AssertionError("left mounted after the test: %s" % left)

    def unmount(self, mnt):
        """fusermount3 -u (synchronous), then the daemon must exit; kill it if not."""
        pids = daemon_pids(mnt)
        problems = []
        if is_mounted(mnt):
            p = subprocess.run(["fusermount3", "-u", mnt], capture_output=True, text=True,
                               timeout=60)
            if p.returncode != 0:
                problems.append("fusermount3 -u %s failed: %s" % (mnt, p.stderr.strip()))
                subprocess.run(["fusermount3", "-u", "-z", mnt], capture_output=True, timeout=60)
        # No readiness signal exists for "the daemon has exited": poll, bounded.
        deadline = time.monotonic() + EXIT_TIMEOUT
        while any(process_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        alive = [p for p in pids if process_alive(p)]
        for p in alive:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        if alive:
            problems.append("daemon %s still running %d s after unmount (killed)"
                            % (alive, EXIT_TIMEOUT))
        if problems and not self._hung:
            raise AssertionError("; ".join(problems))

    # -- sources ----------------------------------------------------------

    def fixture(self, name, parent=None):
        src = os.path.join(ARGS.shared, "fixtures", "buildkit", name)
        if not os.path.isdir(src):
            if in_ci():
                self.fail("../shared fixtures are missing in CI: " + src)
            self.skipTest("../shared/fixtures/buildkit is absent (--shared)")
        dst = os.path.join(parent or self.tmp, name)
        shutil.copytree(src, dst, symlinks=True)
        return dst

    def generate(self, shape, out=None, seed=1, compression="gzip"):
        out = out or os.path.join(self.tmp, "gen-" + shape)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        cmd = [ARGS.gen, "--out", out, "--shape", shape, "--compression", compression,
               "--refs", "2", "--ref-names", "latest,feature/x", "--seed", str(seed)]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        return out

    @staticmethod
    def local(root):
        return "type=local,src=" + root

    # -- mounting ---------------------------------------------------------

    def run_mount(self, sources, mnt, opts=None, state=None, env=None):
        """Runs `buildcachefs mount` (daemon mode) with `env` (default: ours); returns
        (rc, output). Output goes to a file, not a pipe: a daemon that keeps stderr must
        not block us."""
        state = state or tempfile.mkdtemp(prefix="state-", dir=self.tmp)
        cmd = [ARGS.bin, "mount", "--state-dir", state]
        if opts:
            cmd += ["-o", opts]
        cmd += list(sources) + [mnt]
        log = os.path.join(self.tmp, "mount-%d.log" % len(os.listdir(self.tmp)))
        self.logs[mnt] = log  # the daemon keeps logging here (its inherited stderr)
        with open(log, "wb") as out:
            p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                               timeout=MOUNT_TIMEOUT, env=env)
        # The daemon may still be writing to the log: read what the command left.
        with open(log, "rb") as f:
            return p.returncode, f.read().decode(errors="replace")

    def mount(self, sources, opts=None, state=None, mnt=None, env=None):
        if mnt is None:
            mnt = tempfile.mkdtemp(prefix="mnt-", dir=self.tmp)
        self._mounts.append(mnt)
        self.addCleanup(self.unmount, mnt)
        rc, out = self.run_mount(sources, mnt, opts, state, env)
        self.assertEqual(rc, 0, "buildcachefs mount %s failed:\n%s" % (" ".join(sources), out))
        self.assertTrue(is_mounted(mnt), "mount returned 0 but %s is not mounted" % mnt)
        return mnt

    def log_of(self, mnt):
        """Everything the mount command and its daemon wrote so far."""
        with open(self.logs[mnt], "rb") as f:
            return f.read().decode(errors="replace")

    def bind_ro(self, path):
        """A read-only bind mount of path (as users do with `-v MNT/src:/cache:ro`)."""
        b = tempfile.mkdtemp(prefix="bind-", dir=self.tmp)
        self._binds.append(b)
        self.addCleanup(self._unbind, b)
        subprocess.run(["mount", "--bind", path, b], check=True, capture_output=True, timeout=60)
        subprocess.run(["mount", "-o", "remount,bind,ro", b], check=True, capture_output=True,
                       timeout=60)
        return b

    def _unbind(self, b):
        if is_mounted(b):
            p = subprocess.run(["umount", b], capture_output=True, text=True, timeout=60)
            if p.returncode != 0:
                subprocess.run(["umount", "-l", b], capture_output=True, timeout=60)
                raise AssertionError("umount %s: %s" % (b, p.stderr))

    # -- the whole-tree check ----------------------------------------------

    def check_source(self, mnt, name, root):
        """Compares MNT/<name> with what the files of root say (TREE.md)."""
        model = SourceModel(root, name, self.local(root))
        src = os.path.join(mnt, name)

        # Inline caches: the mount synthesizes cache-config.json; check it first.
        for r in model.refs + model.history:
            if r.shape != "inline":
                continue
            base = os.path.join(src, "history" if r.history else "refs", r.folder)
            with self.subTest(check="inline synthesized cache config", ref=r.name):
                data = read_all(os.path.join(base, "cache-config.json"))
                doc = json.loads(data)
                self.assertEqual([l["blob"] for l in doc["layers"]],
                                 [d["digest"] for d in r.layer_descs])
                self.assertEqual([l.get("parent", 0) for l in doc["layers"]],
                                 list(range(-1, len(r.layer_descs) - 1)))
                self.assertEqual(len(doc.get("records") or []), r.record_count)
                self.assertEqual(data, json.dumps(doc, separators=(",", ":"),
                                                  ensure_ascii=False).encode(),
                                 "synthesized documents are compact JSON")
                digest = os.getxattr(os.path.join(base, "cache-config.json"),
                                     X + "digest").decode()
                self.assertEqual(digest, sha256(data))
                self.assertEqual(read_all(os.path.join(src, "blobs", "sha256",
                                                       digest.split(":")[1])), data)
                model.synthesized[digest.split(":")[1]] = data
                model.synthesized_for[r.digest] = data
                self.assertEqual(read_all(os.path.join(base, "inline-records.json")),
                                 r.inline_records_bytes)
        nodes = with_nlinks(model.nodes())

        with self.subTest(check="paths"):
            got = {name}
            def boom(e):
                raise e
            for dirpath, dirnames, filenames in os.walk(src, followlinks=False, onerror=boom):
                rel = os.path.relpath(dirpath, mnt)
                if nodes.get(rel, {}).get("layer"):
                    dirnames[:] = []  # layer contents: layers_test.py
                    continue
                got |= {rel + "/" + n for n in dirnames + filenames}
            want = set(nodes)
            self.assertEqual(sorted(got - want), [], "paths the mount shows but should not")
            self.assertEqual(sorted(want - got), [], "paths the mount lacks")
            self.assertEqual(sorted(os.listdir(os.path.join(src, "ingest"))), [])

        modes = {"d": stat.S_IFDIR | 0o555, "f": stat.S_IFREG | 0o444, "l": stat.S_IFLNK | 0o777}
        with self.subTest(check="mode, size, nlink, owner"):
            bad = []
            for rel, spec in sorted(nodes.items()):
                try:
                    st = os.lstat(os.path.join(mnt, rel))
                except OSError as e:
                    bad.append("%s: lstat: %s" % (rel, e))
                    continue
                if st.st_mode != modes[spec["kind"]]:
                    bad.append("%s: mode %o, want %o" % (rel, st.st_mode, modes[spec["kind"]]))
                if (st.st_uid, st.st_gid) != (0, 0):
                    bad.append("%s: owner %d:%d" % (rel, st.st_uid, st.st_gid))
                # A layer folder counts its subdirectories once indexed (1 before).
                if not spec.get("layer") and st.st_nlink != spec["nlink"]:
                    bad.append("%s: nlink %d, want %d" % (rel, st.st_nlink, spec["nlink"]))
                if spec["size"] is not None and st.st_size != spec["size"]:
                    bad.append("%s: size %d, want %d" % (rel, st.st_size, spec["size"]))
            self.assertEqual(bad, [])

        with self.subTest(check="symlink targets"):
            bad = []
            for rel, spec in sorted(nodes.items()):
                if spec["kind"] == "l":
                    t = os.readlink(os.path.join(mnt, rel))
                    if t != spec["target"]:
                        bad.append("%s -> %s, want %s" % (rel, t, spec["target"]))
            self.assertEqual(bad, [])

        with self.subTest(check="contents: blobs hash to their names, documents verbatim"):
            bad = []
            for rel, spec in sorted(nodes.items()):
                if spec["kind"] != "f" or rel.endswith("/records.json"):
                    continue
                try:
                    data = read_all(os.path.join(mnt, rel))
                except OSError as e:
                    bad.append("%s: read: %s" % (rel, e))
                    continue
                if spec["blob"] and sha256(data) != "sha256:" + rel.rsplit("/", 1)[1]:
                    bad.append("%s: bytes hash to %s" % (rel, sha256(data)))
                if spec["content"] is not None and data != spec["content"]:
                    bad.append("%s: %d bytes differ from the expected %d"
                               % (rel, len(data), len(spec["content"])))
                if spec["size"] is not None and len(data) != spec["size"]:
                    bad.append("%s: read %d bytes, st_size says %d" % (rel, len(data), spec["size"]))
            self.assertEqual(bad, [])

        with self.subTest(check="index.json exactly (compact, verbatim descriptors, sorted)"):
            data = read_all(os.path.join(src, "index.json"))
            pairs = json.loads(data, object_pairs_hook=lambda p: p)
            self.assertEqual(pairs[:2], [("schemaVersion", 2), ("mediaType", OCI_INDEX)])
            self.assertEqual(pairs[2][0], "manifests")
            self.assertEqual(pairs[2][1], model.index_descriptor_pairs)
            self.assertEqual(data, model.index_json)

        with self.subTest(check="records.json"):
            for r in model.refs + model.history:
                base = os.path.join(src, "history" if r.history else "refs", r.folder)
                data = read_all(os.path.join(base, "records.json"))
                self.assertEqual(os.stat(os.path.join(base, "records.json")).st_size, len(data))
                got = json.loads(data)
                self.assertEqual(len(got), r.record_count, r.name)
                self.assertEqual([g["results"] for g in got], [w["results"] for w in r.records],
                                 "%s: result chains" % r.name)
                self.assertEqual(got, r.records, r.name)
                if got:
                    self.assertTrue(data.startswith(b"[\n  {"), "pretty JSON, 2-space indent")

        def check_xattrs(kinds, names_only=False):
            bad = []
            for rel, spec in sorted(nodes.items()):
                if spec["kind"] not in kinds:
                    continue
                path = os.path.join(mnt, rel)
                try:
                    if names_only:
                        got = {n[len(X):] if n.startswith(X) else n: None
                               for n in os.listxattr(path, follow_symlinks=False)}
                    else:
                        got = xattrs(path, follow=spec["kind"] != "l")
                except OSError as e:
                    bad.append("%s: listxattr: %s" % (rel, e))
                    continue
                for k, v in spec["xreq"].items():
                    if k not in got:
                        bad.append("%s: no %s%s" % (rel, X, k))
                    elif isinstance(got[k], OSError):
                        bad.append("%s: %s" % (rel, got[k]))
                    elif v is not None and not names_only and got[k] != v:
                        bad.append("%s: %s%s = %r, want %r" % (rel, X, k, got[k], v))
                for k, v in got.items():
                    if k in spec["xreq"]:
                        continue
                    if k not in spec["xopt"]:
                        bad.append("%s: unexpected %s = %r" % (rel, k, v))
                    elif spec["xopt"][k] is not None and not names_only and v != spec["xopt"][k]:
                        bad.append("%s: %s%s = %r, want %r" % (rel, X, k, v, spec["xopt"][k]))
            self.assertEqual(bad, [])

        with self.subTest(check="xattrs of files and folders"):
            check_xattrs("df")
        with self.subTest(check="layer symlinks carry no xattrs (listxattr, no follow)"):
            check_xattrs("l", names_only=True)

        with self.subTest(check="mtimes"):
            bad = []
            for rel, spec in sorted(nodes.items()):
                if spec["mtime"] is None:
                    continue
                got = os.lstat(os.path.join(mnt, rel)).st_mtime_ns
                if got != spec["mtime"]:
                    bad.append("%s: mtime %d, want %d" % (rel, got, spec["mtime"]))
            self.assertEqual(bad, [])

        with self.subTest(check="inode numbers: distinct, 63-bit"):
            inos = {}
            for rel in nodes:
                inos.setdefault(os.lstat(os.path.join(mnt, rel)).st_ino, []).append(rel)
            self.assertEqual([v for v in inos.values() if len(v) > 1], [])
            self.assertTrue(all(0 < i < 2 ** 63 for i in inos), sorted(inos)[-1])
        return model

    def check_root(self, mnt, names):
        with self.subTest(check="mount root and .buildcachefs/"):
            st = os.lstat(mnt)
            self.assertEqual(st.st_mode, stat.S_IFDIR | 0o555)
            self.assertEqual(st.st_ino, 1)
            self.assertEqual((st.st_uid, st.st_gid), (0, 0))
            self.assertEqual(st.st_nlink, 2 + len(names) + 1)
            self.assertEqual(sorted(os.listdir(mnt)), sorted(list(names) + [".buildcachefs"]))
            meta = os.path.join(mnt, ".buildcachefs")
            st = os.lstat(meta)
            self.assertEqual((st.st_mode, st.st_nlink, st.st_uid, st.st_gid),
                             (stat.S_IFDIR | 0o555, 2, 0, 0))
            self.assertEqual(sorted(os.listdir(meta)), ["metrics", "status.json"])
            for name in ("metrics", "status.json"):
                st = os.lstat(os.path.join(meta, name))
                self.assertEqual((st.st_mode, st.st_nlink, st.st_uid, st.st_gid),
                                 (stat.S_IFREG | 0o444, 1, 0, 0))
            return json.loads(read_all(os.path.join(meta, "status.json")))


# ---------------------------------------------------------------------------
# 1. The tree of every local fixture and of generated caches, exactly


class TreeMatchesFiles(Base):
    pass


def make_fixture_test(name):
    def test(self):
        root = self.fixture(name)
        mnt = self.mount([self.local(root)])
        self.check_root(mnt, [name])
        self.check_source(mnt, name, root)
    test.__doc__ = "the mount of fixture %s shows exactly the tree TREE.md derives from its files" % name
    return test


for _name in LOCAL_FIXTURES:
    setattr(TreeMatchesFiles, "test_fixture_" + _name.replace("-", "_") + "_tree_is_exact",
            make_fixture_test(_name))


def make_generated_test(shape):
    def test(self):
        root = self.generate(shape)
        mnt = self.mount([self.local(root)])
        name = os.path.basename(root)
        self.check_root(mnt, [name])
        model = self.check_source(mnt, name, root)
        self.assertEqual([r.name for r in model.refs], ["feature/x", "latest"])
        self.assertEqual(sorted(os.listdir(os.path.join(mnt, name, "refs"))),
                         ["feature%2Fx", "latest"])
        self.assertEqual(os.getxattr(os.path.join(mnt, name, "refs", "feature%2Fx"),
                                     X + "ref").decode(), "feature/x")
        self.assertEqual({r.shape for r in model.refs}, {shape})
    test.__doc__ = "a generated %s cache with refs latest and feature/x mounts exactly" % shape
    return test


for _shape in SHAPES:
    setattr(TreeMatchesFiles, "test_generated_%s_tree_is_exact" % _shape.replace("-", "_"),
            make_generated_test(_shape))


# ---------------------------------------------------------------------------
# 2. history/ of local-growth


class History(Base):
    def test_local_growth_history_lists_exactly_the_manifests_index_json_no_longer_reaches(self):
        root = self.fixture("local-growth")
        meta = os.path.join(ARGS.shared, "fixtures", "buildkit", "_meta", "local-growth-history")
        rounds = [load_json(os.path.join(meta, "index.after-round%d.json" % i)) for i in (1, 2, 3)]
        old = {d["digest"] for r in rounds[:2] for d in r["manifests"]}
        now = {d["digest"] for d in rounds[2]["manifests"]}
        want = sorted(d.split(":")[1] for d in old - now)
        self.assertEqual(len(want), 2)
        mnt = self.mount([self.local(root)])
        src = os.path.join(mnt, "local-growth")
        self.assertEqual(sorted(os.listdir(os.path.join(src, "history"))), want)
        for h in want:
            folder = os.path.join(src, "history", h)
            self.assertEqual(read_all(os.path.join(folder, "manifest.json")),
                             read_blob(root, "sha256:" + h))
            self.assertEqual(os.getxattr(folder, X + "digest").decode(), "sha256:" + h)
            self.assertEqual(os.getxattr(folder, X + "ref").decode(), "@" + h[:12])
            self.assertEqual(sorted(os.listdir(folder)),
                             ["cache-config.json", "layers", "manifest.json", "records.json",
                              "snapshots"])
            for link in os.listdir(os.path.join(folder, "layers")):
                target = os.readlink(os.path.join(folder, "layers", link))
                self.assertTrue(target.startswith("../../../layers/sha256/"), target)
                blob = os.path.join(src, "blobs", "sha256", target.rsplit("/", 1)[1])
                self.assertEqual(sha256(read_all(blob)), "sha256:" + target.rsplit("/", 1)[1])
                self.assertTrue(os.path.isdir(os.path.join(folder, "layers", link)))
        self.assertEqual(os.listdir(os.path.join(src, "refs")), ["latest"])
        self.assertEqual(os.getxattr(os.path.join(src, "refs", "latest"), X + "digest").decode(),
                         sorted(now)[0])


# ---------------------------------------------------------------------------
# 3. BuildKit's type=local importer, replayed


class ImporterReplay(Base):
    def replay(self, layout, ref_name):
        """The calls BuildKit v0.11/v0.12's local importer makes (DESIGN §1.6)."""
        os.makedirs(os.path.join(layout, "ingest"), exist_ok=True)  # MkdirAll(ingest)
        lock = os.path.join(layout, "index.json.lock")
        fd = os.open(lock, os.O_CREAT | os.O_RDONLY, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            with self.assertRaises(OSError) as cm:
                os.unlink(lock)
            self.assertEqual(cm.exception.errno, errno.EROFS)
            index = json.loads(read_all(os.path.join(layout, "index.json")))
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        descs = [d for d in index["manifests"]
                 if (d.get("annotations") or {}).get(REF_NAME) == ref_name]
        self.assertEqual(len(descs), 1, "ref %r in index.json" % ref_name)
        seen = []

        def fetch(desc):
            path = os.path.join(layout, "blobs", "sha256", desc["digest"].split(":")[1])
            self.assertEqual(os.stat(path).st_size, desc["size"], desc["digest"])
            data = read_all(path)
            self.assertEqual(len(data), desc["size"], desc["digest"])
            self.assertEqual(sha256(data), desc["digest"])
            seen.append(desc["digest"])
            if desc.get("mediaType") in MANIFEST_TYPES:
                doc = json.loads(data)
                children = list(doc.get("manifests") or [])
                if doc.get("config"):
                    children.append(doc["config"])
                children += doc.get("layers") or []
                for c in children:
                    fetch(c)

        fetch(descs[0])
        return seen

    def test_importer_calls_succeed_through_the_mount_and_a_read_only_bind_mount(self):
        gz = self.fixture("local-max-gzip")
        gen = self.generate("index")
        mnt = self.mount([self.local(gz), self.local(gen)])
        for name, root, ref in (("local-max-gzip", gz, "latest"), ("gen-index", gen, "feature/x")):
            want = SourceModel(root, name, "").refs
            want = [r for r in want if r.name == ref][0]
            expected = {want.digest} | {want.config_desc["digest"]} | \
                       {d["digest"] for d in want.layer_descs}
            with self.subTest(via="mount", source=name):
                seen = self.replay(os.path.join(mnt, name), ref)
                self.assertEqual(set(seen), expected)
            with self.subTest(via="read-only bind mount", source=name):
                b = self.bind_ro(os.path.join(mnt, name))
                self.assertIn("ro", mount_entry(b)[1])
                seen = self.replay(b, ref)
                self.assertEqual(set(seen), expected)
                self._unbind(b)


# ---------------------------------------------------------------------------
# 4. Mount options and writes


class MountOptions(Base):
    def assert_ro_nosuid_nodev(self, mnt):
        e = mount_entry(mnt)
        self.assertIsNotNone(e)
        point, opts, fstype, sopts = e
        for o in ("ro", "nosuid", "nodev"):
            self.assertIn(o, opts, "mountinfo of %s: %s" % (mnt, opts))
        self.assertNotIn("rw", opts)
        self.assertTrue(fstype == "fuse" or fstype.startswith("fuse."), fstype)
        self.assertIn("default_permissions", sopts, sopts)
        return e

    def test_mountinfo_shows_ro_nosuid_nodev_by_default(self):
        root = self.generate("index")
        mnt = self.mount([self.local(root)])
        self.assert_ro_nosuid_nodev(mnt)

    def test_mountinfo_shows_ro_nosuid_nodev_even_with_o_suid_dev(self):
        root = self.generate("index")
        mnt = self.mount([self.local(root)], opts="suid,dev")
        self.assert_ro_nosuid_nodev(mnt)

    def test_o_rw_is_ignored_the_mount_stays_read_only(self):
        root = self.generate("index")
        mnt = self.mount([self.local(root)], opts="rw")
        self.assert_ro_nosuid_nodev(mnt)
        with self.assertRaises(OSError) as cm:
            os.mkdir(os.path.join(mnt, "gen-index", "x"))
        self.assertEqual(cm.exception.errno, errno.EROFS)

    def run_as_nobody(self, *cmd):
        return subprocess.run(list(cmd), capture_output=True, timeout=60, user=65534,
                              group=65534, extra_groups=[])

    def test_allow_other_lets_other_users_read_and_without_it_they_cannot(self):
        os.chmod(self.tmp, 0o755)
        root = self.generate("index")
        layout_file = lambda m: os.path.join(m, "gen-index", "oci-layout")
        plain = self.mount([self.local(root)])
        p = self.run_as_nobody("cat", layout_file(plain))
        self.assertNotEqual(p.returncode, 0, "without allow_other another user could read")
        self.assertIn(b"Permission denied", p.stderr)
        shared = self.mount([self.local(root)], opts="allow_other")
        self.assertIn("allow_other", self.assert_ro_nosuid_nodev(shared)[3])
        p = self.run_as_nobody("cat", layout_file(shared))
        self.assertEqual((p.returncode, p.stdout), (0, OCI_LAYOUT), p.stderr)
        index = json.loads(read_all(os.path.join(shared, "gen-index", "index.json")))
        blob = os.path.join(shared, "gen-index", "blobs", "sha256",
                            index["manifests"][0]["digest"].split(":")[1])
        p = self.run_as_nobody("cat", blob)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(sha256(p.stdout), index["manifests"][0]["digest"])

    def test_every_write_fails_with_erofs(self):
        root = self.generate("index")
        mnt = self.mount([self.local(root)])
        src = os.path.join(mnt, "gen-index")
        index = json.loads(read_all(os.path.join(src, "index.json")))
        blob = os.path.join(src, "blobs", "sha256", index["manifests"][0]["digest"].split(":")[1])
        ref = os.path.join(src, "refs", "latest")
        link = os.path.join(ref, "layers", sorted(os.listdir(os.path.join(ref, "layers")))[0])
        ops = {
            "create a file": lambda: os.close(os.open(os.path.join(src, "new"),
                                                      os.O_CREAT | os.O_WRONLY, 0o644)),
            "create a file in refs/<ref>": lambda: os.close(os.open(os.path.join(ref, "new"),
                                                                    os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)),
            "create in ingest/": lambda: os.close(os.open(os.path.join(src, "ingest", "x"),
                                                          os.O_CREAT | os.O_WRONLY, 0o644)),
            "mkdir": lambda: os.mkdir(os.path.join(src, "newdir")),
            "mkdir in blobs/sha256": lambda: os.mkdir(os.path.join(src, "blobs", "sha256", "d")),
            "unlink a blob": lambda: os.unlink(blob),
            "unlink a layer link": lambda: os.unlink(link),
            "unlink index.json.lock": lambda: os.unlink(os.path.join(src, "index.json.lock")),
            "rmdir ingest/": lambda: os.rmdir(os.path.join(src, "ingest")),
            "rename a blob": lambda: os.rename(blob, blob + ".x"),
            "rename index.json": lambda: os.rename(os.path.join(src, "index.json"),
                                                   os.path.join(src, "index.json.old")),
            "chmod": lambda: os.chmod(blob, 0o644),
            "chown": lambda: os.chown(blob, 1, 1),
            "utime": lambda: os.utime(blob, (0, 0)),
            "setxattr": lambda: os.setxattr(blob, "user.test", b"1"),
            "removexattr": lambda: os.removexattr(blob, X + "digest"),
            "truncate": lambda: os.truncate(blob, 0),
            "open O_WRONLY": lambda: os.close(os.open(blob, os.O_WRONLY)),
            "open O_RDWR": lambda: os.close(os.open(blob, os.O_RDWR)),
            "open O_TRUNC": lambda: os.close(os.open(os.path.join(src, "index.json"),
                                                     os.O_WRONLY | os.O_TRUNC)),
            "symlink": lambda: os.symlink("x", os.path.join(src, "sl")),
            "hard link": lambda: os.link(blob, os.path.join(src, "hl")),
            "mknod (fifo)": lambda: os.mkfifo(os.path.join(src, "fifo")),
        }
        for what, op in ops.items():
            with self.subTest(write=what):
                with self.assertRaises(OSError) as cm:
                    op()
                self.assertEqual(cm.exception.errno, errno.EROFS,
                                 "%s: %s" % (what, os.strerror(cm.exception.errno)))
        # Nothing changed.
        self.assertEqual(sha256(read_all(blob)), index["manifests"][0]["digest"])


# ---------------------------------------------------------------------------
# 5. Bad input: each fails only what it must


class BadInput(Base):
    def check_other_blobs_read(self, mnt, name, root, skip=()):
        bad = []
        for h in os.listdir(os.path.join(mnt, name, "blobs", "sha256")):
            if h in skip or not os.path.exists(os.path.join(root, "blobs", "sha256", h)):
                continue
            try:
                data = read_all(os.path.join(mnt, name, "blobs", "sha256", h))
            except OSError as e:
                bad.append("%s: %s" % (h, e))
                continue
            if sha256(data) != "sha256:" + h:
                bad.append("%s: wrong bytes" % h)
        self.assertEqual(bad, [])

    def check_ref_documents(self, mnt, name, root, ref="latest"):
        model = SourceModel(root, name, "")
        r = [r for r in model.refs if r.name == ref][0]
        base = os.path.join(mnt, name, "refs", encode_ref(ref))
        self.assertEqual(read_all(os.path.join(base, "manifest.json")), r.manifest_bytes)
        self.assertEqual(read_all(os.path.join(base, "cache-config.json")), r.config_bytes)
        self.assertEqual(len(json.loads(read_all(os.path.join(base, "records.json")))),
                         r.record_count)
        self.assertEqual(read_all(os.path.join(mnt, name, "index.json")), model.index_json)
        return r

    def victim_layer(self, root):
        model = SourceModel(root, "x", "")
        r = model.refs[0]
        # a small layer that only this position uses
        d = sorted(r.layer_descs, key=lambda d: (d["size"], d["digest"]))[2]
        return d["digest"], d["size"]

    def test_a_layer_blob_whose_bytes_do_not_match_its_digest_is_never_served(self):
        root = self.fixture("local-max-gzip")
        digest, size = self.victim_layer(root)
        path = blob_path(root, digest)
        os.chmod(path, 0o644)
        with open(path, "r+b") as f:
            f.seek(size // 2)
            b = f.read(1)
            f.seek(size // 2)
            f.write(bytes([b[0] ^ 0x01]))
        self.assertEqual(os.path.getsize(path), size)
        mnt = self.mount([self.local(root)])
        bad = os.path.join(mnt, "local-max-gzip", "blobs", "sha256", digest.split(":")[1])
        self.assertEqual(os.stat(bad).st_size, size)
        self.assertEqual(read_errno(bad), errno.EIO)
        self.assertEqual(read_errno(bad), errno.EIO, "a second read is refused too")
        reason = os.getxattr(bad, X + "error").decode()
        self.assertIn("digest", reason)
        link = [l for l in os.listdir(os.path.join(mnt, "local-max-gzip", "refs", "latest", "layers"))
                if l.endswith("-" + digest.split(":")[1][:12])]
        self.assertEqual(len(link), 1)
        # The link leads to the layer folder, which stays empty and says why.
        layer_dir = os.path.join(mnt, "local-max-gzip", "refs", "latest", "layers", link[0])
        self.assertEqual(os.listdir(layer_dir), [])
        self.assertIn("does not match its digest", os.getxattr(layer_dir, X + "error").decode())
        self.check_other_blobs_read(mnt, "local-max-gzip", root, skip={digest.split(":")[1]})
        self.check_ref_documents(mnt, "local-max-gzip", root)
        # The reason is in the log as well; read it once the daemon has exited.
        self.unmount(mnt)
        with open(self.logs[mnt], errors="replace") as f:
            log = f.read()
        self.assertIn(digest, log)
        self.assertIn("digest", log.replace(digest, ""))

    def test_a_truncated_layer_blob_keeps_its_descriptor_size_and_reads_give_eio(self):
        root = self.fixture("local-max-zstd")
        digest, size = self.victim_layer(root)
        path = blob_path(root, digest)
        os.chmod(path, 0o644)
        os.truncate(path, size // 2)
        mnt = self.mount([self.local(root)])
        bad = os.path.join(mnt, "local-max-zstd", "blobs", "sha256", digest.split(":")[1])
        self.assertEqual(os.stat(bad).st_size, size)
        self.assertEqual(read_errno(bad), errno.EIO)
        reason = os.getxattr(bad, X + "error").decode()
        self.assertTrue(reason.strip(), "user.buildcachefs.error is empty")
        self.assertNotIn("\n", reason.strip(), "one line")
        self.check_other_blobs_read(mnt, "local-max-zstd", root, skip={digest.split(":")[1]})
        self.check_ref_documents(mnt, "local-max-zstd", root)

    def test_a_corrupt_index_json_leaves_refs_empty_and_the_manifest_in_history(self):
        root = self.fixture("registry-max")
        os.chmod(os.path.join(root, "index.json"), 0o644)
        with open(os.path.join(root, "index.json"), "w") as f:
            f.write('{"schemaVersion":2,"manifests":[{"mediaType":')
        mnt = self.mount([self.local(root)])
        src = os.path.join(mnt, "registry-max")
        self.assertEqual(os.listdir(os.path.join(src, "refs")), [])
        manifest = "c234c563ccad38946f4c30c9d217cfe7333826f14c8cb0710de95b8f0bfaa1f0"
        self.assertEqual(os.listdir(os.path.join(src, "history")), [manifest])
        self.assertEqual(read_all(os.path.join(src, "history", manifest, "manifest.json")),
                         read_blob(root, "sha256:" + manifest))
        self.assertEqual(len(json.loads(read_all(os.path.join(src, "history", manifest,
                                                              "records.json")))), 13)
        self.assertEqual(len(os.listdir(os.path.join(src, "history", manifest, "layers"))), 10)
        self.assertEqual(read_all(os.path.join(src, "index.json")),
                         b'{"schemaVersion":2,"mediaType":"' + OCI_INDEX.encode() +
                         b'","manifests":[]}')
        self.assertEqual(sorted(os.listdir(os.path.join(src, "blobs", "sha256"))),
                         sorted(os.listdir(os.path.join(root, "blobs", "sha256"))))
        self.check_other_blobs_read(mnt, "registry-max", root)
        self.assertEqual(read_all(os.path.join(src, "oci-layout")), OCI_LAYOUT)

    def test_a_cache_config_naming_a_blob_the_manifest_lacks_fails_only_that_blob(self):
        root = self.fixture("local-max-gzip")
        old_manifest = "sha256:1775718c4e0f0234849b1c58e4f30a994431341386cd7b486b8773011d782b48"
        ghost = "sha256:" + "ab" * 32

        def mutate(config):
            config["layers"].append({"blob": ghost, "parent": -1})
            config["records"].append({"digest": "sha256:" + "cd" * 32,
                                      "layers": [{"layer": len(config["layers"]) - 1,
                                                  "createdAt": "2026-01-01T00:00:00Z"}]})
        new_manifest = rewrite_ref(root, mutate)
        mnt = self.mount([self.local(root)])
        src = os.path.join(mnt, "local-max-gzip")
        self.assertEqual(os.listdir(os.path.join(src, "refs")), ["latest"])
        ref = os.path.join(src, "refs", "latest")
        self.assertEqual(os.getxattr(ref, X + "digest").decode(), new_manifest)
        r = self.check_ref_documents(mnt, "local-max-gzip", root)
        self.assertEqual(r.record_count, 14)
        links = sorted(os.listdir(os.path.join(ref, "layers")))
        self.assertEqual(len(links), 11)
        self.assertEqual(links[10], "010-" + "ab" * 6)
        for l in links[:10]:
            p = os.path.join(ref, "layers", l)
            target = os.readlink(p)
            blob = os.path.join(src, "blobs", "sha256", target.rsplit("/", 1)[1])
            self.assertEqual(sha256(read_all(blob)), "sha256:" + target.rsplit("/", 1)[1])
            self.assertTrue(os.path.isdir(p), p)
        self.check_other_blobs_read(mnt, "local-max-gzip", root)
        # The manifest the rewrite replaced is history now.
        self.assertEqual(os.listdir(os.path.join(src, "history")), [old_manifest.split(":")[1]])
        # TREE.md: blobs/sha256/ also lists "every blob a ref reaches that the source lacks
        # (reading it gives EIO; user.buildcachefs.error says it is missing)".
        with self.subTest(check="the blob only the cache config names is listed and says why"):
            ghost_path = os.path.join(src, "blobs", "sha256", ghost.split(":")[1])
            self.assertIn(ghost.split(":")[1], os.listdir(os.path.join(src, "blobs", "sha256")))
            self.assertEqual(read_errno(ghost_path), errno.EIO)
            self.assertIn("missing", os.getxattr(ghost_path, X + "error").decode())
            # Its layer folder is empty and says why.
            ghost_layer = os.path.join(ref, "layers", links[10])
            self.assertEqual(os.listdir(ghost_layer), [])
            self.assertIn("missing", os.getxattr(ghost_layer, X + "error").decode())

    def test_a_layer_blob_missing_from_blobs_is_listed_and_reads_give_eio(self):
        root = self.fixture("local-max-zstd")
        digest, size = self.victim_layer(root)
        os.chmod(os.path.dirname(blob_path(root, digest)), 0o755)
        os.remove(blob_path(root, digest))
        mnt = self.mount([self.local(root)])
        src = os.path.join(mnt, "local-max-zstd")
        gone = os.path.join(src, "blobs", "sha256", digest.split(":")[1])
        self.assertIn(digest.split(":")[1], os.listdir(os.path.join(src, "blobs", "sha256")))
        self.assertEqual(os.stat(gone).st_size, size)
        self.assertEqual(read_errno(gone), errno.EIO)
        self.assertIn("missing", os.getxattr(gone, X + "error").decode())
        self.check_other_blobs_read(mnt, "local-max-zstd", root)
        self.check_ref_documents(mnt, "local-max-zstd", root)


def rewrite_ref(root, mutate_config):
    """Applies mutate_config to the config of ref 0, re-storing config, manifest and index
    (as ls_test.py does)."""
    index_path = os.path.join(root, "index.json")
    index = load_json(index_path)
    mdesc = index["manifests"][0]
    manifest = json.loads(read_blob(root, mdesc["digest"]))
    cdesc = manifest["config"] if "config" in manifest else manifest["manifests"][-1]
    config = json.loads(read_blob(root, cdesc["digest"]))
    mutate_config(config)

    def store(obj):
        data = json.dumps(obj, separators=(",", ":")).encode()
        digest = sha256(data)
        with open(blob_path(root, digest), "wb") as f:
            f.write(data)
        return digest, len(data)

    cdesc["digest"], cdesc["size"] = store(config)
    mdesc["digest"], mdesc["size"] = store(manifest)
    os.chmod(index_path, 0o644)
    with open(index_path, "w") as f:
        json.dump(index, f)
    return mdesc["digest"]


# ---------------------------------------------------------------------------
# 6. Several sources in one mount


class MultipleSources(Base):
    def test_two_caches_with_the_same_basename_become_cache_and_cache_2(self):
        a = self.generate("image-manifest", out=os.path.join(self.tmp, "a", "cache"), seed=1)
        b = self.generate("index", out=os.path.join(self.tmp, "b", "cache"), seed=2)
        mnt = self.mount([self.local(a), self.local(b)])
        status = self.check_root(mnt, ["cache", "cache-2"])
        self.check_source(mnt, "cache", a)
        self.check_source(mnt, "cache-2", b)
        for name, root in (("cache", a), ("cache-2", b)):
            got = json.loads(read_all(os.path.join(mnt, name, "index.json")))
            want = load_json(os.path.join(root, "index.json"))
            self.assertEqual(sorted(d["digest"] for d in got["manifests"]),
                             sorted(d["digest"] for d in want["manifests"]))
            self.assertEqual(os.getxattr(os.path.join(mnt, name), X + "source").decode(),
                             self.local(root))
        strings = list(json_strings(status))
        for name, root in (("cache", a), ("cache-2", b)):
            self.assertIn(name, strings, "status.json names source %s" % name)
            self.assertTrue(any(root in s for s in strings), "status.json names %s" % root)


# ---------------------------------------------------------------------------
# 7. Mount errors


class MountErrors(Base):
    def test_a_missing_mountpoint_exits_1_naming_it(self):
        root = self.generate("index")
        mnt = os.path.join(self.tmp, "no-such-mountpoint")
        self._mounts.append(mnt)
        self.addCleanup(self.unmount, mnt)
        rc, out = self.run_mount([self.local(root)], mnt)
        self.assertEqual(rc, 1, out)
        self.assertIn(mnt, out)
        self.assertFalse(is_mounted(mnt))
        self.assertEqual(daemon_pids(mnt), [])

    def test_a_missing_source_directory_exits_1_naming_it(self):
        missing = os.path.join(self.tmp, "no-such-cache")
        mnt = tempfile.mkdtemp(prefix="mnt-", dir=self.tmp)
        self._mounts.append(mnt)
        self.addCleanup(self.unmount, mnt)
        rc, out = self.run_mount([self.local(missing)], mnt)
        self.assertEqual(rc, 1, out)
        self.assertIn(missing, out)
        self.assertFalse(is_mounted(mnt))
        self.assertEqual(daemon_pids(mnt), [])
        self.assertEqual(os.listdir(mnt), [])


# ---------------------------------------------------------------------------
# 8. Inode numbers


class LsTree(Base):
    def test_ls_tree_prints_exactly_what_the_mount_shows(self):
        root = self.generate("index")
        mnt = self.mount([self.local(root)])
        name = os.path.basename(root)
        want = []
        for dirpath, dirnames, filenames in os.walk(os.path.join(mnt, name)):
            for entry in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
                st = os.lstat(entry)
                kind = "d" if stat.S_ISDIR(st.st_mode) else "l" if stat.S_ISLNK(st.st_mode) else "-"
                size = 0 if kind == "d" else st.st_size
                line = "%s%04o %10d  %s" % (kind, stat.S_IMODE(st.st_mode), size,
                                            os.path.relpath(entry, mnt))
                if kind == "l":
                    line += " -> " + os.readlink(entry)
                want.append(line)
        p = subprocess.run([ARGS.bin, "ls", self.local(root), "--tree"], capture_output=True,
                           text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(sorted(set(p.stdout.splitlines())), sorted(set(want)))
        self.assertEqual(len(p.stdout.splitlines()), len(set(want)))


class Inodes(Base):
    def test_inode_numbers_are_stable_across_remounts(self):
        root = self.fixture("local-growth")
        state = tempfile.mkdtemp(prefix="state-", dir=self.tmp)
        mnt = tempfile.mkdtemp(prefix="mnt-", dir=self.tmp)

        def sample():
            s = os.path.join(mnt, "local-growth")
            ref = os.path.join(s, "refs", "latest")
            hist = os.path.join(s, "history")
            h = sorted(os.listdir(hist))[0]
            paths = ["", "local-growth", "local-growth/index.json", "local-growth/index.json.lock",
                     "local-growth/ingest", "local-growth/refs/latest",
                     "local-growth/refs/latest/manifest.json",
                     "local-growth/refs/latest/records.json",
                     "local-growth/refs/latest/layers/" + sorted(os.listdir(os.path.join(ref, "layers")))[0],
                     "local-growth/history/" + h, "local-growth/history/" + h + "/cache-config.json",
                     "local-growth/blobs/sha256/" + sorted(os.listdir(os.path.join(s, "blobs", "sha256")))[0],
                     ".buildcachefs", ".buildcachefs/status.json"]
            return {p: os.lstat(os.path.join(mnt, p)).st_ino for p in paths}

        self.mount([self.local(root)], state=state, mnt=mnt)
        first = sample()
        self.assertEqual(first[""], 1)
        self.assertEqual(len(set(first.values())), len(first))
        self.unmount(mnt)
        self.mount([self.local(root)], state=state, mnt=mnt)
        self.assertEqual(sample(), first, "same state dir")
        self.unmount(mnt)
        self.mount([self.local(root)], mnt=mnt)
        self.assertEqual(sample(), first, "fresh state dir")


class CatalogCache(Base):
    """A remount of an unchanged source reads its catalog from <state>/catalog; any change
    to the source (a blob added, index.json rewritten) or a damaged cache file makes it
    read the source again, and the tree always says what the files say."""

    def settle(self, root):
        """Waits (polling the clock, deadline 10 s) until every folder time of root is over
        1 s old: the fingerprint refuses to vouch for a source changed within the last
        second (a change in the same clock tick would not show)."""
        deadline = time.time() + 10
        while True:
            newest = max(max(os.stat(p).st_mtime, os.stat(p).st_ctime)
                         for p in (root, os.path.join(root, "index.json"),
                                   os.path.join(root, "blobs"),
                                   os.path.join(root, "blobs", "sha256")))
            if time.time() - newest > 1.1:
                return
            self.assertLess(time.time(), deadline, "the clock does not move")
            time.sleep(0.05)

    def cache_file(self, state):
        files = os.listdir(os.path.join(state, "catalog"))
        self.assertEqual(len(files), 1, files)
        self.assertTrue(files[0].endswith(".bin"), files)
        st = os.stat(os.path.join(state, "catalog", files[0]))
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(state, "catalog")).st_mode), 0o700)
        return os.path.join(state, "catalog", files[0]), (st.st_ino, st.st_mtime_ns, st.st_size)

    def test_unchanged_sources_come_from_the_cache_and_changes_are_read_again(self):
        root = self.fixture("local-growth")
        name = os.path.basename(root)
        state = tempfile.mkdtemp(prefix="state-", dir=self.tmp)
        mnt = tempfile.mkdtemp(prefix="mnt-", dir=self.tmp)
        self.settle(root)
        self.mount([self.local(root)], state=state, mnt=mnt)
        self.check_source(mnt, name, root)
        self.unmount(mnt)
        path, first = self.cache_file(state)

        # Unchanged: served from the cache, which is not rewritten.
        self.mount([self.local(root)], state=state, mnt=mnt)
        self.check_source(mnt, name, root)
        self.unmount(mnt)
        self.assertEqual(self.cache_file(state)[1], first)

        # A blob added: read again (the file is replaced) and shown.
        data = b"a blob added between two mounts\n"
        hexd = hashlib.sha256(data).hexdigest()
        with open(os.path.join(root, "blobs", "sha256", hexd), "wb") as f:
            f.write(data)
        self.settle(root)
        self.mount([self.local(root)], state=state, mnt=mnt)
        self.assertEqual(read_all(os.path.join(mnt, name, "blobs", "sha256", hexd)), data)
        self.check_source(mnt, name, root)
        self.unmount(mnt)
        _, second = self.cache_file(state)
        self.assertNotEqual(second[0], first[0], "a changed source's catalog is written anew")

        # A damaged cache file: a warning naming it, the source read again, nothing lost.
        with open(path, "r+b") as f:
            f.seek(second[2] // 2)
            byte = f.read(1)
            f.seek(second[2] // 2)
            f.write(bytes([byte[0] ^ 0xFF]))
        self.mount([self.local(root)], state=state, mnt=mnt)
        self.assertIn(path, self.log_of(mnt))
        self.check_source(mnt, name, root)
        self.unmount(mnt)
        self.assertNotEqual(self.cache_file(state)[1], second, "the damaged file is replaced")


# ---------------------------------------------------------------------------


def check_prerequisites(what, args, tools, extra_missing=(), skip_outside_ci=False):
    """The start of every mounting test module: outside CI a non-root run skips;
    otherwise every prerequisite must be there, or the module fails (in CI a
    skipped end-to-end test would hide a broken machine)."""
    root = os.geteuid() == 0
    if not root and not in_ci():
        raise unittest.SkipTest("%s need root (real FUSE mounts); run as root, as CI does" % what)
    missing = []
    if not root:
        missing.append("not running as root")
    if not os.path.exists("/dev/fuse"):
        missing.append("/dev/fuse is absent")
    for tool in ("fusermount3", "mount", "umount") + tuple(tools):
        if shutil.which(tool) is None:
            missing.append(tool + " is not on PATH (scripts/install-deps.sh)")
    for path in (args.bin, args.gen):
        if not os.access(path, os.X_OK):
            missing.append(path + " is not executable")
    missing += list(extra_missing)
    if missing:
        if skip_outside_ci and not in_ci():
            raise unittest.SkipTest("; ".join(missing))
        raise RuntimeError("%s cannot run: %s" % (what, "; ".join(missing)))


def setUpModule():
    check_prerequisites("mount tests", ARGS, ("cat",))


if __name__ == "__main__":
    e2e_cli.main()
