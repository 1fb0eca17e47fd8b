"""6. Concurrent writers: 1, 4 and 8 processes committing one-file changes onto a
1,000-file tree, each process on its own branch and all on one branch (commits/s).

**Ours**: ``repo.commit(branch, {path: data})`` in each process, through its own Store.
On one branch a lost compare-and-swap is re-applied on the new head by commit() itself
(the processes touch disjoint paths); a ``RefConflict`` after the rebase attempts is
counted, not fatal.

**The peer** does the same transaction by hand, from the same number of processes, on its
own database with the same schema: lock the branch row (``SELECT ... FOR UPDATE`` on
PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), read the head's index row and the trees on the
changed path (trees and index rows are immutable, so each process keeps those it has
seen), write blob, trees, commit, index, parent and path rows, move the ref and append
the reflog -- the writes in one pipelined round trip on PostgreSQL.

The processes are started once per backend (from a fork server) and connect before any
timing.

A writer process is a service: a long-running process that only commits. Ours runs with
``Settings.memory_optimizer`` on there, as ``govc-db serve`` runs it (the library's
default is off, since it tunes the whole process's collector): the start-up heap is
frozen when the Store opens and full collections run between commits, so no collection
walks the interpreter's and SQLAlchemy's hundreds of thousands of objects in the middle
of a commit. ``GOVC_BENCH_WRITERS_MEMORY_OPTIMIZER=0`` runs them with the library's
default instead (the GC line of workload 9 then shows the difference).
Each timed window starts at the same instant in every process (CLOCK_MONOTONIC is
system-wide on Linux) and lasts ``Sizes.writer_seconds``; a commit counts if it completed
inside the window. Ours and the peer alternate, the order rotating each repeat.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import Connection
from typing import Any

from bench.gctrace import GcTrace, trace_enabled
from bench.harness import T0, Contest, Sizes, Target, content, file_path, result, tree
from bench.peers import (
    CAS_REF,
    INS_COMMIT,
    INS_LOG,
    INS_LOG_SQLITE,
    INS_OBJ,
    TreeModel,
    signature,
)
from bench.report import FAILED, NOT_SUPPORTED, Result
from govc_db import Settings, Store
from govc_db.objects import MODE_DIR, MODE_FILE, TYPE_NUMBERS, Commit, ObjectId, hash_object
from govc_db.store.codec import Codec
from govc_db.store.statements import encode_changed

__all__ = ["bench_writers"]

COUNTS = (1, 4, 8)
REPO = "writers"
#: (processes, mode): one process is the same on its own branch or the shared one.
CONFIGS = [(1, "own")] + [(n, mode) for n in COUNTS[1:] for mode in ("own", "shared")]
LEAD = 0.1
"""Seconds between sending a job and the start of its window (every process is ready)."""


@dataclass(frozen=True, slots=True)
class Config:
    backend: str
    ours_url: str
    settings: Settings
    raw_dsn: str


@dataclass(frozen=True, slots=True)
class Job:
    contender: str
    """ "ours" or "raw"."""
    mode: str
    """ "own" (branch w<index>) or "shared" (main)."""
    serial: int
    start_at: float
    stop_at: float


@dataclass(frozen=True, slots=True)
class Outcome:
    commits: int
    conflicts: int
    error: tuple[str, str] | None
    gc: dict[str, Any]
    """The process's ``store.metrics()["memory"]["gc"]`` after the window."""


# -- the raw writer ------------------------------------------------------------------------
def _parse_tree(raw: bytes) -> dict[bytes, tuple[int, ObjectId]]:
    out: dict[bytes, tuple[int, ObjectId]] = {}
    i = 0
    while i < len(raw):
        space = raw.index(b" ", i)
        nul = raw.index(b"\0", space)
        out[raw[space + 1 : nul]] = (int(raw[i:space], 8), ObjectId(raw[nul + 1 : nul + 21]))
        i = nul + 21
    return out


