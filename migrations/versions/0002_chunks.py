"""Chunks of large blobs (content-defined, shared between versions).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07 02:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_INT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
OID = sa.LargeBinary(length=20)


def upgrade() -> None:
    """Create ``govc_chunks`` (primary key leading with the repository)."""
    op.create_table(
        "govc_chunks",
        sa.Column("repo_id", BIG_INT_PK, nullable=False),
        sa.Column("chunk_id", OID, nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("encoding", sa.SmallInteger(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["repo_id"],
            ["govc_repositories.id"],
            name=op.f("fk_govc_chunks_repo_id_govc_repositories"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("repo_id", "chunk_id", name=op.f("pk_govc_chunks")),
    )
    if op.get_bind().dialect.name == "postgresql":
        # Chunks arrive compressed (or incompressible): no second compression attempt.
        op.execute("ALTER TABLE govc_chunks ALTER COLUMN data SET STORAGE EXTERNAL")


def downgrade() -> None:
    """Drop ``govc_chunks``."""
    op.drop_table("govc_chunks")
