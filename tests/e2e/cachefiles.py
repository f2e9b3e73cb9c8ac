"""Reading BuildKit cache layouts from their files: the independent route the
end-to-end tests compute their expectations by (Python's json and hashlib, no
project code). Shared by ls_test.py and mount_test.py."""

import hashlib
import json
import os

CACHECONFIG = "application/vnd.buildkit.cacheconfig.v0"
IMAGE_CONFIGS = ("application/vnd.oci.image.config.v1+json",
                 "application/vnd.docker.container.image.v1+json")
LOCAL_FIXTURES = ["local-max-gzip", "local-max-zstd", "local-max-estargz",
                  "local-max-uncompressed", "local-growth", "registry-imagemanifest",
                  "registry-max", "inline"]


def load_json(path):
    with open(path, "rb") as f:
        return json.load(f)


def blob_path(root, digest):
    alg, hexd = digest.split(":")
    return os.path.join(root, "blobs", alg, hexd)


def read_blob(root, digest):
    with open(blob_path(root, digest), "rb") as f:
        return f.read()


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def cache_manifest_info(root, digest):
    """(shape, config descriptor, layer descriptors) of a cache manifest blob, or None."""
    try:
        doc = json.loads(read_blob(root, digest))
    except (ValueError, OSError):
        return None
    if not isinstance(doc, dict) or doc.get("schemaVersion") != 2:
        return None
    if "config" in doc or "layers" in doc:
        cfg = doc.get("config") or {}
        layers = doc.get("layers") or []
        if cfg.get("mediaType") == CACHECONFIG:
            return "image-manifest", cfg, layers
        if cfg.get("mediaType") in IMAGE_CONFIGS:
            try:
                image = json.loads(read_blob(root, cfg["digest"]))
            except (ValueError, OSError):
                return None
            if "moby.buildkit.cache.v0" not in image:
                return None
            return "inline", cfg, layers
        return None
    entries = doc.get("manifests") or []
    cfgs = [d for d in entries if d.get("mediaType") == CACHECONFIG]
    if not cfgs:
        return None
    shape = ("manifest-list" if doc.get("mediaType") ==
             "application/vnd.docker.distribution.manifest.list.v2+json" else "index")
    return shape, cfgs[-1], [d for d in entries if d.get("mediaType") != CACHECONFIG]
