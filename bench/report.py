"""Results, statistics, machine information and their rendering (rich table, JSON).

A :class:`Result` is one line of the report: our figure and one peer's figure for the
same workload, measured interleaved in the same run, with min/median/max over the
repeats. The ratio is always ours / peer on the medians; ``higher_is_better`` says
which way is good, and the verdict turns that into plain words.
"""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["Result", "Stats", "machine_info", "render", "to_json", "to_markdown", "write_json"]

OK = "ok"
NOT_SUPPORTED = "not supported"
FAILED = "failed"
#: Units of sizes, whose verdict says "smaller"/"larger" instead of "faster"/"slower".
SIZE_UNITS = frozenset({"B", "KiB", "MiB", "GiB"})


@dataclass(frozen=True, slots=True)
class Stats:
    """min/median/max of a figure over its repeats."""

    samples: tuple[float, ...]

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stats | None:
        """None when nothing was measured (so a missing figure is never a zero)."""
        return cls(tuple(samples)) if samples else None

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)

    def as_dict(self) -> dict[str, Any]:
        return {
            "min": self.min,
            "median": self.median,
            "max": self.max,
            "repeats": len(self.samples),
            "samples": list(self.samples),
        }


@dataclass(slots=True)
class Result:
    """One report line: ours vs one peer on one workload and backend."""

    workload: str
    case: str
    backend: str
    unit: str
    higher_is_better: bool
    peer: str
    ours: Stats | None = None
    theirs: Stats | None = None
    status: str = OK
    """``ok``, ``not supported`` (our code raises NotImplementedError) or ``failed``."""
    reason: str = ""
    check: bool | None = None
    """Whether our output equalled the peer's (ids, bytes, paths); None if not compared."""
    notes: dict[str, Any] = field(default_factory=dict)
    target: bool = False
    """The "peer" is a goal (e.g. 10 ms of GC pause), not a measured contender."""

    @property
    def ratio(self) -> float | None:
        """ours / peer on the medians."""
        if self.ours is None or self.theirs is None or self.theirs.median == 0:
            return None
        return self.ours.median / self.theirs.median

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"

    @property
    def verdict(self) -> str:
        """The ratio in words: how many times faster or slower we are."""
        r = self.ratio
        if r is None or r == 0:
            return ""
        better = r > 1 if self.higher_is_better else r < 1
        factor = r if r >= 1 else 1 / r
        if self.target:
            return "meets the goal" if better or r == 1 else f"misses the goal {factor:.1f}x"
        if factor < 1.05:
            return "on par"
        words = ("smaller", "larger") if self.unit in SIZE_UNITS else ("faster", "slower")
        return f"ours {factor:.1f}x {words[0] if better else words[1]}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "case": self.case,
            "backend": self.backend,
            "unit": self.unit,
            "direction": self.direction,
            "peer": self.peer,
            "status": self.status,
            "reason": self.reason,
            "ours": None if self.ours is None else self.ours.as_dict(),
            "peer_figure": None if self.theirs is None else self.theirs.as_dict(),
            "ratio_ours_over_peer": self.ratio,
            "verdict": self.verdict,
            "same_result_as_peer": self.check,
            "peer_is_target": self.target,
            "notes": self.notes,
        }


# -- machine information -------------------------------------------------------------------
def _run(*cmd: str) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def machine_info(pg_server: dict[str, str] | None) -> dict[str, Any]:
    """Cores, CPU, Python, SQLite, PostgreSQL server, git, dulwich and library versions."""
    import govc_db

    repo_root = Path(__file__).resolve().parent.parent
    return {
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu": _cpu_model(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "postgresql_server": pg_server,
        "git": (_run("git", "--version") or "").removeprefix("git version ") or None,
        "dulwich": _version("dulwich"),
        "psycopg": _version("psycopg"),
        "sqlalchemy": _version("sqlalchemy"),
        "govc_db": govc_db.__version__,
        "govc_db_commit": _run("git", "-C", str(repo_root), "rev-parse", "--short", "HEAD"),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "govc_db_worktree_dirty": bool(
            _run("git", "-C", str(repo_root), "status", "--porcelain", "--untracked-files=no")
        ),
    }


# -- rendering -----------------------------------------------------------------------------
def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _stats_cell(stats: Stats | None, missing: str) -> str:
    if stats is None:
        return missing
    return f"{_fmt(stats.median)} [dim]({_fmt(stats.min)}-{_fmt(stats.max)})[/]"


