"""API tokens of the HTTP service: only SHA-256 digests are stored.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 02:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_INT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create ``govc_api_tokens``."""
    op.create_table(
        "govc_api_tokens",
        sa.Column("id", BIG_INT_PK, autoincrement=True, nullable=False),
        sa.Column("digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("repo_id", BIG_INT_PK, nullable=True),
        sa.Column("can_write", sa.Boolean(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.current_timestamp(),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["repo_id"],
            ["govc_repositories.id"],
            name=op.f("fk_govc_api_tokens_repo_id_govc_repositories"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_govc_api_tokens")),
    )


def downgrade() -> None:
    """Drop ``govc_api_tokens``."""
    op.drop_table("govc_api_tokens")
