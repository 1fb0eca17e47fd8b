"""The bulk write paths of import and push: trees split from the version they are diffed
against, commit index fields read by one regex, objects stored against the delta bases a
pack (or the path a version replaces) names, and a pushed history with large directories
indexed as git sees it; on SQLite and PostgreSQL, with the real git."""

from __future__ import annotations

import itertools
import random
import subprocess
import tempfile
from pathlib import Path

import pytest
import sqlalchemy as sa
from _http_server import serving
from interop_git import ENV, fsck, git

from govc_db import Signature, Store
from govc_db.errors import InvalidInput
from govc_db.interop.indexer import TreeSource, index_commit
from govc_db.interop.packfmt import iter_pack_deltas
from govc_db.interop.smart_http import make_git_app
from govc_db.objects import Commit, ObjectId, hash_object
from govc_db.objects.lenient import parse_lenient
from govc_db.store.codec import ENC_SPLICE, common_ends

SIG = Signature("Ada", "ada@example.com", 1_700_000_000, 60)


# -- trees split from their previous version ----------------------------------------------
def _tree(entries: dict[bytes, tuple[bytes, bytes]]) -> bytes:
    """A raw tree of ``name -> (mode text, 20-byte id)``, sorted as git sorts."""

    def key(name: bytes) -> bytes:
        return name + b"/" if entries[name][0] == b"40000" else name

    return b"".join(
        m + b" " + n + b"\0" + o for n in sorted(entries, key=key) for m, o in [entries[n]]
    )


def _reference(
    trees: dict[ObjectId, bytes], old: ObjectId | None, new: ObjectId | None
) -> set[str]:
    """Changed paths by splitting both trees whole (what the indexer must report)."""

    def split(oid: ObjectId | None) -> dict[bytes, tuple[bytes, bytes]]:
        out: dict[bytes, tuple[bytes, bytes]] = {}
        raw = trees[oid] if oid is not None else b""
        i = 0
        while i < len(raw):
            sp = raw.index(b" ", i)
            nul = raw.index(b"\0", sp)
            out[raw[sp + 1 : nul]] = (raw[i:sp], raw[nul + 1 : nul + 21])
            i = nul + 21
        return out

    found: set[str] = set()

    def walk(prefix: bytes, a_id: ObjectId | None, b_id: ObjectId | None) -> None:
        a, b = split(a_id), split(b_id)
        for name in a.keys() | b.keys():
            x, y = a.get(name), b.get(name)
            if x == y:
                continue
            x_dir = x is not None and x[0] == b"40000"
            y_dir = y is not None and y[0] == b"40000"
            if x_dir or y_dir:
                walk(
                    prefix + name + b"/",
                    ObjectId(x[1]) if x is not None and x_dir else None,
                    ObjectId(y[1]) if y is not None and y_dir else None,
                )
            if (x is not None and not x_dir) or (y is not None and not y_dir):
                found.add((prefix + name).decode())

    walk(b"", old, new)
    return found


def _edit_sequence(rnd: random.Random) -> tuple[dict[ObjectId, bytes], list[ObjectId]]:
    """Versions of a two-level directory, each a few random edits on the last."""
    trees: dict[ObjectId, bytes] = {}

    def put(entries: dict[bytes, tuple[bytes, bytes]]) -> ObjectId:
        raw = _tree(entries)
        oid = hash_object(b"tree", raw)
        trees[oid] = raw
        return oid

    sub: dict[bytes, tuple[bytes, bytes]] = {
        b"s%03d" % i: (b"100644", rnd.randbytes(20)) for i in range(rnd.randrange(1, 40))
    }
    top: dict[bytes, tuple[bytes, bytes]] = {
        (b"f %04d.txt" % i if i % 7 else b"f%04d" % i): (
            b"100755" if i % 5 == 0 else b"100644",
            rnd.randbytes(20),
        )
        for i in range(rnd.randrange(0, 400))
    }
    top[b"sub"] = (b"40000", put(sub))
    versions = [put(top)]
    for _ in range(25):
        for _ in range(rnd.randrange(1, 4)):
            op = rnd.randrange(6)
            names = sorted(top)
            name = rnd.choice(names)
            if op == 0:  # a file edited
                if top[name][0] != b"40000":
                    top[name] = (top[name][0], rnd.randbytes(20))
            elif op == 1 and name != b"sub":  # a file removed
                del top[name]
            elif op == 2:  # a file added, anywhere in the order
                top[b"n%06d" % rnd.randrange(10**6)] = (b"100644", rnd.randbytes(20))
            elif op == 3:  # a mode change
                if top[name][0] == b"100644":
                    top[name] = (b"100755", top[name][1])
            elif op == 4:  # the subdirectory edited
                sub[rnd.choice(sorted(sub))] = (b"100644", rnd.randbytes(20))
                top[b"sub"] = (b"40000", put(sub))
            elif name != b"sub":  # a file replaced by a directory
                top[name] = (b"40000", put({b"inner": (b"100644", rnd.randbytes(20))}))
        versions.append(put(top))
    return trees, versions


