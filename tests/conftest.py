"""Database fixtures: one contract suite, run against SQLite and PostgreSQL.

Fixture contract (other test modules rely on these names):

* ``pg_admin_url`` (session) -- server/admin URL of a PostgreSQL server (see ``tests/pg.py``
  for how it is found). Skips without one, fails under ``CI=true``.
* ``backend`` -- ``"sqlite"`` or ``"postgres"``; the postgres param is marked ``postgres``.
* ``empty_db_url`` -- URL of a brand-new empty database of ``backend`` (dropped afterwards).
* ``db_url`` -- URL of a clean database of ``backend`` already migrated to head. On
  PostgreSQL it is one database per session whose govc tables are truncated before each
  test: tests that change the schema must use ``empty_db_url``.
* ``sqlite_url`` / ``pg_url`` -- the same clean migrated database, for one backend only.
* ``store`` -- ``govc_db.open(db_url)``, closed after the test.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pg
import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

if TYPE_CHECKING:
    from govc_db import Store

_PG_SOURCE = pytest.StashKey[str]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A test that reaches PostgreSQL through any fixture carries the mark, so `-m "not
    # postgres"` deselects it.
    for item in items:
        if "pg_admin_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    source = config.stash.get(_PG_SOURCE, None)
    if source is not None:
        terminalreporter.write_line(f"PostgreSQL for the tests: {source}")


def sqlite_url_for(path: Path) -> str:
    """The SQLAlchemy URL of the SQLite file at ``path``."""
    return sa.URL.create("sqlite", database=str(path)).render_as_string()


def migrate_to_head(url: str) -> None:
    """Upgrade the database at ``url`` to head with a short-lived engine."""
    from govc_db.db import migrate

    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()


# -- PostgreSQL ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_admin_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Server/admin URL of the PostgreSQL the tests use; skip (fail under CI) without one."""
    problem: str | None = None
    try:
        server, notes = pg.discover()
    except RuntimeError as exc:
        problem = str(exc)
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    if server is None:
        message = f"{pg.HOW_TO_PROVIDE} Tried: {'; '.join(notes)}."
        if pg.in_ci():
            pytest.fail(f"CI=true, so a missing PostgreSQL is a failure. {message}", pytrace=False)
        pytest.skip(message)
    shown = pg.render_url(pg.normalize_url(server.admin_url), hide_password=True)
    request.config.stash[_PG_SOURCE] = f"{server.source} ({shown})"
    try:
        yield server.admin_url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def _pg_migrated_url(pg_admin_url: str) -> Iterator[str]:
    # One migrated database per session (per xdist worker); pg_url truncates it per test.
    url = pg.create_database(pg_admin_url)
    try:
        migrate_to_head(url)
        yield url
    finally:
        pg.drop_database(pg_admin_url, url)


@pytest.fixture(scope="session")
def _pg_truncate(_pg_migrated_url: str) -> Iterator[Callable[[], None]]:
    from govc_db.db.migrate import TABLE_PREFIX, VERSION_TABLE

    engine = sa.create_engine(_pg_migrated_url, pool_size=1, max_overflow=0)
    with engine.connect() as conn:
        names = [
            name
            for name in sa.inspect(conn).get_table_names()
            if name.startswith(TABLE_PREFIX) and name != VERSION_TABLE
        ]
    statement = sa.text(
        "TRUNCATE " + ", ".join(f'"{n}"' for n in sorted(names)) + " RESTART IDENTITY CASCADE"
    )

    def truncate() -> None:
        try:
            with engine.begin() as conn:
                # A connection a previous test left inside a transaction would block forever.
                conn.execute(sa.text("SET LOCAL lock_timeout = '10s'"))
                conn.execute(statement)
        except sa.exc.OperationalError as exc:
            pytest.fail(
                "could not truncate the shared test database (did an earlier test leave a "
                f"store or transaction open?): {type(exc.orig).__name__}",
                pytrace=False,
            )

    try:
        yield truncate
    finally:
        engine.dispose()


@pytest.fixture
def cluster() -> Iterator[pg._LocalCluster]:
    """A throwaway PostgreSQL cluster of the test's own (started by the test), for tests
    that stop, restart or reconfigure a server; removed afterwards."""
    c = pg.new_local_cluster()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def pg_url(_pg_migrated_url: str, _pg_truncate: Callable[[], None]) -> str:
    """URL of a clean PostgreSQL database migrated to head (its govc tables emptied)."""
    _pg_truncate()
    return _pg_migrated_url


# -- SQLite -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Migrating once and copying the file is much faster than migrating per test.
    path = tmp_path_factory.mktemp("sqlite-template") / "govc.db"
    migrate_to_head(sqlite_url_for(path))
    return path


@pytest.fixture
def sqlite_url(_sqlite_template: Path, tmp_path: Path) -> str:
    """URL of a clean SQLite database file migrated to head."""
    path = tmp_path / "govc.db"
    shutil.copyfile(_sqlite_template, path)
    return sqlite_url_for(path)


# -- both backends ------------------------------------------------------------------------


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend under test: ``"sqlite"`` or ``"postgres"``."""
    name: str = request.param
    return name


@pytest.fixture
def empty_db_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a brand-new, empty database of ``backend``."""
    if backend == "sqlite":
        yield sqlite_url_for(tmp_path / "empty.db")
        return
    admin_url: str = request.getfixturevalue("pg_admin_url")
    url = pg.create_database(admin_url)
    try:
        yield url
    finally:
        pg.drop_database(admin_url, url)


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest) -> str:
    """URL of a clean database of ``backend`` migrated to head."""
    url: str = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url")
    return url


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A :class:`govc_db.Store` on a clean migrated database, closed after the test."""
    # Imported here so this conftest loads even while the Store is being worked on.
    import govc_db

    opened = govc_db.open(db_url)
    try:
        yield opened
    finally:
        opened.close()
