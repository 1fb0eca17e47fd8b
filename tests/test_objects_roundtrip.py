"""Round-trips, ids and parse errors of the pure git object model (no git, no database)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from govc_db.errors import GovcError, InvalidInput
from govc_db.objects import (
    MODE_DIR,
    MODE_EXEC,
    MODE_FILE,
    MODE_GITLINK,
    MODE_LINK,
    TYPE_NAMES,
    TYPE_NUMBERS,
    Blob,
    Commit,
    GitObject,
    ObjectId,
    Signature,
    Tag,
    Tree,
    TreeItem,
    format_offset,
    hash_object,
    hex_to_oid,
    mode_type,
    oid_to_hex,
    parse_object,
    parse_signature,
    tree_sort_key,
)
from govc_db.objects.ids import is_hex_id, object_header
from govc_db.objects.kinds import WRITABLE_MODES

SETTINGS = settings(
    database=None,
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow],
)

Z = ObjectId(b"\0" * 20)
ONE = ObjectId(bytes(range(1, 21)))
EMPTY_TREE_HEX = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
EMPTY_BLOB_HEX = "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
HELLO_BLOB_HEX = "ce013625030ba8dba906f756967f9e9ca394464a"  # b"hello\n"

GPGSIG = (
    b"-----BEGIN PGP SIGNATURE-----\n"
    b"\n"
    b"iQEzBAABCAAdFiEEabcdefghijklmnopqrstuvwxyz0123456789+/ABCDEF=\n"
    b"=wxyz\n"
    b"-----END PGP SIGNATURE-----"
)
SIG = Signature("A U Thor", "author@example.com", 1_700_000_000, 120)


# --------------------------------------------------------------------------- strategies

oids = st.binary(min_size=20, max_size=20).map(ObjectId)

entry_names = st.binary(min_size=1, max_size=24).filter(
    lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b"..")
)

tree_items = st.builds(TreeItem, entry_names, st.sampled_from(sorted(WRITABLE_MODES)), oids)

trees = st.lists(tree_items, max_size=12, unique_by=lambda i: i.name).map(Tree.of)


def _ok_ident(value: str) -> bool:
    return value == value.strip() and not any(c in value for c in "<>\n\0")


# Text names/emails, and ones decoded from arbitrary bytes as parsing produces them.
_ident_text = st.one_of(
    st.text(
        alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="<>\n\0"),
        max_size=20,
    ),
    st.binary(max_size=20).map(lambda b: b.decode("utf-8", "surrogateescape")),
).filter(_ok_ident)

signatures = st.builds(
    Signature,
    name=_ident_text.filter(bool),
    email=_ident_text,
    time=st.one_of(st.integers(0, 2**63 - 1), st.integers(0, 4_000_000_000)),
    offset=st.one_of(
        st.integers(-(14 * 60 + 59), 14 * 60 + 59),
        st.sampled_from([0, 120, -330, 345, -720, 840, 60, -60]),
    ),
)

header_keys = st.one_of(
    st.sampled_from([b"encoding", b"gpgsig", b"gpgsig-sha256", b"mergetag", b"x-custom"]),
    st.binary(min_size=1, max_size=12).filter(lambda b: b" " not in b and b"\n" not in b),
)
header_values = st.one_of(
    st.binary(max_size=60),
    st.just(GPGSIG),
    st.lists(st.binary(max_size=10).filter(lambda b: b"\n" not in b), max_size=5).map(b"\n".join),
)
extras = st.lists(st.tuples(header_keys, header_values), max_size=4).map(tuple)

commits = st.builds(
    Commit,
    tree=oids,
    parents=st.lists(oids, max_size=3).map(tuple),
    author=signatures,
    committer=signatures,
    message=st.binary(max_size=200),
    extra=extras,
)

tag_names = st.binary(min_size=1, max_size=30).filter(lambda b: not any(c in b for c in b"\n\0 "))


@st.composite
def tags(draw: st.DrawFn) -> Tag:
    tagger = draw(st.none() | signatures)
    extra = draw(extras)
    if tagger is None:
        assume(not extra or extra[0][0] != b"tagger")
    return Tag(
        object=draw(oids),
        object_type=draw(st.sampled_from(sorted(TYPE_NUMBERS))),
        name=draw(tag_names),
        tagger=tagger,
        message=draw(st.binary(max_size=200)),
        extra=extra,
    )


blobs = st.binary(max_size=300).map(Blob)
any_object: st.SearchStrategy[GitObject] = st.one_of(blobs, trees, commits, tags())


def git_sha1(type_name: bytes, data: bytes) -> bytes:
    """Independent reimplementation of git's id, for checking ``hash_object``."""
    return hashlib.sha1(
        type_name + b" " + str(len(data)).encode() + b"\x00" + data, usedforsecurity=False
    ).digest()