def test_derived_splits_report_what_whole_splits_report(store: Store) -> None:
    repo = store.create_repository("t")
    with store.backend.unit(repo._id) as unit:
        for seed in range(40):
            trees, versions = _edit_sequence(random.Random(seed))
            derived = TreeSource(trees, unit.objects)  # each version split from the last
            for old, new in itertools.pairwise(versions):
                assert set(derived.changed(old, new)) == _reference(trees, old, new)
            whole = TreeSource(trees, unit.objects)  # both sides split already
            for t in versions:
                whole.entries(t)
            for old, new in zip(versions, versions[3:], strict=False):
                assert set(whole.changed(old, new)) == _reference(trees, old, new)
            assert set(whole.changed(None, versions[-1])) == _reference(trees, None, versions[-1])


def test_a_corrupt_tree_is_invalid_input_whole_or_derived(store: Store) -> None:
    repo = store.create_repository("t")
    good = _tree({b"a": (b"100644", b"\x01" * 20), b"b": (b"100644", b"\x02" * 20)})
    bad = good[:-25] + b"\0\0"  # the last entry cut short
    trees = {hash_object(b"tree", good): good, hash_object(b"tree", bad): bad}
    g, b = list(trees)
    with store.backend.unit(repo._id) as unit:
        with pytest.raises(InvalidInput):
            TreeSource(trees, unit.objects).changed(g, b)
        with pytest.raises(InvalidInput):
            TreeSource(trees, unit.objects).entries(b)


# -- commit index fields -----------------------------------------------------------------
_TREE = b"tree " + b"a" * 40 + b"\n"
_PARENTS = b"parent " + b"b" * 40 + b"\nparent " + b"c" * 40 + b"\n"
_ODD_COMMITS = [
    _TREE + b"author A <a@b> 1 +0000\ncommitter C <c@d> 2 -0130\n\nm",
    _TREE + _PARENTS + b"author A <a@b> 17 +0100\ncommitter C <c@d> 18 +0100\n\n",
    _TREE + b"author <a@b> 5 +0000\ncommitter  C  <c@d> 6 +9999\n\nempty name, odd zone",
    _TREE + b"author A <a@b> 007 +0000\ncommitter C <c@d> 8 +0000\n\nzero-padded time",
    _TREE + b"author A <a@b> 99999999999999999999 +0000\ncommitter C <c@d> 1 +0000\n\nhuge",
    _TREE + b"author A <a@b> -5 +0000\ncommitter C <c@d> 1 +0000\n\nnegative",
    _TREE + b"author A <a@b> 1 +0000\ncommitter C <c@d> 2 +0000\n continued\n\nm",
    _TREE + b"author A <a@b> 1 +0000\ncommitter C <c@d> 2 +0000\nencoding latin1\n\n\xe9",
    _TREE + b"author A <a@b> 1 +0000\ncommitter C <c@d> 2 +0000\ngpgsig -BEGIN\n line\n -END\n\nm",
    _TREE + b"author A <a@b> 1 +0000\ncommitter C <c@d> 2 +0000\nbadheader\n\nm",
    _TREE + b"author A <a@b> 1 +0000\ncommitter C <c@d> 2 +0000\n no header before\n\nm",
    _TREE + b"author A <a@b> 1 +0000\ncommitter C <c@d> 2 +0000\nno blank line",
    b"tree " + b"A" * 40 + b"\nauthor A <a@b> 1 +0000\ncommitter C <c@d> 2 +0000\n\nupper hex",
    _TREE + b"committer C <c@d> 2 +0000\nauthor A <a@b> 1 +0000\n\nswapped",
    _TREE + b"author A <a@b> 1 +0000\n\nno committer",
    b"parent " + b"b" * 40 + b"\n" + _TREE + b"author A <a@b> 1 +0000\n\nno tree first",
]


