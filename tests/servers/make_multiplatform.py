#!/usr/bin/env python3
"""Builds a multi-platform inline-cache image with a provenance attestation, as an OCI layout.

python3 stdlib only. From the inline fixture (../shared/fixtures/buildkit/inline: a Docker
schema2 image manifest whose config carries `moby.buildkit.cache.v0`), it writes OUT, a copy of
the fixture plus new blobs, whose index.json has one entry (ref.name TAG) pointing to an OCI
image index shaped as BuildKit pushes a multi-platform image with provenance:

  manifests[0]  linux/amd64     the fixture's image manifest, byte for byte
  manifests[1]  linux/arm64/v8  a second image manifest: the fixture's config with
                                "architecture":"arm64","variant":"v8" (same layers, same inline
                                cache, so both configs carry moby.buildkit.cache.v0)
  manifests[2]  unknown/unknown attestation manifest (OCI) for amd64: annotations
                                vnd.docker.reference.type=attestation-manifest and
                                vnd.docker.reference.digest=<amd64 manifest digest>; config
                                application/vnd.oci.image.config.v1+json (no cache key), one
                                application/vnd.in-toto+json layer (SLSA provenance statement)
  (--attest-all adds manifests[3], the same for arm64, as BuildKit does per platform)

--oci converts the platform manifests to OCI media types (manifest, config, layers), which is
what BuildKit actually emits once attestations are on; the amd64 manifest is then no longer the
fixture's bytes. Without it the index mixes Docker-typed children into an OCI index, which
registries accept.

Everything is deterministic (no clock, no randomness). The source is only read.
Prints the digest of the image index. Importable: make(src, out, ...) -> index digest.

usage: make_multiplatform.py --out DIR [--src DIR] [--tag NAME] [--oci] [--attest-all]
"""

import argparse
import hashlib
import json
import os
import shutil
import sys

DEFAULT_SRC = "/work/shared/fixtures/buildkit/inline"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
INTOTO = "application/vnd.in-toto+json"
REF_NAME = "org.opencontainers.image.ref.name"
DOCKER_TO_OCI_LAYER = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip":
        "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar": "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.docker.image.rootfs.diff.tar.zstd":
        "application/vnd.oci.image.layer.v1.tar+zstd",
}


def digest_of(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def dumps(obj):
    # BuildKit's image writer marshals manifests and indexes with 2-space indentation.
    return json.dumps(obj, indent=2, ensure_ascii=False).encode()


class Layout:
    def __init__(self, root):
        self.root = root
        self.bdir = os.path.join(root, "blobs", "sha256")

    def read(self, digest):
        with open(os.path.join(self.bdir, digest.split(":", 1)[1]), "rb") as f:
            data = f.read()
        if digest_of(data) != digest:
            raise SystemExit("%s: blob %s does not match its name" % (self.root, digest))
        return data

    def write(self, data):
        d = digest_of(data)
        path = os.path.join(self.bdir, d.split(":", 1)[1])
        if not os.path.exists(path):
            tmp = path + ".tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o444)
            os.rename(tmp, path)
        return d


def platform_config(config_bytes, arch, variant=None):
    """The config with architecture (and variant) replaced in place, other bytes unchanged."""
    cfg = json.loads(config_bytes)
    old = b'"architecture":' + json.dumps(cfg["architecture"]).encode()
    if config_bytes.count(old) != 1:
        raise SystemExit("config: cannot find a unique %r" % old)
    new = b'"architecture":' + json.dumps(arch).encode()
    if variant:
        if "variant" in cfg:
            raise SystemExit("config already has a variant")
        new += b',"variant":' + json.dumps(variant).encode()
    out = config_bytes.replace(old, new)
    got = json.loads(out)
    assert got["architecture"] == arch and got.get("moby.buildkit.cache.v0") == \
        cfg.get("moby.buildkit.cache.v0")
    return out


def provenance(subject_digest, platform, image_config):
    """A small but well-formed in-toto statement with an SLSA v0.2 predicate."""
    return {
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://slsa.dev/provenance/v0.2",
        "subject": [{"name": "pkg:docker/127.0.0.1:5100/app@inline?platform=" +
                     platform.replace("/", "%2F"),
                     "digest": {"sha256": subject_digest.split(":", 1)[1]}}],
        "predicate": {
            "builder": {"id": ""},
            "buildType": "https://mobyproject.org/buildkit@v1",
            "materials": [{"uri": "pkg:docker/127.0.0.1:5100/busybox@latest",
                           "digest": {"sha256": "c14d3a75bc6500c1520790e9ea49ba9e24ee4bce"
                                                "4585157dbaffcfe46a15cbc5"}}],
            "invocation": {"configSource": {"entryPoint": "Dockerfile"},
                           "parameters": {"frontend": "dockerfile.v0",
                                          "args": {"build-arg:RANDOM_KB": "256"}},
                           "environment": {"platform": platform}},
            "metadata": {"buildStartedOn": image_config.get("created", ""),
                         "buildFinishedOn": image_config.get("created", ""),
                         "completeness": {"parameters": True, "environment": True,
                                          "materials": False},
                         "reproducible": False},
        },
    }


def attestation(lay, subject_desc, platform, image_config):
    """(descriptor) of an attestation manifest for subject_desc, blobs written."""
    stmt = dumps(provenance(subject_desc["digest"], platform, image_config))
    layer = {"mediaType": INTOTO, "digest": lay.write(stmt), "size": len(stmt),
             "annotations": {"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"}}
    cfg = json.dumps({"architecture": "unknown", "os": "unknown", "config": {},
                      "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]}},
                     separators=(",", ":")).encode()
    manifest = dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                      "config": {"mediaType": OCI_CONFIG, "digest": lay.write(cfg),
                                 "size": len(cfg)},
                      "layers": [layer]})
    return {"mediaType": OCI_MANIFEST, "digest": lay.write(manifest), "size": len(manifest),
            "annotations": {"vnd.docker.reference.digest": subject_desc["digest"],
                            "vnd.docker.reference.type": "attestation-manifest"},
            "platform": {"architecture": "unknown", "os": "unknown"}}


