"""git's pack format as govc_db writes and reads it (govc_db.interop.packfmt), checked
against the real git: deltas git can apply, packs git indexes, git's packs read back."""

from __future__ import annotations

import random
import subprocess
import tempfile
import zlib
from pathlib import Path

import pytest
from interop_git import ENV, git

from govc_db.errors import InvalidInput
from govc_db.interop.packfmt import (
    OFS_DELTA,
    deflate,
    entry_header,
    iter_pack,
    make_delta,
    ofs_offset,
)
from govc_db.objects import TYPE_NUMBERS, hash_object


def _apply(base: bytes, delta: bytes) -> bytes:
    from dulwich.pack import apply_delta

    return b"".join(apply_delta(base, delta))


def _variants(rnd: random.Random) -> list[tuple[bytes, bytes]]:
    out = []
    for _ in range(300):
        base = rnd.randbytes(rnd.randrange(0, 5000))
        target = bytearray(base)
        for _ in range(rnd.randrange(0, 4)):
            at = rnd.randrange(0, len(target) + 1)
            target[at : at + rnd.randrange(0, 200)] = rnd.randbytes(rnd.randrange(0, 400))
        out.append((base, bytes(target)))
    big = rnd.randbytes(200_000)  # copies longer than one copy instruction (64 KiB)
    out.append((big, big[:70_000] + b"x" + big[70_000:]))
    out.append((b"", b"new"))
    out.append((b"old", b""))
    return out


def test_deltas_rebuild_their_target() -> None:
    for base, target in _variants(random.Random(7)):
        assert _apply(base, make_delta(base, target)) == target


def test_a_one_entry_change_is_a_small_delta() -> None:
    tree = b"".join(b"100644 f%04d\0" % i + bytes([i % 256]) * 20 for i in range(500))
    changed = tree[:5000] + b"\xaa" * 20 + tree[5020:]
    delta = make_delta(tree, changed)
    assert len(delta) < 40
    assert _apply(tree, delta) == changed


@pytest.mark.parametrize("size", [0, 1, 63, 64, 65, 1000, 16_383, 16_384, 100_000])
def test_deflate_round_trip(size: int) -> None:
    for data in ((b"abc" * size)[:size], random.Random(size).randbytes(size)):
        assert zlib.decompress(deflate(data)) == data


def _write_pack(path: Path, entries: list[bytes], count: int) -> None:
    import hashlib
    import struct

    body = b"PACK" + struct.pack(">II", 2, count) + b"".join(entries)
    path.write_bytes(body + hashlib.sha1(body).digest())


def test_git_indexes_a_pack_of_whole_objects_and_ofs_deltas(tmp_path: Path) -> None:
    rnd = random.Random(3)
    entries: list[bytes] = []
    expected = []
    seen: set[bytes] = set()
    for base, target in _variants(rnd)[:80]:
        if base in seen or target in seen or base == target:
            continue  # git refuses a pack holding an object twice
        seen |= {base, target}
        whole = entry_header(TYPE_NUMBERS[b"blob"], len(base)) + deflate(base)
        delta = make_delta(base, target)
        entries.append(whole)
        delta_entry = (
            entry_header(OFS_DELTA, len(delta))
            + ofs_offset(len(whole))  # the base is the entry just before
            + deflate(delta)
        )
        entries.append(delta_entry)
        expected += [hash_object(b"blob", base).hex(), hash_object(b"blob", target).hex()]
    pack = tmp_path / "t.pack"
    _write_pack(pack, entries, len(entries))
    git(tmp_path, "init", "-q", "--bare", "r.git")
    done = subprocess.run(
        ["git", "index-pack", "--strict", "-o", str(tmp_path / "t.idx"), str(pack)],
        cwd=tmp_path / "r.git",
        capture_output=True,
        env=ENV,
    )
    assert done.returncode == 0, done.stderr
    listed = git(tmp_path, "verify-pack", "-v", str(tmp_path / "t.idx"))
    assert set(expected) <= {line.split()[0] for line in listed.splitlines() if line[:1].isalnum()}
    with pack.open("rb") as f:
        assert {o.hex() for o, _, _ in iter_pack(f)} == set(expected)


def test_reads_gits_own_packs_with_deltas(tmp_path: Path) -> None:
    repo = tmp_path / "w"
    git(tmp_path, "init", "-q", str(repo))
    for i in range(30):
        (repo / "f.txt").write_text("".join(f"line {j} {i if j == i else ''}\n" for j in range(80)))
        (repo / f"n{i}.txt").write_text(f"{i}\n")
        git(repo, "add", "-A")
        git(repo, "-c", "user.name=A", "-c", "user.email=a@b", "commit", "-q", "-m", f"c{i}")
    for flags in ([], ["--no-reuse-delta", "--delta-base-offset"], ["--no-reuse-delta"]):
        pack = subprocess.run(
            ["git", "pack-objects", "--all", "--stdout", "-q", *flags],
            cwd=repo,
            input=b"",
            capture_output=True,
            env=ENV,
            check=True,
        ).stdout
        with tempfile.TemporaryFile() as f:
            f.write(pack)
            got = {oid.hex(): (t, raw) for oid, t, raw in iter_pack(f)}
        ids = git(repo, "rev-list", "--objects", "--all", "--no-object-names").split()
        assert set(got) == set(ids)
        for oid in ids[:40]:
            kind = git(repo, "cat-file", "-t", oid).strip().encode()
            raw = subprocess.run(
                ["git", "cat-file", kind.decode(), oid], cwd=repo, capture_output=True, check=True
            ).stdout
            assert got[oid] == (kind, raw)


def test_bad_packs_are_refused(tmp_path: Path) -> None:
    data = b"hello\n"
    good = [entry_header(TYPE_NUMBERS[b"blob"], len(data)) + deflate(data)]
    cases: dict[str, bytes] = {}
    _write_pack(tmp_path / "p", good, 1)
    ok = (tmp_path / "p").read_bytes()
    cases["truncated"] = ok[:-25]
    cases["checksum"] = ok[:-1] + bytes([ok[-1] ^ 1])
    cases["garbage"] = b"x" * 64
    _write_pack(tmp_path / "q", good, 2)
    cases["fewer objects"] = (tmp_path / "q").read_bytes()
    lying = [entry_header(TYPE_NUMBERS[b"blob"], len(data) + 5) + deflate(data)]
    _write_pack(tmp_path / "r", lying, 1)
    cases["size lies"] = (tmp_path / "r").read_bytes()
    _write_pack(tmp_path / "s", [entry_header(7, 5) + bytes(20) + deflate(b"\x00\x05")], 1)
    cases["unknown ref-delta base"] = (tmp_path / "s").read_bytes()
    for raw in cases.values():
        with tempfile.TemporaryFile() as f:
            f.write(raw)
            with pytest.raises(InvalidInput):
                list(iter_pack(f))
    with tempfile.TemporaryFile() as f:
        f.write(ok)
        assert [(t, r) for _, t, r in iter_pack(f)] == [(b"blob", data)]
