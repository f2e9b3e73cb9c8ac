#!/usr/bin/env python3
"""End-to-end tests of refresh (issue 8 item 4; DESIGN.md §1.6), with real mounts.

A mount re-reads every source's refs on SIGHUP and every --refresh-interval / -o refresh=:
  1. Local source, SIGHUP: a ref added to index.json appears with byte-exact content (a
     negative lookup cached before does not hide it); a tag moved to another manifest shows
     the new manifest's bytes through the mount at once (the kernel's cached name was
     dropped), a removed ref is ENOENT while files opened before keep reading their exact
     bytes; a malformed index.json keeps the previous refs and names the file in
     status.json, user.buildcachefs.error and the STATUS= line.
  2. Local source, -o refresh=1s, and refresh_interval put in the config before a SIGHUP:
     a new ref appears without a signal (synchronised on status.json's refresh generation).
  3. A bad --refresh-interval or -o refresh= is a usage error naming it.
  4. Registry source (real docker-registry, `ref=HOST/repo:*`): a tag pushed after the
     mount appears after SIGHUP, with the pushed manifest's bytes.

Each mount runs `buildcachefs mount -f` with a NOTIFY_SOCKET this test owns: READY=1 and
the READY=1 after a SIGHUP's refresh are the readiness signals (never sleeps).

Run by ctest: refresh_test.py --bin BUILDCACHEFS --gen BUILDCACHEFS_GEN --shared DIR
"""

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "servers"))

import e2e_cli  # noqa: E402
import service_test as svc  # noqa: E402  (need, mount_fstype)
from registry_harness import Registry  # noqa: E402

ARGS = None
REF_NAME = "org.opencontainers.image.ref.name"
X_ERROR = "user.buildcachefs.error"


def read(path):
    with open(path, "rb") as f:
        return f.read()


