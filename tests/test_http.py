"""The HTTP service against a real uvicorn server on a loopback port, with httpx,
on SQLite and PostgreSQL: routes, errors, auth, ETag/304, Range, compression."""

from __future__ import annotations

import base64
import logging
import sys
import threading
import time
import types
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import zstandard
from _http_server import serving

import govc_db
from govc_db import Settings, Signature, Store
from govc_db.http import create_app
from govc_db.http.auth import create_token
from govc_db.models import ApiToken

SIG = Signature("Ada", "ada@example.com", 1_700_000_000, 60)
BIG = b"line of text\n" * 400  # 5200 bytes, compressible
BIN = bytes(range(256)) * 40  # 10240 bytes


class Service:
    def __init__(self, store: Store, base: str, server: Any) -> None:
        self.store = store
        self.base = base
        self.server = server
        self.client = httpx.Client(base_url=base, timeout=30)
        self.write_token = create_token(store, repository="demo", write=True)
        self.read_token = create_token(store, repository="demo")
        self.admin_token = create_token(store, write=True)
        self.repo = store.repository("demo")

    def h(self, token: str | None = None, **extra: str) -> dict[str, str]:
        out = dict(extra)
        out["Authorization"] = f"Bearer {token or self.read_token}"
        return out

    def get(self, url: str, token: str | None = None, **headers: str) -> httpx.Response:
        return self.client.get(url, headers=self.h(token, **headers))


def _seed(store: Store) -> None:
    repo = store.create_repository("demo")
    repo.commit(
        "main",
        {"a.txt": BIG, "small.txt": b"hi\n", "d/e.json": b'{"k": 1}\n', "blob.bin": BIN},
        message="first\n",
        author=SIG,
    )
    repo.commit("main", {"small.txt": b"hello\n"}, message="second\n", author=SIG)
    repo.create_branch("feature/x", "main~1")
    repo.create_tag("v1", "main~1")


@pytest.fixture
def make_service(db_url: str) -> Iterator[Callable[..., Service]]:
    opened: list[Any] = []

    def make(settings: Settings | None = None, **app_options: Any) -> Service:
        with govc_db.open(db_url) as seeding:
            if "demo" not in seeding.list_repositories():
                _seed(seeding)
        store = govc_db.open(db_url, settings=settings or Settings())
        cm = serving(create_app(store, **app_options))
        base, server = cm.__enter__()
        service = Service(store, base, server)
        opened.append((cm, store, service))
        return service

    yield make
    for cm, store, service in reversed(opened):
        service.client.close()
        cm.__exit__(None, None, None)
        store.close()


@pytest.fixture
def svc(make_service: Callable[..., Service]) -> Service:
    return make_service()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- routes ---------------------------------------------------------------------------------


def test_read_routes(svc: Service) -> None:
    repo = svc.repo
    head = repo.resolve("main")
    assert svc.get("/healthz").json() == {"status": "ok"}
    assert svc.get("/api/v1/repos").json() == [{"name": "demo", "default_branch": "main"}]
    assert svc.get("/api/v1/repos/demo/branches").json() == repo.branches()
    assert svc.get("/api/v1/repos/demo/tags").json() == repo.tags()
    c = svc.get("/api/v1/repos/demo/commits/main").json()
    info = repo.get_commit("main")
    assert c == {
        "oid": head,
        "tree": info.tree,
        "parents": info.parents,
        "author": {"name": "Ada", "email": "ada@example.com", "time": 1_700_000_000, "offset": 60},
        "committer": {
            "name": "Ada",
            "email": "ada@example.com",
            "time": 1_700_000_000,
            "offset": 60,
        },
        "message": "second\n",
    }
    assert svc.get("/api/v1/repos/demo/commits/main~1").json()["message"] == "first\n"
    assert svc.get("/api/v1/repos/demo/commits/feature/x").json()["message"] == "first\n"
    root = svc.get("/api/v1/repos/demo/tree/main").json()
    assert [e["path"] for e in root] == [e.path for e in repo.tree("main")]
    assert svc.get("/api/v1/repos/demo/tree/main/").json() == root
    sub = svc.get("/api/v1/repos/demo/tree/main/d").json()
    assert sub == [
        {
            "name": "e.json",
            "path": "d/e.json",
            "mode": 0o100644,
            "oid": sub[0]["oid"],
            "type": "blob",
        }
    ]
    # A branch with a slash, percent-encoded in the URL.
    assert svc.get("/api/v1/repos/demo/raw/feature%2Fx/small.txt").content == b"hi\n"
    assert svc.get("/api/v1/repos/demo/raw/main/d/e.json").content == b'{"k": 1}\n'
    d = svc.client.get(
        "/api/v1/repos/demo/diff", params={"from": "main~1", "to": "main"}, headers=svc.h()
    ).json()
    assert d == [
        {
            "path": "small.txt",
            "status": "M",
            "old_mode": 0o100644,
            "new_mode": 0o100644,
            "old_oid": next(e.oid for e in repo.tree("main~1") if e.name == "small.txt"),
            "new_oid": d[0]["new_oid"],
        }
    ]
    assert d[0]["new_oid"] == next(e.oid for e in repo.tree("main") if e.name == "small.txt")


