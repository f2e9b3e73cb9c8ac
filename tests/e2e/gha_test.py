#!/usr/bin/env python3
"""End-to-end tests of GitHub Actions cache sources (`type=gha`): real FUSE mounts, as
root, of caches written in BuildKit's gha layout (FORMATS.md §7.3) into the mock cache
service tests/servers/gha_mock.py, started on 127.0.0.1 by this module together with a real
Azurite (tests/servers/azurite_harness.py). The mock speaks the service's protocols and
hands out real service SAS URLs signed with Azurite's account key; the blob bytes are
uploaded to and read from Azurite, which checks every signature and expiry itself. v1
(GHES) returns the same kind of pre-signed storage URL as its archiveLocation
(FORMATS.md §7.4), so v1 reads go to Azurite too.

The caches are generated here with Python (gzip'd tar layers, cache configs with per-layer
annotations as BuildKit's gha exporter writes them), saved through the mock's v2 protocol
(CreateCacheEntry, Put Blob into Azurite through the signed URL, FinalizeCacheEntryUpload)
with tokens whose `ac` claim makes the writes land in three branch scopes. Expectations
come from those Python-side bytes and hashlib, not from the code under test.

  1. MockProtocol: the mock refuses missing and wrong tokens, answers 429; its URLs are
     Azurite's, and Azurite refuses them once revoked, issued expired or tampered with.
  2. Reads: v2 and v1 mounts show one ref per branch scope (newest index), the config
     byte for byte, the synthesized manifest, and every blob byte-exact.
  3. Faults: 429 with Retry-After, and signed URLs Azurite refuses as expired (the first
     URL of every key, the parts of the 20 MiB blob included) are survived;
     an evicted blob fails only its own reads (EIO, user.buildcachefs.error says so).
  4. Credentials: a wrong token makes `buildcachefs ls` exit 1 naming the service, never
     the token; repository+ghtoken alone list refs and blob sizes and reads say that
     content needs a runtime token.
  5. History: with the REST listing, main's superseded index #1 is under history/;
     signature bundles are no blobs; scopes the token cannot read are refs saying so.
     (The signed "-sig" index of feature/x is the ref buildkit@feature/x:sig in 2-5.)
  6. Prune (a mock and Azurite container of its own): the dry run lists and changes
     nothing, --yes deletes exactly the unkept keys through the REST API, a mount
     afterwards reads every kept blob byte-exact; without the REST API, or with a
     scope the token cannot read, nothing is deleted.
  7. Refresh: after a prune and a new export, SIGHUP shows the pruned ref and history
     entry gone and the new generation in place (with the older one as history).

Run by ctest: gha_test.py --bin BUILDCACHEFS --gen BUILDCACHEFS_GEN --shared DIR
"""

import errno
import gzip
import hashlib
import io
import json
import os
import random
import subprocess
import sys
import tarfile
import unittest
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO_ROOT, "tests", "servers"))

import e2e_cli  # noqa: E402
import mount_test as mt  # noqa: E402
import refresh_test  # noqa: E402  (a foreground mount with sd_notify, SIGHUP)
import gha_mock  # noqa: E402
from azurite_harness import Azurite, find_binary  # noqa: E402

ARGS = None
VERSION = hashlib.sha256(b"|go-actionscache-1.0").hexdigest()
LAYER_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
X = "user.buildcachefs."
MIB = 1 << 20
SCOPES = ["refs/heads/main", "refs/heads/feature/x", "refs/pull/7/merge"]
GHTOKEN = "ghp_TESTghTokenValue123"


def scope_hash(scope):
    return hashlib.sha256(scope.encode()).hexdigest()[:8]


def index_key(scope, attr="buildkit"):
    return "index-%s-1-%s" % (attr, scope_hash(scope))


def blob_key(digest):
    return "buildkit-blob-1-" + digest


def make_layer(rng, nfiles, big=0):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for i in range(nfiles):
            data = rng.randbytes(big if (big and i == 0) else rng.randint(10, 4000))
            ti = tarfile.TarInfo("dir/file%d" % i)
            ti.size, ti.mtime, ti.mode = len(data), 1700000000, 0o644
            tf.addfile(ti, io.BytesIO(data))
    raw = buf.getvalue()
    gz = gzip.compress(raw, compresslevel=1, mtime=0)
    return gz, "sha256:" + hashlib.sha256(raw).hexdigest()


