"""``python -m bench.interop [--history N] [--push N] [--repeats R] [--backend sqlite|postgres]``:
git interop side by side with git itself, on the bench's synthetic history (a 1,001-file
root, then one file per commit; ``--history 10000`` is the 10,001-commit history).

* **import**: ``store.import_git`` of a bare repository made by ``git fast-import``, vs
  ``git fast-import`` fed the same history (its stream prepared before the clock starts),
  commits/s. Each repeat imports into a new repository.
* **clone**: ``git clone`` from our smart-HTTP app (uvicorn, loopback) vs ``git clone
  --no-local`` of git's own bare copy; seconds, and the size of the pack received. Three
  ways: *no kept pack* (a server with ``clone_pack_cache_bytes=0``: every clone builds
  its pack, the cold cost), *first* and *again* (the first clone of a server builds its
  pack and keeps it, the next ones send it), and *after new commits* (once the fetch
  step moved the tip: the kept pack plus the objects since).
* **fetch**: ``git fetch`` of one new commit into an up-to-date clone, both sides.
* **push**: ``git push`` of ``--push`` new commits to our server vs to a bare copy over
  ``file://``.

Ratios are ours / git's for times and sizes (lower is better) and ours / git's for
commits/s (higher is better). The machine may be shared: read ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

import govc_db
from bench.harness import QUICK, T0
from bench.history import _fast_import, _history_commits, fast_import_stream
from bench.peers import AUTHOR_EMAIL, AUTHOR_NAME, git, git_env
from govc_db import Signature, Store
from govc_db.interop.packcache import PackCache
from govc_db.interop.smart_http import make_git_app

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@contextmanager
def serving(store: Store, cache: PackCache | None = None) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = uvicorn.Server(
        uvicorn.Config(
            make_git_app(store, allow_push=True, pack_cache=cache),
            host="127.0.0.1",
            port=port,
            log_level="error",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def timed(fn: Callable[..., Any], *args: Any) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def pack_bytes(git_dir: Path) -> int:
    return sum(p.stat().st_size for p in (git_dir / "objects" / "pack").glob("*.pack"))


def push_stream(first: int, count: int) -> bytes:
    """``count`` one-file commits on top of ``refs/heads/main``, for fast-import."""
    ident = f"{AUTHOR_NAME} <{AUTHOR_EMAIL}>".encode()
    out = [b"commit refs/heads/main\n"]
    for k in range(first, first + count):
        if k != first:
            out.append(b"commit refs/heads/main\n")
        out.append(b"author %s %d +0000\ncommitter %s %d +0000\n" % (ident, T0 + k, ident, T0 + k))
        msg = b"pushed %d\n" % k
        out.append(b"data %d\n%s" % (len(msg), msg))
        if k == first:
            out.append(b"from refs/heads/main^0\n")
        data = b"pushed content %d\n" % k
        path = b"pushed/f%04d.txt" % (k % 500)
        out.append(b"M 100644 inline %s\ndata %d\n%s\n" % (path, len(data), data))
    out.append(b"done\n")
    return b"".join(out)


PARTS = ("import", "clone", "fetch", "push")


def run(
    store: Store,
    work: Path,
    history: int,
    push: int,
    repeats: int,
    parts: tuple[str, ...] = PARTS,
) -> list[dict[str, Any]]:
    sizes = dataclasses.replace(QUICK, history=history)
    stream = fast_import_stream(_history_commits(sizes))
    n_commits = history + 1
    rows: list[dict[str, Any]] = []

    peer_import = [
        _fast_import(work / f"peer{i}.git", stream)
        for i in range(repeats if "import" in parts else 1)
    ]
    bare = work / "peer0.git"
    ours_import = []
    for i in range(repeats if "import" in parts else 1):
        ours_import.append(timed(store.import_git, f"imp{i}", bare))
    if "import" in parts:
        rows.append(
            {
                "workload": f"import {n_commits} commits (commits/s)",
                "ours": n_commits / statistics.median(ours_import),
                "git": n_commits / statistics.median(peer_import),
                "higher_is_better": True,
            }
        )

    if "clone" in parts:
        # Every clone builds its pack (no kept pack: what a first clone costs).
        with serving(store, PackCache(0)) as base:
            url = f"{base}/imp0.git"
            cold, peer_cold = [], []
            for i in range(repeats):
                cold.append(timed(git, work, "clone", "-q", "--bare", url, str(work / f"cold{i}")))
                dest = work / f"pcold{i}"
                peer_cold.append(
                    timed(git, work, "clone", "-q", "--bare", "--no-local", str(bare), str(dest))
                )
            rows.append(
                {
                    "workload": f"clone {n_commits} commits, no kept pack (s)",
                    "ours": statistics.median(cold),
                    "git": statistics.median(peer_cold),
                }
            )

    with serving(store) as base:
        url = f"{base}/imp0.git"
        if {"clone", "fetch", "push"} & set(parts):
            rows.extend(_serve_parts(store, work, url, bare, n_commits, push, repeats, parts))
    return rows


def _serve_parts(
    store: Store,
    work: Path,
    url: str,
    bare: Path,
    n_commits: int,
    push: int,
    repeats: int,
    parts: tuple[str, ...],
) -> list[dict[str, Any]]:
    """Clone, fetch and push against ``url`` (the clone is made even when only the
    push is asked for: the push targets start from it)."""
    rows: list[dict[str, Any]] = []
    ours_clone, peer_clone, ours_size, peer_size = [], [], 0, 0
    for i in range(repeats if "clone" in parts else 1):
        dest = work / f"oc{i}"
        ours_clone.append(timed(git, work, "clone", "-q", "--bare", url, str(dest)))
        ours_size = pack_bytes(dest)
        dest = work / f"pc{i}"
        peer_clone.append(
            timed(git, work, "clone", "-q", "--bare", "--no-local", str(bare), str(dest))
        )
        peer_size = pack_bytes(dest)
    if "clone" in parts:
        rows.append(
            {
                "workload": f"clone {n_commits} commits, first (s)",
                "ours": ours_clone[0],
                "git": peer_clone[0],
            }
        )
        if repeats > 1:
            rows.append(
                {
                    "workload": f"clone {n_commits} commits, again (s)",
                    "ours": statistics.median(ours_clone[1:]),
                    "git": statistics.median(peer_clone[1:]),
                }
            )
        rows.append(
            {
                "workload": "clone pack size (MB)",
                "ours": ours_size / 1e6,
                "git": peer_size / 1e6,
            }
        )

    # Incremental fetch of one new commit.
    repo = store.repository("imp0")
    sig = Signature(AUTHOR_NAME, AUTHOR_EMAIL, T0 + 10_000_000, 0)
    ours_clone_dir = work / "oc0"
    peer_work = work / "peerwork"
    git(work, "clone", "-q", "--no-local", str(bare), str(peer_work))
    ours_fetch, peer_fetch = [], []
    for i in range(repeats if "fetch" in parts else 0):
        repo.commit("main", {f"fetch/{i}.txt": b"x%d\n" % i}, message=f"f{i}\n", author=sig)
        ours_fetch.append(timed(git, ours_clone_dir, "fetch", "-q", url, "main:main"))
        (peer_work / f"f{i}.txt").write_text(f"x{i}\n")
        git(peer_work, "add", ".", env=git_env(work, T0 + 10_000_000 + i))
        git(peer_work, "commit", "-q", "-m", f"f{i}", env=git_env(work, T0 + 10_000_000 + i))
        git(peer_work, "push", "-q", "origin", "main", env=git_env(work))
        peer_fetch.append(timed(git, work / "pc0", "fetch", "-q", str(bare), "main:main"))
    if "fetch" in parts:
        rows.append(
            {
                "workload": "fetch 1 new commit (ms)",
                "ours": 1000 * statistics.median(ours_fetch),
                "git": 1000 * statistics.median(peer_fetch),
            }
        )

    if "clone" in parts and "fetch" in parts:
        # A clone once the tip has moved: the kept pack, then the commits since.
        t_ours = timed(git, work, "clone", "-q", "--bare", url, str(work / "moved"))
        moved_size = pack_bytes(work / "moved")
        dest = work / "pmoved"
        t_git = timed(git, work, "clone", "-q", "--bare", "--no-local", str(bare), str(dest))
        rows.append(
            {"workload": f"clone after {repeats} new commits (s)", "ours": t_ours, "git": t_git}
        )
        rows.append(
            {
                "workload": "  its pack size (MB)",
                "ours": moved_size / 1e6,
                "git": pack_bytes(dest) / 1e6,
            }
        )

    # Push of `push` new commits: ours over HTTP, git's over file://.
    ours_push, peer_push = [], []
    for i in range(repeats if "push" in parts else 0):
        client = work / f"push{i}"
        git(work, "clone", "-q", url, str(client))
        git(
            client,
            "fast-import",
            "--quiet",
            "--done",
            input=push_stream(20_000 * (i + 1), push),
        )
        target = work / f"target{i}.git"
        git(work, "clone", "-q", "--bare", "--no-local", str(work / "oc0"), str(target))
        ours_push.append(timed(git, client, "push", "-q", url, "main"))
        peer_push.append(timed(git, client, "push", "-q", f"file://{target}", "main"))
        url_repo = store.repository("imp0")
        assert url_repo.resolve("main") == git(client, "rev-parse", "main").decode().strip()
    if "push" in parts:
        rows.append(
            {
                "workload": f"push {push} commits (s)",
                "ours": statistics.median(ours_push),
                "git": statistics.median(peer_push),
            }
        )
    return rows


def report(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'workload':40} {'ours':>10} {'git':>10} {'ratio':>8}"]
    for r in rows:
        ratio = r["ours"] / r["git"] if r["git"] else float("nan")
        hint = "higher is better" if r.get("higher_is_better") else "lower is better"
        lines.append(
            f"{r['workload']:40} {r['ours']:10.3f} {r['git']:10.3f} {ratio:8.2f}  ({hint})"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.interop", description=__doc__.split("\n")[0])
    p.add_argument("--history", type=int, default=10_000, help="commits after the root")
    p.add_argument("--push", type=int, default=1_000, help="commits per push")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--pg-url", default=os.environ.get("GOVC_DB_BENCH_PG_URL", DEFAULT_PG_URL))
    p.add_argument("--quick", action="store_true", help="--history 1000 --push 200 --repeats 2")
    p.add_argument(
        "--only",
        action="append",
        choices=PARTS,
        help="run only these parts (repeatable; default: all). The history is imported "
        "(once) and cloned whatever is asked: the other parts start from them.",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.history, args.push, args.repeats = 1000, 200, 2
    work = Path(tempfile.mkdtemp(prefix="govc-bench-interop-"))
    load_before = os.getloadavg()
    try:
        if args.backend == "sqlite":
            url = f"sqlite:///{work / 'bench.sqlite'}"
            rows = _with_store(url, work, args)
        else:
            from bench.bulk import throwaway_database

            with throwaway_database(args.pg_url) as url:
                rows = _with_store(url, work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"backend: {args.backend}, history {args.history + 1} commits, push {args.push}")
    load = " ".join(f"{x:.2f}" for x in load_before)
    after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average (1/5/15 min): {load} before, {after} after")
    print(report(rows))
    return 0


def _with_store(url: str, work: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    with govc_db.open(url) as store:
        store.upgrade()
        parts = tuple(args.only) if args.only else PARTS
        return run(store, work, args.history, args.push, args.repeats, parts)


if __name__ == "__main__":
    sys.exit(main())
