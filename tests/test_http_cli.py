"""``govc-db token create`` and ``govc-db serve`` as real processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from _http_server import free_port

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

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "govc_db", "serve", "--url", url, "--port", str(port),
         "--workers", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "serve did not come up"
            time.sleep(0.2)
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
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "POST /api/v1/repos/demo/commits 201" in err
    assert token not in err and token.split("_", 2)[2] not in err


def test_serve_refuses_an_uninitialized_database(tmp_path: Path) -> None:
    r = govc("serve", "--url", f"sqlite:///{tmp_path / 'none.db'}", "--port", "1")
    assert r.returncode == 1 and r.stderr.startswith("error:")
