"""``git push``: dulwich's receive-pack protocol, with the pack and ref updates applied as
one govc_db write.

dulwich's own ``ReceivePackHandler._apply_pack`` stores the pack, then moves refs one by
one; here the pack is spooled first (bounded by ``Settings.push_max_pack_bytes``), then
one transaction parses it (thin-pack bases resolved only from *this* repository), checks
that every object it references exists in the pack or in this repository, stores the
objects, indexes the new commits (generations, changed paths) and moves the refs by
compare-and-swap with reflog entries and events, as ``repo.commit()`` does. Anything
wrong before the ref moves refuses the whole push with nothing stored; an atomic push
(``git push --atomic``) also rolls everything back when one ref cannot move.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

from dulwich.server import ReceivePackHandler

from govc_db.api.repository import _check_ref_dir_clash
from govc_db.errors import GovcError, InvalidInput
from govc_db.interop.indexer import IndexCommit, TreeSource, index_commit, plan_index, write_index
from govc_db.interop.packfmt import iter_pack_deltas
from govc_db.objects import ObjectId, Tag, check_ref_name
from govc_db.objects.lenient import parse_lenient
from govc_db.store.ports import Unit

if TYPE_CHECKING:
    from govc_db.api.repository import Repository

__all__ = ["GovcReceivePackHandler", "apply_push"]

log = logging.getLogger("govc_db.interop")
ZERO = b"0" * 40
_READ = 64 * 1024
_ROWS = 1000


class _Refused(GovcError):
    """The push as a whole is refused; the message goes to the client as the unpack status."""


class _Pack:
    """What the pack brought: ids, commits, trees (their content), and the links of
    commits and tags."""

    def __init__(self) -> None:
        self.ids: set[ObjectId] = set()
        self.commits: dict[ObjectId, IndexCommit] = {}
        self.trees: dict[ObjectId, bytes] = {}
        self.linked: set[ObjectId] = set()


def _store_pack(unit: Unit, spool: IO[bytes] | None, pack: _Pack) -> None:
    """Parse and store the pack's objects (in this unit's transaction: a refusal later
    rolls them back). The trees are split later, by the index diffs (each from the
    version it is diffed against) and :func:`_check_links`; each object's delta base in
    the pack goes to the store as a hint (a tree with one entry changed is kept as a
    splice of its base, without compressing it)."""
    if spool is None:
        return

    def base(oid: ObjectId) -> tuple[bytes, bytes] | None:
        found = unit.objects.get_many([oid]).get(oid)
        return None if found is None else (found.type, found.data)

    rows: list[tuple[bytes, bytes]] = []
    hints: list[tuple[ObjectId, bytes] | None] = []
    ids: list[ObjectId] = []
    try:
        for oid, type_name, raw, base_oid, base_raw in iter_pack_deltas(spool, base):
            pack.ids.add(oid)
            if type_name == b"tree":
                pack.trees[oid] = raw
            elif type_name == b"commit":
                commit = index_commit(raw)
                pack.commits[oid] = commit
                pack.linked.add(commit.tree)
                pack.linked.update(commit.parents)
            elif type_name == b"tag":
                tag = parse_lenient(type_name, raw)
                assert isinstance(tag, Tag)
                pack.linked.add(tag.object)
            rows.append((type_name, raw))
            hints.append(None if base_raw is None or base_oid is None else (base_oid, base_raw))
            ids.append(oid)
            if len(rows) >= _ROWS:
                unit.objects.put_bulk(rows, bases=hints, ids=ids)
                rows, hints, ids = [], [], []
    except (InvalidInput, GovcError) as exc:
        raise _Refused(str(exc)) from None
    unit.objects.put_bulk(rows, bases=hints, ids=ids)


def _check_links(unit: Unit, pack: _Pack, source: TreeSource) -> None:
    """Refuse the push unless every object the pack links to is in the pack or in this
    repository, and every tree of the pack is well formed. A tree's entries that its
    parent commit's tree also holds exist already (that tree is this repository's, or
    was checked the same way): only the entries the commit-index diffs found new are
    checked, and every entry of a tree no diff reached."""
    assert source.links is not None
    linked: set[bytes] = set(pack.linked) | source.links
    try:
        for tree in pack.trees:
            entries = source.entries(tree)  # split already, unless no diff reached it
            if tree not in source.walked:
                linked.update(e[-20:] for e in entries if not e.startswith(b"160000 "))
    except InvalidInput as exc:
        raise _Refused(str(exc)) from None
    outside = sorted(ObjectId(o) for o in linked - pack.ids)
    present: set[ObjectId] = set()
    for i in range(0, len(outside), 1000):
        present |= unit.objects.has_many(outside[i : i + 1000])
    missing = set(outside) - present
    if missing:
        raise _Refused(f"missing necessary objects (e.g. {min(missing).hex()})")


def apply_push(
    repo: Repository,
    commands: list[tuple[bytes, bytes, bytes]],
    spool: IO[bytes] | None,
    *,
    atomic: bool,
) -> list[tuple[bytes, bytes]]:
    """Store the pack and move the refs; returns dulwich's status list (``unpack`` first)."""

    def work(unit: Unit) -> list[tuple[bytes, bytes]]:
        pack = _Pack()
        source = TreeSource(pack.trees, unit.objects, links=True)
        _store_pack(unit, spool, pack)
        if pack.commits:
            try:
                plan = plan_index(unit, pack.commits)
                write_index(unit, plan, plan.order, source)
            except InvalidInput as exc:
                raise _Refused(str(exc)) from None
        _check_links(unit, pack, source)
        status: list[tuple[bytes, bytes]] = [(b"unpack", b"ok")]
        for old_hex, new_hex, ref_b in commands:
            status.append((ref_b, _move(repo, unit, old_hex, new_hex, ref_b)))
        if atomic and any(s != b"ok" for _, s in status[1:]):
            raise _AtomicFailed(status)
        return status

    try:
        return repo._run("push", work, write=True, refs=len(commands))
    except _AtomicFailed as failed:
        return [(b"unpack", b"ok")] + [
            (r, s if s != b"ok" else b"atomic push failed") for r, s in failed.status[1:]
        ]
    except _Refused as exc:
        msg = str(exc).replace("\n", " ").encode("utf-8", "replace")[:200]
        return [(b"unpack", msg)] + [(ref, b"n/a (unpacker error)") for _, _, ref in commands]


