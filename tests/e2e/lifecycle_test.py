#!/usr/bin/env python3
"""End-to-end tests of the cache lifecycle commands `du`, `verify` and `warm` (issue 6).

Every expectation is computed here from the cache's files with Python's json and hashlib
(another route than the code under test): the blobs each ref and history entry reaches,
shared and unique bytes, orphaned blobs, the bytes a warmed store must hold. Fixtures from
../shared are copied to a temp dir first; nothing in ../shared is written.

  1. Du: local-growth (history and orphans, exact), registry-max, generated caches with
     refs sharing a base layer, last use from the index's access rows and from the
     manifest's mtime, the offline form from the index, the table.
  2. Verify: a good copy, a flipped byte (layer, config, history-only blob), a missing
     blob, --presence-only, one REF, usage errors.
  3. Warm: against the real docker-registry (basic auth) started here: the store holds
     exactly the ref's layer blobs with the right bytes, a second warm sends no blob GET,
     du shows them cached, a held store lock is refused clearly, local sources need none.

Run by ctest: lifecycle_test.py --bin BUILDCACHEFS --gen BUILDCACHEFS_GEN --shared DIR
The warm tests need docker-registry and htpasswd; outside CI they skip without them.
"""

import datetime
import fcntl
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO_ROOT, "tests", "servers"))
import e2e_cli  # noqa: E402
from cachefiles import blob_path, cache_manifest_info, load_json, read_blob  # noqa: E402

ARGS = None
REF_NAME = "org.opencontainers.image.ref.name"


# ---------------------------------------------------------------------------
# The independent route: what each ref reaches, from the files


def entry_blobs(root, manifest_digest, manifest_size):
    """{digest: size} a cache manifest reaches (itself, its config, the config's layers that
    the manifest lists), or {manifest: size} alone when it is not a cache manifest."""
    info = cache_manifest_info(root, manifest_digest)
    blobs = {manifest_digest: manifest_size}
    if info is None:
        return blobs
    shape, cfg, layer_descs = info
    blobs[cfg["digest"]] = cfg["size"]
    by_digest = {d["digest"]: d["size"] for d in layer_descs}
    if shape == "inline":
        blobs.update(by_digest)
    else:
        for l in json.loads(read_blob(root, cfg["digest"])).get("layers", []):
            if l["blob"] in by_digest:
                blobs[l["blob"]] = by_digest[l["blob"]]
    return blobs


def expected_du(root):
    """du's numbers for a local cache dir, computed from its files."""
    index = load_json(os.path.join(root, "index.json"))
    files = {"sha256:" + h: os.path.getsize(os.path.join(root, "blobs", "sha256", h))
             for h in os.listdir(os.path.join(root, "blobs", "sha256"))}
    refs = []
    for d in index["manifests"]:
        name = (d.get("annotations") or {}).get(REF_NAME) or "@" + d["digest"][7:19]
        refs.append((name, entry_blobs(root, d["digest"], d["size"])))
    reached = set()
    for _, b in refs:
        reached |= set(b)
    history = []
    for digest in sorted(files):
        if digest not in reached and cache_manifest_info(root, digest) is not None:
            history.append(("@" + digest[7:19], entry_blobs(root, digest, files[digest])))
    hreached = set()
    for _, b in history:
        hreached |= set(b)
    out = {"refs": [], "history": [], "orphaned": {}}
    for name, blobs in refs:
        others = set()
        for n2, b2 in refs:
            if n2 != name:
                others |= set(b2)
        shared = sum(s for d, s in blobs.items() if d in others)
        out["refs"].append({"name": name, "blobs": len(blobs), "total": sum(blobs.values()),
                            "shared": shared, "unique": sum(blobs.values()) - shared})
    for name, blobs in history:
        others = set(reached)
        for n2, b2 in history:
            if n2 != name:
                others |= set(b2)
        shared = sum(s for d, s in blobs.items() if d in others)
        out["history"].append({"name": name, "blobs": len(blobs), "total": sum(blobs.values()),
                               "shared": shared, "unique": sum(blobs.values()) - shared})
    ref_sizes = {}
    for _, b in refs:
        ref_sizes.update(b)
    hist_only = {}
    for _, b in history:
        hist_only.update({d: s for d, s in b.items() if d not in ref_sizes})
    orphans = {d: s for d, s in files.items() if d not in reached and d not in hreached}
    out["refs_bytes"] = sum(ref_sizes.values())
    out["history_bytes"] = sum(hist_only.values())
    out["orphaned"] = {"count": len(orphans), "bytes": sum(orphans.values()),
                       "blobs": [{"digest": d, "size": orphans[d]} for d in sorted(orphans)]}
    out["total"] = out["refs_bytes"] + out["history_bytes"] + out["orphaned"]["bytes"]
    return out


