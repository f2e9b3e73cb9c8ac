#!/usr/bin/env python3
"""End-to-end tests of Azure Blob sources (`type=azblob`, FORMATS.md §6): real FUSE mounts,
as root, of caches written in BuildKit's azblob layout into Azurite, which
tests/servers/azurite_harness.py starts on 127.0.0.1 (fresh --location, --disableTelemetry).
Requests to Azurite are signed here with a Shared Key / SAS signer of the harness's own
(another route than the C++ code under test), and Azurite verifies every signature.

Content (written once per module):
  container buildkit-cache  the real BuildKit s3 export of ../shared (fixtures/buildkit/
                            s3-bucket) re-laid out key for key (the same names as azblob's
                            default prefixes): manifests main, growth, growth-alias at the
                            root and v0.11.6 under prefix v0.11.6
  container gen             a generated image-manifest cache converted to azblob manifests
                            under prefix team/a with blobs_prefix b and manifests_prefix m:
                            names latest, feature/x, and broken (its config names one more
                            layer whose blob was never uploaded)

Expectations are computed here from the uploaded bytes: every blob byte for byte, every
name a ref, the synthesized index-shape manifest (DESIGN.md §1.5) rebuilt in Python, the
cache config equal to the manifest blob, layer folders equal to Python's tarfile listing.

  1. SharedKey: secret_access_key; every ref, document and blob; layers listed.
  2. SAS: an account SAS in account_url, a container SAS in
     AZURE_STORAGE_CONNECTION_STRING; the token never shows.
  3. MissingBlob: a manifest naming a missing blob fails only that blob's reads (EIO and
     user.buildcachefs.error naming it).
  4. Errors: a wrong key and a wrong SAS signature make `ls` exit 1 naming the account and
     the container, never the secret; a dead server is a clear error.
  5. Paging: List Blobs pages of 2 (NextMarker) give the same listing.

Run by ctest: azblob_test.py --bin BUILDCACHEFS --gen BUILDCACHEFS_GEN --shared DIR
Needs root, /dev/fuse, fusermount3 and azurite (scripts/deps-azurite.sh). Outside CI a
non-root run skips the module; under CI any missing prerequisite is a failure.
"""

import errno
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO_ROOT, "tests", "servers"))

import e2e_cli  # noqa: E402
import mount_test as mt  # noqa: E402  (Base: mounts, cleanup, watchdog; helpers)
from azurite_harness import Azurite, find_binary, free_port  # noqa: E402

