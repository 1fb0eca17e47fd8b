"""log, merge_base and is_ancestor against the real git: ``git rev-list [-n N] REV [-- P]``,
``git merge-base A B`` and ``git merge-base --is-ancestor A B`` on the exported repository.

Histories come from the public API (linear commits and branches) and, for merges, from
the foundation store (``_dag``): criss-cross and octopus merges, equal committer times,
clock skew, merges TREESAME to one side or changing a path against all sides, paths
that are files and directories, paths deleted and re-added, and seeded random DAGs.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pytest
from _dag import (
    PATHSPECS,
    Plan,
    build,
    git_is_ancestor,
    git_merge_base,
    git_rev_list,
    random_dag,
    sample,
)
from _export import export_repository

from govc_db import InvalidInput, NotFound, Repository, Signature, Store
from govc_db.core import history
from govc_db.objects import ObjectId
from govc_db.store.ports import CommitIndexStore, IndexEntry


def sig(minute: int) -> Signature:
    return Signature("Ada", "ada@example.com", 1_700_000_000 + 60 * minute, 0)


@pytest.fixture
def repo(store: Store) -> Repository:
    return store.create_repository("hist")


def log_ids(
    repo: Repository, rev: str, path: str | None = None, limit: int | None = None
) -> list[str]:
    return [c.oid for c in repo.log(rev, path=path, limit=limit)]


def check_against_git(
    repo: Repository,
    tmp_path: Path,
    revs: Iterable[str],
    paths: Sequence[str | None] = PATHSPECS,
    limit: int | None = None,
    pairs: int = 12,
) -> Path:
    """Every (rev, path) log equals git rev-list (also cut at ``limit``); merge-base and
    is-ancestor equal git's for ``pairs`` ordered pairs of ``revs`` (all when fewer)."""
    revs = list(dict.fromkeys(revs))
    exported = export_repository(repo, tmp_path / "export.git")
    for rev, path in itertools.product(revs, paths):
        full = git_rev_list(exported, rev, path)
        assert log_ids(repo, rev, path) == full, (rev, path)
        if limit is not None:
            # git -n N stops after N shown commits: a prefix of the full list.
            assert log_ids(repo, rev, path, limit) == full[:limit], (rev, path, limit)
    every = list(itertools.permutations(revs, 2))
    chosen = every if len(every) <= pairs else random.Random(len(every)).sample(every, pairs)
    for a, b in chosen:
        assert repo.merge_base(a, b) == git_merge_base(exported, a, b), (a, b)
        assert repo.is_ancestor(a, b) == git_is_ancestor(exported, a, b), (a, b)
    return exported


# -- histories through the public API ----------------------------------------------------


def test_linear_and_branches_through_the_api(repo: Repository, tmp_path: Path) -> None:
    c1 = repo.commit("main", {"a": b"1", "d/x": b"1"}, message="1\n", author=sig(0))
    c2 = repo.commit("main", {"a": b"2"}, message="2\n", author=sig(1))
    repo.create_branch("topic", c2)
    c3 = repo.commit("main", {"d/x": b"2"}, message="3\n", author=sig(2))
    t1 = repo.commit("topic", {"b": b"1"}, message="t1\n", author=sig(3))
    c4 = repo.commit("main", {"d/x": None}, message="4\n", author=sig(4))
    t2 = repo.commit("topic", {"a": b"3"}, message="t2\n", author=sig(5))
    c5 = repo.commit("main", {"d/x": b"again"}, message="5\n", author=sig(6))
    assert log_ids(repo, "main") == [c5, c4, c3, c2, c1]
    assert log_ids(repo, "HEAD", path="d") == [c5, c4, c3, c1]
    assert log_ids(repo, "topic", path="a") == [t2, c2, c1]
    assert repo.merge_base("main", "topic") == c2
    assert repo.is_ancestor(c1, "topic") and not repo.is_ancestor("topic", "main")
    check_against_git(
        repo,
        tmp_path,
        [c1, c2, c3, c4, c5, t1, t2, "main", "topic"],
        paths=(None, "a", "b", "d", "d/x", "nope"),
        limit=2,
        pairs=30,
    )


def test_limit_counts_shown_commits_and_zero_is_empty(repo: Repository, tmp_path: Path) -> None:
    ids = [
        repo.commit(
            "main", {"a" if i % 3 == 0 else "b": str(i).encode()}, message="m\n", author=sig(i)
        )
        for i in range(7)
    ]
    assert log_ids(repo, "main", limit=0) == []
    assert log_ids(repo, "main", path="a", limit=2) == [ids[6], ids[3]]
    exported = export_repository(repo, tmp_path / "e.git")
    for limit in (0, 1, 2, 3, 10):
        assert log_ids(repo, "main", "a", limit) == git_rev_list(exported, "main", "a", limit)
        assert log_ids(repo, "main", None, limit) == git_rev_list(exported, "main", None, limit)


