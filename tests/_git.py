"""Run the real ``git`` command in a throwaway repository with a fixed environment.

Nothing from the user's or the system's git configuration leaks in: ``HOME`` points
at a private directory, ``GIT_CONFIG_NOSYSTEM`` is set and every ``GIT_*`` variable
of the calling environment is dropped, so the ids git prints are reproducible.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

__all__ = ["GIT", "GitError", "GitRepo", "git_available"]

GIT = shutil.which("git")

_FIXED_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
    "LC_ALL": "C",
    "LANG": "C",
    "TZ": "UTC",
    # A commit made without explicit dates must still be deterministic.
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.com",
    "GIT_AUTHOR_DATE": "1700000000 +0000",
    "GIT_COMMITTER_NAME": "Test Committer",
    "GIT_COMMITTER_EMAIL": "committer@example.com",
    "GIT_COMMITTER_DATE": "1700000000 +0000",
}


def git_available() -> bool:
    """True when a ``git`` executable is on ``PATH``."""
    return GIT is not None


class GitError(AssertionError):
    """``git`` exited non-zero; the message carries its stderr."""

    def __init__(self, args: list[str], returncode: int, stderr: bytes) -> None:
        super().__init__(
            f"git {' '.join(args)} exited {returncode}: {stderr.decode('utf-8', 'replace')}"
        )
        self.returncode = returncode
        self.stderr = stderr


class GitRepo:
    """A bare-bones repository in ``root`` (created with ``git init -q``)."""

    def __init__(self, root: Path) -> None:
        if GIT is None:
            raise RuntimeError("git is not installed")
        self.git_exe: str = GIT
        self.root = root
        home = root / "_home"
        home.mkdir(parents=True, exist_ok=True)
        self.worktree = root / "repo"
        self.worktree.mkdir(parents=True, exist_ok=True)
        base = {k: v for k, v in os.environ.items() if not k.startswith("GIT_") and k != "EMAIL"}
        base.update(_FIXED_ENV)
        base["HOME"] = str(home)
        base["XDG_CONFIG_HOME"] = str(home / ".config")
        self.env: dict[str, str] = base
        self.run("init", "-q")

    def run_raw(
        self,
        *args: str,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run git and return the completed process whatever its exit status."""
        full_env = dict(self.env)
        if env:
            full_env.update(env)
        return subprocess.run(
            [self.git_exe, *args],
            cwd=self.worktree,
            env=full_env,
            input=input if input is not None else b"",
            capture_output=True,
            check=False,
            timeout=60,
        )

    def run(
        self,
        *args: str,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
    ) -> bytes:
        """Run git, return its stdout; ``GitError`` when it exits non-zero."""
        proc = self.run_raw(*args, input=input, env=env)
        if proc.returncode != 0:
            raise GitError(list(args), proc.returncode, proc.stderr)
        return proc.stdout

    def run_text(self, *args: str, input: bytes | None = None) -> str:
        """Run git and return its stdout decoded and stripped of the final newline."""
        return self.run(*args, input=input).decode("utf-8", "surrogateescape").rstrip("\n")

    def hash_object(self, type_name: str, data: bytes, *, write: bool = True) -> str:
        """``git hash-object -t <type> --stdin [-w]``: the hex id git computes for ``data``."""
        args = ["hash-object", "-t", type_name, "--stdin"]
        if write:
            args.append("-w")
        return self.run_text(*args, input=data)

    def cat_file(self, type_name: str, oid: str) -> bytes:
        """Raw content of object ``oid`` (``git cat-file <type> <id>``)."""
        return self.run("cat-file", type_name, oid)

    def object_type(self, oid: str) -> str:
        """``git cat-file -t``."""
        return self.run_text("cat-file", "-t", oid)

    def mktree(self, entries: list[tuple[str, str, str, bytes]]) -> str:
        """``git mktree -z`` from ``(mode, type, hex id, name)`` rows, in any order."""
        body = b"".join(
            f"{mode} {kind} {oid}\t".encode("ascii") + name + b"\0"
            for mode, kind, oid, name in entries
        )
        return self.run_text("mktree", "-z", "--missing", input=body)

    def fsck(self) -> None:
        """``git fsck --strict --no-dangling``; raises ``GitError`` on any problem."""
        self.run("fsck", "--strict", "--no-dangling", "--no-progress")