def rfc3339_ns(text):
    """'2025-08-13T10:49:19.455017895Z' -> ns since the epoch."""
    m = re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?Z", text)
    assert m, text
    dt = datetime.datetime(*map(int, m.groups()[:6]), tzinfo=datetime.timezone.utc)
    frac = (m.group(7) or "").ljust(9, "0")
    return int(dt.timestamp()) * 1000000000 + int(frac)


def flip_byte(path, offset=None):
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        size = os.fstat(f.fileno()).st_size
        off = size // 2 if offset is None else offset
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ 0x01]))


def run(*args, env=None):
    return subprocess.run([ARGS.bin, *args], capture_output=True, text=True, timeout=300,
                          env=env, stdin=subprocess.DEVNULL)


class Base(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="bcfs-life-")
        self.state = os.path.join(self.tmp, "state")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def fixture(self, name):
        src = os.path.join(ARGS.shared, "fixtures", "buildkit", name)
        if not os.path.isdir(src):
            if os.environ.get("CI"):
                self.fail("../shared fixtures are missing in CI: " + src)
            self.skipTest("../shared/fixtures/buildkit is absent (--shared)")
        dst = os.path.join(self.tmp, name)
        shutil.copytree(src, dst, symlinks=True)
        return dst

    def generate(self, name, *extra):
        out = os.path.join(self.tmp, name)
        subprocess.run([ARGS.gen, "--out", out, *extra], check=True, capture_output=True,
                       timeout=120)
        return out

    def du_json(self, *args, rc=0, env=None):
        p = run("du", "--format", "json", "--state-dir", self.state, *args, env=env)
        self.assertEqual(p.returncode, rc, p.stdout + p.stderr)
        return json.loads(p.stdout)

    def assert_du_matches(self, got, want):
        strip = ("name", "blobs", "total", "shared", "unique")
        self.assertEqual([{k: r[k] for k in strip} for r in got["refs"]], want["refs"])
        self.assertEqual([{k: r[k] for k in strip} for r in got["history"]["entries"]],
                         want["history"])
        self.assertEqual(got["history"]["count"], len(want["history"]))
        self.assertEqual(got["history"]["bytes"], want["history_bytes"])
        self.assertEqual(got["refs_bytes"], want["refs_bytes"])
        self.assertEqual(got["orphaned"], want["orphaned"])
        self.assertEqual(got["total"], want["total"])


# ---------------------------------------------------------------------------
# 1. du


