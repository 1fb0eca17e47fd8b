"""Storage: slimmer commit index and clustered tables on SQLite.

* ``ix_govc_commits_repo_ctime`` is dropped: no query reads commits by committer time
  (log orders in memory from the index rows it fetched by generation or ancestry).
* On SQLite, ``govc_objects``, ``govc_commits``, ``govc_commit_parents`` and
  ``govc_commit_paths`` become ``WITHOUT ROWID`` tables clustered on their primary key:
  the rowid b-tree and the separate primary-key index were the same rows twice (about
  a sixth of a history's file). Existing rows are copied over.

The delta storage itself needs no schema change: a delta row's ``data`` starts with its
base id (``govc_db.store.codec``), so rows written before this revision read unchanged.

Revision ID: 0003
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CLUSTERED = ("govc_objects", "govc_commits", "govc_commit_parents", "govc_commit_paths")


def _recreate(with_rowid: bool) -> None:
    for table in CLUSTERED:
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_with_rowid": with_rowid}
        ):
            pass


def upgrade() -> None:
    """Drop the unused commit-time index; cluster the SQLite tables on their keys."""
    op.drop_index(op.f("ix_govc_commits_repo_ctime"), table_name="govc_commits")
    if op.get_bind().dialect.name == "sqlite":
        _recreate(with_rowid=False)


def downgrade() -> None:
    """Back to 0001: rowid tables on SQLite, the commit-time index."""
    if op.get_bind().dialect.name == "sqlite":
        _recreate(with_rowid=True)
    op.create_index(
        op.f("ix_govc_commits_repo_ctime"),
        "govc_commits",
        ["repo_id", "committer_time"],
        unique=False,
    )
