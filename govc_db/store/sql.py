"""The SQL store: objects, refs (compare-and-swap) and the commit index over SQLAlchemy Core.

One :class:`SqlUnit` is one connection in one transaction, scoped to a repository;
it implements the three ports of :mod:`govc_db.store.ports`. Statements are built
once at import so SQLAlchemy's compiled cache hits on every call. Driver errors
are translated into :mod:`govc_db.errors` here and nowhere else.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Insert,
    Table,
    and_,
    bindparam,
    delete,
    func,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import BindParameter

from govc_db.db.engine import WRITE_OPTION
from govc_db.db.errors import translate, translating
from govc_db.errors import AlreadyExists, GovcError, InvalidInput, NotFound
from govc_db.models import Base, CommitIndex, CommitParent, CommitPath, ObjectRow, Ref, RefLog
from govc_db.models import Repository as RepositoryRow
from govc_db.objects import TYPE_NAMES, TYPE_NUMBERS, ObjectId, hash_object
from govc_db.store.codec import Codec
from govc_db.store.ports import IndexEntry, RawObject, RefLogEntry

__all__ = ["RepositoryRecord", "SqlBackend", "SqlUnit"]

log = logging.getLogger("govc_db.store")

T_REPO: Table = RepositoryRow.__table__  # type: ignore[assignment]
T_OBJ: Table = ObjectRow.__table__  # type: ignore[assignment]
T_REF: Table = Ref.__table__  # type: ignore[assignment]
T_LOG: Table = RefLog.__table__  # type: ignore[assignment]
T_COMMIT: Table = CommitIndex.__table__  # type: ignore[assignment]
T_PARENT: Table = CommitParent.__table__  # type: ignore[assignment]
T_PATH: Table = CommitPath.__table__  # type: ignore[assignment]

#: Ids per IN (...) list; well under SQLite's and PostgreSQL's parameter limits.
CHUNK = 500

_PREFIX_RE = re.compile(r"[0-9a-f]{4,40}")

_R: BindParameter[int] = bindparam("repo_id")

# -- statements, built once -------------------------------------------------------------
S_OBJ_GET = select(T_OBJ.c.oid, T_OBJ.c.type, T_OBJ.c.size, T_OBJ.c.encoding, T_OBJ.c.data).where(
    T_OBJ.c.repo_id == _R, T_OBJ.c.oid.in_(bindparam("oids", expanding=True))
)
S_OBJ_HAS = select(T_OBJ.c.oid).where(
    T_OBJ.c.repo_id == _R, T_OBJ.c.oid.in_(bindparam("oids", expanding=True))
)
S_OBJ_PREFIX = (
    select(T_OBJ.c.oid)
    .where(T_OBJ.c.repo_id == _R, T_OBJ.c.oid >= bindparam("lo"), T_OBJ.c.oid <= bindparam("hi"))
    .order_by(T_OBJ.c.oid)
    .limit(bindparam("lim"))
)
S_OBJ_ALL = select(T_OBJ.c.oid, T_OBJ.c.type).where(T_OBJ.c.repo_id == _R).order_by(T_OBJ.c.oid)

S_REF_GET = select(T_REF.c.target).where(T_REF.c.repo_id == _R, T_REF.c.name == bindparam("name"))
S_REF_LIST = (
    select(T_REF.c.name, T_REF.c.target)
    .where(T_REF.c.repo_id == _R, T_REF.c.name >= bindparam("lo"), T_REF.c.name < bindparam("hi"))
    .order_by(T_REF.c.name)
)
# PostgreSQL compares text by the database collation; under e.g. en_US (glibc) '/' is
# ignored at the first level, so the range [prefix, prefix+1) would miss refs. Comparing in
# the "C" collation is bytewise, as SQLite's BINARY default is, on every server.
S_REF_LIST_PG = (
    select(T_REF.c.name, T_REF.c.target)
    .where(
        T_REF.c.repo_id == _R,
        T_REF.c.name.collate("C") >= bindparam("lo"),
        T_REF.c.name.collate("C") < bindparam("hi"),
    )
    .order_by(T_REF.c.name.collate("C"))
)
S_REF_ALL = select(T_REF.c.name, T_REF.c.target).where(T_REF.c.repo_id == _R).order_by(T_REF.c.name)
# UPDATE reserves bind names equal to column names (they would mean SET col = ...), so
# the CAS statement uses its own names and is executed with explicit parameters.
S_REF_CAS = (
    update(T_REF)
    .where(
        T_REF.c.repo_id == bindparam("b_repo_id"),
        T_REF.c.name == bindparam("b_name"),
        T_REF.c.target == bindparam("b_old"),
    )
    .values(target=bindparam("b_new"))
)
S_REF_DEL_IF = delete(T_REF).where(
    T_REF.c.repo_id == _R, T_REF.c.name == bindparam("name"), T_REF.c.target == bindparam("old")
)
S_REF_DEL_ANY = delete(T_REF).where(T_REF.c.repo_id == _R, T_REF.c.name == bindparam("name"))
S_LOG_ADD = T_LOG.insert().values(
    repo_id=_R,
    ref=bindparam("ref"),
    old=bindparam("old"),
    new=bindparam("new"),
    time=bindparam("time"),
    message=bindparam("message"),
)
S_LOG_GET = (
    select(T_LOG.c.ref, T_LOG.c.old, T_LOG.c.new, T_LOG.c.time, T_LOG.c.message)
    .where(T_LOG.c.repo_id == _R, T_LOG.c.ref == bindparam("ref"))
    .order_by(T_LOG.c.id)
)

_COMMIT_COLS = (
    T_COMMIT.c.oid,
    T_COMMIT.c.tree,
    T_COMMIT.c.generation,
    T_COMMIT.c.author_time,
    T_COMMIT.c.committer_time,
)
S_IDX_GET = select(*_COMMIT_COLS).where(
    T_COMMIT.c.repo_id == _R, T_COMMIT.c.oid.in_(bindparam("oids", expanding=True))
)
S_PAR_GET = (
    select(T_PARENT.c.oid, T_PARENT.c.position, T_PARENT.c.parent)
    .where(T_PARENT.c.repo_id == _R, T_PARENT.c.oid.in_(bindparam("oids", expanding=True)))
    .order_by(T_PARENT.c.oid, T_PARENT.c.position)
)
S_IDX_ALL = select(*_COMMIT_COLS).where(T_COMMIT.c.repo_id == _R)
S_PAR_ALL = (
    select(T_PARENT.c.oid, T_PARENT.c.position, T_PARENT.c.parent)
    .where(T_PARENT.c.repo_id == _R)
    .order_by(T_PARENT.c.oid, T_PARENT.c.position)
)
S_PATH_TOUCH = select(T_PATH.c.oid, T_PATH.c.position).where(
    T_PATH.c.repo_id == _R,
    or_(
        T_PATH.c.path == bindparam("path"),
        and_(T_PATH.c.path >= bindparam("lo"), T_PATH.c.path < bindparam("hi")),
    ),
)
S_PATH_OF = select(T_PATH.c.position, T_PATH.c.path).where(
    T_PATH.c.repo_id == _R, T_PATH.c.oid == bindparam("oid")
)


def _ancestry_statement() -> Any:
    """``oids`` plus all ancestors with generation >= :min_gen, deduplicated by UNION.

    The join conditions go through ``anc.repo_id`` rather than the constant, and the
    generation test is ``generation + 0`` (not indexable): without planner statistics
    SQLite otherwise drives the joins from the repository's index ranges and scans the
    CTE inside them, which is quadratic (2,000 commits: 11 s instead of 30 ms); this
    way every step is a primary-key lookup from the CTE row.
    """
    start = (
        select(T_COMMIT.c.repo_id.label("repo_id"), T_COMMIT.c.oid.label("oid"))
        .where(T_COMMIT.c.repo_id == _R, T_COMMIT.c.oid.in_(bindparam("oids", expanding=True)))
        .cte("anc", recursive=True)
    )
    p = T_PARENT.alias("p")
    pc = T_COMMIT.alias("pc")
    step = (
        select(p.c.repo_id, p.c.parent)
        .select_from(start.join(p, and_(p.c.repo_id == start.c.repo_id, p.c.oid == start.c.oid)))
        .join(pc, and_(pc.c.repo_id == p.c.repo_id, pc.c.oid == p.c.parent))
        .where(pc.c.generation + 0 >= bindparam("min_gen"))
    )
    anc = start.union(step)
    c = T_COMMIT.alias("c")
    par = T_PARENT.alias("par")
    return (
        select(
            c.c.oid,
            c.c.tree,
            c.c.generation,
            c.c.author_time,
            c.c.committer_time,
            par.c.position,
            par.c.parent,
        )
        .select_from(anc.join(c, and_(c.c.repo_id == anc.c.repo_id, c.c.oid == anc.c.oid)))
        .outerjoin(par, and_(par.c.repo_id == c.c.repo_id, par.c.oid == c.c.oid))
        .order_by(c.c.oid, par.c.position)
    )


S_ANCESTRY = _ancestry_statement()


def _window_statement() -> Any:
    c = T_COMMIT.alias("c")
    par = T_PARENT.alias("par")
    return (
        select(
            c.c.oid,
            c.c.tree,
            c.c.generation,
            c.c.author_time,
            c.c.committer_time,
            par.c.position,
            par.c.parent,
        )
        .select_from(c.outerjoin(par, and_(par.c.repo_id == c.c.repo_id, par.c.oid == c.c.oid)))
        .where(
            c.c.repo_id == _R,
            c.c.generation >= bindparam("lo"),
            c.c.generation <= bindparam("hi"),
        )
        .order_by(c.c.oid, par.c.position)
    )


S_IDX_WINDOW = _window_statement()


def _group_index_rows(rows: Iterable[Any]) -> dict[ObjectId, IndexEntry]:
    """Fold rows of (commit columns, position, parent), ordered by oid, into entries."""
    out: dict[ObjectId, IndexEntry] = {}
    first: Any = None
    parents: list[ObjectId] = []

    def flush() -> None:
        oid = ObjectId(bytes(first.oid))
        out[oid] = IndexEntry(
            oid,
            ObjectId(bytes(first.tree)),
            tuple(parents),
            first.generation,
            first.author_time,
            first.committer_time,
        )

    for row in rows:
        if first is None or bytes(row.oid) != bytes(first.oid):
            if first is not None:
                flush()
            first, parents = row, []
        if row.parent is not None:
            parents.append(ObjectId(bytes(row.parent)))
    if first is not None:
        flush()
    return out


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _type_name(number: int, oid: bytes) -> bytes:
    name = TYPE_NAMES.get(number)
    if name is None:
        raise GovcError(f"object {bytes(oid).hex()} has an unknown stored type {number}")
    return name


def _insert(dialect: str, table: Table) -> Insert:
    mod: Any = pg_dialect if dialect == "postgresql" else sqlite_dialect
    stmt: Insert = mod.insert(table).on_conflict_do_nothing()
    return stmt


# -- the unit of work -------------------------------------------------------------------
class SqlUnit:
    """One connection, one transaction, one repository: implements all three ports."""

    def __init__(self, conn: Connection, repo_id: int, backend: SqlBackend) -> None:
        self.conn = conn
        self.repo_id = repo_id
        self._backend = backend
        self._hooks: list[Callable[[], None]] = []
        self.objects = SqlObjects(self)
        self.refs = SqlRefs(self)
        self.index = SqlIndex(self)

    def savepoint(self) -> AbstractContextManager[object]:
        """A SAVEPOINT; rolled back (and the error re-raised) if the block raises."""
        return self.conn.begin_nested()

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` after this unit's transaction committed."""
        self._hooks.append(callback)

    def execute(self, stmt: Any, params: Any = None) -> Any:
        """Execute with the repository id bound (``params`` may be a dict or a list)."""
        if params is None:
            params = {"repo_id": self.repo_id}
        elif isinstance(params, dict):
            params = {"repo_id": self.repo_id, **params}
        return self.conn.execute(stmt, params)


