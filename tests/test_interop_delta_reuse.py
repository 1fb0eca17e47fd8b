"""A clone's pack built from what the store keeps: trees (and files) stored as splices go
as git deltas built from the splice (govc_db.interop.sendpack.TreeEntries, the writer's
splice path), read through ``get_bulk_spliced`` / ``iter_bulk`` (the PostgreSQL reads run
ahead on a helper thread). Checked with the real ``git``: strict index-pack, ``fsck
--strict``, the same ids as the source, on SQLite and PostgreSQL; in-process packs in
every format the writer has (ofs or ref deltas, chain bounds, no deltas)."""

from __future__ import annotations

import random
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from _http_server import serving_url
from dulwich.pack import apply_delta
from interop_git import all_objects, fsck, git, refs_of

from govc_db import Store
from govc_db.interop.packcache import PackCache
from govc_db.interop.packfmt import splice_delta
from govc_db.interop.sendpack import TreeEntries, write_fetch_pack
from govc_db.interop.smart_http import make_git_app
from govc_db.interop.walk import plan_fetch
from govc_db.objects import ObjectId
from govc_db.store.codec import Codec, _varint, parse_splice
from govc_db.store.ports import RawObject, Splice


def _source(root: Path, commits: int = 30) -> Path:
    """A git history whose directories change one entry per commit and whose files are
    edited in one place (the importer stores both as splices of their successors)."""
    repo = root / "src"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    lines = [f"line {i}\n" for i in range(60)]
    for k in range(commits):
        for d in ("a", "b/c"):
            (repo / d).mkdir(parents=True, exist_ok=True)
        (repo / "a" / f"f{k % 5}.txt").write_text(f"a {k}\n" * 3)
        lines[k % 60] = f"line {k % 60} edited {k}\n"
        (repo / "b" / "c" / "big.txt").write_text("".join(lines))
        (repo / f"top{k % 3}.md").write_text(f"top {k}\n")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"c{k}")
        if k == commits // 2:
            git(repo, "branch", "old")
            git(repo, "tag", "-a", "-m", "half\n", "v-half")
    return repo


def _imported(store: Store, root: Path) -> tuple[Path, Any]:
    src = _source(root)
    store.import_git("demo", src)
    return src, store.repository("demo")


def _unit(repo: Any) -> Any:
    return repo._store.backend.unit(repo._id, write=False, what="test")


def _spliced_trees(repo: Any, src: Path) -> int:
    """How many of the source's trees the store returns as splices."""
    out = git(src, "cat-file", "--batch-all-objects", "--batch-check=%(objectname) %(objecttype)")
    trees = [ln.split()[0] for ln in out.splitlines() if ln.split()[1] == "tree"]
    ids = [ObjectId(bytes.fromhex(h)) for h in trees]
    with _unit(repo) as unit:
        found = unit.objects.get_bulk_spliced(ids)
    assert set(found) == set(ids)
    return sum(isinstance(v, Splice) for v in found.values())


def test_a_clone_of_an_imported_history_sends_its_splices_as_deltas(
    store: Store, tmp_path: Path
) -> None:
    src, repo = _imported(store, tmp_path)
    assert _spliced_trees(repo, src) > 20  # what this test is about: trees kept as splices
    with serving_url(make_git_app(store, pack_cache=PackCache(0)), "/demo.git") as url:
        dest = tmp_path / "clone.git"
        git(tmp_path, "clone", "-q", "--bare", "-c", "transfer.fsckObjects=true", url, str(dest))
    assert fsck(dest)[0] == 0
    assert refs_of(dest) == refs_of(src)
    assert all_objects(dest) == all_objects(src)
    pack = next((dest / "objects" / "pack").glob("*.idx"))
    verify = git(dest, "verify-pack", "-v", str(pack))
    tree_deltas = [ln for ln in verify.splitlines() if " tree " in ln and len(ln.split()) >= 7]
    assert len(tree_deltas) > 20


def test_splices_whose_base_the_pack_lacks_are_sent_whole_then_fetched(
    store: Store, tmp_path: Path
) -> None:
    """The older branch's trees are splices of newer trees that branch cannot reach: the
    clone of it alone reads them whole; the fetch of main then adds the rest."""
    src, _ = _imported(store, tmp_path)
    with serving_url(make_git_app(store, pack_cache=PackCache(0)), "/demo.git") as url:
        dest = tmp_path / "old.git"
        git(
            tmp_path,
            "clone",
            "-q",
            "--bare",
            "--single-branch",
            "--branch",
            "old",
            "-c",
            "transfer.fsckObjects=true",
            url,
            str(dest),
        )
        assert fsck(dest)[0] == 0
        assert git(dest, "rev-parse", "old").strip() == git(src, "rev-parse", "old").strip()
        git(dest, "-c", "transfer.fsckObjects=true", "fetch", "-q", url, "main:main")
    assert fsck(dest)[0] == 0
    assert git(dest, "rev-parse", "main").strip() == git(src, "rev-parse", "main").strip()
    tag = git(src, "rev-parse", "v-half").strip()  # an annotated tag: auto-followed or not
    assert all_objects(dest) - {tag} == all_objects(src) - {tag}


