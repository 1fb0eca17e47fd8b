"""Workload 10, merge: our ``merge_trees``/``merge`` beside the real git.

a. **branches 1,000 commits apart**: a 1,000-file tree; branch ``ours`` makes 500
   one-file commits, branch ``theirs`` 500 others; 50 files are changed on both sides
   (first line vs last line: clean content merges). ``repo.merge_trees("ours",
   "theirs")`` vs ``git merge-tree --write-tree ours theirs`` on the same commits
   (exported): ms per merge, and the tree ids must be equal.
b. **one-file merge on a 1,000-file tree**: each round commits one file on ``topic`` and
   another on ``main`` (untimed), then ``repo.merge("main", "topic")`` makes the merge
   commit; vs git plumbing's one-file commit (hash-object, update-index, write-tree,
   commit-tree, update-ref): ms per operation.

Run alone: ``python -m bench.merge [--quick] [--backend sqlite|postgres] [--pg-url URL]``;
it is also workload ``merge`` of ``python -m bench``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import govc_db
from bench.fsck import export as export_loose
from bench.harness import Contest, Sizes, Target, content, file_path, result, timed_ms, tree
from bench.peers import GitPlumbing, git, signature
from bench.report import Result
from govc_db import Repository, Store

__all__ = ["bench_merge", "main"]

WORKLOAD = "10 merge"


def _edit(path: str, line: int, tag: str) -> bytes:
    lines = content(path, 0).decode().splitlines(keepends=True)
    lines[line] = f"{lines[line].rstrip()}  # {tag}\n"
    return "".join(lines).encode()


def build_apart(repo: Repository, files: int, per_side: int, overlap: int) -> None:
    """Base tree on main; ``ours`` and ``theirs`` each ``per_side`` one-file commits."""
    sig = signature(0)
    repo.commit("main", tree(files), message="base\n", author=sig)
    repo.create_branch("ours", "main")
    repo.create_branch("theirs", "main")
    start = per_side - overlap
    for k in range(per_side):
        p = file_path(k)
        repo.commit("ours", {p: _edit(p, 1, "ours")}, message=f"ours {k}\n", author=sig)
    for k in range(per_side):
        p = file_path(start + k)
        repo.commit("theirs", {p: _edit(p, 16, "theirs")}, message=f"theirs {k}\n", author=sig)


def export(repo: Repository, dest: Path) -> Path:
    """Write the repository's objects and refs as a bare git repository, packed."""
    export_loose(repo, dest)
    git(dest, "repack", "-a", "-d", "-q")  # git reads a pack, as it would in real use
    return dest


def _git_merge_tree(git_dir: Path) -> str:
    proc = subprocess.run(
        ["git", "-C", str(git_dir), "merge-tree", "--write-tree", "ours", "theirs"],
        capture_output=True,
        check=False,
    )
    return proc.stdout.split(b"\n", 1)[0].decode()


