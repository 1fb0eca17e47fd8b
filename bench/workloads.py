"""The four workloads, each measured side by side with its peers in the same run.

1. one-file commits onto a 1,000-file tree (commits/s) vs git plumbing, dulwich, raw SQL;
2. log of N commits, whole and path-limited (ms) vs ``git log`` / ``git rev-list``;
3. reading a file at a revision, cold (new Store) and warm (reads/s) vs ``git cat-file``;
4. diff of two commits (ms) vs ``git diff-tree -r``.

Contenders alternate within every repeat (the order rotates), so drift of the machine
hits ours and the peer alike. Our code is called only through the public API. A
workload our code cannot run yet (``NotImplementedError``) becomes a "not supported"
line with the reason, never a silent gap; any other exception becomes "failed".
"""

from __future__ import annotations

import gc
import random
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import govc_db
from bench.peers import (
    CatFileBatch,
    Committer,
    DulwichCommitter,
    GitPlumbing,
    RawSql,
    export_repository,
    git,
    signature,
)
from bench.report import FAILED, NOT_SUPPORTED, Result, Stats
from govc_db import Repository, Settings, Store

__all__ = ["FULL", "QUICK", "WORKLOADS", "Sizes", "Target", "run_backend"]

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
    """N: commits in the history read by workloads 2-4."""
    cold_reads: int
    warm_reads: int
    calls: int
    """Timed calls of each contender in workloads 2 and 4 (one sample each)."""
    tree_files: int = 1000


QUICK = Sizes(repeats=3, commits=40, history=1000, cold_reads=20, warm_reads=300, calls=3)
FULL = Sizes(repeats=5, commits=200, history=5000, cold_reads=60, warm_reads=3000, calls=7)


@dataclass(slots=True)
class Target:
    """One backend: where our Store lives and how to make the raw-driver peer."""

    backend: str
    url: str
    settings: Settings
    workdir: Path
    make_raw: Callable[[], RawSql]
    """Raw SQL peer on its own database with the same (migrated) schema."""


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


# -- measuring -----------------------------------------------------------------------------
@dataclass(slots=True)
class Contest:
    """Samples and first failure of each contender."""

    samples: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, BaseException] = field(default_factory=dict)

    def run(
        self, repeats: int, contenders: Mapping[str, Callable[[], float]], offset: int = 0
    ) -> Contest:
        """Call every live contender once per repeat, rotating the order each repeat."""
        names = list(contenders)
        for name in names:
            self.samples.setdefault(name, [])
        for rep in range(offset, offset + repeats):
            shift = rep % len(names)
            for name in names[shift:] + names[:shift]:
                if name in self.errors:
                    continue
                gc.collect()
                try:
                    self.samples[name].append(contenders[name]())
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


# -- 1. commits ----------------------------------------------------------------------------
class OursCommitter:
    """Our public API: ``repo.commit(branch, {path: data})``."""

    def __init__(self, store: Store, name: str) -> None:
        self.name = f"ours ({store.dialect})"
        self.repo_name = name
        self.store = store
        self.repo: Repository | None = None

    def start(self, files: Mapping[str, bytes], message: bytes, when: int) -> str:
        self.repo = self.store.create_repository(self.repo_name)
        return self.repo.commit("main", files, message=message.decode(), author=signature(when))

    def commit(self, path: str, data: bytes, message: bytes, when: int) -> str:
        assert self.repo is not None
        return self.repo.commit(
            "main", {path: data}, message=message.decode(), author=signature(when)
        )

    def close(self) -> None:
        pass