class Du(Base):
    def test_local_growth_history_and_orphans_match_files(self):
        root = self.fixture("local-growth")
        want = expected_du(root)
        # Two earlier exports left their manifests behind: history, not orphans.
        self.assertEqual(len(want["history"]), 2)
        got = self.du_json("type=local,src=" + root)
        self.assertEqual(len(got["sources"]), 1)
        s = got["sources"][0]
        self.assertEqual((s["name"], s["type"], s["from_index"]), ("local-growth", "local", False))
        self.assert_du_matches(s, want)
        # Every blob in the dir is counted exactly once.
        on_disk = sum(os.path.getsize(os.path.join(root, "blobs", "sha256", h))
                      for h in os.listdir(os.path.join(root, "blobs", "sha256")))
        self.assertEqual(s["total"], on_disk)
        self.assertEqual(got["total"]["bytes"], on_disk)
        self.assertEqual(s["cached"], None)  # local: nothing to cache
        self.assertEqual(s["errors"], [])

    def test_dropped_history_manifest_and_stray_blob_become_orphans(self):
        root = self.fixture("local-growth")
        before = expected_du(root)
        # Drop the oldest history manifest (as a manual cleanup might): its config and the
        # layers only it reached are orphans now. Add a stray blob (an interrupted export).
        victim = "sha256:" + next(h for h in sorted(os.listdir(os.path.join(root, "blobs",
                                                                            "sha256")))
                                  if before["history"][0]["name"] == "@" + h[:12])
        os.unlink(blob_path(root, victim))
        stray = b"stray bytes of an interrupted export\n"
        stray_digest = "sha256:" + hashlib.sha256(stray).hexdigest()
        with open(blob_path(root, stray_digest), "wb") as f:
            f.write(stray)
        want = expected_du(root)
        self.assertEqual(len(want["history"]), 1)
        self.assertGreaterEqual(want["orphaned"]["count"], 2)  # the config and the stray
        self.assertIn({"digest": stray_digest, "size": len(stray)}, want["orphaned"]["blobs"])
        got = self.du_json("type=local,src=" + root)
        self.assert_du_matches(got["sources"][0], want)
        self.assertEqual(got["total"]["orphaned"], want["orphaned"]["bytes"])

    def test_registry_max_and_generated_refs_sharing_a_base_layer(self):
        rmax = self.fixture("registry-max")
        gen = self.generate("gen-idx", "--shape", "index", "--refs", "3",
                            "--ref-names", "latest,feature/x,other", "--layers", "3")
        got = self.du_json("type=local,src=" + rmax, "type=local,src=" + gen)
        self.assertEqual([s["name"] for s in got["sources"]], ["registry-max", "gen-idx"])
        for s, root in zip(got["sources"], (rmax, gen)):
            self.assert_du_matches(s, expected_du(root))
        g = got["sources"][1]
        # The base layer is shared by all three refs: nonzero shared, unique < total.
        for r in g["refs"]:
            self.assertGreater(r["shared"], 0, r)
            self.assertLess(r["unique"], r["total"], r)
        self.assertEqual([r["path_name"] for r in g["refs"]], ["latest", "feature%2Fx", "other"])
        self.assertEqual(got["total"]["bytes"], sum(s["total"] for s in got["sources"]))

    def test_last_use_is_newest_of_access_rows_and_manifest_mtime(self):
        root = self.generate("gen-two", "--refs", "2", "--ref-names", "latest,feature/x")
        index = load_json(os.path.join(root, "index.json"))
        by_name = {d["annotations"][REF_NAME]: d for d in index["manifests"]}
        # Without an index: the manifest blob's mtime.
        mtimes = {}
        for i, (name, d) in enumerate(sorted(by_name.items())):
            t = 1700000000 + i * 1000
            os.utime(blob_path(root, d["digest"]), ns=(t * 10**9 + 123, t * 10**9 + 123))
            mtimes[name] = t * 10**9 + 123
        got = self.du_json("type=local,src=" + root)
        self.assertEqual({r["name"]: rfc3339_ns(r["last_use"]) for r in got["sources"][0]["refs"]},
                         mtimes)
        # An access row of a layer of `latest` newer than the mtime wins for that ref only
        # (and for `feature/x` too when it shares the layer).
        os.makedirs(self.state)
        self.assertEqual(run("ls", "type=local,src=" + root, "--state-dir", self.state)
                         .returncode, 0)
        latest_blobs = entry_blobs(root, by_name["latest"]["digest"], by_name["latest"]["size"])
        fx_blobs = entry_blobs(root, by_name["feature/x"]["digest"],
                               by_name["feature/x"]["size"])
        only_latest = sorted(set(latest_blobs) - set(fx_blobs))
        shared = sorted(set(latest_blobs) & set(fx_blobs))
        self.assertTrue(only_latest and shared)
        t_only, t_shared = 1800000000 * 10**9 + 5, 1750000000 * 10**9 + 7
        db = sqlite3.connect(os.path.join(self.state, "index.db"))
        with db:
            db.execute("INSERT INTO accesses(digest, last_access_ns, use_count) VALUES (?,?,1)",
                       (only_latest[0], t_only))
            db.execute("INSERT INTO accesses(digest, last_access_ns, use_count) VALUES (?,?,1)",
                       (shared[0], t_shared))
        db.close()
        got = self.du_json("type=local,src=" + root)
        s = got["sources"][0]
        self.assertEqual({r["name"]: rfc3339_ns(r["last_use"]) for r in s["refs"]},
                         {"latest": t_only, "feature/x": t_shared})
        self.assertEqual(rfc3339_ns(s["last_use"]), t_only)

    def test_offline_du_from_the_index_matches_the_live_one(self):
        root = self.fixture("local-growth")
        gen = self.generate("gen-list", "--shape", "manifest-list", "--refs", "2")
        os.makedirs(self.state)
        for src in (root, gen):
            p = run("ls", "type=local,src=" + src, "--state-dir", self.state)
            self.assertEqual(p.returncode, 0, p.stderr)
        live = self.du_json("type=local,src=" + root, "type=local,src=" + gen)
        shutil.rmtree(root)  # offline: the index alone
        shutil.rmtree(gen)
        off = self.du_json()
        self.assertEqual(sorted(s["name"] for s in off["sources"]), ["gen-list", "local-growth"])
        live_by = {s["name"]: s for s in live["sources"]}
        for s in off["sources"]:
            self.assertTrue(s["from_index"])
            self.assertIsNone(s["orphaned"])
            lv = live_by[s["name"]]
            key = lambda r: r["name"]  # noqa: E731  (the index sorts refs by name)
            strip = ("name", "blobs", "total", "shared", "unique")
            self.assertEqual(sorted(({k: r[k] for k in strip} for r in s["refs"]), key=key),
                             sorted(({k: r[k] for k in strip} for r in lv["refs"]), key=key))
            self.assertEqual(s["history"]["bytes"], lv["history"]["bytes"])
            self.assertEqual(s["total"], lv["total"] - lv["orphaned"]["bytes"])

    def test_no_index_and_table_output(self):
        got = self.du_json()
        self.assertEqual(got["sources"], [])
        self.assertTrue(any("no index" in n for n in got["notes"]), got["notes"])
        root = self.fixture("local-growth")
        want = expected_du(root)
        p = run("du", "type=local,src=" + root, "--state-dir", self.state)
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = p.stdout.splitlines()
        self.assertEqual(lines[0].split(),
                         ["SOURCE", "REF", "BLOBS", "TOTAL", "SHARED", "UNIQUE", "CACHED", "LAST",
                          "USE"])
        self.assertTrue(lines[1].split()[:3] == ["local-growth", "latest",
                                                 str(want["refs"][0]["blobs"])], lines[1])
        self.assertTrue(any(l.startswith("local-growth") and "<history: 2 entries>" in l
                            for l in lines), p.stdout)
        total = [l for l in lines if l.startswith("TOTAL")]
        self.assertEqual(len(total), 1, p.stdout)
        self.assertIn("1 source", total[0])
        # --verbose lists the history entries by name.
        p = run("du", "type=local,src=" + root, "--state-dir", self.state, "--verbose")
        for h in want["history"]:
            self.assertIn("history " + h["name"], p.stdout)

    def test_usage_errors(self):
        self.assertEqual(run("du", "--format", "yaml").returncode, 2)
        self.assertEqual(run("du", "type=nope").returncode, 2)
        self.assertEqual(run("du", "--bogus").returncode, 2)
        p = run("du", "type=local,src=" + os.path.join(self.tmp, "absent"), "--state-dir",
                self.state)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)


