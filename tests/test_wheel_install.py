"""The built wheel works on its own: installed in a fresh venv, `store.upgrade()` migrates.

This is what catches migrations missing from the package: the source checkout's
``migrations/`` is out of reach when the installed package runs from another directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from govc_db.db import migrate
from govc_db.models import Base

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]

CHECK_SCRIPT = r"""
import json, sys
import sqlalchemy as sa
import govc_db
from govc_db.db import migrate

url = "sqlite:///installed.db"
with govc_db.open(url) as store:
    store.upgrade()
    store.upgrade()  # idempotent
engine = sa.create_engine(url)
try:
    with engine.connect() as conn:
        tables = sorted(sa.inspect(conn).get_table_names())
    current = migrate.current_revision(engine)
finally:
    engine.dispose()
json.dump(
    {
        "package": govc_db.__file__,
        "script_location": migrate.alembic_config().get_main_option("script_location"),
        "tables": tables,
        "current": current,
        "head": migrate.head_revision(),
    },
    sys.stdout,
)
"""


def run(args: list[str | Path], *, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, args))} failed ({result.returncode}):\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}",
            pytrace=False,
        )
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--wheel", "--outdir", dist, ROOT], cwd=ROOT)
    (built,) = dist.glob("govc_db-*.whl")
    return built


def test_wheel_contains_the_migrations(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    for name in (
        "govc_db/__init__.py",
        "govc_db/py.typed",
        "govc_db/models.py",
        "govc_db/db/migrate.py",
        "govc_db/_migrations/env.py",
        "govc_db/_migrations/script.py.mako",
        "govc_db/_migrations/versions/0001_initial.py",
    ):
        assert name in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in names if n.startswith("tests/")]


def test_installed_wheel_upgrades_a_database(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    python = env_dir / "bin" / "python"
    run([python, "-m", "pip", "install", "--quiet", wheel], cwd=tmp_path)

    workdir = tmp_path / "elsewhere"  # outside the source tree: no migrations/ next to it
    workdir.mkdir()
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "GOVC_DB_"))}
    out = run([python, "-I", "-c", CHECK_SCRIPT], cwd=workdir, env=clean_env)
    report = json.loads(out)

    assert Path(report["package"]).is_relative_to(env_dir)
    assert Path(report["script_location"]).is_relative_to(env_dir)
    assert Path(report["script_location"]).name == "_migrations"
    # The same schema and revision as the source tree the wheel was built from.
    assert report["current"] == report["head"] == migrate.head_revision()
    assert set(report["tables"]) == {t.name for t in Base.metadata.sorted_tables} | {
        migrate.VERSION_TABLE
    }
