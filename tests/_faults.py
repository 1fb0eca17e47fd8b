"""Helpers of the fault suite: a PgBouncer started from the local binary on a free
loopback port, a throwaway PostgreSQL cluster, and the checks every fault test ends with.

PgBouncer refuses to run as root, so when the tests run as root it runs as the same
unprivileged user as the throwaway clusters of ``tests/pg.py``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pg
import pytest
from sqlalchemy.engine import URL, make_url

from govc_db import Repository, Signature
from govc_db.errors import GovcError, NotFound

__all__ = [
    "SIG",
    "Outcome",
    "PgBouncer",
    "find_pgbouncer",
    "need_pgbouncer",
    "run_workload",
    "worker",
]

SIG = Signature("Fault Injector", "faults@example.com", 1_700_000_000, 0)


def find_pgbouncer() -> str | None:
    """The pgbouncer executable, if installed."""
    found = shutil.which("pgbouncer")
    if found is None and os.access("/usr/sbin/pgbouncer", os.X_OK):
        found = "/usr/sbin/pgbouncer"
    return found


def need_pgbouncer() -> str:
    """The pgbouncer executable; fails under CI, skips elsewhere, when it is missing."""
    found = find_pgbouncer()
    if found is None:
        message = "pgbouncer is needed for this test (apt-get install pgbouncer)"
        if pg.in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return found


def _wait_port(port: int, proc: subprocess.Popen[Any], log: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)  # polling a process we started; nothing is asserted on time
    text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise RuntimeError(f"pgbouncer did not start; log:\n{text}")


class PgBouncer:
    """One pgbouncer process in front of the database of ``target`` (a PostgreSQL URL).

    ``settings`` are extra ``[pgbouncer]`` lines; by default PgBouncer's own defaults in
    transaction pooling mode, which is what an operator gets from a stock config with
    ``pool_mode = transaction``.
    """

    def __init__(self, binary: str, target: str, **settings: str | int) -> None:
        self.binary = binary
        self.target = make_url(target)
        self.settings: dict[str, str | int] = {"pool_mode": "transaction", **settings}
        self.user = pg._unprivileged_user() if os.geteuid() == 0 else None
        self.root = Path(tempfile.mkdtemp(prefix="govc-pgb-", dir="/tmp"))
        self.log = self.root / "pgbouncer.log"
        self.port = 0
        self.proc: subprocess.Popen[Any] | None = None

    def url(self) -> str:
        """The URL of the database through this pgbouncer."""
        url: URL = self.target.set(host="127.0.0.1", port=self.port)
        return url.render_as_string(hide_password=False)

    def start(self) -> str:
        t = self.target
        db = t.database or "postgres"
        self.port = pg._free_port()
        conninfo = f"host={t.host or '127.0.0.1'} port={t.port or 5432} dbname={db}"
        if t.username:
            conninfo += f" user={t.username}"
        if t.password:
            conninfo += f" password={t.password}"
        lines = [
            "[databases]",
            f"{db} = {conninfo}",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            "unix_socket_dir =",
            "auth_type = any",
            f"logfile = {self.log}",
            "ignore_startup_parameters = extra_float_digits",
        ]
        lines += [f"{k} = {v}" for k, v in self.settings.items()]
        ini = self.root / "pgbouncer.ini"
        ini.write_text("\n".join(lines) + "\n")
        kwargs: dict[str, Any] = {}
        if self.user is not None:
            for p in (self.root, ini):
                os.chown(p, self.user.pw_uid, self.user.pw_gid)
            kwargs.update(user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[])
        self.proc = subprocess.Popen(
            [self.binary, str(ini)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **kwargs,
        )
        _wait_port(self.port, self.proc, self.log)
        return self.url()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        try:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


# -- a workload that records what callers saw ------------------------------------------------


class Outcome:
    """What the callers of a workload saw: acknowledged commits, typed errors, anything else."""

    def __init__(self) -> None:
        self.acked: list[tuple[str, str, str, bytes]] = []  # (branch, oid, path, data)
        self.ack_times: list[float] = []  # monotonic time of each acknowledgement
        self.errors: list[GovcError] = []
        self.wrong: list[str] = []  # wrong answers and untyped exceptions
        self.first_error: float | None = None
        self.last_error: float | None = None
        self.lock = threading.Lock()

    def error(self, exc: GovcError) -> None:
        now = time.monotonic()
        with self.lock:
            self.errors.append(exc)
            self.first_error = now if self.first_error is None else self.first_error
            self.last_error = now

    def error_kinds(self) -> dict[str, int]:
        """Error class name -> count."""
        kinds: dict[str, int] = {}
        for e in self.errors:
            kinds[type(e).__name__] = kinds.get(type(e).__name__, 0) + 1
        return kinds

    def check(self, repo: Repository) -> int:
        """Every acknowledged commit is on its branch with its content; ``verify()`` clean.
        Returns how many acknowledged commits were lost (the tests assert 0)."""
        lost = 0
        by_branch: dict[str, list[tuple[str, str, bytes]]] = {}
        for branch, oid, path, data in self.acked:
            by_branch.setdefault(branch, []).append((oid, path, data))
        for branch, commits in by_branch.items():
            history = {c.oid for c in repo.log(branch)}
            for oid, path, data in commits:
                if oid not in history or repo.read(oid, path) != data:
                    lost += 1
        report = repo.verify()
        assert report.ok, report.problems
        return lost


def worker(
    repo: Repository, branch: str, out: Outcome, stop: threading.Event, *, limit: int = 10_000
) -> None:
    """Commit one new file per step to ``branch`` (written by this worker only), and read
    back what was acknowledged, recording every answer."""
    prev: str | None = None
    seq = 0
    while not stop.is_set() and seq < limit:
        seq += 1
        path, data = f"{branch}/{seq:05d}.txt", f"{branch} {seq}\n".encode()
        try:
            oid = repo.commit(branch, {path: data}, message=f"{seq}\n", author=SIG)
        except GovcError as exc:
            out.error(exc)
            continue
        except BaseException as exc:
            with out.lock:
                out.wrong.append(f"commit raised {type(exc).__name__}: {exc}")
            continue
        with out.lock:
            out.acked.append((branch, oid, path, data))
            out.ack_times.append(time.monotonic())
        try:
            if repo.resolve(branch) != oid:
                out.wrong.append(f"{branch} does not resolve to its acknowledged head")
            if repo.read(branch, path) != data:
                out.wrong.append(f"{branch}:{path} read back wrong")
            if prev is not None and repo.resolve(f"{branch}~1") != prev:
                out.wrong.append(f"{branch}~1 is not the previous acknowledged commit")
            prev = oid
        except GovcError as exc:
            if isinstance(exc, NotFound):  # the commit was acknowledged: it exists
                with out.lock:
                    out.wrong.append(f"NotFound after an acknowledged commit: {exc}")
            else:
                out.error(exc)
            prev = None
        except BaseException as exc:
            with out.lock:
                out.wrong.append(f"read raised {type(exc).__name__}: {exc}")


def run_workload(
    repo: Repository, threads: int, during: Callable[[], None], *, min_steps: int = 5
) -> Outcome:
    """Run ``threads`` workers on branches ``w0``.. while ``during()`` runs, then stop them."""
    out = Outcome()
    stop = threading.Event()
    base = repo.resolve("main")
    names = [f"w{i}" for i in range(threads)]
    for name in names:
        if name not in repo.branches():
            repo.create_branch(name, base)
    pool = [threading.Thread(target=worker, args=(repo, name, out, stop)) for name in names]
    for t in pool:
        t.start()
    try:
        deadline = time.monotonic() + 30
        while len(out.acked) < min_steps and time.monotonic() < deadline:
            time.sleep(0.01)  # let the workload get going before the fault
        during()
        mark = len(out.acked)
        while len(out.acked) < mark + min_steps and time.monotonic() < deadline + 30:
            time.sleep(0.01)  # and prove it continues after it
    finally:
        stop.set()
        for t in pool:
            t.join(60)
    return out
