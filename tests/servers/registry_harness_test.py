#!/usr/bin/env python3
"""Proves tests/servers/registry_harness.py against the real docker-registry (2.8).

For each mode (open, basic, token) a registry is started and gets, byte for byte: the
registry-max fixture (repo cache, tag main), the inline fixture (app:inline), generated caches
of every shape and compression (gen-<shape>-<compression>:latest and :feature-x), and the
multi-platform inline image with attestations of make_multiplatform.py (multi:multi, and its
--oci --attest-all variant multi-oci:multi). Everything is then read back with plain urllib,
not with the harness: every manifest by tag and by digest with its own Accept type
(byte-identical, same Content-Type and digest), every blob whole and with Range (206,
Content-Range, exact bytes), and the auth behaviour of each mode: basic refuses anonymous
with `WWW-Authenticate: Basic`, token answers with a Bearer challenge whose realm issues a
token the registry accepts. Open mode also records what the registry accepts and refuses.

Fixtures from ../shared are copied to a temp dir first; nothing in ../shared is written.

usage: registry_harness_test.py [--gen BUILDCACHEFS_GEN] [--shared DIR] [unittest args]
  --gen     default: the newest <repo>/build*/tests/gen/buildcachefs-gen
  --shared  default: <repo>/../shared (fixtures in DIR/fixtures/buildkit)
Needs docker-registry, htpasswd and openssl. Outside CI, a non-root run skips the module;
under CI (CI=true) any missing prerequisite is a failure.
"""

import argparse
import base64
import glob
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import make_multiplatform  # noqa: E402
from registry_harness import Registry, RegistryError  # noqa: E402

ARGS = None
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST, DOCKER_LIST)
REF_NAME = "org.opencontainers.image.ref.name"
SHAPES = ("image-manifest", "index", "manifest-list")
COMPRESSIONS = ("gzip", "zstd", "uncompressed")
TIMINGS = []   # (mode, what, seconds), printed at the end


def in_ci():
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------
# Content: built once per run in a temp dir (fixtures copied, caches generated)

CONTENT = None   # list of Item
WORK = None


class Item:
    """One layout to push: where it is, the repo, and what the files say it holds."""

    def __init__(self, name, root, repo):
        self.name, self.root, self.repo = name, root, repo
        with open(os.path.join(root, "index.json"), "rb") as f:
            self.entries = json.load(f)["manifests"]
        self.tags = {}       # tag -> (digest, media type)
        self.manifests = {}  # digest -> media type, every manifest reachable through manifests
        bdir = os.path.join(root, "blobs", "sha256")
        for e in self.entries:
            self.tags[e["annotations"][REF_NAME]] = (e["digest"], e["mediaType"])
            self._walk(e["digest"], e["mediaType"])
        self.blobs = sorted("sha256:" + h for h in os.listdir(bdir)
                            if "sha256:" + h not in self.manifests)

    def read(self, digest):
        with open(os.path.join(self.root, "blobs", "sha256", digest.split(":")[1]), "rb") as f:
            return f.read()

    def _walk(self, digest, media_type):
        self.manifests[digest] = media_type
        doc = json.loads(self.read(digest))
        for d in doc.get("manifests") or []:
            if d["mediaType"] in MANIFEST_TYPES:
                self._walk(d["digest"], d["mediaType"])


def find_gen():
    if ARGS.gen:
        return ARGS.gen
    found = glob.glob(os.path.join(REPO_ROOT, "build*", "tests", "gen", "buildcachefs-gen"))
    found = [p for p in found if os.access(p, os.X_OK)]
    return max(found, key=os.path.getmtime) if found else None


