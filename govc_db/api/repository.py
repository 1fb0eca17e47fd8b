"""The public Repository facade: validates input, runs each call as an Operation through
the pipeline, and converts between hex ids at the API and raw ids inside.
"""

from __future__ import annotations

import functools
import io
import itertools
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar, cast

from govc_db.api.paging import PAGE, PagedIndex, PagedObjects, Relay
from govc_db.core import history, merge_ops
from govc_db.core.commit import commit_changes, head_tree
from govc_db.core.diff import diff_trees
from govc_db.core.grouped import GroupUnit
from govc_db.core.revisions import resolve_commit, resolve_object
from govc_db.core.trees import find_entry, iter_files, list_tree
from govc_db.core.verify import verify as verify_unit
from govc_db.db.branchlocks import lock_branch
from govc_db.db.cache import uncached, uncached_active
from govc_db.db.cache_ports import ReadMemo, read_cached
from govc_db.errors import AlreadyExists, InvalidInput, NotFound, RefConflict
from govc_db.middleware.base import Operation
from govc_db.objects import (
    MODE_DIR,
    Commit,
    ObjectId,
    Signature,
    Tag,
    check_path,
    check_path_set,
    check_short_ref_name,
    hex_to_oid,
    mode_type,
)
from govc_db.objects.kinds import TreeItem
from govc_db.objects.lenient import parse_lenient
from govc_db.storage.gc import GcReport, run_gc
from govc_db.storage.stream import prepared_changes
from govc_db.store.cached_read import run_cached
from govc_db.store.ports import CommitIndexStore, ObjectStore, Unit
from govc_db.types import (
    Change,
    CommitInfo,
    File,
    MergeResult,
    Readable,
    RefUpdate,
    RefUpdated,
    TagInfo,
    TreeEntry,
    VerifyReport,
)

if TYPE_CHECKING:
    from govc_db.api.store import Store
    from govc_db.interop.types import ExportReport
    from govc_db.store.sql import RepositoryRecord

__all__ = ["ChangeBuilder", "Repository"]

T = TypeVar("T")
# Where a write closure's ref moves are recorded (by _publish) for the running attempt.
_MOVES: ContextVar[dict[str, ObjectId | None] | None] = ContextVar("govc_db_moves", default=None)
_HEX = frozenset("0123456789abcdefABCDEF")


def _decode_path(raw: str) -> str:
    return raw


