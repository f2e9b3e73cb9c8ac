#!/usr/bin/env python3
"""Docker/OCI registry token server for tests (python3 stdlib only).

Issues RS256 JWTs that docker-registry (distribution 2.8) verifies with `auth.token`
(../shared/TEST-SERVERS.md §1b). The JWT header carries the signing certificate in `x5c`
(or, with --kid, the libtrust key id), `aud` is the service as a plain string, and `exp`/`nbf`
are always set.

usage: tokserver.py PORT KEY CERT ISSUER USERS [--ready-file F] [--expire-in S]
                    [--kid] [--anonymous pull|none] [--refresh-token TOKEN=USER ...]

  PORT     TCP port on 127.0.0.1; 0 picks a free one (read it from --ready-file)
  KEY      RSA private key, PEM, PKCS#1 ("BEGIN RSA PRIVATE KEY") or PKCS#8 ("BEGIN PRIVATE KEY")
  CERT     the certificate (PEM) the registry has as `rootcertbundle`
  ISSUER   the registry's `issuer`
  USERS    user:pass[,user:pass...]  (HTTP Basic at the realm, or grant_type=password)

Endpoints (any path works as the realm; /token is the usual one):
  GET  <realm>?service=S&scope=T:NAME:ACTIONS[&scope=...]   Docker token protocol. Known user
       (Basic) -> every requested action; no credentials -> pull only (--anonymous pull,
       default) or no access at all (--anonymous none); bad credentials -> 401.
       `offline_token=true` with a known user also returns a refresh_token.
  POST <realm>  (application/x-www-form-urlencoded) OAuth2 as the Docker CLI does for
       `identitytoken`: grant_type=refresh_token&refresh_token=..&service=..&scope=..
       or grant_type=password&username=..&password=..[&access_type=offline]
  GET  /stats   JSON counters {"issued", "refused", "requests": [...last 100...]}

--ready-file F: once listening, F is written atomically with the port number and a newline.
--expire-in S: lifetime of issued tokens (exp = now + S, expires_in = S), default 300. Note
that distribution 2.8 allows 60 s of clock leeway on exp, so a registry keeps accepting a
token for about S + 60 s; clients that honour expires_in refresh after S.
"""

import argparse
import base64
import hashlib
import json
import os
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


# ---------------------------------------------------------------------------
# DER / PEM (just enough for RSA keys)


def pem_blocks(path):
    """[(label, der bytes)] of every PEM block in the file."""
    out, label, body = [], None, []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("-----BEGIN "):
                label, body = line[11:].rstrip("-").strip(), []
            elif line.startswith("-----END "):
                out.append((label, base64.b64decode("".join(body))))
                label = None
            elif label is not None:
                body.append(line)
    return out


def der_read(der, i):
    """(tag, content bytes, next index) of the DER element at i."""
    tag = der[i]
    n = der[i + 1]
    i += 2
    if n & 0x80:
        k = n & 0x7F
        n = int.from_bytes(der[i:i + k], "big")
        i += k
    return tag, der[i:i + n], i + n


def der_children(content):
    out, i = [], 0
    while i < len(content):
        tag, body, i = der_read(content, i)
        out.append((tag, body))
    return out


def rsa_private_numbers(path):
    """(n, e, d) from a PKCS#1 or PKCS#8 PEM."""
    for label, der in pem_blocks(path):
        tag, seq, _ = der_read(der, 0)
        kids = der_children(seq)
        if label == "PRIVATE KEY":  # PKCS#8: version, algorithm, OCTET STRING(PKCS#1)
            _, seq, _ = der_read(kids[2][1], 0)
            kids = der_children(seq)
        if label in ("RSA PRIVATE KEY", "PRIVATE KEY"):
            ints = [int.from_bytes(b, "big") for t, b in kids if t == 0x02]
            return ints[1], ints[2], ints[3]
    raise SystemExit("tokserver: no RSA private key in " + path)


def der_len(n):
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def der_tlv(tag, body):
    return bytes([tag]) + der_len(len(body)) + body


