"""Test helper: commit graphs written straight through the store's ports, and git's answers.

The public API makes only single-parent commits, so merges (criss-cross, octopus),
chosen trees and chosen committer times are written here as the foundation store
allows: tree and commit objects with ``unit.objects.put``, the index row with
``index_commit`` and the refs by compare-and-swap, all in one unit (transaction).
``random_dag`` makes seeded random histories for broad comparisons with ``git``.
"""

from __future__ import annotations

import random
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from _export import git_env

from govc_db import Repository, Signature
from govc_db.core.indexing import index_commit
from govc_db.objects import MODE_DIR, MODE_FILE, Commit, ObjectId, Tree, TreeItem, hash_object

BASE_TIME = 1_700_000_000


@dataclass(frozen=True)
class Spec:
    """One commit to write: parents by name, the full file snapshot, committer time."""

    name: str
    parents: tuple[str, ...]
    files: Mapping[str, bytes]
    time: int
    message: str = ""


@dataclass
class Plan:
    """Commits (parents before children) and refs (full name -> commit name)."""

    commits: list[Spec] = field(default_factory=list)
    refs: dict[str, str] = field(default_factory=dict)

    def add(
        self,
        name: str,
        parents: Sequence[str],
        files: Mapping[str, bytes],
        time: int,
    ) -> None:
        self.commits.append(Spec(name, tuple(parents), dict(files), BASE_TIME + time))


def tree_objects(files: Mapping[str, bytes], out: dict[ObjectId, tuple[bytes, bytes]]) -> ObjectId:
    """Add the blobs and trees of a snapshot ``{path: content}`` to ``out`` (id -> (type,
    data)) and return the root tree id; nothing is written yet."""
    here: dict[str, bytes] = {}
    below: dict[str, dict[str, bytes]] = {}
    for path, data in files.items():
        head, sep, rest = path.partition("/")
        if sep:
            below.setdefault(head, {})[rest] = data
        else:
            here[head] = data
    items = []
    for name, data in here.items():
        blob = hash_object(b"blob", data)
        out[blob] = (b"blob", data)
        items.append(TreeItem(name.encode(), MODE_FILE, blob))
    for name, sub in below.items():
        items.append(TreeItem(name.encode(), MODE_DIR, tree_objects(sub, out)))
    raw = Tree.of(items).serialize()
    oid = hash_object(b"tree", raw)
    out[oid] = (b"tree", raw)
    return oid


def build(repo: Repository, plan: Plan, known: Mapping[str, str] | None = None) -> dict[str, str]:
    """Write ``plan`` into ``repo`` in one transaction; return commit name -> hex id.
    ``known`` names commits that already exist (name -> hex id) for use as parents.
    """
    ids = {name: ObjectId(bytes.fromhex(h)) for name, h in (known or {}).items()}
    objects: dict[ObjectId, tuple[bytes, bytes]] = {}
    commits: list[tuple[ObjectId, Commit]] = []
    for spec in plan.commits:
        who = Signature("Dag Builder", "dag@example.com", spec.time, 0)
        commit = Commit(
            tree_objects(spec.files, objects),
            tuple(ids[p] for p in spec.parents),
            who,
            who,
            (spec.message or spec.name + "\n").encode(),
        )
        raw = commit.serialize()
        oid = hash_object(b"commit", raw)
        objects[oid] = (b"commit", raw)
        commits.append((oid, commit))
        ids[spec.name] = oid
    with repo._store.backend.unit(repo._id, write=True) as unit:
        # One batched write for all objects, then the index rows parents first.
        assert unit.objects.put_many(objects.values()) == list(objects)
        for oid, commit in commits:
            index_commit(unit.objects, unit.index, oid, commit)
        for ref, name in plan.refs.items():
            assert unit.refs.set_if_equals(ref, unit.refs.get(ref), ids[name], "dag")
    return {name: oid.hex() for name, oid in ids.items()}


# -- git ----------------------------------------------------------------------------------


