#!/usr/bin/env python3
"""End-to-end tests of buildcachefs as a service (issue 8; DESIGN.md §6), with real mounts.

  1. Notify: `buildcachefs mount -f --config F` started as systemd starts a Type=notify
     service (NOTIFY_SOCKET naming a datagram socket this test owns, path and abstract
     forms, WATCHDOG_USEC): READY=1 arrives only once the mountpoint answers with the FUSE
     root, STATUS= lines, WATCHDOG=1 pings; SIGHUP with a changed log level re-reads the
     config and the refs (a ref added to index.json appears) without unmounting and says
     so; a broken config on SIGHUP keeps the mount;
     SIGTERM leaves no mount and exit status 0.
  2. Config: arguments override the file; bad TOML, an unknown key, a bad source string and
     a bad size each give the exact message with file:line:column, exit status 2.
  3. Install and fstab: `cmake --install` into a temp prefix puts the units, tmpfiles.d,
     the man page and /sbin/mount.fuse.buildcachefs (+ mount.buildcachefs) in place;
     `mount -t fuse.buildcachefs SOURCE MNT -o ro,allow_other,_netdev,nofail` and an fstab
     line (mount -T FILE MNT) mount through the helper, `umount` unmounts; with allow_other
     uid 65534 reads, without it gets EACCES.
  4. systemd: `systemd-analyze verify` of buildcachefs.service and buildcachefs@ci.service
     prints nothing, `systemd-analyze security --offline=yes` runs, `systemd-tmpfiles
     --create --root=DIR` creates the state dir; no unit setting creates a mount namespace.

Needs root (mounts) and systemd-analyze; outside CI it skips without them, under CI=true it
fails. Fixtures are copied from ../shared first. /sbin helpers that existed are restored.

Run by ctest: service_test.py --bin BUILDCACHEFS --gen BUILDCACHEFS_GEN --shared DIR
"""

import argparse
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

ARGS = None
FUSE_ROOT_INO = 1


def in_ci():
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(ok, why):
    if ok:
        return
    if in_ci():
        raise AssertionError("required under CI: " + why)
    raise unittest.SkipTest(why)


def mount_fstype(path):
    """The fstype of the mount at `path` from /proc/self/mountinfo, or None."""
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            mnt = left.split()[4].replace("\\040", " ")
            if mnt == path:
                found = right.split()[0]
    return found


def wait_unmounted(path, timeout=10):
    end = time.time() + timeout
    while mount_fstype(path) is not None and time.time() < end:
        time.sleep(0.05)
    return mount_fstype(path) is None