class Cache:
    """One exported cache: its layers (digest -> bytes) and its config JSON."""

    def __init__(self, seed, nlayers, big=0, reuse=None):
        rng = random.Random(seed)
        self.blobs = {}
        self.diffs = {}
        layers = []
        for i in range(nlayers):
            if reuse is not None and i == 0:  # the first layer of another cache
                d = sorted(reuse.blobs)[0]
                gz, diff = reuse.blobs[d], reuse.diffs[d]
            else:
                gz, diff = make_layer(rng, 3, big if i == 0 else 0)
            d = "sha256:" + hashlib.sha256(gz).hexdigest()
            self.diffs[d] = diff
            self.blobs[d] = gz
            layers.append({"blob": d, "parent": i - 1 if i else -1,
                           "annotations": {"mediaType": LAYER_GZ, "diffID": diff,
                                           "size": len(gz),
                                           "createdAt": "2026-0%d-01T10:00:00Z" % (i % 9 + 1)}})
        rec = "sha256:" + hashlib.sha256(b"rec%d" % seed).hexdigest()
        self.config = json.dumps({"layers": layers, "records": [
            {"digest": rec, "layers": [{"layer": nlayers - 1,
                                        "createdAt": "2026-01-01T10:00:00Z"}]}]},
            separators=(",", ":")).encode()

    def manifest(self):
        """The index-shape manifest BuildKit's gha importer builds from the config (its
        descriptors), which the mount synthesizes (DESIGN.md §1.5): rebuilt here."""
        descs, seen = [], set()
        for l in json.loads(self.config)["layers"]:
            if l["blob"] in seen:
                continue
            seen.add(l["blob"])
            a = l["annotations"]
            descs.append({"mediaType": a["mediaType"], "digest": l["blob"], "size": a["size"],
                          "annotations": {"buildkit/createdat": a["createdAt"],
                                          "containerd.io/uncompressed": a["diffID"]}})
        descs.append({"mediaType": "application/vnd.buildkit.cacheconfig.v0",
                      "digest": sha(self.config), "size": len(self.config)})
        return json.dumps({"schemaVersion": 2,
                           "mediaType": "application/vnd.oci.image.index.v1+json",
                           "manifests": descs}, separators=(",", ":")).encode()

    def documents(self):
        """digest -> bytes of the config and the synthesized manifest."""
        return {sha(self.config): self.config, sha(self.manifest()): self.manifest()}


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def save_cache(mock, token, scope, cache, n, sig=False):
    """What BuildKit's gha exporter writes: every layer blob the cache lacks, then the
    index as the next generation (`-sig` before `#` and a sigstore bundle when signed)."""
    for d, data in cache.blobs.items():
        try:
            gha_mock.save(mock.url, token, blob_key(d), VERSION, data)
        except urllib.error.HTTPError as e:
            if e.code != 409:  # already there (another cache's layer)
                raise
    gha_mock.save(mock.url, token, "%s%s#%d" % (index_key(scope), "-sig" if sig else "", n),
                  VERSION, cache.config)
    if sig:
        bundle = json.dumps({"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
                             "messageSignature": {"messageDigest": {
                                 "algorithm": "SHA2_256",
                                 "digest": hashlib.sha256(cache.config).hexdigest()}}}).encode()
        gha_mock.save(mock.url, token, blob_key(sha(cache.config)) + "-sig", VERSION, bundle)


CACHES = {}   # scope (+ ":sig" for the signed index) -> the cache its newest index holds
OLD = None    # an older index of main (#1), superseded by #2
TOKENS = {}   # name -> JWT
WRITERS = {}  # scope -> a JWT that writes into it
MOCK = None
AZ = None     # the Azurite holding the entries' bytes


