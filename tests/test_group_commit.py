"""Group commit (govc_db.db.branchlocks): commits queued for one branch written in one
transaction, each its own commit with its own parent, result and error; both backends."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

import govc_db
from govc_db import Repository, Settings, Signature, Store
from govc_db.db.branchlocks import BranchLocks
from govc_db.errors import GovcError, NothingToCommit, RefConflict

SIG = Signature("Writer", "writer@example.com", 1_700_000_000, 0)


def _open(db_url: str, group: int = 16) -> Store:
    store = govc_db.open(db_url, Settings(commit_group=group))
    store.upgrade()
    locks = store.branch_locks
    assert locks is not None
    locks.wait = 60.0  # nobody gives up waiting in these tests
    return store


def _queued_group(
    store: Store, repo: Repository, calls: list[Callable[[], str]]
) -> list[Future[str]]:
    """Start ``calls`` (commits to ``main``) while the branch's lock is held, wait until
    all of them are queued, then let them go: they are written as one group."""
    locks = store.branch_locks
    assert locks is not None
    key = (repo.id, "main")
    pool = ThreadPoolExecutor(len(calls))
    with locks.hold(key):
        futures = []
        for call in calls:
            futures.append(pool.submit(call))
            # One at a time, so the queue's order is the order of ``calls``.
            deadline = time.monotonic() + 60
            while locks.queued(key) < len(futures):
                assert time.monotonic() < deadline, "the commits did not queue"
                time.sleep(0.005)
    pool.shutdown(wait=True)
    return futures


def _commit(repo: Repository, path: str, data: bytes, **kw: object) -> Callable[[], str]:
    def call() -> str:
        return repo.commit("main", {path: data}, message=f"{path}\n", author=SIG, **kw)  # type: ignore[arg-type]

    return call


def test_one_group_each_its_own_commit(db_url: str) -> None:
    """Queued commits are written in one group: each caller gets its own commit, whose
    parent is the commit before it in the group, and the branch ends at the last."""
    with _open(db_url) as store:
        repo = store.create_repository("g")
        root = repo.commit("main", {"base.txt": b"0\n"}, message="root\n", author=SIG)
        calls = [_commit(repo, f"f{i}.txt", b"%d\n" % i) for i in range(6)]
        oids = [f.result() for f in _queued_group(store, repo, calls)]
        assert len(set(oids)) == 6
        for i, oid in enumerate(oids):
            info = repo.get_commit(oid)
            assert info.message == f"f{i}.txt\n"  # the caller's own commit
            assert info.parents == [oids[i - 1] if i else root]
        assert repo.branches()["main"] == oids[-1]
        assert [c.oid for c in repo.log("main")] == [*reversed(oids), root]
        assert {f.path for f in repo.walk("main")} == {"base.txt"} | {f"f{i}.txt" for i in range(6)}
        stats = store.metrics()["branch_locks"]
        assert stats["groups"] == 1 and stats["grouped"] == 6
        # The reflog (newest first) has one move per commit.
        moves = [e.new for e in repo.reflog("main")]
        assert moves[:6] == list(reversed(oids))


def test_a_later_member_builds_on_an_earlier_one(db_url: str) -> None:
    """A member changing a file an earlier member of its group created sees it."""
    with _open(db_url) as store:
        repo = store.create_repository("g")
        repo.commit("main", {"base.txt": b"0\n"}, message="root\n", author=SIG)
        calls = [
            _commit(repo, "a.txt", b"one\n"),
            _commit(repo, "a.txt", b"two\n"),
            lambda: repo.commit(
                "main", {"a.txt": None, "b.txt": b"b\n"}, message="mv\n", author=SIG
            ),
        ]
        oids = [f.result() for f in _queued_group(store, repo, calls)]
        assert repo.read(oids[0], "a.txt") == b"one\n"
        assert repo.read(oids[1], "a.txt") == b"two\n"
        assert {f.path for f in repo.walk(oids[2])} == {"base.txt", "b.txt"}
        assert store.metrics()["branch_locks"]["groups"] == 1


def test_a_failing_member_gets_its_error_the_others_land(db_url: str) -> None:
    """Members failing on their own (a stale expected_head, nothing to commit) get their
    error; the group is written again without them and the others land, chained."""
    with _open(db_url) as store:
        repo = store.create_repository("g")
        root = repo.commit("main", {"base.txt": b"0\n"}, message="root\n", author=SIG)
        calls = [
            _commit(repo, "f0.txt", b"0\n"),
            _commit(repo, "f1.txt", b"1\n", expected_head=root),  # f0 moved it
            _commit(repo, "f2.txt", b"2\n"),
            _commit(repo, "f0.txt", b"0\n"),  # the same content: nothing to commit
            _commit(repo, "f4.txt", b"4\n"),
        ]
        futures = _queued_group(store, repo, calls)
        with pytest.raises(RefConflict):
            futures[1].result()
        with pytest.raises(NothingToCommit):
            futures[3].result()
        landed = [futures[i].result() for i in (0, 2, 4)]
        assert [c.oid for c in repo.log("main")] == [*reversed(landed), root]
        assert repo.get_commit(landed[1]).parents == [landed[0]]
        assert store.metrics()["branch_locks"]["member_errors"] == 2


def test_many_threads_every_commit_lands(db_url: str) -> None:
    """Threads committing to one branch in a loop: every call lands exactly once, the
    history is linear and holds exactly the results the callers got."""
    with _open(db_url, group=4) as store:
        repo = store.create_repository("g")
        root = repo.commit("main", {"base.txt": b"0\n"}, message="root\n", author=SIG)
        results: dict[str, str] = {}
        errors: list[BaseException] = []
        start = threading.Barrier(8)

        def writer(w: int) -> None:
            start.wait()
            for i in range(12):
                path = f"w{w}/{i}.txt"
                try:
                    results[path] = _commit(repo, path, b"%d %d\n" % (w, i))()
                except GovcError as exc:  # pragma: no cover - reported below
                    errors.append(exc)

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        log = [c.oid for c in repo.log("main")]
        assert len(log) == 1 + 8 * 12 and log[-1] == root
        assert sorted(log[:-1]) == sorted(results.values())
        for path, oid in results.items():
            assert repo.get_commit(oid).message == f"{path}\n"
        stats = store.metrics()["branch_locks"]
        assert stats["acquired"] + stats["gave_up"] == 1 + 8 * 12
        assert len(store.branch_locks or ()) == 0


def test_a_hook_committing_on_the_writing_thread_does_not_wait_for_itself(
    db_url: str,
) -> None:
    """An event callback (run on the thread that wrote the group) that commits to the
    same branch again is not queued behind its own group."""
    with _open(db_url) as store:
        repo = store.create_repository("g")
        repo.commit("main", {"base.txt": b"0\n"}, message="root\n", author=SIG)
        follow_ups: list[str] = []

        def on_move(event: object) -> None:
            if len(follow_ups) < 2:
                follow_ups.append(_commit(repo, f"hook{len(follow_ups)}.txt", b"h\n")())

        store.subscribe(on_move, repository="g")
        oids = [
            f.result(timeout=120)
            for f in _queued_group(store, repo, [_commit(repo, f"f{i}", b"x") for i in range(3)])
        ]
        assert len(follow_ups) == 2
        log = {c.oid for c in repo.log("main")}
        assert set(oids) | set(follow_ups) <= log


def test_group_of_one_is_each_commit_alone(db_url: str) -> None:
    """``commit_group=1``: no group is ever formed."""
    with _open(db_url, group=1) as store:
        repo = store.create_repository("g")
        repo.commit("main", {"base.txt": b"0\n"}, message="root\n", author=SIG)
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: _commit(repo, f"f{i}", b"x")(), range(8)))
        assert store.metrics()["branch_locks"]["groups"] == 0
        assert len(list(repo.log("main"))) == 9


def test_branch_locks_group_setting_is_checked() -> None:
    with pytest.raises(GovcError):
        Settings(commit_group=0)
    assert BranchLocks(group=3).group == 3