def test_log_pages_with_a_cursor(svc: Service) -> None:
    for i in range(5):
        svc.repo.commit("main", {f"n{i}.txt": b"%d" % i}, message=f"c{i}\n", author=SIG)
    expected = [c.oid for c in svc.repo.log("main")]
    seen: list[str] = []
    page = svc.client.get("/api/v1/repos/demo/log", params={"limit": 3}, headers=svc.h()).json()
    seen += [c["oid"] for c in page["commits"]]
    # A commit after the first page does not shift the next pages: the cursor pins the start.
    svc.repo.commit("main", {"late.txt": b"late"}, message="late\n", author=SIG)
    while page["next"]:
        page = svc.client.get(
            "/api/v1/repos/demo/log", params={"cursor": page["next"], "limit": 3}, headers=svc.h()
        ).json()
        seen += [c["oid"] for c in page["commits"]]
    assert seen == expected
    by_path = svc.client.get(
        "/api/v1/repos/demo/log", params={"rev": "main", "path": "small.txt"}, headers=svc.h()
    ).json()
    assert [c["message"] for c in by_path["commits"]] == ["second\n", "first\n"]


def test_write_routes(svc: Service) -> None:
    w = svc.h(svc.write_token)
    r = svc.client.post(
        "/api/v1/repos/demo/commits",
        headers=w,
        json={
            "branch": "main",
            "message": "api\n",
            "author": {"name": "Bot", "email": "bot@example.com", "time": 1_700_000_100},
            "changes": {
                "new.txt": {"content": _b64(b"new\n")},
                "run.sh": {"content": _b64(b"#!/bin/sh\n"), "mode": "100755"},
                "small.txt": None,
            },
        },
    )
    assert r.status_code == 201, r.text
    oid = r.json()["oid"]
    assert svc.repo.resolve("main") == oid
    assert svc.repo.read(oid, "new.txt") == b"new\n"
    assert not svc.repo.exists(oid, "small.txt")
    assert next(e.mode for e in svc.repo.tree(oid) if e.name == "run.sh") == 0o100755
    # expected_head mismatch: RefConflict, 409, nothing changed
    stale = svc.client.post(
        "/api/v1/repos/demo/commits",
        headers=w,
        json={
            "branch": "main",
            "message": "x\n",
            "author": {"name": "Bot", "email": "b@x"},
            "expected_head": "0" * 40,
            "changes": {"z.txt": {"content": _b64(b"z")}},
        },
    )
    assert stale.status_code == 409 and stale.json()["error"] == "RefConflict"
    assert svc.repo.resolve("main") == oid
    made = svc.client.post(
        "/api/v1/repos",
        headers=svc.h(svc.admin_token),
        json={"name": "other", "default_branch": "trunk"},
    )
    assert made.status_code == 201
    assert made.json() == {"name": "other", "default_branch": "trunk"}
    again = svc.client.post("/api/v1/repos", headers=svc.h(svc.admin_token), json={"name": "other"})
    assert again.status_code == 409 and again.json()["error"] == "AlreadyExists"


