#!/usr/bin/env python3
"""End-to-end tests of the local store's GC (DESIGN.md §3) with real mounts of a cache in
the real docker-registry (basic auth), as root.

  1. Reading past maxUsedSpace brings the store back under the ceiling right after the
     fetch that crossed it, least recently used first; a file held open is pinned,
     survives and stays readable; an evicted blob's kernel cache is dropped, so reading
     it again fetches it again, exactly.
  2. When pinned content alone exceeds the ceiling, the next fetch fails with ENOSPC and
     status.json says why.
  3. Accesses are flushed to the index and survive the daemon: after unmount the index
     holds one row per blob read, in read order.
  4. `buildcachefs gc` on the state dir: refused while a mount holds the store; --dry-run
     removes nothing; a run evicts least recently used first until under the limit.
  5. `buildcachefs fsck`: a flipped byte in a stored blob, a truncated derived copy, a
     stray file and half a partial fetch are each found (and nothing else), --repair
     removes exactly them, and what was removed comes back on demand.

Sizes are exact: each layer is 3 MiB of random bytes (whole 4 KiB blocks), the limit
10 MiB ("10MB" is binary, as in buildkitd.toml), and the index database (which counts)
is checked to stay under 1 MiB, so three blobs fit and a fourth does not.

Run by ctest: gc_test.py --bin BUILDCACHEFS --gen BUILDCACHEFS_GEN --shared DIR
"""

import errno
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "servers"))

import e2e_cli  # noqa: E402
import mount_test as mt  # noqa: E402
import registry_test as rt  # noqa: E402  (cache layouts, docker config, mounting with env)
from registry_harness import Registry  # noqa: E402

ARGS = None
X = "user.buildcachefs."
MIB = 1 << 20
LAYER = 3 * MIB
LIMIT = 10 * MIB


def getx(path, name):
    try:
        return os.getxattr(path, X + name).decode()
    except OSError:
        return None


def store_bytes(state):
    """Bytes the GC counts: store files, derived copies and the index, as st_blocks."""
    total = 0
    for sub in ("store/blobs", "store/partial", "derived"):
        for dirpath, _, files in os.walk(os.path.join(state, sub)):
            for f in files:
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
    return total + index_bytes(state)


def index_bytes(state):
    total = 0
    for suffix in ("", "-wal", "-shm"):
        p = os.path.join(state, "index.db" + suffix)
        if os.path.exists(p):
            total += os.lstat(p).st_blocks * 512
    return total


class Base(rt.Base):
    reg = None

    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.mkdtemp(prefix="bcfs-gctest-")
        cls.addClassCleanup(subprocess.run, ["rm", "-rf", cls.work])
        cls.reg = Registry("basic")
        cls.addClassCleanup(cls.reg.stop)
        cls.reg.start()
        cls.root = os.path.join(cls.work, "cache")
        cls.info = rt.make_cache_layout(cls.root, [LAYER] * 5, 31)
        cls.reg.push_layout(cls.root, "gc", tag="t")

    def setUp(self):
        super().setUp()
        self.env_ok = self.env(self.docker_config(self.reg))
        self.source = "type=registry,ref=%s/gc:t,as=gc" % self.reg.host

    def bytes_of(self, digest):
        return rt.read_layout_blob(self.root, digest)

    def mount_gc(self, state, config, opts=()):
        cfg = os.path.join(self.tmp, "gc-%d.toml" % len(os.listdir(self.tmp)))
        with open(cfg, "w") as f:
            f.write(config)
        mnt = tempfile.mkdtemp(prefix="mnt-", dir=self.tmp)
        self._mounts.append(mnt)
        self.addCleanup(self.unmount, mnt)
        log = os.path.join(self.tmp, "mount-%d.log" % len(os.listdir(self.tmp)))
        self.logs[mnt] = log
        cmd = [ARGS.bin, "mount", "--state-dir", state, "--gc-config", cfg,
               "--gc-interval", "0"] + list(opts) + [self.source, mnt]
        with open(log, "wb") as out:
            p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                               timeout=mt.MOUNT_TIMEOUT, env=self.env_ok)
        self.assertEqual(p.returncode, 0, self.log_of(mnt))
        return mnt

    def blob(self, mnt, digest):
        return os.path.join(mnt, "gc", "blobs", "sha256", digest.split(":")[1])

    def status(self, mnt):
        with open(os.path.join(mnt, ".buildcachefs", "status.json")) as f:
            return json.load(f)["gc"]


