"""``Repository.export_git``: a bare git repository with one pack and every ref.

The pack holds every object of the repository, each written whole with its exact bytes
(so every id is govc_db's); the ``.idx`` is written by dulwich; refs are loose files and
``HEAD`` names the default branch. ``git fsck --strict`` is clean on what govc_db wrote
itself and on what came from a git history that was clean.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from govc_db.errors import AlreadyExists, GovcError
from govc_db.interop.packs import PackWriter
from govc_db.interop.types import ExportReport
from govc_db.objects import ObjectId
from govc_db.store.ports import Unit

if TYPE_CHECKING:
    from govc_db.api.repository import Repository

__all__ = ["export_repository"]

_CHUNK = 500


def export_repository(repo: Repository, dest: str | os.PathLike[str]) -> ExportReport:
    """See :meth:`govc_db.Repository.export_git`."""
    from dulwich.objects import ObjectID
    from dulwich.pack import write_pack_index
    from dulwich.refs import Ref
    from dulwich.repo import Repo

    path = Path(dest)
    if path.exists() and any(path.iterdir()):
        raise AlreadyExists(f"{path} exists and is not empty")
    path.mkdir(parents=True, exist_ok=True)
    bare = Repo.init_bare(str(path))
    try:
        pack_dir = path / "objects" / "pack"
        tmp = pack_dir / "tmp-export.pack"

        def work(u: Unit) -> tuple[dict[str, ObjectId], int, bytes, list[tuple[bytes, int, int]]]:
            refs = u.refs.list_refs("refs/")
            ids = [oid for oid, _ in u.objects.iter_ids()]
            with tmp.open("wb") as f:
                writer = PackWriter(f.write, len(ids))
                for i in range(0, len(ids), _CHUNK):
                    chunk = ids[i : i + _CHUNK]
                    found = u.objects.get_many(chunk)
                    for oid in chunk:
                        raw = found.get(oid)
                        if raw is None:
                            raise GovcError(f"object {oid.hex()} vanished during the export")
                        writer.add(oid, raw.type, raw.data)
                checksum = writer.finish()
            return refs, len(ids), checksum, writer.entries

        refs, count, checksum, entries = repo._run("export_git", work)
        name = "pack-" + checksum.hex()
        os.replace(tmp, pack_dir / (name + ".pack"))
        with (pack_dir / (name + ".idx")).open("wb") as f:
            write_pack_index(f, sorted(entries), checksum, version=2)
        for ref, oid in refs.items():
            bare.refs.set_if_equals(Ref(ref.encode()), None, ObjectID(oid.hex().encode()))
        bare.refs.set_symbolic_ref(Ref(b"HEAD"), Ref(b"refs/heads/" + repo.default_branch.encode()))
        size = (pack_dir / (name + ".pack")).stat().st_size
    finally:
        bare.close()
    return ExportReport(str(path), count, {k: v.hex() for k, v in refs.items()}, size)
