"""Runtime configuration: one frozen dataclass, validated on construction.

``Settings.from_env()`` is the only place besides the CLI that reads the
environment. Every optimizer has a switch here so its effect can be measured.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from govc_db.errors import InvalidInput

__all__ = ["Settings"]

_ENV_PREFIX = "GOVC_DB_"


_KIND_TEXT = {"bool": "a bool", "int": "an int", "float": "a number", "str": "a str"}
_PASSWORD_RE = re.compile(r"(://[^:/@]*:)[^@]*@")


def _mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (replica URLs may carry one)."""
    return _PASSWORD_RE.sub(r"\1***@", url)


def _check_type(name: str, type_text: str, value: Any) -> Any:
    """Return ``value`` (floats normalized) if it fits the annotation ``type_text``.

    The annotations are strings (``from __future__ import annotations``); the few forms
    used by :class:`Settings` are handled here. Without this check a wrong type fails later
    with a bare ``TypeError`` (``"5" < 1``) or, worse, is accepted (a str of replica URLs
    was split into characters).
    """
    optional = type_text.endswith("| None")
    base = type_text.split("|", 1)[0].strip()
    if value is None:
        if optional:
            return None
        raise InvalidInput(f"Settings.{name} must be {_KIND_TEXT[base]}, got None")
    ok: bool
    if base == "bool":
        ok = isinstance(value, bool)
    elif base == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok:
            if not math.isfinite(value):
                raise InvalidInput(f"Settings.{name} must be a finite number, got {value!r}")
            value = float(value)
    elif base == "str":
        ok = isinstance(value, str)
    else:  # tuple[str, ...]: replica URLs; never echo them, they may hold a password
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise InvalidInput(f"Settings.{name} must be a tuple of str, got {type(value).__name__}")
    if not ok:
        raise InvalidInput(
            f"Settings.{name} must be {_KIND_TEXT[base]}"
            f"{' or None' if optional else ''}, got {type(value).__name__} {value!r}"
        )
    return value


