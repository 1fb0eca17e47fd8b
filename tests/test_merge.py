"""Named merge scenarios, each compared with ``git merge-tree --write-tree`` on the same
commits (SQLite and PostgreSQL): same tree id, same conflicted paths, same cleanliness.

The table follows git's own merge tests (t6422, t4301): content merges and conflicts,
identical changes, delete vs modify, add/add, modes and the executable bit, symlinks,
file/directory clashes, binary files, exact and similar renames, CRLF and missing final
newlines.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _merge_oracle import Snapshot, build_scenario, git_merge_tree, new_repo

from govc_db import Store

X = 0o100755
L = 0o120000
TEXT = b"".join(b"line %d of a text that is long enough\n" % i for i in range(1, 31))


def edit(text: bytes, index: int, new: bytes) -> bytes:
    lines = text.split(b"\n")
    lines[index] = new
    return b"\n".join(lines)


K = {"keep": b"kept\n"}
SCENARIOS: dict[str, tuple[Snapshot, Snapshot, Snapshot]] = {
    "disjoint-files": (
        {"a": b"1\n", "b": b"2\n"},
        {"a": b"1x\n", "b": b"2\n"},
        {"a": b"1\n", "b": b"2x\n"},
    ),
    "content-conflict": ({"a": b"1\n"}, {"a": b"2\n"}, {"a": b"3\n"}),
    "content-merged": (
        {"a": TEXT},
        {"a": edit(TEXT, 2, b"ours")},
        {"a": edit(TEXT, 25, b"theirs")},
    ),
    "near-edits-conflict": (
        {"a": TEXT},
        {"a": edit(TEXT, 5, b"ours")},
        {"a": edit(TEXT, 7, b"theirs")},
    ),
    "identical-changes": ({"a": b"1\n", **K}, {"a": b"2\n", **K}, {"a": b"2\n", **K}),
    "modify-delete": ({"a": b"1\n", **K}, {"a": b"2\n", **K}, dict(K)),
    "delete-modify": ({"a": b"1\n", **K}, dict(K), {"a": b"2\n", **K}),
    "delete-both": ({"a": b"1\n", **K}, dict(K), {"keep": b"changed\n"}),
    "add-add-equal": (dict(K), {"n": b"x\n", **K}, {"n": b"x\n", **K}),
    "add-add-different": (dict(K), {"n": b"x\n", **K}, {"n": b"y\n", **K}),
    "exec-bit-one-side": ({"a": b"1\n"}, {"a": (b"1\n", X)}, {"a": b"2\n"}),
    "exec-bit-conflict": ({"a": (b"1\n", X)}, {"a": b"1\n"}, {"a": (b"2\n", X)}),
    "symlink-both-changed": ({"l": (b"t1", L)}, {"l": (b"t2", L)}, {"l": (b"t3", L)}),
    "symlink-one-side": ({"l": (b"t1", L), **K}, {"l": (b"t2", L), **K}, {"l": (b"t1", L)}),
    "file-vs-symlink": (dict(K), {"n": b"x\n", **K}, {"n": (b"x", L), **K}),
    "file-vs-directory": (dict(K), {"d": b"x\n", **K}, {"d/f": b"y\n", **K}),
    "directory-vs-file": (dict(K), {"d/f": b"y\n", **K}, {"d": b"x\n", **K}),
    "directory-replaced-by-file": (
        {"d/f": b"y\n", **K},
        {"d": b"x\n", **K},
        {"d/f": b"y\n", "keep": b"other\n"},
    ),
    "binary-conflict": ({"b": b"\0a"}, {"b": b"\0b"}, {"b": b"\0c"}),
    "binary-one-side": ({"b": b"\0a", **K}, {"b": b"\0b", **K}, {"b": b"\0a", "keep": b"k2"}),
    "rename-exact-vs-modify": (
        {"a": TEXT, **K},
        {"b": TEXT, **K},
        {"a": edit(TEXT, 3, b"theirs"), **K},
    ),
    "rename-similar-vs-modify": (
        {"a": TEXT},
        {"b": edit(TEXT, 20, b"ours")},
        {"a": edit(TEXT, 3, b"theirs")},
    ),
    "rename-into-directory": (
        {"src/x/mod.py": TEXT, **K},
        {"lib/y/mod.py": edit(TEXT, 0, b"header"), **K},
        {"src/x/mod.py": edit(TEXT, 29, b"footer"), **K},
    ),
    "rename-delete": ({"a": TEXT, **K}, {"b": TEXT, **K}, dict(K)),
    "rename-rename-1to2": ({"a": TEXT, **K}, {"b": TEXT, **K}, {"c": TEXT, **K}),
    "rename-rename-1to1": (
        {"a": TEXT, **K},
        {"b": TEXT, **K},
        {"b": edit(TEXT, 1, b"w"), **K},
    ),
    "rename-add-collision": (
        {"a": TEXT, **K},
        {"b": edit(TEXT, 2, b"r"), **K},
        {"a": TEXT, "b": b"other\n", **K},
    ),
    "rename-below-threshold": (
        {"a": TEXT},
        {"b": TEXT[: len(TEXT) // 3] + b"new\n" * 40},
        {"a": edit(TEXT, 3, b"z")},
    ),
    "rename-and-content-conflict": (
        {"a": TEXT},
        {"b": edit(TEXT, 3, b"ours")},
        {"a": edit(TEXT, 3, b"theirs")},
    ),
    "empty-file-not-renamed": ({"e": b"", **K}, {"f": b"", **K}, {"e": b"", "keep": b"k2"}),
    "deep-nesting": (
        {"a/b/c/d/e": b"1\n", "a/x": b"x"},
        {"a/b/c/d/e": b"2\n", "a/x": b"x"},
        {"a/b/c/d/e": b"1\n", "a/x": b"y"},
    ),
    "crlf-conflict": (
        {"a": b"1\r\n2\r\n3\r\n"},
        {"a": b"1\r\nx\r\n3\r\n"},
        {"a": b"1\r\ny\r\n3\r\n"},
    ),
    "no-final-newline": ({"a": b"1\n2"}, {"a": b"1\n3"}, {"a": b"1\n4"}),
    "everything-deleted-one-side": ({"a": b"1\n", "b": b"2\n"}, {}, {"a": b"1\n", "b": b"2\n"}),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_matches_git(store: Store, tmp_path: Path, name: str) -> None:
    base, ours, theirs = SCENARIOS[name]
    repo = new_repo(store)
    build_scenario(repo, base, ours, theirs)
    got = repo.merge_trees("ours", "theirs")
    want = git_merge_tree(repo, tmp_path / "git", "ours", "theirs")
    assert got.tree == want.tree
    assert {c.path for c in got.conflicts} == want.conflicted
    assert got.clean == want.clean == (not got.conflicts)


def test_conflict_markers_use_the_revision_names(store: Store, tmp_path: Path) -> None:
    repo = new_repo(store)
    build_scenario(repo, {"a": b"1\n"}, {"a": b"2\n"}, {"a": b"3\n"})
    got = repo.merge_trees("ours", "theirs")
    [conflict] = got.conflicts
    assert (conflict.path, conflict.kind) == ("a", "content")
    assert conflict.base is not None and conflict.ours is not None and conflict.theirs is not None
    data = _blob_in_tree(repo, got.tree, "a")
    assert data == b"<<<<<<< ours\n2\n=======\n3\n>>>>>>> theirs\n"
    want = git_merge_tree(repo, tmp_path / "git", "ours", "theirs")
    assert want.tree == got.tree


def _blob_in_tree(repo: object, tree: str, path: str) -> bytes:
    from govc_db import Repository
    from govc_db.objects import Tree

    assert isinstance(repo, Repository)
    oid = tree
    for part in path.split("/"):
        kind, raw = repo.get_object(oid)
        assert kind == "tree"
        item = Tree.parse(raw).get(part.encode())
        assert item is not None
        oid = item.oid.hex()
    return repo.get_object(oid)[1]


@pytest.mark.parametrize(
    ("name", "kinds"),
    [
        ("content-conflict", {"a": "content"}),
        ("add-add-different", {"n": "add/add"}),
        ("modify-delete", {"a": "modify/delete"}),
        ("file-vs-symlink", {"n": "mode", "n~ours": "mode"}),
        ("binary-conflict", {"b": "binary"}),
        ("rename-delete", {"b": "rename/delete"}),
        ("rename-rename-1to2", {"a": "rename/rename", "b": "rename/rename", "c": "rename/rename"}),
        ("file-vs-directory", {"d~ours": "file/directory"}),
    ],
)
def test_conflict_kinds(store: Store, name: str, kinds: dict[str, str]) -> None:
    repo = new_repo(store)
    build_scenario(repo, *SCENARIOS[name])
    got = repo.merge_trees("ours", "theirs")
    assert {c.path: c.kind for c in got.conflicts} == kinds
