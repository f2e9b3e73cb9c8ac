#!/usr/bin/env python3
"""End-to-end tests of `buildcachefs ls`.

Every expectation is computed here from the cache's files with Python's json
and hashlib (another route than the code under test): refs, digests, sizes,
shapes, layer order and parents, record counts, history. Fixtures from
../shared are copied to a temp dir first; nothing in ../shared is written.

Run by ctest: ls_test.py --bin BUILDCACHEFS --gen BUILDCACHEFS_GEN --shared DIR
"""

import base64
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_cli  # noqa: E402
from cachefiles import (CACHECONFIG, IMAGE_CONFIGS, LOCAL_FIXTURES, blob_path,  # noqa: E402
                        cache_manifest_info, load_json, read_blob, sha256)

ARGS = None


def expected_ref(root, name, desc, history=False):
    shape, cfg, layer_descs = cache_manifest_info(root, desc["digest"])
    by_digest = {d["digest"]: d for d in layer_descs}
    config_doc = json.loads(read_blob(root, cfg["digest"]))
    layers = []
    if shape == "inline":
        records = json.loads(base64.b64decode(config_doc["moby.buildkit.cache.v0"]))
        diff_ids = config_doc["rootfs"]["diff_ids"]
        created = [h["created"] for h in config_doc.get("history", [])
                   if not h.get("empty_layer")]
        for i, d in enumerate(layer_descs):
            layers.append({"position": i, "digest": d["digest"], "size": d["size"],
                           "media_type": d["mediaType"], "parent": i - 1,
                           "diff_id": diff_ids[i], "created": created[i]})
    else:
        records = config_doc.get("records", [])
        for i, l in enumerate(config_doc.get("layers", [])):
            d = by_digest[l["blob"]]
            ann = d.get("annotations", {})
            layers.append({"position": i, "digest": l["blob"], "size": d["size"],
                           "media_type": d["mediaType"], "parent": l.get("parent", 0),
                           "diff_id": ann.get("containerd.io/uncompressed", ""),
                           "created": ann.get("buildkit/createdat", "")})
    unique = {l["digest"]: l["size"] for l in layers}
    return {
        "name": name, "history": history, "digest": desc["digest"], "size": desc["size"],
        "shape": shape, "config": {"digest": cfg["digest"], "size": cfg["size"],
                                   "media_type": cfg["mediaType"]},
        "total_size": desc["size"] + cfg["size"] + sum(unique.values()),
        "record_count": len(records), "layers": layers,
    }


def expected_source(root):
    index = load_json((os.path.join(root, "index.json")))
    refs, reached = [], set()
    for d in index["manifests"]:
        name = d.get("annotations", {}).get("org.opencontainers.image.ref.name") \
            or "@" + d["digest"].split(":")[1][:12]
        ref = expected_ref(root, name, d)
        refs.append(ref)
        reached |= {ref["digest"], ref["config"]["digest"]} | {l["digest"] for l in ref["layers"]}
    blobs = sorted("sha256:" + h for h in os.listdir(os.path.join(root, "blobs", "sha256")))
    history = []
    for b in blobs:
        if b in reached or cache_manifest_info(root, b) is None:
            continue
        size = os.path.getsize(blob_path(root, b))
        history.append(expected_ref(root, "@" + b.split(":")[1][:12], {"digest": b, "size": size},
                                    history=True))
    sizes = {b: os.path.getsize(blob_path(root, b)) for b in blobs}
    unref = [b for b in blobs if b not in reached]
    return {"refs": refs, "history": history,
            "blobs": {"count": len(blobs), "bytes": sum(sizes.values()),
                      "unreferenced_count": len(unref),
                      "unreferenced_bytes": sum(sizes[b] for b in unref)}}


