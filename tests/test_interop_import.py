"""import_git / export_git against real git repositories, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from interop_git import (
    add_odd_objects,
    all_objects,
    commit_file,
    fsck,
    git,
    make_history,
    refs_of,
)

from govc_db import Settings, Signature, Store
from govc_db.errors import InvalidInput, NotFound, RefConflict
from govc_db.objects import hash_object

SIG = Signature("Ada", "ada@example.com", 1_700_000_000, 60)


def _stored_ids(store: Store, name: str) -> set[str]:
    repo = store.repository(name)
    with store.backend.unit(repo._id) as unit:
        return {oid.hex() for oid, _ in unit.objects.iter_ids()}


def _check_round_trip(store: Store, name: str, src: Path, dest: Path) -> None:
    repo = store.repository(name)
    wanted = all_objects(src)
    assert wanted <= _stored_ids(store, name)
    for oid in sorted(wanted)[:50]:  # bytes identical: the id recomputed from what we hold
        kind, raw = repo.get_object(oid)
        assert hash_object(kind.encode(), raw).hex() == oid
    report = repo.export_git(dest)
    assert refs_of(dest) == refs_of(src)
    assert all_objects(dest) == wanted
    assert report.objects >= len(wanted)
    assert fsck(dest) == fsck(src)  # the same objects: the same verdict (clean when clean)


def test_import_history_with_merges_tags_signatures(store: Store, tmp_path: Path) -> None:
    src = make_history(tmp_path)
    report = store.import_git("proj", src)
    assert report.refs_updated == refs_of(src)
    repo = store.repository("proj")
    assert repo.default_branch == "main"
    assert {f"refs/heads/{k}": v for k, v in repo.branches().items()} | {
        f"refs/tags/{k}": v for k, v in repo.tags().items()
    } == refs_of(src)
    _check_round_trip(store, "proj", src, tmp_path / "out.git")
    assert fsck(tmp_path / "out.git")[0] == 0

    head = repo.get_commit("main")
    assert len(head.parents) == 2
    assert dict(head.extra)["mergetag"].startswith(b"object ")
    signed = repo.get_commit("main^1~1")
    assert dict(signed.extra)["gpgsig"].startswith(b"-----BEGIN PGP SIGNATURE-----\n\n")
    latin = repo.get_commit("main^1")
    assert dict(latin.extra) == {"encoding": b"ISO-8859-1"}
    assert latin.message.encode("utf-8", "surrogateescape") == "café au lait\n".encode("latin-1")
    assert latin.author.name.encode("utf-8", "surrogateescape") == b"J\xf6rg"
    tag = repo.get_tag("v2-signed")
    assert tag.object == latin.oid and "BEGIN PGP SIGNATURE" in tag.message
    with pytest.raises(InvalidInput):
        repo.get_tag("light")
    # The commit index works on imported commits: log, merge base, path-limited log.
    expected = git(src, "rev-list", "main").split()
    assert [c.oid for c in repo.log("main")] == expected
    assert [c.oid for c in repo.log("main", path="src/b.py")] == git(
        src, "rev-list", "main", "--", "src/b.py"
    ).split()
    for path in sorted({e.path for e in repo.walk("main")}):  # changed paths of every commit
        assert [c.oid for c in repo.log("main", path=path)] == git(
            src, "rev-list", "main", "--", path
        ).split(), path
    assert repo.merge_base("main", "side") == git(src, "merge-base", "main", "side").strip()
    entries = {e.path: e for e in repo.walk("main")}
    assert entries["vendor/sub"].mode == 0o160000 and entries["link"].mode == 0o120000
    assert entries["README.md"].mode == 0o100755


def test_odd_objects_round_trip_byte_identical(store: Store, tmp_path: Path) -> None:
    src = make_history(tmp_path)
    ids = add_odd_objects(src)
    store.import_git("odd", src)
    repo = store.repository("odd")
    _check_round_trip(store, "odd", src, tmp_path / "out.git")
    for key in ("commit1", "commit2", "tree"):
        kind, raw = repo.get_object(ids[key])
        assert hash_object(kind.encode(), raw).hex() == ids[key]
    odd = repo.get_commit("odd~1")
    assert odd.oid == ids["commit1"] and odd.author.name == ""
    assert [c.oid for c in repo.log("odd", limit=2)] == [ids["commit2"], ids["commit1"]]
    assert {e.name: e.mode for e in repo.tree("odd")} == {
        "old-mode.txt": 0o100644,  # read as git reads it; stored and exported as written
        "z.txt": 0o100644,
    }


def test_reimport_brings_only_new_objects(store: Store, tmp_path: Path) -> None:
    src = make_history(tmp_path)
    first = store.import_git("proj", src)
    assert store.import_git("proj", src).objects == 0
    before = all_objects(src)
    commit_file(src, "src/new.py", "n = 1\n", "new file")
    again = store.import_git("proj", src)
    assert again.objects == len(all_objects(src) - before) == 4  # commit, 2 trees, blob
    assert again.commits_indexed == 1
    assert again.refs_updated == {"refs/heads/main": git(src, "rev-parse", "main").strip()}
    assert first.objects > again.objects
    repo = store.repository("proj")
    assert repo.read("main", "src/new.py") == b"n = 1\n"


def test_reimport_refuses_a_ref_moved_in_govc_unless_forced(store: Store, tmp_path: Path) -> None:
    src = make_history(tmp_path)
    store.import_git("proj", src)
    repo = store.repository("proj")
    ours = repo.commit("side", {"ours.txt": b"ours"}, message="ours\n", author=SIG)
    commit_file(src, "theirs.txt", "t\n", "theirs")
    git(src, "branch", "-f", "side", "main")
    with pytest.raises(RefConflict):
        store.import_git("proj", src)
    assert repo.branches()["side"] == ours
    assert repo.branches()["main"] != git(src, "rev-parse", "main").strip()  # nothing moved
    store.import_git("proj", src, force=True)
    assert repo.branches()["side"] == git(src, "rev-parse", "side").strip()
    assert repo.reflog("side")[0].message.startswith("import: ")


def test_import_selected_refs_and_errors(store: Store, tmp_path: Path) -> None:
    src = make_history(tmp_path)
    report = store.import_git("part", src, refs=["side", "refs/tags/v1"])
    assert set(report.refs_updated) == {"refs/heads/side", "refs/tags/v1"}
    with pytest.raises(NotFound):
        store.import_git("part", src, refs=["nope"])
    with pytest.raises(NotFound):
        store.import_git("x", tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(InvalidInput):
        store.import_git("x", tmp_path / "plain")
    with pytest.raises(InvalidInput):
        store.import_git("bad/name", src)


def test_slice_setting_changes_the_transactions(db_url: str, tmp_path: Path) -> None:
    import govc_db

    src = make_history(tmp_path)
    counts = []
    for size in (1_000, 5):
        with govc_db.open(db_url, Settings(import_slice_objects=size)) as store:
            report = store.import_git(f"s{size}", src)
            counts.append(report.transactions)
            assert _stored_ids(store, f"s{size}") >= all_objects(src)
    assert counts[1] > counts[0]
    with pytest.raises(InvalidInput):
        Settings(import_slice_objects=0)


def test_own_history_round_trip(store: Store, tmp_path: Path) -> None:
    source = Path("/work/main/.git")
    if not source.exists():
        source = Path(__file__).resolve().parents[1] / ".git"
    if not (source / "HEAD").exists():
        pytest.skip("no local git history of the project")
    clone = tmp_path / "own.git"
    git(tmp_path, "clone", "-q", "--bare", "--no-local", str(source), str(clone))
    store.import_git("own", clone)
    _check_round_trip(store, "own", clone, tmp_path / "export.git")
    assert fsck(tmp_path / "export.git")[0] == 0


def test_commit_with_parents_makes_git_identical_merges(store: Store, tmp_path: Path) -> None:
    repo = store.create_repository("m")
    base = repo.commit("main", {"a": b"1"}, message="base\n", author=SIG)
    repo.create_branch("topic", base)
    topic = repo.commit("topic", {"b": b"2"}, message="topic\n", author=SIG)
    main = repo.commit("main", {"c": b"3"}, message="main\n", author=SIG)
    merged = repo.commit("main", {"b": b"2"}, message="merge\n", author=SIG, parents=[main, topic])
    info = repo.get_commit(merged)
    assert info.parents == [main, topic]
    assert repo.merge_base("main", "topic") == topic
    assert [c.oid for c in repo.log("main", path="b")] == [topic]  # TREESAME to topic
    exported = tmp_path / "m.git"
    repo.export_git(exported)
    assert fsck(exported)[0] == 0
    # git commit-tree of the same tree, parents, signatures and message: the same id.
    assert (
        git(exported, "commit-tree", info.tree, "-p", main, "-p", topic, "-m", "merge").strip()
        == merged
    )
    with pytest.raises(NotFound):
        repo.commit("main", {"x": b"1"}, message="m\n", author=SIG, parents=["0" * 40])
    with pytest.raises(InvalidInput):  # the branch head must be one of the parents
        repo.commit("main", {"x": b"1"}, message="m\n", author=SIG, parents=[topic])
    with pytest.raises(InvalidInput):
        repo.commit("main", {"x": b"1"}, message="m\n", author=SIG, parents=[merged, merged])
    with pytest.raises(InvalidInput):
        repo.commit("main", {"x": b"1"}, message="m\n", author=SIG, parents="abc")  # type: ignore[arg-type]


def test_cli_import_and_export(db_url: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from govc_db.cli import app

    src = make_history(tmp_path)
    runner = CliRunner()
    out = runner.invoke(app, ["--url", db_url, "import", "cli", str(src)])
    assert out.exit_code == 0, out.output
    assert f"updated {len(refs_of(src))} refs of 'cli'" in out.output
    dest = tmp_path / "cli.git"
    out = runner.invoke(app, ["--url", db_url, "export", "cli", str(dest)])
    assert out.exit_code == 0, out.output
    assert refs_of(dest) == refs_of(src) and fsck(dest)[0] == 0
    out = runner.invoke(app, ["--url", db_url, "export", "cli", str(dest)])
    assert out.exit_code == 1 and "not empty" in out.output
    out = runner.invoke(app, ["--url", db_url, "import", "cli", str(tmp_path / "none")])
    assert out.exit_code == 1 and out.output.startswith("error: no git repository")


def test_a_directory_inside_a_repository_is_refused(store: Store, tmp_path: Path) -> None:
    src = make_history(tmp_path)
    with pytest.raises(InvalidInput, match="not the top"):
        store.import_git("inner", src / "src")
    assert "inner" not in store.list_repositories()
