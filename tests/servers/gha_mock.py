#!/usr/bin/env python3
"""A mock of the GitHub Actions cache service for tests (TEST-SERVERS.md §4: no server
exists in Debian or npm). One HTTP server on 127.0.0.1 speaks:

  * v2 (github.com): Twirp JSON
      POST /twirp/github.actions.results.api.v1.CacheService/CreateCacheEntry
           {key, version} -> {ok, signed_upload_url}      ("already exists": 409)
      POST .../FinalizeCacheEntryUpload {key, version, size_bytes} -> {ok, entry_id}
      POST .../GetCacheEntryDownloadURL {key, restore_keys, version}
           -> {ok, signed_download_url, matched_key}: the exact key, else the newest
              entry whose key starts with a restore key; the same version; only entries
              of the token's scopes.
    Bearer runtime token required (401 {"code":"unauthenticated"}); unknown method 404
    {"code":"bad_route"}.
  * v1 (GHES): GET /_apis/artifactcache/cache?keys=k1,k2&version=v with the same
    token -> {cacheKey, scope, archiveLocation}, or 204 when nothing matches.
  * The entries' bytes live in a real Azurite (tests/servers/azurite_harness.py), container
    `actions-cache` (or the one given), one block blob per entry. The signed URLs are
    real service SAS URLs (sr=b) signed with Azurite's account key, computed here from
    the documented string-to-sign: uploads `sp=cw` with their own `se`; downloads name a stored access
    policy of the container (`si=`), so that they can be revoked. Azurite itself checks
    every signature and expiry and serves the bytes and Ranges; the mock never sees them.
    v1's archiveLocation is the same kind of pre-signed storage URL (FORMATS.md §7.4:
    "plain GET archiveLocation (a pre-signed URL)"), so v1 reads go to Azurite too.
  * REST: GET /repos/<owner>/<repo>/actions/caches?per_page=&page=&key=&ref= with
    `Authorization: Bearer <ghtoken>` -> {total_count, actions_caches: [...]};
    DELETE /repos/<owner>/<repo>/actions/caches?key=K[&ref=R] (every entry with exactly
    that key, 200 with the deleted ones, 404 when none) and
    DELETE /repos/<owner>/<repo>/actions/caches/<id> (204, 404 when absent), as GitHub's
    REST API; the entry's blob leaves Azurite with it.

Runtime tokens are JWTs (signature not checked, as GitHub's clients do not check it);
the server accepts exactly the tokens in `tokens` and reads each one's `ac` claim for
its scopes: reads see entries of every scope in the token, writes go to the last scope
with write permission (bit 2).

Fault control (no auth, for the test): POST /_control/429?count=N&retry_after=S (the next
N requests to the service answer 429 with Retry-After); /_control/expire (every download
URL issued so far stops working: the container's stored access policy is replaced, so
Azurite refuses them with 403); /_control/expire?first_per_key=1 (from now on the first
download URL handed out for each key is already expired, its own `se` in the past, and
Azurite refuses it with 403; the next lookup of the key gets a valid one; first_per_key=0
ends this); /_control/evict?key=K (the entry and its blob are gone); /_control/counters
(requests by kind).

Use from Python: `m = GhaMock(azurite, tokens=[...], ghtoken="...").start(); m.url;
m.stop()`.
"""

import base64
import hashlib
import hmac
import json
import os
import threading
import time
import urllib.parse
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TWIRP = "/twirp/github.actions.results.api.v1.CacheService/"
CONTAINER = "actions-cache"
SAS_VERSION = "2021-08-06"
URL_LIFETIME = 600  # seconds a signed URL is valid


def jwt_claims(token):
    try:
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        return json.loads(base64.urlsafe_b64decode(payload))
    except Exception:
        return None