def bench_commits(t: Target, sizes: Sizes, store: Store) -> list[Result]:
    ours: Committer = OursCommitter(store, "commits")
    makers: list[tuple[str, Callable[[], Committer]]] = [
        (GitPlumbing.name, lambda: GitPlumbing(t.workdir / "plumbing")),
        (DulwichCommitter.name, lambda: DulwichCommitter(t.workdir / "dulwich")),
        (RawSql.name, t.make_raw),
    ]
    contest = Contest()
    committers: dict[str, Committer] = {ours.name: ours}
    peer_names: list[str] = []
    for label, make in makers:
        try:
            peer = make()
        except Exception as exc:  # e.g. dulwich not installed: reported, not skipped
            contest.errors[label] = exc
            peer_names.append(label)
            continue
        committers[peer.name] = peer
        peer_names.append(peer.name)
    heads: dict[str, str] = {}
    files = tree(sizes.tree_files)
    for name, c in committers.items():
        try:
            heads[name] = c.start(files, b"initial import\n", T0)
        except Exception as exc:
            contest.errors[name] = exc

    def batch(c: Committer, first: int) -> Callable[[], float]:
        def run() -> float:
            ks = range(first, first + sizes.commits)
            t0 = time.perf_counter()
            for k in ks:
                path = changed_path(k, sizes.tree_files)
                heads[c.name] = c.commit(path, content(path, k), message(k), T0 + k)
            return len(ks) / (time.perf_counter() - t0)

        return run

    for rep in range(sizes.repeats):  # every contender commits the same k's in a repeat
        first = 1 + rep * sizes.commits
        contest.run(1, {name: batch(c, first) for name, c in committers.items()}, offset=rep)
    for c in committers.values():
        c.close()
    out = []
    for name in peer_names:
        same = heads.get(ours.name) == heads.get(name) if name in heads else None
        base = Result(
            "1 commit",
            f"one-file commit onto a {sizes.tree_files:,}-file tree",
            t.backend,
            "commits/s",
            True,
            name,
            notes={"commits_per_repeat": sizes.commits},
        )
        out.append(result(base, ours.name, name, contest, same))
    return out


# -- 2-4. the history ----------------------------------------------------------------------
@dataclass(slots=True)
class History:
    repo: Repository
    commits: list[str]
    git_dir: Path
    notes: dict[str, Any]


def build_history(t: Target, sizes: Sizes, store: Store) -> History:
    """N one-file commits through our API, then an exported copy for git."""
    repo = store.create_repository("history")
    files = tree(sizes.tree_files)
    files[CHANGELOG] = content(CHANGELOG, 0)
    t0 = time.perf_counter()
    ids = [repo.commit("main", files, message="initial import\n", author=signature(T0))]
    for k in range(1, sizes.history + 1):
        path = history_path(k, sizes.tree_files)
        ids.append(
            repo.commit(
                "main",
                {path: content(path, k)},
                message=message(k).decode(),
                author=signature(T0 + k),
            )
        )
    built = time.perf_counter() - t0
    t1 = time.perf_counter()
    head = export_repository(repo, t.workdir / "history.git")
    exported = time.perf_counter() - t1
    if head != ids[-1]:
        raise RuntimeError(f"exported head {head} != ours {ids[-1]}")
    notes = {
        "history_commits": sizes.history,
        "history_build_s": round(built, 2),
        "history_build_commits_per_s": round(sizes.history / built, 1),
        "export_s": round(exported, 2),
    }
    return History(repo, ids, t.workdir / "history.git", notes)


def compare_calls(
    repeats: int,
    ours: Callable[[], Any],
    peers: Mapping[str, Callable[[], Any]],
    same: Callable[[Any, Any], bool],
) -> tuple[Contest, dict[str, bool | None], Any]:
    """Time one call of each contender per repeat (after one untimed warm-up round), then
    compare our output with each peer's: (contest, peer -> same output?, our output).
    """
    contenders: dict[str, Callable[[], float]] = {"ours": partial(timed_ms, ours)}
    contenders.update({p: partial(timed_ms, fn) for p, fn in peers.items()})
    contest = Contest().run(1, contenders)
    contest.samples = {k: [] for k in contest.samples}
    contest.run(repeats, contenders)
    checks: dict[str, bool | None] = dict.fromkeys(peers)
    mine = None
    if "ours" not in contest.errors:
        mine = ours()
        for p, fn in peers.items():
            if p not in contest.errors:
                checks[p] = same(mine, fn())
    return contest, checks, mine


