#!/usr/bin/env python3
"""End-to-end tests of S3 sources (`type=s3`): real FUSE mounts, as root, of caches in
BuildKit's S3 layout (FORMATS.md §5) uploaded key for key into moto's S3 server, which
tests/servers/moto_harness.py starts on 127.0.0.1 with SigV4 checked (IAM auth on).

Expectations are computed here from the uploaded files with json, hashlib and tarfile
(another route than the code under test): the synthesized manifest of each ref is built
in Python from DESIGN.md §1.5 and FORMATS.md §5.5, every blob must hash to its name and
equal the uploaded bytes, layer folders must hold the tar's files. The `s3-bucket` fixture
is copied from ../shared before use; nothing in ../shared is written.

  1. FixtureBucket: every object of the s3-bucket fixture (v0.12.5 and v0.11.6 exports,
     default and v0.11.6/ prefixes, name=a;b;c and no name=) read back byte for byte.
  2. GeneratedLayouts: caches our own generator writes in the S3 layout (several names, a
     nested name, prefix without a slash, other blobs_/manifests_ prefixes, a manifest
     naming a missing blob: only that blob's reads fail, EIO, .error names it), listing
     with continuation tokens (1001 blob objects).
  3. Credentials: from the environment, AWS_PROFILE with shared files, the source string;
     a wrong secret and an unknown key make `ls` exit 1 naming the bucket and the key, and
     no secret appears in any output.
  4. DeadServer: a source whose server dies (and one that never answered) is a clear error
     while the rest of the mount keeps serving.

Run by ctest: s3_test.py --bin BUILDCACHEFS --gen BUILDCACHEFS_GEN --shared DIR
Needs root, /dev/fuse, fusermount3 and moto + boto3 in this Python (scripts/deps-moto.sh).
Outside CI a non-root run skips the module; under CI any missing prerequisite fails.
"""

import argparse
import errno
import gzip
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import unittest
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO_ROOT, "tests", "servers"))

import mount_test as mt  # noqa: E402  (Base: mounts, cleanup, watchdog; helpers)

ARGS = None
MOTO = None  # one server (auth on) for the module
CACHECONFIG = "application/vnd.buildkit.cacheconfig.v0"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
X = "user.buildcachefs."
REGION = "us-east-1"
_bucket_seq = [0]


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def getx(path, name):
    try:
        return os.getxattr(path, X + name).decode()
    except OSError:
        return None


def new_bucket(tag):
    _bucket_seq[0] += 1
    b = "bcfs-%s-%d-%d" % (tag, os.getpid(), _bucket_seq[0])
    MOTO.create_bucket(b)
    return b


def upload_tree(bucket, root):
    """Every file under root as the object whose key is its relative path."""
    files = []
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            files.append((os.path.relpath(p, root), p))
    client = MOTO.client()
    with ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda kp: client.upload_file(kp[1], bucket, kp[0]), files))
    return sorted(k for k, _ in files)


def object_times(bucket):
    """{key: {"listed": ns, "head": ns}}: each object's LastModified as ListObjectsV2 reports
    it (milliseconds) and as HEAD does (an HTTP date: whole seconds)."""
    import calendar
    import email.utils
    c = MOTO.client()
    out = {}
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            lm = o["LastModified"]
            ns = (calendar.timegm(lm.utctimetuple()) * 10**9 + lm.microsecond * 1000)
            out[o["Key"]] = {"listed": ns}
    for key, t in out.items():
        r = c.head_object(Bucket=bucket, Key=key)
        date = r["ResponseMetadata"]["HTTPHeaders"]["last-modified"]
        t["head"] = int(email.utils.parsedate_to_datetime(date).timestamp()) * 10**9
    return out


