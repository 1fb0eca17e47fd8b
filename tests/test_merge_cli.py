"""``govc-db merge`` / ``cherry-pick`` / ``revert`` (SQLite and PostgreSQL): new heads on
stdout, one ``CONFLICT (<kind>): <path>`` line per conflict on stderr with exit status 1
and nothing changed, and ``merge --dry-run`` printing git's merge-tree answer."""

from __future__ import annotations

from pathlib import Path

from _merge_oracle import build_scenario, git_merge_tree, new_repo
from typer.testing import CliRunner

from govc_db import Store
from govc_db.cli import app

runner = CliRunner()
AUTHOR = "Ada <ada@example.com>"


def _cli(url: str, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--url", url, *args])
    return result.exit_code, result.stdout, result.stderr


def test_merge_cherry_pick_revert(store: Store, db_url: str, tmp_path: Path) -> None:
    repo = new_repo(store)
    build_scenario(repo, {"a": b"1\n2\n3\n"}, {"a": b"x\n2\n3\n"}, {"a": b"1\n2\ny\n", "n": b"n"})
    want = git_merge_tree(repo, tmp_path / "git", "ours", "theirs")
    code, out, _ = _cli(db_url, "merge", repo.name, "ours", "theirs", "--dry-run")
    assert (code, out.split()) == (0, [want.tree])
    code, out, _ = _cli(db_url, "merge", repo.name, "ours", "theirs", "--author", AUTHOR)
    assert code == 0 and out.strip() == repo.resolve("ours")
    assert repo.get_commit("ours").tree == want.tree
    repo.create_branch("pick", "main")
    code, out, _ = _cli(db_url, "cherry-pick", repo.name, "pick", "theirs")
    assert code == 0 and out.strip() == repo.resolve("pick")
    code, out, _ = _cli(db_url, "revert", repo.name, "pick", "pick", "--author", AUTHOR)
    assert code == 0 and repo.get_commit(out.strip()).message.startswith('Revert "theirs"')
    assert repo.get_commit("pick").tree == repo.get_commit("main").tree


def test_conflicts_are_listed_and_change_nothing(store: Store, db_url: str) -> None:
    repo = new_repo(store)
    build_scenario(repo, {"a": b"1\n", "k": b"k"}, {"a": b"2\n", "k": b"k"}, {"k": b"k2"})
    head = repo.resolve("ours")
    code, out, err = _cli(db_url, "merge", repo.name, "ours", "theirs", "--author", AUTHOR)
    assert code == 1 and out == ""
    assert "CONFLICT (modify/delete): a" in err and "error: merging theirs into ours" in err
    assert repo.resolve("ours") == head
    code, out, _ = _cli(db_url, "merge", repo.name, "ours", "theirs", "--dry-run")
    assert code == 1 and "CONFLICT (modify/delete): a" in out
