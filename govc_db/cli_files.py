"""Files on disk -> the change set of ``govc-db commit``.

A directory argument is mirrored by default (git 2.x ``git add DIR``): files that are in
the branch under that directory but no longer on disk are deleted in the commit.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from govc_db.errors import InvalidInput, NotFound
from govc_db.objects import MODE_EXEC, MODE_FILE, MODE_LINK
from govc_db.types import File

__all__ = ["collect_files", "directory_prefixes", "vanished"]


#: Files from this size on are committed as streams, never read whole.
STREAM_MIN = 1024 * 1024


def _file_at(path: str) -> File | None:
    """The File for a symlink or regular file; None for other kinds (fifo, socket ...)."""
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            return File(os.fsencode(os.readlink(path)), MODE_LINK)
        if stat.S_ISREG(st.st_mode):
            # Like git: only the owner's execute bit decides between 755 and 644.
            mode = MODE_EXEC if st.st_mode & stat.S_IXUSR else MODE_FILE
            if st.st_size >= STREAM_MIN:  # streamed by the commit (closed by `commit`)
                return File(open(path, "rb"), mode)
            with open(path, "rb") as fh:
                data = fh.read()
            return File(data, mode)
    except OSError as exc:
        raise InvalidInput(f"cannot read {path!r}: {exc.strerror or exc}") from None
    return None


def _walk(top: str) -> Iterator[str]:
    """Every non-directory below ``top``; symlinked directories are yielded, not followed."""
    for current, dirs, names in os.walk(top, onerror=_raise_walk_error):
        keep = []
        for d in sorted(dirs):
            full = os.path.join(current, d)
            if d.lower() == ".git":
                continue  # a git checkout's own metadata is never content
            if os.path.islink(full):
                yield full
            else:
                keep.append(d)
        dirs[:] = keep
        for n in sorted(names):
            yield os.path.join(current, n)


def _raise_walk_error(exc: OSError) -> None:
    raise InvalidInput(f"cannot read {exc.filename!r}: {exc.strerror or exc}")


def collect_files(
    paths: list[Path], root: Path, *, exclude: frozenset[str] = frozenset()
) -> dict[str, File]:
    """Map repository path -> File for files and directory trees below ``root``.

    ``exclude`` holds absolute paths to skip (the SQLite database being written to).
    """
    base = os.path.abspath(root)
    out: dict[str, File] = {}
    for given in paths:
        top = os.path.abspath(given)
        rel = os.path.relpath(top, base)
        if rel == os.pardir or rel.startswith(os.pardir + os.sep):
            raise InvalidInput(f"{str(given)!r} is outside the root {str(root)!r}")
        if not os.path.lexists(top):
            raise NotFound(f"no such file or directory: {str(given)!r}")
        if top in exclude:
            raise InvalidInput(f"refusing to commit the database file {str(given)!r}")
        is_tree = os.path.isdir(top) and not os.path.islink(top)
        for full in _walk(top) if is_tree else [top]:
            if full in exclude:
                continue
            entry = _file_at(full)
            if entry is None:
                if not is_tree:
                    raise InvalidInput(f"{str(given)!r} is not a regular file or symlink")
                continue
            out[os.path.relpath(full, base).replace(os.sep, "/")] = entry
    return out


def directory_prefixes(paths: list[Path], root: Path) -> list[str]:
    """Repository path of each directory argument (``""`` for the root itself)."""
    base = os.path.abspath(root)
    out = []
    for given in paths:
        top = os.path.abspath(given)
        if os.path.isdir(top) and not os.path.islink(top):
            rel = os.path.relpath(top, base).replace(os.sep, "/")
            out.append("" if rel == "." else rel)
    return out


def vanished(
    tracked: Iterable[str], prefixes: list[str], changes: Mapping[str, object]
) -> list[str]:
    """Tracked paths under a directory argument that the change set does not mention
    (so they are no longer on disk, or were not asked to be written).
    """
    return [
        path
        for path in tracked
        if path not in changes and any(p == "" or path.startswith(p + "/") for p in prefixes)
    ]
