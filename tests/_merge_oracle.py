"""Test helper: build merge scenarios through the public API and ask the real git.

A scenario is three snapshots (base, ours, theirs) of ``path -> bytes | (bytes, mode)``.
:func:`build_scenario` commits them on branches ``main`` (base), ``ours`` and ``theirs``
of a repository; the repository is exported (``_export``) so that ``git merge-tree
--write-tree ours theirs`` runs on exactly the same commits, and the two results are
compared: tree id, conflicted paths, clean or not.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from _export import export_repository, git_env

from govc_db import File, Repository, Signature, Store

__all__ = [
    "GitMerge",
    "Snapshot",
    "build_scenario",
    "git_merge_tree",
    "git_pick",
    "new_repo",
]

Snapshot = Mapping[str, "bytes | tuple[bytes, int]"]
SIG = Signature("Ada", "ada@example.com", 1_700_000_000, 0)
_TREE_LINE = re.compile(rb"^[0-9a-f]{40}$")
_counter = [0]


@dataclass(frozen=True)
class GitMerge:
    """What ``git merge-tree --write-tree`` printed."""

    tree: str
    conflicted: set[str]
    clean: bool


def new_repo(store: Store) -> Repository:
    """A fresh repository with a unique name in ``store``."""
    _counter[0] += 1
    return store.create_repository(f"m{_counter[0]}")


def _file(value: bytes | tuple[bytes, int]) -> File:
    return File(value) if isinstance(value, bytes) else File(value[0], mode=value[1])


def _changes(old: Snapshot, new: Snapshot) -> dict[str, File | None]:
    out: dict[str, File | None] = {p: None for p in old if p not in new}
    for p, v in new.items():
        f = _file(v)
        if p not in old or _file(old[p]) != f:
            out[p] = f
    return out


def build_scenario(
    repo: Repository, base: Snapshot, ours: Snapshot, theirs: Snapshot, minute: int = 0
) -> None:
    """Commit ``base`` on ``main`` and ``ours``/``theirs`` on branches of those names."""
    at = Signature(SIG.name, SIG.email, SIG.time + 60 * minute, 0)
    repo.commit(
        "main",
        {p: _file(v) for p, v in base.items()} or {},
        message="base\n",
        author=at,
        allow_empty=True,
    )
    for name, snap in (("ours", ours), ("theirs", theirs)):
        repo.create_branch(name, "main")
        repo.commit(name, _changes(base, snap), message=f"{name}\n", author=at, allow_empty=True)


def _git(repo_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    env = git_env(repo_dir)
    env.update(
        GIT_AUTHOR_NAME="A",
        GIT_AUTHOR_EMAIL="a@b",
        GIT_COMMITTER_NAME="A",
        GIT_COMMITTER_EMAIL="a@b",
        GIT_CONFIG_GLOBAL="/dev/null",
    )
    proc = subprocess.run(
        ["git", "-C", str(repo_dir), *args], capture_output=True, env=env, check=False, timeout=120
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)}: {proc.stderr.decode(errors='replace')}")
    return proc


def git_merge_tree(repo: Repository, dest: Path, ours: str, theirs: str) -> GitMerge:
    """Export ``repo`` to ``dest`` and run ``git merge-tree --write-tree ours theirs``."""
    if not dest.exists():
        export_repository(repo, dest)
    proc = _git(dest, "merge-tree", "--write-tree", ours, theirs, check=False)
    lines = proc.stdout.split(b"\n")
    # Exit 1 also means "unknown revision", 128 unrelated histories: insist on a tree id.
    assert proc.returncode in (0, 1) and _TREE_LINE.match(lines[0]), proc.stderr
    conflicted: set[str] = set()
    for line in lines[1:]:
        if not line:
            break
        conflicted.add(line.split(b"\t", 1)[1].decode("utf-8", "surrogateescape"))
    return GitMerge(lines[0].decode(), conflicted, proc.returncode == 0)


def git_pick(
    repo: Repository, dest: Path, branch: str, rev: str, *, revert: bool = False
) -> str | None:
    """``git cherry-pick``/``git revert --no-commit rev`` on ``branch`` in a worktree,
    then ``git write-tree``: the tree id, or None when git stopped on a conflict."""
    if not dest.exists():
        export_repository(repo, dest)
    wt = dest.parent / (dest.name + "-wt")
    if wt.exists():
        _git(dest, "worktree", "remove", "--force", str(wt), check=False)
        shutil.rmtree(wt, ignore_errors=True)
    _git(dest, "worktree", "add", "-q", "--detach", str(wt), branch)
    proc = _git(wt, "revert" if revert else "cherry-pick", "--no-commit", rev, check=False)
    if proc.returncode != 0:
        return None
    return _git(wt, "write-tree").stdout.decode().strip()
