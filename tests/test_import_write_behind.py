"""Bulk writes (an import slice, a pushed pack) written behind: on PostgreSQL a full batch
is COPYed on a thread of its own while the next rows are encoded (``ObjectBatch.
flush_behind``); ``put_bulk`` waits for it before it returns, and its errors are the
unit's. On SQLite the same calls flush in place. Both backends, real databases."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import govc_db
from govc_db import Settings, Store
from govc_db.errors import GovcError
from govc_db.models import ObjectRow
from govc_db.objects import hash_object
from govc_db.store.sql import BULK_BEHIND_ROWS, BULK_ROWS

T_OBJ: sa.Table = ObjectRow.__table__  # type: ignore[assignment]


def repo_id(store: Store) -> int:
    store.create_repository("r")
    record = store.backend.get_repository("r")
    assert record is not None
    return record.id


def blobs(n: int, seed: int) -> list[tuple[bytes, bytes]]:
    rng = random.Random(seed)
    return [(b"blob", b"%d:" % i + rng.randbytes(40)) for i in range(n)]


def stored_count(store: Store, rid: int) -> int:
    with store.engine.connect() as conn:
        query = sa.select(sa.func.count()).select_from(T_OBJ).where(T_OBJ.c.repo_id == rid)
        return int(conn.execute(query).scalar_one())


def visible_in_unit(u: Any) -> int:
    query = sa.select(sa.func.count()).select_from(T_OBJ).where(T_OBJ.c.repo_id == u.repo_id)
    return int(u.conn.execute(query).scalar_one())


def test_put_bulk_waits_for_what_it_wrote_behind(db_url: str, backend: str) -> None:
    n = 2 * BULK_BEHIND_ROWS + 7
    rows = blobs(n, seed=1)
    with govc_db.open(db_url, Settings()) as store:
        rid = repo_id(store)
        with store.backend.unit(rid, write=True, what="test") as u:
            ids = u.objects.put_bulk(rows)
            # Returned: every flush has landed in the unit's own transaction (what is
            # left is buffered for the commit), and the unit reads everything.
            flushed = 2 * BULK_BEHIND_ROWS if backend == "postgres" else n // BULK_ROWS * BULK_ROWS
            assert visible_in_unit(u) == flushed
            got = u.objects.get_many(ids)
            assert {oid: (o.type, o.data) for oid, o in got.items()} == {
                oid: row for oid, row in zip(ids, rows, strict=True)
            }
            assert stored_count(store, rid) == 0  # not committed yet
        assert stored_count(store, rid) == n
        assert ids == [hash_object(t, d) for t, d in rows]
        if backend == "postgres":
            # Two COPYs behind; the last 7 rows went by executemany at commit.
            assert store.backend.batch.get_stats()["strategies"]["copy"] == 2


def test_an_error_in_a_write_behind_is_the_units(pg_url: str) -> None:
    with govc_db.open(pg_url, Settings()) as store:
        rid = repo_id(store)
        with (
            pytest.raises(GovcError) as info,
            store.backend.unit(rid, write=True, what="test") as u,
        ):
            # A session table of the wrong shape: the COPY on the writing thread fails.
            u.conn.exec_driver_sql(
                "CREATE TEMP TABLE govc_objects_batch (repo_id bigint, oid bytea, "
                "type text, size bigint, encoding smallint, data bytea) ON COMMIT DROP"
            )
            u.objects.put_bulk(blobs(BULK_BEHIND_ROWS + 1, seed=2))
        assert "SQLSTATE" in str(info.value)
        assert stored_count(store, rid) == 0
        with store.backend.unit(rid, write=True, what="test") as u:  # still usable
            u.objects.put_bulk(blobs(BULK_BEHIND_ROWS, seed=3))
        assert stored_count(store, rid) == BULK_BEHIND_ROWS


def test_a_failing_bulk_write_stores_nothing(db_url: str) -> None:
    rows = [*blobs(BULK_BEHIND_ROWS + 10, seed=4), (b"bogus", b"x")]
    with govc_db.open(db_url, Settings()) as store:
        rid = repo_id(store)
        with (
            pytest.raises(GovcError, match="unknown object type"),
            store.backend.unit(rid, write=True, what="test") as u,
        ):
            # The first rows are being written behind when the bad one is reached.
            u.objects.put_bulk(rows)
        assert stored_count(store, rid) == 0
        with store.backend.unit(rid, write=True, what="test") as u:
            u.objects.put_bulk(rows[:-1])
        assert stored_count(store, rid) == len(rows) - 1


# -- the commit index written beside the object slices ------------------------------------


def _index_of(store: Store, name: str) -> dict[str, tuple[Any, ...]]:
    from govc_db.objects import ObjectId

    repo = store.repository(name)
    with store.backend.unit(repo._id) as unit:
        with store.engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT oid FROM govc_commits WHERE repo_id = :r"), {"r": repo._id}
            ).fetchall()
        oids = [ObjectId(bytes(r[0])) for r in rows]
        entries = unit.index.get_many(oids)
        paths = unit.index.changed_paths_many(oids)
    return {
        o.hex(): (
            e.tree,
            e.parents,
            e.generation,
            e.author_time,
            e.committer_time,
            {k: sorted(v) for k, v in paths.get(o, {}).items()},
        )
        for o, e in entries.items()
    }


def test_index_written_beside_small_slices_is_the_same(
    db_url: str, backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from interop_git import commit_file, git, make_history

    import govc_db.interop.importer as importer

    started: list[Any] = []

    class Spy(importer._EarlyIndex):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            started.append(self)

    monkeypatch.setattr(importer, "_EarlyIndex", Spy)
    src = make_history(tmp_path)
    for i in range(12):  # past the merges: more commits than a slice holds
        commit_file(src, f"more/f{i % 3}.txt", f"{i}\n", f"more {i}")
    with govc_db.open(db_url, Settings(import_slice_objects=4)) as small:
        report = small.import_git("p", src)
        small_index = _index_of(small, "p")
        repo = small.repository("p")
        expected = git(src, "rev-list", "--all").split()
        assert report.commits_indexed == len(expected) == len(small_index)
        assert [c.oid for c in repo.log("main")] == git(src, "rev-list", "main").split()
        for path in ("more/f1.txt", "src/b.py", "README.md"):
            assert [c.oid for c in repo.log("main", path=path)] == git(
                src, "rev-list", "main", "--", path
            ).split(), path
        if backend == "postgres":  # beside the slices, all but the merges
            assert len(started) == 1
            merges = git(src, "rev-list", "--all", "--merges").split()
            assert {o.hex() for o in started[0].indexed} == set(expected) - set(merges)
        else:
            assert not started
        # Again with one more commit: only it is indexed.
        commit_file(src, "more/f0.txt", "last\n", "last")
        assert small.import_git("p", src).commits_indexed == 1
    with govc_db.open(db_url, Settings(import_slice_objects=100_000)) as whole:
        whole.import_git("q", src)
        assert _index_of(whole, "q") == _index_of(whole, "p")
