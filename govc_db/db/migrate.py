"""Schema migrations: upgrade, downgrade and inspect a database with Alembic.

Alembic is configured in code, so no ``alembic.ini`` is needed at run time. The scripts
are found in an installed wheel (``govc_db/_migrations``, packaged by the build) or in a
source checkout (the top-level ``migrations/``).

govc_db keeps its revision in its own version table, ``govc_alembic_version``, so it can
live in a database whose application also uses Alembic (and its ``alembic_version``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, text
from sqlalchemy import exc as sa_exc

from govc_db.db.engine import WRITE_OPTION
from govc_db.db.errors import translate
from govc_db.errors import GovcError

__all__ = [
    "TABLE_PREFIX",
    "VERSION_TABLE",
    "alembic_config",
    "context_options",
    "current_revision",
    "downgrade",
    "head_revision",
    "include_name",
    "schema_problem",
    "upgrade",
]

log = logging.getLogger("govc_db.db.migrate")

VERSION_TABLE = "govc_alembic_version"
"""The table holding the schema revision of the govc tables."""

TABLE_PREFIX = "govc_"
"""Every govc table name starts with this; other tables in the database are left alone."""

# Key of the PostgreSQL advisory lock taken around a migration, so that many processes
# calling store.upgrade() at start-up run it one after the other (the later ones then find
# the schema at head and do nothing). The value is arbitrary: "govcdb" in ASCII, then 1.
_PG_MIGRATION_LOCK = 0x676F_7663_6462_0001

# Alembic keeps the running migration in module globals (alembic.context, alembic.op), so
# two migrations must never run at once in one process, whatever the database.
_ALEMBIC_LOCK = threading.Lock()


def _script_location() -> Path:
    packaged = resources.files("govc_db") / "_migrations"
    if isinstance(packaged, Path) and (packaged / "env.py").is_file():
        return packaged
    source = Path(__file__).resolve().parents[2] / "migrations"
    if (source / "env.py").is_file():
        return source
    raise GovcError(
        "the govc_db migration scripts are missing: neither govc_db/_migrations (installed "
        "package) nor migrations/ (source checkout) was found"
    )


def alembic_config(connection: Connection | None = None) -> Config:
    """Return an Alembic :class:`~alembic.config.Config` for the govc_db migrations.

    With ``connection``, ``env.py`` runs the migrations on that connection (and inside its
    transaction, if one is open) instead of opening its own.
    """
    config = Config()
    # Config values go through configparser interpolation, so a literal % must be doubled.
    config.set_main_option("script_location", str(_script_location()).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Alembic ``include_name`` hook: compare only govc tables, never the application's own."""
    if type_ == "table":
        return name is not None and name.startswith(TABLE_PREFIX)
    return True


def context_options(dialect_name: str) -> dict[str, Any]:
    """Return the ``MigrationContext`` options ``env.py`` uses on a ``dialect_name`` database.

    Tests pass the same options to ``compare_metadata``, so they check what
    ``alembic check`` checks.
    """
    return {
        "version_table": VERSION_TABLE,
        "compare_type": True,
        "render_as_batch": dialect_name == "sqlite",
        "include_name": include_name,
    }


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database of ``engine`` up to ``revision``; idempotent.

    Raises StoreUnavailable when the database cannot be reached, GovcError otherwise.
    """
    _run(engine, f"upgrade to {revision!r}", lambda config: command.upgrade(config, revision))


def downgrade(engine: Engine, revision: str = "base") -> None:
    """Migrate the database of ``engine`` down to ``revision`` (``"base"``: drop every govc table).

    Raises StoreUnavailable when the database cannot be reached, GovcError otherwise.
    """
    _run(engine, f"downgrade to {revision!r}", lambda config: command.downgrade(config, revision))


def current_revision(engine: Engine) -> str | None:
    """Return the revision the database of ``engine`` is at, or None if it was never migrated."""
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
            return context.get_current_revision()
    except (sa_exc.SQLAlchemyError, CommandError) as exc:
        raise _translate(exc, "reading the schema revision") from exc


def schema_problem(engine: Engine) -> str | None:
    """Why the database of ``engine`` cannot serve this version, or None when its schema
    is at head (or its revision cannot be read: the caller reports its own error then)."""
    try:
        current = current_revision(engine)
        head = head_revision()
    except GovcError:
        return None
    if current is None:
        return "the database has no govc_db schema: call store.upgrade() (or run `govc-db init`)"
    if current != head:
        return (
            f"the database schema is at revision {current}, this version needs {head}: "
            "call store.upgrade() (or run `govc-db init`)"
        )
    return None


def head_revision() -> str:
    """Return the newest revision of the migration scripts shipped with this version."""
    try:
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    except CommandError as exc:
        raise GovcError(f"cannot read the migration scripts: {exc}") from exc
    if head is None:
        raise GovcError("the migration scripts define no revision")
    return head


def _run(engine: Engine, what: str, action: Callable[[Config], None]) -> None:
    log.info("schema %s on %s", what, _safe_url(engine))
    try:
        with _ALEMBIC_LOCK, engine.connect() as connection:
            if connection.dialect.name == "sqlite":
                # Take the write lock up front (the Store's engine then says BEGIN IMMEDIATE):
                # a concurrent upgrade waits for it instead of failing on the lock upgrade.
                connection.execution_options(**{WRITE_OPTION: True})
            # One transaction for the whole run: the DDL is transactional on PostgreSQL (and
            # on SQLite under the Store's engine), so a failed migration changes nothing.
            with connection.begin():
                if connection.dialect.name == "postgresql":
                    connection.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK}
                    )
                action(alembic_config(connection))
    except GovcError:
        raise
    except (sa_exc.SQLAlchemyError, CommandError) as exc:
        raise _translate(exc, f"schema {what}") from exc


def _safe_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _translate(exc: sa_exc.SQLAlchemyError | CommandError, what: str) -> GovcError:
    if isinstance(exc, CommandError):
        # Alembic's own messages (unknown revision, multiple heads) carry no SQL or password.
        return GovcError(f"{what} failed: {exc}")
    return translate(exc, what)