@pytest.mark.parametrize(
    ("method", "url", "body", "status", "error"),
    [
        ("GET", "/api/v1/repos/nope/branches", None, 404, "NotFound"),
        ("GET", "/api/v1/repos/demo/commits/doesnotexist", None, 404, "NotFound"),
        ("GET", "/api/v1/repos/demo/raw/main/missing.txt", None, 404, "NotFound"),
        ("GET", "/api/v1/repos/demo/raw/main/../etc", None, 400, "InvalidInput"),
        ("GET", "/api/v1/repos/demo/raw/main/d", None, 400, "InvalidInput"),
        ("GET", "/api/v1/repos/demo/commits/main..x", None, 400, "InvalidInput"),
        ("GET", "/api/v1/repos/demo/log?limit=abc", None, 400, "InvalidInput"),
        ("GET", "/api/v1/repos/demo/log?cursor=!!", None, 400, "InvalidInput"),
        ("GET", "/api/v1/repos/demo/diff?from=main", None, 400, "InvalidInput"),
        ("POST", "/api/v1/repos/demo/commits", b"not json", 400, "InvalidInput"),
        ("POST", "/api/v1/repos/demo/commits", b'{"branch": "main"}', 400, "InvalidInput"),
        (
            "POST",
            "/api/v1/repos/demo/commits",
            b'{"branch":"main","message":"m","author":{"name":"a","email":"b"},'
            b'"changes":{"/abs":{"content":"eA=="}}}',
            400,
            "InvalidInput",
        ),
        (
            "POST",
            "/api/v1/repos/demo/commits",
            b'{"branch":"main","message":"m","author":{"name":"a","email":"b"},'
            b'"changes":{"x":{"content":"***"}}}',
            400,
            "InvalidInput",
        ),
    ],
)
def test_errors_are_json_without_internals(
    svc: Service, method: str, url: str, body: bytes | None, status: int, error: str
) -> None:
    r = svc.client.request(method, url, content=body, headers=svc.h(svc.admin_token))
    assert r.status_code == status, r.text
    payload = r.json()
    assert set(payload) == {"error", "message"} and payload["error"] == error
    text = r.text.lower()
    for leak in ("traceback", "select ", "insert ", "sqlalchemy", "psycopg", "password"):
        assert leak not in text


# -- auth -----------------------------------------------------------------------------------


def test_auth_rules(svc: Service) -> None:
    url = "/api/v1/repos/demo/branches"
    r = svc.client.get(url)
    assert r.status_code == 401 and r.json()["error"] == "Unauthenticated"
    assert r.headers["www-authenticate"].startswith("Bearer")
    _, token_id, secret = svc.read_token.split("_", 2)
    for bad in (
        f"gvc_{token_id}_{'A' * len(secret)}",  # right id, wrong secret
        f"gvc_999999_{secret}",  # unknown id
        "Basic dXNlcjpwYXNz",
        "gvc_nonsense",
    ):
        header = bad if bad.startswith("Basic") else f"Bearer {bad}"
        assert svc.client.get(url, headers={"Authorization": header}).status_code == 401
    assert svc.get(url).status_code == 200
    commit = {
        "branch": "main",
        "message": "m\n",
        "author": {"name": "a", "email": "a@b"},
        "changes": {"q.txt": {"content": _b64(b"q")}},
    }
    post = "/api/v1/repos/demo/commits"
    assert svc.client.post(post, json=commit).status_code == 401
    r = svc.client.post(post, json=commit, headers=svc.h(svc.read_token))
    assert r.status_code == 403 and r.json()["error"] == "Forbidden"
    assert svc.client.post(post, json=commit, headers=svc.h(svc.write_token)).status_code == 201
    # A token of another repository sees nothing of this one.
    svc.store.create_repository("elsewhere")
    other = create_token(svc.store, repository="elsewhere", write=True)
    assert svc.get(url, token=other).status_code == 403
    assert svc.client.post(post, json=commit, headers=svc.h(other)).status_code == 403
    assert [r["name"] for r in svc.get("/api/v1/repos", token=other).json()] == ["elsewhere"]
    # Creating a repository needs a write token of all repositories (or of that name).
    made = svc.client.post("/api/v1/repos", json={"name": "x1"}, headers=svc.h(svc.write_token))
    assert made.status_code == 403


def test_public_read(make_service: Callable[..., Service]) -> None:
    svc = make_service(public_read=True)
    assert svc.client.get("/api/v1/repos/demo/raw/main/small.txt").content == b"hello\n"
    assert svc.client.get("/api/v1/repos").status_code == 200
    r = svc.client.post("/api/v1/repos", json={"name": "anon"})
    assert r.status_code == 401
    assert "anon" not in svc.store.list_repositories()


