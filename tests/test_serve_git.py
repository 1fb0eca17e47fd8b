"""One ``govc-db serve`` for the REST API and git's smart HTTP: the real ``git`` client
clones, pushes and is refused by the same token rules as the API, on SQLite and
PostgreSQL, against a real server process on a loopback port."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _http_server import serve_process
from interop_git import git, git_run

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def govc(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "govc_db", *args],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def served(db_url: str) -> Iterator[tuple[str, str, str, str]]:
    """(base URL, database URL, write token, read token) of a running ``govc-db serve``."""
    govc("--url", db_url, "init")
    govc("--url", db_url, "repo", "create", "site")
    write = govc("--url", db_url, "token", "create", "--repo", "site", "--write")
    read = govc("--url", db_url, "token", "create", "--repo", "site")
    with serve_process("--url", db_url, "--allow-push", "--no-access-log", env=ENV) as served:
        yield served.base, db_url, write, read


def _with_token(base: str, token: str) -> str:
    return base.replace("http://", f"http://git:{token}@") + "/site.git"


def test_git_push_and_clone_through_serve_with_tokens(
    served: tuple[str, str, str, str], tmp_path: Path
) -> None:
    base, db_url, write, read = served
    work = tmp_path / "work"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    (work / "index.html").write_bytes(b"<h1>hi</h1>\n")
    git(work, "add", "index.html")
    git(work, "commit", "-q", "-m", "first")
    head = git(work, "rev-parse", "HEAD").strip()

    # No token, and a read token: the push is refused and nothing moves.
    anonymous = git_run(work, "push", base + "/site.git", "main")
    assert anonymous.returncode != 0
    reader = git_run(work, "push", _with_token(base, read), "main")
    assert reader.returncode != 0
    assert b"403" in reader.stderr
    assert govc("--url", db_url, "branch", "list", "site") == ""

    pushed = git_run(work, "push", _with_token(base, write), "main")
    assert pushed.returncode == 0, pushed.stderr.decode()
    assert govc("--url", db_url, "branch", "list", "site") == f"* main {head}"

    # The REST API of the same server sees the pushed commit at once.
    raw = httpx.get(
        base + "/api/v1/repos/site/raw/main/index.html",
        headers={"Authorization": f"Bearer {read}"},
    )
    assert raw.status_code == 200 and raw.content == b"<h1>hi</h1>\n"
    assert raw.headers["etag"] == '"' + git(work, "rev-parse", "HEAD:index.html").strip() + '"'

    # Reads need a token too (the server was not started with --public-read).
    assert git_run(tmp_path, "clone", "-q", base + "/site.git", "anon").returncode != 0
    git(tmp_path, "clone", "-q", _with_token(base, read), "copy")
    assert git(tmp_path / "copy", "rev-parse", "HEAD").strip() == head
    assert (tmp_path / "copy" / "index.html").read_bytes() == b"<h1>hi</h1>\n"
    git(tmp_path / "copy", "fsck", "--strict")