class Base(unittest.TestCase):
    def setUp(self):
        need(os.geteuid() == 0, "mounting needs root")
        need(os.path.exists("/dev/fuse"), "no /dev/fuse")
        self.tmp = tempfile.mkdtemp(prefix="bcfs-svc-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.cache = os.path.join(self.tmp, "cache")
        shutil.copytree(os.path.join(ARGS.shared, "fixtures", "buildkit", "local-growth"),
                        self.cache, symlinks=True)
        self.mnt = os.path.join(self.tmp, "mnt")
        os.mkdir(self.mnt)
        self.addCleanup(self.force_unmount, self.mnt)

    @staticmethod
    def force_unmount(path):
        if mount_fstype(path) is not None:
            subprocess.run(["umount", "-l", path], stderr=subprocess.DEVNULL)

    def write_config(self, text, name="bcfs.toml"):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def base_config(self, extra=""):
        return (extra + 'mountpoint = "mnt"\nstate_dir = "state"\n'
                '[[source]]\ntype = "local"\nsrc = "cache"\n')


class Notify(Base):
    def start(self, config, notify_addr, env_extra=None):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(notify_addr if notify_addr[0] != "@" else "\0" + notify_addr[1:])
        sock.settimeout(30)
        env = dict(os.environ, NOTIFY_SOCKET=notify_addr)
        env.update(env_extra or {})
        self.log_path = os.path.join(self.tmp, "daemon.log")
        log = open(self.log_path, "w")
        self.addCleanup(log.close)
        proc = subprocess.Popen([ARGS.bin, "mount", "-f", "--config", config], env=env,
                                stdout=subprocess.DEVNULL, stderr=log)

        def stop():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.addCleanup(stop)
        return proc, sock

    def recv(self, sock, skip_watchdog=True):
        while True:
            msg = sock.recv(4096).decode()
            if not (skip_watchdog and msg == "WATCHDOG=1"):
                return msg

    def log_text(self):
        with open(self.log_path) as f:
            return f.read()

    def test_ready_after_the_mount_answers_sighup_reloads_sigterm_unmounts(self):
        config = self.write_config(self.base_config())
        proc, sock = self.start(config, os.path.join(self.tmp, "notify.sock"),
                                {"WATCHDOG_USEC": "400000"})
        self.assertEqual(self.recv(sock), "STATUS=Reading 1 source")
        msg = self.recv(sock)
        # Checked the moment READY=1 is read: the mount is there and answers.
        fstype = mount_fstype(self.mnt)
        st = os.stat(self.mnt)
        self.assertEqual(msg, "READY=1\nSTATUS=Serving 1 source at " + self.mnt)
        self.assertEqual(fstype, "fuse.buildcachefs")
        self.assertEqual(st.st_ino, FUSE_ROOT_INO)
        self.assertEqual(sorted(os.listdir(self.mnt)), [".buildcachefs", "cache"])
        # The watchdog is pinged at half of WATCHDOG_USEC.
        t0 = time.time()
        self.assertEqual(sock.recv(4096).decode(), "WATCHDOG=1")
        self.assertEqual(sock.recv(4096).decode(), "WATCHDOG=1")
        self.assertLess(time.time() - t0, 1.5)

        # SIGHUP: the new log level is applied, a ref added to the cache appears (refresh),
        # nothing is unmounted.
        refs = os.path.join(self.mnt, "cache", "refs")
        self.assertEqual(os.listdir(refs), ["latest"])
        older = sorted(os.listdir(os.path.join(self.mnt, "cache", "history")))[0]
        older_path = os.path.join(self.cache, "blobs", "sha256", older)
        with open(os.path.join(self.cache, "index.json")) as f:
            index = json.load(f)
        index["manifests"].append({
            "mediaType": index["manifests"][0]["mediaType"], "digest": "sha256:" + older,
            "size": os.path.getsize(older_path),
            "annotations": {"org.opencontainers.image.ref.name": "hup"}})
        with open(os.path.join(self.cache, "index.json"), "w") as f:
            json.dump(index, f)
        self.write_config(self.base_config('log_level = "info"\n'))
        proc.send_signal(signal.SIGHUP)
        msg = self.recv(sock)
        self.assertRegex(msg, r"^RELOADING=1\nMONOTONIC_USEC=\d+\nSTATUS=Reloading$")
        self.assertEqual(self.recv(sock),
                         "READY=1\nSTATUS=Serving 1 source at %s (config reloaded; refresh 1: "
                         "1 added, 0 removed, 0 changed)" % self.mnt)
        self.assertEqual(sorted(os.listdir(refs)), ["hup", "latest"])
        with open(older_path, "rb") as want, open(os.path.join(refs, "hup", "manifest.json"),
                                                  "rb") as got:
            self.assertEqual(got.read(), want.read())
        self.assertIsNone(proc.poll())
        self.assertEqual(mount_fstype(self.mnt), "fuse.buildcachefs")
        self.assertEqual(os.stat(self.mnt).st_ino, FUSE_ROOT_INO)
        self.assertIn("buildcachefs: info: SIGHUP: reloaded %s (log level info)\n" % config,
                      self.log_text())

        # A change that needs a restart is named; a broken file keeps what runs.
        self.write_config(self.base_config('log_level = "info"\noptions = ["allow_other"]\n'))
        proc.send_signal(signal.SIGHUP)
        self.recv(sock)
        self.recv(sock)
        self.assertIn("buildcachefs: warning: SIGHUP: %s: options changed; applied at the next "
                      "mount, not to this one\n" % config, self.log_text())
        self.write_config("mountpoint = \n")
        proc.send_signal(signal.SIGHUP)
        self.recv(sock)
        msg = self.recv(sock)
        self.assertTrue(msg.startswith("READY=1\nSTATUS=Serving 1 source at %s (reload failed: %s:1:14: "
                                       "bad TOML:" % (self.mnt, config)), msg)
        self.assertIn("buildcachefs: error: SIGHUP: not reloaded, the running configuration "
                      "stays: %s:1:14: bad TOML:" % config, self.log_text())
        self.assertEqual(mount_fstype(self.mnt), "fuse.buildcachefs")
        self.assertEqual(sorted(os.listdir(self.mnt)), [".buildcachefs", "cache"])

        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(timeout=30), 0, self.log_text())
        self.assertIsNone(mount_fstype(self.mnt))
        self.assertEqual(self.recv(sock), "STOPPING=1\nSTATUS=Unmounted " + self.mnt)
        self.assertIn("buildcachefs: info: unmounted %s\n" % self.mnt, self.log_text())

    def test_abstract_notify_socket(self):
        config = self.write_config(self.base_config())
        name = "@bcfs-svc-test-%d" % os.getpid()
        proc, sock = self.start(config, name)
        self.assertEqual(self.recv(sock), "STATUS=Reading 1 source")
        self.assertEqual(self.recv(sock), "READY=1\nSTATUS=Serving 1 source at " + self.mnt)
        self.assertEqual(os.stat(self.mnt).st_ino, FUSE_ROOT_INO)
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(timeout=30), 0)
        self.assertIsNone(mount_fstype(self.mnt))