class Base(unittest.TestCase):
    def setUp(self):
        svc.need(os.geteuid() == 0, "mounting needs root")
        svc.need(os.path.exists("/dev/fuse"), "no /dev/fuse")
        self.tmp = tempfile.mkdtemp(prefix="bcfs-refresh-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.mnt = os.path.join(self.tmp, "mnt")
        os.mkdir(self.mnt)
        self.addCleanup(self.force_unmount)

    def force_unmount(self):
        if svc.mount_fstype(self.mnt) is not None:
            subprocess.run(["umount", "-l", self.mnt], stderr=subprocess.DEVNULL)

    def start(self, args, env=None):
        """`mount -f ARGS MNT` with a notify socket; returns once READY=1 came."""
        addr = os.path.join(self.tmp, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(self.sock.close)
        self.sock.bind(addr)
        self.sock.settimeout(60)
        env = dict(env or os.environ, NOTIFY_SOCKET=addr)
        self.log_path = os.path.join(self.tmp, "daemon.log")
        log = open(self.log_path, "w")
        self.addCleanup(log.close)
        self.proc = subprocess.Popen(
            [ARGS.bin, "mount", "-f", "--log-level", "info", "--state-dir",
             os.path.join(self.tmp, "state")] + args + [self.mnt],
            env=env, stdout=subprocess.DEVNULL, stderr=log)

        def stop():
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        self.addCleanup(stop)
        while True:
            msg = self.recv()
            if msg.startswith("READY=1"):
                return msg

    def recv(self):
        try:
            return self.sock.recv(4096).decode()
        except socket.timeout:
            self.fail("no sd_notify message in 60 s; log:\n" + self.log())

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def hup(self):
        """SIGHUP; returns the STATUS= text of the READY=1 that ends the reload."""
        self.proc.send_signal(signal.SIGHUP)
        self.assertRegex(self.recv(), r"^RELOADING=1\nMONOTONIC_USEC=\d+\nSTATUS=Reloading$")
        msg = self.recv()
        self.assertTrue(msg.startswith("READY=1\nSTATUS="), msg)
        return msg[len("READY=1\nSTATUS="):]

    def status(self):
        return json.loads(read(os.path.join(self.mnt, ".buildcachefs", "status.json")))


class Local(Base):
    def setUp(self):
        super().setUp()
        self.cache = os.path.join(self.tmp, "cache")
        shutil.copytree(os.path.join(ARGS.shared, "fixtures", "buildkit", "local-growth"),
                        self.cache, symlinks=True)
        with open(os.path.join(self.cache, "index.json")) as f:
            self.index = json.load(f)
        self.latest = self.index["manifests"][0]
        self.assertEqual(self.latest["annotations"][REF_NAME], "latest")
        self.src = os.path.join(self.mnt, "cache")
        self.refs = os.path.join(self.src, "refs")

    def blob(self, digest):
        return read(os.path.join(self.cache, "blobs", "sha256", digest.split(":")[1]))

    def write_index(self, entries):
        """index.json with entries [(name, descriptor)], written whole (as BuildKit does)."""
        doc = dict(self.index, manifests=[])
        for name, desc in entries:
            d = json.loads(json.dumps(desc))
            d.setdefault("annotations", {})[REF_NAME] = name
            doc["manifests"].append(d)
        tmp = os.path.join(self.cache, "index.json.tmp")
        with open(tmp, "w") as f:
            json.dump(doc, f)
        os.rename(tmp, os.path.join(self.cache, "index.json"))

    def history(self):
        """Descriptors of the cache manifests no ref reaches, from the mount's history/."""
        out = []
        for hexd in sorted(os.listdir(os.path.join(self.src, "history"))):
            path = os.path.join(self.src, "history", hexd, "manifest.json")
            out.append({"mediaType": os.getxattr(path, "user.buildcachefs.mediatype").decode(),
                        "digest": "sha256:" + hexd, "size": os.path.getsize(path)})
        return out

    def test_sighup_adds_moves_and_removes_refs_and_survives_a_malformed_index(self):
        self.start(["type=local,src=" + self.cache])
        self.assertEqual(os.listdir(self.refs), ["latest"])
        hist = self.history()
        self.assertGreaterEqual(len(hist), 2, "local-growth should have two older manifests")
        old_latest = self.blob(self.latest["digest"])
        self.assertEqual(read(os.path.join(self.refs, "latest", "manifest.json")), old_latest)
        # The kernel caches this miss (a negative entry).
        self.assertFalse(os.path.exists(os.path.join(self.refs, "new")))

        # 1. A new ref.
        self.write_index([("latest", self.latest), ("new", hist[0])])
        self.assertEqual(self.hup(), "Serving 1 source at %s (refresh 1: 1 added, 0 removed, "
                         "0 changed)" % self.mnt)
        self.assertEqual(sorted(os.listdir(self.refs)), ["latest", "new"])
        new_manifest = os.path.join(self.refs, "new", "manifest.json")
        self.assertEqual(read(new_manifest), self.blob(hist[0]["digest"]))
        self.assertEqual(os.getxattr(os.path.join(self.refs, "new"), "user.buildcachefs.digest"),
                         hist[0]["digest"].encode())
        listed = json.loads(read(os.path.join(self.src, "index.json")))
        self.assertEqual([m["annotations"][REF_NAME] for m in listed["manifests"]],
                         ["latest", "new"])
        self.assertEqual(self.status()["refresh"]["generation"], 1)

        # 2. `latest` moves to another manifest, `new` goes; files opened before stay.
        held_latest = open(os.path.join(self.refs, "latest", "manifest.json"), "rb")
        self.addCleanup(held_latest.close)
        held_new = open(new_manifest, "rb")
        self.addCleanup(held_new.close)
        self.assertEqual(held_latest.read(), old_latest)  # in the page cache now
        self.write_index([("latest", hist[1])])
        self.assertEqual(self.hup(), "Serving 1 source at %s (refresh 2: 0 added, 1 removed, "
                         "1 changed)" % self.mnt)
        self.assertEqual(read(os.path.join(self.refs, "latest", "manifest.json")),
                         self.blob(hist[1]["digest"]))
        with self.assertRaises(FileNotFoundError):
            os.stat(new_manifest)
        self.assertEqual(os.listdir(self.refs), ["latest"])
        held_latest.seek(0)
        self.assertEqual(held_latest.read(), old_latest)
        self.assertEqual(held_new.read(), self.blob(hist[0]["digest"]))
        self.assertIsNone(self.status()["sources"][0]["refresh_error"] or None)

        # 3. A malformed index.json: the refs stay, the error names the file.
        with open(os.path.join(self.cache, "index.json"), "w") as f:
            f.write('{"manifests": [')
        text = self.hup()
        where = os.path.join(self.cache, "index.json")
        prefix = ("Serving 1 source at %s (refresh 3: 0 added, 0 removed, 0 changed; failed: "
                  "source cache: refresh failed, the refs read before stay: %s: " % (self.mnt, where))
        self.assertTrue(text.startswith(prefix), text)
        self.assertEqual(os.listdir(self.refs), ["latest"])
        self.assertEqual(read(os.path.join(self.refs, "latest", "manifest.json")),
                         self.blob(hist[1]["digest"]))
        error = os.getxattr(self.src, X_ERROR).decode()
        self.assertTrue(error.startswith("refresh failed, the refs read before stay: %s: not valid "
                                         "JSON" % where), error)
        status = self.status()
        self.assertEqual(status["refresh"]["generation"], 3)
        self.assertEqual(status["sources"][0]["refresh_error"], error)
        self.assertIn(error, status["sources"][0]["errors"])
        self.assertEqual(status["sources"][0]["refs"], 1)
        self.assertIn("buildcachefs: warning: source cache: " + error, self.log())

        # Repaired: the error goes.
        self.write_index([("latest", self.latest)])
        self.assertEqual(self.hup(), "Serving 1 source at %s (refresh 4: 0 added, 0 removed, "
                         "1 changed)" % self.mnt)
        self.assertEqual(read(os.path.join(self.refs, "latest", "manifest.json")), old_latest)
        with self.assertRaises(OSError) as e:
            os.getxattr(self.src, X_ERROR)
        self.assertEqual(e.exception.errno, errno.ENODATA)

    def wait_for_timed_ref(self, name):
        hist = self.history()
        self.write_index([("latest", self.latest), (name, hist[0])])
        # A refresh running while index.json was written may have read the old one: the
        # second one after this point read the new one.
        want = self.status()["refresh"]["generation"] + 2
        deadline = time.monotonic() + 60
        while self.status()["refresh"]["generation"] < want:
            self.assertLess(time.monotonic(), deadline, "no refresh in 60 s:\n" + self.log())
            time.sleep(0.05)
        self.assertEqual(sorted(os.listdir(self.refs)), ["latest", name])
        self.assertEqual(read(os.path.join(self.refs, name, "manifest.json")),
                         self.blob(hist[0]["digest"]))
        self.assertIsNone(self.proc.poll())

    def test_the_interval_refreshes_without_a_signal(self):
        self.start(["-o", "refresh=1s", "type=local,src=" + self.cache])
        self.wait_for_timed_ref("timed")

    def test_refresh_interval_from_the_config_applies_on_sighup(self):
        config = os.path.join(self.tmp, "bcfs.toml")
        body = '[[source]]\ntype = "local"\nsrc = "cache"\n'
        with open(config, "w") as f:
            f.write(body)
        self.start(["--config", config])
        with open(config, "w") as f:
            f.write('refresh_interval = "1s"\n' + body)
        self.assertEqual(self.hup(), "Serving 1 source at %s (config reloaded; refresh 1: "
                         "0 added, 0 removed, 0 changed)" % self.mnt)
        self.assertNotIn("refresh_interval changed", self.log())
        self.wait_for_timed_ref("timed")


class BadInterval(unittest.TestCase):
    def test_a_bad_interval_is_named(self):
        for args, msg in [
                (["--refresh-interval", "5x"], '--refresh-interval: invalid duration "5x": '
                 'neither a Go duration ("48h") nor integer seconds'),
                (["-o", "ro,refresh=-1s"], 'refresh: invalid duration "-1s": negative')]:
            with self.subTest(args):
                r = subprocess.run([ARGS.bin, "mount"] + args + ["type=local,src=/nonexistent",
                                                                 "/nonexistent"],
                                   capture_output=True, text=True, timeout=60)
                self.assertEqual((r.returncode, r.stderr), (2, "buildcachefs mount: %s\n" % msg))


class RegistrySource(Base):
    def test_a_pushed_tag_appears_after_sighup(self):
        svc.need(shutil.which("docker-registry") is not None, "docker-registry is not installed")
        reg = Registry("open")
        self.addCleanup(reg.stop)
        reg.start()
        layout = os.path.join(ARGS.shared, "fixtures", "buildkit", "local-growth")
        pushed = reg.push_layout(layout, "app", tag="v1")
        docker = os.path.join(self.tmp, "docker")
        os.mkdir(docker)
        with open(os.path.join(docker, "config.json"), "w") as f:
            f.write("{}")
        env = dict(os.environ, DOCKER_CONFIG=docker)
        self.start(["type=registry,ref=%s/app:*,as=app" % reg.host], env)
        refs = os.path.join(self.mnt, "app", "refs")
        self.assertEqual(os.listdir(refs), ["v1"])
        self.assertFalse(os.path.exists(os.path.join(refs, "v2")))

        again = reg.push_layout(layout, "app", tag="v2")
        self.assertEqual(again["tags"]["v2"], pushed["tags"]["v1"])
        self.assertEqual(self.hup(), "Serving 1 source at %s (refresh 1: 1 added, 0 removed, "
                         "0 changed)" % self.mnt)
        self.assertEqual(sorted(os.listdir(refs)), ["v1", "v2"])
        body, _, digest = reg.get_manifest("app", "v2")
        self.assertEqual(digest, pushed["tags"]["v1"])
        self.assertEqual(read(os.path.join(refs, "v2", "manifest.json")), body)
        self.assertEqual(read(os.path.join(refs, "v1", "manifest.json")), body)


if __name__ == "__main__":
    e2e_cli.main()