def build_and_save():
    global OLD, MOCK, AZ
    writers = WRITERS
    writers.update({s: gha_mock.make_jwt([(s, 3)]) for s in SCOPES})
    TOKENS["reader"] = gha_mock.make_jwt([(SCOPES[1], 3), (SCOPES[0], 1), (SCOPES[2], 1)])
    TOKENS["main"] = gha_mock.make_jwt([(SCOPES[0], 3)])
    TOKENS["unknown"] = gha_mock.make_jwt([(SCOPES[0], 3)])  # valid JWT, not issued
    AZ = Azurite().start()
    MOCK = gha_mock.GhaMock(AZ, tokens=list(writers.values()) + [TOKENS["reader"], TOKENS["main"]],
                            ghtoken=GHTOKEN, repository="octo/app").start()
    OLD = Cache(1, 2)
    CACHES[SCOPES[0]] = Cache(2, 4, big=20 * MIB)   # a 20 MiB layer: 3 store parts
    CACHES[SCOPES[1]] = Cache(3, 3)
    CACHES[SCOPES[2]] = Cache(4, 2)
    CACHES[SIGNED] = Cache(5, 2)                    # a signed cache of feature/x
    plan = [(SCOPES[0], OLD, 1), (SCOPES[0], CACHES[SCOPES[0]], 2),
            (SCOPES[1], CACHES[SCOPES[1]], 1), (SCOPES[2], CACHES[SCOPES[2]], 1)]
    for scope, cache, n in plan:
        save_cache(MOCK, writers[scope], scope, cache, n)
    save_cache(MOCK, writers[SCOPES[1]], SCOPES[1], CACHES[SIGNED], 1, sig=True)


SIGNED = SCOPES[1] + ":sig"
REFS = SCOPES + [SIGNED]  # every ref of a token reading all three scopes


def ref_name(scope):
    sig = scope.endswith(":sig")
    scope = scope[:-len(":sig")] if sig else scope
    return "buildkit@" + scope[len("refs/"):].replace("heads/", "", 1) + (":sig" if sig else "")


def ref_dir(scope):
    return ref_name(scope).replace("%", "%25").replace("/", "%2F")


def all_blobs():
    out = {}
    for c in CACHES.values():
        out.update(c.blobs)
    return out


def control(what):
    with urllib.request.urlopen(urllib.request.Request(MOCK.url + "_control/" + what,
                                                       method="POST"), timeout=10) as r:
        return json.loads(r.read())


def counters():
    return control("counters")


def v2_source(token="reader"):
    return "type=gha,url_v2=%s,token=%s,version=2" % (MOCK.url, TOKENS[token])


class Base(mt.Base):
    def mount_rest(self, source, mock):
        """A mount whose GitHub REST API is the mock's (GITHUB_API_URL, as in a workflow)."""
        old = os.environ.get("GITHUB_API_URL")
        os.environ["GITHUB_API_URL"] = mock.url
        try:
            return self.mount([source])
        finally:
            if old is None:
                os.environ.pop("GITHUB_API_URL")
            else:
                os.environ["GITHUB_API_URL"] = old

    def run_cli(self, args, env=None):
        e = dict(os.environ)
        for k in ("ACTIONS_RUNTIME_TOKEN", "ACTIONS_RESULTS_URL", "ACTIONS_CACHE_URL",
                  "ACTIONS_CACHE_SERVICE_V2", "GITHUB_TOKEN", "GITHUB_REPOSITORY"):
            e.pop(k, None)
        e.update(env or {})
        return subprocess.run([ARGS.bin] + args, capture_output=True, text=True, timeout=120,
                              env=e)

    def check_mount(self, mnt, scopes):
        src = os.path.join(mnt, "gha-buildkit")
        self.assertEqual(sorted(os.listdir(os.path.join(src, "refs"))),
                         sorted(ref_dir(s) for s in scopes))
        for s in scopes:
            cache = CACHES[s]
            rd = os.path.join(src, "refs", ref_dir(s))
            self.assertEqual(os.getxattr(rd, X + "ref").decode(), ref_name(s))
            self.assertEqual(mt.read_all(os.path.join(rd, "cache-config.json")), cache.config)
            # The manifest is synthesized (DESIGN.md §1.5), and says so, here and under blobs/.
            mdata = mt.read_all(os.path.join(rd, "manifest.json"))
            self.assertEqual(os.getxattr(os.path.join(rd, "manifest.json"),
                                         X + "synthesized"), b"1")
            self.assertEqual(os.getxattr(os.path.join(src, "blobs", "sha256",
                                                      hashlib.sha256(mdata).hexdigest()),
                                         X + "synthesized"), b"1")
            with self.assertRaises(OSError):  # the config is stored, not synthesized
                os.getxattr(os.path.join(rd, "cache-config.json"), X + "synthesized")
            man = json.loads(mdata)
            self.assertEqual(man["manifests"][-1]["digest"],
                             "sha256:" + hashlib.sha256(cache.config).hexdigest())
            self.assertEqual(sorted(m["digest"] for m in man["manifests"][:-1]),
                             sorted(cache.blobs))
        for s in scopes:
            for d, data in CACHES[s].blobs.items():
                p = os.path.join(src, "blobs", "sha256", d.split(":")[1])
                self.assertEqual(os.stat(p).st_size, len(data))
                got = mt.read_all(p)
                self.assertTrue(got == data, "blob %s differs (%d bytes read)" % (d, len(got)))


