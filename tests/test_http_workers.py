"""``govc-db serve --workers 2``: commits posted at once over many connections (spread
over the two server processes) all land on the branch, each the parent of the next, and
every caller gets its own commit. Both backends."""

from __future__ import annotations

import itertools
import os
import threading
from pathlib import Path

import httpx
import pytest
from _http_server import serve_process

import govc_db
from govc_db import Signature
from govc_db.http.auth import create_token

ROOT = Path(__file__).resolve().parents[1]
SIG = Signature("Ada", "ada@example.com", 1_700_000_000, 0)
CLIENTS = 8
EACH = 6


@pytest.mark.slow
def test_commits_through_two_server_processes_all_land(db_url: str) -> None:
    with govc_db.open(db_url) as store:
        store.upgrade()
        root = store.create_repository("demo").commit(
            "main", {"base.txt": b"0\n"}, message="root\n", author=SIG
        )
        token = create_token(store, repository="demo", write=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("GOVC_DB_URL", None)
    oids: list[str] = []
    failures: list[str] = []
    start = threading.Barrier(CLIENTS)

    def client(n: int, base: str) -> None:
        # A client of its own: its own connection, accepted by either process.
        with httpx.Client(base_url=base, timeout=60) as http:
            start.wait()
            for i in range(EACH):
                r = http.post(
                    "/api/v1/repos/demo/commits",
                    headers={"Authorization": f"Bearer {token}"},
                    json={
                        "branch": "main",
                        "message": f"c{n}-{i}\n",
                        "author": {"name": "w", "email": "w@x"},
                        "changes": {f"w/{n}-{i}.txt": {"content": "aGVsbG8K"}},
                    },
                )
                if r.status_code == 201:
                    oids.append(r.json()["oid"])
                else:
                    failures.append(f"{r.status_code} {r.text}")

    with serve_process("--url", db_url, "--workers", "2", env=env) as served:
        threads = [threading.Thread(target=client, args=(n, served.base)) for n in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert failures == []
    total = CLIENTS * EACH
    assert len(oids) == total and len(set(oids)) == total
    with govc_db.open(db_url) as store:
        repo = store.repository("demo")
        history = list(repo.log("main"))
        assert len(history) == total + 1 and history[-1].oid == root
        assert {c.oid for c in history[:-1]} == set(oids)
        for newer, older in itertools.pairwise(history):
            assert newer.parents == [older.oid]
        assert len({f.path for f in repo.walk("main")}) == total + 1
