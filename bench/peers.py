"""The peers our figures are measured against, each doing the same work its own way.

- :class:`GitPlumbing`: the real ``git`` CLI, one process per plumbing step
  (``hash-object -w``, ``update-index --cacheinfo``, ``write-tree``, ``commit-tree``,
  ``update-ref``), in a real non-bare repository (so the reflog is written, like ours).
- :class:`DulwichCommitter`: dulwich on a disk repository (loose objects, ref CAS + reflog).
- :class:`RawPostgres` / :class:`RawSqlite`: a hand-written transaction doing the
  equivalent SQL on the same schema (objects, commit index rows, CAS of the ref, reflog),
  with psycopg pipeline mode on PostgreSQL. They keep their tree in memory and never
  read the database: the floor a writer that knows its own state can reach.
- :class:`CatFileBatch`, :func:`git`: git-side tools for the read workloads (on git's
  copy of the same history, made by ``git fast-import``: see :mod:`bench.history`).

All committers produce byte-identical objects for the same input, so their heads must
equal ours: the harness checks that, which proves they did the same work.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from govc_db.objects import (
    MODE_DIR,
    MODE_FILE,
    TYPE_NUMBERS,
    Commit,
    ObjectId,
    Signature,
    hash_object,
    tree_sort_key,
)
from govc_db.store.codec import Codec
from govc_db.store.statements import encode_changed

__all__ = [
    "AUTHOR_EMAIL",
    "AUTHOR_NAME",
    "CatFileBatch",
    "Committer",
    "DulwichCommitter",
    "GitPlumbing",
    "RawPostgres",
    "RawSqlite",
    "git",
    "git_env",
    "signature",
]

AUTHOR_NAME = "Bench"
AUTHOR_EMAIL = "bench@example.com"
BRANCH = "main"
REF = "refs/heads/" + BRANCH


def signature(when: int) -> Signature:
    """The author and committer of every benchmark commit (ids depend on it)."""
    return Signature(AUTHOR_NAME, AUTHOR_EMAIL, when, 0)


def summary(message: bytes) -> str:
    """The reflog text of a commit, as ``git commit`` and our commit() write it."""
    return "commit: " + message.split(b"\n", 1)[0].decode()


class Committer(Protocol):
    """Something that commits one-file changes onto a branch; every call returns the head."""

    name: str

    def start(self, files: Mapping[str, bytes], message: bytes, when: int) -> str: ...

    def commit(self, path: str, data: bytes, message: bytes, when: int) -> str: ...

    def close(self) -> None: ...


# -- git CLI -------------------------------------------------------------------------------
def git_env(home: Path, when: int | None = None) -> dict[str, str]:
    """A clean environment: no user/system config, fixed identity and dates."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(HOME=str(home), GIT_CONFIG_NOSYSTEM="1", LC_ALL="C", TZ="UTC")
    env.update(
        GIT_AUTHOR_NAME=AUTHOR_NAME,
        GIT_AUTHOR_EMAIL=AUTHOR_EMAIL,
        GIT_COMMITTER_NAME=AUTHOR_NAME,
        GIT_COMMITTER_EMAIL=AUTHOR_EMAIL,
    )
    if when is not None:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = f"@{when} +0000"
    return env


def git(
    repo_dir: Path, *args: str, input: bytes | None = None, env: dict[str, str] | None = None
) -> bytes:
    """Run ``git -C repo_dir args...``; stdout, or RuntimeError with git's stderr."""
    proc = subprocess.run(
        ["git", "-C", str(repo_dir), *args],
        input=input,
        capture_output=True,
        env=env if env is not None else git_env(repo_dir),
        check=False,
    )
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise RuntimeError(f"git {' '.join(args[:2])} failed ({proc.returncode}): {err}")
    return proc.stdout


class GitPlumbing:
    """The real git CLI: five plumbing processes per commit, index kept between commits."""

    name = "git CLI plumbing"

    def __init__(self, root: Path) -> None:
        self.dir = root
        git(Path("/"), "init", "-q", "-b", BRANCH, str(root), env=git_env(root))
        self.head = ""

    def start(self, files: Mapping[str, bytes], message: bytes, when: int) -> str:
        for path, data in files.items():
            target = self.dir / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        git(self.dir, "add", "-A")
        tree = git(self.dir, "write-tree").decode().strip()
        env = git_env(self.dir, when)
        out = git(self.dir, "commit-tree", tree, "-F", "-", input=message, env=env)
        self.head = out.decode().strip()
        git(self.dir, "update-ref", "-m", summary(message), REF, self.head, "")
        return self.head

    def commit(self, path: str, data: bytes, message: bytes, when: int) -> str:
        blob = git(self.dir, "hash-object", "-w", "--stdin", input=data).decode().strip()
        git(self.dir, "update-index", "--cacheinfo", f"100644,{blob},{path}")
        tree = git(self.dir, "write-tree").decode().strip()
        env = git_env(self.dir, when)
        new = git(self.dir, "commit-tree", tree, "-p", self.head, "-F", "-", input=message, env=env)
        head = new.decode().strip()
        git(self.dir, "update-ref", "-m", summary(message), REF, head, self.head)
        self.head = head
        return head

    def close(self) -> None:
        pass