# -- hand-written merge histories ----------------------------------------------------------


def criss_cross(equal_times: bool) -> Plan:
    r"""O -> X1, O -> Y1; M1 = X1 + Y1, M2 = Y1 + X1; X2 on M1, Y2 on M2.

    merge-base(X2, Y2) has two best bases, X1 and Y1: git prints the newer one, or on
    equal dates the one its walk finds first.
    """

    def t(n: int) -> int:
        return 10 if equal_times else n

    p = Plan()
    p.add("O", [], {"a": b"0", "d/x": b"0"}, t(1))
    p.add("X1", ["O"], {"a": b"x", "d/x": b"0"}, t(2))
    p.add("Y1", ["O"], {"a": b"0", "d/x": b"y"}, t(3))
    p.add("M1", ["X1", "Y1"], {"a": b"x", "d/x": b"y"}, t(4))
    p.add("M2", ["Y1", "X1"], {"a": b"x", "d/x": b"y"}, t(5))
    p.add("X2", ["M1"], {"a": b"x2", "d/x": b"y"}, t(6))
    p.add("Y2", ["M2"], {"a": b"x", "d/x": b"y2"}, t(7))
    p.refs = {"refs/heads/main": "X2", "refs/heads/other": "Y2"}
    return p


@pytest.mark.parametrize("equal_times", [False, True], ids=["dated", "same-second"])
def test_criss_cross_merges(repo: Repository, tmp_path: Path, equal_times: bool) -> None:
    ids = build(repo, criss_cross(equal_times))
    base = repo.merge_base("main", "other")
    assert base in (ids["X1"], ids["Y1"])
    assert repo.merge_base("other", "main") in (ids["X1"], ids["Y1"])
    check_against_git(repo, tmp_path, ids.values(), paths=(None, "a", "d", "d/x"))


def test_octopus_merge(repo: Repository, tmp_path: Path) -> None:
    p = Plan()
    p.add("O", [], {"a": b"0", "b": b"0", "c": b"0"}, 1)
    p.add("A", ["O"], {"a": b"A", "b": b"0", "c": b"0"}, 2)
    p.add("B", ["O"], {"a": b"0", "b": b"B", "c": b"0"}, 3)
    p.add("C", ["O"], {"a": b"0", "b": b"0", "c": b"C"}, 4)
    # Takes every side's change: TREESAME to no parent for a, b or c.
    p.add("M", ["A", "B", "C"], {"a": b"A", "b": b"B", "c": b"C"}, 5)
    # Keeps only C's tree: TREESAME to its third parent.
    p.add("N", ["A", "B", "C"], {"a": b"0", "b": b"0", "c": b"C"}, 6)
    p.add("top", ["M", "N"], {"a": b"A", "b": b"B", "c": b"C", "d": b"1"}, 7)
    p.refs = {"refs/heads/main": "top"}
    ids = build(repo, p)
    assert log_ids(repo, "main", path="c") == [ids["C"], ids["O"]]
    assert log_ids(repo, ids["M"], path="a") == [ids["A"], ids["O"]]
    check_against_git(repo, tmp_path, ids.values(), paths=(None, "a", "b", "c", "d"))


def test_treesame_merges(repo: Repository, tmp_path: Path) -> None:
    """A merge keeping one side's version of a path is hidden and only that side is
    followed; a merge changing the path against both sides is shown."""
    p = Plan()
    p.add("O", [], {"p": b"1", "q": b"1"}, 1)
    p.add("M1", ["O"], {"p": b"1", "q": b"2"}, 2)
    p.add("S1", ["O"], {"p": b"2", "q": b"1"}, 3)
    p.add("keep_side", ["M1", "S1"], {"p": b"2", "q": b"2"}, 4)
    p.add("keep_main", ["M1", "S1"], {"p": b"1", "q": b"2"}, 5)
    p.add("evil", ["M1", "S1"], {"p": b"3", "q": b"2"}, 6)
    p.refs = {"refs/heads/a": "keep_side", "refs/heads/b": "keep_main", "refs/heads/c": "evil"}
    ids = build(repo, p)
    # TREESAME to the side (second parent): hidden, follows only S1.
    assert log_ids(repo, "a", path="p") == [ids["S1"], ids["O"]]
    # TREESAME to the first parent: hidden, and S1 is never reached.
    assert log_ids(repo, "b", path="p") == [ids["O"]]
    # Changed against both: shown, both parents followed.
    assert log_ids(repo, "c", path="p") == [ids["evil"], ids["S1"], ids["O"]]
    assert log_ids(repo, "c", path="q") == [ids["M1"], ids["O"]]
    check_against_git(repo, tmp_path, ["a", "b", "c", *ids.values()], paths=(None, "p", "q"))


