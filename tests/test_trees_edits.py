"""build_tree's edit-sized paths, checked against full rebuilds, real git and diff_trees.

A directory's new entries are the stored ones with the touched names merged in
(``merge_items`` + ``Tree.presorted``), and a commit's index rows come from the edits
(``build_tree_with_paths``) instead of a diff of the two trees. Both must give exactly
what the full paths give: the tree ``Tree.of`` sorts from scratch (whose bytes real
``git mktree`` agrees with), and the paths ``diff_trees`` finds, on random histories with
deletes, file<->directory replacements, mode-only changes, rewrites of identical
content and nested directories, on both backends.
"""

from __future__ import annotations

import itertools

import pytest
from _git import GitRepo
from _spies import CountingObjects
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from govc_db import File, GovcError, Repository, Signature, Store
from govc_db.core.diff import diff_trees
from govc_db.core.trees import _merge, build_tree_with_paths, merge_items
from govc_db.objects import (
    MODE_DIR,
    MODE_EXEC,
    MODE_FILE,
    MODE_LINK,
    Blob,
    ObjectId,
    Tree,
    TreeItem,
    hex_to_oid,
)

SIG = Signature("Ada Lovelace", "ada@example.com", 1700000000, 0)

# Names that sort around "a/" the way git compares a directory: "a-b" < "a.c" < "a/" < "a0".
NAMES = ["a", "b", "a-b", "a.c", "a0"]
MODES = [MODE_FILE, MODE_EXEC, MODE_LINK, MODE_DIR]
CONTENTS = [b"", b"1\n", b"2\n"]

_oids = st.binary(min_size=20, max_size=20).map(ObjectId)
_names = st.sampled_from([*NAMES, "a b", "\u00e9", "Z", "a_", "a/b"]).map(
    lambda n: n.replace("/", "-").encode()
) | st.binary(min_size=1, max_size=6).filter(
    lambda b: b"/" not in b and b"\0" not in b and b"\n" not in b and b not in (b".", b"..")
)
_entries = st.dictionaries(_names, st.tuples(st.sampled_from(MODES), _oids), max_size=40)


def _items(entries: dict[bytes, tuple[int, ObjectId]]) -> list[TreeItem]:
    return [TreeItem(n, m, o) for n, (m, o) in entries.items()]


# -- the merge, pure ----------------------------------------------------------------------


@given(base=_entries, data=st.data())
def test_merge_items_equals_a_full_sort(
    base: dict[bytes, tuple[int, ObjectId]], data: st.DataObject
) -> None:
    """Dropping some names, re-adding some of them (maybe as another kind) and adding new
    ones gives exactly Tree.of's order and entries."""
    dropped = data.draw(st.sets(st.sampled_from(sorted(base)))) if base else set()
    fresh = data.draw(_entries.map(lambda e: {n: v for n, v in e.items() if n not in base}))
    readd = data.draw(
        st.dictionaries(st.sampled_from(sorted(dropped)), st.tuples(st.sampled_from(MODES), _oids))
        if dropped
        else st.just({})
    )
    added = {**fresh, **readd}
    names = dropped | set(fresh)
    kept = {n: v for n, v in base.items() if n not in dropped}
    expected = Tree.of(_items({**kept, **added})).items
    stored = Tree.of(_items(base))
    merged = merge_items(stored.items, names, _items(added))
    assert merged == expected
    assert Tree.presorted(merged) == Tree.of(merged)
    full = Tree.of(_items({**kept, **added})).serialize()
    assert Tree.presorted(merged).serialize() == full
    # Splicing the stored bytes gives the bytes a full serialization gives.
    items, spliced = _merge(stored.items, stored.serialize(), names, _items(added))
    assert items == expected
    assert spliced == full


def test_merge_items_in_a_large_directory() -> None:
    base = Tree.of(
        TreeItem(b"f%04d" % i, MODE_DIR if i % 7 == 0 else MODE_FILE, ObjectId(bytes(20)))
        for i in range(0, 2000, 2)
    ).items
    one = ObjectId(b"\1" * 20)
    added = [TreeItem(b"f0001", MODE_FILE, one), TreeItem(b"f0998", MODE_FILE, one)]
    names = [b"f0001", b"f0998", b"f1400", b"zz-missing"]  # f0998 was a directory
    expected = Tree.of([i for i in base if i.name not in (b"f0998", b"f1400")] + added).items
    assert merge_items(base, names, added) == expected
    assert merge_items(base, [], []) is base


