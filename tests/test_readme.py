"""The README's Quick start is what CI runs, and its test extra installs what the suite imports."""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"^## Quick start\n.*?^```sh\n(.*?)^```", text, re.S | re.M)
    assert m is not None, "README.md has no ```sh block under '## Quick start'"
    return [line for line in m.group(1).splitlines() if line.strip()]


def ci_test_command() -> str:
    text = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    m = re.search(r"^README_TEST_COMMAND=(.*)$", text, re.M)
    assert m is not None, ".ci/run does not set README_TEST_COMMAND"
    (value,) = shlex.split(m.group(1))  # the shell's own quoting rules
    return value


def test_ci_runs_the_readme_quick_start_test_command() -> None:
    commands = quick_start_commands()
    assert len(commands) == 2, commands
    assert ci_test_command() == commands[1]
    assert "pytest" in commands[1]


def test_ci_runs_that_command_and_only_then_lints() -> None:
    text = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    run = text.index('bash -c "$README_TEST_COMMAND"')
    assert "CI=true" in text[:run]
    assert "127.0.0.1:5432" in text[:run]
    assert "venv --clear" in text[:run]
    for tool in ("ruff check .", "ruff format --check .", "mypy --strict", "'.[dev]'"):
        assert tool in text[run:], tool
        assert tool not in text[:run], tool


def test_ci_own_readme_check_accepts_the_readme_and_rejects_a_drift(tmp_path: Path) -> None:
    """The awk/grep guard at the top of .ci/run, run on the real and on a drifted README."""
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    start = script.index("README_TEST_COMMAND=")
    end = script.index("# The fault suite")
    guard = script[start:end]
    (tmp_path / "README.md").write_text((ROOT / "README.md").read_text(encoding="utf-8"))
    ok = subprocess.run(["bash", "-euc", guard], cwd=tmp_path, capture_output=True, check=False)
    assert ok.returncode == 0, ok.stderr
    drifted = quick_start_commands()[1].replace("[test]", "[dev]")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (tmp_path / "README.md").write_text(readme.replace(quick_start_commands()[1], drifted))
    bad = subprocess.run(["bash", "-euc", guard], cwd=tmp_path, capture_output=True, check=False)
    assert bad.returncode == 1
    assert b"does not contain" in bad.stderr


def _imported_top_modules(folder: Path) -> set[str]:
    names: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def _requirement_name(spec: str) -> str:
    m = re.match(r"[A-Za-z0-9._-]+", spec)
    assert m is not None, spec
    return re.sub(r"[-_.]+", "-", m.group(0)).lower()


def test_test_extra_installs_every_third_party_module_the_suite_imports() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {_requirement_name(s) for s in project["dependencies"]}
    declared |= {_requirement_name(s) for s in project["optional-dependencies"]["test"]}
    local = {p.stem for p in (ROOT / "tests").glob("*.py")} | {"govc_db", "bench", "tests"}
    modules = _imported_top_modules(ROOT / "tests") | _imported_top_modules(ROOT / "bench")
    third_party = {m for m in modules - local if m not in sys.stdlib_module_names}
    providers = packages_distributions()
    missing = []
    for module in sorted(third_party):
        dists = {_requirement_name(d) for d in providers.get(module, [module])}
        # docker comes with testcontainers, which is what the suite asks for.
        if not dists & declared and not (module == "docker" and "testcontainers" in declared):
            missing.append(f"{module} (from {', '.join(sorted(dists))})")
    assert not missing, f"imported by tests/ or bench/ but not in .[test]: {missing}"
    assert "matplotlib" in third_party  # the module the issue found missing is still seen