def test_only_token_hashes_are_stored_and_tokens_are_never_logged(
    svc: Service, caplog: pytest.LogCaptureFixture
) -> None:
    table = ApiToken.__table__
    with svc.store.transaction() as tx:
        rows = tx.connection.execute(sa.select(table)).mappings().all()
    assert len(rows) == 3
    for row in rows:
        for value in row.values():
            for token in (svc.read_token, svc.write_token, svc.admin_token):
                assert token.split("_", 2)[2] not in str(value)
                if isinstance(value, bytes):
                    assert token.encode() not in value
    with caplog.at_level(logging.INFO, logger="govc_db.http.access"):
        svc.get("/api/v1/repos/demo/branches?secret=1")
        svc.client.get(
            "/api/v1/repos/demo/branches", headers={"Authorization": "Bearer gvc_1_" + "x" * 30}
        )
    text = caplog.text
    assert "GET /api/v1/repos/demo/branches 200" in text
    assert f"token:{svc.read_token.split('_', 2)[1]}" in text
    assert svc.read_token not in text and "x" * 30 not in text and "secret" not in text


def test_git_routes_are_mounted_with_token_auth(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, bool, int | None]] = []

    def make_git_app(store: Store, *, allow_push: bool = False, check_access: Any = None) -> Any:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            name = scope["path"].split("/")[1].removesuffix(".git")
            write = scope["path"].endswith("git-receive-pack")
            status = check_access(scope, name, write)
            calls.append((name, write, status))
            await send({"type": "http.response.start", "status": status or 200, "headers": []})
            await send({"type": "http.response.body", "body": b"git"})

        return app

    fake = types.ModuleType("govc_db.interop.smart_http")
    fake.make_git_app = make_git_app  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "govc_db.interop.smart_http", fake)
    with govc_db.open(db_url) as store:
        _seed(store)
        read = create_token(store, repository="demo")
        write = create_token(store, repository="demo", write=True)
        with (
            serving(create_app(store, allow_push=True)) as (base, _),
            httpx.Client(base_url=base) as c,
        ):
            info = "/demo.git/info/refs"
            push = "/demo.git/git-receive-pack"
            assert c.get(info).status_code == 401
            assert c.get(info, headers={"Authorization": f"Bearer {read}"}).text == "git"
            assert c.post(push, headers={"Authorization": f"Bearer {read}"}).status_code == 403
            assert c.post(push, headers={"Authorization": f"Bearer {write}"}).status_code == 200
            assert c.get("/api/v1/repos/demo/branches").status_code == 401  # still the API
    assert calls == [
        ("demo", False, 401),
        ("demo", False, None),
        ("demo", True, 403),
        ("demo", True, None),
    ]


# -- caching --------------------------------------------------------------------------------


def test_raw_etag_and_conditional_get(svc: Service) -> None:
    blob = next(e.oid for e in svc.repo.tree("main") if e.name == "small.txt")
    r = svc.get("/api/v1/repos/demo/raw/main/small.txt")
    assert r.headers["etag"] == f'"{blob}"'
    assert r.headers["cache-control"] == "no-cache"
    again = svc.get("/api/v1/repos/demo/raw/main/small.txt", **{"If-None-Match": f'"{blob}"'})
    assert again.status_code == 304 and again.content == b""
    head = svc.repo.resolve("main")
    pinned = svc.get(f"/api/v1/repos/demo/raw/{head}/small.txt")
    assert pinned.headers["cache-control"] == "public, max-age=31536000, immutable"
    # Same bytes under another revision: same ETag.
    assert (
        svc.get("/api/v1/repos/demo/raw/main~1/a.txt").headers["etag"]
        == svc.get("/api/v1/repos/demo/raw/main/a.txt").headers["etag"]
    )


def test_branch_etags_follow_the_ref_and_304_skips_the_database(svc: Service) -> None:
    url = "/api/v1/repos/demo/tree/main"
    first = svc.get(url)
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "no-cache"
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    assert svc.get(url, **{"If-None-Match": etag}).status_code == 304  # warms the lookups
    sa.event.listen(svc.store.engine, "before_cursor_execute", count)
    try:
        for _ in range(3):
            assert svc.get(url, **{"If-None-Match": etag}).status_code == 304
            assert svc.get(url, **{"If-None-Match": f"W/{etag}"}).status_code == 304
    finally:
        sa.event.remove(svc.store.engine, "before_cursor_execute", count)
    if svc.store.cache is not None and svc.store.cache.mutable_enabled():
        assert statements == []  # the cache knew the ref: no database round trip
    svc.repo.commit("main", {"later.txt": b"later"}, message="later\n", author=SIG)
    after = svc.get(url, **{"If-None-Match": etag})
    assert after.status_code == 200 and after.headers["etag"] != etag
    assert "later.txt" in [e["name"] for e in after.json()]


