"""The ``govc-db`` command line.

The database comes from ``--url``, else ``GOVC_DB_URL``, else ``sqlite:///govc.db`` in the
current directory; apart from :meth:`Settings.from_env` this is the only module that reads
the environment. Every :class:`~govc_db.errors.GovcError` becomes one ``error: ...`` line on
stderr and exit status 1 (never a traceback); usage errors exit with 2, as click's do.
Data (ids, logs, listings, file bytes) goes to stdout unstyled so it can be piped.

Start-up matters for a command line: this module imports only typer and govc_db's light
modules; the store (SQLAlchemy, the driver), rich and the helpers of one command are
imported inside the commands that need them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import typer

import govc_db
from govc_db.cli_base import State as _State
from govc_db.cli_base import command as _command
from govc_db.cli_base import open_store as _open
from govc_db.cli_base import parse_person
from govc_db.cli_base import print_changes as _print_changes
from govc_db.cli_base import print_commit as _print_commit
from govc_db.cli_base import url_of as _url
from govc_db.cli_files import collect_files
from govc_db.cli_help import Group
from govc_db.errors import (
    AlreadyExists,
    GovcError,
    InvalidInput,
    NotFound,
    NothingToCommit,
)
from govc_db.types import Change, File, TreeEntry

if TYPE_CHECKING:
    from govc_db.api import Repository, Store

__all__ = ["DEFAULT_URL", "app", "collect_files", "main", "parse_person"]

#: The same default as :func:`govc_db.open` (kept here so ``--help`` needs no SQLAlchemy).
DEFAULT_URL = "sqlite:///govc.db"

# The arguments most commands share, with the help text that explains them.
Repo = Annotated[str, typer.Argument(help="Repository name.", show_default=False)]
Rev = Annotated[
    str, typer.Argument(help="Revision: branch, tag, id, HEAD; with ~N, ^N (docs/contract.md).")
]

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
    cls=Group,
    # Plain help, as git prints it: no rich import (a third of --help's start-up).
    rich_markup_mode=None,
)
_GROUP: dict[str, Any] = {"no_args_is_help": True, "cls": Group, "rich_markup_mode": None}
repo_app = typer.Typer(help="Create, list and delete repositories.", **_GROUP)
branch_app = typer.Typer(help="List, create, move and delete branches.", **_GROUP)
tag_app = typer.Typer(help="List, create and delete tags.", **_GROUP)
app.add_typer(repo_app, name="repo")
app.add_typer(branch_app, name="branch")
app.add_typer(tag_app, name="tag")


# -- root and store-level commands ------------------------------------------------------------


def _version(value: bool) -> None:
    if value:
        typer.echo(f"govc-db {govc_db.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    url: Annotated[
        str,
        typer.Option(
            "--url",
            envvar="GOVC_DB_URL",
            show_envvar=True,
            metavar="URL",
            help="Database URL (postgresql+psycopg://... or sqlite:///path).",
        ),
    ] = DEFAULT_URL,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Git-compatible version control stored in SQL databases (PostgreSQL, SQLite)."""
    ctx.obj = _State(url=url)


@_command(app)
def init(ctx: typer.Context) -> None:
    """Create the database if missing and upgrade its schema."""
    from govc_db.db.provision import ensure_database

    created = ensure_database(_url(ctx))
    store = _open(ctx, initialized=False)
    store.upgrade()
    typer.echo(f"{'created and ' if created else ''}initialized {store.url}")


@_command(app)
def stats(ctx: typer.Context) -> None:
    """Repositories, objects, bytes per table, settings, server version."""
    from govc_db.cli_stats import print_stats

    print_stats(_open(ctx))


@_command(app)
def verify(ctx: typer.Context, repo: Repo) -> None:
    """Check every object, ref and the commit index (fsck)."""
    from govc_db.cli_stats import progress_bar

    repository = _open(ctx).repository(repo)
    with progress_bar("verifying objects") as advance:
        report = repository.verify(progress=advance)
    for problem in report.problems:
        typer.echo(problem)
    if not report.ok:
        raise GovcError(f"{len(report.problems)} problems in {repo!r}")
    typer.echo(typer.style("ok", fg="green") + f": {report.objects_checked} objects checked")


def _free_name(base: str, taken: set[str]) -> str:
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