def synthesize(config_bytes):
    """DESIGN.md §1.5 / FORMATS.md §5.5: the index-shape manifest of an S3 cache config:
    one descriptor per distinct layer blob in config order, the config last; compact JSON,
    fixed key order; createdat left out when zero."""
    cfg = json.loads(config_bytes)
    out, seen = [], set()
    for l in cfg.get("layers") or []:
        if l["blob"] in seen:
            continue
        seen.add(l["blob"])
        a = l["annotations"]
        ann = {}
        created = a.get("createdAt", "")
        if created and not created.startswith("0001-01-01"):
            ann["buildkit/createdat"] = created
        ann["containerd.io/uncompressed"] = a["diffID"]
        out.append({"mediaType": a["mediaType"], "digest": l["blob"], "size": a["size"],
                    "annotations": ann})
    out.append({"mediaType": CACHECONFIG, "digest": sha256(config_bytes),
                "size": len(config_bytes)})
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": out},
                      separators=(",", ":")).encode()


def tar_files(data):
    """{path: bytes} of the regular files of a (gzip) layer tar, whiteouts left out."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        for m in t.getmembers():
            name = m.name.lstrip("./")
            if m.isreg() and not os.path.basename(name).startswith(".wh."):
                out[name] = t.extractfile(m).read()
    return out


class Base(mt.Base):
    def env(self, **extra):
        e = dict(os.environ)
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                  "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):
            e.pop(k, None)
        e["HOME"] = self.tmp  # no ~/.aws of the machine
        e.update(extra)
        return e

    def source(self, bucket, *extra):
        return ",".join(["type=s3", "bucket=" + bucket, "endpoint_url=" + MOTO.url,
                         "use_path_style=true", "region=" + REGION] + list(extra))

    def mount_env(self, sources, env):
        """mt.Base.mount with an environment for the command and its daemon."""
        return self.mount(sources, env=env)

    def ls(self, source, env, *extra):
        return subprocess.run([ARGS.bin, "ls", source] + list(extra), capture_output=True,
                              text=True, timeout=180, env=env)

    def check_ref(self, src, name, config_bytes, blobs, times=None):
        """refs/<name>: documents, xattrs, and every layer blob byte-exact (blobs: digest ->
        bytes, of every blob the bucket holds for this source). times: (the manifest's key,
        object_times(bucket)) to check mtimes against what the server reports."""
        base = os.path.join(src, "refs", mt.encode_ref(name))
        manifest = synthesize(config_bytes)
        self.assertEqual(getx(base, "ref"), name)
        self.assertEqual(getx(base, "digest"), sha256(manifest))
        self.assertEqual(mt.read_all(os.path.join(base, "manifest.json")), manifest)
        self.assertEqual(mt.read_all(os.path.join(base, "cache-config.json")), config_bytes)
        bdir = os.path.join(src, "blobs", "sha256")
        # The manifest is synthesized and says so; the config is the stored object.
        self.assertEqual(getx(os.path.join(base, "manifest.json"), "synthesized"), "1")
        self.assertEqual(getx(os.path.join(bdir, sha256(manifest)[7:]), "synthesized"), "1")
        self.assertIsNone(getx(os.path.join(base, "cache-config.json"), "synthesized"))
        if times is not None:
            # mtimes: the manifest object's Last-Modified (GET, whole seconds) for the ref's
            # documents, each blob object's LastModified from the listing for blobs.
            mkey, objects = times
            want = objects[mkey]["head"]
            for p in (base, os.path.join(base, "manifest.json"),
                      os.path.join(base, "cache-config.json")):
                self.assertEqual(os.stat(p).st_mtime_ns, want, p)
            for l in json.loads(config_bytes)["layers"]:
                key = mkey[:-len("manifests/") - len(name)] + "blobs/" + l["blob"]
                self.assertEqual(os.stat(os.path.join(bdir, l["blob"][7:])).st_mtime_ns,
                                 objects[key]["listed"], key)
        # Synthesized documents are served under blobs/ too.
        self.assertEqual(mt.read_all(os.path.join(bdir, sha256(manifest)[7:])), manifest)
        self.assertEqual(mt.read_all(os.path.join(bdir, sha256(config_bytes)[7:])),
                         config_bytes)
        for l in json.loads(config_bytes)["layers"]:
            d = l["blob"]
            p = os.path.join(bdir, d[7:])
            self.assertEqual(os.stat(p).st_size, l["annotations"]["size"], d)
            data = mt.read_all(p)
            self.assertEqual(sha256(data), d)
            self.assertEqual(data, blobs[d], "blob %s differs from the uploaded object" % d)
            # Layer contents: the tar's regular files, byte for byte.
            ldir = os.path.join(src, "layers", "sha256", d[7:])
            files = tar_files(data)
            if files:
                self.assertNotEqual(os.listdir(ldir), [], "layers/%s is empty" % d[7:])
                path = max(sorted(files), key=lambda k: len(files[k]))
                self.assertEqual(mt.read_all(os.path.join(ldir, path)), files[path],
                                 "layers/%s/%s" % (d[7:], path))


# ---------------------------------------------------------------------------
# 1. The fixture bucket


class FixtureBucket(Base):
    def test_every_fixture_object_reads_back_byte_exact_through_the_mount(self):
        root = self.fixture("s3-bucket")
        bucket = new_bucket("fix")
        keys = upload_tree(bucket, root)
        self.assertEqual(keys, sorted(MOTO.keys(bucket)))
        env = self.env(**MOTO.env())
        sources = [
            self.source(bucket, "name=main;growth;growth-alias", "as=named"),
            self.source(bucket, "as=all"),  # every object under manifests/
            self.source(bucket, "prefix=v0.11.6/", "name=v0.11.6", "as=old"),
        ]
        mnt = self.mount_env(sources, env)
        self.assertEqual(sorted(os.listdir(mnt)), [".buildcachefs", "all", "named", "old"])

        def blobs_of(prefix):
            bdir = os.path.join(root, prefix + "blobs")
            out = {}
            for n in os.listdir(bdir):
                with open(os.path.join(bdir, n), "rb") as f:
                    out[n] = f.read()
            return out

        plan = (("named", "", ["growth", "growth-alias", "main"]),
                ("all", "", ["growth", "growth-alias", "main"]),
                ("old", "v0.11.6/", ["v0.11.6"]))
        for folder, prefix, names in plan:
            src = os.path.join(mnt, folder)
            with self.subTest(source=folder):
                self.assertIsNone(getx(src, "error"))
                self.assertEqual(sorted(os.listdir(os.path.join(src, "refs"))), names)
                blobs = blobs_of(prefix)
                configs = {}
                for n in names:
                    with open(os.path.join(root, prefix + "manifests", n), "rb") as f:
                        configs[n] = f.read()
                index = json.loads(mt.read_all(os.path.join(src, "index.json")))
                self.assertEqual(index["manifests"], [
                    {"mediaType": OCI_INDEX, "digest": sha256(synthesize(configs[n])),
                     "size": len(synthesize(configs[n])), "annotations": {REF_NAME: n}}
                    for n in names])
                for n in names:
                    with self.subTest(ref=n):
                        self.check_ref(src, n, configs[n], blobs)
                # blobs/: exactly the synthesized manifests, the configs and the layers.
                want = set()
                for n in names:
                    want.add(sha256(synthesize(configs[n]))[7:])
                    want.add(sha256(configs[n])[7:])
                    want.update(l["blob"][7:] for l in json.loads(configs[n])["layers"])
                self.assertEqual(set(os.listdir(os.path.join(src, "blobs", "sha256"))), want)
        log = self.log_of(mnt)
        self.assertNotIn(MOTO.secret_access_key, log)
        self.assertNotIn(MOTO.access_key_id, log)


# ---------------------------------------------------------------------------
# 2. Generated caches in the S3 layout


def make_layer(rnd, files):
    """A gzip tar with these {path: bytes}; returns (blob bytes, diffID)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for path, data in sorted(files.items()):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mtime = 1700000000
            info.mode = 0o644
            t.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return gzip.compress(raw, mtime=0), sha256(raw)


