"""Generated merges compared with ``git merge-tree --write-tree`` (SQLite and PostgreSQL).

* hypothesis draws a base snapshot and two edited versions of it (line edits, deletes,
  adds, renames with and without edits, exec bits, symlinks, files replacing
  directories), then the merge must equal git's: tree id, conflicted paths, cleanliness;
* seeded random commit graphs (``_dag.random_dag``: criss-cross merges, several merge
  bases, unrelated roots, file/directory swaps) merged pairwise;
* criss-cross histories built by hand whose virtual merge base itself conflicts.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from _dag import Plan, build, random_dag
from _merge_oracle import build_scenario, git_merge_tree, new_repo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from govc_db import InvalidInput, Store

PATHS = ("a", "b.txt", "d", "d/x", "d/y", "d/e/z", "s/t/u.txt", "v/w.txt")
LINES = tuple(b"%s\n" % w for w in (b"alpha", b"beta", b"gamma", b"{", b"}", b"", b"delta"))
EXEC = 0o100755
LINK = 0o120000

Snap = dict[str, "bytes | tuple[bytes, int]"]


def _valid(snap: Snap) -> bool:
    return not any(p != q and q.startswith(p + "/") for p in snap for q in snap)


def _text(draw: st.DrawFn) -> bytes:
    return b"".join(draw(st.lists(st.sampled_from(LINES), min_size=1, max_size=14)))


def _mutate(draw: st.DrawFn, base: Snap) -> Snap:
    snap = dict(base)
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(("edit", "edit", "delete", "add", "rename", "mode", "link")))
        present = sorted(snap)
        if op in ("edit", "delete", "rename", "mode") and not present:
            continue
        if op == "edit":
            path = draw(st.sampled_from(present))
            value = snap[path]
            data = value if isinstance(value, bytes) else value[0]
            lines = data.splitlines(keepends=True) or [b""]
            i = draw(st.integers(0, len(lines) - 1))
            lines[i : i + 1] = draw(st.lists(st.sampled_from(LINES), max_size=2))
            new = b"".join(lines)
            snap[path] = new if isinstance(value, bytes) else (new, value[1])
        elif op == "delete":
            del snap[draw(st.sampled_from(present))]
        elif op == "add":
            snap[draw(st.sampled_from(PATHS))] = _text(draw)
        elif op == "rename":
            old = draw(st.sampled_from(present))
            new_path = draw(st.sampled_from(PATHS))
            value = snap.pop(old)
            if draw(st.booleans()) and isinstance(value, bytes):
                value = value + draw(st.sampled_from(LINES))
            snap[new_path] = value
        elif op == "mode":
            path = draw(st.sampled_from(present))
            value = snap[path]
            data = value if isinstance(value, bytes) else value[0]
            snap[path] = (data, EXEC) if isinstance(value, bytes) else data
        else:
            snap[draw(st.sampled_from(PATHS))] = (draw(st.sampled_from((b"a", b"b/c"))), LINK)
    return snap


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Snap, Snap, Snap]:
    base: Snap = {}
    for path in draw(st.lists(st.sampled_from(PATHS), min_size=1, max_size=5, unique=True)):
        base[path] = _text(draw)
    ours, theirs = _mutate(draw, base), _mutate(draw, base)
    return base, ours, theirs


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios())
def test_generated_scenarios_match_git(
    store: Store, tmp_path: Path, scenario: tuple[Snap, Snap, Snap]
) -> None:
    base, ours, theirs = scenario
    if not (_valid(base) and _valid(ours) and _valid(theirs)):
        return
    repo = new_repo(store)
    build_scenario(repo, base, ours, theirs)
    got = repo.merge_trees("ours", "theirs")
    want = git_merge_tree(repo, tmp_path / repo.name, "ours", "theirs")
    assert (got.tree, {c.path for c in got.conflicts}, got.clean) == (
        want.tree,
        want.conflicted,
        want.clean,
    ), scenario


@pytest.mark.parametrize("seed", range(6))
def test_random_histories_match_git(store: Store, tmp_path: Path, seed: int) -> None:
    repo = new_repo(store)
    ids = build(repo, random_dag(seed, 36))
    rng = random.Random(seed)
    names = sorted(ids)
    checked = 0
    for _ in range(12):
        a, b = rng.sample(names, 2)
        want_dir = tmp_path / "git"
        try:
            got = repo.merge_trees(ids[a], ids[b])
        except InvalidInput:
            continue  # unrelated histories: git refuses too (exit 128)
        want = git_merge_tree(repo, want_dir, ids[a], ids[b])
        assert (got.tree, {c.path for c in got.conflicts}) == (want.tree, want.conflicted), (a, b)
        checked += 1
    assert checked > 0


TEXT = b"".join(b"line %d\n" % i for i in range(1, 21))


def _edit(text: bytes, i: int, new: bytes) -> bytes:
    lines = text.split(b"\n")
    lines[i] = new
    return b"\n".join(lines)


@pytest.mark.parametrize("resolution", ["conflicting", "agreeing"])
def test_criss_cross_uses_a_virtual_base(store: Store, tmp_path: Path, resolution: str) -> None:
    repo = new_repo(store)
    plan = Plan()
    plan.add("B", [], {"f": TEXT, "g": TEXT}, 0)
    plan.add("X1", ["B"], {"f": _edit(TEXT, 2, b"x"), "g": TEXT}, 1)
    plan.add("Y1", ["B"], {"f": _edit(TEXT, 2, b"y"), "g": TEXT}, 2)
    fy = b"y" if resolution == "conflicting" else b"x"
    plan.add("X2", ["X1", "Y1"], {"f": _edit(TEXT, 2, b"x"), "g": _edit(TEXT, 4, b"gx")}, 3)
    plan.add("Y2", ["Y1", "X1"], {"f": _edit(TEXT, 2, fy), "g": _edit(TEXT, 16, b"gy")}, 4)
    ids = build(repo, plan)
    assert len({repo.merge_base(ids["X2"], ids["Y2"])}) == 1
    got = repo.merge_trees(ids["X2"], ids["Y2"])
    want = git_merge_tree(repo, tmp_path / "git", ids["X2"], ids["Y2"])
    assert (got.tree, {c.path for c in got.conflicts}) == (want.tree, want.conflicted)
    assert got.clean == (resolution == "agreeing") == want.clean
