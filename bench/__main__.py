"""``python -m bench [run] [--quick] ...`` and the regression workflow around it.

Subcommands (``run`` is the default, so ``python -m bench --quick`` runs the suite):

* ``run``: the peer tables (full sizes; ``--quick`` about a minute a backend);
* ``baseline``: run the quick suite and save it as the baseline (``--file``,
  default ``bench/results/baseline.json``, which git ignores);
* ``compare``: run again (or take ``--current FILE``), print each metric against the
  baseline and exit 1 when one regressed by more than ``--threshold`` (default 10 %),
  comparing ratios to the peers (see :mod:`bench.regress` for the rules);
* ``update``: refresh the baseline (a new run, or ``--from FILE``);
* ``report``: one self-contained HTML page of the latest run against the baseline;
* ``profile WORKLOAD``: cProfile of our side of one workload; prints the top frames.

Every run also saves its JSON as ``bench/results/latest.json``, what ``report`` reads.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shlex
import sys
from pathlib import Path

from rich.console import Console

from bench import harness
from bench.harness import FULL, QUICK
from bench.regress import compare_runs, load, mismatches, regressions, render_rows
from bench.report import render, to_markdown, write_json
from bench.suite import DEFAULT_PG_URL, Run, run_suite
from bench.workloads import WORKLOADS

RESULTS = Path(__file__).resolve().parent / "results"
BASELINE = RESULTS / "baseline.json"
LATEST = RESULTS / "latest.json"
REPORT = RESULTS / "report.html"
COMMANDS = ("run", "baseline", "compare", "update", "report", "profile")
#: Workloads whose "ours" runs in the bench process (writers and memory use children).
PROFILABLE = ("commit", "log", "read", "diff", "import")


def _suite_options(p: argparse.ArgumentParser, *, default_quick: bool) -> None:
    if default_quick:
        p.add_argument("--full", action="store_true", help="full sizes instead of --quick's")
    else:
        p.add_argument(
            "--quick", action="store_true", help="small sizes (about a minute a backend)"
        )
    p.add_argument("--backend", choices=["sqlite", "postgres", "all"], default="all")
    p.add_argument(
        "--pg-url",
        default=os.environ.get("GOVC_BENCH_PG_URL", DEFAULT_PG_URL),
        help="server to create the throwaway databases on (default: %(default)s)",
    )
    p.add_argument(
        "--workload",
        action="append",
        choices=WORKLOADS,
        help="run only this workload (repeatable; default: all)",
    )
    p.add_argument("--json", type=Path, metavar="OUT", help="also write the results as JSON")
    p.add_argument("--markdown", type=Path, metavar="OUT", help="also write markdown tables")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark govc_db side by side with git, dulwich and the raw driver; "
        "every figure is reported as the ratio ours / peer.",
        epilog="commands: run (default), baseline, compare, update, report, profile; "
        "'python -m bench COMMAND --help' for each",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    _suite_options(
        sub.add_parser("run", help="run the suite and print the tables"), default_quick=False
    )
    b = sub.add_parser("baseline", help="run the quick suite, save it as the baseline")
    _suite_options(b, default_quick=True)
    b.add_argument("--file", type=Path, default=BASELINE, help="baseline file (%(default)s)")
    c = sub.add_parser("compare", help="run again and flag regressions against the baseline")
    _suite_options(c, default_quick=True)
    c.add_argument("--file", type=Path, default=BASELINE, help="baseline file (%(default)s)")
    c.add_argument("--current", type=Path, help="compare this result file instead of running")
    c.add_argument(
        "--threshold", type=float, default=10.0, help="percent worse that fails (%(default)s)"
    )
    c.add_argument(
        "--strict",
        action="store_true",
        help="also fail on changes beyond the threshold whose samples overlap (noise)",
    )
    c.add_argument(
        "--absolute",
        action="store_true",
        help="compare our own figures instead of the ratios to the peers",
    )
    u = sub.add_parser("update", help="refresh the baseline")
    _suite_options(u, default_quick=True)
    u.add_argument("--file", type=Path, default=BASELINE, help="baseline file (%(default)s)")
    u.add_argument("--from", dest="source", type=Path, help="adopt this result file, no run")
    r = sub.add_parser("report", help="write the HTML report of a run against the baseline")
    r.add_argument("--baseline", type=Path, default=BASELINE, help="(%(default)s)")
    r.add_argument("--current", type=Path, default=LATEST, help="(%(default)s)")
    r.add_argument("--out", type=Path, default=REPORT, help="(%(default)s)")
    r.add_argument("--threshold", type=float, default=10.0, help="percent (%(default)s)")
    pr = sub.add_parser("profile", help="cProfile our side of one workload")
    pr.add_argument("workload", choices=PROFILABLE)
    pr.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    pr.add_argument("--full", action="store_true", help="full sizes instead of --quick's")
    pr.add_argument("--pg-url", default=os.environ.get("GOVC_BENCH_PG_URL", DEFAULT_PG_URL))
    pr.add_argument("--out", type=Path, help="profile file (bench/results/profile-W-B.prof)")
    pr.add_argument("--top", type=int, default=25, help="frames to print (%(default)s)")
    return p


def parse_args(argv: list[str]) -> argparse.Namespace:
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv = ["run", *argv]
    return parser().parse_args(argv)


def _run(args: argparse.Namespace, command: str, console: Console, progress: Console) -> Run | None:
    quick = getattr(args, "quick", False) or not getattr(args, "full", True)
    try:
        run = run_suite(
            sizes=QUICK if quick else FULL,
            mode="quick" if quick else "full",
            which=tuple(args.workload or WORKLOADS),
            backends=["sqlite", "postgres"] if args.backend == "all" else [args.backend],
            pg_url=args.pg_url,
            command=command,
            progress=progress,
        )
    except RuntimeError as exc:
        progress.print(f"[red]{exc}[/]")
        return None
    render(run.results, run.info, console)
    _save(LATEST, run, progress)
    if args.json is not None:
        _save(args.json, run, progress)
    if args.markdown is not None:
        args.markdown.write_text(to_markdown(run.results, run.info, command))
        progress.log(f"wrote {args.markdown}")
    return run


def _save(path: Path, run: Run, progress: Console) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, run.payload)
    progress.log(f"wrote {path}")


def _compare(args: argparse.Namespace, command: str, console: Console, progress: Console) -> int:
    if not args.file.exists():
        progress.print(f"[red]no baseline at {args.file}[/]: run 'python -m bench baseline'")
        return 2
    baseline = load(args.file)
    if args.current is not None:
        current = load(args.current)
    else:
        run = _run(args, command, console, progress)
        if run is None:
            return 2
        current = run.payload
    threshold = args.threshold / 100
    rows = compare_runs(
        baseline, current, threshold=threshold, basis="ours" if args.absolute else "ratio"
    )
    for warning in mismatches(baseline, current):
        progress.print(f"[yellow]warning[/]: {warning}")
    render_rows(rows, console, threshold)
    bad = regressions(rows, strict=args.strict)
    noisy = len(regressions(rows, strict=True)) - len(regressions(rows))
    if noisy and not args.strict:
        console.print(
            f"{noisy} metric(s) worse beyond {args.threshold:g} % but within the noise of "
            "their samples (not failed; --strict fails them; the full suite has more repeats)"
        )
    if bad:
        console.print(f"[bold red]{len(bad)} regression(s)[/] beyond {args.threshold:g} %")
        return 1
    console.print(f"no regression beyond {args.threshold:g} % ({len(rows)} metrics)")
    return 0


def _report(args: argparse.Namespace, progress: Console) -> int:
    from bench.html import render_html

    if not args.current.exists():
        progress.print(f"[red]no results at {args.current}[/]: run 'python -m bench' first")
        return 2
    baseline = load(args.baseline) if args.baseline.exists() else None
    if baseline is None:
        progress.print(f"[yellow]no baseline at {args.baseline}[/]: the report shows ratios only")
    page = render_html(load(args.current), baseline, threshold=args.threshold / 100)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page)
    progress.print(f"wrote {args.out}")
    return 0


def _profile(args: argparse.Namespace, command: str, progress: Console) -> int:
    prof = cProfile.Profile()
    harness.PROFILE, harness.PROFILE_STEP = prof, args.workload
    try:
        run_suite(
            sizes=FULL if args.full else QUICK,
            mode="full" if args.full else "quick",
            which=(args.workload,),
            backends=[args.backend],
            pg_url=args.pg_url,
            command=command,
            progress=progress,
        )
    except RuntimeError as exc:
        progress.print(f"[red]{exc}[/]")
        return 2
    finally:
        harness.PROFILE = harness.PROFILE_STEP = None
    out = args.out or RESULTS / f"profile-{args.workload}-{args.backend}.prof"
    out.parent.mkdir(parents=True, exist_ok=True)
    prof.dump_stats(out)
    print(f"ours only, workload {args.workload!r} on {args.backend}; wrote {out}")
    print(f"(inspect: python -m pstats {out}  or  snakeviz {out})")
    pstats.Stats(prof, stream=sys.stdout).sort_stats("cumulative").print_stats(args.top)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    command = "python -m bench " + shlex.join(argv)
    # Wide enough for the table when the output is a file or a pipe (RESULTS.md, CI logs).
    console = Console(width=None if sys.stdout.isatty() else 230)
    progress = Console(stderr=True)
    if args.command == "run":
        return 0 if _run(args, command, console, progress) is not None else 2
    if args.command == "baseline" or (args.command == "update" and args.source is None):
        run = _run(args, command, console, progress)
        if run is None:
            return 2
        _save(args.file, run, progress)
        return 0
    if args.command == "update":
        payload = load(args.source)
        args.file.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.file, payload)
        progress.print(f"baseline {args.file} <- {args.source}")
        return 0
    if args.command == "compare":
        return _compare(args, command, console, progress)
    if args.command == "report":
        return _report(args, progress)
    return _profile(args, command, progress)


if __name__ == "__main__":
    raise SystemExit(main())