def test_splice_when_another_entry_contains_the_record() -> None:
    """An entry named ``0 100644 z`` with the same id as ``z`` holds ``z``'s whole record
    (``100644 z\\0<id>``) inside its own, before it: the splice must still cut at the
    real one."""
    same = ObjectId(b"\2" * 20)
    base = Tree.of(
        [
            TreeItem(b"0 100644 z", MODE_FILE, same),
            TreeItem(b"z", MODE_FILE, same),
            TreeItem(b"zz", MODE_FILE, same),
        ]
    )
    other = ObjectId(b"\3" * 20)
    cases: list[tuple[list[bytes], list[TreeItem]]] = [
        ([b"z"], []),  # delete
        ([b"z"], [TreeItem(b"z", MODE_EXEC, same)]),  # mode-only change
        ([b"y"], [TreeItem(b"y", MODE_FILE, other)]),  # insert just before it
        ([b"z", b"y"], [TreeItem(b"z", MODE_DIR, other), TreeItem(b"y", MODE_FILE, other)]),
    ]
    for names, added in cases:
        kept = [i for i in base.items if i.name not in names]
        expected = Tree.of(kept + added)
        items, spliced = _merge(base.items, base.serialize(), names, added)
        assert items == expected.items
        assert spliced == expected.serialize()


@settings(max_examples=40, deadline=None)
@given(entries=_entries.filter(bool))
def test_tree_bytes_equal_git_mktree(
    tmp_path_factory: pytest.TempPathFactory, entries: dict[bytes, tuple[int, ObjectId]]
) -> None:
    """Tree.of (the validated full sort) and serialize give git's id for the entries."""
    git = GitRepo(tmp_path_factory.mktemp("mktree"))
    kind = {MODE_DIR: b"tree", MODE_FILE: b"blob", MODE_EXEC: b"blob", MODE_LINK: b"blob"}
    listing = b"".join(
        b"%o %s %s\t%s\n" % (m, kind[m], o.hex().encode(), n) for n, (m, o) in entries.items()
    )
    expected = git.run("mktree", "--missing", input=listing).strip().decode()
    assert Tree.of(_items(entries)).id.hex() == expected


# -- random histories on both backends ----------------------------------------------------

Model = dict[str, tuple[int, bytes]]


def _reference_tree(files: Model) -> ObjectId:
    """The root id by the full path: every directory sorted from scratch by Tree.of."""
    root: dict[str, object] = {}
    for path, leaf in files.items():
        node = root
        *dirs, name = path.split("/")
        for d in dirs:
            sub = node.setdefault(d, {})
            assert isinstance(sub, dict)
            node = sub
        node[name] = leaf

    def build(node: dict[str, object]) -> ObjectId:
        items = []
        for name, v in node.items():
            if isinstance(v, dict):
                items.append(TreeItem(name.encode(), MODE_DIR, build(v)))
            else:
                assert isinstance(v, tuple)
                items.append(TreeItem(name.encode(), v[0], Blob(v[1]).id))
        return Tree.of(items).id

    return build(root)


def _apply(files: Model, changes: dict[str, tuple[int, bytes] | None]) -> Model:
    """What a successful build_tree does to the flat file list: deletions (of a path and
    everything below) first, then writes."""
    out = dict(files)
    for path, value in changes.items():
        if value is None:
            for p in [p for p in out if p == path or p.startswith(path + "/")]:
                del out[p]
    for path, value in changes.items():
        if value is not None:
            out[path] = value
    return out


_paths = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map("/".join)
_file = st.tuples(st.sampled_from([MODE_FILE, MODE_EXEC, MODE_LINK]), st.sampled_from(CONTENTS))