class SqlObjects:
    """ObjectStore over ``govc_objects``."""

    def __init__(self, unit: SqlUnit) -> None:
        self._u = unit
        self._codec = unit._backend.codec

    def get(self, oid: ObjectId) -> RawObject:
        """The object; ``NotFound`` if absent."""
        found = self.get_many([oid])
        if oid not in found:
            raise NotFound(f"object {oid.hex()} not found")
        return found[oid]

    def get_many(self, oids: Iterable[ObjectId]) -> dict[ObjectId, RawObject]:
        """The objects that exist among ``oids``."""
        wanted = list(dict.fromkeys(oids))
        out: dict[ObjectId, RawObject] = {}
        for chunk in _chunks(wanted):
            for row in self._u.execute(S_OBJ_GET, {"oids": list(chunk)}):
                data = self._codec.decode(row.encoding, row.data, row.size)
                out[ObjectId(bytes(row.oid))] = RawObject(_type_name(row.type, row.oid), data)
        return out

    def has(self, oid: ObjectId) -> bool:
        """Whether the object exists."""
        return bool(self.has_many([oid]))

    def has_many(self, oids: Iterable[ObjectId]) -> set[ObjectId]:
        """The subset of ``oids`` present."""
        wanted = list(dict.fromkeys(oids))
        out: set[ObjectId] = set()
        for chunk in _chunks(wanted):
            out.update(
                ObjectId(bytes(r[0])) for r in self._u.execute(S_OBJ_HAS, {"oids": list(chunk)})
            )
        return out

    def put(self, type_name: bytes, data: bytes) -> ObjectId:
        """Store one object; returns its id."""
        return self.put_many([(type_name, data)])[0]

    def put_many(self, objects: Iterable[tuple[bytes, bytes]]) -> list[ObjectId]:
        """Store objects (deduplicated by id); ids in input order."""
        ids: list[ObjectId] = []
        rows: dict[ObjectId, dict[str, Any]] = {}
        for type_name, data in objects:
            if type_name not in TYPE_NUMBERS:
                raise GovcError(f"unknown object type {type_name!r}")
            oid = hash_object(type_name, data)
            ids.append(oid)
            if oid not in rows:
                enc, stored = self._codec.encode(data)
                rows[oid] = {
                    "repo_id": self._u.repo_id,
                    "oid": oid,
                    "type": TYPE_NUMBERS[type_name],
                    "size": len(data),
                    "encoding": enc,
                    "data": stored,
                }
        if rows:
            stmt = self._u._backend.obj_insert
            batch = list(rows.values())
            for chunk in _chunks(batch, 200):
                self._u.conn.execute(stmt, list(chunk))
        return ids

    def find_prefix(self, prefix_hex: str, limit: int = 2) -> list[ObjectId]:
        """Ids starting with ``prefix_hex``; ``InvalidInput`` unless it is 4-40 lowercase hex."""
        if not _PREFIX_RE.fullmatch(prefix_hex) or limit < 1:
            raise InvalidInput(f"not an abbreviated object id: {prefix_hex[:60]!r}")
        lo = bytes.fromhex(prefix_hex.ljust(40, "0"))
        hi = bytes.fromhex(prefix_hex.ljust(40, "f"))
        rows = self._u.execute(S_OBJ_PREFIX, {"lo": lo, "hi": hi, "lim": limit})
        return [ObjectId(bytes(r[0])) for r in rows]

    def iter_ids(self) -> Iterable[tuple[ObjectId, bytes]]:
        """Every (id, type) of this repository."""
        return [(ObjectId(bytes(r[0])), _type_name(r[1], r[0])) for r in self._u.execute(S_OBJ_ALL)]


