"""The batch executor (govc_db.db.batch) on both backends: coalesced object writes flushed
by count, bytes, reads, savepoints and commit; COPY on PostgreSQL; bulk reads by id.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from _export import export_repository, git

import govc_db
from govc_db import Settings, Store
from govc_db.db.batch import COPY_MIN_ROWS, BatchExecutor
from govc_db.db.pipeline import wrap_driver_error
from govc_db.errors import GovcError
from govc_db.models import ObjectRow
from govc_db.objects import ObjectId, hash_object
from govc_db.store.sql import SqlUnit

T_OBJ: sa.Table = ObjectRow.__table__  # type: ignore[assignment]


class Boom(Exception):
    pass


# -- helpers ------------------------------------------------------------------------------


@contextmanager
def opened(url: str, **settings: Any) -> Iterator[Store]:
    store = govc_db.open(url, settings=Settings(**settings))
    try:
        yield store
    finally:
        store.close()


def repo_id(store: Store, name: str = "r") -> int:
    store.create_repository(name)
    record = store.backend.get_repository(name)
    assert record is not None
    return record.id


def stored_count(store: Store, rid: int) -> int:
    """Rows of the repository, read on a connection of its own (committed rows only)."""
    with store.engine.connect() as conn:
        query = sa.select(sa.func.count()).select_from(T_OBJ).where(T_OBJ.c.repo_id == rid)
        return int(conn.execute(query).scalar_one())


def contents(n: int, seed: int, size: int = 200) -> list[bytes]:
    """``n`` distinct contents: half text that compresses, half random bytes that does not."""
    rng = random.Random(seed)
    words = [b"alpha", b"beta", b"gamma", b"delta", b"omega"]
    out = []
    for i in range(n):
        if i % 2:
            body = rng.randbytes(size)
        else:
            body = b" ".join(rng.choice(words) for _ in range(size // 5))
        out.append(b"%d:" % i + body)
    return out


def blobs(datas: list[bytes]) -> list[tuple[bytes, bytes]]:
    return [(b"blob", d) for d in datas]


def unit(store: Store, rid: int) -> Any:
    return store.backend.unit(rid, write=True, what="test")


def stats(store: Store) -> dict[str, Any]:
    return store.backend.batch.get_stats()


# -- writes -------------------------------------------------------------------------------


def test_put_many_dedups_within_and_across_batches(db_url: str, backend: str) -> None:
    distinct = contents(3000, seed=1)
    rng = random.Random(2)
    first = distinct[:2000] + rng.choices(distinct[:2000], k=500)  # duplicates inside
    second = distinct[1500:] + rng.choices(distinct, k=1000)  # overlaps the first batch
    rng.shuffle(first)
    rng.shuffle(second)
    with opened(db_url) as store:
        rid = repo_id(store)
        with unit(store, rid) as u:
            ids_a = u.objects.put_many(blobs(first))
            ids_b = u.objects.put_many(blobs(second))
        # Again in a later transaction: every row already exists.
        with unit(store, rid) as u:
            ids_c = u.objects.put_many(blobs(distinct[:700]))
        assert len(ids_a) + len(ids_b) == 5000
        assert ids_a == [hash_object(b"blob", d) for d in first]
        assert ids_b == [hash_object(b"blob", d) for d in second]
        assert ids_c == [hash_object(b"blob", d) for d in distinct[:700]]
        assert stored_count(store, rid) == 3000
        expected = {hash_object(b"blob", d): d for d in distinct}
        with store.backend.unit(rid) as u:
            found = u.objects.get_many(expected)
        assert {oid: obj.data for oid, obj in found.items()} == expected
        assert all(obj.type == b"blob" for obj in found.values())
        s = stats(store)
        assert s["objects"] == 5700
        # Duplicates still pending in the buffer are dropped there; the rest of the
        # deduplication is ON CONFLICT DO NOTHING.
        assert s["duplicates"] >= 500
        assert s["rows"] == s["objects"] - s["duplicates"]
        assert s["flushes"]["count"] >= 3
        if backend == "postgres":
            assert s["strategies"]["copy"] >= 3
        else:
            assert s["strategies"]["copy"] == 0


def test_flush_by_count(db_url: str) -> None:
    with opened(db_url, batch_max_rows=10) as store:
        rid = repo_id(store)
        with unit(store, rid) as u:
            u.objects.put_many(blobs(contents(25, seed=3)))
            # Two full batches are in the table (uncommitted), five rows still pending.
            assert _visible_in_unit(u) == 20
        s = stats(store)
        assert s["flushes"]["count"] == 2
        assert s["flushes"]["commit"] == 1
        assert (s["batches"], s["rows"], s["max_batch_rows"]) == (3, 25, 10)
        assert stored_count(store, rid) == 25


def test_flush_by_bytes(db_url: str) -> None:
    # Bytes count uncompressed: four 300-byte objects reach 1,000 bytes.
    with opened(db_url, batch_max_bytes=1000) as store:
        rid = repo_id(store)
        datas = [random.Random(i).randbytes(300) for i in range(10)]
        with unit(store, rid) as u:
            u.objects.put_many(blobs(datas))
            assert _visible_in_unit(u) == 8
        s = stats(store)
        assert s["flushes"]["bytes"] == 2
        assert s["flushes"]["count"] == 0
        assert s["flushes"]["commit"] == 1
        assert s["rows"] == 10
        assert stored_count(store, rid) == 10


def test_one_object_larger_than_the_byte_limit_is_written_alone(db_url: str) -> None:
    with opened(db_url, batch_max_bytes=64) as store:
        rid = repo_id(store)
        big = b"x" * 10_000
        with unit(store, rid) as u:
            oid = u.objects.put(b"blob", big)
            assert _visible_in_unit(u) == 1
        with store.backend.unit(rid) as u:
            assert u.objects.get(oid).data == big
        assert stats(store)["flushes"]["bytes"] == 1


def test_small_batches_use_executemany_large_ones_copy(db_url: str, backend: str) -> None:
    with opened(db_url) as store:
        rid = repo_id(store)
        with unit(store, rid) as u:
            u.objects.put_many(blobs(contents(3, seed=4)))
        with unit(store, rid) as u:
            u.objects.put_many(blobs(contents(COPY_MIN_ROWS, seed=5)))
        s = stats(store)
        big = "copy" if backend == "postgres" else "executemany"
        assert s["strategies"]["executemany"] >= 1
        assert s["strategies"][big] >= 1
        assert stored_count(store, rid) == 3 + COPY_MIN_ROWS


def test_read_your_writes_inside_one_unit(db_url: str) -> None:
    with opened(db_url, batch_max_rows=1000) as store:
        rid = repo_id(store)
        datas = contents(50, seed=6)
        ids = [hash_object(b"blob", d) for d in datas]
        missing = ObjectId(b"\x01" * 20)
        with unit(store, rid) as u:
            u.objects.put_many(blobs(datas))
            assert _visible_in_unit(u) == 0  # still buffered
            assert u.objects.get(ids[0]).data == datas[0]
            assert {k: v.data for k, v in u.objects.get_many([*ids, missing]).items()} == dict(
                zip(ids, datas, strict=True)
            )
            assert u.objects.has(ids[1]) and not u.objects.has(missing)
            assert u.objects.has_many([*ids, missing]) == set(ids)
            assert stats(store)["buffer_hits"] >= 50 + 50 + 1 + 1
            # Another connection does not see the pending (or flushed) rows.
            assert stored_count(store, rid) == 0
            # A prefix search and a listing read the table: they flush first.
            assert u.objects.find_prefix(ids[2].hex()[:12]) == [ids[2]]
            assert _visible_in_unit(u) == 50
            assert {oid for oid, _ in u.objects.iter_ids()} == set(ids)
            u.objects.put(b"blob", b"late")
            late = {oid for oid, _ in u.objects.iter_ids()}
            assert hash_object(b"blob", b"late") in late
            assert stored_count(store, rid) == 0
        assert stats(store)["flushes"]["read"] == 2
        assert stored_count(store, rid) == 51


def test_nothing_persists_when_the_unit_raises(db_url: str) -> None:
    with opened(db_url, batch_max_rows=100) as store:
        rid = repo_id(store)
        with pytest.raises(Boom), unit(store, rid) as u:
            u.objects.put_many(blobs(contents(250, seed=7)))  # 200 flushed, 50 pending
            assert _visible_in_unit(u) == 200
            raise Boom
        assert stored_count(store, rid) == 0
        # The store keeps working and the next unit starts with an empty buffer.
        with unit(store, rid) as u:
            u.objects.put(b"blob", b"after")
        assert stored_count(store, rid) == 1


def test_savepoint_rollback_drops_exactly_its_rows(db_url: str) -> None:
    with opened(db_url, batch_max_rows=10) as store:
        rid = repo_id(store)
        before = contents(5, seed=8)
        inside = contents(25, seed=9)  # 20 flushed inside the savepoint, 5 pending
        after = [b"after one", b"after two"]
        with unit(store, rid) as u:
            u.objects.put_many(blobs(before))  # pending: flushed when the savepoint starts
            with pytest.raises(Boom), u.savepoint():
                u.objects.put_many(blobs(inside))
                raise Boom
            assert not u.objects.has_many(hash_object(b"blob", d) for d in inside)
            with u.savepoint():  # released: its rows stay
                u.objects.put_many(blobs(after))
        assert stats(store)["flushes"]["savepoint"] >= 1
        with store.backend.unit(rid) as u:
            kept = {oid for oid, _ in u.objects.iter_ids()}
        assert kept == {hash_object(b"blob", d) for d in before + after}


def test_units_inside_an_outer_transaction_flush_before_release(db_url: str) -> None:
    query = sa.select(sa.func.count()).select_from(T_OBJ)
    with opened(db_url, batch_max_rows=10) as store:
        rid = repo_id(store)
        with pytest.raises(Boom), store.transaction() as tx:
            with unit(store, rid) as u:  # a savepoint of the outer transaction
                u.objects.put_many(blobs(contents(15, seed=20)))
            assert tx.connection.execute(query).scalar_one() == 15
            raise Boom
        assert stored_count(store, rid) == 0
        with store.transaction():
            with unit(store, rid) as u:
                u.objects.put_many(blobs(contents(15, seed=20)))
            with unit(store, rid) as u:
                u.objects.put_many(blobs(contents(5, seed=21)))
        assert stored_count(store, rid) == 20


def test_batching_disabled_writes_at_once_with_the_same_result(db_url: str) -> None:
    distinct = contents(1200, seed=10)
    batch = distinct + distinct[:300]
    with opened(db_url, batch_enabled=False, batch_max_rows=500) as store:
        rid = repo_id(store)
        with unit(store, rid) as u:
            ids = u.objects.put_many(blobs(batch))
            assert _visible_in_unit(u) == 1200  # written before put_many returned
            assert u.objects.put_many(blobs(distinct[:10])) == ids[:10]
        assert ids == [hash_object(b"blob", d) for d in batch]
        assert stored_count(store, rid) == 1200
        with store.backend.unit(rid) as u:
            found = u.objects.get_many(ids)
        assert {k: v.data for k, v in found.items()} == dict(zip(ids, batch, strict=True))
        s = stats(store)
        assert s["enabled"] is False
        assert s["flushes"]["direct"] == 3 + 1
        assert s["flushes"]["count"] == s["flushes"]["commit"] == 0
        assert s["strategies"]["copy"] == 0


def test_put_copies_a_mutable_buffer(db_url: str) -> None:
    with opened(db_url) as store:
        rid = repo_id(store)
        data = bytearray(b"original content")
        with unit(store, rid) as u:
            oid = u.objects.put(b"blob", data)
            data[:] = b"changed!"
        with store.backend.unit(rid) as u:
            assert u.objects.get(oid).data == b"original content"
        assert oid == hash_object(b"blob", b"original content")


def test_unknown_type_is_rejected(db_url: str) -> None:
    with opened(db_url) as store:
        rid = repo_id(store)
        with pytest.raises(GovcError), unit(store, rid) as u:
            u.objects.put(b"bogus", b"x")
        assert stored_count(store, rid) == 0


# -- reads --------------------------------------------------------------------------------


def test_bulk_get_many_with_missing_ids(db_url: str) -> None:
    # The query-result cache off: every id must come from the bulk statements.
    with opened(db_url, cache_enabled=False) as store:
        rid = repo_id(store)
        datas = contents(2500, seed=11, size=100)
        with unit(store, rid) as u:
            ids = u.objects.put_many(blobs(datas))
        rng = random.Random(12)
        missing = [ObjectId(rng.randbytes(20)) for _ in range(500)]
        wanted = ids + missing
        rng.shuffle(wanted)
        # The storage optimizer's decoded cache holds what this process wrote: cleared,
        # so every id is read by the bulk statements.
        store.backend.codec.cache.clear()
        before = stats(store)
        with store.backend.unit(rid) as u:
            found = u.objects.get_many(wanted)
            present = u.objects.has_many(wanted)
        assert {k: v.data for k, v in found.items()} == dict(zip(ids, datas, strict=True))
        assert present == set(ids)
        after = stats(store)
        chunk = store.backend.batch.read_chunk
        per_call = -(-3000 // chunk)
        assert after["bulk_read_statements"] - before["bulk_read_statements"] == 2 * per_call
        assert after["bulk_read_ids"] - before["bulk_read_ids"] == 6000


def test_commit_index_bulk_read(store: Store) -> None:
    repo = store.create_repository("idx")
    sig = govc_db.Signature(name="A", email="a@example.com", time=1_700_000_000, offset=0)
    heads = [
        repo.commit("main", {f"f{i}": b"%d" % i}, message=f"c{i}\n", author=sig) for i in range(30)
    ]
    record = store.backend.get_repository("idx")
    assert record is not None
    ids = [ObjectId(bytes.fromhex(h)) for h in heads]
    with store.backend.unit(record.id) as u:
        entries = u.index.get_many([*ids, ObjectId(b"\x02" * 20)])
    assert set(entries) == set(ids)
    for i, oid in enumerate(ids):
        info = repo.get_commit(oid.hex())
        assert [p.hex() for p in entries[oid].parents] == info.parents
        assert entries[oid].generation == i + 1
        assert entries[oid].tree.hex() == info.tree


def test_large_commit_through_the_api_is_git_clean(db_url: str, tmp_path: Path) -> None:
    files = {f"d{i % 7}/f{i}.txt": b"line %d\n" % i * (i % 5 + 1) for i in range(700)}
    with opened(db_url, batch_max_rows=100) as store:
        repo = store.create_repository("big")
        sig = govc_db.Signature(name="A", email="a@example.com", time=1_700_000_000, offset=0)
        head = repo.commit("main", files, message="big\n", author=sig)
        assert repo.verify().ok
        assert repo.read("main", "d3/f10.txt") == files["d3/f10.txt"]
        assert stats(store)["flushes"]["count"] >= 7
        dest = export_repository(repo, tmp_path / "big.git")
    git(dest, "fsck", "--strict")
    assert git(dest, "rev-parse", "main").decode().strip() == head
    listed = git(dest, "ls-tree", "-r", "--name-only", "main").decode().split()
    assert sorted(listed) == sorted(files)


# -- PostgreSQL COPY errors ---------------------------------------------------------------


def test_copy_server_error_is_translated_and_rolls_back(pg_url: str) -> None:
    with opened(pg_url) as store:
        rid = repo_id(store)
        with pytest.raises(GovcError) as info, unit(store, rid) as u:
            # A session table of the wrong shape: COPY's binary int2 is not valid text.
            u.conn.exec_driver_sql(
                "CREATE TEMP TABLE govc_objects_batch (repo_id bigint, oid bytea, "
                "type text, size bigint, encoding smallint, data bytea) ON COMMIT DROP"
            )
            u.objects.put_many(blobs(contents(COPY_MIN_ROWS, seed=13)))
        assert "SQLSTATE" in str(info.value)
        assert isinstance(info.value.__cause__, sa.exc.DBAPIError)
        assert stored_count(store, rid) == 0
        with unit(store, rid) as u:  # the pooled connection is still usable
            u.objects.put_many(blobs(contents(COPY_MIN_ROWS, seed=14)))
        assert stored_count(store, rid) == COPY_MIN_ROWS


def test_copy_on_a_lost_connection_invalidates_it(pg_url: str) -> None:
    import psycopg

    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            with engine.connect() as killer:
                killer.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
            driver: Any = conn.connection.driver_connection
            with (
                pytest.raises(psycopg.OperationalError) as info,
                driver.cursor() as cur,
                cur.copy("COPY govc_objects FROM STDIN") as copy,
            ):
                copy.write_row((1,))
            wrapped = wrap_driver_error(conn, info.value, "COPY (object batch)")
            assert isinstance(wrapped, sa.exc.DBAPIError)
            assert wrapped.connection_invalidated
            assert conn.invalidated
    finally:
        engine.dispose()


def test_executor_settings_and_stats_shape() -> None:
    ex = BatchExecutor.from_settings(
        "sqlite", Settings(batch_enabled=False, batch_max_rows=7, batch_max_bytes=99)
    )
    assert (ex.enabled, ex.max_rows, ex.max_bytes) == (False, 7, 99)
    s = ex.get_stats()
    assert set(s["flushes"]) == {"count", "bytes", "read", "savepoint", "commit", "direct"}
    assert set(s["strategies"]) == {"copy", "executemany", "pipeline"}
    assert s["batches"] == s["rows"] == s["bytes"] == 0
    with pytest.raises(ValueError):
        Settings(batch_enabled=1)  # type: ignore[arg-type]


def _visible_in_unit(u: SqlUnit) -> int:
    """Rows of the unit's repository as its own transaction sees them (flushed rows)."""
    query = sa.select(sa.func.count()).select_from(T_OBJ).where(T_OBJ.c.repo_id == u.repo_id)
    return int(u.conn.execute(query).scalar_one())
