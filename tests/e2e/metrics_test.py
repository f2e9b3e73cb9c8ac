#!/usr/bin/env python3
"""End-to-end tests of the mount's Prometheus metrics (issue 8 item 5), with real mounts.

  1. A registry cache behind basic auth, mounted with --metrics-addr: one layer blob read
     twice gives exactly one store miss, one hit and the blob's size in fetched bytes;
     FUSE requests are counted by result (ok, ENODATA), lookups of missing names as ENOENT;
     `.buildcachefs/metrics` and http://ADDR/metrics say the same; both parse as strict
     Prometheus text 0.0.4 (a parser here; promtool too when installed); the registry's
     password, its basic-auth header and its address never appear; other paths get 404;
     after unmount the port is closed.
  2. GC (mounted with -o metrics_addr=...): the eviction counters equal what status.json's
     gc section says (count and bytes freed), by place.
  3. As a service (`mount -f --config` with metrics_addr and NOTIFY_SOCKET): the listener
     answers the moment READY=1 arrives; with $JOURNAL_STREAM naming the daemon's stderr
     its lines carry sd-daemon priorities (<6>, <4>) instead of "buildcachefs: LEVEL:";
     SIGTERM closes the port and exits 0.
  4. A metrics port already taken fails the mount (exit 1, nothing mounted, the reason
     printed); a malformed address is a usage error (exit 2).

Needs root (mounts) and docker-registry; outside CI it skips without them, under CI=true
it fails. Metrics ports are taken from 19300-19399.

Run by ctest: metrics_test.py --bin BUILDCACHEFS --gen BUILDCACHEFS_GEN --shared DIR
"""

import base64
import http.client
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "servers"))

import e2e_cli  # noqa: E402
import mount_test as mt  # noqa: E402
import gc_test as gt  # noqa: E402
import registry_test as rt  # noqa: E402

ARGS = None
LAYER = gt.LAYER


def free_port():
    """A port of this test's range (19300-19399) that nothing listens on."""
    for port in range(19300, 19400):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise AssertionError("no free port in 19300-19399")


