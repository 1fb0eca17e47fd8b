"""The regression workflow's logic: compare a run with a baseline, metric by metric.

Both are the JSON payloads the suite writes (``bench.report.to_json``). A metric is one
result line, keyed by (backend, workload, case, peer, unit). By default the figure
compared is the **ratio ours / peer**, measured in the same run: on a noisy or different
machine the peer slows down with us, so the ratio moves only when our code does. When a
line has no ratio on either side (its peer failed), or with ``basis="ours"``, our own
median is compared instead, and the row says so.

A metric got worse when its median moved the wrong way by more than ``threshold`` (a
fraction): for a higher-is-better figure ``(baseline - current) / baseline``, for a
lower-is-better one ``(current - baseline) / baseline``. It **regressed** when, in
addition, the samples do not overlap: every sample of the current run is worse than
every sample of the baseline (the samples are per-repeat ratios, ours / peer of the same
repeat). Otherwise it is "worse, within noise": printed, but only ``strict`` fails on it.
With 3 repeats on each side, disjoint samples happen by chance 1 time in 20; with 5,
1 in 250; with 2, 1 in 6, so fewer than three samples never conclude -- except sizes
(stored MiB, peak RSS), which are exact with one sample, so the threshold decides.

A line whose peer is a goal (the GC pause's 10 ms) regresses only when it misses the goal
now and met it before. A line that ran before and now
fails or is not supported, or whose output no longer equals the peer's, is a regression
too. Lines only in one of the two runs are listed, not failed: a run of one backend is
comparable with a baseline of both.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.report import SIZE_UNITS

__all__ = [
    "BAD",
    "NOISY_BAD",
    "Row",
    "compare_runs",
    "key_of",
    "load",
    "mismatches",
    "regressions",
    "render_rows",
]

Key = tuple[str, str, str, str, str]

#: Verdicts that fail ``bench compare``.
BAD = frozenset({"regressed", "broke", "output differs"})
#: Verdicts that fail ``bench compare --strict`` as well.
NOISY_BAD = frozenset({"worse, within noise"})


@dataclass(frozen=True, slots=True)
class Row:
    """One metric of the comparison."""

    key: Key
    unit: str
    higher_is_better: bool
    basis: str
    """ "ratio" (ours / peer), "ours" (our median), or "" when nothing was compared."""
    baseline: float | None
    current: float | None
    worse_by: float | None
    """Fraction the figure got worse by (negative: better); None when not compared."""
    verdict: str

    @property
    def label(self) -> str:
        _, workload, case, peer, unit = self.key
        return f"{workload}: {case} [{unit}] vs {peer}"


def load(path: Path) -> dict[str, Any]:
    """A run's JSON payload; ``ValueError`` when it is not one."""
    payload = json.loads(path.read_text())
    if not isinstance(payload, dict) or not isinstance(payload.get("results"), list):
        raise ValueError(f"{path} is not a bench result file (no 'results' list)")
    return payload


def key_of(line: dict[str, Any]) -> Key:
    return (line["backend"], line["workload"], line["case"], line["peer"], line["unit"])


def _samples(stats: dict[str, Any] | None) -> list[float]:
    if not stats:
        return []
    return [float(x) for x in stats.get("samples") or [stats["median"]]]


def _figure(line: dict[str, Any], basis: str) -> tuple[float, list[float]] | None:
    """(median, samples) of the compared figure, or None when the line has none."""
    if line.get("status") != "ok":
        return None
    ours = _samples(line.get("ours"))
    if not ours:
        return None
    if basis == "ours":
        return float(line["ours"]["median"]), ours
    ratio, peer = line.get("ratio_ours_over_peer"), _samples(line.get("peer_figure"))
    if ratio is None or not peer or 0 in peer:
        return None
    if len(peer) == len(ours):  # measured interleaved: sample i of each is repeat i
        return float(ratio), [o / p for o, p in zip(ours, peer, strict=True)]
    median = float(line["peer_figure"]["median"])
    return float(ratio), [o / median for o in ours]


def _worse_by(baseline: float, current: float, higher_is_better: bool) -> float:
    if higher_is_better:
        return (baseline - current) / baseline
    return (current - baseline) / baseline


def _disjoint(before: list[float], after: list[float], higher_is_better: bool, exact: bool) -> bool:
    """Whether every ``after`` sample is worse than every ``before`` sample, with enough
    samples for that to mean something: three or more each, or one each of an ``exact``
    figure (a size; a single timing proves nothing).
    """
    if min(len(before), len(after)) < 3 and not (exact and len(before) == len(after) == 1):
        return False
    if higher_is_better:
        return max(after) < min(before)
    return min(after) > max(before)