@pytest.mark.parametrize("raw", _ODD_COMMITS)
def test_index_fields_are_what_the_lenient_parser_reads(raw: bytes) -> None:
    try:
        full = parse_lenient(b"commit", raw)
    except InvalidInput:
        with pytest.raises(InvalidInput):
            index_commit(raw)
        return
    assert isinstance(full, Commit)
    got = index_commit(raw)
    assert (got.tree, got.parents, got.author_time, got.committer_time) == (
        full.tree,
        full.parents,
        full.author.time,
        full.committer.time,
    )


# -- common ends, delta bases of a pack, put_bulk with hints ------------------------------
def test_common_ends_equal_the_byte_by_byte_answer() -> None:
    rnd = random.Random(3)
    for _ in range(3000):
        base = rnd.randbytes(rnd.choice([0, 3, 600, 1100, 5000, 70_000]))
        data = bytearray(base)
        for _ in range(rnd.randrange(0, 3)):
            at = rnd.randrange(len(data) + 1)
            data[at : at + rnd.randrange(0, 900)] = rnd.randbytes(rnd.randrange(0, 900))
        n = min(len(base), len(data))
        prefix = next((i for i in range(n) if base[i] != data[i]), n)
        m = n - prefix
        suffix = next((i for i in range(m) if base[-1 - i] != data[-1 - i]), m)
        assert common_ends(base, bytes(data)) == (prefix, suffix)


def test_a_packs_delta_bases_are_named_with_their_content(tmp_path: Path) -> None:
    repo = tmp_path / "w"
    git(tmp_path, "init", "-q", str(repo))
    for i in range(20):
        (repo / "f.txt").write_text("".join(f"line {j} {i if j == i else ''}\n" for j in range(80)))
        git(repo, "add", "-A")
        git(repo, "-c", "user.name=A", "-c", "user.email=a@b", "commit", "-q", "-m", f"c{i}")
    for flags in (["--delta-base-offset"], []):
        pack = subprocess.run(
            ["git", "pack-objects", "--all", "--stdout", "-q", "--no-reuse-delta", *flags],
            cwd=repo,
            input=b"",
            capture_output=True,
            env=ENV,
            check=True,
        ).stdout
        with tempfile.TemporaryFile() as f:
            f.write(pack)
            got = list(iter_pack_deltas(f))
        content = {oid: (t, raw) for oid, t, raw, _, _ in got}
        deltas = [(oid, t, b, braw) for oid, t, _, b, braw in got if b is not None]
        assert len(deltas) >= 10
        for _oid, kind, base, base_raw in deltas:
            assert content[base] == (kind, base_raw)


def _chain(n: int) -> list[tuple[bytes, bytes]]:
    entries = {b"f%04d" % i: (b"100644", bytes([i % 251]) * 20) for i in range(300)}
    out = []
    for k in range(n):
        entries[b"f%04d" % (k * 7 % 300)] = (b"100644", hash_object(b"blob", b"%d" % k))
        out.append((b"tree", _tree(entries)))
    return out