@_command(app)
def demo(
    ctx: typer.Context,
    name: Annotated[
        str | None,
        typer.Option(help="Repository to write (default 'demo', or the next free 'demo-N')."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Delete and recreate the repository if it exists.")
    ] = False,
    commits: Annotated[int, typer.Option(min=2, hidden=True)] = 200,
    files: Annotated[int, typer.Option(min=20, hidden=True)] = 500,
) -> None:
    """Write a demo history into a new repository and tour it."""
    from rich.console import Console

    from govc_db.demo import REPOSITORY, print_report, run_demo

    store = _open(ctx, initialized=False)
    store.upgrade()
    existing = set(store.list_repositories())
    target = name or REPOSITORY
    if target in existing and not force:
        if name is not None:
            raise AlreadyExists(
                f"repository {name!r} already exists (--force deletes and recreates it)"
            )
        target = _free_name(REPOSITORY, existing)
        typer.echo(
            f"repository {REPOSITORY!r} exists, writing the demo into {target!r} "
            f"(--force recreates {REPOSITORY!r})",
            err=True,
        )
    # soft_wrap: ids and paths are never re-wrapped; no emoji/markup in commit subjects.
    console = Console(soft_wrap=True, highlight=False, emoji=False)
    summary = run_demo(
        store, commits=commits, files=files, console=console, name=target, replace=force
    )
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


def _database_files(store: Store) -> frozenset[str]:
    database = store.engine.url.database
    if store.dialect != "sqlite" or database in (None, "", ":memory:"):
        return frozenset()
    path = os.path.abspath(database)
    return frozenset(path + suffix for suffix in ("", "-wal", "-shm", "-journal"))


@_command(app)
def commit(
    ctx: typer.Context,
    repo: Repo,
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
    sync: Annotated[
        bool,
        typer.Option(
            "--sync/--no-sync",
            help="Mirror each DIRECTORY argument: files gone from disk are deleted in the "
            "commit, as `git add DIR` does (default). --no-sync only adds and updates.",
        ),
    ] = True,
) -> None:
    """Commit files and directories (or deletions) to a branch.

    Files keep their exec bit; symlinks are stored as links.
    """
    from govc_db.cli_files import directory_prefixes, vanished

    sig = parse_person(author)
    store = _open(ctx)
    repository = store.repository(repo)
    target = branch or repository.default_branch
    changes: dict[str, File | None] = dict(
        collect_files(paths or [], root, exclude=_database_files(store))
    )
    for path in delete or []:
        if path in changes:
            raise InvalidInput(f"{path!r} is both written and deleted (--delete and a PATH)")
        changes[path] = None
    prefixes = directory_prefixes(paths or [], root)
    if sync and prefixes:
        for path in vanished(_tracked(repository, target), prefixes, changes):
            changes[path] = None
    if not message.endswith("\n"):
        message += "\n"  # as `git commit` stores it
    try:
        oid = repository.commit(
            target, changes, message=message, author=sig, allow_empty=allow_empty
        )
    except NothingToCommit:
        raise NothingToCommit(
            f"nothing to commit: the tree of {target!r} would not change "
            "(--allow-empty commits anyway)"
        ) from None
    finally:
        for f in changes.values():
            if f is not None and not isinstance(f.data, bytes):
                getattr(f.data, "close", lambda: None)()
    typer.echo(oid)


def _tracked(repository: Repository, branch: str) -> list[str]:
    """Every file path on ``branch`` (none before its first commit)."""
    if branch not in repository.branches():
        return []
    return [e.path for e in repository.walk(branch)]


# -- reading --------------------------------------------------------------------------------


@_command(app)
def log(
    ctx: typer.Context,
    repo: Repo,
    rev: Rev = "HEAD",
    path: Annotated[str | None, typer.Option(help="Only commits that changed this path.")] = None,
    max_count: Annotated[
        int | None,
        typer.Option("-n", "--max-count", min=0, metavar="N", help="Show at most N commits."),
    ] = None,
    oneline: Annotated[bool, typer.Option("--oneline", help="One line per commit.")] = False,
) -> None:
    """Show the history of a revision, newest first, as `git log`."""
    entries = _open(ctx).repository(repo).log(rev, path=path, limit=max_count)
    for n, info in enumerate(entries):
        _print_commit(info, oneline=oneline, first=n == 0)


@_command(app)
def show(ctx: typer.Context, repo: Repo, rev: Rev = "HEAD") -> None:
    """Show a commit and the files it changed (against its first parent)."""
    repository = _open(ctx).repository(repo)
    info = repository.get_commit(rev)
    _print_commit(info, oneline=False)
    typer.echo()
    if info.parents:
        changes = repository.diff(info.parents[0], info.oid)
    else:
        changes = [Change(e.path, "A", 0, e.mode, None, e.oid) for e in repository.walk(info.oid)]
    _print_changes(changes)


@_command(app)
def cat(ctx: typer.Context, repo: Repo, rev: Rev, path: str) -> None:
    """Write a file's exact bytes at a revision to stdout."""
    out = typer.get_binary_stream("stdout")
    # In 1 MiB pieces through one reused buffer (large files are streamed): readinto
    # fills it in place, where read(n) would allocate and fill a new 1 MiB each time.
    buf = bytearray(1024 * 1024)
    view = memoryview(buf)
    with _open(ctx).repository(repo).open(rev, path) as f:
        while n := f.readinto(buf):  # type: ignore[attr-defined]
            out.write(view[:n])
    out.flush()


@_command(app, "ls")
def ls(
    ctx: typer.Context,
    repo: Repo,
    rev: Rev,
    path: Annotated[str, typer.Argument(help="Directory or file (default: the root).")] = "",
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="All files below.")] = False,
) -> None:
    """List a directory (or one file) as `git ls-tree` does.

    Mode, type, id and path per entry; on a file, that file's entry.
    """
    repository = _open(ctx).repository(repo)
    entries = _file_entry(repository, rev, path)
    if entries is None:
        entries = list(repository.walk(rev, path) if recursive else repository.tree(rev, path))
    for e in entries:
        typer.echo(f"{e.mode:06o} {e.type} {e.oid}\t{e.path}")


