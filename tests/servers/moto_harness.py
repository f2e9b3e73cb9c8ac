#!/usr/bin/env python3
"""moto's S3 server on loopback with SigV4 checked (IAM auth on), for tests.

Needs the machine's pyenv python3 with moto, Flask and boto3 (../shared/TEST-SERVERS.md
§2.2; scripts/deps-moto.sh checks). Each Moto listens on 127.0.0.1:<free port> (tests run
in parallel), keeps its data in RAM, and is stopped by PID.

    from moto_harness import Moto
    with Moto() as m:                       # or m = Moto(auth=False).start()
        m.create_bucket("bkcache")
        m.put("bkcache", "manifests/main", data)        # or m.put_file(bucket, key, path)
        m.url, m.port, m.access_key_id, m.secret_access_key, m.env() (AWS_* for a child)

Auth: the server process creates IAM user "ci" with an allow-all policy and an access key
while auth is still off, then switches it on (POST /moto-api/reset-auth, body 0). From then
on a wrong secret gets 403 SignatureDoesNotMatch, an unknown key InvalidAccessKeyId,
anonymous requests 403. With auth=False everything is accepted (presigned URLs and plain
curl work; moto's presigned URLs crash with auth on).

The raw-URI fix (TEST-SERVERS.md §2.2): stock moto 5.2.1 recomputes the signature over the
path and query as werkzeug re-encodes them, so valid signatures of keys with ':', '+',
non-ASCII, or of `prefix=dir/` listings are rejected. The server process monkeypatches
BaseResponse.setup_class at start-up to use the request URI exactly as sent
(environ RAW_URI); site-packages are never modified.

Readiness: the server binds its socket first (port 0: the kernel picks), bootstraps auth,
then writes one JSON line {"port", "access_key_id", "secret_access_key"} to a pipe the
parent passed (--ready-fd) and closes it; the parent blocks in select() on that pipe (no
sleeps, no polling). EOF without a line means the server died. The server exits when its
stdin (another pipe from the parent) closes, so it never outlives the test.

Run by hand: moto_harness.py --serve [--port N] [--no-auth] (prints the line on stdout;
stops on SIGINT/SIGTERM).
"""

import argparse
import atexit
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.abspath(__file__)
START_TIMEOUT = 30.0
REGION = "us-east-1"


def _patch_raw_uri():
    from urllib.parse import urlparse
    from moto.core.responses import BaseResponse

    orig = BaseResponse.setup_class

    def setup_class(self, request, full_url, headers, use_raw_body=False):
        orig(self, request, full_url, headers, use_raw_body)
        raw = getattr(request, "environ", {}).get("RAW_URI")
        if raw:
            p = urlparse(self.uri)
            self.uri = f"{p.scheme}://{p.netloc}{raw}"

    BaseResponse.setup_class = setup_class


