#!/usr/bin/env python3
"""End-to-end security checks of a real mount (as root): what a cache's content or a
user's options could use to gain privileges, reach outside the mount, or leak a secret.

  1. MountFlags: `-o suid,dev` (and `rw`) still mount ro,nosuid,nodev (/proc/self/mountinfo).
  2. LayerPermissions (hand-made layer, `-o suid,dev,allow_other`): a setuid-root copy of
     /usr/bin/id run by uid 65534 (setpriv) does not get euid 0; a 0600 root file and a
     file in a 0700 root directory are refused (EACCES) to uid 65534, a 0644 one is
     readable; a character device in a layer cannot be opened, even by root (nodev).
  3. HostileLayers: a layer with `..`, absolute names, symlink and hard-link tricks: every
     node under the mount that is not a symlink resolves inside the mount, symlinks show
     their stored targets (never followed by the daemon), no file shows a host file's
     bytes, nothing is created outside the mount (source folder and state dir unchanged
     apart from the state dir's own files, none of them named after a hostile entry).
  4. Secrets: a registry (basic auth) with a distinctive password in DOCKER_CONFIG, and
     source strings with fake secrets: neither shows in the command's output, the daemon
     log, status.json, any xattr of any node, `buildcachefs ls`, or the state dir's files.
  5. Tls: a registry source whose host serves HTTPS with a self-signed certificate is
     refused with a certificate error; nothing falls back to plain HTTP.

Run by ctest: security_test.py --bin BUILDCACHEFS --gen BUILDCACHEFS_GEN --shared DIR
Needs root, /dev/fuse, fusermount3, setpriv, openssl, docker-registry, htpasswd. Outside
CI a non-root run skips the module; under CI any missing prerequisite is a failure.
"""

import base64
import errno
import gzip
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
SERVERS = os.path.join(REPO_ROOT, "tests", "servers")
sys.path.insert(0, HERE)
sys.path.insert(0, SERVERS)

import e2e_cli  # noqa: E402
import mount_test as mt  # noqa: E402  (Base: mounts, cleanup, watchdog; helpers)
import layers_test as lt  # noqa: E402  (TarBuilder, write_layout, hostile_tar)
from registry_harness import Registry  # noqa: E402

ARGS = None
NOBODY = 65534
FAULTPROXY = os.path.join(SERVERS, "faultproxy.py")
# Distinctive values: any occurrence anywhere is a leak.
REG_USER = "secuser-4417"
REG_PASSWORD = "Pw-Distinct-Q9z7X-0042"
WRONG_PASSWORD = "Wrong-Pw-Zk31-9913"
FAKE_SECRET = "SEKRET123xyzzy"
FAKE_KEY_ID = "AKIDSEKRET7781"
SECRET_MARKERS = ("SEKRET123", FAKE_KEY_ID, "Pw-Distinct-Q9z7X", "Wrong-Pw-Zk31")
HOSTILE_NAMES = {"escape", "b", "paxescape", "escaped.txt", "benign-name", "shadow-copy",
                 "x-dotdot", "y-dotdot", "z-dotdot", "through-etc"}


def as_nobody(*cmd):
    """Runs cmd as uid/gid 65534 without supplementary groups."""
    return subprocess.run(["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY,
                           "--clear-groups", "--"] + list(cmd),
                          capture_output=True, timeout=60)


def walk(top):
    """Every path under top (relative), symlinks not followed."""
    out = []
    for d, dirs, files in os.walk(top, followlinks=False):
        for n in dirs + files:
            out.append(os.path.relpath(os.path.join(d, n), top))
    return out


def file_snapshot(top):
    """{relative path: (size, mtime_ns)} of everything under top."""
    snap = {}
    for rel in walk(top):
        st = os.lstat(os.path.join(top, rel))
        snap[rel] = (st.st_size, st.st_mtime_ns) if stat.S_ISREG(st.st_mode) else None
    return snap


