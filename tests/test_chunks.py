"""Chunked storage of large blobs, on SQLite and PostgreSQL: round trips at the chunk
boundaries, ids against real ``git hash-object``, streams failing mid-way, seeks across
chunks, chunks shared between versions, and verify() of chunked blobs.

Small chunk settings (threshold 4 KiB, FastCDC average 1 KiB: chunks of 256 B to 4 KiB)
make every case a few kilobytes.
"""

from __future__ import annotations

import io
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import govc_db
from govc_db import File, Settings, Signature, Store
from govc_db.errors import GovcError
from govc_db.storage.chunks import ENC_CHUNKED
from govc_db.storage.stream import AHEAD, StreamSource

SIG = Signature("Ada", "ada@example.com", 1700000000, 0)
THRESHOLD = 4096
AVG = 1024
MAX_CHUNK = AVG * 4
SMALL = Settings(chunk_threshold=THRESHOLD, chunk_avg_size=AVG)


def data_of(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def git_hash(tmp_path: Path, data: bytes) -> str:
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    return subprocess.check_output(["git", "hash-object", str(path)], text=True).strip()


@pytest.fixture
def small(db_url: str) -> Iterator[Store]:
    st = govc_db.open(db_url, settings=SMALL)
    try:
        yield st
    finally:
        st.close()


def rows(st: Store, sql: str, **params: Any) -> list[Any]:
    with st.engine.connect() as conn:
        return list(conn.execute(sa.text(sql), params))


def encoding_of(st: Store, oid: str) -> int:
    found = rows(st, "SELECT encoding FROM govc_objects WHERE oid = :o", o=bytes.fromhex(oid))
    return int(found[0][0])


def chunk_count(st: Store) -> int:
    return int(rows(st, "SELECT count(*) FROM govc_chunks")[0][0])


class OnlyRead:
    """A stream with ``read`` only (a pipe, a socket): spooled, since its size is unknown."""

    def __init__(self, data: bytes, fail_after: int | None = None) -> None:
        self._f = io.BytesIO(data)
        self._fail_after = fail_after

    def read(self, n: int = -1) -> bytes:
        if self._fail_after is not None and self._f.tell() >= self._fail_after:
            raise OSError("connection reset")
        return self._f.read(n)


SIZES = [0, 1, THRESHOLD - 1, THRESHOLD, THRESHOLD + 1, MAX_CHUNK - 1, MAX_CHUNK, MAX_CHUNK + 1]


@pytest.mark.parametrize("size", [*SIZES, 20 * MAX_CHUNK + 17])
def test_round_trip_at_chunk_boundaries(small: Store, tmp_path: Path, size: int) -> None:
    repo = small.create_repository("r")
    data = data_of(size, seed=size)
    repo.commit(
        "main", {"stream.bin": io.BytesIO(data), "bytes.bin": data}, message="m\n", author=SIG
    )
    expected = git_hash(tmp_path, data)
    entries = {e.path: e.oid for e in repo.walk("main")}
    assert entries == {"stream.bin": expected, "bytes.bin": expected}
    assert repo.read("main", "stream.bin") == data
    with repo.open("main", "stream.bin") as f:
        assert f.read() == data
        assert f.read() == b""
    assert repo.get_object(expected) == ("blob", data)
    chunked = size >= THRESHOLD
    assert (encoding_of(small, expected) == ENC_CHUNKED) is chunked
    assert (chunk_count(small) > 0) is chunked
    assert repo.verify().ok


def test_ids_match_git_for_files_pipes_and_builders(small: Store, tmp_path: Path) -> None:
    repo = small.create_repository("r")
    data = data_of(50_000, seed=7)
    disk = tmp_path / "disk.bin"
    disk.write_bytes(data)
    with disk.open("rb") as f:  # a regular file: its size by fstat
        f.read(10)  # content starts where the file is positioned, as a read would
        repo.commit("main", {"file.bin": File(f, mode=0o100755)}, message="m\n", author=SIG)
    repo.commit("main", {"pipe.bin": OnlyRead(data)}, message="m\n", author=SIG)
    with repo.changes("main", message="m\n", author=SIG) as c:
        c.write("built.bin", io.BytesIO(data))
    entries = {e.path: e for e in repo.walk("main")}
    assert entries["file.bin"].oid == git_hash(tmp_path, data[10:])
    assert entries["file.bin"].mode == 0o100755
    assert entries["pipe.bin"].oid == entries["built.bin"].oid == git_hash(tmp_path, data)
    assert repo.read("main", "file.bin") == data[10:]


def test_a_stream_failing_midway_leaves_nothing(small: Store) -> None:
    repo = small.create_repository("r")
    head = repo.commit("main", {"a.txt": b"a"}, message="m\n", author=SIG)
    data = data_of(100_000, seed=3)
    with pytest.raises(GovcError, match="connection reset"):
        repo.commit(
            "main", {"big.bin": OnlyRead(data, fail_after=60_000)}, message="m\n", author=SIG
        )

    class Exploding(io.BytesIO):  # seekable: read inside the commit's transaction
        def readinto(self, buffer: Any) -> int:
            if self.tell() > 50_000:
                raise OSError("disk gone")
            return super().readinto(buffer)

    with pytest.raises(GovcError, match="disk gone"):
        repo.commit("main", {"big.bin": Exploding(data)}, message="m\n", author=SIG)
    assert repo.resolve("main") == head
    assert chunk_count(small) == 0
    assert len(rows(small, "SELECT oid FROM govc_objects")) == 3  # blob, tree, commit
    assert repo.verify().ok
    # The store is usable afterwards.
    repo.commit("main", {"big.bin": io.BytesIO(data)}, message="m\n", author=SIG)
    assert repo.read("main", "big.bin") == data


def test_seek_tell_readinto_and_iteration_across_chunks(small: Store) -> None:
    repo = small.create_repository("r")
    lines = b"".join(b"line %06d %s\n" % (i, b"x" * (i % 50)) for i in range(3000))
    data = data_of(30_000, seed=5) + lines
    repo.commit("main", {"f": data}, message="m\n", author=SIG)
    f = repo.open("main", "f")
    assert f.seekable() and f.readable()
    rng = random.Random(11)
    for _ in range(200):
        pos = rng.randrange(0, len(data) + 10)
        n = rng.randrange(0, 3 * MAX_CHUNK)
        assert f.seek(pos) == pos
        assert f.read(n) == data[pos : pos + n]
        assert f.tell() == min(pos + n, max(pos, len(data)))
    f.seek(-100, io.SEEK_END)
    assert f.read() == data[-100:]
    f.seek(5000)
    f.seek(-1000, io.SEEK_CUR)
    buf = bytearray(7000)
    n = f.readinto(buf)  # type: ignore[attr-defined]
    assert bytes(buf[:n]) == data[4000 : 4000 + n] and n > 0
    f.seek(30_000)
    assert list(f) == data[30_000:].splitlines(keepends=True)
    f.close()
    with pytest.raises(ValueError):
        f.read(1)


def test_versions_share_their_chunks(small: Store) -> None:
    repo = small.create_repository("r")
    data = data_of(200_000, seed=9)
    repo.commit("main", {"big.bin": data}, message="v1\n", author=SIG)
    before_rows = chunk_count(small)
    before_bytes = rows(small, "SELECT sum(size) FROM govc_chunks")[0][0]
    middle = len(data) // 2
    edited = data[:middle] + b"EDIT" * 256 + data[middle + 1024 :]
    repo.commit("main", {"big.bin": io.BytesIO(edited)}, message="v2\n", author=SIG)
    added_rows = chunk_count(small) - before_rows
    added_bytes = rows(small, "SELECT sum(size) FROM govc_chunks")[0][0] - before_bytes
    assert 1 <= added_rows <= 4
    assert added_bytes <= 4 * MAX_CHUNK
    assert repo.read("main", "big.bin") == edited
    assert repo.read("main~1", "big.bin") == data
    [change] = repo.diff("main~1", "main")
    assert change.status == "M"
    # The same content again stores nothing new.
    repo.commit(
        "main", {"copy.bin": io.BytesIO(edited)}, message="v3\n", author=SIG, allow_empty=True
    )
    assert chunk_count(small) - before_rows == added_rows
    assert repo.verify().ok


def test_verify_checks_chunked_blobs(small: Store) -> None:
    repo = small.create_repository("r")
    data = data_of(40_000, seed=13)
    repo.commit("main", {"big.bin": data}, message="m\n", author=SIG)
    report = repo.verify()
    assert report.ok and report.objects_checked == 3
    [(cid,)] = rows(small, "SELECT chunk_id FROM govc_chunks ORDER BY chunk_id LIMIT 1")
    with small.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE govc_chunks SET data = :d, encoding = 0 WHERE chunk_id = :c"),
            {
                "d": b"\0"
                * rows(small, "SELECT size FROM govc_chunks WHERE chunk_id = :c", c=cid)[0][0],
                "c": cid,
            },
        )
    problems = repo.verify().problems
    assert any("does not hash to its id" in p for p in problems)
    assert any("hash mismatch" in p for p in problems)
    with small.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM govc_chunks WHERE chunk_id = :c"), {"c": bytes(cid)})
    problems = repo.verify().problems
    assert any("is missing" in p for p in problems)
    with pytest.raises(GovcError, match="missing"):
        repo.read("main", "big.bin")