def _bootstrap(url):
    """IAM user + allow-all policy + access key, then auth on. Returns (id, secret)."""
    import boto3
    import urllib.request
    boot = dict(aws_access_key_id="boot", aws_secret_access_key="boot", region_name=REGION,
                endpoint_url=url)
    iam = boto3.client("iam", **boot)
    iam.create_user(UserName="ci")
    iam.put_user_policy(UserName="ci", PolicyName="all", PolicyDocument=json.dumps(
        {"Version": "2012-10-17",
         "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="ci")["AccessKey"]
    req = urllib.request.Request(url + "/moto-api/reset-auth", data=b"0", method="POST",
                                 headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(req, timeout=30) as r:
        r.read()
    return key["AccessKeyId"], key["SecretAccessKey"]


def serve(port, ready_fd, auth, exit_with_stdin):
    _patch_raw_uri()
    from werkzeug.serving import make_server
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    app = DomainDispatcherApplication(create_backend_app)
    srv = make_server("127.0.0.1", port, app, threaded=True)  # bound and listening here
    port = srv.server_port
    os.environ["MOTO_PORT"] = str(port)
    url = "http://127.0.0.1:%d" % port
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    creds = _bootstrap(url) if auth else ("anything", "anything")
    info = {"port": port, "access_key_id": creds[0], "secret_access_key": creds[1]}
    line = (json.dumps(info) + "\n").encode()
    if ready_fd is not None:
        os.write(ready_fd, line)
        os.close(ready_fd)
    else:
        sys.stdout.write(line.decode())
        sys.stdout.flush()
    if exit_with_stdin:
        sys.stdin.buffer.read()  # EOF: the parent is gone
        srv.shutdown()
        return
    signal.sigwait({signal.SIGINT, signal.SIGTERM})
    srv.shutdown()


class Moto:
    def __init__(self, auth=True, python=None):
        self.auth = auth
        self.python = python or sys.executable
        self.proc = None
        self.root = None
        self.port = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        self.root = tempfile.mkdtemp(prefix="bcfs-moto-")
        self.log_path = os.path.join(self.root, "moto.log")
        rfd, wfd = os.pipe()
        cmd = [self.python, HERE, "--serve", "--ready-fd", str(wfd), "--exit-with-stdin"]
        if not self.auth:
            cmd.append("--no-auth")
        log = open(self.log_path, "ab")
        env = dict(os.environ)
        env.pop("AWS_CA_BUNDLE", None)  # irrelevant over http; keep botocore quiet
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=log,
                                         stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True, pass_fds=(wfd,))
        finally:
            log.close()
            os.close(wfd)
        atexit.register(self.stop)
        # One line arrives once the server listens with auth on; EOF if it dies.
        data = b""
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while not data.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([rfd], [], [], left)[0]:
                    self.stop()
                    raise RuntimeError("moto did not become ready in %d s:\n%s"
                                       % (START_TIMEOUT, self.log()))
                chunk = os.read(rfd, 4096)
                if not chunk:
                    self.stop()
                    raise RuntimeError("moto exited at start-up:\n" + self.log())
                data += chunk
        finally:
            os.close(rfd)
        info = json.loads(data)
        self.port = info["port"]
        self.access_key_id = info["access_key_id"]
        self.secret_access_key = info["secret_access_key"]
        self.url = "http://127.0.0.1:%d" % self.port
        self.host = "127.0.0.1:%d" % self.port
        return self

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self):
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    # -- clients ------------------------------------------------------------

    def env(self, access_key_id=None, secret_access_key=None):
        """AWS_* variables for a child process (ours, or the ones given)."""
        return {"AWS_ACCESS_KEY_ID": access_key_id or self.access_key_id,
                "AWS_SECRET_ACCESS_KEY": secret_access_key or self.secret_access_key,
                "AWS_REGION": REGION}

    def client(self, access_key_id=None, secret_access_key=None):
        import boto3
        from botocore.config import Config
        return boto3.client(
            "s3", endpoint_url=self.url, region_name=REGION,
            aws_access_key_id=access_key_id or self.access_key_id,
            aws_secret_access_key=secret_access_key or self.secret_access_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}))

    def create_bucket(self, bucket):
        self.client().create_bucket(Bucket=bucket)

    def put(self, bucket, key, data):
        self.client().put_object(Bucket=bucket, Key=key, Body=data)

    def put_file(self, bucket, key, path):
        self.client().upload_file(path, bucket, key)

    def keys(self, bucket, prefix=""):
        out = []
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                            Prefix=prefix):
            out += [o["Key"] for o in page.get("Contents", [])]
        return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--serve", action="store_true")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ready-fd", type=int)
    ap.add_argument("--no-auth", action="store_true")
    ap.add_argument("--exit-with-stdin", action="store_true")
    a = ap.parse_args()
    serve(a.port, a.ready_fd, not a.no_auth, a.exit_with_stdin)


if __name__ == "__main__":
    main()
