#!/usr/bin/env python3
"""End-to-end tests of `buildcachefs prune` (DESIGN.md §3 "Source prune", gc/prune.h).

Local: a copy of the local-growth fixture (three exports into one directory; index.json
points at the third) with its mtimes set old with `touch -d`, sometimes with more refs in
index.json pointing at the older exports' manifests. What must remain is computed here from
the files with json and hashlib (the importer's walk: index.json -> manifest -> config and
layers, plus the cache config's layer blobs), never by the code under test. After a prune
the cache must still mount with the exact tree (mount_test's check_source) and hold every
blob BuildKit's importer needs for each kept ref.

Registry: the real docker-registry (registry_harness, token auth, deletion enabled or not)
holding the same caches under several tags.

Run by ctest: prune_test.py --bin BUILDCACHEFS --gen BUILDCACHEFS_GEN --shared DIR
Mounting needs root (as mount_test.py); the registry tests need docker-registry.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SERVERS = os.path.join(os.path.dirname(HERE), "servers")
sys.path.insert(0, HERE)
sys.path.insert(0, SERVERS)

import e2e_cli  # noqa: E402
import mount_test as mt  # noqa: E402  (Base: mounts, cleanup, watchdog; check_source)
from cachefiles import CACHECONFIG, blob_path, cache_manifest_info, read_blob  # noqa: E402
from registry_harness import Registry  # noqa: E402

ARGS = None
REF_NAME = "org.opencontainers.image.ref.name"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
# The three exports of local-growth (FORMATS.md §2.4): round 3 is what index.json names.
ROUND1 = "sha256:825625e068e409dae7663bf401ce93254716d216546486e7e1eadf23af85c978"
ROUND2 = "sha256:168d8ac9cf650e205a3d67aefb45f71667ea384342dc22913260b2d071c0678c"
ROUND3 = "sha256:aa08d79ab8add6338df045659cfd6d82db853d891970c27ce86d532f49a25a30"
OLD = "2020-01-02 03:04:05"  # every file's mtime unless a test says otherwise


# ---------------------------------------------------------------------------
# The independent route


def reaches(root, digest):
    """Every blob a cache manifest names: itself, its config, its layers, and the layer blobs
    its cache config names (what a kept ref must keep)."""
    out = {digest}
    info = cache_manifest_info(root, digest)
    if info is None:
        return out
    _, cfg, layers = info
    out.add(cfg["digest"])
    out.update(d["digest"] for d in layers)
    try:
        config = json.loads(read_blob(root, cfg["digest"]))
    except (OSError, ValueError):
        return out
    out.update(l["blob"] for l in config.get("layers") or [] if "blob" in l)
    return out


def index_entries(root):
    with open(os.path.join(root, "index.json"), "rb") as f:
        return json.load(f).get("manifests") or []


def reachable(root):
    out = set()
    for e in index_entries(root):
        out |= reaches(root, e["digest"])
    return out


def blobs_in(root):
    d = os.path.join(root, "blobs", "sha256")
    return {"sha256:" + n for n in os.listdir(d)}


def listing(root):
    """Every path under root with its type, mode, size, mtime and content hash."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            h = None
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as f:
                    h = hashlib.sha256(f.read()).hexdigest()
            out[os.path.relpath(p, root)] = (st.st_mode, st.st_size, st.st_mtime_ns, h)
    return out


def touch(paths, when):
    """`touch -h -d WHEN` (WHEN: a date string or "@<epoch seconds>")."""
    if paths:
        subprocess.run(["touch", "-h", "-d", when] + list(paths), check=True, timeout=60)


def entry(name, digest, size):
    """An index.json entry as BuildKit's ociindex writes it (Go json, compact)."""
    return ('{"mediaType":"%s","digest":"%s","size":%d,"annotations":{"%s":"%s"}}'
            % (OCI_INDEX, digest, size, REF_NAME, name))


def ago(seconds):
    return "@%d" % int(time.time() - seconds)


# ---------------------------------------------------------------------------