class Base(mt.Base):
    def setUp(self):
        super().setUp()
        # Other users must be able to reach the mountpoints below tmp.
        os.chmod(self.tmp, 0o755)

    def layout(self, name, tar_bytes):
        root = os.path.join(self.tmp, name)
        digest = lt.write_layout(root, [(gzip.compress(tar_bytes, mtime=0), lt.LAYER_GZIP)])[0]
        return root, digest

    def layer_dir(self, mnt, name, digest):
        return os.path.join(mnt, name, "layers", "sha256", digest.split(":")[1])


# ---------------------------------------------------------------------------
# 1. Mount flags


class MountFlags(Base):
    def check_flags(self, opts):
        root, _ = self.layout("flags", self.plain_tar())
        mnt = self.mount([self.local(root)], opts=opts)
        point, mopts, fstype, sopts = mt.mount_entry(mnt)
        for o in ("ro", "nosuid", "nodev"):
            self.assertIn(o, mopts, "mountinfo of %s with -o %s: %s" % (mnt, opts, mopts))
        for o in ("rw", "suid", "dev"):
            self.assertNotIn(o, mopts, "mountinfo of %s with -o %s: %s" % (mnt, opts, mopts))
        self.assertTrue(fstype == "fuse" or fstype.startswith("fuse."), fstype)
        return mnt

    @staticmethod
    def plain_tar():
        t = lt.TarBuilder()
        t.add("a.txt", data=b"a\n")
        return t.bytes()

    def test_o_suid_dev_still_mounts_ro_nosuid_nodev(self):
        self.check_flags("suid,dev")

    def test_o_rw_suid_dev_exec_allow_other_still_mounts_ro_nosuid_nodev(self):
        self.check_flags("rw,suid,dev,exec,allow_other")


# ---------------------------------------------------------------------------
# 2. Permissions of layer content


class LayerPermissions(Base):
    def setUp(self):
        super().setUp()
        with open(shutil.which("id"), "rb") as f:
            id_bytes = f.read()
        t = lt.TarBuilder()
        t.add("bin", "d", mode=0o755)
        t.add("bin/id-suid", data=id_bytes, mode=0o4755, uid=0, gid=0)
        t.add("bin/id-sgid", data=id_bytes, mode=0o2755, uid=0, gid=0)
        t.add("secret.txt", data=b"root only\n", mode=0o600, uid=0, gid=0)
        t.add("public.txt", data=b"for everyone\n", mode=0o644, uid=0, gid=0)
        t.add("private", "d", mode=0o700, uid=0, gid=0)
        t.add("private/inner.txt", data=b"inside a 0700 dir\n", mode=0o644, uid=0, gid=0)
        t.add("mem", "c", mode=0o666, dev=(1, 1))     # /dev/mem's numbers
        t.add("null", "c", mode=0o666, dev=(1, 3))    # /dev/null's numbers
        t.add("sda", "b", mode=0o666, dev=(8, 0))
        self.root, digest = self.layout("perm", t.bytes())
        self.mnt = self.mount([self.local(self.root)], opts="suid,dev,allow_other")
        self.top = self.layer_dir(self.mnt, "perm", digest)

    def test_setuid_root_executable_run_by_nobody_does_not_get_euid_0(self):
        for name in ("id-suid", "id-sgid"):
            path = os.path.join(self.top, "bin", name)
            st = os.stat(path)
            self.assertEqual((st.st_uid, st.st_gid), (0, 0), name)
            p = as_nobody(path)
            self.assertEqual(p.returncode, 0, "%s did not run: %s" % (name, p.stderr))
            out = p.stdout.decode()
            self.assertIn("uid=%d" % NOBODY, out)
            self.assertNotIn("euid=", out, "%s ran with another effective id: %s" % (name, out))
            self.assertNotIn("egid=", out, "%s ran with another effective id: %s" % (name, out))
            for flag in ("-u", "-g"):
                p = as_nobody(path, flag)
                self.assertEqual((p.returncode, p.stdout.strip()), (0, str(NOBODY).encode()),
                                 "%s %s: %s" % (name, flag, p.stderr))

    def test_0600_root_file_is_refused_to_another_user_and_0644_is_readable(self):
        p = as_nobody("cat", os.path.join(self.top, "secret.txt"))
        self.assertNotEqual(p.returncode, 0, "uid %d read a 0600 root file" % NOBODY)
        self.assertIn(b"Permission denied", p.stderr)
        self.assertEqual(p.stdout, b"")
        p = as_nobody("cat", os.path.join(self.top, "private", "inner.txt"))
        self.assertNotEqual(p.returncode, 0, "uid %d read through a 0700 root dir" % NOBODY)
        self.assertIn(b"Permission denied", p.stderr)
        p = as_nobody("ls", os.path.join(self.top, "private"))
        self.assertNotEqual(p.returncode, 0, "uid %d listed a 0700 root dir" % NOBODY)
        p = as_nobody("cat", os.path.join(self.top, "public.txt"))
        self.assertEqual((p.returncode, p.stdout), (0, b"for everyone\n"), p.stderr)
        # Root itself reads both (the refusal comes from the modes, not from the daemon).
        self.assertEqual(mt.read_all(os.path.join(self.top, "secret.txt")), b"root only\n")

    def test_device_nodes_in_a_layer_cannot_be_opened_even_by_root(self):
        for name in ("mem", "null", "sda"):
            path = os.path.join(self.top, name)
            st = os.lstat(path)
            self.assertTrue(stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode), name)
            with self.assertRaises(OSError, msg=name) as cm:
                fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
                os.close(fd)
            self.assertEqual(cm.exception.errno, errno.EACCES, name)


