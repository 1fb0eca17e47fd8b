"""Text rendering of the metrics dict (``store.performance_report()``).

One section per part: API, Concurrency, one per component (pool, statements, cache,
batch, transactions ... in the order the manager lists them) and Memory. Components
unknown to this module are rendered generically, key by key.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["render_report"]

_SKIP = frozenset({"dialect", "pid", "components", "api", "concurrency", "memory"})


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return " / ".join(_fmt(v) for v in value) if value else "-"
    return str(value)


def _bytes(n: Any) -> str:
    if not isinstance(n, int | float):
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover - loop always returns


def _flatten(stats: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in stats.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, name + ".")
            continue
        yield name, value


def _title(name: str) -> str:
    return f"== {name.replace('_', ' ').capitalize()} =="


def _api(api: Mapping[str, Any]) -> list[str]:
    ops: Mapping[str, Mapping[str, Any]] = api.get("operations") or {}
    if not ops:
        return ["(no operations recorded; metrics middleware off or idle)"]
    width = max(20, *(len(name) + 2 for name in ops))
    lines = [
        f"{'operation':<{width}}{'calls':>8}{'errors':>8}{'p50 ms':>10}{'p95 ms':>10}"
        f"{'p99 ms':>10}{'max ms':>10}"
    ]
    for name, s in ops.items():
        lines.append(
            f"{name:<{width}}{s.get('calls', 0):>8}{s.get('errors', 0):>8}"
            f"{s.get('p50_ms', 0.0):>10.2f}{s.get('p95_ms', 0.0):>10.2f}"
            f"{s.get('p99_ms', 0.0):>10.2f}{s.get('max_ms', 0.0):>10.2f}"
        )
    rate = api.get("error_rate")
    lines.append(
        f"total: {api.get('calls', 0)} calls, {api.get('errors', 0)} errors"
        + (f" ({rate * 100:.1f} %)" if isinstance(rate, float) else "")
    )
    return lines


def _concurrency(c: Mapping[str, Any]) -> list[str]:
    pool = "-"
    if c.get("pool_size") is not None:
        pool = f"{_fmt(c.get('pool_checked_out'))} of {c['pool_size']}"
        pool += f" (+{_fmt(c.get('pool_overflow'))} overflow)"
    return [
        f"operations in flight: {_fmt(c.get('in_flight'))}",
        f"pool connections checked out: {pool}",
        f"threads: {_fmt(c.get('threads'))}",
    ]


def _memory(memory: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    gc = memory.get("gc") or {}
    if gc:
        lines.append(
            f"gc: {'enabled' if gc.get('enabled') else 'DISABLED'}; collections per generation "
            f"{_fmt(gc.get('collections'))}; collected {_fmt(gc.get('collected'))}; "
            f"uncollectable {_fmt(gc.get('uncollectable'))}"
        )
        by_gen = gc.get("max_pause_ms_by_generation") or []
        lines.append(
            f"gc pauses: {_fmt(gc.get('pauses'))} measured, max {_fmt(gc.get('max_pause_ms'))} ms"
            f" (by generation {_fmt(by_gen)} ms), total {_fmt(gc.get('total_pause_ms'))} ms"
        )
    tm = memory.get("tracemalloc") or {}
    if not tm.get("enabled"):
        lines.append("tracemalloc: off (enable with Settings(perf_tracemalloc=True))")
    elif not tm.get("tracing"):
        lines.append("tracemalloc: enabled but not tracing")
    else:
        lines.append(
            f"tracemalloc: current {_bytes(tm.get('current_bytes'))}, peak "
            f"{_bytes(tm.get('peak_bytes'))}, {_fmt(tm.get('blocks'))} live blocks, "
            f"tracing overhead {_bytes(tm.get('overhead_bytes'))}"
        )
        for site in tm.get("top") or []:
            lines.append(
                f"  {site.get('where')}: {_bytes(site.get('size_bytes'))} in "
                f"{_fmt(site.get('blocks'))} blocks"
            )
    return lines


def render_report(metrics: Mapping[str, Any], *, api_source: str = "metrics") -> str:
    """The metrics dict of :meth:`PerformanceManager.collect` (plus dialect and pid) as text."""
    head = f"govc_db performance report ({metrics.get('dialect', '?')})"
    if metrics.get("pid") is not None:
        head += f"\nprocess {metrics['pid']}"
    sections: list[tuple[str, list[str]]] = [
        ("== API ==", _api(metrics.get("api") or {})),
        ("== Concurrency ==", _concurrency(metrics.get("concurrency") or {})),
    ]
    for name, stats in metrics.items():
        if name in _SKIP or name == api_source or not isinstance(stats, Mapping):
            continue
        pairs = list(_flatten(stats))
        width = max((len(k) for k, _ in pairs), default=0) + 2
        lines = [f"{k:<{width}}{_fmt(v)}" for k, v in pairs] or ["(no stats)"]
        sections.append((_title(name), lines))
    sections.append(("== Memory ==", _memory(metrics.get("memory") or {})))
    out = [head]
    for title, lines in sections:
        out += ["", title, *lines]
    return "\n".join(out)
