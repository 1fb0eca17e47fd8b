"""store.subscribe(): RefUpdated events after every committed ref move, and only then."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

import govc_db
from govc_db import (
    AlreadyExists,
    InvalidInput,
    NotFound,
    RefConflict,
    RefUpdated,
    Repository,
    Signature,
    Store,
)

SIG = Signature("Ada Lovelace", "ada@example.com", 1_700_000_000, 0)


class Recorder:
    """A subscriber callback that keeps every event it receives."""

    def __init__(self) -> None:
        self.events: list[RefUpdated] = []

    def __call__(self, event: RefUpdated) -> None:
        self.events.append(event)

    def take(self) -> list[RefUpdated]:
        out, self.events = self.events, []
        return out


@pytest.fixture
def repo(store: Store) -> Repository:
    return store.create_repository("events")


def commit(repo: Repository, branch: str, path: str, data: bytes) -> str:
    return repo.commit(branch, {path: data}, message=f"{path}\n", author=SIG)


def test_every_ref_move_is_delivered(store: Store, repo: Repository) -> None:
    rec = Recorder()
    store.subscribe(rec)
    r = repo.name

    c1 = commit(repo, "main", "a", b"1")
    assert rec.take() == [RefUpdated(r, "refs/heads/main", None, c1)]
    c2 = commit(repo, "main", "a", b"2")
    assert rec.take() == [RefUpdated(r, "refs/heads/main", c1, c2)]

    repo.create_branch("topic", c1)
    assert rec.take() == [RefUpdated(r, "refs/heads/topic", None, c1)]
    repo.move_branch("topic", c2)
    assert rec.take() == [RefUpdated(r, "refs/heads/topic", c1, c2)]
    c3 = commit(repo, "topic", "b", b"t")
    assert rec.take() == [RefUpdated(r, "refs/heads/topic", c2, c3)]
    repo.move_branch("topic", c1, force=True)
    assert rec.take() == [RefUpdated(r, "refs/heads/topic", c3, c1)]
    repo.delete_branch("topic")
    assert rec.take() == [RefUpdated(r, "refs/heads/topic", c1, None)]

    repo.create_tag("v1", c1)
    assert rec.take() == [RefUpdated(r, "refs/tags/v1", None, c1)]
    tag = repo.create_tag("v2", c2, message="release\n", tagger=SIG)
    assert rec.take() == [RefUpdated(r, "refs/tags/v2", None, tag)]
    repo.delete_tag("v1")
    assert rec.take() == [RefUpdated(r, "refs/tags/v1", c1, None)]

    with repo.changes("main", message="builder\n", author=SIG) as c:
        c.write("c", b"built")
    assert rec.take() == [RefUpdated(r, "refs/heads/main", c2, c.oid)]


def test_reads_and_no_op_moves_publish_nothing(store: Store, repo: Repository) -> None:
    c1 = commit(repo, "main", "a", b"1")
    rec = Recorder()
    store.subscribe(rec)
    repo.read("main", "a")
    list(repo.log())
    repo.branches()
    repo.verify()
    repo.move_branch("main", c1)  # already there
    assert rec.events == []


def test_filtering_by_repository(store: Store, repo: Repository) -> None:
    other = store.create_repository("other")
    mine, everything = Recorder(), Recorder()
    store.subscribe(mine, repository=repo.name)
    store.subscribe(everything)
    a = commit(repo, "main", "a", b"1")
    b = commit(other, "main", "b", b"2")
    assert mine.events == [RefUpdated(repo.name, "refs/heads/main", None, a)]
    assert everything.events == [
        RefUpdated(repo.name, "refs/heads/main", None, a),
        RefUpdated("other", "refs/heads/main", None, b),
    ]


def test_no_event_on_a_failed_call(store: Store, repo: Repository) -> None:
    c1 = commit(repo, "main", "a", b"1")
    c2 = commit(repo, "main", "a", b"2")
    repo.create_branch("topic", c1)
    repo.create_tag("v1", c1)
    rec = Recorder()
    store.subscribe(rec)
    failing: list[tuple[type[Exception], Callable[[], object]]] = [
        (
            RefConflict,
            lambda: repo.commit("main", {"x": b"x"}, message="m\n", author=SIG, expected_head=c1),
        ),
        (InvalidInput, lambda: repo.commit("main", {"a": b"2"}, message="m\n", author=SIG)),
        (NotFound, lambda: repo.commit("main", {"missing": None}, message="m\n", author=SIG)),
        (NotFound, lambda: repo.commit("nope", {"x": b"x"}, message="m\n", author=SIG)),
        (InvalidInput, lambda: repo.commit("main", {"../x": b"x"}, message="m\n", author=SIG)),
        (AlreadyExists, lambda: repo.create_branch("topic", c2)),
        (AlreadyExists, lambda: repo.create_branch("topic/sub", c2)),
        (NotFound, lambda: repo.create_branch("new", "no-such-rev")),
        (RefConflict, lambda: repo.move_branch("topic", c2, expected=c2)),
        (RefConflict, lambda: repo.move_branch("main", c1)),
        (NotFound, lambda: repo.move_branch("nope", c1)),
        (InvalidInput, lambda: repo.delete_branch("main")),
        (RefConflict, lambda: repo.delete_branch("topic", expected=c2)),
        (NotFound, lambda: repo.delete_branch("nope")),
        (AlreadyExists, lambda: repo.create_tag("v1", c2)),
        (AlreadyExists, lambda: repo.create_tag("v1", c2, message="m\n", tagger=SIG)),
        (NotFound, lambda: repo.delete_tag("nope")),
        (InvalidInput, lambda: repo.create_tag("bad..name", c2)),
    ]
    for error, call in failing:
        with pytest.raises(error):
            call()
    assert rec.events == []
    assert repo.branches() == {"main": c2, "topic": c1}


def test_failing_subscriber_does_not_break_the_write(
    store: Store, repo: Repository, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(event: RefUpdated) -> None:
        raise RuntimeError("subscriber bug")

    before, after = Recorder(), Recorder()
    store.subscribe(before)
    store.subscribe(explode)
    store.subscribe(after)
    with caplog.at_level(logging.ERROR, logger="govc_db"):
        c1 = commit(repo, "main", "a", b"1")
    assert repo.branches() == {"main": c1}
    assert before.events == after.events == [RefUpdated(repo.name, "refs/heads/main", None, c1)]
    assert "subscriber bug" in caplog.text
    # The store stays usable.
    c2 = commit(repo, "main", "a", b"2")
    assert after.events[-1] == RefUpdated(repo.name, "refs/heads/main", c1, c2)


def test_unsubscribe(store: Store, repo: Repository) -> None:
    rec, kept = Recorder(), Recorder()
    sub = store.subscribe(rec)
    store.subscribe(kept)
    commit(repo, "main", "a", b"1")
    sub.close()
    sub.close()  # idempotent
    commit(repo, "main", "a", b"2")
    assert len(rec.events) == 1
    assert len(kept.events) == 2
    with store.subscribe(rec):
        commit(repo, "main", "a", b"3")
    commit(repo, "main", "a", b"4")
    assert len(rec.events) == 2
    assert len(kept.events) == 4


def test_events_arrive_after_the_transaction_committed(
    store: Store, repo: Repository, db_url: str
) -> None:
    seen: list[tuple[RefUpdated, dict[str, str], dict[str, str]]] = []
    with govc_db.open(db_url) as observer:
        watched = observer.repository(repo.name)

        def look(event: RefUpdated) -> None:
            # Another Store (another connection) must already see the new state.
            seen.append((event, watched.branches(), watched.tags()))

        store.subscribe(look)
        c1 = commit(repo, "main", "a", b"1")
        repo.create_branch("topic", c1)
        tag = repo.create_tag("v1", c1, message="m\n", tagger=SIG)
        repo.delete_branch("topic")
    assert seen == [
        (RefUpdated(repo.name, "refs/heads/main", None, c1), {"main": c1}, {}),
        (
            RefUpdated(repo.name, "refs/heads/topic", None, c1),
            {"main": c1, "topic": c1},
            {},
        ),
        (
            RefUpdated(repo.name, "refs/tags/v1", None, tag),
            {"main": c1, "topic": c1},
            {"v1": tag},
        ),
        (RefUpdated(repo.name, "refs/heads/topic", c1, None), {"main": c1}, {"v1": tag}),
    ]