def _verdict(
    old: dict[str, Any],
    new: dict[str, Any],
    a: tuple[float, list[float]],
    b: tuple[float, list[float]],
    worse: float,
    threshold: float,
    higher: bool,
    basis: str,
) -> str:
    if old.get("same_result_as_peer") is True and new.get("same_result_as_peer") is False:
        return "output differs"
    if new.get("peer_is_target"):
        # The ratio to a goal is 1.0 at the goal.
        goal = 1.0 if basis == "ratio" else float(new["peer_figure"]["median"])
        if not (b[0] < goal if higher else b[0] > goal):
            return "meets the goal"
        if not (a[0] < goal if higher else a[0] > goal):
            return "regressed"
        return "still misses the goal"  # a maximum of one run: its size is noise
    exact = new.get("unit") in SIZE_UNITS
    if worse > threshold:
        return "regressed" if _disjoint(a[1], b[1], higher, exact) else "worse, within noise"
    if worse < -threshold:
        return "improved" if _disjoint(b[1], a[1], higher, exact) else "better, within noise"
    return "ok"


def _row(
    old: dict[str, Any] | None, new: dict[str, Any] | None, threshold: float, basis: str
) -> Row:
    line = new if new is not None else old
    assert line is not None
    key, unit = key_of(line), line["unit"]
    higher = line["direction"] == "higher is better"
    if old is None or new is None:
        verdict = "new" if old is None else "missing"
        return Row(key, unit, higher, "", None, None, None, verdict)
    old_ok, new_ok = old["status"] == "ok", new["status"] == "ok"
    if old_ok and not new_ok:
        return Row(key, unit, higher, "", None, None, None, "broke")
    if not old_ok:
        verdict = "now runs" if new_ok else f"still {new['status']}"
        return Row(key, unit, higher, "", None, None, None, verdict)
    used = basis
    a, b = _figure(old, basis), _figure(new, basis)
    if basis == "ratio" and (a is None or b is None):
        used, a, b = "ours", _figure(old, "ours"), _figure(new, "ours")
    if a is None or b is None or a[0] == 0:
        return Row(key, unit, higher, "", None, None, None, "not comparable")
    worse = _worse_by(a[0], b[0], higher)
    verdict = _verdict(old, new, a, b, worse, threshold, higher, used)
    return Row(key, unit, higher, used, a[0], b[0], worse, verdict)


def compare_runs(
    baseline: dict[str, Any],
    current: dict[str, Any],
    *,
    threshold: float = 0.10,
    basis: str = "ratio",
) -> list[Row]:
    """One row per metric of either run: the current run's order, then missing ones."""
    if basis not in ("ratio", "ours"):
        raise ValueError(f"basis must be 'ratio' or 'ours', not {basis!r}")
    if threshold < 0:
        raise ValueError("threshold must be >= 0")
    old = {key_of(r): r for r in baseline["results"]}
    new = {key_of(r): r for r in current["results"]}
    rows = [_row(old.get(k), r, threshold, basis) for k, r in new.items()]
    rows += [_row(r, None, threshold, basis) for k, r in old.items() if k not in new]
    return rows


def regressions(rows: Iterable[Row], *, strict: bool = False) -> list[Row]:
    """The rows that fail ``bench compare`` (with ``strict``, also those within noise)."""
    bad = BAD | NOISY_BAD if strict else BAD
    return [r for r in rows if r.verdict in bad]


def mismatches(baseline: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Differences that make the comparison less meaningful (warnings, not failures)."""
    out = []
    bc, cc = baseline.get("config", {}), current.get("config", {})
    bs, cs = bc.get("sizes") or {}, cc.get("sizes") or {}
    if bs != cs:
        changed = ", ".join(
            f"{k} {bs.get(k)} -> {cs.get(k)}"
            for k in sorted(set(bs) | set(cs))
            if bs.get(k) != cs.get(k)
        )
        out.append(
            f"sizes differ (baseline {bc.get('mode', '?')}, current {cc.get('mode', '?')}: "
            f"{changed}): cases named after a size do not match, others sample differently"
        )
    bm, cm = baseline.get("machine", {}), current.get("machine", {})
    for field in ("cores", "cpu", "python", "sqlite", "git", "postgresql_server"):
        if bm.get(field) != cm.get(field):
            out.append(f"{field} differs: baseline {bm.get(field)!r}, current {cm.get(field)!r}")
    return out


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


_STYLE = {
    "regressed": "bold red",
    "broke": "bold red",
    "output differs": "bold red",
    "worse, within noise": "yellow",
    "improved": "green",
    "now runs": "green",
}


def render_rows(rows: Sequence[Row], console: Console, threshold: float) -> None:
    table = Table(
        title=f"bench compare: threshold {threshold:.0%}; 'change' is how much worse (+) or "
        "better (-) the figure got",
        title_justify="left",
    )
    for name, justify in (
        ("backend", "left"),
        ("metric", "left"),
        ("compared", "left"),
        ("baseline", "right"),
        ("current", "right"),
        ("change", "right"),
        ("verdict", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        style = _STYLE.get(r.verdict, "")
        change = "-" if r.worse_by is None else f"{r.worse_by:+.1%} worse"
        if r.worse_by is not None and r.worse_by < 0:
            change = f"{-r.worse_by:.1%} better"
        compared = {"ratio": "ratio ours/peer", "ours": f"ours ({r.unit})"}.get(r.basis, "-")
        table.add_row(
            r.key[0],
            escape(r.label),
            compared,
            _fmt(r.baseline),
            _fmt(r.current),
            change,
            f"[{style}]{r.verdict}[/]" if style else r.verdict,
        )
    console.print(table)
