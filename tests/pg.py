"""Find a PostgreSQL server for the tests.

In order: ``GOVC_DB_TEST_URL`` (a server/admin URL); a testcontainers container when a
Docker engine answers; a throwaway cluster started from local PostgreSQL binaries
(``initdb``/``pg_ctl``), run as an unprivileged user when the tests run as root.

The result is an admin URL: the fixtures connect to its database only to CREATE and DROP
their own ``govc_test_*`` databases, never to write into existing tables.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import glob
import os
import pwd
import re
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

__all__ = [
    "ENV_URL",
    "HOW_TO_PROVIDE",
    "PostgresServer",
    "create_database",
    "discover",
    "drop_database",
    "in_ci",
    "normalize_url",
    "render_url",
]

ENV_URL = "GOVC_DB_TEST_URL"
DOCKER_IMAGE = "postgres:16-alpine"
# Candidate unprivileged users for the local cluster when running as root (initdb and
# postgres refuse to run as root).
UNPRIVILEGED_USERS = ("nobody", "postgres")
CONNECT_TIMEOUT = 5

HOW_TO_PROVIDE = (
    "No PostgreSQL server for the tests. Provide one by either: setting "
    f"{ENV_URL}=postgresql+psycopg://USER[:PASSWORD]@HOST:PORT/postgres (a role that may "
    "CREATE DATABASE); starting a Docker engine (testcontainers runs "
    f"{DOCKER_IMAGE}); or installing the PostgreSQL server binaries (initdb, pg_ctl on "
    "PATH or in /usr/lib/postgresql/*/bin)."
)


@dataclass
class PostgresServer:
    """A reachable PostgreSQL server and how to let go of it."""

    admin_url: str
    """URL of a database to connect to for CREATE/DROP DATABASE (password included)."""
    source: str
    """Where it came from: ``"env"``, ``"docker"`` or ``"local"``."""
    _stop: Callable[[], None] | None = field(default=None, repr=False)

    def stop(self) -> None:
        """Stop the server if these tests started it (idempotent)."""
        stop, self._stop = self._stop, None
        if stop is not None:
            stop()


def in_ci() -> bool:
    """Whether the tests run under CI, where a missing PostgreSQL is a failure."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}