# -- dulwich -------------------------------------------------------------------------------
class DulwichCommitter:
    """dulwich on a disk repository: loose objects, ``set_if_equals`` with a reflog entry."""

    name = "dulwich"

    def __init__(self, root: Path) -> None:
        from dulwich.repo import Repo

        self.repo = Repo.init(str(root), mkdir=True)
        self.head: bytes | None = None
        self.tree: bytes = b""

    def _commit(self, tree: bytes, message: bytes, when: int) -> str:
        from dulwich.objects import Commit as DCommit
        from dulwich.objects import ObjectID
        from dulwich.refs import Ref

        ident = f"{AUTHOR_NAME} <{AUTHOR_EMAIL}>".encode()
        c = DCommit()
        c.tree = ObjectID(tree)
        c.parents = [] if self.head is None else [ObjectID(self.head)]
        c.author = c.committer = ident
        c.author_time = c.commit_time = when
        c.author_timezone = c.commit_timezone = 0
        c.message = message
        self.repo.object_store.add_object(c)
        old = None if self.head is None else ObjectID(self.head)
        ok = self.repo.refs.set_if_equals(
            Ref(REF.encode()),
            old,
            c.id,
            committer=ident,
            timestamp=when,
            timezone=0,
            message=summary(message).encode(),
        )
        if not ok:
            raise RuntimeError("dulwich: ref moved underneath us")
        self.head, self.tree = c.id, tree
        return c.id.decode()

    def start(self, files: Mapping[str, bytes], message: bytes, when: int) -> str:
        from dulwich.object_store import commit_tree_changes
        from dulwich.objects import Blob, Tree

        changes: list[Any] = []
        for path, data in files.items():
            blob = Blob.from_string(data)
            self.repo.object_store.add_object(blob)
            changes.append((path.encode(), MODE_FILE, blob.id))
        tree = commit_tree_changes(self.repo.object_store, Tree(), changes)
        return self._commit(tree, message, when)

    def commit(self, path: str, data: bytes, message: bytes, when: int) -> str:
        from dulwich.object_store import commit_tree_changes
        from dulwich.objects import Blob, ObjectID

        blob = Blob.from_string(data)
        self.repo.object_store.add_object(blob)
        tree = commit_tree_changes(
            self.repo.object_store, ObjectID(self.tree), [(path.encode(), MODE_FILE, blob.id)]
        )
        return self._commit(tree, message, when)

    def close(self) -> None:
        self.repo.close()


# -- raw SQL -------------------------------------------------------------------------------
class TreeModel:
    """The peer's current tree in memory: directory path -> {name: (mode, id)}."""

    def __init__(self) -> None:
        self.dirs: dict[str, dict[bytes, tuple[int, ObjectId]]] = {"": {}}

    @staticmethod
    def _serialize(entries: Mapping[bytes, tuple[int, ObjectId]]) -> bytes:
        items = sorted(entries.items(), key=lambda kv: tree_sort_key(kv[0], kv[1][0]))
        return b"".join(b"%o %s\0%s" % (mode, name, oid) for name, (mode, oid) in items)

    def _rehash(self, dirpath: str, out: list[tuple[bytes, ObjectId, bytes]]) -> None:
        """Re-serialize ``dirpath`` and every directory above it, appending the new trees."""
        while True:
            raw = self._serialize(self.dirs[dirpath])
            oid = hash_object(b"tree", raw)
            out.append((b"tree", oid, raw))
            if dirpath == "":
                return
            parent, _, name = dirpath.rpartition("/")
            self.dirs[parent][name.encode()] = (MODE_DIR, oid)
            dirpath = parent

    def _place(self, path: str, oid: ObjectId) -> str:
        parent, _, name = path.rpartition("/")
        probe = parent
        while probe not in self.dirs:
            self.dirs[probe] = {}
            probe = probe.rpartition("/")[0]
        self.dirs[parent][name.encode()] = (MODE_FILE, oid)
        return parent

    def load(self, files: Mapping[str, ObjectId]) -> list[tuple[bytes, ObjectId, bytes]]:
        """Fill an empty model; every tree, deepest first (the root last)."""
        for path, oid in files.items():
            self._place(path, oid)
        out: list[tuple[bytes, ObjectId, bytes]] = []
        for d in sorted(self.dirs, key=lambda d: -(d.count("/") + (d != ""))):
            raw = self._serialize(self.dirs[d])
            oid = hash_object(b"tree", raw)
            out.append((b"tree", oid, raw))
            if d:
                parent, _, name = d.rpartition("/")
                self.dirs[parent][name.encode()] = (MODE_DIR, oid)
        return out

    def set(self, path: str, oid: ObjectId) -> list[tuple[bytes, ObjectId, bytes]]:
        """Point ``path`` at blob ``oid``; the rewritten trees, the root last."""
        out: list[tuple[bytes, ObjectId, bytes]] = []
        self._rehash(self._place(path, oid), out)
        return out