def run_git(repo_dir: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run git in ``repo_dir`` whatever its exit status."""
    return subprocess.run(
        ["git", "-C", str(repo_dir), "--literal-pathspecs", *args],
        capture_output=True,
        env=git_env(repo_dir),
        check=False,
    )


def git_rev_list(
    repo_dir: Path, rev: str, path: str | None = None, limit: int | None = None
) -> list[str]:
    """``git rev-list [-n N] REV [-- PATH]``."""
    args = ["rev-list"]
    if limit is not None:
        args += ["-n", str(limit)]
    args.append(rev)
    if path is not None:
        args += ["--", path]
    proc = run_git(repo_dir, *args)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode().split()


def git_merge_base(repo_dir: Path, a: str, b: str) -> str | None:
    """``git merge-base A B`` (None when git finds no common ancestor)."""
    proc = run_git(repo_dir, "merge-base", a, b)
    if proc.returncode == 1 and not proc.stdout:
        return None
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode().strip()


def git_is_ancestor(repo_dir: Path, a: str, b: str) -> bool:
    """``git merge-base --is-ancestor A B``."""
    proc = run_git(repo_dir, "merge-base", "--is-ancestor", a, b)
    assert proc.returncode in (0, 1), proc.stderr.decode()
    return proc.returncode == 0


def git_rev_parse(repo_dir: Path, rev: str) -> str | None:
    """``git rev-parse --verify -q REV`` (None when git cannot resolve it)."""
    proc = run_git(repo_dir, "rev-parse", "--verify", "-q", rev)
    if proc.returncode != 0:
        return None
    return proc.stdout.decode().strip()


# -- random histories ---------------------------------------------------------------------

#: Paths of the random histories: files, nested directories, and "f" that is a file in
#: some commits and a directory (holding "f/g") in others.
PATHS = ("a", "b", "d/x", "d/y", "d/e/z", "f", "f/g")
#: Pathspecs to compare: files, directories, a path that never exists.
PATHSPECS = (None, "a", "b", "d", "d/x", "d/e", "d/e/z", "f", "f/g", "nope")


def _write(files: dict[str, bytes], path: str, data: bytes) -> None:
    # "f" and "f/g" cannot both exist: writing one replaces the other.
    if path == "f":
        files.pop("f/g", None)
    elif path == "f/g":
        files.pop("f", None)
    files[path] = data


def random_dag(seed: int, n: int, *, same_time: bool = False) -> Plan:
    """A random history of ``n`` commits: branches, merges of 2 and 3 parents (criss-cross
    shapes arise on their own), several roots, equal committer times and clock skew,
    merges that keep one side's tree, paths deleted and re-added. ``same_time`` gives
    every commit the same committer time, so only git's tie-breaking orders the walks.
    """
    rng = random.Random(seed)
    plan = Plan()
    snapshots: dict[str, dict[str, bytes]] = {}
    times: dict[str, int] = {}
    tips: list[str] = []
    for i in range(n):
        name = f"c{i}"
        existing = list(snapshots)
        roll = rng.random()
        parents: list[str]
        if not existing or roll < 0.04:
            parents = []
        elif roll < 0.68 or len(existing) < 3:
            pool = tips if tips and rng.random() < 0.85 else existing
            parents = [rng.choice(pool)]
        else:
            count = 3 if roll > 0.93 else 2
            first = rng.choice(tips or existing)
            others = [c for c in existing if c != first]
            parents = [first, *rng.sample(others, min(count - 1, len(others)))]
        if not parents:
            files = {p: rng.choice((b"1", b"2")) for p in PATHS[:-1] if rng.random() < 0.5}
        elif len(parents) == 1 or rng.random() < 0.2:
            files = dict(snapshots[parents[0]])
        elif rng.random() < 0.5:
            files = dict(snapshots[rng.choice(parents)])  # TREESAME to that side
        else:
            files = dict(snapshots[parents[0]])
            for path in sorted(set().union(*(snapshots[p] for p in parents))):
                side = snapshots[rng.choice(parents)]
                if path in side:
                    _write(files, path, side[path])
                else:
                    files.pop(path, None)
        if rng.random() < (0.7 if len(parents) <= 1 else 0.3):
            for _ in range(rng.randint(1, 2)):
                path = rng.choice(PATHS)
                if path in files and rng.random() < 0.3:
                    del files[path]
                else:
                    _write(files, path, rng.choice((b"1", b"2", b"3", b"4")))
        newest = max((times[p] for p in parents), default=0)
        skew = rng.random()
        if skew < 0.1:
            when = max(0, newest - rng.randint(1, 300))  # a child older than its parent
        elif skew < 0.4:
            when = newest  # the same second as its parent
        else:
            when = newest + rng.choice((1, 2, 5, 30))
        plan.add(name, parents, files, 0 if same_time else when)
        snapshots[name] = files
        times[name] = when
        if parents and parents[0] in tips:
            tips.remove(parents[0])
        tips.append(name)
        if len(tips) > 5:
            tips.pop(0)
    plan.refs["refs/heads/main"] = f"c{n - 1}"
    for k, tip in enumerate(tips):
        plan.refs[f"refs/heads/b{k}"] = tip
    return plan


def sample(rng: random.Random, names: Iterable[str], k: int) -> list[str]:
    """``k`` distinct names (fewer if there are not enough), in a stable order."""
    pool = sorted(names)
    return rng.sample(pool, min(k, len(pool)))