class RawWriter:
    """The hand-written transaction of one commit on a branch shared with other writers."""

    def __init__(self, dsn: str, codec: Codec, postgres: bool) -> None:
        self.codec = codec
        self.pg = postgres
        self.trees: dict[ObjectId, dict[bytes, tuple[int, ObjectId]]] = {}
        self.commits: dict[ObjectId, tuple[ObjectId, int]] = {}
        self.conn: Any
        if postgres:
            import psycopg

            self.conn = psycopg.connect(dsn, autocommit=True)
        else:
            self.conn = sqlite3.connect(dsn, isolation_level=None, timeout=60)
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
                self.conn.execute("PRAGMA " + pragma)
        self.repo_id = int(self._one("SELECT id FROM govc_repositories WHERE name = %s", REPO)[0])

    def _q(self, sql: str) -> str:
        return sql if self.pg else sql.replace("%s", "?")

    def _one(self, sql: str, *params: Any) -> Any:
        row = self.conn.execute(self._q(sql), params).fetchone()
        assert row is not None, sql
        return row

    def _tree(self, oid: ObjectId) -> dict[bytes, tuple[int, ObjectId]]:
        entries = self.trees.get(oid)
        if entries is None:
            enc, size, data = self._one(
                "SELECT encoding, size, data FROM govc_objects WHERE repo_id = %s AND oid = %s",
                self.repo_id,
                oid,
            )
            entries = self.trees[oid] = _parse_tree(self.codec.decode(enc, data, size))
        return entries

    def _row(self, type_name: bytes, oid: ObjectId, raw: bytes) -> tuple[Any, ...]:
        enc, stored = self.codec.encode(raw)
        return (self.repo_id, oid, TYPE_NUMBERS[type_name], len(raw), enc, stored)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        if self.pg:
            with self.conn.transaction():
                yield
            return
        self.conn.execute("BEGIN IMMEDIATE")  # takes the write lock: the branch is ours
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def commit(self, branch: str, path: str, data: bytes, msg: bytes, when: int) -> None:
        ref = "refs/heads/" + branch
        lock = " FOR UPDATE" if self.pg else ""
        with self._transaction():
            sql = "SELECT target FROM govc_refs WHERE repo_id = %s AND name = %s" + lock
            head = ObjectId(bytes(self._one(sql, self.repo_id, ref)[0]))
            if head not in self.commits:
                tree_id, gen = self._one(
                    "SELECT tree, generation FROM govc_commits WHERE repo_id = %s AND oid = %s",
                    self.repo_id,
                    head,
                )
                self.commits[head] = (ObjectId(bytes(tree_id)), int(gen))
            root, generation = self.commits[head]
            parts = [p.encode() for p in path.split("/")]
            dirs = [self._tree(root)]
            for name in parts[:-1]:
                dirs.append(self._tree(dirs[-1][name][1]))
            blob = hash_object(b"blob", data)
            rows = [self._row(b"blob", blob, data)]
            child = (MODE_FILE, blob)
            for depth in reversed(range(len(parts))):
                entries = dict(dirs[depth])
                entries[parts[depth]] = child
                raw = TreeModel._serialize(entries)
                oid = hash_object(b"tree", raw)
                self.trees[oid] = entries
                rows.append(self._row(b"tree", oid, raw))
                child = (MODE_DIR, oid)
            sig = signature(when)
            raw = Commit(child[1], (head,), sig, sig, msg).serialize()
            new = hash_object(b"commit", raw)
            rows.append(self._row(b"commit", new, raw))
            self.commits[new] = (child[1], generation + 1)
            r = self.repo_id
            summary = "commit: " + msg.split(b"\n", 1)[0].decode()
            writes: list[tuple[str, list[tuple[Any, ...]]]] = [
                (INS_OBJ, rows),
                (
                    INS_COMMIT,
                    [
                        (
                            r,
                            new,
                            child[1],
                            generation + 1,
                            when,
                            when,
                            head,
                            encode_changed({0: [path]}),
                        )
                    ],
                ),
                (CAS_REF, [(new, r, ref, head)]),
                (
                    INS_LOG if self.pg else INS_LOG_SQLITE,
                    [(r, ref, head, new, int(time.time() * 1_000_000), summary)],
                ),
            ]
            if self.pg:
                with self.conn.pipeline():
                    cur = self.conn.cursor()
                    for sql, params in writes:
                        cur.executemany(sql, params)
            else:
                for sql, params in writes:
                    self.conn.executemany(self._q(sql), params)

    def close(self) -> None:
        self.conn.close()


