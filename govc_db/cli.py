"""The ``govc-db`` command line.

The database comes from ``--url``, else ``GOVC_DB_URL``, else ``sqlite:///govc.db`` in the
current directory; apart from :meth:`Settings.from_env` this is the only module that reads
the environment. Every :class:`~govc_db.errors.GovcError` becomes one ``error: ...`` line on
stderr and exit status 1 (never a traceback); usage errors exit with 2, as click's do.
Data (ids, logs, listings, file bytes) goes to stdout unstyled so it can be piped.
"""

from __future__ import annotations

import functools
import os
import re
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console

import govc_db
from govc_db.api.store import DEFAULT_URL
from govc_db.errors import GovcError, InvalidInput, NotFound
from govc_db.objects import MODE_EXEC, MODE_FILE, MODE_LINK, format_offset
from govc_db.types import Change, CommitInfo, File

__all__ = ["app", "main", "parse_person"]

P = ParamSpec("P")
R = TypeVar("R")

# soft_wrap: never re-wrap ids or paths to the terminal width.

app = typer.Typer(
    name="govc-db",
    help="Git-compatible version control stored in SQL databases (PostgreSQL, SQLite).",
    no_args_is_help=True,
    add_completion=False,
    # Locals could hold a database URL with its password.
    pretty_exceptions_show_locals=False,
)
repo_app = typer.Typer(help="Create, list and delete repositories.", no_args_is_help=True)
branch_app = typer.Typer(help="List, create, move and delete branches.", no_args_is_help=True)
tag_app = typer.Typer(help="List, create and delete tags.", no_args_is_help=True)
app.add_typer(repo_app, name="repo")
app.add_typer(branch_app, name="branch")
app.add_typer(tag_app, name="tag")


# -- plumbing -------------------------------------------------------------------------------


@dataclass
class _State:
    url: str


def _user_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn a GovcError into one ``error:`` line on stderr and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except GovcError as exc:
            message = " ".join(str(exc).split()) or type(exc).__name__
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(1) from None

    return wrapper


