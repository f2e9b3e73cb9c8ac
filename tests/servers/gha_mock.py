#!/usr/bin/env python3
"""A mock of the GitHub Actions cache service for tests (TEST-SERVERS.md §4: no server
exists in Debian or npm). One HTTP server on 127.0.0.1 speaks:

  * v2 (github.com): Twirp JSON
      POST /twirp/github.actions.results.api.v1.CacheService/CreateCacheEntry
           {key, version} -> {ok, signed_upload_url}      ("already exists": ok=false)
      POST .../FinalizeCacheEntryUpload {key, version, size_bytes} -> {ok, entry_id}
      POST .../GetCacheEntryDownloadURL {key, restore_keys, version}
           -> {ok, signed_download_url, matched_key}: the exact key, else the newest
              entry whose key starts with a restore key; the same version; only entries
              of the token's scopes.
    Bearer runtime token required (401 {"code":"unauthenticated"}); unknown method 404
    {"code":"bad_route"}.
  * v1 (GHES): GET /_apis/artifactcache/cache?keys=k1,k2&version=v with the same
    token -> {cacheKey, scope, archiveLocation}, or 204 when nothing matches.
  * "Signed" blob URLs that look like Azure SAS URLs:
      /devstoreaccount1/actions-cache/<entry id>?sv=2023-11-03&sr=b&sp=r&se=<expiry>&sig=<hmac>
    The mock serves the bytes itself (PUT uploads with sp=cw, GET/HEAD with sp=r,
    Range honoured with 206/Content-Range, 416 past the end). A bad signature, an
    expired `se` or a URL issued before /_control/expire gets 403
    AuthenticationFailed as Azure Storage answers; an evicted entry 404 BlobNotFound.
  * REST: GET /repos/<owner>/<repo>/actions/caches?per_page=&page=&key=&ref= with
    `Authorization: Bearer <ghtoken>` -> {total_count, actions_caches: [...]}.

Runtime tokens are JWTs (signature not checked, as GitHub's clients do not check it);
the server accepts exactly the tokens in `tokens` and reads each one's `ac` claim for
its scopes: reads see entries of every scope in the token, writes go to the last scope
with write permission (bit 2).

Fault control (no auth, for the test): POST /_control/429?count=N&retry_after=S (the next
N requests to the service or the blob URLs answer 429 with Retry-After), /_control/expire
(every URL issued so far stops working), /_control/evict?key=K (the entry is gone).
`counters` counts requests by kind.

Use from Python: `m = GhaMock(tokens=[...], ghtoken="..."); m.start(); m.url; m.stop()`,
or run it: gha_mock.py PORT (prints the URL; tokens from GHA_MOCK_TOKENS, comma-separated).
"""

import base64
import hashlib
import hmac
import json
import os
import sys
import threading
import time
import urllib.parse
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TWIRP = "/twirp/github.actions.results.api.v1.CacheService/"
BLOB_PATH = "/devstoreaccount1/actions-cache/"
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


class Entry:
    def __init__(self, eid, key, version, scope):
        self.id, self.key, self.version, self.scope = eid, key, version, scope
        self.data = None        # bytes once uploaded
        self.finalized = False
        self.created = time.time()
        self.accessed = self.created
        self.seq = eid          # newer entries have higher seq