def scrape(port, path="/metrics", method="GET"):
    """(status, content type, body text) of one request."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, r.getheader("Content-Type"), r.read().decode()
    finally:
        c.close()


def port_closed(port):
    s = socket.socket()
    try:
        return s.connect_ex(("127.0.0.1", port)) != 0
    finally:
        s.close()


# ---------------------------------------------------------------------------
# A strict parser of the text exposition format 0.0.4, as far as we emit it.

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\\\|\\"|\\n)*"'
SAMPLE = re.compile(r"^(%s)(\{%s(?:,%s)*\})? (\S+)$" % (NAME, LABEL, LABEL))
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"')


def parse_value(text):
    if text in ("+Inf", "-Inf", "NaN"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    if not re.match(r"^-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$", text):
        raise AssertionError("bad value %r" % text)
    return float(text)


def parse_exposition(text):
    """{family: {"type", "help", "samples": {(name, labels tuple): value}}}; raises
    AssertionError on anything a Prometheus server would reject or we promise not to do."""
    assert text.endswith("\n"), "the text must end with a newline"
    families, current, seen = {}, None, set()
    for n, line in enumerate(text.split("\n")[:-1], 1):
        where = "line %d: %r" % (n, line)
        if line.startswith("# HELP "):
            m = re.match(r"^# HELP (%s) (.*)$" % NAME, line)
            assert m, where
            name = m.group(1)
            assert name not in families, "family %s twice (%s)" % (name, where)
            current = families[name] = {"help": m.group(2), "type": None, "samples": {}}
            current["name"] = name
            continue
        if line.startswith("# TYPE "):
            m = re.match(r"^# TYPE (%s) (counter|gauge|histogram)$" % NAME, line)
            assert m and current is not None and m.group(1) == current["name"], where
            assert current["type"] is None and not current["samples"], where
            current["type"] = m.group(2)
            if current["type"] == "counter":
                assert current["name"].endswith("_total"), "counter without _total: " + where
            continue
        assert not line.startswith("#") and line, where
        m = SAMPLE.match(line)
        assert m, where
        name, labels_text, value = m.group(1), m.group(2) or "", m.group(3)
        assert current is not None and current["type"] is not None, "sample before TYPE: " + where
        base = current["name"]
        if current["type"] == "histogram":
            assert name in (base + "_bucket", base + "_sum", base + "_count"), where
        else:
            assert name == base, where
        labels = tuple(LABEL_RE.findall(labels_text))
        names = [k for k, _ in labels]
        assert len(names) == len(set(names)), "repeated label: " + where
        key = (name, labels)
        assert key not in seen, "duplicate series: " + where
        seen.add(key)
        v = parse_value(value)
        if current["type"] == "counter" or name.endswith(("_bucket", "_count")):
            assert v >= 0 and v == int(v), "counts are non-negative integers: " + where
        current["samples"][key] = v
    for f in families.values():
        assert f["type"] is not None, "HELP without TYPE for " + f["name"]
        if f["type"] == "histogram":
            check_histogram(f)
    return families


def check_histogram(f):
    base = f["name"]
    series = {}
    for (name, labels), v in f["samples"].items():
        rest = tuple(kv for kv in labels if kv[0] != "le")
        s = series.setdefault(rest, {"buckets": [], "sum": None, "count": None})
        if name == base + "_bucket":
            le = dict(labels)["le"]
            s["buckets"].append((math.inf if le == "+Inf" else float(le), v))
        elif name == base + "_sum":
            s["sum"] = v
        else:
            s["count"] = v
    for rest, s in series.items():
        what = "%s%s" % (base, rest)
        assert s["sum"] is not None and s["count"] is not None, what + ": no _sum/_count"
        bounds = [b for b, _ in s["buckets"]]
        assert bounds == sorted(bounds) and bounds[-1] == math.inf, what + ": le order"
        counts = [c for _, c in s["buckets"]]
        assert counts == sorted(counts), what + ": buckets not cumulative"
        assert counts[-1] == s["count"], what + ": +Inf bucket != _count"


def value(families, family, name=None, **labels):
    """The value of one sample; None when the series is absent."""
    f = families.get(family)
    if f is None:
        return None
    want = tuple(sorted(labels.items()))
    for (n, ls), v in f["samples"].items():
        if n == (name or family) and tuple(sorted(ls)) == want:
            return v
    return None


class ParserSelfTest(unittest.TestCase):
    """The parser must be able to fail, or the checks above prove nothing."""

    def test_rejects_what_prometheus_would_reject(self):
        good = "# HELP a_total x\n# TYPE a_total counter\na_total{k=\"v\"} 1\n"
        self.assertEqual(value(parse_exposition(good), "a_total", k="v"), 1)
        for bad in ("a_total 1\n",                                           # no TYPE
                    "# HELP a x\n# TYPE a counter\na 1\n",                    # no _total
                    good + "a_total{k=\"v\"} 2\n",                            # duplicate
                    good.replace("1\n", "1"),                                 # no newline
                    good.replace("{k=\"v\"}", "{k=v}"),                       # unquoted
                    "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\n"
                    "h_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n"):          # not cumulative
            with self.assertRaises(AssertionError, msg=bad):
                parse_exposition(bad)


class Base(gt.Base):
    """gc_test's: a registry with basic auth holding a cache of five 3 MiB layers, the
    docker config for it, mount_gc(state, gc_config, opts), blob(), bytes_of()."""

    def mount_with(self, opts, gc_config='[gc]\nenabled = false\n'):
        return self.mount_gc(tempfile.mkdtemp(prefix="state-", dir=self.tmp), gc_config, opts)

    def file_metrics(self, mnt):
        with open(os.path.join(mnt, ".buildcachefs", "metrics")) as f:
            return f.read()

    def assert_no_secrets(self, text):
        user, password = self.reg.creds
        basic = base64.b64encode(("%s:%s" % (user, password)).encode()).decode()
        for secret in (password, basic, self.reg.host, "127.0.0.1:%d" % self.reg.port):
            self.assertNotIn(secret, text)


class Metrics(Base):
    def test_exact_store_and_fuse_counters_in_the_file_and_over_http(self):
        port = free_port()
        mnt = self.mount_with(["--metrics-addr", "127.0.0.1:%d" % port])
        digest = self.info["layers"][0]
        want = self.bytes_of(digest)
        self.assertEqual(len(want), LAYER)

        status, ctype, text = scrape(port)
        self.assertEqual((status, ctype), (200, "text/plain; version=0.0.4; charset=utf-8"))
        before = parse_exposition(text)
        self.assertEqual(value(before, "buildcachefs_store_misses_total"), 0)
        self.assertEqual(value(before, "buildcachefs_store_fetched_bytes_total"), 0)
        self.assertEqual(value(before, "buildcachefs_fuse_requests_total", op="open",
                               result="ok"), None)

        # Two reads of one blob: the first fetches it whole, the second finds it stored.
        self.assertEqual(mt.read_all(self.blob(mnt, digest)), want)
        self.assertEqual(mt.read_all(self.blob(mnt, digest)), want)
        with self.assertRaises(OSError) as cm:
            os.getxattr(self.blob(mnt, digest), "user.buildcachefs.nope")
        self.assertEqual(cm.exception.errno, 61)  # ENODATA
        self.assertFalse(os.path.exists(os.path.join(mnt, "app", "no-such-name")))

        status, _, text = scrape(port)
        self.assertEqual(status, 200)
        m = parse_exposition(text)
        exact = {
            ("buildcachefs_store_misses_total", ()): 1,
            ("buildcachefs_store_hits_total", ()): 1,
            ("buildcachefs_store_fetch_joins_total", ()): 0,
            ("buildcachefs_store_fetched_bytes_total", ()): LAYER,
            ("buildcachefs_store_fetches_in_flight", ()): 0,
            ("buildcachefs_store_fetch_failures_total", ()): 0,
            ("buildcachefs_store_digest_mismatches_total", ()): 0,
            ("buildcachefs_fuse_requests_total", (("op", "open"), ("result", "ok"))): 2,
            ("buildcachefs_fuse_requests_total", (("op", "getxattr"), ("result", "ENODATA"))): 1,
            ("buildcachefs_fuse_request_duration_seconds", (("op", "open"),)): 2,  # its _count
            ("buildcachefs_http_retries_total", (("backend", "registry"),)): 0,
            ("buildcachefs_http_errors_total", (("backend", "registry"),)): 0,
        }
        for (family, labels), v in exact.items():
            name = family + "_count" if family.endswith("_seconds") else None
            self.assertEqual(value(m, family, name, **dict(labels)), v, (family, labels))
        self.assertGreaterEqual(value(m, "buildcachefs_fuse_requests_total", op="lookup",
                                      result="ENOENT"), 1)
        self.assertGreaterEqual(value(m, "buildcachefs_fuse_requests_total", op="read",
                                      result="ok"), 1)
        self.assertGreaterEqual(value(m, "buildcachefs_http_received_bytes_total",
                                      backend="registry"), LAYER)
        self.assertGreaterEqual(value(m, "buildcachefs_http_requests_total", backend="registry",
                                      method="GET", code="2xx"), 2)
        for family in m:
            self.assertTrue(family.startswith("buildcachefs_"), family)
        self.assert_no_secrets(text)

        # The file in the mount renders the same registry: the same values, plus the open
        # of the file itself once it is counted (not yet while it renders).
        file_text = self.file_metrics(mnt)
        f = parse_exposition(file_text)
        self.assert_no_secrets(file_text)
        for (family, labels), v in exact.items():
            name = family + "_count" if family.endswith("_seconds") else None
            self.assertEqual(value(f, family, name, **dict(labels)), v, (family, labels))
        self.assertEqual(set(f), set(m))
        status, _, text = scrape(port)
        self.assertEqual(value(parse_exposition(text), "buildcachefs_fuse_requests_total",
                               op="open", result="ok"), 3)

        promtool = shutil.which("promtool")
        if promtool:
            p = subprocess.run([promtool, "check", "metrics"], input=file_text, text=True,
                               capture_output=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

        self.assertEqual(scrape(port, "/")[0], 404)
        self.assertEqual(scrape(port, "/metrics/x")[0], 404)
        status, _, body = scrape(port, method="HEAD")
        self.assertEqual((status, body), (200, ""))
        self.assertEqual(scrape(port, method="POST")[0], 405)

        self.unmount(mnt)
        self.assertTrue(port_closed(port), "the metrics port stays open after unmount")

    def test_gc_evictions_match_status_json(self):
        port = free_port()
        mnt = self.mount_with(["-o", "noexec,metrics_addr=127.0.0.1:%d" % port],
                              '[gc]\n[[gc.policy]]\nmaxUsedSpace = "5MB"\n')
        a, b = self.info["layers"][:2]
        for d in (a, b):  # b crosses 5 MiB: a, not open, is evicted
            self.assertEqual(mt.read_all(self.blob(mnt, d)), self.bytes_of(d))
        with open(os.path.join(mnt, ".buildcachefs", "status.json")) as fh:
            gc = json.load(fh)["gc"]
        m = parse_exposition(scrape(port)[2])
        self.assertGreaterEqual(gc["evicted"], 1)
        self.assertEqual(value(m, "buildcachefs_gc_evictions_total", place="blob"),
                         gc["evicted"])
        self.assertEqual(value(m, "buildcachefs_gc_evicted_bytes_total", place="blob"),
                         gc["bytes_freed"])
        self.assertEqual(value(m, "buildcachefs_gc_evictions_total", place="partial"), 0)
        self.assertEqual(value(m, "buildcachefs_gc_runs_total", result="ok"), gc["runs"])
        self.assertEqual(value(m, "buildcachefs_gc_runs_total", result="error"), 0)
        self.assertEqual(value(m, "buildcachefs_store_misses_total"), 2)
        self.assertEqual(value(m, "buildcachefs_store_fetched_bytes_total"), 2 * LAYER)


class Service(mt.Base):
    def test_listener_answers_at_ready_journal_priorities_and_sigterm_closes_it(self):
        cache = os.path.join(self.tmp, "cache")
        shutil.copytree(os.path.join(ARGS.shared, "fixtures", "buildkit", "local-growth"),
                        cache, symlinks=True)
        mnt = os.path.join(self.tmp, "mnt")
        os.mkdir(mnt)
        self._mounts.append(mnt)
        port = free_port()
        config = os.path.join(self.tmp, "bcfs.toml")
        with open(config, "w") as fh:
            fh.write('mountpoint = "mnt"\nstate_dir = "state"\nlog_level = "info"\n'
                     'metrics_addr = "127.0.0.1:%d"\noptions = ["suid"]\n'
                     '[[source]]\ntype = "local"\nsrc = "cache"\n' % port)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(notify.close)
        notify.bind(os.path.join(self.tmp, "notify.sock"))
        notify.settimeout(60)
        log_path = os.path.join(self.tmp, "daemon.log")
        log = open(log_path, "w")
        self.addCleanup(log.close)
        st = os.fstat(log.fileno())
        env = dict(os.environ, NOTIFY_SOCKET=os.path.join(self.tmp, "notify.sock"),
                   JOURNAL_STREAM="%d:%d" % (st.st_dev, st.st_ino))
        proc = subprocess.Popen([ARGS.bin, "mount", "-f", "--config", config], env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)

        def stop():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.addCleanup(stop)
        while True:
            msg = notify.recv(4096).decode()
            if msg.startswith("READY=1"):
                break
        # No retry: the listener is up before READY=1 is sent.
        status, _, text = scrape(port)
        self.assertEqual(status, 200)
        m = parse_exposition(text)
        self.assertEqual(value(m, "buildcachefs_layer_indexing_passes_total"), 0)
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(timeout=60), 0)
        self.assertFalse(mt.is_mounted(mnt))
        self.assertTrue(port_closed(port))
        with open(log_path) as fh:
            lines = fh.read().splitlines()
        self.assertIn("<6>serving metrics on http://127.0.0.1:%d/metrics" % port, lines)
        self.assertIn("<4>ignoring mount option(s) suid: the mount is always ro,nosuid,nodev",
                      lines)
        self.assertIn("<6>unmounted " + mnt, lines)
        self.assertEqual([ln for ln in lines if not re.match(r"^<[3467]>", ln)], [])


class Refusals(mt.Base):
    def test_a_taken_port_fails_the_mount_and_a_bad_address_is_a_usage_error(self):
        cache = os.path.join(self.tmp, "cache")
        shutil.copytree(os.path.join(ARGS.shared, "fixtures", "buildkit", "local-growth"),
                        cache, symlinks=True)
        mnt = os.path.join(self.tmp, "mnt")
        os.mkdir(mnt)
        self._mounts.append(mnt)
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", free_port()))
        taken.listen(1)
        addr = "127.0.0.1:%d" % taken.getsockname()[1]

        def run(*args):
            return subprocess.run([ARGS.bin, "mount", "--state-dir", os.path.join(self.tmp, "s")]
                                  + list(args) + ["type=local,src=" + cache, mnt],
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=mt.MOUNT_TIMEOUT)
        p = run("--metrics-addr", addr)
        self.assertEqual((p.returncode, p.stderr),
                         (1, "buildcachefs mount: listen for metrics on %s: Address already in "
                             "use\n" % addr))
        self.assertFalse(mt.is_mounted(mnt))
        p = run("-o", "metrics_addr=localhost")
        self.assertEqual((p.returncode, p.stderr),
                         (2, 'buildcachefs mount: metrics address "localhost": no port (want '
                             'HOST:PORT with an IP address or localhost)\n'))
        self.assertFalse(mt.is_mounted(mnt))


def setUpModule():
    mt.check_prerequisites("metrics tests", ARGS, ("docker-registry", "htpasswd", "openssl"),
                           skip_outside_ci=True)
    mt.ARGS = ARGS
    rt.ARGS = ARGS
    gt.ARGS = ARGS


if __name__ == "__main__":
    e2e_cli.main()
