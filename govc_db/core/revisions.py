"""Revision parsing: names, refs, HEAD, full/abbreviated ids, ``~N``, ``^``, ``^N``.

The rules are git's (``object-name.c`` of git 2.39), restricted to the grammar of
DESIGN.md § Revisions:

* a full 40-hex id is taken as an id before any ref is looked up (git does the same
  and only warns when a ref has that name); it must exist in this repository;
* ``HEAD`` is the default branch;
* other names are looked up as git's ``ref_rev_parse_rules``: the name itself when it
  starts with ``refs/``, then ``refs/<name>``, ``refs/tags/<name>``,
  ``refs/heads/<name>``, ``refs/remotes/<name>``, ``refs/remotes/<name>/HEAD``; the
  first that exists wins (git warns about the ambiguity but picks the same one);
* only then is a name of 4 to 39 hex digits taken as an abbreviated id. An id prefix
  matching several objects is ambiguous, except that where a commit is needed
  (``resolve_commit``, or a ``~``/``^`` suffix follows) only commits and tags of
  commits count, as git's ``GET_OID_COMMITTISH`` disambiguation does;
* suffixes apply left to right: ``~N`` follows N first parents, ``^N`` takes the Nth
  parent, ``^0``/``~0`` is the commit itself; a bare ``~``/``^`` means 1. Parents come
  from the commit index, never from parsing commit objects.

Unknown names, missing parents and numbers too large for git (> 2**31 - 1) are
``NotFound``; anything outside the grammar, ambiguous prefixes and non-commits where a
commit is needed are ``InvalidInput``.
"""

from __future__ import annotations

import re

from govc_db.core.history import CommitGraph
from govc_db.errors import GovcError, InvalidInput, NotFound
from govc_db.objects import HEX_LEN, ObjectId, check_ref_name
from govc_db.objects.lenient import lenient_tag_target
from govc_db.store.ports import CommitIndexStore, IndexEntry, ObjectStore, RefStore

__all__ = ["resolve_commit", "resolve_object"]

_REV_RE = re.compile(r"(?P<base>[^~^]+)(?P<nav>(?:[~^][0-9]*)*)", re.DOTALL)
_STEP_RE = re.compile(r"([~^])([0-9]*)")
_HEX_RE = re.compile(r"[0-9a-fA-F]+")
_MIN_ABBREV = 4
_INT_MAX = 2**31 - 1
#: Candidates examined for an abbreviated id; more than this is "ambiguous" outright.
_MAX_CANDIDATES = 64
#: Tags of tags followed before giving up (a real chain is one or two deep).
_MAX_TAG_DEPTH = 32


def _show(rev: str) -> str:
    return repr(rev[:80]) + ("..." if len(rev) > 80 else "")


def _parse(rev: object) -> tuple[str, list[tuple[str, int | None]]]:
    """Split ``rev`` into its base name and its suffix steps ``(kind, number)``.

    ``number`` is None when git would overflow (> INT_MAX): such a revision names
    nothing. Syntax errors raise ``InvalidInput``.
    """
    if not isinstance(rev, str):
        raise InvalidInput(f"revision must be a str, got {type(rev).__name__}")
    m = _REV_RE.fullmatch(rev)
    if m is None:
        raise InvalidInput(f"malformed revision {_show(rev)}")
    base = m["base"]
    try:
        check_ref_name(base)
    except InvalidInput as exc:
        raise InvalidInput(f"malformed revision {_show(rev)}: {exc}") from None
    steps: list[tuple[str, int | None]] = []
    for kind, digits in _STEP_RE.findall(m["nav"]):
        if not digits:
            steps.append((kind, 1))
            continue
        # Strip zeros first: int() of thousands of digits is refused by Python itself.
        significant = digits.lstrip("0")
        if len(significant) > 10 or (significant and int(significant) > _INT_MAX):
            steps.append((kind, None))
        else:
            steps.append((kind, int(significant or "0")))
    return base, steps


def _lookup_ref(refs: RefStore, default_branch: str, name: str) -> ObjectId | None:
    if name == "HEAD":
        target = refs.get("refs/heads/" + default_branch)
        if target is not None:
            return target
    candidates = [name] if name.startswith("refs/") else []
    candidates += [
        f"refs/{name}",
        f"refs/tags/{name}",
        f"refs/heads/{name}",
        f"refs/remotes/{name}",
        f"refs/remotes/{name}/HEAD",
    ]
    # One lookup for all the candidates (a statement each was most of a revision's cost
    # in a write unit, where refs are not cached); the first in git's order wins.
    found = refs.get_many(candidates)
    for full in candidates:
        target = found.get(full)
        if target is not None:
            return target
    return None


def _peel(
    objects: ObjectStore, index: CommitIndexStore, oid: ObjectId, rev: str
) -> tuple[ObjectId, IndexEntry | None]:
    """Follow tags to the commit; its index row when indexed. ``InvalidInput`` if the
    chain ends at a tree or blob, ``NotFound`` if an object is missing.
    """
    for _ in range(_MAX_TAG_DEPTH):
        # The index answers for commits (the usual case) without loading any object.
        row = index.get_many([oid]).get(oid)
        if row is not None:
            return oid, row
        raw = objects.get(oid)
        if raw.type == b"commit":
            return oid, None
        if raw.type != b"tag":
            kind = raw.type.decode("ascii", "replace")
            raise InvalidInput(f"revision {_show(rev)} names a {kind}, not a commit")
        try:
            oid = lenient_tag_target(raw.data)
        except InvalidInput as exc:
            raise GovcError(f"tag {oid.hex()} is corrupt: {exc}") from None
    raise InvalidInput(f"revision {_show(rev)}: tag chain deeper than {_MAX_TAG_DEPTH}")