def make_jwt(scopes, exp=None, nbf=None):
    """A runtime token with `ac` listing (scope, permission) pairs, as GitHub issues."""
    now = int(time.time())
    ac = json.dumps([{"Scope": s, "Permission": p} for s, p in scopes])
    claims = {"ac": ac, "exp": exp if exp is not None else now + 3600,
              "nbf": nbf if nbf is not None else now - 60, "iss": "gha-mock",
              "jti": base64.b16encode(os.urandom(8)).decode()}

    def enc(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return enc({"alg": "RS256", "typ": "JWT"}) + "." + enc(claims) + ".bW9jaw"


def iso(t):
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def sas_time(t):
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def blob_sas(account, key, container, blob, sp="", st="", se="", si=""):
    """A service SAS for one blob (sr=b), HMAC-SHA256 with the account key over the
    string-to-sign of versions 2020-12-06 and later: sp, st, se, canonicalized resource,
    si, sip, spr, sv, sr, snapshot time, encryption scope, rscc, rscd, rsce, rscl, rsct."""
    spr = "https,http"
    sts = "\n".join([sp, st, se, "/blob/%s/%s/%s" % (account, container, blob), si, "", spr,
                     SAS_VERSION, "b", "", "", "", "", "", "", ""])
    sig = base64.b64encode(hmac.new(base64.b64decode(key), sts.encode(),
                                    hashlib.sha256).digest()).decode()
    q = [("sv", SAS_VERSION), ("spr", spr), ("sr", "b")]
    q += [(k, v) for k, v in (("sp", sp), ("st", st), ("se", se), ("si", si)) if v]
    q.append(("sig", sig))
    return urllib.parse.urlencode(q, quote_via=urllib.parse.quote)


class Entry:
    def __init__(self, eid, key, version, scope):
        self.id, self.key, self.version, self.scope = eid, key, version, scope
        self.blob = "%d-%s" % (eid, hashlib.sha256(
            ("%s\0%s" % (key, version)).encode()).hexdigest()[:16])
        self.size = None        # bytes once finalized
        self.finalized = False
        self.created = time.time()
        self.accessed = self.created
        self.seq = eid          # newer entries have higher seq


class GhaMock:
    def __init__(self, azurite, tokens=(), ghtoken=None, repository="octo/app",
                 container=CONTAINER):
        self.az = azurite
        self.container = container
        self.tokens = set(tokens)
        self.ghtoken = ghtoken
        self.repository = repository
        self.lock = threading.Lock()
        self.entries = {}       # id -> Entry
        self.next_id = 1
        self.fail_429 = 0
        self.retry_after = 1
        self.policy_gen = 0        # download URLs name stored access policy "r<gen>"
        self.first_expired = False  # the first URL of each key is issued expired
        self.expired_keys = set()   # keys whose expired URL was handed out
        self.counters = {}
        self.server = None
        self.url = None

    # -- lifecycle --------------------------------------------------------

    def start(self, port=0):
        mock = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                mock.handle(self, "GET")

            def do_POST(self):
                mock.handle(self, "POST")

            def do_DELETE(self):
                mock.handle(self, "DELETE")

        self.az.create_container(self.container)
        self.rotate_policy()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d/" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    # -- Azurite ----------------------------------------------------------

    def rotate_policy(self):
        """Replaces the container's stored access policy: every download URL naming the
        old one stops working (Azure's way of revoking SAS URLs), new ones name the new."""
        gen = self.policy_gen + 1
        now = time.time()
        xml = ('<?xml version="1.0" encoding="utf-8"?><SignedIdentifiers><SignedIdentifier>'
               '<Id>r%d</Id><AccessPolicy><Start>%s</Start><Expiry>%s</Expiry>'
               '<Permission>r</Permission></AccessPolicy></SignedIdentifier>'
               '</SignedIdentifiers>' % (gen, sas_time(now - 300), sas_time(now + URL_LIFETIME)))
        r = self.az.request("PUT", "/" + self.container, body=xml.encode(),
                            headers={"content-type": "application/xml"},
                            query={"restype": ["container"], "comp": ["acl"]})
        if r.status != 200:
            raise RuntimeError("set container ACL: %r %s" % (r, r.body[:300]))
        self.policy_gen = gen

    def signed_url(self, entry, sp):
        now = time.time()
        if sp != "r":
            sas = blob_sas(self.az.account, self.az.key, self.container, entry.blob, sp=sp,
                           se=sas_time(now + URL_LIFETIME))
        elif self.first_expired and entry.key not in self.expired_keys:
            self.expired_keys.add(entry.key)
            self.counters["issued_expired"] = self.counters.get("issued_expired", 0) + 1
            sas = blob_sas(self.az.account, self.az.key, self.container, entry.blob, sp="r",
                           st=sas_time(now - 600), se=sas_time(now - 60))
        else:
            sas = blob_sas(self.az.account, self.az.key, self.container, entry.blob,
                           si="r%d" % self.policy_gen)
        return "%s/%s/%s?%s" % (self.az.url, self.container, entry.blob, sas)

    def delete_entry(self, e):
        """Under self.lock: the entry and its blob are gone."""
        del self.entries[e.id]
        r = self.az.request("DELETE", "/%s/%s" % (self.container, e.blob))
        if r.status not in (202, 404):
            raise RuntimeError("delete blob %s: %r" % (e.blob, r))

    # -- helpers ----------------------------------------------------------

    def count(self, kind):
        with self.lock:
            self.counters[kind] = self.counters.get(kind, 0) + 1

    def token_scopes(self, handler):
        auth = handler.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return None
        tok = auth[len("Bearer "):]
        if tok not in self.tokens:
            return None
        claims = jwt_claims(tok)
        if not claims or claims.get("exp", 0) < time.time():
            return None
        try:
            return [(s["Scope"], s["Permission"]) for s in json.loads(claims["ac"])]
        except Exception:
            return None

    def take_429(self):
        with self.lock:
            if self.fail_429 > 0:
                self.fail_429 -= 1
                return True
        return False

    @staticmethod
    def reply(h, status, body=b"", ctype="application/json", headers=()):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        h.send_response(status)
        if status != 204:
            h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)

    def find(self, keys, version, scopes):
        """The exact first key, else the newest entry starting with any key (GitHub's rule)."""
        visible = [e for e in self.entries.values()
                   if e.finalized and e.version == version and e.scope in scopes]
        for e in visible:
            if e.key == keys[0]:
                return e
        for k in keys:
            hits = [e for e in visible if e.key.startswith(k)]
            if hits:
                return max(hits, key=lambda e: e.seq)
        return None

    # -- request handling -------------------------------------------------

    def handle(self, h, method):
        u = urllib.parse.urlsplit(h.path)
        q = urllib.parse.parse_qs(u.query)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        try:
            if u.path.startswith("/_control/"):
                return self.control(h, u.path[len("/_control/"):], q)
            if u.path.startswith(TWIRP):
                return self.twirp(h, method, u.path[len(TWIRP):], body)
            if u.path.endswith("/_apis/artifactcache/cache"):
                return self.v1_lookup(h, q)
            if u.path.startswith("/repos/"):
                return self.rest(h, method, u.path, q)
            self.reply(h, 404, {"message": "Not Found"})
        except BrokenPipeError:
            pass

    def control(self, h, what, q):
        with self.lock:
            if what == "429":
                self.fail_429 = int(q.get("count", ["1"])[0])
                self.retry_after = int(q.get("retry_after", ["1"])[0])
            elif what == "expire":
                if "first_per_key" in q:
                    self.first_expired = q["first_per_key"][0] == "1"
                    self.expired_keys = set()
                else:
                    self.rotate_policy()
            elif what == "evict":
                key = q["key"][0]
                for e in [e for e in self.entries.values() if e.key == key]:
                    self.delete_entry(e)
            elif what == "counters":
                return self.reply(h, 200, dict(self.counters))
            else:
                return self.reply(h, 404, {"message": "unknown control"})
        self.reply(h, 200, {"ok": True})

    def twirp(self, h, method, name, body):
        self.count("twirp:" + name)
        if method != "POST":
            return self.reply(h, 405, {"code": "bad_route", "msg": "POST only"})
        scopes = self.token_scopes(h)
        if scopes is None:
            return self.reply(h, 401, {"code": "unauthenticated",
                                       "msg": "missing or invalid runtime token"})
        if self.take_429():
            self.count("429")
            return self.reply(h, 429, {"code": "resource_exhausted", "msg": "slow down"},
                              headers=[("Retry-After", str(self.retry_after))])
        try:
            req = json.loads(body or b"{}")
        except ValueError:
            return self.reply(h, 400, {"code": "malformed", "msg": "not JSON"})
        readable = [s for s, p in scopes if p & 1]
        writable = [s for s, p in scopes if p & 2]
        with self.lock:
            if name == "GetCacheEntryDownloadURL":
                keys = [req.get("key", "")] + list(req.get("restore_keys") or [])
                e = self.find(keys, req.get("version", ""), readable)
                if not e:
                    return self.reply(h, 200, {"ok": False, "signed_download_url": "",
                                               "matched_key": ""})
                e.accessed = time.time()
                return self.reply(h, 200, {"ok": True, "matched_key": e.key,
                                           "signed_download_url": self.signed_url(e, "r")})
            if name == "CreateCacheEntry":
                if not writable:
                    return self.reply(h, 403, {"code": "permission_denied",
                                               "msg": "no writable scope"})
                scope = writable[-1]
                for e in self.entries.values():
                    if e.key == req["key"] and e.version == req["version"] and e.scope == scope:
                        return self.reply(h, 409, {"code": "already_exists",
                                                   "msg": "cache entry already exists"})
                e = Entry(self.next_id, req["key"], req["version"], scope)
                self.next_id += 1
                self.entries[e.id] = e
                return self.reply(h, 200, {"ok": True,
                                           "signed_upload_url": self.signed_url(e, "cw")})
            if name == "FinalizeCacheEntryUpload":
                for e in self.entries.values():
                    if e.key == req["key"] and e.version == req["version"] and not e.finalized:
                        # The uploaded blob's size, as Azure Storage reports it.
                        r = self.az.request("HEAD", "/%s/%s" % (self.container, e.blob))
                        if r.status != 200:
                            return self.reply(h, 404, {"code": "not_found",
                                                       "msg": "nothing was uploaded"})
                        size = int(r.header("content-length"))
                        if size != int(req.get("size_bytes", -1)):
                            return self.reply(h, 400, {"code": "invalid_argument",
                                                       "msg": "size mismatch"})
                        e.size, e.finalized = size, True
                        return self.reply(h, 200, {"ok": True, "entry_id": str(e.id)})
                return self.reply(h, 404, {"code": "not_found", "msg": "no such upload"})
        self.reply(h, 404, {"code": "bad_route", "msg": "no such method " + name})

    def v1_lookup(self, h, q):
        self.count("v1:cache")
        scopes = self.token_scopes(h)
        if scopes is None:
            return self.reply(h, 401, {"message": "invalid runtime token",
                                       "typeKey": "UnauthorizedException"})
        if self.take_429():
            self.count("429")
            return self.reply(h, 429, {"message": "too many requests"},
                              headers=[("Retry-After", str(self.retry_after))])
        keys = q.get("keys", [""])[0].split(",")
        with self.lock:
            e = self.find(keys, q.get("version", [""])[0], [s for s, p in scopes if p & 1])
            if not e:
                return self.reply(h, 204)
            e.accessed = time.time()
            return self.reply(h, 200, {"cacheKey": e.key, "scope": e.scope,
                                       "archiveLocation": self.signed_url(e, "r")})

    @staticmethod
    def rest_item(e):
        return {"id": e.id, "ref": e.scope, "key": e.key, "version": e.version,
                "last_accessed_at": iso(e.accessed), "created_at": iso(e.created),
                "size_in_bytes": e.size}

    def rest(self, h, method, path, q):
        self.count("rest:" + method)
        parts = path.strip("/").split("/")
        if len(parts) not in (5, 6) or parts[3:5] != ["actions", "caches"]:
            return self.reply(h, 404, {"message": "Not Found"})
        auth = h.headers.get("Authorization", "")
        if not self.ghtoken or auth not in ("Bearer " + self.ghtoken, "token " + self.ghtoken):
            return self.reply(h, 401, {"message": "Bad credentials"})
        if "/".join(parts[1:3]) != self.repository:
            return self.reply(h, 404, {"message": "Not Found"})
        key, ref = q.get("key", [""])[0], q.get("ref", [""])[0]
        if method == "DELETE":
            with self.lock:
                if len(parts) == 6:
                    e = self.entries.get(int(parts[5])) if parts[5].isdigit() else None
                    if e is None or not e.finalized:
                        return self.reply(h, 404, {"message": "Not Found"})
                    self.delete_entry(e)
                    return self.reply(h, 204)
                if not key:
                    return self.reply(h, 400, {"message": "key is required"})
                gone = [e for e in self.entries.values() if e.finalized and e.key == key
                        and (not ref or e.scope == ref)]
                if not gone:
                    return self.reply(h, 404, {"message": "Not Found"})
                out = [self.rest_item(e) for e in gone]
                for e in gone:
                    self.delete_entry(e)
                return self.reply(h, 200, {"total_count": len(out), "actions_caches": out})
        if method != "GET" or len(parts) != 5:
            return self.reply(h, 404, {"message": "Not Found"})
        per_page = min(int(q.get("per_page", ["30"])[0]), 100)
        page = int(q.get("page", ["1"])[0])
        with self.lock:
            items = sorted((e for e in self.entries.values() if e.finalized),
                           key=lambda e: -e.accessed)
            items = [e for e in items if e.key.startswith(key) and (not ref or e.scope == ref)]
            out = [self.rest_item(e) for e in items[(page - 1) * per_page: page * per_page]]
            return self.reply(h, 200, {"total_count": len(items), "actions_caches": out})


# -- a v2 client, to write caches into the service as BuildKit would ------------------

def _post(url, token, method, body):
    import urllib.request
    req = urllib.request.Request(url.rstrip("/") + TWIRP + method, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json",
                                          "Authorization": "Bearer " + token})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def save(url, token, key, version, data):
    """Create, upload (Azure Put Blob to the signed URL, i.e. into Azurite), finalize:
    what @actions/cache's save and go-actions-cache's Save do."""
    import urllib.request
    created = _post(url, token, "CreateCacheEntry", {"key": key, "version": version})
    if not created.get("ok"):
        raise RuntimeError("CreateCacheEntry %s: %s" % (key, created))
    put = urllib.request.Request(created["signed_upload_url"], data=data, method="PUT",
                                 headers={"x-ms-blob-type": "BlockBlob",
                                          "x-ms-version": SAS_VERSION,
                                          "Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(put, timeout=60) as r:
        assert r.status == 201, r.status
    fin = _post(url, token, "FinalizeCacheEntryUpload",
                {"key": key, "version": version, "size_bytes": len(data)})
    if not fin.get("ok"):
        raise RuntimeError("FinalizeCacheEntryUpload %s: %s" % (key, fin))
    return int(fin["entry_id"])
