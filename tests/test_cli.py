"""The ``govc-db`` command line, end to end on real databases.

Every command runs on SQLite; the main ones also on PostgreSQL (``db_url`` is parametrized
over both). GovcErrors must exit 1 with one ``error:`` line on stderr and no traceback;
usage errors exit 2.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from _export import export_repository, git
from typer.testing import CliRunner, Result

import govc_db
from govc_db.cli import app, parse_person
from govc_db.demo import run_demo

AUTHOR = "Ada Lovelace <ada@example.com>"
BINARY = bytes(range(256)) * 3 + b"\0\0\xff\x00tail\r\n"
RUN_SCRIPT = b"#!/bin/sh\necho run\n"

runner = CliRunner()


def cli(url: str | None, *args: str, input: str | None = None) -> Result:
    prefix = [] if url is None else ["--url", url]
    return runner.invoke(app, [*prefix, *args], input=input)


def ok(url: str | None, *args: str, input: str | None = None) -> str:
    result = cli(url, *args, input=input)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result.stdout


def fails(url: str | None, *args: str, code: int = 1, input: str | None = None) -> str:
    """Run a command that must fail with ``code``; return its stderr."""
    result = cli(url, *args, input=input)
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    # Anything but SystemExit here is an exception that escaped the command.
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    if code == 1 and "Aborted" not in result.stderr:
        assert result.stderr.startswith("error: "), result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr


def blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def ls_modes(url: str, repo: str, rev: str = "HEAD") -> dict[str, tuple[str, str]]:
    """path -> (mode, blob id) from ``ls -r``."""
    out: dict[str, tuple[str, str]] = {}
    for line in ok(url, "ls", repo, rev, "-r").splitlines():
        meta, path = line.split("\t")
        mode, kind, oid = meta.split(" ")
        assert kind == "blob"
        out[path] = (mode, oid)
    return out


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    """A directory tree with a text file, a binary, an executable and symlinks."""
    root = tmp_path / "work"
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "bin").mkdir()
    (root / "README.md").write_bytes(b"# hello\n")
    (root / "src" / "pkg" / "mod.py").write_bytes(b"x = 1\n")
    (root / "data.bin").write_bytes(BINARY)
    (root / "bin" / "run").write_bytes(RUN_SCRIPT)
    (root / "bin" / "run").chmod(0o755)
    os.symlink("README.md", root / "link")
    os.symlink("src", root / "srclink")  # a symlinked directory is stored as a link
    (root / ".git").mkdir()  # a checkout's metadata is skipped
    (root / ".git" / "HEAD").write_bytes(b"ref: refs/heads/main\n")
    return root


def commit_tree(url: str, worktree: Path, message: str = "first") -> str:
    out = ok(url, "commit", "r", str(worktree), "--root", str(worktree), "-m", message,
             "--author", AUTHOR)  # fmt: skip
    oid = out.strip()
    assert len(oid) == 40
    return oid


# -- process, environment and database selection -------------------------------------------


def test_python_m_help_and_error_in_a_real_process(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "GOVC_DB_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "govc_db", "--help"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for command in ("init", "repo", "commit", "log", "branch", "tag", "demo"):
        assert command in done.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "govc_db", "log", "nope"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False,
    )  # fmt: skip
    assert missing.returncode == 1
    assert missing.stderr == "error: database file 'govc.db' does not exist (run `govc-db init`)\n"
    assert not (tmp_path / "govc.db").exists()


def test_default_url_env_url_and_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GOVC_DB_URL", raising=False)
    assert "does not exist" in fails(None, "repo", "list")
    assert not (tmp_path / "govc.db").exists()
    assert "initialized sqlite:///govc.db" in ok(None, "init")
    ok(None, "init")  # idempotent
    assert (tmp_path / "govc.db").is_file()
    ok(None, "repo", "create", "local")

    other = f"sqlite:///{tmp_path / 'other.db'}"
    monkeypatch.setenv("GOVC_DB_URL", other)
    ok(None, "init")
    ok(None, "repo", "create", "from-env")
    assert ok(None, "repo", "list") == "from-env\n"
    # --url wins over the environment.
    assert ok("sqlite:///govc.db", "repo", "list") == "local\n"


def test_uninitialized_and_bad_databases(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    assert "not initialized" in fails(f"sqlite:///{empty}", "repo", "list")
    assert "unsupported database" in fails("mysql://u@h/db", "repo", "list")
    assert "malformed database URL" in fails("::not a url::", "init")


# -- every command on SQLite ---------------------------------------------------------------


def test_repo_commands(sqlite_url: str) -> None:
    assert ok(sqlite_url, "repo", "list") == ""
    ok(sqlite_url, "repo", "create", "alpha")
    ok(sqlite_url, "repo", "create", "beta", "--default-branch", "trunk")
    assert "already exists" in fails(sqlite_url, "repo", "create", "alpha")
    fails(sqlite_url, "repo", "create", ".hidden")
    assert ok(sqlite_url, "repo", "list") == "alpha\nbeta\n"
    assert "* trunk" not in ok(sqlite_url, "branch", "list", "beta")  # no commit yet

    assert "Aborted" in fails(sqlite_url, "repo", "delete", "alpha", input="n\n")
    assert ok(sqlite_url, "repo", "list") == "alpha\nbeta\n"
    ok(sqlite_url, "repo", "delete", "alpha", input="y\n")
    ok(sqlite_url, "repo", "delete", "beta", "--yes")
    assert ok(sqlite_url, "repo", "list") == ""
    assert fails(sqlite_url, "repo", "delete", "beta", "--yes") == (
        "error: repository 'beta' not found\n"
    )


def test_commit_stores_tree_with_modes_and_exact_bytes(sqlite_url: str, worktree: Path) -> None:
    ok(sqlite_url, "repo", "create", "r")
    commit_tree(sqlite_url, worktree)
    assert ls_modes(sqlite_url, "r") == {
        "README.md": ("100644", blob_id(b"# hello\n")),
        "bin/run": ("100755", blob_id(RUN_SCRIPT)),
        "data.bin": ("100644", blob_id(BINARY)),
        "link": ("120000", blob_id(b"README.md")),
        "src/pkg/mod.py": ("100644", blob_id(b"x = 1\n")),
        "srclink": ("120000", blob_id(b"src")),
    }
    for path, data in (("data.bin", BINARY), ("link", b"README.md"), ("bin/run", RUN_SCRIPT)):
        assert cli(sqlite_url, "cat", "r", "HEAD", path).stdout_bytes == data
    with govc_db.open(sqlite_url) as store:
        info = store.repository("r").get_commit("HEAD")
    assert info.message == "first\n"
    assert (info.author.name, info.author.email) == ("Ada Lovelace", "ada@example.com")


def test_commit_paths_root_deletes_and_errors(
    sqlite_url: str, worktree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok(sqlite_url, "repo", "create", "r")
    monkeypatch.chdir(worktree)
    args = ("-m", "msg", "--author", AUTHOR)
    # Relative paths below the current directory (the default root).
    ok(sqlite_url, "commit", "r", "src", "README.md", *args)
    assert set(ls_modes(sqlite_url, "r")) == {"README.md", "src/pkg/mod.py"}
    # --root makes paths relative to another directory.
    ok(sqlite_url, "commit", "r", "src/pkg/mod.py", "--root", "src", *args)
    assert "pkg/mod.py" in ls_modes(sqlite_url, "r")
    ok(sqlite_url, "commit", "r", "--delete", "pkg/mod.py", "--delete", "README.md", *args)
    assert set(ls_modes(sqlite_url, "r")) == {"src/pkg/mod.py"}

    fails(sqlite_url, "commit", "r", "src", *args)  # the tree would not change
    ok(sqlite_url, "commit", "r", "src", "--allow-empty", *args)
    assert "no such file" in fails(sqlite_url, "commit", "r", "missing.txt", *args)
    assert "outside the root" in fails(sqlite_url, "commit", "r", "README.md", "--root", "src",
                                       *args)  # fmt: skip
    assert "both written and deleted" in fails(
        sqlite_url, "commit", "r", "README.md", "--delete", "README.md", *args
    )
    assert "nope.txt" in fails(sqlite_url, "commit", "r", "--delete", "nope.txt", *args)
    assert "Name <email>" in fails(sqlite_url, "commit", "r", "README.md", "-m", "m",
                                   "--author", "Ada")  # fmt: skip
    assert "not found" in fails(sqlite_url, "commit", "r", "README.md", "--branch", "dev", *args)
    assert "not found" in fails(sqlite_url, "commit", "nope", "README.md", *args)
    fails(sqlite_url, "commit", "r", "README.md", "--author", AUTHOR, code=2)  # no -m
    assert len(ok(sqlite_url, "log", "r", "--oneline").splitlines()) == 4


def test_commit_skips_the_sqlite_database_itself(
    tmp_path: Path, worktree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(worktree)
    ok("sqlite:///govc.db", "init")
    ok("sqlite:///govc.db", "repo", "create", "r")
    ok("sqlite:///govc.db", "commit", "r", ".", "-m", "all", "--author", AUTHOR)
    assert not any(p.startswith("govc.db") for p in ls_modes("sqlite:///govc.db", "r"))
    assert "database file" in fails(
        "sqlite:///govc.db", "commit", "r", "govc.db", "-m", "m", "--author", AUTHOR
    )


def test_log_show_diff_ls_cat(sqlite_url: str, worktree: Path) -> None:
    ok(sqlite_url, "repo", "create", "r")
    first = commit_tree(sqlite_url, worktree, "first\n\nwith a body")
    (worktree / "README.md").write_bytes(b"# hello again\n")
    (worktree / "new.txt").write_bytes(b"new\n")
    (worktree / "data.bin").unlink()
    second = ok(sqlite_url, "commit", "r", str(worktree / "README.md"), str(worktree / "new.txt"),
                "--root", str(worktree),
                "--delete", "data.bin", "-m", "second", "--author", AUTHOR).strip()  # fmt: skip

    full = ok(sqlite_url, "log", "r")
    assert full.startswith(f"commit {second}\nAuthor: Ada Lovelace <ada@example.com>\nDate:   ")
    assert (
        "\n    second\n" in full and "\n    first\n    \n    with a body\n" in full
    )  # git indents blank lines too
    assert ok(sqlite_url, "log", "r", "--oneline") == f"{second[:7]} second\n{first[:7]} first\n"
    assert ok(sqlite_url, "log", "r", "-n", "1", "--oneline") == f"{second[:7]} second\n"
    assert ok(sqlite_url, "log", "r", first, "--oneline") == f"{first[:7]} first\n"
    assert ok(sqlite_url, "log", "r", "--path", "bin/run", "--oneline") == f"{first[:7]} first\n"

    shown = ok(sqlite_url, "show", "r", "HEAD")
    assert shown.startswith(f"commit {second}\n")
    assert "M\tREADME.md\nD\tdata.bin\nA\tnew.txt\n" in shown
    assert "3 files changed (1 added, 1 modified, 1 deleted)" in shown
    root = ok(sqlite_url, "show", "r", first[:10])
    assert "A\tbin/run\n" in root and "6 files changed (6 added)" in root

    diff = ok(sqlite_url, "diff", "r", "HEAD~1", "HEAD")
    assert diff.startswith("M\tREADME.md\nD\tdata.bin\nA\tnew.txt\n")
    assert ok(sqlite_url, "diff", "r", "HEAD", "HEAD") == " 0 files changed\n"

    top = ok(sqlite_url, "ls", "r", "HEAD")
    assert "040000 tree " in top and "\tsrc\n" in top and "100755" not in top
    assert ok(sqlite_url, "ls", "r", "HEAD", "src/pkg") == (
        f"100644 blob {blob_id(b'x = 1' + bytes([10]))}\tsrc/pkg/mod.py\n"
    )
    assert cli(sqlite_url, "cat", "r", "HEAD~1", "data.bin").stdout_bytes == BINARY
    assert cli(sqlite_url, "cat", "r", "HEAD", "README.md").stdout_bytes == b"# hello again\n"

    assert "not found" in fails(sqlite_url, "cat", "r", "HEAD", "data.bin")
    assert "unknown revision" in fails(sqlite_url, "log", "r", "nosuchbranch")
    fails(sqlite_url, "log", "r", "HEAD~x")  # malformed revision: InvalidInput
    fails(sqlite_url, "show", "r", "HEAD~5")
    assert fails(sqlite_url, "log", "nope") == "error: repository 'nope' not found\n"
    fails(sqlite_url, "ls", "r", "HEAD", "/abs")
    fails(sqlite_url, "log", "r", "-n", "-1", code=2)


def test_branch_and_tag_commands(sqlite_url: str, worktree: Path) -> None:
    ok(sqlite_url, "repo", "create", "r")
    first = commit_tree(sqlite_url, worktree)
    second = ok(sqlite_url, "commit", "r", "--delete", "link", "-m", "two",
                "--author", AUTHOR).strip()  # fmt: skip

    assert ok(sqlite_url, "branch", "list", "r") == f"* main {second}\n"
    assert ok(sqlite_url, "branch", "create", "r", "feature", "HEAD~1") == first + "\n"
    assert "already exists" in fails(sqlite_url, "branch", "create", "r", "feature")
    fails(sqlite_url, "branch", "create", "r", "bad..name")
    assert ok(sqlite_url, "branch", "list", "r") == f"  feature {first}\n* main {second}\n"
    assert ok(sqlite_url, "branch", "move", "r", "feature", "main") == second + "\n"
    assert "fast-forward" in fails(sqlite_url, "branch", "move", "r", "feature", first)
    assert ok(sqlite_url, "branch", "move", "r", "feature", first, "--force") == first + "\n"
    assert "default branch" in fails(sqlite_url, "branch", "delete", "r", "main")
    ok(sqlite_url, "branch", "delete", "r", "feature")
    assert fails(sqlite_url, "branch", "delete", "r", "feature") == (
        "error: branch 'feature' not found\n"
    )

    assert ok(sqlite_url, "tag", "create", "r", "v1", first) == first + "\n"
    annotated = ok(sqlite_url, "tag", "create", "r", "v2", "-m", "Release 2",
                   "--tagger", "Rel Eng <rel@example.com>").strip()  # fmt: skip
    assert len(annotated) == 40 and annotated != second
    assert ok(sqlite_url, "tag", "list", "r") == f"v1 {first}\nv2 {annotated}\n"
    assert cli(sqlite_url, "cat", "r", "v2", "bin/run").stdout_bytes == RUN_SCRIPT
    assert ok(sqlite_url, "log", "r", "v2", "-n", "1", "--oneline") == f"{second[:7]} two\n"
    with govc_db.open(sqlite_url) as store:
        kind, raw = store.repository("r").get_object(annotated)
    assert kind == "tag" and b"tagger Rel Eng <rel@example.com>" in raw
    assert raw.endswith(b"\n\nRelease 2\n")
    assert "already exists" in fails(sqlite_url, "tag", "create", "r", "v1")
    assert "--message" in fails(sqlite_url, "tag", "create", "r", "v3", "--tagger", AUTHOR)
    ok(sqlite_url, "tag", "delete", "r", "v1")
    assert fails(sqlite_url, "tag", "delete", "r", "v1") == "error: tag 'v1' not found\n"
    assert ok(sqlite_url, "tag", "list", "r") == f"v2 {annotated}\n"


def test_verify_and_stats(sqlite_url: str, worktree: Path) -> None:
    ok(sqlite_url, "repo", "create", "r")
    commit_tree(sqlite_url, worktree)
    assert ok(sqlite_url, "verify", "r").startswith("ok: ")
    assert fails(sqlite_url, "verify", "nope") == "error: repository 'nope' not found\n"
    report = ok(sqlite_url, "stats")
    assert "repositories  1\n" in report and "server        SQLite " in report


def test_usage_errors_exit_2(sqlite_url: str) -> None:
    fails(sqlite_url, "no-such-command", code=2)
    fails(sqlite_url, "log", code=2)  # missing REPO
    fails(sqlite_url, "cat", "r", "HEAD", code=2)  # missing PATH
    fails(sqlite_url, "branch", "frobnicate", "r", code=2)
    fails(sqlite_url, "log", "r", "--no-such-option", code=2)
    fails(sqlite_url, "demo", "--commits", "1", code=2)


def test_parse_person() -> None:
    sig = parse_person("  Ada Lovelace   <ada@example.com> ", when=1_700_000_000.7)
    assert (sig.name, sig.email, sig.time) == ("Ada Lovelace", "ada@example.com", 1_700_000_000)
    for bad in ("Ada", "<ada@example.com>", "Ada <a> <b>", "Ada <ada@example.com> x"):
        with pytest.raises(govc_db.InvalidInput):
            parse_person(bad)


# -- the main commands on both backends ----------------------------------------------------


def test_main_commands(db_url: str, worktree: Path) -> None:
    ok(db_url, "init")
    ok(db_url, "repo", "create", "r")
    first = commit_tree(db_url, worktree)
    (worktree / "data.bin").write_bytes(BINARY[::-1])
    second = ok(db_url, "commit", "r", str(worktree / "data.bin"), "--root", str(worktree),
                "-m", "flip", "--author", AUTHOR).strip()  # fmt: skip
    assert ok(db_url, "repo", "list") == "r\n"
    assert ls_modes(db_url, "r")["bin/run"][0] == "100755"
    assert ls_modes(db_url, "r")["link"][0] == "120000"
    assert cli(db_url, "cat", "r", "HEAD~1", "data.bin").stdout_bytes == BINARY
    assert cli(db_url, "cat", "r", "HEAD", "data.bin").stdout_bytes == BINARY[::-1]
    assert ok(db_url, "log", "r", "--oneline") == f"{second[:7]} flip\n{first[:7]} first\n"
    assert "M\tdata.bin\n" in ok(db_url, "show", "r", second)
    assert ok(db_url, "diff", "r", first, second).startswith("M\tdata.bin\n")
    assert ok(db_url, "branch", "create", "r", "dev", first) == first + "\n"
    assert ok(db_url, "tag", "create", "r", "v1") == second + "\n"
    assert ok(db_url, "verify", "r").startswith("ok: ")
    assert fails(db_url, "show", "nope", "HEAD") == "error: repository 'nope' not found\n"
    assert fails(db_url, "cat", "r", "nosuch", "data.bin") == "error: unknown revision 'nosuch'\n"


# -- the demo ------------------------------------------------------------------------------


def _all_commits(repo: govc_db.Repository) -> set[str]:
    return {c.oid for name in repo.branches() for c in repo.log(name)}


def test_run_demo_history(db_url: str) -> None:
    with govc_db.open(db_url) as store:
        summary = run_demo(store, commits=30, files=60)
        repo = store.repository("demo")
        assert summary.commits == 30
        assert len(_all_commits(repo)) == 30
        assert len(list(repo.log("main"))) == summary.main_commits
        assert summary.head == repo.resolve("main")
        assert repo.verify().ok
        branches, tags = repo.branches(), repo.tags()
        assert {"main", "staging"} <= set(branches) and summary.branches == len(branches)
        assert summary.tags == len(tags) >= 2
        kinds = {repo.get_object(oid)[0] for oid in tags.values()}
        assert kinds == {"commit", "tag"}  # lightweight and annotated
        modes = {e.path: e.mode for e in repo.walk("main")}
        assert len(modes) == summary.files >= 54
        assert modes["scripts/build.sh"] == 0o100755 and modes["docs/README.md"] == 0o120000
        assert b"\0" in repo.read("main", "assets/logo.png")
        assert repo.read("main", "README.md") != repo.read("main~20", "README.md")
        # Rerunning refuses to clobber; with replace=True it recreates the very same ids.
        with pytest.raises(govc_db.AlreadyExists):
            run_demo(store, commits=30, files=60)
        assert run_demo(store, commits=30, files=60, replace=True).head == summary.head
        assert run_demo(store, commits=30, files=60, name="demo-2").head == summary.head


def test_demo_ids_are_the_same_on_every_database(sqlite_url: str, pg_url: str) -> None:
    heads = []
    for url in (sqlite_url, pg_url):
        with govc_db.open(url) as store:
            heads.append(run_demo(store, commits=12, files=30).head)
    assert heads[0] == heads[1]


def test_demo_command_on_the_default_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GOVC_DB_URL", raising=False)
    out = ok(None, "demo", "--commits", "30", "--files", "60")
    for section in ("git log --oneline -n 10 main", "git diff --name-status", "README.md at main~",
                    "verify", "performance report (sqlite)"):  # fmt: skip
        assert section in out
    assert "ok: " in out
    with govc_db.open(f"sqlite:///{tmp_path / 'govc.db'}") as store:
        repo = store.repository("demo")
        assert repo.verify().ok
        assert len(_all_commits(repo)) == 30
        log = ok(None, "log", "demo", "-n", "10", "--oneline").splitlines()
        assert len(log) == 10 and log[0].startswith(repo.resolve("main")[:7])
        exported = export_repository(repo, tmp_path / "demo.git")
        main_length = len(list(repo.log("main")))
    # Real git accepts the history and agrees with the command's listings.
    git(exported, "fsck", "--strict", "--no-dangling")
    assert int(git(exported, "rev-list", "--count", "main")) == main_length
    assert ok(None, "ls", "demo", "v0.2.0", "-r") == git(
        exported, "ls-tree", "-r", "v0.2.0"
    ).decode("utf-8")
    name_status = git(exported, "diff-tree", "-r", "--no-renames", "--name-status", "v0.1.0",
                      "v0.2.0").decode("utf-8")  # fmt: skip
    assert ok(None, "diff", "demo", "v0.1.0", "v0.2.0").startswith(name_status)
