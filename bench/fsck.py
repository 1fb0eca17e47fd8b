"""``python -m bench.fsck [--quick] [--pg-url URL]``: ``verify`` against ``git fsck``.

The demo history (:func:`govc_db.demo.run_demo`) is written into a fresh database, then
exported object for object into a bare git repository, so both sides check exactly the
same objects. Measured, best of ``--repeat``:

* ours in process: ``repo.verify()`` (hash of every object, links, refs, commit index
  with every commit's changed paths recomputed);
* ours from the shell: ``govc-db verify REPO`` (interpreter start-up included);
* git: ``git fsck --full --strict --no-dangling`` on the loose objects as exported, and
  again after ``git repack -adq`` (git's usual packed state).

Ratios are ours / git: below 1 means ours is faster.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import govc_db
from bench.peers import git_env
from govc_db.db.provision import ensure_database
from govc_db.demo import run_demo
from govc_db.objects.ids import object_header

__all__ = ["export", "main", "measure"]

QUICK = (150, 400)
FULL = (600, 1500)


def export(repo: govc_db.Repository, dest: Path) -> int:
    """Every object and ref of ``repo`` as loose objects and refs of a bare repository."""
    subprocess.run(["git", "init", "-q", "--bare", str(dest)], check=True, env=git_env(dest))
    count = 0
    backend = repo._store.backend
    with backend.unit(repo._id) as unit:
        ids = [oid for oid, _ in unit.objects.iter_ids()]
        for start in range(0, len(ids), 1000):
            for oid, obj in unit.objects.get_many(ids[start : start + 1000]).items():
                h = oid.hex()
                path = dest / "objects" / h[:2] / h[2:]
                path.parent.mkdir(exist_ok=True)
                path.write_bytes(zlib.compress(object_header(obj.type, len(obj.data)) + obj.data))
                count += 1
        refs = unit.refs.list_refs("refs/")
    for name, target in refs.items():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).write_text(target.hex() + "\n")
    (dest / "HEAD").write_text(f"ref: refs/heads/{repo.default_branch}\n")
    return count


def measure(fn: Callable[[], object], repeat: int) -> float:
    """Best wall time of ``repeat`` runs, in seconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def _run(*cmd: str, env: dict[str, str] | None = None) -> None:
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def bench_backend(url: str, work: Path, commits: int, files: int, repeat: int) -> list[str]:
    """The table rows of one database."""
    created = ensure_database(url)  # a PostgreSQL database named by --pg-url may be new
    with govc_db.open(url) as store:
        store.upgrade()
        summary = run_demo(store, commits=commits, files=files, name="fsck", replace=True)
        repo = store.repository(summary.repository)
        dest = work / f"fsck-{store.dialect}.git"
        objects = export(repo, dest)
        report = repo.verify()
        assert report.ok and report.objects_checked == objects, report.problems[:3]
        ours = measure(repo.verify, repeat)
        dialect = store.dialect
    env = {**os.environ, "GOVC_DB_URL": url, "PYTHONPATH": os.pathsep.join(sys.path)}
    cli = [sys.executable, "-m", "govc_db", "verify", "fsck"]
    ours_cli = measure(lambda: _run(*cli, env=env), repeat)
    fsck = ["git", "-C", str(dest), "fsck", "--full", "--strict", "--no-dangling"]
    genv = git_env(dest)
    loose = measure(lambda: _run(*fsck, env=genv), repeat)
    _run("git", "-C", str(dest), "repack", "-adq", env=genv)
    packed = measure(lambda: _run(*fsck, env=genv), repeat)
    if not created:  # leave an existing database as it was
        with govc_db.open(url) as store:
            store.delete_repository(summary.repository)
    rows = [
        f"{dialect}: {objects} objects ({commits} commits, {files} files), best of {repeat}",
        f"  ours repo.verify()           {ours * 1000:8.0f} ms",
        f"  ours govc-db verify (shell)  {ours_cli * 1000:8.0f} ms",
        f"  git fsck (loose objects)     {loose * 1000:8.0f} ms",
        f"  git fsck (packed)            {packed * 1000:8.0f} ms",
        f"  ratio verify / fsck loose    {ours / loose:8.2f}",
        f"  ratio verify / fsck packed   {ours / packed:8.2f}",
        f"  ratio shell / fsck packed    {ours_cli / packed:8.2f}",
    ]
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print one table per backend."""
    p = argparse.ArgumentParser(prog="python -m bench.fsck", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help=f"{QUICK[0]} commits, {QUICK[1]} files")
    p.add_argument(
        "--pg-url",
        default=None,
        help="also measure on this PostgreSQL database (created if missing, left in place)",
    )
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    commits, files = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="govc-fsck-") as tmp:
        work = Path(tmp)
        urls = [f"sqlite:///{work / 'govc.db'}"] + ([args.pg_url] if args.pg_url else [])
        for url in urls:
            for row in bench_backend(url, work, commits, files, args.repeat):
                print(row)
    print(f"(load average {statistics.mean(os.getloadavg()):.2f} on {os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