def make_s3_cache(rnd, layer_count, created="2026-01-02T03:04:05.123456789Z"):
    """(config bytes, {digest: blob bytes}): a chain of layer_count gzip layers, one record
    per layer, annotations as BuildKit's s3 exporter writes them (FORMATS.md §5.3)."""
    blobs, layers, records = {}, [], []
    for i in range(layer_count):
        data, diff = make_layer(rnd, {"f%d/data.bin" % i: rnd.randbytes(1000 + 5000 * i),
                                      "f%d/note.txt" % i: b"layer %d\n" % i})
        d = sha256(data)
        blobs[d] = data
        layers.append({"blob": d, "parent": i - 1,
                       "annotations": {"mediaType": LAYER_GZIP, "diffID": diff,
                                       "size": len(data), "createdAt": created}})
        records.append({"layers": [{"layer": i, "createdAt": created}],
                        "digest": sha256(b"rec %d %f" % (i, rnd.random()))})
    # BuildKit sorts layers by blob digest and renumbers parents (FORMATS.md §1.3).
    order = sorted(range(layer_count), key=lambda i: layers[i]["blob"])
    pos = {old: new for new, old in enumerate(order)}
    out_layers = []
    for old in order:
        l = dict(layers[old])
        l["parent"] = -1 if l["parent"] < 0 else pos[l["parent"]]
        if l["parent"] == 0:
            del l["parent"]  # omitempty
        out_layers.append(l)
    for r in records:
        r["layers"][0]["layer"] = pos[r["layers"][0]["layer"]]
    records.sort(key=lambda r: r["digest"])
    config = json.dumps({"layers": out_layers, "records": records},
                        separators=(",", ":")).encode()
    return config, blobs


