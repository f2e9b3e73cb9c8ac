#!/usr/bin/env python3
"""A real distribution registry (Debian `docker-registry` 2.8) on loopback, for tests.

python3 stdlib only. Each Registry owns a temp dir (config, storage, log, keys), listens on
127.0.0.1:<free port> (so tests can run in parallel), and is stopped by PID.

    from registry_harness import Registry
    with Registry("token") as reg:                    # or reg = Registry().start("basic")
        reg.push_layout(layout_dir, "app/cache", tag="main")
        body, media_type, digest = reg.get_manifest("app/cache", "main")

Modes (../shared/TEST-SERVERS.md §1): "open" (no auth), "basic" (htpasswd, bcrypt, realm
"basic-realm"), "token" (tokserver.py next to this file issues RS256 JWTs with x5c; service
"test-registry", issuer "test-token-issuer"; anonymous gets no access unless
anonymous_pull=True).

API
  Registry(mode=None, *, anonymous_pull=False, token_ttl=300, token_kid=False,
           log_level="info", binary="docker-registry", die_with_parent=False,
           delete_enabled=True)
  .start(mode=None) -> self        .stop()  (idempotent; also at interpreter exit)
  .url "http://127.0.0.1:PORT"  .host "127.0.0.1:PORT"  .port  .mode
  .creds ("testuser", "testpass")  .token_url (token mode)  .root  .data_dir  .log_path
  .log() -> text of the registry and token server logs     .timings {"start": s, ...}
  .push_blob(repo, data) -> digest         .push_blob_file(repo, path) -> digest (streams)
  .push_manifest(repo, ref, data, media_type) -> digest    (exact bytes and Content-Type)
  .push_layout(layout_dir, repo, tag=None) -> {"tags", "manifests", "blobs", "seconds"}
  .tags(repo) -> [tag]             .get_manifest(repo, ref, accept=ALL) -> (body, type, digest)
  .get_blob(repo, digest, range=None) -> Response          .blob_exists(repo, digest)
  .delete_manifest(repo, digest)   .request(method, path, body, headers, auth, scope) -> Response
  .token(scope, creds=None) -> JWT .token_stats() -> tokserver /stats
  .docker_config(dir, creds=None) -> dir with config.json `auths` for DOCKER_CONFIG
  Response: .status .reason .headers (lower-case names) .header(name) .body .incomplete

Every helper authenticates as the mode needs: basic sends the Authorization header; token
answers the registry's Bearer challenge by asking the realm (with the basic creds) for the
challenged scope, `repository:<repo>:pull,push` for pushes, and caches tokens per scope.
Failed pushes raise RegistryError with the registry's answer.

The harness only reads the layouts it pushes (fixtures can be pushed straight from ../shared).
Nothing here writes outside the Registry's own temp dir.
"""

import atexit
import base64
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
TOKSERVER = os.path.join(HERE, "tokserver.py")

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST, DOCKER_LIST)
ACCEPT_ALL = ", ".join(MANIFEST_TYPES)
REF_NAME = "org.opencontainers.image.ref.name"
HEX64 = re.compile(r"^[0-9a-f]{64}$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")

SERVICE = "test-registry"
ISSUER = "test-token-issuer"
START_TIMEOUT = 20.0      # seconds until the registry / token server must answer
POLL_INTERVAL = 0.01      # between two refused connects while starting
CONNECT_TIMEOUT = 0.5     # per readiness probe
IO_TIMEOUT = 120.0        # per request once running


class RegistryError(Exception):
    pass


class Response:
    def __init__(self, status, reason, headers, body):
        self.status, self.reason, self.headers, self.body = status, reason, headers, body
        self.incomplete = False  # True when the body was shorter than Content-Length

    def header(self, name, default=None):
        return self.headers.get(name.lower(), default)

    def __repr__(self):
        return "<Response %d %s %d bytes>" % (self.status, self.reason, len(self.body))


