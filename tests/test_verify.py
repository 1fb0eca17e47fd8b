"""repo.verify() (fsck) on clean repositories and on corruptions made with direct SQL.

A clean repository verifies ok on both backends and its export passes the real
``git fsck --strict``; every corruption introduced in the tables is reported, all at
once, in one report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from _export import export_repository, git

from govc_db import File, Repository, Signature, Store
from govc_db.core.indexing import index_commit
from govc_db.core.trees import build_tree
from govc_db.models import CommitIndex, ObjectRow, Ref
from govc_db.models import Repository as RepositoryRow
from govc_db.objects import (
    MODE_FILE,
    MODE_GITLINK,
    Commit,
    ObjectId,
    Tag,
    Tree,
    TreeItem,
    hash_object,
    hex_to_oid,
    parse_object,
)
from govc_db.store.statements import decode_changed, encode_changed

T_OBJ: sa.Table = ObjectRow.__table__  # type: ignore[assignment]
T_REF: sa.Table = Ref.__table__  # type: ignore[assignment]
T_COMMIT: sa.Table = CommitIndex.__table__  # type: ignore[assignment]
T_REPO: sa.Table = RepositoryRow.__table__  # type: ignore[assignment]


def sig(minute: int) -> Signature:
    return Signature("Ada Lovelace", "ada@example.com", 1_700_000_000 + 60 * minute, 120)


@dataclass
class History:
    """Ids (hex) of the clean history built by :func:`build_history`."""

    c1: str
    c2: str
    c3: str
    c4: str
    c5: str
    f1: str
    merge: str
    empty: str
    gitlink: str


def repo_id(store: Store, name: str) -> int:
    with store.engine.connect() as conn:
        rid: int = conn.execute(sa.select(T_REPO.c.id).where(T_REPO.c.name == name)).scalar_one()
    return rid


def object_count(store: Store, name: str) -> int:
    with store.engine.connect() as conn:
        n: int = conn.execute(
            sa.select(sa.func.count())
            .select_from(T_OBJ)
            .where(T_OBJ.c.repo_id == repo_id(store, name))
        ).scalar_one()
    return n


def tree_of(repo: Repository, commit_hex: str) -> Tree:
    """The root tree of a commit, read through get_object (no revision parsing)."""
    kind, data = repo.get_object(commit_hex)
    commit = parse_object(kind.encode(), data)
    assert isinstance(commit, Commit)
    return subtree(repo, commit.tree)


def subtree(repo: Repository, oid: ObjectId) -> Tree:
    kind, data = repo.get_object(oid.hex())
    tree = parse_object(kind.encode(), data)
    assert isinstance(tree, Tree)
    return tree


def entry(tree: Tree, name: str) -> TreeItem:
    item = tree.get(name.encode())
    assert item is not None, name
    return item


def commit_raw(store: Store, repo: Repository, commit: Commit, ref: str, old: str | None) -> str:
    """Write a commit the public API cannot make (merges, gitlinks) through a unit,
    indexed exactly as the commit path indexes it, and move ``ref`` to it.
    """
    with store.backend.unit(repo_id(store, repo.name), write=True) as unit:
        oid = unit.objects.put(b"commit", commit.serialize())
        index_commit(unit.objects, unit.index, oid, commit)
        assert unit.refs.set_if_equals(
            ref, None if old is None else hex_to_oid(old), oid, "test: raw commit"
        )
    return oid.hex()


def build_history(store: Store, repo: Repository) -> History:
    """main: c1..c5 (c5 empty) then a merge with feature; feature: f1 on c2; an empty-tree
    branch; a branch with a gitlink; lightweight, annotated and tag-of-tag tags.
    """
    c1 = repo.commit(
        "main",
        {
            "a.txt": b"one\n" * 40,
            "docs/x.md": b"# doc\n",
            "src/m.py": b"print(1)\n",
            "src/deep/er/f.txt": b"deep\n",
            "bin/run": File(b"#!/bin/sh\necho hi\n", 0o100755),
            "link": File(b"a.txt", 0o120000),
        },
        message="init\n",
        author=sig(0),
    )
    c2 = repo.commit("main", {"a.txt": b"two\n" * 40}, message="edit a\n", author=sig(1))
    c3 = repo.commit("main", {"lib/z.txt": b"zed\n"}, message="add lib\n", author=sig(2))
    c4 = repo.commit("main", {"docs/x.md": None}, message="drop docs\n", author=sig(3))
    c5 = repo.commit("main", {}, message="nothing\n", author=sig(4), allow_empty=True)
    repo.create_branch("feature", c2)
    f1 = repo.commit(
        "feature",
        {"src/m.py": b"print(2)\n", "new.txt": b"new\n"},
        message="feature work\n",
        author=sig(5),
    )
    # A merge commit of c5 and f1, its tree being c5's plus f1's changes.
    rid = repo_id(store, repo.name)
    with store.backend.unit(rid, write=True) as unit:
        base = tree_of(repo, c5).id
        merged_tree = build_tree(
            unit.objects,
            base,
            {"src/m.py": File(b"print(2)\n"), "new.txt": File(b"new\n")},
        )
    merge = commit_raw(
        store,
        repo,
        Commit(merged_tree, (hex_to_oid(c5), hex_to_oid(f1)), sig(6), sig(6), b"merge\n"),
        "refs/heads/main",
        c5,
    )
    repo.create_branch("empty", c1)
    empty = repo.commit(
        "empty",
        {"a.txt": None, "docs": None, "src": None, "bin": None, "link": None},
        message="delete everything\n",
        author=sig(7),
    )
    # A submodule entry: its commit lives in another repository and must not be followed.
    with store.backend.unit(rid, write=True) as unit:
        readme = unit.objects.put(b"blob", b"has a submodule\n")
        sub_tree = unit.objects.put(
            b"tree",
            Tree.of(
                [
                    TreeItem(b"README", MODE_FILE, readme),
                    TreeItem(b"sub", MODE_GITLINK, ObjectId(b"\x5a" * 20)),
                ]
            ).serialize(),
        )
    gitlink = commit_raw(
        store,
        repo,
        Commit(sub_tree, (hex_to_oid(c1),), sig(8), sig(8), b"submodule\n"),
        "refs/heads/sub",
        None,
    )
    repo.create_tag("v1", c1)
    repo.create_tag("v2", merge, message="release 2\n", tagger=sig(9))
    repo.create_tag("v2-signed", "v2", message="tag of a tag\n", tagger=sig(10))
    return History(c1, c2, c3, c4, c5, f1, merge, empty, gitlink)


@pytest.fixture
def repo(store: Store) -> Repository:
    return store.create_repository("verified")


def test_empty_repository_verifies(repo: Repository) -> None:
    report = repo.verify()
    assert report.ok
    assert report.problems == []
    assert report.objects_checked == 0


def test_clean_repository_verifies_and_passes_git_fsck(
    store: Store, repo: Repository, tmp_path: Path
) -> None:
    build_history(store, repo)
    report = repo.verify()
    assert report.problems == []
    assert report.ok
    assert report.objects_checked == object_count(store, repo.name)

    dest = export_repository(repo, tmp_path / "export.git")
    git(dest, "fsck", "--strict", "--no-dangling", "--no-progress")


def test_merge_commits_index_paths_per_parent(store: Store, repo: Repository) -> None:
    h = build_history(store, repo)
    with store.backend.unit(repo_id(store, repo.name)) as unit:
        paths = unit.index.changed_paths(hex_to_oid(h.merge))
    # Against c5 the merge brings f1's changes; against f1 it brings main's.
    assert paths[0] == {"src/m.py", "new.txt"}
    assert paths[1] == {"docs/x.md", "lib/z.txt"}
    assert repo.verify().ok


def test_every_corruption_is_reported_at_once(store: Store, repo: Repository) -> None:
    h = build_history(store, repo)
    rid = repo_id(store, repo.name)
    root2 = tree_of(repo, h.c2)
    root3 = tree_of(repo, h.c3)
    flipped_blob = entry(root2, "a.txt").oid  # "two" content, shared by c2..c5
    docs_tree = entry(root2, "docs").oid
    deleted_blob = entry(subtree(repo, docs_tree), "x.md").oid
    deleted_tree = entry(root3, "lib").oid
    unreadable_blob = entry(subtree(repo, entry(root2, "bin").oid), "run").oid
    ghost_commit = ObjectId(b"\xab" * 20)
    ghost_index_row = ObjectId(b"\xcd" * 20)
    c2, c3, c4 = (hex_to_oid(x) for x in (h.c2, h.c3, h.c4))

    with store.engine.begin() as conn:

        def obj(oid: bytes) -> sa.ColumnElement[bool]:
            return sa.and_(T_OBJ.c.repo_id == rid, T_OBJ.c.oid == oid)

        # Compression may be on: store raw bytes that do not hash to the id.
        bad = b"tampered content\n"
        conn.execute(
            sa.update(T_OBJ).where(obj(flipped_blob)).values(encoding=0, data=bad, size=len(bad))
        )
        conn.execute(sa.update(T_OBJ).where(obj(unreadable_blob)).values(encoding=1, data=b"?"))
        conn.execute(sa.delete(T_OBJ).where(obj(deleted_tree)))
        conn.execute(sa.delete(T_OBJ).where(obj(deleted_blob)))
        conn.execute(
            sa.update(T_REF)
            .where(T_REF.c.repo_id == rid, T_REF.c.name == "refs/heads/feature")
            .values(target=ghost_commit)
        )
        conn.execute(
            sa.update(T_COMMIT)
            .where(T_COMMIT.c.repo_id == rid, T_COMMIT.c.oid == c2)
            .values(parents=c3)
        )
        conn.execute(
            sa.update(T_COMMIT)
            .where(T_COMMIT.c.repo_id == rid, T_COMMIT.c.oid == c4)
            .values(generation=42)
        )
        where_c2 = sa.and_(T_COMMIT.c.repo_id == rid, T_COMMIT.c.oid == c2)
        recorded = decode_changed(
            conn.execute(sa.select(T_COMMIT.c.changed).where(where_c2)).scalar_one()
        )
        assert "a.txt" in recorded[0]
        recorded[0].discard("a.txt")
        conn.execute(sa.update(T_COMMIT).where(where_c2).values(changed=encode_changed(recorded)))
        conn.execute(
            sa.insert(T_COMMIT).values(
                repo_id=rid,
                oid=ghost_index_row,
                tree=docs_tree,
                generation=1,
                author_time=0,
                committer_time=0,
                parents=b"",
                changed=b"\0",
            )
        )

    report = repo.verify()
    assert not report.ok
    assert report.objects_checked == object_count(store, repo.name)
    text = "\n".join(report.problems)

    def reported(*needles: str) -> bool:
        return any(all(n in p for n in needles) for p in report.problems)

    assert reported(flipped_blob.hex(), "hash mismatch"), text
    assert reported(unreadable_blob.hex(), "cannot be read"), text
    assert reported(deleted_tree.hex(), "missing", root3.id.hex()), text
    assert reported(deleted_blob.hex(), "missing", docs_tree.hex()), text
    assert reported("refs/heads/feature", ghost_commit.hex(), "missing"), text
    assert reported(h.c2, "parents", h.c3), text
    assert reported(h.c4, "generation 42", "expected 4"), text
    assert reported(h.c2, "changed paths", "'a.txt'"), text
    assert reported(ghost_index_row.hex(), "no such commit"), text
    # Nothing that was left intact is blamed for the corruption of others.
    assert not any(p.startswith((f"commit {h.c1}", f"commit {h.gitlink}")) for p in report.problems)


def test_unparseable_and_mistyped_objects_are_reported(store: Store, repo: Repository) -> None:
    h = build_history(store, repo)
    rid = repo_id(store, repo.name)
    garbage = b"this is not a commit\n"
    garbage_id = hash_object(b"commit", garbage)
    blob = entry(tree_of(repo, h.c1), "a.txt").oid
    tree = tree_of(repo, h.c1).id
    with store.engine.begin() as conn:
        conn.execute(
            sa.insert(T_OBJ).values(
                repo_id=rid, oid=garbage_id, type=1, size=len(garbage), encoding=0, data=garbage
            )
        )
    with store.backend.unit(rid, write=True) as unit:
        lying_tag = unit.objects.put(
            b"tag", Tag(blob, b"commit", b"liar", sig(20), b"says commit\n").serialize()
        )
        assert unit.refs.add_if_new("refs/tags/liar", lying_tag, "test")
        assert unit.refs.add_if_new("refs/heads/treeish", tree, "test")
    report = repo.verify()
    assert not report.ok
    text = "\n".join(report.problems)
    assert any(garbage_id.hex() in p and "cannot be parsed" in p for p in report.problems), text
    assert any(
        lying_tag.hex() in p and blob.hex() in p and "is a blob, expected a commit" in p
        for p in report.problems
    ), text
    assert any(
        "refs/heads/treeish" in p and "is a tree, not a commit" in p for p in report.problems
    ), text
    assert len(report.problems) == 3, text


def test_verify_is_scoped_to_its_repository(store: Store, repo: Repository) -> None:
    other = store.create_repository("other")
    build_history(store, repo)
    oid = other.commit("main", {"f": b"x"}, message="m\n", author=sig(0))
    rid = repo_id(store, other.name)
    with store.engine.begin() as conn:
        conn.execute(sa.delete(T_OBJ).where(T_OBJ.c.repo_id == rid, T_OBJ.c.oid == hex_to_oid(oid)))
    assert repo.verify().ok
    broken = other.verify()
    assert not broken.ok
    assert any(oid in p for p in broken.problems)
