#!/usr/bin/env python3
"""Azurite's blob service (npm `azurite`, ../shared/TEST-SERVERS.md §3) on loopback, for tests.

python3 stdlib only. Each Azurite owns a temp dir (a fresh --location for its data, its log),
listens on 127.0.0.1:<free port>, never sends telemetry (--disableTelemetry) and is stopped
by PID. Requests are authorized with Shared Key (HMAC-SHA256 over the documented
string-to-sign) or a SAS token, written here independently of the C++ code under test.

    from azurite_harness import Azurite
    with Azurite() as az:                           # or az = Azurite().start()
        az.create_container("buildkit-cache")
        az.put_blob("buildkit-cache", "blobs/sha256:…", data)
        url = az.url                                # http://127.0.0.1:PORT/devstoreaccount1

API
  Azurite(binary=None, debug_log=False)  .start() -> self   .stop() (idempotent; also at exit)
  .url .port .account .key .root .log_path   .log() -> text
  .request(method, path, body=b"", headers=None, query=None, key=KEY|None, sas=None) -> Response
      path is "/<container>[/<blob>]" (unescaped; encoded here); key=None sends it unsigned
  .create_container(c)  .put_blob(c, name, data)  .get_blob(c, name, range=None) -> Response
  .delete_blob(c, name)  .list_blobs(c, prefix="") -> [names]
  .account_sas(permissions="rl", key=KEY, expiry=...) -> token (ss=b, srt=sco)
  .container_sas(c, permissions="rl", key=KEY, expiry=...) -> token (sr=c)
The binary: $AZURITE_BLOB, else $BCFS_TEST_DEPS/azurite (default /opt/buildcachefs-test/azurite,
where scripts/deps-azurite.sh installs it)/node_modules/.bin/azurite-blob, else azurite-blob
on PATH. find_binary() returns it or None.
"""

import atexit
import base64
import hashlib
import hmac
import http.client
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse

ACCOUNT = "devstoreaccount1"
# Azurite's documented development key: public, not a secret.
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
VERSION = "2021-08-06"
START_TIMEOUT = 30.0   # seconds until the service must answer HTTP
POLL_INTERVAL = 0.02   # between two readiness probes
IO_TIMEOUT = 120.0
STD_HEADERS = ["content-encoding", "content-language", "content-length", "content-md5",
               "content-type", "date", "if-modified-since", "if-match", "if-none-match",
               "if-unmodified-since", "range"]


class AzuriteError(Exception):
    pass


class Response:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def header(self, name, default=None):
        return self.headers.get(name.lower(), default)

    def __repr__(self):
        return "<Response %d %s %d bytes>" % (self.status, self.header("x-ms-error-code", ""),
                                              len(self.body))


def find_binary():
    env = os.environ.get("AZURITE_BLOB")
    if env:
        return env if os.access(env, os.X_OK) else None
    deps = os.environ.get("BCFS_TEST_DEPS", "/opt/buildcachefs-test")
    local = os.path.join(deps, "azurite", "node_modules", ".bin", "azurite-blob")
    if os.access(local, os.X_OK):
        return local
    return shutil.which("azurite-blob")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_date(t=None):
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(t))


def shared_key_auth(account, key, method, path, query, headers):
    """The Authorization header of a blob-service request (version >= 2015-02-21).
    path: the URL path as sent (percent-encoded); query: {name: [values]} unescaped;
    headers: lower-case names."""
    h = dict(headers)
    if h.get("content-length") == "0":
        h["content-length"] = ""
    sts = "\n".join([method] + [h.get(n, "") for n in STD_HEADERS]) + "\n"
    sts += "".join("%s:%s\n" % (k, " ".join(h[k].split())) for k in sorted(h)
                   if k.startswith("x-ms-"))
    sts += "/%s%s" % (account, path)
    for k in sorted(query):
        sts += "\n%s:%s" % (k.lower(), ",".join(sorted(query[k])))
    mac = hmac.new(base64.b64decode(key), sts.encode(), hashlib.sha256).digest()
    return "SharedKey %s:%s" % (account, base64.b64encode(mac).decode())


def _sign(key, text):
    return base64.b64encode(hmac.new(base64.b64decode(key), text.encode(),
                                     hashlib.sha256).digest()).decode()


_LIVE = set()


@atexit.register
def _stop_leftovers():
    for az in list(_LIVE):
        az.stop()


