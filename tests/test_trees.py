"""Tree reading (tree/walk/read/open/exists) and building, checked against real git.

Runs on both backends through the public Repository API; the batching and
"only the changed path" properties are checked with a counting spy around the
real ObjectStore of a unit (no database mock).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest
from _export import export_repository, git
from _git import GitRepo
from _spies import CountingObjects

from govc_db import File, GovcError, InvalidInput, NotFound, Repository, Signature, Store
from govc_db.core.trees import (
    EMPTY_TREE,
    build_tree,
    find_entry,
    list_tree,
    load_tree,
    walk_files,
)
from govc_db.objects import ObjectId, hex_to_oid

SIG = Signature("Ada Lovelace", "ada@example.com", 1700000000, 120)
EMPTY_TREE_HEX = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"

# Names chosen to sort around "a/" the way git sorts trees: "a-b" < "a.txt" < "a/" < "a0".
FILES: dict[str, bytes | File] = {
    "a.txt": b"a text\n",
    "a-b": b"dash\n",
    "a/x": b"x in a\n",
    "a/b/c": b"deep\n",
    "a0": b"zero\n",
    "Z-upper": b"uppercase sorts first\n",
    "dir/sub/file.bin": bytes(range(256)) * 3,
    "empty": b"",
    "bin/run": File(b"#!/bin/sh\necho hi\n", mode=0o100755),
    "link": File(b"a.txt", mode=0o120000),
    "dirlink": File(b"a", mode=0o120000),
    "\u00e9/\u00fc.txt": "\u00fc\n".encode(),
    "\u65e5\u672c\u8a9e/\u30d5\u30a1\u30a4\u30eb.md": "# \u65e5\u672c\n".encode(),
    "with space/x y": b"spaces\n",
}


def _data(value: bytes | File) -> bytes:
    data = value.data if isinstance(value, File) else value
    assert isinstance(data, bytes)
    return data


def _mode(value: bytes | File) -> int:
    return value.mode if isinstance(value, File) else 0o100644


def _ls_tree(export: Path, *args: str) -> list[tuple[int, str, str, str]]:
    """``git ls-tree -z`` rows as (mode, type, id, path)."""
    rows = []
    for record in git(export, "ls-tree", "-z", *args).split(b"\0"):
        if not record:
            continue
        meta, _, path = record.partition(b"\t")
        mode, kind, oid = meta.decode().split(" ")
        rows.append((int(mode, 8), kind, oid, path.decode("utf-8", "surrogateescape")))
    return rows


@pytest.fixture
def repo(store: Store) -> Repository:
    return store.create_repository("trees")


@pytest.fixture
def filled(repo: Repository) -> tuple[Repository, str]:
    return repo, repo.commit("main", FILES, message="files\n", author=SIG)


# -- listing and walking ------------------------------------------------------------------


def test_tree_and_walk_match_git_ls_tree(filled: tuple[Repository, str], tmp_path: Path) -> None:
    repo, oid = filled
    export = export_repository(repo, tmp_path / "export.git")

    root = repo.tree(oid)
    assert [(e.mode, e.type, e.oid, e.path) for e in root] == _ls_tree(export, oid)
    assert [e.name for e in root][:6] == ["Z-upper", "a-b", "a.txt", "a", "a0", "bin"]
    assert all(e.name == e.path for e in root)

    sub = repo.tree(oid, "a")
    assert [(e.mode, e.type, e.oid, e.path) for e in sub] == _ls_tree(export, oid, "a/")
    assert [(e.name, e.path) for e in sub] == [("b", "a/b"), ("x", "a/x")]

    walked = list(repo.walk(oid))
    assert [(e.mode, e.type, e.oid, e.path) for e in walked] == _ls_tree(export, "-r", oid)
    assert [e.path for e in walked] == sorted(FILES, key=lambda p: p.encode())
    assert [e.name for e in walked] == [p.rsplit("/", 1)[-1] for p in sorted(FILES, key=str.encode)]

    below = [(e.mode, e.type, e.oid, e.path) for e in repo.walk(oid, "a")]
    assert below == _ls_tree(export, "-r", oid, "a")
    assert [e.path for e in repo.walk(oid, "\u00e9")] == ["\u00e9/\u00fc.txt"]


def test_modes_types_and_contents(filled: tuple[Repository, str]) -> None:
    repo, oid = filled
    entries = {e.path: e for e in repo.walk(oid)}
    for path, value in FILES.items():
        assert entries[path].mode == _mode(value)
        assert entries[path].type == "blob"
        assert repo.read(oid, path) == _data(value)
        with repo.open(oid, path) as fh:
            assert fh.read() == _data(value)
    # A symlink's content is its target, as git stores it.
    assert repo.read(oid, "link") == b"a.txt"
    assert repo.read(oid, "empty") == b""
    assert entries["empty"].oid == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    dirs = {e.path: e for e in repo.tree(oid)}
    assert dirs["a"].type == "tree" and dirs["a"].mode == 0o40000


def test_exists(filled: tuple[Repository, str]) -> None:
    repo, oid = filled
    assert repo.exists(oid, "a")  # a directory
    assert repo.exists(oid, "a/b/c")
    assert repo.exists(oid, "link")
    assert repo.exists(oid, "\u00e9/\u00fc.txt")
    assert not repo.exists(oid, "a/y")
    assert not repo.exists(oid, "nope")
    assert not repo.exists(oid, "a.txt/x")  # below a file
    assert not repo.exists(oid, "A.TXT")  # names are case-sensitive


def test_reading_errors(filled: tuple[Repository, str]) -> None:
    repo, oid = filled
    with pytest.raises(NotFound):
        repo.read(oid, "missing")
    with pytest.raises(NotFound):
        repo.read(oid, "a.txt/x")
    with pytest.raises(InvalidInput):
        repo.read(oid, "a")  # a directory
    with pytest.raises(NotFound):
        repo.open(oid, "a/missing")
    with pytest.raises(NotFound):
        repo.tree(oid, "missing")
    with pytest.raises(NotFound):
        repo.tree(oid, "a.txt")  # a file is not a directory
    with pytest.raises(NotFound):
        repo.walk(oid, "missing")
    for bad in ("", "/a", "a/", "a//x", "a/../x", "./a", ".git/x", "a\0b"):
        with pytest.raises(InvalidInput):
            repo.read(oid, bad)
        with pytest.raises(InvalidInput):
            repo.exists(oid, bad)
    with pytest.raises(InvalidInput):
        repo.tree(oid, "/a")


def test_walk_of_a_file_yields_that_file(filled: tuple[Repository, str]) -> None:
    repo, oid = filled
    [entry] = list(repo.walk(oid, "a/b/c"))
    assert (entry.path, entry.name, entry.type) == ("a/b/c", "c", "blob")
    [link] = list(repo.walk(oid, "link"))
    assert link.mode == 0o120000


def test_file_and_directory_swap_sorts_like_git(
    filled: tuple[Repository, str], tmp_path: Path
) -> None:
    repo, first = filled
    # Deleting every file below "a" empties the directory, so "a" may become a file.
    second = repo.commit(
        "main", {"a/x": None, "a/b/c": None, "a": b"now a file\n"}, message="swap\n", author=SIG
    )
    names = [e.name for e in repo.tree(second)]
    assert names[:5] == ["Z-upper", "a", "a-b", "a.txt", "a0"]
    assert repo.read(second, "a") == b"now a file\n"
    assert not repo.exists(second, "a/x")
    export = export_repository(repo, tmp_path / "export.git")
    assert [(e.mode, e.type, e.oid, e.path) for e in repo.walk(second)] == _ls_tree(
        export, "-r", second
    )
    # And back: the file "a" deleted, a directory "a" written in the same change set.
    third = repo.commit("main", {"a": None, "a/new": b"n\n"}, message="back\n", author=SIG)
    assert [e.path for e in repo.tree(third, "a")] == ["a/new"]
    assert repo.read(first, "a/x") == b"x in a\n"  # history unchanged


# -- ids against git ----------------------------------------------------------------------


def _git_write_tree(tmp_path: Path, files: Mapping[str, bytes | File]) -> str:
    """Build the same tree with git's own index (``update-index`` + ``write-tree``)."""
    g = GitRepo(tmp_path / "independent")
    records = b""
    for path, value in files.items():
        blob = g.hash_object("blob", _data(value))
        records += f"{_mode(value):o} {blob}\t".encode() + path.encode() + b"\0"
    g.run("update-index", "-z", "--index-info", input=records)
    return g.run_text("write-tree")