# --------------------------------------------------------------------------- round-trips


@SETTINGS
@given(blobs)
def test_blob_roundtrip(blob: Blob) -> None:
    raw = blob.serialize()
    assert raw == blob.data
    assert Blob.parse(raw) == blob
    assert blob.id == git_sha1(b"blob", raw)


@SETTINGS
@given(trees)
def test_tree_roundtrip(tree: Tree) -> None:
    raw = tree.serialize()
    again = Tree.parse(raw)
    assert again == tree
    assert again.serialize() == raw
    assert tree.id == git_sha1(b"tree", raw)
    keys = [tree_sort_key(i.name, i.mode) for i in tree.items]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)
    for item in tree.items:
        assert tree.get(item.name) == item


@SETTINGS
@given(st.data(), st.lists(tree_items, min_size=1, max_size=10, unique_by=lambda i: i.name))
def test_tree_is_order_independent(data: st.DataObject, items: list[TreeItem]) -> None:
    shuffled = data.draw(st.permutations(items))
    a, b = Tree.of(items), Tree.of(shuffled)
    assert a == b
    assert a.id == b.id
    assert a.serialize() == b.serialize()


@SETTINGS
@given(commits)
def test_commit_roundtrip(commit: Commit) -> None:
    raw = commit.serialize()
    again = Commit.parse(raw)
    assert again == commit
    assert again.serialize() == raw
    assert commit.id == git_sha1(b"commit", raw)
    assert raw.startswith(b"tree " + commit.tree.hex().encode() + b"\n")
    assert raw.endswith(b"\n\n" + commit.message)


@SETTINGS
@given(tags())
def test_tag_roundtrip(tag: Tag) -> None:
    raw = tag.serialize()
    again = Tag.parse(raw)
    assert again == tag
    assert again.serialize() == raw
    assert tag.id == git_sha1(b"tag", raw)
    assert (b"\ntagger " in raw.split(b"\n\n", 1)[0]) == (
        tag.tagger is not None or any(k == b"tagger" for k, _ in tag.extra)
    )


@SETTINGS
@given(any_object)
def test_parse_object_dispatches_on_type(obj: GitObject) -> None:
    raw = obj.serialize()
    parsed = parse_object(obj.type_name, raw)
    assert type(parsed) is type(obj)
    assert parsed == obj
    assert parsed.id == obj.id
    assert obj.id == hash_object(obj.type_name, raw)
    assert TYPE_NAMES[TYPE_NUMBERS[obj.type_name]] == obj.type_name


@SETTINGS
@given(any_object, any_object)
def test_ids_equal_exactly_when_bytes_equal(a: GitObject, b: GitObject) -> None:
    copy = parse_object(a.type_name, bytes(a.serialize()))
    assert copy is not a
    assert copy == a
    assert copy.id == a.id
    assert hash(copy) == hash(a)
    same = a.type_name == b.type_name and a.serialize() == b.serialize()
    assert (a.id == b.id) == same
    assert (a == b) == same


@SETTINGS
@given(signatures)
def test_signature_roundtrip(sig: Signature) -> None:
    raw = sig.serialize()
    assert parse_signature(raw) == sig
    assert raw.endswith(b" " + format_offset(sig.offset).encode())
    assert b"\n" not in raw


def test_commit_with_gpgsig_and_encoding_keeps_continuation_lines() -> None:
    commit = Commit(
        ONE,
        (Z, ONE),
        SIG,
        Signature("C O Mitter", "c@example.com", 1_700_000_100, -330),
        b"subject\n\nbody\n",
        ((b"encoding", b"ISO-8859-1"), (b"gpgsig", GPGSIG)),
    )
    raw = commit.serialize()
    assert b"\ngpgsig -----BEGIN PGP SIGNATURE-----\n \n iQEz" in raw
    assert b"\n -----END PGP SIGNATURE-----\n\nsubject\n\nbody\n" in raw
    assert b"committer C O Mitter <c@example.com> 1700000100 -0530\n" in raw
    assert b"author A U Thor <author@example.com> 1700000000 +0200\n" in raw
    assert Commit.parse(raw) == commit


