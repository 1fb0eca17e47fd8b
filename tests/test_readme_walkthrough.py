"""The README's examples work as written: its Python block and its command-line block,
run as a newcomer would, in an empty directory with the installed ``govc-db``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def block(section: str, language: str) -> str:
    m = re.search(rf"^## {re.escape(section)}\n.*?^```{language}\n(.*?)^```", README, re.S | re.M)
    assert m is not None, f"README.md has no ```{language} block under '## {section}'"
    return m.group(1)


def newcomer_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOVC_DB_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    # The installed console script sits next to the interpreter (as after `pip install`).
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def test_using_it_python_example_runs(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", block("Using it", "python")], cwd=tmp_path,
                          env=newcomer_env(), capture_output=True, text=True, timeout=300,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "b'hello\\n'"
    assert lines[1].endswith(" edit") and lines[2].endswith(" init")
    assert "status='D'" in lines[3] and lines[4].startswith("VerifyReport(ok=True")


def test_command_line_example_runs_as_written(tmp_path: Path) -> None:
    script = block("Command line", "sh")
    assert shutil.which("govc-db", path=newcomer_env()["PATH"]) is not None
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path,
                          env=newcomer_env(), capture_output=True, text=True, timeout=600,
                          check=False)  # fmt: skip
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert done.stderr == ""
    out = done.stdout
    assert "initialized sqlite:///govc.db" in out
    assert re.search(r"^[0-9a-f]{7} greet the world\n[0-9a-f]{7} import$", out, re.M), out
    assert "<h1>hello, world</h1>\n" in out  # cat at main
    assert "M\tindex.html\n 1 file changed (1 modified)" in out  # diff main~1 main
    assert re.search(r"^100644 blob [0-9a-f]{40}\tindex\.html$", out, re.M)  # ls on a file
    assert "ok: 6 objects checked" in out  # 2 blobs, 2 trees, 2 commits
    assert "repositories  1" in out and "server        SQLite" in out