class Base(mt.Base):
    def growth(self, refs=None):
        """A writable copy of local-growth, every mtime OLD. refs: [(name, digest)] to write
        index.json with (compact, in that order); None keeps the fixture's."""
        root = self.fixture("local-growth")
        for dirpath, dirnames, _ in os.walk(root):  # as an export leaves them: writable
            os.chmod(dirpath, 0o755)
        if refs is not None:
            text = ('{"schemaVersion":2,"mediaType":"%s","manifests":[%s]}'
                    % (OCI_INDEX, ",".join(entry(n, d, os.path.getsize(blob_path(root, d)))
                                           for n, d in refs)))
            with open(os.path.join(root, "index.json"), "w") as f:
                f.write(text)
        paths = [os.path.join(dp, n) for dp, dns, fns in os.walk(root) for n in dns + fns]
        touch(paths + [root], OLD)
        return root

    def ingest(self, root, name, when):
        d = os.path.join(root, "ingest", name)
        os.makedirs(d)
        for f, text in (("ref", "layer-sha256:" + "0" * 64), ("data", "partial"),
                        ("startedat", "2020-01-01T00:00:00Z"), ("total", "100")):
            with open(os.path.join(d, f), "w") as out:
                out.write(text)
        touch([os.path.join(d, f) for f in os.listdir(d)] + [d], when)
        return d

    def state(self):
        return tempfile.mkdtemp(prefix="state-", dir=self.tmp)

    def prune(self, source, *args, env=None, want=0):
        p = subprocess.run([ARGS.bin, "prune", source, "--state-dir", self.state()] + list(args),
                           capture_output=True, text=True, timeout=300, env=env)
        self.assertEqual(p.returncode, want, "prune %s %s:\n%s%s" % (source, " ".join(args),
                                                                    p.stdout, p.stderr))
        return p

    def prune_json(self, source, *args, **kw):
        p = self.prune(source, "--format", "json", *args, **kw)
        return json.loads(p.stdout)

    def check_blobs_exact(self, root):
        for d in blobs_in(root):
            with open(blob_path(root, d), "rb") as f:
                self.assertEqual("sha256:" + hashlib.sha256(f.read()).hexdigest(), d)

    def check_importer_view(self, root, ref):
        """What BuildKit's local importer reads for `ref` is all there and exact: the
        index.json entry, the manifest, the cache config and every layer it lists."""
        e = [m for m in index_entries(root) if (m.get("annotations") or {}).get(REF_NAME) == ref]
        self.assertEqual(len(e), 1, "ref %s in index.json" % ref)
        digest = e[0]["digest"]
        data = read_blob(root, digest)
        self.assertEqual(len(data), e[0]["size"])
        self.assertEqual("sha256:" + hashlib.sha256(data).hexdigest(), digest)
        shape, cfg, layers = cache_manifest_info(root, digest)
        self.assertEqual(cfg["mediaType"], CACHECONFIG)
        for d in [cfg] + layers:
            p = blob_path(root, d["digest"])
            self.assertTrue(os.path.exists(p), "%s of ref %s is missing" % (d["digest"], ref))
            self.assertEqual(os.path.getsize(p), d["size"])

    def check_mounts(self, root):
        mnt = self.mount([self.local(root)])
        self.check_source(mnt, os.path.basename(root), root)
        self.unmount(mnt)