class _AtomicFailed(GovcError):
    def __init__(self, status: list[tuple[bytes, bytes]]) -> None:
        super().__init__("atomic push failed")
        self.status = status


def _move(repo: Repository, unit: Unit, old_hex: bytes, new_hex: bytes, ref_b: bytes) -> bytes:
    try:
        ref = check_ref_name(ref_b.decode("utf-8"))
    except (UnicodeDecodeError, InvalidInput):
        return b"funny refname"
    if not ref.startswith("refs/"):
        return b"funny refname"
    old = None if old_hex == ZERO else ObjectId(bytes.fromhex(old_hex.decode()))
    new = None if new_hex == ZERO else ObjectId(bytes.fromhex(new_hex.decode()))
    message = "push"
    if new is None:
        if ref == "refs/heads/" + repo.default_branch:
            return b"deletion of the current branch prohibited"
        if old is None or not unit.refs.remove_if_equals(ref, old, message):
            return b"failed to delete: stale info"
    else:
        if not unit.objects.has(new):
            return b"missing necessary objects"
        if old is None:
            try:
                _check_ref_dir_clash(unit, ref)
            except GovcError:
                return b"failed to lock: a ref exists above or below it"
            if not unit.refs.add_if_new(ref, new, message):
                return b"failed to lock: already exists"
        elif not unit.refs.set_if_equals(ref, old, new, message):
            return b"failed to lock: stale info"
    repo._publish(unit, ref, old, new)
    return b"ok"


class GovcReceivePackHandler(ReceivePackHandler):
    """dulwich's receive-pack with :func:`apply_push` in place of its ``_apply_pack``."""

    def __init__(self, backend: Any, args: Any, proto: Any, **kwargs: Any) -> None:
        self.govc_repo: Repository = backend.govc_repository
        self.max_pack = self.govc_repo._store.settings.push_max_pack_bytes
        super().__init__(backend, args, proto, **kwargs)

    def capabilities(self) -> list[bytes]:
        """The receive-pack capabilities of dulwich (report-status, delete-refs, atomic ...)."""
        return [c for c in super().capabilities() if not c.startswith(b"object-format")] + [
            b"object-format=sha1"
        ]

    def _apply_pack(self, refs: list[Any]) -> Iterator[tuple[bytes, bytes]]:
        commands = [(bytes(o), bytes(n), bytes(r)) for o, n, r in refs]
        has_pack = any(n != ZERO for _, n, _ in commands)
        atomic = self.has_capability(b"atomic")
        if not has_pack:
            yield from apply_push(self.govc_repo, commands, None, atomic=atomic)
            return
        with tempfile.TemporaryFile(prefix="govc-push-") as spool:
            size = 0
            while True:
                chunk = self.proto.read(_READ)
                if not chunk:
                    break
                size += len(chunk)
                if size > self.max_pack:
                    yield (b"unpack", b"pack exceeds maximum allowed size")
                    for _, _, ref in commands:
                        yield (ref, b"n/a (unpacker error)")
                    return
                spool.write(chunk)
            # No pack at all (every object already here) is what an empty pack means.
            pack = spool if size else None
            yield from apply_push(self.govc_repo, commands, pack, atomic=atomic)
