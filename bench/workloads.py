"""The workloads, each measured side by side with its peers in the same run.

1. one-file commits onto a 1,000-file tree (commits/s) vs git plumbing, dulwich, raw SQL;
2. log of N commits, whole and path-limited (ms) vs ``git log`` / ``git rev-list``;
3. reading a file at a revision, cold and warm (reads/s) vs ``git cat-file`` and a raw
   point SELECT (:mod:`bench.reads`);
4. diff of two commits 1,000 commits apart and adjacent (ms) vs ``git diff-tree -r``;
5. import of the N-commit history vs ``git fast-import`` (:mod:`bench.history`);
6. concurrent writers, 1/4/8 processes, own branches and one branch, vs the raw driver
   (:mod:`bench.writers`);
7. stored size of the history vs ``git count-objects -v`` after ``git gc``;
8. peak RSS committing and reading a large file vs git, MB/s both ways (:mod:`bench.memory`),
   and stored bytes added by a 1 MiB edit in its middle (:mod:`bench.bigedit`);
9. the maximum GC pause ``store.metrics()`` reports (seed goal: 10 ms).
10. merges: ``merge_trees`` of branches 1,000 commits apart vs ``git merge-tree``, and
    one-file merge commits vs git plumbing's one-file commits (:mod:`bench.merge`).

Our code is called only through the public API (see each module for the peers' side).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any

import govc_db
from bench.bigedit import bench_edit
from bench.gctrace import process_trace
from bench.harness import (
    CHANGELOG,
    LOG_DIR,
    T0,
    Contest,
    Sizes,
    Target,
    changed_path,
    content,
    explain,
    message,
    result,
    step,
    timed_ms,
    tree,
    unsupported,
)
from bench.history import History, bench_import, bench_size, build_history
from bench.memory import bench_gc, bench_memory
from bench.merge import bench_merge
from bench.peers import Committer, DulwichCommitter, GitPlumbing, RawSql, git, signature
from bench.reads import bench_reads
from bench.report import Result
from bench.storage import bench_ab, bench_realistic, bench_size_gc
from bench.writers import bench_writers
from govc_db import Repository, Store

__all__ = ["WORKLOADS", "run_backend"]

#: Selectable with ``--workload``; the GC pause line is always reported.
WORKLOADS = (
    "commit",
    "log",
    "read",
    "diff",
    "import",
    "writers",
    "size",
    "memory",
    "merge",
    "storage",
)
NEEDS_HISTORY = frozenset({"log", "read", "diff", "import", "size"})


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
        (RawSql.name, partial(t.make_raw, "commits")),
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


# -- 2. log, 4. diff -----------------------------------------------------------------------
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
    n = sizes.history
    apart = min(1000, n)
    cases = [
        (f"{apart:,} commits apart (commit {n - apart:,} vs commit {n:,})", n - apart, n),
        ("adjacent (HEAD~1 vs HEAD)", n - 1, n),
    ]
    if isinstance(h, BaseException):
        return [
            unsupported(Result("4 diff", case, t.backend, "ms", False, peer), h)
            for case, _, _ in cases
        ]
    out: list[Result] = []
    for case, i, j in cases:
        old, new = h.commits[i], h.commits[j]
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


def _guarded(name: str, t: Target, fn: Callable[[], list[Result]]) -> list[Result]:
    """The workload's lines; one "failed" line if it broke outside any measurement
    (a harness or peer setup error), so a workload is never silently missing.
    """
    try:
        return fn()
    except Exception as exc:
        line = Result(
            f"{WORKLOADS.index(name) + 1} {name}", "(the whole workload)", t.backend, "-", True, "-"
        )
        return [unsupported(line, exc)]


def run_backend(
    t: Target, sizes: Sizes, which: Sequence[str], progress: Callable[[str], None]
) -> Iterator[Result]:
    """Every chosen workload on one backend; yields results as they finish.

    The history is imported first, into an empty database, so its stored size is the
    history's alone; the workloads that write more come after the readers.
    """
    process_trace()  # GOVC_BENCH_GC_TRACE: this process's collections too
    with govc_db.open(t.url, settings=t.settings) as store:
        store.upgrade()
        if NEEDS_HISTORY & set(which):
            progress(f"[{t.backend}] 5 import: {sizes.history:,} commits, ours and git fast-import")
            history: History | BaseException
            try:
                with step("import"):
                    history = build_history(t, sizes, store)
                progress(f"[{t.backend}] history: {history.notes}")
            except Exception as exc:
                history = exc
                progress(f"[{t.backend}] history setup: {explain(exc)[1]}")
            steps: list[tuple[str, Callable[[Target, Sizes, Any], list[Result]]]] = [
                ("size", bench_size),
                ("import", bench_import),
                ("log", bench_log),
                ("read", bench_reads),
                ("diff", bench_diff),
                ("size", bench_size_gc),  # after the readers: gc() rewrites the history
            ]
            for name, fn in steps:
                if name in which:
                    progress(f"[{t.backend}] {name}")
                    with step(name):
                        yield from _guarded(name, t, partial(fn, t, sizes, history))
        if "commit" in which:
            progress(f"[{t.backend}] 1 commit: ours, git plumbing, dulwich, raw SQL")
            with step("commit"):
                yield from _guarded("commit", t, lambda: bench_commits(t, sizes, store))
        writer_gc: list[dict[str, Any]] = []
        if "writers" in which:
            progress(f"[{t.backend}] 6 writers: 1, 4 and 8 processes, ours and raw")
            with step("writers"):
                yield from _guarded("writers", t, lambda: bench_writers(t, sizes, store, writer_gc))
        if "storage" in which:
            progress(f"[{t.backend}] 10 storage: a realistic history vs git repack -adf")
            yield from _guarded("storage", t, lambda: bench_realistic(t, sizes))
            yield from _guarded("storage", t, lambda: bench_ab(t, sizes))
        if "memory" in which:
            progress(f"[{t.backend}] 8 memory: peak RSS of a {sizes.big_file >> 20} MiB file")
            with step("memory"):
                yield from _guarded("memory", t, lambda: bench_memory(t, sizes))
                yield from _guarded("memory", t, lambda: bench_edit(t, sizes, store))
        if "merge" in which:
            progress(f"[{t.backend}] 10 merge: merge-tree and one-file merges, ours and git")
            with step("merge"):
                yield from _guarded("merge", t, lambda: bench_merge(t, sizes, store))
        yield from bench_gc(t, store, writer_gc)
