"""Revision parsing against ``git rev-parse`` on the exported repository.

``resolve_object`` must equal ``git rev-parse --verify REV`` and ``Repository.resolve``
(``resolve_commit``) must equal ``git rev-parse --verify REV^{commit}``; where git fails,
we raise ``NotFound`` or ``InvalidInput``. Then hostile input, which must never get
further than ``InvalidInput``/``NotFound``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from _dag import Plan, build, git_rev_parse
from _export import export_repository

from govc_db import GovcError, InvalidInput, NotFound, Repository, Signature, Store
from govc_db.core.indexing import index_commit
from govc_db.core.revisions import resolve_commit, resolve_object
from govc_db.objects import Commit, ObjectId, Tag
from govc_db.objects.ids import object_header


def sig(minute: int) -> Signature:
    return Signature("Ada", "ada@example.com", 1_700_000_000 + 60 * minute, 60)


def core_resolve(repo: Repository, rev: object, *, commit: bool = False) -> str:
    """The core resolvers, called as the facade does (one unit)."""
    fn = resolve_commit if commit else resolve_object
    with repo._store.backend.unit(repo._id) as unit:
        oid = fn(unit.objects, unit.refs, unit.index, repo.default_branch, rev)  # type: ignore[arg-type]
    return oid.hex()


@dataclass
class World:
    repo: Repository
    ids: dict[str, str]
    exported: Path


@pytest.fixture
def world(store: Store, tmp_path: Path) -> World:
    """main: c1 - c2 - M(c2, s2) - O(M, t1, s1); side: c1 - s1 - s2; third: c1 - t1.

    Tags: v1 (lightweight, c1), v2 (annotated, M), v2b (annotated tag of v2), treetag
    (annotated, a tree), blobtag (lightweight, a blob). Clashing names: branch and tag
    "dup", ref refs/dup2 and tag "dup2", a branch named like an abbreviated id of c2, a
    branch named with c1's full id, and remote-tracking refs of "origin".
    """
    repo = store.create_repository("revs")
    ids: dict[str, str] = {}
    ids["c1"] = repo.commit("main", {"a": b"1", "d/x": b"1"}, message="c1\n", author=sig(0))
    ids["c2"] = repo.commit("main", {"a": b"2"}, message="c2\n", author=sig(1))
    repo.create_branch("side", ids["c1"])
    repo.create_branch("third", ids["c1"])
    ids["s1"] = repo.commit("side", {"b": b"1"}, message="s1\n", author=sig(2))
    ids["s2"] = repo.commit("side", {"b": b"2"}, message="s2\n", author=sig(3))
    ids["t1"] = repo.commit("third", {"t": b"1"}, message="t1\n", author=sig(4))
    plan = Plan()
    plan.add("M", ["c2", "s2"], {"a": b"2", "b": b"2", "d/x": b"1"}, 500)
    plan.add("O", ["M", "t1", "s1"], {"a": b"2", "b": b"2", "d/x": b"1", "t": b"1"}, 600)
    plan.refs = {"refs/heads/main": "O"}
    ids.update(build(repo, plan, known=ids))
    ids["v2"] = repo.create_tag("v2", ids["M"], message="v2\n", tagger=sig(9))
    ids["v2b"] = repo.create_tag("v2b", "v2", message="tag of a tag\n", tagger=sig(9))
    repo.create_tag("v1", ids["c1"])
    tree = repo.get_commit(ids["c1"]).tree
    ids["tree"] = tree
    ids["blob"] = next(e.oid for e in repo.tree(ids["c1"]) if e.name == "a")
    ids["treetag"] = repo.create_tag("treetag", tree, message="a tree\n", tagger=sig(9))
    repo.create_tag("blobtag", ids["blob"])
    repo.create_branch("dup", ids["c1"])
    repo.create_tag("dup", ids["c2"])
    repo.create_tag("dup2", ids["c1"])
    repo.create_branch(ids["c2"][:7], ids["s1"])
    repo.create_branch(ids["c1"], ids["s2"])
    with store.backend.unit(repo._id, write=True) as unit:
        raw = {k: ObjectId(bytes.fromhex(v)) for k, v in ids.items()}
        assert unit.refs.add_if_new("refs/dup2", raw["s1"], "test")
        assert unit.refs.add_if_new("refs/remotes/origin/main", raw["t1"], "test")
        assert unit.refs.add_if_new("refs/remotes/origin/HEAD", raw["c2"], "test")
    return World(repo, ids, export_repository(repo, tmp_path / "export.git"))


def revision_table(ids: dict[str, str]) -> list[str]:
    c1, c2, s1, m = ids["c1"], ids["c2"], ids["s1"], ids["M"]
    return [
        "HEAD", "main", "refs/heads/main", "heads/main", "side", "third",
        "HEAD~", "HEAD~1", "HEAD~2", "HEAD~3", "HEAD~4", "HEAD~0", "HEAD^0", "HEAD~01",
        "HEAD^", "HEAD^1", "HEAD^2", "HEAD^3", "HEAD^4", "HEAD^^", "HEAD^^^", "HEAD^^^^",
        "HEAD^2~1", "main~1^2", "main~1^2~1", "main~1^2^", "main^3^", "main^3^^",
        "main~1^2~2", "main^1^2^1^1", "HEAD~2147483647", "HEAD~2147483648",
        "HEAD^2147483648", "HEAD~99999999999999999999", "side~3", "third~1~0",
        "v1", "v1^0", "v1~0", "tags/v1", "refs/tags/v1", "v2", "v2^0", "v2~1", "v2^2",
        "v2b", "v2b^0", "v2b~1", "refs/tags/v2b", "treetag", "treetag^0", "blobtag",
        "blobtag~1", "dup", "refs/heads/dup", "heads/dup", "dup2", "refs/tags/dup2",
        "origin", "origin/main", "remotes/origin/main", "refs/remotes/origin/HEAD",
        c2[:7], c1, c1.upper(), c1[:4], c2[:5], s1[:12], s1[:12].upper(), m[:8] + "~1",
        m[:8] + "^2", ids["v2"], ids["v2"][:10], ids["tree"], ids["tree"] + "^0",
        ids["blob"], ids["blob"][:9], c1[:3], "nope", "nope~1", "refs/heads/nope",
        "heads/nope", "0000", "HEAD~1000",
    ]  # fmt: skip


def expected_failure(repo: Repository, rev: str, commit: bool) -> None:
    with pytest.raises((NotFound, InvalidInput)):
        if commit:
            repo.resolve(rev)
        else:
            core_resolve(repo, rev)


def test_revisions_match_git_rev_parse(world: World) -> None:
    repo, ids = world.repo, world.ids
    for rev in revision_table(ids):
        want = git_rev_parse(world.exported, rev)
        if want is None:
            expected_failure(repo, rev, commit=False)
        else:
            assert core_resolve(repo, rev) == want, rev
        want_commit = git_rev_parse(world.exported, rev + "^{commit}")
        if want_commit is None:
            expected_failure(repo, rev, commit=True)
        else:
            assert repo.resolve(rev) == want_commit, rev
            assert core_resolve(repo, rev, commit=True) == want_commit, rev


def test_lookup_order_and_peeling(world: World) -> None:
    repo, ids = world.repo, world.ids
    assert repo.resolve("HEAD") == ids["O"]
    assert repo.resolve("HEAD^2") == ids["t1"]
    assert repo.resolve("HEAD^3") == ids["s1"]
    assert repo.resolve("main~1^2~1") == ids["s1"]
    # refs/<name> before refs/tags/<name> before refs/heads/<name>.
    assert repo.resolve("dup") == ids["c2"]
    assert repo.resolve("dup2") == ids["s1"]
    # A ref beats an abbreviated id; a full id beats a ref of that name.
    assert repo.resolve(ids["c2"][:7]) == ids["s1"]
    assert repo.resolve(ids["c1"]) == ids["c1"]
    # Annotated tags: the tag object unpeeled, the commit where one is needed.
    assert core_resolve(repo, "v2") == ids["v2"]
    assert core_resolve(repo, "v2b") == ids["v2b"]
    assert repo.resolve("v2b") == ids["M"]
    assert core_resolve(repo, "v2b^0") == ids["M"]
    assert repo.resolve("v2b~1") == ids["c2"]
    assert core_resolve(repo, "treetag") == ids["treetag"]
    assert core_resolve(repo, ids["tree"]) == ids["tree"]
    for rev in ("treetag", "blobtag", ids["tree"], ids["blob"], "treetag^0", "blobtag~1"):
        with pytest.raises(InvalidInput):
            repo.resolve(rev)
    for rev in ("HEAD^4", "HEAD~4", "side~3", "nope", "HEAD~2147483648", "v1^1", "0000"):
        with pytest.raises(NotFound):
            repo.resolve(rev)


def test_head_and_names_in_an_empty_repository(store: Store) -> None:
    repo = store.create_repository("empty")
    for rev in ("HEAD", "main", "HEAD~1", "refs/heads/main", "abcd", "a" * 40):
        with pytest.raises(NotFound):
            repo.resolve(rev)


def test_ids_of_another_repository_are_not_found(store: Store) -> None:
    mine = store.create_repository("mine")
    other = store.create_repository("other")
    mine.commit("main", {"a": b"mine"}, message="m\n", author=sig(0))
    theirs = other.commit("main", {"a": b"theirs"}, message="t\n", author=sig(0))
    for rev in (theirs, theirs[:8], theirs + "~0"):
        with pytest.raises(NotFound):
            mine.resolve(rev)
    with pytest.raises(NotFound):
        core_resolve(mine, theirs)


# -- abbreviated ids that collide ------------------------------------------------------------


def colliding(type_name: bytes, head: bytes, prefix: bytes) -> bytes:
    """``head`` plus a counter line such that the object's id starts with ``prefix``."""
    size = len(head) + 9
    base = hashlib.sha1(object_header(type_name, size) + head, usedforsecurity=False)
    for i in range(10**8):
        tail = b"%08d\n" % i
        h = base.copy()
        h.update(tail)
        if h.digest().startswith(prefix):
            return head + tail
    raise AssertionError("no collision found")


