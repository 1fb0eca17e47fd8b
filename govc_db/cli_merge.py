"""``govc-db merge``, ``cherry-pick`` and ``revert``: the merge commands of the CLI.

Kept in their own module (registered by :func:`register`) so the main command module
stays small. A conflict prints one git-style ``CONFLICT (<kind>): <path>`` line per
conflicted path on stderr, then the usual ``error:`` line, and exits with status 1;
nothing was changed.
"""

from __future__ import annotations

from typing import Annotated

import typer

from govc_db.errors import MergeConflict

__all__ = ["register"]


def _print_conflicts(exc: MergeConflict) -> None:
    for c in exc.conflicts:
        typer.echo(f"CONFLICT ({c.kind}): {c.path}", err=True)


def register(app: typer.Typer) -> None:
    """Add the merge commands to ``app``."""
    from govc_db.cli_base import command as _command
    from govc_db.cli_base import open_store as _open
    from govc_db.cli_base import parse_person

    def _message(text: str | None) -> str | None:
        if text is not None and not text.endswith("\n"):
            text += "\n"  # as git stores it
        return text

    @_command(app, "merge")
    def merge(
        ctx: typer.Context,
        repo: str,
        branch: str,
        rev: str,
        author: Annotated[
            str | None, typer.Option(help="'Name <email>' (time: now, local zone).")
        ] = None,
        message: Annotated[str | None, typer.Option("--message", "-m")] = None,
        no_ff: Annotated[
            bool, typer.Option("--no-ff", help="Make a merge commit even to fast-forward.")
        ] = False,
        expected_head: Annotated[
            str | None, typer.Option(help="Compare-and-swap: the head the branch must have.")
        ] = None,
        dry_run: Annotated[
            bool,
            typer.Option(
                "--dry-run", help="Only compute the merge (git merge-tree): print its tree."
            ),
        ] = False,
    ) -> None:
        """Merge REV into BRANCH and print the new head (git's `ort` results)."""
        repository = _open(ctx).repository(repo)
        if dry_run:
            result = repository.merge_trees(branch, rev)
            typer.echo(result.tree)
            for c in result.conflicts:
                typer.echo(f"CONFLICT ({c.kind}): {c.path}")
            if not result.clean:
                raise typer.Exit(1)
            return
        if author is None:
            raise typer.BadParameter("--author is required (unless --dry-run)")
        try:
            head = repository.merge(
                branch,
                rev,
                author=parse_person(author),
                message=_message(message),
                expected_head=expected_head,
                fast_forward=not no_ff,
            )
        except MergeConflict as exc:
            _print_conflicts(exc)
            raise
        typer.echo(head)

    @_command(app, "cherry-pick")
    def cherry_pick(
        ctx: typer.Context,
        repo: str,
        branch: str,
        rev: str,
        author: Annotated[
            str | None, typer.Option(help="Default: the picked commit's author.")
        ] = None,
        committer: Annotated[
            str | None, typer.Option(help="'Name <email>'; default: the author.")
        ] = None,
        message: Annotated[str | None, typer.Option("--message", "-m")] = None,
    ) -> None:
        """Apply the change REV made onto BRANCH and print the new head."""
        repository = _open(ctx).repository(repo)
        try:
            head = repository.cherry_pick(
                branch,
                rev,
                author=None if author is None else parse_person(author),
                committer=None if committer is None else parse_person(committer),
                message=_message(message),
            )
        except MergeConflict as exc:
            _print_conflicts(exc)
            raise
        typer.echo(head)

    @_command(app, "revert")
    def revert(
        ctx: typer.Context,
        repo: str,
        branch: str,
        rev: str,
        author: Annotated[str, typer.Option(help="'Name <email>' (time: now, local zone).")],
        message: Annotated[str | None, typer.Option("--message", "-m")] = None,
    ) -> None:
        """Undo the change REV made, as a new commit on BRANCH; print the new head."""
        repository = _open(ctx).repository(repo)
        try:
            head = repository.revert(
                branch, rev, author=parse_person(author), message=_message(message)
            )
        except MergeConflict as exc:
            _print_conflicts(exc)
            raise
        typer.echo(head)