def _file_entry(repository: Repository, rev: str, path: str) -> list[TreeEntry] | None:
    """``[entry]`` when ``path`` names a non-directory at ``rev``, else None."""
    if not path.strip("/"):
        return None
    parent, _, name = path.strip("/").rpartition("/")
    try:
        siblings = repository.tree(rev, parent)
    except NotFound:
        return None  # the directory listing reports what is missing
    for entry in siblings:
        if entry.name == name and entry.type != "tree":
            return [entry]
    return None


@_command(app)
def diff(ctx: typer.Context, repo: Repo, old: str, new: str) -> None:
    """List the files that differ between two revisions."""
    _print_changes(_open(ctx).repository(repo).diff(old, new))


# -- branches and tags ----------------------------------------------------------------------


@_command(branch_app, "list")
def branch_list(ctx: typer.Context, repo: Repo) -> None:
    """List branches with their commit ids (the default branch marked with *)."""
    repository = _open(ctx).repository(repo)
    for name, oid in sorted(repository.branches().items()):
        mark = "*" if name == repository.default_branch else " "
        typer.echo(f"{mark} {name} {oid}")


@_command(branch_app, "create")
def branch_create(ctx: typer.Context, repo: Repo, name: str, rev: Rev = "HEAD") -> None:
    """Create a branch at a revision; prints its commit id."""
    typer.echo(_open(ctx).repository(repo).create_branch(name, rev))


@_command(branch_app, "move")
def branch_move(
    ctx: typer.Context,
    repo: Repo,
    name: str,
    rev: str,
    force: Annotated[
        bool, typer.Option("--force", help="Allow a move that is not a fast-forward.")
    ] = False,
) -> None:
    """Move a branch to a revision (fast-forward only unless --force); prints its new id."""
    typer.echo(_open(ctx).repository(repo).move_branch(name, rev, force=force))


@_command(branch_app, "delete")
def branch_delete(ctx: typer.Context, repo: Repo, name: str) -> None:
    """Delete a branch (not the default branch)."""
    _open(ctx).repository(repo).delete_branch(name)
    typer.echo(f"deleted branch {name!r}")


@_command(tag_app, "list")
def tag_list(ctx: typer.Context, repo: Repo) -> None:
    """List tags with their targets (the tag object id for annotated tags)."""
    for name, oid in sorted(_open(ctx).repository(repo).tags().items()):
        typer.echo(f"{name} {oid}")


@_command(tag_app, "create")
def tag_create(
    ctx: typer.Context,
    repo: Repo,
    name: str,
    rev: Rev = "HEAD",
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
def tag_delete(ctx: typer.Context, repo: Repo, name: str) -> None:
    """Delete a tag."""
    _open(ctx).repository(repo).delete_tag(name)
    typer.echo(f"deleted tag {name!r}")


from govc_db.cli_merge import register as _register_merge  # noqa: E402

_register_merge(app)

from govc_db.interop.cli import register as _register_interop  # noqa: E402

_register_interop(app)

from govc_db.http.cli import register as _register_http  # noqa: E402

_register_http(app)

from govc_db.storage.cli import register as register_storage  # noqa: E402

register_storage(app)


def main() -> None:
    """Console-script entry point of ``govc-db``."""
    app()
