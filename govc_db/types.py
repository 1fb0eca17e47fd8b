"""Public value types of the API: frozen dataclasses, ids as 40-char lowercase hex."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from govc_db.errors import InvalidInput
from govc_db.objects import MODE_EXEC, MODE_FILE, MODE_LINK, Signature

__all__ = [
    "Change",
    "Conflict",
    "MergeResult",
    "CommitInfo",
    "File",
    "RefUpdate",
    "Readable",
    "RefUpdated",
    "Signature",
    "TagInfo",
    "TreeEntry",
    "VerifyReport",
]

_FILE_MODES = (MODE_FILE, MODE_EXEC, MODE_LINK)


class Readable(Protocol):
    """A binary stream a commit can read content from."""

    def read(self, n: int = -1, /) -> bytes:
        """Up to ``n`` bytes; ``b""`` at the end."""
        ...


@dataclass(frozen=True, slots=True)
class File:
    """Content to write at a path, with its mode (100644, 100755 or 120000 for a symlink).

    ``data`` is bytes, or a readable binary stream (anything with ``read(n)``: an open
    file, a socket's file, a pipe): it is read in pieces when the commit runs and never
    held whole when it is large (see ``Settings.chunk_threshold``).
    """

    data: bytes | Readable
    mode: int = MODE_FILE

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes | bytearray | memoryview):
            if callable(getattr(self.data, "read", None)):
                pass
            else:
                kind = type(self.data).__name__
                raise InvalidInput(f"file content must be bytes or a readable stream, got {kind}")
        elif not isinstance(self.data, bytes):
            object.__setattr__(self, "data", bytes(self.data))
        # 33188.0 == 0o100644 would pass the membership test and break serialization later.
        if isinstance(self.mode, bool) or not isinstance(self.mode, int):
            raise InvalidInput(f"file mode must be an int, got {type(self.mode).__name__}")
        if self.mode not in _FILE_MODES:
            raise InvalidInput(
                f"file mode must be 0o100644, 0o100755 or 0o120000, got {self.mode!r}"
            )


@dataclass(frozen=True, slots=True)
class TreeEntry:
    """One entry of a tree listing; ``type`` is ``"blob"``, ``"tree"`` or ``"commit"``."""

    name: str
    path: str
    mode: int
    oid: str
    type: str


@dataclass(frozen=True, slots=True)
class CommitInfo:
    """A commit as the API shows it."""

    oid: str
    tree: str
    parents: list[str]
    author: Signature
    committer: Signature
    message: str
    extra: tuple[tuple[str, bytes], ...] = ()
    """Headers after the committer, in order and verbatim: ``encoding``, ``gpgsig``,
    ``mergetag`` ... (a signed commit's signature is ``dict(extra)["gpgsig"]``)."""


@dataclass(frozen=True, slots=True)
class TagInfo:
    """An annotated tag object as the API shows it (``Repository.get_tag``)."""

    oid: str
    object: str
    type: str
    name: str
    tagger: Signature | None
    message: str
    extra: tuple[tuple[str, bytes], ...] = ()
    """Headers after the tagger, verbatim (e.g. ``gpgsig`` of an SSH-signed tag)."""


@dataclass(frozen=True, slots=True)
class Change:
    """One changed path between two commits; an absent side has mode 0 and oid None."""

    path: str
    status: str
    old_mode: int
    new_mode: int
    old_oid: str | None
    new_oid: str | None


@dataclass(frozen=True, slots=True)
class RefUpdate:
    """One reflog entry of a ref; ``old``/``new`` are None for creation/deletion."""

    old: str | None
    new: str | None
    time: float
    message: str


@dataclass(frozen=True, slots=True)
class RefUpdated:
    """Event delivered to subscribers after a ref move committed."""

    repository: str
    ref: str
    old: str | None
    new: str | None


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """Result of ``Repository.verify()``: every problem found, not just the first."""

    ok: bool
    problems: list[str] = field(default_factory=list)
    objects_checked: int = 0


@dataclass(frozen=True, slots=True)
class Conflict:
    """One conflicted path of a merge; each side is the entry there (None: absent).

    ``kind``: ``"content"``, ``"add/add"``, ``"modify/delete"``, ``"rename/delete"``,
    ``"rename/rename"``, ``"file/directory"``, ``"mode"`` or ``"binary"``.
    """

    path: str
    kind: str
    base: TreeEntry | None
    ours: TreeEntry | None
    theirs: TreeEntry | None


@dataclass(frozen=True, slots=True)
class MergeResult:
    """Result of ``Repository.merge_trees``: the written tree (conflicted text files hold
    git's conflict markers) and the conflicts, none when ``clean``."""

    tree: str
    conflicts: list[Conflict] = field(default_factory=list)
    clean: bool = True