# ---------------------------------------------------------------------------
# 3. Hostile layers


def hostile_plus_tar():
    """layers_test.hostile_tar() and more: writes and hard links through symlinks, deep
    `..` chains, a self loop, a file replaced by a symlink to a host file."""
    t = lt.TarBuilder()
    t.add("good.txt", data=b"the good one\n")
    t.add("../escape", data=b"escaped!\n")
    t.add("/abs/file", data=b"absolute\n")
    t.add("a/../../b", data=b"dotdot\n")
    t.add("passwd-link", "l", target="/etc/passwd")
    t.add("up", "l", target="../../../..")
    t.add("up/escaped.txt", data=b"through the symlink\n")
    t.add("hl-missing", "h", target="no/such/file")
    t.add("hl-dotdot", "h", target="../../../../etc/passwd")
    t.add("benign-name", data=b"pax escape\n", pax={"path": "x/../../paxescape"})
    t.add("etc-link", "l", target="/etc")
    t.add("etc-link/shadow-copy", data=b"written through a link\n")
    t.add("through-etc", "h", target="etc-link/passwd")
    t.add("abs-hl", "h", target="/etc/passwd")
    t.add("dir/../../../x-dotdot", data=b"x\n")
    t.add("./././../y-dotdot", data=b"y\n")
    t.add("q/r/s/../../../../z-dotdot", data=b"z\n")
    t.add("loop", "l", target="loop")
    t.add("victim.txt", data=b"victim\n")
    t.add("victim.txt", "l", target="/etc/shadow")   # a later entry replaces the file
    t.add("d", "d")
    t.add("d", "l", target="/etc")                   # a directory replaced by a link
    t.add("d/hosts-copy", data=b"written into a replaced dir\n")
    t.add("zz-last.txt", data=b"after the hostile ones\n")
    return t.bytes()