class DaemonGc(Base):
    def test_reading_past_max_used_space_evicts_least_recently_used_but_not_open_files(self):
        a, b, c, d, e = self.info["layers"]
        state = tempfile.mkdtemp(prefix="state-", dir=self.tmp)
        mnt = self.mount_gc(state, '[gc]\n[[gc.policy]]\nmaxUsedSpace = "10MB"\n')
        held = open(self.blob(mnt, a), "rb")
        self.addCleanup(held.close)
        self.assertEqual(held.read(), self.bytes_of(a))
        for x in (b, c):
            self.assertEqual(mt.read_all(self.blob(mnt, x)), self.bytes_of(x))
        self.assertLess(index_bytes(state), MIB, "the arithmetic below assumes a small index")
        self.assertEqual([getx(self.blob(mnt, x), "cached") for x in (a, b, c, d)],
                         [str(LAYER)] * 3 + ["0"])
        self.assertEqual(self.status(mnt)["evicted"], 0)
        # d crosses 10 MiB: b, the least recently used blob not held open, goes.
        self.assertEqual(mt.read_all(self.blob(mnt, d)), self.bytes_of(d))
        self.assertEqual([getx(self.blob(mnt, x), "cached") for x in (a, b, c, d)],
                         [str(LAYER), "0", str(LAYER), str(LAYER)])
        self.assertLessEqual(store_bytes(state), LIMIT)
        st = self.status(mnt)
        self.assertEqual((st["evicted"], st["bytes_freed"]), (1, LAYER))
        self.assertEqual(st["enospc"], "")
        # The open file still reads, from its first byte.
        held.seek(0)
        self.assertEqual(held.read(), self.bytes_of(a))
        # b again: its page cache was dropped, so it is fetched again (exact bytes), and
        # now c is the least recently used.
        self.assertEqual(mt.read_all(self.blob(mnt, b)), self.bytes_of(b))
        self.assertEqual([getx(self.blob(mnt, x), "cached") for x in (a, b, c, d)],
                         [str(LAYER), str(LAYER), "0", str(LAYER)])
        self.assertLessEqual(store_bytes(state), LIMIT)
        self.assertEqual(self.status(mnt)["evicted"], 2)

    def test_pinned_content_over_the_ceiling_makes_new_fetches_fail_with_enospc(self):
        a, b, c = self.info["layers"][:3]
        state = tempfile.mkdtemp(prefix="state-", dir=self.tmp)
        mnt = self.mount_gc(state, '[gc]\n[[gc.policy]]\nmaxUsedSpace = "4MB"\n')
        held = [open(self.blob(mnt, x), "rb") for x in (a, b)]
        for f in held:
            self.addCleanup(f.close)
        self.assertEqual(held[0].read(), self.bytes_of(a))
        self.assertEqual(held[1].read(), self.bytes_of(b))
        st = self.status(mnt)
        self.assertIn("exceed", st["enospc"])
        data, err = rt.read_result(self.blob(mnt, c))
        self.assertEqual(err, errno.ENOSPC)
        self.assertIn("no space under the GC limits", getx(self.blob(mnt, c), "error") or "")
        # What is held stays readable.
        held[0].seek(0)
        self.assertEqual(held[0].read(), self.bytes_of(a))

    def test_accesses_reach_the_index_in_read_order_and_outlive_the_daemon(self):
        layers = self.info["layers"]
        state = tempfile.mkdtemp(prefix="state-", dir=self.tmp)
        mnt = self.mount_gc(state, '[gc]\nenabled = false\n')
        order = [layers[2], layers[0], layers[1], layers[0]]
        for x in order:
            self.assertEqual(mt.read_all(self.blob(mnt, x)), self.bytes_of(x))
        self.unmount(mnt)
        db = sqlite3.connect(os.path.join(state, "index.db"))
        rows = dict((r[0], (r[1], r[2])) for r in db.execute(
            "SELECT digest, last_access_ns, use_count FROM accesses"))
        db.close()
        self.assertEqual({x: rows[x][1] for x in layers[:3]},
                         {layers[0]: 2, layers[1]: 1, layers[2]: 1})
        self.assertLess(rows[layers[2]][0], rows[layers[1]][0])
        self.assertLess(rows[layers[1]][0], rows[layers[0]][0])
        self.assertNotIn(layers[3], rows)

    def test_noatime_records_no_accesses(self):
        layers = self.info["layers"]
        state = tempfile.mkdtemp(prefix="state-", dir=self.tmp)
        mnt = self.mount_gc(state, '[gc]\nenabled = false\n', opts=("-o", "noatime"))
        self.assertEqual(mt.read_all(self.blob(mnt, layers[0])), self.bytes_of(layers[0]))
        self.unmount(mnt)
        db = sqlite3.connect(os.path.join(state, "index.db"))
        (n,) = db.execute("SELECT COUNT(*) FROM accesses").fetchone()
        db.close()
        self.assertEqual(n, 0)


