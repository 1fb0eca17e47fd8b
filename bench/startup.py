"""``python -m bench.startup [--repeat N]``: how fast the command line and the package start.

Wall time (best of ``--repeat``) of fresh processes, side by side with git:

* ``python -c pass`` (the interpreter's floor) and ``python -c "import govc_db"``;
* ``govc-db --version`` / ``govc-db --help`` against ``git --version``;
* ``govc-db log REPO -n 10 --oneline`` on a small SQLite demo history against
  ``git log --oneline -n 10`` on git's copy of it (the first command that opens a store).

Then the heaviest imports by ``python -X importtime`` (cumulative, microseconds) of
``import govc_db`` and of ``govc-db --help``, so a regression names its module.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import govc_db
from bench.fsck import export
from bench.peers import git_env
from govc_db.demo import run_demo

__all__ = ["heaviest_imports", "main", "wall"]

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "govc_db"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "GOVC_DB_URL"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def wall(cmd: list[str], repeat: int, env: dict[str, str] | None = None) -> float:
    """Best wall time of ``cmd`` in a fresh process, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(cmd, check=True, env=env or _env(), stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)  # fmt: skip
        best = min(best, time.perf_counter() - started)
    return best


def heaviest_imports(args: list[str], top: int = 6) -> list[tuple[int, str]]:
    """``(cumulative us, module)`` of the top-level imports that cost most."""
    done = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True,
                          text=True, env=_env(), check=True)  # fmt: skip
    rows = []
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2]
        # Top-level entries are indented by exactly one space after the bar.
        if name.startswith(" ") and not name.startswith("  "):
            rows.append((int(parts[1]), name.strip()))
    return sorted(rows, reverse=True)[:top]


def main(argv: list[str] | None = None) -> int:
    """Print the start-up table."""
    p = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    n = args.repeat
    rows: list[tuple[str, float]] = [
        ("python -c pass", wall([sys.executable, "-c", "pass"], n)),
        ("python -c 'import govc_db'", wall([sys.executable, "-c", "import govc_db"], n)),
        ("govc-db --version", wall([*CLI, "--version"], n)),
        ("govc-db --help", wall([*CLI, "--help"], n)),
        ("git --version", wall(["git", "--version"], n)),
    ]
    with tempfile.TemporaryDirectory(prefix="govc-startup-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'govc.db'}"
        with govc_db.open(url) as store:
            store.upgrade()
            run_demo(store, commits=30, files=60)
            dest = Path(tmp) / "demo.git"
            export(store.repository("demo"), dest)
        env = {**_env(), "GOVC_DB_URL": url}
        rows.append(("govc-db log demo -n 10 --oneline",
                     wall([*CLI, "log", "demo", "-n", "10", "--oneline"], n, env)))  # fmt: skip
        rows.append(("git log --oneline -n 10",
                     wall(["git", "-C", str(dest), "log", "--oneline", "-n", "10", "main"], n,
                          git_env(dest))))  # fmt: skip
    git_floor = dict(rows)["git --version"]
    print(f"start-up, best of {n} (load average {os.getloadavg()[0]:.2f})")
    for label, seconds in rows:
        print(
            f"  {label:<36} {seconds * 1000:7.0f} ms  ({seconds / git_floor:6.1f}x git --version)"
        )
    for what, cmd in (("import govc_db", ["-c", "import govc_db"]),
                      ("govc-db --help", ["-m", "govc_db", "--help"])):  # fmt: skip
        heavy = ", ".join(f"{name} {us / 1000:.0f} ms" for us, name in heaviest_imports(cmd))
        print(f"  heaviest imports of {what}: {heavy}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