class HostileLayers(Base):
    def host_files(self):
        out = {}
        for p in ("/etc/passwd", "/etc/shadow", "/etc/hosts", "/etc/group"):
            try:
                out[p] = mt.read_all(p)
            except OSError:
                pass
        return out

    def test_nothing_in_a_hostile_layer_escapes_the_mount(self):
        root, digest = self.layout("hostile", hostile_plus_tar())
        before_src = file_snapshot(root)
        state = tempfile.mkdtemp(prefix="state-", dir=self.tmp)
        outside = os.path.dirname(self.tmp)
        before_outside = set(os.listdir(outside))
        before_root = set(os.listdir("/"))
        mnt = self.mount([self.local(root)], state=state)
        top = self.layer_dir(mnt, "hostile", digest)
        self.assertTrue(os.path.isdir(top))
        paths = walk(mnt)  # the whole mount: layers, snapshots, refs
        self.assertTrue(any(p.startswith("hostile/refs/") for p in paths), paths[:20])
        host = self.host_files()

        bad_real, bad_bytes, bad_dotdot, links = [], [], [], {}
        for rel in paths:
            path = os.path.join(mnt, rel)
            st = os.lstat(path)
            if ".." in rel.split("/"):
                bad_dotdot.append(rel)
            if stat.S_ISLNK(st.st_mode):
                links[rel] = os.readlink(path)
                continue
            real = os.path.realpath(path)
            if not real.startswith(mnt + "/"):
                bad_real.append((rel, real))
            if stat.S_ISREG(st.st_mode):
                try:
                    data = mt.read_all(path)
                except OSError:
                    continue  # an unreadable entry cannot leak anything
                for hp, hb in host.items():
                    if hb and data == hb:
                        bad_bytes.append((rel, hp))
        with self.subTest(check="every non-symlink resolves inside the mount"):
            self.assertEqual(bad_real, [])
        with self.subTest(check="no name is `..`"):
            self.assertEqual(bad_dotdot, [])
        with self.subTest(check="no file shows a host file's bytes (hard links to outside)"):
            self.assertEqual(bad_bytes, [])
        with self.subTest(check="symlinks keep their stored targets, never resolved"):
            layer_links = {r[len(os.path.relpath(top, mnt)) + 1:]: t for r, t in links.items()
                           if r.startswith(os.path.relpath(top, mnt) + "/")}
            self.assertEqual(layer_links.get("passwd-link"), "/etc/passwd")
            self.assertEqual(layer_links.get("etc-link"), "/etc")
            self.assertEqual(layer_links.get("loop"), "loop")
            self.assertEqual(layer_links.get("victim.txt"), "/etc/shadow")
            # Nothing was shown below a symlink's name (the kernel would follow it).
            for name in ("etc-link", "up", "d", "loop", "passwd-link"):
                if name in layer_links:
                    self.assertFalse([p for p in layer_links if p.startswith(name + "/")])
        with self.subTest(check="no hostile name appears outside the layer folder"):
            for d in (mnt, os.path.join(mnt, "hostile"),
                      os.path.join(mnt, "hostile", "layers"),
                      os.path.join(mnt, "hostile", "layers", "sha256")):
                self.assertFalse(set(os.listdir(d)) & HOSTILE_NAMES, d)
        with self.subTest(check="nothing created outside the mount"):
            self.assertEqual(file_snapshot(root), before_src)
            self.assertEqual(set(os.listdir(outside)) - before_outside - {".pytest_cache"},
                             set())
            self.assertEqual(set(os.listdir("/")), before_root)
            for p in ("/etc/shadow-copy", "/etc/hosts-copy", "/escape", "/b", "/paxescape",
                      "/x-dotdot", "/y-dotdot", "/z-dotdot"):
                self.assertFalse(os.path.lexists(p), p)
            for rel in walk(state):
                full = os.path.join(state, rel)
                self.assertTrue(os.path.realpath(full).startswith(state + "/"), full)
                self.assertNotIn(os.path.basename(rel), HOSTILE_NAMES, full)
        with self.subTest(check="the good entries are all there"):
            self.assertEqual(mt.read_all(os.path.join(top, "good.txt")), b"the good one\n")
            self.assertEqual(mt.read_all(os.path.join(top, "zz-last.txt")),
                             b"after the hostile ones\n")


# ---------------------------------------------------------------------------
# 4. Secrets


