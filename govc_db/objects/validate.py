"""Validation of paths, ref names and repository names, as DESIGN.md specifies.

Each ``check_*`` returns its (normalized) input or raises ``InvalidInput`` with a
message naming the rule that was broken.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from govc_db.errors import InvalidInput

__all__ = [
    "MAX_COMPONENT_BYTES",
    "MAX_PATH_BYTES",
    "MAX_REF_BYTES",
    "check_path",
    "check_path_set",
    "check_ref_name",
    "check_repository_name",
    "check_short_ref_name",
]

MAX_COMPONENT_BYTES = 255
MAX_PATH_BYTES = 4096
#: Longest full ref name in bytes (the ``govc_refs.name`` and reflog columns hold 1024).
MAX_REF_BYTES = 1024
_REPO_RE = re.compile(r"[A-Za-z0-9_.-]{1,100}")
_REF_BAD_CHARS = frozenset("~^:?*[\\ ")


def _has_control(text: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


def check_path(path: str) -> str:
    """A ``/``-separated relative path naming a file or directory in a tree."""
    if not isinstance(path, str):
        raise InvalidInput(f"path must be a str, got {type(path).__name__}")
    if not path:
        raise InvalidInput("path must not be empty")
    if path.startswith("/"):
        raise InvalidInput(f"path must be relative, got {path[:80]!r}")
    if path.endswith("/"):
        raise InvalidInput(f"path must not end with '/': {path[:80]!r}")
    if _has_control(path):
        raise InvalidInput(f"path must not contain NUL or control characters: {path[:80]!r}")
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"path is not valid Unicode: {path[:80]!r}") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise InvalidInput(f"path is longer than {MAX_PATH_BYTES} bytes")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise InvalidInput(f"path has an empty, '.' or '..' component: {path[:80]!r}")
        if part.lower() == ".git":
            raise InvalidInput(f"path must not contain a '.git' component: {path[:80]!r}")
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise InvalidInput(f"path component longer than {MAX_COMPONENT_BYTES} bytes")
    return path


def check_path_set(paths: Iterable[str]) -> None:
    """Reject a set of file paths where one path is also a directory of another."""
    # Look every directory prefix up in the set: linear in the total length, and free
    # of the sort trap where "a" < "a-b" < "a/b" puts other paths between "a" and "a/b".
    files = set(paths)
    for path in sorted(files):
        cut = path.find("/")
        while cut >= 0:
            if path[:cut] in files:
                raise InvalidInput(f"change set makes {path[:cut]!r} both a file and a directory")
            cut = path.find("/", cut + 1)


def check_ref_name(name: str) -> str:
    """A full ref name under ``git check-ref-format`` rules (e.g. ``refs/heads/main``)."""
    if not isinstance(name, str):
        raise InvalidInput(f"ref name must be a str, got {type(name).__name__}")
    why = _ref_name_problem(name)
    if why:
        raise InvalidInput(f"invalid ref name {name[:80]!r}: {why}")
    return name


def check_short_ref_name(name: str, kind: str = "branch") -> str:
    """A branch or tag name as given at the API (``main``, ``feature/x``)."""
    if not isinstance(name, str):
        raise InvalidInput(f"{kind} name must be a str, got {type(name).__name__}")
    why = _ref_name_problem(name)
    if why is None and name.startswith("refs/"):
        why = "give the short name, without 'refs/'"
    if why is None and name == "HEAD":
        why = "'HEAD' is reserved"
    if why is None and len(name.encode("utf-8")) > MAX_REF_BYTES - len("refs/heads/"):
        # The full name (refs/heads/<name>) must fit the 1024 of the ref columns.
        why = f"longer than {MAX_REF_BYTES - len('refs/heads/')} bytes"
    if why:
        raise InvalidInput(f"invalid {kind} name {name[:80]!r}: {why}")
    return name


def _ref_name_problem(name: str) -> str | None:
    if not name:
        return "empty"
    if name == "@":
        return "a lone '@' is not allowed"
    if _has_control(name):
        return "control characters are not allowed"
    bad = _REF_BAD_CHARS.intersection(name)
    if bad:
        return f"character {sorted(bad)[0]!r} is not allowed"
    if ".." in name:
        return "'..' is not allowed"
    if "@{" in name:
        return "'@{' is not allowed"
    if name.startswith(("-", "/")):
        return "must not start with '-' or '/'"
    if name.endswith(("/", ".")):
        return "must not end with '/' or '.'"
    if "//" in name:
        return "empty component"
    for part in name.split("/"):
        if part.startswith("."):
            return "a component must not start with '.'"
        if part.endswith(".lock"):
            return "a component must not end with '.lock'"
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return "not valid Unicode"
    if len(encoded) > MAX_REF_BYTES:
        return f"longer than {MAX_REF_BYTES} bytes"
    return None


def check_repository_name(name: str) -> str:
    """1-100 characters of ``[A-Za-z0-9._-]``, not starting with ``.``."""
    if not isinstance(name, str) or not _REPO_RE.fullmatch(name) or name.startswith("."):
        raise InvalidInput(
            f"invalid repository name {str(name)[:80]!r}: use 1-100 characters of "
            "A-Z a-z 0-9 . _ - not starting with '.'"
        )
    return name
