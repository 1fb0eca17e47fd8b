"""verify's fast tree scan and path diff agree with Tree.parse and diff_trees."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

import govc_db
from govc_db.core.diff import diff_trees
from govc_db.core.verify_trees import Entries, changed_paths, scan_tree
from govc_db.demo import run_demo
from govc_db.errors import InvalidInput
from govc_db.objects import Tree, TreeItem
from govc_db.objects.ids import ObjectId

MODES = (0o100644, 0o100755, 0o120000, 0o40000, 0o160000)


def entry(mode: bytes, name: bytes, oid: bytes = b"\x01" * 20) -> bytes:
    return mode + b" " + name + b"\0" + oid


names = st.binary(min_size=1, max_size=12).filter(
    lambda n: b"/" not in n and b"\0" not in n and n not in (b".", b"..")
)


@given(
    st.dictionaries(
        names,
        st.tuples(st.sampled_from(MODES), st.binary(min_size=20, max_size=20)),
        max_size=12,
    )
)
def test_scan_agrees_with_tree_parse_on_valid_trees(
    items: dict[bytes, tuple[int, bytes]],
) -> None:
    tree = Tree.of(TreeItem(n, m, ObjectId(o)) for n, (m, o) in items.items())
    scanned = scan_tree(tree.serialize())
    assert scanned is not None
    assert scanned.entries == {i.name: (b"%o" % i.mode, i.oid) for i in tree.items}


@pytest.mark.parametrize(
    "raw",
    [
        entry(b"100644", b"b") + entry(b"100644", b"a"),  # not in git order
        entry(b"100644", b"a") + entry(b"100644", b"a"),  # duplicate
        entry(b"100644", b"a") + entry(b"40000", b"a"),  # a file and a directory "a"
        entry(b"100664", b"a"),  # unknown mode
        entry(b"0100644", b"a"),  # zero-padded mode
        entry(b"100644", b".."),
        entry(b"100644", b"a") + b"x",  # trailing garbage
        b"100644 a\0short",
        b"garbage",
    ],
)
def test_scan_refuses_what_tree_parse_refuses(raw: bytes) -> None:
    assert scan_tree(raw) is None
    with pytest.raises(InvalidInput):
        Tree.parse(raw)


def test_directory_order_is_name_slash() -> None:
    # "a-b" < "a/" < "a0": a directory "a" sorts between them, as git sorts it.
    raw = entry(b"100644", b"a-b") + entry(b"40000", b"a") + entry(b"100644", b"a0")
    assert scan_tree(raw) is not None
    Tree.parse(raw)


def test_changed_paths_equal_diff_trees_over_a_demo_history(sqlite_url: str) -> None:
    with govc_db.open(sqlite_url) as store:
        run_demo(store, commits=40, files=60)
        repo = store.repository("demo")
        with store.backend.unit(repo._id) as unit:

            def load(oids: Sequence[ObjectId]) -> dict[ObjectId, Entries]:
                found = unit.objects.get_many(oids)
                out = {}
                for oid, raw in found.items():
                    scanned = scan_tree(raw.data)
                    assert scanned is not None
                    out[oid] = scanned.entries
                return out

            checked = 0
            for info in repo.log("main"):
                tree = ObjectId(bytes.fromhex(info.tree))
                parents: list[str | None] = [*info.parents] or [None]
                for parent in parents:
                    base = None
                    if parent is not None:
                        base = ObjectId(bytes.fromhex(repo.get_commit(parent).tree))
                    want = {c.path for c in diff_trees(unit.objects, base, tree)}
                    assert changed_paths(load, base, tree) == want
                    checked += 1
    assert checked >= 30