def bench_apart(store: Store, sizes: Sizes, workdir: Path, backend: str) -> Result:
    peer = "git merge-tree --write-tree"
    files = sizes.tree_files
    per_side = min(500, files // 2)
    base = Result(
        WORKLOAD,
        f"branches {2 * per_side:,} commits apart, {per_side} files changed each side",
        backend,
        "ms",
        False,
        peer,
    )
    repo = store.create_repository("bench-merge-apart")
    build_apart(repo, files, per_side, overlap=per_side // 10)
    git_dir = export(repo, workdir / "merge-apart.git")
    contest = Contest().run(
        sizes.calls,
        {
            "ours": partial(timed_ms, lambda: repo.merge_trees("ours", "theirs")),
            peer: partial(timed_ms, partial(_git_merge_tree, git_dir)),
        },
    )
    mine = repo.merge_trees("ours", "theirs")
    same = mine.clean and mine.tree == _git_merge_tree(git_dir)
    base.notes["tree"] = mine.tree
    return result(base, "ours", peer, contest, same)


def bench_one_file(store: Store, sizes: Sizes, workdir: Path, backend: str) -> Result:
    peer = "git plumbing one-file commit"
    base = Result(
        WORKLOAD,
        f"one-file merge commit on a {sizes.tree_files:,}-file tree",
        backend,
        "ms",
        False,
        peer,
    )
    repo = store.create_repository("bench-merge-one")
    files = tree(sizes.tree_files)
    sig = signature(0)
    repo.commit("main", files, message="base\n", author=sig)
    repo.create_branch("topic", "main")
    plumbing = GitPlumbing(workdir / "merge-plumbing")
    plumbing.start(files, b"base\n", 0)
    rounds = [0]

    def ours() -> float:
        k = rounds[0] = rounds[0] + 1
        a, b = file_path(2 * k % sizes.tree_files), file_path((2 * k + 1) % sizes.tree_files)
        repo.commit("topic", {a: content(a, k)}, message=f"topic {k}\n", author=sig)
        repo.commit("main", {b: content(b, k)}, message=f"main {k}\n", author=sig)
        return timed_ms(lambda: repo.merge("main", "topic", author=signature(k)))

    def theirs() -> float:
        k = rounds[0] + 1000
        p = file_path(k % sizes.tree_files)
        return timed_ms(lambda: plumbing.commit(p, content(p, k), b"m\n", k))

    contest = Contest().run(1, {"ours": ours, peer: theirs})  # warm-up round
    contest.samples = {k: [] for k in contest.samples}
    contest.run(sizes.commits, {"ours": ours, peer: theirs})
    head = repo.get_commit("main")
    return result(base, "ours", peer, contest, len(head.parents) == 2)


def bench_merge(t: Target, sizes: Sizes, store: Store) -> list[Result]:
    """Both merge cases on one backend (the suite's entry point)."""
    return [
        bench_apart(store, sizes, t.workdir, t.backend),
        bench_one_file(store, sizes, t.workdir, t.backend),
    ]


@contextmanager
def _store(backend: str, pg_url: str, workdir: Path) -> Iterator[Store]:
    if backend == "sqlite":
        with govc_db.open(f"sqlite:///{workdir / 'merge.db'}") as store:
            store.upgrade()
            yield store
        return
    import secrets

    import psycopg
    from psycopg import sql

    from bench.suite import libpq

    name = f"govc_bench_merge_{secrets.token_hex(4)}"
    with psycopg.connect(libpq(pg_url), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        url = pg_url.rsplit("/", 1)[0] + "/" + name
        with govc_db.open(url) as store:
            store.upgrade()
            yield store
    finally:
        with psycopg.connect(libpq(pg_url), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.merge``: print one line per case and a JSON summary."""
    from bench.harness import FULL, QUICK
    from bench.suite import DEFAULT_PG_URL

    p = argparse.ArgumentParser(prog="python -m bench.merge", description=__doc__)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--pg-url", default=os.environ.get("GOVC_DB_BENCH_PG_URL", DEFAULT_PG_URL))
    args = p.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    out = []
    with tempfile.TemporaryDirectory() as tmp, _store(args.backend, args.pg_url, Path(tmp)) as st:
        for fn in (bench_apart, bench_one_file):
            r = fn(st, sizes, Path(tmp), args.backend)
            ours = r.ours.median if r.ours else None
            theirs = r.theirs.median if r.theirs else None
            ratio = r.ratio
            print(
                f"{r.case} [{r.backend}]: ours {ours and round(ours, 1)} ms, "
                f"{r.peer} {theirs and round(theirs, 1)} ms, ratio {ratio and round(ratio, 2)}x"
                f", same result: {r.check} {r.reason}",
                flush=True,
            )
            out.append(
                {
                    "case": r.case,
                    "backend": r.backend,
                    "ours_ms": ours,
                    "peer": r.peer,
                    "peer_ms": theirs,
                    "ratio": ratio,
                    "check": r.check,
                }
            )
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