def test_chunk_settings_change_behaviour(db_url: str) -> None:
    data = data_of(60_000, seed=17)

    def store_with(**changes: Any) -> tuple[Store, Any]:
        st = govc_db.open(db_url, settings=SMALL.replace(**changes))
        name = "r" + str(len(st.list_repositories()))
        repo = st.create_repository(name)
        repo.commit("main", {"f": data}, message="m\n", author=SIG)
        return st, repo

    st, repo = store_with(chunk_threshold=None)  # switched off: one row
    oid = next(iter(repo.walk("main"))).oid
    assert encoding_of(st, oid) != ENC_CHUNKED and chunk_count(st) == 0
    assert repo.open("main", "f").read() == data
    st.close()

    st, repo = store_with(chunk_avg_size=2048)
    coarse = chunk_count(st)
    st.close()
    st, repo = store_with(chunk_avg_size=1024, chunk_compression_level=0)
    assert chunk_count(st) - coarse > coarse  # smaller average: more chunks
    assert rows(st, "SELECT count(*) FROM govc_chunks WHERE encoding <> 0")[0][0] == 0
    st.close()

    compressible = b"abc" * 30_000
    # PostgreSQL reads a window as AHEAD pieces in parallel: 64 * AHEAD is one statement.
    for window, queries in ((1, "many"), (64 * AHEAD, "one")):
        st = govc_db.open(db_url, settings=SMALL.replace(chunk_read_window=window))
        repo = st.create_repository(f"w{window}")
        repo.commit("main", {"f": compressible}, message="m\n", author=SIG)
        before = st.metrics()["large_blobs"]["chunk_read_queries"]
        assert repo.open("main", "f").read() == compressible
        used = st.metrics()["large_blobs"]["chunk_read_queries"] - before
        assert (used == 1) if queries == "one" else (used > 1)
        assert rows(st, "SELECT count(*) FROM govc_chunks WHERE encoding = 2")[0][0] > 0
        st.close()