def _str_arg(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a str, got {type(value).__name__}")
    return value


def _commit_info(oid: ObjectId, commit: Commit) -> CommitInfo:
    return CommitInfo(
        oid=oid.hex(),
        tree=commit.tree.hex(),
        parents=[p.hex() for p in commit.parents],
        author=commit.author,
        committer=commit.committer,
        message=commit.message.decode("utf-8", "surrogateescape"),
        extra=_extra(commit.extra),
    )


def _extra(extra: tuple[tuple[bytes, bytes], ...]) -> tuple[tuple[str, bytes], ...]:
    return tuple((k.decode("utf-8", "surrogateescape"), v) for k, v in extra)


def _entry(path: str, item: TreeItem) -> TreeEntry:
    return TreeEntry(
        name=item.name.decode("utf-8", "surrogateescape"),
        path=path,
        mode=item.mode,
        oid=item.oid.hex(),
        type=mode_type(item.mode),
    )


def _normalize_changes(changes: object) -> dict[str, File | None]:
    if not isinstance(changes, Mapping):
        raise InvalidInput("changes must be a mapping of path -> bytes | File | None")
    out: dict[str, File | None] = {}
    for path, value in changes.items():
        check_path(path)
        if value is None or isinstance(value, File):
            out[path] = value
        elif isinstance(value, bytes | bytearray | memoryview):
            out[path] = File(bytes(value))
        elif callable(getattr(value, "read", None)):
            out[path] = File(value)  # a readable stream: read when the commit runs
        else:
            raise InvalidInput(
                f"content for {path!r} must be bytes, a readable stream, File or None, "
                f"got {type(value).__name__}"
            )
    check_path_set(p for p, v in out.items() if v is not None)
    return out


def _message_bytes(message: object) -> bytes:
    if isinstance(message, str):
        try:
            raw = message.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput("message is not valid Unicode") from None
    elif isinstance(message, bytes):
        raw = message
    else:
        raise InvalidInput(f"message must be a str, got {type(message).__name__}")
    if b"\0" in raw:
        # git refuses it too ("a NUL byte in commit log message not allowed"), and
        # PostgreSQL text cannot hold it: rejected the same way on every backend.
        raise InvalidInput("message must not contain a NUL byte")
    return raw


def _signature(value: object, what: str) -> Signature:
    if not isinstance(value, Signature):
        raise InvalidInput(f"{what} must be a govc_db.Signature, got {type(value).__name__}")
    return value


def _parent_ids(parents: object) -> tuple[ObjectId, ...] | None:
    if parents is None:
        return None
    if isinstance(parents, str | bytes) or not isinstance(parents, list | tuple):
        raise InvalidInput("parents must be a list of commit ids")
    ids = tuple(hex_to_oid(_str_arg(p, "parent")) for p in parents)
    if len(set(ids)) != len(ids):
        raise InvalidInput("parents must not repeat a commit")
    return ids


def _oid_or_none(value: object, what: str) -> ObjectId | None:
    if value is None:
        return None
    return hex_to_oid(_str_arg(value, what))


class Repository:
    """One repository of a :class:`~govc_db.Store`. Obtain with ``store.repository(name)``."""

    def __init__(self, store: Store, record: RepositoryRecord) -> None:
        self._store = store
        self._id = record.id
        self.name = record.name
        self.default_branch = record.default_branch

    def __repr__(self) -> str:
        return f"<Repository {self.name!r}>"

    @property
    def id(self) -> int:
        """The repository's database id (read-only): a name deleted and created again
        gets a new one, so it keys what is remembered of one incarnation of a name."""
        return self._id

    # plumbing -------------------------------------------------------------------------
    def _run(
        self,
        op_name: str,
        fn: Callable[[Unit], T],
        /,
        *,
        write: bool = False,
        speculative: bool = False,
        fast: tuple[object, object] | None = None,
        serialize: str | None = None,
        **args: Any,
    ) -> T:
        backend = self._store.backend
        repo_id = self._id
        if not write:

            def call() -> T:
                cache = backend.cache
                # Not inside store.transaction(): its own uncommitted writes must be read.
                if cache is not None and not uncached_active() and backend.txn.current() is None:
                    if fast is not None:
                        # (rev, path) of a file read: answered by the cache alone, or None.
                        found: Any = read_cached(
                            cache, repo_id, fast[0], fast[1], backend.fetch_objects
                        )
                        if found is not None:
                            return found  # type: ignore[no-any-return]
                    # No transaction: cached refs and index rows, objects fetched alone.
                    served, value = run_cached(backend, repo_id, fn, backend.reads)
                    if served:
                        return value  # type: ignore[return-value]
                try:
                    return backend.run_unit(repo_id, fn, write=False, what=op_name)
                except NotFound:
                    if backend.cache is None or uncached_active():
                        raise
                # A ref served from the cache can be newer than this transaction's
                # snapshot (SQLite takes it at the first read; so does REPEATABLE READ),
                # so the commit it names may look missing: re-read the refs from the
                # database before reporting anything as not found.
                with uncached():
                    return backend.run_unit(repo_id, fn, write=False, what=op_name)

        else:
            # The ref moves of the current attempt (recorded by _publish): if the
            # connection is lost during COMMIT, re-reading them tells whether it committed.
            moves: dict[str, ObjectId | None] = {}

            def body(unit: Unit) -> T:
                moves.clear()
                token = _MOVES.set(moves)
                try:
                    return fn(unit)
                finally:
                    _MOVES.reset(token)

            def write_unit(locked: bool = False) -> T:
                return backend.run_unit(
                    repo_id,
                    locked_body if locked else body,
                    write=True,
                    what=op_name,
                    verify_commit=lambda: backend.refs_match(repo_id, moves),
                    speculative=speculative,
                )

            locks = self._store.branch_locks
            # Other processes' commits to the branch wait in the database (the branch's
            # row locked first, govc_db.db.branchlocks) rather than race.
            row_lock = self._store.settings.commit_row_lock
            ref = "refs/heads/" + (serialize or "")

            def locked_body(unit: Unit) -> T:
                if row_lock:
                    lock_branch(unit, ref)
                return body(unit)

            if serialize is None or locks is None:
                call = write_unit
            else:
                key = (repo_id, serialize)

                def run_group(
                    group_body: Callable[[Any], list[Any]], tags: Sequence[Any]
                ) -> list[Any]:
                    # Several queued commits of this branch in one unit; a COMMIT whose
                    # outcome was lost is resolved by where the last of them moved refs.
                    def verify() -> bool:
                        merged: dict[str, ObjectId | None] = {}
                        for tag in tags:
                            merged.update(tag)
                        return backend.refs_match(repo_id, merged)

                    def grouped(unit: Unit) -> list[Any]:
                        if row_lock:
                            lock_branch(unit, ref)
                        return group_body(GroupUnit(unit))

                    return backend.run_unit(
                        repo_id,
                        grouped,
                        write=True,
                        what=op_name,
                        verify_commit=verify,
                        speculative=speculative,
                    )

                def call() -> T:
                    # Commits of this process to one branch wait for each other rather
                    # than race in the database, and those that queue are written in
                    # groups; not inside store.transaction(), whose COMMIT (and its row
                    # locks) this call does not control (govc_db.db.branchlocks). A
                    # commit streaming large content (read once) is written alone.
                    if backend.txn.current() is not None:
                        return write_unit()
                    if not speculative:
                        with locks.hold(key):
                            return write_unit(True)
                    return locks.run(key, lambda: write_unit(True), body, moves, run_group)

        result: T = self._store.run(Operation(op_name, self.name, call, write=write, args=args))
        return result

    def _resolve(self, unit: Unit, rev: object) -> ObjectId:
        return resolve_commit(
            unit.objects, unit.refs, unit.index, self.default_branch, _str_arg(rev, "revision")
        )

    def _load_commit(self, unit: Unit, oid: ObjectId) -> Commit:
        obj = parse_lenient(*unit.objects.get(oid))
        if not isinstance(obj, Commit):
            raise InvalidInput(f"{oid.hex()} is not a commit")
        return obj

    def _publish(self, unit: Unit, ref: str, old: ObjectId | None, new: ObjectId | None) -> None:
        event = RefUpdated(self.name, ref, old.hex() if old else None, new.hex() if new else None)
        unit.after_commit(lambda: self._store._publish(event))
        moves = _MOVES.get()
        if moves is not None:
            moves[ref] = new

    # writing --------------------------------------------------------------------------
    def commit(
        self,
        branch: str,
        changes: Mapping[str, bytes | Readable | File | None],
        *,
        message: str,
        author: Signature,
        committer: Signature | None = None,
        expected_head: str | None = None,
        allow_empty: bool = False,
        parents: list[str] | None = None,
    ) -> str:
        """Apply ``changes`` to ``branch`` atomically and return the new commit id.

        ``parents`` (plumbing, e.g. for merge commits): the exact parent ids, which must
        be commits of this repository; the changes apply to the first parent's tree and
        the branch head, if the branch exists, must be one of them.
        """
        check_short_ref_name(_str_arg(branch, "branch"), "branch")
        checked = _normalize_changes(changes)
        msg = _message_bytes(message)
        author = _signature(author, "author")
        committer = author if committer is None else _signature(committer, "committer")
        expected = _oid_or_none(expected_head, "expected_head")
        parent_ids = _parent_ids(parents)
        settings = self._store.settings
        with prepared_changes(checked, settings.chunk_threshold) as normalized:
            # A speculative unit may run twice: large content is read once, by a plain unit.
            streams = any(
                f is not None and not isinstance(f.data, bytes) for f in normalized.values()
            )
            return self._commit(
                branch,
                normalized,
                msg,
                author,
                committer,
                expected,
                bool(allow_empty),
                streams,
                parent_ids,
            )

    def _commit(
        self,
        branch: str,
        normalized: dict[str, File | None],
        msg: bytes,
        author: Signature,
        committer: Signature,
        expected: ObjectId | None,
        allow_empty: bool,
        streams: bool,
        parent_ids: tuple[ObjectId, ...] | None,
    ) -> str:
        settings = self._store.settings

        def work(unit: Unit) -> str:
            result = commit_changes(
                unit,
                default_branch=self.default_branch,
                branch=branch,
                changes=normalized,
                message=msg,
                author=author,
                committer=committer,
                expected_head=expected,
                allow_empty=allow_empty,
                rebase_attempts=settings.commit_rebase_attempts,
                parents=parent_ids,
            )
            self._publish(unit, "refs/heads/" + branch, result.old_head, result.oid)
            return result.oid.hex()

        return self._run(
            "commit",
            work,
            write=True,
            speculative=not streams,
            serialize=branch,
            branch=branch,
            paths=len(normalized),
        )

    def changes(
        self,
        branch: str,
        *,
        message: str,
        author: Signature,
        committer: Signature | None = None,
        expected_head: str | None = None,
        allow_empty: bool = False,
    ) -> ChangeBuilder:
        """A staging-style builder that commits on a clean exit of its ``with`` block."""
        return ChangeBuilder(
            self,
            branch,
            dict(
                message=message,
                author=author,
                committer=committer,
                expected_head=expected_head,
                allow_empty=allow_empty,
            ),
        )

    # reading --------------------------------------------------------------------------
    def _blob_at(self, unit: Unit, rev: object, path: object, stream: bool = False) -> Any:
        p = check_path(_str_arg(path, "path"))
        commit = self._resolve(unit, rev)
        tree = head_tree(unit, commit)
        item = find_entry(unit.objects, tree, p)
        memo: ReadMemo | None = getattr(unit, "read_memo", None)
        if memo is not None:
            memo.remember(_str_arg(rev, "revision"), commit, tree, p, item)
        if item is None:
            raise NotFound(f"path {p!r} not found at {rev!r}")
        if item.mode == MODE_DIR:
            raise InvalidInput(f"path {p!r} is a directory")
        if mode_type(item.mode) != "blob":
            raise InvalidInput(f"path {p!r} is a submodule")
        opener = getattr(unit.objects, "open_blob", None) if stream else None
        if opener is not None:
            return opener(item.oid)
        data: bytes = unit.objects.get(item.oid).data
        return data

    def read(self, rev: str, path: str) -> bytes:
        """The content of the file at ``path`` in ``rev``."""
        data: bytes = self._run(
            "read",
            lambda u: self._blob_at(u, rev, path),
            fast=(rev, path),
            rev=rev,
            path=path,
        )
        return data

    def open(self, rev: str, path: str) -> BinaryIO:
        """A binary file-like reader (``read(n)``, ``readinto``, ``seek``/``tell``,
        iteration) of the file at ``path`` in ``rev``; a large (chunked) file is streamed,
        a few chunks in memory at a time whatever its size."""
        found: Any = self._run(
            "open",
            lambda u: self._blob_at(u, rev, path, stream=True),
            fast=(rev, path),
            rev=rev,
            path=path,
        )
        reader: BinaryIO = io.BytesIO(found) if isinstance(found, bytes) else found
        return reader

    def exists(self, rev: str, path: str) -> bool:
        """Whether ``path`` (file or directory) exists in ``rev``."""
        p = check_path(_str_arg(path, "path"))

        def work(unit: Unit) -> bool:
            tree = head_tree(unit, self._resolve(unit, rev))
            return find_entry(unit.objects, tree, p) is not None

        return self._run("exists", work, rev=rev, path=path)

    def tree(self, rev: str, path: str = "") -> list[TreeEntry]:
        """The direct entries of the directory at ``path`` (root when empty)."""
        p = "" if path == "" else check_path(_str_arg(path, "path"))

        def work(unit: Unit) -> list[TreeEntry]:
            root = head_tree(unit, self._resolve(unit, rev))
            return [_entry(full, item) for full, item in list_tree(unit.objects, root, p)]

        return self._run("tree", work, rev=rev, path=path)

    def walk(self, rev: str, path: str = "") -> Iterator[TreeEntry]:
        """Every file below ``path`` recursively, sorted by path."""
        p = "" if path == "" else check_path(_str_arg(path, "path"))

        # Streamed like log: the first page in one unit, the rest of the tree read by
        # short units (trees never change) as the caller iterates.
        relay = Relay()

        def first(unit: Unit) -> tuple[Iterator[tuple[str, TreeItem]], list[TreeEntry]]:
            relay.target = unit.objects
            root = head_tree(unit, self._resolve(unit, rev))
            files = iter_files(cast(ObjectStore, relay), root, p)
            return files, [_entry(full, item) for full, item in itertools.islice(files, PAGE)]

        files, entries = self._run("walk", first, rev=rev, path=path)
        relay.target = PagedObjects(self)
        return itertools.chain(entries, (_entry(full, item) for full, item in files))

    def resolve(self, rev: str) -> str:
        """The commit id ``rev`` names (annotated tags peeled)."""
        return self._run("resolve", lambda u: self._resolve(u, rev).hex(), rev=rev)

    def get_commit(self, rev: str) -> CommitInfo:
        """The commit ``rev`` names."""

        def work(unit: Unit) -> CommitInfo:
            oid = self._resolve(unit, rev)
            return _commit_info(oid, self._load_commit(unit, oid))

        return self._run("get_commit", work, rev=rev)

    def get_object(self, oid: str) -> tuple[str, bytes]:
        """``(type, raw git content)`` of an object of this repository."""
        raw = hex_to_oid(_str_arg(oid, "object id"))

        def work(unit: Unit) -> tuple[str, bytes]:
            obj = unit.objects.get(raw)
            return obj.type.decode("ascii"), obj.data

        return self._run("get_object", work, oid=oid)

    def log(
        self, rev: str = "HEAD", *, path: str | None = None, limit: int | None = None
    ) -> Iterator[CommitInfo]:
        """Commits reachable from ``rev`` in ``git rev-list`` order, optionally path-limited."""
        p = None if path is None else check_path(_str_arg(path, "path"))
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 0
        ):
            raise InvalidInput("limit must be a non-negative int or None")

        # The walk streams: its first page is computed in one unit (a log with a small
        # limit costs what it always did); later pages, and the index rows the walk still
        # needs, are read in short units of their own -- commits and index rows never
        # change -- so memory holds one page of CommitInfo, never the whole history.
        relay = Relay()

        def first(unit: Unit) -> tuple[Iterator[ObjectId], list[CommitInfo]]:
            relay.target = unit.index
            index = cast(CommitIndexStore, relay)
            walk = history.log(index, self._resolve(unit, rev), p, limit)
            return walk, self._commit_infos(unit, list(itertools.islice(walk, PAGE)))

        walk, infos = self._run("log", first, rev=rev, path=path, limit=limit)
        relay.target = PagedIndex(self)
        return self._log_pages(walk, infos)

    def _log_pages(self, walk: Iterator[ObjectId], infos: list[CommitInfo]) -> Iterator[CommitInfo]:
        yield from infos
        while page := list(itertools.islice(walk, PAGE)):
            yield from self._run("log", functools.partial(self._commit_infos, oids=page))

    def _commit_infos(self, unit: Unit, oids: list[ObjectId]) -> list[CommitInfo]:
        objs = unit.objects.get_many(oids)
        out: list[CommitInfo] = []
        for oid in oids:
            if oid not in objs:
                raise NotFound(f"commit {oid.hex()} is missing")
            obj = parse_lenient(*objs[oid])
            assert isinstance(obj, Commit)
            out.append(_commit_info(oid, obj))
        return out

    def diff(self, old_rev: str, new_rev: str) -> list[Change]:
        """Changed files between two revisions (``git diff-tree -r --no-renames``)."""

        def work(unit: Unit) -> list[Change]:
            old = head_tree(unit, self._resolve(unit, old_rev))
            new = head_tree(unit, self._resolve(unit, new_rev))
            return [
                Change(
                    c.path,
                    c.status,
                    c.old_mode,
                    c.new_mode,
                    c.old_oid.hex() if c.old_oid else None,
                    c.new_oid.hex() if c.new_oid else None,
                )
                for c in diff_trees(unit.objects, old, new)
            ]

        return self._run("diff", work, old=old_rev, new=new_rev)

    def merge_base(self, a: str, b: str) -> str | None:
        """The best common ancestor of two revisions, or None."""

        def work(unit: Unit) -> str | None:
            base = history.merge_base(unit.index, self._resolve(unit, a), self._resolve(unit, b))
            return None if base is None else base.hex()

        return self._run("merge_base", work, a=a, b=b)

    def is_ancestor(self, a: str, b: str) -> bool:
        """Whether ``a`` is ``b`` or an ancestor of it."""

        def work(unit: Unit) -> bool:
            return history.is_ancestor(unit.index, self._resolve(unit, a), self._resolve(unit, b))

        return self._run("is_ancestor", work, a=a, b=b)

    # refs -----------------------------------------------------------------------------
    def branches(self) -> dict[str, str]:
        """Branch name -> commit id."""
        return self._run(
            "branches",
            lambda u: {
                k.removeprefix("refs/heads/"): v.hex()
                for k, v in u.refs.list_refs("refs/heads/").items()
            },
        )

    def create_branch(self, name: str, rev: str = "HEAD") -> str:
        """Create branch ``name`` at ``rev``; returns the commit id. ``AlreadyExists``."""
        check_short_ref_name(_str_arg(name, "branch"), "branch")
        ref = "refs/heads/" + name

        def work(unit: Unit) -> str:
            target = self._resolve(unit, rev)
            _check_ref_dir_clash(unit, ref)
            if not unit.refs.add_if_new(ref, target, f"branch: Created from {rev}"):
                raise AlreadyExists(f"branch {name!r} already exists")
            self._publish(unit, ref, None, target)
            return target.hex()

        return self._run("create_branch", work, write=True, name=name, rev=rev)

    def move_branch(
        self, name: str, rev: str, *, expected: str | None = None, force: bool = False
    ) -> str:
        """Move ``name`` to ``rev``: fast-forward only unless ``force``; ``expected`` is CAS."""
        check_short_ref_name(_str_arg(name, "branch"), "branch")
        exp = _oid_or_none(expected, "expected")
        ref = "refs/heads/" + name

        def work(unit: Unit) -> str:
            current = unit.refs.get(ref)
            if current is None:
                raise NotFound(f"branch {name!r} not found")
            target = self._resolve(unit, rev)
            if exp is not None and current != exp:
                raise RefConflict(f"branch {name!r} is at {current.hex()}, not {exp.hex()}")
            if current == target:
                return target.hex()
            if not force and not history.is_ancestor(unit.index, current, target):
                raise RefConflict(
                    f"moving {name!r} to {rev!r} is not a fast-forward (use force=True)"
                )
            kind = "forced-update" if force else "fast-forward"
            if not unit.refs.set_if_equals(ref, current, target, f"branch: {kind} to {rev}"):
                raise RefConflict(f"branch {name!r} moved concurrently")
            self._publish(unit, ref, current, target)
            return target.hex()

        return self._run("move_branch", work, write=True, name=name, rev=rev)

    def delete_branch(self, name: str, *, expected: str | None = None) -> None:
        """Delete branch ``name`` (the default branch is refused); ``expected`` is CAS."""
        check_short_ref_name(_str_arg(name, "branch"), "branch")
        exp = _oid_or_none(expected, "expected")
        if name == self.default_branch:
            raise InvalidInput(f"cannot delete the default branch {name!r}")
        ref = "refs/heads/" + name

        def work(unit: Unit) -> None:
            current = unit.refs.get(ref)
            if current is None:
                raise NotFound(f"branch {name!r} not found")
            if exp is not None and current != exp:
                raise RefConflict(f"branch {name!r} is at {current.hex()}, not {exp.hex()}")
            if not unit.refs.remove_if_equals(ref, current, "branch: deleted"):
                raise RefConflict(f"branch {name!r} moved concurrently")
            self._publish(unit, ref, current, None)

        self._run("delete_branch", work, write=True, name=name)

    def tags(self) -> dict[str, str]:
        """Tag name -> ref target (the tag object for annotated tags, as ``git show-ref``)."""
        return self._run(
            "tags",
            lambda u: {
                k.removeprefix("refs/tags/"): v.hex()
                for k, v in u.refs.list_refs("refs/tags/").items()
            },
        )

    def create_tag(
        self,
        name: str,
        rev: str = "HEAD",
        *,
        message: str | None = None,
        tagger: Signature | None = None,
    ) -> str:
        """Create a lightweight tag, or an annotated one when ``message`` is given.

        Returns the tag ref's target: the commit id, or the tag object id (identical to
        ``git mktag``). An annotated tag without ``tagger`` uses the target commit's
        committer name and email with the current time.
        """
        check_short_ref_name(_str_arg(name, "tag"), "tag")
        msg = None if message is None else _message_bytes(message)
        if tagger is not None:
            _signature(tagger, "tagger")
        ref = "refs/tags/" + name

        def work(unit: Unit) -> str:
            target_obj = resolve_object(
                unit.objects, unit.refs, unit.index, self.default_branch, _str_arg(rev, "revision")
            )
            target = target_obj
            if msg is not None:
                kind = unit.objects.get(target_obj).type
                who = tagger
                if who is None:
                    commit_oid = self._resolve(unit, rev)
                    c = self._load_commit(unit, commit_oid).committer
                    who = Signature(c.name, c.email, int(time.time()), c.offset)
                tag = Tag(target_obj, kind, name.encode("utf-8"), who, msg)
                target = unit.objects.put(b"tag", tag.serialize())
            _check_ref_dir_clash(unit, ref)
            if not unit.refs.add_if_new(ref, target, f"tag: {name}"):
                raise AlreadyExists(f"tag {name!r} already exists")
            self._publish(unit, ref, None, target)
            return target.hex()

        return self._run("create_tag", work, write=True, name=name, rev=rev)

    def delete_tag(self, name: str) -> None:
        """Delete tag ``name``; ``NotFound`` if absent."""
        check_short_ref_name(_str_arg(name, "tag"), "tag")
        ref = "refs/tags/" + name

        def work(unit: Unit) -> None:
            current = unit.refs.get(ref)
            if current is None or not unit.refs.remove_if_equals(ref, current, "tag: deleted"):
                raise NotFound(f"tag {name!r} not found")
            self._publish(unit, ref, current, None)

        self._run("delete_tag", work, write=True, name=name)

    def reflog(self, ref: str) -> list[RefUpdate]:
        """Every move of ``ref`` (branch name, tag name, ``HEAD`` or full ``refs/...``),
        newest first as ``git reflog`` shows them.
        """
        _str_arg(ref, "ref")

        def work(unit: Unit) -> list[RefUpdate]:
            full = self._full_ref(unit, ref)
            entries = unit.refs.reflog(full)
            if not entries and unit.refs.get(full) is None:
                raise NotFound(f"ref {ref!r} not found")
            return [
                RefUpdate(
                    e.old.hex() if e.old else None,
                    e.new.hex() if e.new else None,
                    e.time,
                    e.message,
                )
                for e in entries[::-1]
            ]

        return self._run("reflog", work, ref=ref)

    def _full_ref(self, unit: Unit, ref: str) -> str:
        if ref == "HEAD":
            return "refs/heads/" + self.default_branch
        if ref.startswith("refs/"):
            from govc_db.objects import check_ref_name

            return check_ref_name(ref)
        check_short_ref_name(ref, "ref")
        for candidate in ("refs/heads/" + ref, "refs/tags/" + ref):
            if unit.refs.get(candidate) is not None or unit.refs.reflog(candidate):
                return candidate
        return "refs/heads/" + ref

    def verify(self, *, progress: Callable[[int, int], None] | None = None) -> VerifyReport:
        """fsck: recompute every id and check refs, graph and commit index.

        ``progress(done, total)`` is called as objects are checked.
        """
        # An fsck checks what is stored, not what the query-result cache remembers.
        with uncached():
            return self._run("verify", functools.partial(verify_unit, progress=progress))

    # merging (issue 13) ---------------------------------------------------------------
    def merge(
        self,
        branch: str,
        rev: str,
        *,
        author: Signature,
        message: str | None = None,
        committer: Signature | None = None,
        expected_head: str | None = None,
        fast_forward: bool = True,
    ) -> str:
        """Merge ``rev`` into ``branch`` (git's ``ort`` results) and return the new head;
        ``MergeConflict`` (nothing changed) when the two sides conflict."""
        check_short_ref_name(_str_arg(branch, "branch"), "branch")
        rev = _str_arg(rev, "revision")
        author = _signature(author, "author")
        committer = author if committer is None else _signature(committer, "committer")
        msg = None if message is None else _message_bytes(message)
        expected = _oid_or_none(expected_head, "expected_head")

        def work(unit: Unit) -> str:
            theirs = self._resolve(unit, rev)
            out = merge_ops.merge_into_branch(
                unit,
                branch=branch,
                rev=rev,
                theirs=theirs,
                author=author,
                committer=committer,
                message=lambda: msg or merge_ops.default_merge_message(unit, rev, branch),
                expected_head=expected,
                fast_forward=bool(fast_forward),
                attempts=self._store.settings.commit_rebase_attempts,
            )
            if out.oid != out.old_head:
                self._publish(unit, "refs/heads/" + branch, out.old_head, out.oid)
            return out.oid.hex()

        return self._run("merge", work, write=True, branch=branch, rev=rev)

    def merge_trees(self, ours: str, theirs: str, *, base: str | None = None) -> MergeResult:
        """Dry-run merge as ``git merge-tree --write-tree ours theirs``: the merged tree is
        written (conflict markers labelled with the two revisions), no ref moves."""
        ours = _str_arg(ours, "revision")
        theirs = _str_arg(theirs, "revision")

        def work(unit: Unit) -> MergeResult:
            a, b = self._resolve(unit, ours), self._resolve(unit, theirs)
            c = None if base is None else self._resolve(unit, base)
            res = merge_ops.merge_commits(
                unit, a, b, base=c, ours_label=ours, theirs_label=theirs, write=True
            )
            conflicts = merge_ops.public_conflicts(res.conflicts)
            return MergeResult(res.tree.hex(), conflicts, res.clean)

        return self._run("merge_trees", work, write=True, ours=ours, theirs=theirs)

    def cherry_pick(
        self,
        branch: str,
        rev: str,
        *,
        author: Signature | None = None,
        committer: Signature | None = None,
        message: str | None = None,
    ) -> str:
        """Apply the change ``rev`` made onto ``branch``; keeps its message and author
        unless given. ``MergeConflict`` (nothing changed) on conflicts."""
        check_short_ref_name(_str_arg(branch, "branch"), "branch")
        who = None if author is None else _signature(author, "author")
        return self._pick("cherry_pick", merge_ops.cherry_pick_commit, branch, rev, who,
                          committer, message)  # fmt: skip

    def revert(
        self,
        branch: str,
        rev: str,
        *,
        author: Signature,
        committer: Signature | None = None,
        message: str | None = None,
    ) -> str:
        """Undo the change ``rev`` made, as a new commit on ``branch`` (git's default
        message ``Revert "<subject>"``). ``MergeConflict`` (nothing changed) on conflicts."""
        check_short_ref_name(_str_arg(branch, "branch"), "branch")
        who = _signature(author, "author")
        return self._pick("revert", merge_ops.revert_commit, branch, rev, who, committer, message)

    def _pick(
        self,
        op_name: str,
        apply: Callable[..., merge_ops.MergeOutcome],
        branch: str,
        rev: str,
        author: Signature | None,
        committer: Signature | None,
        message: str | None,
    ) -> str:
        """cherry_pick and revert: ``apply`` the change ``rev`` made (or its inverse)
        onto ``branch`` (checked by the caller) by compare-and-swap, with its event."""
        by = None if committer is None else _signature(committer, "committer")
        msg = None if message is None else _message_bytes(message)

        def work(unit: Unit) -> str:
            out = apply(
                unit,
                branch,
                self._resolve(unit, rev),
                author=author,
                committer=by,
                message=msg,
                attempts=self._store.settings.commit_rebase_attempts,
            )
            self._publish(unit, "refs/heads/" + branch, out.old_head, out.oid)
            return out.oid.hex()

        return self._run(op_name, work, write=True, branch=branch, rev=rev)

    def get_tag(self, name: str) -> TagInfo:
        """The annotated tag object that tag ``name`` (or a full tag id) points at.

        ``InvalidInput`` when it is a lightweight tag (no tag object); ``NotFound``.
        """
        _str_arg(name, "tag")

        def work(unit: Unit) -> TagInfo:
            target = unit.refs.get("refs/tags/" + name) if name else None
            if target is None:
                target = hex_to_oid(name) if len(name) == 40 and set(name) <= _HEX else None
                if target is None:
                    raise NotFound(f"tag {name!r} not found")
            raw = unit.objects.get(target)
            if raw.type != b"tag":
                raise InvalidInput(f"tag {name!r} is a lightweight tag (no tag object)")
            tag = parse_lenient(raw.type, raw.data)
            assert isinstance(tag, Tag)
            return TagInfo(
                oid=target.hex(),
                object=tag.object.hex(),
                type=tag.object_type.decode("ascii"),
                name=tag.name.decode("utf-8", "surrogateescape"),
                tagger=tag.tagger,
                message=tag.message.decode("utf-8", "surrogateescape"),
                extra=_extra(tag.extra),
            )

        return self._run("get_tag", work, name=name)

    def export_git(self, dest: str | os.PathLike[str]) -> ExportReport:
        """Write this repository as a bare git repository at ``dest`` (one pack, all refs);
        ids identical, ``git fsck --strict`` clean. Needs the ``git`` extra (dulwich).
        """
        # The facade only forwards: the work lives in interop/, which imports api/.
        from govc_db.interop.export import export_repository

        return export_repository(self, dest)

    def gc(
        self,
        *,
        progress: Callable[[int, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        full: bool | None = None,
    ) -> GcReport:
        """Storage maintenance (git gc): pack this repository's objects into pack rows
        (about 2 MiB of objects compressed together, versions of a file side by side),
        then return freed space. Safe while others commit and read; interruptible and
        re-runnable. ``progress(done, total)`` is called after each write transaction.
        ``full``: True repacks every object, False packs only the objects written since
        (loose rows), None (default) repacks only when that pays."""
        store = self._store
        depth = store.settings.delta_max_depth

        def call() -> GcReport:
            return run_gc(
                store.backend,
                self._id,
                max_depth=depth,
                progress=progress,
                should_stop=should_stop,
                full=full,
            )

        report: GcReport = store.run(Operation("gc", self.name, call, write=True, args={}))
        return report


def _check_ref_dir_clash(unit: Unit, ref: str) -> None:
    """Git cannot store both ``refs/heads/a`` and ``refs/heads/a/b``; refuse the same way."""
    parts = ref.split("/")
    for i in range(3, len(parts)):
        if unit.refs.get("/".join(parts[:i])) is not None:
            raise AlreadyExists(f"cannot create {ref!r}: {'/'.join(parts[:i])!r} exists")
    if unit.refs.list_refs(ref + "/"):
        raise AlreadyExists(f"cannot create {ref!r}: refs exist below it")


class ChangeBuilder:
    """Collects writes and deletes; commits them through ``Repository.commit`` on exit."""

    def __init__(self, repo: Repository, branch: str, options: dict[str, Any]) -> None:
        self._repo = repo
        self._branch = branch
        self._options = options
        self._changes: dict[str, File | None] = {}
        self.oid: str | None = None

    def write(self, path: str, data: bytes | Readable, mode: int = 0o100644) -> None:
        """Stage ``data`` (bytes or a readable binary stream) at ``path`` with ``mode``."""
        self._changes[check_path(path)] = File(data, mode)

    def delete(self, path: str) -> None:
        """Stage the deletion of ``path``."""
        self._changes[check_path(path)] = None

    def __enter__(self) -> ChangeBuilder:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if et is None:
            self.oid = self._repo.commit(self._branch, self._changes, **self._options)
