"""The Store entry point: govc_db.open, URLs, lifecycle, repositories, metrics, failures."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

import govc_db
from govc_db import Settings, Signature, Store
from govc_db.db import migrate
from govc_db.errors import (
    AlreadyExists,
    GovcError,
    InvalidInput,
    NotFound,
    SchemaNotReady,
    StoreUnavailable,
)

SECRET = "hunter2secretpw"
UNREACHABLE = f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:1/x"


# -- URL selection ------------------------------------------------------------------------


def test_url_argument_wins_over_environment(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str, tmp_path: Path
) -> None:
    other = tmp_path / "from-env.db"
    monkeypatch.setenv("GOVC_DB_URL", f"sqlite:///{other}")
    with govc_db.open(sqlite_url) as store:
        assert store.url == sqlite_url
        store.create_repository("arg")
        assert store.list_repositories() == ["arg"]
    assert not other.exists()


def test_environment_url_wins_over_default(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str, tmp_path: Path
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("GOVC_DB_URL", sqlite_url)
    with govc_db.open() as store:
        assert store.url == sqlite_url
        store.create_repository("env")  # the env database is migrated; the default is not
        assert store.list_repositories() == ["env"]
    assert not (cwd / "govc.db").exists()


def test_default_url_is_govc_db_in_cwd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GOVC_DB_URL", raising=False)
    with govc_db.open() as store:
        assert store.url == "sqlite:///govc.db"
        assert store.dialect == "sqlite"
        store.upgrade()
        store.create_repository("here")
    assert (tmp_path / "govc.db").is_file()
    with govc_db.open(f"sqlite:///{tmp_path / 'govc.db'}") as again:
        assert again.list_repositories() == ["here"]


def test_empty_environment_url_falls_back_to_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GOVC_DB_URL", "")
    with govc_db.open() as store:
        assert store.url == "sqlite:///govc.db"


def test_settings_come_from_environment_when_not_given(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    monkeypatch.setenv("GOVC_DB_POOL_SIZE", "3")
    with govc_db.open(sqlite_url) as store:
        assert store.settings.pool_size == 3
    monkeypatch.setenv("GOVC_DB_POOL_SIZE", "0")
    with pytest.raises(InvalidInput, match="pool_size"):
        govc_db.open(sqlite_url)
    # Explicit settings are used as given; the environment is not consulted.
    with govc_db.open(sqlite_url, Settings(pool_size=2)) as store:
        assert store.settings.pool_size == 2


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_plain_postgres_urls_select_psycopg(scheme: str) -> None:
    # No connection is made until first use, so no server is needed here.
    store = govc_db.open(f"{scheme}://app:{SECRET}@db.invalid:5432/govc")
    try:
        assert store.engine.url.drivername == "postgresql+psycopg"
        assert store.dialect == "postgresql"
        assert SECRET not in store.url
        assert SECRET not in repr(store)
    finally:
        store.close()


def test_plain_postgresql_url_connects(pg_url: str) -> None:
    plain = sa.make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    assert plain.startswith("postgresql://")
    with govc_db.open(plain) as store:
        store.create_repository("plain")
        assert store.list_repositories() == ["plain"]


@pytest.mark.parametrize(
    "url",
    [
        "mysql://user:pw@localhost/db",
        "mssql+pyodbc://dsn",
        "oracle://scott:tiger@host/db",
        "postgresql+asyncpg://u@h/db",
        "postgresql+psycopg2://u@h/db",
        "sqlite+aiosqlite:///x.db",
        "garbage",
        "",
        "://",
        f"postgresql://u:{SECRET}@host:notaport/db",
    ],
)
def test_unsupported_or_malformed_urls_are_invalid_input(url: str) -> None:
    with pytest.raises(InvalidInput) as info:
        govc_db.open(url)
    assert SECRET not in str(info.value)


def test_settings_must_be_settings(sqlite_url: str) -> None:
    with pytest.raises(InvalidInput, match="Settings"):
        govc_db.open(sqlite_url, {"pool_size": 3})  # type: ignore[arg-type]


# -- lifecycle ----------------------------------------------------------------------------


def test_context_manager_closes_engine(sqlite_url: str) -> None:
    with govc_db.open(sqlite_url) as store:
        assert isinstance(store, Store)
        store.list_repositories()
        assert store.engine.pool.checkedin() == 1  # type: ignore[attr-defined]
    assert store.engine.pool.checkedin() == 0  # type: ignore[attr-defined]
    store.close()  # idempotent


def test_context_manager_closes_engine_on_error(sqlite_url: str) -> None:
    with pytest.raises(RuntimeError), govc_db.open(sqlite_url) as store:
        store.list_repositories()
        raise RuntimeError("boom")
    assert store.engine.pool.checkedin() == 0  # type: ignore[attr-defined]


def _server_connections(pg_url: str) -> int:
    engine = sa.create_engine(pg_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            count = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = 'govc_db'"
                )
            ).scalar_one()
        return int(count)
    finally:
        engine.dispose()


def test_close_releases_server_connections(pg_url: str) -> None:
    before = _server_connections(pg_url)
    with govc_db.open(pg_url) as store:
        store.create_repository("a")
        store.list_repositories()
        assert _server_connections(pg_url) == before + 1
    assert _server_connections(pg_url) == before


# -- migrations ---------------------------------------------------------------------------


def test_upgrade_is_idempotent(empty_db_url: str) -> None:
    with govc_db.open(empty_db_url) as store:
        store.upgrade()
        assert migrate.current_revision(store.engine) == migrate.head_revision()
        store.create_repository("kept")
        store.upgrade()
        store.upgrade()
        assert migrate.current_revision(store.engine) == migrate.head_revision()
        assert store.list_repositories() == ["kept"]


def test_unmigrated_database_is_a_govc_error(empty_db_url: str) -> None:
    with govc_db.open(empty_db_url) as store:
        fix = r"no govc_db schema: call store\.upgrade\(\)"
        with pytest.raises(SchemaNotReady, match=fix) as info:
            store.list_repositories()
        assert "SELECT" not in str(info.value)
        with pytest.raises(SchemaNotReady):
            store.create_repository("early")
        store.upgrade()  # what the message says fixes it
        store.create_repository("late")
        assert store.list_repositories() == ["late"]


def test_old_schema_is_named_with_its_revision(empty_db_url: str) -> None:
    """A database left at the first revision: the first call that meets a table or column
    added since says so, naming both revisions; after the upgrade the same calls work."""
    ada = Signature("a", "a@x", 0, 0)

    def use(store: Store) -> None:
        repo = store.create_repository("r") if "r" not in store.list_repositories() else None
        repo = repo or store.repository("r")
        repo.commit("main", {"a": b"1"}, message="m", author=ada)
        assert repo.verify().ok
        store.gc()

    with govc_db.open(empty_db_url) as store:
        migrate.upgrade(store.engine, "0001")
        head = migrate.head_revision()
        with pytest.raises(
            SchemaNotReady, match=f"schema is at revision 0001, this version needs {head}"
        ) as info:
            use(store)
        assert "SELECT" not in str(info.value) and "govc_" not in str(info.value)
        store.upgrade()
        use(store)


# -- repositories -------------------------------------------------------------------------


def test_create_list_delete(store: Store) -> None:
    assert store.list_repositories() == []
    for name in ["zeta", "Alpha", "beta", "a.b-c_d", "9lives"]:
        repo = store.create_repository(name)
        assert repo.name == name
        assert repo.default_branch == "main"
    assert store.list_repositories() == sorted(["zeta", "Alpha", "beta", "a.b-c_d", "9lives"])
    store.delete_repository("beta")
    assert "beta" not in store.list_repositories()
    with pytest.raises(NotFound):
        store.repository("beta")
    with pytest.raises(NotFound):
        store.delete_repository("beta")
    # The name is free again.
    assert store.create_repository("beta").name == "beta"


def test_create_repository_default_branch(store: Store) -> None:
    repo = store.create_repository("trunked", default_branch="trunk")
    assert repo.default_branch == "trunk"
    assert store.repository("trunked").default_branch == "trunk"
    with pytest.raises(InvalidInput):
        store.create_repository("bad-branch", default_branch="no..dots")
    assert "bad-branch" not in store.list_repositories()


def test_create_repository_already_exists(store: Store) -> None:
    store.create_repository("demo")
    with pytest.raises(AlreadyExists) as info:
        store.create_repository("demo")
    assert isinstance(info.value, GovcError)
    assert store.list_repositories() == ["demo"]


def test_repository_not_found(store: Store) -> None:
    with pytest.raises(NotFound) as info:
        store.repository("nope")
    assert isinstance(info.value, LookupError)
    store.create_repository("yes")
    assert store.repository("yes").name == "yes"


@pytest.mark.parametrize(
    "name",
    ["", ".hidden", "a/b", "has space", "x" * 101, "tab\t", "ünïcode", "semi;colon", None, 5],
)
def test_invalid_repository_names(store: Store, name: object) -> None:
    calls: list[Callable[[Any], object]] = [
        store.create_repository,
        store.repository,
        store.delete_repository,
    ]
    for call in calls:
        with pytest.raises(InvalidInput):
            call(name)
    assert store.list_repositories() == []


def test_longest_repository_name(store: Store) -> None:
    name = "x" * 100
    store.create_repository(name)
    assert store.repository(name).name == name


# -- metrics ------------------------------------------------------------------------------


def test_metrics_count_calls_and_errors(store: Store) -> None:
    store.create_repository("m")
    with pytest.raises(AlreadyExists):
        store.create_repository("m")
    with pytest.raises(NotFound):
        store.delete_repository("absent")
    store.list_repositories()
    store.list_repositories()

    m = store.metrics()
    assert m["dialect"] == store.dialect
    ops = m["metrics"]["operations"]
    assert ops["create_repository"]["calls"] == 2
    assert ops["create_repository"]["errors"] == 1
    assert ops["delete_repository"]["calls"] == 1
    assert ops["delete_repository"]["errors"] == 1
    assert ops["list_repositories"]["calls"] == 2
    assert ops["list_repositories"]["errors"] == 0
    for stats in ops.values():
        assert {"p50_ms", "p95_ms", "p99_ms", "max_ms"} <= set(stats)
        assert 0 <= stats["p50_ms"] <= stats["max_ms"]
    assert m["metrics"]["calls"] == 5
    assert m["metrics"]["errors"] == 2
    assert "pool" in m


def test_performance_report_mentions_operations(store: Store) -> None:
    store.create_repository("r")
    store.list_repositories()
    report = store.performance_report()
    assert isinstance(report, str)
    assert "create_repository" in report
    assert "list_repositories" in report
    assert store.dialect in report


def test_metrics_can_be_switched_off(db_url: str) -> None:
    with govc_db.open(db_url, Settings(metrics_enabled=False)) as store:
        store.create_repository("quiet")
        store.list_repositories()
        m = store.metrics()
        assert m.get("metrics", {}).get("operations", {}) == {}
        assert "create_repository" not in store.performance_report()


# -- an unreachable database ------------------------------------------------------------------


def test_unreachable_postgres_is_store_unavailable(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    store = govc_db.open(UNREACHABLE, Settings(connect_timeout=1))
    try:
        assert SECRET not in repr(store)
        assert SECRET not in store.url
        for call in (
            store.list_repositories,
            lambda: store.create_repository("x"),
            lambda: store.repository("x"),
            store.upgrade,
        ):
            with pytest.raises(StoreUnavailable) as info:
                call()
            assert SECRET not in str(info.value)
            assert info.value.__cause__ is not None  # the driver error stays chained
        # Errors are counted, and nothing in the report or logs leaks the password.
        assert store.metrics()["metrics"]["operations"]["list_repositories"]["errors"] == 1
        assert SECRET not in store.performance_report()
    finally:
        store.close()
    assert all(SECRET not in r.getMessage() for r in caplog.records)
