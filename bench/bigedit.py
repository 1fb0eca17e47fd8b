"""8b. A 1 MiB edit in the middle of a large file: stored bytes added, ours vs git.

Ours: the file is committed (streamed), then a version with 1 MiB in the middle replaced
by other bytes; the figure is what the database's rows of the repository grew by
(``govc_chunks`` and ``govc_objects`` data, as stored: compressed where it paid). Chunks
are content-defined, so only the chunks around the edit are new.

git: ``hash-object -w`` of both versions in a fresh repository; the figure is what
``.git/objects`` grew by with the second version (a loose object, or a pack above
``core.bigFileThreshold``), and again after ``git gc`` (delta compression, which git skips
for files above ``core.bigFileThreshold``) against the first version alone after
``git gc``.

The file is pseudo-random (incompressible) like workload 8's. One sample each: these are
sizes, not rates.
"""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import sqlalchemy as sa

from bench.harness import Sizes, Target
from bench.memory import write_file
from bench.peers import git, git_env
from bench.report import FAILED, Result, Stats
from govc_db import Signature, Store

__all__ = ["bench_edit"]

MIB = 1024 * 1024
PATH = "data/big.bin"


def _edit(src: Path, dst: Path, size: int) -> None:
    """``dst`` = ``src`` with 1 MiB of other bytes in the middle (the size unchanged)."""
    middle = (size // 2) - MIB // 2
    with src.open("rb") as f, dst.open("wb") as g:
        left = middle
        while left:
            piece = f.read(min(MIB, left))
            g.write(piece)
            left -= len(piece)
        g.write(random.Random(99).randbytes(MIB))
        f.seek(MIB, os.SEEK_CUR)
        while piece := f.read(MIB):
            g.write(piece)


def _stored(store: Store, repo: str) -> int:
    with store.engine.connect() as conn:
        rid = conn.execute(
            sa.text("SELECT id FROM govc_repositories WHERE name = :n"), {"n": repo}
        ).scalar_one()
        total = 0
        for table in ("govc_chunks", "govc_objects"):
            total += conn.execute(
                sa.text(f"SELECT coalesce(sum(length(data)), 0) FROM {table} WHERE repo_id = :r"),
                {"r": rid},
            ).scalar_one()
        conn.rollback()
    return int(total)


def _objects_bytes(gdir: Path) -> int:
    total = 0
    for root, _, names in os.walk(gdir / ".git" / "objects"):
        total += sum(os.path.getsize(os.path.join(root, n)) for n in names)
    return total


def _git_commit(gdir: Path, file: Path, parent: str | None) -> None:
    env = git_env(gdir, 0)
    blob = git(gdir, "hash-object", "-w", str(file), env=env).decode().strip()
    git(gdir, "update-index", "--add", "--cacheinfo", f"100644,{blob},{PATH}", env=env)
    tree = git(gdir, "write-tree", env=env).decode().strip()
    args = ["commit-tree", tree, "-m", "v"] + (["-p", parent] if parent else [])
    commit = git(gdir, *args, env=env).decode().strip()
    git(gdir, "update-ref", "refs/heads/main", commit, env=env)


def bench_edit(t: Target, sizes: Sizes, store: Store) -> list[Result]:
    size = sizes.big_file
    mib = size // MIB
    ours_line = Result(
        "8 memory",
        f"stored bytes added by a 1 MiB edit in the middle of a {mib} MiB file",
        t.backend,
        "MiB",
        False,
        "git hash-object -w (loose object / pack above core.bigFileThreshold)",
        notes={"samples": "one run (sizes, not rates)", "target": "< 16 MiB"},
    )
    after_gc = Result(
        "8 memory",
        f"stored bytes added by a 1 MiB edit in a {mib} MiB file, git after `git gc`",
        t.backend,
        "MiB",
        False,
        "git gc (pack growth with the second version)",
        notes={"samples": "one run (sizes, not rates)"},
    )
    v1, v2 = t.workdir / "edit-v1.bin", t.workdir / "edit-v2.bin"
    try:
        write_file(v1, size, seed=11)
        _edit(v1, v2, size)
        repo = store.create_repository("bigedit")
        author = Signature("Bench", "bench@example.com", 0, 0)
        with v1.open("rb") as f:
            repo.commit("main", {PATH: f}, message="v1\n", author=author)
        before = _stored(store, "bigedit")
        with v2.open("rb") as f:
            repo.commit("main", {PATH: f}, message="v2\n", author=author)
        added = (_stored(store, "bigedit") - before) / MIB
        ours_line.check = repo.verify().ok
        gdir = t.workdir / "edit-git"
        git(Path("/"), "init", "-q", str(gdir), env=git_env(gdir))
        env = git_env(gdir)
        run = {"cwd": gdir, "env": env, "check": True, "stdout": subprocess.DEVNULL}
        subprocess.run(["git", "hash-object", "-w", str(v1)], **run)  # type: ignore[call-overload]
        loose_before = _objects_bytes(gdir)
        subprocess.run(["git", "hash-object", "-w", str(v2)], **run)  # type: ignore[call-overload]
        loose_added = (_objects_bytes(gdir) - loose_before) / MIB
        ours_line.ours, ours_line.theirs = Stats.of([added]), Stats.of([loose_added])
        # After gc: each version committed (so gc keeps it), `git gc` after the first and
        # after the second.
        g1 = t.workdir / "edit-git-gc"
        git(Path("/"), "init", "-q", "-b", "main", str(g1), env=git_env(g1))
        _git_commit(g1, v1, None)
        git(g1, "gc", "-q", env=git_env(g1))
        packed_before = _objects_bytes(g1)
        _git_commit(g1, v2, "HEAD")
        git(g1, "gc", "-q", env=git_env(g1))
        packed_added = (_objects_bytes(g1) - packed_before) / MIB
        after_gc.ours, after_gc.theirs = Stats.of([added]), Stats.of([packed_added])
        after_gc.notes["git"] = (
            "`git gc` after committing each version; git skips delta compression for "
            f"files above core.bigFileThreshold (512 MiB), this one is {mib} MiB"
        )
    except Exception as exc:
        for line in (ours_line, after_gc):
            if line.ours is None:
                line.status, line.reason = FAILED, f"{type(exc).__name__}: {exc}"[:160]
    finally:
        v1.unlink(missing_ok=True)
        v2.unlink(missing_ok=True)
    return [ours_line, after_gc]
