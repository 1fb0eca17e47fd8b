"""``govc-db stats`` output and the progress bar of long commands (imported on use)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from govc_db.api import Store

__all__ = ["human_bytes", "print_stats", "progress_bar"]


def human_bytes(n: int) -> str:
    """``1536`` -> ``1.5 KiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def print_stats(store: Store) -> None:
    """What the database holds and how this store is configured."""
    from govc_db.db.inventory import take_inventory

    inv = take_inventory(store.engine)
    s = store.settings
    echo = typer.echo
    echo(f"database      {store.url}")
    echo(f"server        {inv.server}")
    objects = sum(r.objects for r in inv.repositories)
    echo(f"repositories  {len(inv.repositories)}")
    echo(f"objects       {objects}")
    if inv.repositories:
        width = max(len(r.name) for r in inv.repositories)
        for r in inv.repositories:
            echo(f"  {r.name:<{width}}  {r.objects} objects, {r.commits} commits, {r.refs} refs")
    echo(f"stored bytes  {human_bytes(sum(inv.table_bytes.values()))}")
    width = max((len(t) for t in inv.table_bytes), default=0)
    for table, size in sorted(inv.table_bytes.items(), key=lambda kv: -kv[1]):
        echo(f"  {table:<{width}}  {human_bytes(size)}")
    prepare = "off" if s.prepare_threshold is None else f"after {s.prepare_threshold} runs"
    echo(
        f"pool          size {s.pool_size}, overflow {s.max_overflow}, "
        f"timeout {s.pool_timeout:g} s, recycle {s.pool_recycle:g} s"
    )
    cache = (
        f"on, {human_bytes(s.cache_max_bytes)}, ref TTL {s.cache_ref_ttl:g} s"
        if s.cache_enabled
        else "off"
    )
    echo(f"cache         {cache}")
    echo(f"prepared      {prepare}")
    echo(f"compression   {s.compression}")


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A transient rich progress bar on stderr; yields ``advance(done, total)``.

    Shown only on a terminal (rich decides), and it disappears when done, so stdout and
    non-interactive stderr stay exactly as without it.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as progress:
        task = progress.add_task(description, total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield advance
