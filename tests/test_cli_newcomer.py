"""A newcomer's first hour with the real ``govc-db`` entry point (a child process each).

Connection failures are told apart in one line without the password, ``init`` creates a
missing PostgreSQL database, a directory commit mirrors deletions, help text carries no
Python type labels, ``ls``/``log`` print what git prints, ``stats`` describes the
database, ``demo`` never clobbers, ``verify`` shows progress, and the command line and
``import govc_db`` do not load SQLAlchemy before they need it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pg
import pytest
import sqlalchemy as sa
import typer
from _export import export_repository, git
from typer.testing import CliRunner

import govc_db
from govc_db.cli_base import State, open_store

ROOT = Path(__file__).resolve().parent.parent
AUTHOR = "Ada Lovelace <ada@example.com>"
SECRET = "hunter2-s3cret"


def govc_db_command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m govc_db``."""
    script = Path(sys.executable).parent / "govc-db"
    return [str(script)] if script.exists() else [sys.executable, "-m", "govc_db"]


def run(
    url: str | None, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "GOVC_DB_URL"}
    base["PYTHONPATH"] = os.pathsep.join([str(ROOT), base.get("PYTHONPATH", "")])
    base.update(env or {})
    prefix = [] if url is None else ["--url", url]
    return subprocess.run(
        [*govc_db_command(), *prefix, *args],
        capture_output=True, text=True, cwd=cwd, env=base, timeout=300, check=False,
    )  # fmt: skip


def ok(url: str | None, *args: str, cwd: Path | None = None) -> str:
    done = run(url, *args, cwd=cwd)
    assert done.returncode == 0, (done.stdout, done.stderr)
    return done.stdout


def one_error(done: subprocess.CompletedProcess[str]) -> str:
    """The single ``error:`` line of a failed command (asserts there is exactly one)."""
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr and SECRET not in done.stderr
    return done.stderr


# -- help, version, start-up -----------------------------------------------------------------


def test_version_and_help_without_type_labels() -> None:
    assert ok(None, "--version") == f"govc-db {govc_db.__version__}\n"
    for command in ([], ["commit"], ["log"], ["ls"], ["demo"], ["branch", "create"]):
        text = ok(None, *command, "--help")
        for label in ("<bool>", "<str>", "<int", "<list", "<path>", "{repo}", "{rev}"):
            assert label not in text, (command, label)
    log_help = ok(None, "log", "--help")
    assert "Show at most N commits" in log_help and "REPO" in log_help
    assert "--sync" in ok(None, "commit", "--help")


def test_import_and_help_do_not_load_the_database_stack() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = (
        "import sys, govc_db; "
        "print(sorted(m for m in ('sqlalchemy', 'psycopg', 'alembic') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, check=True)  # fmt: skip
    assert done.stdout.strip() == "[]"
    assert govc_db.open is govc_db.api.open_store  # the lazy facade resolves
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "govc_db", "--help"],
                          capture_output=True, text=True, env=env, check=True)  # fmt: skip
    for heavy in ("sqlalchemy", "psycopg", "alembic", "rich"):
        assert f" {heavy}\n" not in done.stderr, heavy


# -- init and connection failures --------------------------------------------------------------


@pytest.fixture
def pg_server(pg_admin_url: str) -> Iterator[sa.URL]:
    """The test server's admin URL, with a password added (the server trusts, and ignores it)."""
    url = pg.normalize_url(pg_admin_url)
    yield url.set(password=SECRET)


def test_init_creates_a_missing_postgres_database(pg_server: sa.URL, pg_admin_url: str) -> None:
    name = f"govc_test_{secrets.token_hex(6)}"
    url = pg.render_url(pg_server.set(database=name))
    try:
        missing = one_error(run(url, "repo", "list"))
        assert f"database '{name}' does not exist" in missing and "govc-db init" in missing
        first = run(url, "init")
        assert first.returncode == 0 and first.stderr == "", first.stderr
        assert first.stdout.startswith("created and initialized postgresql+psycopg://")
        assert SECRET not in first.stdout
        assert ok(url, "init").startswith("initialized ")  # idempotent
        ok(url, "repo", "create", "site")
        assert ok(url, "repo", "list") == "site\n"
    finally:
        pg.drop_database(pg_admin_url, pg.render_url(pg_server.set(database=name)))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_connection_refused_is_one_line(pg_server: sa.URL) -> None:
    url = pg.render_url(pg_server.set(host="127.0.0.1", port=free_port(), database="x"))
    for args in (("init",), ("log", "r"), ("stats",)):
        err = one_error(run(url, *args))
        assert "connection refused by 127.0.0.1:" in err, err


@pytest.fixture
def limited_role(pg_admin_url: str) -> Iterator[tuple[str, str]]:
    """A login role that may not create databases, and a database it may not connect to."""
    role, closed = f"govc_test_role_{secrets.token_hex(4)}", pg.create_database(pg_admin_url)
    engine = pg.admin_engine(pg_admin_url)
    db = pg.normalize_url(closed).database
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE ROLE "{role}" LOGIN NOSUPERUSER NOCREATEDB'))
            conn.execute(sa.text(f'REVOKE CONNECT ON DATABASE "{db}" FROM PUBLIC'))
        yield role, closed
    finally:
        pg.drop_database(pg_admin_url, closed)
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP ROLE IF EXISTS "{role}"'))
        engine.dispose()


