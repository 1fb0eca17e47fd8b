"""Test helper: export a repository of a Store into a real git repository on disk.

Writes every object as a loose object and every ref as a loose ref, so the real
``git`` command (``rev-list``, ``diff-tree``, ``fsck``, ``cat-file``) can check our data.
"""

from __future__ import annotations

import os
import subprocess
import zlib
from pathlib import Path

from govc_db.api.repository import Repository
from govc_db.objects.ids import object_header


def git_env(home: Path) -> dict[str, str]:
    """A clean environment for running git in tests."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(HOME=str(home), GIT_CONFIG_NOSYSTEM="1", LC_ALL="C", TZ="UTC")
    return env


def git(repo_dir: Path, *args: str, input: bytes | None = None) -> bytes:
    """Run ``git -C repo_dir args...`` and return stdout (raises on failure)."""
    proc = subprocess.run(
        ["git", "-C", str(repo_dir), *args],
        input=input,
        capture_output=True,
        env=git_env(repo_dir),
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"git {' '.join(args)} failed ({proc.returncode}): "
            f"{proc.stderr.decode(errors='replace')}"
        )
    return proc.stdout


def export_repository(repo: Repository, dest: Path) -> Path:
    """Write all objects and refs of ``repo`` into a new bare-ish git repository at ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["git", "init", "-q", "--bare", str(dest)],
        check=True,
        env=git_env(dest),
        capture_output=True,
    )
    backend = repo._store.backend
    with backend.unit(repo._id) as unit:
        ids = [oid for oid, _ in unit.objects.iter_ids()]
        for i in range(0, len(ids), 500):
            for oid, obj in unit.objects.get_many(ids[i : i + 500]).items():
                h = oid.hex()
                path = dest / "objects" / h[:2] / h[2:]
                path.parent.mkdir(exist_ok=True)
                path.write_bytes(zlib.compress(object_header(obj.type, len(obj.data)) + obj.data))
        refs = unit.refs.list_refs("refs/")
    for name, target in refs.items():
        ref_path = dest / name
        ref_path.parent.mkdir(parents=True, exist_ok=True)
        ref_path.write_text(target.hex() + "\n")
    (dest / "HEAD").write_text(f"ref: refs/heads/{repo.default_branch}\n")
    return dest