def _ins(table: str, columns: str, ignore: bool = True) -> str:
    marks = ", ".join(["%s"] * (columns.count(",") + 1))
    tail = " ON CONFLICT DO NOTHING" if ignore else ""
    return f"INSERT INTO {table} ({columns}) VALUES ({marks}){tail}"


INS_REPO = _ins("govc_repositories", "name, default_branch", ignore=False)
SEL_REPO = "SELECT id FROM govc_repositories WHERE name = %s"
INS_OBJ = _ins("govc_objects", "repo_id, oid, type, size, encoding, data")
INS_COMMIT = _ins(
    "govc_commits",
    "repo_id, oid, tree, generation, author_time, committer_time, parents, changed",
)
INS_REF = _ins("govc_refs", "repo_id, name, target")
CAS_REF = "UPDATE govc_refs SET target = %s WHERE repo_id = %s AND name = %s AND target = %s"
# The reflog is keyed (repo_id, ref, id) (migration 0005): the id comes from the sequence
# on PostgreSQL and is the ref's next number on SQLite, as the store does it.
INS_LOG = (
    "INSERT INTO govc_reflog (id, repo_id, ref, old, new, time, message) "
    "VALUES (nextval('govc_reflog_id_seq'), %s, %s, %s, %s, %s, %s)"
)
INS_LOG_SQLITE = (
    "WITH v(repo_id, ref, old, new, time, message) AS (VALUES (?, ?, ?, ?, ?, ?)) "
    "INSERT INTO govc_reflog (id, repo_id, ref, old, new, time, message) "
    "SELECT (SELECT coalesce(max(id), 0) + 1 FROM govc_reflog g "
    "WHERE g.repo_id = v.repo_id AND g.ref = v.ref), "
    "v.* FROM v"
)


@dataclass(slots=True)
class Batch:
    """The rows of one commit, ready for ``executemany``."""

    objects: list[tuple[Any, ...]]
    commit: tuple[Any, ...]
    old: ObjectId | None
    new: ObjectId
    reflog: tuple[Any, ...]