def put_cache(bucket, config, blobs, names, prefix="", blobs_prefix="blobs/",
              manifests_prefix="manifests/", skip=()):
    c = MOTO.client()
    for d, data in blobs.items():
        if d not in skip:
            c.put_object(Bucket=bucket, Key=prefix + blobs_prefix + d, Body=data)
    for n in names:
        c.put_object(Bucket=bucket, Key=prefix + manifests_prefix + n, Body=config)


class GeneratedLayouts(Base):
    def test_names_prefixes_and_a_missing_blob_that_fails_only_its_reads(self):
        rnd = random.Random(7)
        bucket = new_bucket("gen")
        cfg_a, blobs_a = make_s3_cache(rnd, 3)
        cfg_b, blobs_b = make_s3_cache(rnd, 2)
        cfg_c, blobs_c = make_s3_cache(rnd, 3)
        # Defaults, several names and a nested one; and a layout with prefix "pfx" (no
        # slash: keys "pfxb/..."), blobs_prefix=b/, manifests_prefix=m-.
        put_cache(bucket, cfg_a, blobs_a, ["main", "feature/x"])
        put_cache(bucket, cfg_b, blobs_b, ["other"])
        missing = sorted(blobs_c)[1]
        put_cache(bucket, cfg_c, blobs_c, ["broken"], prefix="pfx", blobs_prefix="b/",
                  manifests_prefix="m-", skip={missing})
        self.assertIn("pfxb/" + sorted(blobs_c)[0], MOTO.keys(bucket, "pfx"))
        env = self.env(**MOTO.env())
        mnt = self.mount_env([
            self.source(bucket, "as=gen"),
            self.source(bucket, "name=main;other", "as=two"),
            self.source(bucket, "prefix=pfx", "blobs_prefix=b/", "manifests_prefix=m-",
                        "as=pfx"),
        ], env)
        gen = os.path.join(mnt, "gen")
        self.assertEqual(sorted(os.listdir(os.path.join(gen, "refs"))),
                         ["feature%2Fx", "main", "other"])
        all_blobs = dict(blobs_a, **blobs_b)
        objects = object_times(bucket)
        for n, cfg in (("main", cfg_a), ("feature/x", cfg_a), ("other", cfg_b)):
            with self.subTest(ref=n):
                self.check_ref(gen, n, cfg, all_blobs, times=("manifests/" + n, objects))
        two = os.path.join(mnt, "two")
        self.assertEqual(sorted(os.listdir(os.path.join(two, "refs"))), ["main", "other"])
        self.check_ref(two, "other", cfg_b, all_blobs)

        # The missing blob: listed with its size, reads fail with EIO, .error names it;
        # every other blob and document of the ref reads.
        pfx = os.path.join(mnt, "pfx")
        self.assertEqual(os.listdir(os.path.join(pfx, "refs")), ["broken"])
        bdir = os.path.join(pfx, "blobs", "sha256")
        p = os.path.join(bdir, missing[7:])
        self.assertEqual(os.stat(p).st_size, len(blobs_c[missing]))
        self.assertEqual(mt.read_errno(p), errno.EIO)
        err = getx(p, "error") or ""
        self.assertIn(missing, err)
        self.assertIn(bucket, err)
        for d, data in blobs_c.items():
            if d != missing:
                self.assertEqual(mt.read_all(os.path.join(bdir, d[7:])), data)
        base = os.path.join(pfx, "refs", "broken")
        self.assertEqual(mt.read_all(os.path.join(base, "cache-config.json")), cfg_c)
        self.assertEqual(mt.read_all(os.path.join(base, "manifest.json")), synthesize(cfg_c))
        self.assertNotIn(MOTO.secret_access_key, self.log_of(mnt))

    def test_listing_pages_with_continuation_tokens(self):
        rnd = random.Random(8)
        bucket = new_bucket("page")
        cfg, blobs = make_s3_cache(rnd, 1)
        put_cache(bucket, cfg, blobs, ["main"])
        c = MOTO.client()
        extra = [rnd.randbytes(16) for _ in range(1001)]  # > one page of 1000
        with ThreadPoolExecutor(8) as ex:
            list(ex.map(lambda b: c.put_object(Bucket=bucket, Key="blobs/" + sha256(b), Body=b),
                        extra))
        p = self.ls(self.source(bucket), self.env(**MOTO.env()), "--format", "json")
        self.assertEqual(p.returncode, 0, p.stderr)
        doc = json.loads(p.stdout)
        src = doc[0] if isinstance(doc, list) else doc
        self.assertEqual(src["blobs"]["count"], 1002, p.stdout[:2000])
        self.assertEqual([r["name"] for r in src["refs"]], ["main"])