def build_content():
    global CONTENT, WORK
    WORK = tempfile.mkdtemp(prefix="bcfs-reg-test-")
    fixtures = os.path.join(ARGS.shared, "fixtures", "buildkit")
    items = []
    for name, repo in (("registry-max", "cache"), ("inline", "app")):
        dst = os.path.join(WORK, name)
        shutil.copytree(os.path.join(fixtures, name), dst, symlinks=True)
        items.append(Item(name, dst, repo))
    gen = find_gen()
    for shape in SHAPES:
        for comp in COMPRESSIONS:
            name = "gen-%s-%s" % (shape, comp)
            out = os.path.join(WORK, name)
            subprocess.run([gen, "--out", out, "--shape", shape, "--compression", comp,
                            "--refs", "2", "--ref-names", "latest,feature-x"],
                           check=True, capture_output=True, timeout=120)
            items.append(Item(name, out, name))
    src = os.path.join(WORK, "inline")
    out = os.path.join(WORK, "multi")
    make_multiplatform.make(src, out, tag="multi")
    items.append(Item("multi", out, "multi"))
    out = os.path.join(WORK, "multi-oci")
    make_multiplatform.make(src, out, tag="multi", oci=True, attest_all=True)
    items.append(Item("multi-oci", out, "multi-oci"))
    CONTENT = items


# ---------------------------------------------------------------------------
# Plain urllib client (deliberately not the harness's code)