class GhaMock:
    def __init__(self, tokens=(), ghtoken=None, repository="octo/app"):
        self.tokens = set(tokens)
        self.ghtoken = ghtoken
        self.repository = repository
        self.secret = os.urandom(16)
        self.lock = threading.Lock()
        self.entries = {}       # id -> Entry
        self.next_id = 1
        self.fail_429 = 0
        self.retry_after = 1
        self.expired_before = 0.0  # URLs issued before this are refused
        self.max_uses = 0          # >0: a download URL works for this many requests only
        self.uses = {}             # sig -> requests served
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

            def do_HEAD(self):
                mock.handle(self, "HEAD")

            def do_POST(self):
                mock.handle(self, "POST")

            def do_PUT(self):
                mock.handle(self, "PUT")

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

    # -- helpers ----------------------------------------------------------

    def count(self, kind):
        with self.lock:
            self.counters[kind] = self.counters.get(kind, 0) + 1

    def sign(self, eid, se, sp, st):
        msg = ("%d\n%s\n%s\n%s" % (eid, se, sp, st)).encode()
        return base64.b64encode(hmac.new(self.secret, msg, hashlib.sha256).digest()).decode()

    def signed_url(self, entry, sp):
        now = time.time()
        st = "%.6f" % now
        se = datetime.fromtimestamp(now + URL_LIFETIME, timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%SZ")
        q = urllib.parse.urlencode({"sv": "2023-11-03", "sr": "b", "sp": sp, "st": st,
                                    "se": se, "sig": self.sign(entry.id, se, sp, st)})
        return "%s%s%d?%s" % (self.url.rstrip("/"), BLOB_PATH, entry.id, q)

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
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            h.send_header(k, v)
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def azure_error(self, h, status, code, msg):
        body = ('<?xml version="1.0" encoding="utf-8"?><Error><Code>%s</Code><Message>%s'
                '</Message></Error>' % (code, msg)).encode()
        self.reply(h, status, body, "application/xml", [("x-ms-error-code", code)])

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
            if u.path == "/_apis/artifactcache/cache" or u.path.endswith(
                    "/_apis/artifactcache/cache"):
                return self.v1_lookup(h, q)
            if u.path.startswith(BLOB_PATH):
                return self.blob(h, method, u.path[len(BLOB_PATH):], q, body)
            if u.path.startswith("/repos/"):
                return self.rest(h, u.path, q)
            self.reply(h, 404, {"message": "Not Found"})
        except BrokenPipeError:
            pass

    def control(self, h, what, q):
        with self.lock:
            if what == "429":
                self.fail_429 = int(q.get("count", ["1"])[0])
                self.retry_after = int(q.get("retry_after", ["1"])[0])
            elif what == "expire":
                self.expired_before = time.time() + 0.001
                self.max_uses = int(q.get("max_uses", ["0"])[0])
            elif what == "evict":
                key = q["key"][0]
                for eid in [e.id for e in self.entries.values() if e.key == key]:
                    del self.entries[eid]
            elif what == "counters":
                return self.reply(h, 200, dict(self.counters))
            else:
                return self.reply(h, 404, {"message": "unknown control"})
        time.sleep(0.002)  # an URL issued in this millisecond is expired too
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
                    if (e.key == req["key"] and e.version == req["version"]
                            and not e.finalized and e.data is not None):
                        if len(e.data) != int(req.get("size_bytes", -1)):
                            return self.reply(h, 400, {"code": "invalid_argument",
                                                       "msg": "size mismatch"})
                        e.finalized = True
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

    def blob(self, h, method, rest, q, body):
        self.count("blob:" + method)
        one = lambda k: q.get(k, [""])[0]  # noqa: E731
        try:
            eid = int(rest)
        except ValueError:
            return self.azure_error(h, 400, "InvalidUri", "bad blob name")
        se, sp, st, sig = one("se"), one("sp"), one("st"), one("sig")
        good = hmac.compare_digest(sig, self.sign(eid, se, sp, st))
        if not good:
            return self.azure_error(h, 403, "AuthenticationFailed",
                                    "Signature did not match.")
        try:
            expiry = datetime.strptime(se, "%Y-%m-%dT%H:%M:%SZ").replace(
                tzinfo=timezone.utc).timestamp()
        except ValueError:
            return self.azure_error(h, 403, "AuthenticationFailed", "bad se")
        if expiry < time.time() or float(st) < self.expired_before:
            self.count("blob:expired")
            return self.azure_error(h, 403, "AuthenticationFailed",
                                    "Signed expiry time has to be after signed start time")
        if method in ("GET", "HEAD") and self.take_429():
            self.count("429")
            return self.reply(h, 429, b"", "application/xml",
                              [("Retry-After", str(self.retry_after)),
                               ("x-ms-error-code", "ServerBusy")])
        if method in ("GET", "HEAD") and self.max_uses:
            with self.lock:
                n = self.uses[sig] = self.uses.get(sig, 0) + 1
            if n > self.max_uses:
                self.count("blob:expired")
                return self.azure_error(h, 403, "AuthenticationFailed",
                                        "Signed expiry time has to be after signed start time")
        with self.lock:
            e = self.entries.get(eid)
        if e is None:
            return self.azure_error(h, 404, "BlobNotFound", "The specified blob does not exist.")
        if method == "PUT":
            if "c" not in sp and "w" not in sp:
                return self.azure_error(h, 403, "AuthorizationPermissionMismatch", "read only")
            if e.finalized:
                return self.azure_error(h, 409, "BlobAlreadyExists", "finalized")
            e.data = body
            return self.reply(h, 201, b"", "text/plain")
        if "r" not in sp or not e.finalized:
            return self.azure_error(h, 403, "AuthorizationPermissionMismatch", "no read")
        data = e.data
        rng = h.headers.get("x-ms-range") or h.headers.get("Range")
        hdrs = [("Accept-Ranges", "bytes"), ("ETag", '"0x%X"' % e.id),
                ("Last-Modified", time.strftime("%a, %d %b %Y %H:%M:%S GMT",
                                                time.gmtime(e.created)))]
        if rng and rng.startswith("bytes="):
            a, _, b = rng[len("bytes="):].partition("-")
            start = int(a)
            end = min(int(b) if b else len(data) - 1, len(data) - 1)
            if start >= len(data):
                return self.reply(h, 416, b"", "application/xml",
                                  [("Content-Range", "bytes */%d" % len(data))])
            return self.reply(h, 206, data[start:end + 1], "application/octet-stream",
                              hdrs + [("Content-Range", "bytes %d-%d/%d" % (start, end,
                                                                            len(data)))])
        self.reply(h, 200, data, "application/octet-stream", hdrs)

    def rest(self, h, path, q):
        self.count("rest")
        parts = path.strip("/").split("/")
        if len(parts) != 5 or parts[3:] != ["actions", "caches"]:
            return self.reply(h, 404, {"message": "Not Found"})
        auth = h.headers.get("Authorization", "")
        if not self.ghtoken or auth not in ("Bearer " + self.ghtoken, "token " + self.ghtoken):
            return self.reply(h, 401, {"message": "Bad credentials"})
        if "/".join(parts[1:3]) != self.repository:
            return self.reply(h, 404, {"message": "Not Found"})
        per_page = min(int(q.get("per_page", ["30"])[0]), 100)
        page = int(q.get("page", ["1"])[0])
        key, ref = q.get("key", [""])[0], q.get("ref", [""])[0]
        with self.lock:
            items = sorted((e for e in self.entries.values() if e.finalized),
                           key=lambda e: -e.accessed)
            items = [e for e in items if e.key.startswith(key) and (not ref or e.scope == ref)]
            out = [{"id": e.id, "ref": e.scope, "key": e.key, "version": e.version,
                    "last_accessed_at": iso(e.accessed), "created_at": iso(e.created),
                    "size_in_bytes": len(e.data)}
                   for e in items[(page - 1) * per_page: page * per_page]]
            return self.reply(h, 200, {"total_count": len(items), "actions_caches": out})


# -- a v2 client, to write caches into the mock as BuildKit would ----------------------

def _post(url, token, method, body):
    import urllib.request
    req = urllib.request.Request(url.rstrip("/") + TWIRP + method, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json",
                                          "Authorization": "Bearer " + token})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def save(url, token, key, version, data):
    """Create, upload (Azure Put Blob to the signed URL), finalize: @actions/cache's save."""
    import urllib.request
    created = _post(url, token, "CreateCacheEntry", {"key": key, "version": version})
    if not created.get("ok"):
        raise RuntimeError("CreateCacheEntry %s: %s" % (key, created))
    put = urllib.request.Request(created["signed_upload_url"], data=data, method="PUT",
                                 headers={"x-ms-blob-type": "BlockBlob"})
    with urllib.request.urlopen(put, timeout=30) as r:
        assert r.status == 201, r.status
    fin = _post(url, token, "FinalizeCacheEntryUpload",
                {"key": key, "version": version, "size_bytes": len(data)})
    if not fin.get("ok"):
        raise RuntimeError("FinalizeCacheEntryUpload %s: %s" % (key, fin))


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    toks = [t for t in os.environ.get("GHA_MOCK_TOKENS", "").split(",") if t]
    m = GhaMock(tokens=toks, ghtoken=os.environ.get("GHA_MOCK_GHTOKEN")).start(port)
    print(m.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        m.stop()