def test_equal_timestamps_keep_queue_order(repo: Repository, tmp_path: Path) -> None:
    p = Plan()
    p.add("O", [], {"a": b"0"}, 0)
    for side in "ABC":
        p.add(f"{side}1", ["O"], {"a": side.encode()}, 0)
        p.add(f"{side}2", [f"{side}1"], {"a": side.encode() * 2}, 0)
    p.add("M", ["A2", "B2", "C2"], {"a": b"m"}, 0)
    p.add("N", ["M", "B1"], {"a": b"n"}, 0)
    p.refs = {"refs/heads/main": "N"}
    ids = build(repo, p)
    order = ["N", "M", "B1", "A2", "B2", "C2", "O", "A1", "C1"]
    assert log_ids(repo, "main") == [ids[n] for n in order]
    check_against_git(repo, tmp_path, ids.values(), paths=(None, "a"))


def test_clock_skew(repo: Repository, tmp_path: Path) -> None:
    """Children older than their parents: git's date-ordered walk shows them late, and
    merge-base must still find the right commit."""
    p = Plan()
    p.add("O", [], {"a": b"0"}, 1000)
    p.add("A1", ["O"], {"a": b"1"}, 10)  # much older than its parent
    p.add("A2", ["A1"], {"a": b"2", "b": b"1"}, 2000)
    p.add("B1", ["O"], {"a": b"0", "c": b"1"}, 1500)
    p.add("B2", ["B1"], {"a": b"0", "c": b"2"}, 5)
    p.add("M", ["A2", "B2"], {"a": b"2", "b": b"1", "c": b"2"}, 3000)
    p.add("X", ["A1"], {"a": b"x"}, 1)
    p.add("Y", ["X", "B1"], {"a": b"x", "c": b"1"}, 0)
    p.refs = {"refs/heads/main": "M", "refs/heads/y": "Y"}
    ids = build(repo, p)
    check_against_git(repo, tmp_path, ids.values(), paths=(None, "a", "b", "c"))


def test_files_directories_and_readded_paths(repo: Repository, tmp_path: Path) -> None:
    p = Plan()
    p.add("add", [], {"f": b"file", "d/x": b"1"}, 1)
    p.add("dir", ["add"], {"f/g": b"now a dir", "d/x": b"1"}, 2)
    p.add("del", ["dir"], {"d/x": b"1"}, 3)
    p.add("other", ["del"], {"d/x": b"2"}, 4)
    p.add("readd", ["other"], {"f": b"file", "d/x": b"2"}, 5)
    p.add("deldir", ["readd"], {"f": b"file"}, 6)
    p.add("readddir", ["deldir"], {"f": b"file", "d/y": b"1"}, 7)
    p.refs = {"refs/heads/main": "readddir"}
    ids = build(repo, p)
    assert log_ids(repo, "main", path="f") == [ids[n] for n in ("readd", "del", "dir", "add")]
    assert log_ids(repo, "main", path="f/g") == [ids["del"], ids["dir"]]
    assert log_ids(repo, "main", path="d") == [
        ids[n] for n in ("readddir", "deldir", "other", "add")
    ]
    check_against_git(
        repo, tmp_path, ids.values(), paths=(None, "f", "f/g", "d", "d/x", "d/y", "fx")
    )


def test_unrelated_roots(repo: Repository, tmp_path: Path) -> None:
    p = Plan()
    p.add("r1", [], {"a": b"1"}, 1)
    p.add("r2", [], {"b": b"1"}, 2)
    p.add("r3", [], {}, 3)  # the empty tree
    p.add("a2", ["r1"], {"a": b"2"}, 4)
    p.add("m", ["a2", "r2"], {"a": b"2", "b": b"1"}, 5)
    p.add("m3", ["m", "r3"], {"a": b"2", "b": b"1"}, 6)
    p.refs = {"refs/heads/main": "m3", "refs/heads/lone": "r2"}
    ids = build(repo, p)
    assert repo.merge_base("lone", ids["r1"]) is None
    assert not repo.is_ancestor(ids["r1"], "lone")
    check_against_git(repo, tmp_path, ids.values(), paths=(None, "a", "b"))