def fetch(url, headers=None, method="GET", data=None):
    """(status, headers as a case-insensitive Message, body)."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        body = b""
        try:
            body = e.read()
        except Exception:  # a 416 body can be shorter than its Content-Length
            pass
        return e.code, e.headers, body


def challenge_params(value):
    return dict(re.findall(r'(\w+)="([^"]*)"', value or ""))


def basic(user, password):
    return "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()


class Auth:
    """Authorization for a registry, learned from its challenges as a client would."""

    def __init__(self, reg):
        self.reg = reg
        self.tokens = {}

    def headers(self, url):
        """The Authorization header for url (a token per challenged scope)."""
        if self.reg.mode == "open":
            return {}
        if self.reg.mode == "basic":
            return {"Authorization": basic(*Registry.creds)}
        repo = urllib.parse.urlparse(url).path.split("/")[2]
        if repo not in self.tokens:
            status, hdrs, _ = fetch(url, method="HEAD")
            assert status == 401, (url, status)
            ch = hdrs["WWW-Authenticate"]
            assert ch.startswith("Bearer "), ch
            p = challenge_params(ch)
            q = urllib.parse.urlencode({"service": p["service"], "scope": p["scope"]})
            status, _, body = fetch(p["realm"] + "?" + q,
                                    {"Authorization": basic(*Registry.creds)})
            assert status == 200, (p, status, body)
            self.tokens[repo] = json.loads(body)["token"]
        return {"Authorization": "Bearer " + self.tokens[repo]}


# ---------------------------------------------------------------------------


class ModeBase:
    """Mixed into one TestCase per mode (unittest.TestCase comes second)."""

    mode = None

    @classmethod
    def setUpClass(cls):
        t0 = time.monotonic()
        cls.reg = Registry(cls.mode).start()
        TIMINGS.append((cls.mode, "start", cls.reg.timings["start"]))
        try:
            cls.pushed = {}
            t1 = time.monotonic()
            for item in CONTENT:
                cls.pushed[item.name] = cls.reg.push_layout(item.root, item.repo)
                TIMINGS.append((cls.mode, "push " + item.name, cls.pushed[item.name]["seconds"]))
            TIMINGS.append((cls.mode, "push all (%d layouts)" % len(CONTENT),
                            time.monotonic() - t1))
        except BaseException:
            log = cls.reg.log()
            cls.reg.stop()
            raise RuntimeError("setup of %s registry failed; log:\n%s" % (cls.mode, log))
        cls.auth = Auth(cls.reg)
        TIMINGS.append((cls.mode, "setup total", time.monotonic() - t0))

    @classmethod
    def tearDownClass(cls):
        t0 = time.monotonic()
        root = cls.reg.root
        cls.reg.stop()
        TIMINGS.append((cls.mode, "stop", time.monotonic() - t0))
        assert not os.path.exists(root)

    def get(self, path, headers=None, method="GET"):
        url = self.reg.url + path
        h = dict(self.auth.headers(url))
        h.update(headers or {})
        return fetch(url, h, method)

    # -- tests common to every mode ---------------------------------------

    def test_push_layout_reports_what_the_files_hold(self):
        for item in CONTENT:
            res = self.pushed[item.name]
            self.assertEqual(res["tags"], {t: d for t, (d, _) in item.tags.items()}, item.name)
            self.assertEqual(dict(res["manifests"]), item.manifests, item.name)
            self.assertEqual(sorted(res["blobs"]), item.blobs, item.name)
            # Children before parents.
            order = [d for d, _ in res["manifests"]]
            for d in order:
                doc = json.loads(item.read(d))
                for c in doc.get("manifests") or []:
                    if c["mediaType"] in MANIFEST_TYPES:
                        self.assertLess(order.index(c["digest"]), order.index(d))

    def test_tags_are_listed(self):
        for item in CONTENT:
            status, _, body = self.get("/v2/%s/tags/list" % item.repo)
            self.assertEqual(status, 200, body)
            self.assertEqual(sorted(json.loads(body)["tags"]), sorted(item.tags), item.name)
            self.assertEqual(self.reg.tags(item.repo), sorted(item.tags))

    def test_manifests_by_tag_are_byte_identical_with_their_accept_type(self):
        for item in CONTENT:
            for tag, (digest, mt) in item.tags.items():
                status, hdrs, body = self.get("/v2/%s/manifests/%s" % (item.repo, tag),
                                              {"Accept": mt})
                self.assertEqual(status, 200, (item.name, tag, body[:300]))
                self.assertEqual(body, item.read(digest), (item.name, tag))
                self.assertEqual(hdrs["Content-Type"], mt)
                self.assertEqual(hdrs["Docker-Content-Digest"], digest)
                got = self.reg.get_manifest(item.repo, tag)
                self.assertEqual(got, (item.read(digest), mt, digest))

    def test_every_manifest_by_digest_is_byte_identical(self):
        n = 0
        for item in CONTENT:
            for digest, mt in item.manifests.items():
                for method in ("HEAD", "GET"):
                    status, hdrs, body = self.get("/v2/%s/manifests/%s" % (item.repo, digest),
                                                  {"Accept": mt}, method)
                    self.assertEqual(status, 200, (item.name, digest, method))
                    self.assertEqual(hdrs["Content-Type"], mt)
                    self.assertEqual(hdrs["Docker-Content-Digest"], digest)
                    self.assertEqual(int(hdrs["Content-Length"]), len(item.read(digest)))
                self.assertEqual(body, item.read(digest))
                n += 1
        self.assertGreaterEqual(n, 2 + 9 * 2 + 4 + 5)

    def test_every_blob_is_byte_exact_whole_and_by_range(self):
        for item in CONTENT:
            for digest in item.blobs:
                data = item.read(digest)
                n = len(data)
                path = "/v2/%s/blobs/%s" % (item.repo, digest)
                status, hdrs, body = self.get(path)
                self.assertEqual(status, 200, (item.name, digest))
                self.assertEqual(body, data, (item.name, digest))
                self.assertEqual(hdrs["Docker-Content-Digest"], digest)
                ranges = {(0, min(15, n - 1)), (n // 3, max(n // 3, 2 * n // 3)), (n - 1, n - 1)}
                for a, b in sorted(ranges):
                    status, hdrs, body = self.get(path, {"Range": "bytes=%d-%d" % (a, b)})
                    self.assertEqual(status, 206, (item.name, digest, a, b))
                    self.assertEqual(hdrs["Content-Range"], "bytes %d-%d/%d" % (a, b, n))
                    self.assertEqual(body, data[a:b + 1], (item.name, digest, a, b))
                status, hdrs, body = self.get(path, {"Range": "bytes=-%d" % min(10, n)})
                self.assertEqual((status, body), (206, data[-min(10, n):]))

    def test_range_past_the_end_is_416(self):
        item = CONTENT[0]
        digest = item.blobs[0]
        n = len(item.read(digest))
        status, hdrs, _ = self.get("/v2/%s/blobs/%s" % (item.repo, digest),
                                   {"Range": "bytes=%d-" % (n + 10)})
        self.assertEqual(status, 416)
        self.assertEqual(hdrs["Content-Range"], "bytes */%d" % n)

    def test_unknown_blob_is_404_blob_unknown(self):
        status, _, body = self.get("/v2/cache/blobs/sha256:" + "0" * 64)
        self.assertEqual(status, 404)
        self.assertEqual(json.loads(body)["errors"][0]["code"], "BLOB_UNKNOWN")

    def test_multiplatform_index_children(self):
        item = next(i for i in CONTENT if i.name == "multi")
        digest, mt = item.tags["multi"]
        index = json.loads(self.reg.get_manifest("multi", "multi", accept=OCI_INDEX)[0])
        self.assertEqual(mt, OCI_INDEX)
        plats = [(m["platform"]["os"], m["platform"]["architecture"],
                  m["platform"].get("variant")) for m in index["manifests"]]
        self.assertEqual(plats, [("linux", "amd64", None), ("linux", "arm64", "v8"),
                                 ("unknown", "unknown", None)])
        amd, arm, att = index["manifests"]
        fixture_inline = next(i for i in CONTENT if i.name == "inline")
        self.assertEqual(amd["digest"], fixture_inline.tags["inline"][0])
        self.assertEqual(att["annotations"], {
            "vnd.docker.reference.digest": amd["digest"],
            "vnd.docker.reference.type": "attestation-manifest"})
        for d, has_cache in ((amd, True), (arm, True), (att, False)):
            m = json.loads(self.reg.get_manifest("multi", d["digest"], accept=d["mediaType"])[0])
            status, _, cfg = self.get("/v2/multi/blobs/" + m["config"]["digest"])
            self.assertEqual(status, 200)
            self.assertEqual("moby.buildkit.cache.v0" in json.loads(cfg), has_cache)
        self.assertEqual(m["config"]["mediaType"], "application/vnd.oci.image.config.v1+json")
        self.assertEqual([l["mediaType"] for l in m["layers"]], ["application/vnd.in-toto+json"])


class OpenMode(ModeBase, unittest.TestCase):
    mode = "open"

    def test_anonymous_reads_work(self):
        status, hdrs, _ = fetch(self.reg.url + "/v2/")
        self.assertEqual(status, 200)
        self.assertEqual(hdrs["Docker-Distribution-API-Version"], "registry/2.0")

    def test_an_index_of_layer_blobs_needs_the_blobs_first(self):
        """What docker-registry 2.8 accepts: an OCI index (and a Docker manifest list) whose
        entries are layer blobs is accepted once those blobs are in the repository (BuildKit's
        index-shaped cache manifests); before that it is refused MANIFEST_BLOB_UNKNOWN."""
        item = next(i for i in CONTENT if i.name == "registry-max")
        digest, mt = item.tags["main"]
        data = item.read(digest)
        repo = "order-test"
        r = self.reg.request("PUT", "/v2/%s/manifests/main" % repo, body=data,
                             headers={"Content-Type": mt})
        self.assertEqual(r.status, 400)
        codes = {e["code"] for e in json.loads(r.body)["errors"]}
        self.assertEqual(codes, {"MANIFEST_BLOB_UNKNOWN"})
        for b in item.blobs:
            self.reg.push_blob(repo, item.read(b))
        self.assertEqual(self.reg.push_manifest(repo, "main", data, mt), digest)
        lst = next(i for i in CONTENT if i.name == "gen-manifest-list-zstd")
        d, mt = lst.tags["latest"]
        self.assertEqual(mt, DOCKER_LIST)
        self.assertEqual(self.reg.get_manifest(lst.repo, "latest", accept=DOCKER_LIST)[0],
                         lst.read(d))

    def test_an_index_naming_an_absent_child_manifest_is_refused(self):
        item = next(i for i in CONTENT if i.name == "multi")
        digest, mt = item.tags["multi"]
        r = self.reg.request("PUT", "/v2/multi-order/manifests/multi", body=item.read(digest),
                             headers={"Content-Type": mt})
        self.assertEqual(r.status, 400)
        self.assertIn("MANIFEST_BLOB_UNKNOWN", r.body.decode())

    def test_content_type_must_match_the_manifest(self):
        item = next(i for i in CONTENT if i.name == "registry-max")
        digest, _ = item.tags["main"]
        with self.assertRaises(RegistryError) as cm:
            self.reg.push_manifest("cache", "wrong", item.read(digest), DOCKER_LIST)
        self.assertIn("MANIFEST_INVALID", str(cm.exception))

    def test_accept_decides_whether_an_index_is_served(self):
        """2.8 serves an OCI index only to a client that accepts it, a manifest list only to
        one that accepts manifest lists; others get 404 MANIFEST_UNKNOWN."""
        status, _, body = fetch(self.reg.url + "/v2/cache/manifests/main")
        self.assertEqual(status, 404)
        self.assertIn("OCI index found, but accept header does not support OCI indexes",
                      body.decode())
        status, _, _ = fetch(self.reg.url + "/v2/cache/manifests/main", {"Accept": DOCKER_LIST})
        self.assertEqual(status, 404)
        status, _, _ = fetch(self.reg.url + "/v2/gen-manifest-list-gzip/manifests/latest",
                             {"Accept": OCI_INDEX})
        self.assertEqual(status, 404)
        status, hdrs, _ = fetch(self.reg.url + "/v2/gen-manifest-list-gzip/manifests/latest",
                                {"Accept": DOCKER_LIST})
        self.assertEqual((status, hdrs["Content-Type"]), (200, DOCKER_LIST))

    def test_a_manifest_is_not_served_as_a_blob(self):
        item = next(i for i in CONTENT if i.name == "registry-max")
        digest, _ = item.tags["main"]
        status, _, _ = fetch(self.reg.url + "/v2/cache/blobs/" + digest)
        self.assertEqual(status, 404)

    def test_tag_names_are_checked_and_can_be_mapped(self):
        root = os.path.join(WORK, "slash-tag")
        subprocess.run([find_gen(), "--out", root, "--refs", "2", "--ref-names",
                        "latest,feature/x"], check=True, capture_output=True, timeout=120)
        with self.assertRaises(ValueError):
            self.reg.push_layout(root, "slash")
        with self.assertRaises(ValueError):
            self.reg.push_layout(root, "slash", tag="one")  # two entries
        res = self.reg.push_layout(root, "slash", tag={"latest": "l", "feature/x": "feature-x"})
        self.assertEqual(sorted(res["tags"]), ["feature-x", "l"])
        self.assertEqual(self.reg.tags("slash"), ["feature-x", "l"])

    def test_a_blob_whose_content_does_not_match_its_name_is_not_pushed(self):
        root = os.path.join(WORK, "corrupt")
        shutil.copytree(next(i for i in CONTENT if i.name == "gen-index-gzip").root, root)
        victim = sorted(os.listdir(os.path.join(root, "blobs", "sha256")))[0]
        path = os.path.join(root, "blobs", "sha256", victim)
        os.chmod(path, 0o644)
        with open(path, "ab") as f:
            f.write(b"x")
        with self.assertRaises(RegistryError) as cm:
            self.reg.push_layout(root, "corrupt")
        self.assertIn("does not match its name", str(cm.exception))

    def test_big_blob_streams_from_a_file(self):
        path = os.path.join(WORK, "big.bin")
        with open(path, "wb") as f:
            for i in range(24):
                f.write(hashlib.sha256(b"%d" % i).digest() * 32768)  # 24 MiB
        t0 = time.monotonic()
        digest = self.reg.push_blob_file("big", path)
        TIMINGS.append((self.mode, "push_blob_file 24 MiB", time.monotonic() - t0))
        with open(path, "rb") as f:
            data = f.read()
        self.assertEqual(digest, sha256(data))
        status, hdrs, body = fetch(self.reg.url + "/v2/big/blobs/" + digest,
                                   {"Range": "bytes=%d-%d" % (10 << 20, (10 << 20) + 99)})
        self.assertEqual((status, body), (206, data[10 << 20:(10 << 20) + 100]))

    def test_two_registries_run_side_by_side_and_stop_cleanly(self):
        with Registry("open") as a, Registry("open") as b:
            self.assertNotEqual(a.port, b.port)
            a.push_blob("x", b"only in a")
            self.assertTrue(a.blob_exists("x", sha256(b"only in a")))
            self.assertFalse(b.blob_exists("x", sha256(b"only in a")))
            root, port, pid = a.root, a.port, a.proc.pid
        self.assertFalse(os.path.exists(root))
        with self.assertRaises(ProcessLookupError):
            os.kill(pid, 0)
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()


class BasicMode(ModeBase, unittest.TestCase):
    mode = "basic"

    def test_anonymous_is_refused_with_a_basic_challenge(self):
        item = next(i for i in CONTENT if i.name == "registry-max")
        for path in ("/v2/", "/v2/cache/manifests/main", "/v2/cache/blobs/" + item.blobs[0],
                     "/v2/cache/tags/list"):
            status, hdrs, _ = fetch(self.reg.url + path, {"Accept": OCI_INDEX})
            self.assertEqual(status, 401, path)
            self.assertEqual(hdrs["WWW-Authenticate"], 'Basic realm="basic-realm"')

    def test_wrong_credentials_are_refused(self):
        for creds in (("testuser", "nope"), ("nobody", "testpass")):
            status, hdrs, _ = fetch(self.reg.url + "/v2/cache/tags/list",
                                    {"Authorization": basic(*creds)})
            self.assertEqual(status, 401, creds)
            self.assertTrue(hdrs["WWW-Authenticate"].startswith("Basic "))
            r = self.reg.request("GET", "/v2/cache/tags/list", auth=creds)
            self.assertEqual(r.status, 401)

    def test_right_credentials_are_accepted(self):
        status, _, body = fetch(self.reg.url + "/v2/cache/tags/list",
                                {"Authorization": basic("testuser", "testpass")})
        self.assertEqual((status, json.loads(body)["tags"]), (200, ["main"]))

    def test_docker_config_names_this_registry(self):
        d = self.reg.docker_config(os.path.join(WORK, "dockercfg-basic"))
        with open(os.path.join(d, "config.json")) as f:
            cfg = json.load(f)
        self.assertEqual(base64.b64decode(cfg["auths"][self.reg.host]["auth"]),
                         b"testuser:testpass")


class TokenMode(ModeBase, unittest.TestCase):
    mode = "token"

    def challenge(self, path):
        status, hdrs, _ = fetch(self.reg.url + path, {"Accept": OCI_INDEX})
        self.assertEqual(status, 401, path)
        ch = hdrs["WWW-Authenticate"]
        self.assertTrue(ch.startswith("Bearer "), ch)
        return challenge_params(ch)

    def token(self, scope, creds=Registry.creds):
        q = urllib.parse.urlencode({"service": "test-registry", "scope": scope})
        h = {"Authorization": basic(*creds)} if creds else {}
        return fetch(self.reg.token_url + "?" + q, h)

    def test_anonymous_gets_a_bearer_challenge(self):
        p = self.challenge("/v2/")
        self.assertEqual(p, {"realm": self.reg.token_url, "service": "test-registry"})
        p = self.challenge("/v2/cache/manifests/main")
        self.assertEqual(p, {"realm": self.reg.token_url, "service": "test-registry",
                             "scope": "repository:cache:pull"})

    def test_the_realm_token_is_accepted_including_range(self):
        p = self.challenge("/v2/cache/manifests/main")
        status, _, body = self.token(p["scope"])
        self.assertEqual(status, 200, body)
        reply = json.loads(body)
        self.assertEqual(reply["token"], reply["access_token"])
        self.assertEqual(reply["expires_in"], 300)
        tok = reply["token"]
        head, claims, _ = tok.split(".")
        pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
        head = json.loads(base64.urlsafe_b64decode(pad(head)))
        claims = json.loads(base64.urlsafe_b64decode(pad(claims)))
        self.assertEqual((head["alg"], len(head["x5c"])), ("RS256", 1))
        self.assertEqual((claims["iss"], claims["aud"]), ("test-token-issuer", "test-registry"))
        self.assertEqual(claims["access"], [{"type": "repository", "name": "cache",
                                             "actions": ["pull"]}])
        item = next(i for i in CONTENT if i.name == "registry-max")
        digest, mt = item.tags["main"]
        status, _, body = fetch(self.reg.url + "/v2/cache/manifests/main",
                                {"Authorization": "Bearer " + tok, "Accept": mt})
        self.assertEqual((status, body), (200, item.read(digest)))
        blob = item.blobs[-1]
        status, _, body = fetch(self.reg.url + "/v2/cache/blobs/" + blob,
                                {"Authorization": "Bearer " + tok, "Range": "bytes=1-4"})
        self.assertEqual((status, body), (206, item.read(blob)[1:5]))
        # The token is for `cache` only.
        status, _, _ = fetch(self.reg.url + "/v2/app/tags/list", {"Authorization": "Bearer " + tok})
        self.assertEqual(status, 401)

    def test_bad_credentials_at_the_realm_are_refused(self):
        status, _, _ = self.token("repository:cache:pull", ("testuser", "wrong"))
        self.assertEqual(status, 401)
        r = self.reg.request("GET", "/v2/cache/tags/list", auth=("testuser", "wrong"))
        self.assertEqual(r.status, 401)
        with self.assertRaises(RegistryError):
            self.reg.token("repository:cache:pull", ("testuser", "wrong"))

    def test_anonymous_token_has_no_access_by_default(self):
        status, _, body = self.token("repository:cache:pull", creds=None)
        self.assertEqual(status, 200)
        status, hdrs, _ = fetch(self.reg.url + "/v2/cache/tags/list",
                                {"Authorization": "Bearer " + json.loads(body)["token"]})
        self.assertEqual(status, 401)
        self.assertIn('error="insufficient_scope"', hdrs["WWW-Authenticate"])

    def test_tampered_and_pull_only_tokens_are_refused(self):
        _, _, body = self.token("repository:cache:pull")
        tok = json.loads(body)["token"]
        bad = tok[:-6] + ("AAAAAA" if not tok.endswith("AAAAAA") else "BBBBBB")
        status, _, _ = fetch(self.reg.url + "/v2/cache/tags/list",
                             {"Authorization": "Bearer " + bad})
        self.assertEqual(status, 401)
        status, hdrs, _ = fetch(self.reg.url + "/v2/cache/blobs/uploads/",
                                {"Authorization": "Bearer " + tok}, method="POST", data=b"")
        self.assertEqual(status, 401)
        self.assertIn("insufficient_scope", hdrs["WWW-Authenticate"])

    def test_token_server_counts_and_options(self):
        stats = self.reg.token_stats()
        self.assertGreater(stats["issued"], 0)
        with Registry("token", anonymous_pull=True, token_ttl=7, token_kid=True) as reg:
            reg.push_blob("r", b"hello")
            tok = reg.token("repository:r:pull", creds=())
            status, _, body = fetch(reg.url + "/v2/r/blobs/" + sha256(b"hello"),
                                    {"Authorization": "Bearer " + tok})
            self.assertEqual((status, body), (200, b"hello"))
            q = urllib.parse.urlencode({"service": "test-registry", "scope": "repository:r:pull"})
            _, _, body = fetch(reg.token_url + "?" + q)
            reply = json.loads(body)
            self.assertEqual(reply["expires_in"], 7)
            head = json.loads(base64.urlsafe_b64decode(reply["token"].split(".")[0] + "=="))
            self.assertIn("kid", head)
            self.assertNotIn("x5c", head)
        with Registry("token", token_ttl=-65) as reg:  # past the registry's 60 s leeway
            tok = reg.token("repository:r:pull")
            status, hdrs, _ = fetch(reg.url + "/v2/r/tags/list", {"Authorization": "Bearer " + tok})
            self.assertEqual(status, 401)
            self.assertIn('error="invalid_token"', hdrs["WWW-Authenticate"])

    def test_oauth_refresh_token_flow(self):
        form = urllib.parse.urlencode({"grant_type": "password", "username": "testuser",
                                       "password": "testpass", "access_type": "offline",
                                       "service": "test-registry",
                                       "scope": "repository:cache:pull"}).encode()
        status, _, body = fetch(self.reg.token_url, {
            "Content-Type": "application/x-www-form-urlencoded"}, "POST", form)
        self.assertEqual(status, 200, body)
        rt = json.loads(body)["refresh_token"]
        form = urllib.parse.urlencode({"grant_type": "refresh_token", "refresh_token": rt,
                                       "service": "test-registry",
                                       "scope": "repository:cache:pull"}).encode()
        status, _, body = fetch(self.reg.token_url, {
            "Content-Type": "application/x-www-form-urlencoded"}, "POST", form)
        self.assertEqual(status, 200, body)
        status, _, _ = fetch(self.reg.url + "/v2/cache/tags/list",
                             {"Authorization": "Bearer " + json.loads(body)["access_token"]})
        self.assertEqual(status, 200)
        form = form.replace(rt.encode(), b"rt-wrong")
        status, _, _ = fetch(self.reg.token_url, {
            "Content-Type": "application/x-www-form-urlencoded"}, "POST", form)
        self.assertEqual(status, 401)


# ---------------------------------------------------------------------------


def setUpModule():
    root = os.geteuid() == 0
    if not root and not in_ci():
        raise unittest.SkipTest("registry tests run as root or under CI")
    missing = []
    for tool in ("docker-registry", "htpasswd", "openssl", "env"):
        if shutil.which(tool) is None:
            missing.append(tool + " is not on PATH (scripts/install-deps.sh)")
    fixtures = os.path.join(ARGS.shared, "fixtures", "buildkit")
    for name in ("registry-max", "inline"):
        if not os.path.isdir(os.path.join(fixtures, name)):
            missing.append("fixture %s is absent (--shared %s)" % (name, ARGS.shared))
    gen = find_gen()
    if not gen or not os.access(gen, os.X_OK):
        missing.append("buildcachefs-gen not found (--gen)")
    if missing:
        if in_ci():
            raise RuntimeError("registry harness tests cannot run: " + "; ".join(missing))
        raise unittest.SkipTest("; ".join(missing))
    build_content()


def tearDownModule():
    if WORK:
        shutil.rmtree(WORK, ignore_errors=True)
    if TIMINGS:
        sys.stderr.write("\ntimings (seconds):\n")
        for mode, what, s in TIMINGS:
            sys.stderr.write("  %-6s %-40s %7.3f\n" % (mode, what, s))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--gen")
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(REPO_ROOT), "shared"))
    ARGS, rest = ap.parse_known_args()
    if ARGS.gen:
        ARGS.gen = os.path.abspath(ARGS.gen)
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
