"""``govc-db import NAME PATH`` and ``govc-db export NAME PATH``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the ``import`` and ``export`` commands to the ``govc-db`` app."""
    from govc_db.cli_base import command, open_store

    @command(app, "import")
    def import_command(
        ctx: typer.Context,
        name: str,
        path: Annotated[Path, typer.Argument(help="A local git repository (bare or not).")],
        ref: Annotated[
            list[str] | None, typer.Option("--ref", help="Import only this ref (repeatable).")
        ] = None,
        force: Annotated[
            bool, typer.Option("--force", help="Overwrite refs moved in govc_db meanwhile.")
        ] = False,
    ) -> None:
        """Import every branch and tag of a git repository, ids identical."""
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        store = open_store(ctx)
        console = Console(stderr=True)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        ) as bar:
            tasks: dict[str, object] = {}

            def progress(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(stage, total=total or None)
                task = tasks[stage]
                bar.update(task, completed=done, total=total or None)  # type: ignore[arg-type]

            report = store.import_git(name, path, refs=ref, force=force, progress=progress)
        typer.echo(
            f"imported {report.objects} objects, indexed {report.commits_indexed} commits, "
            f"updated {len(report.refs_updated)} refs of {name!r} in {report.seconds:.2f}s"
        )

    @command(app, "export")
    def export_command(
        ctx: typer.Context,
        name: str,
        path: Annotated[Path, typer.Argument(help="Where to write the bare git repository.")],
    ) -> None:
        """Write a repository as a bare git repository (one pack, every ref)."""
        report = open_store(ctx).repository(name).export_git(path)
        typer.echo(
            f"exported {report.objects} objects and {len(report.refs)} refs to {report.path}"
        )