class CommandGc(Base):
    def run_gc(self, state, *extra):
        return subprocess.run([ARGS.bin, "gc", "--state-dir", state] + list(extra),
                              capture_output=True, text=True, timeout=120)

    def test_gc_command_refuses_while_mounted_plans_and_evicts_lru_first(self):
        layers = self.info["layers"]
        state = tempfile.mkdtemp(prefix="state-", dir=self.tmp)
        mnt = self.mount_gc(state, '[gc]\nenabled = false\n')
        order = [layers[3], layers[1], layers[4], layers[0]]
        for x in order:
            self.assertEqual(mt.read_all(self.blob(mnt, x)), self.bytes_of(x))
        p = self.run_gc(state, "--max-used-space", "7MB")
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("held by a running mount", p.stderr)
        self.unmount(mnt)

        blobs_dir = os.path.join(state, "store", "blobs", "sha256")
        before = sorted(os.listdir(blobs_dir))
        self.assertEqual(before, sorted(x.split(":")[1] for x in order))
        p = self.run_gc(state, "--max-used-space", "7MB", "--dry-run", "--format", "json")
        self.assertEqual(p.returncode, 0, p.stderr)
        plan = json.loads(p.stdout)
        self.assertEqual([e["digest"] for e in plan["evictions"]], order[:2])
        self.assertTrue(plan["dry_run"])
        self.assertEqual(sorted(os.listdir(blobs_dir)), before)

        p = self.run_gc(state, "--max-used-space", "7MB", "--format", "json")
        self.assertEqual(p.returncode, 0, p.stderr)
        done = json.loads(p.stdout)
        self.assertEqual([e["digest"] for e in done["evictions"]], order[:2])
        self.assertEqual(done["bytes_freed"], 2 * LAYER)
        self.assertEqual(sorted(os.listdir(blobs_dir)),
                         sorted(x.split(":")[1] for x in order[2:]))
        self.assertLessEqual(store_bytes(state), 7 * MIB)
        # Evicted blobs are fetched again through a new mount, exactly.
        mnt = self.mount_gc(state, '[gc]\nenabled = false\n')
        self.assertEqual(mt.read_all(self.blob(mnt, order[0])), self.bytes_of(order[0]))

    def test_gc_command_refuses_type_filters_and_bad_sizes(self):
        state = tempfile.mkdtemp(prefix="state-", dir=self.tmp)
        p = self.run_gc(state, "--filter", "type==regular")
        self.assertEqual(p.returncode, 2)
        self.assertIn("BuildKit record types do not exist in a remote cache", p.stderr)
        p = self.run_gc(state, "--max-used-space", "12XB")
        self.assertEqual(p.returncode, 2)
        self.assertIn("12XB", p.stderr)