# -- the worker processes ------------------------------------------------------------------
def writer_settings(settings: Settings) -> Settings:
    """Our side's settings in a writer process: the bench's, with the memory optimizer on
    unless ``GOVC_BENCH_WRITERS_MEMORY_OPTIMIZER=0`` (see the module docstring)."""
    wanted = os.environ.get("GOVC_BENCH_WRITERS_MEMORY_OPTIMIZER", "1") != "0"
    return dataclasses.replace(settings, memory_optimizer=wanted)


def _worker(index: int, config: Config, pipe: Connection) -> None:
    """A writer process: connects both contenders, then runs jobs until told to stop."""
    import govc_db
    from govc_db.errors import RefConflict

    codec = Codec.from_settings(config.settings)
    store = govc_db.open(config.ours_url, settings=writer_settings(config.settings))
    repo = store.repository(REPO)
    repo.branches()  # connected and warm before the first window
    trace = GcTrace() if trace_enabled() else None
    if trace is not None:
        trace.install()
    raw = RawWriter(config.raw_dsn, codec, config.backend == "postgresql")
    pipe.send("ready")
    while True:
        job: Job | None = pipe.recv()
        if job is None:
            break
        branch = f"w{index}" if job.mode == "own" else "main"
        done = conflicts = k = 0
        error = None
        while time.monotonic() < job.start_at:
            time.sleep(0.001)
        while time.monotonic() < job.stop_at:
            # Disjoint paths per process (its own package); unique content per commit.
            path = file_path(index * 100 + k * 37 % 100)
            rev = job.serial * 1_000_000 + k
            data, msg = content(path, rev), f"writer {index} commit {rev}\n".encode()
            k += 1
            try:
                if job.contender == "ours":
                    repo.commit(branch, {path: data}, message=msg.decode(), author=signature(T0))
                else:
                    raw.commit(branch, path, data, msg, T0)
            except RefConflict:
                conflicts += 1
                continue
            except NotImplementedError as exc:
                error = (NOT_SUPPORTED, f"{type(exc).__name__}: {exc}"[:160])
                break
            except Exception as exc:
                error = (FAILED, f"{type(exc).__name__}: {exc}"[:160])
                break
            if time.monotonic() <= job.stop_at:
                done += 1
        gc_stats = dict(store.metrics().get("memory", {}).get("gc", {}))
        if trace is not None:
            gc_stats["trace"] = trace.report()
        pipe.send(Outcome(done, conflicts, error, gc_stats))
    raw.close()
    store.close()