def test_put_bulk_keeps_hinted_objects_as_splices_within_the_depth_bound(store: Store) -> None:
    repo = store.create_repository("t")
    rows = _chain(40)
    ids = [hash_object(t, raw) for t, raw in rows]
    bases: list[tuple[ObjectId, bytes] | None] = [None] + [
        (ids[i - 1], rows[i - 1][1]) for i in range(1, len(rows))
    ]
    before = store.backend.codec.written.get_stats()["delta_objects"]

    def write(u: object) -> list[ObjectId]:
        return u.objects.put_bulk(rows, bases=bases, ids=ids)  # type: ignore[attr-defined,no-any-return]

    assert repo._run("t", write, write=True) == ids
    stats = store.backend.codec.written.get_stats()
    max_depth = store.settings.delta_max_depth
    # Every object but the first of each chain of max_depth + 1 is a delta.
    assert stats["delta_objects"] - before == len(rows) - -(-len(rows) // (max_depth + 1))
    assert stats["max_delta_depth"] <= max_depth
    with store.backend.unit(repo._id) as unit:
        got = unit.objects.get_many(ids)
        rows_read = unit.conn.execute(
            sa.text("SELECT oid, encoding FROM govc_objects WHERE repo_id = :r"), {"r": repo._id}
        ).fetchall()
        encodings = {bytes(r[0]): int(r[1]) for r in rows_read}
    assert encodings[ids[1]] == ENC_SPLICE
    for oid, (kind, raw) in zip(ids, rows, strict=True):
        assert (got[oid].type, got[oid].data) == (kind, raw)


# -- a pushed history with large directories ----------------------------------------------
def test_pushed_history_is_indexed_as_git_sees_it(store: Store, tmp_path: Path) -> None:
    store.create_repository("big")
    work = tmp_path / "c"
    git(tmp_path, "init", "-q", "-b", "main", str(work))
    rnd = random.Random(5)
    for i in range(200):
        (work / "big").mkdir(exist_ok=True)
        (work / "big" / f"f{i % 120:03d}.txt").write_text(f"{i}\n")
        if i % 9 == 3:
            (work / "big" / f"f{rnd.randrange(120):03d}.txt").unlink(missing_ok=True)
        if i % 13 == 5:
            (work / "nested" / f"d{i % 4}").mkdir(parents=True, exist_ok=True)
            (work / "nested" / f"d{i % 4}" / "x").write_text(f"{i}\n")
        git(work, "add", "-A")
        git(
            work,
            "-c",
            "user.name=A",
            "-c",
            "user.email=a@b",
            "commit",
            "-q",
            "-m",
            f"c{i}",
            "--allow-empty",
        )
        if i == 100:
            git(work, "checkout", "-q", "-b", "side", "HEAD~5")
            (work / "big" / "side.txt").write_text("side\n")
            git(work, "add", "-A")
            git(work, "-c", "user.name=A", "-c", "user.email=a@b", "commit", "-q", "-m", "side")
            git(work, "checkout", "-q", "main")
            git(
                work,
                "-c",
                "user.name=A",
                "-c",
                "user.email=a@b",
                "merge",
                "-q",
                "--no-edit",
                "side",
            )
    with serving(make_git_app(store, allow_push=True)) as (base, _server):
        git(work, "push", "-q", f"{base}/big.git", "main")
        repo = store.repository("big")
        assert repo.resolve("main") == git(work, "rev-parse", "main").strip()
        assert repo.verify().ok
        for path in ("big/f007.txt", "big/side.txt", "nested/d1/x", "nested", "big"):
            ours = [c.oid for c in repo.log("main", path=path)]
            theirs = git(work, "log", "--format=%H", "main", "--", path).split()
            assert ours == theirs, path
        dest = tmp_path / "export.git"
        repo.export_git(dest)
        assert fsck(dest)[0] == 0


# -- git cat-file output read in chunks ----------------------------------------------------
def test_batch_output_parses_whatever_the_chunk_boundaries() -> None:
    from govc_db.interop.importer import _batch_objects

    rnd = random.Random(11)
    objects = [
        (b"%040x" % i, rnd.choice([b"blob", b"tree"]), rnd.randbytes(rnd.choice([0, 5, 3000])), p)
        for i, p in enumerate([b"", b"a b/c", b"x"] * 30)
    ]
    stream = b"".join(
        o + b" " + t + b" " + b"%d" % len(r) + b" " + p + b"\n" + r + b"\n"
        for o, t, r, p in objects
    )
    for size in (1, 7, 100, 4096, len(stream)):
        chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
        assert list(_batch_objects(chunks)) == objects
    with pytest.raises(InvalidInput):
        list(_batch_objects([stream[:-3]]))
    with pytest.raises(InvalidInput):
        list(_batch_objects([b"not a header\n"]))