def test_tree_and_commit_ids_match_git(filled: tuple[Repository, str], tmp_path: Path) -> None:
    repo, oid = filled
    export = export_repository(repo, tmp_path / "export.git")
    info = repo.get_commit(oid)
    assert git(export, "rev-parse", "HEAD^{tree}").decode().strip() == info.tree
    assert git(export, "rev-parse", "HEAD").decode().strip() == oid
    assert _git_write_tree(tmp_path, FILES) == info.tree
    kind, raw = repo.get_object(oid)
    assert kind == "commit"
    assert git(export, "cat-file", "commit", oid) == raw
    assert git(export, "cat-file", "-p", f"{oid}:a.txt") == b"a text\n"
    git(export, "fsck", "--strict", "--no-dangling")
    for entry in repo.walk(oid):
        assert git(export, "cat-file", "-t", entry.oid) == b"blob\n"


def test_empty_tree(repo: Repository, tmp_path: Path) -> None:
    first = repo.commit("main", {"only/file": b"x"}, message="one\n", author=SIG)
    second = repo.commit("main", {"only": None}, message="nothing left\n", author=SIG)
    assert repo.get_commit(second).tree == EMPTY_TREE_HEX
    assert EMPTY_TREE.hex() == EMPTY_TREE_HEX
    assert repo.tree(second) == []
    assert list(repo.walk(second)) == []
    assert not repo.exists(second, "only")
    assert repo.exists(first, "only")
    export = export_repository(repo, tmp_path / "export.git")
    assert git(export, "rev-parse", f"{second}^{{tree}}").decode().strip() == EMPTY_TREE_HEX
    git(export, "fsck", "--strict", "--no-dangling")


