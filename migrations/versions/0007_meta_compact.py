"""Storage: one row per commit in the commit index (parents and changed paths in it);
reflog blocks.

* ``govc_commits`` gains ``parents``: the parents' 20-byte ids concatenated in parent
  order (empty for a root commit), and loses ``parent_count`` (its length / 20).
  ``govc_commit_parents`` is dropped: a commit's parents cost a second row, with its
  tuple header and a second primary-key entry (1.45 MiB of the bench's 10,001-commit
  history on PostgreSQL).
* ``govc_commits`` gains ``changed``: the paths the commit changed against each parent
  position (``NUL path`` per path, ``NUL`` after each position; see
  :class:`govc_db.models.CommitIndex`). ``govc_commit_paths`` is dropped: a row and a
  key entry per changed path (2.2 MiB of the bench history on PostgreSQL); the
  path-limited log now scans the repository's commit rows for the path.
* The table is rebuilt (copied in key order, so its pages are dense) with every
  commit's parents and changed paths carried over.
* ``govc_reflog_blocks`` is created: ``gc()`` moves the reflog rows of a ref into
  blocks of many moves a row (:mod:`govc_db.store.reflog`), keyed ``(repo_id, ref, id)``;
  on PostgreSQL ``packed`` (a zstd frame) is stored without TOAST compression.

Downgrade writes every block's moves back as ``govc_reflog`` rows (each ref's rows
renumbered in order: from the sequence on PostgreSQL, 1, 2, ... on SQLite), drops
``govc_reflog_blocks``, recreates ``govc_commit_parents`` from ``parents`` and
``govc_commit_paths`` from ``changed``, and puts ``parent_count`` back.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from govc_db.store import reflog as reflog_blocks

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_INT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
#: Rows per statement when rows are carried over in Python (SQLite).
BATCH = 5000


def _commits_table(name: str, *, with_parents: bool) -> None:
    last = (
        [
            sa.Column("parents", sa.LargeBinary(), nullable=False),
            sa.Column("changed", sa.LargeBinary(), nullable=False),
        ]
        if with_parents
        else [sa.Column("parent_count", sa.SmallInteger(), nullable=False)]
    )
    op.create_table(
        name,
        sa.Column("repo_id", BIG_INT_PK, nullable=False),
        sa.Column("oid", sa.LargeBinary(length=20), nullable=False),
        sa.Column("tree", sa.LargeBinary(length=20), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("author_time", sa.BigInteger(), nullable=False),
        sa.Column("committer_time", sa.BigInteger(), nullable=False),
        *last,
        sa.ForeignKeyConstraint(
            ["repo_id"],
            ["govc_repositories.id"],
            name="fk_govc_commits_repo_id_govc_repositories",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("repo_id", "oid", name="pk_govc_commits"),
        sqlite_with_rowid=False,
    )


def _set_aside_commits() -> None:
    """Rename ``govc_commits`` to ``govc_commits_old``, its key and index out of the way."""
    op.drop_index("ix_govc_commits_repo_gen", table_name="govc_commits")
    op.rename_table("govc_commits", "govc_commits_old")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE govc_commits_old RENAME CONSTRAINT pk_govc_commits TO pk_old")
        op.execute(
            "ALTER TABLE govc_commits_old RENAME CONSTRAINT "
            "fk_govc_commits_repo_id_govc_repositories TO fk_old"
        )


def _finish_commits() -> None:
    op.drop_table("govc_commits_old")
    op.create_index("ix_govc_commits_repo_gen", "govc_commits", ["repo_id", "generation"])


def _batches(rows: Iterator[Any]) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _changed_into_commits() -> None:
    """Each commit's ``govc_commit_paths`` rows as its ``changed`` (a root commit's
    position 0 even when it holds no path, a merge's every position up to its last
    parent's)."""
    conn = op.get_bind()
    update = sa.text("UPDATE govc_commits SET changed = :c WHERE repo_id = :r AND oid = :o")
    positions = conn.exec_driver_sql(
        "SELECT repo_id, oid, length(parents) / 20 FROM govc_commits"
    ).fetchall()
    count = {(r, bytes(o)): n for r, o, n in positions}
    rows = conn.exec_driver_sql(
        "SELECT repo_id, oid, position, path FROM govc_commit_paths "
        "ORDER BY repo_id, oid, position"
    )
    by_commit: dict[tuple[int, bytes], dict[int, list[bytes]]] = {}
    for repo_id, oid, position, path in rows:
        key = (repo_id, bytes(oid))
        by_commit.setdefault(key, {}).setdefault(int(position), []).append(bytes(path))

    def blobs() -> Iterator[dict[str, Any]]:
        for key, n in count.items():
            paths = by_commit.get(key, {})
            last = max(max(paths, default=0), n - 1, 0)
            out = bytearray()
            for position in range(last + 1):
                for path in sorted(paths.get(position, ())):
                    out += b"\0" + path
                out += b"\0"
            yield {"c": bytes(out), "r": key[0], "o": key[1]}

    for batch in _batches(blobs()):
        conn.execute(update, batch)