class SqlRefs:
    """RefStore over ``govc_refs`` with a reflog row per successful move."""

    def __init__(self, unit: SqlUnit) -> None:
        self._u = unit

    def get(self, name: str) -> ObjectId | None:
        """The ref's target or None."""
        row = self._u.execute(S_REF_GET, {"name": name}).first()
        return None if row is None else ObjectId(bytes(row[0]))

    def list_refs(self, prefix: str = "refs/") -> dict[str, ObjectId]:
        """Refs under ``prefix``, by full name."""
        if prefix:
            hi = prefix[:-1] + chr(ord(prefix[-1]) + 1)
            rows = self._u.execute(self._u._backend.ref_list, {"lo": prefix, "hi": hi})
        else:
            rows = self._u.execute(S_REF_ALL)
        # Sorted here too: the database's order depends on its collation.
        found = sorted((r[0], ObjectId(bytes(r[1]))) for r in rows if r[0].startswith(prefix))
        return dict(found)

    def _log(self, name: str, old: ObjectId | None, new: ObjectId | None, message: str) -> None:
        self._u.execute(
            S_LOG_ADD,
            {
                "ref": name,
                "old": old,
                "new": new,
                "time": int(self._u._backend.clock() * 1_000_000),
                "message": message,
            },
        )

    def set_if_equals(self, name: str, old: ObjectId | None, new: ObjectId, message: str) -> bool:
        """CAS ``old`` -> ``new``; None as ``old`` means the ref must not exist."""
        if old is None:
            return self.add_if_new(name, new, message)
        params = {"b_repo_id": self._u.repo_id, "b_name": name, "b_old": old, "b_new": new}
        if self._u.conn.execute(S_REF_CAS, params).rowcount != 1:
            return False
        self._log(name, old, new, message)
        return True

    def add_if_new(self, name: str, new: ObjectId, message: str) -> bool:
        """Create the ref if absent."""
        stmt = self._u._backend.ref_insert
        res = self._u.conn.execute(stmt, {"repo_id": self._u.repo_id, "name": name, "target": new})
        if res.rowcount != 1:
            return False
        self._log(name, None, new, message)
        return True

    def remove_if_equals(self, name: str, old: ObjectId | None, message: str) -> bool:
        """Delete the ref if it is ``old`` (None: whatever it is)."""
        if old is None:
            current = self.get(name)
            if current is None:
                return False
            res = self._u.execute(S_REF_DEL_IF, {"name": name, "old": current})
            old = current
        else:
            res = self._u.execute(S_REF_DEL_IF, {"name": name, "old": old})
        if res.rowcount != 1:
            return False
        self._log(name, old, None, message)
        return True

    def reflog(self, name: str) -> list[RefLogEntry]:
        """Moves of ``name``, oldest first."""
        return [
            RefLogEntry(
                r.ref,
                None if r.old is None else ObjectId(bytes(r.old)),
                None if r.new is None else ObjectId(bytes(r.new)),
                r.time / 1_000_000,
                r.message,
            )
            for r in self._u.execute(S_LOG_GET, {"ref": name})
        ]


