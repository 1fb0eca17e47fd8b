"""Clones served from a kept pack (govc_db.interop.packcache) with the real ``git`` client
against a uvicorn server on a loopback port, on SQLite and PostgreSQL: the same objects as
a clone built from scratch, the objects committed since added, never an object the clone
could not reach, no object twice (checked by git's strict index-pack), and the pack
rebuilt when the history has outgrown it."""

from __future__ import annotations

from pathlib import Path

from _http_server import serving_url
from interop_git import all_objects, fsck, git, refs_of

from govc_db import Signature, Store
from govc_db.interop.packcache import REBUILD_RATIO, PackCache
from govc_db.interop.smart_http import make_git_app

SIG = Signature("Ada", "ada@example.com", 1_700_000_000, 60)


def _history(store: Store, commits: int) -> None:
    repo = store.create_repository("demo")
    for k in range(commits):
        files = {f"src/f{k % 7}.txt": b"line %d\n" % k * 40, f"docs/{k % 3}.md": b"doc %d\n" % k}
        repo.commit("main", files, message=f"c{k}\n", author=SIG)
    repo.create_tag("v1", "main~2", message="one\n", tagger=SIG)


def _clone(url: str, dest: Path) -> Path:
    # transfer.fsckObjects makes index-pack strict: an object sent twice is an error.
    git(dest.parent, "clone", "-q", "--bare", "-c", "transfer.fsckObjects=true", url, str(dest))
    return dest


def _sent(clone: Path) -> set[str]:
    """Every object the clone received (reachable or not)."""
    out = git(clone, "cat-file", "--batch-all-objects", "--batch-check=%(objectname)")
    return set(out.split())


def _check(store: Store, clone: Path) -> None:
    repo = store.repository("demo")
    expected = {f"refs/heads/{k}": v for k, v in repo.branches().items()} | {
        f"refs/tags/{k}": v for k, v in repo.tags().items()
    }
    assert refs_of(clone) == expected
    assert fsck(clone)[0] == 0
    assert _sent(clone) == all_objects(clone)  # nothing it cannot reach


def test_a_second_clone_is_served_from_the_kept_pack(store: Store, tmp_path: Path) -> None:
    _history(store, 12)
    cache = PackCache(64 * 1024 * 1024)
    with serving_url(make_git_app(store, pack_cache=cache), "/demo.git") as url:
        first = _clone(url, tmp_path / "a")
        assert cache.stats()["parts"] == 1 and cache.stats()["misses"] == 1
        second = _clone(url, tmp_path / "b")
        assert cache.stats()["hits"] == 1
        # Shallow clones and fetches are planned as before, the kept pack untouched.
        shallow = tmp_path / "s"
        git(tmp_path, "clone", "-q", "--bare", "--depth", "1", url, str(shallow))
        assert git(shallow, "rev-list", "--count", "main").strip() == "1"
        assert fsck(shallow)[0] == 0
        repo = store.repository("demo")
        new = repo.commit("main", {"late.txt": b"late\n"}, message="late\n", author=SIG)
        git(first, "fetch", "-q", url, "main:main")
        assert git(first, "rev-parse", "main").strip() == new
        assert cache.stats() | {"bytes": 0} == {"parts": 1, "bytes": 0, "hits": 1, "misses": 1}
    for clone in (first, second):
        assert fsck(clone)[0] == 0
        assert _sent(clone) == all_objects(clone)
    assert _sent(first) == _sent(second) | all_objects(first)
    packs = [sorted((c / "objects" / "pack").glob("*.pack")) for c in (first, second)]
    assert packs[0][0].read_bytes() == packs[1][0].read_bytes()


def test_objects_committed_since_are_added_once(store: Store, tmp_path: Path) -> None:
    _history(store, 12)
    cache = PackCache(64 * 1024 * 1024)
    with serving_url(make_git_app(store, pack_cache=cache), "/demo.git") as url:
        _clone(url, tmp_path / "a")
        repo = store.repository("demo")
        repo.commit(
            "main", {"src/f1.txt": b"changed\n", "new.txt": b"n\n"}, message="n\n", author=SIG
        )
        repo.commit("main", {"docs/0.md": b"doc 0\n"}, message="back to an old blob\n", author=SIG)
        repo.create_branch("side", "main~5")
        repo.create_tag("v0", "main~9", message="zero\n", tagger=SIG)  # on an old commit
        clone = _clone(url, tmp_path / "b")
        assert cache.stats()["hits"] == 1
        again = _clone(url, tmp_path / "c")  # the grown part, kept in its place
        assert cache.stats()["hits"] == 2 and cache.stats()["parts"] == 1
    _check(store, clone)
    assert git(clone, "rev-parse", "v0^{}").strip() == repo.resolve("main~9")
    packs = [sorted((c / "objects" / "pack").glob("*.pack"))[0] for c in (clone, again)]
    assert packs[0].read_bytes() == packs[1].read_bytes()


def test_a_kept_pack_the_wants_cannot_reach_is_not_used(store: Store, tmp_path: Path) -> None:
    _history(store, 12)
    repo = store.repository("demo")
    secret = repo.commit("main", {"secret.txt": b"s3cret\n"}, message="oops\n", author=SIG)
    cache = PackCache(64 * 1024 * 1024)
    with serving_url(make_git_app(store, pack_cache=cache), "/demo.git") as url:
        _clone(url, tmp_path / "a")
        repo.move_branch("main", "main~1", force=True)  # the secret is unreachable now
        clone = _clone(url, tmp_path / "b")
        assert cache.stats() | {"bytes": 0} == {"parts": 1, "bytes": 0, "hits": 0, "misses": 2}
        _check(store, clone)
        repo.delete_tag("v1")  # the kept pack holds v1's tag object
        again = _clone(url, tmp_path / "c")
        assert cache.stats()["hits"] == 0
    _check(store, again)
    assert secret not in _sent(clone)
    assert git(tmp_path / "a", "rev-parse", "v1").strip() not in _sent(again)


def test_the_kept_pack_is_rebuilt_when_outgrown(store: Store, tmp_path: Path) -> None:
    _history(store, 3)
    cache = PackCache(64 * 1024 * 1024)
    with serving_url(make_git_app(store, pack_cache=cache), "/demo.git") as url:
        _clone(url, tmp_path / "a")
        before = cache.stats()["bytes"]
        repo = store.repository("demo")
        for k in range(REBUILD_RATIO + 2):
            repo.commit("main", {f"more/{k}.txt": b"%d\n" % k}, message=f"m{k}\n", author=SIG)
        clone = _clone(url, tmp_path / "b")
        assert cache.stats()["misses"] == 2 and cache.stats()["bytes"] > before
        third = _clone(url, tmp_path / "c")
        assert cache.stats()["hits"] == 1
    _check(store, clone)
    _check(store, third)


def test_no_pack_is_kept_when_switched_off(store: Store, tmp_path: Path) -> None:
    _history(store, 4)
    cache = PackCache(0)
    with serving_url(make_git_app(store, pack_cache=cache), "/demo.git") as url:
        for name in ("a", "b"):
            _check(store, _clone(url, tmp_path / name))
    assert cache.stats() == {"parts": 0, "bytes": 0, "hits": 0, "misses": 0}
