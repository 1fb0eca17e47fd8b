"""Alembic environment of govc_db.

Used two ways:

* programmatically (``govc_db.db.migrate``, ``store.upgrade()``): the caller passes an open
  connection in ``config.attributes["connection"]`` and the migrations run on it, inside
  its transaction;
* from the ``alembic`` command line in a source checkout, with the database URL taken from
  ``-x url=...``, else ``sqlalchemy.url`` in the config, else ``GOVC_DB_URL``, else
  ``sqlite:///govc.db`` (the same default as ``govc_db.open()``).

Only tables named ``govc_*`` are compared, so an application's own tables in the same
database never show up as drift, and the revision lives in ``govc_alembic_version``.
"""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, create_engine, pool

from govc_db.db.migrate import context_options
from govc_db.models import Base

config = context.config
target_metadata = Base.metadata

DEFAULT_URL = "sqlite:///govc.db"

# Configure logging only when run from the alembic CLI with an ini file; when a program
# runs the migrations, its logging setup is left alone.
if config.config_file_name is not None and not config.attributes.get("connection"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    """The URL to migrate when no connection was passed in."""
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        url = config.get_main_option("sqlalchemy.url")
    if not url:
        # The alembic command line is an entry point, like govc_db's own CLI, so it may
        # read the environment.
        url = os.environ.get("GOVC_DB_URL") or DEFAULT_URL
    return url


def run_migrations_offline() -> None:
    """Emit the migration SQL as a script (``alembic upgrade head --sql``)."""
    url = database_url()
    dialect_name = url.split(":", 1)[0].split("+", 1)[0]
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **context_options(dialect_name),
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    """Run the migrations on ``connection``."""
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        **context_options(connection.dialect.name),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on the passed-in connection, or on a new one to the configured URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        do_run_migrations(connection)
        return
    # NullPool: a migration run opens one connection and must not leave a pool behind.
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            do_run_migrations(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