def test_ambiguous_abbreviations_prefer_commits_where_git_does(
    store: Store, tmp_path: Path
) -> None:
    repo = store.create_repository("abbrev")
    c = repo.commit("main", {"a": b"1"}, message="c\n", author=sig(0))
    c2 = repo.commit("main", {"a": b"2"}, message="c2\n", author=sig(1))
    prefix = bytes.fromhex(c[:4])
    tag_prefix = bytes.fromhex(c2[:4])
    with store.backend.unit(repo._id, write=True) as unit:
        # A blob sharing c's first 4 hex digits.
        unit.objects.put(b"blob", colliding(b"blob", b"blob ", prefix))
        # A blob and a tag of c sharing c2's first 4 hex digits... and c2 itself.
        unit.objects.put(b"blob", colliding(b"blob", b"other blob ", tag_prefix))
        tag = Tag(ObjectId(bytes.fromhex(c)), b"commit", b"t", sig(2), b"")
        tag_raw = colliding(b"tag", tag.serialize(), tag_prefix)
        tag_id = unit.objects.put(b"tag", tag_raw).hex()
    exported = export_repository(repo, tmp_path / "one.git")
    short = c[:4]
    # Anything may match: ambiguous. Where a commit is needed: only c qualifies.
    assert git_rev_parse(exported, short) is None
    with pytest.raises(InvalidInput):
        core_resolve(repo, short)
    assert repo.resolve(short) == c == git_rev_parse(exported, short + "^{commit}")
    assert core_resolve(repo, short + "~0") == c == git_rev_parse(exported, short + "~0")
    # c2 and a tag of c both peel to commits: ambiguous even where a commit is needed.
    assert tag_id[:4] == c2[:4]
    assert git_rev_parse(exported, c2[:4] + "^{commit}") is None
    with pytest.raises(InvalidInput):
        repo.resolve(c2[:4])
    assert repo.resolve(tag_id[:12]) == c  # long enough to be unique: the tag, peeled

    # A second commit with c's prefix: ambiguous for commits too.
    with store.backend.unit(repo._id, write=True) as unit:
        template = Commit(ObjectId(bytes.fromhex(repo.get_commit(c).tree)), (), sig(5), sig(5), b"")
        message = colliding(b"commit", template.serialize(), prefix)[len(template.serialize()) :]
        twin = Commit(template.tree, (), sig(5), sig(5), message)
        twin_id = unit.objects.put(b"commit", twin.serialize())
        index_commit(unit.objects, unit.index, twin_id, twin)
    exported = export_repository(repo, tmp_path / "two.git")
    assert twin_id.hex()[:4] == short
    assert git_rev_parse(exported, short + "^{commit}") is None
    with pytest.raises(InvalidInput):
        repo.resolve(short)
    with pytest.raises(InvalidInput):
        repo.resolve(short + "~0")
    assert repo.resolve(c[:12]) == c


