"""Bulk writes (an import slice, a pushed pack) written behind: on PostgreSQL a full batch
is COPYed on a thread of its own while the next rows are encoded (``ObjectBatch.
flush_behind``); ``put_bulk`` waits for it before it returns, and its errors are the
unit's. On SQLite the same calls flush in place. Both backends, real databases."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def opened(url: str, **settings: Any) -> Iterator[Store]:
    store = govc_db.open(url, settings=Settings(**settings))
    try:
        yield store
    finally:
        store.close()


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
    with opened(db_url) as store:
        rid = repo_id(store)
        with store.backend.unit(rid, write=True, what="test") as u:
            ids = u.objects.put_bulk(rows)
            # Returned: every flush has landed in the unit's own transaction (what is
            # left is buffered for the commit), and the unit reads everything.
            flushed = 2 * BULK_BEHIND_ROWS if backend == "postgres" else n // BULK_ROWS
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
    with opened(pg_url) as store:
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
    with opened(db_url) as store:
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
