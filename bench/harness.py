"""What every workload shares: sizes, the backend target, the synthetic data, and the
:class:`Contest` that measures contenders interleaved.

Contenders alternate within every repeat (the order rotates), so drift of the machine
hits ours and the peer alike. A workload our code cannot run yet (``NotImplementedError``
anywhere in the cause chain) becomes a "not supported" line with the reason, never a
silent gap; any other exception becomes "failed".

Two process-wide hooks live here because every workload goes through them:

* :func:`collect` runs the full collection the harness makes before each sample with the
  library's GC-pause monitor switched off, so the "max GC pause" the bench reports from
  ``store.metrics()`` is the pauses of the work, not of the harness's forced collections.
* :data:`PROFILE` (set by ``python -m bench profile``): when set, every call made as
  "ours" in the workload :data:`PROFILE_STEP` runs under that cProfile profiler, and
  nothing else does.
"""

from __future__ import annotations

import cProfile
import gc
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.gctrace import process_trace
from bench.peers import RawSql
from bench.report import FAILED, NOT_SUPPORTED, Result, Stats
from govc_db import Settings
from govc_db.perf import gc_monitor

__all__ = [
    "CHANGELOG",
    "FULL",
    "LOG_DIR",
    "QUICK",
    "T0",
    "Contest",
    "Sizes",
    "Target",
    "changed_path",
    "collect",
    "content",
    "explain",
    "file_path",
    "history_path",
    "message",
    "ours_section",
    "result",
    "step",
    "timed_ms",
    "tree",
    "unsupported",
]

T0 = 1_700_000_000
CHANGELOG = "docs/CHANGELOG.md"
LOG_DIR = "pkg03"


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much work each workload does (``--quick`` or the full run)."""

    repeats: int
    commits: int
    """Commits per repeat in workload 1 (each contender makes this many)."""
    history: int
    """N: commits of the imported history (workload 5) that workloads 2-4 and 7 read."""
    cold_reads: int
    warm_reads: int
    calls: int
    """Timed calls of each contender in workloads 2 and 4 (one sample each)."""
    import_chunks: int
    """The history import is timed in this many consecutive slices (its samples)."""
    writer_seconds: float
    """Length of one timed window of the concurrent writers (workload 6)."""
    writer_repeats: int
    big_file: int
    """Bytes of the file committed and read back in workload 8 (peak RSS)."""
    tree_files: int = 1000


QUICK = Sizes(
    repeats=3,
    commits=40,
    history=1000,
    cold_reads=20,
    warm_reads=300,
    calls=5,
    import_chunks=5,
    writer_seconds=0.5,
    writer_repeats=3,
    big_file=256 * 1024 * 1024,
)
FULL = Sizes(
    repeats=5,
    commits=200,
    history=10_000,
    cold_reads=60,
    warm_reads=3000,
    calls=7,
    import_chunks=10,
    writer_seconds=3.0,
    writer_repeats=3,
    big_file=1024 * 1024 * 1024,
)


@dataclass(slots=True)
class Target:
    """One backend: where our Store lives and where the raw-driver peer writes."""

    backend: str
    url: str
    """Our database (SQLAlchemy URL)."""
    settings: Settings
    workdir: Path
    make_raw: Callable[[str], RawSql]
    """Raw SQL peer for a new repository of that name, on its own database with the same
    (migrated) schema."""
    raw_dsn: str
    """That database for worker processes: a libpq string, or the SQLite file path."""
    ours_dsn: str
    """Our database for the raw point-SELECT readers: a libpq string, or the file path."""


# -- the data ------------------------------------------------------------------------------
def file_path(i: int) -> str:
    """1,000 files as 10 packages x 10 modules x 10 files (3 trees rewritten per commit)."""
    return f"pkg{i // 100:02d}/mod{i // 10 % 10}/file{i:04d}.py"


def content(path: str, revision: int) -> bytes:
    """A ~300-byte text file; every revision differs."""
    head = f"# {path} revision {revision}\n"
    return (head + "".join(f"value_{j} = {revision * 31 + j}\n" for j in range(16))).encode()


def tree(n: int) -> dict[str, bytes]:
    return {file_path(i): content(file_path(i), 0) for i in range(n)}


def message(k: int) -> bytes:
    return f"bench commit {k}\n".encode()


def changed_path(k: int, n: int) -> str:
    """Commit k's one file: a stride coprime with n visits every file once per n commits."""
    return file_path(k * 37 % n)