def test_commit_parents_keep_their_order_and_become_a_tuple() -> None:
    a = Commit(Z, [ONE, Z], SIG, SIG, b"m")  # type: ignore[arg-type]
    assert a.parents == (ONE, Z)
    assert Commit.parse(a.serialize()) == a
    b = Commit(Z, (Z, ONE), SIG, SIG, b"m")
    assert a.id != b.id
    hash(a)


def test_known_ids() -> None:
    assert oid_to_hex(Blob(b"").id) == EMPTY_BLOB_HEX
    assert oid_to_hex(Blob(b"hello\n").id) == HELLO_BLOB_HEX
    assert oid_to_hex(Tree().id) == EMPTY_TREE_HEX
    assert Tree.parse(b"") == Tree()
    assert object_header(b"blob", 12) == b"blob 12\x00"


def test_tree_order_puts_directories_after_their_dot_and_dash_siblings() -> None:
    items = [
        TreeItem(b"a0", MODE_FILE, ONE),
        TreeItem(b"a", MODE_DIR, ONE),
        TreeItem(b"a.txt", MODE_FILE, ONE),
        TreeItem(b"a-b", MODE_FILE, ONE),
        TreeItem(b"sub", MODE_GITLINK, ONE),
        TreeItem(b"sub.c", MODE_FILE, ONE),
    ]
    tree = Tree.of(items)
    # "a/" sorts after "a-b" and "a.txt", before "a0"; a gitlink sorts like a file.
    assert [i.name for i in tree.items] == [b"a-b", b"a.txt", b"a", b"a0", b"sub", b"sub.c"]
    as_file = Tree.of([TreeItem(b"a", MODE_FILE, ONE), *items[2:4]])
    assert [i.name for i in as_file.items] == [b"a", b"a-b", b"a.txt"]
    assert tree.get(b"missing") is None


def test_mode_type() -> None:
    assert mode_type(MODE_DIR) == "tree"
    assert mode_type(MODE_GITLINK) == "commit"
    for mode in (MODE_FILE, MODE_EXEC, MODE_LINK):
        assert mode_type(mode) == "blob"


def test_tree_serializes_modes_without_leading_zero() -> None:
    tree = Tree.of([TreeItem(b"d", MODE_DIR, Z), TreeItem(b"x", MODE_EXEC, Z)])
    assert tree.serialize() == b"40000 d\x00" + Z + b"100755 x\x00" + Z


def test_tag_roundtrip_examples() -> None:
    with_tagger = Tag(ONE, b"commit", b"v1.0", SIG, b"release\n")
    raw = with_tagger.serialize()
    assert raw == (
        b"object 0102030405060708090a0b0c0d0e0f1011121314\n"
        b"type commit\n"
        b"tag v1.0\n"
        b"tagger A U Thor <author@example.com> 1700000000 +0200\n"
        b"\n"
        b"release\n"
    )
    assert Tag.parse(raw) == with_tagger
    without = Tag(ONE, b"tree", b"t", None, b"", ((b"x-note", b"a\nb"),))
    assert without.serialize().endswith(b"tag t\nx-note a\n b\n\n")
    assert Tag.parse(without.serialize()) == without


# --------------------------------------------------------------------------- ids


def test_hex_ids() -> None:
    oid = hex_to_oid(EMPTY_TREE_HEX)
    assert len(oid) == 20
    assert oid_to_hex(oid) == EMPTY_TREE_HEX
    assert hex_to_oid(EMPTY_TREE_HEX.upper()) == oid
    assert is_hex_id(EMPTY_TREE_HEX)
    assert not is_hex_id(EMPTY_TREE_HEX.upper())
    assert not is_hex_id(EMPTY_TREE_HEX[:-1])


@pytest.mark.parametrize(
    "text",
    ["", "abc", "g" * 40, "0" * 39, "0" * 41, " " + "0" * 39, "0" * 40 + "\n", "\u0660" * 40],
)
def test_hex_to_oid_rejects(text: str) -> None:
    with pytest.raises(InvalidInput):
        hex_to_oid(text)