class Config(Base):
    def run_mount(self, *args):
        return subprocess.run([ARGS.bin, "mount", *args], capture_output=True, text=True,
                              timeout=60)

    def test_arguments_override_the_file(self):
        other = os.path.join(self.tmp, "other")
        os.mkdir(other)
        config = self.write_config(self.base_config('mountpoint = "nowhere"\n')
                                   .replace('mountpoint = "mnt"\n', ""))
        r = self.run_mount("--config", config, "type=local,src=%s,as=mine" % self.cache, other)
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        self.addCleanup(self.force_unmount, other)
        self.assertEqual(sorted(os.listdir(other)), [".buildcachefs", "mine"])
        subprocess.run(["umount", other], check=True)
        self.assertTrue(wait_unmounted(other))

    def test_errors_name_the_place(self):
        cases = [
            ("bad_toml.toml", 'mountpoint = "mnt"\noptions = [\n',
             "bad TOML: Error while parsing array: encountered end-of-file", "2:13"),
            ("unknown.toml", 'mountpoint = "mnt"\n[[source]]\nsource = "type=local,src=x"\n'
             '[gc]\n[[gc.policy]]\nkeepDuraton = "1h"\n',
             "gc.policy[0].keepDuraton: unknown key (a policy has keepDuration, reservedSpace, "
             "maxUsedSpace, minFreeSpace, filters, all, keepBytes)", "6:15"),
            ("unknown_top.toml", 'mountpoint = "mnt"\nstatedir = "x"\n',
             'unknown key "statedir" (want mountpoint, state_dir, options, source, gc, '
             'gc_interval, refresh_interval, log_level, metrics_addr)', "2:1"),
            ("bad_source.toml", '[[source]]\nsource = "type=local,src=/x,,"\n',
             "source[0]: source string: field 3 of 4 is empty (a trailing or doubled comma?)",
             "2:10"),
            ("bad_size.toml", '[gc]\nmaxUsedSpace = "12 parsecs"\n',
             'gc.maxUsedSpace: invalid size "12 parsecs": expected bytes or a number with a '
             'binary unit ("512MB" = 512 MiB, "1GB", "32k")', "2:16"),
        ]
        for name, text, msg, where in cases:
            with self.subTest(name):
                path = self.write_config(text, name)
                r = self.run_mount("-f", "--config", path)
                self.assertEqual((r.returncode, r.stderr),
                                 (2, "buildcachefs mount: %s:%s: %s\n" % (path, where, msg)))
                self.assertIsNone(mount_fstype(self.mnt))

    def test_a_missing_file_is_named(self):
        r = self.run_mount("--config", os.path.join(self.tmp, "none.toml"))
        self.assertEqual((r.returncode, r.stderr),
                         (1, "buildcachefs mount: read config %s: No such file or directory\n"
                          % os.path.join(self.tmp, "none.toml")))