@pytest.mark.parametrize(
    ("ofs", "deltas", "depth"),
    [(True, True, 50), (False, True, 50), (True, True, 1), (True, False, 50)],
)
def test_every_pack_format_is_accepted_by_git(
    store: Store, tmp_path: Path, ofs: bool, deltas: bool, depth: int
) -> None:
    src, repo = _imported(store, tmp_path)
    pack = tmp_path / "out.pack"
    with _unit(repo) as unit:
        wants = list(set(unit.refs.list_refs("refs/").values()))
        sink = TreeEntries(deltas=deltas, max_depth=depth, ofs=ofs)
        plan = plan_fetch(unit, wants, [], set(), {}, sink=sink)
        assert sink.count == len(plan.trees)
        with pack.open("wb") as f:
            write_fetch_pack(unit, plan, f.write, deltas=deltas, max_depth=depth, ofs=ofs)
    bare = tmp_path / "bare.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(bare, "index-pack", "--strict", "--stdin", stdin=pack.read_bytes())
    idx = next((bare / "objects" / "pack").glob("*.idx"))
    rows = [ln.split() for ln in git(bare, "verify-pack", "-v", str(idx)).splitlines()]
    entries = [r for r in rows if len(r) >= 5 and len(r[0]) == 40]
    assert {r[0] for r in entries} == all_objects(src)
    chains = [int(r[5]) for r in entries if len(r) >= 7]
    if deltas:
        assert chains and max(chains) <= depth
    else:
        assert not chains


def test_a_tree_section_too_large_is_left_to_the_writer(store: Store, tmp_path: Path) -> None:
    """The entries written while planning are bounded: past the bound the writer sends
    the trees left (and the pack is the same set of objects)."""
    src, repo = _imported(store, tmp_path)
    pack = tmp_path / "out.pack"
    with _unit(repo) as unit:
        wants = list(set(unit.refs.list_refs("refs/").values()))
        sink = TreeEntries(max_bytes=200)
        plan = plan_fetch(unit, wants, [], set(), {}, sink=sink)
        assert 0 < sink.count < len(plan.trees)
        with pack.open("wb") as f:
            write_fetch_pack(unit, plan, f.write)
    bare = tmp_path / "bare.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(bare, "index-pack", "--strict", "--stdin", stdin=pack.read_bytes())
    assert set(
        git(bare, "cat-file", "--batch-all-objects", "--batch-check=%(objectname)").split()
    ) == all_objects(src)


def test_iter_bulk_reads_what_get_bulk_reads(store: Store, tmp_path: Path) -> None:
    src, repo = _imported(store, tmp_path)
    ids = [ObjectId(bytes.fromhex(h)) for h in sorted(all_objects(src))]
    missing = ObjectId(b"\x01" * 20)
    chunks = [ids[:7], [*ids[7:40], missing], [], ids[40:], ids[:3]]
    with _unit(repo) as unit:
        for spliced in (False, True):
            with closing(unit.objects.iter_bulk(chunks, spliced=spliced)) as reads:
                got = list(reads)
            assert len(got) == len(chunks)
            for chunk, found in zip(chunks, got, strict=True):
                objects = unit.objects
                want = objects.get_bulk_spliced(chunk) if spliced else objects.get_bulk(chunk)
                assert found == want
                assert missing not in found
        # Left early: the read in flight is waited for, the unit goes on.
        reads = unit.objects.iter_bulk(chunks, spliced=True)
        next(reads)
        reads.close()
        assert unit.objects.get_bulk(ids[:2]).keys() == set(ids[:2])


def test_splices_rebuild_and_become_git_deltas() -> None:
    rng = random.Random(7)
    codec = Codec(optimizer=True)
    for _ in range(300):
        base = bytes(rng.randrange(256) for _ in range(rng.choice([20, 200, 3000, 40000])))
        cut = rng.randrange(len(base))
        insert = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 20, 47])))
        target = base[:cut] + insert + base[cut + rng.randrange(0, 30) :]
        coded = codec.encode_splice(target, b"\x02" * 20, base)
        if coded is None:
            continue
        oid, prefix, suffix, middle = parse_splice(coded[1])
        assert oid == b"\x02" * 20
        sp = Splice(b"blob", len(target), ObjectId(oid), prefix, suffix, middle)
        assert sp.apply(base) == target
        delta = splice_delta(len(base), len(target), prefix, suffix, middle)
        rebuilt = apply_delta(base, delta)
        assert (rebuilt if isinstance(rebuilt, bytes) else b"".join(rebuilt)) == target
    # Lengths of every varint width read the same way as the codec writes them.
    for p in (0, 127, 128, 16383, 16384, 1 << 21):
        for s in (0, 127, 128, 16383, 16384, 1 << 21):
            stored = b"\x03" * 20 + _varint(p) + _varint(s) + b"mid"
            assert parse_splice(stored) == (b"\x03" * 20, p, s, b"mid")


def test_a_splice_that_does_not_fit_its_base_is_refused() -> None:
    from govc_db.errors import GovcError

    sp = Splice(b"tree", 10, ObjectId(b"\x04" * 20), 5, 5, b"x")
    with pytest.raises(GovcError):
        sp.apply(b"short")
    assert RawObject(b"blob", b"x").data == b"x"
