"""``python -m bench [--quick] [--backend sqlite|postgres|all] [--json out.json]``.

PostgreSQL runs in throwaway databases (``govc_bench_<random>`` for ours and
``govc_bench_<random>_raw`` for the raw-driver peer) created on the server of
``--pg-url`` and dropped at the end, whatever happens; existing databases are never
written. SQLite files, git and dulwich repositories live in a temporary directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import secrets
import shlex
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from sqlalchemy.engine import make_url

import govc_db
from bench.peers import RawPostgres, RawSql, RawSqlite
from bench.report import Result, machine_info, render, to_json, to_markdown, write_json
from bench.workloads import FULL, QUICK, WORKLOADS, Sizes, Target, run_backend
from govc_db import Settings
from govc_db.store.codec import Codec

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _libpq(url: str) -> str:
    """A SQLAlchemy URL as a libpq connection string for psycopg."""
    u = make_url(url).set(drivername="postgresql")
    return u.render_as_string(hide_password=False)


def _codec(settings: Settings) -> Codec:
    """The codec our Store uses, so the raw peer stores identical rows."""
    return Codec(
        method=settings.compression,
        level=settings.compression_level,
        min_size=settings.compression_min_size,
    )


def _migrate(url: str, settings: Settings) -> None:
    with govc_db.open(url, settings=settings) as store:
        store.upgrade()


def pg_server_info(admin_url: str) -> dict[str, str]:
    """Server version and the durability settings that shape commit rates."""
    import psycopg

    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
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
    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    console.log(f"created databases {', '.join(names)}")
    try:
        ours_url = admin.set(database=names[0]).render_as_string(hide_password=False)
        raw_url = admin.set(database=names[1]).render_as_string(hide_password=False)

        def make_raw() -> RawSql:
            _migrate(raw_url, settings)
            return RawPostgres(_libpq(raw_url), _codec(settings), "commits")

        yield Target("postgresql", ours_url, settings, workdir, make_raw)
    finally:
        with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
            for name in names:
                stmt = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                conn.execute(stmt.format(sql.Identifier(name)))
        console.log(f"dropped databases {', '.join(names)}")


@contextmanager
def sqlite_target(settings: Settings, workdir: Path) -> Iterator[Target]:
    ours_url = f"sqlite:///{workdir / 'ours.db'}"
    raw_path = workdir / "raw.db"

    def make_raw() -> RawSql:
        _migrate(f"sqlite:///{raw_path}", settings)
        return RawSqlite(raw_path, _codec(settings), "commits")

    yield Target("sqlite", ours_url, settings, workdir, make_raw)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark govc_db side by side with git, dulwich and the raw driver; "
        "every figure is reported as the ratio ours / peer.",
    )
    p.add_argument("--quick", action="store_true", help="small sizes (about a minute a backend)")
    p.add_argument("--backend", choices=["sqlite", "postgres", "all"], default="all")
    p.add_argument("--json", type=Path, metavar="OUT", help="also write the results as JSON")
    p.add_argument("--markdown", type=Path, metavar="OUT", help="also write markdown tables")
    p.add_argument(
        "--pg-url",
        default=os.environ.get("GOVC_BENCH_PG_URL", DEFAULT_PG_URL),
        help="server to create the throwaway databases on (default: %(default)s)",
    )
    p.add_argument(
        "--workload",
        action="append",
        choices=WORKLOADS,
        help="run only this workload (repeatable; default: all)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes: Sizes = QUICK if args.quick else FULL
    which = tuple(args.workload or WORKLOADS)
    backends = ["sqlite", "postgres"] if args.backend == "all" else [args.backend]
    settings = Settings.from_env()
    # Wide enough for the table when the output is a file or a pipe (RESULTS.md, CI logs).
    console = Console(width=None if sys.stdout.isatty() else 230)
    progress = Console(stderr=True)
    command = "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv)
    pg_info = None
    if "postgres" in backends:
        try:
            pg_info = pg_server_info(args.pg_url)
        except Exception as exc:  # say how to fix it instead of a driver traceback
            progress.print(
                f"[red]cannot reach PostgreSQL at {make_url(args.pg_url)!r}[/]: "
                f"{type(exc).__name__}; pass --pg-url (or GOVC_BENCH_PG_URL), "
                "or --backend sqlite"
            )
            return 2
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="govc_bench_") as tmp:
        for backend in backends:
            workdir = Path(tmp) / backend
            workdir.mkdir()
            target: Any = (
                postgres_target(args.pg_url, settings, workdir, progress)
                if backend == "postgres"
                else sqlite_target(settings, workdir)
            )
            with target as t:
                for r in run_backend(t, sizes, which, progress.log):
                    results.append(r)
    info = machine_info(pg_info)
    info["load_average_at_start"] = load_at_start
    render(results, info, console)
    if args.json is not None:
        config = {
            "sizes": dataclasses.asdict(sizes),
            "workloads": list(which),
            "settings_changed_from_defaults": _settings_diff(settings),
        }
        write_json(args.json, to_json(results, info, command, config))
        progress.log(f"wrote {args.json}")
    if args.markdown is not None:
        args.markdown.write_text(to_markdown(results, info, command))
        progress.log(f"wrote {args.markdown}")
    return 0


def _settings_diff(settings: Settings) -> dict[str, Any]:
    """Settings that differ from the defaults (GOVC_DB_* in the environment)."""
    default = Settings()
    names = [f.name for f in dataclasses.fields(Settings)]
    return {k: getattr(settings, k) for k in names if getattr(settings, k) != getattr(default, k)}


if __name__ == "__main__":
    raise SystemExit(main())