class Fsck(Base):
    def fsck(self, state, *extra):
        p = subprocess.run([ARGS.bin, "fsck", "--state-dir", state, "--format", "json"] +
                           list(extra), capture_output=True, text=True, timeout=300)
        return p.returncode, (json.loads(p.stdout) if p.stdout.startswith("{") else p.stdout), \
            p.stderr

    def test_fsck_finds_exactly_what_is_wrong_and_repair_removes_it(self):
        a, b = self.info["layers"][:2]
        state = tempfile.mkdtemp(prefix="state-", dir=self.tmp)
        mnt = self.mount_gc(state, '[gc]\nenabled = false\n')
        for x in (a, b):
            self.assertEqual(mt.read_all(self.blob(mnt, x)), self.bytes_of(x))
        self.unmount(mnt)
        # A local generated cache in the same state dir: its gzip layers get derived copies.
        gen = self.generate("image-manifest")
        mnt = self.mount([self.local(gen)], state=state)
        for dirpath, _, files in os.walk(os.path.join(mnt, "gen-image-manifest", "layers")):
            for f in files:
                mt.read_all(os.path.join(dirpath, f))
        self.unmount(mnt)
        derived_dir = os.path.join(state, "derived", "sha256")
        derived = sorted(os.listdir(derived_dir))
        self.assertGreaterEqual(len(derived), 2)
        rc, out, err = self.fsck(state)
        self.assertEqual((rc, out["problems"]), (0, []), err)

        blobs = os.path.join(state, "store", "blobs", "sha256")
        victim = os.path.join(blobs, a.split(":")[1])
        os.chmod(victim, 0o644)
        with open(victim, "r+b") as f:
            f.seek(12345)
            byte = f.read(1)
            f.seek(12345)
            f.write(bytes([byte[0] ^ 1]))
        damaged = os.path.join(derived_dir, derived[0])
        os.truncate(damaged, os.path.getsize(damaged) - 1)
        stray = os.path.join(blobs, "junk")
        with open(stray, "w") as f:
            f.write("x")
        half = os.path.join(state, "store", "partial", "sha256", "b" * 64 + ".data")
        os.makedirs(os.path.dirname(half), exist_ok=True)
        with open(half, "w") as f:
            f.write("y")
        want = sorted([("corrupt blob", victim), ("damaged derived copy", damaged),
                       ("stray file", stray), ("half a partial fetch", half)])
        rc, out, err = self.fsck(state)
        self.assertEqual(rc, 1, err)
        self.assertEqual(sorted((p["problem"], p["path"]) for p in out["problems"]), want)
        self.assertEqual(out["remaining"], 4)
        self.assertTrue(all(os.path.exists(p) for _, p in want), "a check removed something")
        rc, out, err = self.fsck(state, "--repair")
        self.assertEqual(rc, 0, err)
        self.assertTrue(all(p["repaired"] for p in out["problems"]))
        self.assertFalse(any(os.path.exists(p) for _, p in want))
        self.assertTrue(os.path.exists(os.path.join(blobs, b.split(":")[1])))
        rc, out, err = self.fsck(state)
        self.assertEqual((rc, out["problems"]), (0, []), err)
        # What was removed comes back exactly, on demand.
        mnt = self.mount_gc(state, '[gc]\nenabled = false\n')
        self.assertEqual(mt.read_all(self.blob(mnt, a)), self.bytes_of(a))


def setUpModule():
    mt.check_prerequisites("gc tests", ARGS, ("docker-registry", "htpasswd", "openssl"),
                           skip_outside_ci=True)
    mt.ARGS = ARGS
    rt.ARGS = ARGS


if __name__ == "__main__":
    e2e_cli.main()
