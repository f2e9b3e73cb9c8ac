#!/usr/bin/env python3
"""End-to-end tests of registry sources (`type=registry`): real FUSE mounts, as root, of
caches pushed byte for byte into the real distribution registry (Debian `docker-registry`)
that tests/servers/registry_harness.py starts on 127.0.0.1 in its three modes (open,
htpasswd basic auth, token auth), and through tests/servers/faultproxy.py for faults.

Every expectation is computed here from the pushed layouts' files with json and hashlib
(another route than the code under test): manifests and configs byte for byte, every blob
hashing to its name, refs and index.json descriptors from the pushed index.json entries,
request counts from the proxy. Fixtures from ../shared are copied to a temp dir first;
nothing in ../shared is written.

  1. RegistryModes: every content kind in every mode, all read back exactly.
  2. Credentials: wrong and missing credentials give a clear error naming the registry
     and the ref (ls exits 1; the mount comes up with the source folder empty and the
     error on it) and never show the password.
  3. Faults: a ~20 MiB blob read through the proxy while it resets, stalls, answers 5xx and
     429, truncates and corrupts: exact bytes or EIO with the reason, never a wrong byte.
  4. KillResume: kill -9 while a 64 MiB blob is being fetched, remount: the recorded
     parts are not fetched again.
  5. SingleFlight: 16 concurrent readers of a cold 64 MiB blob, one GET per part.
  6. LsAllTags: `ls ref=HOST/repo:* --format json` lists every tag.

Run by ctest: registry_test.py --bin BUILDCACHEFS --gen BUILDCACHEFS_GEN --shared DIR
Needs root, /dev/fuse, fusermount3, docker-registry, htpasswd and openssl. Outside CI a
non-root run skips the module; under CI any missing prerequisite is a failure.
Mounts, daemons, registries and proxies are always cleaned up (mount_test.Base's
cleanup and watchdog for mounts; registries and the proxy are stopped by PID).
"""

import base64
import errno
import gzip
import hashlib
import http.client
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import unittest
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
SERVERS = os.path.join(REPO_ROOT, "tests", "servers")
sys.path.insert(0, HERE)
sys.path.insert(0, SERVERS)

import make_multiplatform  # noqa: E402
import e2e_cli  # noqa: E402
import mount_test as mt  # noqa: E402  (Base: mounts, cleanup, watchdog; helpers)
from registry_harness import Registry  # noqa: E402

ARGS = None
FAULTPROXY = os.path.join(SERVERS, "faultproxy.py")
CACHECONFIG = "application/vnd.buildkit.cacheconfig.v0"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
REF_NAME = "org.opencontainers.image.ref.name"
X = "user.buildcachefs."
MIB = 1 << 20
PART = 8 * MIB                     # the store's fetch unit (StoreOptions.part_size)
FAULT_BLOB_SIZE = 20 * MIB + 4321  # 3 parts, the last one short
OTHER_BLOB_SIZE = 300 * 1024
BIG_BLOB_SIZE = 64 * MIB           # exactly 8 parts
PASSWORD = "Wr0ng-s3cret-pw-7781"  # never to be shown anywhere
READY_TIMEOUT = 20
CONTENT = None                     # built once by setUpModule
WORK = None


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def load_json(path):
    with open(path, "rb") as f:
        return json.load(f)


def read_layout_blob(root, digest):
    with open(os.path.join(root, "blobs", "sha256", digest.split(":")[1]), "rb") as f:
        return f.read()


def parse_range(value):
    """'bytes=a-b' -> (a, b); None when absent."""
    if not value or not value.startswith("bytes="):
        return None
    a, _, b = value[6:].partition("-")
    return int(a), int(b) if b else None


def part_ranges(size):
    return [(o, min(o + PART, size) - 1) for o in range(0, size, PART)]


def read_result(path):
    """(bytes, 0) when the whole file reads, else (None, errno)."""
    try:
        with open(path, "rb") as f:
            return f.read(), 0
    except OSError as e:
        return None, e.errno


def getx(path, name):
    try:
        return os.getxattr(path, X + name).decode()
    except OSError:
        return None


# ---------------------------------------------------------------------------
# Content: layouts built once per run (fixtures copied, caches generated, big blobs made)


