"""Statements of the SQL store, built once at import so SQLAlchemy's compiled cache hits.

Module-level Core constructs over the ORM tables, plus the small helpers that fold
their rows; :mod:`govc_db.store.sql` executes them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import (
    Insert,
    LargeBinary,
    Table,
    and_,
    any_,
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
from sqlalchemy.sql.elements import BindParameter

from govc_db.errors import GovcError
from govc_db.models import Base, CommitIndex, CommitParent, CommitPath, ObjectRow, Ref, RefLog
from govc_db.models import Repository as RepositoryRow
from govc_db.objects import TYPE_NAMES, ObjectId
from govc_db.store.codec import DELTA_ENCODINGS
from govc_db.store.ports import IndexEntry

T_REPO: Table = RepositoryRow.__table__  # type: ignore[assignment]
T_OBJ: Table = ObjectRow.__table__  # type: ignore[assignment]
T_REF: Table = Ref.__table__  # type: ignore[assignment]
T_LOG: Table = RefLog.__table__  # type: ignore[assignment]
T_COMMIT: Table = CommitIndex.__table__  # type: ignore[assignment]
T_PARENT: Table = CommitParent.__table__  # type: ignore[assignment]
T_PATH: Table = CommitPath.__table__  # type: ignore[assignment]

#: Ids per IN (...) list; well under SQLite's and PostgreSQL's parameter limits.
CHUNK = 500

PREFIX_RE = re.compile(r"[0-9a-f]{4,40}")

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
S_REF_GET_MANY = select(T_REF.c.name, T_REF.c.target).where(
    T_REF.c.repo_id == _R, T_REF.c.name.in_(bindparam("names", expanding=True))
)
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


def _log_add(dialect: str) -> Any:
    """The reflog INSERT: ids from the sequence on PostgreSQL, the ref's next number on
    SQLite (the end of its range of the primary key; SQLite's writers are serialized, so
    no two transactions race for it)."""
    if dialect == "postgresql":
        ident: Any = func.nextval(literal_column("'govc_reflog_id_seq'"))
    else:
        ident = (
            select(func.coalesce(func.max(T_LOG.c.id), literal_column("0")) + literal_column("1"))
            .where(T_LOG.c.repo_id == _R, T_LOG.c.ref == bindparam("ref"))
            .scalar_subquery()
        )
    return T_LOG.insert().values(
        id=ident,
        repo_id=_R,
        ref=bindparam("ref"),
        old=bindparam("old"),
        new=bindparam("new"),
        time=bindparam("time"),
        message=bindparam("message"),
    )


S_LOG_ADD_PG = _log_add("postgresql")
S_LOG_ADD = _log_add("sqlite")
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

# Bulk reads by id (govc_db.db.batch): PostgreSQL binds one bytea[] (``= ANY``), so the
# statement text is the same for any number of ids and psycopg prepares it; SQLite expands
# IN lists. The index rows come with their parents in one statement (outer join).
_OIDS_ANY = any_(bindparam("oids", type_=pg_dialect.ARRAY(LargeBinary)))
S_OBJ_GET_PG = select(
    T_OBJ.c.oid, T_OBJ.c.type, T_OBJ.c.size, T_OBJ.c.encoding, T_OBJ.c.data
).where(T_OBJ.c.repo_id == _R, T_OBJ.c.oid == _OIDS_ANY)
S_OBJ_HAS_PG = select(T_OBJ.c.oid).where(T_OBJ.c.repo_id == _R, T_OBJ.c.oid == _OIDS_ANY)
# One id (the commonest read): a plain equality is cheaper to bind than a list on both
# dialects (measured: about half the time of an expanded IN on SQLite).
S_OBJ_GET_ONE = select(
    T_OBJ.c.oid, T_OBJ.c.type, T_OBJ.c.size, T_OBJ.c.encoding, T_OBJ.c.data
).where(T_OBJ.c.repo_id == _R, T_OBJ.c.oid == bindparam("oid"))
S_OBJ_HAS_ONE = select(T_OBJ.c.oid).where(T_OBJ.c.repo_id == _R, T_OBJ.c.oid == bindparam("oid"))


# -- storage optimizer: delta chains (govc_db.store.codec, encoding 3) ---------------------
#: Longest chain a recursive read follows (a corrupt cycle must not loop forever).
MAX_CHAIN_HOPS = 400


def _chain_statement(match: Any) -> Any:
    """The rows of the ids ``match`` selects and of every base below them, in one
    recursive query: a delta row's ``data`` starts with its base id (same repository)."""
    o = T_OBJ
    start = (
        select(
            o.c.oid, o.c.type, o.c.size, o.c.encoding, o.c.data, literal_column("0").label("hop")
        )
        .where(o.c.repo_id == _R, match(o))
        .cte("chain", recursive=True)
    )
    b = T_OBJ.alias("b")
    step = (
        select(
            b.c.oid, b.c.type, b.c.size, b.c.encoding, b.c.data, start.c.hop + literal_column("1")
        )
        .select_from(
            start.join(
                b,
                and_(
                    b.c.repo_id == _R,
                    b.c.oid == func.substr(start.c.data, literal_column("1"), literal_column("20")),
                ),
            )
        )
        .where(
            start.c.encoding.in_([literal_column(str(e)) for e in sorted(DELTA_ENCODINGS)]),
            start.c.hop < literal_column(str(MAX_CHAIN_HOPS)),
        )
    )
    chain = start.union_all(step)
    return select(chain.c.oid, chain.c.type, chain.c.size, chain.c.encoding, chain.c.data)