class MockProtocol(Base):
    def post(self, token, body):
        hdrs = {"Content-Type": "application/json"}
        if token:
            hdrs["Authorization"] = "Bearer " + token
        req = urllib.request.Request(MOCK.url.rstrip("/") + gha_mock.TWIRP +
                                     "GetCacheEntryDownloadURL", data=json.dumps(body).encode(),
                                     headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read()), r.headers
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}"), e.headers

    def azurite_refusal(self, url):
        """The HTTP status of a GET Azurite refuses, after checking it is Azure's own
        authorization error."""
        with self.assertRaises(urllib.error.HTTPError) as cm:
            urllib.request.urlopen(url, timeout=10)
        self.assertEqual(cm.exception.headers.get("x-ms-error-code"), "AuthorizationFailure")
        return cm.exception.code

    def test_missing_and_wrong_tokens_are_refused_429_answered_urls_expire(self):
        k = index_key(SCOPES[0])
        body = {"key": k, "restore_keys": [k], "version": VERSION}
        self.assertEqual(self.post(None, body)[0], 401)
        st, js, _ = self.post(TOKENS["unknown"], body)
        self.assertEqual((st, js["code"]), (401, "unauthenticated"))
        st, js, _ = self.post(TOKENS["main"], body)
        self.assertEqual((st, js["ok"], js["matched_key"]), (200, True, k + "#2"))
        url = js["signed_download_url"]
        # A real SAS URL into Azurite, which serves the bytes.
        self.assertTrue(url.startswith(AZ.url + "/"), url)
        self.assertIn("sig=", url)
        self.assertIn("si=", url)
        with urllib.request.urlopen(url, timeout=10) as r:
            self.assertEqual(r.read(), CACHES[SCOPES[0]].config)
        tampered = url.replace("sr=b", "sr=b&sp=rw") if "sp=" not in url else url
        self.assertEqual(self.azurite_refusal(url.replace("si=r", "si=x")), 403)
        self.assertEqual(self.azurite_refusal(tampered), 403)
        control("429?count=1&retry_after=2")
        st, _, hdrs = self.post(TOKENS["main"], body)
        self.assertEqual((st, hdrs["Retry-After"]), (429, "2"))
        control("expire")
        self.assertEqual(self.azurite_refusal(url), 403)
        st, js, _ = self.post(TOKENS["main"], body)
        self.assertEqual(st, 200)
        with urllib.request.urlopen(js["signed_download_url"], timeout=10) as r:
            self.assertEqual(r.read(), CACHES[SCOPES[0]].config)
        # Issued already expired (its own se= in the past): Azurite refuses it, the next
        # lookup of the key gets a good one.
        control("expire?first_per_key=1")
        try:
            first = self.post(TOKENS["main"], body)[1]["signed_download_url"]
            second = self.post(TOKENS["main"], body)[1]["signed_download_url"]
        finally:
            control("expire?first_per_key=0")
        self.assertIn("se=", first)
        self.assertEqual(self.azurite_refusal(first), 403)
        with urllib.request.urlopen(second, timeout=10) as r:
            self.assertEqual(r.read(), CACHES[SCOPES[0]].config)
        # v1 and REST
        req = urllib.request.Request(
            MOCK.url + "_apis/artifactcache/cache?keys=%s&version=%s" % (
                urllib.parse.quote(k), VERSION),
            headers={"Authorization": "Bearer " + TOKENS["main"]})
        with urllib.request.urlopen(req, timeout=10) as r:
            self.assertEqual(json.loads(r.read())["cacheKey"], k + "#2")
        req = urllib.request.Request(MOCK.url + "repos/octo/app/actions/caches?per_page=100",
                                     headers={"Authorization": "Bearer " + GHTOKEN})
        with urllib.request.urlopen(req, timeout=10) as r:
            js = json.loads(r.read())
        n = sum(len(c.blobs) + 1 for c in CACHES.values()) + len(OLD.blobs) + 1 + 1  # bundle
        self.assertEqual(js["total_count"], n)


