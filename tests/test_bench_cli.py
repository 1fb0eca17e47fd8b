"""The bench's regression workflow (compare, update, report) on synthetic result files.

No benchmark runs here: the payloads are built with the bench's own Result/to_json, so
they have exactly the shape a run writes.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest

from bench.__main__ import main, parse_args
from bench.regress import compare_runs
from bench.report import Result, Stats, to_json

MACHINE = {"cores": 2, "cpu": "test cpu", "python": "3.11", "date_utc": "2026-01-01 00:00:00"}


def line(
    ours: float | None,
    peer: float | None,
    *,
    workload: str = "1 commit",
    case: str = "one-file commit",
    peer_name: str = "raw psycopg",
    unit: str = "commits/s",
    higher: bool = True,
    backend: str = "postgresql",
    status: str = "ok",
    same: bool | None = True,
    target: bool = False,
) -> Result:
    r = Result(workload, case, backend, unit, higher, peer_name, target=target)
    r.ours = None if ours is None else Stats.of([ours * 0.9, ours, ours * 1.1])
    r.theirs = None if peer is None else Stats.of([peer, peer, peer])
    r.status = status
    r.reason = "" if status == "ok" else "core.py:thing not implemented yet"
    r.check = same
    return r


def payload(*results: Result, mode: str = "quick") -> dict[str, Any]:
    config = {"mode": mode, "sizes": {"history": 1000}, "workloads": [], "backends": []}
    return to_json(list(results), dict(MACHINE), "python -m bench baseline", config)


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data))
    return path


def compare(tmp_path: Path, old: dict[str, Any], new: dict[str, Any], *extra: str) -> int:
    base = write(tmp_path / "baseline.json", old)
    cur = write(tmp_path / "current.json", new)
    return main(["compare", "--file", str(base), "--current", str(cur), *extra])


def test_compare_flags_a_ratio_regression_beyond_the_threshold_and_exits_nonzero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # ours/peer falls from 0.5 to 0.4: 20 % worse.
    status = compare(tmp_path, payload(line(50, 100)), payload(line(40, 100)))
    out = capsys.readouterr().out
    assert status == 1
    assert "regressed" in out
    assert "1 regression(s)" in out


def test_compare_passes_within_the_threshold_and_honours_a_custom_one(tmp_path: Path) -> None:
    old, new = payload(line(50, 100)), payload(line(46, 100))  # 8 % worse
    assert compare(tmp_path, old, new) == 0
    # Beyond 5 %, but the samples (+-10 %) overlap: reported, failed only with --strict.
    [row] = compare_runs(old, new, threshold=0.05)
    assert row.verdict == "worse, within noise"
    assert compare(tmp_path, old, new, "--threshold", "5") == 0
    assert compare(tmp_path, old, new, "--threshold", "5", "--strict") == 1


def test_compare_uses_ratios_so_a_slower_machine_is_not_a_regression(tmp_path: Path) -> None:
    # Everything runs at half speed, ours and the peer alike: the ratio is unchanged.
    old, new = payload(line(50, 100)), payload(line(25, 50))
    assert compare(tmp_path, old, new) == 0
    # Comparing our absolute figure instead would call it a 50 % regression.
    assert compare(tmp_path, old, new, "--absolute") == 1


def ms_line(ours: float, peer: float) -> Result:
    return line(ours, peer, workload="2 log", case="whole history", unit="ms", higher=False)


def test_compare_respects_the_direction_of_each_metric() -> None:
    old, slower, faster = payload(ms_line(10, 5)), payload(ms_line(13, 5)), payload(ms_line(8, 5))
    [worse] = compare_runs(old, slower)
    [better] = compare_runs(old, faster)
    assert (worse.verdict, worse.basis) == ("regressed", "ratio")
    assert worse.worse_by == pytest.approx(0.3)
    assert better.verdict == "improved"


def test_a_goal_line_regresses_only_when_it_misses_the_goal() -> None:
    def gc(pause_ms: float) -> dict[str, Any]:
        return payload(
            line(pause_ms, 10, workload="9 gc", unit="ms", higher=False, same=None, target=True)
        )

    assert [r.verdict for r in compare_runs(gc(3), gc(6))] == ["meets the goal"]
    assert [r.verdict for r in compare_runs(gc(3), gc(12))] == ["regressed"]
    assert [r.verdict for r in compare_runs(gc(12), gc(30))] == ["still misses the goal"]


def test_a_line_that_breaks_or_stops_matching_the_peer_is_a_regression(tmp_path: Path) -> None:
    old = payload(line(50, 100))
    broken = payload(line(None, 100, status="not supported"))
    differs = payload(line(50, 100, same=False))
    assert [r.verdict for r in compare_runs(old, broken)] == ["broke"]
    assert [r.verdict for r in compare_runs(old, differs)] == ["output differs"]
    assert compare(tmp_path, old, broken) == 1


def test_falls_back_to_our_figure_when_the_peer_failed() -> None:
    old = payload(line(50, 100))
    [row] = compare_runs(old, payload(line(30, None)))
    assert (row.basis, row.verdict) == ("ours", "regressed")
    assert row.worse_by == pytest.approx(0.4)


def test_lines_only_in_one_run_are_listed_but_do_not_fail(tmp_path: Path) -> None:
    pg, lite = line(50, 100), line(50, 100, backend="sqlite")
    rows = compare_runs(payload(pg, lite), payload(pg, line(1, 2, workload="5 import")))
    assert sorted(r.verdict for r in rows) == ["missing", "new", "ok"]
    assert compare(tmp_path, payload(pg, lite), payload(pg)) == 0


def test_compare_without_a_baseline_says_how_to_make_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cur = write(tmp_path / "current.json", payload(line(1, 1)))
    status = main(["compare", "--file", str(tmp_path / "none.json"), "--current", str(cur)])
    assert status == 2
    assert "python -m bench baseline" in capsys.readouterr().err


def test_update_from_a_result_file_replaces_the_baseline(tmp_path: Path) -> None:
    base = tmp_path / "results" / "baseline.json"  # the directory does not exist yet
    newer = write(tmp_path / "latest.json", payload(line(3, 4)))
    assert main(["update", "--file", str(base), "--from", str(newer)]) == 0
    assert json.loads(base.read_text()) == json.loads(newer.read_text())


def test_report_writes_one_html_page_with_embedded_png_plots(tmp_path: Path) -> None:
    old = payload(line(50, 100), ms_line(10, 5))
    new = payload(line(40, 100), ms_line(8, 5))
    out = tmp_path / "report.html"
    status = main(
        [
            "report",
            "--baseline",
            str(write(tmp_path / "b.json", old)),
            "--current",
            str(write(tmp_path / "c.json", new)),
            "--out",
            str(out),
        ]
    )
    assert status == 0
    page = out.read_text()
    images = re.findall(r'<img alt="plot" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', page)
    assert len(images) == 2  # ratios to the peers, current against baseline
    assert all(base64.b64decode(img).startswith(b"\x89PNG\r\n\x1a\n") for img in images)
    assert "1 regression" in page
    assert not re.search(r"<script|<link|src=\"http", page)  # self-contained


def test_plain_options_still_mean_a_run() -> None:
    args = parse_args(["--quick", "--backend", "sqlite"])
    assert (args.command, args.quick, args.backend) == ("run", True, "sqlite")
    assert parse_args([]).command == "run"
    assert parse_args(["baseline"]).full is False