def test_hex_to_oid_rejects_non_str() -> None:
    with pytest.raises(InvalidInput):
        hex_to_oid(b"0" * 40)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- malformed input


def _entry(mode: bytes, name: bytes, oid: bytes = Z) -> bytes:
    return mode + b" " + name + b"\0" + oid


GOOD_TREE = _entry(b"100644", b"a") + _entry(b"40000", b"b") + _entry(b"120000", b"c")


@pytest.mark.parametrize("cut", range(1, len(GOOD_TREE)))
def test_truncated_tree_is_invalid(cut: int) -> None:
    raw = GOOD_TREE[:cut]
    # A cut right at an entry boundary is a shorter, valid tree.
    if cut in (len(_entry(b"100644", b"a")), len(_entry(b"100644", b"a") + _entry(b"40000", b"b"))):
        assert Tree.parse(raw).serialize() == raw
        return
    with pytest.raises(InvalidInput):
        Tree.parse(raw)


@pytest.mark.parametrize(
    "mode",
    [
        b"",
        b"100645",
        b"0100644",
        b"040000",
        b"100664",
        b"10064x",
        b"1006448",
        b"+100644",
        b"644",
        b"160001",
        b"1e5",
    ],
)
def test_tree_bad_mode_is_invalid(mode: bytes) -> None:
    with pytest.raises(InvalidInput):
        Tree.parse(_entry(mode, b"name"))


@pytest.mark.parametrize(
    "raw",
    [
        _entry(b"100644", b""),  # empty name
        _entry(b"100644", b"."),
        _entry(b"100644", b".."),
        _entry(b"100644", b"a/b"),
        _entry(b"100644", b"b") + _entry(b"100644", b"a"),  # not sorted
        _entry(b"100644", b"a0") + _entry(b"40000", b"a"),  # dir "a/" sorts before "a0"
        _entry(b"40000", b"a") + _entry(b"100644", b"a.txt"),  # "a.txt" sorts before "a/"
        _entry(b"100644", b"a") + _entry(b"100644", b"a"),  # duplicate
        _entry(b"100644", b"a") + _entry(b"40000", b"a"),  # file and dir of one name
        b"100644 a",  # no NUL
        b"100644a\0" + Z,  # no space
    ],
)
def test_malformed_tree_is_invalid(raw: bytes) -> None:
    with pytest.raises(InvalidInput):
        Tree.parse(raw)


@SETTINGS
@given(trees.filter(lambda t: len(t.items) >= 2), st.data())
def test_parse_refuses_any_reordered_tree(tree: Tree, data: st.DataObject) -> None:
    items = list(tree.items)
    i = data.draw(st.integers(0, len(items) - 2))
    items[i], items[i + 1] = items[i + 1], items[i]
    raw = b"".join(b"%o %s\0%s" % (t.mode, t.name, t.oid) for t in items)
    with pytest.raises(InvalidInput):
        Tree.parse(raw)


def _commit_raw(*headers: bytes, message: bytes = b"msg\n") -> bytes:
    return b"".join(h + b"\n" for h in headers) + b"\n" + message


TREE_H = b"tree " + Z.hex().encode()
AUTHOR_H = b"author " + SIG.serialize()
COMMITTER_H = b"committer " + SIG.serialize()


def test_commit_raw_fixture_is_valid() -> None:
    parsed = Commit.parse(_commit_raw(TREE_H, AUTHOR_H, COMMITTER_H))
    assert parsed == Commit(Z, (), SIG, SIG, b"msg\n")


