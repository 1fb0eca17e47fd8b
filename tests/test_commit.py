"""Repository.commit(): every rule of DESIGN.md § commit(), on both backends.

Commit ids are compared with ``git commit-tree`` on the exported repository. The
concurrent-move rebase is exercised through ``commit_changes`` with a spy around
the unit's real RefStore (it serves a stale head once, as a racing writer would
leave it), and for real on PostgreSQL with a second Store committing mid-flight.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _export import export_repository, git, git_env

import govc_db
from govc_db import (
    File,
    GovcError,
    InvalidInput,
    NotFound,
    RefConflict,
    Repository,
    Signature,
    Store,
)
from govc_db.core.commit import CommitResult, commit_changes, paths_overlap
from govc_db.core.indexing import index_commit
from govc_db.objects import Commit, ObjectId, format_offset, hex_to_oid
from govc_db.store.ports import CommitIndexStore, ObjectStore, RefLogEntry, RefStore

SIG = Signature("Ada Lovelace", "ada@example.com", 1700000000, 120)
OTHER = Signature("Zo\u00eb \u00dcnicode", "zoe@example.org", 1700003600, -330)


@pytest.fixture
def repo(store: Store) -> Repository:
    return store.create_repository("commits")


@dataclass(frozen=True)
class Snapshot:
    """Everything a failed commit must leave untouched."""

    refs: dict[str, ObjectId]
    reflog: list[RefLogEntry]
    objects: int
    index_rows: int


def snapshot(repo: Repository) -> Snapshot:
    with repo._store.backend.unit(repo._id) as unit:
        refs = dict(unit.refs.list_refs("refs/"))
        return Snapshot(
            refs,
            [e for name in refs for e in unit.refs.reflog(name)],
            len(list(unit.objects.iter_ids())),
            len(list(unit.index.iter_all())),
        )


@contextmanager
def unchanged(repo: Repository) -> Iterator[None]:
    before = snapshot(repo)
    yield
    assert snapshot(repo) == before


def commit_count(repo: Repository) -> int:
    with repo._store.backend.unit(repo._id) as unit:
        return sum(1 for _, kind in unit.objects.iter_ids() if kind == b"commit")


# -- branches -------------------------------------------------------------------------------


def test_first_commit_creates_the_default_branch(store: Store) -> None:
    repo = store.create_repository("trunky", default_branch="trunk")
    assert repo.branches() == {}
    with unchanged(repo), pytest.raises(NotFound):
        repo.commit("main", {"f": b"x"}, message="m\n", author=SIG)
    oid = repo.commit("trunk", {"f": b"x"}, message="first\n", author=SIG)
    assert repo.branches() == {"trunk": oid}
    assert repo.get_commit(oid).parents == []
    [entry] = repo.reflog("trunk")
    assert (entry.old, entry.new) == (None, oid)
    assert entry.message == "commit (initial): first"


def test_commit_to_a_missing_branch_is_not_found(repo: Repository) -> None:
    first = repo.commit("main", {"f": b"1"}, message="1\n", author=SIG)
    with unchanged(repo), pytest.raises(NotFound):
        repo.commit("feature", {"f": b"2"}, message="2\n", author=SIG)
    repo.create_branch("feature", first)
    second = repo.commit("feature", {"f": b"2"}, message="2\n", author=SIG)
    assert repo.branches() == {"main": first, "feature": second}
    assert repo.get_commit(second).parents == [first]
    assert repo.reflog("feature")[0].message == "commit: 2"


def test_invalid_branch_names(repo: Repository) -> None:
    for bad in ("", "a..b", "-x", "x.lock", "refs/heads/main", "HEAD", "a b", "x~1"):
        with pytest.raises(InvalidInput):
            repo.commit(bad, {"f": b"1"}, message="m", author=SIG)


# -- empty commits and no-ops -------------------------------------------------------------------


def test_allow_empty(repo: Repository) -> None:
    first = repo.commit("main", {"f": b"1"}, message="1\n", author=SIG)
    with unchanged(repo):
        with pytest.raises(InvalidInput):
            repo.commit("main", {}, message="nothing\n", author=SIG)
        with pytest.raises(InvalidInput):
            repo.commit("main", {"f": b"1"}, message="same content\n", author=SIG)
        with pytest.raises(InvalidInput):
            repo.commit("main", {"f": File(b"1")}, message="same\n", author=SIG)
    empty = repo.commit("main", {}, message="empty\n", author=SIG, allow_empty=True)
    info = repo.get_commit(empty)
    assert info.parents == [first]
    assert info.tree == repo.get_commit(first).tree
    same = repo.commit("main", {"f": b"1"}, message="again\n", author=SIG, allow_empty=True)
    assert repo.get_commit(same).parents == [empty]


# -- deletions and file/directory rules ---------------------------------------------------------


@pytest.fixture
def layout(repo: Repository) -> str:
    return repo.commit(
        "main",
        {"file": b"f", "dir/a": b"a", "dir/sub/b": b"b", "solo/only": b"o"},
        message="layout\n",
        author=SIG,
    )


def test_deleting_a_missing_path_is_not_found(repo: Repository, layout: str) -> None:
    for path in ("missing", "dir/missing", "file/below", "dir/sub/b/c", "nope/deeper"):
        with unchanged(repo), pytest.raises(NotFound):
            repo.commit("main", {path: None}, message="del\n", author=SIG)
    # One bad deletion fails the whole change set.
    with unchanged(repo), pytest.raises(NotFound):
        repo.commit("main", {"file": None, "missing": None}, message="del\n", author=SIG)


def test_deleting_a_directory_removes_the_subtree(repo: Repository, layout: str) -> None:
    oid = repo.commit("main", {"dir": None}, message="rm dir\n", author=SIG)
    assert [e.path for e in repo.walk(oid)] == ["file", "solo/only"]
    both = repo.commit("main", {"solo": None, "solo/only": None}, message="rm\n", author=SIG)
    assert [e.path for e in repo.walk(both)] == ["file"]


def test_empty_directories_vanish(repo: Repository, layout: str) -> None:
    oid = repo.commit("main", {"dir/sub/b": None}, message="rm b\n", author=SIG)
    assert [e.path for e in repo.tree(oid, "dir")] == ["dir/a"]
    assert not repo.exists(oid, "dir/sub")


def test_file_directory_clashes_with_the_tree(repo: Repository, layout: str) -> None:
    with unchanged(repo):
        with pytest.raises(InvalidInput):
            repo.commit("main", {"file/x": b"under a file"}, message="m", author=SIG)
        with pytest.raises(InvalidInput):
            repo.commit("main", {"dir": b"onto a directory"}, message="m", author=SIG)
        with pytest.raises(InvalidInput):
            repo.commit("main", {"dir/sub/b/c": b"under a deep file"}, message="m", author=SIG)
        with pytest.raises(InvalidInput):
            # Deleting one file of "dir" still leaves a directory there.
            repo.commit("main", {"dir/a": None, "dir": b"x"}, message="m", author=SIG)
    # Deletions apply first, so these replace a file by a directory and back.
    to_dir = repo.commit("main", {"file": None, "file/x": b"x"}, message="m\n", author=SIG)
    assert repo.read(to_dir, "file/x") == b"x"
    to_file = repo.commit("main", {"solo/only": None, "solo": b"s"}, message="m\n", author=SIG)
    assert repo.read(to_file, "solo") == b"s"
    whole = repo.commit("main", {"dir": None, "dir/new": b"n"}, message="m\n", author=SIG)
    assert [e.path for e in repo.walk(whole, "dir")] == ["dir/new"]


def test_a_change_set_that_clashes_with_itself(repo: Repository, layout: str) -> None:
    clashes: list[dict[str, bytes | File | None]] = [
        {"a": b"1", "a/b": b"2"},
        {"x/y": b"1", "x/y/z": b"2"},
        {"p/q/r": b"1", "p": File(b"2", 0o100755)},
    ]
    for changes in clashes:
        with unchanged(repo), pytest.raises(InvalidInput):
            repo.commit("main", changes, message="m", author=SIG)


# -- input validation ---------------------------------------------------------------------------


def test_content_must_be_bytes_or_file(repo: Repository) -> None:
    for value in ("text", 1, 1.5, ["b"], True):
        with pytest.raises(InvalidInput):
            repo.commit("main", {"f": value}, message="m", author=SIG)  # type: ignore[dict-item]
    with pytest.raises(InvalidInput):
        File("text")  # type: ignore[arg-type]
    # Other bytes-like values are accepted and stored as bytes.
    like: dict[str, Any] = {"ba": bytearray(b"ba"), "mv": memoryview(b"mv")}
    oid = repo.commit("main", like, message="m", author=SIG)
    assert repo.read(oid, "ba") == b"ba" and repo.read(oid, "mv") == b"mv"
    with pytest.raises(InvalidInput):
        repo.commit("main", [("f", b"x")], message="m", author=SIG)  # type: ignore[arg-type]
    assert repo.branches() == {"main": oid}


def test_bad_modes(repo: Repository) -> None:
    for mode in (0o100664, 0o40000, 0o160000, 0o644, 0, True, "100644"):
        with pytest.raises(InvalidInput):
            File(b"x", mode)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput), repo.changes("main", message="m", author=SIG) as c:
        c.write("x", b"x", mode=0o40000)
    assert repo.branches() == {}


def test_bad_paths_and_arguments(repo: Repository) -> None:
    for path in ("", "/abs", "trail/", "a//b", "./a", "a/../b", ".git/config", "x/.GIT/y", "a\nb"):
        with pytest.raises(InvalidInput):
            repo.commit("main", {path: b"x"}, message="m", author=SIG)
    with pytest.raises(InvalidInput):
        repo.commit("main", {"f": b"x"}, message=1, author=SIG)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        repo.commit("main", {"f": b"x"}, message="m", author="Ada")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        repo.commit("main", {"f": b"x"}, message="m", author=SIG, expected_head="abc")
    assert repo.branches() == {}


def test_sql_metacharacters_are_stored_verbatim(repo: Repository, tmp_path: Path) -> None:
    paths = [
        "q'uote",
        'd"quote',
        "semi;colon; DROP TABLE govc_objects; --",
        "x' OR '1'='1",
        "percent%_under",
        "back\\slash",
        "dir'/file\"",
    ]
    message = "'); DROP TABLE govc_refs; --\n\nbody with % and _ and \\ and \"\n"
    oid = repo.commit("main", {p: p.encode() for p in paths}, message=message, author=SIG)
    for p in paths:
        assert repo.read(oid, p) == p.encode()
    assert sorted(e.path for e in repo.walk(oid)) == sorted(paths)
    assert repo.get_commit(oid).message == message
    assert repo._store.list_repositories() == ["commits"]
    export = export_repository(repo, tmp_path / "export.git")
    git(export, "fsck", "--strict", "--no-dangling")


# -- messages and signatures --------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        "no newline",
        "subject\n\nbody line 1\nbody line 2\n",
        "trailing blank lines\n\n\n",
        "h\u00e9llo \u2014 \u65e5\u672c\u8a9e \U0001f600\n",
        "",
        "\n leading newline and  spaces  \n",
    ],
)
def test_message_bytes_are_stored_exactly(repo: Repository, message: str) -> None:
    oid = repo.commit("main", {"f": b"x"}, message=message, author=SIG)
    kind, raw = repo.get_object(oid)
    assert kind == "commit"
    assert raw.endswith(b"\n\n" + message.encode())
    assert raw.split(b"\n\n", 1)[1] == message.encode()
    assert repo.get_commit(oid).message == message


def test_committer_defaults_to_author(repo: Repository) -> None:
    first = repo.commit("main", {"f": b"1"}, message="1\n", author=SIG)
    assert repo.get_commit(first).committer == SIG
    second = repo.commit("main", {"f": b"2"}, message="2\n", author=SIG, committer=OTHER)
    info = repo.get_commit(second)
    assert (info.author, info.committer) == (SIG, OTHER)


def _git_commit_tree(
    export: Path, tree: str, parents: list[str], author: Signature, committer: Signature, msg: bytes
) -> str:
    env = git_env(export)
    for role, sig in (("AUTHOR", author), ("COMMITTER", committer)):
        env[f"GIT_{role}_NAME"] = sig.name
        env[f"GIT_{role}_EMAIL"] = sig.email
        env[f"GIT_{role}_DATE"] = f"@{sig.time} {format_offset(sig.offset)}"
    args = ["git", "-C", str(export), "commit-tree", tree]
    for p in parents:
        args += ["-p", p]
    # The message on stdin is taken verbatim (-m would add a newline).
    out = subprocess.run(args, input=msg, capture_output=True, env=env, check=True)
    return out.stdout.decode().strip()


def test_commit_ids_equal_git_commit_tree(repo: Repository, tmp_path: Path) -> None:
    made = [
        repo.commit("main", {"a": b"1", "d/b": b"2"}, message="root\n", author=SIG),
        repo.commit("main", {"a": b"3"}, message="no newline", author=SIG, committer=OTHER),
        repo.commit("main", {"x": File(b"a", 0o120000)}, message="", author=OTHER),
        repo.commit("main", {}, message="multi\n\nline \u00e9\n", author=SIG, allow_empty=True),
    ]
    export = export_repository(repo, tmp_path / "export.git")
    for oid in made:
        info = repo.get_commit(oid)
        msg = repo.get_object(oid)[1].split(b"\n\n", 1)[1]
        again = _git_commit_tree(export, info.tree, info.parents, info.author, info.committer, msg)
        assert again == oid
    assert git(export, "rev-list", "HEAD").decode().split() == made[::-1]
    git(export, "fsck", "--strict", "--no-dangling")


# -- expected_head: strict compare-and-swap -----------------------------------------------------


def test_expected_head_is_strict_cas(repo: Repository) -> None:
    first = repo.commit("main", {"a": b"1", "b": b"1"}, message="1\n", author=SIG)
    second = repo.commit("main", {"b": b"2"}, message="2\n", author=SIG)
    for expected in (first, "f" * 40):
        # Even a change to a path the newer commit did not touch is refused.
        with unchanged(repo), pytest.raises(RefConflict):
            repo.commit("main", {"a": b"3"}, message="3\n", author=SIG, expected_head=expected)
    count = commit_count(repo)
    third = repo.commit("main", {"a": b"3"}, message="3\n", author=SIG, expected_head=second)
    assert repo.branches() == {"main": third}
    assert commit_count(repo) == count + 1
    # Ids are accepted in either case.
    fourth = repo.commit(
        "main", {"a": b"4"}, message="4\n", author=SIG, expected_head=third.upper()
    )
    assert repo.get_commit(fourth).parents == [third]


def test_expected_head_on_an_empty_repository(repo: Repository) -> None:
    with unchanged(repo), pytest.raises(RefConflict):
        repo.commit("main", {"a": b"1"}, message="1\n", author=SIG, expected_head="a" * 40)


# -- the changes() builder ----------------------------------------------------------------------


def test_builder_gives_the_same_commit_as_commit(store: Store) -> None:
    direct = store.create_repository("direct")
    staged = store.create_repository("staged")
    one = direct.commit("main", {"old.txt": b"old", "keep": b"k"}, message="1\n", author=SIG)
    with staged.changes("main", message="1\n", author=SIG) as c:
        c.write("old.txt", b"old")
        c.write("keep", b"k")
    assert c.oid == one
    two = direct.commit(
        "main",
        {
            "a.txt": b"a",
            "bin/x": File(b"#!", 0o100755),
            "l": File(b"a.txt", 0o120000),
            "old.txt": None,
        },
        message="2\n",
        author=SIG,
        committer=OTHER,
    )
    with staged.changes("main", message="2\n", author=SIG, committer=OTHER) as c2:
        c2.write("a.txt", b"a")
        c2.write("bin/x", b"#!", mode=0o100755)
        c2.write("l", b"a.txt", mode=0o120000)
        c2.delete("old.txt")
    assert c2.oid == two
    assert staged.branches() == {"main": two}


def test_builder_does_not_commit_when_the_block_raises(repo: Repository) -> None:
    first = repo.commit("main", {"f": b"1"}, message="1\n", author=SIG)

    class Boom(Exception):
        pass

    with unchanged(repo), pytest.raises(Boom), repo.changes("main", message="m", author=SIG) as c:
        c.write("f", b"2")
        raise Boom
    assert c.oid is None
    assert repo.branches() == {"main": first}
    # Errors of the commit itself surface from the with statement, changing nothing.
    with (
        unchanged(repo),
        pytest.raises(NotFound),
        repo.changes("main", message="m", author=SIG) as d,
    ):
        d.delete("missing")
    assert d.oid is None


# -- the commit index ---------------------------------------------------------------------------


def test_index_rows_of_commits(repo: Repository) -> None:
    first = repo.commit("main", {"a": b"1", "d/b": b"2"}, message="1\n", author=SIG)
    second = repo.commit(
        "main", {"d/b": None, "c": b"3"}, message="2\n", author=SIG, committer=OTHER
    )
    with repo._store.backend.unit(repo._id) as unit:
        rows = unit.index.get_many([hex_to_oid(first), hex_to_oid(second)])
        r1, r2 = rows[hex_to_oid(first)], rows[hex_to_oid(second)]
        assert (r1.generation, r1.parents, r1.author_time) == (1, (), SIG.time)
        assert r2.generation == 2 and r2.parents == (hex_to_oid(first),)
        assert r2.committer_time == OTHER.time
        assert r2.tree == hex_to_oid(repo.get_commit(second).tree)
        assert unit.index.changed_paths(hex_to_oid(first)) == {0: {"a", "d/b"}}
        assert unit.index.changed_paths(hex_to_oid(second)) == {0: {"c", "d/b"}}


def test_index_commit_of_a_merge_and_of_an_unindexed_parent(repo: Repository) -> None:
    base = repo.commit("main", {"a": b"1", "b": b"1"}, message="base\n", author=SIG)
    left = repo.commit("main", {"a": b"2"}, message="left\n", author=SIG)
    repo.create_branch("side", base)
    right = repo.commit("side", {"b": b"2"}, message="right\n", author=SIG)
    right2 = repo.commit("side", {"c": b"2"}, message="right 2\n", author=SIG)
    with repo._store.backend.unit(repo._id, write=True) as unit:
        ids = [hex_to_oid(x) for x in (left, right, right2)]
        tree = hex_to_oid(repo.get_commit(right2).tree)
        merge = Commit(tree, (ids[0], ids[2]), SIG, SIG, b"merge\n")
        oid = unit.objects.put(b"commit", merge.serialize())
        entry = index_commit(unit.objects, unit.index, oid, merge)
        assert entry.generation == 4  # 1 + max(2, 3)
        assert entry.parents == (ids[0], ids[2])
        changed = unit.index.changed_paths(oid)
        assert changed[0] == {"a", "b", "c"}
        assert changed.get(1, set()) == set()  # the merge kept the second parent's tree
        orphan = Commit(tree, (ObjectId(b"\x05" * 20),), SIG, SIG, b"orphan\n")
        with pytest.raises(GovcError, match="not indexed"):
            index_commit(unit.objects, unit.index, orphan.id, orphan)
    assert right


# -- concurrent moves: rebase on disjoint paths ---------------------------------------------------


def test_paths_overlap() -> None:
    assert paths_overlap(["a"], ["a"])
    assert paths_overlap(["a"], ["a/b"])  # ours contains theirs
    assert paths_overlap(["a/b/c"], ["a"])  # ours inside theirs
    assert paths_overlap(["x", "d/e"], ["y", "d/e/f"])
    assert not paths_overlap(["a"], ["ab", "a-b", "a.txt", "b/a"])
    assert not paths_overlap(["a/b"], ["a/c", "a/bc", "b"])
    assert not paths_overlap([], ["a"])
    assert not paths_overlap(["a"], [])


class StaleRefs:
    """A spy around the real RefStore: the first read(s) of ``ref`` return ``stale``,
    as a writer that read the head just before another writer moved it would see it.
    """

    def __init__(
        self,
        inner: RefStore,
        ref: str,
        stale: ObjectId | None,
        *,
        times: int = 1,
        before: Callable[[], None] | None = None,
    ) -> None:
        self.inner, self.ref, self.stale, self.times, self.before = inner, ref, stale, times, before

    def get(self, name: str) -> ObjectId | None:
        if name == self.ref and self.times > 0:
            self.times -= 1
            if self.before is not None:
                self.before()
            return self.stale
        return self.inner.get(name)

    def get_many(self, names: Sequence[str]) -> dict[str, ObjectId]:
        return {n: t for n in names if (t := self.get(n)) is not None}

    def list_refs(self, prefix: str = "refs/") -> dict[str, ObjectId]:
        return self.inner.list_refs(prefix)

    def set_if_equals(self, name: str, old: ObjectId | None, new: ObjectId, message: str) -> bool:
        return self.inner.set_if_equals(name, old, new, message)

    def add_if_new(self, name: str, new: ObjectId, message: str) -> bool:
        return self.inner.add_if_new(name, new, message)

    def remove_if_equals(self, name: str, old: ObjectId | None, message: str) -> bool:
        return self.inner.remove_if_equals(name, old, message)

    def reflog(self, name: str) -> list[RefLogEntry]:
        return self.inner.reflog(name)


@dataclass
class SpyUnit:
    """The real unit's parts, with its RefStore replaced by a spy."""

    repo_id: int
    objects: ObjectStore
    refs: RefStore
    index: CommitIndexStore
    after_commit: Callable[[Callable[[], None]], None]
    savepoint: Callable[[], AbstractContextManager[object]]