# ---------------------------------------------------------------------------
# 3. Credentials


class Credentials(Base):
    bucket = None

    def setUp(self):
        super().setUp()
        if Credentials.bucket is None:
            rnd = random.Random(9)
            Credentials.bucket = new_bucket("cred")
            cfg, blobs = make_s3_cache(rnd, 1)
            put_cache(Credentials.bucket, cfg, blobs, ["main"])

    def assert_ok(self, p):
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("main", p.stdout)
        out = p.stdout + p.stderr
        self.assertNotIn(MOTO.secret_access_key, out)

    def test_environment_profile_files_and_source_string_credentials_work(self):
        src = self.source(self.bucket, "name=main")
        self.assert_ok(self.ls(src, self.env(**MOTO.env())))
        creds = os.path.join(self.tmp, "creds")
        with open(creds, "w") as f:
            f.write("[ci]\naws_access_key_id = %s\naws_secret_access_key = %s\n"
                    % (MOTO.access_key_id, MOTO.secret_access_key))
        self.assert_ok(self.ls(src, self.env(AWS_PROFILE="ci",
                                             AWS_SHARED_CREDENTIALS_FILE=creds)))
        os.makedirs(os.path.join(self.tmp, ".aws"))
        with open(os.path.join(self.tmp, ".aws", "config"), "w") as f:
            f.write("[default]\nregion = us-east-1\naws_access_key_id = %s\n"
                    "aws_secret_access_key = %s\n" % (MOTO.access_key_id,
                                                      MOTO.secret_access_key))
        self.assert_ok(self.ls(src, self.env()))  # ~/.aws/config, default profile
        shutil.rmtree(os.path.join(self.tmp, ".aws"))
        p = self.ls(src + ",access_key_id=%s,secret_access_key=%s"
                    % (MOTO.access_key_id, MOTO.secret_access_key),
                    self.env(AWS_ACCESS_KEY_ID="AKIAWRONGWRONGWRONG0",
                             AWS_SECRET_ACCESS_KEY="wrong"))
        self.assert_ok(p)
        self.assertNotIn(MOTO.access_key_id, p.stdout + p.stderr)

    def check_refused(self, env, code, secret):
        src = self.source(self.bucket, "name=main")
        p = self.ls(src, env)
        out = p.stdout + p.stderr
        self.assertEqual(p.returncode, 1, out)
        self.assertIn("s3 bucket " + self.bucket, out)
        self.assertIn("key manifests/main", out)
        self.assertIn(code, out)
        self.assertNotIn(secret, out)
        self.assertNotIn(MOTO.secret_access_key, out)
        # A mount comes up; the source folder carries the error.
        mnt = self.mount_env([src + ",as=c"], env)
        err = getx(os.path.join(mnt, "c"), "error") or ""
        self.assertIn(self.bucket, err)
        self.assertIn(code, err)
        log = self.log_of(mnt)
        self.assertNotIn(secret, log)
        self.assertNotIn(MOTO.secret_access_key, log)

    def test_a_wrong_secret_fails_naming_bucket_and_key_without_the_secret(self):
        secret = "WrongSecret/Value+0123456789abcdefghijkl"
        self.check_refused(self.env(**MOTO.env(secret_access_key=secret)),
                           "SignatureDoesNotMatch", secret)

    def test_an_unknown_key_fails_naming_bucket_and_key(self):
        secret = "AnotherSecret0123456789abcdefghijklmnopq"
        self.check_refused(self.env(AWS_ACCESS_KEY_ID="AKIAUNKNOWNKEY000000",
                                    AWS_SECRET_ACCESS_KEY=secret), "InvalidAccessKeyId", secret)


