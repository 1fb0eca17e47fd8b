"""The HTTP fast path (govc_db.http.fast) against a real uvicorn server, on SQLite and
PostgreSQL: remembered answers are sent without a thread hop or a database trip, and a
branch that moved -- through the API, another Store of this process, or another
process -- is never answered from before the move (no stale body, no stale 304)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from _http_server import serving

import govc_db
from govc_db import Settings, Signature, Store
from govc_db.http import create_app
from govc_db.http.auth import create_token
from govc_db.types import RefUpdated

SIG = Signature("Ada", "ada@example.com", 1_700_000_000, 60)
BIG = b"line of text\n" * 400
ROOT = Path(__file__).resolve().parents[1]
RAW = "/api/v1/repos/demo/raw/main/f.txt"


class Svc:
    def __init__(self, store: Store, base: str) -> None:
        self.store = store
        self.client = httpx.Client(base_url=base, timeout=30)
        self.token = create_token(store, repository="demo", write=True)
        self.repo = store.repository("demo")

    def get(self, url: str, token: str | None = None, **headers: str) -> httpx.Response:
        return self.client.get(
            url, headers={"Authorization": f"Bearer {token or self.token}"} | headers
        )

    def answered(self) -> int:
        return int(self.store.metrics()["http_fast"]["answered"])


@pytest.fixture
def make_svc(db_url: str) -> Iterator[Callable[..., Svc]]:
    opened: list[Any] = []

    def make(settings: Settings | None = None, **options: Any) -> Svc:
        with govc_db.open(db_url) as seeding:
            if "demo" not in seeding.list_repositories():
                seeding.create_repository("demo").commit(
                    "main", {"f.txt": b"one\n", "big.txt": BIG}, message="m\n", author=SIG
                )
        store = govc_db.open(db_url, settings=settings or Settings())
        # PostgreSQL: refs are cached (and remembered here) once the NOTIFY listener is up.
        deadline = time.monotonic() + 30
        while store.cache is not None and not store.cache.mutable_enabled():
            assert time.monotonic() < deadline, "the listener did not connect"
            time.sleep(0.01)
        # Handles are reused for repo_ttl seconds; past it a request goes the slow way
        # once (to look the repository up again): keep them for the whole test.
        cm = serving(create_app(store, **{"repo_ttl": 600.0, **options}))
        base, _ = cm.__enter__()
        svc = Svc(store, base)
        opened.append((cm, store, svc))
        return svc

    yield make
    for cm, store, svc in reversed(opened):
        svc.client.close()
        cm.__exit__(None, None, None)
        store.close()


@pytest.fixture
def svc(make_svc: Callable[..., Svc]) -> Svc:
    return make_svc()


def _post_commit(svc: Svc, content: bytes) -> str:
    body = {
        "branch": "main",
        "message": "m\n",
        "author": {"name": "a", "email": "a@b"},
        "changes": {"f.txt": {"content": base64.b64encode(content).decode()}},
    }
    r = svc.client.post(
        "/api/v1/repos/demo/commits", json=body, headers={"Authorization": f"Bearer {svc.token}"}
    )
    assert r.status_code == 201, r.text
    oid: str = r.json()["oid"]
    return oid


def _routes(head: str) -> list[str]:
    base = "/api/v1/repos/demo"
    return [
        RAW,
        f"{base}/tree/main/",
        f"{base}/commits/main",
        f"{base}/log?limit=5",
        f"{base}/log?rev=main&limit=5",
        f"{base}/raw/{head}/f.txt",
        f"{base}/commits/{head}",
    ]


def test_remembered_answers_skip_the_database(svc: Svc) -> None:
    head = svc.repo.resolve("main")
    first = {url: svc.get(url) for url in _routes(head)}
    assert all(r.status_code == 200 for r in first.values())
    before = svc.answered()
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    sa.event.listen(svc.store.engine, "before_cursor_execute", count)
    try:
        again = {url: svc.get(url) for url in _routes(head)}
        not_modified = {
            url: svc.get(url, **{"If-None-Match": r.headers["etag"]}) for url, r in first.items()
        }
    finally:
        sa.event.remove(svc.store.engine, "before_cursor_execute", count)
    assert statements == []
    assert svc.answered() - before == 2 * len(first)
    for url, r in first.items():
        assert again[url].content == r.content
        for name in ("etag", "cache-control", "content-type", "content-length"):
            assert again[url].headers[name] == r.headers[name], (url, name)
        assert not_modified[url].status_code == 304 and not_modified[url].content == b""
        assert not_modified[url].headers["etag"] == r.headers["etag"]
        assert not_modified[url].headers["cache-control"] == r.headers["cache-control"]
    pinned = first[f"/api/v1/repos/demo/raw/{head}/f.txt"]
    assert pinned.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert again[RAW].headers["cache-control"] == "no-cache"
    assert again[RAW].headers["accept-ranges"] == "bytes"


def test_a_commit_through_the_api_is_seen_at_once(svc: Svc) -> None:
    old = svc.get(RAW)
    assert svc.get(RAW).content == b"one\n"  # remembered
    tree = svc.get("/api/v1/repos/demo/tree/main/")
    log = svc.get("/api/v1/repos/demo/log?limit=5")
    oid = _post_commit(svc, b"two\n")
    new = svc.get(RAW, **{"If-None-Match": old.headers["etag"]})
    assert new.status_code == 200 and new.content == b"two\n"
    assert new.headers["etag"] != old.headers["etag"]
    assert svc.get("/api/v1/repos/demo/commits/main").json()["oid"] == oid
    assert svc.get("/api/v1/repos/demo/log?limit=5").json()["commits"][0]["oid"] == oid
    stale = svc.get("/api/v1/repos/demo/tree/main/", **{"If-None-Match": tree.headers["etag"]})
    assert stale.status_code == 200 and stale.headers["etag"] != tree.headers["etag"]
    assert log.json()["commits"][0]["oid"] != oid


def test_a_commit_through_another_store_of_this_process_is_seen_at_once(
    svc: Svc, db_url: str
) -> None:
    old = svc.get(RAW)
    assert svc.get(RAW).content == b"one\n"
    with govc_db.open(db_url) as other:
        other.repository("demo").commit("main", {"f.txt": b"other\n"}, message="o\n", author=SIG)
    r = svc.get(RAW, **{"If-None-Match": old.headers["etag"]})
    assert r.status_code == 200 and r.content == b"other\n"


_COMMIT_SCRIPT = """
import sys, govc_db
from govc_db import Signature
with govc_db.open(sys.argv[1]) as store:
    oid = store.repository("demo").commit(
        "main", {"f.txt": b"from another process\\n"}, message="p\\n",
        author=Signature("P", "p@x", 1_700_000_000, 0))