class Reads(Base):
    def test_v2_every_scope_newest_index_every_blob_byte_exact(self):
        mnt = self.mount([v2_source()])
        # The signed index of feature/x is a ref of its own, next to the unsigned one.
        self.check_mount(mnt, REFS)
        # The synthesized index-shape manifest (DESIGN.md §1.5), rebuilt here from the
        # config as BuildKit's gha importer builds its descriptors; also under blobs/.
        for s in REFS:
            want = CACHES[s].manifest()
            rd = os.path.join(mnt, "gha-buildkit", "refs", ref_dir(s))
            self.assertEqual(mt.read_all(os.path.join(rd, "manifest.json")), want)
            blob = os.path.join(mnt, "gha-buildkit", "blobs", "sha256",
                                hashlib.sha256(want).hexdigest())
            self.assertEqual(mt.read_all(blob), want)

    def test_v1_ghes_protocol(self):
        src = "type=gha,url=%s,token=%s,version=1" % (MOCK.url, TOKENS["main"])
        mnt = self.mount([src])
        self.check_mount(mnt, [SCOPES[0]])


class Faults(Base):
    def test_429_and_urls_azurite_refuses_as_expired_are_survived(self):
        mnt = self.mount([v2_source("main")])
        before = counters()
        control("429?count=3&retry_after=1")
        control("expire?first_per_key=1")  # Azurite refuses the first URL of every key
        try:
            self.check_mount(mnt, [SCOPES[0]])
        finally:
            control("expire?first_per_key=0")
        after = counters()
        self.assertEqual(after.get("429", 0) - before.get("429", 0), 3)
        # Every blob got an expired URL first, and was read with a fresh one.
        n = len(CACHES[SCOPES[0]].blobs)
        self.assertEqual(after.get("issued_expired", 0) - before.get("issued_expired", 0), n)
        lookups = "twirp:GetCacheEntryDownloadURL"
        self.assertGreaterEqual(after.get(lookups, 0) - before.get(lookups, 0), 2 * n + 3)
        with open(self.logs[mnt], "rb") as f:
            log = f.read().decode(errors="replace")
        self.assertNotIn(TOKENS["main"], log)

    def test_an_evicted_blob_fails_only_its_own_reads(self):
        mnt = self.mount([v2_source()])
        cache = CACHES[SCOPES[1]]
        victim = sorted(cache.blobs)[0]
        control("evict?key=" + urllib.parse.quote(blob_key(victim)))
        self.addCleanup(gha_mock.save, MOCK.url, WRITERS[SCOPES[1]], blob_key(victim), VERSION,
                        cache.blobs[victim])
        p = os.path.join(mnt, "gha-buildkit", "blobs", "sha256", victim.split(":")[1])
        self.assertEqual(mt.read_errno(p), errno.EIO)
        err = os.getxattr(p, X + "error").decode()
        self.assertIn("evicted", err)
        self.assertIn(blob_key(victim), err)
        for d, data in all_blobs().items():
            if d == victim:
                continue
            q = os.path.join(mnt, "gha-buildkit", "blobs", "sha256", d.split(":")[1])
            self.assertTrue(mt.read_all(q) == data, d)


class History(Base):
    def test_older_generations_are_history_and_signature_bundles_are_not_blobs(self):
        src = v2_source() + ",repository=octo/app,ghtoken=" + GHTOKEN
        mnt = self.mount_rest(src, MOCK)
        self.check_mount(mnt, REFS)
        top = os.path.join(mnt, "gha-buildkit")
        # main's index #1, superseded by #2: BuildKit never loads it again.
        old_man = OLD.manifest()
        self.assertEqual(os.listdir(os.path.join(top, "history")),
                         [hashlib.sha256(old_man).hexdigest()])
        hd = os.path.join(top, "history", hashlib.sha256(old_man).hexdigest())
        self.assertEqual(mt.read_all(os.path.join(hd, "manifest.json")), old_man)
        for p in (os.path.join(hd, "manifest.json"),
                  os.path.join(top, "blobs", "sha256", hashlib.sha256(old_man).hexdigest())):
            self.assertEqual(os.getxattr(p, X + "synthesized"), b"1")
        self.assertEqual(mt.read_all(os.path.join(hd, "cache-config.json")), OLD.config)
        for d, data in OLD.blobs.items():
            got = mt.read_all(os.path.join(top, "blobs", "sha256", d.split(":")[1]))
            self.assertTrue(got == data, d)
        # blobs/ holds exactly the layers, configs and synthesized manifests: the
        # signature bundle (key "buildkit-blob-1-<config digest>-sig") is not a blob.
        want = set()
        for c in list(CACHES.values()) + [OLD]:
            want |= {d.split(":")[1] for d in list(c.blobs) + list(c.documents())}
        self.assertEqual(set(os.listdir(os.path.join(top, "blobs", "sha256"))), want)

    def test_scopes_the_token_cannot_read_are_refs_that_say_so(self):
        src = v2_source("main") + ",repository=octo/app,ghtoken=" + GHTOKEN
        mnt = self.mount_rest(src, MOCK)
        refs = os.path.join(mnt, "gha-buildkit", "refs")
        self.assertEqual(sorted(os.listdir(refs)), sorted(ref_dir(s) for s in REFS))
        self.assertEqual(mt.read_all(os.path.join(refs, ref_dir(SCOPES[0]), "cache-config.json")),
                         CACHES[SCOPES[0]].config)
        for s in REFS[1:]:
            err = os.getxattr(os.path.join(refs, ref_dir(s)), X + "error").decode()
            self.assertIn("does not grant this scope", err)
            self.assertNotIn(TOKENS["main"], err)


