"""Repository.diff against ``git diff-tree -r --no-renames --raw`` on exported data.

Seeded random change sequences (deterministic, a few seeds) plus named edge cases:
mode changes, file<->symlink (T), file<->directory (D + A in git's order), deletion
of whole directories, and gitlinks (built through the core, since the API cannot
write submodules).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable
from pathlib import Path

import pytest
from _export import export_repository, git
from _spies import CountingObjects

from govc_db import File, Repository, Signature, Store
from govc_db.core.diff import diff_trees
from govc_db.objects import (
    MODE_DIR,
    MODE_GITLINK,
    ObjectId,
    Tree,
    TreeItem,
    hash_object,
    hex_to_oid,
)
from govc_db.store.ports import ObjectStore

SIG = Signature("Grace Hopper", "grace@example.com", 1700000000, -300)
ZERO = "0" * 40

Row = tuple[str, str, int, int, str | None, str | None]


def git_diff(export: Path, old: str, new: str) -> list[Row]:
    """``git diff-tree -r --no-renames --raw -z`` as (path, status, modes, ids) rows."""
    out = git(export, "diff-tree", "-r", "--no-renames", "--raw", "-z", "--no-abbrev", old, new)
    fields = out.split(b"\0")
    rows: list[Row] = []
    for meta, path in zip(fields[0:-1:2], fields[1::2], strict=True):
        old_mode, new_mode, old_oid, new_oid, status = meta[1:].decode().split(" ")
        rows.append(
            (
                path.decode("utf-8", "surrogateescape"),
                status,
                int(old_mode, 8),
                int(new_mode, 8),
                None if old_oid == ZERO else old_oid,
                None if new_oid == ZERO else new_oid,
            )
        )
    return rows


def our_diff(repo: Repository, old: str, new: str) -> list[Row]:
    return [
        (c.path, c.status, c.old_mode, c.new_mode, c.old_oid, c.new_oid)
        for c in repo.diff(old, new)
    ]


@pytest.fixture
def repo(store: Store) -> Repository:
    return store.create_repository("diffs")


# -- a model of the tree, to generate valid random change sets -----------------------------

Model = dict[str, File]
NAMES = ["a", "a.txt", "a-b", "a0", "b", "\u00e9"]
CONTENTS = [b"", b"one\n", b"two\n", b"\x00\xff binary"]
MODES = [0o100644, 0o100644, 0o100755, 0o120000]


def _dirs(model: Model) -> set[str]:
    return {p[:i] for p in model for i in range(len(p)) if p[i] == "/"}


def apply_model(model: Model, changes: dict[str, File | None]) -> Model | None:
    """The documented commit semantics; None when the change set would be refused."""
    dirs = _dirs(model)
    new = dict(model)
    for path, value in changes.items():
        if value is None:
            if path in model:
                new.pop(path, None)
            elif path in dirs:
                for p in [p for p in new if p.startswith(path + "/")]:
                    del new[p]
            else:
                return None
    writes = [p for p, v in changes.items() if v is not None]
    for path in writes:
        parts = path.split("/")
        if any("/".join(parts[:i]) in new for i in range(1, len(parts))):
            return None  # below a file
        if any(p.startswith(path + "/") for p in new):
            return None  # onto a directory
    for path in writes:
        value = changes[path]
        assert value is not None
        new[path] = value
    if any(p.startswith(w + "/") for w in writes for p in writes):
        return None  # the change set itself makes a path both file and directory
    return new


def random_changes(rng: random.Random, model: Model) -> dict[str, File | None]:
    changes: dict[str, File | None] = {}
    for _ in range(rng.randint(1, 4)):
        candidate = dict(changes)
        op = rng.random()
        dirs = sorted(_dirs(model))
        if op < 0.45 or not model:
            path = "/".join(rng.choice(NAMES) for _ in range(rng.randint(1, 3)))
            candidate[path] = File(rng.choice(CONTENTS), rng.choice(MODES))
        elif op < 0.6:
            path = rng.choice(sorted(model))
            old = model[path]
            candidate[path] = File(old.data, rng.choice([m for m in MODES if m != old.mode]))
        elif op < 0.8:
            candidate[rng.choice(sorted(model))] = None
        elif op < 0.9 and dirs:
            candidate[rng.choice(dirs)] = None
        else:
            # Turn a file into a directory, or empty a directory and make it a file.
            if dirs and rng.random() < 0.5:
                d = rng.choice(dirs)
                for p in model:
                    if p.startswith(d + "/"):
                        candidate[p] = None
                candidate[d] = File(rng.choice(CONTENTS))
            else:
                path = rng.choice(sorted(model))
                candidate[path] = None
                candidate[path + "/" + rng.choice(NAMES)] = File(rng.choice(CONTENTS))
        if apply_model(model, candidate) is not None:
            changes = candidate
    return changes


def _check_tree(repo: Repository, oid: str, model: Model) -> None:
    got = {e.path: (e.mode, e.oid) for e in repo.walk(oid)}
    want = {p: (f.mode, _blob_id(f.data)) for p, f in model.items() if isinstance(f.data, bytes)}
    assert len(want) == len(model)
    assert got == want


def _blob_id(data: bytes) -> str:
    return hash_object(b"blob", data).hex()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_sequences_match_git(repo: Repository, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    model: Model = {}
    commits: list[str] = []
    while len(commits) < 10:
        changes = random_changes(rng, model)
        expected = apply_model(model, changes)
        if not changes or expected is None:
            continue
        commits.append(
            repo.commit(
                "main", changes, message=f"step {len(commits)}\n", author=SIG, allow_empty=True
            )
        )
        model = expected
        _check_tree(repo, commits[-1], model)
    export = export_repository(repo, tmp_path / "export.git")
    pairs = list(itertools.pairwise(commits))
    pairs += [(b, a) for a, b in pairs[::3]]
    pairs += [(commits[0], commits[-1]), (commits[-1], commits[0]), (commits[4], commits[4])]
    pairs += [(rng.choice(commits), rng.choice(commits)) for _ in range(4)]
    for old, new in pairs:
        assert our_diff(repo, old, new) == git_diff(export, old, new), (old, new)


# -- named cases ---------------------------------------------------------------------------


def test_edge_cases_match_git(repo: Repository, tmp_path: Path) -> None:
    base: dict[str, bytes | File] = {
        "a": b"file a\n",
        "a-b": b"dash\n",
        "a.txt": b"text\n",
        "a0": b"zero\n",
        "exe": b"run me\n",
        "lnk": File(b"a.txt", 0o120000),
        "plain": b"plain\n",
        "tree/x": b"x\n",
        "tree/sub/y": b"y\n",
        "tree/sub/z": b"z\n",
        "keep/k": b"k\n",
    }
    c0 = repo.commit("main", base, message="base\n", author=SIG)
    c1 = repo.commit(
        "main",
        {
            "a": None,  # file -> directory: D a, then A a/... after a-b and a.txt
            "a/inner": b"inner\n",
            "a/deeper/q": b"q\n",
            "exe": File(b"run me\n", 0o100755),  # mode only: M with the same id
            "lnk": b"a.txt",  # symlink -> file with the same bytes: T
            "plain": File(b"a0", 0o120000),  # file -> symlink: T
            "tree": None,  # a whole directory
            "moved": b"k\n",  # same content elsewhere: no renames, just A
        },
        message="edges\n",
        author=SIG,
    )
    c2 = repo.commit(
        "main",
        {"a/inner": None, "a/deeper/q": None, "a": File(b"back\n", 0o100755), "keep/k": None},
        message="dir -> file\n",
        author=SIG,
    )
    export = export_repository(repo, tmp_path / "export.git")
    forward = our_diff(repo, c0, c1)
    assert [(r[0], r[1]) for r in forward] == [
        ("a", "D"),
        ("a/deeper/q", "A"),
        ("a/inner", "A"),
        ("exe", "M"),
        ("lnk", "T"),
        ("moved", "A"),
        ("plain", "T"),
        ("tree/sub/y", "D"),
        ("tree/sub/z", "D"),
        ("tree/x", "D"),
    ]
    exe = forward[3]
    assert (exe[2], exe[3]) == (0o100644, 0o100755) and exe[4] == exe[5]
    deleted = forward[0]
    assert deleted[3] == 0 and deleted[5] is None
    for old, new in [(c0, c1), (c1, c0), (c1, c2), (c2, c1), (c0, c2), (c2, c0)]:
        assert our_diff(repo, old, new) == git_diff(export, old, new), (old, new)
    assert our_diff(repo, c1, c1) == []


def test_diff_change_fields(repo: Repository) -> None:
    c0 = repo.commit("main", {"f": b"1"}, message="1\n", author=SIG)
    c1 = repo.commit("main", {"f": b"2", "g": b"3"}, message="2\n", author=SIG)
    changes = repo.diff(c0, c1)
    assert [c.path for c in changes] == ["f", "g"]
    f, g = changes
    assert f.status == "M" and f.old_oid == _blob_id(b"1") and f.new_oid == _blob_id(b"2")
    assert (g.status, g.old_mode, g.old_oid, g.new_mode) == ("A", 0, None, 0o100644)


# -- the core: gitlinks and batching --------------------------------------------------------


def _put_tree(objects: ObjectStore, items: Iterable[tuple[bytes, int, ObjectId]]) -> ObjectId:
    tree = Tree.of(TreeItem(n, m, o) for n, m, o in items)
    return objects.put(b"tree", tree.serialize())


def test_gitlink_changes_match_git(repo: Repository, tmp_path: Path) -> None:
    seed = repo.commit("main", {"f": b"f\n"}, message="seed\n", author=SIG)
    sub = hex_to_oid("1234567890abcdef1234567890abcdef12345678")  # need not exist
    with repo._store.backend.unit(repo._id, write=True) as unit:
        o = unit.objects
        blob = o.put(b"blob", b"content\n")
        inner = _put_tree(o, [(b"x", 0o100644, blob)])
        trees = {
            "link": _put_tree(o, [(b"m", MODE_GITLINK, sub), (b"n", MODE_GITLINK, sub)]),
            "other": _put_tree(o, [(b"m", 0o100644, blob), (b"n", MODE_DIR, inner)]),
            "moved": _put_tree(
                o, [(b"m", MODE_GITLINK, ObjectId(b"\x07" * 20)), (b"n-", 0o120000, blob)]
            ),
        }
        got = {
            (a, b): [
                (c.path, c.status, c.old_mode, c.new_mode)
                for c in diff_trees(o, trees[a], trees[b])
            ]
            for a in trees
            for b in trees
        }
    assert seed
    export = export_repository(repo, tmp_path / "export.git")
    for (a, b), rows in got.items():
        want = [r[:4] for r in git_diff(export, trees[a].hex(), trees[b].hex())]
        assert rows == want, (a, b)
    assert got[("link", "other")] == [
        ("m", "T", MODE_GITLINK, 0o100644),
        ("n", "D", MODE_GITLINK, 0),
        ("n/x", "A", 0, 0o100644),
    ]


def test_diff_descends_only_into_changed_subtrees(repo: Repository) -> None:
    files = {f"d{i}/s{j}/f": f"{i}{j}".encode() for i in range(8) for j in range(4)}
    c0 = repo.commit("main", files, message="wide\n", author=SIG)
    c1 = repo.commit(
        "main", {"d3/s2/f": b"new 3", "d5/s0/f": b"new 5"}, message="two\n", author=SIG
    )
    t0 = hex_to_oid(repo.get_commit(c0).tree)
    t1 = hex_to_oid(repo.get_commit(c1).tree)
    with repo._store.backend.unit(repo._id) as unit:
        spy = CountingObjects(unit.objects)
        changes = diff_trees(spy, t0, t1)
    assert [c.path for c in changes] == ["d3/s2/f", "d5/s0/f"]
    assert spy.read_calls == 3  # one get_many per depth
    assert len(spy.read_ids) == 2 + 4 + 4  # both roots, d3 and d5 on each side, then s-level