class Azurite:
    account = ACCOUNT
    key = KEY

    def __init__(self, binary=None, debug_log=False):
        self.binary = binary or find_binary()
        self.debug_log = debug_log
        self.root = None
        self.port = None
        self.proc = None
        self.log_path = None

    @property
    def url(self):
        return "http://127.0.0.1:%d/%s" % (self.port, self.account)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        if self.binary is None:
            raise AzuriteError("azurite-blob not found (run scripts/deps-azurite.sh)")
        self.root = tempfile.mkdtemp(prefix="bcfs-azurite-")
        data = os.path.join(self.root, "data")
        os.makedirs(data)
        self.log_path = os.path.join(self.root, "azurite.log")
        for _ in range(3):  # a port taken between free_port() and the bind: try another
            self.port = free_port()
            cmd = [self.binary, "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
                   "--location", data, "--disableTelemetry", "--silent"]
            if self.debug_log:
                cmd += ["--debug", os.path.join(self.root, "debug.log")]
            log = open(self.log_path, "ab")
            try:
                self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True)
            finally:
                log.close()
            _LIVE.add(self)
            if self._wait_ready():
                return self
            self._kill()
        raise AzuriteError("azurite did not start:\n" + self.log())

    def _wait_ready(self):
        """Readiness: the first HTTP answer on the port (polled, bounded)."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                conn.request("GET", "/%s?comp=list" % self.account)
                conn.getresponse().read()
                conn.close()
                return True
            except (OSError, http.client.HTTPException):
                time.sleep(POLL_INTERVAL)
        return False

    def _kill(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except OSError:
                pass
        self.proc = None

    def stop(self):
        self._kill()
        _LIVE.discard(self)
        if self.root:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except (OSError, TypeError):
            return ""

    # -- requests -----------------------------------------------------------

    def request(self, method, path, body=b"", headers=None, query=None, key=KEY, sas=None,
                port=None):
        query = dict(query or {})
        epath = "/%s%s" % (self.account, urllib.parse.quote(path, safe="/~"))
        h = {k.lower(): v for k, v in (headers or {}).items()}
        h["x-ms-date"] = http_date()
        h["x-ms-version"] = VERSION
        if body:
            h["content-length"] = str(len(body))
            h.setdefault("content-type", "application/octet-stream")
        elif method in ("PUT", "POST"):
            h["content-length"] = "0"
        qs = urllib.parse.urlencode([(k, v) for k, vs in query.items() for v in vs],
                                    quote_via=urllib.parse.quote)
        if sas is not None:
            qs = qs + "&" + sas if qs else sas
        elif key is not None:
            h["authorization"] = shared_key_auth(self.account, key, method, epath, query, h)
        target = epath + ("?" + qs if qs else "")
        conn = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=IO_TIMEOUT)
        try:
            conn.request(method, target, body=body or None, headers=h)
            r = conn.getresponse()
            data = r.read()
            return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
        finally:
            conn.close()

    def _check(self, resp, what, ok=(200, 201, 202)):
        if resp.status not in ok:
            raise AzuriteError("%s: HTTP %d %s %s" % (what, resp.status,
                                                      resp.header("x-ms-error-code", ""),
                                                      resp.body[:300]))
        return resp

    def create_container(self, container):
        r = self.request("PUT", "/" + container, query={"restype": ["container"]})
        if r.status == 409:  # already there
            return r
        return self._check(r, "create container " + container)

    def put_blob(self, container, name, data):
        return self._check(self.request("PUT", "/%s/%s" % (container, name), body=data,
                                        headers={"x-ms-blob-type": "BlockBlob"}),
                           "put blob %s/%s" % (container, name))

    def get_blob(self, container, name, range=None, **kw):
        h = {"range": "bytes=%d-%d" % range} if range else {}
        return self.request("GET", "/%s/%s" % (container, name), headers=h, **kw)

    def delete_blob(self, container, name):
        return self._check(self.request("DELETE", "/%s/%s" % (container, name)),
                           "delete blob %s/%s" % (container, name))

    def list_blobs(self, container, prefix=""):
        names, marker = [], ""
        while True:
            q = {"restype": ["container"], "comp": ["list"]}
            if prefix:
                q["prefix"] = [prefix]
            if marker:
                q["marker"] = [marker]
            r = self._check(self.request("GET", "/" + container, query=q), "list " + container)
            text = r.body.decode()
            for part in text.split("<Name>")[1:]:
                names.append(part.split("</Name>")[0].replace("&amp;", "&"))
            nm = text.split("<NextMarker>")
            marker = nm[1].split("</NextMarker>")[0] if len(nm) > 1 else ""
            if not marker:
                return names

    # -- SAS tokens -----------------------------------------------------------

    def account_sas(self, permissions="rl", key=KEY, expiry="2099-01-01T00:00:00Z"):
        """An account SAS for the blob service (ss=b, srt=sco)."""
        f = {"sv": VERSION, "ss": "b", "srt": "sco", "sp": permissions, "se": expiry,
             "spr": "https,http"}
        sts = "\n".join([self.account, f["sp"], f["ss"], f["srt"], "", f["se"], "", f["spr"],
                         f["sv"], "", ""])
        f["sig"] = _sign(key, sts)
        return urllib.parse.urlencode(f, quote_via=urllib.parse.quote)

    def container_sas(self, container, permissions="rl", key=KEY,
                      expiry="2099-01-01T00:00:00Z"):
        """A service SAS for one container (sr=c)."""
        f = {"sv": VERSION, "sr": "c", "sp": permissions, "se": expiry, "spr": "https,http"}
        sts = "\n".join([f["sp"], "", f["se"], "/blob/%s/%s" % (self.account, container), "",
                         "", f["spr"], f["sv"], "c", "", "", "", "", "", "", ""])
        f["sig"] = _sign(key, sts)
        return urllib.parse.urlencode(f, quote_via=urllib.parse.quote)