def history_path(k: int, n: int) -> str:
    """Every 10th history commit edits the changelog (for a path-limited log)."""
    return CHANGELOG if k % 10 == 0 else changed_path(k, n)


# -- process-wide hooks --------------------------------------------------------------------
PROFILE: cProfile.Profile | None = None
"""Set by ``python -m bench profile``: the profiler "ours" runs under."""
PROFILE_STEP: str | None = None
"""The workload to profile (the others run unprofiled)."""
_step: str | None = None
_depth = 0


@contextmanager
def step(name: str) -> Iterator[None]:
    """Mark the workload that runs inside the block (for :data:`PROFILE_STEP`)."""
    global _step
    previous, _step = _step, name
    try:
        yield
    finally:
        _step = previous


@contextmanager
def ours_section() -> Iterator[None]:
    """Profile the block when ``python -m bench profile`` asked for this workload."""
    global _depth
    prof = PROFILE
    if prof is None or _step != PROFILE_STEP:
        yield
        return
    if _depth == 0:
        prof.enable()
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            prof.disable()


def collect() -> None:
    """A full collection before a sample, kept out of the library's GC-pause figures."""
    monitor = gc_monitor()
    monitor.uninstall()
    trace = process_trace()
    if trace is not None:
        trace.uninstall()
    try:
        gc.collect()
    finally:
        monitor.install()
        if trace is not None:
            trace.install()


# -- measuring -----------------------------------------------------------------------------
@dataclass(slots=True)
class Contest:
    """Samples and first failure of each contender."""

    samples: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, BaseException] = field(default_factory=dict)

    def run(
        self, repeats: int, contenders: Mapping[str, Callable[[], float]], offset: int = 0
    ) -> Contest:
        """Call every live contender once per repeat, rotating the order each repeat.
        Contenders whose name starts with "ours" run inside :func:`ours_section`.
        """
        names = list(contenders)
        for name in names:
            self.samples.setdefault(name, [])
        for rep in range(offset, offset + repeats):
            shift = rep % len(names)
            for name in names[shift:] + names[:shift]:
                if name in self.errors:
                    continue
                collect()
                try:
                    if name.startswith("ours"):
                        with ours_section():
                            sample = contenders[name]()
                    else:
                        sample = contenders[name]()
                    self.samples[name].append(sample)
                except Exception as exc:
                    self.errors[name] = exc
        return self

    def stats(self, name: str) -> Stats | None:
        return None if name in self.errors else Stats.of(self.samples.get(name, []))


def explain(exc: BaseException) -> tuple[str, str]:
    """(status, reason): NotImplementedError anywhere in the cause chain is "not supported"."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, NotImplementedError):
            frames = traceback.extract_tb(seen.__traceback__)
            where = f"{Path(frames[-1].filename).name}:{frames[-1].name}" if frames else "?"
            return NOT_SUPPORTED, f"{where} not implemented yet"
        seen = seen.__cause__ or seen.__context__
    return FAILED, f"{type(exc).__name__}: {exc}"[:160]


def result(
    base: Result, ours: str, peer: str, contest: Contest, check: bool | None = None
) -> Result:
    """Fill ``base`` (workload, case, units, peer) from a finished contest."""
    base.ours, base.theirs = contest.stats(ours), contest.stats(peer)
    if ours in contest.errors:
        base.status, base.reason = explain(contest.errors[ours])
    if peer in contest.errors:
        base.notes["peer_error"] = explain(contest.errors[peer])[1]
    base.check = check if base.ours is not None and base.theirs is not None else None
    return base


def unsupported(base: Result, exc: BaseException) -> Result:
    base.status, base.reason = explain(exc)
    return base


def timed_ms(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000
