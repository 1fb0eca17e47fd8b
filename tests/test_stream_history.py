"""log and walk stream: pages read by short units as the caller iterates, in exactly the
order and with exactly the entries of a walk done in one unit; both backends."""

from __future__ import annotations

import random

import pytest

import govc_db.api.repository as repository_module
from govc_db import Signature, Store
from govc_db.core import history
from govc_db.core.commit import head_tree
from govc_db.core.trees import walk_files
from govc_db.errors import NotFound
from govc_db.objects import hex_to_oid

SIG = Signature("Ada", "ada@example.com", 1700000000, 0)


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(repository_module, "PAGE", 3)


def test_walk_streams_in_git_order(store: Store, small_pages: None) -> None:
    repo = store.create_repository("r")
    rng = random.Random(4)
    names = ["a", "a.txt", "a-b", "b", "ab", "z", "é"]
    paths = set()
    for _ in range(60):
        depth = rng.randint(1, 4)
        paths.add("/".join(rng.choice(names) + str(rng.randint(0, 2)) for _ in range(depth)))
    files: dict[str, bytes] = {}
    for p in sorted(paths):  # a path that is a prefix directory of another is dropped
        if not any(q.startswith(p + "/") for q in paths) and not any(
            p.startswith(q + "/") for q in files
        ):
            files[p] = p.encode()
    oid = repo.commit("main", files, message="m\n", author=SIG)
    with store.backend.unit(repo._id) as unit:
        root = head_tree(unit, hex_to_oid(oid))
        expected = [(path, item.oid.hex()) for path, item in walk_files(unit.objects, root)]
        sub = sorted({p.split("/")[0] for p in files if "/" in p})[0]
        expected_sub = [(p, i.oid.hex()) for p, i in walk_files(unit.objects, root, sub)]
    got = [(e.path, e.oid) for e in repo.walk("main")]
    assert got == expected and len(got) == len(files)
    assert [e.path.encode() for e in repo.walk("main")] == sorted(p.encode() for p in files)
    assert [(e.path, e.oid) for e in repo.walk("main", sub)] == expected_sub
    with pytest.raises(NotFound):
        repo.walk("main", "nope/nothing")


def test_log_streams_in_pages(store: Store, small_pages: None) -> None:
    repo = store.create_repository("r")
    for i in range(20):
        repo.commit("main", {f"f{i % 4}": b"%d" % i}, message=f"c{i}\n", author=SIG)
    repo.create_branch("side", "main~12")
    for i in range(5):
        repo.commit("side", {f"s{i}": b"s"}, message=f"s{i}\n", author=SIG)
    head = repo.resolve("main")
    with store.backend.unit(repo._id) as unit:
        expected = [o.hex() for o in history.log(unit.index, hex_to_oid(head))]
        expected_f1 = [o.hex() for o in history.log(unit.index, hex_to_oid(head), "f1")]
    log = repo.log("main")
    first = next(log)
    assert [first.oid, *(c.oid for c in log)] == expected
    assert [c.oid for c in repo.log("main", path="f1")] == expected_f1
    assert [c.message for c in repo.log("main", limit=4)] == ["c19\n", "c18\n", "c17\n", "c16\n"]
    with pytest.raises(NotFound):
        repo.log("nope")
