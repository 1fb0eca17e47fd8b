"""Concurrent commits to one branch: several processes on PostgreSQL, threads on SQLite.

Each writer reports what every call returned (a commit id, or RefConflict); the branch's
history must be exactly the set of calls that reported success, nothing lost and nothing
extra, and ``verify()`` must be clean afterwards.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa

import govc_db
from govc_db import Repository, Settings, Signature, Store
from govc_db.db.branchlocks import BranchLocks
from govc_db.errors import GovcError, RefConflict
from govc_db.models import Base
from govc_db.objects import TYPE_NUMBERS, hash_object

WRITERS = 4
COMMITS = 15
SIG = Signature("Writer", "writer@example.com", 1_700_000_000, 0)
# Disjoint writers must never give up: each lost race means another commit landed, so
# a generous bound is still finite and keeps the test independent of scheduling luck.
SETTINGS = Settings(commit_rebase_attempts=1000)


@dataclass(frozen=True)
class Outcome:
    """What one commit call did: ``kind`` is "ok", "conflict" or "error"."""

    worker: int
    seq: int
    kind: str
    oid: str
    path: str
    data: bytes
    detail: str = ""


def _path(worker: int, seq: int, same_path: bool) -> str:
    return "shared.txt" if same_path else f"w{worker}/f{seq:02d}.txt"


def run_commits(
    repo: Repository, worker: int, count: int, *, branch: str, same_path: bool
) -> list[Outcome]:
    """Make ``count`` commits on ``branch`` and record each call's outcome."""
    out: list[Outcome] = []
    for seq in range(count):
        path = _path(worker, seq, same_path)
        data = f"worker {worker} commit {seq}\n".encode()
        try:
            oid = repo.commit(branch, {path: data}, message=f"w{worker} c{seq}\n", author=SIG)
        except RefConflict as exc:
            out.append(Outcome(worker, seq, "conflict", "", path, data, str(exc)))
        except GovcError as exc:
            out.append(
                Outcome(worker, seq, "error", "", path, data, f"{type(exc).__name__}: {exc}")
            )
        else:
            out.append(Outcome(worker, seq, "ok", oid, path, data))
    return out


def process_worker(
    url: str,
    worker: int,
    count: int,
    same_path: bool,
    barrier: Any,
    results: Any,
) -> None:
    """Child process body (spawned): its own Store, then commits; reports via ``results``."""
    outcomes: list[Outcome] = []
    try:
        with govc_db.open(url, SETTINGS) as store:
            repo = store.repository("conc")
            barrier.wait(timeout=120)
            outcomes = run_commits(repo, worker, count, branch="main", same_path=same_path)
    except BaseException as exc:  # reported to the parent, which fails the test
        outcomes.append(Outcome(worker, -1, "error", "", "", b"", f"crash: {exc!r}"))
    results.put(outcomes)


def setup_repo(store: Store) -> tuple[Repository, str]:
    repo = store.create_repository("conc")
    root = repo.commit("main", {"init.txt": b"init\n"}, message="init\n", author=SIG)
    return repo, root


def check_history(
    repo: Repository, branch: str, root: str, outcomes: list[Outcome], *, same_path: bool
) -> None:
    """The branch history is exactly the successful calls, each writer's in its order."""
    errors = [o for o in outcomes if o.kind == "error"]
    assert not errors, errors[:3]
    assert len(outcomes) == WRITERS * COMMITS
    ok = [o for o in outcomes if o.kind == "ok"]
    if not same_path:
        assert len(ok) == WRITERS * COMMITS, [o for o in outcomes if o.kind != "ok"][:3]
    assert ok, "at least the first commit to reach the ref must land"

    log = [c.oid for c in repo.log(branch)]
    assert log[-1] == root
    landed = log[:-1]
    assert len(landed) == len(set(landed)) == len(ok)
    assert set(landed) == {o.oid for o in ok}
    # Linear history: every commit has exactly one parent, the one below it.
    for info in repo.log(branch):
        assert len(info.parents) == (0 if info.oid == root else 1)
    # Each writer's commits appear in the order it made them (the log is newest first).
    position = {oid: i for i, oid in enumerate(landed)}
    for w in range(WRITERS):
        mine = [position[o.oid] for o in ok if o.worker == w]
        assert mine == sorted(mine, reverse=True)

    by_oid = {o.oid: o for o in ok}
    if same_path:
        assert repo.read(branch, "shared.txt") == by_oid[landed[0]].data
    else:
        files = {e.path: e.oid for e in repo.walk(branch)}
        expected = {o.path: hash_object(b"blob", o.data).hex() for o in ok}
        expected["init.txt"] = hash_object(b"blob", b"init\n").hex()
        assert files == expected
    report = repo.verify()
    assert report.ok, report.problems[:5]
    assert report.problems == []