class SqlIndex:
    """CommitIndexStore over ``govc_commits``, ``govc_commit_parents``, ``govc_commit_paths``."""

    def __init__(self, unit: SqlUnit) -> None:
        self._u = unit

    def add(self, entry: IndexEntry, changed: Mapping[int, Iterable[str]]) -> None:
        """Record a commit and its changed paths (idempotent)."""
        b = self._u._backend
        r = self._u.repo_id
        self._u.conn.execute(
            b.commit_insert,
            {
                "repo_id": r,
                "oid": entry.oid,
                "tree": entry.tree,
                "generation": entry.generation,
                "author_time": entry.author_time,
                "committer_time": entry.committer_time,
                "parent_count": len(entry.parents),
            },
        )
        if entry.parents:
            self._u.conn.execute(
                b.parent_insert,
                [
                    {"repo_id": r, "oid": entry.oid, "position": i, "parent": p}
                    for i, p in enumerate(entry.parents)
                ],
            )
        rows = [
            {
                "repo_id": r,
                "oid": entry.oid,
                "position": pos,
                "path": path.encode("utf-8", "surrogateescape"),
            }
            for pos, paths in changed.items()
            for path in paths
        ]
        for chunk in _chunks(rows, 1000):
            self._u.conn.execute(b.path_insert, list(chunk))

    def _assemble(
        self, commit_rows: Iterable[Any], parent_rows: Iterable[Any]
    ) -> dict[ObjectId, IndexEntry]:
        parents: dict[bytes, list[ObjectId]] = {}
        for row in parent_rows:
            parents.setdefault(bytes(row.oid), []).append(ObjectId(bytes(row.parent)))
        out: dict[ObjectId, IndexEntry] = {}
        for row in commit_rows:
            oid = ObjectId(bytes(row.oid))
            out[oid] = IndexEntry(
                oid,
                ObjectId(bytes(row.tree)),
                tuple(parents.get(oid, ())),
                row.generation,
                row.author_time,
                row.committer_time,
            )
        return out

    def get_many(self, oids: Iterable[ObjectId]) -> dict[ObjectId, IndexEntry]:
        """Index rows of ``oids`` that exist."""
        wanted = list(dict.fromkeys(oids))
        out: dict[ObjectId, IndexEntry] = {}
        for chunk in _chunks(wanted):
            params = {"oids": list(chunk)}
            out.update(
                self._assemble(
                    self._u.execute(S_IDX_GET, params), self._u.execute(S_PAR_GET, params)
                )
            )
        return out

    def ancestry(
        self, oids: Sequence[ObjectId], min_generation: int = 0
    ) -> dict[ObjectId, IndexEntry]:
        """``oids`` and their ancestors down to ``min_generation``, one recursive query."""
        if not oids:
            return {}
        params = {"oids": list(dict.fromkeys(oids)), "min_gen": min_generation}
        return _group_index_rows(self._u.execute(S_ANCESTRY, params))

    def window(self, min_generation: int, max_generation: int) -> dict[ObjectId, IndexEntry]:
        """Every commit with ``min_generation <= generation <= max_generation``.

        One index range scan: unlike the recursive ancestry query, its plan cannot
        degrade to a scan per recursion step, so a log loads its history in a few
        cheap range reads (including any side branches in the range).
        """
        if max_generation < min_generation:
            return {}
        params = {"lo": min_generation, "hi": max_generation}
        return _group_index_rows(self._u.execute(S_IDX_WINDOW, params))

    def touching(self, path: str) -> set[tuple[ObjectId, int]]:
        """(commit, position) pairs whose changes touch ``path`` or anything below it."""
        p = path.encode("utf-8", "surrogateescape")
        rows = self._u.execute(S_PATH_TOUCH, {"path": p, "lo": p + b"/", "hi": p + b"0"})
        return {(ObjectId(bytes(r[0])), int(r[1])) for r in rows}

    def iter_all(self) -> Iterable[IndexEntry]:
        """Every index row of this repository."""
        return list(self._assemble(self._u.execute(S_IDX_ALL), self._u.execute(S_PAR_ALL)).values())

    def changed_paths(self, oid: ObjectId) -> dict[int, set[str]]:
        """Recorded changed paths of one commit by parent position."""
        out: dict[int, set[str]] = {}
        for r in self._u.execute(S_PATH_OF, {"oid": oid}):
            out.setdefault(int(r[0]), set()).add(bytes(r[1]).decode("utf-8", "surrogateescape"))
        return out


