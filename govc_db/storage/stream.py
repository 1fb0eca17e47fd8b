"""Streams in and out: a caller's readable as a re-readable source of known size, and a
seekable reader of a chunked blob.

In. A blob's git id hashes ``blob <size>\\0`` before the content, so the size must be
known before the first byte is hashed. A regular file gives it by ``fstat``, anything
seekable by seeking to its end; any other stream is spooled to an anonymous temporary
file first (read in 1 MiB pieces: memory stays flat). The source is re-readable from its
start, because a transaction that is retried (a serialization failure, a lost
connection) reads it again. Content below ``Settings.chunk_threshold`` is simply read
into bytes.

Out. :class:`ChunkedReader` is an :class:`io.RawIOBase` over a blob's manifest: ``seek``
finds the chunk by bisection over the offsets. A ``readinto`` of at least
:data:`DIRECT_MIN` bytes on SQLite copies the stored chunks straight into the caller's
buffer (:meth:`ChunkStore.read_into`); otherwise it copies from the current window, a
window of ``Settings.chunk_read_window`` chunks fetched in one statement outside any
transaction. On PostgreSQL the window is read as :data:`AHEAD` pieces, each fetched
ahead by a prefetch thread on its own connection while the caller consumes the one
before. The reader holds no connection between calls and its memory is about a window
whatever the blob's size.
:func:`open_chunked` wraps it in an :class:`io.BufferedReader` (``read(n)``,
``readline``, iteration, ``peek``) whose buffer is smaller than :data:`DIRECT_MIN`.
"""

from __future__ import annotations

import bisect
import io
import os
import stat
import tempfile
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, BinaryIO

from govc_db.errors import GovcError, InvalidInput
from govc_db.perf.memory import in_flight
from govc_db.types import File

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from govc_db.storage.chunks import Chunk, ChunkStore, Manifest

__all__ = ["ChunkedReader", "StreamSource", "open_chunked", "prepared_changes"]

#: Read size when spooling or slurping a caller's stream.
PIECE = 1024 * 1024
#: Reads of at least this many bytes go straight from the stored chunks into the
#: caller's buffer where the backend can (SQLite); smaller ones are served from a window.
DIRECT_MIN = 256 * 1024
#: Pieces read ahead of the one being consumed, each by its own statement on its own
#: connection, in parallel (PostgreSQL: server backends read and send them while the
#: caller consumes). A sequential reader splits the window (``Settings.chunk_read_window``
#: chunks) into this many pieces (of at least one chunk), so it holds at most
#: ``max(window, AHEAD)`` chunks read ahead plus the piece being consumed. The time is in
#: the backends: reading a chunk from TOAST and sending it costs the server about three
#: times git's whole CPU per byte (1.8 s a GiB against ``git cat-file``'s 0.6 s, see
#: ``python -m bench.readcpu``), so reading pieces on two backends at once is what
#: shortens a read; one whole window ahead read a 1 GiB blob at 0.24-0.37x ``git
#: cat-file``, two half windows 0.28-0.46x in the same runs (``bench/RESULTS.md``).
AHEAD = 2
#: The buffer of the reader :func:`open_chunked` returns: below DIRECT_MIN, so that a
#: large ``read``/``readinto`` reaches the raw reader with the caller's own buffer
#: (``io.BufferedReader`` bypasses its buffer only for requests larger than it).
BUFFER = 128 * 1024


def _failed(exc: BaseException) -> GovcError:
    return GovcError(f"reading the content stream failed: {type(exc).__name__}: {exc}")


