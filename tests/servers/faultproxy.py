#!/usr/bin/env python3
"""Fault-injecting HTTP/1.1 reverse proxy for tests (python3 stdlib only).

  faultproxy.py --listen PORT --upstream http://127.0.0.1:UPORT [--ready-file F]
  faultproxy.py --listen PORT --serve DIR [--tls-cert C --tls-key K] [--ready-file F]

--upstream: forwards every request to UPORT (all headers both ways, Range
included, Host kept as the client sent it) and streams bodies back. Responses
carry "Connection: close".
--serve: a small upstream of its own for tests: the files under DIR with single
Range requests (206, 416), HEAD, ETag and Last-Modified, keep-alive; and
/__echo__<anything>, which answers the request it got as JSON
{"method", "path", "headers": [[name, value]...], "body"}.

With --exit-with-stdin the server exits when its stdin reaches EOF: a test
that passes a pipe never leaves a server behind, even when it crashes.

PORT 0 picks a free port. Once listening, the port number and a newline are
written to F (directly when F is a FIFO, else via a rename): F is the readiness
signal. Only 127.0.0.1 is bound unless --bind says otherwise.

Control API on the same port (never forwarded, never counted):
  POST /__proxy__/faults   JSON rule or list of rules, appended:
      {"match": "<substring of the request target>", "method": "GET",
       "action": "reset_after"|"stall"|"status"|"truncate"|"corrupt"|
                 "redirect"|"ignore_range",
       "bytes": N, "seconds": S, "status": 503, "retry_after": 1,
       "location": "http://...", "times": K}
    The first rule that matches a request and has times left applies to it
    (times defaults to 1). Body offsets count the body bytes of the response:
      reset_after  send N body bytes, then reset the connection (RST)
      stall        send N body bytes, stop for S seconds, then go on
      status       answer `status` (default 503, with Retry-After when given)
                   without contacting the upstream
      truncate     send the headers (Content-Length intact) and N body bytes,
                   then close cleanly
      corrupt      flip every bit of the body byte at offset N
      redirect     answer `status` (default 302) with Location: `location`
      ignore_range drop the Range header (the upstream answers 200)
  GET  /__proxy__/counts   {"requests": [{"method", "path", "range", "status",
                            "conn", "sent"}...], "connections": n}
                            (conn: serial number of the client connection;
                            sent: body bytes sent to the client)
  POST /__proxy__/reset    clears rules and counts, ends running stalls
"""

import argparse
import email.utils
import fcntl
import http.client
import json
import os
import socket
import ssl
import stat
import struct
import sys
import termios
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNK = 64 * 1024
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
    "upgrade", "content-length", "expect",
}
ACTIONS = {"reset_after", "stall", "status", "truncate", "corrupt", "redirect", "ignore_range"}


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.rules = []
        self.requests = []
        self.connections = 0
        self.stop = threading.Event()  # set to end running stalls

    def take_rule(self, method, target):
        with self.lock:
            for rule in self.rules:
                if rule["times"] <= 0:
                    continue
                if rule.get("match", "") not in target:
                    continue
                if rule.get("method") and rule["method"].upper() != method:
                    continue
                rule["times"] -= 1
                return dict(rule)
        return None

    def reset(self):
        with self.lock:
            self.rules = []
            self.requests = []
            self.connections = 0
            self.stop.set()
            self.stop = threading.Event()


STATE = State()
CONFIG = argparse.Namespace()


