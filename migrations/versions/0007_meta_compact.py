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


def _copy_commits() -> None:
    """Copy ``govc_commits_old`` into the new ``govc_commits`` in key order, each row with
    its ``govc_commit_parents`` rows as ``parents`` and its ``govc_commit_paths`` rows as
    ``changed`` (a root commit's position 0 even when it holds no path, a merge's every
    position up to its last parent's). The three tables are read as streams in
    ``(repo_id, oid)`` order and merged, so memory stays bounded by :data:`BATCH` rows."""
    conn = op.get_bind()
    # Per statement: Connection.execution_options() would change the connection for the
    # rest of the migration (a server-side cursor cannot run DDL).
    streamed = {"stream_results": True, "yield_per": BATCH}
    commits = conn.exec_driver_sql(
        "SELECT repo_id, oid, tree, generation, author_time, committer_time "
        "FROM govc_commits_old ORDER BY repo_id, oid",
        execution_options=streamed,
    )
    parents = conn.exec_driver_sql(
        "SELECT repo_id, oid, parent FROM govc_commit_parents ORDER BY repo_id, oid, position",
        execution_options=streamed,
    )
    paths = conn.exec_driver_sql(
        "SELECT repo_id, oid, position, path FROM govc_commit_paths "
        "ORDER BY repo_id, oid, position",
        execution_options=streamed,
    )
    new = sa.table(
        "govc_commits",
        *(
            sa.column(c)
            for c in (
                "repo_id",
                "oid",
                "tree",
                "generation",
                "author_time",
                "committer_time",
                "parents",
                "changed",
            )
        ),
    )
    next_parent = _Cursor(parents)
    next_path = _Cursor(paths)

    def rows() -> Iterator[dict[str, Any]]:
        for repo_id, oid, tree, generation, author_time, committer_time in commits:
            key = (int(repo_id), bytes(oid))
            ids = b"".join(bytes(r[2]) for r in next_parent.take(key))
            by_position: dict[int, list[bytes]] = {}
            for r in next_path.take(key):
                by_position.setdefault(int(r[2]), []).append(bytes(r[3]))
            last = max(max(by_position, default=0), len(ids) // 20 - 1, 0)
            changed = bytearray()
            for position in range(last + 1):
                for path in by_position.get(position, ()):
                    changed += b"\0" + path
                changed += b"\0"
            yield {
                "repo_id": key[0],
                "oid": key[1],
                "tree": bytes(tree),
                "generation": generation,
                "author_time": author_time,
                "committer_time": committer_time,
                "parents": ids,
                "changed": bytes(changed),
            }

    try:
        for batch in _batches(rows()):
            conn.execute(sa.insert(new), batch)
    finally:
        # Rows of the parent and path streams past the last commit (orphans) would keep
        # their cursors open, and the tables they read could not be dropped next.
        for result in (commits, parents, paths):
            result.close()


class _Cursor:
    """Rows of a stream ordered by ``(repo_id, oid)``, taken a commit at a time."""

    def __init__(self, result: Any) -> None:
        self._rows = iter(result)
        self._head: Any = next(self._rows, None)

    def take(self, key: tuple[int, bytes]) -> Iterator[Any]:
        """The rows of commit ``key`` (rows of commits before it, which have no commit
        row, are skipped)."""
        while self._head is not None and (int(self._head[0]), bytes(self._head[1])) < key:
            self._head = next(self._rows, None)
        while self._head is not None and (int(self._head[0]), bytes(self._head[1])) == key:
            yield self._head
            self._head = next(self._rows, None)


def upgrade() -> None:
    """Parents into the commit row; ``govc_commit_parents`` dropped; reflog blocks."""
    conn = op.get_bind()
    _set_aside_commits()
    _commits_table("govc_commits", with_parents=True)
    _copy_commits()
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
