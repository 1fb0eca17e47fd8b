"""8. Peak RSS committing and reading back a large file, and 9. the maximum GC pause.

Peak RSS is measured per step in a fresh child process: ``python -m bench._rss measure``
runs the step as *its* child, waits for it and prints
``getrusage(RUSAGE_CHILDREN).ru_maxrss`` -- the peak of that step's processes alone (the
bench's own RUSAGE_CHILDREN would be the peak of every process it ever started). Our
side's steps are ``python -m bench._rss commit|read|floor``, which import only govc_db.

* ours, commit: a Python process opens the Store and ``repo.commit()``s the open file
  (streamed: stored as content-defined chunks, never held whole); read: ``repo.open()``
  read in 1 MiB pieces (a timed pass to nowhere, then a hashing pass).
  A third child that only imports govc_db and connects a Store gives the interpreter's
  floor, in the notes (a commit cannot go below that floor plus the file itself).
* git, commit: ``hash-object -w``, ``update-index``, ``write-tree``, ``commit-tree`` in a
  shell (the peak of any of them); read: ``cat-file blob`` into /dev/null.

The file is pseudo-random (incompressible), written once by the parent. One sample each:
a peak is a peak, not a rate.

Throughput (MB/s): ours timed inside those children, beside ``git hash-object -w`` and
``git cat-file blob`` timed as processes, git both with its default
``core.bigFileThreshold`` and with it raised above the file (see :func:`_throughput`).
Reads are the fastest of three passes on both sides (one pass is at the mercy of a
shared machine); writes one run each.

The GC line reports ``store.metrics()["memory"]["gc"]["max_pause_ms"]`` of the bench
process after the backend's workloads (the harness's own forced collections excluded,
see :func:`bench.harness.collect`), and the largest the writer processes reported. Both
run with ``Settings.memory_optimizer`` on, as a service does (:func:`bench.suite.
bench_settings`, :func:`bench.writers.writer_settings`). Wall-clock pauses include time
the process spent descheduled (8 writers and the other sessions share 2 cores), so the
notes give CPU time too; ``GOVC_BENCH_GC_TRACE=1`` says, per collection, whether the
scheduler preempted it (:mod:`bench.gctrace`).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench._rss import READ_PASSES
from bench.gctrace import process_trace
from bench.harness import Sizes, Target, collect
from bench.peers import git, git_env
from bench.report import FAILED, NOT_SUPPORTED, Result, Stats
from govc_db import Store

__all__ = ["bench_gc", "bench_memory"]

MIB = 1024 * 1024
GC_GOAL_MS = 10.0
PATH = "data/big.bin"
ROOT = Path(__file__).resolve().parent.parent


def write_file(path: Path, size: int, seed: int = 5) -> tuple[str, str]:
    """Write ``size`` pseudo-random bytes in 1 MiB chunks: (git blob id, content sha1)."""
    rng = random.Random(seed)
    blob = hashlib.sha1(b"blob %d\0" % size)
    plain = hashlib.sha1()
    with path.open("wb") as f:
        left = size
        while left:
            chunk = rng.randbytes(min(MIB, left))
            blob.update(chunk)
            plain.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return blob.hexdigest(), plain.hexdigest()


def measure(argv: list[str], *, discard_stdout: bool = False) -> dict[str, Any]:
    """Run ``argv`` under the ``measure`` wrapper (a fresh process); its JSON report."""
    cmd = [sys.executable, "-m", "bench._rss", "measure"]
    if discard_stdout:
        cmd.append("--discard-stdout")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run([*cmd, "--", *argv], capture_output=True, check=False, cwd=ROOT, env=env)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.decode(errors="replace")[-300:])
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


def _child_outcome(report: dict[str, Any]) -> tuple[str, str] | None:
    """(status, reason) when the measured child failed."""
    if report["returncode"] == 0:
        return None
    err = report["stderr"]
    status = NOT_SUPPORTED if "NotImplementedError" in err else FAILED
    return status, err.strip().splitlines()[-1][
        :160
    ] if err.strip() else f"exit {report['returncode']}"


def bench_memory(t: Target, sizes: Sizes) -> list[Result]:
    mib = sizes.big_file // MIB
    peers = {
        "commit": "git hash-object -w + update-index + write-tree + commit-tree",
        "read": "git cat-file blob",
    }
    bases = {
        step: Result(
            "8 memory",
            f"peak RSS, {step} a {mib} MiB file",
            t.backend,
            "MiB",
            False,
            peer,
            notes={"samples": "one run in a fresh process"},
        )
        for step, peer in peers.items()
    }
    data = t.workdir / "big.bin"
    blob, digest = write_file(data, sizes.big_file)
    py = [sys.executable, "-m", "bench._rss"]
    url, repo = t.url, "big"
    gdir = t.workdir / "big-git"
    git(Path("/"), "init", "-q", "-b", "main", str(gdir), env=git_env(gdir))
    # The git commands get the bench's clean git environment (no user config).
    genv = [
        "env",
        *(f"{k}={v}" for k, v in git_env(gdir, 0).items() if k.startswith(("GIT", "HOME"))),
    ]
    script = (
        'set -e; cd "$1"; b=$(git hash-object -w "$2"); '
        'git update-index --add --cacheinfo "100644,$b,' + PATH + '"; '
        "t=$(git write-tree); echo big | git commit-tree $t >/dev/null; echo $b"
    )
    steps: dict[str, tuple[list[str], list[str], bool, str]] = {
        "commit": (
            [*py, "commit", url, repo, str(data)],
            [*genv, "sh", "-c", script, "sh", str(gdir), str(data)],
            False,
            blob,
        ),
        "read": (
            [*py, "read", url, repo],
            [*genv, "git", "-C", str(gdir), "cat-file", "blob", blob],
            True,
            digest,
        ),
    }
    out: list[Result] = []
    timings: dict[str, float] = {}
    try:
        floor = measure([*py, "floor", url])
        # A child's peak includes the image it was forked from (the wrapper) until exec.
        wrapper = measure(["true"])
        for step, (ours_argv, git_argv, discard, expected) in steps.items():
            base = bases[step]
            collect()
            ours = measure(ours_argv)
            theirs = measure(git_argv, discard_stdout=discard)
            failed = _child_outcome(ours)
            if failed is not None:
                base.status, base.reason = failed
            else:
                base.ours = Stats.of([ours["maxrss_kib"] / 1024])
                lines = ours["stdout"].split()
                base.check = bool(lines) and lines[0] == expected
                if len(lines) > 1:
                    timings[step] = float(lines[1])
            peer_failed = _child_outcome(theirs)
            if peer_failed is not None:
                base.notes["peer_error"] = peer_failed[1]
                base.check = None
            else:
                base.theirs = Stats.of([theirs["maxrss_kib"] / 1024])
            base.notes.update(
                ours_seconds=round(ours["seconds"], 2),
                peer_seconds=round(theirs["seconds"], 2),
                python_floor_mib=round(floor["maxrss_kib"] / 1024, 1),
                python_floor="interpreter + govc_db imported + a Store connected, no data",
                file_mib=round(sizes.big_file / MIB, 1),
                wrapper_floor_mib=round(wrapper["maxrss_kib"] / 1024, 1),
            )
            out.append(base)
        out.extend(_throughput(t, sizes.big_file, data, blob, timings))
    except Exception as exc:
        for base in bases.values():
            if base.ours is None and base.status == "ok":
                base.status, base.reason = FAILED, f"{type(exc).__name__}: {exc}"[:160]
        return list(bases.values())
    finally:
        data.unlink(missing_ok=True)
    return out


def _git_seconds(argv: list[str], cwd: Path, *, stdout: Any = subprocess.DEVNULL) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=git_env(cwd), check=True, stdout=stdout)
    return time.perf_counter() - start


def _throughput(
    t: Target, size: int, data: Path, blob: str, timings: dict[str, float]
) -> list[Result]:
    """MB/s writing and reading the file: ours (timed inside the measured children) beside
    ``git hash-object -w`` and ``git cat-file blob``, git with its default
    ``core.bigFileThreshold`` (512 MiB: a larger file is streamed into a pack) and with the
    threshold raised above the file (a loose object, as for smaller files)."""
    mb = size / 1e6
    raised = f"core.bigFileThreshold={size + 1}"
    seconds: dict[str, dict[str, float]] = {"default": {}, "raised": {}}
    for how, extra in (("default", []), ("raised", ["-c", raised])):
        gdir = t.workdir / f"big-git-{how}"
        git(Path("/"), "init", "-q", str(gdir), env=git_env(gdir))
        write = ["git", *extra, "hash-object", "-w", str(data)]
        seconds[how]["commit"] = _git_seconds(write, gdir)
        read = ["git", *extra, "cat-file", "blob", blob]
        seconds[how]["read"] = min(_git_seconds(read, gdir) for _ in range(READ_PASSES))
    out = []
    for step, peer in (("commit", "git hash-object -w"), ("read", "git cat-file blob")):
        line = Result(
            "8 memory",
            f"throughput, {'write' if step == 'commit' else 'read'} a {size // MIB} MiB file",
            t.backend,
            "MB/s",
            True,
            f"{peer} (default core.bigFileThreshold)",
            notes={
                "samples": "write: one run each; read: the fastest of "
                f"{READ_PASSES} each. Ours timed inside the measured child (the commit "
                "call; repo.open() and the readinto loop to nowhere: no interpreter "
                "start-up), git's as a whole process into /dev/null (its start-up, a few "
                "ms, included)",
                "git_raised_threshold_mb_s": round(mb / seconds["raised"][step], 1),
                "ratio_vs_git_raised_threshold": None,
            },
        )
        theirs = mb / seconds["default"][step]
        line.theirs = Stats.of([theirs])
        if step in timings:
            ours = mb / timings[step]
            line.ours = Stats.of([ours])
            line.notes["ratio_vs_git_raised_threshold"] = round(
                ours / (mb / seconds["raised"][step]), 2
            )
        else:
            line.status, line.reason = FAILED, "our measured child reported no time"
        out.append(line)
    return out


def _gc_notes(stats: dict[str, Any]) -> dict[str, Any]:
    return {
        "pauses": stats.get("pauses"),
        "total_pause_ms": stats.get("total_pause_ms"),
        "max_pause_ms_by_generation": stats.get("max_pause_ms_by_generation"),
        "max_pause_cpu_ms": stats.get("max_pause_cpu_ms"),
        "collections_by_generation": stats.get("collections"),
        "max_pause_cpu_ms_by_generation": stats.get("max_pause_cpu_ms_by_generation"),
        "pauses_over_10ms": stats.get("pauses_over_10ms"),
        "cpu_pauses_over_10ms": stats.get("cpu_pauses_over_10ms"),
        **({"trace": stats["trace"]} if "trace" in stats else {}),
    }


def bench_gc(t: Target, store: Store, writers: list[dict[str, Any]]) -> list[Result]:
    """The bench process's figure, and the writer processes' (when they ran)."""
    goal = f"seed goal {GC_GOAL_MS:g} ms"
    line = Result(
        "9 gc", "max GC pause, bench process (store.metrics())", t.backend, "ms", False, goal
    )
    line.target = True
    stats = dict(store.metrics().get("memory", {}).get("gc", {}))
    trace = process_trace()
    if trace is not None:
        stats["trace"] = trace.report()
    if stats.get("max_pause_ms") is None:
        line.status, line.reason = NOT_SUPPORTED, "store.metrics() has no memory.gc.max_pause_ms"
    else:
        line.ours, line.theirs = Stats.of([float(stats["max_pause_ms"])]), Stats.of([GC_GOAL_MS])
        line.notes.update(
            _gc_notes(stats),
            scope="the bench process since its start (both backends when run together), "
            "memory optimizer on; the harness's forced full collection before every "
            "sample is excluded",
        )
    out = [line]
    pauses = [float(s["max_pause_ms"]) for s in writers if s.get("max_pause_ms") is not None]
    if pauses:
        worst = max(writers, key=lambda s: float(s.get("max_pause_ms") or 0))
        out.append(
            Result(
                "9 gc",
                "max GC pause, writer processes (store.metrics())",
                t.backend,
                "ms",
                False,
                goal,
                ours=Stats.of([max(pauses)]),
                theirs=Stats.of([GC_GOAL_MS]),
                target=True,
                notes={
                    **_gc_notes(worst),
                    "all_writers": {
                        "processes_reporting": len(pauses),
                        "pauses": sum(int(s.get("pauses") or 0) for s in writers),
                        "pauses_over_10ms": sum(
                            int(s.get("pauses_over_10ms") or 0) for s in writers
                        ),
                        "cpu_pauses_over_10ms": sum(
                            int(s.get("cpu_pauses_over_10ms") or 0) for s in writers
                        ),
                        "max_pause_cpu_ms": max(
                            float(s.get("max_pause_cpu_ms") or 0) for s in writers
                        ),
                        **(
                            {"traces": [s["trace"] for s in writers if "trace" in s]}
                            if any("trace" in s for s in writers)
                            else {}
                        ),
                    },
                    "scope": "the worst writer process of workload 6, from its start: only "
                    "our code runs there, nothing forces collections; up to 8 processes "
                    "share 2 cores, so a pause also holds time spent descheduled",
                },
            )
        )
    return out
