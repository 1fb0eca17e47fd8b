"""The CLI streams large files: ``commit`` reads them in pieces (stored as chunks),
``cat`` writes them back in pieces; both backends."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from govc_db.cli import app
from govc_db.storage.chunks import ENC_CHUNKED

runner = CliRunner()


def test_commit_and_cat_a_large_file(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOVC_DB_CHUNK_THRESHOLD", str(1024 * 1024))
    monkeypatch.setenv("GOVC_DB_CHUNK_AVG_SIZE", str(64 * 1024))
    data = random.Random(1).randbytes(3 * 1024 * 1024 + 5)
    (tmp_path / "big.bin").write_bytes(data)
    (tmp_path / "small.txt").write_bytes(b"small\n")
    base = ["--url", db_url]
    assert runner.invoke(app, [*base, "repo", "create", "r"]).exit_code == 0
    done = runner.invoke(
        app,
        [*base, "commit", "r", "-m", "big", "--author", "Ada <a@x>", "--root", str(tmp_path),
         str(tmp_path / "big.bin"), str(tmp_path / "small.txt")],
    )  # fmt: skip
    assert done.exit_code == 0, (done.stdout, done.stderr, done.exception)
    out = runner.invoke(app, [*base, "cat", "r", "HEAD", "big.bin"])
    assert out.exit_code == 0 and out.stdout_bytes == data
    assert runner.invoke(app, [*base, "cat", "r", "HEAD", "small.txt"]).stdout_bytes == b"small\n"
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            encodings = [r[0] for r in conn.execute(sa.text("SELECT encoding FROM govc_objects"))]
            chunks = conn.execute(sa.text("SELECT count(*) FROM govc_chunks")).scalar_one()
    finally:
        engine.dispose()
    assert encodings.count(ENC_CHUNKED) == 1
    assert chunks > 3 * 1024 * 1024 // (128 * 1024)  # content-defined chunks of ~64 KiB