def test_range_requests(svc: Service) -> None:
    url = "/api/v1/repos/demo/raw/main/blob.bin"
    full = svc.get(url)
    assert full.content == BIN and full.headers["accept-ranges"] == "bytes"
    part = svc.get(url, Range="bytes=10-19", **{"Accept-Encoding": "gzip"})
    assert part.status_code == 206 and part.content == BIN[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(BIN)}"
    assert "content-encoding" not in part.headers
    tail = svc.get(url, Range="bytes=-5")
    assert tail.status_code == 206 and tail.content == BIN[-5:]
    assert svc.get(url, Range="bytes=5-").content == BIN[5:]
    bad = svc.get(url, Range=f"bytes={len(BIN) + 1}-")
    assert bad.status_code == 416 and bad.headers["content-range"] == f"bytes */{len(BIN)}"
    text = svc.get(
        "/api/v1/repos/demo/raw/main/a.txt", Range="bytes=0-3", **{"Accept-Encoding": "gzip"}
    )
    assert (
        text.status_code == 206
        and text.content == b"line"
        and "content-encoding" not in text.headers
    )


def test_large_file_is_streamed(svc: Service) -> None:
    big = bytes(range(256)) * 4096 * 2  # 2 MiB, above one chunk and the blob cache
    svc.repo.commit("main", {"big.bin": big}, message="big\n", author=SIG)
    with svc.client.stream("GET", "/api/v1/repos/demo/raw/main/big.bin", headers=svc.h()) as r:
        chunks = list(r.iter_raw())
        assert r.headers["content-length"] == str(len(big))
    assert b"".join(chunks) == big
    part = svc.get("/api/v1/repos/demo/raw/main/big.bin", Range="bytes=1000000-1000009")
    assert part.status_code == 206 and part.content == big[1000000:1000010]


# -- compression ----------------------------------------------------------------------------


def _raw_get(svc: Service, url: str, encoding: str) -> httpx.Response:
    # httpx decodes gzip itself; ask for the raw bytes to see what was sent.
    with svc.client.stream("GET", url, headers=svc.h(**{"Accept-Encoding": encoding})) as r:
        r.raw_body = b"".join(r.iter_raw())  # type: ignore[attr-defined]
        return r


def test_compression(svc: Service) -> None:
    url = "/api/v1/repos/demo/raw/main/a.txt"
    plain = _raw_get(svc, url, "identity")
    assert "content-encoding" not in plain.headers and plain.raw_body == BIG  # type: ignore[attr-defined]
    gz = _raw_get(svc, url, "gzip")
    assert gz.headers["content-encoding"] == "gzip" and gz.headers["vary"] == "Accept-Encoding"
    assert zlib.decompress(gz.raw_body, 31) == BIG  # type: ignore[attr-defined]
    assert gz.headers["etag"].startswith('W/"')
    zs = _raw_get(svc, url, "gzip, zstd")
    assert zs.headers["content-encoding"] == "zstd"
    assert zstandard.ZstdDecompressor().decompressobj().decompress(zs.raw_body) == BIG  # type: ignore[attr-defined]
    refused = _raw_get(svc, url, "gzip;q=0")
    assert "content-encoding" not in refused.headers
    small = _raw_get(svc, "/api/v1/repos/demo/raw/main/small.txt", "gzip")
    assert "content-encoding" not in small.headers  # under 1 KiB
    binary = _raw_get(svc, "/api/v1/repos/demo/raw/main/blob.bin", "gzip")
    assert "content-encoding" not in binary.headers  # octet-stream: not compressed
    for _ in range(30):
        svc.repo.commit("main", {f"f{_}.txt": b"x"}, message="many\n", author=SIG)
    log = _raw_get(svc, "/api/v1/repos/demo/log", "gzip")
    assert log.headers["content-encoding"] == "gzip"
    assert b'"commits"' in zlib.decompress(log.raw_body, 31)  # type: ignore[attr-defined]
    # 304 answers carry no body and no encoding.
    etag = gz.headers["etag"]
    not_modified = svc.get(url, **{"If-None-Match": etag, "Accept-Encoding": "gzip"})
    assert not_modified.status_code == 304 and "content-encoding" not in not_modified.headers


