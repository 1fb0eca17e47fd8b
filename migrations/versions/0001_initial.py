"""Initial schema: repositories, objects, refs, reflog and the commit index.

Revision ID: 0001
Revises:
Create Date: 2026-11-27 16:04:04.870927
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The types of govc_db.models, spelled out so this revision never changes with the models.
# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
BIG_INT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
OID = sa.LargeBinary(length=20)


def _repo_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["repo_id"],
        ["govc_repositories.id"],
        name=op.f(f"fk_{table}_repo_id_govc_repositories"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    """Create every govc table with the constraint names of the models' naming convention."""
    op.create_table(
        "govc_repositories",
        sa.Column("id", BIG_INT_PK, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("default_branch", sa.String(length=255), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.current_timestamp(),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_govc_repositories")),
        sa.UniqueConstraint("name", name=op.f("uq_govc_repositories_name")),
        sqlite_autoincrement=True,
    )

    op.create_table(
        "govc_objects",
        sa.Column("repo_id", BIG_INT_PK, nullable=False),
        sa.Column("oid", OID, nullable=False),
        sa.Column("type", sa.SmallInteger(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("encoding", sa.SmallInteger(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        _repo_fk("govc_objects"),
        sa.PrimaryKeyConstraint("repo_id", "oid", name=op.f("pk_govc_objects")),
    )

    op.create_table(
        "govc_refs",
        sa.Column("repo_id", BIG_INT_PK, nullable=False),
        sa.Column("name", sa.String(length=1024), nullable=False),
        sa.Column("target", OID, nullable=False),
        _repo_fk("govc_refs"),
        sa.PrimaryKeyConstraint("repo_id", "name", name=op.f("pk_govc_refs")),
    )

    op.create_table(
        "govc_reflog",
        sa.Column("id", BIG_INT_PK, autoincrement=True, nullable=False),
        sa.Column("repo_id", BIG_INT_PK, nullable=False),
        sa.Column("ref", sa.String(length=1024), nullable=False),
        sa.Column("old", OID, nullable=True),
        sa.Column("new", OID, nullable=True),
        sa.Column("time", sa.BigInteger(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        _repo_fk("govc_reflog"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_govc_reflog")),
    )
    op.create_index(
        op.f("ix_govc_reflog_repo_ref"), "govc_reflog", ["repo_id", "ref", "id"], unique=False
    )

    op.create_table(
        "govc_commits",
        sa.Column("repo_id", BIG_INT_PK, nullable=False),
        sa.Column("oid", OID, nullable=False),
        sa.Column("tree", OID, nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("author_time", sa.BigInteger(), nullable=False),
        sa.Column("committer_time", sa.BigInteger(), nullable=False),
        sa.Column("parent_count", sa.SmallInteger(), nullable=False),
        _repo_fk("govc_commits"),
        sa.PrimaryKeyConstraint("repo_id", "oid", name=op.f("pk_govc_commits")),
    )
    op.create_index(
        op.f("ix_govc_commits_repo_ctime"),
        "govc_commits",
        ["repo_id", "committer_time"],
        unique=False,
    )
    op.create_index(
        op.f("ix_govc_commits_repo_gen"), "govc_commits", ["repo_id", "generation"], unique=False
    )

    op.create_table(
        "govc_commit_parents",
        sa.Column("repo_id", BIG_INT_PK, nullable=False),
        sa.Column("oid", OID, nullable=False),
        sa.Column("position", sa.SmallInteger(), nullable=False),
        sa.Column("parent", OID, nullable=False),
        _repo_fk("govc_commit_parents"),
        sa.PrimaryKeyConstraint("repo_id", "oid", "position", name=op.f("pk_govc_commit_parents")),
    )
    op.create_index(
        op.f("ix_govc_commit_parents_repo_parent"),
        "govc_commit_parents",
        ["repo_id", "parent"],
        unique=False,
    )

    op.create_table(
        "govc_commit_paths",
        sa.Column("repo_id", BIG_INT_PK, nullable=False),
        sa.Column("oid", OID, nullable=False),
        sa.Column("position", sa.SmallInteger(), nullable=False),
        sa.Column("path", sa.LargeBinary(), nullable=False),
        _repo_fk("govc_commit_paths"),
        sa.PrimaryKeyConstraint(
            "repo_id", "oid", "position", "path", name=op.f("pk_govc_commit_paths")
        ),
    )
    op.create_index(
        op.f("ix_govc_commit_paths_repo_path"),
        "govc_commit_paths",
        ["repo_id", "path", "oid"],
        unique=False,
    )


def downgrade() -> None:
    """Drop every govc table, children before the repositories they reference."""
    op.drop_index(op.f("ix_govc_commit_paths_repo_path"), table_name="govc_commit_paths")
    op.drop_table("govc_commit_paths")
    op.drop_index(op.f("ix_govc_commit_parents_repo_parent"), table_name="govc_commit_parents")
    op.drop_table("govc_commit_parents")
    op.drop_index(op.f("ix_govc_commits_repo_gen"), table_name="govc_commits")
    op.drop_index(op.f("ix_govc_commits_repo_ctime"), table_name="govc_commits")
    op.drop_table("govc_commits")
    op.drop_index(op.f("ix_govc_reflog_repo_ref"), table_name="govc_reflog")
    op.drop_table("govc_reflog")
    op.drop_table("govc_refs")
    op.drop_table("govc_objects")
    op.drop_table("govc_repositories")
