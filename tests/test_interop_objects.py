"""Lenient reading of objects git accepts but our strict parsers refuse: exact bytes kept."""

from __future__ import annotations

import pytest

from govc_db.errors import InvalidInput
from govc_db.objects import Commit, Tag, Tree, hash_object, parse_object
from govc_db.objects.lenient import canonical_mode, lenient_signature, parse_lenient

Z = bytes(20)
TREE_H = b"tree " + Z.hex().encode()


@pytest.mark.parametrize(
    "sig",
    [
        b" <nobody@example.com> 1 +0000",  # empty name
        b"A <a> 1 -0000",
        b"A <a> 1 +1500",
        b"A <a> 1 +0075",
        b"A  <a> 1 +0000",  # trailing space in the name
        b"A <a> 0001700000000 +0000",
        b"A <a> 99999999999999999999 +0000",
        b"A <a>",
        b"garbage without brackets",
    ],
)
def test_odd_signatures_keep_their_bytes(sig: bytes) -> None:
    raw = TREE_H + b"\nauthor " + sig + b"\ncommitter A <a> 1 +0000\nencoding x\n\nmsg\n"
    with pytest.raises(InvalidInput):
        parse_object(b"commit", raw)
    obj = parse_lenient(b"commit", raw)
    assert isinstance(obj, Commit)
    assert obj.serialize() == raw
    assert obj.id == hash_object(b"commit", raw)
    assert obj.extra == ((b"encoding", b"x"),)
    assert obj.message == b"msg\n"


def test_lenient_signature_values() -> None:
    assert lenient_signature(b" <e> 5 -0000").name == ""
    assert lenient_signature(b"A <a> 1 +1500").offset == 14 * 60 + 59
    assert lenient_signature(b"A <a> 1 -0130").offset == -90
    assert lenient_signature(b"A <a> 99999999999999999999 +0000").time == 2**63 - 1
    assert lenient_signature(b"A B <a@b> 0 +0000").name == "A B"  # canonical: strict path


def test_odd_tree_modes_and_order() -> None:
    entries = [
        (b"100664", b"a.txt"),
        (b"040000", b"dir"),
        (b"100755", b"run"),
        (b"100644", b"b.txt"),  # out of order
    ]
    raw = b"".join(mode + b" " + name + b"\0" + Z for mode, name in entries)
    with pytest.raises(InvalidInput):
        parse_object(b"tree", raw)
    tree = parse_lenient(b"tree", raw)
    assert isinstance(tree, Tree)
    assert tree.serialize() == raw and tree.id == hash_object(b"tree", raw)
    assert {i.name: i.mode for i in tree.items} == {
        b"a.txt": 0o100644,
        b"dir": 0o40000,
        b"run": 0o100755,
        b"b.txt": 0o100644,
    }
    with pytest.raises(InvalidInput):  # structurally broken stays an error
        parse_lenient(b"tree", raw[:-3])
    with pytest.raises(InvalidInput):
        parse_lenient(b"tree", b"100644 x\0" + Z + b"100644 x\0" + Z)


def test_canonical_modes() -> None:
    assert canonical_mode(0o100664) == 0o100644
    assert canonical_mode(0o100775) == 0o100755
    assert canonical_mode(0o120777) == 0o120000
    assert canonical_mode(0o40755) == 0o40000
    assert canonical_mode(0o160000) == 0o160000


def test_odd_tag_keeps_bytes_and_strict_objects_are_unchanged() -> None:
    raw = b"object " + Z.hex().encode() + b"\ntype commit\ntag v\ntagger  <x> 1 -0000\n\nm\n"
    tag = parse_lenient(b"tag", raw)
    assert isinstance(tag, Tag) and tag.serialize() == raw and tag.tagger is not None
    good = TREE_H + b"\nauthor A <a> 1 +0000\ncommitter A <a> 1 +0000\n\nm\n"
    strict = parse_lenient(b"commit", good)
    assert strict == parse_object(b"commit", good)
    assert isinstance(strict, Commit) and strict.raw is None
    with pytest.raises(InvalidInput):
        parse_lenient(b"blob2", b"")
    with pytest.raises(InvalidInput):
        parse_lenient(b"commit", b"no headers")