ARGS = None
AZ = None           # the module's Azurite
CONTENT = None      # {source folder: SourceExp}
WORK = None
X = "user.buildcachefs."
CACHECONFIG = "application/vnd.buildkit.cacheconfig.v0"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
WRONG_KEY = "V3Jvbmcta2V5LW5vdC10aGUtYWNjb3VudC1rZXktNzc4MS4uLi4uLi4uLi4uLi4uLi4uLi4uLi4uLg=="
MISSING_SIZE = 1234
ODD = "rel 1+\u00fc=%"


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def compact(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def synthesize(config_bytes):
    """The index-shape cache manifest DESIGN.md §1.5 asks for, from a manifest blob: one
    descriptor per distinct layer blob in the config's order (mediaType, digest, size,
    annotations with buildkit/createdat when not zero and containerd.io/uncompressed), the
    config last (the same bytes as type=s3 makes of the same config)."""
    cfg = json.loads(config_bytes)
    manifests, seen = [], set()
    for l in cfg.get("layers") or []:
        if l["blob"] in seen:
            continue
        seen.add(l["blob"])
        a = l["annotations"]
        ann = {}
        created = a.get("createdAt", "")
        if created and not created.startswith("0001-01-01T00:00:00"):
            if "." in created:  # Go's RFC 3339 drops trailing zeros of the fraction
                head, frac = created[:-1].split(".")
                frac = frac.rstrip("0")
                created = head + ("." + frac if frac else "") + "Z"
            ann["buildkit/createdat"] = created
        ann["containerd.io/uncompressed"] = a["diffID"]
        manifests.append({"mediaType": a["mediaType"], "digest": l["blob"],
                          "size": a["size"], "annotations": ann})
    manifests.append({"mediaType": CACHECONFIG, "digest": sha256(config_bytes),
                      "size": len(config_bytes)})
    return compact({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})


class RefExp:
    def __init__(self, name, config_bytes):
        self.name = name
        self.config_bytes = config_bytes
        self.manifest_bytes = synthesize(config_bytes)
        self.layers = [l["blob"] for l in json.loads(config_bytes).get("layers") or []]


class SourceExp:
    """What one source must show: refs by name, and every blob the container holds under
    its blobs prefix (digest -> bytes)."""

    def __init__(self, attrs, refs, blobs, missing=(), container="buildkit-cache", prefix=""):
        self.attrs, self.refs, self.blobs, self.missing = attrs, refs, blobs, set(missing)
        # Where the objects are: <container>/<prefix>manifests/<name>, .../blobs/<digest>
        # (prefix "team/a/" with mprefix "m/" and bprefix "b/" for the generated cache).
        self.container, self.prefix = container, prefix
        self.mprefix, self.bprefix = "manifests/", "blobs/"


def last_modified(container, key):
    """The blob's Last-Modified (Get Blob Properties) in ns."""
    import email.utils
    r = AZ.request("HEAD", "/%s/%s" % (container, key))
    assert r.status == 200, (key, r.status)
    return int(email.utils.parsedate_to_datetime(r.header("last-modified")).timestamp()) * 10**9


# ---------------------------------------------------------------------------
# Content


def upload_fixture(az, root, container):
    """Every file of the s3-bucket fixture, key == its relative path."""
    az.create_container(container)
    files = {}
    for d, _, names in os.walk(root):
        for n in names:
            path = os.path.join(d, n)
            key = os.path.relpath(path, root)
            with open(path, "rb") as f:
                files[key] = f.read()
            az.put_blob(container, key, files[key])
    return files


def to_azblob_config(layout, manifest_digest):
    """An OCI-layout cache (image-manifest shape) as the manifest blob BuildKit's azblob
    exporter writes: the cache config with per-layer annotations."""
    def blob(d):
        with open(os.path.join(layout, "blobs", "sha256", d.split(":")[1]), "rb") as f:
            return f.read()
    manifest = json.loads(blob(manifest_digest))
    descs = {d["digest"]: d for d in manifest["layers"]}
    cfg = json.loads(blob(manifest["config"]["digest"]))
    for l in cfg["layers"]:
        d = descs[l["blob"]]
        ann = d.get("annotations") or {}
        l["annotations"] = {"mediaType": d["mediaType"],
                            "diffID": ann["containerd.io/uncompressed"], "size": d["size"],
                            "createdAt": ann.get("buildkit/createdat", "0001-01-01T00:00:00Z")}
    return cfg, {d: blob(d) for d in descs}


def build_content():
    global CONTENT, WORK
    WORK = tempfile.mkdtemp(prefix="bcfs-aztest-")
    c = {}
    url = AZ.url
    key = AZ.key

    # The real BuildKit s3 export of ../shared, key for key.
    fixture = os.path.join(WORK, "s3-bucket")
    shutil.copytree(os.path.join(ARGS.shared, "fixtures", "buildkit", "s3-bucket"), fixture,
                    symlinks=True)
    files = upload_fixture(AZ, fixture, "buildkit-cache")

    def part(prefix):
        refs, blobs = {}, {}
        mdir = prefix + "manifests/"
        bdir = prefix + "blobs/"
        for k, v in files.items():
            if k.startswith(mdir) and "/" not in k[len(mdir):]:
                refs[k[len(mdir):]] = RefExp(k[len(mdir):], v)
            elif k.startswith(bdir) and "/" not in k[len(bdir):]:
                blobs[k[len(bdir):]] = v
        return refs, blobs

    refs, blobs = part("")
    c["root"] = SourceExp("account_url=%s,secret_access_key=%s,as=root" % (url, key), refs, blobs)
    refs, blobs = part("v0.11.6/")
    c["old"] = SourceExp("account_url=%s,secret_access_key=%s,prefix=v0.11.6,as=old" % (url, key),
                         refs, blobs, prefix="v0.11.6/")

    # A generated cache, converted, with custom prefixes and several names.
    layout = os.path.join(WORK, "gen")
    p = subprocess.run([ARGS.gen, "--out", layout, "--shape", "image-manifest",
                        "--compression", "gzip", "--refs", "2", "--ref-names", "latest,feature/x",
                        "--seed", "5"], capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise RuntimeError("buildcachefs-gen failed: " + p.stderr)
    with open(os.path.join(layout, "index.json")) as f:
        index = json.load(f)
    AZ.create_container("gen")
    refs, blobs = {}, {}
    for m in index["manifests"]:
        name = m["annotations"]["org.opencontainers.image.ref.name"]
        cfg, layer_blobs = to_azblob_config(layout, m["digest"])
        refs[name] = RefExp(name, compact(cfg))
        blobs.update(layer_blobs)
        if name == "latest":
            # broken: one more layer (with a record using it) whose blob is never uploaded.
            missing = os.urandom(MISSING_SIZE)
            md = sha256(missing)
            cfg = json.loads(compact(cfg))
            cfg["layers"].append({"blob": md, "parent": -1, "annotations": {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "diffID": md,
                "size": MISSING_SIZE, "createdAt": "2026-11-27T01:02:03.456Z"}})
            cfg["records"].append({"layers": [{"layer": len(cfg["layers"]) - 1,
                                               "createdAt": "2026-11-27T01:02:03.456Z"}],
                                   "digest": sha256(b"broken record")})
            refs["broken"] = RefExp("broken", compact(cfg))
    # A name that needs percent-encoding in the URL (and so in the signed resource).
    refs[ODD] = RefExp(ODD, refs["feature/x"].config_bytes)
    for name, r in refs.items():
        AZ.put_blob("gen", "team/a/m/" + name, r.config_bytes)
    for d, data in blobs.items():
        AZ.put_blob("gen", "team/a/b/" + d, data)
    c["gen"] = SourceExp("account_url=%s,secret_access_key=%s,container=gen,prefix=team/a,"
                         "blobs_prefix=b,manifests_prefix=m,name=latest;feature/x;broken;%s,as=gen"
                         % (url, key, ODD), refs, blobs, missing=[md], container="gen",
                         prefix="team/a/")
    c["gen"].mprefix, c["gen"].bprefix = "m/", "b/"
    CONTENT = c


# ---------------------------------------------------------------------------


def read_result(path):
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


class Base(mt.Base):
    def mount_env(self, sources, env=None):
        """mt.Base.mount with an environment for the command and its daemon."""
        return self.mount(sources, env=env)

    def ls(self, source, env=None, *extra):
        return subprocess.run([ARGS.bin, "ls", source] + list(extra), capture_output=True,
                              text=True, timeout=180, env=env)

    def check_source(self, mnt, folder, exp, refs=None, listed=True):
        """Every ref's documents, every blob byte for byte (the missing ones excepted).
        listed: the credential may list, so blobs carry their Last-Modified as mtime."""
        src = os.path.join(mnt, folder)
        want = sorted(refs if refs is not None else exp.refs)
        self.assertEqual(sorted(os.listdir(os.path.join(src, "refs"))),
                         sorted(mt.encode_ref(n) for n in want))
        index = json.loads(mt.read_all(os.path.join(src, "index.json")))
        got_index = {m["annotations"]["org.opencontainers.image.ref.name"]: m
                     for m in index["manifests"]}
        self.assertEqual(sorted(got_index), want)
        served = set(os.listdir(os.path.join(src, "blobs", "sha256")))
        for name in want:
            r = exp.refs[name]
            base = os.path.join(src, "refs", mt.encode_ref(name))
            with self.subTest(ref=name):
                self.assertEqual(getx(base, "ref"), name)
                self.assertEqual(mt.read_all(os.path.join(base, "cache-config.json")),
                                 r.config_bytes)
                self.assertEqual(mt.read_all(os.path.join(base, "manifest.json")),
                                 r.manifest_bytes)
                md = sha256(r.manifest_bytes)
                self.assertEqual(getx(os.path.join(base, "manifest.json"), "digest"), md)
                # Synthesized, and says so; the cache config is the stored manifest blob.
                self.assertEqual(getx(os.path.join(base, "manifest.json"), "synthesized"), "1")
                self.assertEqual(getx(os.path.join(src, "blobs", "sha256", md[7:]),
                                      "synthesized"), "1")
                self.assertIsNone(getx(os.path.join(base, "cache-config.json"), "synthesized"))
                # mtimes: the manifest blob's Last-Modified.
                lm = last_modified(exp.container, exp.prefix + exp.mprefix + name)
                for p in (base, os.path.join(base, "manifest.json"),
                          os.path.join(base, "cache-config.json")):
                    self.assertEqual(os.stat(p).st_mtime_ns, lm, p)
                self.assertEqual(got_index[name]["digest"], md)
                self.assertEqual(got_index[name]["mediaType"], OCI_INDEX)
                self.assertEqual(got_index[name]["size"], len(r.manifest_bytes))
                # Synthesized documents are served under blobs/ too.
                self.assertEqual(mt.read_all(os.path.join(src, "blobs", "sha256",
                                                          md.split(":")[1])), r.manifest_bytes)
                self.assertEqual(mt.read_all(os.path.join(src, "blobs", "sha256",
                                                          sha256(r.config_bytes).split(":")[1])),
                                 r.config_bytes)
                for l in r.layers:
                    self.assertIn(l.split(":")[1], served)
        bad = []
        for d, data in exp.blobs.items():
            h = d.split(":")[1]
            if h not in served:
                continue  # a blob no ref reaches (the tree shows reached blobs)
            got, err = read_result(os.path.join(src, "blobs", "sha256", h))
            if err or got != data:
                bad.append("%s: %s" % (d, errno.errorcode.get(err, "wrong bytes")))
            lm = last_modified(exp.container, exp.prefix + exp.bprefix + d)
            if listed and os.stat(os.path.join(src, "blobs", "sha256", h)).st_mtime_ns != lm:
                bad.append("%s: mtime is not its Last-Modified %d" % (d, lm))
        self.assertEqual(bad, [])
        reached = {l for n in want for l in exp.refs[n].layers} - exp.missing
        self.assertEqual(reached - {"sha256:" + h for h in served}, set())
        self.assertEqual({d for d in reached if d not in exp.blobs}, set())

    def check_layers_listed(self, mnt, folder, exp, limit=3):
        """Layer folders list exactly the tar's top-level names (Python's tarfile)."""
        src = os.path.join(mnt, folder)
        done = 0
        for d, data in sorted(exp.blobs.items()):
            if data[:2] != b"\x1f\x8b" or len(data) < 100:
                continue
            layer = os.path.join(src, "layers", "sha256", d.split(":")[1])
            if not os.path.isdir(layer):
                continue
            with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as t:
                top = {m.name.lstrip("./").split("/")[0] for m in t.getmembers()}
            top = {n for n in top if n and not n.startswith(".wh.")}
            with self.subTest(layer=d):
                self.assertEqual(set(os.listdir(layer)), top)
            done += 1
            if done == limit:
                break
        self.assertGreater(done, 0, "no gzip layer was checked")


class SharedKey(Base):
    def test_every_name_is_a_ref_and_every_blob_reads_back_exactly(self):
        c = CONTENT
        mnt = self.mount_env(["type=azblob," + c[k].attrs for k in ("root", "old", "gen")])
        self.assertEqual(sorted(os.listdir(mnt)), [".buildcachefs", "gen", "old", "root"])
        self.assertEqual(sorted(c["root"].refs), ["growth", "growth-alias", "main"])
        self.assertEqual(sorted(c["old"].refs), ["v0.11.6"])
        self.assertEqual(sorted(c["gen"].refs), ["broken", "feature/x", "latest", ODD])
        for k in ("root", "old", "gen"):
            with self.subTest(source=k):
                self.check_source(mnt, k, c[k])
        self.check_layers_listed(mnt, "root", c["root"])
        self.check_layers_listed(mnt, "gen", c["gen"])
        # The key never shows.
        status = mt.read_all(os.path.join(mnt, ".buildcachefs", "status.json")).decode()
        self.assertNotIn(AZ.key, status + self.log_of(mnt))

    def test_name_selects_exactly_those_names_and_ls_lists_them(self):
        c = CONTENT
        src = "type=azblob,account_url=%s,secret_access_key=%s,name=main;growth-alias" % (
            AZ.url, AZ.key)
        p = self.ls(src, None, "--format", "json")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        doc = json.loads(p.stdout)
        self.assertEqual(doc["errors"], [])
        self.assertEqual([r["name"] for r in doc["refs"]], ["main", "growth-alias"])
        for r in doc["refs"]:
            exp = c["root"].refs[r["name"]]
            self.assertEqual(r["digest"], sha256(exp.manifest_bytes))
            self.assertEqual(r["shape"], "index")
            self.assertEqual(r["errors"], [])
        mnt = self.mount_env([src])  # the folder is named after the container
        self.assertEqual(sorted(os.listdir(mnt)), [".buildcachefs", "buildkit-cache"])
        self.check_source(mnt, "buildkit-cache", c["root"], refs=["main", "growth-alias"])


class Sas(Base):
    def test_an_account_sas_in_account_url_reads_everything(self):
        c = CONTENT
        sas = AZ.account_sas("rl")
        sig = [v for v in sas.split("&") if v.startswith("sig=")][0]
        mnt = self.mount_env(["type=azblob,account_url=%s?%s,as=root" % (AZ.url, sas)])
        self.check_source(mnt, "root", c["root"])
        status = mt.read_all(os.path.join(mnt, ".buildcachefs", "status.json")).decode()
        self.assertNotIn(sig, status + self.log_of(mnt))
        self.assertNotIn(sig[4:], status + self.log_of(mnt))

    def test_a_container_sas_in_the_connection_string(self):
        c = CONTENT
        sas = AZ.container_sas("gen", "rl")
        env = dict(os.environ)
        env["AZURE_STORAGE_CONNECTION_STRING"] = (
            "BlobEndpoint=%s/;SharedAccessSignature=%s" % (AZ.url, sas))
        mnt = self.mount_env(["type=azblob,container=gen,prefix=team/a,blobs_prefix=b,"
                              "manifests_prefix=m,name=latest;feature/x,as=gen"], env)
        self.check_source(mnt, "gen", c["gen"], refs=["latest", "feature/x"])
        # The same through the connection string's account key, with BUILDKIT_* variables.
        env = dict(os.environ)
        env["AZURE_STORAGE_CONNECTION_STRING"] = (
            "DefaultEndpointsProtocol=http;AccountName=%s;AccountKey=%s;BlobEndpoint=%s"
            % (AZ.account, AZ.key, AZ.url))
        env["BUILDKIT_AZURE_STORAGE_CONTAINER"] = "gen"
        env["BUILDKIT_AZURE_STORAGE_PREFIX"] = "team/a"
        p = self.ls("type=azblob,blobs_prefix=b,manifests_prefix=m", env, "--format", "json")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        doc = json.loads(p.stdout)
        self.assertEqual(sorted(r["name"] for r in doc["refs"]),
                         ["broken", "feature/x", "latest", ODD])


    def test_a_read_only_sas_without_list_reads_the_named_refs(self):
        c = CONTENT
        sas = AZ.container_sas("buildkit-cache", "r")
        src = "type=azblob,account_url=%s?%s,name=main" % (AZ.url, sas)
        p = self.ls(src, None, "--format", "json")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        doc = json.loads(p.stdout)
        self.assertEqual([r["name"] for r in doc["refs"]], ["main"])
        self.assertEqual(doc["refs"][0]["errors"], [])
        mnt = self.mount_env([src])
        self.check_source(mnt, "buildkit-cache", c["root"], refs=["main"], listed=False)
        # Without name= the manifests must be listed: refused, naming the container.
        p = self.ls("type=azblob,account_url=%s?%s" % (AZ.url, sas))
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("container buildkit-cache", p.stdout + p.stderr)
        self.assertIn("403", p.stdout + p.stderr)


class MissingBlob(Base):
    def test_a_manifest_naming_a_missing_blob_fails_only_that_blobs_reads(self):
        c = CONTENT["gen"]
        mnt = self.mount_env(["type=azblob," + c.attrs])
        src = os.path.join(mnt, "gen")
        (md,) = c.missing
        gone = os.path.join(src, "blobs", "sha256", md.split(":")[1])
        self.assertEqual(os.stat(gone).st_size, MISSING_SIZE)
        data, err = read_result(gone)
        self.assertEqual(err, errno.EIO)
        why = getx(gone, "error")
        self.assertIsNotNone(why)
        self.assertIn(md.split(":")[1], why)
        self.assertIn("gen", why)
        # Everything else, the broken ref's own documents and other layers included, reads.
        self.check_source(mnt, "gen", c)


class Errors(Base):
    def assert_clear(self, p, secret):
        out = p.stdout + p.stderr
        self.assertEqual(p.returncode, 1, out)
        self.assertIn("devstoreaccount1", out)
        self.assertIn("buildkit-cache", out)
        self.assertNotIn(secret, out)
        return out

    def test_a_wrong_key_names_the_account_and_container_and_never_the_key(self):
        p = self.ls("type=azblob,account_url=%s,secret_access_key=%s" % (AZ.url, WRONG_KEY))
        out = self.assert_clear(p, WRONG_KEY)
        self.assertIn("403", out)
        self.assertIn("Shared Key", out)

    def test_a_sas_with_a_wrong_signature_is_refused(self):
        sas = AZ.account_sas("rl", key=WRONG_KEY)
        sig = [v for v in sas.split("&") if v.startswith("sig=")][0][4:]
        p = self.ls("type=azblob,account_url=%s?%s" % (AZ.url, sas))
        out = self.assert_clear(p, sig)
        self.assertIn("403", out)
        self.assertIn("SAS", out)

    def test_a_dead_server_is_a_clear_error(self):
        url = "http://127.0.0.1:%d/devstoreaccount1" % free_port()
        t = time.monotonic()
        p = self.ls("type=azblob,account_url=%s,secret_access_key=%s" % (url, AZ.key))
        out = self.assert_clear(p, AZ.key)
        self.assertIn("127.0.0.1", out)
        self.assertLess(time.monotonic() - t, 120)

    def test_a_missing_container_is_named(self):
        p = self.ls("type=azblob,account_url=%s,secret_access_key=%s,container=nope"
                    % (AZ.url, AZ.key))
        out = p.stdout + p.stderr
        self.assertEqual(p.returncode, 1, out)
        self.assertIn("container nope", out)
        self.assertIn("does not exist", out)


class Paging(Base):
    def test_pages_of_two_give_the_same_listing(self):
        src = "type=azblob," + CONTENT["root"].attrs
        whole = self.ls(src, None, "--format", "json")
        env = dict(os.environ)
        env["BUILDCACHEFS_AZBLOB_LIST_PAGE_SIZE"] = "2"
        paged = self.ls(src, env, "--format", "json")
        self.assertEqual(whole.returncode, 0, whole.stdout + whole.stderr)
        self.assertEqual(paged.returncode, 0, paged.stdout + paged.stderr)
        a, b = json.loads(whole.stdout), json.loads(paged.stdout)
        self.assertEqual([r["name"] for r in b["refs"]], ["growth", "growth-alias", "main"])
        self.assertEqual(a["refs"], b["refs"])
        self.assertEqual(a["blobs"], b["blobs"])
        self.assertEqual(b["blobs"]["count"], len(CONTENT["root"].blobs))


# ---------------------------------------------------------------------------


def setUpModule():
    global AZ
    absent = []
    if not os.path.isdir(os.path.join(ARGS.shared, "fixtures", "buildkit", "s3-bucket")):
        absent.append("fixture s3-bucket is absent (--shared %s)" % ARGS.shared)
    if find_binary() is None:
        absent.append("azurite-blob is not installed (scripts/deps-azurite.sh)")
    mt.check_prerequisites("azblob tests", ARGS, (), extra_missing=absent,
                           skip_outside_ci=True)
    mt.ARGS = ARGS
    AZ = Azurite().start()
    build_content()


def tearDownModule():
    if AZ:
        AZ.stop()
    if WORK:
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    e2e_cli.main()
