"""``govc-db token create`` and ``govc-db serve`` as real processes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from _http_server import serve_process

import govc_db

ROOT = Path(__file__).resolve().parents[1]


def govc(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "govc_db", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_token_create_and_serve_with_workers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'svc.db'}"
    assert govc("--url", url, "init").returncode == 0
    assert govc("--url", url, "repo", "create", "demo").returncode == 0
    made = govc("--url", url, "token", "create", "--repo", "demo", "--write")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert re.fullmatch(r"gvc_\d+_[A-Za-z0-9_-]+", token)
    bad = govc("--url", url, "token", "create", "--repo", "bad name")
    assert bad.returncode == 1 and bad.stderr.startswith("error:")

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with serve_process("--url", url, "--workers", "2", env=env) as served:
        base = served.base
        auth = {"Authorization": f"Bearer {token}"}
        r = httpx.post(
            base + "/api/v1/repos/demo/commits",
            headers=auth,
            json={
                "branch": "main",
                "message": "m\n",
                "author": {"name": "a", "email": "a@b"},
                "changes": {"x.txt": {"content": "eA=="}},
            },
        )
        assert r.status_code == 201, r.text
        for _ in range(6):  # spread over the workers
            got = httpx.get(base + "/api/v1/repos/demo/raw/main/x.txt", headers=auth)
            assert got.content == b"x"
        assert httpx.get(base + "/api/v1/repos/demo/branches").status_code == 401
    err = served.stderr
    assert "POST /api/v1/repos/demo/commits 201" in err
    assert token not in err and token.split("_", 2)[2] not in err


def test_serve_refuses_an_uninitialized_database(tmp_path: Path) -> None:
    r = govc("serve", "--url", f"sqlite:///{tmp_path / 'none.db'}", "--port", "1")
    assert r.returncode == 1 and r.stderr.startswith("error:")


def test_serve_turns_coalescing_and_the_memory_optimizer_on() -> None:
    """What a server wants on (a library leaves both off); each variable still wins."""
    from govc_db.http.cli import server_settings

    assert not govc_db.Settings().coalesce_enabled
    assert not govc_db.Settings().memory_optimizer
    served = server_settings({})
    assert served.coalesce_enabled and served.memory_optimizer
    off = server_settings({"GOVC_DB_COALESCE_ENABLED": "0", "GOVC_DB_MEMORY_OPTIMIZER": "0"})
    assert not off.coalesce_enabled and not off.memory_optimizer
