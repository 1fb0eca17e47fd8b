"""Plumbing shared by the ``govc-db`` commands: the per-invocation state, one-line
errors, opening the store, and printing commits and changes the way git does.

Like :mod:`govc_db.cli`, it imports only typer and govc_db's light modules at start-up.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import typer

import govc_db
from govc_db.cli_help import Command
from govc_db.errors import GovcError, InvalidInput, NotFound, SchemaNotReady, StoreUnavailable
from govc_db.objects import format_offset
from govc_db.types import Change, CommitInfo

if TYPE_CHECKING:
    from govc_db.api import Store

__all__ = [
    "State",
    "command",
    "open_store",
    "parse_person",
    "print_changes",
    "print_commit",
    "short",
    "url_of",
]

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class State:
    """What the root callback learned for the commands of this invocation."""

    url: str


def _user_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn a GovcError into one ``error:`` line on stderr and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except GovcError as exc:
            message = " ".join(str(exc).split()) or type(exc).__name__
            if isinstance(exc, StoreUnavailable) and not _diagnosed(exc):
                message = _diagnosis(args, kwargs) or message
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(1) from None

    return wrapper


def command(
    group: typer.Typer, name: str | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Register a command on ``group`` with one-line errors and git-like help."""

    def register(fn: Callable[P, R]) -> Callable[P, R]:
        group.command(name, cls=Command)(_user_errors(fn))
        return fn

    return register


def _diagnosed(exc: GovcError) -> bool:
    from govc_db.db.provision import Unreachable

    return isinstance(exc, Unreachable)


def _diagnosis(args: tuple[object, ...], kwargs: dict[str, object]) -> str | None:
    """Why the database of this invocation is unreachable, in one line (no password)."""
    # Commands receive their context as ``ctx`` (typer passes parameters by keyword).
    ctx = kwargs.get("ctx")
    find = getattr(ctx, "find_object", None)
    state = find(State) if find is not None else None
    if state is None:
        return None
    from govc_db.db.provision import diagnose

    try:
        return diagnose(state.url)
    except GovcError:
        return None


def url_of(ctx: typer.Context) -> str:
    """The database URL of this invocation (``--url``, ``GOVC_DB_URL`` or the default)."""
    state = ctx.find_object(State)
    assert state is not None, "the root callback always sets the state"
    return state.url


def open_store(
    ctx: typer.Context, *, initialized: bool = True, long_running: bool = False
) -> Store:
    """Open the store for this invocation; it is closed when the command ends.

    A one-shot command needs no LISTEN connection: other processes' ref moves cannot
    reach a cache that dies with the process (and no listener warnings are printed).
    A ``long_running`` command (a server) keeps the settings as the environment gives
    them, cross-process cache invalidation included.
    """
    settings = govc_db.Settings.from_env()
    if not long_running:
        settings = dataclasses.replace(settings, notify_enabled=False)
    store = govc_db.open(url_of(ctx), settings)
    ctx.call_on_close(store.close)
    if initialized:
        _require_schema(store)
    return store


def _require_schema(store: Store) -> None:
    from govc_db.db import migrate
    from govc_db.db.provision import sqlite_problem

    # Checked before connecting: SQLite would silently create an empty file.
    if store.dialect == "sqlite":
        problem = sqlite_problem(store.engine.url, create=False)
        if problem is not None:
            raise NotFound(problem)
    current = migrate.current_revision(store.engine)
    if current is None:
        raise SchemaNotReady(f"database {store.url} is not initialized (run `govc-db init`)")
    head = migrate.head_revision()
    if current != head:
        raise SchemaNotReady(
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


def short(oid: str) -> str:
    """An id abbreviated as ``git log --oneline`` shows it."""
    return oid[:7]


def _date(sig: govc_db.Signature) -> str:
    """The default date format of git, in the signature's own zone."""
    dt = datetime.fromtimestamp(sig.time, timezone(timedelta(minutes=sig.offset)))
    return f"{dt:%a %b} {dt.day} {dt:%H:%M:%S %Y} {format_offset(sig.offset)}"


def _subject(info: CommitInfo) -> str:
    return info.message.split("\n", 1)[0]


def print_commit(info: CommitInfo, *, oneline: bool, first: bool = True) -> None:
    """One commit as ``git log`` (medium format) or ``git log --oneline`` prints it."""
    if oneline:
        typer.echo(typer.style(short(info.oid), fg="yellow") + " " + _subject(info))
        return
    if not first:
        typer.echo()  # git separates commits by one blank line
    typer.secho(f"commit {info.oid}", fg="yellow")
    if len(info.parents) > 1:
        typer.echo("Merge: " + " ".join(short(p) for p in info.parents))
    a = info.author
    typer.echo(f"Author: {a.name} <{a.email}>")
    typer.echo(f"Date:   {_date(a)}\n")
    for line in info.message.rstrip("\n").split("\n"):
        typer.echo(f"    {line}")  # blank lines too, as git prints them


def print_changes(changes: list[Change]) -> None:
    """Status and path per change, then a one-line summary."""
    for c in changes:
        typer.echo(f"{c.status}\t{c.path}")
    counts = {s: sum(1 for c in changes if c.status == s) for s in "AMDT"}
    names = {"A": "added", "M": "modified", "D": "deleted", "T": "type changed"}
    detail = ", ".join(f"{n} {names[s]}" for s, n in counts.items() if n)
    plural = "" if len(changes) == 1 else "s"
    typer.echo(f" {len(changes)} file{plural} changed" + (f" ({detail})" if detail else ""))
