"""The circuit breaker against a real outage: a throwaway cluster is stopped (the breaker
opens, calls fail fast over HTTP) and started again (the probe closes it)."""

from __future__ import annotations

import time

import httpx
import pg
import pytest
from _http_server import serving

import govc_db
from govc_db import Settings, Signature, errors
from govc_db.http import create_app
from govc_db.http.auth import create_token

SIG = Signature("Ada", "ada@example.com", 1_700_000_000, 0)


@pytest.mark.slow
@pytest.mark.postgres
def test_breaker_opens_when_the_database_stops_and_closes_when_it_returns(
    cluster: pg._LocalCluster,
) -> None:
    url = cluster.start()
    settings = Settings(
        breaker_failures=2,
        breaker_reset=1.0,
        retry_attempts=1,
        retry_budget=0.2,  # a refused connection is reported quickly
        connect_timeout=1,
        cache_enabled=False,
    )
    with govc_db.open(url, settings=settings) as store:
        store.upgrade()
        repo = store.create_repository("demo")
        repo.commit("main", {"a.txt": b"A"}, message="m\n", author=SIG)
        token = create_token(store)
        auth = {"Authorization": f"Bearer {token}"}
        raw = "/api/v1/repos/demo/raw/main/a.txt"
        with (
            serving(create_app(store)) as (base, _),
            httpx.Client(base_url=base, headers=auth, timeout=30) as client,
        ):
            assert client.get(raw).content == b"A"  # the token is verified and remembered
            cluster.pg_ctl("-m", "fast", "stop")
            failures = [client.get(raw) for _ in range(2)]
            assert [r.status_code for r in failures] == [503, 503]
            # The database is down: a StoreUnavailable, named by its typed subclass.
            names = {r.json()["error"] for r in failures}
            assert names == {"ConnectionRefused"}
            assert all(issubclass(getattr(errors, n), errors.StoreUnavailable) for n in names)
            assert store.metrics()["breaker"]["state"] == 2  # open
            start = time.perf_counter()
            fast = client.get(raw)
            assert fast.status_code == 503 and fast.json()["error"] == "CircuitOpen"
            assert int(fast.headers["retry-after"]) >= 1
            assert time.perf_counter() - start < 0.5  # no connection attempt
            rejected = store.metrics()["breaker"]["rejected"]
            assert rejected >= 1

            cluster.pg_ctl("-l", str(cluster.log), "-o", f"-p {cluster.port}", "start")
            time.sleep(1.1)  # breaker_reset: the next call is the probe
            assert client.get(raw).content == b"A"
            stats = store.metrics()["breaker"]
            assert stats["state"] == 0 and stats["closed"] == 1 and stats["opened"] == 1
            assert client.get(raw).status_code == 200