def der_int(v):
    b = v.to_bytes(v.bit_length() // 8 + 1, "big")  # leading 0 keeps it positive
    return der_tlv(0x02, b)


def libtrust_kid(n, e):
    """libtrust key id: base32(sha256(DER SubjectPublicKeyInfo)[:30]) in groups of 4, ':'."""
    rsa_oid = bytes.fromhex("06092a864886f70d010101") + b"\x05\x00"
    spki = der_tlv(0x30, der_tlv(0x30, rsa_oid) +
                   der_tlv(0x03, b"\x00" + der_tlv(0x30, der_int(n) + der_int(e))))
    s = base64.b32encode(hashlib.sha256(spki).digest()[:30]).decode().rstrip("=")
    return ":".join(s[i:i + 4] for i in range(0, len(s), 4))


# ---------------------------------------------------------------------------
# JWT


SHA256_DIGESTINFO = bytes.fromhex("3031300d060960864801650304020105000420")


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


class Signer:
    def __init__(self, keyfile, certfile, issuer, use_kid):
        self.n, self.e, self.d = rsa_private_numbers(keyfile)
        self.klen = (self.n.bit_length() + 7) // 8
        self.issuer = issuer
        if use_kid:
            self.header = {"typ": "JWT", "alg": "RS256", "kid": libtrust_kid(self.n, self.e)}
        else:
            certs = [der for label, der in pem_blocks(certfile) if label == "CERTIFICATE"]
            if not certs:
                raise SystemExit("tokserver: no certificate in " + certfile)
            # RFC 7515: x5c entries are standard (not URL-safe) base64 of DER.
            self.header = {"typ": "JWT", "alg": "RS256",
                           "x5c": [base64.b64encode(c).decode() for c in certs[:1]]}

    def sign(self, data):
        # RSASSA-PKCS1-v1_5 with SHA-256 (RFC 8017 §8.2): EM = 00 01 FF.. 00 DigestInfo
        t = SHA256_DIGESTINFO + hashlib.sha256(data).digest()
        em = b"\x00\x01" + b"\xff" * (self.klen - len(t) - 3) + b"\x00" + t
        return pow(int.from_bytes(em, "big"), self.d, self.n).to_bytes(self.klen, "big")

    def token(self, sub, service, access, ttl):
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": sub, "aud": service, "exp": now + ttl,
                  "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex, "access": access}
        head = b64url(json.dumps(self.header, separators=(",", ":")).encode())
        body = b64url(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = (head + "." + body).encode()
        return head + "." + body + "." + b64url(self.sign(signing_input))


# ---------------------------------------------------------------------------
# HTTP


def parse_scopes(values):
    """'repository:app/cache:pull,push' (repeated or space separated) -> access list."""
    access = []
    for value in values:
        for one in value.split():
            parts = one.split(":")
            if len(parts) < 3:
                continue
            typ, name, actions = parts[0], ":".join(parts[1:-1]), parts[-1]
            access.append({"type": typ, "name": name,
                           "actions": [a for a in actions.split(",") if a]})
    return access


class State:
    def __init__(self, args):
        self.signer = Signer(args.key, args.cert, args.issuer, args.kid)
        self.users = dict(u.split(":", 1) for u in args.users.split(",") if u)
        self.ttl = args.expire_in
        self.anonymous = args.anonymous
        self.refresh = dict(r.split("=", 1) for r in args.refresh_token)
        self.lock = threading.Lock()
        self.issued = 0
        self.refused = 0
        self.log = []

    def note(self, entry):
        with self.lock:
            if entry.get("status") == 200:
                self.issued += 1
            else:
                self.refused += 1
            self.log.append(entry)
            del self.log[:-100]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tokserver/1"

    def log_message(self, fmt, *args):
        if os.environ.get("TOKSERVER_VERBOSE"):
            sys.stderr.write("tokserver: " + (fmt % args) + "\n")

    def reply(self, code, obj, extra=None):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def grant(self, user, service, scopes, offline, how):
        st = self.server.state
        access = []
        for a in parse_scopes(scopes):
            if user is None:
                a["actions"] = [x for x in a["actions"] if x == "pull"] \
                    if st.anonymous == "pull" else []
            access.append(a)
        tok = st.signer.token(user or "", service, access, st.ttl)
        out = {"token": tok, "access_token": tok, "expires_in": st.ttl,
               "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if offline and user is not None:
            rt = "rt-" + uuid.uuid4().hex
            with st.lock:
                st.refresh[rt] = user
            out["refresh_token"] = rt
        st.note({"method": self.command, "how": how, "user": user, "service": service,
                 "access": access, "status": 200})
        self.reply(200, out)

    def refuse(self, code, why, how):
        self.server.state.note({"method": self.command, "how": how, "status": code,
                                "error": why})
        hdr = {"WWW-Authenticate": 'Basic realm="tokserver"'} if code == 401 else None
        self.reply(code, {"errors": [{"code": "UNAUTHORIZED" if code == 401 else "DENIED",
                                      "message": why}]}, hdr)

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        st = self.server.state
        if url.path == "/stats":
            with st.lock:
                return self.reply(200, {"issued": st.issued, "refused": st.refused,
                                        "requests": list(st.log)})
        q = urllib.parse.parse_qs(url.query)
        user = None
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            try:
                u, _, p = base64.b64decode(auth[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return self.refuse(401, "malformed basic credentials", "basic")
            if st.users.get(u) != p:
                return self.refuse(401, "invalid username/password", "basic")
            user = u
        elif auth:
            return self.refuse(401, "unsupported authorization scheme", "basic")
        self.grant(user, q.get("service", [""])[0], q.get("scope", []),
                   q.get("offline_token", [""])[0] == "true", "basic" if user else "anonymous")

    def do_POST(self):
        st = self.server.state
        n = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(n).decode())
        f = {k: v[0] for k, v in form.items()}
        scopes = form.get("scope", [])
        service = f.get("service", "")
        grant = f.get("grant_type", "")
        if grant == "refresh_token":
            with st.lock:
                user = st.refresh.get(f.get("refresh_token", ""))
            if user is None:
                return self.refuse(401, "invalid refresh token", "refresh_token")
            return self.grant(user, service, scopes, False, "refresh_token")
        if grant == "password":
            u, p = f.get("username", ""), f.get("password", "")
            if st.users.get(u) != p:
                return self.refuse(401, "invalid username/password", "password")
            return self.grant(u, service, scopes, f.get("access_type") == "offline", "password")
        self.refuse(400, "unsupported grant_type %r" % grant, "post")


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("port", type=int)
    ap.add_argument("key")
    ap.add_argument("cert")
    ap.add_argument("issuer")
    ap.add_argument("users")
    ap.add_argument("--ready-file")
    ap.add_argument("--expire-in", type=int, default=300, metavar="SECONDS")
    ap.add_argument("--kid", action="store_true",
                    help="put the libtrust key id in the JWT header instead of x5c")
    ap.add_argument("--anonymous", choices=("pull", "none"), default="pull")
    ap.add_argument("--refresh-token", action="append", default=[], metavar="TOKEN=USER")
    args = ap.parse_args(argv)

    srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    srv.daemon_threads = True
    srv.state = State(args)
    if args.ready_file:
        tmp = args.ready_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % srv.server_address[1])
        os.rename(tmp, args.ready_file)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main(sys.argv[1:])