@pytest.mark.parametrize(
    "raw",
    [
        TREE_H + b"\n" + AUTHOR_H + b"\n" + COMMITTER_H + b"\nmsg\n",  # missing blank line
        TREE_H + b"\n" + AUTHOR_H + b"\n" + COMMITTER_H + b"\n",  # no body separator
        b"",
        b"\n\nmsg",
        _commit_raw(b"tree " + b"G" * 40, AUTHOR_H, COMMITTER_H),  # bad hex
        _commit_raw(b"tree " + ONE.hex().upper().encode(), AUTHOR_H, COMMITTER_H),
        _commit_raw(b"tree " + b"0" * 39, AUTHOR_H, COMMITTER_H),
        _commit_raw(b"tree " + b"0" * 41, AUTHOR_H, COMMITTER_H),
        _commit_raw(b"tree " + b"\xff" * 40, AUTHOR_H, COMMITTER_H),
        _commit_raw(TREE_H, b"parent xyz", AUTHOR_H, COMMITTER_H),
        _commit_raw(AUTHOR_H, COMMITTER_H),  # no tree
        _commit_raw(TREE_H, COMMITTER_H),  # no author
        _commit_raw(TREE_H, AUTHOR_H),  # no committer
        _commit_raw(TREE_H, COMMITTER_H, AUTHOR_H),  # swapped
        _commit_raw(TREE_H, AUTHOR_H, b"committer nobody"),
        _commit_raw(b" continuation first", TREE_H, AUTHOR_H, COMMITTER_H),
        _commit_raw(TREE_H, AUTHOR_H, COMMITTER_H, b"novalue"),
        _commit_raw(TREE_H, AUTHOR_H, b" ", COMMITTER_H),  # author value ends in "\n"
        _commit_raw(TREE_H, AUTHOR_H + b" extra", COMMITTER_H),
    ],
)
def test_malformed_commit_is_invalid(raw: bytes) -> None:
    with pytest.raises(InvalidInput):
        Commit.parse(raw)
    with pytest.raises(InvalidInput):
        parse_object(b"commit", raw)


@pytest.mark.parametrize(
    "sig",
    [
        b"A <a> 0001700000000 +0000",  # zero-padded time would not re-serialize
        b"A <a> 1 +0075",  # minutes >= 60 would re-serialize as +0115
        b"A <a> 1 -0000",  # would re-serialize as +0000
        b"A <a> 1 +0000\n",  # trailing newline (a bare continuation line)
        b"A <a> 1 +000",
        b"A <a> 1 0000",
        b"A <a> 1 +00000",
        b"A <a> -1 +0000",
        b"A <a> x +0000",
        b"A <a>  1 +0000",
        b"A <a>1 +0000",
        b"A<a> 1 +0000",
        b" <a> 1 +0000",  # empty name
        b"<a> 1 +0000",
        b"A  <a> 1 +0000",  # name ends with whitespace
        b"A <a> b> 1 +0000",
        b"A <a> 1 +9999",  # out of range
        b"A <a> 1 +1500",
        b"A <a> 99999999999999999999 +0000",  # over 64 bits
        b"",
    ],
)
def test_malformed_signature_is_invalid(sig: bytes) -> None:
    with pytest.raises(InvalidInput):
        parse_signature(sig)
    with pytest.raises(InvalidInput):
        Commit.parse(_commit_raw(TREE_H, b"author " + sig, COMMITTER_H))


def test_signature_parse_examples() -> None:
    assert parse_signature(b"A B <a@b> 0 +0000") == Signature("A B", "a@b", 0, 0)
    assert parse_signature(b"A <> 1700000000 -0530") == Signature("A", "", 1_700_000_000, -330)
    assert parse_signature(b"X <x> 5 +1459") == Signature("X", "x", 5, 899)
    non_utf8 = parse_signature(b"J\xf6rg <j@x> 1 +0100")
    assert non_utf8.serialize() == b"J\xf6rg <j@x> 1 +0100"
    assert parse_signature("Jörg <j@x> 1 +0100".encode()).name == "Jörg"


TAG_HEAD = b"object " + Z.hex().encode() + b"\ntype commit\ntag v1\n"


@pytest.mark.parametrize(
    "raw",
    [
        TAG_HEAD + b"tagger " + SIG.serialize() + b"\nmsg",  # missing blank line
        b"type commit\ntag v1\n\nmsg",
        b"object " + Z.hex().encode() + b"\ntag v1\n\nmsg",
        b"object " + Z.hex().encode() + b"\ntype commit\n\nmsg",
        TAG_HEAD.replace(b"commit", b"potato") + b"\nmsg",
        TAG_HEAD.replace(b"tag v1", b"tag ") + b"\nmsg",
        TAG_HEAD.replace(Z.hex().encode(), b"z" * 40) + b"\nmsg",
        TAG_HEAD.replace(Z.hex().encode(), Z.hex().encode()[:-2]) + b"\nmsg",
        TAG_HEAD + b"tagger broken\n\nmsg",
    ],
)
def test_malformed_tag_is_invalid(raw: bytes) -> None:
    with pytest.raises(InvalidInput):
        Tag.parse(raw)
    with pytest.raises(InvalidInput):
        parse_object(b"tag", raw)