@pytest.mark.parametrize(
    ("seed", "same_time"), [(1, False), (2, False), (3, True)], ids=["1", "2", "3-same-time"]
)
def test_random_dags_match_git(
    repo: Repository, tmp_path: Path, seed: int, same_time: bool
) -> None:
    rng = random.Random(seed * 7919)
    plan = random_dag(seed, rng.randint(60, 150), same_time=same_time)
    ids = build(repo, plan)
    revs = ["main", *(ids[n] for n in sample(rng, ids, 3))]
    exported = check_against_git(repo, tmp_path, revs, limit=rng.choice((1, 2, 5)), pairs=0)
    # merge-base and is-ancestor over random pairs of the whole history.
    for a, b in (sample(rng, ids, 2) for _ in range(25)):
        ha, hb = ids[a], ids[b]
        assert repo.merge_base(ha, hb) == git_merge_base(exported, ha, hb), (seed, a, b)
        assert repo.is_ancestor(ha, hb) == git_is_ancestor(exported, ha, hb), (seed, a, b)


# -- reads are windowed, not whole-history -------------------------------------------------


class CountingIndex:
    """A CommitIndexStore that counts calls and rows of the wrapped one."""

    def __init__(self, inner: CommitIndexStore) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self.rows: Counter[str] = Counter()

    def add(self, entry: IndexEntry, changed: Mapping[int, Iterable[str]]) -> None:
        self.inner.add(entry, changed)

    def add_many(self, entries: Sequence[tuple[IndexEntry, Mapping[int, Iterable[str]]]]) -> None:
        self.inner.add_many(entries)

    def get_many(self, oids: Iterable[ObjectId]) -> dict[ObjectId, IndexEntry]:
        out = self.inner.get_many(oids)
        self.calls["get_many"] += 1
        self.rows["get_many"] += len(out)
        return out

    def ancestry(
        self, oids: Sequence[ObjectId], min_generation: int = 0
    ) -> dict[ObjectId, IndexEntry]:
        out = self.inner.ancestry(oids, min_generation)
        self.calls["ancestry"] += 1
        self.rows["ancestry"] += len(out)
        return out

    def window(self, min_generation: int, max_generation: int) -> dict[ObjectId, IndexEntry]:
        # Counted with ancestry: both are the bulk loads of index rows.
        out = self.inner.window(min_generation, max_generation)
        self.calls["ancestry"] += 1
        self.rows["ancestry"] += len(out)
        return out

    def touching(self, path: str) -> set[tuple[ObjectId, int]]:
        self.calls["touching"] += 1
        return self.inner.touching(path)

    def iter_all(self) -> Iterable[IndexEntry]:
        return self.inner.iter_all()

    def changed_paths(self, oid: ObjectId) -> dict[int, set[str]]:
        return self.inner.changed_paths(oid)


def test_log_reads_windows_not_the_whole_history(repo: Repository) -> None:
    n = 300
    p = Plan()
    p.add("c0", [], {"a": b"0"}, 0)
    for i in range(1, n):
        # A side branch merged every 50 commits keeps the walk honest about merges.
        if i % 50 == 0:
            p.add(f"s{i}", [f"c{i - 40}"], {"a": b"side"}, i)
            p.add(f"c{i}", [f"c{i - 1}", f"s{i}"], {"a": str(i).encode()}, i)
        else:
            p.add(f"c{i}", [f"c{i - 1}"], {"a": str(i).encode()}, i)
    p.refs = {"refs/heads/main": f"c{n - 1}"}
    ids = build(repo, p)
    top = ObjectId(bytes.fromhex(ids[f"c{n - 1}"]))
    with repo._store.backend.unit(repo._id) as unit:
        counting = CountingIndex(unit.index)
        assert len(list(history.log(counting, top, limit=5))) == 5
        assert counting.rows["ancestry"] < 60
        counting = CountingIndex(unit.index)
        everything = list(history.log(counting, top))
        assert len(everything) == n + n // 50 - 1
        # Doubling windows: O(log n) queries for the whole history.
        assert counting.calls["ancestry"] + counting.calls["get_many"] <= 8
        counting = CountingIndex(unit.index)
        old = ObjectId(bytes.fromhex(ids["c10"]))
        assert history.is_ancestor(counting, old, top)
        assert not history.is_ancestor(counting, top, old)
        assert counting.calls["ancestry"] == 1
        counting = CountingIndex(unit.index)
        side = ObjectId(bytes.fromhex(ids["s250"]))  # forked from c210
        base = history.merge_base(counting, side, ObjectId(bytes.fromhex(ids["c230"])))
        assert base == ObjectId(bytes.fromhex(ids["c210"]))
        assert counting.rows["ancestry"] < 200


