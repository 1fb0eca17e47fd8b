"""Our ids and bytes against the real ``git`` command (hash-object, mktree, commit-tree, mktag)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _git import GitRepo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from govc_db.errors import InvalidInput
from govc_db.objects import (
    MODE_DIR,
    MODE_EXEC,
    MODE_FILE,
    MODE_GITLINK,
    MODE_LINK,
    Blob,
    Commit,
    ObjectId,
    Signature,
    Tag,
    Tree,
    TreeItem,
    check_path,
    check_path_set,
    hex_to_oid,
    mode_type,
    oid_to_hex,
    parse_object,
)

# Derandomized: the same examples on every run, so a git-dependent failure reproduces.
GIT_SETTINGS = settings(
    database=None,
    deadline=None,
    derandomize=True,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow],
)

CORPUS_BLOBS: list[bytes] = [
    b"",
    b"hello\n",
    b"no trailing newline",
    b"\0",
    b"\0\0binary\0with\0NULs\xff\xfe\x00",
    bytes(range(256)) * 3,
    "héllo wörld ✓ 日本語\n".encode(),
    b"\xc3\x28 invalid utf-8\n",
    b"crlf\r\nline\r\n",
    b"x" * 70_000,
]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> GitRepo:
    """A repository that only ever holds well-formed, connected objects (fsck-clean)."""
    return GitRepo(tmp_path_factory.mktemp("git-objects"))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> GitRepo:
    """A repository for trees that point at ids which do not exist."""
    return GitRepo(tmp_path_factory.mktemp("git-scratch"))


def write_blob(repo: GitRepo, data: bytes) -> ObjectId:
    oid = Blob(data).id
    assert repo.hash_object("blob", data) == oid_to_hex(oid)
    return oid


def git_mktree(repo: GitRepo, tree: Tree) -> str:
    rows = [
        (f"{i.mode:06o}", mode_type(i.mode), oid_to_hex(i.oid), i.name)
        for i in reversed(tree.items)  # git sorts them itself
    ]
    return repo.mktree(rows)


def assert_same_as_git(repo: GitRepo, type_name: str, oid: ObjectId, raw: bytes) -> None:
    """git holds ``oid`` with exactly ``raw``, and our parser reads it back to the same bytes."""
    hex_id = oid_to_hex(oid)
    assert repo.object_type(hex_id) == type_name
    stored = repo.cat_file(type_name, hex_id)
    assert stored == raw
    parsed = parse_object(type_name.encode(), stored)
    assert parsed.serialize() == stored
    assert parsed.id == oid


# --------------------------------------------------------------------------- blobs


@pytest.mark.parametrize("data", CORPUS_BLOBS, ids=range(len(CORPUS_BLOBS)))
def test_blob_id_matches_hash_object(repo: GitRepo, data: bytes) -> None:
    blob = Blob(data)
    assert repo.hash_object("blob", data) == oid_to_hex(blob.id)
    assert_same_as_git(repo, "blob", blob.id, data)


@pytest.mark.parametrize("data", CORPUS_BLOBS[:8], ids=range(8))
def test_blob_id_matches_hash_object_of_a_file(repo: GitRepo, data: bytes, tmp_path: Path) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(data)
    assert repo.run_text("hash-object", "--no-filters", str(path)) == oid_to_hex(Blob(data).id)


@GIT_SETTINGS
@given(st.binary(max_size=500))
def test_random_blobs_match_git(repo: GitRepo, data: bytes) -> None:
    assert repo.hash_object("blob", data, write=False) == oid_to_hex(Blob(data).id)


# --------------------------------------------------------------------------- trees via mktree


def _items(*rows: tuple[bytes, int, ObjectId]) -> Tree:
    return Tree.of(TreeItem(name, mode, oid) for name, mode, oid in rows)


@pytest.fixture(scope="module")
def blob_ids(repo: GitRepo) -> list[ObjectId]:
    return [write_blob(repo, data) for data in CORPUS_BLOBS]


@pytest.fixture(scope="module")
def a_commit(repo: GitRepo) -> ObjectId:
    """A real commit id, for gitlink entries and commit parents."""
    empty = Tree()
    assert git_mktree(repo, empty) == oid_to_hex(empty.id)
    out = repo.run_text("commit-tree", oid_to_hex(empty.id), input=b"root\n")
    return hex_to_oid(out)


def test_trees_sort_like_git_around_a_directory(
    repo: GitRepo, blob_ids: list[ObjectId], a_commit: ObjectId
) -> None:
    b0, b1, b2 = blob_ids[:3]
    inner = _items((b"c.txt", MODE_FILE, b0), (b"b", MODE_EXEC, b1))
    assert git_mktree(repo, inner) == oid_to_hex(inner.id)
    siblings = [
        (b"a.txt", MODE_FILE, b0),
        (b"a-b", MODE_FILE, b1),
        (b"a0", MODE_FILE, b2),
        (b"a.b", MODE_FILE, b0),
        (b"a_b", MODE_FILE, b0),
        (b"A", MODE_FILE, b0),
        (b"b", MODE_LINK, write_blob(repo, b"a/c.txt")),
        (b"ab", MODE_GITLINK, a_commit),
    ]
    with_dir = _items((b"a", MODE_DIR, inner.id), *siblings)
    names = [i.name for i in with_dir.items]
    assert names.index(b"a.txt") < names.index(b"a") < names.index(b"a0")
    with_file = _items((b"a", MODE_FILE, b2), *siblings)
    assert [i.name for i in with_file.items][:2] == [b"A", b"a"]
    for tree in (with_dir, with_file, Tree()):
        assert git_mktree(repo, tree) == oid_to_hex(tree.id)
        assert_same_as_git(repo, "tree", tree.id, tree.serialize())


def test_tree_names_with_unusual_bytes(repo: GitRepo, blob_ids: list[ObjectId]) -> None:
    names = [
        "ünïcødé.txt".encode(),
        "日本語".encode(),
        b"\xff\xfe not utf-8",
        b"with space",
        b"tab\there",
        b"new\nline",
        b"-dash",
        b".hidden",
        b"...",
        b"x" * 255,
    ]
    tree = Tree.of(TreeItem(n, MODE_FILE, blob_ids[k % 4]) for k, n in enumerate(names))
    assert git_mktree(repo, tree) == oid_to_hex(tree.id)
    assert_same_as_git(repo, "tree", tree.id, tree.serialize())


def test_nested_trees_match_mktree(repo: GitRepo, blob_ids: list[ObjectId]) -> None:
    leaf = _items((b"deep.txt", MODE_FILE, blob_ids[1]))
    middle = _items((b"leaf", MODE_DIR, leaf.id), (b"leaf.txt", MODE_FILE, blob_ids[2]))
    top = _items(
        (b"middle", MODE_DIR, middle.id),
        (b"middle-file", MODE_EXEC, blob_ids[3]),
        (b"empty", MODE_DIR, Tree().id),
    )
    for tree in (Tree(), leaf, middle, top):
        assert git_mktree(repo, tree) == oid_to_hex(tree.id)
    assert repo.run_text("rev-parse", f"{oid_to_hex(top.id)}:middle/leaf") == oid_to_hex(leaf.id)
    assert repo.run_text("rev-parse", f"{oid_to_hex(top.id)}:middle/leaf/deep.txt") == (
        oid_to_hex(blob_ids[1])
    )
    assert_same_as_git(repo, "tree", top.id, top.serialize())


def test_gitlink_entry_parsed_from_git(repo: GitRepo, a_commit: ObjectId) -> None:
    commit_hex = oid_to_hex(a_commit)
    out = repo.mktree([("160000", "commit", commit_hex, b"submodule")])
    raw = repo.cat_file("tree", out)
    assert raw == b"160000 submodule\0" + a_commit
    tree = Tree.parse(raw)
    assert tree.items == (TreeItem(b"submodule", MODE_GITLINK, a_commit),)
    assert mode_type(tree.items[0].mode) == "commit"
    assert tree.serialize() == raw
    assert oid_to_hex(tree.id) == out
    assert repo.run("ls-tree", out) == f"160000 commit {commit_hex}\tsubmodule\n".encode()


tree_names = st.binary(min_size=1, max_size=16).filter(
    lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b"..")
)


@GIT_SETTINGS
@given(
    st.lists(
        st.tuples(tree_names, st.sampled_from([MODE_FILE, MODE_EXEC, MODE_LINK, MODE_DIR])),
        min_size=1,
        max_size=10,
        unique_by=lambda row: row[0],
    )
)
def test_random_trees_match_mktree(scratch: GitRepo, rows: list[tuple[bytes, int]]) -> None:
    fake = ObjectId(bytes(range(20)))  # mktree --missing does not look the ids up
    tree = Tree.of(TreeItem(name, mode, fake) for name, mode in rows)
    assert git_mktree(scratch, tree) == oid_to_hex(tree.id)


# --------------------------------------------------------------------------- trees via the index


def build_tree(files: dict[str, tuple[int, ObjectId]]) -> tuple[Tree, dict[str, Tree]]:
    """Our nested trees for ``path -> (mode, id)``; also every subtree by its directory path."""
    subdirs: dict[str, dict[str, tuple[int, ObjectId]]] = {}
    here: list[TreeItem] = []
    for path, (mode, oid) in files.items():
        head, sep, rest = path.partition("/")
        if sep:
            subdirs.setdefault(head, {})[rest] = (mode, oid)
        else:
            here.append(TreeItem(head.encode(), mode, oid))
    by_path: dict[str, Tree] = {}
    for name, sub in subdirs.items():
        subtree, nested = build_tree(sub)
        by_path[name] = subtree
        by_path.update({f"{name}/{k}": v for k, v in nested.items()})
        here.append(TreeItem(name.encode(), MODE_DIR, subtree.id))
    return Tree.of(here), by_path


def write_tree_via_index(repo: GitRepo, files: dict[str, tuple[int, ObjectId]], index: Path) -> str:
    env = {"GIT_INDEX_FILE": str(index)}
    args = ["update-index", "--add"]
    for path, (mode, oid) in files.items():
        args += ["--cacheinfo", f"{mode:o},{oid_to_hex(oid)},{path}"]
    index.unlink(missing_ok=True)
    repo.run(*args, env=env)
    return repo.run("write-tree", env=env).decode().strip()


@pytest.fixture
def index_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "index"
    yield path
    path.unlink(missing_ok=True)


def test_index_write_tree_matches(
    repo: GitRepo, blob_ids: list[ObjectId], a_commit: ObjectId, index_file: Path
) -> None:
    b = blob_ids
    files: dict[str, tuple[int, ObjectId]] = {
        "a.txt": (MODE_FILE, b[0]),
        "a-b": (MODE_FILE, b[1]),
        "a/b/c.txt": (MODE_FILE, b[2]),
        "a/b.c": (MODE_FILE, b[3]),
        "a/b-c": (MODE_EXEC, b[4]),
        "a/x": (MODE_FILE, b[5]),
        "a0": (MODE_FILE, b[6]),
        "b": (MODE_FILE, b[7]),
        "dir/sub/deeper/file": (MODE_FILE, b[0]),
        "ünï/ç.txt": (MODE_FILE, b[1]),
        "日本/語": (MODE_FILE, b[1]),
        "with space/x y": (MODE_FILE, b[2]),
        "exec.sh": (MODE_EXEC, b[3]),
        "link": (MODE_LINK, write_blob(repo, b"a/b/c.txt")),
        "sub": (MODE_GITLINK, a_commit),
    }
    for path in files:
        check_path(path)
    check_path_set(files)
    root, subtrees = build_tree(files)
    root_hex = write_tree_via_index(repo, files, index_file)
    assert root_hex == oid_to_hex(root.id)
    assert set(subtrees) == {
        "a",
        "a/b",
        "dir",
        "dir/sub",
        "dir/sub/deeper",
        "ünï",
        "日本",
        "with space",
    }
    for path, subtree in subtrees.items():
        assert repo.run_text("rev-parse", f"{root_hex}:{path}") == oid_to_hex(subtree.id)
        assert_same_as_git(repo, "tree", subtree.id, subtree.serialize())
    assert_same_as_git(repo, "tree", root.id, root.serialize())


_component = st.text(alphabet="ab.-_0é", min_size=1, max_size=4).filter(
    lambda s: s not in (".", "..")
)
_paths = st.lists(_component, min_size=1, max_size=3).map("/".join)


@GIT_SETTINGS
@given(st.lists(_paths, min_size=1, max_size=8, unique=True))
def test_random_paths_via_index_match(
    repo: GitRepo,
    blob_ids: list[ObjectId],
    tmp_path_factory: pytest.TempPathFactory,
    paths: list[str],
) -> None:
    try:
        check_path_set(paths)
    except InvalidInput:
        # A file that is also a directory: git's index refuses it too.
        return
    files = {
        p: (MODE_EXEC if k % 3 == 0 else MODE_FILE, blob_ids[k % 5]) for k, p in enumerate(paths)
    }
    index = tmp_path_factory.mktemp("idx") / "index"
    root, _ = build_tree(files)
    assert write_tree_via_index(repo, files, index) == oid_to_hex(root.id)


# --------------------------------------------------------------------------- commits


def _ident_env(role: str, sig: Signature, date: str) -> dict[str, str]:
    return {
        f"GIT_{role}_NAME": sig.name,
        f"GIT_{role}_EMAIL": sig.email,
        f"GIT_{role}_DATE": date,
    }


COMMIT_CASES: list[tuple[str, str, bytes]] = [
    ("1700000000 +0200", "1700000000 -0530", b"single line\n"),
    ("1700000000 -0530", "1700000001 +0000", b"subject\n\nbody line 1\nbody line 2\n"),
    ("1700000000 +0000", "1700000000 +0000", b"no trailing newline"),
    # git reads small or far-future epochs only with a leading "@".
    ("@0 +0000", "@1 +1400", b""),
    ("@4102444800 -1200", "@4102444800 +0545", b"  leading spaces\n\n\n\ntrailing blanks\n\n\n"),
    ("1234567890 +0100", "1234567890 -0100", "ünïcødé ✓ 日本語\n".encode()),
]


def _sig_for(name: str, email: str, date: str) -> Signature:
    seconds, zone = date.split()
    minutes = int(zone[1:3]) * 60 + int(zone[3:5])
    return Signature(
        name, email, int(seconds.removeprefix("@")), -minutes if zone[0] == "-" else minutes
    )


@pytest.mark.parametrize(("author_date", "committer_date", "message"), COMMIT_CASES)
@pytest.mark.parametrize("n_parents", [0, 1, 2, 3])
def test_commit_tree_matches(
    repo: GitRepo,
    blob_ids: list[ObjectId],
    n_parents: int,
    author_date: str,
    committer_date: str,
    message: bytes,
) -> None:
    tree = _items((b"file", MODE_FILE, blob_ids[1]))
    assert git_mktree(repo, tree) == oid_to_hex(tree.id)
    parents: list[ObjectId] = []
    for k in range(n_parents):
        out = repo.run_text("commit-tree", oid_to_hex(tree.id), input=b"parent %d\n" % k)
        parents.append(hex_to_oid(out))
    author = _sig_for("Jörg Müller", "jorg@example.com", author_date)
    committer = _sig_for("C O Mitter", "", committer_date)
    ours = Commit(tree.id, tuple(parents), author, committer, message)
    args = ["commit-tree", oid_to_hex(tree.id)]
    for p in parents:
        args += ["-p", oid_to_hex(p)]
    env = _ident_env("AUTHOR", author, author_date) | _ident_env(
        "COMMITTER", committer, committer_date
    )
    out = repo.run(*args, input=message, env=env).decode().strip()
    assert out == oid_to_hex(ours.id)
    assert_same_as_git(repo, "commit", ours.id, ours.serialize())
    assert Commit.parse(repo.cat_file("commit", out)) == ours


TAGGER = Signature("T Agger", "tagger@example.com", 1_700_000_000, -330)

GPGSIG = (
    b"-----BEGIN PGP SIGNATURE-----\n"
    b"\n"
    b"iQEzBAABCAAdFiEEabcdefghijklmnopqrstuvwxyz0123456789+/ABCDEF=\n"
    b"=wxyz\n"
    b"-----END PGP SIGNATURE-----"
)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ((), b"not utf-8 \xff\n"),
        (((b"encoding", b"ISO-8859-1"),), b"caf\xe9\n"),
        (((b"gpgsig", GPGSIG),), b"signed\n"),
        (((b"encoding", b"UTF-8"), (b"gpgsig", GPGSIG), (b"x-custom", b"")), b"m"),
        (((b"gpgsig-sha256", GPGSIG + b"\n"),), b"trailing newline in value\n"),
    ],
)
def test_raw_commits_match_hash_object(
    repo: GitRepo,
    a_commit: ObjectId,
    extra: tuple[tuple[bytes, bytes], ...],
    message: bytes,
) -> None:
    commit = Commit(
        Tree().id,
        (a_commit,),
        Signature("J\udcf6rg", "j@x", 1_700_000_000, -330),  # a non-UTF-8 name byte
        Signature("C", "c@x", 1_700_000_000, 840),
        message,
        extra,
    )
    raw = commit.serialize()
    assert b"author J\xf6rg <j@x> 1700000000 -0530\n" in raw
    assert repo.hash_object("commit", raw) == oid_to_hex(commit.id)
    assert_same_as_git(repo, "commit", commit.id, raw)
    repo.run("fsck", "--strict", "--no-dangling", "--no-progress", oid_to_hex(commit.id))


def test_commit_message_with_nul_matches_hash_object(scratch: GitRepo) -> None:
    # git stores it (fsck --strict would call it nulInCommit), and so must we, byte for byte.
    commit = Commit(Tree().id, (), TAGGER, TAGGER, b"binary \0 message\n")
    raw = commit.serialize()
    assert scratch.hash_object("commit", raw) == oid_to_hex(commit.id)
    assert_same_as_git(scratch, "commit", commit.id, raw)


# --------------------------------------------------------------------------- tags


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (b"v1.0", b"release 1.0\n"),
        (b"release/2024-01", b"subject\n\nbody\n"),
        ("ünï".encode(), b""),
        (b"v2", b"no newline"),
    ],
)
def test_mktag_matches(
    repo: GitRepo,
    blob_ids: list[ObjectId],
    a_commit: ObjectId,
    name: bytes,
    message: bytes,
) -> None:
    targets: list[tuple[ObjectId, bytes]] = [
        (a_commit, b"commit"),
        (Tree().id, b"tree"),
        (blob_ids[1], b"blob"),
    ]
    # Also a tag of a tag (git accepts any object type as the target).
    targets.append((Tag(a_commit, b"commit", b"inner", TAGGER, b"inner\n").id, b"tag"))
    inner_raw = Tag(a_commit, b"commit", b"inner", TAGGER, b"inner\n").serialize()
    assert repo.run_text("mktag", input=inner_raw) == oid_to_hex(targets[-1][0])
    for oid, type_name in targets:
        tag = Tag(oid, type_name, name, TAGGER, message)
        assert repo.run_text("mktag", input=tag.serialize()) == oid_to_hex(tag.id)
        assert_same_as_git(repo, "tag", tag.id, tag.serialize())


def test_tag_without_tagger_matches_hash_object(repo: GitRepo, a_commit: ObjectId) -> None:
    tag = Tag(a_commit, b"commit", b"old-style", None, b"no tagger\n")
    assert b"\ntagger " not in tag.serialize()
    assert repo.hash_object("tag", tag.serialize()) == oid_to_hex(tag.id)
    assert_same_as_git(repo, "tag", tag.id, tag.serialize())


# --------------------------------------------------------------------------- git's own objects


def _all_objects(repo: GitRepo) -> list[tuple[str, str, bytes]]:
    """Every object in ``repo`` as ``(hex id, type, raw content)``, via ``cat-file --batch``."""
    listing = repo.run_text("cat-file", "--batch-all-objects", "--batch-check=%(objectname)")
    ids = listing.split("\n")
    out = repo.run("cat-file", "--batch", input="".join(f"{i}\n" for i in ids).encode())
    objects: list[tuple[str, str, bytes]] = []
    pos = 0
    while pos < len(out):
        header_end = out.index(b"\n", pos)
        hex_id, type_name, size = out[pos:header_end].decode().split()
        start = header_end + 1
        objects.append((hex_id, type_name, out[start : start + int(size)]))
        pos = start + int(size) + 1
    assert len(objects) == len(ids)
    return objects


def test_git_own_objects_parse_and_reserialize(tmp_path: Path) -> None:
    git = GitRepo(tmp_path)
    work = git.worktree
    (work / "README").write_text("hello\n")
    (work / "dir").mkdir()
    (work / "dir" / "ünï.txt").write_bytes("ç\n".encode())
    (work / "a.txt").write_text("a\n")
    (work / "a-b").write_text("ab\n")
    (work / "run.sh").write_text("#!/bin/sh\n")
    (work / "run.sh").chmod(0o755)
    (work / "link").symlink_to("README")
    git.run("add", "-A")
    git.run("commit", "-q", "-m", "first\n\nwith a body")
    git.run("checkout", "-q", "-b", "side")
    (work / "dir" / "more").write_text("more\n")
    git.run("add", "-A")
    git.run("commit", "-q", "-m", "side work")
    side = git.run_text("rev-parse", "HEAD")
    fake_signed = (
        f"object {side}\ntype commit\ntag signed\ntagger {TAGGER.serialize().decode()}\n\n"
        "signed tag\n-----BEGIN PGP SIGNATURE-----\n\nabc\n-----END PGP SIGNATURE-----\n"
    ).encode()
    git.run("update-ref", "refs/tags/signed", git.run_text("mktag", input=fake_signed))
    git.run("checkout", "-q", "-")
    git.run("merge", "-q", "--no-ff", "-m", "merge the signed tag", "signed")
    git.run("tag", "-a", "-m", "annotated by git\n\nbody", "v1")
    git.run(
        "-c",
        "i18n.commitEncoding=ISO-8859-1",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "caf\xe9",
    )

    head = git.cat_file("commit", "HEAD")
    assert b"\nencoding ISO-8859-1\n" in head
    merge = Commit.parse(git.cat_file("commit", "HEAD^"))
    assert len(merge.parents) == 2
    assert [k for k, _ in merge.extra] == [b"mergetag"]
    assert merge.extra[0][1].startswith(b"object " + side.encode() + b"\ntype commit\n")
    assert b"\n\nsigned tag\n" in merge.extra[0][1]

    objects = _all_objects(git)
    kinds = {t for _, t, _ in objects}
    assert kinds == {"blob", "tree", "commit", "tag"}
    for hex_id, type_name, raw in objects:
        obj = parse_object(type_name.encode(), raw)
        assert obj.serialize() == raw, hex_id
        assert oid_to_hex(obj.id) == hex_id

    root = Tree.parse(git.cat_file("tree", "HEAD^{tree}"))
    modes = {i.name: i.mode for i in root.items}
    assert modes[b"run.sh"] == MODE_EXEC
    assert modes[b"link"] == MODE_LINK
    assert modes[b"dir"] == MODE_DIR
    assert modes[b"README"] == MODE_FILE
    assert [i.name for i in root.items] == [b"README", b"a-b", b"a.txt", b"dir", b"link", b"run.sh"]

    listing = git.run("ls-tree", "-z", "HEAD")
    rows = [r for r in listing.split(b"\0") if r]
    for row, item in zip(rows, root.items, strict=True):
        meta, name = row.split(b"\t", 1)
        row_mode, row_kind, row_id = meta.split()
        assert (int(row_mode, 8), row_kind.decode(), row_id.decode(), name) == (
            item.mode,
            mode_type(item.mode),
            oid_to_hex(item.oid),
            item.name,
        )

    tag = Tag.parse(git.cat_file("tag", "v1"))
    assert tag.name == b"v1"
    assert tag.object_type == b"commit"
    assert tag.message == b"annotated by git\n\nbody\n"
    assert tag.tagger == Signature("Test Committer", "committer@example.com", 1_700_000_000, 0)
    git.fsck()


def test_everything_written_to_the_clean_repository_passes_fsck(
    repo: GitRepo, blob_ids: list[ObjectId], a_commit: ObjectId
) -> None:
    # Runs last in this module: every tree, commit and tag the tests above made from
    # our serialization is accepted by git's strictest check.
    listing = repo.run_text("cat-file", "--batch-all-objects", "--batch-check=%(objecttype)")
    assert set(listing.split("\n")) == {"blob", "tree", "commit", "tag"}
    repo.fsck()