def assert_no_leftovers(store: Store, repo: Repository, outcomes: list[Outcome]) -> None:
    """Only the landed commits exist: calls that failed with RefConflict rolled back.

    (Not checked for disjoint writers: a commit re-applied on a moved head leaves the
    commit it first built, now unreachable, in the same transaction.)
    """
    landed = 1 + sum(o.kind == "ok" for o in outcomes)
    objects = Base.metadata.tables["govc_objects"]
    commits = Base.metadata.tables["govc_commits"]
    reflog = Base.metadata.tables["govc_reflog"]
    commit_type = TYPE_NUMBERS[b"commit"]
    with store.engine.connect() as conn:

        def count(table: sa.Table, *where: Any) -> int:
            query = sa.select(sa.func.count()).select_from(table)
            return int(conn.execute(query.where(table.c.repo_id == repo._id, *where)).scalar_one())

        assert count(objects, objects.c.type == commit_type) == landed
        assert count(commits) == landed
        assert count(reflog, reflog.c.ref == "refs/heads/main") == landed


# -- PostgreSQL: processes ------------------------------------------------------------------


def run_processes(url: str, *, same_path: bool) -> list[Outcome]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WRITERS)
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=process_worker,
            args=(url, w, COMMITS, same_path, barrier, results),
            name=f"govc-writer-{w}",
        )
        for w in range(WRITERS)
    ]
    outcomes: list[Outcome] = []
    try:
        for p in procs:
            p.start()
        # Drain the queue before joining: a child blocks on exit until its data is read.
        for _ in procs:
            try:
                outcomes.extend(results.get(timeout=300))
            except queue.Empty:
                pytest.fail("a writer process did not report back in time")
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0, (p.name, p.exitcode)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(timeout=10)
            p.close()
        results.close()
        results.join_thread()
    return outcomes


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[Store]:
    with govc_db.open(pg_url, SETTINGS) as store:
        yield store


def test_pg_processes_disjoint_paths_all_land(pg_url: str, pg_store: Store) -> None:
    repo, root = setup_repo(pg_store)
    outcomes = run_processes(pg_url, same_path=False)
    check_history(repo, "main", root, outcomes, same_path=False)


def test_pg_processes_same_path_land_or_conflict(pg_url: str, pg_store: Store) -> None:
    repo, root = setup_repo(pg_store)
    outcomes = run_processes(pg_url, same_path=True)
    check_history(repo, "main", root, outcomes, same_path=True)
    # A call that lost with RefConflict left nothing behind: every commit object, index
    # row and reflog entry of the repository belongs to a commit in the history.
    assert_no_leftovers(pg_store, repo, outcomes)


# -- SQLite: threads ------------------------------------------------------------------------


@pytest.fixture
def sqlite_store(sqlite_url: str) -> Iterator[Store]:
    with govc_db.open(sqlite_url, SETTINGS) as store:
        yield store


def run_threads(repo: Repository, branches: list[str], *, same_path: bool) -> list[list[Outcome]]:
    barrier = threading.Barrier(len(branches))

    def body(worker: int) -> list[Outcome]:
        barrier.wait(timeout=60)
        return run_commits(repo, worker, COMMITS, branch=branches[worker], same_path=same_path)

    with ThreadPoolExecutor(max_workers=len(branches)) as pool:
        return list(pool.map(body, range(len(branches))))


def test_sqlite_threads_distinct_branches(sqlite_store: Store) -> None:
    repo, root = setup_repo(sqlite_store)
    branches = [f"b{w}" for w in range(WRITERS)]
    for b in branches:
        repo.create_branch(b, "main")
    per_worker = run_threads(repo, branches, same_path=False)
    for w, outcomes in enumerate(per_worker):
        # Every call on its own branch succeeds; "database is locked" would show as an error.
        assert [o.kind for o in outcomes] == ["ok"] * COMMITS, outcomes[:3]
        log = [c.oid for c in repo.log(branches[w])]
        assert log == [o.oid for o in reversed(outcomes)] + [root]
        paths = {e.path for e in repo.walk(branches[w])}
        assert paths == {"init.txt"} | {o.path for o in outcomes}
    assert repo.resolve("main") == root
    report = repo.verify()
    assert report.ok, report.problems[:5]