class Prune(Base):
    """`buildcachefs prune` of a gha cache through the REST API, against a mock (and
    Azurite container) of its own: dropping pull/7's ref deletes exactly its index, main's
    superseded index #1, the blobs only those reach and an orphan blob; the kept refs,
    the signed index with its bundle, and a layer main #1 shares with main #2 stay."""

    def setUp(self):
        super().setUp()
        self.mock = gha_mock.GhaMock(AZ, tokens=list(WRITERS.values()) + [TOKENS["reader"]],
                                     ghtoken=GHTOKEN, container="prune-" + hashlib.sha256(
                                         self.id().encode()).hexdigest()[:12]).start()
        self.addCleanup(self.mock.stop)
        old = Cache(21, 2)
        self.kept = {SCOPES[0]: Cache(22, 3, reuse=old), SCOPES[1]: Cache(23, 2),
                     SIGNED: Cache(24, 2)}
        self.pr = Cache(25, 2)
        self.old = old
        save_cache(self.mock, WRITERS[SCOPES[0]], SCOPES[0], old, 1)
        save_cache(self.mock, WRITERS[SCOPES[0]], SCOPES[0], self.kept[SCOPES[0]], 2)
        save_cache(self.mock, WRITERS[SCOPES[1]], SCOPES[1], self.kept[SCOPES[1]], 1)
        save_cache(self.mock, WRITERS[SCOPES[1]], SCOPES[1], self.kept[SIGNED], 1, sig=True)
        save_cache(self.mock, WRITERS[SCOPES[2]], SCOPES[2], self.pr, 1)
        self.orphan = b"an orphan layer no index names"
        gha_mock.save(self.mock.url, WRITERS[SCOPES[0]], blob_key(sha(self.orphan)), VERSION,
                      self.orphan)

    def rest_keys(self):
        req = urllib.request.Request(self.mock.url + "repos/octo/app/actions/caches?per_page=100",
                                     headers={"Authorization": "Bearer " + GHTOKEN})
        with urllib.request.urlopen(req, timeout=10) as r:
            js = json.loads(r.read())
        self.assertLessEqual(js["total_count"], 100)
        return sorted(e["key"] for e in js["actions_caches"])

    def prune(self, source, *extra):
        return self.run_cli(["prune", source, "--filter", "ref==" + ref_name(SCOPES[2]),
                             "--grace-period", "0s", "--format", "json"] + list(extra),
                            {"GITHUB_API_URL": self.mock.url})

    def test_dry_run_lists_real_run_deletes_exactly_the_unkept_keys(self):
        src = "type=gha,url_v2=%s,token=%s,repository=octo/app,ghtoken=%s" % (
            self.mock.url, TOKENS["reader"], GHTOKEN)
        before = self.rest_keys()
        kept_blobs = set()
        for c in self.kept.values():
            kept_blobs |= set(c.blobs)
        gone_blobs = (set(self.old.blobs) | set(self.pr.blobs) | {sha(self.orphan)}) - kept_blobs
        self.assertEqual(len(gone_blobs), 1 + 2 + 1)  # main #1 shares one layer with #2
        want_gone = sorted([blob_key(d) for d in gone_blobs] +
                           [index_key(SCOPES[0]) + "#1", index_key(SCOPES[2]) + "#1"])
        want_left = sorted(set(before) - set(want_gone))
        self.assertIn(blob_key(sha(self.kept[SIGNED].config)) + "-sig", want_left)

        p = self.prune(src)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        plan = json.loads(p.stdout)
        self.assertEqual({r["name"]: r["action"] for r in plan["refs"]},
                         {ref_name(s): "drop" if s == SCOPES[2] else "keep" for s in REFS})
        self.assertEqual(sorted(b["digest"] for b in plan["delete_blobs"]),
                         sorted(gone_blobs | {sha(self.old.manifest())}))
        self.assertEqual(plan["errors"], [])
        self.assertIsNone(plan["result"])
        self.assertEqual(self.rest_keys(), before)  # a dry run changes nothing
        self.assertNotIn(GHTOKEN, p.stdout + p.stderr)
        self.assertNotIn(TOKENS["reader"], p.stdout + p.stderr)

        # Last use is the index entry's last_accessed_at: all were just written.
        p = self.run_cli(["prune", src, "--keep-duration", "1h", "--format", "json"],
                         {"GITHUB_API_URL": self.mock.url})
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        for r in json.loads(p.stdout)["refs"]:
            self.assertEqual(r["action"], "keep", r)
            self.assertIn("within --keep-duration 1h", r["reason"])
            self.assertIsNotNone(r["last_used"])

        # Without the REST API there is nothing to delete with.
        no_rest = "type=gha,url_v2=%s,token=%s" % (self.mock.url, TOKENS["reader"])
        p = self.prune(no_rest, "--yes")
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("needs the GitHub REST API", p.stdout + p.stderr)
        self.assertEqual(self.rest_keys(), before)

        p = self.prune(src, "--yes")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        res = json.loads(p.stdout)["result"]
        self.assertEqual((res["refs_removed"], res["blobs_deleted"], res["errors"],
                          res["skipped"]), ([ref_name(SCOPES[2])], len(gone_blobs) + 1, [], []))
        self.assertEqual(self.rest_keys(), want_left)
        # The entries' blobs left Azurite with them.
        self.assertEqual(len(AZ.list_blobs(self.mock.container)), len(want_left))

        # A mount afterwards: the kept refs, every kept blob byte-exact, no history.
        mnt = self.mount_rest(src, self.mock)
        top = os.path.join(mnt, "gha-buildkit")
        self.assertEqual(sorted(os.listdir(os.path.join(top, "refs"))),
                         sorted(ref_dir(s) for s in self.kept))
        self.assertEqual(os.listdir(os.path.join(top, "history")), [])
        for s, c in self.kept.items():
            rd = os.path.join(top, "refs", ref_dir(s))
            self.assertEqual(mt.read_all(os.path.join(rd, "cache-config.json")), c.config)
            for d, data in c.blobs.items():
                got = mt.read_all(os.path.join(top, "blobs", "sha256", d.split(":")[1]))
                self.assertTrue(got == data, d)

    def test_a_scope_the_token_cannot_read_blocks_the_sweep(self):
        src = "type=gha,url_v2=%s,token=%s,repository=octo/app,ghtoken=%s" % (
            self.mock.url, WRITERS[SCOPES[0]], GHTOKEN)
        before = self.rest_keys()
        p = self.prune(src, "--yes")
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("what it reaches is unknown", p.stdout)
        self.assertEqual(self.rest_keys(), before)


