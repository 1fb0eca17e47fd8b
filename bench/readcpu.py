"""Where the CPU of reading a large blob back goes, on PostgreSQL, beside ``git cat-file``.

``python -m bench.readcpu [--mib 1024] [--passes 3] [--pg-url URL]`` commits a
pseudo-random file of that size (streamed, as workload 8 does) into a throwaway database
and ``git hash-object -w``\\s it into a fresh repository (git's default
``core.bigFileThreshold``), then per pass prints, as one line each:

* ours: ``repo.open()`` read to nowhere in 1 MiB ``readinto`` calls, as workload 8 times
  it: wall time, this process's CPU (every thread) and the CPU of the server backends of
  the throwaway database (``/proc/<pid>/stat``: only when the server runs on this machine);
* the server alone: one ``COPY (SELECT data FROM govc_chunks ...) TO '/dev/null'`` (needs
  the right to write server files): reading every chunk out of TOAST, nothing sent;
* git: ``git cat-file blob`` into /dev/null, wall time and CPU.

Wall times on a shared machine follow its load (printed with each line); the CPU figures
are what each side costs whatever the load, so they say which side a read waits for.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import make_url

from bench.memory import write_file
from bench.peers import git, git_env
from bench.suite import libpq
from govc_db import Signature

MIB = 1024 * 1024
PATH = "data/big.bin"
TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pids: list[int]) -> float | None:
    """User + system seconds of ``pids`` so far; None when one is not visible here."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        total += int(fields[11]) + int(fields[12])
    return total / TICK


def _load() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def _ms(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds * 1000:,.0f} ms"


def run(admin_url: str, mib: int, passes: int) -> None:
    import psycopg
    from psycopg import sql

    import govc_db

    name = f"govc_readcpu_{secrets.token_hex(4)}"
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    size = mib * MIB
    with psycopg.connect(libpq(admin_url), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        with tempfile.TemporaryDirectory(prefix="govc-readcpu-") as tmp:
            work = Path(tmp)
            data = work / "big.bin"
            blob, _ = write_file(data, size)
            gdir = work / "git"
            git(Path("/"), "init", "-q", str(gdir), env=git_env(gdir))
            git(gdir, "hash-object", "-w", str(data), env=git_env(gdir))
            with govc_db.open(url) as store:
                store.upgrade()
                repo = store.create_repository("big")
                with data.open("rb") as f:
                    author = Signature("Bench", "bench@example.com", 0, 0)
                    repo.commit("main", {PATH: f}, message="big\n", author=author)
                data.unlink()
                buf = bytearray(MIB)

                def ours() -> None:
                    with repo.open("main", PATH) as f:
                        while f.readinto(buf):  # type: ignore[attr-defined]
                            pass

                ours()  # the pool's connections exist from here on
                with psycopg.connect(libpq(admin_url), autocommit=True) as mon:
                    pids = [
                        int(r[0])
                        for r in mon.execute(
                            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (name,)
                        )
                    ]
                with psycopg.connect(libpq(url), autocommit=True) as alone:
                    (alone_pid,) = alone.execute("SELECT pg_backend_pid()").fetchone() or (0,)
                    print(f"{mib} MiB blob, {passes} passes; server backends of ours: {len(pids)}")
                    for _ in range(passes):
                        _pass(ours, pids, alone, alone_pid, gdir, blob, size)
    finally:
        with psycopg.connect(libpq(admin_url), autocommit=True) as conn:
            stmt = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            conn.execute(stmt.format(sql.Identifier(name)))


def _pass(
    ours: Callable[[], None],
    pids: list[int],
    alone: Any,
    alone_pid: int,
    gdir: Path,
    blob: str,
    size: int,
) -> None:
    mb = size / 1e6
    server0 = _proc_cpu(pids)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    ours()
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    server1 = _proc_cpu(pids)
    server = None if server0 is None or server1 is None else server1 - server0
    print(
        f"load {_load():>5}  ours  wall {_ms(wall):>9} ({mb / wall:,.0f} MB/s)  "
        f"process cpu {_ms(cpu)}  server cpu {_ms(server)}"
    )
    before = _proc_cpu([alone_pid])
    wall0 = time.perf_counter()
    try:
        alone.execute("COPY (SELECT data FROM govc_chunks) TO '/dev/null' (FORMAT BINARY)")
    except Exception as exc:  # no right to write server files: the line says so
        print(f"load {_load():>5}  server alone: not measured ({type(exc).__name__})")
    else:
        wall = time.perf_counter() - wall0
        after = _proc_cpu([alone_pid])
        used = None if before is None or after is None else after - before
        print(
            f"load {_load():>5}  server alone (TOAST to /dev/null)  wall {_ms(wall):>9}  "
            f"cpu {_ms(used)}"
        )
    t0 = os.times()
    wall0 = time.perf_counter()
    subprocess.run(
        ["git", "cat-file", "blob", blob],
        cwd=gdir,
        env=git_env(gdir),
        stdout=subprocess.DEVNULL,
        check=True,
    )
    wall = time.perf_counter() - wall0
    t1 = os.times()
    used = t1.children_user + t1.children_system - t0.children_user - t0.children_system
    print(f"load {_load():>5}  git   wall {_ms(wall):>9} ({mb / wall:,.0f} MB/s)  cpu {_ms(used)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.readcpu", description=__doc__)
    p.add_argument("--mib", type=int, default=1024, help="file size in MiB (default 1024)")
    p.add_argument("--passes", type=int, default=3, help="passes (default 3)")
    p.add_argument(
        "--pg-url",
        default=os.environ.get(
            "GOVC_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        ),
        help="server to create the throwaway database on",
    )
    args = p.parse_args(argv)
    run(args.pg_url, args.mib, args.passes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