# ---------------------------------------------------------------------------
# 2. verify


class Verify(Base):
    def verify(self, root, *extra):
        p = run("verify", "type=local,src=" + root, *extra)
        return p

    def verify_json(self, root, *extra, rc):
        p = run("verify", "type=local,src=" + root, "--format", "json", *extra)
        self.assertEqual(p.returncode, rc, p.stdout + p.stderr)
        return json.loads(p.stdout)

    def test_good_copy_passes(self):
        root = self.fixture("registry-max")
        want = expected_du(root)
        p = self.verify(root)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("all present and intact", p.stdout)
        got = self.verify_json(root, rc=0)
        self.assertEqual(got["problems"], [])
        self.assertEqual(got["checked"], {"blobs": want["refs"][0]["blobs"],
                                          "bytes": want["refs"][0]["total"], "contents": True})

    def test_flipped_byte_in_a_layer_names_blob_and_ref(self):
        root = self.generate("gen-two", "--refs", "2", "--ref-names", "latest,feature/x",
                             "--file-size", "100000")
        index = load_json(os.path.join(root, "index.json"))
        by_name = {d["annotations"][REF_NAME]: d for d in index["manifests"]}
        latest = entry_blobs(root, by_name["latest"]["digest"], by_name["latest"]["size"])
        fx = entry_blobs(root, by_name["feature/x"]["digest"], by_name["feature/x"]["size"])
        shape, cfg, layers = cache_manifest_info(root, by_name["latest"]["digest"])
        victim = max((d for d in latest if d not in fx and d != cfg["digest"]
                      and d != by_name["latest"]["digest"]), key=lambda d: latest[d])
        flip_byte(blob_path(root, victim))
        p = self.verify(root)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        bad = [l for l in p.stdout.splitlines() if victim in l]
        self.assertEqual(len(bad), 1, p.stdout)
        self.assertTrue(bad[0].startswith("ref latest: layer "), bad[0])
        self.assertIn("corrupt", bad[0])
        self.assertIn("1 problem", p.stdout)
        got = self.verify_json(root, rc=1)
        self.assertEqual([(x["ref"], x["blob"], x["role"], x["problem"]) for x in got["problems"]],
                         [("latest", victim, "layer", "corrupt")])
        actual = "sha256:" + hashlib.sha256(read_blob(root, victim)).hexdigest()
        self.assertEqual(got["problems"][0]["detail"], "its bytes hash to " + actual)
        # The other ref is intact; --presence-only cannot see a flipped byte.
        self.assertEqual(self.verify(root, "feature/x").returncode, 0)
        self.assertEqual(self.verify(root, "feature%2Fx").returncode, 0)
        p = self.verify(root, "--presence-only")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("contents not read", p.stdout)

    def test_missing_blob_and_presence_only(self):
        root = self.fixture("registry-max")
        d = load_json(os.path.join(root, "index.json"))["manifests"][0]
        ref = d["annotations"][REF_NAME]
        _, cfg, layers = cache_manifest_info(root, d["digest"])
        victim = layers[0]["digest"]
        os.unlink(blob_path(root, victim))
        for extra in ((), ("--presence-only",)):
            got = self.verify_json(root, *extra, rc=1)
            self.assertEqual([(x["ref"], x["blob"], x["problem"]) for x in got["problems"]],
                             [(ref, victim, "missing")], extra)
        p = self.verify(root, "--presence-only")
        self.assertIn("ref %s: layer " % ref, p.stdout)
        self.assertIn(victim + ": missing", p.stdout)

    def test_corrupt_config_and_truncated_layer(self):
        root = self.fixture("registry-max")
        d = load_json(os.path.join(root, "index.json"))["manifests"][0]
        _, cfg, layers = cache_manifest_info(root, d["digest"])
        flip_byte(blob_path(root, cfg["digest"]), offset=10)
        got = self.verify_json(root, rc=1)
        self.assertEqual([(x["ref"], x["blob"], x["role"], x["problem"]) for x in got["problems"]],
                         [(d["annotations"][REF_NAME], cfg["digest"], "config", "corrupt")])
        # A short layer is a size problem, found without reading.
        root2 = self.fixture("local-max-gzip")
        d2 = load_json(os.path.join(root2, "index.json"))["manifests"][0]
        _, _, layers2 = cache_manifest_info(root2, d2["digest"])
        big = max(layers2, key=lambda l: l["size"])
        os.chmod(blob_path(root2, big["digest"]), 0o644)
        os.truncate(blob_path(root2, big["digest"]), big["size"] - 1)
        got = self.verify_json(root2, "--presence-only", rc=1)
        self.assertEqual([(x["blob"], x["problem"], x["detail"]) for x in got["problems"]],
                         [(big["digest"], "size", "is %d bytes but its descriptor says %d"
                           % (big["size"] - 1, big["size"]))])

    def test_history_entries_are_checked_without_ref(self):
        root = self.fixture("local-growth")
        want = expected_du(root)
        h = want["history"][0]["name"]
        hist_digest = next("sha256:" + x for x in os.listdir(os.path.join(root, "blobs", "sha256"))
                           if x.startswith(h[1:]))
        blobs = entry_blobs(root, hist_digest, os.path.getsize(blob_path(root, hist_digest)))
        ref_blobs = set()
        for r in load_json(os.path.join(root, "index.json"))["manifests"]:
            ref_blobs |= set(entry_blobs(root, r["digest"], r["size"]))
        only = [d for d in blobs if d not in ref_blobs and d != hist_digest]
        self.assertTrue(only)
        victim = max(only, key=lambda d: blobs[d])
        flip_byte(blob_path(root, victim))
        self.assertEqual(self.verify(root, "latest").returncode, 0)
        got = self.verify_json(root, rc=1)
        owners = [x for x in got["problems"] if x["blob"] == victim]
        self.assertTrue(owners, got["problems"])
        self.assertTrue(all(x["history"] and x["problem"] == "corrupt" for x in owners))
        self.assertIn(h, [x["ref"] for x in owners])

    def test_usage(self):
        self.assertEqual(run("verify").returncode, 2)
        self.assertEqual(run("verify", "a=b=c", "x", "y").returncode, 2)
        self.assertEqual(run("verify", "type=local,src=/x", "--format", "xml").returncode, 2)
        root = self.fixture("registry-max")
        p = self.verify(root, "no-such-ref")
        self.assertEqual(p.returncode, 1)
        self.assertIn("no ref \"no-such-ref\"", p.stderr)