class RawSql:
    """Builds the same rows our commit() writes; subclasses run them in one transaction."""

    name = "raw SQL"

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.repo_id = 0
        self.model = TreeModel()
        self.head: ObjectId | None = None
        self.generation = 0

    def _obj(self, type_name: bytes, oid: ObjectId, raw: bytes) -> tuple[Any, ...]:
        enc, stored = self.codec.encode(raw)
        return (self.repo_id, oid, TYPE_NUMBERS[type_name], len(raw), enc, stored)

    def _batch(
        self,
        blobs: Sequence[tuple[ObjectId, bytes]],
        trees: Sequence[tuple[bytes, ObjectId, bytes]],
        paths: Sequence[str],
        message: bytes,
        when: int,
    ) -> Batch:
        objects = [self._obj(b"blob", oid, raw) for oid, raw in blobs]
        objects += [self._obj(t, oid, raw) for t, oid, raw in trees]
        root = trees[-1][1]
        parents = () if self.head is None else (self.head,)
        sig = signature(when)
        raw = Commit(root, parents, sig, sig, message).serialize()
        new = hash_object(b"commit", raw)
        objects.append(self._obj(b"commit", new, raw))
        r = self.repo_id
        text = summary(message) if parents else "commit (initial): " + summary(message)[8:]
        return Batch(
            objects=objects,
            commit=(
                r,
                new,
                root,
                self.generation + 1,
                when,
                when,
                b"".join(parents),
                encode_changed({0: paths}),
            ),
            old=self.head,
            new=new,
            reflog=(r, REF, self.head, new, int(time.time() * 1_000_000), text),
        )

    def _write(self, batch: Batch) -> None:
        raise NotImplementedError  # each driver's transaction

    def create_branch(self, name: str) -> None:
        """A new branch ``refs/heads/<name>`` at the current head (outside the timings)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _advance(self, batch: Batch) -> str:
        self._write(batch)
        self.head = batch.new
        self.generation += 1
        return batch.new.hex()

    def start(self, files: Mapping[str, bytes], message: bytes, when: int) -> str:
        blobs = {path: (hash_object(b"blob", data), data) for path, data in files.items()}
        trees = self.model.load({p: oid for p, (oid, _) in blobs.items()})
        return self._advance(self._batch(list(blobs.values()), trees, list(files), message, when))

    def commit(self, path: str, data: bytes, message: bytes, when: int) -> str:
        oid = hash_object(b"blob", data)
        trees = self.model.set(path, oid)
        return self._advance(self._batch([(oid, data)], trees, [path], message, when))


class RawPostgres(RawSql):
    """psycopg 3, pipeline mode: every statement of the commit in one round trip, then COMMIT."""

    name = "raw psycopg (pipeline)"

    def __init__(self, conninfo: str, codec: Codec, repo_name: str) -> None:
        import psycopg

        super().__init__(codec)
        self.conn = psycopg.connect(conninfo, autocommit=True)
        self.conn.execute(INS_REPO, (repo_name, BRANCH))
        row = self.conn.execute(SEL_REPO, (repo_name,)).fetchone()
        assert row is not None
        self.repo_id = int(row[0])

    def _write(self, batch: Batch) -> None:
        with self.conn.pipeline() as pipe, self.conn.transaction():
            cur = self.conn.cursor()
            cur.executemany(INS_OBJ, batch.objects)
            cur.execute(INS_COMMIT, batch.commit)
            ref = self.conn.cursor()
            if batch.old is None:
                ref.execute(INS_REF, (self.repo_id, REF, batch.new))
            else:
                ref.execute(CAS_REF, (batch.new, self.repo_id, REF, batch.old))
            cur.execute(INS_LOG, batch.reflog)
            pipe.sync()  # the one round trip; the CAS result is known before COMMIT
            if ref.rowcount != 1:
                raise RuntimeError("raw psycopg: ref moved underneath us")  # rolls back

    def create_branch(self, name: str) -> None:
        self.conn.execute(INS_REF, (self.repo_id, "refs/heads/" + name, self.head))

    def close(self) -> None:
        self.conn.close()


class RawSqlite(RawSql):
    """sqlite3 with the pragmas our engine sets (WAL, synchronous=NORMAL), BEGIN IMMEDIATE."""

    name = "raw sqlite3"

    def __init__(self, path: Path, codec: Codec, repo_name: str) -> None:
        super().__init__(codec)
        self.conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
            self.conn.execute("PRAGMA " + pragma)
        self.conn.execute(_q(INS_REPO), (repo_name, BRANCH))
        row = self.conn.execute(_q(SEL_REPO), (repo_name,)).fetchone()
        self.repo_id = int(row[0])

    def _write(self, batch: Batch) -> None:
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            c.executemany(_q(INS_OBJ), batch.objects)
            c.execute(_q(INS_COMMIT), batch.commit)
            if batch.old is None:
                moved = c.execute(_q(INS_REF), (self.repo_id, REF, batch.new))
            else:
                moved = c.execute(_q(CAS_REF), (batch.new, self.repo_id, REF, batch.old))
            if moved.rowcount != 1:
                raise RuntimeError("raw sqlite3: ref moved underneath us")
            c.execute(INS_LOG_SQLITE, batch.reflog)
        except BaseException:
            c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")

    def create_branch(self, name: str) -> None:
        self.conn.execute(_q(INS_REF), (self.repo_id, "refs/heads/" + name, self.head))

    def close(self) -> None:
        self.conn.close()


def _q(statement: str) -> str:
    """psycopg's ``%s`` placeholders as sqlite3's ``?``."""
    return statement.replace("%s", "?")


# -- git-side read tools -------------------------------------------------------------------
class CatFileBatch:
    """One long-running ``git cat-file --batch``; each read is one request/response."""

    def __init__(self, repo_dir: Path) -> None:
        self.proc = subprocess.Popen(
            ["git", "-C", str(repo_dir), "cat-file", "--batch"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=git_env(repo_dir),
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in: IO[bytes] = self.proc.stdin
        self._out: IO[bytes] = self.proc.stdout

    def read(self, rev: str, path: str) -> bytes:
        self._in.write(f"{rev}:{path}\n".encode())
        self._in.flush()
        header = self._out.readline().split()
        if len(header) != 3:
            raise KeyError(f"{rev}:{path}: {b' '.join(header).decode(errors='replace')}")
        data = self._out.read(int(header[2]))
        self._out.read(1)  # the LF after the content
        return data

    def close(self) -> None:
        self._in.close()
        self.proc.wait(timeout=30)