def normalize_url(url: str) -> URL:
    """Parse a PostgreSQL URL, selecting the psycopg (3) driver when none is named."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def render_url(url: URL, *, hide_password: bool = False) -> str:
    """Render ``url`` as a string (with the password unless ``hide_password``)."""
    return url.render_as_string(hide_password=hide_password)


def admin_engine(url: str | URL) -> sa.Engine:
    """An AUTOCOMMIT engine without a pool, for CREATE/DROP DATABASE."""
    return sa.create_engine(
        url,
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": CONNECT_TIMEOUT},
    )


def create_database(admin_url: str) -> str:
    """Create a new empty database on the server of ``admin_url``; return its URL."""
    url = normalize_url(admin_url)
    name = f"govc_test_{secrets.token_hex(6)}"
    engine = admin_engine(url)
    try:
        with engine.connect() as conn:
            # template0: an empty database, whatever was added to template1 on this server.
            conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE template0'))
    finally:
        engine.dispose()
    return render_url(url.set(database=name))


def drop_database(admin_url: str, db_url: str) -> None:
    """Drop the database of ``db_url``, disconnecting whoever is still connected."""
    name = normalize_url(db_url).database
    if not name or not re.fullmatch(r"govc_test_\w+", name):
        raise ValueError(f"refusing to drop {name!r}: not a database the tests created")
    engine = admin_engine(normalize_url(admin_url))
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


def discover() -> tuple[PostgresServer | None, list[str]]:
    """Find or start a PostgreSQL server: ``(server or None, why each way failed)``.

    A set ``GOVC_DB_TEST_URL`` that does not answer raises RuntimeError: a server was asked
    for explicitly, so falling through to another one would hide the mistake.
    """
    env_url = os.environ.get(ENV_URL, "").strip()
    if env_url:
        return _from_env(env_url), []
    notes: list[str] = [f"{ENV_URL} is not set"]
    ways: tuple[tuple[str, Callable[[], PostgresServer | str]], ...] = (
        ("testcontainers", _from_docker),
        ("local binaries", _from_local_binaries),
    )
    for label, way in ways:
        try:
            server = way()
        except Exception as exc:
            notes.append(f"{label}: {type(exc).__name__}: {exc}")
            continue
        if isinstance(server, PostgresServer):
            return server, notes
        notes.append(f"{label}: {server}")
    return None, notes


def _check_connect(url: URL) -> None:
    engine = admin_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    finally:
        engine.dispose()


def _from_env(raw: str) -> PostgresServer:
    url = normalize_url(raw)
    try:
        _check_connect(url)
    except Exception as exc:
        raise RuntimeError(
            f"{ENV_URL} is set to {render_url(url, hide_password=True)} but that server "
            f"cannot be used ({type(exc).__name__}: {_first_line(exc)}). Fix or unset it."
        ) from None
    return PostgresServer(admin_url=render_url(url), source="env")


def _first_line(exc: BaseException) -> str:
    # Driver messages never contain the password, but they may contain SQL; one line is enough.
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else ""


# -- Docker -----------------------------------------------------------------------------------


def _docker_answers() -> bool:
    host = os.environ.get("DOCKER_HOST", "")
    socket_path = host.removeprefix("unix://") or "/var/run/docker.sock"
    if (not host or host.startswith("unix://")) and not os.path.exists(socket_path):
        # No socket file: no engine. Checked first because it is instant and leaks nothing.
        return False
    try:
        import docker  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        return False
    with warnings.catch_warnings():
        # docker-py leaks its socket when the engine does not answer; the tests run with
        # warnings as errors, so collect it here, where the ResourceWarning is ignored.
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client = docker.from_env(timeout=3)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:
            return False
        finally:
            gc.collect()


def _from_docker() -> PostgresServer | str:
    if not _docker_answers():
        return "no Docker engine answers"
    with warnings.catch_warnings():
        # testcontainers moves modules around between releases and warns about it.
        warnings.simplefilter("ignore")
        try:
            from testcontainers.community.postgres import PostgresContainer
        except ImportError:
            try:
                from testcontainers.postgres import PostgresContainer
            except ImportError:
                return "testcontainers[postgres] is not installed"
        container: Any = PostgresContainer(DOCKER_IMAGE, driver="psycopg")
        try:
            container.start()
        except Exception:
            with contextlib.suppress(Exception):
                container.stop()
            raise
    url = normalize_url(container.get_connection_url()).set(database="postgres")
    server = PostgresServer(admin_url=render_url(url), source="docker", _stop=container.stop)
    atexit.register(server.stop)
    return server


# -- local binaries ---------------------------------------------------------------------------


def find_pg_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``, newest version first."""
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    patterns = ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/usr/local/pgsql/bin")
    dirs = [Path(p) for pattern in patterns for p in glob.glob(pattern)]
    candidates += sorted(dirs, key=_version_key, reverse=True)
    for bindir in candidates:
        if all(os.access(bindir / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return bindir
    return None


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", str(path)))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _unprivileged_user() -> pwd.struct_passwd:
    for name in UNPRIVILEGED_USERS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError(f"running as root and none of the users {UNPRIVILEGED_USERS} exists")


def _traversable_by_all(path: Path) -> bool:
    return all(p.stat().st_mode & stat.S_IXOTH for p in (path, *path.parents))


class _LocalCluster:
    """A throwaway cluster in a temporary directory, removed again by :meth:`stop`."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.user = _unprivileged_user() if os.geteuid() == 0 else None
        base = Path(tempfile.gettempdir())
        if self.user is not None and not _traversable_by_all(base):
            base = Path("/tmp")
        self.root = Path(tempfile.mkdtemp(prefix="govc-pg-", dir=base))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)

    def pg_ctl(self, *args: str) -> None:
        """``pg_ctl -D DATA -w -t 60 ARGS`` (stop, restart, reload ...) as the cluster's user."""
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", *args)

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, Any] = {}
        if self.user is not None:
            kwargs.update(user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[])
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        return subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            cwd=self.root,
            env=env,
            stdin=subprocess.DEVNULL,
            # The postmaster inherits these; a pipe would keep run() waiting for it to exit.
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE if args[0] == "initdb" else subprocess.DEVNULL,
            text=True,
            check=check,
            timeout=120,
            **kwargs,
        )

    def start(self) -> str:
        try:
            self._run(
                "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
                "-E", "UTF8", "--no-locale", "--no-sync",
            )  # fmt: skip
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"initdb failed: {exc.stderr.strip()[-2000:]}") from None
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# govc_db tests: a throwaway cluster, durability off for speed\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\n"
                "max_connections = 200\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )
        for _attempt in range(3):
            # A free port can be taken by someone else before the server binds it: retry.
            self.port = _free_port()
            result = self._run(
                "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                "-o", f"-p {self.port}", "start", check=False,
            )  # fmt: skip
            if result.returncode == 0:
                return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
        raise RuntimeError(f"pg_ctl start failed; server log:\n{log}")

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop",
                          check=False)  # fmt: skip
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _from_local_binaries() -> PostgresServer | str:
    bindir = find_pg_bindir()
    if bindir is None:
        return "initdb/pg_ctl/postgres not found"
    cluster = _LocalCluster(bindir)
    try:
        url = cluster.start()
    except BaseException:
        cluster.stop()
        raise
    server = PostgresServer(admin_url=url, source="local", _stop=cluster.stop)
    # Also stop it when the session ends without running fixture finalizers.
    atexit.register(server.stop)
    return server


def new_local_cluster() -> _LocalCluster:
    """A throwaway cluster (not started yet) from the local PostgreSQL binaries, for tests
    that restart, stop or reconfigure a server. Without the binaries the test fails under
    CI and is skipped elsewhere."""
    import pytest

    bindir = find_pg_bindir()
    if bindir is None:
        message = "PostgreSQL server binaries (initdb, pg_ctl) are needed for this test"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return _LocalCluster(bindir)