def _check_range(name: str, value: float, lo: float, hi: float | None = None) -> None:
    if value < lo or (hi is not None and value > hi):
        upper = "" if hi is None else f" and <= {hi}"
        raise InvalidInput(f"Settings.{name} must be >= {lo}{upper}, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Every tunable of a :class:`~govc_db.Store`.

    Construct with keywords; out-of-range values raise ``InvalidInput`` (a ``ValueError``)
    naming the field and the allowed range.
    """

    pool_size: int = 5
    """Connections kept open in the pool (PostgreSQL)."""
    max_overflow: int = 10
    """Extra connections allowed above ``pool_size`` under load."""
    pool_timeout: float = 30.0
    """Seconds to wait for a free connection before failing with StoreUnavailable."""
    pool_recycle: float = 1800.0
    """Seconds after which a pooled connection is replaced (-1 disables)."""
    pool_pre_ping: bool = True
    """Check a connection with a cheap round trip before handing it out, when it has been
    idle in the pool for longer than ``pool_pre_ping_idle``."""
    pool_pre_ping_idle: float = 1.0
    """Seconds a pooled connection may sit idle and still be handed out without a ping;
    0 pings at every checkout. A connection lost while in use is not the ping's job: the
    transaction manager re-runs the unit on a fresh connection (a lost COMMIT is resolved
    by re-reading the refs). So the ping only has to catch connections that died while idle
    (server restart, idle timeout, failover); a connection used within the last second
    almost never has, and skipping its ping saves a round trip per transaction."""
    connect_timeout: float = 10.0
    """Seconds allowed to establish one database connection."""
    sqlite_busy_timeout: float = 30.0
    """Seconds SQLite waits on a locked database before failing."""

    prepare_threshold: int | None = 5
    """PostgreSQL: psycopg prepares a statement on the server once one connection has run
    its text this many times (0: at first use). None disables server-side preparation: set
    it behind a pooler in transaction or statement pooling mode (PgBouncer, pgcat, RDS
    Proxy), where the next transaction may run on a server connection that never prepared
    the statement. PgBouncer >= 1.22 with ``max_prepared_statements`` > 0 tracks prepares
    itself, so there (and with direct connections or session pooling) keep it on."""
    prepared_max: int = 100
    """How many prepared statements psycopg keeps per connection (least recently used
    ones are deallocated)."""

    cache_enabled: bool = True
    """Query-result cache on or off (off: no caching at all, immutable or mutable)."""
    cache_max_bytes: int = 64 * 1024 * 1024
    """Upper bound on the bytes held by the immutable cache (objects, parsed trees, commit
    index rows); least recently used entries are evicted beyond it. 0 caches nothing."""
    cache_ref_ttl: float = 5.0
    """Seconds a cached ref, ref listing or repository row may live; writes invalidate them
    at once (in this process, and in others on PostgreSQL through NOTIFY), so this bounds
    only what nothing announced (raw SQL writes, a listener that died silently). 0 keeps
    mutable results out of the cache."""
    notify_enabled: bool = True
    """PostgreSQL: announce every ref move with NOTIFY and listen for other processes' on a
    dedicated connection, for cross-process cache invalidation and ``store.subscribe``
    events. Off: no listener, no cross-process events, and refs are not cached (nothing
    would invalidate them). Keep it the same in every process sharing a database."""

    compression: str = "zlib"
    """Object compression: ``"none"``, ``"zlib"`` or ``"zstd"``."""
    compression_min_size: int = 64
    """Objects smaller than this many bytes are stored uncompressed."""
    compression_level: int = 3
    """Compression level passed to the codec."""

    batch_enabled: bool = True
    """Batch executor on or off: coalesce a unit's object writes and flush them in bulk
    (COPY on PostgreSQL). Off: every put_many is written at once with executemany."""
    write_pipeline: bool = True
    """Speculative commits: a commit assumes its branch is where this Store last moved it
    (or where the cache says), queues its writes and sends them together -- one round trip
    on PostgreSQL (psycopg pipeline mode) plus COMMIT -- and checks the compare-and-swap
    there; if the branch had moved, it rolls back and runs again the plain way, reading
    every ref first. Off: always the plain way."""
    batch_max_rows: int = 1000
    """Object writes are flushed after this many rows."""
    batch_max_bytes: int = 8 * 1024 * 1024
    """Object writes are flushed after this many pending bytes (uncompressed, so this also
    bounds the buffer's memory)."""

    retry_attempts: int = 5
    """How many times a transaction is attempted on serialization failure or disconnect."""
    retry_base_delay: float = 0.01
    """First backoff delay in seconds; doubles per attempt with full jitter."""
    retry_max_delay: float = 1.0
    """Cap on one backoff delay in seconds."""
    commit_rebase_attempts: int = 10
    """How often commit() re-applies a change set on a branch moved by a concurrent commit."""

    metrics_enabled: bool = True
    """The metrics middleware (per-operation counts, errors, latency percentiles)."""
    perf_tracemalloc: bool = False
    """Start tracemalloc so ``store.metrics()`` reports traced and peak bytes, live
    allocations and the top allocation sites. Slows every allocation: for diagnosis."""

    rate_limit: float | None = None
    """API optimizer, rate limiter: operations per second allowed to one caller
    (``govc_db.caller(...)``; ``"library"`` by default) on one repository, as a token bucket
    refilled at this rate; past it a call fails with RateLimited (``retry_after`` set).
    None switches the rate limiter off."""
    rate_burst: int = 100
    """Token-bucket size of the rate limiter: calls one caller may make at once on one
    repository before the rate applies."""
    breaker_failures: int | None = None
    """API optimizer, circuit breaker: after this many StoreUnavailable errors within
    ``breaker_reset`` seconds, calls fail fast with StoreUnavailable (no database round
    trip) for ``breaker_reset`` seconds, then one probe call is let through (half-open):
    its success closes the breaker, its failure opens it again. None switches it off."""
    breaker_reset: float = 30.0
    """Seconds an open circuit breaker fails fast before probing; also the window in which
    ``breaker_failures`` are counted."""

    replica_urls: tuple[str, ...] = field(default_factory=tuple)
    """PostgreSQL read replicas (streaming standbys of the primary ``url``): read-only
    units go to a healthy replica that has replayed this Store's last write (WAL LSN),
    else to the primary. Empty: every unit runs on the primary. Refused on SQLite.
    Passwords are masked in ``repr``."""

    # --- http ---
    coalesce_enabled: bool = False
    """API optimizer, request coalescing: identical concurrent read calls (same operation,
    repository, arguments and ref state) share one execution and its result. Never inside
    ``store.transaction()``. Off (the library's default: it costs every read a few
    microseconds, measured 25% of a warm cached read, and pays only under concurrent
    identical reads): every call runs on its own. ``govc-db serve`` turns it on."""
    max_in_flight: int | None = None
    """API optimizer, concurrency limiter: at most this many operations run at once in
    this Store; others queue for up to ``queue_timeout`` seconds and then fail with
    Overloaded (a StoreUnavailable). None switches the limiter off."""
    queue_timeout: float = 10.0
    """Seconds an operation waits for a slot of ``max_in_flight`` before Overloaded."""
    map_workers: int = 4
    """Threads of the worker pool behind ``store.map(fn, items)``; 1 runs the items one
    after another in the calling thread. Keep it at most ``pool_size + max_overflow``."""
    replica_check_interval: float = 2.0
    """Seconds between health checks of a read replica (state, timeline and replay LSN);
    an ejected replica is checked again after this long and re-admitted when it answers."""

    # --- interop ---
    import_slice_objects: int = 20_000
    """``import_git`` stores the objects of a git repository in transactions of this many
    objects each (refs move last, in one more); smaller slices bound memory and lock time."""
    push_max_pack_bytes: int = 512 * 1024 * 1024
    """A pack received by ``git push`` over smart HTTP larger than this is refused with
    nothing stored (like git's ``receive.maxInputSize``)."""
    fetch_deltas: bool = True
    """Packs sent to ``git clone``/``fetch`` hold a tree or blob as a delta against the
    previous version at the same path when that version is in the same pack (chains at
    most ``fetch_delta_depth`` long); False sends every object whole."""
    fetch_delta_depth: int = 50
    """Longest delta chain in a pack sent to git (git's own default for ``--depth``)."""
    clone_pack_cache_bytes: int = 256 * 1024 * 1024
    """Memory for the packs of whole-history clones kept by ``govc-db serve``, keyed by
    the commits they hold (content-addressed, so never stale): a later clone of the same
    or a newer tip sends the kept pack plus the objects since (as git reuses its packs).
    0 switches it off (every clone builds its pack)."""

    # --- chunks ---
    chunk_threshold: int | None = 8 * 1024 * 1024
    """Blobs of at least this many bytes are stored as content-defined chunks (each
    compressed on its own, shared between versions) and read back as streams; None
    switches chunked storage off (existing chunked blobs stay readable)."""
    chunk_avg_size: int = 1024 * 1024
    """Average chunk size of FastCDC (min a quarter of it, max four times), 1 KiB-4 MiB."""
    chunk_compression_level: int = 3
    """zstd level for chunks (a chunk that does not shrink is stored raw); 0 stores raw."""
    chunk_read_window: int = 4
    """Chunks fetched per query when a chunked blob is read (bounds a reader's memory)."""
    memory_optimizer: bool = False
    """The memory middleware: ``gc.freeze()`` after the Store opens, tuned collector
    thresholds, full collections between operations rather than inside them, and the
    ``memory`` metrics (RSS, bytes in flight). It tunes the whole process's collector, so
    a library leaves it off unless asked (a service's choice); ``govc-db serve`` turns it
    on."""
    memory_gc_threshold: int = 1_000
    """Generation-0 threshold of the collector while the memory optimizer runs (Python's
    default is 700); 100-1,000,000. Higher means fewer but longer pauses: on a commit
    loop (SQLite, 1,000-file tree) the longest collection took 0.9 ms of CPU at 700,
    0.8 ms at 1,000, 2.7 ms at 3,000 and 3.2 ms at 10,000."""
    memory_freeze_growth: float | None = 4.0
    """The memory optimizer freezes long-lived objects, and cyclic garbage among them is
    not reclaimed; when the frozen objects grow past this multiple of their number after
    the last full collection (plus what the query caches can hold, ``cache_max_bytes`` /
    100), one full collection (a pause proportional to the whole heap) runs between
    operations. Frozen garbage stays below ``growth - 1`` times the heap; 1.1-1,000.
    None: never (no pause grows with the heap, but an application that makes cyclic
    garbage of long-lived objects leaks it)."""

    # --- faults ---
    retry_budget: float = 3.0
    """Seconds a unit keeps re-running after a lost or refused connection, counted from its
    first attempt (``retry_attempts`` still bounds conflict retries). The default covers a
    PostgreSQL crash-recovery restart (all backends are restarted after one is killed,
    ~1.5 s) and a fast ``pg_ctl restart``; a genuine outage is reported after about this
    long, plus at most one ``connect_timeout``. 0: count ``retry_attempts`` only."""
    pooler_check: bool = True
    """PostgreSQL: on the first connection, detect a pooler (PgBouncer, pgcat, RDS Proxy)
    between the Store and the server, and if there is one switch server-side prepared
    statements off for that Store, with a warning (transaction pooling would otherwise mix
    up prepared statements between clients). Off: trust ``prepare_threshold`` as given,
    e.g. behind PgBouncer >= 1.21 with ``max_prepared_statements`` > 0."""
    listener_probe_interval: float = 30.0
    """PostgreSQL: seconds between the LISTEN connection's self-checks (a probe NOTIFY
    sent on a short-lived connection, which it must hear back). It also checks once on every
    connect. While a check fails -- LISTEN through a transaction-mode pooler hears nothing
    -- refs are not cached at all, so no read is staler than the database. 0: check only
    on connect."""

    # --- storage ---
    storage_optimizer: bool = True
    """Storage optimizer (:mod:`govc_db.storage`): a new blob, tree or commit is stored as
    a zstd delta against the previous version of the same path (the parent's tree, the
    parent commit) and full rows get adaptive zstd compression. False: every object is
    stored whole with ``compression``, as before; rows already written stay readable."""
    delta_max_depth: int = 10
    """Longest delta chain the storage optimizer builds (a full copy at least every N
    versions), bounding the rows a cold read decodes; 1-250."""
    delta_cache_bytes: int = 32 * 1024 * 1024
    """Bytes of decoded delta bases kept in memory (LRU) so chained reads and the next
    delta against a recent version need no query; 0 disables the cache."""
    commit_serialize: bool = True
    """Commits of this Store to one branch of one repository wait for each other in the
    process (a lock per repository and branch, outside any ``store.transaction()``)
    instead of racing in the database, so each wins its compare-and-swap at the first
    try (a commit that waited a second for its turn goes ahead without it). Other
    processes are still arbitrated by the compare-and-swap alone. False: the commits of
    the process race like those of different processes."""
    commit_group: int = 16
    """With ``commit_serialize``: the most commits queued for one branch that are written
    in one transaction (group commit, :mod:`govc_db.db.branchlocks`) -- each still its
    own commit, parent of the next, with its own result or error. 1: each commit in its
    own transaction."""
    commit_row_lock: bool = True
    """With ``commit_serialize``: a commit (or a group) first locks its branch's row in
    the database (``SELECT ... FOR UPDATE`` on PostgreSQL; a SQLite writer holds the
    database lock already) and builds on the head read with it, so a commit of another
    process (``serve --workers``) to that branch waits for it instead of losing the
    compare-and-swap and doing its work again. One round trip a transaction on
    PostgreSQL. False: processes are arbitrated by the compare-and-swap alone."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            checked = _check_type(f.name, str(f.type), getattr(self, f.name))
            if checked is not getattr(self, f.name):
                object.__setattr__(self, f.name, checked)
        _check_range("pool_size", self.pool_size, 1, 1000)
        _check_range("max_overflow", self.max_overflow, 0, 1000)
        _check_range("pool_timeout", self.pool_timeout, 0.0)
        _check_range("pool_pre_ping_idle", self.pool_pre_ping_idle, 0.0)
        if self.pool_recycle != -1:
            _check_range("pool_recycle", self.pool_recycle, 1.0)
        _check_range("connect_timeout", self.connect_timeout, 0.1)
        _check_range("sqlite_busy_timeout", self.sqlite_busy_timeout, 0.0)
        if self.prepare_threshold is not None:
            _check_range("prepare_threshold", self.prepare_threshold, 0, 1_000_000)
        _check_range("prepared_max", self.prepared_max, 1, 100_000)
        _check_range("cache_max_bytes", self.cache_max_bytes, 0)
        _check_range("cache_ref_ttl", self.cache_ref_ttl, 0.0)
        if self.compression not in ("none", "zlib", "zstd"):
            raise InvalidInput(
                f"Settings.compression must be 'none', 'zlib' or 'zstd', got {self.compression!r}"
            )
        _check_range("compression_min_size", self.compression_min_size, 0)
        level_max = 19 if self.compression == "zstd" else 9
        _check_range("compression_level", self.compression_level, 1, level_max)
        _check_range("batch_max_rows", self.batch_max_rows, 1, 1_000_000)
        _check_range("batch_max_bytes", self.batch_max_bytes, 1)
        _check_range("retry_attempts", self.retry_attempts, 1, 100)
        _check_range("retry_base_delay", self.retry_base_delay, 0.0)
        _check_range("retry_max_delay", self.retry_max_delay, 0.0)
        _check_range("commit_rebase_attempts", self.commit_rebase_attempts, 0, 1000)
        _check_range("commit_group", self.commit_group, 1, 1000)
        if self.rate_limit is not None:
            _check_range("rate_limit", self.rate_limit, 0.001)
        _check_range("rate_burst", self.rate_burst, 1)
        if self.breaker_failures is not None:
            _check_range("breaker_failures", self.breaker_failures, 1)
        _check_range("breaker_reset", self.breaker_reset, 0.0)
        # --- http ---
        if self.max_in_flight is not None:
            _check_range("max_in_flight", self.max_in_flight, 1, 100_000)
        _check_range("queue_timeout", self.queue_timeout, 0.0)
        _check_range("map_workers", self.map_workers, 1, 1024)
        _check_range("replica_check_interval", self.replica_check_interval, 0.0)

        # --- interop ---
        _check_range("import_slice_objects", self.import_slice_objects, 1, 10_000_000)
        _check_range("push_max_pack_bytes", self.push_max_pack_bytes, 32)
        _check_range("clone_pack_cache_bytes", self.clone_pack_cache_bytes, 0)
        _check_range("fetch_delta_depth", self.fetch_delta_depth, 1, 4095)

        # --- chunks ---
        if self.chunk_threshold is not None:
            _check_range("chunk_threshold", self.chunk_threshold, 1)
        _check_range("chunk_avg_size", self.chunk_avg_size, 1024, 4 * 1024 * 1024)
        _check_range("chunk_compression_level", self.chunk_compression_level, 0, 19)
        _check_range("chunk_read_window", self.chunk_read_window, 1, 1024)
        _check_range("memory_gc_threshold", self.memory_gc_threshold, 100, 1_000_000)
        if self.memory_freeze_growth is not None:
            _check_range("memory_freeze_growth", self.memory_freeze_growth, 1.1, 1_000.0)

        # --- faults ---
        _check_range("retry_budget", self.retry_budget, 0.0, 600.0)
        _check_range("listener_probe_interval", self.listener_probe_interval, 0.0)

        # --- storage ---
        _check_range("delta_max_depth", self.delta_max_depth, 1, 250)
        _check_range("delta_cache_bytes", self.delta_cache_bytes, 0)

    def __repr__(self) -> str:
        # Written by hand (dataclass keeps a class's own __repr__) to mask the passwords
        # replica URLs may carry: they must never reach a log line or a traceback.
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "replica_urls":
                value = tuple(_mask_url(u) for u in value)
            parts.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(parts)})"

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with ``changes`` applied (validated again)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise InvalidInput(f"Settings has no field {unknown[0]!r}")
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``GOVC_DB_<FIELD>`` variables (e.g. ``GOVC_DB_POOL_SIZE=10``).

        Booleans accept 1/0, true/false, yes/no, on/off; ``none`` sets an optional
        field to None; ``GOVC_DB_REPLICA_URLS`` is comma-separated.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(_ENV_PREFIX + f.name.upper())
            if raw is None:
                continue
            values[f.name] = _parse_env_value(f.name, str(f.type), raw)
        return cls(**values)


def _parse_env_value(name: str, type_text: str, raw: str) -> Any:
    text = raw.strip()
    if "None" in type_text and text.lower() in ("none", "null", ""):
        return None
    try:
        if type_text.startswith("bool"):
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if type_text.startswith("int"):
            return int(text)
        if type_text.startswith("float"):
            return float(text)
        if type_text.startswith("tuple"):
            return tuple(part.strip() for part in text.split(",") if part.strip())
    except ValueError:
        raise InvalidInput(
            f"environment variable {_ENV_PREFIX}{name.upper()} has an invalid value {raw!r}"
        ) from None
    return text