@pytest.mark.parametrize("same_path", [False, True], ids=["disjoint", "same-path"])
def test_sqlite_threads_one_branch(sqlite_store: Store, same_path: bool) -> None:
    repo, root = setup_repo(sqlite_store)
    per_worker = run_threads(repo, ["main"] * WRITERS, same_path=same_path)
    outcomes = [o for batch in per_worker for o in batch]
    check_history(repo, "main", root, outcomes, same_path=same_path)
    assert_no_leftovers(sqlite_store, repo, outcomes)


# -- one process, one branch: commits wait for each other, not race (both backends) -------


@pytest.mark.parametrize("serialize", [True, False], ids=["serialized", "racing"])
def test_threads_one_branch_all_land(db_url: str, serialize: bool) -> None:
    """Threads of one Store committing disjoint paths to one branch: every call lands and
    the history is exactly the successes; serialized, no speculation ever fails (each
    commit found the head the previous one left) and every commit took the branch lock."""
    settings = Settings(commit_rebase_attempts=1000, commit_serialize=serialize)
    with govc_db.open(db_url, settings) as store:
        repo, root = setup_repo(store)
        per_worker = run_threads(repo, ["main"] * WRITERS, same_path=False)
        outcomes = [o for batch in per_worker for o in batch]
        check_history(repo, "main", root, outcomes, same_path=False)
        if serialize:
            locks = store.branch_locks
            assert locks is not None
            taken = locks.stats.get_stats()
            # Every commit took the lock, unless it gave up waiting (a holder slower than
            # BranchLocks.wait): only those can have raced.
            assert taken["acquired"] + taken["gave_up"] == 1 + WRITERS * COMMITS
            fallbacks = store.backend.pipeline.get_stats()["fallbacks_expectation"]
            assert fallbacks <= taken["gave_up"]
            assert len(locks) == 0  # nothing kept once nobody holds or waits
            assert "branch_locks" in store.metrics()
        else:
            assert store.branch_locks is None
            assert "branch_locks" not in store.metrics()


def test_transaction_commits_do_not_wait_for_the_branch_lock(db_url: str) -> None:
    """A commit inside store.transaction() takes no branch lock: a thread whose open
    transaction already moved the branch (and holds it in the database) commits again
    while another thread holds the branch lock and waits in the database for that
    transaction -- both finish, neither waits for the other forever."""
    with govc_db.open(db_url, SETTINGS) as store:
        repo, root = setup_repo(store)
        locks = store.branch_locks
        assert locks is not None
        moved = threading.Event()
        other: list[str] = []

        def outside() -> None:
            moved.wait(timeout=60)
            other.append(repo.commit("main", {"b.txt": b"b\n"}, message="b\n", author=SIG))

        with ThreadPoolExecutor(max_workers=1) as pool:
            waiting = pool.submit(outside)
            with store.transaction():
                first = repo.commit("main", {"a1.txt": b"1\n"}, message="a1\n", author=SIG)
                moved.set()
                # The other thread holds the branch lock (then waits in the database).
                for _ in range(6000):
                    if len(locks) == 1:
                        break
                    threading.Event().wait(0.01)
                assert len(locks) == 1
                second = repo.commit("main", {"a2.txt": b"2\n"}, message="a2\n", author=SIG)
            waiting.result(timeout=120)
        # Nobody waited for the lock: the transaction's commits did not take it.
        assert locks.stats.get_stats()["waited"] == 0
        log = [c.oid for c in repo.log("main")]
        assert log == [other[0], second, first, root]
        assert {e.path for e in repo.walk("main")} == {"init.txt", "a1.txt", "a2.txt", "b.txt"}
        assert len(locks) == 0


def test_a_commit_waits_for_the_branch_lock_only_so_long() -> None:
    """Past ``wait`` seconds a waiter goes ahead without the lock (the compare-and-swap
    still decides), so a stuck holder never holds up the queue behind it for long."""
    locks = BranchLocks(wait=0.05)
    holding = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with locks.hold((1, "main")):
            holding.set()
            release.wait(timeout=60)

    with ThreadPoolExecutor(max_workers=1) as pool:
        held = pool.submit(holder)
        assert holding.wait(timeout=60)
        ran = []
        with locks.hold((1, "main")):
            ran.append(True)
        with locks.hold((1, "dev")):  # another branch never waits
            ran.append(True)
        release.set()
        held.result(timeout=60)
    assert ran == [True, True]
    stats = locks.stats.get_stats()
    assert {k: stats[k] for k in ("acquired", "waited", "gave_up")} == {
        "acquired": 2,
        "waited": 1,
        "gave_up": 1,
    }
    assert len(locks) == 0