# ---------------------------------------------------------------------------
# 3. warm, against the real registry


class Warm(Base):
    @classmethod
    def setUpClass(cls):
        missing = [b for b in ("docker-registry", "htpasswd") if shutil.which(b) is None]
        if missing:
            if os.environ.get("CI"):
                raise AssertionError("missing in CI: " + ", ".join(missing))
            raise unittest.SkipTest("needs " + ", ".join(missing))

    def setUp(self):
        super().setUp()
        from registry_harness import Registry
        self.reg = Registry("basic")
        self.reg.start()
        self.addCleanup(self.reg.stop)
        self.env = dict(os.environ)
        self.env["DOCKER_CONFIG"] = self.reg.docker_config(os.path.join(self.tmp, "docker"))

    def blob_gets(self, digests):
        """GET requests for these blobs the registry has answered so far (its access log)."""
        with open(self.reg.log_path, errors="replace") as f:
            text = f.read()
        return sum(1 for d in re.findall(r'"GET /v2/[^ "]+/blobs/(sha256:[0-9a-f]{64})', text)
                   if d in digests)

    def store_files(self):
        d = os.path.join(self.state, "store", "blobs", "sha256")
        return {"sha256:" + h: os.path.join(d, h) for h in os.listdir(d)} if os.path.isdir(d) \
            else {}

    def test_warm_fetches_exactly_the_ref_layers_once_and_du_shows_them(self):
        root = self.generate("gen-two", "--refs", "2", "--ref-names", "latest,other",
                             "--file-size", "50000", "--layers", "4")
        tags = self.reg.push_layout(root, "app/cache")["tags"]
        self.assertEqual(sorted(tags), ["latest", "other"])
        index = load_json(os.path.join(root, "index.json"))
        by_name = {d["annotations"][REF_NAME]: d for d in index["manifests"]}

        def layers_of(name):
            d = by_name[name]
            shape, cfg, _ = cache_manifest_info(root, d["digest"])
            b = entry_blobs(root, d["digest"], d["size"])
            return {k: v for k, v in b.items() if k not in (d["digest"], cfg["digest"])}

        want = layers_of("latest")
        src = "type=registry,ref=%s/app/cache:latest" % self.reg.host
        gets0 = self.blob_gets(want)
        p = run("warm", src, "--state-dir", self.state, env=self.env)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("fetched %d " % len(want), p.stdout)
        files = self.store_files()
        self.assertEqual(sorted(files), sorted(want))
        for d, path in files.items():
            with open(path, "rb") as f:
                data = f.read()
            self.assertEqual("sha256:" + hashlib.sha256(data).hexdigest(), d)
            self.assertEqual(len(data), want[d])
        gets1 = self.blob_gets(want)
        self.assertGreaterEqual(gets1 - gets0, len(want))
        mtimes = {d: os.stat(p).st_mtime_ns for d, p in files.items()}

        # A second warm fetches nothing: no blob GET reaches the registry.
        p = run("warm", src, "--state-dir", self.state, env=self.env)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("fetched 0 (0 B)", p.stdout)
        self.assertIn("%d already cached" % len(want), p.stdout)
        self.assertEqual(self.blob_gets(want), gets1)
        self.assertEqual({d: os.stat(p).st_mtime_ns for d, p in self.store_files().items()},
                         mtimes)

        # du (live and from the index) shows the ref's layers cached.
        got = self.du_json(src, env=self.env)
        s = got["sources"][0]
        self.assertEqual(s["type"], "registry")
        self.assertIsNone(s["orphaned"])
        r = s["refs"][0]
        self.assertEqual(r["name"], "latest")
        self.assertEqual(r["cached"], sum(want.values()))
        self.assertEqual(r["total"], sum(entry_blobs(root, by_name["latest"]["digest"],
                                                     by_name["latest"]["size"]).values()))
        off = self.du_json()
        self.assertEqual([x["name"] for x in off["sources"]], ["cache"])
        self.assertEqual(off["sources"][0]["refs"][0]["cached"], sum(want.values()))
        self.assertEqual(off["total"]["cached"], sum(want.values()))

        # Every tag: only the other ref's layers are new.
        other = layers_of("other")
        new = {d: s for d, s in other.items() if d not in want}
        self.assertTrue(new and len(new) < len(other))
        p = run("warm", "type=registry,ref=%s/app/cache:*" % self.reg.host, "other",
                "--state-dir", self.state, env=self.env)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("fetched %d " % len(new), p.stdout)
        self.assertEqual(sorted(self.store_files()), sorted(set(want) | set(other)))

        # verify reads the registry source too.
        p = run("verify", src, env=self.env)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_locked_store_is_refused_clearly_and_du_reads_it_anyway(self):
        root = self.generate("gen-one", "--file-size", "20000")
        self.reg.push_layout(root, "app/cache")
        src = "type=registry,ref=%s/app/cache:latest" % self.reg.host
        p = run("warm", src, "--state-dir", self.state, env=self.env)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        cached = sum(os.path.getsize(x) for x in self.store_files().values())
        lock = os.open(os.path.join(self.state, "store", "LOCK"), os.O_RDWR)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running mount holds it
            p = run("warm", src, "--state-dir", self.state, env=self.env)
            self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
            self.assertIn("running mount", p.stderr)
            # du reads the store's files without its lock: it works beside a mount.
            got = self.du_json(src, env=self.env)
            self.assertEqual(got["sources"][0]["cached"], cached)
            self.assertEqual(got["sources"][0]["partial_blobs"], 0)
        finally:
            os.close(lock)
        # A partly fetched blob is counted, not measured.
        victim = sorted(self.store_files())[0]
        size = os.path.getsize(self.store_files()[victim])
        os.unlink(self.store_files()[victim])
        pdir = os.path.join(self.state, "store", "partial", "sha256")
        with open(os.path.join(pdir, victim[7:] + ".data"), "wb") as f:
            f.truncate(size)
        got = self.du_json(src, env=self.env)
        self.assertEqual(got["sources"][0]["cached"], cached - size)
        self.assertEqual(got["sources"][0]["partial_blobs"], 1)
        p = run("du", src, "--state-dir", self.state, env=self.env)
        self.assertIn("1 blob is partly fetched", p.stdout)

    def test_blob_the_registry_lost_fails_naming_it(self):
        root = self.generate("gen-one", "--file-size", "20000", "--layers", "3")
        self.reg.push_layout(root, "app/cache")
        d = load_json(os.path.join(root, "index.json"))["manifests"][0]
        _, cfg, _ = cache_manifest_info(root, d["digest"])
        layers = {k: v for k, v in entry_blobs(root, d["digest"], d["size"]).items()
                  if k not in (d["digest"], cfg["digest"])}
        victim = sorted(layers)[0]
        r = self.reg.request("DELETE", "/v2/app/cache/blobs/" + victim)
        self.assertEqual(r.status, 202, r.body)
        src = "type=registry,ref=%s/app/cache:latest" % self.reg.host
        p = run("warm", src, "--state-dir", self.state, env=self.env)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("ref latest: layer ", p.stderr)
        self.assertIn(victim, p.stderr)
        self.assertIn("1 failed", p.stdout)
        # The others are in the store all the same.
        self.assertEqual(sorted(self.store_files()), sorted(set(layers) - {victim}))
        p = run("verify", src, "--presence-only", "--format", "json", env=self.env)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertEqual([(x["ref"], x["blob"], x["problem"])
                          for x in json.loads(p.stdout)["problems"]],
                         [("latest", victim, "missing")])

    def test_local_source_needs_no_warming(self):
        root = self.fixture("registry-max")
        p = run("warm", "type=local,src=" + root, "--state-dir", self.state)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("needs no warming", p.stdout)
        self.assertFalse(os.path.exists(os.path.join(self.state, "store")))
        self.assertEqual(run("warm").returncode, 2)


if __name__ == "__main__":
    e2e_cli.main()
