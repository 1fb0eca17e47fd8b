"""Commits of several processes to one branch (``govc-db serve --workers N``): each
process groups its own commits (govc_db.db.branchlocks) and, with
``Settings.commit_row_lock``, locks the branch's row first, so the processes take turns
in the database. Every commit lands, the history stays linear, and with the row lock no
process loses a compare-and-swap it speculated on. Both backends."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import govc_db
from govc_db import Settings, Signature

SIG = Signature("Writer", "writer@example.com", 1_700_000_000, 0)
ROOT = Path(__file__).resolve().parents[1]
PROCESSES = 2
THREADS = 4
EACH = 12

# One writer process: THREADS threads commit EACH files each to ``main`` once ``go``
# exists, then print the commit ids and the Store's counters as JSON.
_WRITER = """
import json, os, sys, threading, time
import govc_db
from govc_db import Settings, Signature

url, name, go, row_lock, threads, each = sys.argv[1:7]
sig = Signature("Writer", "writer@example.com", 1_700_000_000, 0)
store = govc_db.open(url, Settings(commit_row_lock=row_lock == "1", commit_rebase_attempts=1000))
store.branch_locks.wait = 60.0  # nobody gives up waiting for the process's lock
repo = store.repository("multi")
oids = []
errors = []

def write(t):
    for i in range(int(each)):
        path = f"w/{name}-{t}-{i}.txt"
        try:
            oids.append(repo.commit("main", {path: path.encode()}, message=path, author=sig))
        except Exception as exc:
            errors.append(repr(exc))

workers = [threading.Thread(target=write, args=(t,)) for t in range(int(threads))]
deadline = time.monotonic() + 60
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.002)
for w in workers:
    w.start()
for w in workers:
    w.join()
print(json.dumps({"oids": oids, "errors": errors, "metrics": store.metrics()}, default=str))
store.close()
"""


def _run_writers(url: str, tmp_path: Path, row_lock: bool) -> list[dict[str, object]]:
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    lock = "1" if row_lock else "0"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, url, f"p{n}", str(go), lock, str(THREADS), str(EACH)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(PROCESSES)
    ]
    time.sleep(0.5)  # both processes opened their Store (the rest waits for ``go``)
    go.write_text("")
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


@pytest.mark.parametrize("row_lock", [True, False], ids=["row_lock", "cas_only"])
def test_commits_of_two_processes_all_land(db_url: str, tmp_path: Path, row_lock: bool) -> None:
    """Two processes of four threads each commit to ``main`` at once: every commit is on
    the branch, once, each the parent of the next (linear, one move per commit in the
    reflog); with the row lock, no speculation of either process failed (a loser waited
    in the database instead of redoing its commit)."""
    with govc_db.open(db_url) as store:
        store.upgrade()
        repo = store.create_repository("multi")
        root = repo.commit("main", {"base.txt": b"0\n"}, message="root\n", author=SIG)
    results = _run_writers(db_url, tmp_path, row_lock)
    for r in results:
        assert r["errors"] == []
    oids = [oid for r in results for oid in r["oids"]]  # type: ignore[attr-defined]
    total = PROCESSES * THREADS * EACH
    assert len(oids) == total and len(set(oids)) == total
    with govc_db.open(db_url) as store:
        repo = store.repository("multi")
        history = list(repo.log("main"))
        assert [c.oid for c in history][-1] == root
        assert len(history) == total + 1
        assert {c.oid for c in history[:-1]} == set(oids)
        for newer, older in itertools.pairwise(history):
            assert newer.parents == [older.oid]  # linear: each the parent of the next
        files = {f.path for f in repo.walk("main")}
        assert len(files) == total + 1  # every commit's file is in the tree
        moves = repo.reflog("main")
        assert len(moves) == total + 1
        for newer_move, older_move in itertools.pairwise(moves):
            assert newer_move.old == older_move.new  # no move was lost or overwritten
    if row_lock:
        for r in results:
            metrics = r["metrics"]
            assert isinstance(metrics, dict)
            assert metrics["pipeline"]["fallbacks_expectation"] == 0


def test_row_lock_reads_the_head_another_process_left(db_url: str) -> None:
    """A Store whose remembered head is stale (another Store moved the branch since)
    builds on the head it reads with the row lock: its commit's parent is the other's
    commit, and its speculation does not fail."""
    with (
        govc_db.open(db_url) as first,
        govc_db.open(db_url, Settings(commit_row_lock=True)) as second,
    ):
        first.upgrade()
        repo1 = first.create_repository("stale")
        repo1.commit("main", {"a.txt": b"a\n"}, message="a\n", author=SIG)
        repo2 = second.repository("stale")
        mine = repo2.commit("main", {"b.txt": b"b\n"}, message="b\n", author=SIG)
        theirs = repo1.commit("main", {"c.txt": b"c\n"}, message="c\n", author=SIG)
        # ``second`` remembers ``mine`` as the head; the branch is at ``theirs``.
        newest = repo2.commit("main", {"d.txt": b"d\n"}, message="d\n", author=SIG)
        assert repo2.get_commit(newest).parents == [theirs]
        assert repo2.get_commit(theirs).parents == [mine]
        assert second.metrics()["pipeline"]["fallbacks_expectation"] == 0