class LocalPrune(Base):
    def test_without_selection_exactly_what_index_json_reaches_remains(self):
        root = self.growth()
        with open(os.path.join(root, "index.json"), "rb") as f:
            before_index = f.read()
        stale = self.ingest(root, "a" * 64, OLD)
        ingest_bytes = sum(os.path.getsize(os.path.join(stale, f)) for f in os.listdir(stale))
        want = reachable(root)
        all_blobs = blobs_in(root)
        self.assertLess(len(want), len(all_blobs))  # rounds 1-2 left garbage behind
        sizes = {d: os.path.getsize(blob_path(root, d)) for d in all_blobs - want}
        j = self.prune_json(self.local(root), "--yes")
        self.assertEqual([(r["name"], r["action"]) for r in j["refs"]], [("latest", "keep")])
        self.assertEqual(sorted(b["digest"] for b in j["delete_blobs"]), sorted(all_blobs - want))
        self.assertEqual(j["bytes_freed"], sum(sizes.values()) + ingest_bytes)
        self.assertEqual(j["result"]["blobs_deleted"], len(all_blobs - want))
        self.assertEqual(j["result"]["errors"], [])
        self.assertEqual(blobs_in(root), want)
        self.assertFalse(os.path.exists(stale))
        with open(os.path.join(root, "index.json"), "rb") as f:
            self.assertEqual(f.read(), before_index)  # no ref dropped: not rewritten
        self.assertFalse(os.path.exists(os.path.join(root, "index.json.lock")))
        self.check_blobs_exact(root)
        self.check_importer_view(root, "latest")
        self.check_mounts(root)

    def test_dry_run_deletes_nothing(self):
        root = self.growth([("latest", ROUND3), ("mid", ROUND2), ("old", ROUND1)])
        self.ingest(root, "b" * 64, OLD)
        before = listing(root)
        for extra in ([], ["--dry-run"], ["--format", "json"], ["--all"],
                      ["--keep-duration", "1h", "--grace-period", "0s"]):
            p = self.prune(self.local(root), *extra)
            self.assertEqual(listing(root), before, "prune %s changed files" % extra)
        self.assertIn("dry run", p.stdout)
        j = self.prune_json(self.local(root), "--all", "--grace-period", "0s")
        self.assertEqual([r["action"] for r in j["refs"]], ["drop", "drop", "drop"])
        self.assertIsNone(j["result"])
        self.assertEqual(len(j["delete_blobs"]), len(blobs_in(root)))
        self.assertEqual(listing(root), before)

    def test_keep_duration_drops_old_refs_and_their_unshared_blobs(self):
        refs = [("old", ROUND1), ("latest", ROUND3), ("mid", ROUND2)]
        root = self.growth(refs)
        touch([blob_path(root, ROUND3)], ago(2 * 3600))  # exported two hours ago
        with open(os.path.join(root, "index.json")) as f:
            text = f.read()
        keep = reaches(root, ROUND3)
        dropped = (reaches(root, ROUND1) | reaches(root, ROUND2)) - keep
        self.assertTrue(dropped)
        shared = (reaches(root, ROUND1) | reaches(root, ROUND2)) & keep
        self.assertTrue(shared, "the rounds share layers")
        j = self.prune_json(self.local(root), "--keep-duration", "24h", "--yes")
        self.assertEqual({r["name"]: r["action"] for r in j["refs"]},
                         {"old": "drop", "latest": "keep", "mid": "drop"})
        self.assertIn("before --keep-duration 24h", j["refs"][0]["reason"])
        self.assertIn("within --keep-duration 24h", j["refs"][1]["reason"])
        self.assertEqual(sorted(j["result"]["refs_removed"]), ["mid", "old"])
        # index.json: the other entries and fields byte for byte, dropped ones gone.
        with open(os.path.join(root, "index.json")) as f:
            self.assertEqual(f.read(), text.replace(entry("old", ROUND1, 2859) + ",", "")
                             .replace("," + entry("mid", ROUND2, 2860), ""))
        self.assertEqual(blobs_in(root), keep)
        self.assertEqual(blobs_in(root) & dropped, set())
        self.assertTrue(shared <= blobs_in(root))
        self.check_blobs_exact(root)
        self.check_importer_view(root, "latest")
        self.check_mounts(root)

    def test_filter_selects_refs_and_shared_blobs_stay(self):
        root = self.growth([("latest", ROUND3), ("mid", ROUND2), ("old", ROUND1)])
        keep = reaches(root, ROUND3) | reaches(root, ROUND1)
        j = self.prune_json(self.local(root), "--filter", "ref==mid", "--yes")
        self.assertEqual([(r["name"], r["action"]) for r in j["refs"]],
                         [("latest", "keep"), ("mid", "drop"), ("old", "keep")])
        self.assertEqual([e.get("annotations", {}).get(REF_NAME) for e in index_entries(root)],
                         ["latest", "old"])
        self.assertEqual(blobs_in(root), keep)
        for ref in ("latest", "old"):
            self.check_importer_view(root, ref)
        self.check_mounts(root)

    def test_grace_period_protects_young_files(self):
        root = self.growth()
        garbage = sorted(blobs_in(root) - reachable(root))
        young = [garbage[0], garbage[1]]
        touch([blob_path(root, d) for d in young], ago(600))
        young_ingest = self.ingest(root, "c" * 64, ago(120))
        old_ingest = self.ingest(root, "d" * 64, OLD)
        j = self.prune_json(self.local(root), "--yes")
        self.assertEqual(sorted(b["digest"] for b in j["young_blobs"]), young)
        self.assertEqual(blobs_in(root), reachable(root) | set(young))
        self.assertTrue(os.path.isdir(young_ingest))
        self.assertFalse(os.path.exists(old_ingest))
        # A shorter grace period lets them go.
        j = self.prune_json(self.local(root), "--yes", "--grace-period", "5m")
        self.assertEqual(sorted(b["digest"] for b in j["delete_blobs"]), young)
        self.assertEqual(blobs_in(root), reachable(root))
        self.assertTrue(os.path.isdir(young_ingest))  # 2 minutes old
        self.prune(self.local(root), "--yes", "--grace-period", "0s")
        self.assertFalse(os.path.exists(young_ingest))
        self.check_mounts(root)

    def test_a_young_ref_is_not_dropped(self):
        root = self.growth([("latest", ROUND3), ("old", ROUND1)])
        touch([blob_path(root, ROUND3)], ago(300))
        j = self.prune_json(self.local(root), "--all", "--yes")
        self.assertEqual([(r["name"], r["action"]) for r in j["refs"]],
                         [("latest", "keep"), ("old", "drop")])
        self.assertIn("within --grace-period 1h", j["refs"][0]["reason"])
        self.assertEqual(blobs_in(root), reaches(root, ROUND3))

    def test_tag_narrows_the_candidates(self):
        root = self.growth([("latest", ROUND3), ("old", ROUND1)])
        j = self.prune_json("type=local,src=%s,tag=old" % root, "--all", "--yes")
        self.assertEqual([(r["name"], r["action"]) for r in j["refs"]],
                         [("latest", "keep"), ("old", "drop")])
        self.assertIn("outside the source string's tag old", j["refs"][0]["reason"])
        self.assertEqual(blobs_in(root), reaches(root, ROUND3))

    def test_a_lock_held_by_another_writer_stops_the_prune(self):
        root = self.growth([("latest", ROUND3), ("old", ROUND1)])
        import fcntl
        before = listing(root)
        with open(os.path.join(root, "index.json.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            p = self.prune(self.local(root), "--all", "--yes", want=1)
        self.assertIn("locked", p.stdout + p.stderr)
        after = listing(root)
        del after["index.json.lock"]
        self.assertEqual(after, before)

    def test_usage_errors(self):
        root = self.growth()
        for args in ([], ["--format", "xml"], ["--yes", "--dry-run"], ["--keep-duration", "x"],
                     ["--keep-duration", "1h", "--filter", "until=2h"],
                     ["--filter", "type==regular"], ["--grace-period", "-1h"]):
            p = subprocess.run([ARGS.bin, "prune"] + ([self.local(root)] if args else []) + args,
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(p.returncode, 2, "%s: %s" % (args, p.stderr))
        p = subprocess.run([ARGS.bin, "prune", "type=local,src=%s,digest=%s" % (root, ROUND3)],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 2)


class RegistryPrune(Base):
    def layout(self):
        """local-growth's three manifests as tags latest (round 3), alias (round 3 too),
        mid (round 2) and old (round 1)."""
        return self.growth([("latest", ROUND3), ("alias", ROUND3), ("mid", ROUND2),
                            ("old", ROUND1)])

    def start(self, **kw):
        if shutil.which("docker-registry") is None:
            if mt.in_ci():
                self.fail("docker-registry is missing in CI")
            self.skipTest("docker-registry is not installed")
        reg = Registry("token", **kw).start()
        self.addCleanup(reg.stop)
        reg.push_layout(self.layout(), "app/cache")
        d = tempfile.mkdtemp(prefix="docker-", dir=self.tmp)
        env = dict(os.environ)
        env["DOCKER_CONFIG"] = reg.docker_config(d)
        return reg, env

    def test_unkept_tags_lose_their_manifest_and_shared_digests_stay(self):
        reg, env = self.start()
        src = "type=registry,ref=%s/app/cache:*" % reg.host
        self.assertEqual(sorted(reg.tags("app/cache")), ["alias", "latest", "mid", "old"])
        # Registries keep no write time: never-read tags are not selected by age.
        j = self.prune_json(src, "--keep-duration", "1s", "--yes", env=env)
        self.assertEqual([r["action"] for r in j["refs"]], ["keep"] * 4)
        # alias shares latest's digest: selected, but kept.
        j = self.prune_json(src, "--filter", "ref~=^(old|alias)$", "--yes", env=env)
        actions = {r["name"]: (r["action"], r["delete_manifest"]) for r in j["refs"]}
        self.assertEqual(actions, {"alias": ("keep", False), "latest": ("keep", False),
                                   "mid": ("keep", False), "old": ("drop", True)})
        self.assertIn("points at the same manifest", [r for r in j["refs"]
                                                      if r["name"] == "alias"][0]["reason"])
        self.assertTrue(any("garbage collection" in n for n in j["notes"]))
        self.assertEqual(j["result"]["refs_removed"], ["old"])
        r = reg.request("GET", "/v2/app/cache/manifests/" + ROUND1,
                        headers={"Accept": mt.MANIFEST_TYPES[0]}, scope="repository:app/cache:pull")
        self.assertEqual(r.status, 404)
        self.assertEqual(sorted(reg.tags("app/cache")), ["alias", "latest", "mid"])
        for tag, digest in (("latest", ROUND3), ("alias", ROUND3), ("mid", ROUND2)):
            self.assertEqual(reg.get_manifest("app/cache", tag)[2], digest)
        # A tag in the source string narrows the candidates to it.
        j = self.prune_json("type=registry,ref=%s/app/cache:mid" % reg.host, "--all", "--yes",
                            env=env)
        self.assertEqual(j["result"]["refs_removed"], ["mid"])
        self.assertEqual(sorted(reg.tags("app/cache")), ["alias", "latest"])

    def test_a_registry_without_deletion_is_a_clear_error(self):
        reg, env = self.start(delete_enabled=False)
        src = "type=registry,ref=%s/app/cache:*" % reg.host
        p = self.prune(src, "--filter", "ref==old", "--yes", env=env, want=1)
        self.assertIn("deletion disabled", p.stdout)
        self.assertEqual(sorted(reg.tags("app/cache")), ["alias", "latest", "mid", "old"])


def setUpModule():
    mt.ARGS = ARGS
    mt.check_prerequisites("prune tests", ARGS, ("touch",))


if __name__ == "__main__":
    e2e_cli.main()