def _commit_with_stale_head(
    repo: Repository,
    changes: Mapping[str, File | None],
    stale: str,
    *,
    times: int = 1,
    attempts: int = 10,
    before: Callable[[], None] | None = None,
) -> CommitResult:
    with repo._store.backend.unit(repo._id, write=True) as unit:
        refs = StaleRefs(
            unit.refs, "refs/heads/main", hex_to_oid(stale), times=times, before=before
        )
        return commit_changes(
            SpyUnit(
                unit.repo_id, unit.objects, refs, unit.index, unit.after_commit, unit.savepoint
            ),
            default_branch="main",
            branch="main",
            changes=changes,
            message=b"ours\n",
            author=SIG,
            committer=SIG,
            expected_head=None,
            allow_empty=False,
            rebase_attempts=attempts,
        )


def test_disjoint_concurrent_commit_is_rebased(repo: Repository) -> None:
    first = repo.commit("main", {"a": b"1", "b": b"1", "d/x": b"1"}, message="1\n", author=SIG)
    theirs = repo.commit("main", {"b": b"theirs", "d/y": b"new"}, message="2\n", author=SIG)
    result = _commit_with_stale_head(repo, {"a": File(b"ours"), "d/x": None}, first)
    ours = result.oid.hex()
    assert result.old_head == hex_to_oid(theirs)
    assert repo.branches() == {"main": ours}
    assert repo.get_commit(ours).parents == [theirs]
    assert {e.path: repo.read(ours, e.path) for e in repo.walk(ours)} == {
        "a": b"ours",
        "b": b"theirs",
        "d/y": b"new",
    }
    assert [(c.path, c.status) for c in repo.diff(theirs, ours)] == [("a", "M"), ("d/x", "D")]