def upgrade() -> None:
    """Parents into the commit row; ``govc_commit_parents`` dropped; reflog blocks."""
    conn = op.get_bind()
    _set_aside_commits()
    _commits_table("govc_commits", with_parents=True)
    if conn.dialect.name == "postgresql":
        op.execute(
            "INSERT INTO govc_commits (repo_id, oid, tree, generation, author_time, "
            "committer_time, parents, changed) SELECT c.repo_id, c.oid, c.tree, c.generation, "
            "c.author_time, c.committer_time, coalesce((SELECT string_agg(p.parent, "
            "''::bytea ORDER BY p.position) FROM govc_commit_parents p "
            "WHERE p.repo_id = c.repo_id AND p.oid = c.oid), ''::bytea), ''::bytea "
            "FROM govc_commits_old c ORDER BY c.repo_id, c.oid"
        )
    else:
        op.execute(
            "INSERT INTO govc_commits (repo_id, oid, tree, generation, author_time, "
            "committer_time, parents, changed) SELECT repo_id, oid, tree, generation, "
            "author_time, committer_time, x'', x'' FROM govc_commits_old ORDER BY repo_id, oid"
        )
        rows = conn.exec_driver_sql(
            "SELECT repo_id, oid, parent FROM govc_commit_parents "
            "ORDER BY repo_id, oid, position"
        )
        merged: list[tuple[bytes, int, bytes]] = []
        key: tuple[int, bytes] | None = None
        for repo_id, oid, parent in rows.fetchall():
            if key == (repo_id, oid):
                last = merged[-1]
                merged[-1] = (last[0] + bytes(parent), last[1], last[2])
            else:
                key = (repo_id, bytes(oid))
                merged.append((bytes(parent), repo_id, bytes(oid)))
        for batch in _batches(iter(merged)):
            conn.exec_driver_sql(
                "UPDATE govc_commits SET parents = ? WHERE repo_id = ? AND oid = ?", batch
            )
    _changed_into_commits()
    _finish_commits()
    op.drop_table("govc_commit_parents")
    op.drop_table("govc_commit_paths")
    op.create_table(
        "govc_reflog_blocks",
        sa.Column("repo_id", BIG_INT_PK, nullable=False),
        sa.Column("ref", sa.String(length=1024), nullable=False),
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("packed", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["repo_id"],
            ["govc_repositories.id"],
            name=op.f("fk_govc_reflog_blocks_repo_id_govc_repositories"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("repo_id", "ref", "id", name=op.f("pk_govc_reflog_blocks")),
        sqlite_with_rowid=False,
    )
    if conn.dialect.name == "postgresql":
        op.execute("ALTER TABLE govc_reflog_blocks ALTER COLUMN packed SET STORAGE EXTERNAL")


def _unpack_reflog() -> None:
    """Every block's moves as ``govc_reflog`` rows, each ref's renumbered in order."""
    conn = op.get_bind()
    pg = conn.dialect.name == "postgresql"
    refs = conn.exec_driver_sql(
        "SELECT DISTINCT repo_id, ref FROM govc_reflog_blocks ORDER BY repo_id, ref"
    ).fetchall()
    read = sa.text(
        "SELECT id, old, new, time, message, CAST(NULL AS BLOB) AS packed FROM govc_reflog "
        "WHERE repo_id = :r AND ref = :ref UNION ALL SELECT id, NULL, NULL, 0, '', packed "
        "FROM govc_reflog_blocks WHERE repo_id = :r AND ref = :ref ORDER BY id"
        if not pg
        else "SELECT id, old, new, time, message, NULL::bytea AS packed FROM govc_reflog "
        "WHERE repo_id = :r AND ref = :ref UNION ALL SELECT id, NULL, NULL, 0, '', packed "
        "FROM govc_reflog_blocks WHERE repo_id = :r AND ref = :ref ORDER BY id"
    )
    ident = "nextval('govc_reflog_id_seq')" if pg else ":id"
    insert = sa.text(
        f"INSERT INTO govc_reflog (id, repo_id, ref, old, new, time, message) "
        f"VALUES ({ident}, :r, :ref, :old, :new, :time, :message)"
    )
    for repo_id, ref in refs:
        key = {"r": repo_id, "ref": ref}
        moves = [m for row in conn.execute(read, key) for m in reflog_blocks.moves_of_row(row)]
        conn.execute(sa.text("DELETE FROM govc_reflog WHERE repo_id = :r AND ref = :ref"), key)
        numbered = ({"id": i, **key, **m} for i, m in enumerate(moves, start=1))
        for batch in _batches(numbered):
            conn.execute(insert, batch)


def downgrade() -> None:
    """Back to 0006: moves as rows, ``govc_commit_parents`` and ``parent_count``."""
    conn = op.get_bind()
    _unpack_reflog()
    op.drop_table("govc_reflog_blocks")
    op.create_table(
        "govc_commit_parents",
        sa.Column("repo_id", BIG_INT_PK, nullable=False),
        sa.Column("oid", sa.LargeBinary(length=20), nullable=False),
        sa.Column("position", sa.SmallInteger(), nullable=False),
        sa.Column("parent", sa.LargeBinary(length=20), nullable=False),
        sa.ForeignKeyConstraint(
            ["repo_id"],
            ["govc_repositories.id"],
            name=op.f("fk_govc_commit_parents_repo_id_govc_repositories"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("repo_id", "oid", "position", name=op.f("pk_govc_commit_parents")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "govc_commit_paths",
        sa.Column("repo_id", BIG_INT_PK, nullable=False),
        sa.Column("oid", sa.LargeBinary(length=20), nullable=False),
        sa.Column("position", sa.SmallInteger(), nullable=False),
        sa.Column("path", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["repo_id"],
            ["govc_repositories.id"],
            name=op.f("fk_govc_commit_paths_repo_id_govc_repositories"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "repo_id", "path", "oid", "position", name=op.f("pk_govc_commit_paths")
        ),
        sqlite_with_rowid=False,
    )
    changed = conn.exec_driver_sql("SELECT repo_id, oid, changed FROM govc_commits").fetchall()

    def paths() -> Iterator[dict[str, Any]]:
        for r, o, blob in changed:
            position = 0
            for token in bytes(blob).split(b"\0")[1:]:
                if token:
                    yield {"r": r, "o": bytes(o), "k": position, "p": token}
                else:
                    position += 1

    for batch in _batches(paths()):
        conn.execute(
            sa.text(
                "INSERT INTO govc_commit_paths (repo_id, oid, position, path) "
                "VALUES (:r, :o, :k, :p)"
            ),
            batch,
        )
    rows = conn.exec_driver_sql(
        "SELECT repo_id, oid, parents FROM govc_commits WHERE length(parents) > 0"
    ).fetchall()
    parents = (
        {"r": r, "o": bytes(o), "k": k, "p": bytes(p)[k * 20 : k * 20 + 20]}
        for r, o, p in rows
        for k in range(len(p) // 20)
    )
    for batch in _batches(parents):
        conn.execute(
            sa.text(
                "INSERT INTO govc_commit_parents (repo_id, oid, position, parent) "
                "VALUES (:r, :o, :k, :p)"
            ),
            batch,
        )
    _set_aside_commits()
    _commits_table("govc_commits", with_parents=False)
    op.execute(
        "INSERT INTO govc_commits (repo_id, oid, tree, generation, author_time, "
        "committer_time, parent_count) SELECT repo_id, oid, tree, generation, author_time, "
        "committer_time, length(parents) / 20 FROM govc_commits_old ORDER BY repo_id, oid"
    )
    _finish_commits()
