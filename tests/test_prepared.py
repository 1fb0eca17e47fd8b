"""Prepared statements and SQLAlchemy's compiled cache.

On PostgreSQL, hot queries run as server-side prepared statements (psycopg's
``prepare_threshold``) on the pooled connection, and ``prepare_threshold=None`` (for
PgBouncer in transaction pooling) leaves none. On both backends, the hot statements are
compiled once and then served from SQLAlchemy's compiled cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import govc_db
from govc_db import Settings, Signature, Store
from govc_db.db.prepared import SharedCompiledCache, statement_monitor

SIG = Signature("Prep", "prep@example.com", 1_700_000_000, 0)
READS = 20


@contextmanager
def opened(url: str, **settings: Any) -> Iterator[Store]:
    # One pooled connection, so "the pooled connection" is the one every call used; the
    # query-result cache is off so each read really runs its statements.
    settings = {"pool_size": 1, "max_overflow": 0, "cache_enabled": False, **settings}
    store = govc_db.open(url, Settings(**settings))
    try:
        yield store
    finally:
        store.close()


def hot_reads(store: Store, n: int = READS) -> None:
    repo = store.create_repository("r")
    repo.commit("main", {"a.txt": b"a\n", "d/b.txt": b"b\n"}, message="m\n", author=SIG)
    for _ in range(n):
        assert repo.read("main", "d/b.txt") == b"b\n"


def server_prepared(store: Store) -> list[str]:
    """The statements prepared in the session of the store's (only) pooled connection."""
    # begin(): a connection returned with ROLLBACK has its prepared statements dropped.
    with store.engine.connect() as conn, conn.begin():
        rows = conn.exec_driver_sql("select statement from pg_prepared_statements").all()
    return [r[0] for r in rows]


def test_hot_queries_run_as_prepared_statements(pg_url: str) -> None:
    with opened(pg_url) as store:
        hot_reads(store)
        stats = store.metrics()["statements"]
        assert stats["server_side_prepare"] is True
        assert stats["prepare_threshold"] == 5
        assert stats["prepared_statements"] > 0
        prepared = server_prepared(store)
        assert len(prepared) > 0
        # The read path's lookups are among them (refs, objects).
        assert any("govc_refs" in s for s in prepared)
        assert any("govc_objects" in s for s in prepared)


def test_failed_reads_and_lookups_keep_the_prepared_statements(pg_url: str) -> None:
    # psycopg deallocates every prepared statement of a connection on ROLLBACK, so a read
    # that ends in NotFound, or a repository lookup, must not end its transaction that way.
    with opened(pg_url) as store:
        hot_reads(store)
        before = server_prepared(store)
        assert before
        repo = store.repository("r")
        for _ in range(3):
            try:
                repo.read("main", "no/such/file")
            except govc_db.NotFound:
                pass
            else:
                raise AssertionError("reading a missing path must raise NotFound")
        assert store.list_repositories() == ["r"]
        assert set(before) <= set(server_prepared(store))


def test_prepare_threshold_none_prepares_nothing(pg_url: str) -> None:
    with opened(pg_url, prepare_threshold=None) as store:
        hot_reads(store)
        stats = store.metrics()["statements"]
        assert stats["server_side_prepare"] is False
        assert stats["prepare_threshold"] is None
        assert stats["prepared_statements"] == 0
        assert server_prepared(store) == []


def test_prepared_max_bounds_the_statements_per_connection(pg_url: str) -> None:
    with opened(pg_url, prepare_threshold=0, prepared_max=2) as store:
        with store.engine.connect() as conn:
            assert conn.connection.dbapi_connection is not None
            assert conn.connection.dbapi_connection.prepared_max == 2
        hot_reads(store, 3)
        assert 0 < store.metrics()["statements"]["prepared_statements"] <= 2
        assert 0 < len(server_prepared(store)) <= 3  # + the count query itself


def test_hot_statements_hit_the_compiled_cache(db_url: str) -> None:
    with opened(db_url) as store:
        hot_reads(store, 3)
        monitor = statement_monitor(store.engine)
        assert monitor is not None
        warm = monitor.get_stats()
        repo = store.repository("r")
        for _ in range(READS):
            repo.read("main", "d/b.txt")
        hot = monitor.get_stats()
        # Nothing new was compiled: every statement came from the compiled cache.
        assert hot["compiled_cache_misses"] == warm["compiled_cache_misses"]
        assert hot["compiled_cache_hits"] >= warm["compiled_cache_hits"] + READS
        assert hot["executions"] > warm["executions"]
        assert hot["compiled_cache_entries"] == warm["compiled_cache_entries"]
        assert 0 < hot["compiled_cache_hit_ratio"] <= 1


def test_a_new_store_finds_the_statements_compiled_by_an_earlier_one(db_url: str) -> None:
    # A process that opens a Store per request (a CLI call, a script) compiles each
    # statement once, not once per Store: the engines share one compiled cache.
    with opened(db_url) as first:
        hot_reads(first, 2)
    with opened(db_url) as second:
        monitor = statement_monitor(second.engine)
        assert monitor is not None
        before = monitor.get_stats()
        assert second.repository("r").read("main", "d/b.txt") == b"b\n"
        after = monitor.get_stats()
        assert after["compiled_cache_misses"] == before["compiled_cache_misses"]
        assert after["compiled_cache_hits"] > before["compiled_cache_hits"]


def test_the_shared_compiled_cache_keeps_dialects_apart(pg_url: str, tmp_path: Path) -> None:
    # The same statement compiles to different SQL on SQLite and PostgreSQL (and on
    # different server versions): their entries never meet.
    from sqlalchemy import select

    from govc_db.store.statements import T_OBJ

    stmt = select(T_OBJ.c.oid).where(T_OBJ.c.repo_id == 1)
    texts = set()
    for url in (pg_url, f"sqlite:///{tmp_path / 'k.db'}"):
        with opened(url) as store:
            store.upgrade()
            with store.engine.connect() as conn:
                conn.execute(stmt).all()
            cache = store.engine._compiled_cache
            assert isinstance(cache, SharedCompiledCache)
            texts |= {str(c) for c in cache.values() if c.statement is stmt}
    # One entry per dialect: the second engine did not take the first one's SQL.
    assert len(texts) == 2


def test_pre_ping_is_never_prepared(pg_url: str) -> None:
    # With prepare_threshold=0 psycopg would prepare the pool's ";" ping on the server and
    # then lose track of it (an empty query is never cached): one leak per checkout.
    with opened(pg_url, prepare_threshold=0, pool_pre_ping=True) as store:
        for _ in range(10):
            store.list_repositories()
        assert ";" not in server_prepared(store)
