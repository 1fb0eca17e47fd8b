"""merge, cherry-pick and revert through the public API (SQLite and PostgreSQL): the
branch moves as git's would (fast-forward, up to date, merge commit with parents
[head, rev]), trees equal git's (``merge-tree``, ``cherry-pick``/``revert --no-commit``
+ ``write-tree``), default messages are git's, conflicts change nothing, compare-and-swap
and events behave as for ``commit()``, and the exported repository passes ``git fsck``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _export import export_repository, git
from _merge_oracle import SIG, build_scenario, git_merge_tree, git_pick, new_repo

from govc_db import (
    InvalidInput,
    MergeConflict,
    NotFound,
    RefConflict,
    RefUpdated,
    Repository,
    Signature,
    Store,
)

TEXT = b"".join(b"line %d\n" % i for i in range(1, 21))
OTHER = Signature("Bob", "bob@example.com", 1_700_000_500, 60)


def _edit(i: int, new: bytes, text: bytes = TEXT) -> bytes:
    lines = text.split(b"\n")
    lines[i] = new
    return b"\n".join(lines)


def _repo(store: Store) -> Repository:
    repo = new_repo(store)
    build_scenario(
        repo,
        {"a.txt": TEXT, "k": b"k\n"},
        {"a.txt": _edit(2, b"ours"), "k": b"k\n"},
        {"a.txt": _edit(15, b"theirs"), "k": b"k\n", "new": b"n\n"},
    )
    return repo


def test_merge_commit_matches_git(store: Store, tmp_path: Path) -> None:
    repo = _repo(store)
    ours, theirs = repo.resolve("ours"), repo.resolve("theirs")
    want = git_merge_tree(repo, tmp_path / "git", "ours", "theirs")
    oid = repo.merge("ours", "theirs", author=SIG)
    info = repo.get_commit(oid)
    assert info.parents == [ours, theirs]
    assert info.tree == want.tree
    assert info.message == "Merge branch 'theirs' into ours\n"
    assert repo.resolve("ours") == oid
    assert repo.reflog("ours")[0].message == "merge theirs: Merge made by the 'ort' strategy."
    assert [c.oid for c in repo.log("ours", path="new")] == [theirs]  # TREESAME merge hidden
    assert repo.verify().ok
    dest = export_repository(repo, tmp_path / "after")
    git(dest, "fsck", "--strict", "--no-dangling")
    assert git(dest, "rev-parse", "ours^{tree}").decode().strip() == want.tree


def test_merge_messages_follow_git(store: Store) -> None:
    repo = _repo(store)
    repo.create_branch("main2", "main")
    repo.create_branch("side", "theirs")
    oid = repo.merge("ours", repo.resolve("side"), author=SIG, fast_forward=False)
    assert repo.get_commit(oid).message == f"Merge commit '{repo.resolve('side')}' into ours\n"
    repo.create_tag("v1", "theirs")
    repo.commit("main", {"z": b"z\n"}, message="z\n", author=SIG)
    oid = repo.merge("main", "v1", author=SIG, message="custom\n", committer=OTHER)
    info = repo.get_commit(oid)
    assert (info.message, info.author, info.committer) == ("custom\n", SIG, OTHER)
    repo.commit("main2", {"y": b"y\n"}, message="y\n", author=SIG)
    oid = repo.merge("main2", "v1", author=SIG)
    assert repo.get_commit(oid).message == "Merge tag 'v1' into main2\n"


def test_up_to_date_and_fast_forward(store: Store) -> None:
    repo = _repo(store)
    events: list[RefUpdated] = []
    sub = store.subscribe(events.append, repository=repo.name)
    try:
        head = repo.resolve("ours")
        assert repo.merge("ours", "main", author=SIG) == head  # already merged
        assert len(repo.reflog("ours")) == 2
        repo.create_branch("ff", "main")
        theirs = repo.resolve("theirs")
        assert repo.merge("ff", "theirs", author=SIG) == theirs
        assert repo.reflog("ff")[0].message == "merge theirs: Fast-forward"
        repo.create_branch("noff", "main")
        oid = repo.merge("noff", "theirs", author=SIG, fast_forward=False)
        info = repo.get_commit(oid)
        assert info.parents == [repo.resolve("main"), theirs]
        assert info.tree == repo.get_commit(theirs).tree
    finally:
        sub.close()
    moved = [(e.ref, e.new) for e in events]
    assert ("refs/heads/ff", theirs) in moved
    assert ("refs/heads/noff", oid) in moved
    assert not any(e.ref == "refs/heads/ours" for e in events)


def test_conflict_changes_nothing(store: Store, tmp_path: Path) -> None:
    repo = new_repo(store)
    build_scenario(repo, {"a": b"1\n", "b": b"b\n"}, {"a": b"2\n", "b": b"b\n"}, {"a": b"3\n"})
    head, log = repo.resolve("ours"), repo.reflog("ours")
    with pytest.raises(MergeConflict) as info:
        repo.merge("ours", "theirs", author=SIG)
    kinds = {c.path: c.kind for c in info.value.conflicts}
    assert kinds == {"a": "content"}
    assert "a (content)" in str(info.value)
    assert repo.resolve("ours") == head and repo.reflog("ours") == log
    assert repo.verify().ok
    conflict = info.value.conflicts[0]
    assert conflict.ours is not None and conflict.ours.oid == repo.tree("ours")[0].oid


def test_compare_and_swap(store: Store) -> None:
    repo = _repo(store)
    main = repo.resolve("main")
    with pytest.raises(RefConflict):
        repo.merge("ours", "theirs", author=SIG, expected_head=main)
    head = repo.resolve("ours")
    assert repo.merge("ours", "theirs", author=SIG, expected_head=head) != head
    with pytest.raises(NotFound):
        repo.merge("nope", "theirs", author=SIG)
    with pytest.raises(NotFound):
        repo.merge("ours", "nope", author=SIG)


def test_unrelated_histories_are_refused(store: Store) -> None:
    from _dag import Plan, build

    repo = _repo(store)
    plan = Plan()
    plan.add("R", [], {"x": b"x"}, 5)
    plan.refs["refs/heads/orphan"] = "R"
    build(repo, plan)
    with pytest.raises(InvalidInput):
        repo.merge("ours", "orphan", author=SIG)
    with pytest.raises(InvalidInput):
        repo.merge_trees("ours", "orphan")
    # An explicit base makes it a plain three-way merge.
    assert repo.merge_trees("ours", "orphan", base="main").tree


@pytest.mark.parametrize("revert", [False, True])
def test_cherry_pick_and_revert_match_git(store: Store, tmp_path: Path, revert: bool) -> None:
    repo = _repo(store)
    picked = repo.commit(
        "theirs",
        {"k": b"k2\n", "a.txt": _edit(19, b"end")},
        message="pick me\n\nbody\n",
        author=OTHER,
    )
    target = "theirs" if revert else "ours"
    want = git_pick(repo, tmp_path / "git", target, picked, revert=revert)
    if revert:
        oid = repo.revert(target, picked, author=SIG)
        info = repo.get_commit(oid)
        assert info.message == f'Revert "pick me"\n\nThis reverts commit {picked}.\n'
        assert info.author == SIG
    else:
        oid = repo.cherry_pick(target, picked, committer=SIG)
        info = repo.get_commit(oid)
        assert (info.message, info.author, info.committer) == ("pick me\n\nbody\n", OTHER, SIG)
    assert info.tree == want
    assert info.parents == [repo.get_commit(oid).parents[0]]
    assert repo.verify().ok


def test_cherry_pick_conflict_changes_nothing(store: Store, tmp_path: Path) -> None:
    repo = new_repo(store)
    build_scenario(repo, {"a": b"1\n"}, {"a": b"2\n"}, {"a": b"3\n"})
    head = repo.resolve("ours")
    assert git_pick(repo, tmp_path / "git", "ours", "theirs") is None
    with pytest.raises(MergeConflict) as info:
        repo.cherry_pick("ours", "theirs")
    assert [c.path for c in info.value.conflicts] == ["a"]
    assert repo.resolve("ours") == head
    with pytest.raises(MergeConflict):
        repo.revert("ours", "theirs", author=SIG)
    assert repo.resolve("ours") == head


def test_empty_pick_and_merge_commit_pick_are_refused(store: Store) -> None:
    repo = _repo(store)
    merged = repo.merge("ours", "theirs", author=SIG)
    with pytest.raises(InvalidInput):
        repo.cherry_pick("ours", "theirs")  # already there: nothing to commit
    with pytest.raises(InvalidInput):
        repo.cherry_pick("main", merged)


def test_concurrent_merges_into_one_branch_all_land(store: Store) -> None:
    from concurrent.futures import ThreadPoolExecutor

    repo = new_repo(store)
    repo.commit("main", {"base": b"b\n"}, message="base\n", author=SIG)
    names = [f"f{i}" for i in range(6)]
    for name in names:
        repo.create_branch(name, "main")
        repo.commit(name, {name: name.encode()}, message=f"{name}\n", author=SIG)
    repo.commit("main", {"base": b"b2\n"}, message="move main\n", author=SIG)
    with ThreadPoolExecutor(3) as pool:
        heads = list(pool.map(lambda n: repo.merge("main", n, author=SIG), names))
    assert len(set(heads)) == len(names)
    assert {e.path for e in repo.walk("main")} == {"base", *names}
    assert all(repo.is_ancestor(n, "main") for n in names)
    assert repo.verify().ok