class Refresh(refresh_test.Base):
    """A running mount re-lists the cache on SIGHUP: after a prune and a new export, the
    pruned ref and history entry are gone and the new generation shows."""

    def test_sighup_after_a_prune_and_an_export(self):
        mock = gha_mock.GhaMock(AZ, tokens=list(WRITERS.values()) + [TOKENS["reader"]],
                                ghtoken=GHTOKEN, container="refresh").start()
        self.addCleanup(mock.stop)
        gens = [Cache(31, 2), Cache(32, 2), Cache(33, 2)]
        pr = Cache(34, 1)
        save_cache(mock, WRITERS[SCOPES[0]], SCOPES[0], gens[0], 1)
        save_cache(mock, WRITERS[SCOPES[0]], SCOPES[0], gens[1], 2)
        save_cache(mock, WRITERS[SCOPES[2]], SCOPES[2], pr, 1)
        src = "type=gha,url_v2=%s,token=%s,repository=octo/app,ghtoken=%s" % (
            mock.url, TOKENS["reader"], GHTOKEN)
        env = dict(os.environ, GITHUB_API_URL=mock.url)
        self.start([src], env)
        top = os.path.join(self.mnt, "gha-buildkit")

        def shown():
            return (sorted(os.listdir(os.path.join(top, "refs"))),
                    sorted(os.listdir(os.path.join(top, "history"))))

        def hexof(c):
            return hashlib.sha256(c.manifest()).hexdigest()
        self.assertEqual(shown(), ([ref_dir(SCOPES[0]), ref_dir(SCOPES[2])], [hexof(gens[0])]))
        p = subprocess.run([ARGS.bin, "prune", src, "--filter", "ref==" + ref_name(SCOPES[2]),
                            "--grace-period", "0s", "--yes"], capture_output=True, text=True,
                           timeout=120, env=env)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        save_cache(mock, WRITERS[SCOPES[0]], SCOPES[0], gens[2], 3)
        self.hup()
        self.assertEqual(shown(), ([ref_dir(SCOPES[0])], [hexof(gens[1])]))
        rd = os.path.join(top, "refs", ref_dir(SCOPES[0]))
        self.assertEqual(mt.read_all(os.path.join(rd, "cache-config.json")), gens[2].config)
        for d, data in list(gens[2].blobs.items()) + list(gens[1].blobs.items()):
            got = mt.read_all(os.path.join(top, "blobs", "sha256", d.split(":")[1]))
            self.assertTrue(got == data, d)


