#!/usr/bin/env python3
"""End-to-end tests of what indexing a layer leaves behind, and of layers that cannot be
indexed whole. Real FUSE mounts, as root.

  1. Remount: a second mount with the same state dir lists and reads every layer from the
     SQLite index and the derived copies, with no decompression pass: status.json counts the
     passes (0), the layers listed from the index, and the bytes inflated for reads (0). The
     whole source tree (paths, modes, sizes, mtimes, link counts, inodes, every byte, the
     snapshots included) is the same as on the first mount.
  2. Derived copies that were damaged or removed are not served: the bytes still match
     (read from the blob through the seek points) and the log says why.
  3. An index row that cannot be used (bad seek points, another format) is indexed again.
  4. A truncated gzip layer keeps the entries that lie wholly before the damage (exact
     bytes), drops the rest, and names the problem in user.buildcachefs.error.
  5. A zstd bomb (a tar of a 2.5 GiB file of zeros, ~80 KiB compressed) is cut at the
     expansion bound: the entry before it stays readable, the folder says why, and the
     other layers of the mount are served as usual.

Expectations come from Python's tarfile, gzip, zlib and the zstd tool (layers_test's
models), never from the code under test.

Run by ctest: layer_index_test.py --bin BUILDCACHEFS --gen BUILDCACHEFS_GEN --shared DIR
"""

import gzip
import hashlib
import io
import json
import os
import sqlite3
import stat
import subprocess
import sys
import tarfile
import tempfile
import unittest
import zlib
from unittest import mock

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import layers_test as lt  # noqa: E402  (tar models, hand-made caches, layer comparison)
import e2e_cli  # noqa: E402
import mount_test as mt  # noqa: E402

ARGS = None
X = "user.buildcachefs."
MIB = 1 << 20


def status(mnt):
    with open(os.path.join(mnt, ".buildcachefs", "status.json"), "rb") as f:
        return json.load(f)["layers"]


