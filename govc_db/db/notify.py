"""Cross-process cache invalidation and events over PostgreSQL LISTEN/NOTIFY.

Every transaction that moves a ref (or deletes a repository) runs ``SELECT pg_notify(
'govc_db', payload)`` inside itself: PostgreSQL delivers the notification only if and when
the transaction commits, so listeners never hear of a write that did not happen. The
payload holds keys, not rows (JSON, far below PostgreSQL's 8000-byte limit)::

    {"v": 1, "pid": 4242, "store": "9f2c...", "repo_id": 7, "repo": "docs",
     "ref": "refs/heads/main", "old": "<hex>" | null, "new": "<hex>" | null}
    {"v": 1, "pid": 4242, "store": "9f2c...", "repo_id": 7, "repo": "docs", "deleted": true}

:class:`Listener` keeps one dedicated autocommit psycopg connection per Store in a thread,
``LISTEN govc_db``, and hands each payload to the Store. It reconnects with capped,
jittered backoff and reports every (re)connect, because notifications sent while it was
away are lost for good: the Store flushes its mutable cache then.

**Self-check.** A connection that LISTENs is not proof of hearing: through a pooler in
transaction mode (PgBouncer) LISTEN runs on whichever server connection the pooler picks
and nothing is ever delivered, while the connection looks healthy. So after every LISTEN,
and every ``probe_interval`` seconds, the listener sends a probe NOTIFY on a short-lived
connection of its own (the way other processes' notifications travel, through any
pooler) and must hear it back within ``probe_timeout``. Only then does
:attr:`Listener.connected` turn true -- and the Store caches refs only while it is true. A
probe not heard is logged (once per change), counted in ``get_stats()`` (``verified``
False, ``probe_failures``), and mutable caching stays off until a later probe is heard:
reads then go to the database, so they are never staler than it.

psycopg supplies the notification stream; the thread, its wake-up and reconnection are
written here because neither psycopg nor SQLAlchemy keeps a listening connection alive.
The commit serializes on PostgreSQL's notification queue lock for transactions that
notified; ``Settings.notify_enabled=False`` turns it off (and with it cross-process events
and mutable caching on PostgreSQL).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import random
import secrets
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.engine import URL

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "CHANNEL",
    "PROBE_TIMEOUT",
    "NOTIFY_STATEMENT",
    "Listener",
    "Message",
    "connect_kwargs",
    "parse_message",
    "ref_message",
    "repository_deleted_message",
    "send_probe",
]

log = logging.getLogger("govc_db.notify")

CHANNEL = "govc_db"
#: PostgreSQL refuses payloads of 8000 bytes or more; stay clear of the edge.
MAX_PAYLOAD = 7900
NOTIFY_STATEMENT = text("SELECT pg_notify('govc_db', :payload)")
#: Seconds a probe NOTIFY may take to come back before the listener is declared deaf.
PROBE_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class Message:
    """One notification, parsed. ``ref`` None with ``deleted`` False: all refs changed."""

    store: str
    pid: int
    repo_id: int
    repo: str | None
    ref: str | None = None
    old: str | None = None
    new: str | None = None
    deleted: bool = False


def _dump(body: dict[str, Any]) -> str:
    # ASCII-only JSON: the payload survives any client encoding unchanged.
    return json.dumps(body, separators=(",", ":"), ensure_ascii=True)


def ref_message(
    store: str, repo_id: int, repo: str | None, ref: str, old: bytes | None, new: bytes | None
) -> str:
    """The payload announcing a committed ref move."""
    head = {"v": 1, "pid": os.getpid(), "store": store, "repo_id": repo_id, "repo": repo}
    body = _dump(
        {**head, "ref": ref, "old": old.hex() if old else None, "new": new.hex() if new else None}
    )
    if len(body) > MAX_PAYLOAD:  # cannot happen within the name limits; degrade safely
        body = _dump({**head, "ref": None})
    return body


def repository_deleted_message(store: str, repo_id: int, repo: str) -> str:
    """The payload announcing a deleted repository."""
    return _dump(
        {"v": 1, "pid": os.getpid(), "store": store, "repo_id": repo_id, "repo": repo,
         "deleted": True}
    )  # fmt: skip


def parse_message(payload: str) -> Message | None:
    """The message in ``payload``, or None when it is not one of ours."""
    try:
        body = json.loads(payload)
        if not isinstance(body, dict) or body.get("v") != 1:
            return None
        repo = body.get("repo")
        ref = body.get("ref")
        old = body.get("old")
        new = body.get("new")
        msg = Message(
            store=str(body["store"]),
            pid=int(body["pid"]),
            repo_id=int(body["repo_id"]),
            repo=repo if isinstance(repo, str) else None,
            ref=ref if isinstance(ref, str) else None,
            old=old if isinstance(old, str) else None,
            new=new if isinstance(new, str) else None,
            deleted=body.get("deleted") is True,
        )
    except (ValueError, KeyError, TypeError):
        return None
    return msg


def send_probe(kwargs: dict[str, Any], payload: str) -> None:
    """NOTIFY ``payload`` on a short-lived connection of its own (the listener's
    self-check): the path another process's notification takes, through any pooler,
    without taking a connection from the Store's pool."""
    import psycopg  # only a PostgreSQL store probes (SQLite never loads it)

    with psycopg.connect(**kwargs, autocommit=True) as conn:
        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload), prepare=False)