print(oid)
"""


def test_a_commit_by_another_process_is_seen(svc: Svc, db_url: str) -> None:
    old = svc.get(RAW)
    assert svc.get(RAW).content == b"one\n"
    moved = threading.Event()
    expected: list[str] = []

    def on_update(event: RefUpdated) -> None:
        if event.ref == "refs/heads/main" and event.new in expected:
            moved.set()

    sub = svc.store.subscribe(on_update, repository="demo")
    try:
        out = subprocess.run(
            [sys.executable, "-c", _COMMIT_SCRIPT, db_url],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            timeout=120,
        )
        oid = out.stdout.strip()
        expected.append(oid)
        if svc.store.dialect == "postgresql":
            # Across processes PostgreSQL announces the move by NOTIFY: once this Store
            # heard it (the event comes after the cache invalidation), nothing stale.
            head = svc.store.repository("demo").resolve("main")
            assert head == oid or moved.wait(30)
        # SQLite: PRAGMA data_version shows the other process's commit at once.
        r = svc.get(RAW, **{"If-None-Match": old.headers["etag"]})
        assert r.status_code == 200 and r.content == b"from another process\n"
        assert svc.get("/api/v1/repos/demo/commits/main").json()["oid"] == oid
    finally:
        sub.close()


def test_compressed_answers_from_the_fast_path(svc: Svc) -> None:
    url = "/api/v1/repos/demo/raw/main/big.txt"
    first = svc.get(url, **{"Accept-Encoding": "gzip"})
    svc.get(url)  # SQLite flushes the refs once per new pooled connection: settled now
    before = svc.answered()
    for _ in range(2):
        r = svc.client.get(
            url, headers={"Authorization": f"Bearer {svc.token}", "Accept-Encoding": "gzip"}
        )
        assert r.content == BIG  # httpx decodes it
        assert r.headers["content-encoding"] == "gzip"
        assert r.headers["etag"] == first.headers["etag"] and r.headers["etag"].startswith("W/")
        assert r.headers["vary"] == "Accept-Encoding"
    with svc.client.stream(
        "GET", url, headers={"Authorization": f"Bearer {svc.token}", "Accept-Encoding": "gzip"}
    ) as raw:
        body = b"".join(raw.iter_raw())
    assert zlib.decompress(body, 31) == BIG
    plain = svc.get(url, **{"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content == BIG
    assert svc.get(url, **{"If-None-Match": first.headers["etag"]}).status_code == 304
    assert svc.answered() - before == 5


def test_the_fast_path_applies_auth_and_the_rate_limit(
    make_svc: Callable[..., Svc], db_url: str
) -> None:
    with govc_db.open(db_url) as setup:
        setup.create_repository("elsewhere")
    svc = make_svc(Settings(rate_limit=0.01, rate_burst=8))
    other = create_token(svc.store, repository="elsewhere")
    assert svc.get(RAW).status_code == 200  # the slow path: a few operations' tokens
    assert svc.client.get(RAW).status_code == 401  # anonymous, not public
    assert svc.get(RAW, token=other).status_code == 403
    before = svc.answered()
    statuses = [svc.get(RAW).status_code for _ in range(8)]
    assert statuses[0] == 200 and 429 in statuses
    # One token per answer, then none left: every later answer is refused.
    assert statuses == sorted(statuses)
    assert svc.answered() - before == 8  # all of them answered by the fast path
    limited = svc.get(RAW)
    assert limited.json()["error"] == "RateLimited" and int(limited.headers["retry-after"]) >= 1
    assert svc.store.metrics()["ratelimit"]["limited"] >= 2


def test_public_read_on_the_fast_path(make_svc: Callable[..., Svc]) -> None:
    svc = make_svc(public_read=True)
    assert svc.client.get(RAW).content == b"one\n"
    before = svc.answered()
    assert svc.client.get(RAW).content == b"one\n"
    assert svc.answered() == before + 1


def test_fast_path_off(make_svc: Callable[..., Svc]) -> None:
    svc = make_svc(fast_path=False)
    assert svc.get(RAW).content == b"one\n"
    assert svc.get(RAW).content == b"one\n"
    assert "http_fast" not in svc.store.metrics()
    _post_commit(svc, b"two\n")
    assert svc.get(RAW).content == b"two\n"


def test_range_requests_are_not_answered_by_the_fast_path(svc: Svc) -> None:
    url = "/api/v1/repos/demo/raw/main/big.txt"
    svc.get(url)
    before = svc.answered()
    r = svc.get(url, Range="bytes=0-3")
    assert r.status_code == 206 and r.content == BIG[:4]
    assert svc.answered() == before


def test_answers_a_commit_did_not_change_carry_over(svc: Svc) -> None:
    svc.repo.commit("main", {"d/x.txt": b"x\n", "e/y.txt": b"y\n"}, message="m\n", author=SIG)
    base = "/api/v1/repos/demo"
    urls = [RAW, f"{base}/raw/main/big.txt", f"{base}/tree/main/d", f"{base}/tree/main/e"]
    before = {url: svc.get(url) for url in urls}
    root = svc.get(f"{base}/tree/main/")
    body = {
        "branch": "main",
        "message": "m\n",
        "author": {"name": "a", "email": "a@b"},
        "changes": {
            "f.txt": {"content": base64.b64encode(b"changed\n").decode()},
            "e/z.txt": {"content": base64.b64encode(b"z\n").decode()},
        },
    }
    r = svc.client.post(
        f"{base}/commits", json=body, headers={"Authorization": f"Bearer {svc.token}"}
    )
    assert r.status_code == 201
    assert svc.get(f"{base}/commits/main").json()["oid"] == r.json()["oid"]  # resolves main
    carried = svc.store.metrics()["http_fast"]["carried"]
    after = {url: svc.get(url) for url in urls}
    # Untouched: the same answers, from the parent's, by the fast path.
    for url in (f"{base}/raw/main/big.txt", f"{base}/tree/main/d"):
        assert after[url].content == before[url].content
        assert after[url].headers["etag"] == before[url].headers["etag"]
    assert svc.store.metrics()["http_fast"]["carried"] == carried + 2
    # Touched: computed again.
    assert after[RAW].content == b"changed\n"
    assert [e["name"] for e in after[f"{base}/tree/main/e"].json()] == ["y.txt", "z.txt"]
    new_root = svc.get(f"{base}/tree/main/", **{"If-None-Match": root.headers["etag"]})
    assert new_root.status_code == 200
    # Commits made elsewhere are not known: nothing is carried across them.
    svc.repo.commit("main", {"d/x.txt": b"x2\n"}, message="m\n", author=SIG)
    assert svc.get(f"{base}/raw/main/d/x.txt").content == b"x2\n"
    assert (
        svc.get(f"{base}/tree/main/d").json()[0]["oid"]
        != before[f"{base}/tree/main/d"].json()[0]["oid"]
    )


def test_an_unknown_revision_is_one_error(svc: Svc) -> None:
    assert svc.get(RAW).status_code == 200  # the repository handle is live
    errors_before = svc.store.metrics()["metrics"]["errors"]
    r = svc.get("/api/v1/repos/demo/raw/no-such-branch/f.txt")
    assert r.status_code == 404 and r.json()["error"] == "NotFound"
    bad = svc.get("/api/v1/repos/demo/commits/main~999")
    assert bad.status_code == 404 and set(bad.json()) == {"error", "message"}
    # Each asked the library once (not once by the fast path and again by the slow one).
    assert svc.store.metrics()["metrics"]["errors"] == errors_before + 2


def test_a_commit_in_another_repository_keeps_remembered_revisions(svc: Svc) -> None:
    """A revision remembered for one repository stays usable after a commit in another
    (PostgreSQL: the invalidation names the repository); a commit in this one makes it
    unusable at once. SQLite's data_version cannot tell repositories apart: there any
    commit makes the next request resolve again -- either way never a stale answer."""
    other = svc.store.create_repository("other")
    other.commit("main", {"x.txt": b"x\n"}, message="x\n", author=SIG)
    first = svc.get(RAW)
    assert svc.get(RAW).content == b"one\n"  # remembered now
    stats = svc.store.metrics()["http_fast"]
    resolves = stats["resolves"]
    hits = stats["revision_hits"]
    other.commit("main", {"x.txt": b"y\n"}, message="y\n", author=SIG)
    again = svc.get(RAW, **{"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    stats = svc.store.metrics()["http_fast"]
    if svc.store.dialect == "postgresql":
        assert stats["resolves"] == resolves  # no resolution: the memo still held
        assert stats["revision_hits"] == hits + 1
    # A commit in this repository: the next request resolves again and sees it.
    _post_commit(svc, b"two\n")
    new = svc.get(RAW, **{"If-None-Match": first.headers["etag"]})
    assert new.status_code == 200 and new.content == b"two\n"


def test_derivations_learn_parents_from_ref_moves() -> None:
    """A commit noted by the service gets its parent from its own ref move (so commits
    written together in one group all carry answers over); a commit a ref was moved to
    from two different places gets none."""
    from govc_db.http.caching import Answer, Derivations, ResponseCache
    from govc_db.types import RefUpdated

    a, b, c, x = ("a" * 40, "b" * 40, "c" * 40, "f" * 40)
    derived = Derivations()
    cache = ResponseCache()
    answer = Answer('"e"', "text/plain", b"same\n", raw=True)
    cache.put(("raw", 1, a, "keep.txt"), answer, 100)
    for old, new in ((a, b), (b, c)):
        derived.moved(RefUpdated("r", "refs/heads/main", old, new))
    derived.note(1, b, frozenset({"b.txt"}), ("r", "refs/heads/main"))
    derived.note(1, c, frozenset({"c.txt"}), ("r", "refs/heads/main"))
    assert derived.find(cache, "raw", 1, c, "keep.txt") is answer
    assert derived.find(cache, "raw", 1, c, "b.txt") is None  # b changed it
    # Moved to c from elsewhere too: c's parent is no longer known.
    derived.moved(RefUpdated("r", "refs/heads/main", x, c))
    derived.note(1, c, frozenset({"c.txt"}), ("r", "refs/heads/main"))
    assert derived.find(cache, "raw", 1, c, "keep.txt") is None


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "slow"])
def test_a_304_carries_etag_and_cache_control_only(
    make_svc: Callable[..., Svc], fast_path: bool
) -> None:
    """RFC 9110 (15.4.5): a 304 repeats ETag and Cache-Control (Date is the server's),
    not other metadata; the 200 it stands for says Accept-Ranges. Both paths alike."""
    svc = make_svc(fast_path=fast_path)
    full = svc.get(RAW)
    assert full.status_code == 200 and full.headers["accept-ranges"] == "bytes"
    for _ in range(2):  # the second from what the first remembered
        r = svc.get(RAW, **{"If-None-Match": full.headers["etag"]})
        assert r.status_code == 304 and r.content == b""
        assert r.headers["etag"] == full.headers["etag"]
        assert r.headers["cache-control"] == "no-cache"
        assert "accept-ranges" not in r.headers
    pinned = f"/api/v1/repos/demo/raw/{svc.repo.resolve('main')}/f.txt"
    r = svc.get(pinned, **{"If-None-Match": full.headers["etag"]})
    assert r.status_code == 304
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert "accept-ranges" not in r.headers
