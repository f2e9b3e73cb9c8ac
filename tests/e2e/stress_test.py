#!/usr/bin/env python3
"""Stress (issue 10): many concurrent readers over four sources of four types in one real
FUSE mount while the local store's GC evicts all the time and fault proxies in front of
the three servers reset, stall, truncate, corrupt and refuse responses.

  - local:    a generated OCI-layout cache on disk (no faults: its reads must never fail)
  - registry: the real docker-registry (basic auth) behind tests/servers/faultproxy.py
  - s3:       moto (SigV4 checked) behind a fault proxy
  - azblob:   Azurite (Shared Key) behind a fault proxy

READERS threads (default 64) read for SECONDS (default 60; BCFS_STRESS_SECONDS and
BCFS_STRESS_READERS change them, bench/run runs longer) whole blobs, random ranges of
blobs and files inside layer folders, and compare every byte with what was uploaded
(every blob hashes to its name; every range equals the slice of the uploaded bytes).
A read may fail (EIO once the retry budget is spent on a fault, ENOSPC while open files
pin more than the GC ceiling), but it may never return a wrong byte, and local reads may
never fail at all. Afterwards, with the faults cleared, every item reads back exactly;
the daemon's peak RSS (VmHWM) is reported and bounded; GC must have evicted; the unmount
is clean (the daemon exits, nothing stays mounted).

Run by ctest: stress_test.py --bin BUILDCACHEFS --gen BUILDCACHEFS_GEN --shared DIR
Needs root, /dev/fuse, docker-registry, htpasswd, moto (scripts/deps-moto.sh) and Azurite
(scripts/deps-azurite.sh).
"""

import base64
import collections
import errno
import gzip
import hashlib
import io
import json
import os
import random
import sys
import tarfile
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO_ROOT, "tests", "servers"))

import e2e_cli  # noqa: E402
import mount_test as mt  # noqa: E402  (Base: mounts, cleanup, watchdog)
import registry_test as rt  # noqa: E402  (FaultProxy, make_cache_layout)

