"""Storage: a slimmer commit index and reflog (each table keeps one index per use).

* ``ix_govc_commit_parents_repo_parent`` is dropped: no query looks commits up by
  parent (the ancestry and index queries join parents by commit id, the primary key).
  On the bench's 10,001-commit history it was 0.6 MiB on PostgreSQL, 0.5 on SQLite.
* ``govc_commit_paths`` is keyed ``(repo_id, path, oid, position)``, its only index:
  the path-limited log reads a range of it, as it read ``ix_govc_commit_paths_repo_path``
  before; the old ``(repo_id, oid, position, path)`` key (every path a second time) served
  only ``verify``, which now reads the repository's rows with one scan. 0.8 MiB on
  PostgreSQL, 0.5 on SQLite, of the bench history.
* ``govc_reflog``'s primary key becomes ``(repo_id, ref, id)`` and is its only index:
  ``ix_govc_reflog_repo_ref`` ``(repo_id, ref, id)`` held the same keys a second time.
  On SQLite the table becomes ``WITHOUT ROWID`` (clustered on that key) and a new row's
  ``id`` is its ref's next number; PostgreSQL keeps numbering from the sequence. Existing
  rows are carried over unchanged (their ids are unique per repository, so also per ref).

Downgrade restores both indexes and the ``(repo_id, id)`` key; on SQLite it first
renumbers each repository's reflog rows 1, 2, ... in their order (ids are only unique
per ref after this revision).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _paths(columns: list[str]) -> None:
    with op.batch_alter_table(
        "govc_commit_paths", recreate="auto", table_kwargs={"sqlite_with_rowid": False}
    ) as batch:
        batch.drop_constraint("pk_govc_commit_paths", type_="primary")
        batch.create_primary_key("pk_govc_commit_paths", columns)


def _reflog(columns: list[str], *, with_rowid: bool) -> None:
    with op.batch_alter_table(
        "govc_reflog", recreate="auto", table_kwargs={"sqlite_with_rowid": with_rowid}
    ) as batch:
        batch.drop_constraint("pk_govc_reflog", type_="primary")
        batch.create_primary_key("pk_govc_reflog", columns)


def upgrade() -> None:
    """Drop the by-parent index; the reflog's primary key becomes its only index."""
    op.drop_index("ix_govc_commit_parents_repo_parent", table_name="govc_commit_parents")
    op.drop_index("ix_govc_reflog_repo_ref", table_name="govc_reflog")
    _reflog(["repo_id", "ref", "id"], with_rowid=False)
    op.drop_index("ix_govc_commit_paths_repo_path", table_name="govc_commit_paths")
    _paths(["repo_id", "path", "oid", "position"])


def downgrade() -> None:
    """Back to 0004's keys and indexes."""
    _paths(["repo_id", "oid", "position", "path"])
    op.create_index(
        "ix_govc_commit_paths_repo_path",
        "govc_commit_paths",
        ["repo_id", "path", "oid"],
        unique=False,
    )
    if op.get_bind().dialect.name == "sqlite":
        # Ids were numbered per ref: make them unique per repository again (through
        # negative values, so no intermediate key collides).
        op.execute(
            "CREATE TEMP TABLE govc_reflog_renumber AS SELECT repo_id, ref, id, "
            "row_number() OVER (PARTITION BY repo_id ORDER BY id, ref) AS n FROM govc_reflog"
        )
        op.execute(
            "UPDATE govc_reflog SET id = -(SELECT n FROM govc_reflog_renumber AS r "
            "WHERE r.repo_id = govc_reflog.repo_id AND r.ref = govc_reflog.ref "
            "AND r.id = govc_reflog.id)"
        )
        op.execute("DROP TABLE govc_reflog_renumber")
        op.execute("UPDATE govc_reflog SET id = -id")
    _reflog(["repo_id", "id"], with_rowid=True)
    op.create_index(
        "ix_govc_reflog_repo_ref", "govc_reflog", ["repo_id", "ref", "id"], unique=False
    )
    op.create_index(
        "ix_govc_commit_parents_repo_parent",
        "govc_commit_parents",
        ["repo_id", "parent"],
        unique=False,
    )
