"""``govc-db serve`` and ``govc-db token create``: registered on the main command.

``serve`` runs :func:`govc_db.http.create_app` under uvicorn. With ``--workers N`` uvicorn
starts N processes, each building the app from the environment this command sets
(``GOVC_DB_URL``, ``GOVC_DB_HTTP_PUBLIC_READ``, ``GOVC_DB_HTTP_ALLOW_PUSH``,
``GOVC_DB_HTTP_ACCESS_LOG``) through
:func:`app_from_env`. SIGTERM/SIGINT stop accepting connections and let requests in
flight finish (up to ``--graceful-timeout`` seconds); the store is closed afterwards.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated

import typer

import govc_db
from govc_db.errors import GovcError

if TYPE_CHECKING:  # starlette and uvicorn are the optional "http" extra
    from starlette.types import ASGIApp

__all__ = ["app_from_env", "register"]

_ENV_PUBLIC = "GOVC_DB_HTTP_PUBLIC_READ"
_ENV_PUSH = "GOVC_DB_HTTP_ALLOW_PUSH"
_ENV_LOG = "GOVC_DB_HTTP_ACCESS_LOG"


def _url(ctx: typer.Context, url: str | None) -> str:
    if url:
        return url
    state = ctx.find_root().obj
    found = getattr(state, "url", None)
    return found if isinstance(found, str) else (os.environ.get("GOVC_DB_URL") or "")


def _check_schema(store: govc_db.Store) -> None:
    from govc_db.db import migrate

    current = migrate.current_revision(store.engine)
    if current != migrate.head_revision():
        raise GovcError(f"database {store.url} is not at the newest schema (run `govc-db init`)")


def _log_requests() -> None:
    """Request log lines on stderr (each server process sets this up for itself)."""
    logger = logging.getLogger("govc_db.http")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def server_settings(environ: Mapping[str, str] | None = None) -> govc_db.Settings:
    """``Settings.from_env()`` with what a long-running server wants on by default:
    request coalescing and the memory optimizer (each still switched off by its
    ``GOVC_DB_*`` variable)."""
    env = os.environ if environ is None else environ
    settings = govc_db.Settings.from_env(env)
    if "GOVC_DB_COALESCE_ENABLED" not in env:
        settings = dataclasses.replace(settings, coalesce_enabled=True)
    if "GOVC_DB_MEMORY_OPTIMIZER" not in env:
        settings = dataclasses.replace(settings, memory_optimizer=True)
    return settings


def app_from_env() -> ASGIApp:
    """The app of one server process, configured by the environment ``serve`` set."""
    from govc_db.http import create_app

    if os.environ.get(_ENV_LOG, "1") != "0":
        _log_requests()
    store = govc_db.open(settings=server_settings())
    return create_app(
        store,
        public_read=os.environ.get(_ENV_PUBLIC) == "1",
        allow_push=os.environ.get(_ENV_PUSH) == "1",
        close_store=True,
    )


def _stopped(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _fail(exc: GovcError) -> typer.Exit:
    typer.echo(f"error: {' '.join(str(exc).split()) or type(exc).__name__}", err=True)
    return typer.Exit(1)


def serve(
    ctx: typer.Context,
    url: Annotated[
        str | None, typer.Option("--url", help="Database URL (default: the global --url).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    workers: Annotated[int, typer.Option(min=1, help="Server processes.")] = 1,
    public_read: Annotated[
        bool, typer.Option("--public-read", help="Allow reads without a token.")
    ] = False,
    allow_push: Annotated[
        bool, typer.Option("--allow-push", help="Accept git pushes (write token needed).")
    ] = False,
    access_log: Annotated[
        bool, typer.Option("--access-log/--no-access-log", help="One log line per request.")
    ] = True,
    graceful_timeout: Annotated[
        int, typer.Option(min=0, help="Seconds in-flight requests get at shutdown.")
    ] = 30,
) -> None:
    """Run the HTTP service (REST API, and git's smart HTTP when available)."""
    import uvicorn

    os.environ["GOVC_DB_URL"] = _url(ctx, url)
    os.environ[_ENV_PUBLIC] = "1" if public_read else "0"
    os.environ[_ENV_PUSH] = "1" if allow_push else "0"
    os.environ[_ENV_LOG] = "1" if access_log else "0"
    try:
        with govc_db.open() as store:
            _check_schema(store)
    except GovcError as exc:
        raise _fail(exc) from None
    # uvicorn finishes the requests in flight on SIGTERM, then raises the signal again
    # with the handler it found: a stop asked for is a clean exit (status 0).
    signal.signal(signal.SIGTERM, _stopped)
    uvicorn.run(
        "govc_db.http.cli:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,  # ours logs without query strings; uvicorn's would log them
        timeout_graceful_shutdown=graceful_timeout,
        log_level="info",
        lifespan="on",
    )


def token_create(
    ctx: typer.Context,
    repo: Annotated[
        str | None, typer.Option("--repo", help="Only this repository (default: all).")
    ] = None,
    write: Annotated[bool, typer.Option("--write", help="Allow writes and pushes.")] = False,
) -> None:
    """Create an API token and print it once (only its hash is stored)."""
    from govc_db.http.auth import create_token

    try:
        with govc_db.open(_url(ctx, None)) as store:
            _check_schema(store)
            typer.echo(create_token(store, repository=repo, write=write))
    except GovcError as exc:
        raise _fail(exc) from None


def register(app: typer.Typer) -> None:
    """Add ``serve`` and ``token create`` to the ``govc-db`` command."""
    from govc_db.cli_help import Command

    app.command("serve", cls=Command)(serve)
    tokens = typer.Typer(help="Manage API tokens of the HTTP service.", no_args_is_help=True)
    tokens.command("create", cls=Command)(token_create)
    app.add_typer(tokens, name="token")