class PartlyCachedIndex(CountingIndex):
    """A CountingIndex whose ``cached_row`` and ``cached_chain`` (the query cache's
    capabilities) know only some rows, as a cache does that saw the newest commits made
    in this process."""

    def __init__(self, inner: CommitIndexStore, known: Mapping[ObjectId, IndexEntry]) -> None:
        super().__init__(inner)
        self.known = known

    def cached_row(self, oid: ObjectId) -> IndexEntry | None:
        self.calls["cached_row"] += 1
        return self.known.get(oid)

    def cached_chain(self, oid: ObjectId, limit: int) -> list[IndexEntry]:
        # QueryCache.get_index_chain's contract, over the known rows.
        self.calls["cached_chain"] += 1
        out: list[IndexEntry] = []
        while len(out) < limit and oid in self.known:
            out.append(self.known[oid])
            if len(out[-1].parents) != 1:
                break
            oid = out[-1].parents[0]
        return out


def test_walks_through_cached_rows_then_windows(repo: Repository) -> None:
    n = 900
    p = Plan()
    p.add("c0", [], {"a": b"0"}, 0)
    for i in range(1, n):
        parents = [f"c{i - 1}", f"s{i}"] if i % 50 == 0 else [f"c{i - 1}"]
        if i % 50 == 0:
            p.add(f"s{i}", [f"c{i - 40}"], {"a": b"side"}, i)
        p.add(f"c{i}", parents, {"a": str(i).encode()}, i)
    p.add("f0", ["c120"], {"b": b"fork"}, n)
    for i in range(1, 200):
        p.add(f"f{i}", [f"f{i - 1}"], {"b": str(i).encode()}, n + i)
    p.refs = {"refs/heads/main": f"c{n - 1}", "refs/heads/fork": "f199"}
    ids = build(repo, p)
    top = ObjectId(bytes.fromhex(ids[f"c{n - 1}"]))
    fork = ObjectId(bytes.fromhex(ids["f199"]))
    with repo._store.backend.unit(repo._id) as unit:
        plain = CountingIndex(unit.index)
        everything = list(history.log(plain, top))
        rows = plain.inner.get_many(everything + list(plain.inner.ancestry([fork], 0)))
        # The newest 150 commits of main and of the fork are "cached"; the rest is not.
        newest = set(everything[:150]) | {
            ObjectId(bytes.fromhex(ids[f"f{i}"])) for i in range(50, 200)
        }
        known = {oid: rows[oid] for oid in newest}
        partly = PartlyCachedIndex(unit.index, known)
        assert list(history.log(partly, top)) == everything
        # Below the cached rows the windows still double: a few queries, not one per band.
        assert partly.calls["ancestry"] + partly.calls["get_many"] <= 8
        partly = PartlyCachedIndex(unit.index, known)
        base = history.merge_bases(partly, top, fork)
        assert base == history.merge_bases(CountingIndex(unit.index), top, fork)
        assert base == [ObjectId(bytes.fromhex(ids["c120"]))]
        # The fork's chain is linear: the cached rows and the windows below them answer.
        assert history.merge_bases(partly, fork, ObjectId(bytes.fromhex(ids["f10"]))) == [
            ObjectId(bytes.fromhex(ids["f10"]))
        ]


# -- errors ---------------------------------------------------------------------------------


def test_log_rejects_bad_arguments(repo: Repository) -> None:
    repo.commit("main", {"a": b"1"}, message="m\n", author=sig(0))
    for bad_path in ("", "/a", "a/", "a//b", "../a", ".git", "a\0b", 5):
        with pytest.raises(InvalidInput):
            list(repo.log("main", path=bad_path))  # type: ignore[arg-type]
    for bad_limit in (-1, 1.5, "3", True):
        with pytest.raises(InvalidInput):
            list(repo.log("main", limit=bad_limit))  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        list(repo.log("nope"))
    with pytest.raises(NotFound):
        repo.merge_base("main", "nope")
    with pytest.raises(InvalidInput):
        repo.is_ancestor("main", "ma..in")
    assert log_ids(repo, "main", path="nope") == []


def test_empty_repository(repo: Repository) -> None:
    with pytest.raises(NotFound):
        list(repo.log())
    with pytest.raises(NotFound):
        repo.merge_base("HEAD", "HEAD")