# ---------------------------------------------------------------------------
# 4. A dead server


class DeadServer(Base):
    def test_a_dead_server_is_a_clear_error_and_the_rest_keeps_serving(self):
        from moto_harness import Moto
        rnd = random.Random(10)
        own = Moto().start()
        self.addCleanup(own.stop)
        own.create_bucket("dying")
        cfg, blobs = make_s3_cache(rnd, 2)
        c = own.client()
        for d, data in blobs.items():
            c.put_object(Bucket="dying", Key="blobs/" + d, Body=data)
        c.put_object(Bucket="dying", Key="manifests/main", Body=cfg)
        local = self.fixture("local-max-gzip")
        env = self.env(**own.env())
        never = "type=s3,bucket=never,endpoint_url=http://127.0.0.1:1,use_path_style=true," \
                "region=us-east-1,as=never"
        mnt = self.mount_env(["type=s3,bucket=dying,endpoint_url=%s,use_path_style=true,"
                              "region=us-east-1,as=dying" % own.url, never,
                              "type=local,src=%s,as=local" % local], env)
        err = getx(os.path.join(mnt, "never"), "error") or ""
        self.assertIn("s3 bucket never", err)
        self.assertEqual(os.listdir(os.path.join(mnt, "dying", "refs")), ["main"])
        own.stop()
        bdir = os.path.join(mnt, "dying", "blobs", "sha256")
        d = sorted(blobs)[0]
        self.assertEqual(mt.read_errno(os.path.join(bdir, d[7:])), errno.EIO)
        err = getx(os.path.join(bdir, d[7:]), "error") or ""
        self.assertIn("s3 bucket dying", err)
        # Documents held in memory still read; the local source serves everything.
        self.assertEqual(mt.read_all(os.path.join(mnt, "dying", "refs", "main",
                                                  "cache-config.json")), cfg)
        lb = os.path.join(mnt, "local", "blobs", "sha256")
        for h in os.listdir(lb):
            self.assertEqual(sha256(mt.read_all(os.path.join(lb, h))), "sha256:" + h)


def setUpModule():
    global MOTO
    missing = []
    try:
        import boto3  # noqa: F401
        import moto  # noqa: F401
    except ImportError as e:
        missing.append("%s: %s (scripts/deps-moto.sh)" % (sys.executable, e))
    mt.check_prerequisites("S3 mount tests", ARGS, (), extra_missing=missing)
    from moto_harness import Moto
    MOTO = Moto().start()


def tearDownModule():
    if MOTO is not None:
        MOTO.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--gen", required=True)
    ap.add_argument("--shared", required=True)
    ARGS, rest = ap.parse_known_args()
    ARGS.bin = os.path.abspath(ARGS.bin)
    ARGS.gen = os.path.abspath(ARGS.gen)
    mt.ARGS = ARGS
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
