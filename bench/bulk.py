"""``python -m bench.bulk [--rows N] [--size BYTES] [--repeats N] [--sweep]``: bulk object
writes on PostgreSQL, ours side by side with the hand-written raw psycopg equivalent.

Contenders (each repeat runs all of them, in a rotating order, on an emptied table):

* **ours**: ``put_many`` of every object in one unit (one transaction) through the batch
  executor: hashing, encoding, buffering, COPY flushes of ``Settings.batch_max_rows``.
* **ours, batching off**: the same with ``batch_enabled=False`` (executemany).
* **raw COPY**: hand-written psycopg: hash and encode each object with the same codec (so
  the rows are identical), one ``COPY ... (FORMAT BINARY)`` into a temp table and one
  ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``, in one transaction. The target ratio
  is measured against this one.
* **raw COPY, rows pre-built**: the same statements with the rows computed before the clock
  starts: the database's own ceiling, shown for reference.

Then small transactions (3 objects each, like a one-file commit): ours with batching on and
off, and raw pipelined ``executemany``, to show the executor costs small writes nothing.

``--sweep`` times each write strategy alone for batch sizes around ``COPY_MIN_ROWS``.

Everything runs in a throwaway database ``govc_bench_<random>`` created on the server of
``--pg-url`` and dropped at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

import govc_db
from govc_db import Settings, Store
from govc_db.db.batch import COPY_MIN_ROWS, BatchExecutor, Row
from govc_db.objects import hash_object
from govc_db.store.codec import Codec

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"

CREATE_TEMP = (
    "CREATE TEMP TABLE IF NOT EXISTS raw_objects (repo_id bigint, oid bytea, type smallint, "
    "size bigint, encoding smallint, data bytea) ON COMMIT DELETE ROWS"
)
COPY = "COPY raw_objects (repo_id, oid, type, size, encoding, data) FROM STDIN (FORMAT BINARY)"
MOVE = (
    "INSERT INTO govc_objects (repo_id, oid, type, size, encoding, data) "
    "SELECT repo_id, oid, type, size, encoding, data FROM raw_objects ON CONFLICT DO NOTHING"
)
INSERT = (
    "INSERT INTO govc_objects (repo_id, oid, type, size, encoding, data) "
    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)
TYPES = ["int8", "bytea", "int2", "int8", "int2", "bytea"]


def libpq(url: str) -> str:
    """A SQLAlchemy URL as a libpq connection string."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def throwaway_database(admin_url: str) -> Iterator[str]:
    """A new database ``govc_bench_<random>`` migrated to head; dropped on the way out."""
    name = f"govc_bench_{secrets.token_hex(4)}"
    with psycopg.connect(libpq(admin_url), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    print(f"created database {name}", file=sys.stderr)
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        with govc_db.open(url) as store:
            store.upgrade()
        yield url
    finally:
        with psycopg.connect(libpq(admin_url), autocommit=True) as conn:
            stmt = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            conn.execute(stmt.format(sql.Identifier(name)))
        print(f"dropped database {name}", file=sys.stderr)


def make_objects(n: int, size: int, seed: int = 1) -> list[tuple[bytes, bytes]]:
    """``n`` distinct blobs of ``size`` bytes of word-like text (compresses about 2x)."""
    rng = random.Random(seed)
    letters = b"abcdefghijklmnopqrstuvwxyz"
    words = [bytes(rng.choices(letters, k=rng.randint(2, 9))) for _ in range(4000)]
    out = []
    for i in range(n):
        text = b"%d " % i + b" ".join(rng.choices(words, k=size // 3))
        out.append((b"blob", text[:size]))
    return out


def build_rows(codec: Codec, repo_id: int, objects: Sequence[tuple[bytes, bytes]]) -> list[Row]:
    """The rows our store writes for ``objects`` (id, type, size, encoding, stored bytes)."""
    rows: list[Row] = []
    for type_name, data in objects:
        enc, stored = codec.encode(data)
        rows.append((repo_id, hash_object(type_name, data), 3, len(data), enc, stored))
    return rows


class Raw:
    """The hand-written psycopg peer on its own connection."""

    def __init__(self, url: str, codec: Codec, repo_id: int) -> None:
        self.conn = psycopg.connect(libpq(url))
        self.codec = codec
        self.repo_id = repo_id

    def copy_rows(self, rows: Sequence[Row]) -> None:
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.execute(CREATE_TEMP)
            with cur.copy(COPY) as copy:
                copy.set_types(TYPES)
                for row in rows:
                    copy.write_row(row)
            cur.execute(MOVE)

    def copy_objects(self, objects: Sequence[tuple[bytes, bytes]]) -> None:
        self.copy_rows(build_rows(self.codec, self.repo_id, objects))

    def executemany_objects(self, objects: Sequence[tuple[bytes, bytes]]) -> None:
        rows = build_rows(self.codec, self.repo_id, objects)
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(INSERT, rows)

    def close(self) -> None:
        self.conn.close()


def put_many(store: Store, repo_id: int, objects: Sequence[tuple[bytes, bytes]]) -> None:
    with store.backend.unit(repo_id, write=True, what="bulk") as unit:
        unit.objects.put_many(objects)


def clear(admin: psycopg.Connection[Any]) -> None:
    # An empty table and a fresh checkpoint before every timed run, so no contender pays
    # for another's index growth or dirty buffers.
    admin.execute("TRUNCATE govc_objects")
    admin.execute("CHECKPOINT")


def timed(fn: Callable[[], None]) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def rotate(items: list[Any], k: int) -> list[Any]:
    k %= len(items)
    return items[k:] + items[:k]


def bulk(url: str, rows: int, size: int, repeats: int) -> dict[str, float]:
    """Median rows/s of each contender writing ``rows`` objects in one transaction."""
    settings = Settings()
    objects = make_objects(rows, size)
    codec = Codec.from_settings(settings)
    with (
        govc_db.open(url, settings=settings) as ours,
        govc_db.open(url, settings=settings.replace(batch_enabled=False)) as off,
        psycopg.connect(libpq(url), autocommit=True) as admin,
    ):
        ours.create_repository("bulk")
        record = ours.backend.get_repository("bulk")
        assert record is not None
        rid = record.id
        raw = Raw(url, codec, rid)
        prebuilt = build_rows(codec, rid, objects)
        contenders: list[tuple[str, Callable[[], None]]] = [
            ("ours (put_many, batch executor)", lambda: put_many(ours, rid, objects)),
            ("ours, batching off (executemany)", lambda: put_many(off, rid, objects)),
            ("raw COPY (hash+encode+COPY)", lambda: raw.copy_objects(objects)),
            ("raw COPY, rows pre-built", lambda: raw.copy_rows(prebuilt)),
        ]
        times: dict[str, list[float]] = {name: [] for name, _ in contenders}
        for r in range(repeats):
            for name, fn in rotate(contenders, r):
                clear(admin)
                times[name].append(timed(fn))
                count = admin.execute("SELECT count(*) FROM govc_objects").fetchone()
                assert count is not None and count[0] == rows, (name, count)
        raw.close()
        print(f"batch stats (ours): {ours.backend.batch.get_stats()}", file=sys.stderr)
    return {name: rows / statistics.median(ts) for name, ts in times.items()}


def small(url: str, txns: int, per_txn: int, repeats: int) -> dict[str, float]:
    """Median transactions/s writing ``per_txn`` objects per transaction."""
    settings = Settings()
    objects = make_objects(txns * per_txn, 300, seed=2)
    groups = [objects[i : i + per_txn] for i in range(0, len(objects), per_txn)]
    codec = Codec.from_settings(settings)
    with (
        govc_db.open(url, settings=settings) as ours,
        govc_db.open(url, settings=settings.replace(batch_enabled=False)) as off,
        psycopg.connect(libpq(url), autocommit=True) as admin,
    ):
        ours.create_repository("small")
        record = ours.backend.get_repository("small")
        assert record is not None
        rid = record.id
        raw = Raw(url, codec, rid)

        def each(fn: Callable[[Sequence[tuple[bytes, bytes]]], None]) -> Callable[[], None]:
            def run() -> None:
                for g in groups:
                    fn(g)

            return run

        contenders: list[tuple[str, Callable[[], None]]] = [
            ("ours (batch executor)", each(lambda g: put_many(ours, rid, g))),
            ("ours, batching off", each(lambda g: put_many(off, rid, g))),
            ("raw executemany (pipelined)", each(raw.executemany_objects)),
        ]
        times: dict[str, list[float]] = {name: [] for name, _ in contenders}
        for r in range(repeats):
            for name, fn in rotate(contenders, r):
                clear(admin)
                times[name].append(timed(fn))
        raw.close()
    return {name: txns / statistics.median(ts) for name, ts in times.items()}


def sweep(url: str, repeats: int) -> list[tuple[int, float, float]]:
    """(batch rows, executemany rows/s, COPY rows/s) through the executor alone."""
    settings = Settings()
    codec = Codec(method=settings.compression, level=settings.compression_level)
    out = []
    with (
        govc_db.open(url, settings=settings) as store,
        psycopg.connect(libpq(url), autocommit=True) as admin,
    ):
        store.create_repository("sweep")
        record = store.backend.get_repository("sweep")
        assert record is not None
        never = BatchExecutor("postgresql", copy_min_rows=10**9)
        always = BatchExecutor("postgresql", copy_min_rows=1)
        for n in (4, 16, 32, 64, 128, 256, 1000):
            batches = max(4, 4000 // n)
            objects = make_objects(n * batches, 1024, seed=n)
            rows = build_rows(codec, record.id, objects)
            res: dict[str, list[float]] = {"em": [], "copy": []}
            for r in range(repeats):
                for key, ex in rotate([("em", never), ("copy", always)], r):
                    clear(admin)

                    def run(ex: BatchExecutor = ex, rows: list[Row] = rows, n: int = n) -> None:
                        for i in range(0, len(rows), n):
                            with store.engine.begin() as conn:
                                ex.write(conn, rows[i : i + n], "count")

                    res[key].append(len(rows) / timed(run))
            out.append((n, statistics.median(res["em"]), statistics.median(res["copy"])))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bulk", description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=20_000, help="objects per bulk write")
    p.add_argument("--size", type=int, default=1024, help="bytes per object")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--sweep", action="store_true", help="also time COPY vs executemany by size")
    p.add_argument(
        "--pg-url",
        default=os.environ.get("GOVC_BENCH_PG_URL", DEFAULT_PG_URL),
        help="server to create the throwaway database on (default: %(default)s)",
    )
    args = p.parse_args(argv)
    print(f"load average at start: {os.getloadavg()}", file=sys.stderr)
    with throwaway_database(args.pg_url) as url:
        results = bulk(url, args.rows, args.size, args.repeats)
        smalls = small(url, 500, 3, args.repeats)
        swept = sweep(url, max(2, args.repeats // 2)) if args.sweep else []
    target = results["raw COPY (hash+encode+COPY)"]
    ceiling = results["raw COPY, rows pre-built"]
    print(f"\nbulk write: {args.rows} objects of {args.size} B, one transaction (median rows/s)")
    for name, rate in results.items():
        print(f"  {name:<36}{rate:>12,.0f}   {rate / target:5.2f}x raw COPY")
    ours = results["ours (put_many, batch executor)"]
    print(f"  ratio ours / raw COPY: {ours / target:.2f} (target >= 0.7)")
    print(f"  ratio ours / raw COPY with pre-built rows: {ours / ceiling:.2f}")
    print("\nsmall transactions: 3 objects of 300 B each (median txn/s)")
    base = smalls["raw executemany (pipelined)"]
    for name, rate in smalls.items():
        print(f"  {name:<36}{rate:>12,.0f}   {rate / base:5.2f}x raw")
    if swept:
        print("\nstrategy sweep, 1 KB rows (rows/s): batch rows, executemany, COPY")
        for n, em, cp in swept:
            print(f"  {n:>6}{em:>12,.0f}{cp:>12,.0f}   {'COPY' if cp > em else 'executemany'}")
        print(f"  (COPY_MIN_ROWS = {COPY_MIN_ROWS})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