def test_compress_min_size_option(make_service: Callable[..., Service]) -> None:
    svc = make_service(compress_min_size=1)
    small = _raw_get(svc, "/api/v1/repos/demo/raw/main/small.txt", "gzip")
    assert small.headers["content-encoding"] == "gzip"


# -- optimizer settings through HTTP ----------------------------------------------------------


def test_rate_limit_is_429_with_retry_after(make_service: Callable[..., Service]) -> None:
    svc = make_service(Settings(rate_limit=0.01, rate_burst=4))
    statuses = [svc.get("/api/v1/repos/demo/raw/main/small.txt").status_code for _ in range(6)]
    assert 429 in statuses and statuses[0] == 200
    r = svc.get("/api/v1/repos/demo/raw/main/small.txt")
    assert r.status_code == 429 and r.json()["error"] == "RateLimited"
    assert int(r.headers["retry-after"]) >= 1
    # Another token is another caller, with its own bucket.
    assert (
        svc.get("/api/v1/repos/demo/raw/main/small.txt", token=svc.write_token).status_code == 200
    )


def test_metrics_endpoint(svc: Service) -> None:
    svc.get("/api/v1/repos/demo/raw/main/small.txt")
    text = svc.get("/metrics").text
    assert "govc_db_" in text and "# TYPE" in text
    assert svc.client.get("/metrics").status_code == 401


def test_graceful_shutdown_finishes_requests_in_flight(svc: Service) -> None:
    entered = threading.Event()

    def slow(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if threading.current_thread().name.startswith("govc_db-http"):  # a request
            entered.set()
            time.sleep(0.5)

    svc.store.engine.dispose()
    sa.event.listen(svc.store.engine, "before_cursor_execute", slow)
    result: list[httpx.Response] = []
    head = svc.repo.resolve("main")
    t = threading.Thread(
        target=lambda: result.append(
            httpx.get(
                f"{svc.base}/api/v1/repos/demo/diff?from={head}~1&to={head}",
                headers=svc.h(),
                timeout=30,
            )
        )
    )
    t.start()
    assert entered.wait(10)
    svc.server.should_exit = True  # what SIGTERM does
    t.join(30)
    sa.event.remove(svc.store.engine, "before_cursor_execute", slow)
    assert result and result[0].status_code == 200 and result[0].json()[0]["path"] == "small.txt"


def test_deleting_a_repository_deletes_its_tokens(svc: Service) -> None:
    svc.store.create_repository("gone")
    token = create_token(svc.store, repository="gone")
    assert svc.get("/api/v1/repos/gone/branches", token=token).status_code == 200
    svc.store.delete_repository("gone")
    svc.store.create_repository("gone")  # same name, new repository
    # A new server process (no remembered tokens) refuses the old token.
    with serving(create_app(svc.store)) as (base, _), httpx.Client(base_url=base) as c:
        r = c.get("/api/v1/repos/gone/branches", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401
    with pytest.raises(govc_db.NotFound):
        create_token(svc.store, repository="never-made")


@pytest.mark.parametrize("ttl", [0.0, 30.0])
def test_repository_handles_and_a_deleted_repository(
    make_service: Callable[..., Service], ttl: float
) -> None:
    svc = make_service(repo_ttl=ttl)
    svc.store.create_repository("temp").commit("main", {"x": b"1"}, message="m\n", author=SIG)
    url = "/api/v1/repos/temp/raw/main/x"
    assert svc.get(url, token=svc.admin_token).content == b"1"
    svc.store.delete_repository("temp")
    gone = svc.get(url, token=svc.admin_token)
    assert gone.status_code == 404 and gone.json()["error"] == "NotFound"
    svc.store.create_repository("temp").commit("main", {"x": b"2"}, message="m\n", author=SIG)
    again = svc.get(url, token=svc.admin_token)
    if ttl == 0:
        assert again.content == b"2"  # no handle reused: the new repository at once
    else:
        assert again.status_code == 404  # the old handle, for at most repo_ttl seconds