class Secrets(Base):
    def env(self, docker_config):
        e = dict(os.environ)
        e["DOCKER_CONFIG"] = docker_config
        return e

    def run_cmd(self, args, env=None):
        p = subprocess.run([ARGS.bin] + args, capture_output=True, text=True, timeout=120,
                           env=env, stdin=subprocess.DEVNULL)
        return p.returncode, p.stdout + p.stderr

    def run_mount_env(self, sources, env, opts=None):
        """(rc, output, mnt, state) of `buildcachefs mount`; the daemon logs to a file."""
        state = tempfile.mkdtemp(prefix="state-", dir=self.tmp)
        mnt = tempfile.mkdtemp(prefix="mnt-", dir=self.tmp)
        self._mounts.append(mnt)
        self.addCleanup(self.unmount, mnt)
        cmd = [ARGS.bin, "mount", "--state-dir", state]
        if opts:
            cmd += ["-o", opts]
        cmd += list(sources) + [mnt]
        log = os.path.join(self.tmp, "mount-%d.log" % len(os.listdir(self.tmp)))
        self.logs[mnt] = log
        with open(log, "wb") as out:
            p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                               timeout=mt.MOUNT_TIMEOUT, env=env)
        with open(log, "rb") as f:
            return p.returncode, f.read().decode(errors="replace"), mnt, state

    def assert_no_secret(self, where, text, secrets):
        for s in secrets:
            self.assertNotIn(s, text, "%s shows the secret %r:\n%s" % (where, s, text[-4000:]))

    def all_xattrs(self, mnt):
        """One string with every xattr name and value of every node (not followed)."""
        parts = []
        for rel in [""] + walk(mnt):
            path = os.path.join(mnt, rel)
            try:
                names = os.listxattr(path, follow_symlinks=False)
            except OSError as e:
                parts.append("%s: listxattr: %s" % (rel, e))
                continue
            for n in names:
                try:
                    v = os.getxattr(path, n, follow_symlinks=False)
                except OSError as e:
                    v = str(e).encode()
                parts.append("%s %s=%s" % (rel, n, v.decode(errors="replace")))
        return "\n".join(parts)

    def state_bytes(self, state):
        """Every file of the state dir, as text (SQLite pages included)."""
        parts = []
        for rel in walk(state):
            p = os.path.join(state, rel)
            if os.path.isfile(p) and not os.path.islink(p):
                parts.append(mt.read_all(p).decode("latin-1"))
        return "\n".join(parts)

    def test_registry_credentials_never_appear_anywhere(self):
        reg = Registry("basic")
        reg.creds = (REG_USER, REG_PASSWORD)
        reg.start()
        self.addCleanup(reg.stop)
        root, digest = self.layout("reg-layout", small_tar())
        reg.push_layout(root, "sec", tag="main")
        dc = reg.docker_config(tempfile.mkdtemp(prefix="docker-", dir=self.tmp))
        env = self.env(dc)
        auth_b64 = base64.b64encode(("%s:%s" % (REG_USER, REG_PASSWORD)).encode()).decode()
        secrets = (REG_PASSWORD, auth_b64)
        source = "type=registry,ref=%s/sec:main,as=reg" % reg.host
        rc, out, mnt, state = self.run_mount_env([source], env, opts="log_level=debug")
        if rc != 0 and "log_level" in out:  # the option may not exist: mount without it
            rc, out, mnt, state = self.run_mount_env([source], env)
        self.assertEqual(rc, 0, out)
        # Read every file: every blob is fetched with the credentials.
        for rel in walk(mnt):
            p = os.path.join(mnt, rel)
            if os.path.isfile(p) and not os.path.islink(p):
                try:
                    mt.read_all(p)
                except OSError:
                    pass
        self.assertEqual(mt.read_all(os.path.join(self.layer_dir(mnt, "reg", digest),
                                                  "public.txt")), b"for everyone\n")
        status = mt.read_all(os.path.join(mnt, ".buildcachefs", "status.json")).decode()
        json.loads(status)
        self.assert_no_secret("status.json", status, secrets)
        self.assert_no_secret("xattrs", self.all_xattrs(mnt), secrets)
        self.assert_no_secret("the mount command's output", out, secrets)
        for args in (["ls", source], ["ls", source, "--format", "json"],
                     ["ls", source, "--tree"], ["ls", source, "--log-level", "debug"]):
            rc2, out2 = self.run_cmd(args, env)
            self.assertEqual(rc2, 0, out2)
            self.assert_no_secret("buildcachefs " + " ".join(args), out2, secrets)
        self.unmount(mnt)
        with open(self.logs[mnt], "rb") as f:
            self.assert_no_secret("the daemon log", f.read().decode(errors="replace"), secrets)
        self.assert_no_secret("the state dir's files", self.state_bytes(state), secrets)

        # A wrong password: refused, and the refusal does not quote it.
        bad = reg.docker_config(tempfile.mkdtemp(prefix="docker-", dir=self.tmp),
                                (REG_USER, WRONG_PASSWORD))
        bad_b64 = base64.b64encode(("%s:%s" % (REG_USER, WRONG_PASSWORD)).encode()).decode()
        rc, out = self.run_cmd(["ls", source], self.env(bad))
        self.assertNotEqual(rc, 0, out)
        self.assert_no_secret("ls with a wrong password", out, (WRONG_PASSWORD, bad_b64))
        rc, out, mnt, state = self.run_mount_env([source], self.env(bad))
        if rc == 0:
            status = mt.read_all(os.path.join(mnt, ".buildcachefs", "status.json")).decode()
            self.assert_no_secret("status.json (wrong password)", status,
                                  (WRONG_PASSWORD, bad_b64))
            self.assert_no_secret("xattrs (wrong password)", self.all_xattrs(mnt),
                                  (WRONG_PASSWORD, bad_b64))
            self.unmount(mnt)
        with open(self.logs[mnt], "rb") as f:
            self.assert_no_secret("mount with a wrong password", f.read().decode(
                errors="replace"), (WRONG_PASSWORD, bad_b64))

    def test_secrets_in_source_strings_never_appear_in_errors_or_status(self):
        # Endpoints nothing listens on (port 9 discard; connection refused): every source
        # fails or is unsupported, and its error must not quote a secret.
        sources = [
            "type=s3,bucket=b,region=eu-west-1,endpoint_url=http://127.0.0.1:9,"
            "access_key_id=%s,secret_access_key=%s,session_token=%s,as=s3"
            % (FAKE_KEY_ID, FAKE_SECRET, FAKE_SECRET + "tok"),
            "type=s3,bucket=b,region=eu-west-1,"
            "endpoint_url=http://u:%s@127.0.0.1:9/?X-Amz-Signature=%s,as=s3url"
            % (FAKE_SECRET, FAKE_SECRET),
            "type=azblob,account_url=http://127.0.0.1:9/acct?sv=1&sig=%s,name=main,"
            "secret_access_key=%s,as=az" % (FAKE_SECRET, FAKE_SECRET),
            "type=gha,scope=img,url=http://127.0.0.1:9/,token=%s,as=gha" % FAKE_SECRET,
            # Bad strings whose error names the culprit: the value must not be quoted.
            "type=s3,bucket=b,secret_access_key=%s,nope=1" % FAKE_SECRET,
            "type=s3,bucket=b,secret_access_key=%s,secret_access_key=%s"
            % (FAKE_SECRET, FAKE_SECRET),
            "type=registry,ref=127.0.0.1:9/x:y,token=%s" % FAKE_SECRET,
            "type=local,src=/nonexistent,token=%s" % FAKE_SECRET,
        ]
        env = dict(os.environ)
        for source in sources:
            with self.subTest(source=source.split(",")[0] + "," + source.split(",")[-1]):
                for args in (["ls", source], ["ls", source, "--format", "json"]):
                    rc, out = self.run_cmd(args, env)
                    self.assertNotEqual(rc, 0, "%s succeeded:\n%s" % (args, out))
                    self.assertTrue(out.strip(), "no error message for %s" % args)
                    self.assert_no_secret("buildcachefs " + args[0], out, SECRET_MARKERS)
                rc, out, mnt, state = self.run_mount_env([source], env)
                if rc == 0:
                    status = mt.read_all(os.path.join(mnt, ".buildcachefs",
                                                      "status.json")).decode()
                    self.assert_no_secret("status.json", status, SECRET_MARKERS)
                    self.assert_no_secret("xattrs", self.all_xattrs(mnt), SECRET_MARKERS)
                    self.unmount(mnt)
                with open(self.logs[mnt], "rb") as f:
                    self.assert_no_secret("mount output and daemon log",
                                          f.read().decode(errors="replace"), SECRET_MARKERS)
                if os.path.isdir(state):
                    self.assert_no_secret("the state dir's files", self.state_bytes(state),
                                          SECRET_MARKERS)