def test_permission_denied_and_unknown_role(
    pg_server: sa.URL, limited_role: tuple[str, str]
) -> None:
    role, closed = limited_role
    as_role = pg_server.set(username=role)
    err = one_error(run(pg.render_url(as_role.set(database=f"govc_test_{secrets.token_hex(4)}")),
                        "init"))  # fmt: skip
    assert f"permission denied: user '{role}' may not create database" in err, err
    no_connect = pg.normalize_url(closed).set(username=role, password=SECRET)
    err = one_error(run(pg.render_url(no_connect), "log", "r"))
    assert f"permission denied: user '{role}' may not connect to database" in err, err
    ghost = pg_server.set(username=f"govc_test_ghost_{secrets.token_hex(3)}")
    assert "authentication failed for user 'govc_test_ghost_" in one_error(
        run(pg.render_url(ghost), "init")
    )


@pytest.mark.slow
def test_wrong_password_is_authentication_failed(tmp_path: Path) -> None:
    cluster = pg.new_local_cluster()
    try:
        admin = cluster.start()
        engine = pg.admin_engine(admin)
        with engine.connect() as conn:
            conn.execute(sa.text("ALTER ROLE postgres PASSWORD 'right-password'"))
        engine.dispose()
        (cluster.data / "pg_hba.conf").write_text(
            "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
        )
        cluster.pg_ctl("reload")
        wrong = pg.normalize_url(admin).set(password=SECRET)
        err = one_error(run(pg.render_url(wrong), "init"))
        assert (
            err == f"error: authentication failed for user 'postgres' on 127.0.0.1:{cluster.port}\n"
        )
        right = pg.normalize_url(admin).set(password="right-password", database="govc_test_x")
        assert ok(pg.render_url(right), "init").startswith("created and initialized")
    finally:
        cluster.stop()