def test_identical_content_at_many_paths_is_stored_once(repo: Repository) -> None:
    oid = repo.commit(
        "main", {f"d{i}/same": b"same bytes" for i in range(5)}, message="m\n", author=SIG
    )
    blobs = {e.oid for e in repo.walk(oid)}
    trees = {e.oid for e in repo.tree(oid)}
    assert len(blobs) == 1 and len(trees) == 1  # identical subtrees share one id
    with repo._store.backend.unit(repo._id) as unit:
        kinds = [kind for _, kind in unit.objects.iter_ids()]
    assert sorted(kinds) == [b"blob", b"commit", b"tree", b"tree"]


# -- the core against a counting spy -------------------------------------------------------


WIDE = {
    f"d{i:02d}/s{j}/f{k}": f"{i} {j} {k}\n".encode()
    for i in range(12)
    for j in range(3)
    for k in range(2)
}


@pytest.fixture
def wide(repo: Repository) -> tuple[Repository, ObjectId]:
    oid = repo.commit("main", WIDE, message="wide\n", author=SIG)
    return repo, hex_to_oid(repo.get_commit(oid).tree)


@contextmanager
def _spy(repo: Repository) -> Iterator[CountingObjects]:
    with repo._store.backend.unit(repo._id, write=True) as unit:
        yield CountingObjects(unit.objects)


def test_build_tree_touches_only_the_changed_path(wide: tuple[Repository, ObjectId]) -> None:
    repo, base = wide
    with _spy(repo) as spy:
        new = build_tree(spy, base, {"d07/s1/f0": File(b"changed\n")})
        d07 = find_entry(spy.inner, base, "d07")
        s1 = find_entry(spy.inner, base, "d07/s1")
        assert d07 is not None and s1 is not None
        # Only the root and the two directories on the path are read, one query per depth.
        assert sorted(spy.read_ids) == sorted([base, d07.oid, s1.oid])
        assert spy.read_calls == 3
        # One batch: the new blob and the three rewritten trees.
        assert spy.put_calls == 1
        assert sorted(kind for kind, _ in spy.written) == [b"blob", b"tree", b"tree", b"tree"]
        assert spy.inner.has(new)
    after = repo.commit("main", {"d07/s1/f0": b"changed\n"}, message="c\n", author=SIG)
    assert repo.get_commit(after).tree == new.hex()


def test_build_tree_delete_and_new_directory_read_little(
    wide: tuple[Repository, ObjectId],
) -> None:
    repo, base = wide
    with _spy(repo) as spy:
        build_tree(spy, base, {"d03": None})
        assert spy.read_ids == [base]  # deleting a whole directory needs only its parent
        assert [kind for kind, _ in spy.written] == [b"tree"]
    with _spy(repo) as spy:
        build_tree(spy, base, {"new/deep/file": File(b"x")})
        assert spy.read_ids == [base]  # nothing to load below a directory that is new
        assert sorted(kind for kind, _ in spy.written) == [b"blob", b"tree", b"tree", b"tree"]


def test_build_tree_identical_write_is_a_no_op(wide: tuple[Repository, ObjectId]) -> None:
    repo, base = wide
    with _spy(repo) as spy:
        assert build_tree(spy, base, {"d00/s0/f0": File(b"0 0 0\n")}) == base
        assert build_tree(spy, base, {}) == base
        assert spy.put_calls == 0


def test_walk_and_list_batch_by_depth(wide: tuple[Repository, ObjectId]) -> None:
    repo, base = wide
    with _spy(repo) as spy:
        files = list(walk_files(spy, base))
        assert [p for p, _ in files] == sorted(WIDE)
        assert spy.read_calls == 3  # root, the d* level, the s* level
        spy.read_calls = 0
        assert [p for p, _ in list_tree(spy, base, "d05")] == ["d05/s0", "d05/s1", "d05/s2"]
        assert spy.read_calls == 2
        with pytest.raises(NotFound):
            walk_files(spy, base, "d05/nope")


def test_load_tree_errors_are_corruption_not_not_found(repo: Repository) -> None:
    oid = repo.commit("main", {"f": b"data"}, message="m\n", author=SIG)
    blob = hex_to_oid(repo.tree(oid)[0].oid)
    with repo._store.backend.unit(repo._id) as unit:
        with pytest.raises(GovcError, match="not a tree") as wrong:
            load_tree(unit.objects, blob)
        assert not isinstance(wrong.value, (NotFound, InvalidInput))
        with pytest.raises(GovcError, match="missing") as missing:
            load_tree(unit.objects, ObjectId(b"\x01" * 20))
        assert not isinstance(missing.value, NotFound)
        # The empty tree is always readable, stored or not (as in git).
        assert load_tree(unit.objects, EMPTY_TREE).items == ()