class Installed(Base):
    """A `cmake --install` into a temp prefix; the mount helpers land in /sbin."""

    HELPERS = ("/sbin/mount.fuse.buildcachefs", "/sbin/mount.buildcachefs")

    def setUp(self):
        super().setUp()
        self.build = os.path.dirname(os.path.dirname(ARGS.bin))
        need(os.path.exists(os.path.join(self.build, "CMakeCache.txt")),
             "no build dir above " + ARGS.bin)
        for h in self.HELPERS:
            if os.path.lexists(h):
                saved = os.path.join(self.tmp, os.path.basename(h) + ".saved")
                shutil.move(h, saved)
                self.addCleanup(shutil.move, saved, h)
            self.addCleanup(lambda h=h: os.path.lexists(h) and os.unlink(h))
        self.prefix = os.path.join(self.tmp, "root", "usr")
        r = subprocess.run(["cmake", "--install", self.build, "--prefix", self.prefix],
                           capture_output=True, text=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.units = os.path.join(self.prefix, "lib", "systemd", "system")


class Fstab(Installed):
    def nobody_cat(self, path):
        return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                               "cat", path], capture_output=True, text=True)

    def test_mount_t_fuse_buildcachefs_runs_the_helper_and_allow_other_decides(self):
        with open(self.HELPERS[0]) as f:
            self.assertIn('bin="%s/bin/buildcachefs"\n' % self.prefix, f.read())
        self.assertEqual(os.readlink(self.HELPERS[1]), "mount.fuse.buildcachefs")
        state_existed = os.path.exists("/var/lib/buildcachefs")
        if not state_existed:
            self.addCleanup(shutil.rmtree, "/var/lib/buildcachefs", True)
        os.chmod(self.tmp, 0o755)  # uid 65534 must reach the mountpoint
        index = os.path.join(self.mnt, "cache", "index.json")
        src = "type=local,src=" + self.cache

        r = subprocess.run(["mount", "-t", "fuse.buildcachefs", src, self.mnt,
                            "-o", "ro,allow_other,_netdev,nofail"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        self.assertEqual(mount_fstype(self.mnt), "fuse.buildcachefs")
        with open(index) as f:
            want = f.read()
        self.assertIn('"schemaVersion":2', want)
        r = self.nobody_cat(index)
        self.assertEqual((r.returncode, r.stdout), (0, want))
        subprocess.run(["umount", self.mnt], check=True)
        self.assertTrue(wait_unmounted(self.mnt))

        # An fstab line, through mount(8)'s -T (an alternative fstab).
        fstab = os.path.join(self.tmp, "fstab")
        with open(fstab, "w") as f:
            f.write("%s %s fuse.buildcachefs ro,_netdev,nofail 0 0\n" % (src, self.mnt))
        r = subprocess.run(["mount", "-T", fstab, self.mnt], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        self.assertEqual(mount_fstype(self.mnt), "fuse.buildcachefs")
        with open(index) as f:
            self.assertEqual(f.read(), want)
        r = self.nobody_cat(index)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr, "cat: %s: %s\n" % (index, os.strerror(errno.EACCES)))
        subprocess.run(["umount", self.mnt], check=True)
        self.assertTrue(wait_unmounted(self.mnt))


class Systemd(Installed):
    FORBIDDEN = ("ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices",
                 "PrivateMounts", "ReadOnlyPaths", "ReadWritePaths", "InaccessiblePaths",
                 "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
                 "ProtectControlGroups", "TemporaryFileSystem", "BindPaths",
                 "BindReadOnlyPaths", "MountFlags", "DynamicUser")

    def setUp(self):
        need(shutil.which("systemd-analyze") is not None, "systemd-analyze is not installed")
        super().setUp()

    def test_units_verify_clean_and_create_no_mount_namespace(self):
        env = dict(os.environ, MANPATH=os.path.join(self.prefix, "share", "man"))
        for unit in ("buildcachefs.service", "buildcachefs@ci.service"):
            with self.subTest(unit):
                r = subprocess.run(["systemd-analyze", "verify", unit], cwd=self.units, env=env,
                                   capture_output=True, text=True, timeout=120)
                self.assertEqual((r.returncode, r.stdout, r.stderr), (0, "", ""))
        for unit in ("buildcachefs.service", "buildcachefs@.service"):
            with open(os.path.join(self.units, unit)) as f:
                text = f.read()
            self.assertIn("ExecStart=%s/bin/buildcachefs mount -f --config " % self.prefix, text)
            self.assertIn("\nType=notify\n", text)
            keys = {l.split("=", 1)[0] for l in text.splitlines()
                    if "=" in l and not l.startswith("#")}
            self.assertEqual(keys & set(self.FORBIDDEN), set())

    def test_security_offline_runs(self):
        r = subprocess.run(["systemd-analyze", "security", "--offline=yes",
                            "buildcachefs.service"], cwd=self.units, capture_output=True,
                           text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("Overall exposure level for buildcachefs.service:", r.stdout)

    def test_tmpfiles_creates_the_state_dir(self):
        root = os.path.join(self.tmp, "tmpfiles-root")
        os.mkdir(root)
        conf = os.path.join(self.prefix, "lib", "tmpfiles.d", "buildcachefs.conf")
        r = subprocess.run(["systemd-tmpfiles", "--create", "--root=" + root, conf],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        st = os.stat(os.path.join(root, "var", "lib", "buildcachefs"))
        self.assertEqual(oct(st.st_mode & 0o7777), oct(0o700))
        self.assertEqual((st.st_uid, st.st_gid), (0, 0))


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--gen", required=True)
    ap.add_argument("--shared", required=True)
    ARGS, rest = ap.parse_known_args()
    ARGS.bin = os.path.abspath(ARGS.bin)
    ARGS.shared = os.path.abspath(ARGS.shared)
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
