"""``python -m bench report``: one self-contained HTML page of a run against its baseline.

Plots are drawn with matplotlib (the ``bench`` extra) on its object API (no pyplot state)
and embedded as base64 PNG ``<img>`` tags, so the page is a single file to attach to a
pull request or a CI artifact. Per backend:

* **ours relative to each peer**: every line's ratio turned so that > 1 means ours is
  better (ours / peer when higher is better, peer / ours when lower is better), on a log
  scale, coloured by peer, with the baseline's value as a marker;
* **current against baseline**: how much each compared figure got better or worse, with
  the threshold marked (the same rows ``bench compare`` prints);

then a table of every figure.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from html import escape
from typing import Any

from bench.regress import Row, compare_runs, key_of

__all__ = ["render_html"]

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; max-width: 1400px; }
table { border-collapse: collapse; margin: 1em 0; font-size: 12px; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: left; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.bad { color: #b00; font-weight: bold; } .good { color: #070; } .warn { color: #a60; }
img { max-width: 100%; display: block; margin: 1em 0; }
code { background: #f4f4f4; padding: 0 3px; }
"""

BAD = {"regressed", "broke", "output differs"}
WARN = {"worse, within noise"}
CLIP = 100.0
GOOD = {"improved", "now runs"}


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="plot" src="data:image/png;base64,{data}">'


def _advantage(line: dict[str, Any]) -> float | None:
    """The ratio turned so that > 1 means ours is better."""
    ratio = line.get("ratio_ours_over_peer")
    if line.get("status") != "ok" or not ratio:
        return None
    return float(ratio) if line["direction"] == "higher is better" else 1 / float(ratio)


def _short(text: str, width: int = 90) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _label(line: dict[str, Any]) -> str:
    return _short(f"{line['workload']}: {line['case']} [{line['unit']}] — vs {line['peer']}", 100)


def _ratio_plot(
    backend: str, lines: Sequence[dict[str, Any]], baseline: dict[Any, dict[str, Any]]
) -> str:
    import matplotlib
    from matplotlib.figure import Figure

    shown = [ln for ln in lines if _advantage(ln) is not None]
    if not shown:
        return "<p>No ratios to plot (no line ran with its peer).</p>"
    fig = Figure(figsize=(11, 0.32 * len(shown) + 1.4))
    ax = fig.subplots()
    peers = list(dict.fromkeys(ln["peer"] for ln in shown))
    palette = matplotlib.colormaps["tab20"]
    colours = {p: palette(i % 20) for i, p in enumerate(peers)}
    ys = list(range(len(shown)))[::-1]
    for y, ln in zip(ys, shown, strict=True):
        ax.barh(y, _advantage(ln) or 0, color=colours[ln["peer"]], height=0.7)
        old = baseline.get(key_of(ln))
        before = _advantage(old) if old is not None else None
        if before is not None:
            ax.plot([before], [y], marker="|", color="black", markersize=14, mew=2)
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_yticks(ys, [_label(ln) for ln in shown], fontsize=7)
    ax.set_xlabel("ours relative to the peer (log scale): > 1 ours better, < 1 peer better")
    ax.set_title(f"{backend}: ratio to each peer (bars: current; black ticks: baseline)")
    handles = [ax.barh([0], [0], color=colours[p])[0] for p in peers]
    ax.legend(
        handles,
        [_short(p, 60) for p in peers],
        fontsize=7,
        title="peer",
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
    )
    return _png(fig)


def _change_plot(backend: str, rows: Sequence[Row], threshold: float) -> str:
    from matplotlib.figure import Figure

    shown = [r for r in rows if r.worse_by is not None]
    if not shown:
        return "<p>Nothing comparable with the baseline.</p>"
    fig = Figure(figsize=(11, 0.32 * len(shown) + 1.4))
    ax = fig.subplots()
    ys = list(range(len(shown)))[::-1]
    for y, r in zip(ys, shown, strict=True):
        better = -(r.worse_by or 0.0) * 100
        colour = {**dict.fromkeys(BAD, "#b00"), **dict.fromkeys(WARN, "#d80")}.get(
            r.verdict, "#070" if r.verdict in GOOD else "#888"
        )
        # One outlier must not squash the rest: clip at +-CLIP % and print the value.
        shown_value = max(-CLIP, min(CLIP, better))
        ax.barh(y, shown_value, color=colour, height=0.7)
        if shown_value != better:
            ax.text(
                shown_value * 0.98,
                y,
                f"{better:+,.0f}% ",
                va="center",
                ha="right" if better > 0 else "left",
                fontsize=7,
                color="white",
            )
    ax.set_xlim(-CLIP * 1.05, CLIP * 1.05)
    for x in (-threshold * 100, threshold * 100):
        ax.axvline(x, color="black", linestyle="--", linewidth=0.8)
    ax.axvline(0, color="black", linewidth=1)
    ax.set_yticks(ys, [_short(r.label) for r in shown], fontsize=7)
    ax.set_xlabel(
        "% better (+) or worse (-) than the baseline; dashed: the threshold; "
        "red: regressed, orange: worse within noise, green: improved"
    )
    ax.set_title(f"{backend}: current against baseline (ratios to peers where possible)")
    return _png(fig)