def fingerprint(top):
    """Every path below top with its lstat facts and the sha256 of regular files."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            facts = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_size,
                     st.st_mtime_ns, st.st_nlink, st.st_ino, st.st_uid, st.st_gid, st.st_rdev)
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    facts += (hashlib.sha256(f.read()).hexdigest(),)
            elif stat.S_ISLNK(st.st_mode):
                facts += (os.readlink(path),)
            out[os.path.relpath(path, top)] = facts
    return out


def big_tar():
    """A layer over several 4 MiB derived blocks: random data, text and small files."""
    import random
    rng = random.Random(77)
    t = lt.TarBuilder()
    t.add("data/", "d")
    for i in range(40):
        t.add("data/small-%02d.txt" % i, data=b"small file %d\n" % i * (i + 1))
    t.add("data/random.bin", data=rng.randbytes(9 * MIB + 321))
    t.add("data/text.txt", data=b"".join(b"row %07d\n" % i for i in range(400000)))
    return t.bytes()


class Base(lt.Base):
    def hand_made(self):
        rich, big = lt.rich_tar(), big_tar()
        self.layers = [
            (gzip.compress(rich, compresslevel=6, mtime=0), lt.LAYER_GZIP),
            (lt.zstd(big), lt.LAYER_ZSTD),  # one frame: only a derived copy reads it fast
            (lt.zstd_frames(rich, 3 * MIB), lt.LAYER_ZSTD),
            (big, lt.LAYER_TAR),
        ]
        root = os.path.join(self.tmp, "cache")
        self.digests = lt.write_layout(root, self.layers)
        return root

    def check_layers(self, mnt):
        for (blob, media), digest in zip(self.layers, self.digests):
            with self.subTest(layer=digest[:19], media=media):
                paths, _ = lt.tar_model(lt.decompress(blob), lt.BLOB_MTIME_NS)
                top = self.layer_dir(mnt, "cache", digest)
                self.assertEqual(self.compare_layer(top, paths), [])

    def first_mount(self, root, state):
        mnt = self.mount([self.local(root)], state=state)
        self.check_layers(mnt)
        fingerprint(os.path.join(mnt, "cache"))  # merges the snapshots
        before = fingerprint(os.path.join(mnt, "cache"))
        got = status(mnt)
        self.assertEqual(got["indexing_passes"], len(self.layers), got)
        self.assertEqual(got["loaded_from_index"], 0, got)
        self.unmount(mnt)
        return before

    def derived_files(self, state):
        d = os.path.join(state, "derived", "sha256")
        return sorted(os.path.join(d, n) for n in os.listdir(d))


class Remount(Base):
    def test_a_remount_lists_and_reads_every_layer_without_a_decompression_pass(self):
        root = self.hand_made()
        state = tempfile.mkdtemp(prefix="state-", dir=self.tmp)
        before = self.first_mount(root, state)
        # One derived copy per compressed layer, named by the layer digest, holding
        # exactly the uncompressed tar up to its end marker (or all of it).
        derived = self.derived_files(state)
        compressed = [d for (b, m), d in zip(self.layers, self.digests) if m != lt.LAYER_TAR]
        self.assertEqual([os.path.basename(p) for p in derived],
                         sorted(d.split(":")[1] for d in compressed))
        for (blob, media), digest in zip(self.layers, self.digests):
            if media == lt.LAYER_TAR:
                continue
            with open(os.path.join(state, "derived", "sha256", digest.split(":")[1]), "rb") as f:
                copy = f.read()
            raw = lt.decompress(blob)
            self.assertTrue(raw.startswith(copy) and len(copy) > len(raw) - 10240,
                            "derived copy of %s is not the tar stream" % digest)

        mnt = self.mount([self.local(root)], state=state)
        fingerprint(os.path.join(mnt, "cache"))  # folders say nlink 1 until listed (TREE.md)
        after = fingerprint(os.path.join(mnt, "cache"))
        got = status(mnt)
        self.assertEqual(got["indexing_passes"], 0, got)
        self.assertEqual(got["loaded_from_index"], len(self.layers), got)
        self.assertEqual(got["bytes_inflated_for_reads"], 0, got)
        total = sum(os.path.getsize(p) for p in derived)
        self.assertGreater(got["derived_bytes_checked"], 0, got)
        self.assertLessEqual(got["derived_bytes_checked"], total, got)
        self.assertEqual(set(after), set(before))
        for rel in sorted(before):
            self.assertEqual(after[rel], before[rel], rel)
        self.assertTrue(any("/snapshots/" in "/" + rel for rel in before))
        self.check_layers(mnt)

    def test_damaged_or_missing_derived_copies_are_not_served(self):
        root = self.hand_made()
        state = tempfile.mkdtemp(prefix="state-", dir=self.tmp)
        self.first_mount(root, state)
        derived = self.derived_files(state)
        self.assertEqual(len(derived), 3)
        # Flip one byte in the middle of the first, truncate the second, remove the third.
        with open(derived[0], "r+b") as f:
            f.seek(os.path.getsize(derived[0]) // 2)
            b = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([b[0] ^ 0x40]))
        os.truncate(derived[1], os.path.getsize(derived[1]) - 1)
        os.unlink(derived[2])

        mnt = self.mount([self.local(root)], state=state)
        self.check_layers(mnt)
        got = status(mnt)
        self.assertEqual(got["indexing_passes"], 0, got)
        self.assertEqual(got["loaded_from_index"], len(self.layers), got)
        self.assertGreater(got["bytes_inflated_for_reads"], 0, got)
        with open(self.logs[mnt], "rb") as f:
            log = f.read().decode(errors="replace")
        self.assertIn("derived copy unusable (block ", log)

    def test_an_unusable_index_row_is_indexed_again(self):
        root = self.hand_made()
        state = tempfile.mkdtemp(prefix="state-", dir=self.tmp)
        self.first_mount(root, state)
        db = sqlite3.connect(os.path.join(state, "index.db"))
        with db:
            db.execute("UPDATE layer_indexes SET seek_index = x'00' WHERE digest = ?",
                       (self.digests[0],))
            db.execute("UPDATE layer_indexes SET format = 999 WHERE digest = ?",
                       (self.digests[1],))
        db.close()
        mnt = self.mount([self.local(root)], state=state)
        self.check_layers(mnt)
        got = status(mnt)
        self.assertEqual(got["indexing_passes"], 2, got)
        self.assertEqual(got["loaded_from_index"], 2, got)


class Damaged(lt.Base):
    def one_layer(self, blob, media, extra=()):
        root = os.path.join(self.tmp, "cache")
        digests = lt.write_layout(root, [(blob, media)] + list(extra))
        return root, digests

    def test_a_truncated_gzip_layer_keeps_the_entries_before_the_damage(self):
        import random
        rng = random.Random(5)
        t = lt.TarBuilder()
        t.add("a.txt", data=b"first\n")
        t.add("dir/", "d")
        t.add("dir/b.bin", data=rng.randbytes(2 * MIB))
        t.add("dir/c.bin", data=rng.randbytes(2 * MIB))
        t.add("d.txt", data=b"last\n")
        raw = t.bytes()
        full = gzip.compress(raw, mtime=0)
        blob = full[:len(full) * 3 // 4]  # inside c.bin
        # What any inflater gets out of the truncated stream.
        prefix = zlib.decompressobj(16 + 15).decompress(blob)
        self.assertTrue(3 * MIB < len(prefix) < 4 * MIB)
        # The uncompressed-digest annotation can only describe what the blob holds.
        with mock.patch.object(lt, "decompress", lambda b: zlib.decompressobj(31).decompress(b)):
            root, digests = self.one_layer(blob, lt.LAYER_GZIP)
        mnt = self.mount([self.local(root)])
        top = self.layer_dir(mnt, "cache", digests[0])
        paths, _ = lt.tar_model(raw, lt.BLOB_MTIME_NS)
        members = {lt.clean(m.name): m for m in tarfile.open(fileobj=io.BytesIO(raw))}
        want = {p: n for p, n in paths.items()
                if p in members and members[p].offset_data + members[p].size <= len(prefix)}
        self.assertEqual(sorted(want), ["a.txt", "dir", "dir/b.bin"])
        self.assertEqual(self.compare_layer(top, want), [])
        err = os.getxattr(top, X + "error").decode()
        self.assertIn("truncated", err)
        self.assertIn(digests[0], err)

    def test_a_compression_bomb_is_cut_and_what_precedes_it_stays_readable(self):
        bomb_size = 5 * (1 << 29)  # 2.5 GiB of zeros
        header = tarfile.TarInfo("bomb")
        header.size = bomb_size
        header.mtime = 1700000000
        small = lt.TarBuilder()
        small.add("a.txt", data=b"before the bomb\n")
        head = small.bytes()[:1024]  # a.txt's header and data block, no end marker
        zs = subprocess.Popen(["zstd", "-c", "-q", "-3"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
        out = []
        reader = __import__("threading").Thread(target=lambda: out.append(zs.stdout.read()))
        reader.start()
        zs.stdin.write(head + header.tobuf(tarfile.PAX_FORMAT))
        zeros = bytes(64 * MIB)
        for _ in range(bomb_size // len(zeros)):
            zs.stdin.write(zeros)
        tail = lt.TarBuilder()
        tail.add("z.txt", data=b"after the bomb\n")
        zs.stdin.write(tail.bytes())
        zs.stdin.close()
        reader.join()
        zs.stdout.close()
        self.assertEqual(zs.wait(), 0)
        blob = out[0]
        self.assertLess(len(blob), 1 * MIB)
        # A well-formed neighbour layer in the same cache.
        ok = lt.TarBuilder()
        ok.add("fine.txt", data=b"a normal layer\n")
        ok_blob = gzip.compress(ok.bytes(), mtime=0)
        root, digests = self.one_layer(blob, lt.LAYER_ZSTD, [(ok_blob, lt.LAYER_GZIP)])
        mnt = self.mount([self.local(root)])
        top = self.layer_dir(mnt, "cache", digests[0])
        self.assertEqual(sorted(os.listdir(top)), ["a.txt"])
        with open(os.path.join(top, "a.txt"), "rb") as f:
            self.assertEqual(f.read(), b"before the bomb\n")
        err = os.getxattr(top, X + "error").decode()
        self.assertIn("compression bomb", err)
        self.assertIn("grows past %d bytes" % (len(blob) * 1100 + (1 << 30)), err)
        other = self.layer_dir(mnt, "cache", digests[1])
        with open(os.path.join(other, "fine.txt"), "rb") as f:
            self.assertEqual(f.read(), b"a normal layer\n")


def setUpModule():
    mt.check_prerequisites("layer index tests", ARGS, ("zstd", "ls", "find"))
    mt.ARGS = ARGS
    lt.ARGS = ARGS


if __name__ == "__main__":
    e2e_cli.main()