S_CHAIN_ONE = _chain_statement(lambda o: o.c.oid == bindparam("oid"))
S_CHAIN = _chain_statement(lambda o: o.c.oid.in_(bindparam("oids", expanding=True)))
S_CHAIN_PG = _chain_statement(lambda o: o.c.oid == _OIDS_ANY)


def _index_with_parents(pg: bool) -> Any:
    p = T_PARENT.alias("p")
    match = (
        T_COMMIT.c.oid == _OIDS_ANY if pg else T_COMMIT.c.oid.in_(bindparam("oids", expanding=True))
    )
    return (
        select(*_COMMIT_COLS, p.c.position, p.c.parent)
        .select_from(T_COMMIT)
        .outerjoin(p, and_(p.c.repo_id == T_COMMIT.c.repo_id, p.c.oid == T_COMMIT.c.oid))
        .where(T_COMMIT.c.repo_id == _R, match)
        .order_by(T_COMMIT.c.oid, p.c.position)
    )


S_IDX_PAR_GET = _index_with_parents(pg=False)
S_IDX_PAR_GET_PG = _index_with_parents(pg=True)


def _index_rows(c: Any, source: Any) -> Any:
    """Commit rows of alias ``c`` (joined in ``source``) with their parents, one row per
    parent, ordered for :func:`group_index_rows`."""
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
        .select_from(source)
        .outerjoin(par, and_(par.c.repo_id == c.c.repo_id, par.c.oid == c.c.oid))
        .order_by(c.c.oid, par.c.position)
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
    return _index_rows(c, anc.join(c, and_(c.c.repo_id == anc.c.repo_id, c.c.oid == anc.c.oid)))


S_ANCESTRY = _ancestry_statement()


def _window_statement() -> Any:
    c = T_COMMIT.alias("c")
    return _index_rows(c, c).where(
        c.c.repo_id == _R,
        c.c.generation >= bindparam("lo"),
        c.c.generation <= bindparam("hi"),
    )


S_IDX_WINDOW = _window_statement()


def group_index_rows(rows: Iterable[Any]) -> dict[ObjectId, IndexEntry]:
    """Fold rows of (commit columns, position, parent), ordered by oid, into entries
    (positional: ``oid, tree, generation, author_time, committer_time, position, parent``,
    the columns of :func:`_index_rows` and :func:`_index_with_parents`; a loop without a
    call per row, as a clone reads every commit of a history through it)."""
    out: dict[ObjectId, IndexEntry] = {}
    key: bytes | None = None
    head: tuple[Any, ...] = ()
    parents: list[ObjectId] = []
    for oid, tree, generation, author_time, committer_time, _position, parent in rows:
        oid = bytes(oid)
        if oid != key:
            if key is not None:
                out[ObjectId(key)] = IndexEntry(ObjectId(key), head[0], tuple(parents), *head[1:])
            key, parents = oid, []
            head = (ObjectId(bytes(tree)), generation, author_time, committer_time)
        if parent is not None:
            parents.append(ObjectId(bytes(parent)))
    if key is not None:
        out[ObjectId(key)] = IndexEntry(ObjectId(key), head[0], tuple(parents), *head[1:])
    return out


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    """Consecutive slices of at most ``size`` items."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


def type_name_of(number: int, oid: bytes) -> bytes:
    """The git type name of a stored type number; ``GovcError`` for an unknown one."""
    name = TYPE_NAMES.get(number)
    if name is None:
        raise GovcError(f"object {bytes(oid).hex()} has an unknown stored type {number}")
    return name


def insert_ignore(dialect: str, table: Table) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING`` for the dialect (deduplicating writes)."""
    mod: Any = pg_dialect if dialect == "postgresql" else sqlite_dialect
    stmt: Insert = mod.insert(table).on_conflict_do_nothing()
    return stmt


S_REPO_GET = select(T_REPO.c.id, T_REPO.c.name, T_REPO.c.default_branch).where(
    T_REPO.c.name == bindparam("name")
)
S_REPO_EXISTS = select(T_REPO.c.id).where(T_REPO.c.id == bindparam("id"))
S_REPO_NAME = select(T_REPO.c.name).where(T_REPO.c.id == bindparam("id"))
S_REPO_LIST = select(T_REPO.c.name).order_by(T_REPO.c.name)
S_REPO_DEL = delete(T_REPO).where(T_REPO.c.id == bindparam("id"))
S_REPO_COUNT = select(func.count()).select_from(T_REPO)
# Every table holding rows of a repository, children first; taken from the metadata so a
# table added later (packs, staging) is deleted with its repository without a code change.
DEPENDENT_TABLES = tuple(t for t in reversed(Base.metadata.sorted_tables) if "repo_id" in t.c)

# Every changed path of a repository (verify: the table is keyed by path, so the paths
# of many commits are one scan).
S_PATH_ALL = select(T_PATH.c.oid, T_PATH.c.position, T_PATH.c.path).where(T_PATH.c.repo_id == _R)