# -- the backend ------------------------------------------------------------------------
class RepositoryRecord:
    """A row of ``govc_repositories``."""

    __slots__ = ("default_branch", "id", "name")

    def __init__(self, id: int, name: str, default_branch: str) -> None:
        self.id = id
        self.name = name
        self.default_branch = default_branch


S_REPO_GET = select(T_REPO.c.id, T_REPO.c.name, T_REPO.c.default_branch).where(
    T_REPO.c.name == bindparam("name")
)
S_REPO_EXISTS = select(T_REPO.c.id).where(T_REPO.c.id == bindparam("id"))
S_REPO_LIST = select(T_REPO.c.name).order_by(T_REPO.c.name)
S_REPO_DEL = delete(T_REPO).where(T_REPO.c.id == bindparam("id"))
S_REPO_COUNT = select(func.count()).select_from(T_REPO)
# Every table holding rows of a repository, children first; taken from the metadata so a
# table added later (packs, staging) is deleted with its repository without a code change.
_DEPENDENTS = tuple(t for t in reversed(Base.metadata.sorted_tables) if "repo_id" in t.c)


class SqlBackend:
    """Owns the engine-facing pieces: units of work and the repository catalog."""

    def __init__(
        self, engine: Engine, codec: Codec, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.engine = engine
        self.codec = codec
        self.clock = clock
        self.dialect = engine.dialect.name
        self.obj_insert = _insert(self.dialect, T_OBJ)
        # add_if_new reads the INSERT's rowcount, which SQLAlchemy keeps only on request.
        self.ref_insert = _insert(self.dialect, T_REF).execution_options(preserve_rowcount=True)
        self.commit_insert = _insert(self.dialect, T_COMMIT)
        self.parent_insert = _insert(self.dialect, T_PARENT)
        self.path_insert = _insert(self.dialect, T_PATH)
        self.ref_list = S_REF_LIST_PG if self.dialect == "postgresql" else S_REF_LIST

    @contextmanager
    def unit(
        self, repo_id: int, *, write: bool = False, what: str = "operation"
    ) -> Iterator[SqlUnit]:
        """A transaction scoped to ``repo_id``; commits on success, rolls back on error.

        After-commit hooks run once the transaction committed, outside it.
        """
        hooks: list[Callable[[], None]]
        with translating(what), self.engine.connect() as conn:
            if write:
                conn = conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                # A handle may outlive delete_repository (in this or another process).
                if conn.execute(S_REPO_EXISTS, {"id": repo_id}).first() is None:
                    raise NotFound("the repository was deleted")
                u = SqlUnit(conn, repo_id, self)
                yield u
            hooks = u._hooks
        for hook in hooks:
            try:
                hook()
            except Exception:  # a subscriber's failure must not fail a committed write
                log.exception("after-commit hook failed")

    # repository catalog --------------------------------------------------------------
    def get_repository(self, name: str) -> RepositoryRecord | None:
        """The catalog row of ``name`` or None."""
        with translating("repository lookup"), self.engine.connect() as conn:
            row = conn.execute(S_REPO_GET, {"name": name}).first()
        return None if row is None else RepositoryRecord(row.id, row.name, row.default_branch)

    def create_repository(self, name: str, default_branch: str) -> RepositoryRecord:
        """Insert a catalog row; ``AlreadyExists`` if the name is taken."""
        try:
            with self.engine.connect() as conn:
                conn = conn.execution_options(**{WRITE_OPTION: True})
                with conn.begin():
                    conn.execute(T_REPO.insert().values(name=name, default_branch=default_branch))
        except IntegrityError as exc:
            raise AlreadyExists(f"repository {name!r} already exists") from exc
        except Exception as exc:
            raise translate(exc, "create repository") from exc
        rec = self.get_repository(name)
        if rec is None:  # deleted concurrently right after creation
            raise NotFound(f"repository {name!r} not found")
        return rec

    def list_repositories(self) -> list[str]:
        """All repository names, sorted."""
        with translating("list repositories"), self.engine.connect() as conn:
            # Sorted in Python: ORDER BY follows the database collation, which varies.
            return sorted(r[0] for r in conn.execute(S_REPO_LIST))

    def delete_repository(self, name: str) -> RepositoryRecord:
        """Delete a repository and every row that belongs to it; ``NotFound`` if absent."""
        with translating("delete repository"), self.engine.connect() as conn:
            conn = conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                row = conn.execute(S_REPO_GET, {"name": name}).first()
                if row is None:
                    raise NotFound(f"repository {name!r} not found")
                # Explicit deletes rather than relying on ON DELETE CASCADE, which SQLite
                # honours only with foreign keys switched on for the connection.
                for table in _DEPENDENTS:
                    conn.execute(delete(table).where(table.c.repo_id == row.id))
                conn.execute(S_REPO_DEL, {"id": row.id})
        return RepositoryRecord(row.id, row.name, row.default_branch)


_ = literal_column  # re-exported for extensions building their own statements