def test_a_sequential_read_holds_bounded_pieces(db_url: str) -> None:
    # A window of 4 chunks: one statement each on SQLite, read as AHEAD pieces of
    # 4 // AHEAD chunks on PostgreSQL (fetched in parallel ahead of the reader).
    st = govc_db.open(db_url, settings=SMALL.replace(chunk_read_window=4))
    try:
        repo = st.create_repository("r")
        data = b"".join(b"line %06d of a compressible blob\n" % i for i in range(8000))
        repo.commit("main", {"f": data}, message="m\n", author=SIG)
        before = st.metrics()["large_blobs"]
        out = bytearray()
        with repo.open("main", "f") as f:
            while piece := f.read(3000):
                out += piece
        after = st.metrics()["large_blobs"]
        assert out == data
        queries = after["chunk_read_queries"] - before["chunk_read_queries"]
        chunks = after["chunk_reads"] - before["chunk_reads"]
        step = 4 if st.engine.dialect.name == "sqlite" else max(1, 4 // AHEAD)
        assert chunks >= len(data) // MAX_CHUNK and queries > 1
        assert chunks <= queries * step
    finally:
        st.close()


def test_streamed_commit_over_a_moved_branch_is_reapplied(small: Store) -> None:
    repo = small.create_repository("r")
    base = repo.commit("main", {"a.txt": b"a"}, message="m\n", author=SIG)
    repo.commit("main", {"b.txt": b"b"}, message="m\n", author=SIG)
    data = data_of(30_000, seed=19)
    # Strict compare-and-swap against an old head refuses without leaving chunks behind.
    with pytest.raises(govc_db.errors.RefConflict):
        repo.commit(
            "main", {"c.bin": io.BytesIO(data)}, message="m\n", author=SIG, expected_head=base
        )
    assert chunk_count(small) == 0
    repo.commit("main", {"c.bin": io.BytesIO(data)}, message="m\n", author=SIG)
    assert repo.read("main", "c.bin") == data


def test_a_file_that_changes_size_while_read_is_refused(small: Store, tmp_path: Path) -> None:
    repo = small.create_repository("r")
    repo.commit("main", {"a": b"a"}, message="m\n", author=SIG)
    path = tmp_path / "grow.bin"
    path.write_bytes(data_of(20_000))
    with path.open("rb") as f:
        source = StreamSource.of(f)
        os.truncate(path, 10_000)  # shrinks after it was measured
        with pytest.raises(GovcError, match="announced"):
            repo.commit("main", {"g": File(source)}, message="m\n", author=SIG)
    assert chunk_count(small) == 0


@pytest.mark.parametrize(
    "field, value",
    [
        ("chunk_threshold", 0),
        ("chunk_avg_size", 512),
        ("chunk_avg_size", 8 * 1024 * 1024),
        ("chunk_compression_level", 20),
        ("chunk_read_window", 0),
        ("memory_gc_threshold", 10),
    ],
)
def test_chunk_and_memory_settings_are_validated(field: str, value: int) -> None:
    with pytest.raises(govc_db.errors.InvalidInput, match=field):
        Settings().replace(**{field: value})
    valid = {"chunk_threshold": None, "chunk_compression_level": 5, "chunk_read_window": 8}
    good = valid.get(field, 4096)
    env = {"GOVC_DB_" + field.upper(): "none" if good is None else str(good)}
    assert getattr(Settings.from_env(env), field) == good


def test_a_large_file_written_in_a_transaction_is_readable_in_it(small: Store) -> None:
    repo = small.create_repository("r")
    data = data_of(50_000, seed=23)
    with small.transaction():
        repo.commit("main", {"big": io.BytesIO(data)}, message="m\n", author=SIG)
        with repo.open("main", "big") as f:
            f.seek(20_000)
            assert f.read() == data[20_000:]
        reader = repo.open("main", "big")
        reader.read(10)
    assert reader.read() == data[10:]  # after the commit: read outside it
    assert repo.read("main", "big") == data


def test_large_reads_span_raw_and_compressed_chunks(small: Store) -> None:
    # Reads of 256 KiB and more go straight from the stored chunks into the caller's
    # buffer where the backend can; a compressed chunk on the way is read by window.
    repo = small.create_repository("r")
    rng = random.Random(29)
    parts = []
    for i in range(24):  # ~1.2 MiB: random stretches (stored raw), text (zstd)
        n = rng.randrange(20_000, 80_000)
        parts.append(data_of(n, seed=i) if i % 3 else b"compressible %d\n" % i * (n // 16))
    data = b"".join(parts)
    repo.commit("main", {"big.bin": io.BytesIO(data)}, message="m\n", author=SIG)
    encodings = {r[0] for r in rows(small, "SELECT DISTINCT encoding FROM govc_chunks")}
    assert encodings == {0, 2}
    with repo.open("main", "big.bin") as f:
        buf = bytearray(300_000)
        got = bytearray()
        while n := f.readinto(buf):  # type: ignore[attr-defined]
            got += buf[:n]
        assert got == data
        for _ in range(40):
            pos = rng.randrange(0, len(data))
            n = rng.randrange(256 * 1024, 700_000)
            f.seek(pos)
            assert f.read(n) == data[pos : pos + n]
            assert f.tell() == min(pos + n, len(data))
        f.seek(100)
        assert f.read(10) == data[100:110]  # small reads in between: from a window
        assert f.read(400_000) == data[110:400_110]
    stats = small.metrics()["large_blobs"]
    assert stats["chunk_bytes_read"] >= 2 * len(data)


def test_a_corrupt_raw_chunk_is_an_error_on_a_large_read(small: Store) -> None:
    repo = small.create_repository("r")
    data = data_of(600_000, seed=31)
    repo.commit("main", {"big.bin": io.BytesIO(data)}, message="m\n", author=SIG)
    [(cid,)] = rows(small, "SELECT chunk_id FROM govc_chunks ORDER BY chunk_id LIMIT 1")
    with small.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE govc_chunks SET data = :d WHERE chunk_id = :c"),
            {"d": b"\0" * 3, "c": bytes(cid)},
        )
    with repo.open("main", "big.bin") as f, pytest.raises(GovcError, match="corrupt"):
        f.read()


def test_large_reads_on_an_in_memory_sqlite_database() -> None:
    # One shared connection there: reads run on it, in its transaction if one is open.
    with govc_db.open("sqlite://", settings=SMALL) as st:
        st.upgrade()
        repo = st.create_repository("r")
        data = data_of(700_000, seed=37)
        repo.commit("main", {"big.bin": io.BytesIO(data)}, message="m\n", author=SIG)
        with repo.open("main", "big.bin") as f:
            f.seek(1000)
            assert f.read(500_000) == data[1000:501_000]
        with st.transaction(), repo.open("main", "big.bin") as f:
            assert f.read() == data


def test_threads_that_end_do_not_keep_read_connections(sqlite_url: str) -> None:
    """A large read on SQLite keeps a connection of the reading thread's own; threads
    that have ended give theirs up, and live ones never hold more than a bound."""
    import threading

    from govc_db.storage import chunks

    st = govc_db.open(sqlite_url, settings=SMALL)
    try:
        repo = st.create_repository("r")
        data = data_of(600_000, seed=5)
        repo.commit("main", {"big.bin": io.BytesIO(data)}, message="m\n", author=SIG)
        large = st.backend.large_blobs
        assert large is not None
        errors: list[BaseException] = []

        def read() -> None:
            try:
                with repo.open("main", "big.bin") as f:
                    assert f.read(len(data)) == data
            except BaseException as exc:  # reported below
                errors.append(exc)

        for _ in range(3 * chunks._OWN_MAX):  # one thread per read, each ends
            t = threading.Thread(target=read)
            t.start()
            t.join()
        assert not errors
        assert len(large._own) <= 1  # the last reader's, or none
        gate = threading.Barrier(chunks._OWN_MAX + 4)

        def read_and_wait() -> None:
            read()
            gate.wait(timeout=30)

        live = [threading.Thread(target=read_and_wait) for _ in range(chunks._OWN_MAX + 3)]
        for t in live:
            t.start()
        try:
            for _ in range(200):
                if len(errors) or gate.n_waiting == len(live):
                    break
                threading.Event().wait(0.05)
            assert len(large._own) <= chunks._OWN_MAX  # the rest read on pooled ones
        finally:
            gate.wait(timeout=30)
            for t in live:
                t.join()
        assert not errors
    finally:
        st.close()