def sha256_digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def free_port():
    """A port nothing listens on right now (bind 127.0.0.1:0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_challenge(value):
    """'Bearer realm="..",service="..",scope=".."' -> ("bearer", {params})."""
    if not value:
        return None, {}
    scheme, _, rest = value.strip().partition(" ")
    return scheme.lower(), dict(re.findall(r'(\w+)="([^"]*)"', rest))


class _Conn(http.client.HTTPConnection):
    def connect(self):
        super().connect()
        # Headers and a file body go out in separate writes: without NODELAY, Nagle plus the
        # peer's delayed ACK add ~40 ms to every upload.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _http(host, port, method, target, body=None, headers=None, timeout=IO_TIMEOUT):
    """One request on a fresh connection. body: bytes, a binary file object, or None."""
    conn = _Conn(host, port, timeout=timeout, blocksize=1 << 20)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        r = conn.getresponse()
        incomplete = False
        try:
            data = r.read()
        except http.client.IncompleteRead as e:
            # docker-registry 2.8 answers a Range past the end with 416 and a body shorter
            # than its Content-Length header; keep what came.
            data, incomplete = e.partial, True
        hdrs = {}
        for k, v in r.getheaders():  # repeated headers joined, names lower-cased
            k = k.lower()
            hdrs[k] = hdrs[k] + ", " + v if k in hdrs else v
        resp = Response(r.status, r.reason, hdrs, data)
        resp.incomplete = incomplete
        return resp
    finally:
        conn.close()


def _listens(pid, port):
    """True if process pid has a listening TCP socket on port (Linux /proc); True when /proc
    cannot tell."""
    inodes = set()
    try:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            if not os.path.exists(table):
                continue
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(cols[9])
        fds = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return True
    for fd in fds:
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            return True
    return False


def _die_with_parent():
    """preexec_fn: SIGKILL the child when the thread that started it exits (prctl
    PR_SET_PDEATHSIG; survives the exec of env and of docker-registry), so a test runner
    killed on timeout leaves no registry behind."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    except Exception:
        pass


# ---------------------------------------------------------------------------
# Key material for token mode: one RSA key + cert per process, copied into each registry.

_KEYS_LOCK = threading.Lock()
_KEYS_DIR = None


def _key_material():
    global _KEYS_DIR
    with _KEYS_LOCK:
        if _KEYS_DIR is None:
            d = tempfile.mkdtemp(prefix="bcfs-regkeys-")
            atexit.register(shutil.rmtree, d, True)
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                            "-keyout", os.path.join(d, "tok.key"),
                            "-out", os.path.join(d, "tok.crt"), "-days", "3650",
                            "-subj", "/CN=" + ISSUER],
                           check=True, capture_output=True, timeout=60)
            _KEYS_DIR = d
        return os.path.join(_KEYS_DIR, "tok.key"), os.path.join(_KEYS_DIR, "tok.crt")


_LIVE = set()


@atexit.register
def _stop_leftovers():
    for reg in list(_LIVE):
        reg.stop()


# ---------------------------------------------------------------------------


