"""Real HTTP servers on free loopback ports for the HTTP tests: an app under uvicorn in
a thread, or a whole ``govc-db serve`` process."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn
from starlette.types import ASGIApp


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def serving(app: ASGIApp, **config: object) -> Iterator[tuple[str, uvicorn.Server]]:
    """Run ``app`` until the block ends; yields (base URL, server)."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            **config,  # type: ignore[arg-type]
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(30)


@contextmanager
def serving_url(app: ASGIApp, suffix: str = "") -> Iterator[str]:
    """:func:`serving`, yielding only the base URL with ``suffix`` (a repository's
    ``/<name>.git``) appended."""
    with serving(app) as (base, _server):
        yield base + suffix


class ServeProcess:
    """A ``govc-db serve`` process started by :func:`serve_process`."""

    def __init__(self, base: str, proc: subprocess.Popen[str]) -> None:
        self.base = base
        self.proc = proc
        #: What the process wrote on stderr, once it has stopped.
        self.stderr = ""


@contextmanager
def serve_process(*args: str, env: dict[str, str] | None = None) -> Iterator[ServeProcess]:
    """Run ``python -m govc_db serve ARGS --port P`` until the block ends, then stop it
    with SIGTERM and check that it exits 0 (a stop asked for is a clean exit)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "govc_db", "serve", *args, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    served = ServeProcess(f"http://127.0.0.1:{port}", proc)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(served.base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("govc-db serve did not come up")
            time.sleep(0.2)
        yield served
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, served.stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    assert proc.returncode == 0, served.stderr
