"""The text merge (``merge_text``) byte for byte against the real git: each example is
committed as one file on two branches of a throwaway git repository and merged with
``git merge-tree --write-tree``; the merged blob (markers included) must be identical,
and so must the clean/conflicted answer. Covers hypothesis-drawn edits, CRLF files,
missing final newlines, and the Myers fallback of xdiff's histogram diff (every common
line repeated more than 64 times). Also the similarity score against ``git diff -M``.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from _git import GitRepo
from hypothesis import given, settings
from hypothesis import strategies as st

import govc_db.core.merge_text as merge_text_module
from govc_db.core.merge_text import merge_text
from govc_db.core.renames import MAX_SCORE, similarity

WORDS = tuple(b"%s\n" % w for w in (b"a", b"b", b"c", b"{", b"}", b"", b"return x;"))


class Oracle:
    """One git repository; each merge is a base commit and two children."""

    def __init__(self, root: Path) -> None:
        self.git = GitRepo(root)

    def _commit(self, data: bytes, parent: str | None) -> str:
        blob = self.git.hash_object("blob", data)
        tree = self.git.mktree([("100644", "blob", blob, b"f")])
        args = ["commit-tree", tree, "-m", "m"] + (["-p", parent] if parent else [])
        return self.git.run_text(*args)

    def merge(self, base: bytes, ours: bytes, theirs: bytes) -> tuple[bytes, bool]:
        b = self._commit(base, None)
        self.git.run("branch", "-f", "OURS", self._commit(ours, b))
        self.git.run("branch", "-f", "THEIRS", self._commit(theirs, b))
        proc = self.git.run_raw("merge-tree", "--write-tree", "OURS", "THEIRS")
        assert proc.returncode in (0, 1), proc.stderr
        tree = proc.stdout.split(b"\n", 1)[0].decode()
        return self.git.run("cat-file", "blob", f"{tree}:f"), proc.returncode == 0


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> Oracle:
    return Oracle(tmp_path_factory.mktemp("merge-text"))


def _check(oracle: Oracle, base: bytes, ours: bytes, theirs: bytes) -> None:
    if len({base, ours, theirs}) < 3:
        return  # git settles these without a text merge
    want, clean = oracle.merge(base, ours, theirs)
    got = merge_text(base, ours, theirs, ours_label="OURS", theirs_label="THEIRS")
    assert (got.data, got.conflicts == 0) == (want, clean)


edits = st.lists(st.sampled_from(WORDS), min_size=1, max_size=25)


@st.composite
def triples(draw: st.DrawFn) -> tuple[bytes, bytes, bytes]:
    base = draw(edits)

    def mutate() -> list[bytes]:
        lines = list(base)
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(lines)))
            lines[i : i + draw(st.integers(0, 2))] = draw(
                st.lists(st.sampled_from(WORDS), max_size=3)
            )
        return lines

    ours, theirs = mutate(), mutate()
    tail = draw(st.booleans())
    b, o, t = b"".join(base), b"".join(ours), b"".join(theirs)
    return b, o.rstrip(b"\n") if tail else o, t


@settings(max_examples=150, deadline=None)
@given(triple=triples())
def test_generated_text_merges_equal_git(
    oracle: Oracle, triple: tuple[bytes, bytes, bytes]
) -> None:
    _check(oracle, *triple)


# Lines of a base whose lines are all distinct (the one-hunk shortcut's case), and
# edits drawn from its own lines and new ones, so both the shortcut and its refusals
# are reached.
DISTINCT = (*(b"line %d\n" % i for i in range(12)), b"", b"tail")


@st.composite
def distinct_triples(draw: st.DrawFn) -> tuple[list[bytes], list[bytes], list[bytes]]:
    base = draw(st.lists(st.sampled_from(DISTINCT[:12]), unique=True, max_size=12))

    def mutate() -> list[bytes]:
        lines = list(base)
        for _ in range(draw(st.integers(0, 2))):
            i = draw(st.integers(0, len(lines)))
            new = draw(st.lists(st.sampled_from(DISTINCT), max_size=3))
            lines[i : i + draw(st.integers(0, 3))] = new
        return lines

    return base, mutate(), mutate()


@settings(max_examples=600, deadline=None)
@given(triple=distinct_triples())
def test_one_hunk_shortcut_is_the_full_diff(
    triple: tuple[list[bytes], list[bytes], list[bytes]],
) -> None:
    a, b, _ = triple
    fast = merge_text_module._one_hunk(a, b)
    if fast is not None:
        assert fast == merge_text_module._diff_full(a, b)


@settings(max_examples=100, deadline=None)
@given(triple=distinct_triples())
def test_distinct_line_merges_equal_git(
    oracle: Oracle, triple: tuple[list[bytes], list[bytes], list[bytes]]
) -> None:
    _check(oracle, *(b"".join(lines) for lines in triple))


def test_one_hunk_shortcut_is_taken() -> None:
    a = [b"%d\n" % i for i in range(10)]
    assert merge_text_module._one_hunk(a, [*a[:3], b"x\n", *a[5:]]) == [(3, 3, 2, 1)]
    assert merge_text_module._one_hunk(a, [*a[:3], a[7], *a[5:]]) is None  # a line of a
    assert merge_text_module._one_hunk(a + a[:1], a) is None  # a repeated line


def test_crlf_and_final_newlines(oracle: Oracle) -> None:
    _check(oracle, b"1\r\n2\r\n3\r\n", b"1\r\nx\r\n3\r\n", b"1\r\ny\r\n3\r\n")
    _check(oracle, b"1\n2", b"1\n3", b"1\n4")
    _check(oracle, b"1\n2\n", b"0\n1\n2", b"1\n2\n3\n")
    _check(oracle, b"a\r\nb\n", b"a\r\nc\n", b"a\r\nd\n")


def test_myers_fallback_equals_git(oracle: Oracle, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = merge_text_module._myers

    def spy(*args: object) -> None:
        calls.append(1)
        real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(merge_text_module, "_myers", spy)
    rng = random.Random(7)
    for _ in range(25):
        base = [b"x\n"] * rng.randint(65, 90) + [b"y\n"] * rng.randint(0, 2)
        rng.shuffle(base)

        def mutate(base: list[bytes] = base) -> bytes:
            lines = list(base)
            for _ in range(rng.randint(1, 4)):
                i = rng.randrange(len(lines))
                lines[i : i + rng.randint(0, 1)] = [rng.choice((b"a\n", b"b\n", b"x\n"))]
            return b"".join(lines)

        _check(oracle, b"".join(base), mutate(), mutate())
    assert calls, "no example reached the Myers fallback"


def test_wider_markers_for_inner_merges() -> None:
    got = merge_text(b"1\n", b"2\n", b"3\n", ours_label="a", theirs_label="b", marker_size=9)
    assert got.data == b"<<<<<<<<< a\n2\n=========\n3\n>>>>>>>>> b\n"
    assert got.conflicts == 1


def test_similarity_against_git(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path)
    rng = random.Random(3)
    base = b"".join(b"line %d %s\n" % (i, rng.choice((b"x", b"yy", b"zzz"))) for i in range(60))
    for keep in (60, 45, 35, 31, 29, 20):
        new = base.splitlines(keepends=True)[:keep]
        new += [b"new %d\n" % i for i in range(60 - keep)]
        score = similarity(base, b"".join(new))
        a = repo.hash_object("blob", base)
        b = repo.hash_object("blob", b"".join(new))
        t1 = repo.mktree([("100644", "blob", a, b"old")])
        t2 = repo.mktree([("100644", "blob", b, b"new")])
        out = repo.run_text("diff-tree", "-r", "-M01", "--name-status", t1, t2)
        status = out.split("\t")[0]
        if status.startswith("R"):
            assert int(status[1:]) == score * 100 // MAX_SCORE
        else:
            assert score < MAX_SCORE // 100