class Registry:
    """docker-registry serve on 127.0.0.1:<free port> in mode open | basic | token."""

    MODES = ("open", "basic", "token")
    creds = ("testuser", "testpass")

    def __init__(self, mode=None, *, anonymous_pull=False, token_ttl=300, token_kid=False,
                 log_level="info", binary="docker-registry", die_with_parent=False,
                 refresh_tokens=None, delete_enabled=True):
        """anonymous_pull (token mode): the token server grants pull to requests without
        credentials (as TEST-SERVERS.md's script does). Default False: anonymous gets a
        token with no access, so the registry answers 401 and the repo is private, as in
        basic mode. token_ttl: --expire-in of the token server. token_kid: sign with the
        libtrust `kid` header instead of `x5c`. die_with_parent: ask the kernel
        (PR_SET_PDEATHSIG) to SIGKILL the servers when the *thread* that called start() exits,
        so a test run killed by a timeout leaks nothing. Off by default: the thread rule bites
        registries started from short-lived threads, and the development VM's kernel ignores
        the setting (checked with a C program), so it is untested here. delete_enabled:
        the config's `storage: delete: enabled` (False: DELETE answers 405 Unsupported)."""
        self.mode = mode
        self.delete_enabled = delete_enabled
        self.die_with_parent = die_with_parent
        self.anonymous_pull = anonymous_pull
        self.token_ttl = token_ttl
        self.token_kid = token_kid
        self.refresh_tokens = dict(refresh_tokens or {})  # token mode: identitytoken -> user
        self.log_level = log_level
        self.binary = binary
        self.root = None
        self.port = None
        self.token_port = None
        self.proc = None
        self.tokproc = None
        self._tokens = {}
        self._lock = threading.Lock()
        self.timings = {}

    # -- lifecycle ----------------------------------------------------------

    def __enter__(self):
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    @property
    def host(self):
        return "127.0.0.1:%d" % self.port

    @property
    def url(self):
        return "http://" + self.host

    @property
    def token_url(self):
        return None if self.token_port is None else "http://127.0.0.1:%d/token" % self.token_port

    @property
    def data_dir(self):
        return os.path.join(self.root, "data")

    @property
    def log_path(self):
        return os.path.join(self.root, "registry.log")

    def log(self):
        """The registry's (and token server's) log so far, for failure messages."""
        out = []
        for name in ("registry.log", "tokserver.log"):
            p = os.path.join(self.root or "", name)
            if self.root and os.path.exists(p):
                with open(p, errors="replace") as f:
                    out.append("--- %s ---\n%s" % (name, f.read()[-20000:]))
        return "\n".join(out)

    def start(self, mode=None):
        """Starts registry (and token server); returns self once GET /v2/ answers."""
        if self.proc is not None:
            raise RegistryError("registry already started")
        self.mode = mode or self.mode or "open"
        if self.mode not in self.MODES:
            raise ValueError("mode must be one of %s, not %r" % (self.MODES, self.mode))
        if shutil.which(self.binary) is None:
            raise RegistryError(self.binary + " is not on PATH (apt-get install docker-registry)")
        t0 = time.monotonic()
        self.root = tempfile.mkdtemp(prefix="bcfs-registry-%s-" % self.mode)
        _LIVE.add(self)
        try:
            os.mkdir(self.data_dir)
            auth = ""
            if self.mode == "basic":
                auth = self._setup_basic()
            elif self.mode == "token":
                auth = self._setup_token()
            for attempt in range(5):  # another process may grab the free port first
                self.port = free_port()
                cfg = os.path.join(self.root, "config.yml")
                with open(cfg, "w") as f:
                    f.write(self._config(auth))
                log = open(self.log_path, "ab")
                try:
                    # env -u AWS_CA_BUNDLE: the machine sets it and Go aws-sdk v1 panics on it
                    # (TEST-SERVERS.md traps). env execs, so proc.pid is the registry's PID.
                    self.proc = subprocess.Popen(
                        ["env", "-u", "AWS_CA_BUNDLE", self.binary, "serve", cfg],
                        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                        start_new_session=True,
                        preexec_fn=_die_with_parent if self.die_with_parent else None)
                finally:
                    log.close()
                if self._wait_ready(self.proc, self.port, START_TIMEOUT):
                    break
                self._kill(self.proc)
                self.proc = None
                if "address already in use" not in self.log():
                    raise RegistryError("docker-registry did not start:\n" + self.log())
            else:
                raise RegistryError("no free port after 5 attempts:\n" + self.log())
        except BaseException:
            self.stop()
            raise
        self.timings["start"] = time.monotonic() - t0
        return self

    def stop(self):
        """Kills registry and token server by PID and removes the temp dir. Idempotent."""
        for attr in ("proc", "tokproc"):
            p = getattr(self, attr)
            if p is not None:
                self._kill(p)
                setattr(self, attr, None)
        if self.root:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
        self._tokens.clear()
        _LIVE.discard(self)

    @staticmethod
    def _kill(p):
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def _config(self, auth):
        return ("version: 0.1\n"
                "log: {level: %s}\n"
                "storage:\n"
                "  filesystem: {rootdirectory: %s}\n"
                "  delete: {enabled: %s}\n"
                "http:\n"
                "  addr: 127.0.0.1:%d\n"
                "  secret: ci-not-secret\n"
                "%s" % (self.log_level, json.dumps(self.data_dir),
                        "true" if self.delete_enabled else "false", self.port, auth))

    def _setup_basic(self):
        path = os.path.join(self.root, "htpasswd")
        out = subprocess.run(["htpasswd", "-Bbn", *self.creds], check=True,
                             capture_output=True, timeout=30).stdout
        with open(path, "wb") as f:
            f.write(out.strip() + b"\n")
        return "auth:\n  htpasswd: {realm: basic-realm, path: %s}\n" % json.dumps(path)

    def _setup_token(self):
        key, crt = _key_material()
        mykey, mycrt = os.path.join(self.root, "tok.key"), os.path.join(self.root, "tok.crt")
        shutil.copyfile(key, mykey)
        shutil.copyfile(crt, mycrt)
        ready = os.path.join(self.root, "tokserver.port")
        cmd = [sys.executable, TOKSERVER, "0", mykey, mycrt, ISSUER, "%s:%s" % self.creds,
               "--ready-file", ready, "--expire-in", str(self.token_ttl),
               "--anonymous", "pull" if self.anonymous_pull else "none"]
        if self.token_kid:
            cmd.append("--kid")
        for token, user in self.refresh_tokens.items():
            cmd += ["--refresh-token", "%s=%s" % (token, user)]
        log = open(os.path.join(self.root, "tokserver.log"), "ab")
        try:
            self.tokproc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if self.die_with_parent else None)
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while not os.path.exists(ready):
            if self.tokproc.poll() is not None or time.monotonic() > deadline:
                raise RegistryError("token server did not start:\n" + self.log())
            time.sleep(POLL_INTERVAL)
        with open(ready) as f:
            self.token_port = int(f.read())
        if not self._wait_ready(self.tokproc, self.token_port, START_TIMEOUT, "/stats"):
            raise RegistryError("token server does not answer:\n" + self.log())
        return ("auth:\n  token:\n"
                "    realm: %s\n    service: %s\n    issuer: %s\n    rootcertbundle: %s\n"
                % (self.token_url, SERVICE, ISSUER, json.dumps(mycrt)))

    @staticmethod
    def _wait_ready(proc, port, timeout, path="/v2/"):
        """Bounded retry loop of short connects until an HTTP answer from a socket that proc
        listens on (not from another process that took the port); False if proc died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            try:
                _http("127.0.0.1", port, "GET", path, timeout=CONNECT_TIMEOUT)
                if _listens(proc.pid, port):
                    return True
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(POLL_INTERVAL)
        return False

    # -- HTTP with auth -----------------------------------------------------

    def _basic_header(self, creds):
        return "Basic " + base64.b64encode(("%s:%s" % tuple(creds)).encode()).decode()

    def _realm_token(self, realm, service, scopes, creds):
        """(token or None, Response of the realm)."""
        u = urllib.parse.urlparse(realm)
        q = [("service", service)] + [("scope", s) for s in scopes]
        hdrs = {"Authorization": self._basic_header(creds)} if creds else {}
        r = _http(u.hostname, u.port, "GET", u.path + "?" + urllib.parse.urlencode(q),
                  headers=hdrs)
        return (json.loads(r.body)["token"] if r.status == 200 else None), r

    def token(self, scope, creds=None, use_cache=True):
        """A bearer token for `scope` ("repository:app:pull,push") from the token server.
        creds: (user, pass), default self.creds; () asks anonymously. Raises RegistryError
        when the token server refuses (401 for bad credentials)."""
        creds = tuple(self.creds if creds is None else creds)
        key = (scope, creds)
        with self._lock:
            if use_cache and key in self._tokens:
                return self._tokens[key]
        tok, r = self._realm_token(self.token_url, SERVICE, scope.split(), creds)
        if tok is None:
            raise RegistryError("token server refused %s: %d %s" % (scope, r.status, r.body))
        with self._lock:
            self._tokens[key] = tok
        return tok

    def request(self, method, target, body=None, headers=None, auth=True, scope=None):
        """A request to the registry; target is a path ("/v2/...") or a full URL.
        auth: True = as the mode needs with self.creds; False = anonymous; (user, pass) = those
        creds; "Bearer ..." / "Basic ..." = that exact Authorization header.
        scope (token mode): a cached token for it is sent up front. A Bearer 401 is followed
        once: a token for the challenged scope (or `scope`) is fetched from the realm, cached,
        and the request repeated (a file body is rewound). Returns the Response; never raises
        on an HTTP status (a realm refusing the creds gives the realm's Response)."""
        if target.startswith("http"):
            u = urllib.parse.urlparse(target)
            target = u.path + ("?" + u.query if u.query else "")
        hdrs = dict(headers or {})
        creds = None
        if isinstance(auth, str):
            hdrs["Authorization"] = auth
        elif auth:
            creds = tuple(self.creds if auth is True else auth)
            if self.mode == "basic":
                hdrs["Authorization"] = self._basic_header(creds)
            elif self.mode == "token" and scope:
                with self._lock:
                    tok = self._tokens.get((scope, creds))
                if tok:
                    hdrs["Authorization"] = "Bearer " + tok
        start = body.tell() if hasattr(body, "read") else None
        r = _http("127.0.0.1", self.port, method, target, body, hdrs)
        if r.status == 401 and creds is not None and self.mode == "token":
            scheme, ch = parse_challenge(r.header("www-authenticate"))
            if scheme == "bearer" and "realm" in ch:
                want = scope or ch.get("scope", "")
                tok, rr = self._realm_token(ch["realm"], ch.get("service", ""),
                                            want.split(), creds)
                if tok is None:
                    return rr
                with self._lock:
                    self._tokens[(want, creds)] = tok
                hdrs["Authorization"] = "Bearer " + tok
                if start is not None:
                    body.seek(start)
                r = _http("127.0.0.1", self.port, method, target, body, hdrs)
        return r

    def _check(self, r, want, what):
        if r.status not in (want if isinstance(want, tuple) else (want,)):
            raise RegistryError("%s: HTTP %d %s: %s" % (what, r.status, r.reason,
                                                        r.body[:2000].decode("utf-8", "replace")))
        return r

    # -- push ---------------------------------------------------------------

    @staticmethod
    def _push_scope(repo):
        return "repository:%s:pull,push" % repo

    @staticmethod
    def _pull_scope(repo):
        return "repository:%s:pull" % repo

    def blob_exists(self, repo, digest):
        r = self.request("HEAD", "/v2/%s/blobs/%s" % (repo, digest), scope=self._pull_scope(repo))
        return r.status == 200

    def _upload(self, repo, digest, body, size):
        scope = self._push_scope(repo)
        r = self._check(self.request("POST", "/v2/%s/blobs/uploads/" % repo,
                                     headers={"Content-Length": "0"}, scope=scope),
                        202, "start upload of %s to %s" % (digest, repo))
        loc = urllib.parse.urlparse(r.header("location"))
        target = loc.path + "?" + "&".join(
            x for x in (loc.query, "digest=" + urllib.parse.quote(digest)) if x)
        self._check(self.request("PUT", target, body=body, scope=scope,
                                 headers={"Content-Type": "application/octet-stream",
                                          "Content-Length": str(size)}),
                    201, "upload of %s to %s" % (digest, repo))
        return digest

    def push_blob(self, repo, data, skip_existing=False):
        """Monolithic upload (POST uploads/, PUT ?digest=). Returns the digest."""
        digest = sha256_digest(data)
        if skip_existing and self.blob_exists(repo, digest):
            return digest
        return self._upload(repo, digest, data, len(data))

    def push_blob_file(self, repo, path, digest=None, skip_existing=False):
        """Like push_blob, streaming a file (for big blobs). digest is computed if None."""
        if digest is None:
            digest = file_digest(path)
        if skip_existing and self.blob_exists(repo, digest):
            return digest
        with open(path, "rb") as f:
            return self._upload(repo, digest, f, os.fstat(f.fileno()).st_size)

    def push_manifest(self, repo, ref, data, media_type):
        """PUT /v2/<repo>/manifests/<ref> with exactly these bytes and Content-Type.
        ref is a tag or a digest. Returns the digest (checked against the registry's)."""
        digest = sha256_digest(data)
        r = self._check(self.request("PUT", "/v2/%s/manifests/%s" % (repo, ref), body=data,
                                     headers={"Content-Type": media_type,
                                              "Content-Length": str(len(data))},
                                     scope=self._push_scope(repo)),
                        201, "push of manifest %s (%s) to %s:%s" % (digest, media_type, repo, ref))
        got = r.header("docker-content-digest")
        if got and got != digest:
            raise RegistryError("registry stored %s as %s" % (digest, got))
        return digest

    def push_layout(self, layout_dir, repo, tag=None, verify=True):
        """Pushes an OCI layout byte for byte: every file under blobs/sha256 as a blob (except
        manifests), then every manifest reachable from index.json through manifest-typed
        descriptors, children before parents (by digest), then the index.json entries.

        tag: None = each index.json entry is tagged with its ref.name annotation (entries
        without one are pushed by digest); a string = tag of the single entry (error if
        index.json has several); a dict {ref.name: tag} = rename (unlisted entries by digest).
        Tags are checked before anything is pushed (ValueError). Blobs already in the
        repository are skipped (HEAD). verify: check every file's sha256 against its name.
        Returns {"tags": {tag: digest}, "manifests": [(digest, media type) in push order],
        "blobs": [digests], "seconds": float}."""
        t0 = time.monotonic()
        bdir = os.path.join(layout_dir, "blobs", "sha256")
        with open(os.path.join(layout_dir, "index.json"), "rb") as f:
            entries = json.load(f).get("manifests") or []

        if isinstance(tag, str):
            if len(entries) != 1:
                raise ValueError("%s: index.json has %d entries; pass tag=None or a dict"
                                 % (layout_dir, len(entries)))
            plan = {entries[0]["digest"]: [tag]}
        else:
            plan = {}
            for e in entries:
                name = (e.get("annotations") or {}).get(REF_NAME)
                t = (tag or {}).get(name) if isinstance(tag, dict) else name
                if t is not None:
                    plan.setdefault(e["digest"], []).append(t)
        for ts in plan.values():
            for t in ts:
                if not TAG_RE.match(t):
                    raise ValueError("%r is not a valid registry tag; pass tag={...}" % t)

        def read(digest):
            with open(os.path.join(bdir, digest.split(":", 1)[1]), "rb") as f:
                data = f.read()
            if verify and sha256_digest(data) != digest:
                raise RegistryError("%s: content does not match its name" % digest)
            return data

        order, seen = [], {}

        def visit(desc):
            d = desc["digest"]
            if d in seen:
                return
            data = read(d)
            doc = json.loads(data)
            mt = desc.get("mediaType") or doc.get("mediaType") or \
                (OCI_INDEX if "manifests" in doc else OCI_MANIFEST)
            seen[d] = mt
            for child in doc.get("manifests") or []:
                if child.get("mediaType") in MANIFEST_TYPES:
                    visit(child)
            subj = doc.get("subject")
            if subj and os.path.exists(os.path.join(bdir, subj["digest"].split(":", 1)[1])):
                visit(subj)
            order.append((d, mt, data))

        for e in entries:
            visit(e)

        blobs = []
        for name in sorted(os.listdir(bdir)):
            d = "sha256:" + name
            if d in seen or not HEX64.match(name):
                continue
            path = os.path.join(bdir, name)
            if verify:
                got = file_digest(path)
                if got != d:
                    raise RegistryError("%s: content does not match its name (it is %s)"
                                        % (path, got))
            self.push_blob_file(repo, path, digest=d, skip_existing=True)
            blobs.append(d)

        tags = {}
        for d, mt, data in order:
            if d in plan:
                for t in plan[d]:
                    self.push_manifest(repo, t, data, mt)
                    tags[t] = d
            else:
                self.push_manifest(repo, d, data, mt)
        seconds = time.monotonic() - t0
        self.timings.setdefault("push_layout", []).append((layout_dir, seconds))
        return {"tags": tags, "manifests": [(d, mt) for d, mt, _ in order], "blobs": blobs,
                "seconds": seconds}

    # -- pull / assertions --------------------------------------------------

    def tags(self, repo):
        """Sorted tag list ([] for an unknown repository)."""
        r = self.request("GET", "/v2/%s/tags/list?n=10000" % repo, scope=self._pull_scope(repo))
        if r.status == 404:
            return []
        self._check(r, 200, "tags of " + repo)
        return sorted(json.loads(r.body).get("tags") or [])

    def get_manifest(self, repo, ref, accept=ACCEPT_ALL, auth=True):
        """(body bytes, Content-Type, Docker-Content-Digest) of a manifest by tag or digest."""
        r = self._check(self.request("GET", "/v2/%s/manifests/%s" % (repo, ref),
                                     headers={"Accept": accept}, auth=auth,
                                     scope=self._pull_scope(repo)),
                        200, "manifest %s:%s" % (repo, ref))
        return r.body, r.header("content-type"), r.header("docker-content-digest")

    def get_blob(self, repo, digest, range=None, auth=True):
        """Response of GET /v2/<repo>/blobs/<digest>; range is "bytes=a-b" or (a, b)."""
        hdrs = {}
        if range is not None:
            hdrs["Range"] = range if isinstance(range, str) else "bytes=%d-%d" % tuple(range)
        return self.request("GET", "/v2/%s/blobs/%s" % (repo, digest), headers=hdrs, auth=auth,
                            scope=self._pull_scope(repo))

    def delete_manifest(self, repo, digest):
        return self._check(self.request("DELETE", "/v2/%s/manifests/%s" % (repo, digest),
                                        scope="repository:%s:*" % repo),
                           202, "delete %s@%s" % (repo, digest))

    def token_stats(self):
        """The token server's /stats (token mode): issued/refused counts, recent requests."""
        if self.token_port is None:
            return None
        return json.loads(_http("127.0.0.1", self.token_port, "GET", "/stats").body)

    def docker_config(self, directory, creds=None):
        """Writes DIRECTORY/config.json with `auths` for this registry (creds default
        self.creds) and returns DIRECTORY, for DOCKER_CONFIG=..."""
        os.makedirs(directory, exist_ok=True)
        u, p = creds or self.creds
        cfg = {"auths": {self.host: {"auth": base64.b64encode(("%s:%s" % (u, p)).encode())
                                     .decode()}}}
        with open(os.path.join(directory, "config.json"), "w") as f:
            json.dump(cfg, f)
        return directory


if __name__ == "__main__":
    # Manual use: registry_harness.py MODE [LAYOUT REPO[:TAG]]... ; runs until Ctrl-C.
    mode = sys.argv[1] if len(sys.argv) > 1 else "open"
    with Registry(mode) as reg:
        args = sys.argv[2:]
        for layout, ref in zip(args[::2], args[1::2]):
            repo, _, t = ref.partition(":")
            print(json.dumps(reg.push_layout(layout, repo, tag=t or None)["tags"]))
        print("registry %s (%s) up in %.3f s; root %s" % (reg.url, mode, reg.timings["start"],
                                                          reg.root), flush=True)
        if reg.mode == "token":
            print("token realm", reg.token_url, flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
