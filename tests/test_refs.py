"""Branches, tags and the reflog: compare-and-swap moves, name clashes, annotated tags
identical to ``git mktag``, and a reflog that can undo a forced move.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from _export import export_repository, git

from govc_db import (
    AlreadyExists,
    InvalidInput,
    NotFound,
    RefConflict,
    Repository,
    Signature,
    Store,
)
from govc_db.objects import format_offset

HEX40 = re.compile(r"[0-9a-f]{40}")


def sig(minute: int) -> Signature:
    return Signature("Ada Lovelace", "ada@example.com", 1_700_000_000 + 60 * minute, 120)


def is_hex(value: object) -> bool:
    return isinstance(value, str) and HEX40.fullmatch(value) is not None


@dataclass
class Graph:
    """main: m1 -> m2 -> m3; side: m1 -> s1 (diverged from main)."""

    m1: str
    m2: str
    m3: str
    s1: str


@pytest.fixture
def repo(store: Store) -> Repository:
    return store.create_repository("refs")


@pytest.fixture
def graph(repo: Repository) -> Graph:
    m1 = repo.commit("main", {"f": b"1"}, message="one\n", author=sig(0))
    m2 = repo.commit("main", {"f": b"2"}, message="two\n", author=sig(1))
    m3 = repo.commit("main", {"f": b"3"}, message="three\n", author=sig(2))
    repo.create_branch("side", m1)
    s1 = repo.commit("side", {"g": b"side"}, message="side\n", author=sig(3))
    return Graph(m1, m2, m3, s1)


# -- branches ---------------------------------------------------------------------------


def test_branches_lists_every_branch(repo: Repository, graph: Graph) -> None:
    assert repo.branches() == {"main": graph.m3, "side": graph.s1}
    assert all(is_hex(v) for v in repo.branches().values())


def test_create_branch_defaults_to_head(repo: Repository, graph: Graph) -> None:
    assert repo.create_branch("topic") == graph.m3
    assert repo.create_branch("old", graph.m1[:10]) == graph.m1
    assert repo.create_branch("nested/deep/name", "main~1") == graph.m2
    assert repo.branches()["topic"] == graph.m3
    assert repo.branches()["nested/deep/name"] == graph.m2


def test_create_branch_errors(repo: Repository, graph: Graph) -> None:
    with pytest.raises(AlreadyExists):
        repo.create_branch("side", graph.m2)
    with pytest.raises(NotFound):
        repo.create_branch("x", "no-such-rev")
    assert repo.branches() == {"main": graph.m3, "side": graph.s1}


@pytest.mark.parametrize(
    ("first", "second"),
    [("a", "a/b"), ("a/b", "a"), ("a/b/c", "a"), ("a", "a/b/c"), ("x/y", "x/y/z")],
)
def test_directory_file_clash_between_refs(
    repo: Repository, graph: Graph, first: str, second: str
) -> None:
    repo.create_branch(first)
    with pytest.raises(AlreadyExists):
        repo.create_branch(second)
    repo.create_tag(first)
    with pytest.raises(AlreadyExists):
        repo.create_tag(second)
    assert second not in repo.branches()
    assert second not in repo.tags()


def test_branch_and_tag_namespaces_do_not_clash(repo: Repository, graph: Graph) -> None:
    repo.create_branch("a")
    repo.create_tag("a/b")
    repo.create_tag("side")
    assert repo.tags() == {"a/b": graph.m3, "side": graph.m3}


def test_move_branch_fast_forward_only_unless_forced(repo: Repository, graph: Graph) -> None:
    repo.create_branch("topic", graph.m1)
    assert repo.move_branch("topic", graph.m2) == graph.m2
    assert repo.branches()["topic"] == graph.m2
    # Backwards and sideways are not fast-forwards.
    with pytest.raises(RefConflict):
        repo.move_branch("topic", graph.m1)
    with pytest.raises(RefConflict):
        repo.move_branch("topic", graph.s1)
    assert repo.branches()["topic"] == graph.m2
    assert repo.move_branch("topic", graph.s1, force=True) == graph.s1
    assert repo.move_branch("topic", "main~2", force=True) == graph.m1
    # Moving to where it already is succeeds.
    assert repo.move_branch("topic", graph.m1) == graph.m1
    assert repo.branches()["topic"] == graph.m1


def test_move_branch_expected_is_compare_and_swap(repo: Repository, graph: Graph) -> None:
    repo.create_branch("topic", graph.m1)
    with pytest.raises(RefConflict):
        repo.move_branch("topic", graph.m2, expected=graph.m2)
    with pytest.raises(RefConflict):
        repo.move_branch("topic", graph.s1, expected=graph.m2, force=True)
    assert repo.branches()["topic"] == graph.m1
    assert repo.move_branch("topic", graph.m2, expected=graph.m1) == graph.m2
    assert repo.move_branch("topic", graph.s1, expected=graph.m2, force=True) == graph.s1


def test_move_branch_not_found(repo: Repository, graph: Graph) -> None:
    with pytest.raises(NotFound):
        repo.move_branch("nope", graph.m1)
    with pytest.raises(NotFound):
        repo.move_branch("side", "no-such-rev", force=True)
    assert repo.branches()["side"] == graph.s1


def test_delete_branch(repo: Repository, graph: Graph) -> None:
    with pytest.raises(InvalidInput):
        repo.delete_branch("main")
    with pytest.raises(NotFound):
        repo.delete_branch("nope")
    with pytest.raises(RefConflict):
        repo.delete_branch("side", expected=graph.m1)
    assert repo.branches()["side"] == graph.s1
    repo.delete_branch("side", expected=graph.s1)
    assert "side" not in repo.branches()
    repo.create_branch("other", graph.m2)
    repo.delete_branch("other")
    assert repo.branches() == {"main": graph.m3}
    with pytest.raises(NotFound):
        repo.delete_branch("other")
    # The objects of a deleted branch stay (and can be reached by id).
    assert repo.resolve(graph.s1) == graph.s1


def test_default_branch_of_a_repository(store: Store) -> None:
    repo = store.create_repository("trunked", default_branch="trunk")
    oid = repo.commit("trunk", {"f": b"x"}, message="m\n", author=sig(0))
    assert repo.branches() == {"trunk": oid}
    assert repo.resolve("HEAD") == oid
    with pytest.raises(InvalidInput):
        repo.delete_branch("trunk")
    # A branch other than the default cannot be born by commit().
    with pytest.raises(NotFound):
        repo.commit("main", {"f": b"y"}, message="m\n", author=sig(1))


# -- tags -------------------------------------------------------------------------------


def tag_text(target: str, kind: str, name: str, tagger: Signature, message: str) -> bytes:
    who = f"{tagger.name} <{tagger.email}> {tagger.time} {format_offset(tagger.offset)}".encode()
    return (
        f"object {target}\ntype {kind}\ntag {name}\n".encode()
        + b"tagger "
        + who
        + b"\n\n"
        + message.encode()
    )


def test_lightweight_tag(repo: Repository, graph: Graph) -> None:
    assert repo.create_tag("v1", graph.m1) == graph.m1
    assert repo.create_tag("head") == graph.m3
    assert repo.tags() == {"v1": graph.m1, "head": graph.m3}
    assert repo.resolve("v1") == graph.m1
    assert repo.resolve("refs/tags/v1") == graph.m1


def test_annotated_tag_is_identical_to_git_mktag(
    repo: Repository, graph: Graph, tmp_path: Path
) -> None:
    tagger = sig(30)
    message = "Release 1.0\n\nWith notes, ünïcode and 'quotes'.\n"
    tag_id = repo.create_tag("v1.0", graph.m2, message=message, tagger=tagger)
    assert is_hex(tag_id)
    assert repo.tags() == {"v1.0": tag_id}
    assert repo.resolve("v1.0") == graph.m2  # peeled where a commit is needed
    expected = tag_text(graph.m2, "commit", "v1.0", tagger, message)
    assert repo.get_object(tag_id) == ("tag", expected)

    dest = export_repository(repo, tmp_path / "export.git")
    assert git(dest, "mktag", input=expected).decode().strip() == tag_id
    assert git(dest, "cat-file", "tag", tag_id) == expected
    assert git(dest, "rev-parse", "v1.0^{commit}").decode().strip() == graph.m2
    git(dest, "fsck", "--strict", "--no-dangling", "--no-progress")


def test_tag_of_a_tag(repo: Repository, graph: Graph, tmp_path: Path) -> None:
    inner = repo.create_tag("v2", graph.m3, message="inner\n", tagger=sig(40))
    outer = repo.create_tag("v2-signed", "v2", message="outer\n", tagger=sig(41))
    assert repo.get_object(outer) == (
        "tag",
        tag_text(inner, "tag", "v2-signed", sig(41), "outer\n"),
    )
    assert repo.resolve("v2-signed") == graph.m3

    dest = export_repository(repo, tmp_path / "export.git")
    assert git(dest, "cat-file", "-t", outer).strip() == b"tag"
    mktag = git(dest, "mktag", input=tag_text(inner, "tag", "v2-signed", sig(41), "outer\n"))
    assert mktag.decode().strip() == outer
    assert git(dest, "rev-parse", "v2-signed^{commit}").decode().strip() == graph.m3
    git(dest, "fsck", "--strict", "--no-dangling", "--no-progress")


def test_annotated_tag_without_tagger_uses_committer_identity(
    repo: Repository, graph: Graph
) -> None:
    tag_id = repo.create_tag("auto", graph.m1, message="auto\n")
    kind, data = repo.get_object(tag_id)
    assert kind == "tag"
    assert b"\ntagger Ada Lovelace <ada@example.com> " in data
    assert data.endswith(b"\n\nauto\n")


def test_create_tag_existing_name_and_delete(repo: Repository, graph: Graph) -> None:
    repo.create_tag("v1", graph.m1)
    with pytest.raises(AlreadyExists):
        repo.create_tag("v1", graph.m2)
    with pytest.raises(AlreadyExists):
        repo.create_tag("v1", graph.m2, message="again\n", tagger=sig(5))
    assert repo.tags() == {"v1": graph.m1}
    repo.delete_tag("v1")
    assert repo.tags() == {}
    with pytest.raises(NotFound):
        repo.delete_tag("v1")
    with pytest.raises(NotFound):
        repo.resolve("v1")
    # The name is free again.
    assert repo.create_tag("v1", graph.m2) == graph.m2


def test_refs_match_git_show_ref(repo: Repository, graph: Graph, tmp_path: Path) -> None:
    annotated = repo.create_tag("v1", graph.m1, message="m\n", tagger=sig(9))
    repo.create_tag("light", graph.s1)
    dest = export_repository(repo, tmp_path / "export.git")
    shown: dict[str, str] = {}
    for line in git(dest, "show-ref").decode().splitlines():
        oid, ref = line.split(" ", 1)
        shown[ref] = oid
    assert shown == {
        "refs/heads/main": graph.m3,
        "refs/heads/side": graph.s1,
        "refs/tags/v1": annotated,
        "refs/tags/light": graph.s1,
    }


# -- reflog -----------------------------------------------------------------------------


def test_reflog_records_every_move_newest_first(repo: Repository, graph: Graph) -> None:
    repo.create_branch("topic", graph.m1)
    repo.move_branch("topic", graph.m2)
    t1 = repo.commit("topic", {"t": b"t"}, message="topic work\n", author=sig(10))
    repo.move_branch("topic", graph.s1, force=True)
    repo.delete_branch("topic")

    log = repo.reflog("topic")
    assert [(e.old, e.new) for e in log] == [
        (graph.s1, None),
        (t1, graph.s1),
        (graph.m2, t1),
        (graph.m1, graph.m2),
        (None, graph.m1),
    ]
    messages = [e.message for e in log]
    assert messages[0] == "branch: deleted"
    assert "forced-update" in messages[1]
    assert messages[2] == "commit: topic work"
    assert "fast-forward" in messages[3]
    assert messages[4].startswith("branch: Created from")
    assert all(isinstance(e.time, float) and e.time > 0 for e in log)
    assert all(is_hex(x) for e in log for x in (e.old, e.new) if x is not None)
    # The full ref name gives the same log.
    assert repo.reflog("refs/heads/topic") == log


def test_reflog_of_default_branch_and_head(repo: Repository, graph: Graph) -> None:
    log = repo.reflog("main")
    assert [(e.old, e.new) for e in log] == [
        (graph.m2, graph.m3),
        (graph.m1, graph.m2),
        (None, graph.m1),
    ]
    assert [e.message for e in log] == ["commit: three", "commit: two", "commit (initial): one"]
    assert repo.reflog("HEAD") == log


def test_reflog_undoes_a_forced_move(repo: Repository, graph: Graph) -> None:
    lost = repo.commit("side", {"h": b"precious"}, message="precious\n", author=sig(11))
    repo.move_branch("side", graph.m3, force=True)
    assert repo.branches()["side"] == graph.m3
    forced = repo.reflog("side")[0]
    assert forced.new == graph.m3
    assert forced.old == lost
    # The old id is not an ancestor of the new head: restoring it is itself forced.
    with pytest.raises(RefConflict):
        repo.move_branch("side", forced.old)
    assert forced.old is not None
    repo.move_branch("side", forced.old, expected=graph.m3, force=True)
    assert repo.branches()["side"] == lost
    assert repo.read("side", "h") == b"precious"
    assert [(e.old, e.new) for e in repo.reflog("side")[:2]] == [
        (graph.m3, lost),
        (lost, graph.m3),
    ]


def test_reflog_of_tags_and_unknown_refs(repo: Repository, graph: Graph) -> None:
    repo.create_tag("v1", graph.m1)
    repo.delete_tag("v1")
    assert [(e.old, e.new) for e in repo.reflog("v1")] == [(graph.m1, None), (None, graph.m1)]
    assert repo.reflog("refs/tags/v1")[1].message == "tag: v1"
    with pytest.raises(NotFound):
        repo.reflog("never-existed")
    with pytest.raises(NotFound):
        repo.reflog("refs/heads/never-existed")


def test_failed_moves_leave_no_reflog_entry(repo: Repository, graph: Graph) -> None:
    before = repo.reflog("side")
    with pytest.raises(RefConflict):
        repo.move_branch("side", graph.m3)
    with pytest.raises(RefConflict):
        repo.move_branch("side", graph.m3, expected=graph.m1, force=True)
    with pytest.raises(RefConflict):
        repo.delete_branch("side", expected=graph.m1)
    repo.move_branch("side", graph.s1)  # already there: not a move
    assert repo.reflog("side") == before


def test_ids_are_lowercase_hex(repo: Repository, graph: Graph) -> None:
    tag = repo.create_tag("t", graph.m2, message="m\n", tagger=sig(3))
    values = [
        *vars(graph).values(),
        tag,
        repo.create_branch("b"),
        repo.move_branch("b", graph.s1, force=True),
        *repo.branches().values(),
        *repo.tags().values(),
        repo.resolve(graph.m1[:12]),
        repo.create_tag("light", graph.m1[:8]),
    ]
    assert all(is_hex(v) for v in values), values