#: git log format with every CommitInfo field; records start with \x01, fields end with \x00.
FULL_INFO = "%x01%H%x00%T%x00%P%x00%an%x00%ae%x00%at%x00%cn%x00%ce%x00%ct%x00%B"


def _git_ids(out: bytes) -> list[str]:
    """Commit ids from ``--format=%H`` (or rev-list) or ``--format=FULL_INFO`` output."""
    if out.startswith(b"\x01"):
        return [rec.split(b"\x00", 1)[0].decode() for rec in out.split(b"\x01")[1:]]
    return out.decode().split()


def _log_ids(repo: Repository, path: str | None, limit: int | None) -> list[str]:
    return [c.oid for c in repo.log("main", path=path, limit=limit)]


def bench_log(t: Target, sizes: Sizes, h: History | BaseException) -> list[Result]:
    n = sizes.history + 1
    cases: list[tuple[str, str | None, int | None]] = [
        (f"whole history ({n:,} commits)", None, None),
        (f"path-limited: file {CHANGELOG}", CHANGELOG, None),
        (f"path-limited: directory {LOG_DIR}/", LOG_DIR, None),
        ("first 20 commits (one page)", None, 20),
    ]
    out: list[Result] = []
    for case, path, limit in cases:
        tail = [] if path is None else ["--", path]
        head = [] if limit is None else ["-n", str(limit)]
        argv = {
            "git log --format=%H": ["log", "--format=%H", *head, "main", *tail],
            "git rev-list": ["rev-list", *head, "main", *tail],
            # What our log returns (CommitInfo): git must parse every commit for this.
            "git log, full commit info": ["log", f"--format={FULL_INFO}", *head, "main", *tail],
        }
        bases = {
            p: Result("2 log", case, t.backend, "ms", False, p, notes={"commits": n}) for p in argv
        }
        if isinstance(h, BaseException):
            out += [unsupported(b, h) for b in bases.values()]
            continue
        contest, checks, mine = compare_calls(
            sizes.calls,
            partial(_log_ids, h.repo, path, limit),
            {p: partial(git, h.git_dir, *a) for p, a in argv.items()},
            lambda ours, theirs: bool(ours == _git_ids(theirs)),
        )
        for p, b in bases.items():
            if mine is not None:
                b.notes["returned"] = len(mine)
            out.append(result(b, "ours", p, contest, checks[p]))
    return out


def read_pairs(h: History, count: int, files: int) -> list[tuple[str, str]]:
    rng = random.Random(20240601)
    return [(rng.choice(h.commits), file_path(rng.randrange(files))) for _ in range(count)]


def bench_reads(t: Target, sizes: Sizes, h: History | BaseException) -> list[Result]:
    cold_case = "cold: new Store per read (engine, connection, lookup)"
    warm_case = f"warm: {sizes.warm_reads} reads, same Store"
    bases = {
        "cold_proc": Result(
            "3 read", cold_case, t.backend, "reads/s", True, "git cat-file blob (process per read)"
        ),
        "cold_batch": Result(
            "3 read", cold_case, t.backend, "reads/s", True, "git cat-file --batch (long-running)"
        ),
        "warm_batch": Result(
            "3 read", warm_case, t.backend, "reads/s", True, "git cat-file --batch (long-running)"
        ),
    }
    if isinstance(h, BaseException):
        return [unsupported(b, h) for b in bases.values()]
    repo, gdir = h.repo, h.git_dir
    pairs = read_pairs(h, max(sizes.cold_reads, 50), sizes.tree_files)
    cold = pairs[: sizes.cold_reads]
    warm = [pairs[i % 50] for i in range(sizes.warm_reads)]
    batch = CatFileBatch(gdir)
    try:
        check: bool | None
        try:
            check = all(repo.read(r, p) == batch.read(r, p) for r, p in pairs[:50])
        except Exception:
            check = None

        def rate(reads: Sequence[tuple[str, str]], fn: Callable[[str, str], Any]) -> float:
            t0 = time.perf_counter()
            for r, p in reads:
                fn(r, p)
            return len(reads) / (time.perf_counter() - t0)

        def cold_ours(r: str, p: str) -> bytes:
            with govc_db.open(t.url, settings=t.settings) as s:
                return s.repository(h.repo.name).read(r, p)

        cold_contest = Contest().run(
            sizes.repeats,
            {
                "ours": lambda: rate(cold, cold_ours),
                "proc": lambda: rate(cold, lambda r, p: git(gdir, "cat-file", "blob", f"{r}:{p}")),
                "batch": lambda: rate(cold, batch.read),
            },
        )
        warm_contest = Contest().run(
            sizes.repeats,
            {"ours": lambda: rate(warm, repo.read), "batch": lambda: rate(warm, batch.read)},
        )
    finally:
        batch.close()
    for key, b in bases.items():
        b.notes["distinct_pairs"] = len(cold) if key.startswith("cold") else 50
    return [
        result(bases["cold_proc"], "ours", "proc", cold_contest, check),
        result(bases["cold_batch"], "ours", "batch", cold_contest, check),
        result(bases["warm_batch"], "ours", "batch", warm_contest, check),
    ]