class WorkerError(Exception):
    """A writer process reported an error (status, reason)."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class Pool:
    """``max(COUNTS)`` writer processes, each with a pipe."""

    def __init__(self, config: Config, size: int) -> None:
        # A fork server that imported this module once forks the writers quickly, and
        # clean: no connection or thread of the bench process is inherited.
        ctx: Any
        if "forkserver" in multiprocessing.get_all_start_methods():
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["bench.writers"])
        else:
            ctx = multiprocessing.get_context("spawn")
        self.procs: list[Any] = []
        self.pipes: list[Connection] = []
        self.serial = 0
        self.latest_gc: dict[int, dict[str, Any]] = {}
        """Each process's last GC report (cumulative since it started)."""
        self.conflicts: dict[str, int] = {}
        for i in range(size):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(i, config, child), daemon=True)
            proc.start()
            self.procs.append(proc)
            self.pipes.append(parent)
        for pipe in self.pipes:
            if not pipe.poll(120):
                raise RuntimeError("a writer process did not start within 120 s")
            ready = pipe.recv()
            if ready != "ready":
                raise RuntimeError(f"writer process: {ready}")

    def window(self, contender: str, mode: str, processes: int, seconds: float) -> float:
        """Commits/s of ``processes`` writers over one timed window."""
        self.serial += 1
        start = time.monotonic() + LEAD
        job = Job(contender, mode, self.serial, start, start + seconds)
        for pipe in self.pipes[:processes]:
            pipe.send(job)
        outcomes: list[Outcome] = [pipe.recv() for pipe in self.pipes[:processes]]
        self.latest_gc.update((i, o.gc) for i, o in enumerate(outcomes) if o.gc)
        errors = [o.error for o in outcomes if o.error is not None]
        if errors:
            raise WorkerError(*errors[0])
        self.conflicts[contender] = self.conflicts.get(contender, 0) + sum(
            o.conflicts for o in outcomes
        )
        return sum(o.commits for o in outcomes) / seconds

    def close(self) -> None:
        for pipe in self.pipes:
            with suppress(OSError):  # the process is gone already
                pipe.send(None)
        for proc in self.procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)


def _setup(t: Target, store: Store) -> None:
    """The repository with a 1,000-file tree and branches w0..w7, in both databases."""
    files = tree(1000)
    repo = store.create_repository(REPO)
    repo.commit("main", files, message="initial import\n", author=signature(T0))
    raw = t.make_raw(REPO)
    try:
        raw.start(files, b"initial import\n", T0)
        for i in range(max(COUNTS)):
            repo.create_branch(f"w{i}", "main")
            raw.create_branch(f"w{i}")
    finally:
        raw.close()


def _explain(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, WorkerError):
        return exc.status, str(exc)
    return FAILED, f"{type(exc).__name__}: {exc}"[:160]


def bench_writers(
    t: Target, sizes: Sizes, store: Store, gc_stats: list[dict[str, Any]]
) -> list[Result]:
    """One line per (processes, mode); ``gc_stats`` receives the writers' GC figures."""
    peer = (
        "raw psycopg, same transaction (FOR UPDATE on the ref row, pipelined writes)"
        if t.backend == "postgresql"
        else "raw sqlite3, same transaction (BEGIN IMMEDIATE)"
    )
    bases: dict[tuple[int, str], Result] = {}
    for n, mode in CONFIGS:
        what = "own branch each" if mode == "own" else "all on one branch"
        case = f"{n} process{'es' if n > 1 else ''}, {what}"
        bases[n, mode] = Result(
            "6 writers",
            case,
            t.backend,
            "commits/s",
            True,
            peer,
            notes={"window_s": sizes.writer_seconds, "tree_files": 1000},
        )
    try:
        _setup(t, store)
        config = Config(t.backend, t.url, t.settings, t.raw_dsn)
        pool = Pool(config, max(COUNTS))
    except Exception as exc:
        for b in bases.values():
            b.status, b.reason = _explain(exc)
        return list(bases.values())
    contests: Mapping[tuple[int, str], Contest] = {key: Contest() for key in bases}
    try:
        for rep in range(sizes.writer_repeats):
            for (n, mode), contest in contests.items():
                windows = {
                    name: partial(pool.window, name, mode, n, sizes.writer_seconds)
                    for name in ("ours", "raw")
                }
                contest.run(1, windows, offset=rep)
    finally:
        pool.close()
        gc_stats += pool.latest_gc.values()
    out = []
    for key, base in bases.items():
        contest = contests[key]
        res = result(base, "ours", "raw", contest)
        if "ours" in contest.errors:
            res.status, res.reason = _explain(contest.errors["ours"])
        if "raw" in contest.errors:
            res.notes["peer_error"] = _explain(contest.errors["raw"])[1]
        res.notes["conflicts_total"] = dict(pool.conflicts)
        out.append(res)
    return out
