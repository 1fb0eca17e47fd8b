"""Deep trees: a valid path of ~1500 one-character levels commits, reads, walks, diffs and
verifies on both backends without ``RecursionError`` (tree building, walk and diff are
iterative; no recursion depends on the depth of a path)."""

from __future__ import annotations

import sys

import pytest

from govc_db import Signature, Store
from govc_db.errors import InvalidInput

pytestmark = pytest.mark.faults

SIG = Signature("Ada", "ada@example.com", 1_700_000_000, 0)
DEPTH = 1500


def deep(depth: int, leaf: str) -> str:
    return "/".join(["d"] * (depth - 1) + [leaf])


def test_a_1500_level_path_round_trips(store: Store) -> None:
    assert sys.getrecursionlimit() < DEPTH  # recursion over the depth would fail
    repo = store.create_repository("deep")
    path = deep(DEPTH, "f.txt")
    assert len(path.encode()) <= 4096
    c1 = repo.commit("main", {path: b"one\n", "top.txt": b"top\n"}, message="deep\n", author=SIG)
    c2 = repo.commit("main", {path: b"two\n"}, message="change\n", author=SIG)
    assert repo.read("main", path) == b"two\n"
    assert repo.read(c1, path) == b"one\n"
    assert repo.exists("main", path)
    assert [e.path for e in repo.walk("main")] == [path, "top.txt"]
    changes = repo.diff(c1, c2)
    assert [(c.path, c.status) for c in changes] == [(path, "M")]
    sibling = deep(DEPTH, "g.txt")
    c3 = repo.commit("main", {sibling: b"g\n", path: None}, message="swap\n", author=SIG)
    assert [(c.path, c.status) for c in repo.diff(c2, c3)] == [(path, "D"), (sibling, "A")]
    # Deleting the only file removes every directory above it (git has no empty trees).
    c4 = repo.commit("main", {sibling: None}, message="prune\n", author=SIG)
    assert [e.path for e in repo.walk(c4)] == ["top.txt"]
    assert len(repo.diff(c4, c1)) == 1
    report = repo.verify()
    assert report.ok, report.problems


def test_a_path_over_the_byte_limit_is_invalid_input(store: Store) -> None:
    repo = store.create_repository("deep")
    with pytest.raises(InvalidInput):
        repo.commit("main", {deep(2100, "f"): b"x"}, message="m\n", author=SIG)