def _changes(files: Model) -> st.SearchStrategy[dict[str, tuple[int, bytes] | None]]:
    dirs = sorted({p.rsplit("/", 1)[0] for p in files if "/" in p})
    existing = sorted(files) + dirs
    deletions = st.sampled_from(existing).map(lambda p: (p, None)) if existing else st.nothing()
    # Rewrites of existing files: identical content, a mode-only change or new content.
    rewrites = (
        st.sampled_from(sorted(files)).flatmap(
            lambda p: (
                st.sampled_from(
                    [
                        (p, files[p]),
                        (p, (MODE_EXEC if files[p][0] == MODE_FILE else MODE_FILE, files[p][1])),
                    ]
                )
                | _file.map(lambda v: (p, v))
            )
        )
        if files
        else st.nothing()
    )
    writes = st.tuples(_paths, _file)
    singles = st.lists(deletions | rewrites | writes, min_size=1, max_size=5).map(dict)
    if not existing:
        return singles
    # A path deleted and written below in one change set: a directory rebuilt (some
    # files identical, some gone) or a file made a directory.
    rebuilt = st.tuples(st.sampled_from(existing), st.lists(st.tuples(_paths, _file), max_size=3))
    return singles | rebuilt.map(lambda r: {r[0]: None, **{f"{r[0]}/{p}": v for p, v in r[1]}})


_repos = itertools.count()


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_random_histories_match_full_rebuild_and_diff(store: Store, data: st.DataObject) -> None:
    repo: Repository = store.create_repository(f"edits{next(_repos)}")
    files: Model = {}
    head_tree: ObjectId | None = None
    committed = 0
    for _ in range(data.draw(st.integers(1, 6))):
        changes = data.draw(_changes(files))
        public = {p: (None if v is None else File(v[1], mode=v[0])) for p, v in changes.items()}
        try:
            oid = repo.commit("main", public, message="step\n", author=SIG, allow_empty=True)
        except GovcError:
            event("invalid change set")
            continue  # an invalid change set (checked elsewhere): nothing happened
        committed += 1
        event(f"{len(changes)} changes committed")
        files = _apply(files, changes)
        tree = hex_to_oid(repo.get_commit(oid).tree)
        assert tree == _reference_tree(files)
        with repo._store.backend.unit(repo._id, write=True) as unit:
            expected = [c.path for c in diff_trees(unit.objects, head_tree, tree)]
            # The stored index rows are the diff's paths (position 0; a root against
            # the empty tree) ...
            rows = unit.index.changed_paths(hex_to_oid(oid))
            assert {k: v for k, v in rows.items() if v} == ({0: set(expected)} if expected else {})
            # ... and build_tree_with_paths gives them in diff_trees' order.
            again, paths = build_tree_with_paths(unit.objects, head_tree, public)
            assert again == tree
            assert paths == expected
            # Without the parsed-tree memo every tree is read and parsed (keeping its
            # bytes) from the store: the same tree and paths.
            cold, cold_paths = build_tree_with_paths(
                CountingObjects(unit.objects), head_tree, public
            )
            assert (cold, cold_paths) == (tree, expected)
        head_tree = tree
    event(f"{committed} commits")


def test_named_edits_index_the_diff_paths(store: Store) -> None:
    """Deletes, directory replacements both ways, a mode-only change, an identical write,
    nested directories, a big directory: each commit's rows are diff_trees' paths."""
    repo = store.create_repository("named")
    first: dict[str, bytes | File | None] = {f"big/f{i:04d}": b"%d\n" % i for i in range(300)}
    steps: list[dict[str, bytes | File | None]] = [
        first | {"a/b/c/d": b"deep\n", "x": b"x"},
        {"big/f0150": b"changed\n", "big/new": b"new\n", "big/f0003": None},
        {"x": None, "x/inside": b"x became a dir\n"},
        {"a/b/c/d": None, "a/b": b"was a dir, now a file\n"},
        {"a/b": None, "a/b/c/d": b"deep\n"},
        {"big/f0007": File(b"7\n", mode=MODE_EXEC)},  # mode only
        {"big/f0008": b"8\n"},  # identical content: no path
        {"a": None, "a/b/c/e": b"rebuilt\n", "a/b/c/d": b"deep\n"},
        {"big": None},
    ]
    head_tree: ObjectId | None = None
    for changes in steps:
        oid = hex_to_oid(repo.commit("main", changes, message="s\n", author=SIG, allow_empty=True))
        tree = hex_to_oid(repo.get_commit(oid.hex()).tree)
        with repo._store.backend.unit(repo._id) as unit:
            expected = {c.path for c in diff_trees(unit.objects, head_tree, tree)}
            rows = unit.index.changed_paths(oid)
        assert {k: v for k, v in rows.items() if v} == ({0: expected} if expected else {})
        head_tree = tree
