"""Reflog blocks: ``gc()`` stores the moves of a ref many to a row.

Every ref move appends one ``govc_reflog`` row: on PostgreSQL about 200 bytes each
with its tuple header and primary-key entry, against some 60 bytes of content.
:func:`compact_reflog` (called by ``gc()``) moves a ref's rows into
``govc_reflog_blocks`` rows of up to :data:`BLOCK_MOVES` moves each, in one transaction
per block: ``packed`` holds the moves compressed together, and the block's ``id`` is its
last move's, so a ref's blocks and rows in ``id`` order are its moves in order (a new
row's id is larger: the sequence on PostgreSQL, the ref's largest id of either table
plus one on SQLite). In a table of their own, so that once a repository's rows have
gone ``VACUUM`` can truncate the emptied pages at the end of ``govc_reflog`` (a block
inserted beside them would sit in its last page).

``packed`` is a format byte (1) then one zstd frame of the moves, each: a flags byte
(bit 0: ``old`` follows, bit 1: ``new`` follows, bit 2: ``old`` is the previous move's
``new``), the ids present (20 bytes each), the time in microseconds as a zigzag varint
delta from the previous move's, and the message's UTF-8 length (varint) and bytes.
Written by hand: a few dozen lines, where a general serializer would store the field
names of every move.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

import zstandard
from sqlalchemy import bindparam, delete, func, select, text

from govc_db.errors import GovcError
from govc_db.models import RefLog, RefLogBlock

if TYPE_CHECKING:
    from govc_db.store.sql import SqlBackend

__all__ = [
    "BLOCK_MOVES",
    "MIN_MOVES",
    "compact_reflog",
    "decode_block",
    "encode_block",
    "moves_of_row",
]

log = logging.getLogger("govc_db.store.reflog")

#: Moves per block row (bounds the memory of a read and of a compaction step).
BLOCK_MOVES: Final = 4096
#: A ref's loose rows are put in a block only when there are at least this many (a
#: block of a few moves would save little and cost a row rewrite).
MIN_MOVES: Final = 16
_FORMAT: Final = 1
_LEVEL: Final = 9

T_LOG: Any = RefLog.__table__
T_BLOCK: Any = RefLogBlock.__table__

_S_REFS = (
    select(T_LOG.c.ref, func.count())
    .where(T_LOG.c.repo_id == bindparam("repo_id"))
    .group_by(T_LOG.c.ref)
    .having(func.count() >= bindparam("min_moves"))
)
_S_LOOSE = (
    select(T_LOG.c.id, T_LOG.c.old, T_LOG.c.new, T_LOG.c.time, T_LOG.c.message)
    .where(
        T_LOG.c.repo_id == bindparam("repo_id"),
        T_LOG.c.ref == bindparam("ref"),
        T_LOG.c.id > bindparam("after"),
    )
    .order_by(T_LOG.c.id)
    .limit(BLOCK_MOVES)
)
_D_LOOSE = delete(T_LOG).where(
    T_LOG.c.repo_id == bindparam("repo_id"),
    T_LOG.c.ref == bindparam("ref"),
    T_LOG.c.id >= bindparam("lo"),
    T_LOG.c.id <= bindparam("hi"),
)
_I_BLOCK = T_BLOCK.insert()


def _varint(n: int, out: bytearray) -> None:
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        b = data[at]
        at += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return n, at


def encode_block(moves: Iterable[tuple[bytes | None, bytes | None, int, str]]) -> bytes:
    """``packed`` of ``(old, new, time in microseconds, message)`` moves, in order."""
    out = bytearray()
    prev_new: bytes | None = None
    prev_time = 0
    for old, new, when, message in moves:
        flags = 0
        if old is not None and old == prev_new:
            flags |= 4
        elif old is not None:
            flags |= 1
        if new is not None:
            flags |= 2
        out.append(flags)
        if flags & 1:
            out += bytes(old or b"")
        if new is not None:
            out += bytes(new)
        delta = when - prev_time
        _varint(delta * 2 if delta >= 0 else -delta * 2 - 1, out)
        text = message.encode("utf-8", "surrogateescape")
        _varint(len(text), out)
        out += text
        prev_new, prev_time = new, when
    frame = zstandard.ZstdCompressor(level=_LEVEL).compress(bytes(out))
    return bytes([_FORMAT]) + frame


def decode_block(packed: bytes) -> list[tuple[bytes | None, bytes | None, int, str]]:
    """The moves of a ``packed`` value (inverse of :func:`encode_block`)."""
    packed = bytes(packed)
    if not packed or packed[0] != _FORMAT:
        raise GovcError("reflog block of an unknown format")
    try:
        data = zstandard.ZstdDecompressor().decompress(packed[1:])
    except zstandard.ZstdError as exc:
        raise GovcError("reflog block is corrupt") from exc
    out: list[tuple[bytes | None, bytes | None, int, str]] = []
    prev_new: bytes | None = None
    prev_time = 0
    at = 0
    try:
        while at < len(data):
            flags = data[at]
            at += 1
            old: bytes | None = None
            if flags & 4:
                old = prev_new
            elif flags & 1:
                old, at = data[at : at + 20], at + 20
            new: bytes | None = None
            if flags & 2:
                new, at = data[at : at + 20], at + 20
            z, at = _read_varint(data, at)
            when = prev_time + (z >> 1 if not z & 1 else -((z + 1) >> 1))
            n, at = _read_varint(data, at)
            message = data[at : at + n].decode("utf-8", "surrogateescape")
            at += n
            out.append((old, new, when, message))
            prev_new, prev_time = new, when
    except IndexError as exc:
        raise GovcError("reflog block is truncated") from exc
    return out


def moves_of_row(row: Any) -> list[dict[str, Any]]:
    """The moves of a row of (``old``, ``new``, ``time``, ``message``, ``packed``): a
    ``govc_reflog`` row's own (``packed`` None), or a block's."""
    if row.packed is None:
        return [{"old": row.old, "new": row.new, "time": row.time, "message": row.message}]
    return [
        {"old": old, "new": new, "time": when, "message": message}
        for old, new, when, message in decode_block(row.packed)
    ]


def compact_reflog(backend: SqlBackend, repo_id: int, *, min_moves: int = MIN_MOVES) -> int:
    """Put the loose reflog rows of every ref of ``repo_id`` with at least ``min_moves``
    of them into block rows (one transaction per block); returns the moves moved.

    A block replaces exactly the rows it read: if a concurrent move slipped into the
    range (it cannot on SQLite, whose writers are serialized, nor on PostgreSQL, where a
    ref's moves take ids in the order their compare-and-swap succeeded), the block's
    transaction is rolled back and the rows stay as they are.
    """
    moved = 0
    with backend.unit(repo_id, what="gc reflog") as u:
        refs = [str(r[0]) for r in u.execute(_S_REFS, {"min_moves": min_moves})]
    for ref in refs:
        after = -(2**63)
        while True:
            try:
                with backend.unit(repo_id, write=True, what="gc reflog") as w:
                    rows = w.execute(_S_LOOSE, {"ref": ref, "after": after}).all()
                    if len(rows) < (min_moves if after == -(2**63) else 1):
                        break
                    moved += _write_block(w, ref, rows)
                    after = int(rows[-1].id)
            except _Moved:
                log.info("reflog of %s moved while it was compacted: left as it is", ref)
                break
    if moved and backend.dialect == "postgresql":
        _vacuum(backend)
    return moved


def _vacuum(backend: SqlBackend) -> None:
    """Return the emptied pages: ``VACUUM`` (no exclusive lock; truncates the empty end
    of the table), then ``REINDEX TABLE CONCURRENTLY`` (the key's entries of the moved
    rows are gone, the pages they filled are not)."""
    with backend.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(text("VACUUM govc_reflog"))
        conn.execute(text("REINDEX TABLE CONCURRENTLY govc_reflog"))


class _Moved(GovcError):
    """A move slipped into the range being compacted (rolls the block back)."""


def _write_block(w: Any, ref: str, rows: Sequence[Any]) -> int:
    packed = encode_block((r.old, r.new, int(r.time), str(r.message)) for r in rows)
    lo, hi = int(rows[0].id), int(rows[-1].id)
    gone = w.execute(_D_LOOSE, {"ref": ref, "lo": lo, "hi": hi}).rowcount
    if gone != len(rows):
        raise _Moved(ref)
    w.execute(_I_BLOCK, {"id": hi, "repo_id": w.repo_id, "ref": ref, "packed": packed})
    log.debug("reflog %s: %d moves into one block", ref, len(rows))
    return len(rows)
