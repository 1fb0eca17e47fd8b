"""What a database holds, for ``govc-db stats``: repositories, objects, bytes per table.

Sizes are the database's own accounting: ``pg_total_relation_size`` (table, indexes and
TOAST) on PostgreSQL; the ``dbstat`` virtual table on SQLite (pages of the table and of
its indexes), or the whole file when SQLite was built without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from govc_db.db.errors import translating
from govc_db.models import Base

__all__ = ["Inventory", "RepoCount", "take_inventory"]


@dataclass(frozen=True, slots=True)
class RepoCount:
    """Objects and refs of one repository."""

    name: str
    objects: int
    refs: int
    commits: int


@dataclass(frozen=True, slots=True)
class Inventory:
    """The content of one govc_db database."""

    server: str
    """``PostgreSQL 16.2`` / ``SQLite 3.45.1``."""
    repositories: list[RepoCount] = field(default_factory=list)
    table_bytes: dict[str, int] = field(default_factory=dict)
    """Bytes used per govc table (with its indexes); ``{"(database file)": n}`` when the
    SQLite build cannot tell tables apart."""


_REPOS = sa.text(
    "SELECT r.name,"
    " (SELECT COUNT(*) FROM govc_objects o WHERE o.repo_id = r.id)"
    # + the entries of its pack rows (gc(); an interrupted gc may have packed some twice)
    " + (SELECT COALESCE(SUM(p.count), 0) FROM govc_packs p WHERE p.repo_id = r.id),"
    " (SELECT COUNT(*) FROM govc_refs f WHERE f.repo_id = r.id),"
    " (SELECT COUNT(*) FROM govc_commits c WHERE c.repo_id = r.id)"
    " FROM govc_repositories r ORDER BY r.name"
)


def _tables() -> list[str]:
    return sorted(t for t in Base.metadata.tables if t.startswith("govc_"))


def _pg_sizes(conn: sa.Connection) -> dict[str, int]:
    # The tables the search path shows (where the store's statements find them).
    rows = conn.execute(
        sa.text(
            "SELECT relname, pg_total_relation_size(oid) FROM pg_class"
            " WHERE relkind IN ('r', 'p') AND relname = ANY(:names) AND pg_table_is_visible(oid)"
        ),
        {"names": _tables()},
    )
    sizes = dict.fromkeys(_tables(), 0)
    sizes.update({str(name): int(size or 0) for name, size in rows})
    return sizes


def _sqlite_sizes(conn: sa.Connection) -> dict[str, int]:
    owner = {
        name: table
        for name, table in conn.execute(
            sa.text("SELECT name, tbl_name FROM sqlite_master WHERE tbl_name LIKE 'govc_%'")
        )
    }
    try:
        rows = conn.execute(sa.text("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name")).all()
    except sa.exc.OperationalError:  # built without SQLITE_ENABLE_DBSTAT_VTAB
        pages = conn.execute(sa.text("PRAGMA page_count")).scalar_one()
        size = conn.execute(sa.text("PRAGMA page_size")).scalar_one()
        return {"(database file)": int(pages) * int(size)}
    sizes = dict.fromkeys(_tables(), 0)
    for name, used in rows:
        table = owner.get(name)
        if table in sizes:
            sizes[table] += int(used)
    return sizes


def take_inventory(engine: Engine) -> Inventory:
    """Count repositories, objects, refs and commits; measure each govc table."""
    with translating("stats"), engine.connect() as conn:
        repos = [RepoCount(n, int(o), int(r), int(c)) for n, o, r, c in conn.execute(_REPOS)]
        if engine.dialect.name == "postgresql":
            version = conn.execute(sa.text("SHOW server_version")).scalar_one()
            server = f"PostgreSQL {str(version).split()[0]}"
            sizes = _pg_sizes(conn)
        else:
            version = conn.execute(sa.text("SELECT sqlite_version()")).scalar_one()
            server = f"SQLite {version}"
            sizes = _sqlite_sizes(conn)
    return Inventory(server=server, repositories=repos, table_bytes=sizes)