def small_tar():
    t = lt.TarBuilder()
    t.add("public.txt", data=b"for everyone\n", mode=0o644)
    t.add("secret.txt", data=b"root only\n", mode=0o600)
    return t.bytes()


# ---------------------------------------------------------------------------
# 5. TLS


class Tls(Base):
    def start_tls_server(self):
        d = tempfile.mkdtemp(prefix="tls-", dir=self.tmp)
        cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=0.0.0.0", "-addext", "subjectAltName=IP:0.0.0.0,IP:127.0.0.1",
                        "-keyout", key, "-out", cert], check=True, capture_output=True,
                       timeout=120)
        serve = os.path.join(d, "www")
        os.makedirs(os.path.join(serve, "v2"))
        ready = os.path.join(d, "ready")
        log = open(os.path.join(d, "proxy.log"), "wb")
        self.addCleanup(log.close)
        proc = subprocess.Popen([sys.executable, FAULTPROXY, "--listen", "0", "--serve", serve,
                                 "--tls-cert", cert, "--tls-key", key, "--ready-file", ready,
                                 "--exit-with-stdin", "--verbose"],
                                stdin=subprocess.PIPE, stdout=log, stderr=log)

        def stop():
            proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.addCleanup(stop)
        for _ in range(400):
            if os.path.exists(ready):
                with open(ready) as f:
                    port = f.read().strip()
                if port:
                    return int(port), os.path.join(d, "proxy.log")
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        self.fail("faultproxy did not start (see %s)" % log.name)

    def test_a_self_signed_registry_is_refused_with_a_certificate_error(self):
        port, proxy_log = self.start_tls_server()
        # 0.0.0.0 reaches the local listener but is not a loopback name, so the
        # registry backend speaks HTTPS (loopback names get plain HTTP, as BuildKit).
        source = "type=registry,ref=0.0.0.0:%d/sec:main,as=tls" % port
        p = subprocess.run([ARGS.bin, "ls", source], capture_output=True, text=True,
                           timeout=120, stdin=subprocess.DEVNULL)
        out = p.stdout + p.stderr
        self.assertNotEqual(p.returncode, 0, out)
        self.assertRegex(out.lower(), r"certificate|ssl|tls", out)
        self.assertNotIn("http://0.0.0.0", out)
        mnt = tempfile.mkdtemp(prefix="mnt-", dir=self.tmp)
        self._mounts.append(mnt)
        self.addCleanup(self.unmount, mnt)
        rc, mout = self.run_mount([source], mnt)
        if rc == 0:
            status = mt.read_all(os.path.join(mnt, ".buildcachefs", "status.json")).decode()
            self.assertRegex(status.lower(), r"certificate|ssl|tls", status)
            self.assertEqual(os.listdir(os.path.join(mnt, "tls", "refs")), [])
        else:
            self.assertRegex(mout.lower(), r"certificate|ssl|tls", mout)
        # Every request the server logged came over TLS (a plain-HTTP fallback would have
        # shown a failed handshake with an HTTP verb, or a request it answered).
        with open(proxy_log, "rb") as f:
            plog = f.read().decode(errors="replace")
        self.assertNotRegex(plog, r"GET /v2/", plog)


def setUpModule():
    mt.check_prerequisites("security tests", ARGS,
                           ("setpriv", "openssl", "id", "cat", "ls", "docker-registry",
                            "htpasswd"))
    mt.ARGS = ARGS  # mount_test's helpers read their own module's ARGS
    lt.ARGS = ARGS


if __name__ == "__main__":
    e2e_cli.main()
