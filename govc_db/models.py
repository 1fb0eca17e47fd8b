"""SQLAlchemy 2 ORM models: the tables users import, join against and migrate.

Every table hangs off one declarative :class:`Base` whose metadata carries a
naming convention, so constraint names are stable across SQLite and PostgreSQL
and Alembic autogenerate sees no drift. Object ids are raw 20-byte SHA-1 values.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    DDL,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Sequence,
    SmallInteger,
    String,
    Text,
    event,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = [
    "ApiToken",
    "Base",
    "CommitIndex",
    "ChunkRow",
    "ObjectRow",
    "PackRow",
    "Ref",
    "RefLog",
    "RefLogBlock",
    "Repository",
]

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only gives an auto-incrementing rowid to a column declared INTEGER PRIMARY KEY.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")
OID = LargeBinary(20)
#: Numbers reflog rows on PostgreSQL (created by 0001 as the id column's serial sequence).
REFLOG_SEQUENCE = Sequence("govc_reflog_id_seq")


class Base(DeclarativeBase):
    """Declarative base of every govc_db table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Repository(Base):
    """A repository: its name and the branch ``HEAD`` stands for."""

    __tablename__ = "govc_repositories"
    # Never reuse a deleted repository's id on SQLite: a stale handle must not see a
    # new repository's data.
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    default_branch: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.current_timestamp()
    )

    refs: Mapped[list[Ref]] = relationship(
        back_populates="repository", cascade="all, delete-orphan", passive_deletes=True
    )