def make_cache_layout(root, layer_sizes, seed, ref_name="latest"):
    """An image-manifest cache (FORMATS.md §3) whose layers hold pseudo-random bytes of
    exactly these sizes, each layer its own chain. Returns {"layers": [digests]}."""
    bdir = os.path.join(root, "blobs", "sha256")
    os.makedirs(bdir)
    rnd = random.Random(seed)

    def write(data):
        d = sha256(data)
        with open(os.path.join(bdir, d.split(":")[1]), "wb") as f:
            f.write(data)
        return d

    layers, descs, records = [], [], []
    for i, size in enumerate(layer_sizes):
        d = write(rnd.randbytes(size))
        created = "2026-01-02T03:04:%02d.123456789Z" % i
        layers.append(d)
        descs.append({"mediaType": OCI_LAYER, "digest": d, "size": size,
                      "annotations": {"buildkit/createdat": created,
                                      "containerd.io/uncompressed": d}})
        records.append({"layers": [{"layer": i, "createdAt": created}],
                        "digest": sha256(b"record %d %d" % (seed, i))})
    config = json.dumps({"layers": [{"blob": d, "parent": -1} for d in layers],
                         "records": records}, separators=(",", ":")).encode()
    cfg = write(config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": CACHECONFIG, "digest": cfg,
                                      "size": len(config)},
                           "layers": descs}, separators=(",", ":")).encode()
    md = write(manifest)
    with open(os.path.join(root, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    with open(os.path.join(root, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "mediaType": OCI_INDEX,
                   "manifests": [{"mediaType": OCI_MANIFEST, "digest": md,
                                  "size": len(manifest),
                                  "annotations": {REF_NAME: ref_name}}]}, f)
    return {"layers": layers, "manifest": md, "config": cfg}


def build_content():
    """Every layout the tests push, in WORK (a temp dir)."""
    global CONTENT, WORK
    WORK = tempfile.mkdtemp(prefix="bcfs-regtest-content-")
    c = {}
    fixtures = os.path.join(ARGS.shared, "fixtures", "buildkit")
    for name in ("registry-max", "inline"):
        dst = os.path.join(WORK, name)
        shutil.copytree(os.path.join(fixtures, name), dst, symlinks=True)
        c[name] = dst
    for shape, short, comp in (("image-manifest", "im", "gzip"), ("index", "idx", "zstd"),
                               ("manifest-list", "list", "uncompressed")):
        out = os.path.join(WORK, "gen-" + short)
        p = subprocess.run([ARGS.gen, "--out", out, "--shape", shape, "--compression", comp,
                            "--refs", "2", "--ref-names", "latest,feature/x", "--seed", "7"],
                           capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            raise RuntimeError("buildcachefs-gen failed: " + p.stderr)
        c["gen-" + short] = out
    c["multi"] = os.path.join(WORK, "multi")
    make_multiplatform.make(c["inline"], c["multi"], tag="multi")
    c["multi-oci"] = os.path.join(WORK, "multi-oci")
    make_multiplatform.make(c["inline"], c["multi-oci"], tag="multi", oci=True, attest_all=True)
    c["faults"] = os.path.join(WORK, "faults")
    c["faults-info"] = make_cache_layout(c["faults"], [FAULT_BLOB_SIZE, OTHER_BLOB_SIZE], 11)
    c["big"] = os.path.join(WORK, "big")
    c["big-info"] = make_cache_layout(c["big"], [BIG_BLOB_SIZE], 12)
    # eStargz with 64 KiB chunks: files of ~300 KB span 5 chunks.
    c["estargz"] = os.path.join(WORK, "estargz")
    p = subprocess.run([ARGS.gen, "--out", c["estargz"], "--compression", "estargz",
                        "--estargz-chunk-size", "65536", "--file-size", "300000",
                        "--files", "3", "--layers", "2", "--rich", "--seed", "9"],
                       capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise RuntimeError("buildcachefs-gen failed: " + p.stderr)
    CONTENT = c


# ---------------------------------------------------------------------------
# The fault proxy


class FaultProxy:
    """tests/servers/faultproxy.py in front of `upstream`; dies with our stdin pipe."""

    def __init__(self, upstream, workdir):
        ready = os.path.join(workdir, "faultproxy.ready")
        self.log_path = os.path.join(workdir, "faultproxy.log")
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, FAULTPROXY, "--listen", "0", "--upstream", upstream,
                 "--ready-file", ready, "--exit-with-stdin"],
                stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + READY_TIMEOUT
        while not os.path.exists(ready):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("faultproxy did not start")
            time.sleep(0.01)
        with open(ready) as f:
            self.port = int(f.read())
        self.host = "127.0.0.1:%d" % self.port

    def _call(self, method, path, doc=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            body = None if doc is None else json.dumps(doc).encode()
            conn.request(method, path, body=body,
                         headers={"Content-Type": "application/json"} if body else {})
            r = conn.getresponse()
            data = r.read()
            if r.status != 200:
                raise RuntimeError("faultproxy %s %s: %d %s" % (method, path, r.status, data))
            return json.loads(data)
        finally:
            conn.close()

    def faults(self, rules):
        return self._call("POST", "/__proxy__/faults", rules)

    def counts(self):
        return self._call("GET", "/__proxy__/counts")

    def reset(self):
        return self._call("POST", "/__proxy__/reset")

    def blob_gets(self, digest):
        """Requests (in arrival order) for this blob's GETs."""
        return [r for r in self.counts()["requests"]
                if r["method"] == "GET" and "/blobs/" + digest in r["path"]]

    def stop(self):
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None


# ---------------------------------------------------------------------------


class Base(mt.Base):
    """mount_test.Base (temp dir, unmount in cleanups, watchdog) plus an environment
    (DOCKER_CONFIG) for the mount command and its daemon."""

    def docker_config(self, reg=None, creds=None):
        d = tempfile.mkdtemp(prefix="docker-", dir=self.tmp)
        if reg is None:
            with open(os.path.join(d, "config.json"), "w") as f:
                f.write("{}")  # no credentials at all
            return d
        return reg.docker_config(d, creds)

    def env(self, docker_config):
        e = dict(os.environ)
        e["DOCKER_CONFIG"] = docker_config
        return e

    def mount_env(self, sources, env, state=None, mnt=None):
        return self.mount(sources, state=state, mnt=mnt, env=env)

    def ls(self, source, env, *extra):
        return subprocess.run([ARGS.bin, "ls", source] + list(extra), capture_output=True,
                              text=True, timeout=120, env=env)


# ---------------------------------------------------------------------------
# 1. Every content kind in every mode


class ExpRef:
    def __init__(self, name, digest, media_type, size, root):
        self.name, self.digest, self.media_type, self.size = name, digest, media_type, size
        self.manifest_bytes = read_layout_blob(root, digest)
        info = mt.cache_manifest_info(root, digest)
        if info is None:
            raise AssertionError("%s: %s is not a cache manifest" % (root, digest))
        self.shape, self.config_desc, self.layer_descs = info
        self.config_bytes = read_layout_blob(root, self.config_desc["digest"])
        self.reached = {digest: size, self.config_desc["digest"]: self.config_desc["size"]}
        for d in self.layer_descs:
            self.reached[d["digest"]] = d["size"]
        self.inline_records = None
        if self.shape == "inline":
            image = json.loads(self.config_bytes)
            self.inline_records = base64.b64decode(image["moby.buildkit.cache.v0"])
        else:
            for l in json.loads(self.config_bytes).get("layers") or []:
                self.reached.setdefault(l["blob"], os.path.getsize(
                    os.path.join(root, "blobs", "sha256", l["blob"].split(":")[1])))


def refs_for_tag(root, tag, pushed_digest):
    """The refs the mount must show for `tag`: the tag itself, or for a multi-platform image
    index (no cache config among its manifests) one ref per platform image,
    `<tag>@<os>-<arch>[-<variant>]`, attestation manifests skipped."""
    doc = json.loads(read_layout_blob(root, pushed_digest))
    entries = doc.get("manifests")
    if entries is not None and not any(m.get("mediaType") == CACHECONFIG for m in entries):
        out = []
        for m in entries:
            ann = m.get("annotations") or {}
            if ann.get("vnd.docker.reference.type") == "attestation-manifest":
                continue
            p = m["platform"]
            name = "%s@%s-%s" % (tag, p["os"], p["architecture"]) + \
                ("-" + p["variant"] if p.get("variant") else "")
            out.append(ExpRef(name, m["digest"], m["mediaType"], m["size"], root))
        return out
    index = load_json(os.path.join(root, "index.json"))
    mtype = next(e["mediaType"] for e in index["manifests"] if e["digest"] == pushed_digest)
    return [ExpRef(tag, pushed_digest, mtype, os.path.getsize(
        os.path.join(root, "blobs", "sha256", pushed_digest.split(":")[1])), root)]


class RegistryModes(Base):
    """Push every content kind, mount it with the credentials of DOCKER_CONFIG, read it all."""

    def push_all(self, reg):
        """Pushes the content; returns [(source string, folder, [ExpRef], root)]."""
        c = CONTENT
        h = reg.host
        out = []
        for key, repo, tag, folder in (("registry-max", "cache", "main", "main"),
                                       ("inline", "cache", "inline", "inline")):
            tags = reg.push_layout(c[key], repo, tag=tag)["tags"]
            out.append(("type=registry,ref=%s/%s:%s,as=%s" % (h, repo, tag, folder), folder,
                        refs_for_tag(c[key], tag, tags[tag]), c[key]))
        # Every generated shape into one repository, two tags each: mounted with `gen:*`.
        gen_refs, gen_roots = [], []
        for short in ("im", "idx", "list"):
            root = c["gen-" + short]
            tags = reg.push_layout(root, "gen", tag={"latest": "gen-" + short,
                                                     "feature/x": "gen-%s-x" % short})["tags"]
            self.assertEqual(sorted(tags), ["gen-" + short, "gen-%s-x" % short])
            for t, d in tags.items():
                gen_refs += refs_for_tag(root, t, d)
            gen_roots.append(root)
        out.append(("type=registry,ref=%s/gen:*,as=gen" % h, "gen", gen_refs, gen_roots))
        for key in ("multi", "multi-oci"):
            tags = reg.push_layout(c[key], key, tag="multi")["tags"]
            refs = refs_for_tag(c[key], "multi", tags["multi"])
            self.assertEqual(sorted(r.name for r in refs),
                             ["multi@linux-amd64", "multi@linux-arm64-v8"],
                             "the test's own reading of the multi-platform index")
            out.append(("type=registry,ref=%s/%s:multi,as=%s" % (h, key, key), key, refs,
                        c[key]))
        return out

    def check_mode(self, mode):
        reg = Registry(mode)
        reg.start()
        self.addCleanup(reg.stop)
        plan = self.push_all(reg)
        env = self.env(self.docker_config(None if mode == "open" else reg))
        mnt = self.mount_env([p[0] for p in plan], env)
        self.assertEqual(sorted(os.listdir(mnt)), sorted([p[1] for p in plan] +
                                                         [".buildcachefs"]))
        # Before anything is read (the content store is shared by the sources of a mount,
        # which share layers): the biggest layer of each source has nothing local yet.
        for source, folder, refs, _ in plan:
            layers = {d: s for r in refs for d, s in r.reached.items()
                      if d not in (r.digest, r.config_desc["digest"])}
            big = max(layers, key=lambda d: (layers[d], d))
            bpath = os.path.join(mnt, folder, "blobs", "sha256", big.split(":")[1])
            with self.subTest(mode=mode, source=folder, check="unread blob"):
                self.assertEqual(os.stat(bpath).st_size, layers[big])
                self.assertEqual(getx(bpath, "cached"), "0", "cached of an unread blob")
        for source, folder, refs, _ in plan:
            with self.subTest(mode=mode, source=folder):
                self.check_source(mnt, folder, refs, source)
        log = self.log_of(mnt)
        self.assertNotIn(reg.creds[1], log, "the password appears in the daemon's log")

    def check_source(self, mnt, folder, refs, source):
        src = os.path.join(mnt, folder)
        self.assertIsNone(getx(src, "error"), "error on the source folder")
        self.assertEqual(getx(src, "source"), source)
        refs = sorted(refs, key=lambda r: r.name.encode())

        # refs/: exactly the expected names.
        self.assertEqual(sorted(os.listdir(os.path.join(src, "refs"))),
                         sorted(mt.encode_ref(r.name) for r in refs))

        # index.json: one descriptor per ref, sorted by name, digests of the pushed manifests.
        index = json.loads(mt.read_all(os.path.join(src, "index.json")))
        self.assertEqual(index["schemaVersion"], 2)
        self.assertEqual(index["mediaType"], OCI_INDEX)
        self.assertEqual(index["manifests"],
                         [{"mediaType": r.media_type, "digest": r.digest, "size": r.size,
                           "annotations": {REF_NAME: r.name}} for r in refs])

        expected = {}  # digest -> size of every blob the source must list
        for r in refs:
            expected.update(r.reached)
        bdir = os.path.join(src, "blobs", "sha256")

        for r in refs:
            base = os.path.join(src, "refs", mt.encode_ref(r.name))
            with self.subTest(ref=r.name):
                self.assertEqual(mt.read_all(os.path.join(base, "manifest.json")),
                                 r.manifest_bytes)
                self.assertEqual(getx(base, "digest"), r.digest)
                self.assertEqual(getx(base, "ref"), r.name)
                cfg_path = os.path.join(base, "cache-config.json")
                data = mt.read_all(cfg_path)
                if r.shape != "inline":
                    self.assertEqual(data, r.config_bytes)
                    self.assertEqual(getx(cfg_path, "digest"), r.config_desc["digest"])
                    continue
                # Inline: synthesized; its layers are the image layers, in order.
                doc = json.loads(data)
                self.assertEqual([l["blob"] for l in doc["layers"]],
                                 [d["digest"] for d in r.layer_descs])
                self.assertEqual([l.get("parent", 0) for l in doc["layers"]],
                                 list(range(-1, len(r.layer_descs) - 1)))
                self.assertEqual(len(doc.get("records") or []),
                                 len(json.loads(r.inline_records)))
                self.assertEqual(getx(cfg_path, "synthesized"), "1")
                digest = getx(cfg_path, "digest")
                self.assertEqual(digest, sha256(data))
                expected[digest] = len(data)
                self.assertEqual(mt.read_all(os.path.join(base, "inline-records.json")),
                                 r.inline_records)

        # blobs/sha256: exactly what the refs reach, every one byte-exact.
        listed = sorted(os.listdir(bdir))
        self.assertEqual(listed, sorted(d.split(":")[1] for d in expected))
        bad = []
        for h in listed:
            p = os.path.join(bdir, h)
            data, err = read_result(p)
            if err:
                bad.append("%s: %s (%s)" % (h, os.strerror(err), getx(p, "error")))
                continue
            if sha256(data) != "sha256:" + h:
                bad.append("%s: bytes hash to %s" % (h, sha256(data)))
            if len(data) != expected["sha256:" + h] or os.stat(p).st_size != len(data):
                bad.append("%s: %d bytes, want %d" % (h, len(data), expected["sha256:" + h]))
            if getx(p, "cached") != str(len(data)):
                bad.append("%s: cached %s after a read of %d bytes"
                           % (h, getx(p, "cached"), len(data)))
            if getx(p, "error") is not None:
                bad.append("%s: error after a good read: %s" % (h, getx(p, "error")))
        self.assertEqual(bad, [])

    def test_open_registry_every_blob_byte_exact(self):
        self.check_mode("open")

    def test_basic_auth_registry_every_blob_byte_exact(self):
        self.check_mode("basic")

    def test_token_auth_registry_every_blob_byte_exact(self):
        self.check_mode("token")


# ---------------------------------------------------------------------------
# 2. Wrong and missing credentials


class Credentials(Base):
    regs = {}

    @classmethod
    def setUpClass(cls):
        cls.regs = {}
        for mode in ("basic", "token"):
            reg = Registry(mode)
            cls.addClassCleanup(reg.stop)
            reg.start()
            reg.push_layout(CONTENT["registry-max"], "cache", tag="main")
            cls.regs[mode] = reg

    def check_refused(self, mode, creds):
        reg = self.regs[mode]
        if creds is None:
            dc = self.docker_config(None)
            secrets = [reg.creds[1]]
        else:
            dc = self.docker_config(reg, creds)
            secrets = [creds[1], base64.b64encode(("%s:%s" % creds).encode()).decode()]
        env = self.env(dc)
        source = "type=registry,ref=%s/cache:main" % reg.host
        ref_text = "cache:main"

        def check_message(text, what):
            self.assertIn(reg.host, text, "%s does not name the registry" % what)
            self.assertIn(ref_text, text, "%s does not name the ref" % what)
            for s in secrets:
                self.assertNotIn(s, text, "%s shows the password" % what)

        for fmt in ("table", "json"):
            with self.subTest(command="ls", format=fmt):
                p = self.ls(source, env, "--format", fmt)
                self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
                check_message(p.stdout + p.stderr, "ls output")
                if fmt == "json":
                    doc = json.loads(p.stdout)
                    self.assertEqual(doc["refs"], [])
                    self.assertTrue(doc["errors"])
                    check_message(" ".join(doc["errors"]), "ls errors")

        with self.subTest(command="mount"):
            # What the product does: the mount comes up (other sources would be served), the
            # refusal is printed as a warning, and the source folder is empty with
            # user.buildcachefs.error saying why.
            mnt = self.mount_env([source], env)
            src = os.path.join(mnt, "cache")
            err = getx(src, "error")
            self.assertIsNotNone(err, "no user.buildcachefs.error on the source folder")
            check_message(err, "the source folder's error")
            self.assertEqual(os.listdir(os.path.join(src, "refs")), [])
            self.assertEqual(os.listdir(os.path.join(src, "blobs", "sha256")), [])
            self.assertEqual(json.loads(mt.read_all(os.path.join(src, "index.json")))
                             ["manifests"], [])
            status = mt.read_all(os.path.join(mnt, ".buildcachefs", "status.json")).decode()
            for s in secrets:
                self.assertNotIn(s, status, "status.json shows the password")
            check_message(self.log_of(mnt), "the mount's output")
            return err

    def test_identity_token_is_exchanged_for_access_and_a_wrong_one_is_refused(self):
        reg = Registry("token", refresh_tokens={"rt-good-secret": "testuser"})
        self.addCleanup(reg.stop)
        reg.start()
        reg.push_layout(CONTENT["registry-max"], "cache", tag="main")
        source = "type=registry,ref=%s/cache:main" % reg.host
        for token, want_rc in (("rt-good-secret", 0), ("rt-bad-secret", 1)):
            d = tempfile.mkdtemp(prefix="dc-", dir=self.tmp)
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump({"auths": {reg.host: {"identitytoken": token}}}, f)
            p = self.ls(source, self.env(d), "--format", "json")
            self.assertEqual(p.returncode, want_rc, p.stdout + p.stderr)
            self.assertNotIn(token, p.stdout + p.stderr)
            doc = json.loads(p.stdout)
            if want_rc == 0:
                self.assertEqual([r["name"] for r in doc["refs"]], ["main"])
                self.assertEqual(doc["refs"][0]["record_count"], 13)
            else:
                self.assertEqual(doc["refs"], [])
                self.assertIn("the token server refused the configured credentials",
                              " ".join(doc["errors"]))
                self.assertIn(reg.host, " ".join(doc["errors"]))

    def test_basic_wrong_credentials(self):
        err = self.check_refused("basic", ("testuser", PASSWORD))
        self.assertIn("refused the configured credentials", err)

    def test_token_wrong_credentials(self):
        err = self.check_refused("token", ("testuser", PASSWORD))
        self.assertIn("refused the configured credentials", err)

    def test_basic_missing_credentials(self):
        err = self.check_refused("basic", None)
        self.assertIn("none are configured", err)

    def test_token_missing_credentials(self):
        err = self.check_refused("token", None)
        self.assertIn("anonymous access", err)


# ---------------------------------------------------------------------------
# 3-5. Through the fault proxy


class ProxyBase(Base):
    reg = proxy = None

    @classmethod
    def setUpClass(cls):
        cls.workdir = tempfile.mkdtemp(prefix="bcfs-regtest-proxy-")
        cls.addClassCleanup(shutil.rmtree, cls.workdir, True)
        cls.reg = Registry("open")
        cls.addClassCleanup(cls.reg.stop)
        cls.reg.start()
        cls.reg.push_layout(CONTENT["faults"], "faults", tag="t")
        cls.reg.push_layout(CONTENT["big"], "big", tag="t")
        cls.proxy = FaultProxy(cls.reg.url, cls.workdir)
        cls.addClassCleanup(cls.proxy.stop)

    def setUp(self):
        super().setUp()
        self.proxy.reset()
        self.env_open = self.env(self.docker_config(None))

    def mount_repo(self, repo, state=None, mnt=None):
        source = "type=registry,ref=%s/%s:t,as=%s" % (self.proxy.host, repo, repo)
        mnt = self.mount_env([source], self.env_open, state=state, mnt=mnt)
        return mnt, os.path.join(mnt, repo)

    def blob(self, src, digest):
        return os.path.join(src, "blobs", "sha256", digest.split(":")[1])

    def expect_one_get_per_part(self, gets, size, what):
        got = sorted(parse_range(r["range"]) for r in gets)
        self.assertEqual(got, part_ranges(size), "%s: GETs of the blob %s" % (what, gets))
        self.assertTrue(all(r["status"] == 206 for r in gets), gets)


class Faults(ProxyBase):
    """A ~20 MiB blob (3 parts) read through faults; exact bytes or EIO, never wrong."""

    def setUp(self):
        super().setUp()
        info = CONTENT["faults-info"]
        self.victim, self.other = info["layers"]
        self.victim_bytes = read_layout_blob(CONTENT["faults"], self.victim)
        self.mnt, self.src = self.mount_repo("faults")
        self.path = self.blob(self.src, self.victim)
        self.assertEqual(getx(self.path, "cached"), "0")

    def inject(self, *rules):
        match = "/blobs/" + self.victim
        self.proxy.faults([dict(r, match=match, method="GET") for r in rules])

    def read_victim(self):
        t0 = time.monotonic()
        data, err = read_result(self.path)
        elapsed = time.monotonic() - t0
        if err == 0:
            # Never a wrong byte.
            self.assertEqual(len(data), FAULT_BLOB_SIZE)
            self.assertTrue(data == self.victim_bytes, "the mount served wrong bytes")
        return err, elapsed

    def assert_served_exactly(self, err):
        self.assertEqual(err, 0, "read failed with %s; user.buildcachefs.error: %s\nlog:\n%s"
                         % (os.strerror(err) if err else "", getx(self.path, "error"),
                            self.log_of(self.mnt)[-4000:]))
        self.assertEqual(getx(self.path, "cached"), str(FAULT_BLOB_SIZE))
        self.assertIsNone(getx(self.path, "error"))

    def assert_others_fine(self):
        data, err = read_result(self.blob(self.src, self.other))
        self.assertEqual(err, 0, "another blob of the mount failed: %s"
                         % getx(self.blob(self.src, self.other), "error"))
        self.assertEqual(data, read_layout_blob(CONTENT["faults"], self.other))
        ref = os.path.join(self.src, "refs", "t")
        self.assertEqual(mt.read_all(os.path.join(ref, "manifest.json")),
                         read_layout_blob(CONTENT["faults"], CONTENT["faults-info"]["manifest"]))
        self.assertEqual(mt.read_all(os.path.join(ref, "cache-config.json")),
                         read_layout_blob(CONTENT["faults"], CONTENT["faults-info"]["config"]))

    def test_connection_reset_mid_part_is_resumed(self):
        n = 1000000
        self.inject({"action": "reset_after", "bytes": n})
        err, _ = self.read_victim()
        self.assert_served_exactly(err)
        self.assert_others_fine()
        gets = self.proxy.blob_gets(self.victim)
        ranges = [parse_range(r["range"]) for r in gets]
        cut = [r for r in gets if r["sent"] == n]
        self.assertEqual(len(cut), 1, gets)
        a, b = parse_range(cut[0]["range"])
        # The client resumes with a Range from the next byte it lacks, same part end.
        resumed = [(x, y) for x, y in ranges if a < x <= a + n and y == b]
        self.assertEqual(len(resumed), 1, "no resume of %s after the reset: %s" % ((a, b), gets))
        self.assertEqual(len(gets), len(part_ranges(FAULT_BLOB_SIZE)) + 1, gets)

    def test_short_stall_only_delays(self):
        self.inject({"action": "stall", "bytes": 500000, "seconds": 2})
        err, elapsed = self.read_victim()
        self.assert_served_exactly(err)
        self.assertGreaterEqual(elapsed, 1.9, "the stall did not delay the read")
        self.assert_others_fine()
        self.expect_one_get_per_part(self.proxy.blob_gets(self.victim), FAULT_BLOB_SIZE,
                                     "a 2 s stall is not a timeout")

    def test_burst_of_503_then_429_with_retry_after(self):
        self.inject({"action": "status", "status": 503, "times": 3},
                    {"action": "status", "status": 429, "retry_after": 1, "times": 1})
        err, elapsed = self.read_victim()
        self.assert_served_exactly(err)
        self.assertGreaterEqual(elapsed, 1.0, "Retry-After: 1 was not honoured")
        self.assert_others_fine()
        gets = self.proxy.blob_gets(self.victim)
        self.assertEqual(sorted(r["status"] for r in gets if r["status"] != 206),
                         [429, 503, 503, 503], gets)
        ok = [r for r in gets if r["status"] == 206]
        self.expect_one_get_per_part(ok, FAULT_BLOB_SIZE, "successful")

    def test_truncated_body_is_resumed(self):
        n = 3000000
        self.inject({"action": "truncate", "bytes": n})
        err, _ = self.read_victim()
        self.assert_served_exactly(err)
        self.assert_others_fine()
        gets = self.proxy.blob_gets(self.victim)
        cut = [r for r in gets if r["sent"] == n]
        self.assertEqual(len(cut), 1, gets)
        a, b = parse_range(cut[0]["range"])
        self.assertIn((a + n, b), [parse_range(r["range"]) for r in gets],
                      "no resume from byte %d: %s" % (a + n, gets))

    def test_corrupt_byte_is_discarded_and_fetched_once_more(self):
        # A flipped byte passes every HTTP check: only the whole-blob sha256 sees it. The
        # store discards the blob and fetches it once more; that pass is clean (times: 1).
        self.inject({"action": "corrupt", "bytes": 12345})
        err, _ = self.read_victim()
        self.assert_served_exactly(err)
        self.assert_others_fine()
        gets = self.proxy.blob_gets(self.victim)
        self.assertEqual(sorted(parse_range(r["range"]) for r in gets),
                         sorted(part_ranges(FAULT_BLOB_SIZE) * 2),
                         "want every part fetched exactly twice: %s" % gets)

    def test_ignored_range_is_cut_to_the_asked_bytes(self):
        # A server answering 200 with the whole blob to a ranged GET.
        self.inject({"action": "ignore_range", "times": 2})
        err, _ = self.read_victim()
        self.assert_served_exactly(err)
        self.assert_others_fine()

    def test_permanent_corruption_gives_eio_and_never_a_wrong_byte(self):
        # Every pass is corrupt: after the second whole-blob mismatch the store gives up.
        self.inject({"action": "corrupt", "bytes": 4242, "times": 1000})
        err, _ = self.read_victim()
        self.assertEqual(err, errno.EIO, "want EIO when the bytes never match the digest")
        why = getx(self.path, "error")
        self.assertIsNotNone(why, "no user.buildcachefs.error after the EIO")
        self.assertIn(self.victim, why)
        self.assertNotEqual(getx(self.path, "cached"), str(FAULT_BLOB_SIZE))
        self.assert_others_fine()
        gets = self.proxy.blob_gets(self.victim)
        self.assertEqual(sorted(parse_range(r["range"]) for r in gets),
                         sorted(part_ranges(FAULT_BLOB_SIZE) * 2),
                         "want two whole passes, then EIO: %s" % gets)

    def test_permanent_500_gives_eio_naming_the_blob(self):
        self.inject({"action": "status", "status": 500, "times": 1000})
        err, elapsed = self.read_victim()
        self.assertEqual(err, errno.EIO, "want EIO once the retry budget is spent")
        why = getx(self.path, "error")
        self.assertIsNotNone(why, "no user.buildcachefs.error after the EIO")
        self.assertIn(self.victim, why)
        self.assertIn("500", why)
        self.assertNotEqual(getx(self.path, "cached"), str(FAULT_BLOB_SIZE))
        self.assert_others_fine()
        gets = self.proxy.blob_gets(self.victim)
        self.assertGreaterEqual(len(gets), 5, "retried fewer than 5 times: %s" % gets)
        self.assertEqual({r["status"] for r in gets}, {500})
        # The registry recovers: the next read fetches again and succeeds.
        self.proxy.reset()
        err, _ = self.read_victim()
        self.assert_served_exactly(err)


class KillResume(ProxyBase):
    def test_kill_9_during_a_large_fetch_then_remount_does_not_refetch_recorded_parts(self):
        info = CONTENT["big-info"]
        digest = info["layers"][0]
        want = read_layout_blob(CONTENT["big"], digest)
        state = tempfile.mkdtemp(prefix="state-", dir=self.tmp)
        mnt, src = self.mount_repo("big", state=state)
        path = self.blob(src, digest)
        match = "/blobs/" + digest
        # The first 4 GETs of the blob go through (a 0 s stall is no fault); every later one
        # stalls far longer than the test waits (faultproxy matches on the target, not on
        # Range: counting with `times` picks the requests).
        self.proxy.faults([
            {"match": match, "method": "GET", "action": "stall", "bytes": 0, "seconds": 0,
             "times": 4},
            {"match": match, "method": "GET", "action": "stall", "bytes": 0, "seconds": 120,
             "times": 1000}])
        outcome = {}
        reader = threading.Thread(target=lambda: outcome.update(r=read_result(path)),
                                  daemon=True)
        reader.start()
        ranges_file = os.path.join(state, "store", "partial", "sha256",
                                   digest.split(":")[1] + ".ranges")
        deadline = time.monotonic() + 60
        cached = None
        while time.monotonic() < deadline:
            cached = getx(path, "cached")
            if cached == str(4 * PART):
                break
            if "r" in outcome:
                self.fail("the read ended (errno %s) before 4 parts were recorded; proxy: %s"
                          % (outcome["r"][1], self.proxy.blob_gets(digest)))
            time.sleep(0.05)
        self.assertEqual(cached, str(4 * PART), "4 parts never recorded; proxy: %s"
                         % self.proxy.blob_gets(digest))
        # Which parts were recorded (fsynced): content_store.h's record format.
        with open(ranges_file) as f:
            lines = f.read().splitlines()
        self.assertTrue(lines[0].startswith("bcfs-ranges 1 " + digest), lines[:1])
        recorded = sorted(int(l.split()[0]) for l in lines[1:])
        self.assertEqual(len(recorded), 4, lines)
        first = self.proxy.blob_gets(digest)
        done = sorted(parse_range(r["range"])[0] // PART for r in first
                      if r["sent"] == PART)
        self.assertEqual(recorded, done, "recorded parts vs complete responses: %s" % first)

        pids = mt.daemon_pids(mnt)
        self.assertEqual(len(pids), 1, pids)
        os.kill(pids[0], signal.SIGKILL)
        reader.join(30)
        self.assertFalse(reader.is_alive(), "the reader still hangs after kill -9")
        self.assertNotEqual(outcome["r"][1], 0, "the read succeeded without the stalled parts")
        subprocess.run(["fusermount3", "-u", "-z", mnt], capture_output=True, timeout=60)
        deadline = time.monotonic() + mt.EXIT_TIMEOUT
        while mt.process_alive(pids[0]) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertFalse(mt.process_alive(pids[0]))
        self.assertFalse(mt.is_mounted(mnt))

        self.proxy.reset()
        mnt, src = self.mount_repo("big", state=state, mnt=mnt)
        path = self.blob(src, digest)
        self.assertEqual(getx(path, "cached"), str(4 * PART), "recorded parts after remount")
        data, err = read_result(path)
        self.assertEqual(err, 0, "read after remount: %s" % getx(path, "error"))
        self.assertTrue(data == want, "wrong bytes after resume")
        gets = self.proxy.blob_gets(digest)
        refetched = sorted(parse_range(r["range"]) for r in gets)
        missing = [p for i, p in enumerate(part_ranges(BIG_BLOB_SIZE)) if i not in recorded]
        self.assertEqual(refetched, missing,
                         "after remount only the unrecorded parts may be fetched (recorded: %s)"
                         % recorded)
        self.assertEqual(getx(path, "cached"), str(BIG_BLOB_SIZE))
        self.assertFalse(os.path.exists(ranges_file), "partial record left after promotion")


class SingleFlight(ProxyBase):
    def test_16_concurrent_readers_of_a_cold_blob_fetch_each_part_once(self):
        digest = CONTENT["big-info"]["layers"][0]
        want = read_layout_blob(CONTENT["big"], digest)
        mnt, src = self.mount_repo("big")
        path = self.blob(src, digest)
        self.assertEqual(getx(path, "cached"), "0")
        barrier = threading.Barrier(16)
        results = [None] * 16

        def read(i):
            barrier.wait(30)
            data, err = read_result(path)
            results[i] = (err, data == want if data is not None else False)

        threads = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(240)
        self.assertFalse(any(t.is_alive() for t in threads), "readers still running")
        self.assertEqual(results, [(0, True)] * 16)
        self.expect_one_get_per_part(self.proxy.blob_gets(digest), BIG_BLOB_SIZE,
                                     "16 readers, one fetch")


def estargz_layout(blob):
    """(TOC offset, TOC entries) of an eStargz blob, read here with gzip/tarfile/json."""
    footer = blob[-51:]
    # The footer's FEXTRA subfield 'SG': 16 hex digits of the TOC offset, then STARGZ.
    extra = footer[16:16 + 22]
    assert extra.endswith(b"STARGZ"), footer
    toc_off = int(extra[:16], 16)
    member = zlib.decompressobj(16 + 15).decompress(blob[toc_off:len(blob) - 51])
    tf = tarfile.open(fileobj=io.BytesIO(member))
    m = tf.next()
    assert m.name == "stargz.index.json", m.name
    return toc_off, json.loads(tf.extractfile(m).read())["entries"]


def estargz_member_ranges(toc_off, entries, name):
    """The (first, last) byte ranges of the gzip members holding the chunks of `name`."""
    offsets = sorted({e["offset"] for e in entries if e.get("offset")} | {toc_off})
    ranges = []
    current = None
    for e in entries:
        if e["type"] == "reg":
            current = e["name"]
        if e["type"] in ("reg", "chunk") and current == name and e.get("offset"):
            nxt = offsets[offsets.index(e["offset"]) + 1]
            ranges.append((e["offset"], nxt - 1))
    return ranges


class EstargzChunks(ProxyBase):
    """A registry eStargz layer (TOC digest pinned by the descriptor) is listed from its TOC
    and read chunk by chunk: the proxy sees the footer, the TOC and the file's chunks."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.reg.push_layout(CONTENT["estargz"], "sgz", tag="t")
        root = CONTENT["estargz"]
        index = load_json(os.path.join(root, "index.json"))
        manifest = json.loads(read_layout_blob(root, index["manifests"][0]["digest"]))
        desc = manifest["layers"][-1]
        assert "containerd.io/snapshot/stargz/toc.digest" in desc["annotations"], desc
        cls.digest = desc["digest"]
        cls.blob_bytes = read_layout_blob(root, cls.digest)
        cls.toc_off, cls.entries = estargz_layout(cls.blob_bytes)
        raw = gzip.decompress(cls.blob_bytes)  # every member, the footer's empty one too
        tf = tarfile.open(fileobj=io.BytesIO(raw))
        cls.files = {m.name.lstrip("./"): tf.extractfile(m).read() for m in tf if m.isreg()}
        names = {m.name.lstrip("./").rstrip("/") for m in tf} - {""}
        # With the directories the tar implies without listing them.
        cls.names = {"/".join(n.split("/")[:i]) for n in names
                     for i in range(1, n.count("/") + 2)}
        # A file of several chunks.
        cls.victim = next(n for n in sorted(cls.files)
                          if len(estargz_member_ranges(cls.toc_off, cls.entries, n)) >= 4)

    def layer_folder(self):
        mnt, src = self.mount_repo("sgz")
        self.proxy.reset()
        return mnt, os.path.join(src, "layers", "sha256", self.digest.split(":")[1])

    def test_listing_and_a_file_read_fetch_only_the_toc_and_that_files_chunks(self):
        mnt, top = self.layer_folder()
        listed = set()
        for dirpath, dirnames, filenames in os.walk(top):
            for n in dirnames + filenames:
                listed.add(os.path.relpath(os.path.join(dirpath, n), top))
        self.assertEqual(listed, self.names)
        size = len(self.blob_bytes)
        toc_gets = sorted(parse_range(r["range"]) for r in self.proxy.blob_gets(self.digest))
        self.assertEqual(toc_gets, sorted([(size - 51, size - 1), (self.toc_off, size - 1)]))
        self.proxy.reset()
        self.assertEqual(mt.read_all(os.path.join(top, self.victim)), self.files[self.victim])
        gets = self.proxy.blob_gets(self.digest)
        self.assertEqual(sorted(parse_range(r["range"]) for r in gets),
                         estargz_member_ranges(self.toc_off, self.entries, self.victim))
        self.assertTrue(all(r["status"] == 206 for r in gets), gets)
        # Nothing went into the store: the raw blob is still uncached.
        self.assertEqual(getx(os.path.join(mnt, "sgz", "blobs", "sha256",
                                           self.digest.split(":")[1]), "cached"), "0")
        with open(os.path.join(mnt, ".buildcachefs", "status.json")) as f:
            layers = json.load(f)["layers"]
        self.assertEqual(layers["listed_from_estargz_toc"], 1)
        self.assertEqual(layers["indexing_passes"], 0)

    def test_a_corrupt_chunk_is_fetched_once_more_then_eio_never_wrong_bytes(self):
        mnt, top = self.layer_folder()
        os.listdir(top)
        self.proxy.reset()
        ranges = estargz_member_ranges(self.toc_off, self.entries, self.victim)
        match = "/blobs/" + self.digest
        # Once: the chunk is fetched again and the file reads exactly.
        self.proxy.faults([{"match": match, "method": "GET", "action": "corrupt", "bytes": 40}])
        self.assertEqual(mt.read_all(os.path.join(top, self.victim)), self.files[self.victim])
        got = sorted(parse_range(r["range"]) for r in self.proxy.blob_gets(self.digest))
        self.assertEqual(len(got), len(ranges) + 1, got)
        self.assertEqual(sorted(set(got)), ranges)
        # Every time: EIO (the kernel may ask again; every answer is corrupt), and once
        # the server is sound again the other files are served.
        other = next(n for n in sorted(self.files)
                     if n != self.victim and len(self.files[n]) > 0)
        self.proxy.reset()
        victim2 = next(n for n in sorted(self.files) if n not in (self.victim, other)
                       and len(estargz_member_ranges(self.toc_off, self.entries, n)) >= 2)
        self.proxy.faults([{"match": match, "method": "GET", "action": "corrupt", "bytes": 40,
                            "times": 1000}])
        data, err = read_result(os.path.join(top, victim2))
        self.assertEqual(err, errno.EIO, "a corrupt chunk read without error (%s bytes): %s"
                         % (len(data) if data is not None else None,
                            self.proxy.blob_gets(self.digest)))
        self.proxy.reset()
        self.assertEqual(mt.read_all(os.path.join(top, other)), self.files[other])
        self.assertEqual(mt.read_all(os.path.join(top, victim2)), self.files[victim2])


# ---------------------------------------------------------------------------
# 6. ls of every tag


class LsAllTags(Base):
    def test_ls_repo_star_json_lists_every_tag(self):
        reg = Registry("basic")
        reg.start()
        self.addCleanup(reg.stop)
        want = {}
        for short in ("im", "idx", "list"):
            tags = reg.push_layout(CONTENT["gen-" + short], "gen",
                                   tag={"latest": "gen-" + short,
                                        "feature/x": "gen-%s-x" % short})["tags"]
            want.update(tags)
        want.update(reg.push_layout(CONTENT["registry-max"], "gen", tag="main")["tags"])
        self.assertEqual(sorted(reg.tags("gen")), sorted(want))
        env = self.env(self.docker_config(reg))
        p = self.ls("type=registry,ref=%s/gen:*" % reg.host, env, "--format", "json")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        doc = json.loads(p.stdout)
        self.assertEqual(doc["errors"], [])
        self.assertEqual(sorted(r["name"] for r in doc["refs"]), sorted(want))
        self.assertEqual({r["name"]: r["digest"] for r in doc["refs"]}, want)
        shapes = {r["name"]: r["shape"] for r in doc["refs"]}
        self.assertEqual(shapes, {"gen-im": "image-manifest", "gen-im-x": "image-manifest",
                                  "gen-idx": "index", "gen-idx-x": "index",
                                  "gen-list": "manifest-list", "gen-list-x": "manifest-list",
                                  "main": "index"})


# ---------------------------------------------------------------------------


def setUpModule():
    fixtures = os.path.join(ARGS.shared, "fixtures", "buildkit")
    absent = ["fixture %s is absent (--shared %s)" % (name, ARGS.shared)
              for name in ("registry-max", "inline")
              if not os.path.isdir(os.path.join(fixtures, name))]
    mt.check_prerequisites("registry tests", ARGS,
                           ("docker-registry", "htpasswd", "openssl", "env"),
                           extra_missing=absent, skip_outside_ci=True)
    mt.ARGS = ARGS  # mount_test's helpers read their own module's ARGS
    build_content()


def tearDownModule():
    if WORK:
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    e2e_cli.main()