def _command(
    group: typer.Typer, name: str | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    def register(fn: Callable[P, R]) -> Callable[P, R]:
        group.command(name)(_user_errors(fn))
        return fn

    return register


def _open(ctx: typer.Context, *, initialized: bool = True) -> govc_db.Store:
    """Open the store for this invocation; it is closed when the command ends."""
    state = ctx.find_object(_State)
    assert state is not None, "the root callback always sets the state"
    store = govc_db.open(state.url)
    ctx.call_on_close(store.close)
    if initialized:
        _require_schema(store)
    return store


def _require_schema(store: govc_db.Store) -> None:
    from govc_db.db import migrate

    database = store.engine.url.database
    in_file = store.dialect == "sqlite" and database not in (None, "", ":memory:")
    # Checked before connecting: SQLite would silently create an empty file.
    if in_file and database is not None and not os.path.exists(database):
        raise NotFound(f"database file {database!r} does not exist (run `govc-db init`)")
    current = migrate.current_revision(store.engine)
    if current is None:
        raise GovcError(f"database {store.url} is not initialized (run `govc-db init`)")
    head = migrate.head_revision()
    if current != head:
        raise GovcError(
            f"database schema is at revision {current}, this version needs {head} "
            "(run `govc-db init` to upgrade)"
        )


_PERSON = re.compile(r"\s*([^<>]*?)\s*<([^<>]*)>\s*")


def parse_person(text: str, *, when: float | None = None) -> govc_db.Signature:
    """A Signature from ``"Name <email>"`` at ``when`` (default now) in the local zone."""
    m = _PERSON.fullmatch(text)
    if m is None or not m.group(1):
        raise InvalidInput(f"expected 'Name <email>', got {text!r}")
    stamp = time.time() if when is None else when
    utc_offset = datetime.fromtimestamp(stamp, UTC).astimezone().utcoffset()
    minutes = int((utc_offset or timedelta(0)).total_seconds() // 60)
    return govc_db.Signature(m.group(1), m.group(2).strip(), int(stamp), minutes)


def _short(oid: str) -> str:
    return oid[:7]


def _date(sig: govc_db.Signature) -> str:
    """The default date format of git, in the signature's own zone."""
    dt = datetime.fromtimestamp(sig.time, timezone(timedelta(minutes=sig.offset)))
    return f"{dt:%a %b} {dt.day} {dt:%H:%M:%S %Y} {format_offset(sig.offset)}"


def _subject(info: CommitInfo) -> str:
    return info.message.split("\n", 1)[0]


def _print_commit(info: CommitInfo, *, oneline: bool) -> None:
    if oneline:
        typer.echo(typer.style(_short(info.oid), fg="yellow") + " " + _subject(info))
        return
    typer.secho(f"commit {info.oid}", fg="yellow")
    if len(info.parents) > 1:
        typer.echo("Merge: " + " ".join(_short(p) for p in info.parents))
    a = info.author
    typer.echo(f"Author: {a.name} <{a.email}>")
    typer.echo(f"Date:   {_date(a)}\n")
    for line in info.message.rstrip("\n").split("\n"):
        typer.echo(f"    {line}".rstrip())
    typer.echo()


def _print_changes(changes: list[Change]) -> None:
    for c in changes:
        typer.echo(f"{c.status}\t{c.path}")
    counts = {s: sum(1 for c in changes if c.status == s) for s in "AMDT"}
    names = {"A": "added", "M": "modified", "D": "deleted", "T": "type changed"}
    detail = ", ".join(f"{n} {names[s]}" for s, n in counts.items() if n)
    plural = "" if len(changes) == 1 else "s"
    typer.echo(f" {len(changes)} file{plural} changed" + (f" ({detail})" if detail else ""))


# -- root and store-level commands ------------------------------------------------------------


@app.callback()
def _root(
    ctx: typer.Context,
    url: Annotated[
        str,
        typer.Option(
            "--url",
            envvar="GOVC_DB_URL",
            show_envvar=True,
            help="Database URL (postgresql+psycopg://... or sqlite:///path).",
        ),
    ] = DEFAULT_URL,
) -> None:
    """Git-compatible version control stored in SQL databases (PostgreSQL, SQLite)."""
    ctx.obj = _State(url=url)


@_command(app)
def init(ctx: typer.Context) -> None:
    """Create the database if needed and upgrade its schema to this version."""
    store = _open(ctx, initialized=False)
    store.upgrade()
    typer.echo(f"initialized {store.url}")


@_command(app)
def stats(ctx: typer.Context) -> None:
    """Print the performance report of this process's store."""
    store = _open(ctx)
    names = store.list_repositories()
    typer.echo(f"{len(names)} repositories in {store.url}")
    typer.echo(store.performance_report())


@_command(app)
def verify(ctx: typer.Context, repo: Annotated[str, typer.Argument()]) -> None:
    """Check every object id, ref and the commit graph of a repository (fsck)."""
    report = _open(ctx).repository(repo).verify()
    for problem in report.problems:
        typer.echo(problem)
    if not report.ok:
        raise GovcError(f"{len(report.problems)} problems in {repo!r}")
    typer.echo(typer.style("ok", fg="green") + f": {report.objects_checked} objects checked")


@_command(app)
def demo(
    ctx: typer.Context,
    commits: Annotated[int, typer.Option(min=2, hidden=True)] = 200,
    files: Annotated[int, typer.Option(min=20, hidden=True)] = 500,
) -> None:
    """(Re)create the repository 'demo' with a realistic history, then tour it."""
    from govc_db.demo import print_report, run_demo

    store = _open(ctx, initialized=False)
    store.upgrade()
    # soft_wrap: ids and paths are never re-wrapped; no emoji/markup in commit subjects.
    console = Console(soft_wrap=True, highlight=False, emoji=False)
    summary = run_demo(store, commits=commits, files=files, console=console)
    print_report(store, summary, console=console)


# -- repositories ---------------------------------------------------------------------------


@_command(repo_app, "create")
def repo_create(
    ctx: typer.Context,
    name: str,
    default_branch: Annotated[str, typer.Option(help="Name of the first branch.")] = "main",
) -> None:
    """Create an empty repository."""
    _open(ctx).create_repository(name, default_branch=default_branch)
    typer.echo(f"created repository {name!r} (default branch {default_branch!r})")


@_command(repo_app, "list")
def repo_list(ctx: typer.Context) -> None:
    """List repository names."""
    for name in _open(ctx).list_repositories():
        typer.echo(name)


@_command(repo_app, "delete")
def repo_delete(
    ctx: typer.Context,
    name: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a repository and all of its history."""
    store = _open(ctx)
    store.repository(name)  # a missing repository fails before the question
    if not yes:
        typer.confirm(f"Delete repository {name!r} and all of its history?", abort=True)
    store.delete_repository(name)
    typer.echo(f"deleted repository {name!r}")


# -- commit ---------------------------------------------------------------------------------


def _file_at(path: str) -> File | None:
    """The File for a symlink or regular file; None for other kinds (fifo, socket ...)."""
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            return File(os.fsencode(os.readlink(path)), MODE_LINK)
        if stat.S_ISREG(st.st_mode):
            with open(path, "rb") as fh:
                data = fh.read()
            # Like git: only the owner's execute bit decides between 755 and 644.
            return File(data, MODE_EXEC if st.st_mode & stat.S_IXUSR else MODE_FILE)
    except OSError as exc:
        raise InvalidInput(f"cannot read {path!r}: {exc.strerror or exc}") from None
    return None


def _walk(top: str) -> Iterator[str]:
    """Every non-directory below ``top``; symlinked directories are yielded, not followed."""
    for current, dirs, names in os.walk(top, onerror=_raise_walk_error):
        keep = []
        for d in sorted(dirs):
            full = os.path.join(current, d)
            if d.lower() == ".git":
                continue  # a git checkout's own metadata is never content
            if os.path.islink(full):
                yield full
            else:
                keep.append(d)
        dirs[:] = keep
        for n in sorted(names):
            yield os.path.join(current, n)


def _raise_walk_error(exc: OSError) -> None:
    raise InvalidInput(f"cannot read {exc.filename!r}: {exc.strerror or exc}")


def collect_files(
    paths: list[Path], root: Path, *, exclude: frozenset[str] = frozenset()
) -> dict[str, File]:
    """Map repository path -> File for files and directory trees below ``root``.

    ``exclude`` holds absolute paths to skip (the SQLite database being written to).
    """
    base = os.path.abspath(root)
    out: dict[str, File] = {}
    for given in paths:
        top = os.path.abspath(given)
        rel = os.path.relpath(top, base)
        if rel == os.pardir or rel.startswith(os.pardir + os.sep):
            raise InvalidInput(f"{str(given)!r} is outside the root {str(root)!r}")
        if not os.path.lexists(top):
            raise NotFound(f"no such file or directory: {str(given)!r}")
        if top in exclude:
            raise InvalidInput(f"refusing to commit the database file {str(given)!r}")
        is_tree = os.path.isdir(top) and not os.path.islink(top)
        for full in _walk(top) if is_tree else [top]:
            if full in exclude:
                continue
            entry = _file_at(full)
            if entry is None:
                if not is_tree:
                    raise InvalidInput(f"{str(given)!r} is not a regular file or symlink")
                continue
            out[os.path.relpath(full, base).replace(os.sep, "/")] = entry
    return out


def _database_files(store: govc_db.Store) -> frozenset[str]:
    database = store.engine.url.database
    if store.dialect != "sqlite" or database in (None, "", ":memory:"):
        return frozenset()
    path = os.path.abspath(database)
    return frozenset(path + suffix for suffix in ("", "-wal", "-shm", "-journal"))


@_command(app)
def commit(
    ctx: typer.Context,
    repo: str,
    message: Annotated[str, typer.Option("--message", "-m", help="Commit message.")],
    author: Annotated[str, typer.Option(help="'Name <email>' (time: now, local zone).")],
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Files or directory trees to store.")
    ] = None,
    branch: Annotated[str | None, typer.Option(help="Default: the default branch.")] = None,
    root: Annotated[
        Path, typer.Option(help="Directory that repository paths are relative to.")
    ] = Path("."),
    delete: Annotated[
        list[str] | None, typer.Option("--delete", help="Repository path to delete (repeatable).")
    ] = None,
    allow_empty: Annotated[
        bool, typer.Option("--allow-empty", help="Commit even if nothing changed.")
    ] = False,
) -> None:
    """Commit files (with their exec bit; symlinks as links) and deletions to a branch."""
    sig = parse_person(author)
    store = _open(ctx)
    repository = store.repository(repo)
    changes: dict[str, File | None] = dict(
        collect_files(paths or [], root, exclude=_database_files(store))
    )
    for path in delete or []:
        if path in changes:
            raise InvalidInput(f"{path!r} is both written and deleted")
        changes[path] = None
    if not message.endswith("\n"):
        message += "\n"  # as `git commit` stores it
    typer.echo(
        repository.commit(
            branch or repository.default_branch,
            changes,
            message=message,
            author=sig,
            allow_empty=allow_empty,
        )
    )


# -- reading --------------------------------------------------------------------------------


@_command(app)
def log(
    ctx: typer.Context,
    repo: str,
    rev: Annotated[str, typer.Argument()] = "HEAD",
    path: Annotated[str | None, typer.Option(help="Only commits that changed this path.")] = None,
    max_count: Annotated[int | None, typer.Option("-n", "--max-count", min=0)] = None,
    oneline: Annotated[bool, typer.Option("--oneline", help="One line per commit.")] = False,
) -> None:
    """Show the history reachable from a revision, newest first."""
    for info in _open(ctx).repository(repo).log(rev, path=path, limit=max_count):
        _print_commit(info, oneline=oneline)


@_command(app)
def show(ctx: typer.Context, repo: str, rev: Annotated[str, typer.Argument()] = "HEAD") -> None:
    """Show a commit and the files it changed (against its first parent)."""
    repository = _open(ctx).repository(repo)
    info = repository.get_commit(rev)
    _print_commit(info, oneline=False)
    if info.parents:
        changes = repository.diff(info.parents[0], info.oid)
    else:
        changes = [Change(e.path, "A", 0, e.mode, None, e.oid) for e in repository.walk(info.oid)]
    _print_changes(changes)


@_command(app)
def cat(ctx: typer.Context, repo: str, rev: str, path: str) -> None:
    """Write a file's exact bytes at a revision to stdout."""
    data = _open(ctx).repository(repo).read(rev, path)
    out = typer.get_binary_stream("stdout")
    out.write(data)
    out.flush()


@_command(app, "ls")
def ls(
    ctx: typer.Context,
    repo: str,
    rev: str,
    path: Annotated[str, typer.Argument()] = "",
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="All files below.")] = False,
) -> None:
    """List a directory at a revision as `git ls-tree` does: mode, type, id, path."""
    repository = _open(ctx).repository(repo)
    entries = repository.walk(rev, path) if recursive else iter(repository.tree(rev, path))
    for e in entries:
        typer.echo(f"{e.mode:06o} {e.type} {e.oid}\t{e.path}")


@_command(app)
def diff(ctx: typer.Context, repo: str, old: str, new: str) -> None:
    """List the files that differ between two revisions (status and path)."""
    _print_changes(_open(ctx).repository(repo).diff(old, new))


# -- branches and tags ----------------------------------------------------------------------


@_command(branch_app, "list")
def branch_list(ctx: typer.Context, repo: str) -> None:
    """List branches with their commit ids (the default branch marked with *)."""
    repository = _open(ctx).repository(repo)
    for name, oid in sorted(repository.branches().items()):
        mark = "*" if name == repository.default_branch else " "
        typer.echo(f"{mark} {name} {oid}")


@_command(branch_app, "create")
def branch_create(
    ctx: typer.Context, repo: str, name: str, rev: Annotated[str, typer.Argument()] = "HEAD"
) -> None:
    """Create a branch at a revision; prints its commit id."""
    typer.echo(_open(ctx).repository(repo).create_branch(name, rev))


@_command(branch_app, "move")
def branch_move(
    ctx: typer.Context,
    repo: str,
    name: str,
    rev: str,
    force: Annotated[
        bool, typer.Option("--force", help="Allow a move that is not a fast-forward.")
    ] = False,
) -> None:
    """Move a branch to a revision (fast-forward only unless --force); prints its new id."""
    typer.echo(_open(ctx).repository(repo).move_branch(name, rev, force=force))


@_command(branch_app, "delete")
def branch_delete(ctx: typer.Context, repo: str, name: str) -> None:
    """Delete a branch (not the default branch)."""
    _open(ctx).repository(repo).delete_branch(name)
    typer.echo(f"deleted branch {name!r}")


@_command(tag_app, "list")
def tag_list(ctx: typer.Context, repo: str) -> None:
    """List tags with their targets (the tag object id for annotated tags)."""
    for name, oid in sorted(_open(ctx).repository(repo).tags().items()):
        typer.echo(f"{name} {oid}")


@_command(tag_app, "create")
def tag_create(
    ctx: typer.Context,
    repo: str,
    name: str,
    rev: Annotated[str, typer.Argument()] = "HEAD",
    message: Annotated[
        str | None, typer.Option("--message", "-m", help="Make an annotated tag.")
    ] = None,
    tagger: Annotated[str | None, typer.Option(help="'Name <email>' of an annotated tag.")] = None,
) -> None:
    """Create a lightweight tag, or an annotated one with -m; prints the tag's target."""
    who = None if tagger is None else parse_person(tagger)
    if who is not None and message is None:
        raise InvalidInput("--tagger needs --message (only annotated tags have a tagger)")
    if message is not None and not message.endswith("\n"):
        message += "\n"
    typer.echo(_open(ctx).repository(repo).create_tag(name, rev, message=message, tagger=who))


@_command(tag_app, "delete")
def tag_delete(ctx: typer.Context, repo: str, name: str) -> None:
    """Delete a tag."""
    _open(ctx).repository(repo).delete_tag(name)
    typer.echo(f"deleted tag {name!r}")


from govc_db.storage.cli import register as register_storage  # noqa: E402

register_storage(app)


def main() -> None:
    """Console-script entry point of ``govc-db``."""
    app()