def _machine(run: dict[str, Any]) -> str:
    m = run.get("machine", {})
    pg = m.get("postgresql_server") or {}
    parts = [
        f"{m.get('date_utc', '?')} UTC",
        f"{m.get('cores')} cores ({escape(str(m.get('cpu')))})",
        f"Python {m.get('python')}",
        f"SQLite {m.get('sqlite')}",
        f"PostgreSQL {escape(str(pg.get('version', 'n/a')))}",
        f"git {m.get('git')}",
        f"dulwich {m.get('dulwich')}",
        f"govc_db {m.get('govc_db')} @ {m.get('govc_db_commit')}"
        + (" + uncommitted changes" if m.get("govc_db_worktree_dirty") else ""),
        f"mode {run.get('config', {}).get('mode', '?')}",
    ]
    return ", ".join(parts) + f"; command <code>{escape(str(run.get('command', '?')))}</code>"


def _fmt(stats: dict[str, Any] | None) -> str:
    if not stats:
        return "-"
    med = float(stats["median"])
    text = f"{med:,.0f}" if abs(med) >= 100 else f"{med:.3g}"
    return f"{text} <small>({float(stats['min']):.3g}&ndash;{float(stats['max']):.3g})</small>"


def _table(lines: Sequence[dict[str, Any]], rows: dict[Any, Row]) -> str:
    head = (
        "<tr><th>workload</th><th>unit</th><th>ours</th><th>peer</th><th>peer figure</th>"
        "<th>ratio</th><th>verdict</th><th>same</th><th>vs baseline</th></tr>"
    )
    body = []
    for ln in lines:
        row = rows.get(key_of(ln))
        ratio = ln.get("ratio_ours_over_peer")
        ours = (
            _fmt(ln.get("ours"))
            if ln["status"] == "ok"
            else escape(f"{ln['status']}: {ln.get('reason', '')}")
        )
        change = ""
        if row is not None:
            cls = next(
                (
                    c
                    for c, vs in (("bad", BAD), ("warn", WARN), ("good", GOOD))
                    if row.verdict in vs
                ),
                "",
            )
            delta = "" if row.worse_by is None else f" ({-row.worse_by:+.1%})"
            change = f'<span class="{cls}">{escape(row.verdict)}{delta}</span>'
        same = {True: "yes", False: '<span class="bad">NO</span>', None: "-"}[
            ln.get("same_result_as_peer")
        ]
        cells = [
            escape(f"{ln['workload']}: {ln['case']}"),
            escape(ln["unit"]),
            ours,
            escape(ln["peer"]),
            _fmt(ln.get("peer_figure")),
            "-" if ratio is None else f"{float(ratio):.3g}",
            escape(ln.get("verdict", "")),
            same,
            change,
        ]
        body.append(
            "<tr>"
            + "".join(
                f'<td class="n">{c}</td>' if i in (2, 4, 5) else f"<td>{c}</td>"
                for i, c in enumerate(cells)
            )
            + "</tr>"
        )
    return f"<table>{head}{''.join(body)}</table>"


def render_html(
    current: dict[str, Any], baseline: dict[str, Any] | None, *, threshold: float = 0.10
) -> str:
    """The report page: machine lines, then per backend the two plots and the table."""
    rows = compare_runs(baseline, current, threshold=threshold) if baseline is not None else []
    by_key = {r.key: r for r in rows}
    old = {key_of(ln): ln for ln in baseline["results"]} if baseline is not None else {}
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>govc_db bench report</title><style>{CSS}</style></head><body>",
        "<h1>govc_db benchmark report</h1>",
        "<p>Every figure is measured side by side with its peer in the same run; the ratio "
        "is ours / peer on the medians of repeated samples (min&ndash;max in brackets).</p>",
        f"<p><b>Current:</b> {_machine(current)}</p>",
    ]
    if baseline is not None:
        bad = sum(1 for r in rows if r.verdict in BAD)
        parts.append(f"<p><b>Baseline:</b> {_machine(baseline)}</p>")
        parts.append(
            f"<p><b>{bad} regression{'s' if bad != 1 else ''}</b> beyond {threshold:.0%} "
            f"({len(rows)} metrics compared).</p>"
        )
    else:
        parts.append("<p>No baseline: run <code>python -m bench baseline</code> first.</p>")
    backends = list(dict.fromkeys(ln["backend"] for ln in current["results"]))
    for backend in backends:
        lines = [ln for ln in current["results"] if ln["backend"] == backend]
        parts.append(f"<h2>{escape(backend)}</h2>")
        parts.append(_ratio_plot(backend, lines, old))
        if baseline is not None:
            mine = [r for r in rows if r.key[0] == backend]
            parts.append(_change_plot(backend, mine, threshold))
        parts.append(_table(lines, by_key))
    parts.append("</body></html>")
    return "\n".join(parts)