class Credentials(Base):
    def run_ls(self, source, env=None):
        return self.run_cli(["ls", source, "--format", "json"], env)

    def test_a_wrong_token_is_reported_with_the_service_named(self):
        tok = TOKENS["unknown"]
        p = self.run_ls("type=gha,url_v2=%s,token=%s" % (MOCK.url, tok))
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        out = p.stdout + p.stderr
        self.assertIn("GitHub Actions cache service v2 at " + MOCK.url.rstrip("/"), out)
        self.assertIn("refused", out)
        self.assertNotIn(tok, out)
        # No token at all: nothing to read with.
        p = self.run_ls("type=gha,url_v2=%s" % MOCK.url)
        self.assertEqual(p.returncode, 1)
        self.assertIn("no GitHub Actions cache credentials", p.stdout + p.stderr)

    def test_the_env_of_a_workflow_step_is_used(self):
        p = self.run_ls("type=gha", {"ACTIONS_RUNTIME_TOKEN": TOKENS["main"],
                                     "ACTIONS_RESULTS_URL": MOCK.url,
                                     "ACTIONS_CACHE_SERVICE_V2": "true"})
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(ref_name(SCOPES[0]), p.stdout)
        self.assertNotIn(TOKENS["main"], p.stdout + p.stderr)

    def test_rest_only_lists_metadata_and_reads_need_a_runtime_token(self):
        env = {"GITHUB_API_URL": MOCK.url}
        src = "type=gha,repository=octo/app,ghtoken=" + GHTOKEN
        p = self.run_ls(src, env)
        out = p.stdout + p.stderr
        for s in REFS:
            self.assertIn(ref_name(s), out)
        self.assertIn("needs an Actions runtime token", out)
        self.assertNotIn(GHTOKEN, out)
        bad = self.run_ls("type=gha,repository=octo/app,ghtoken=nope", env)
        self.assertEqual(bad.returncode, 1)
        self.assertIn("GitHub REST API", bad.stdout + bad.stderr)
        # A mount shows every blob with its size; reading says what is missing.
        mnt = self.mount_rest(src, MOCK)
        blobs = os.path.join(mnt, "gha-buildkit", "blobs", "sha256")
        for d, data in all_blobs().items():
            p = os.path.join(blobs, d.split(":")[1])
            self.assertEqual(os.stat(p).st_size, len(data))
        d = sorted(CACHES[SCOPES[2]].blobs)[0]
        p = os.path.join(blobs, d.split(":")[1])
        self.assertNotEqual(mt.read_errno(p), 0)
        self.assertIn("runtime token", os.getxattr(p, X + "error").decode())


def setUpModule():
    absent = [] if find_binary() else ["azurite-blob is not installed (scripts/deps-azurite.sh)"]
    mt.check_prerequisites("gha tests", ARGS, (), extra_missing=absent)
    mt.ARGS = ARGS
    refresh_test.ARGS = ARGS
    build_and_save()


def tearDownModule():
    if MOCK:
        MOCK.stop()
    if AZ:
        AZ.stop()


if __name__ == "__main__":
    e2e_cli.main()