def render(results: Sequence[Result], info: dict[str, Any], console: Console) -> None:
    """Print the machine line and one table per backend."""
    pg = info.get("postgresql_server") or {}
    console.print(
        f"[bold]govc_db bench[/] {info['date_utc']} UTC - {info['cores']} cores ({info['cpu']}), "
        f"Python {info['python']}, SQLite {info['sqlite']}, "
        f"PostgreSQL {pg.get('version', 'n/a')}, git {info['git']}, "
        f"dulwich {info['dulwich'] or 'not installed'}"
    )
    for backend in dict.fromkeys(r.backend for r in results):
        table = Table(
            title=f"backend: {backend} - median (min-max) over repeats; ratio = ours / peer",
            title_justify="left",
        )
        for name, justify in (
            ("workload", "left"),
            ("unit", "left"),
            ("ours", "right"),
            ("peer", "left"),
            ("peer figure", "right"),
            ("ratio", "right"),
            ("direction", "left"),
            ("verdict", "left"),
            ("same result", "center"),
        ):
            table.add_column(name, justify=justify)  # type: ignore[arg-type]
        for r in (r for r in results if r.backend == backend):
            ratio = r.ratio
            ours = _stats_cell(r.ours, f"[yellow]{r.status}[/]: {r.reason}")
            peer_error = r.notes.get("peer_error")
            theirs = _stats_cell(
                r.theirs, f"[yellow]peer failed[/]: {peer_error}" if peer_error else "-"
            )
            table.add_row(
                f"{r.workload}: {r.case}",
                r.unit,
                ours,
                r.peer,
                theirs,
                "-" if ratio is None else f"{ratio:.3g}",
                r.direction,
                r.verdict,
                {True: "[green]yes[/]", False: "[red]NO[/]", None: "-"}[r.check],
            )
        console.print(table)


def _md_stats(stats: Stats | None, missing: str) -> str:
    if stats is None:
        return missing
    return f"{_fmt(stats.median)} ({_fmt(stats.min)}-{_fmt(stats.max)})"


def to_markdown(results: Sequence[Result], info: dict[str, Any], command: str) -> str:
    """The tables as GitHub markdown (what bench/RESULTS.md quotes)."""
    pg = info.get("postgresql_server") or {}
    lines = [
        f"`{command}` - finished {info['date_utc']} UTC; load average (1, 5, 15 min) "
        f"{info.get('load_average_at_start')} at start, {info['load_average_1_5_15']} at end",
        "",
        f"{info['cores']} cores ({info['cpu']}), {info['platform']}; Python {info['python']}, "
        f"SQLite {info['sqlite']}, PostgreSQL {pg.get('version', 'n/a')} "
        f"(synchronous_commit={pg.get('synchronous_commit', '?')}, fsync={pg.get('fsync', '?')}), "
        f"git {info['git']}, dulwich {info['dulwich'] or 'not installed'}, "
        f"psycopg {info['psycopg']}, SQLAlchemy {info['sqlalchemy']}, "
        f"govc_db {info['govc_db']} @ {info['govc_db_commit']}"
        + (" + uncommitted changes" if info["govc_db_worktree_dirty"] else ""),
    ]
    for backend in dict.fromkeys(r.backend for r in results):
        lines += [
            "",
            f"**{backend}** - median (min-max) over repeats; ratio = ours / peer",
            "",
            "| workload | unit | ours | peer | peer figure | ratio | direction | verdict | same |",
            "|---|---|--:|---|--:|--:|---|---|:-:|",
        ]
        for r in (r for r in results if r.backend == backend):
            ratio = r.ratio
            peer_error = r.notes.get("peer_error")
            cells = [
                f"{r.workload}: {r.case}",
                r.unit,
                _md_stats(r.ours, f"{r.status}: {r.reason}"),
                f"`{r.peer}`" if r.peer.startswith("git ") else r.peer,
                _md_stats(r.theirs, f"peer failed: {peer_error}" if peer_error else "-"),
                "-" if ratio is None else f"{ratio:.3g}",
                r.direction,
                r.verdict,
                {True: "yes", False: "NO", None: "-"}[r.check],
            ]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def to_json(
    results: Sequence[Result], info: dict[str, Any], command: str, config: dict[str, Any]
) -> dict[str, Any]:
    """The whole run as a JSON-ready dict."""
    return {
        "command": command,
        "machine": info,
        "config": config,
        "results": [r.as_dict() for r in results],
    }


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