def test_tag_fixture_is_valid() -> None:
    assert Tag.parse(TAG_HEAD + b"\nmsg") == Tag(Z, b"commit", b"v1", None, b"msg")


@pytest.mark.parametrize("type_name", [b"", b"blobs", b"Blob", b"ofs-delta", "blob"])
def test_parse_object_rejects_unknown_types(type_name: bytes) -> None:
    with pytest.raises(InvalidInput):
        parse_object(type_name, b"")


# --------------------------------------------------------------------------- construction rules


@pytest.mark.parametrize(
    ("name", "mode", "oid"),
    [
        (b"", MODE_FILE, Z),
        (b"a/b", MODE_FILE, Z),
        (b"a\0b", MODE_FILE, Z),
        (b".", MODE_DIR, Z),
        (b"..", MODE_DIR, Z),
        (b"a", 0o100664, Z),
        (b"a", 0o644, Z),
        (b"a", MODE_FILE, b"\0" * 19),
        (b"a", MODE_FILE, Z.hex().encode()),
        ("a", MODE_FILE, Z),
        (b"a", True, Z),
        (b"a", MODE_FILE, "0" * 20),
    ],
)
def test_tree_item_rules(name: object, mode: object, oid: object) -> None:
    with pytest.raises(InvalidInput):
        TreeItem(name, mode, oid)  # type: ignore[arg-type]


def test_tree_rejects_duplicate_names() -> None:
    with pytest.raises(InvalidInput):
        Tree.of([TreeItem(b"a", MODE_FILE, Z), TreeItem(b"a", MODE_DIR, Z)])


@pytest.mark.parametrize(
    "extra",
    [
        ((b"", b"x"),),
        ((b"two words", b"x"),),
        ((b"new\nline", b"x"),),
        ((b"key", "text"),),
        (("key", b"x"),),
        ((b"key",),),
        "not headers",
    ],
)
def test_extra_headers_must_round_trip(extra: object) -> None:
    with pytest.raises(InvalidInput):
        Commit(Z, (), SIG, SIG, b"m", extra)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        Tag(Z, b"commit", b"v", SIG, b"m", extra)  # type: ignore[arg-type]


def test_tag_without_tagger_cannot_carry_a_tagger_header() -> None:
    # It would serialize exactly like a tag with that tagger: two values, one id.
    with pytest.raises(InvalidInput):
        Tag(Z, b"commit", b"v", None, b"m", ((b"tagger", SIG.serialize()),))
    later = Tag(Z, b"commit", b"v", None, b"m", ((b"x", b"y"), (b"tagger", b"z")))
    assert Tag.parse(later.serialize()) == later
    twice = Tag(Z, b"commit", b"v", SIG, b"m", ((b"tagger", b"again"),))
    assert Tag.parse(twice.serialize()) == twice


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tree": b"\0" * 19},
        {"tree": Z.hex()},
        {"parents": (b"\0" * 21,)},
        {"message": "text"},
        {"author": "A <a> 1 +0000"},
        {"committer": None},
    ],
)
def test_commit_rules(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {
        "tree": Z,
        "parents": (),
        "author": SIG,
        "committer": SIG,
        "message": b"m",
    }
    fields.update(kwargs)
    with pytest.raises(InvalidInput):
        Commit(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"object": b"\0" * 19},
        {"object_type": b"potato"},
        {"object_type": "commit"},
        {"name": b""},
        {"name": b"a b"},
        {"name": b"a\nb"},
        {"name": b"a\0b"},
        {"name": "v1"},
        {"tagger": "A <a> 1 +0000"},
        {"message": "text"},
    ],
)
def test_tag_rules(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {
        "object": Z,
        "object_type": b"commit",
        "name": b"v1",
        "tagger": SIG,
        "message": b"m",
    }
    fields.update(kwargs)
    with pytest.raises(InvalidInput):
        Tag(**fields)  # type: ignore[arg-type]


def test_errors_are_govc_errors() -> None:
    with pytest.raises(GovcError):
        Tree.parse(b"garbage")
    with pytest.raises(ValueError):
        Commit.parse(b"garbage")