def _diff_rows(out: bytes) -> list[tuple[str, str, str]]:
    rows = []
    for line in out.decode().splitlines():
        meta, path = line.split("\t", 1)
        parts = meta.split()
        rows.append((path, parts[4][0], parts[3]))
    return rows


def _diff(repo: Repository, a: str, b: str) -> list[tuple[str, str, str]]:
    return [(c.path, c.status, c.new_oid or "0" * 40) for c in repo.diff(a, b)]


def bench_diff(t: Target, sizes: Sizes, h: History | BaseException) -> list[Result]:
    peer = "git diff-tree -r"
    if isinstance(h, BaseException):
        return [
            unsupported(Result("4 diff", case, t.backend, "ms", False, peer), h)
            for case in ("far apart", "adjacent")
        ]
    out: list[Result] = []
    n = len(h.commits) - 1
    for case, old, new in (
        (f"far apart (commit 1 vs commit {n})", h.commits[1], h.commits[-1]),
        ("adjacent (HEAD~1 vs HEAD)", h.commits[-2], h.commits[-1]),
    ):
        base = Result("4 diff", case, t.backend, "ms", False, peer)
        contest, checks, mine = compare_calls(
            sizes.calls,
            partial(_diff, h.repo, old, new),
            {peer: partial(git, h.git_dir, "diff-tree", "-r", old, new)},
            lambda ours, theirs: bool(ours == _diff_rows(theirs)),
        )
        if mine is not None:
            base.notes["changed_files"] = len(mine)
        out.append(result(base, "ours", peer, contest, checks[peer]))
    return out


WORKLOADS = ("commit", "log", "read", "diff")


def run_backend(
    t: Target, sizes: Sizes, which: Sequence[str], progress: Callable[[str], None]
) -> Iterator[Result]:
    """Every chosen workload on one backend, in order; yields results as they finish."""
    with govc_db.open(t.url, settings=t.settings) as store:
        store.upgrade()
        if "commit" in which:
            progress(f"[{t.backend}] 1 commit: ours, git plumbing, dulwich, raw SQL")
            yield from bench_commits(t, sizes, store)
        if not {"log", "read", "diff"} & set(which):
            return
        progress(f"[{t.backend}] building a {sizes.history:,}-commit history and its git copy")
        history: History | BaseException
        try:
            history = build_history(t, sizes, store)
            progress(f"[{t.backend}] history: {history.notes}")
        except Exception as exc:
            history = exc
            progress(f"[{t.backend}] history setup: {explain(exc)[1]}")
        for name, fn in (("log", bench_log), ("read", bench_reads), ("diff", bench_diff)):
            if name in which:
                progress(f"[{t.backend}] {name}")
                for r in fn(t, sizes, history):
                    if not isinstance(history, BaseException):
                        r.notes.update(history.notes)
                    yield r