class ObjectRow(Base):
    """A git object of one repository, stored once per (repository, id).

    ``encoding`` says how ``data`` is stored: 0 raw, 1 zlib, 2 zstd. ``size`` is the
    uncompressed length, which is also the size in git's object header.
    """

    __tablename__ = "govc_objects"
    # Clustered on (repo_id, oid) on SQLite: no second copy of the key in a rowid table.
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012

    repo_id: Mapped[int] = mapped_column(
        ForeignKey("govc_repositories.id", ondelete="CASCADE"), primary_key=True
    )
    oid: Mapped[bytes] = mapped_column(OID, primary_key=True)
    type: Mapped[int] = mapped_column(SmallInteger)
    size: Mapped[int] = mapped_column(BigInteger)
    encoding: Mapped[int] = mapped_column(SmallInteger, default=0)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class PackRow(Base):
    """Many small objects of one repository compressed together (written by ``gc()``).

    ``ids`` holds the entries' 20-byte ids in entry order, ``meta`` per entry its type
    number (one byte) and its size (a varint), ``data`` one zstd frame of the entries'
    contents concatenated in that order. An object lives either in ``govc_objects`` or
    in a pack (or, for a moment while ``gc()`` runs, in both); see
    :mod:`govc_db.store.packs`.
    """

    __tablename__ = "govc_packs"
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012

    repo_id: Mapped[int] = mapped_column(
        ForeignKey("govc_repositories.id", ondelete="CASCADE"), primary_key=True
    )
    pack_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    count: Mapped[int] = mapped_column(Integer)
    ids: Mapped[bytes] = mapped_column(LargeBinary)
    meta: Mapped[bytes] = mapped_column(LargeBinary)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Ref(Base):
    """A named pointer (``refs/heads/main``, ``refs/tags/v1``) changed only by CAS."""

    __tablename__ = "govc_refs"

    repo_id: Mapped[int] = mapped_column(
        ForeignKey("govc_repositories.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(1024), primary_key=True)
    target: Mapped[bytes] = mapped_column(OID)

    repository: Mapped[Repository] = relationship(back_populates="refs")


class RefLog(Base):
    """Every ref move, so a forced move can be undone; ``old``/``new`` None on create/delete.

    The primary key ``(repo_id, ref, id)`` leads with ``repo_id`` (so a Citus deployment
    can distribute the table by repository) and is the only index: reading a ref's log
    is a range of it. ``id`` orders the moves of a ref: from a sequence on PostgreSQL,
    the ref's next number on SQLite (whose writers are serialized). Clustered on that key
    on SQLite (``WITHOUT ROWID``).
    """

    __tablename__ = "govc_reflog"
    __table_args__ = (
        PrimaryKeyConstraint("repo_id", "ref", "id", name="pk_govc_reflog"),
        {"sqlite_with_rowid": False},
    )

    id: Mapped[int] = mapped_column(BigIntPK, REFLOG_SEQUENCE, autoincrement=False)
    repo_id: Mapped[int] = mapped_column(ForeignKey("govc_repositories.id", ondelete="CASCADE"))
    ref: Mapped[str] = mapped_column(String(1024))
    old: Mapped[bytes | None] = mapped_column(OID)
    new: Mapped[bytes | None] = mapped_column(OID)
    time: Mapped[float] = mapped_column(BigInteger)
    """Microseconds since the epoch."""
    message: Mapped[str] = mapped_column(Text, default="")


class RefLogBlock(Base):
    """Many moves of one ref in one row (written by ``gc()``, :mod:`govc_db.store.reflog`).

    ``id`` is the block's last move's ``govc_reflog`` id: a ref's blocks and rows in
    ``id`` order are its moves in order. ``packed``: the moves, compressed together.
    """

    __tablename__ = "govc_reflog_blocks"
    __table_args__ = (
        PrimaryKeyConstraint("repo_id", "ref", "id", name="pk_govc_reflog_blocks"),
        {"sqlite_with_rowid": False},
    )

    repo_id: Mapped[int] = mapped_column(ForeignKey("govc_repositories.id", ondelete="CASCADE"))
    ref: Mapped[str] = mapped_column(String(1024))
    id: Mapped[int] = mapped_column(BigInteger, autoincrement=False)
    packed: Mapped[bytes] = mapped_column(LargeBinary)


class CommitIndex(Base):
    """One row per commit: what log, ancestry and merge-base queries read instead of objects.

    ``generation`` is 1 for a root commit, else 1 + the maximum of its parents'.
    ``parents`` holds the parents' 20-byte ids concatenated in parent order (empty for a
    root commit). ``changed`` holds the file paths the commit changed against each parent
    (every path of a root commit), as UTF-8 bytes: per parent position, ``NUL path`` for
    each path and one ``NUL`` to end the position (:func:`govc_db.store.statements.
    encode_changed`). A merge records its changes against each parent, which is what
    git's history simplification needs for a path-limited log; that log finds its
    commits by a scan of the repository's rows for ``NUL path NUL`` or ``NUL path/``.
    One row per commit, where tables of parents and of changed paths cost a row and a
    key entry per parent and per path (migration 0007).
    """

    __tablename__ = "govc_commits"
    __table_args__ = (
        Index("ix_govc_commits_repo_gen", "repo_id", "generation"),
        {"sqlite_with_rowid": False},
    )

    repo_id: Mapped[int] = mapped_column(
        ForeignKey("govc_repositories.id", ondelete="CASCADE"), primary_key=True
    )
    oid: Mapped[bytes] = mapped_column(OID, primary_key=True)
    tree: Mapped[bytes] = mapped_column(OID)
    generation: Mapped[int] = mapped_column(Integer)
    author_time: Mapped[int] = mapped_column(BigInteger)
    committer_time: Mapped[int] = mapped_column(BigInteger)
    parents: Mapped[bytes] = mapped_column(LargeBinary)
    changed: Mapped[bytes] = mapped_column(LargeBinary)


class ChunkRow(Base):
    """One content-defined chunk of a large blob, stored once per (repository, chunk id).

    ``chunk_id`` is the SHA-1 of the chunk's content, so versions of a large file share
    every chunk they have in common. A chunked blob's ``govc_objects`` row keeps its git
    id, type and size, has ``encoding`` 8 and holds the manifest (the ordered chunk ids and
    lengths, see :mod:`govc_db.storage.chunks`). ``encoding`` here: 0 raw, 2 zstd; ``size``
    is the uncompressed length.
    """

    __tablename__ = "govc_chunks"

    repo_id: Mapped[int] = mapped_column(
        ForeignKey("govc_repositories.id", ondelete="CASCADE"), primary_key=True
    )
    chunk_id: Mapped[bytes] = mapped_column(OID, primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    encoding: Mapped[int] = mapped_column(SmallInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary)


# Chunks are stored compressed by zstd, or raw when that did not pay: PostgreSQL's own
# TOAST compression (pglz) would only spend time failing again (migration 0002 does this).
event.listen(
    PackRow.__table__,
    "after_create",
    DDL(
        "ALTER TABLE govc_packs ALTER COLUMN ids SET STORAGE EXTERNAL, "
        "ALTER COLUMN data SET STORAGE EXTERNAL"
    ).execute_if(  # type: ignore[no-untyped-call]
        dialect="postgresql"
    ),
)
event.listen(
    RefLogBlock.__table__,
    "after_create",
    DDL("ALTER TABLE govc_reflog_blocks ALTER COLUMN packed SET STORAGE EXTERNAL").execute_if(  # type: ignore[no-untyped-call]
        dialect="postgresql"
    ),
)
event.listen(
    ChunkRow.__table__,
    "after_create",
    DDL("ALTER TABLE govc_chunks ALTER COLUMN data SET STORAGE EXTERNAL").execute_if(  # type: ignore[no-untyped-call]
        dialect="postgresql"
    ),
)


# --- http ---


class ApiToken(Base):
    """A bearer token of the HTTP service (``govc-db token create``).

    Only ``digest`` (SHA-256 of the whole token) is stored; the token itself is shown
    once. ``repo_id`` None: every repository; a repository's tokens are deleted with it,
    so a new repository of the same name does not inherit them. ``can_write``: writes
    and git pushes.
    """

    __tablename__ = "govc_api_tokens"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    digest: Mapped[bytes] = mapped_column(LargeBinary(32))
    repo_id: Mapped[int | None] = mapped_column(
        ForeignKey("govc_repositories.id", ondelete="CASCADE")
    )
    can_write: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.current_timestamp()
    )