def to_oci(manifest_bytes, config_digest, config_size):
    m = json.loads(manifest_bytes)
    m["mediaType"] = OCI_MANIFEST
    m["config"] = {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size}
    for l in m["layers"]:
        l["mediaType"] = DOCKER_TO_OCI_LAYER.get(l["mediaType"], l["mediaType"])
    return dumps(m)


def make(src, out, tag="multi", oci=False, attest_all=False):
    """Writes the layout to `out` (must not exist); returns the image index digest."""
    shutil.copytree(src, out, symlinks=True)
    for d in (out, os.path.join(out, "blobs"), os.path.join(out, "blobs", "sha256")):
        os.chmod(d, 0o755)  # fixtures are read-only (0555 dirs, 0444 files)
    os.chmod(os.path.join(out, "index.json"), 0o644)
    lay = Layout(out)
    with open(os.path.join(out, "index.json"), "rb") as f:
        entries = json.load(f)["manifests"]
    if len(entries) != 1:
        raise SystemExit("%s: expected one index.json entry, found %d" % (src, len(entries)))
    amd_bytes = lay.read(entries[0]["digest"])
    amd = json.loads(amd_bytes)
    if amd.get("mediaType") != DOCKER_MANIFEST and not amd.get("config"):
        raise SystemExit("%s: index.json does not point to an image manifest" % src)
    amd_cfg_bytes = lay.read(amd["config"]["digest"])
    amd_cfg = json.loads(amd_cfg_bytes)
    if "moby.buildkit.cache.v0" not in amd_cfg:
        raise SystemExit("%s: the image config has no moby.buildkit.cache.v0" % src)
    amd_mt = amd.get("mediaType") or entries[0]["mediaType"]
    if amd_cfg.get("architecture") != "amd64" or amd_cfg.get("os") != "linux":
        raise SystemExit("%s: expected a linux/amd64 image" % src)

    arm_cfg_bytes = platform_config(amd_cfg_bytes, "arm64", "v8")
    arm_cfg_digest = lay.write(arm_cfg_bytes)
    if oci:
        amd_bytes = to_oci(amd_bytes, lay.write(amd_cfg_bytes), len(amd_cfg_bytes))
        arm_bytes = to_oci(amd_bytes, arm_cfg_digest, len(arm_cfg_bytes))
        amd_mt = OCI_MANIFEST
    else:
        # Same bytes as the fixture's manifest, config descriptor swapped in place.
        old = json.dumps(amd["config"]["digest"]).encode()
        arm_bytes = amd_bytes.replace(old, json.dumps(arm_cfg_digest).encode()).replace(
            b'"size": %d' % len(amd_cfg_bytes), b'"size": %d' % len(arm_cfg_bytes), 1)
        arm = json.loads(arm_bytes)
        if arm["config"] != {"mediaType": amd["config"]["mediaType"], "digest": arm_cfg_digest,
                             "size": len(arm_cfg_bytes)} or arm["layers"] != amd["layers"]:
            raise SystemExit("could not derive the arm64 manifest from the amd64 one")
    amd_desc = {"mediaType": amd_mt, "digest": lay.write(amd_bytes), "size": len(amd_bytes),
                "platform": {"architecture": "amd64", "os": "linux"}}
    arm_desc = {"mediaType": amd_mt, "digest": lay.write(arm_bytes), "size": len(arm_bytes),
                "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}}
    manifests = [amd_desc, arm_desc, attestation(lay, amd_desc, "linux/amd64", amd_cfg)]
    if attest_all:
        manifests.append(attestation(lay, arm_desc, "linux/arm64/v8", amd_cfg))
    index = dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})
    index_digest = lay.write(index)
    top = {"mediaType": OCI_INDEX, "digest": index_digest, "size": len(index),
           "annotations": {REF_NAME: tag}}
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [top]}, f)
    return index_digest


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", default=DEFAULT_SRC, help="inline fixture layout (only read)")
    ap.add_argument("--out", required=True, help="directory to create")
    ap.add_argument("--tag", default="multi", help="ref.name of the index in index.json")
    ap.add_argument("--oci", action="store_true", help="OCI media types for the platform images")
    ap.add_argument("--attest-all", action="store_true",
                    help="an attestation manifest for arm64 as well")
    a = ap.parse_args(argv)
    if os.path.exists(a.out):
        raise SystemExit("make_multiplatform: %s already exists" % a.out)
    print(make(a.src, a.out, a.tag, a.oci, a.attest_all))


if __name__ == "__main__":
    main(sys.argv[1:])