def _is_committish(objects: ObjectStore, index: CommitIndexStore, oid: ObjectId) -> bool:
    try:
        _peel(objects, index, oid, oid.hex())
    except (InvalidInput, NotFound):
        return False
    return True


def _abbreviated(
    objects: ObjectStore, index: CommitIndexStore, prefix: str, committish: bool, rev: str
) -> ObjectId | None:
    found = objects.find_prefix(prefix, _MAX_CANDIDATES)
    if len(found) <= 1:
        return found[0] if found else None
    if committish and len(found) < _MAX_CANDIDATES:
        commits = index.get_many(found)
        fitting = [oid for oid in found if oid in commits or _is_committish(objects, index, oid)]
        if len(fitting) == 1:
            return fitting[0]
    raise InvalidInput(f"abbreviated id {prefix!r} in revision {_show(rev)} is ambiguous")


def _resolve_base(
    objects: ObjectStore,
    refs: RefStore,
    index: CommitIndexStore,
    default_branch: str,
    base: str,
    committish: bool,
    rev: str,
) -> ObjectId:
    is_hex = _HEX_RE.fullmatch(base) is not None
    if is_hex and len(base) == HEX_LEN:
        oid = ObjectId(bytes.fromhex(base))
        if not objects.has(oid):
            raise NotFound(f"revision {_show(rev)}: no such object in this repository")
        return oid
    target = _lookup_ref(refs, default_branch, base)
    if target is not None:
        return target
    if is_hex and len(base) >= _MIN_ABBREV:
        found = _abbreviated(objects, index, base.lower(), committish, rev)
        if found is not None:
            return found
    raise NotFound(f"unknown revision {_show(rev)}")


def _navigate(
    index: CommitIndexStore,
    start: ObjectId,
    row: IndexEntry | None,
    steps: list[tuple[str, int | None]],
    rev: str,
) -> ObjectId:
    # Each parent step lowers the generation by at least one, and a root has 1.
    moves = sum((n or 0) if kind == "~" else int(bool(n)) for kind, n in steps)
    graph = CommitGraph(index, [start], window=moves + 2, known=[row] if row else ())
    here = graph.row(start)
    if moves > here.generation - 1:
        raise NotFound(f"revision {_show(rev)} goes past a root commit")
    for kind, n in steps:
        assert n is not None
        if n == 0:
            continue
        if kind == "^":
            if n > len(here.parents):
                raise NotFound(f"revision {_show(rev)}: commit has no parent {n}")
            here = graph.parents(here)[n - 1]
            continue
        for _ in range(n):
            if not here.parents:
                raise NotFound(f"revision {_show(rev)} goes past a root commit")
            here = graph.parents(here)[0]
    return here.oid


def _resolve(
    objects: ObjectStore,
    refs: RefStore,
    index: CommitIndexStore,
    default_branch: str,
    rev: object,
    want_commit: bool,
) -> ObjectId:
    base, steps = _parse(rev)
    assert isinstance(rev, str)
    if any(n is None for _, n in steps):
        # git gives up on such a number before looking at the name at all.
        raise NotFound(f"revision {_show(rev)}: number too large")
    committish = want_commit or bool(steps)
    oid = _resolve_base(objects, refs, index, default_branch, base, committish, rev)
    if not committish:
        return oid
    oid, row = _peel(objects, index, oid, rev)
    if not steps:
        return oid
    return _navigate(index, oid, row, steps, rev)


def resolve_object(
    objects: ObjectStore, refs: RefStore, index: CommitIndexStore, default_branch: str, rev: str
) -> ObjectId:
    """Resolve ``rev`` to an object id without peeling the final result (an annotated tag
    name gives the tag object). Grammar (DESIGN.md § Revisions): ``HEAD`` (= the default
    branch), a branch or tag short name looked up in git's order (refs/<name>,
    refs/tags/<name>, refs/heads/<name>, refs/remotes/<name>,
    refs/remotes/<name>/HEAD), ``refs/...``, full 40-hex or unique abbreviated
    (>= 4 hex) id, followed by any sequence of ``~``, ``~N``, ``^``, ``^N`` (``^0`` peels
    to the commit). Navigation peels annotated tags to their commit first.
    Unknown -> ``NotFound``; malformed or ambiguous -> ``InvalidInput``.
    """
    return _resolve(objects, refs, index, default_branch, rev, want_commit=False)


def resolve_commit(
    objects: ObjectStore, refs: RefStore, index: CommitIndexStore, default_branch: str, rev: str
) -> ObjectId:
    """Like ``resolve_object`` but peel annotated tags to the commit; a rev naming a tree or
    blob is ``InvalidInput``.
    """
    return _resolve(objects, refs, index, default_branch, rev, want_commit=True)
