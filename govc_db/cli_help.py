"""Help-screen conventions of ``govc-db``: git-like, without Python type labels.

Recent typer versions print each parameter's Python annotation in help (``<bool>``,
``<list[Path]>``) and wrap required arguments in braces (``{repo}``). These command and
group classes present parameters the way git and click do: ``REPO [REV]`` in the usage
line, value options with a metavar (``-n N``), flags with nothing after them.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

__all__ = ["Command", "Group"]


class _Argument(TyperArgument):
    def display_type_rich(self, ctx: Any) -> str | None:
        return None

    def _usage_display_name(self) -> str:
        name = self.display_name_raw.upper()
        name = name if self.required else f"[{name}]"
        return name + ("..." if self.nargs != 1 else "")

    def _rich_display_name(self) -> str:
        name = self.display_name_raw.upper()
        return name + ("..." if self.nargs != 1 else "")


class _Option(TyperOption):
    def display_type_rich(self, ctx: Any) -> str | None:
        if self.is_flag or self.count:
            return None
        metavar = self.metavar or (self.name or "value").upper()
        return metavar + ("..." if self.nargs != 1 else "")


def _plain(params: list[Any]) -> list[Any]:
    # Same fields, only the presentation methods differ: swapping the class is safe.
    for param in params:
        if type(param) is TyperArgument:
            param.__class__ = _Argument
        elif type(param) is TyperOption:
            param.__class__ = _Option
    return params


class Command(TyperCommand):
    """A command whose help shows no Python type labels."""

    def get_params(self, ctx: Any) -> list[Any]:
        """The parameters, presented without type labels."""
        return _plain(super().get_params(ctx))


class Group(TyperGroup):
    """A group whose help shows no Python type labels."""

    def get_params(self, ctx: Any) -> list[Any]:
        """The parameters, presented without type labels."""
        return _plain(super().get_params(ctx))
