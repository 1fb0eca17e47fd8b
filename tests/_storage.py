"""Helpers of the storage optimizer's tests (test_storage, test_gc)."""

from __future__ import annotations

import sqlalchemy as sa

from govc_db import Repository, Signature, Store
from govc_db.models import Base

SIG = Signature("Ada", "ada@example.com", 1_700_000_000, 0)


def text(path: str, rev: int) -> bytes:
    """A file whose versions differ a little: the delta case."""
    return (f"# {path} v{rev}\n" + "".join(f"line {j} = {j * 7}\n" for j in range(60))).encode()


def history(repo: Repository, commits: int, files: int = 5) -> list[str]:
    ids = [repo.commit("main", {f"d/f{i}.txt": text(f"f{i}", 0) for i in range(files)},
                       message="init\n", author=SIG)]  # fmt: skip
    for k in range(1, commits + 1):
        path = f"d/f{k % files}.txt"
        ids.append(repo.commit("main", {path: text(path, k)}, message=f"c{k}\n", author=SIG))
    return ids


def rows(store: Store, repo_id: int) -> list[tuple[bytes, int, bytes]]:
    t = Base.metadata.tables["govc_objects"]
    with store.engine.connect() as conn:
        q = sa.select(t.c.oid, t.c.encoding, t.c.data).where(t.c.repo_id == repo_id)
        return [(bytes(r[0]), int(r[1]), bytes(r[2])) for r in conn.execute(q)]


def snapshot(repo: Repository, ids: list[str]) -> dict[tuple[str, str], bytes]:
    return {(c, e.path): repo.read(c, e.path) for c in ids for e in repo.walk(c)}