class ClientGone(Exception):
    """The connection was closed on purpose (reset/truncate)."""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "faultproxy/1"

    def setup(self):
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle and
        # the peer's delayed ACK add 40 ms to every response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with STATE.lock:
            STATE.connections += 1
            self.conn_id = STATE.connections

    def log_message(self, fmt, *args):
        if CONFIG.verbose:
            sys.stderr.write("faultproxy: " + (fmt % args) + "\n")

    def do_GET(self):
        self.dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    # --- request side -------------------------------------------------------

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def dispatch(self):
        if self.path.startswith("/__proxy__/"):
            return self.control()
        body = self.read_body()
        headers = list(self.headers.items())
        record = {
            "method": self.command, "path": self.path, "range": self.headers.get("Range", ""),
            "status": 0, "conn": self.conn_id, "sent": 0,
        }
        with STATE.lock:
            STATE.requests.append(record)
            stop = STATE.stop
        rule = STATE.take_rule(self.command, self.path)
        action = rule["action"] if rule else None
        if action == "status":
            status = int(rule.get("status", 503))
            extra = []
            if rule.get("retry_after") is not None:
                extra.append(("Retry-After", str(rule["retry_after"])))
            return self.reply_small(record, status, extra, b"%d injected by faultproxy\n" % status)
        if action == "redirect":
            status = int(rule.get("status", 302))
            return self.reply_small(record, status, [("Location", rule["location"])], b"")
        if action == "ignore_range":
            headers = [(k, v) for k, v in headers if k.lower() != "range"]
            rule = None
        if CONFIG.upstream:
            try:
                status, reason, out_headers, length, chunks = self.forward(headers, body)
            except (OSError, http.client.HTTPException) as e:
                return self.reply_small(record, 502, [], b"faultproxy: upstream: %s\n"
                                        % str(e).encode())
        else:
            status, reason, out_headers, length, chunks = self.serve(headers, body)
        record["status"] = status
        self.send(record, status, reason, out_headers, length, chunks, rule, stop)

    # --- producing the response ---------------------------------------------

    def forward(self, headers, body):
        up = urllib.parse.urlsplit(CONFIG.upstream)
        if up.scheme == "https":
            conn = http.client.HTTPSConnection(up.hostname, up.port or 443, timeout=120,
                                               context=ssl._create_unverified_context())
        else:
            conn = http.client.HTTPConnection(up.hostname, up.port or 80, timeout=120)
        conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers:
            if name.lower() not in HOP_BY_HOP:
                conn.putheader(name, value)
        if body or self.command in ("POST", "PUT", "PATCH"):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        resp = conn.getresponse()
        out = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
        length = resp.getheader("Content-Length")
        if length is not None:
            out.append(("Content-Length", length))
            length = int(length)
        if not self.has_body(resp.status):
            return resp.status, resp.reason, out, length, None

        def chunks():
            try:
                while True:
                    data = resp.read1(CHUNK)
                    if not data:
                        return
                    yield data
            finally:
                conn.close()

        return resp.status, resp.reason, out, length, chunks()

    def serve(self, headers, body):
        target = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(target.path)
        if path.startswith("/__echo__"):
            doc = json.dumps({
                "method": self.command, "path": self.path,
                "headers": [[k, v] for k, v in headers],
                "body": body.decode("latin-1"),
            }).encode()
            out = [("Content-Type", "application/json"), ("Content-Length", str(len(doc)))]
            return 200, "OK", out, len(doc), iter([doc]) if self.has_body(200) else None
        root = os.path.realpath(CONFIG.serve)
        full = os.path.realpath(os.path.join(root, path.lstrip("/")))
        if self.command not in ("GET", "HEAD"):
            return self.small(405, b"method not allowed\n")
        if not full.startswith(root + os.sep) or not os.path.isfile(full):
            return self.small(404, b"not found\n")
        st = os.stat(full)
        size = st.st_size
        out = [
            ("Content-Type", "application/octet-stream"),
            ("Accept-Ranges", "bytes"),
            ("ETag", '"%x-%x"' % (st.st_mtime_ns, size)),
            ("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True)),
        ]
        first, last, status = 0, size - 1, 200
        rng = dict((k.lower(), v) for k, v in headers).get("range", "")
        if rng.startswith("bytes=") and "," not in rng:
            a, _, b = rng[6:].strip().partition("-")
            try:
                if a == "":
                    first, last = max(size - int(b), 0), size - 1
                else:
                    first = int(a)
                    last = min(int(b), size - 1) if b else size - 1
                if first >= size or first > last:
                    out = [("Content-Range", "bytes */%d" % size)]
                    return self.small(416, b"range not satisfiable\n", out)
                status = 206
                out.append(("Content-Range", "bytes %d-%d/%d" % (first, last, size)))
            except ValueError:
                first, last, status = 0, size - 1, 200
        length = last - first + 1
        out.append(("Content-Length", str(length)))
        if not self.has_body(status):
            return status, http.client.responses[status], out, length, None

        def chunks():
            with open(full, "rb") as f:
                f.seek(first)
                left = length
                while left > 0:
                    data = f.read(min(CHUNK, left))
                    if not data:
                        return
                    left -= len(data)
                    yield data

        return status, http.client.responses[status], out, length, chunks()

    def small(self, status, body, headers=()):
        out = list(headers) + [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        chunks = iter([body]) if self.has_body(status) else None
        return status, http.client.responses.get(status, ""), out, len(body), chunks

    def has_body(self, status):
        return self.command != "HEAD" and status >= 200 and status not in (204, 304)

    def reply_small(self, record, status, headers, body):
        record["status"] = status
        st, reason, out, length, chunks = self.small(status, body, headers)
        self.send(record, st, reason, out, length, chunks, None, STATE.stop)

    # --- sending, with faults -------------------------------------------------

    def send(self, record, status, reason, headers, length, chunks, rule, stop):
        close = bool(CONFIG.upstream) or self.close_connection
        chunked = chunks is not None and length is None
        lines = ["HTTP/1.1 %d %s" % (status, reason)]
        lines += ["%s: %s" % (k, v) for k, v in headers]
        if chunked:
            lines.append("Transfer-Encoding: chunked")
        if close:
            lines.append("Connection: close")
            self.close_connection = True
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if chunks is None:
            return

        def write(data):
            if not data:
                return
            if chunked:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            else:
                self.wfile.write(data)
            record["sent"] += len(data)

        action = rule["action"] if rule else None
        n = int(rule.get("bytes", 0)) if rule else 0
        fired = False
        offset = 0
        try:
            for data in chunks:
                if action == "corrupt" and offset <= n < offset + len(data):
                    data = bytearray(data)
                    data[n - offset] ^= 0xFF
                    data = bytes(data)
                if action in ("reset_after", "truncate", "stall") and not fired \
                        and offset + len(data) > n:
                    write(data[:n - offset])
                    data = data[n - offset:]
                    offset = n
                    fired = True
                    if action == "stall":
                        stop.wait(float(rule.get("seconds", 10)))
                    else:
                        self.cut(action)
                write(data)
                offset += len(data)
            if action in ("reset_after", "truncate") and not fired:
                self.cut(action)
        except ClientGone:
            return
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def cut(self, action):
        sock = self.connection
        self.close_connection = True
        try:
            if action == "truncate":
                sock.shutdown(socket.SHUT_WR)
            else:
                # Wait (bounded) until the peer has every byte sent so far, so
                # that the reset comes exactly after N bytes, then abort with RST.
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    out = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ,
                                                         b"\0\0\0\0"))[0]
                    if out == 0:
                        break
                    time.sleep(0.001)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
                self.rfile.close()  # the last reference: the descriptor closes now
        except OSError:
            pass
        raise ClientGone()

    # --- control API ------------------------------------------------------------

    def control(self):
        body = self.read_body()
        path = urllib.parse.urlsplit(self.path).path
        if path == "/__proxy__/faults" and self.command == "POST":
            try:
                rules = json.loads(body or b"[]")
                if isinstance(rules, dict):
                    rules = [rules]
                for r in rules:
                    if r.get("action") not in ACTIONS:
                        raise ValueError("unknown action %r" % r.get("action"))
                    if r["action"] == "redirect" and not r.get("location"):
                        raise ValueError("redirect needs a location")
                    r["times"] = int(r.get("times", 1))
            except (ValueError, AttributeError, TypeError) as e:
                return self.control_reply(400, {"error": str(e)})
            with STATE.lock:
                STATE.rules.extend(rules)
                count = len(STATE.rules)
            return self.control_reply(200, {"ok": True, "rules": count})
        if path == "/__proxy__/counts" and self.command == "GET":
            with STATE.lock:
                doc = {"requests": [dict(r) for r in STATE.requests],
                       "connections": STATE.connections}
            return self.control_reply(200, doc)
        if path == "/__proxy__/reset" and self.command == "POST":
            STATE.reset()
            return self.control_reply(200, {"ok": True})
        return self.control_reply(404, {"error": "unknown control path"})

    def control_reply(self, status, doc):
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], (OSError, ssl.SSLError, http.client.HTTPException)):
            if CONFIG.verbose:
                super().handle_error(request, client_address)
            return  # clients going away, refused certificates, dead upstreams
        super().handle_error(request, client_address)