def test_bad_sqlite_paths_name_the_path_and_the_reason(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "govc.db"
    err = one_error(run(f"sqlite:///{missing}", "init"))
    assert err == (
        f"error: cannot create SQLite database '{missing}': "
        f"directory '{missing.parent}' does not exist\n"
    )
    (tmp_path / "afile").write_text("x")
    err = one_error(run(f"sqlite:///{tmp_path / 'afile' / 'govc.db'}", "init"))
    assert f"'{tmp_path / 'afile'}' is not a directory" in err
    err = one_error(run(f"sqlite:///{tmp_path}", "init"))
    assert f"cannot open SQLite database '{tmp_path}': it is a directory" in err
    err = one_error(run(f"sqlite:///{tmp_path / 'absent.db'}", "log", "r"))
    assert "does not exist (run `govc-db init`)" in err
    assert not (tmp_path / "absent.db").exists()


# -- commit, ls, log -------------------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> tuple[str, Path]:
    url = f"sqlite:///{tmp_path / 'govc.db'}"
    public = tmp_path / "public"
    (public / "css").mkdir(parents=True)
    (public / "index.html").write_text("<h1>hello</h1>\n")
    (public / "about.html").write_text("about\n")
    (public / "css" / "site.css").write_text("body {}\n")
    ok(url, "init")
    ok(url, "repo", "create", "site")
    return url, public


def files_of(url: str, rev: str = "main") -> set[str]:
    return {line.split("\t")[1] for line in ok(url, "ls", "site", rev, "-r").splitlines()}


def test_directory_commit_mirrors_deletions_unless_no_sync(site: tuple[str, Path]) -> None:
    url, public = site
    args = ("-m", "publish", "--author", AUTHOR, "--root", str(public), str(public))
    ok(url, "commit", "site", *args)
    assert files_of(url) == {"index.html", "about.html", "css/site.css"}
    (public / "about.html").unlink()
    (public / "css" / "site.css").unlink()
    (public / "index.html").write_text("<h1>hello again</h1>\n")
    ok(url, "commit", "site", *args, "--no-sync")
    assert files_of(url) == {"index.html", "about.html", "css/site.css"}
    (public / "new.html").write_text("new\n")
    ok(url, "commit", "site", *args)  # the default mirrors the directory
    assert files_of(url) == {"index.html", "new.html"}
    # A sub-directory argument only mirrors that sub-directory.
    (public / "css" / "a.css").write_text("a\n")
    ok(url, "commit", "site", *args[:-1], str(public / "css"))
    (public / "css" / "a.css").unlink()
    (public / "index.html").unlink()
    ok(url, "commit", "site", *args[:-1], str(public / "css"))
    assert files_of(url) == {"index.html", "new.html"}


def test_nothing_to_commit_names_the_cli_flag(site: tuple[str, Path]) -> None:
    url, public = site
    args = ("-m", "publish", "--author", AUTHOR, "--root", str(public), str(public))
    first = ok(url, "commit", "site", *args).strip()
    err = one_error(run(url, "commit", "site", *args))
    assert "nothing to commit" in err and "--allow-empty" in err and "allow_empty" not in err
    second = ok(url, "commit", "site", *args, "--allow-empty").strip()
    assert second != first


def test_ls_on_a_file_and_log_print_what_git_prints(site: tuple[str, Path]) -> None:
    url, public = site
    args = ("--author", AUTHOR, "--root", str(public), str(public))
    ok(url, "commit", "site", "-m", "import", *args)
    (public / "index.html").write_text("<h1>hello, world</h1>\n")
    message = "Say hello to the world\n\nLonger text, second paragraph.\n  indented line"
    ok(url, "commit", "site", "-m", message, *args)
    with govc_db.open(url) as store:
        exported = export_repository(store.repository("site"), public.parent / "site.git")
    for path in ("index.html", "css/site.css", "css"):
        ours = ok(url, "ls", "site", "main", path)
        theirs = git(exported, "ls-tree", "main", path + ("/" if path == "css" else ""))
        assert ours == theirs.decode(), path
    for extra in ([], ["-n", "1"], ["--oneline"]):
        log = ok(url, "log", "site", "main", *extra)
        git_log = git(exported, "log", "--no-decorate", "--abbrev=7", *extra, "main").decode()
        assert log == git_log, extra


# -- stats, demo, verify -----------------------------------------------------------------------


def test_stats_describes_the_database(db_url: str, tmp_path: Path) -> None:
    ok(db_url, "init")
    ok(db_url, "repo", "create", "one")
    ok(db_url, "repo", "create", "two")
    (tmp_path / "a.txt").write_text("a\n")
    ok(db_url, "commit", "one", "-m", "a", "--author", AUTHOR, "--root", str(tmp_path),
       str(tmp_path / "a.txt"))  # fmt: skip
    out = ok(db_url, "stats")
    lines = out.splitlines()
    assert "repositories  2" in lines
    assert "objects       3" in lines  # blob, tree, commit
    assert "  one  3 objects, 1 commits, 1 refs" in lines
    assert any(line.startswith("  govc_objects ") for line in lines)
    assert any(line.startswith("stored bytes  ") for line in lines)
    server = (
        "PostgreSQL " if db_url.startswith("postgresql") else f"SQLite {sqlite3.sqlite_version}"
    )
    assert any(line.startswith(f"server        {server}") for line in lines), out
    assert "pool          size 5, overflow 10" in out and "cache         on, 64.0 MiB" in out
    changed = run(db_url, "stats", env={"GOVC_DB_POOL_SIZE": "7", "GOVC_DB_CACHE_ENABLED": "0"})
    assert "pool          size 7" in changed.stdout and "cache         off" in changed.stdout


def test_demo_never_clobbers_an_existing_repository(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'govc.db'}"
    small = ("--commits", "12", "--files", "30")
    ok(url, "demo", *small)
    with govc_db.open(url) as store:
        head = store.repository("demo").resolve("main")
        store.repository("demo").create_branch("mine", "main")
    second = run(url, "demo", *small)
    assert second.returncode == 0 and "writing the demo into 'demo-2'" in second.stderr
    assert ok(url, "repo", "list") == "demo\ndemo-2\n"
    with govc_db.open(url) as store:
        assert "mine" in store.repository("demo").branches()  # untouched
    assert "already exists" in one_error(run(url, "demo", "--name", "demo", *small))
    ok(url, "demo", "--force", *small)
    with govc_db.open(url) as store:
        assert "mine" not in store.repository("demo").branches()
        assert store.repository("demo").resolve("main") == head


def test_verify_shows_progress_on_a_terminal_only(site: tuple[str, Path]) -> None:
    url, public = site
    ok(url, "commit", "site", "-m", "import", "--author", AUTHOR, "--root", str(public),
       str(public))  # fmt: skip
    plain = run(url, "verify", "site")
    assert plain.returncode == 0 and plain.stderr == ""
    assert plain.stdout == "ok: 6 objects checked\n"
    tty = run(url, "verify", "site", env={"FORCE_COLOR": "1", "TTY_INTERACTIVE": "1"})
    assert tty.returncode == 0 and "verifying objects" in tty.stderr
    assert "6/6" in tty.stderr


def test_readme_cli_default_url_matches_the_library() -> None:
    from govc_db.api.store import DEFAULT_URL
    from govc_db.cli import DEFAULT_URL as CLI_DEFAULT

    assert CLI_DEFAULT == DEFAULT_URL
    assert shutil.which("git") is not None


def test_one_shot_commands_do_not_listen_but_a_server_may(sqlite_url: str) -> None:
    seen: list[bool] = []
    app = typer.Typer()

    @app.command()
    def probe(ctx: typer.Context, long_running: bool = False) -> None:
        ctx.obj = State(url=sqlite_url)
        seen.append(open_store(ctx, long_running=long_running).settings.notify_enabled)

    runner = CliRunner()
    assert runner.invoke(app, []).exit_code == 0
    assert runner.invoke(app, ["--long-running"]).exit_code == 0
    assert seen == [False, True]