# -- hostile input -----------------------------------------------------------------------------

MALFORMED = [
    "", " ", "main ", " main", "\tmain", "ma in", "main\n", "main\0", "ma\x7fin", "~", "~1",
    "^", "^^x", "^main", "main~x", "main^^x", "main~1x", "main~-1", "main^-1", "main^+1",
    "a..b", "main..side", "main...side", "@{1}", "main@{1}", "main@{yesterday}", "@{-1}", "@",
    "main^{commit}", "main^{}", "main^{/msg}", "main:a", ":a", ":/msg", "-main", "--all",
    "/main", "main/", "refs/heads/", "refs//heads", "main.lock", ".main", "a/.b", "*", "main?",
    "[main]", "main\\", "\udcff", "x" * 1100, "main~1" + "~" * 50 + "x", "HEAD@{0}",
]  # fmt: skip
NOT_FOUND = [
    "nope", "Main", "head", "refs/heads/nope", "x" * 1000, "main~" + "9" * 5000,
    "main^" + "0" * 5000 + "5", "main" + "^2" * 2000, "main" + "~" * 5000, "déjà-vu",
    "deadbeef", "a" * 40, "A" * 40, "0" * 39,
]  # fmt: skip


def hostile_world(store: Store) -> Repository:
    repo = store.create_repository("hostile")
    repo.commit("main", {"a": b"1"}, message="m\n", author=sig(0))
    repo.create_branch("side")
    return repo