class StreamSource:
    """A caller's readable with a known size, readable again from its start."""

    __slots__ = ("_f", "_owned", "_start", "size")

    def __init__(self, f: Any, size: int, start: int, *, owned: bool = False) -> None:
        self._f = f
        self._start = start
        self._owned = owned
        self.size = size

    @classmethod
    def of(cls, stream: Any) -> StreamSource:
        """Measure ``stream`` (fstat, seek) or spool it; ``GovcError`` if reading fails."""
        try:
            seekable = bool(getattr(stream, "seekable", lambda: False)())
            if seekable:
                start = stream.tell()
                size: int | None = None
                try:
                    st = os.fstat(stream.fileno())
                    if stat.S_ISREG(st.st_mode):
                        size = st.st_size - start
                except (AttributeError, OSError, io.UnsupportedOperation):
                    pass
                if size is None:
                    end = stream.seek(0, io.SEEK_END)
                    stream.seek(start)
                    size = end - start
                return cls(stream, max(size, 0), start)
            spool = tempfile.TemporaryFile()  # noqa: SIM115 (owned by the source)
            try:
                while True:
                    piece = stream.read(PIECE)
                    if not piece:
                        break
                    spool.write(piece)
                return cls(spool, spool.tell(), 0, owned=True)
            except BaseException:
                spool.close()
                raise
        except GovcError:
            raise
        except Exception as exc:
            raise _failed(exc) from exc

    def rewind(self) -> None:
        """Back to the first byte."""
        try:
            self._f.seek(self._start)
        except Exception as exc:
            raise _failed(exc) from exc

    def readinto(self, buffer: memoryview) -> int:
        """Fill ``buffer`` (partially at the end); errors become ``GovcError``."""
        try:
            into = getattr(self._f, "readinto", None)
            if into is not None:
                return int(into(buffer) or 0)
            piece = self._f.read(len(buffer))
            buffer[: len(piece)] = piece
            return len(piece)
        except Exception as exc:
            raise _failed(exc) from exc

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all the rest for -1)."""
        try:
            return bytes(self._f.read(n))
        except Exception as exc:
            raise _failed(exc) from exc

    def read_all(self) -> bytes:
        """The whole content (for sources below the chunk threshold)."""
        self.rewind()
        data = self.read(self.size)
        if len(data) != self.size:
            raise GovcError("the content stream ended early")
        return data

    def close(self) -> None:
        """Remove a spooled copy (a caller's own stream is left open)."""
        if self._owned:
            self._f.close()


def _is_stream(value: object) -> bool:
    return callable(getattr(value, "read", None)) and not isinstance(
        value, bytes | bytearray | memoryview
    )


@contextmanager
def prepared_changes(
    changes: Mapping[str, File | None], threshold: int | None
) -> Iterator[dict[str, File | None]]:
    """``changes`` with every large content as a :class:`StreamSource` (chunked by the
    store) and every small stream read into bytes; spooled copies are removed on exit.
    ``threshold`` None (chunking off): streams are read into bytes."""
    owned: list[StreamSource] = []
    out: dict[str, File | None] = {}
    try:
        for path, f in changes.items():
            if f is None:
                out[path] = None
                continue
            data: Any = f.data
            if isinstance(data, bytes):
                if threshold is None or len(data) < threshold:
                    out[path] = f
                    continue
                src = StreamSource(io.BytesIO(data), len(data), 0)
            elif isinstance(data, StreamSource):
                src = data
            elif _is_stream(data):
                src = StreamSource.of(data)
                owned.append(src)
            else:
                raise InvalidInput(f"content for {path!r} must be bytes or a readable stream")
            if threshold is None or src.size < threshold:
                out[path] = File(src.read_all(), f.mode)
            else:
                out[path] = File(src, f.mode)
        yield out
    finally:
        for src in owned:
            src.close()


class ChunkedReader(io.RawIOBase):
    """A seekable raw reader of one chunked blob (see the module docstring)."""

    def __init__(
        self, store: ChunkStore, repo_id: int, manifest: Manifest, conn: Connection | None = None
    ) -> None:
        super().__init__()
        self._conn = conn  # a transaction to read in while it is open (no read-ahead then)
        self._store = store
        self._repo_id = repo_id
        self._m = manifest
        self._pos = 0
        self._first = 0  # chunk index of _window[0]
        self._window: list[Chunk] = []
        self._held = 0
        self._ahead: list[tuple[int, Future[list[Chunk]]]] = []  # pieces read ahead
        # SQLite: raw chunks are copied straight into the caller's buffer, no window.
        self._direct = store.reads_direct
        # Chunks one statement reads: a window, or on PostgreSQL 1/AHEAD of it (the pieces
        # read ahead in parallel; see AHEAD).
        self._step = store.window if self._direct else max(1, store.window // AHEAD)

    # io.RawIOBase ----------------------------------------------------------------------
    def readable(self) -> bool:
        """True."""
        return True

    def seekable(self) -> bool:
        """True: any position, found by bisection over the chunk offsets."""
        return True

    def tell(self) -> int:
        """The current position."""
        self._check_open_()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move to ``offset`` (from the start, the current position or the end)."""
        self._check_open_()
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._m.size + offset
        else:
            raise ValueError(f"invalid whence {whence!r}")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def readinto(self, buffer: Any) -> int:
        """Copy from the current chunk into ``buffer``; 0 at the end."""
        self._check_open_()
        m = self._m
        pos = self._pos
        view = memoryview(buffer).cast("B")
        if pos >= m.size or not len(view):
            return 0
        index = bisect.bisect_right(m.offsets, pos) - 1
        inner = pos - m.offsets[index]
        if (
            self._direct
            and len(view) >= DIRECT_MIN
            and not (self._first <= index < self._first + len(self._window))
            and not self._live()
        ):
            n = self._store.read_into(self._repo_id, m, index, inner, view)
            if n:
                self._pos = pos + n
                return n
        data = self._chunk(index)
        n = min(len(view), len(data) - inner)
        view[:n] = memoryview(data)[inner : inner + n]  # one copy, not two
        self._pos = pos + n
        return n

    def readall(self) -> bytes:
        """Everything from the position to the end (the caller asked for all of it)."""
        parts: list[bytes] = []
        while True:
            piece = self.read(max(self._m.size - self._pos, 1))
            if not piece:
                return b"".join(parts)
            parts.append(piece)

    def close(self) -> None:
        """Drop the window held."""
        if not self.closed:
            self._release()
        super().close()

    @property
    def size(self) -> int:
        """The blob's length."""
        return self._m.size

    def _check_open_(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")

    # windows ----------------------------------------------------------------------------
    def _chunk(self, index: int) -> Chunk:
        first = self._first
        if not (first <= index < first + len(self._window)):
            self._release()
            ahead = self._ahead
            if ahead and ahead[0][0] == index:
                window = ahead.pop(0)[1].result()  # read while earlier ones were consumed
            else:
                self._cancel_ahead()
                window = self._store.window_at(
                    self._repo_id, self._m, index, self._conn, self._step
                )
            self._first, self._window = index, window
            self._held = sum(len(w) for w in window)
            in_flight().add(self._held)
            if not self._direct and not self._live():  # read the next ones ahead
                step = self._step
                after = ahead[-1][0] + step if ahead else index + len(window)
                while len(ahead) < AHEAD and after < len(self._m.ids):
                    future = self._store.prefetcher().submit(
                        self._store.window_at, self._repo_id, self._m, after, None, step
                    )
                    ahead.append((after, future))
                    after += step
        return self._window[index - self._first]

    def _cancel_ahead(self) -> None:
        for _, future in self._ahead:
            future.cancel()
        self._ahead.clear()

    def _live(self) -> bool:
        """Whether windows are read in the opening transaction (still open: the blob may
        be its own uncommitted write), where nothing may be read ahead on another thread.
        Once it has ended -- the usual case, ``repo.open()`` returns after its unit --
        windows are read outside any transaction, the next one ahead."""
        conn = self._conn
        if conn is None:
            return False
        if conn.closed or not conn.in_transaction():
            self._conn = None
            return False
        return True

    def _release(self) -> None:
        in_flight().add(-self._held)
        self._held = 0
        self._window = []
        if self.closed:
            self._cancel_ahead()


def open_chunked(
    store: ChunkStore, repo_id: int, manifest: Manifest, conn: Connection | None = None
) -> BinaryIO:
    """A buffered reader over :class:`ChunkedReader`."""
    raw = ChunkedReader(store, repo_id, manifest, conn)
    reader: Any = io.BufferedReader(raw, buffer_size=BUFFER)
    return reader  # type: ignore[no-any-return]