def write_ready_file(path, port):
    text = "%d\n" % port
    try:
        is_fifo = stat.S_ISFIFO(os.stat(path).st_mode)
    except FileNotFoundError:
        is_fifo = False
    if is_fifo:
        with open(path, "w") as f:
            f.write(text)
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", type=int, required=True, help="port (0: any free port)")
    p.add_argument("--bind", default="127.0.0.1")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--upstream", help="http://host:port to forward to")
    mode.add_argument("--serve", help="directory to serve instead of an upstream")
    p.add_argument("--ready-file", help="written with the port once listening")
    p.add_argument("--tls-cert", help="serve HTTPS with this PEM certificate")
    p.add_argument("--tls-key", help="and this PEM key")
    p.add_argument("--exit-with-stdin", action="store_true",
                   help="exit when stdin reaches EOF (give it a pipe from the test: "
                        "the server then dies with the test, however the test ends)")
    p.add_argument("--verbose", action="store_true")
    p.parse_args(namespace=CONFIG)

    server = Server((CONFIG.bind, CONFIG.listen), Handler)
    if CONFIG.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(CONFIG.tls_cert, CONFIG.tls_key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True,
                                        do_handshake_on_connect=False)
    if CONFIG.exit_with_stdin:
        def watch():
            while sys.stdin.buffer.read(4096):
                pass
            os._exit(0)
        threading.Thread(target=watch, daemon=True).start()
    if CONFIG.ready_file:
        write_ready_file(CONFIG.ready_file, server.server_address[1])
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