ARGS = None
SECONDS = float(os.environ.get("BCFS_STRESS_SECONDS", "60"))
READERS = int(os.environ.get("BCFS_STRESS_READERS", "64"))
# Peak RSS bound of the daemon. ASan's shadow memory and quarantine (256 MB by default)
# dominate a sanitized build; a release build stays far below (bench/run reports it).
RSS_LIMIT_MB = int(os.environ.get("BCFS_STRESS_RSS_MB", "1536"))
GC_CEILING = "24MB"  # well under the ~70 MB of remote content: GC evicts continuously
CACHECONFIG = "application/vnd.buildkit.cacheconfig.v0"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REGION = "us-east-1"
CREATED = "2026-01-02T03:04:05.123456789Z"


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_layer(files):
    """A gzip tar with these {path: bytes}; returns (blob bytes, diffID)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for path, data in sorted(files.items()):
            info = tarfile.TarInfo(path)
            info.size, info.mtime, info.mode = len(data), 1700000000, 0o644
            t.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return gzip.compress(raw, compresslevel=1, mtime=0), sha256(raw)


def make_object_cache(rnd, sizes):
    """A cache in BuildKit's s3/azblob layout (FORMATS.md §5.3): (config bytes,
    {digest: blob bytes}, {digest: {path: bytes}}) with one gzip layer per size, each
    its own chain (parent omitted), layers sorted by digest as BuildKit writes them."""
    blobs, files_of, layers, records = {}, {}, [], []
    for i, size in enumerate(sizes):
        files = {"d%d/big.bin" % i: rnd.randbytes(size),
                 "d%d/small.txt" % i: b"layer %d of the stress cache\n" % i}
        data, diff = make_layer(files)
        d = sha256(data)
        blobs[d], files_of[d] = data, files
        layers.append({"blob": d, "annotations": {"mediaType": LAYER_GZIP, "diffID": diff,
                                                  "size": len(data), "createdAt": CREATED}})
    layers.sort(key=lambda l: l["blob"])
    for pos in range(len(layers)):
        records.append({"layers": [{"layer": pos, "createdAt": CREATED}],
                        "digest": sha256(b"stress record %d %f" % (pos, rnd.random()))})
    records.sort(key=lambda r: r["digest"])
    config = json.dumps({"layers": layers, "records": records},
                        separators=(",", ":")).encode()
    return config, blobs, files_of


class Item:
    """One file of the mount and the bytes it must hold."""

    def __init__(self, source, rel, data):
        self.source, self.rel, self.data = source, rel, data


class Readers:
    """READERS threads reading items until stopped; they record every outcome."""

    ALLOWED = {errno.EIO, errno.ENOSPC}

    def __init__(self, mnt, items, seed):
        self.mnt, self.items, self.seed = mnt, items, seed
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok = collections.Counter()       # source -> reads checked exact
        self.bytes = collections.Counter()    # source -> bytes checked
        self.errors = collections.Counter()   # (source, errno name) -> count
        self.wrong = []                       # descriptions of wrong bytes (must stay empty)
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True)
                        for i in range(READERS)]

    def start(self):
        for t in self.threads:
            t.start()

    def join(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=300)
        return [t for t in self.threads if t.is_alive()]

    def check(self, item, offset, got):
        want = item.data[offset:offset + len(got)]
        if got != want or (offset + len(got) < len(item.data) and not got):
            with self.lock:
                self.wrong.append("%s: %d bytes at %d differ from the uploaded bytes"
                                  % (item.rel, len(got), offset))
            return False
        return True

    def read_one(self, rnd, item):
        path = os.path.join(self.mnt, item.rel)
        fd = os.open(path, os.O_RDONLY)
        try:
            size = len(item.data)
            checked = 0
            if rnd.random() < 0.35 or size == 0:
                # The whole file, in 1 MiB reads: the digest of what arrived.
                out, off = [], 0
                while True:
                    chunk = os.pread(fd, 1 << 20, off)
                    if not chunk:
                        break
                    out.append(chunk)
                    off += len(chunk)
                data = b"".join(out)
                if data != item.data:
                    with self.lock:
                        self.wrong.append("%s: whole read of %d bytes hashes to %s, not %s"
                                          % (item.rel, len(data), sha256(data),
                                             sha256(item.data)))
                    return 0
                checked = len(data)
            else:
                for _ in range(rnd.randint(1, 6)):
                    off = rnd.randrange(size)
                    n = rnd.choice((1, 4096, 65536, 300000))
                    got = os.pread(fd, n, off)
                    if not self.check(item, off, got):
                        return 0
                    checked += len(got)
            return checked
        finally:
            os.close(fd)

    def why(self, item):
        """The user.buildcachefs.error of the item or of its layer folder, if any."""
        parts = item.rel.split("/")
        paths = [item.rel]
        if len(parts) > 4 and parts[1] == "layers":
            paths.append("/".join(parts[:4]))
        notes = []
        for rel in paths:
            try:
                notes.append(os.getxattr(os.path.join(self.mnt, rel),
                                         "user.buildcachefs.error").decode())
            except OSError:
                pass
        return " (%s)" % "; ".join(notes) if notes else ""

    def run(self, index):
        rnd = random.Random(self.seed * 1000 + index)
        while not self.stop.is_set():
            item = rnd.choice(self.items)
            try:
                n = self.read_one(rnd, item)
            except OSError as e:
                with self.lock:
                    self.errors[(item.source, errno.errorcode.get(e.errno, str(e.errno)))] += 1
                    if e.errno not in self.ALLOWED or item.source == "local":
                        self.wrong.append("%s: %s%s" % (item.rel, e, self.why(item)))
                continue
            with self.lock:
                self.ok[item.source] += 1
                self.bytes[item.source] += n


class FaultInjector:
    """Adds one random fault rule at a time to a random proxy until stopped (a pace, not a
    synchronisation: which request a rule hits does not matter)."""

    def __init__(self, proxies, seed):
        self.proxies, self.rnd = proxies, random.Random(seed)
        self.stop = threading.Event()
        self.added = collections.Counter()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def rule(self):
        r = self.rnd
        kind = r.choice(("reset_after", "stall", "corrupt", "truncate", "status"))
        rule = {"match": "blobs/", "method": "GET", "action": kind, "times": 1}
        if kind == "stall":
            rule.update(bytes=r.randrange(1 << 20), seconds=r.choice((0.5, 1, 2)))
        elif kind == "status":
            rule.update(status=r.choice((500, 502, 503)), retry_after=1)
        else:
            rule["bytes"] = r.randrange(1 << 20)
        return rule

    def run(self):
        while not self.stop.wait(0.25):
            name = self.rnd.choice(sorted(self.proxies))
            rule = self.rule()
            try:
                self.proxies[name].faults([rule])
                self.added[rule["action"]] += 1
            except (OSError, RuntimeError) as e:
                sys.stderr.write("fault injector: %s: %s\n" % (name, e))

    def start(self):
        self.thread.start()

    def finish(self):
        self.stop.set()
        self.thread.join(timeout=30)
        for p in self.proxies.values():
            p.reset()


def vm_hwm_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


class Stress(rt.Base):  # mt.Base plus mount_env (a mount with an environment)
    def setUp(self):
        super().setUp()
        self.work = tempfile.mkdtemp(prefix="stress-", dir=self.tmp)
        self.items = []

        # The servers, each behind its own fault proxy.
        from azurite_harness import Azurite
        from moto_harness import Moto
        from registry_harness import Registry
        self.reg = Registry("basic").start()
        self.addCleanup(self.reg.stop)
        self.moto = Moto().start()
        self.addCleanup(self.moto.stop)
        self.az = Azurite().start()
        self.addCleanup(self.az.stop)
        self.proxies = {}
        for name, upstream in (("registry", self.reg.url), ("s3", self.moto.url),
                               ("azblob", "http://127.0.0.1:%d" % self.az.port)):
            d = os.path.join(self.work, "proxy-" + name)
            os.makedirs(d)
            self.proxies[name] = rt.FaultProxy(upstream, d)
            self.addCleanup(self.proxies[name].stop)

        self.sources = [self.local_source(), self.registry_source(), self.s3_source(),
                        self.azblob_source()]

    # -- the four sources and what each must hold ---------------------------

    def add_blobs(self, source, blobs):
        for d, data in blobs.items():
            self.items.append(Item(source, "%s/blobs/sha256/%s" % (source, d.split(":")[1]),
                                   data))

    def add_layer_files(self, source, files_of):
        for d, files in files_of.items():
            for path, data in files.items():
                self.items.append(Item(source, "%s/layers/sha256/%s/%s"
                                       % (source, d.split(":")[1], path), data))

    def layout(self, name, sizes, seed):
        """An OCI-layout cache with layers of these sizes; adds its blobs as items."""
        root = os.path.join(self.work, name)
        rt.make_cache_layout(root, sizes, seed=seed)
        blobs = {}
        bdir = os.path.join(root, "blobs", "sha256")
        for h in os.listdir(bdir):
            with open(os.path.join(bdir, h), "rb") as f:
                blobs["sha256:" + h] = f.read()
        self.add_blobs(name, blobs)
        return root

    def local_source(self):
        root = self.layout("local", [3 << 20, 1 << 20, 200000, 4096], seed=11)
        return "type=local,src=%s,as=local" % root

    def registry_source(self):
        root = self.layout("registry", [6 << 20, 4 << 20, 2 << 20, 1 << 20, 300000, 5000], 12)
        self.reg.push_layout(root, "stress", tag="t")
        return "type=registry,ref=%s/stress:t,as=registry" % self.proxies["registry"].host

    def s3_source(self):
        config, blobs, files_of = make_object_cache(random.Random(13),
                                                    [8 << 20, 5 << 20, 2 << 20, 700000, 9000])
        self.moto.create_bucket("stress")
        client = self.moto.client()
        for d, data in blobs.items():
            client.put_object(Bucket="stress", Key="blobs/" + d, Body=data)
        client.put_object(Bucket="stress", Key="manifests/main", Body=config)
        blobs[sha256(config)] = config
        self.add_blobs("s3", blobs)
        self.add_layer_files("s3", files_of)
        return ("type=s3,bucket=stress,region=%s,endpoint_url=http://%s,use_path_style=true,"
                "access_key_id=%s,secret_access_key=%s,name=main,as=s3"
                % (REGION, self.proxies["s3"].host, self.moto.access_key_id,
                   self.moto.secret_access_key))

    def azblob_source(self):
        config, blobs, files_of = make_object_cache(random.Random(14),
                                                    [7 << 20, 3 << 20, 1 << 20, 400000, 7000])
        self.az.create_container("buildkit-cache")
        for d, data in blobs.items():
            self.az.put_blob("buildkit-cache", "blobs/" + d, data)
        self.az.put_blob("buildkit-cache", "manifests/main", config)
        blobs[sha256(config)] = config
        self.add_blobs("azblob", blobs)
        self.add_layer_files("azblob", files_of)
        url = self.az.url.replace("127.0.0.1:%d" % self.az.port, self.proxies["azblob"].host)
        return "type=azblob,account_url=%s,secret_access_key=%s,name=main,as=azblob" % (
            url, self.az.key)

    # -- the run -------------------------------------------------------------

    def mount_all(self):
        docker = os.path.join(self.work, "docker")
        os.makedirs(docker)
        user, password = self.reg.creds
        auth = base64.b64encode(("%s:%s" % (user, password)).encode()).decode()
        with open(os.path.join(docker, "config.json"), "w") as f:
            json.dump({"auths": {self.proxies["registry"].host: {"auth": auth}}}, f)
        env = dict(os.environ, DOCKER_CONFIG=docker, HOME=self.work)
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                  "AWS_PROFILE"):
            env.pop(k, None)
        gc = os.path.join(self.work, "gc.toml")
        with open(gc, "w") as f:
            f.write('[gc]\n[[gc.policy]]\nmaxUsedSpace = "%s"\n' % GC_CEILING)
        return self.mount_env(["--gc-config", gc, "--gc-interval", "1s"] + self.sources, env)

    def test_readers_faults_and_gc_never_see_a_wrong_byte(self):
        mnt = self.mount_all()
        pids = mt.daemon_pids(mnt)
        self.assertEqual(len(pids), 1, pids)
        # Every folder is there before the storm (a mount-time problem is not a fault).
        for src in ("local", "registry", "s3", "azblob"):
            self.assertIn(src, os.listdir(mnt))
        readers = Readers(mnt, self.items, seed=1)
        faults = FaultInjector(self.proxies, seed=2)
        faults.start()
        readers.start()
        deadline = time.monotonic() + SECONDS
        while time.monotonic() < deadline and not readers.wrong:
            readers.stop.wait(min(1.0, max(0.0, deadline - time.monotonic())))
        stuck = readers.join()
        faults.finish()
        summary = ("%d readers, %.0f s: exact reads %s; bytes checked %s; failed reads %s; "
                   "faults added %s" % (READERS, SECONDS, dict(readers.ok),
                                        dict(readers.bytes), dict(readers.errors),
                                        dict(faults.added)))
        sys.stderr.write("\nstress: %s\n" % summary)
        self.assertEqual(stuck, [], "readers still blocked 300 s after the end: " + summary)
        self.assertEqual(readers.wrong, [], summary)
        for src in ("local", "registry", "s3", "azblob"):
            self.assertGreater(readers.ok[src], 0, "no exact read of %s: %s" % (src, summary))
        self.assertGreater(sum(faults.added.values()), 0)

        with open(os.path.join(mnt, ".buildcachefs", "status.json")) as f:
            sys.stderr.write("stress: status after the storm %s\n" % json.dumps(json.load(f).get("gc")))
        # Faults cleared: every item reads back exactly, once more.
        for item in self.items:
            with open(os.path.join(mnt, item.rel), "rb") as f:
                data = f.read()
            self.assertEqual(sha256(data), sha256(item.data), item.rel)

        with open(os.path.join(mnt, ".buildcachefs", "status.json")) as f:
            status = json.load(f)
        gc = status.get("gc", {})
        sys.stderr.write("stress: gc %s\n" % json.dumps(gc, sort_keys=True))
        hwm = vm_hwm_mb(pids[0])
        sys.stderr.write("stress: daemon peak RSS (VmHWM) %.1f MB\n" % hwm)
        self.assertLess(hwm, RSS_LIMIT_MB, "daemon peak RSS")
        self.assertGreater(gc.get("evicted", 0), 0,
                           "GC never evicted: %s" % gc)


def setUpModule():
    missing = []
    try:
        import boto3  # noqa: F401
        import moto  # noqa: F401
    except ImportError as e:
        missing.append("%s: %s (scripts/deps-moto.sh)" % (sys.executable, e))
    from azurite_harness import find_binary
    if find_binary() is None:
        missing.append("Azurite is not installed (scripts/deps-azurite.sh)")
    mt.ARGS = rt.ARGS = ARGS
    mt.check_prerequisites("stress test", ARGS, ("docker-registry", "htpasswd"),
                           extra_missing=missing)


if __name__ == "__main__":
    e2e_cli.main()