def test_overlapping_concurrent_commit_is_a_conflict(repo: Repository) -> None:
    first = repo.commit("main", {"a": b"1", "d/x": b"1"}, message="1\n", author=SIG)
    repo.commit("main", {"d/x": b"theirs"}, message="2\n", author=SIG)
    for changes in ({"d/x": File(b"ours")}, {"d": None}, {"d/x": None, "d/x/y": File(b"o")}):
        with unchanged(repo), pytest.raises(RefConflict, match="same paths"):
            _commit_with_stale_head(repo, changes, first)


def test_a_branch_that_keeps_moving_gives_up(repo: Repository) -> None:
    first = repo.commit("main", {"a": b"1"}, message="1\n", author=SIG)
    repo.commit("main", {"b": b"2"}, message="2\n", author=SIG)
    with unchanged(repo), pytest.raises(RefConflict, match="kept moving"):
        _commit_with_stale_head(repo, {"c": File(b"3")}, first, times=100, attempts=3)


def test_real_concurrent_commit_on_postgres(pg_url: str) -> None:
    with govc_db.open(pg_url) as ours_store, govc_db.open(pg_url) as their_store:
        repo = ours_store.create_repository("race")
        other = their_store.repository("race")
        first = repo.commit("main", {"a": b"1", "b": b"1"}, message="1\n", author=SIG)
        moved: list[str] = []

        def their_commit() -> None:
            # Runs inside our open transaction, after our head was read and before our CAS.
            moved.append(other.commit("main", {"b": b"theirs"}, message="t\n", author=OTHER))

        result = _commit_with_stale_head(repo, {"a": File(b"ours")}, first, before=their_commit)
        assert result.old_head == hex_to_oid(moved[0])
        ours = result.oid.hex()
        assert other.branches() == {"main": ours}
        assert other.get_commit(ours).parents == [moved[0]]
        assert other.read(ours, "a") == b"ours" and other.read(ours, "b") == b"theirs"
        assert [e.new for e in other.reflog("main")] == [ours, moved[0], first]

        def their_overlap() -> None:
            moved.append(other.commit("main", {"a": b"again"}, message="t2\n", author=OTHER))

        with pytest.raises(RefConflict):
            _commit_with_stale_head(repo, {"a": File(b"mine")}, ours, before=their_overlap)
        assert other.branches() == {"main": moved[-1]}
        assert other.read("main", "a") == b"again"
