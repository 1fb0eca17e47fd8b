"""``govc-db gc [NAME]``: storage maintenance with a progress bar (rich)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rich.progress import TaskID

__all__ = ["register"]

MIB = 1024 * 1024


def register(app: typer.Typer) -> None:
    """Add the ``gc`` command to the ``govc-db`` app."""
    from govc_db.cli_base import command as _command
    from govc_db.cli_base import open_store as _open

    @_command(app, "gc")
    def gc(
        ctx: typer.Context,
        name: Annotated[str | None, typer.Argument(help="Repository (default: all).")] = None,
        full: Annotated[
            bool | None,
            typer.Option(
                "--full/--incremental",
                help="Repack every object / pack only the objects written since "
                "(default: repack when that pays).",
            ),
        ] = None,
    ) -> None:
        """Pack objects into compressed pack rows (git gc); safe while others commit and read."""
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        store = _open(ctx)
        names = [name] if name is not None else store.list_repositories()
        console = Console(stderr=True)
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(
            *columns, console=console, transient=True, disable=not console.is_terminal
        ) as bar:
            for n in names:
                repo = store.repository(n)
                task = bar.add_task(f"gc {n}", total=None)

                def step(done: int, total: int, task: TaskID = task) -> None:
                    bar.update(task, completed=done, total=total)

                r = repo.gc(progress=step, full=full)
                bar.remove_task(task)
                typer.echo(
                    f"{n}: {r.objects} objects, {r.rewritten} packed in {r.packs} packs, "
                    f"{r.loose} left loose, "
                    f"{r.bytes_before / MIB:.2f} MiB -> {r.bytes_after / MIB:.2f} MiB, "
                    f"{r.seconds:.2f} s"
                    + ("" if r.full else " (incremental)")
                    + (" (interrupted)" if r.interrupted else "")
                )