def run_ls(*args):
    p = subprocess.run([ARGS.bin, "ls", *args], capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def ls_json(src, *extra):
    rc, out, err = run_ls("type=local,src=" + src, "--format", "json", *extra)
    return rc, (json.loads(out) if out.strip() else None), err


KEYS = ["name", "history", "digest", "size", "shape", "config", "total_size", "record_count"]
LAYER_KEYS = ["position", "digest", "size", "media_type", "parent", "diff_id", "created"]


class Base(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="bcfs-ls-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def fixture(self, name):
        src = os.path.join(ARGS.shared, "fixtures", "buildkit", name)
        if not os.path.isdir(src):
            if os.environ.get("CI"):
                self.fail("../shared fixtures are missing in CI: " + src)
            self.skipTest("../shared/fixtures/buildkit is absent (--shared)")
        dst = os.path.join(self.tmp, name)
        shutil.copytree(src, dst, symlinks=True)
        return dst

    def generate(self, shape, compression, refs=2):
        out = os.path.join(self.tmp, "gen-%s-%s" % (shape, compression))
        cmd = [ARGS.gen, "--out", out, "--shape", shape, "--compression", compression,
               "--refs", str(refs)]
        if refs == 2:
            cmd += ["--ref-names", "latest,feature/x"]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
        return out

    def assert_matches_files(self, root):
        rc, got, err = ls_json(root)
        self.assertEqual(rc, 0, err)
        want = expected_source(root)
        self.assertEqual(got["blobs"], want["blobs"])
        for kind in ("refs", "history"):
            self.assertEqual([r["name"] for r in got[kind]], [r["name"] for r in want[kind]], kind)
            for g, w in zip(got[kind], want[kind]):
                for k in KEYS:
                    self.assertEqual(g[k], w[k], "%s %s: %s" % (kind, w["name"], k))
                self.assertEqual([{k: l[k] for k in LAYER_KEYS} for l in g["layers"]], w["layers"],
                                 "%s %s: layers" % (kind, w["name"]))
                self.assertTrue(all(l["present"] and l["listed"] for l in g["layers"]))
                self.assertEqual(g["errors"], [])
                self.assertEqual(g["warnings"], [])
        self.assertEqual(got["errors"], [])
        return got


class Fixtures(Base):
    pass


def make_fixture_test(name):
    def test(self):
        got = self.assert_matches_files(self.fixture(name))
        self.assertEqual(got["source"], {"name": name, "type": "local",
                                         "location": "type=local,src=" + os.path.join(self.tmp, name)})
    return test


for _name in LOCAL_FIXTURES:
    setattr(Fixtures, "test_" + _name.replace("-", "_"), make_fixture_test(_name))


class History(Base):
    def test_local_growth_history_is_exactly_the_manifests_index_json_no_longer_reaches(self):
        root = self.fixture("local-growth")
        meta = os.path.join(ARGS.shared, "fixtures", "buildkit", "_meta", "local-growth-history")
        rounds = [load_json((os.path.join(meta, "index.after-round%d.json" % i)))
                  for i in (1, 2, 3)]
        old = {d["digest"] for r in rounds[:2] for d in r["manifests"]}
        now = {d["digest"] for d in rounds[2]["manifests"]}
        rc, got, err = ls_json(root)
        self.assertEqual(rc, 0, err)
        self.assertEqual(sorted(h["digest"] for h in got["history"]), sorted(old - now))
        self.assertEqual(len(got["history"]), 2)
        self.assertEqual([r["digest"] for r in got["refs"]], sorted(now))
        self.assertEqual(got["blobs"]["unreferenced_count"], 7)

    def test_one_ref_by_name(self):
        root = self.fixture("local-growth")
        rc, got, err = ls_json(root, "@825625e068e4")
        self.assertEqual(rc, 0, err)
        self.assertEqual([h["name"] for h in got["history"]], ["@825625e068e4"])
        self.assertEqual(got["refs"], [])
        rc, _, err = run_ls("type=local,src=" + root, "nope")
        self.assertEqual(rc, 1)
        self.assertIn('has no ref "nope"', err)


class Generated(Base):
    pass


def make_generated_test(shape, compression):
    def test(self):
        root = self.generate(shape, compression)
        got = self.assert_matches_files(root)
        self.assertEqual([r["name"] for r in got["refs"]], ["latest", "feature/x"])
        self.assertEqual(got["refs"][1]["path_name"], "feature%2Fx")
        self.assertEqual({r["shape"] for r in got["refs"]}, {shape})
        # The base layer is shared across refs: same digest in both.
        bases = [[l["digest"] for l in r["layers"] if l["parent"] == -1] for r in got["refs"]]
        self.assertEqual(len(set(bases[0]) & set(bases[1])), 1)
    return test


for _shape in ("image-manifest", "index", "manifest-list"):
    for _comp in ("gzip", "zstd", "uncompressed"):
        setattr(Generated, "test_%s_%s" % (_shape.replace("-", "_"), _comp),
                make_generated_test(_shape, _comp))


def rewrite_ref(root, mutate_config):
    """Applies mutate_config to the config of ref 0, re-storing config, manifest and index."""
    index_path = os.path.join(root, "index.json")
    index = load_json((index_path))
    mdesc = index["manifests"][0]
    manifest = json.loads(read_blob(root, mdesc["digest"]))
    cdesc = manifest["config"] if "config" in manifest else manifest["manifests"][-1]
    config = json.loads(read_blob(root, cdesc["digest"]))
    mutate_config(config)

    def store(obj):
        data = json.dumps(obj, separators=(",", ":")).encode()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with open(blob_path(root, digest), "wb") as f:
            f.write(data)
        return digest, len(data)

    cdesc["digest"], cdesc["size"] = store(config)
    mdesc["digest"], mdesc["size"] = store(manifest)
    with open(index_path, "w") as f:
        json.dump(index, f)
    return mdesc["digest"]


class BadInput(Base):
    def test_missing_directory_is_named(self):
        missing = os.path.join(self.tmp, "no-such-cache")
        rc, out, err = run_ls("type=local,src=" + missing)
        self.assertEqual(rc, 1)
        self.assertIn("cache directory " + missing + ": No such file or directory", err)
        self.assertEqual(out, "")

    def test_corrupt_index_json_is_named_and_manifests_are_still_listed(self):
        root = self.fixture("registry-max")
        with open(os.path.join(root, "index.json"), "w") as f:
            f.write('{"schemaVersion":2,"manifests":[{"mediaType":')
        rc, got, err = ls_json(root)
        self.assertEqual(rc, 1)
        self.assertEqual(got["refs"], [])
        self.assertEqual(len(got["errors"]), 1)
        self.assertIn(os.path.join(root, "index.json") + ": not valid JSON", got["errors"][0])
        # Everything else is still listed: the cache manifest shows up as history.
        self.assertEqual([h["digest"] for h in got["history"]],
                         ["sha256:c234c563ccad38946f4c30c9d217cfe7333826f14c8cb0710de95b8f0bfaa1f0"])
        self.assertEqual(got["history"][0]["record_count"], 13)

    def test_cache_config_naming_a_blob_the_manifest_lacks_warns_and_drops_results(self):
        root = self.fixture("local-max-gzip")
        ghost = "sha256:" + "ab" * 32

        def mutate(config):
            config["layers"].append({"blob": ghost, "parent": -1})
            config["records"].append({"digest": "sha256:" + "cd" * 32,
                                      "layers": [{"layer": len(config["layers"]) - 1,
                                                  "createdAt": "2026-01-01T00:00:00Z"}]})
        rewrite_ref(root, mutate)
        rc, got, err = ls_json(root)
        self.assertEqual(rc, 0, err)
        ref = got["refs"][0]
        self.assertEqual(len(ref["layers"]), 11)
        self.assertEqual(ref["record_count"], 14)
        self.assertFalse(ref["layers"][10]["listed"])
        self.assertTrue(all(l["listed"] for l in ref["layers"][:10]))
        joined = "\n".join(ref["warnings"])
        self.assertIn("cache config layer 10 names blob " + ghost +
                      " which the manifest does not list", joined)
        self.assertIn("blob " + ghost + " is not in the cache", joined)
        self.assertEqual(ref["errors"], [])

    def test_a_layer_blob_missing_from_blobs_is_named(self):
        root = self.fixture("local-max-zstd")
        gone = "sha256:07a82cb959292acd520c11f6645e14d0307934208a425c5099b8a43981897087"
        os.chmod(os.path.dirname(blob_path(root, gone)), 0o755)
        os.remove(blob_path(root, gone))
        rc, got, err = ls_json(root)
        self.assertEqual(rc, 0, err)
        ref = got["refs"][0]
        missing = [l for l in ref["layers"] if not l["present"]]
        self.assertEqual([l["digest"] for l in missing], [gone])
        self.assertEqual(sum(1 for l in ref["layers"] if l["present"]), 9)
        self.assertTrue(any(w.startswith("blob " + gone) and "is missing from the source" in w
                            for w in ref["warnings"]), ref["warnings"])

    def test_a_blob_of_the_wrong_size_is_named(self):
        root = self.fixture("local-max-uncompressed")
        rc, got, _ = ls_json(root)
        victim = got["refs"][0]["layers"][0]
        path = blob_path(root, victim["digest"])
        os.chmod(path, 0o644)
        with open(path, "ab") as f:
            f.write(b"\0" * 7)
        rc, got, err = ls_json(root)
        self.assertEqual(rc, 0, err)
        self.assertIn("blob %s (layer 0) is %d bytes but its descriptor says %d" %
                      (victim["digest"], victim["size"] + 7, victim["size"]),
                      got["refs"][0]["warnings"])

    def test_a_manifest_whose_bytes_do_not_match_its_digest_is_an_error_for_that_ref_only(self):
        root = self.generate("index", "gzip")
        index = load_json((os.path.join(root, "index.json")))
        victim = index["manifests"][1]["digest"]
        path = blob_path(root, victim)
        os.chmod(path, 0o644)
        with open(path, "rb") as f:
            data = bytearray(f.read())
        data[-2] = ord(" ")
        with open(path, "wb") as f:
            f.write(bytes(data))
        rc, got, err = ls_json(root)
        self.assertEqual(rc, 1)
        self.assertEqual(got["refs"][0]["errors"], [])
        self.assertEqual(got["refs"][0]["layers"][0]["present"], True)
        self.assertEqual(len(got["refs"][1]["errors"]), 1)
        self.assertIn("does not match its digest", got["refs"][1]["errors"][0])
        self.assertIn(victim.split(":")[1], got["refs"][1]["errors"][0])

    def test_one_malformed_index_entry_fails_only_that_ref(self):
        root = self.generate("index", "gzip")
        index_path = os.path.join(root, "index.json")
        index = load_json(index_path)
        del index["manifests"][1]["size"]
        with open(index_path, "w") as f:
            json.dump(index, f)
        rc, got, err = ls_json(root)
        self.assertEqual(rc, 1)
        self.assertEqual([r["name"] for r in got["refs"]], ["latest", "feature/x"])
        self.assertEqual(got["refs"][0]["errors"], [])
        self.assertEqual(len(got["refs"][0]["layers"]), 3)
        self.assertEqual(got["refs"][1]["errors"],
                         [index_path + ': field "manifests[1].size": missing'])
        # What the broken entry reaches is unknown, so nothing is called history.
        self.assertEqual(got["history"], [])

    def test_invalid_utf8_in_index_json_is_reported_not_fatal(self):
        root = self.fixture("registry-max")
        with open(os.path.join(root, "index.json"), "wb") as f:
            f.write(b'{"schemaVersion":2,"manifests":[{"\xff\xfe')
        rc, got, err = ls_json(root)
        self.assertEqual(rc, 1, err)
        self.assertIn("index.json: not valid JSON", got["errors"][0])

    def test_a_fifo_in_place_of_index_json_does_not_hang(self):
        root = self.fixture("registry-max")
        os.remove(os.path.join(root, "index.json"))
        os.mkfifo(os.path.join(root, "index.json"))
        rc, got, err = ls_json(root)
        self.assertEqual(rc, 1)
        self.assertEqual(got["errors"], [os.path.join(root, "index.json") + " is not a regular file"])

    def test_bad_source_string_is_a_usage_error_naming_the_problem(self):
        rc, out, err = run_ls("type=local,src=/x,,tag=a")
        self.assertEqual(rc, 2)
        self.assertIn("field 3 of 4 is empty", err)
        rc, out, err = run_ls("type=floppy,src=/x")
        self.assertEqual(rc, 2)
        self.assertIn('"floppy"', err)

    def test_unknown_key_is_refused_naming_the_key(self):
        rc, out, err = run_ls("type=local,src=/x,colour=blue")
        self.assertEqual(rc, 2)
        self.assertIn('unknown key "colour"', err)
        self.assertEqual(out, "")

    def test_export_only_keys_are_ignored_with_one_warning(self):
        root = self.fixture("local-max-gzip")
        rc, out, err = run_ls("type=local,dest=" + root + ",mode=max,compression=zstd",
                              "--format", "json")
        self.assertEqual(rc, 0, err)
        self.assertEqual(err.count("ignoring export-only keys: mode, compression"), 1)
        self.assertEqual(json.loads(out)["refs"][0]["name"], "latest")


class Options(Base):
    def test_tag_and_digest_narrow_the_refs(self):
        root = self.generate("image-manifest", "gzip")
        rc, out, err = run_ls("type=local,src=" + root + ",tag=feature/x", "--format", "json")
        self.assertEqual(rc, 0, err)
        got = json.loads(out)
        self.assertEqual([r["name"] for r in got["refs"]], ["feature/x"])
        digest = got["refs"][0]["digest"]
        rc, out, err = run_ls("type=local,src=" + root + ",digest=" + digest, "--format", "json")
        self.assertEqual(rc, 0, err)
        got = json.loads(out)
        self.assertEqual([r["name"] for r in got["refs"]], ["@" + digest.split(":")[1][:12]])
        self.assertEqual(got["refs"][0]["digest"], digest)
        rc, out, err = run_ls("type=local,src=" + root + ",tag=nope", "--format", "json")
        self.assertEqual(rc, 1)
        self.assertIn('no ref named "nope"', json.loads(out)["errors"][0])

    def test_tag_narrows_refs_but_not_what_counts_as_reachable(self):
        root = self.generate("image-manifest", "gzip")
        rc, out, err = run_ls("type=local,src=" + root + ",tag=latest", "--format", "json")
        self.assertEqual(rc, 0, err)
        got = json.loads(out)
        self.assertEqual([r["name"] for r in got["refs"]], ["latest"])
        # feature/x is still in index.json: neither history nor unreferenced.
        self.assertEqual(got["history"], [])
        self.assertEqual(got["blobs"]["unreferenced_count"], 0)

    def test_state_dir_records_refs_and_blobs_in_the_index(self):
        root = self.fixture("local-growth")
        state = os.path.join(self.tmp, "state")
        os.mkdir(state)
        rc, out, err = run_ls("type=local,src=" + root, "--state-dir", state)
        self.assertEqual(rc, 0, err)
        db = sqlite3.connect(os.path.join(state, "index.db"))
        self.assertEqual(db.execute("PRAGMA user_version").fetchone()[0], 3)
        names = sorted(r[0] for r in db.execute("SELECT name FROM refs"))
        self.assertEqual(names, ["@168d8ac9cf65", "@825625e068e4", "latest"])
        (count,) = db.execute("SELECT COUNT(*) FROM blobs").fetchone()
        # 3 manifests + 3 configs + every layer any of them lists (2 configs orphaned alone are
        # not reached by any manifest? they are: each history manifest reaches its config).
        want = expected_source(root)
        reached = set()
        for r in want["refs"] + want["history"]:
            reached |= {r["digest"], r["config"]["digest"]} | {l["digest"] for l in r["layers"]}
        self.assertEqual(count, len(reached))

    def test_table_output_names_refs_layers_and_history(self):
        root = self.fixture("local-growth")
        rc, out, err = run_ls("type=local,src=" + root)
        self.assertEqual(rc, 0, err)
        self.assertIn("REF     SHAPE  MANIFEST             LAYERS  RECORDS     SIZE  CREATED", out)
        self.assertIn("latest  index  sha256:aa08d79ab8ad       9       11  1.2 MiB", out)
        self.assertIn("HISTORY", out)
        self.assertIn("@825625e068e4", out)
        self.assertIn("  007  sha256:b4345cd53f3e  1088035  gzip", out)

    def test_help(self):
        p = subprocess.run([ARGS.bin, "ls", "--help"], capture_output=True, text=True)
        self.assertEqual(p.returncode, 0)
        self.assertIn("Usage: buildcachefs ls SOURCE [REF]", p.stdout)


if __name__ == "__main__":
    e2e_cli.main()