def connect_kwargs(url: URL, *, connect_timeout: float) -> dict[str, Any]:
    """Connection parameters for psycopg from a SQLAlchemy URL (password included: never
    log the result)."""
    kw: dict[str, Any] = {}
    for key, value in url.query.items():
        kw[key] = value if isinstance(value, str) else value[-1]
    if url.host:
        kw["host"] = url.host
    if url.port:
        kw["port"] = url.port
    if url.username:
        kw["user"] = url.username
    if url.password is not None:
        kw["password"] = str(url.password)
    if url.database:
        kw["dbname"] = url.database
    kw.setdefault("connect_timeout", max(1, round(connect_timeout)))
    kw["application_name"] = "govc_db_listener"
    # A server that vanished without a reset is noticed by TCP keepalives as well as by
    # the idle check below.
    kw.setdefault("keepalives", 1)
    kw.setdefault("keepalives_idle", 30)
    kw.setdefault("keepalives_interval", 10)
    kw.setdefault("keepalives_count", 3)
    return kw


class Listener:
    """A thread listening on :data:`CHANNEL` over its own connection, reconnecting.

    ``on_connect`` runs after every successful ``LISTEN`` (and again when a probe is heard
    after a deaf spell) before :attr:`connected` turns true; ``on_disconnect`` after it
    turned false. With ``probe`` (a function sending a NOTIFY payload through another
    connection), :attr:`connected` turns true only once the listener heard its own probe
    (see the module docstring); without it, as soon as LISTEN succeeded.
    ``on_payload`` receives each payload, in the listener thread. ``rng`` and ``wait``
    are injectable for tests.
    """

    def __init__(
        self,
        kwargs: dict[str, Any],
        *,
        on_payload: Callable[[str], None],
        on_connect: Callable[[], None],
        on_disconnect: Callable[[], None],
        backoff_base: float = 0.05,
        backoff_max: float = 5.0,
        idle_check: float = 30.0,
        probe: Callable[[str], None] | None = None,
        probe_interval: float = 30.0,
        probe_timeout: float = PROBE_TIMEOUT,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._kwargs = kwargs
        self._on_payload = on_payload
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._idle_check = idle_check
        self._probe = probe
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        # The probe in flight: (its token, the monotonic deadline); the next one's time.
        self._pending: tuple[str, float] | None = None
        self._next_probe = 0.0
        self._listening = False
        self._deaf_reported = False
        self._rng = rng
        self._stop = threading.Event()
        self._up = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        # Every key exists from the start: get_stats copies it from other threads, and a
        # dict must not grow while it is copied.
        self._stats: Counter[str] = Counter(
            connects=0, reconnects=0, notifications=0, errors=0, probes_sent=0,
            probes_heard=0, probe_failures=0,
        )  # fmt: skip
        self._last_error: str | None = None
        self._backend_pid: int | None = None
        self._lock = threading.Lock()

    # -- control ----------------------------------------------------------------------
    def start(self) -> None:
        """Start the thread (once)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="govc_db-listener", daemon=True
                )
                self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop listening, close the connection and wait for the thread (at most
        ``timeout`` seconds: one stuck connecting to an unreachable server finishes alone).
        """
        if self.orphaned:
            # Forked child: the thread and the wake-up socket belong to the parent, which
            # a byte sent here would wake.
            return
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if thread is None or not thread.is_alive():
            self._close_wake()

    def _close_wake(self) -> None:
        self._wake_r.close()
        self._wake_w.close()

    @property
    def connected(self) -> bool:
        """Whether the listener is listening now and, with a probe, proved it hears
        notifications (always False in a forked child)."""
        return self._up.is_set() and self._pid == os.getpid()

    @property
    def orphaned(self) -> bool:
        """True in a child process forked from the one that started the thread."""
        return self._pid != os.getpid()

    def wait_connected(self, timeout: float) -> bool:
        """Block until listening (True) or ``timeout`` seconds passed (False)."""
        return self._up.wait(timeout) and self.connected

    def get_stats(self) -> dict[str, Any]:
        """Notifications received, (re)connects, errors, last error class, connected flag."""
        s = dict(self._stats)
        return {
            "connected": self.connected,
            "listening": self._listening and not self.orphaned,
            "verified": self.connected if self._probe is not None else None,
            "probes_sent": s.get("probes_sent", 0),
            "probes_heard": s.get("probes_heard", 0),
            "probe_failures": s.get("probe_failures", 0),
            "staleness": "none: refs are not cached" if not self.connected else "notified",
            "connects": s.get("connects", 0),
            "reconnects": s.get("reconnects", 0),
            "notifications": s.get("notifications", 0),
            "errors": s.get("errors", 0),
            "last_error": self._last_error,
            "backend_pid": self._backend_pid,
        }

    # -- the thread -------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        finally:
            if self._stop.is_set():
                self._close_wake()

    def _loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            conn: psycopg.Connection[Any] | None = None
            try:
                import psycopg  # only a PostgreSQL store listens (SQLite never loads it)

                conn = psycopg.connect(**self._kwargs, autocommit=True)
                if self._stop.is_set():  # stopped while connecting
                    break
                conn.execute("LISTEN " + CHANNEL)
                self._backend_pid = conn.info.backend_pid
                self._listening = True
                self._on_connect()
                self._stats["connects"] += 1
                if self._stats["connects"] > 1:
                    self._stats["reconnects"] += 1
                if self._probe is None:
                    self._up.set()
                else:
                    self._send_probe()
                failures = 0
                self._serve(conn)
            except Exception as exc:  # whatever broke, the answer is to reconnect
                self._stats["errors"] += 1
                self._last_error = type(exc).__name__
                if not self._stop.is_set():
                    # Once per outage, not once per reconnection attempt.
                    report = log.warning if failures == 0 else log.debug
                    report("cache listener is not connected (%s); retrying", self._last_error)
            finally:
                self._listening = False
                self._pending = None
                if self._up.is_set():
                    self._up.clear()
                    self._safe(self._on_disconnect)
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
            if self._stop.is_set():
                break
            failures += 1
            delay = min(self._backoff_max, self._backoff_base * 2 ** min(failures - 1, 30))
            self._stop.wait(delay * (0.5 + self._rng() / 2))

    def _serve(self, conn: psycopg.Connection[Any]) -> None:
        sock = conn.fileno()
        wake = self._wake_r.fileno()
        while not self._stop.is_set():
            # First what psycopg already holds: notifications that arrived with the reply
            # to LISTEN or to the idle check sit in its backlog, not in the socket.
            for note in conn.notifies(timeout=0):
                if note.channel != CHANNEL:
                    continue
                if self._heard_probe(note.payload):
                    continue
                self._stats["notifications"] += 1
                self._safe(functools.partial(self._on_payload, note.payload))
            if conn.broken or conn.closed:
                import psycopg

                raise psycopg.OperationalError("the listener connection was lost")
            timeout = self._check_probe()
            ready, _, _ = select.select([sock, wake], [], [], timeout)
            if wake in ready:
                if self._stop.is_set():
                    return
                self._wake_r.recv(64)  # not meant for us (see stop()); keep listening
                continue
            if not ready and timeout >= self._idle_check:
                conn.execute("SELECT 1")  # raises if the server went away silently

    # -- the self-check ---------------------------------------------------------------
    def _send_probe(self) -> None:
        assert self._probe is not None
        token = secrets.token_hex(8)
        now = time.monotonic()
        self._pending = (token, now + self._probe_timeout)
        self._next_probe = now + self._probe_interval if self._probe_interval > 0 else 0.0
        self._stats["probes_sent"] += 1
        try:
            self._probe(_dump({"v": 1, "probe": token, "pid": os.getpid()}))
        except Exception as exc:  # the pool's problem is reported by the pool's users
            log.debug("listener probe could not be sent (%s)", type(exc).__name__)

    def _heard_probe(self, payload: str) -> bool:
        """Whether ``payload`` is a probe (ours or another Store's): never a message."""
        if '"probe"' not in payload:
            return False
        pending = self._pending
        if pending is not None and pending[0] in payload:
            self._pending = None
            self._stats["probes_heard"] += 1
            if not self._up.is_set():
                if self._deaf_reported:
                    log.warning("cache listener hears notifications again; refs are cached")
                    self._deaf_reported = False
                    self._safe(self._on_connect)  # forget what was missed meanwhile
                self._up.set()
        return True

    def _check_probe(self) -> float:
        """Time out the probe in flight, start the next one when due; the seconds until
        something is due (at most ``idle_check``)."""
        if self._probe is None:
            return self._idle_check
        now = time.monotonic()
        pending = self._pending
        if pending is not None and now >= pending[1]:
            self._pending = None
            self._stats["probe_failures"] += 1
            if self._up.is_set():
                self._up.clear()
                self._safe(self._on_disconnect)
            if not self._deaf_reported:
                self._deaf_reported = True
                log.warning(
                    "cache listener does not hear its own NOTIFY (LISTEN through a pooler "
                    "in transaction mode?): refs are not cached, so other processes' "
                    "writes are read from the database; see docs/faults.md"
                )
        if self._pending is None and self._next_probe and now >= self._next_probe:
            self._send_probe()
        due = [self._idle_check]
        if self._pending is not None:
            due.append(self._pending[1] - now)
        if self._next_probe:
            due.append(self._next_probe - now)
        return max(0.0, min(due))

    def _safe(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            log.exception("cache listener callback failed")
