"""Pack rows: ``gc()`` stores many small objects of a repository in one row.

``govc_packs`` (``repo_id``, ``pack_id``, ``count``, ``ids``, ``meta``, ``data``), keyed
``(repo_id, pack_id)`` and clustered on it on SQLite (``WITHOUT ROWID``); on PostgreSQL
``ids`` and ``data`` are stored without TOAST compression (ids are random bytes, data is
a zstd frame). Existing ``govc_objects`` rows are untouched: they read as before, and the
next ``gc()`` packs them.

Downgrade writes every packed object back as a ``govc_objects`` row (zlib, encoding 1,
which every earlier revision reads), then drops the table.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Sequence

import sqlalchemy as sa
import zstandard
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_INT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TYPES = {1: b"commit", 2: b"tree", 3: b"blob", 4: b"tag"}


def upgrade() -> None:
    """Create ``govc_packs``."""
    op.create_table(
        "govc_packs",
        sa.Column("repo_id", BIG_INT_PK, nullable=False),
        sa.Column("pack_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("ids", sa.LargeBinary(), nullable=False),
        sa.Column("meta", sa.LargeBinary(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["repo_id"],
            ["govc_repositories.id"],
            name=op.f("fk_govc_packs_repo_id_govc_repositories"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("repo_id", "pack_id", name=op.f("pk_govc_packs")),
        sqlite_with_rowid=False,
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE govc_packs ALTER COLUMN ids SET STORAGE EXTERNAL, "
            "ALTER COLUMN data SET STORAGE EXTERNAL"
        )


def _varints(meta: bytes) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    i = 0
    while i < len(meta):
        kind = meta[i]
        i += 1
        n = shift = 0
        while True:
            b = meta[i]
            i += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        out.append((kind, n))
    return out


def downgrade() -> None:
    """Write packed objects back as ``govc_objects`` rows, then drop ``govc_packs``."""
    conn = op.get_bind()
    objects = sa.table(
        "govc_objects",
        sa.column("repo_id"),
        sa.column("oid"),
        sa.column("type"),
        sa.column("size"),
        sa.column("encoding"),
        sa.column("data"),
    )
    present = sa.text("SELECT 1 FROM govc_objects WHERE repo_id = :r AND oid = :o")
    keys = conn.execute(sa.text("SELECT repo_id, pack_id FROM govc_packs")).all()
    for repo_id, pack_id in keys:
        ids, meta, data = conn.execute(
            sa.text("SELECT ids, meta, data FROM govc_packs WHERE repo_id = :r AND pack_id = :p"),
            {"r": repo_id, "p": pack_id},
        ).one()
        raw = zstandard.ZstdDecompressor().decompress(bytes(data))
        rows = []
        at = 0
        entries = _varints(bytes(meta))
        width = 20 if len(ids) == 20 * len(entries) else 0
        for i, (kind, size) in enumerate(entries):
            content = raw[at : at + size]
            at += size
            if width:
                oid = bytes(ids[i * 20 : i * 20 + 20])
            else:  # packs keep the first bytes of each id: the content gives the rest
                header = b"%s %d\0" % (_TYPES[kind], size)
                oid = hashlib.sha1(header + content, usedforsecurity=False).digest()
            if conn.execute(present, {"r": repo_id, "o": oid}).first() is None:
                rows.append(
                    {
                        "repo_id": repo_id,
                        "oid": oid,
                        "type": kind,
                        "size": size,
                        "encoding": 1,
                        "data": zlib.compress(content),
                    }
                )
        if rows:
            conn.execute(sa.insert(objects), rows)
    op.drop_table("govc_packs")