@pytest.mark.parametrize("how", ["api", "core", "core-commit"])
def test_hostile_revisions_are_rejected_cleanly(store: Store, how: str) -> None:
    repo = hostile_world(store)
    head = repo.resolve("main")

    def attempt(rev: object) -> None:
        if how == "api":
            repo.resolve(rev)  # type: ignore[arg-type]
        else:
            core_resolve(repo, rev, commit=how == "core-commit")

    for rev in [*MALFORMED, None, b"main", 1, ["main"], 1.5]:
        with pytest.raises(InvalidInput) as info:
            attempt(rev)
        assert isinstance(info.value, GovcError)
    for rev in NOT_FOUND:
        with pytest.raises(NotFound):
            attempt(rev)
    # Nothing broke: the store still answers.
    assert repo.resolve("main") == head
    assert repo.resolve("main~0") == head


def test_hostile_revisions_through_other_calls(store: Store) -> None:
    repo = hostile_world(store)
    for rev in ("ma in", "a..b", "\0", "main^{}"):
        with pytest.raises(InvalidInput):
            list(repo.log(rev))
        with pytest.raises(InvalidInput):
            repo.merge_base(rev, "main")
        with pytest.raises(InvalidInput):
            repo.create_branch("new", rev)
        with pytest.raises(InvalidInput):
            repo.read(rev, "a")
    with pytest.raises(NotFound):
        repo.diff("main", "main~1")
    assert repo.branches().keys() == {"main", "side"}


def test_a_short_name_is_looked_up_in_one_statement(store: Store) -> None:
    """In a write unit (refs not cached), git's candidates for a short name
    (refs/<n>, refs/tags/<n>, refs/heads/<n>, ...) are one lookup, and git's order
    still decides: a tag shadows a branch of the same name."""
    import sqlalchemy as sa

    repo = store.create_repository("short")
    first = repo.commit("main", {"a": b"1"}, author=sig(1), message="one\n")
    second = repo.commit("main", {"a": b"2"}, author=sig(2), message="two\n")
    repo.create_branch("topic", first)
    repo.create_branch("twin", second)
    repo.create_tag("twin", first)
    ref_reads: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "FROM govc_refs" in statement and statement.lstrip().upper().startswith("SELECT"):
            ref_reads.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", count)
    try:
        # create_branch resolves its start point inside its write unit.
        assert repo.create_branch("from-topic", "topic") == first
        lookups = len(ref_reads)
        assert repo.create_branch("from-twin", "twin") == first  # the tag wins, as in git
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", count)
    # Point lookups only (the range scan is create_branch's check for clashing names).
    assert len([s for s in ref_reads[:lookups] if ">=" not in s]) == 1
    assert repo.branches()["from-twin"] == first
