"""One run of the suite: the backends' targets, the workloads, the JSON payload.

PostgreSQL runs in throwaway databases (``govc_bench_<random>`` for ours and
``govc_bench_<random>_raw`` for the raw-driver peer) created on the server of ``--pg-url``
and dropped at the end, whatever happens; existing databases are never written. SQLite
files, git and dulwich repositories live in a temporary directory.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from sqlalchemy.engine import make_url

import govc_db
from bench.harness import Sizes, Target
from bench.peers import RawPostgres, RawSql, RawSqlite
from bench.report import Result, machine_info, to_json
from bench.workloads import run_backend
from govc_db import Settings
from govc_db.store.codec import Codec

__all__ = ["DEFAULT_PG_URL", "Run", "bench_settings", "libpq", "pg_server_info", "run_suite"]

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def libpq(url: str) -> str:
    """A SQLAlchemy URL as a libpq connection string for psycopg."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _codec(settings: Settings) -> Codec:
    """The codec our Store uses, so the raw peer stores identical rows."""
    return Codec.from_settings(settings)


def _migrator(url: str, settings: Settings) -> Callable[[], None]:
    """Migrate ``url`` to head on the first call only."""
    done: list[bool] = []

    def migrate() -> None:
        if not done:
            with govc_db.open(url, settings=settings) as store:
                store.upgrade()
            done.append(True)

    return migrate


def pg_server_info(admin_url: str) -> dict[str, str]:
    """Server version and the durability settings that shape commit rates."""
    import psycopg

    with psycopg.connect(libpq(admin_url), autocommit=True) as conn:
        out: dict[str, str] = {}
        for key in ("server_version", "synchronous_commit", "fsync", "shared_buffers"):
            row = conn.execute(f"SHOW {key}").fetchone()
            out["version" if key == "server_version" else key] = str(row[0]) if row else "?"
        return out


@contextmanager
def postgres_target(
    admin_url: str, settings: Settings, workdir: Path, console: Console
) -> Iterator[Target]:
    """Two throwaway databases on the server (ours, raw peer); dropped on the way out."""
    import psycopg
    from psycopg import sql

    base = f"govc_bench_{secrets.token_hex(4)}"
    names = [base, base + "_raw"]
    admin = make_url(admin_url)
    with psycopg.connect(libpq(admin_url), autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    console.log(f"created databases {', '.join(names)}")
    try:
        ours_url = admin.set(database=names[0]).render_as_string(hide_password=False)
        raw_url = admin.set(database=names[1]).render_as_string(hide_password=False)
        migrate = _migrator(raw_url, settings)

        def make_raw(repo: str) -> RawSql:
            migrate()
            return RawPostgres(libpq(raw_url), _codec(settings), repo)

        yield Target(
            "postgresql", ours_url, settings, workdir, make_raw, libpq(raw_url), libpq(ours_url)
        )
    finally:
        with psycopg.connect(libpq(admin_url), autocommit=True) as conn:
            for name in names:
                stmt = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                conn.execute(stmt.format(sql.Identifier(name)))
        console.log(f"dropped databases {', '.join(names)}")


@contextmanager
def sqlite_target(settings: Settings, workdir: Path) -> Iterator[Target]:
    ours_path, raw_path = workdir / "ours.db", workdir / "raw.db"
    migrate = _migrator(f"sqlite:///{raw_path}", settings)

    def make_raw(repo: str) -> RawSql:
        migrate()
        return RawSqlite(raw_path, _codec(settings), repo)

    yield Target(
        "sqlite",
        f"sqlite:///{ours_path}",
        settings,
        workdir,
        make_raw,
        str(raw_path),
        str(ours_path),
    )


def bench_settings(settings: Settings) -> Settings:
    """The settings of every Store the bench process opens: ``settings`` with
    ``memory_optimizer`` on, unless ``GOVC_BENCH_MEMORY_OPTIMIZER=0``.

    The bench process is a long-running process holding large live data (the imported
    histories, the caches), which is what the optimizer is for, and what a service does
    (``govc-db serve`` turns it on); the library's default is off because it tunes the
    whole process's collector. It tunes it for the peers that run in this process too
    (dulwich, the raw drivers), alike. The JSON's ``settings_changed_from_defaults``
    shows it.
    """
    wanted = os.environ.get("GOVC_BENCH_MEMORY_OPTIMIZER", "1") != "0"
    return dataclasses.replace(settings, memory_optimizer=wanted)


def _settings_diff(settings: Settings) -> dict[str, Any]:
    """Settings that differ from the defaults (GOVC_DB_* in the environment)."""
    default = Settings()
    names = [f.name for f in dataclasses.fields(Settings)]
    return {k: getattr(settings, k) for k in names if getattr(settings, k) != getattr(default, k)}


@dataclasses.dataclass(slots=True)
class Run:
    """A finished run: its results and the JSON payload (command, machine, config)."""

    results: list[Result]
    info: dict[str, Any]
    payload: dict[str, Any]


def run_suite(
    *,
    sizes: Sizes,
    mode: str,
    which: Sequence[str],
    backends: Sequence[str],
    pg_url: str,
    command: str,
    progress: Console,
) -> Run:
    """Every chosen workload on every chosen backend, in one process.

    ``RuntimeError`` when PostgreSQL is asked for and cannot be reached.
    """
    settings = bench_settings(Settings.from_env())
    pg_info = None
    if "postgres" in backends:
        try:
            pg_info = pg_server_info(pg_url)
        except Exception as exc:  # say how to fix it instead of a driver traceback
            raise RuntimeError(
                f"cannot reach PostgreSQL at {make_url(pg_url)!r}: {type(exc).__name__}; "
                "pass --pg-url (or GOVC_BENCH_PG_URL), or --backend sqlite"
            ) from exc
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    started = time.monotonic()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="govc_bench_") as tmp:
        for backend in backends:
            workdir = Path(tmp) / backend
            workdir.mkdir()
            target: AbstractContextManager[Target] = (
                postgres_target(pg_url, settings, workdir, progress)
                if backend == "postgres"
                else sqlite_target(settings, workdir)
            )
            with target as t:
                mine = list(run_backend(t, sizes, which, progress.log))
            # Workloads run in the order that keeps the measurements clean; report in
            # the order of their numbers.
            mine.sort(key=lambda r: int(r.workload.split()[0]))
            results += mine
    info = machine_info(pg_info)
    info["load_average_at_start"] = load_at_start
    info["duration_s"] = round(time.monotonic() - started, 1)
    config = {
        "mode": mode,
        "sizes": dataclasses.asdict(sizes),
        "workloads": list(which),
        "backends": list(backends),
        "settings_changed_from_defaults": _settings_diff(settings),
    }
    return Run(results, info, to_json(results, info, command, config))
