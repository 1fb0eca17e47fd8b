"""Storage: slimmer commit index and clustered tables on SQLite.

* ``ix_govc_commits_repo_ctime`` is dropped: no query reads commits by committer time
  (log orders in memory from the index rows it fetched by generation or ancestry).
* ``govc_reflog``'s primary key becomes ``(repo_id, id)``: every per-repository table
  now leads its keys with ``repo_id`` (docs/citus.md). PostgreSQL keeps numbering rows
  from the serial's sequence (its column default moves into the store's INSERT).
* On SQLite, ``govc_objects``, ``govc_commits``, ``govc_commit_parents`` and
  ``govc_commit_paths`` become ``WITHOUT ROWID`` tables clustered on their primary key:
  the rowid b-tree and the separate primary-key index were the same rows twice (about
  a sixth of a history's file). Existing rows are copied over.

The delta storage itself needs no schema change: a delta row's ``data`` starts with its
base id (``govc_db.store.codec``), so rows written before this revision read unchanged.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CLUSTERED = ("govc_objects", "govc_commits", "govc_commit_parents", "govc_commit_paths")


def _recreate(with_rowid: bool) -> None:
    for table in CLUSTERED:
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_with_rowid": with_rowid}
        ):
            pass


def _reflog_key(columns: list[str]) -> None:
    with op.batch_alter_table("govc_reflog", recreate="auto") as batch:
        batch.drop_constraint("pk_govc_reflog", type_="primary")
        batch.create_primary_key("pk_govc_reflog", columns)


def upgrade() -> None:
    """Drop the unused commit-time index; cluster the SQLite tables on their keys; the
    reflog's primary key leads with repo_id."""
    op.drop_index(op.f("ix_govc_commits_repo_ctime"), table_name="govc_commits")
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        _recreate(with_rowid=False)
    else:
        # The serial's sequence stays, on its own (as the models declare it); the store
        # takes nextval() itself.
        op.alter_column("govc_reflog", "id", server_default=None)
        op.execute("ALTER SEQUENCE govc_reflog_id_seq OWNED BY NONE")
    _reflog_key(["repo_id", "id"])


def downgrade() -> None:
    """Back to 0001: rowid tables on SQLite, the commit-time index, the reflog's serial."""
    _reflog_key(["id"])
    if op.get_bind().dialect.name == "sqlite":
        _recreate(with_rowid=True)
    else:
        op.execute("ALTER SEQUENCE govc_reflog_id_seq OWNED BY govc_reflog.id")
        op.alter_column(
            "govc_reflog",
            "id",
            server_default=sa.text("nextval('govc_reflog_id_seq'::regclass)"),
        )
    op.create_index(
        op.f("ix_govc_commits_repo_ctime"),
        "govc_commits",
        ["repo_id", "committer_time"],
        unique=False,
    )
