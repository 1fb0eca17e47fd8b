"""git's smart HTTP against a real uvicorn server on a loopback port, with the real
``git`` client (and raw requests where git would refuse to send something bad), on SQLite
and PostgreSQL.
"""

from __future__ import annotations

import gzip
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _http_server import serving_url
from interop_git import ENV, all_objects, commit_file, fsck, git, git_run, refs_of

import govc_db
from govc_db import Settings, Signature, Store
from govc_db.errors import NotFound
from govc_db.interop.smart_http import make_git_app
from govc_db.types import RefUpdated

SIG = Signature("Ada", "ada@example.com", 1_700_000_000, 60)
ZERO = "0" * 40


@pytest.fixture
def seeded(store: Store) -> Store:
    repo = store.create_repository("demo")
    repo.commit(
        "main", {"README.md": b"hi\n", "src/a.py": b"a = 1\n"}, message="init\n", author=SIG
    )
    repo.commit("main", {"src/b.py": b"b = 1\n"}, message="b\n", author=SIG)
    repo.create_tag("v1", "main", message="one\n", tagger=SIG)
    repo.create_branch("dev", "main~1")
    return store


@pytest.fixture
def url(seeded: Store) -> Iterator[str]:
    with serving_url(make_git_app(seeded, allow_push=True)) as base:
        yield base


def _stored(store: Store, name: str) -> set[str]:
    repo = store.repository(name)
    with store.backend.unit(repo._id) as unit:
        return {oid.hex() for oid, _ in unit.objects.iter_ids()}


def _clone(url: str, dest: Path, *args: str) -> Path:
    git(dest.parent, "clone", "-q", *args, url, str(dest))
    git(dest, "config", "user.name", "Ada")
    git(dest, "config", "user.email", "ada@example.com")
    return dest


def _refs(store: Store, name: str) -> dict[str, str]:
    repo = store.repository(name)
    return {f"refs/heads/{k}": v for k, v in repo.branches().items()} | {
        f"refs/tags/{k}": v for k, v in repo.tags().items()
    }


def test_clone_ls_remote_and_shallow_clone(seeded: Store, url: str, tmp_path: Path) -> None:
    remote = f"{url}/demo.git"
    pairs = [line.split("\t") for line in git(tmp_path, "ls-remote", remote).splitlines()]
    listed = {name: oid for oid, name in pairs}
    assert listed["HEAD"] == listed["refs/heads/main"]
    assert {k: v for k, v in listed.items() if not k.endswith("^{}") and k != "HEAD"} == _refs(
        seeded, "demo"
    )
    clone = _clone(remote, tmp_path / "c")
    assert refs_of(clone)["refs/tags/v1"] == seeded.repository("demo").tags()["v1"]
    assert git(clone, "rev-parse", "origin/dev").strip() == seeded.repository("demo").resolve("dev")
    assert (clone / "src" / "b.py").read_bytes() == b"b = 1\n"
    assert fsck(clone)[0] == 0
    assert all_objects(clone) <= _stored(seeded, "demo")
    shallow = _clone(remote, tmp_path / "s", "--depth", "1")
    assert git(shallow, "rev-list", "--count", "HEAD").strip() == "1"
    assert (shallow / ".git" / "shallow").read_text().strip() == seeded.repository("demo").resolve(
        "main"
    )
    assert fsck(shallow)[0] == 0


def test_incremental_fetch(seeded: Store, url: str, tmp_path: Path) -> None:
    clone = _clone(f"{url}/demo.git", tmp_path / "c")
    repo = seeded.repository("demo")
    new = repo.commit("main", {"src/c.py": b"c\n"}, message="c\n", author=SIG)
    repo.create_tag("v2", "main", message="two\n", tagger=SIG)
    done = git_run(clone, "fetch", "-v", "origin")
    assert done.returncode == 0, done.stderr
    assert git(clone, "rev-parse", "origin/main").strip() == new
    assert git(clone, "rev-parse", "v2^{}").strip() == new  # include-tag / tag following
    git(clone, "merge", "-q", "--ff-only", "origin/main")
    assert (clone / "src" / "c.py").read_bytes() == b"c\n"
    assert fsck(clone)[0] == 0
    git(clone, "fetch", "-q", "origin")  # nothing new: still fine


def test_push_branch_ff_tag_delete_force(seeded: Store, url: str, tmp_path: Path) -> None:
    repo = seeded.repository("demo")
    events: list[RefUpdated] = []
    seeded.subscribe(events.append, repository="demo")
    clone = _clone(f"{url}/demo.git", tmp_path / "c")
    one = commit_file(clone, "src/pushed.py", "p = 1\n", "pushed one")
    two = commit_file(clone, "docs/guide.md", "guide\n", "pushed two")
    git(clone, "push", "-q", "origin", "HEAD:refs/heads/feature")
    assert repo.branches()["feature"] == two
    git(clone, "push", "-q", "origin", "HEAD:main")  # fast-forward
    assert repo.resolve("main") == two
    assert repo.read("main", "src/pushed.py") == b"p = 1\n"
    assert [c.oid for c in repo.log("main", path="src/pushed.py")] == [one]  # index built
    assert repo.reflog("main")[0].message == "push"
    git(clone, "tag", "-a", "-m", "three", "v3")
    git(clone, "push", "-q", "origin", "v3")
    assert repo.get_tag("v3").object == two
    git(clone, "push", "-q", "origin", ":feature")
    assert "feature" not in repo.branches()
    git(clone, "reset", "-q", "--hard", "HEAD~2")
    rejected = git_run(clone, "push", "origin", "HEAD:main")
    assert rejected.returncode != 0 and b"non-fast-forward" in rejected.stderr
    assert repo.resolve("main") == two
    forced = commit_file(clone, "forced.txt", "f\n", "forced")
    git(clone, "push", "-q", "origin", "+HEAD:main")
    assert repo.resolve("main") == forced
    assert repo.reflog("main")[0].old == two
    deadline = time.monotonic() + 5
    while len(events) < 6 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [(e.ref, e.new) for e in events][:2] == [
        ("refs/heads/feature", two),
        ("refs/heads/main", two),
    ]
    assert ("refs/heads/main", forced) in [(e.ref, e.new) for e in events]
    assert repo.verify().ok


def test_atomic_push_moves_nothing_when_one_ref_fails(
    seeded: Store, url: str, tmp_path: Path
) -> None:
    repo = seeded.repository("demo")
    clone = _clone(f"{url}/demo.git", tmp_path / "c")
    new = commit_file(clone, "x.txt", "x\n", "x")
    # Deleting the default branch is refused by the server: with --atomic, nothing moves.
    done = git_run(clone, "push", "--atomic", "origin", "HEAD:refs/heads/a1", ":main")
    assert done.returncode != 0
    assert b"atomic" in done.stderr
    assert "a1" not in repo.branches()
    with pytest.raises(NotFound):
        repo.get_object(new)
    done = git_run(clone, "push", "origin", "HEAD:refs/heads/a1", ":main")  # not atomic
    assert done.returncode != 0
    assert repo.branches()["a1"] == new and "main" in repo.branches()


def _pkt(line: bytes | None) -> bytes:
    return b"0000" if line is None else b"%04x" % (len(line) + 4) + line


def _receive_body(commands: list[tuple[str, str, str]], pack: bytes) -> bytes:
    out = b""
    for i, (old, new, ref) in enumerate(commands):
        caps = b"\0report-status" if i == 0 else b""
        out += _pkt(f"{old} {new} {ref}".encode() + caps + b"\n")
    return out + _pkt(None) + pack


def _post_receive(url: str, name: str, body: bytes) -> str:
    resp = httpx.post(
        f"{url}/{name}.git/git-receive-pack",
        content=body,
        headers={"Content-Type": "application/x-git-receive-pack-request"},
        timeout=30,
    )
    assert resp.status_code == 200
    return resp.content.decode("utf-8", "replace")


def _pack(repo: Path, *revs: str, thin: bool = False) -> bytes:
    args = ["pack-objects", "--revs", "--stdout", "-q"] + (["--thin"] if thin else [])
    done = git_run_input(repo, args, ("\n".join(revs) + "\n").encode())
    return done


def git_run_input(repo: Path, args: list[str], stdin: bytes) -> bytes:
    import subprocess

    return subprocess.run(
        ["git", *args], cwd=repo, input=stdin, capture_output=True, env=ENV, check=True
    ).stdout


def test_malformed_and_stale_pushes_store_nothing(seeded: Store, url: str, tmp_path: Path) -> None:
    repo = seeded.repository("demo")
    head = repo.resolve("main")
    clone = _clone(f"{url}/demo.git", tmp_path / "c")
    new = commit_file(clone, "y.txt", "y\n", "y")
    pack = _pack(clone, new, "^" + head)
    before = _stored(seeded, "demo")
    corrupt = pack[:40] + bytes(b ^ 0xFF for b in pack[40:60]) + pack[60:]
    out = _post_receive(url, "demo", _receive_body([(head, new, "refs/heads/main")], corrupt))
    assert "unpack ok" not in out and "ng refs/heads/main" in out
    out = _post_receive(url, "demo", _receive_body([(head, new, "refs/heads/main")], pack[:-30]))
    assert "ng refs/heads/main" in out
    out = _post_receive(url, "demo", _receive_body([(head, new, "refs/heads/main")], b"garbage"))
    assert "ng refs/heads/main" in out
    # A stale old value: the compare-and-swap refuses it (the pack itself is fine).
    out = _post_receive(url, "demo", _receive_body([(new, new, "refs/heads/main")], pack))
    assert "ng refs/heads/main failed to lock" in out
    assert repo.resolve("main") == head
    assert "ng refs/heads/x funny refname" in _post_receive(
        url, "demo", _receive_body([(ZERO, head, "refs/heads/x..y")], b"")
    ).replace("refs/heads/x..y", "refs/heads/x")
    # Nothing of the refused packs was stored (the stale one stored its objects, unreferenced
    # objects being harmless, exactly as git keeps a pack whose ref update failed).
    assert _stored(seeded, "demo") - before <= all_objects(clone) - before


def test_interrupted_push_stores_nothing(seeded: Store, url: str, tmp_path: Path) -> None:
    repo = seeded.repository("demo")
    head = repo.resolve("main")
    clone = _clone(f"{url}/demo.git", tmp_path / "c")
    new = commit_file(clone, "big.bin", "z" * 200_000, "big")
    body = _receive_body([(head, new, "refs/heads/main")], _pack(clone, new, "^" + head))
    before = _stored(seeded, "demo")
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            b"POST /demo.git/git-receive-pack HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/x-git-receive-pack-request\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[: len(body) // 2]
        )
        time.sleep(0.3)
    time.sleep(0.5)
    assert repo.resolve("main") == head
    assert _stored(seeded, "demo") == before
    git(clone, "push", "-q", "origin", "HEAD:main")  # and the server still works
    assert repo.resolve("main") == new


def test_objects_of_another_repository_cannot_be_referenced(
    seeded: Store, url: str, tmp_path: Path
) -> None:
    other = seeded.create_repository("other")
    other.commit("main", {"o.txt": b"other\n"}, message="o\n", author=SIG)
    demo = seeded.repository("demo")
    clone = _clone(f"{url}/demo.git", tmp_path / "c")
    head = demo.resolve("main")
    (clone / "src" / "b.py").write_text("b = 1\nb += 1\n")  # a delta against demo's blob
    git(clone, "commit", "-q", "-am", "on top of demo")
    new = git(clone, "rev-parse", "HEAD").strip()
    other_head = other.resolve("main")
    for thin in (False, True):
        pack = _pack(clone, new, "^" + head, thin=thin)
        out = _post_receive(
            url, "other", _receive_body([(other_head, new, "refs/heads/main")], pack)
        )
        assert "ng refs/heads/main" in out, out
    assert other.resolve("main") == other_head
    with pytest.raises(NotFound):
        other.get_object(new)
    with pytest.raises(NotFound):
        other.get_object(head)
    # Through the real client too: pushing demo's history to "other" sends it whole.
    git(clone, "push", "-q", f"{url}/other.git", "HEAD:refs/heads/imported")
    assert other.branches()["imported"] == new
    assert demo.resolve("main") == head


def test_a_new_tree_entry_naming_another_repositorys_blob_is_refused(
    seeded: Store, url: str, tmp_path: Path
) -> None:
    # Only the entries a tree adds over its parent's tree are checked for existence (the
    # rest exist already): an added entry, at the top or in a new subtree, naming a blob
    # of another repository must still be refused.
    other = seeded.create_repository("other")
    other.commit("main", {"o.txt": b"other\n"}, message="o\n", author=SIG)
    demo = seeded.repository("demo")
    stolen = next(e.oid for e in demo.walk("main"))
    other_head = other.resolve("main")
    clone = _clone(f"{url}/other.git", tmp_path / "o")
    listing = git(clone, "ls-tree", "HEAD")
    for nested in (False, True):
        entry = f"100644 blob {stolen}\tstolen.txt\n"
        made = []
        if nested:
            sub = git_run_input(clone, ["mktree", "--missing"], entry.encode()).decode().strip()
            made.append(sub)
            entry = f"040000 tree {sub}\tdir\n"
        tree = (
            git_run_input(clone, ["mktree", "--missing"], (listing + entry).encode())
            .decode()
            .strip()
        )
        commit = (
            git_run_input(clone, ["commit-tree", tree, "-p", other_head, "-m", "x"], b"")
            .decode()
            .strip()
        )
        pack = git_run_input(
            clone,
            ["pack-objects", "--stdout", "-q"],
            "\n".join([commit, tree, *made]).encode() + b"\n",
        )
        out = _post_receive(
            url, "other", _receive_body([(other_head, commit, "refs/heads/main")], pack)
        )
        assert "ng refs/heads/main" in out and "missing necessary objects" in out, out
        assert other.resolve("main") == other_head
        with pytest.raises(NotFound):
            other.get_object(stolen)
        with pytest.raises(NotFound):
            other.get_object(commit)


def test_access_rules(seeded: Store, tmp_path: Path) -> None:
    with serving_url(make_git_app(seeded)) as base:  # pushing off by default
        clone = _clone(f"{base}/demo.git", tmp_path / "c")
        commit_file(clone, "n.txt", "n\n", "n")
        done = git_run(clone, "push", "origin", "HEAD:main")
        assert done.returncode != 0 and b"403" in done.stderr
        assert httpx.get(f"{base}/nope.git/info/refs?service=git-upload-pack").status_code == 404
        assert httpx.get(f"{base}/demo.git/info/refs").status_code == 403  # dumb protocol
        assert httpx.get(f"{base}/demo.git/HEAD").status_code == 404
        bad = httpx.post(f"{base}/demo.git/git-upload-pack", content=b"0000")
        assert bad.status_code == 415

    calls: list[tuple[str, bool]] = []

    def check(scope: dict[str, Any], name: str, write: bool) -> int | None:
        calls.append((name, write))
        headers = dict(scope["headers"])
        if headers.get(b"authorization") == b"Bearer good":
            return None
        return 401 if b"authorization" not in headers else 403

    with serving_url(make_git_app(seeded, allow_push=True, check_access=check)) as base:
        done = git_run(tmp_path, "ls-remote", f"{base}/demo.git")
        assert done.returncode != 0
        resp = httpx.get(f"{base}/demo.git/info/refs?service=git-upload-pack")
        assert resp.status_code == 401 and "www-authenticate" in resp.headers
        resp = httpx.get(
            f"{base}/demo.git/info/refs?service=git-receive-pack",
            headers={"Authorization": "Bearer bad"},
        )
        assert resp.status_code == 403
        header = "http.extraHeader=Authorization: Bearer good"
        git(clone, "-c", header, "push", "-q", f"{base}/demo.git", "HEAD:main")
        assert ("demo", True) in calls and ("demo", False) in calls


def test_gzip_request_body(seeded: Store, url: str) -> None:
    want = seeded.repository("demo").resolve("main")
    caps = "side-band-64k thin-pack ofs-delta"
    body = _pkt(f"want {want} {caps}\n".encode()) + _pkt(None) + _pkt(b"done\n")
    resp = httpx.post(
        f"{url}/demo.git/git-upload-pack",
        content=gzip.compress(body),
        headers={
            "Content-Type": "application/x-git-upload-pack-request",
            "Content-Encoding": "gzip",
        },
    )
    assert resp.status_code == 200
    assert resp.content.startswith(b"0008NAK\n")
    assert b"PACK" in resp.content


def test_pack_size_limit_setting(db_url: str, tmp_path: Path) -> None:
    limits: dict[int, bool] = {}
    for limit in (10_000, 10_000_000):
        with govc_db.open(db_url, Settings(push_max_pack_bytes=limit)) as store:
            name = f"lim{limit}"
            store.create_repository(name).commit("main", {"a": b"a"}, message="a\n", author=SIG)
            with serving_url(make_git_app(store, allow_push=True)) as base:
                clone = _clone(f"{base}/{name}.git", tmp_path / name)
                (clone / "blob.bin").write_bytes(os.urandom(100_000))  # incompressible
                git(clone, "add", "blob.bin")
                git(clone, "commit", "-q", "-m", "big")
                done = git_run(clone, "push", "origin", "HEAD:main")
                limits[limit] = done.returncode == 0
                if not limits[limit]:
                    assert b"maximum allowed size" in done.stderr
                    assert "blob.bin" not in {e.path for e in store.repository(name).walk("main")}
    assert limits == {10_000: False, 10_000_000: True}
    with pytest.raises(ValueError):
        Settings(push_max_pack_bytes=0)


def test_fetch_deltas_settings_change_the_pack(db_url: str, tmp_path: Path) -> None:
    sizes: dict[tuple[bool, int], int] = {}
    chains: dict[tuple[bool, int], int] = {}
    for deltas, depth in ((False, 50), (True, 50), (True, 1)):
        with govc_db.open(db_url, Settings(fetch_deltas=deltas, fetch_delta_depth=depth)) as store:
            name = f"d{int(deltas)}x{depth}"
            repo = store.create_repository(name)
            files = {
                f"pkg/m{i:02d}.py": f"# module {i}\nvalue = 1\n".encode() * 20 for i in range(30)
            }
            repo.commit("main", files, message="init\n", author=SIG)
            for k in range(30):
                body = f"# module {k}\nvalue = {k + 2}\n".encode() * 20
                repo.commit("main", {f"pkg/m{k:02d}.py": body}, message=f"{k}\n", author=SIG)
            with serving_url(make_git_app(store)) as base:
                clone = tmp_path / name
                git(tmp_path, "clone", "-q", "--bare", f"{base}/{name}.git", str(clone))
            assert fsck(clone)[0] == 0
            assert git(clone, "rev-parse", "main").strip() == repo.resolve("main")
            packs = clone / "objects" / "pack"
            sizes[deltas, depth] = sum(p.stat().st_size for p in packs.glob("*.pack"))
            verify = git(clone, "verify-pack", "-v", *map(str, packs.glob("*.idx")))
            lengths = [
                int(line.split("=")[1].split(":")[0])
                for line in verify.splitlines()
                if line.startswith("chain length")
            ]
            chains[deltas, depth] = max(lengths, default=0)
    assert sizes[True, 50] < sizes[False, 50] * 0.7
    assert chains == {(False, 50): 0, (True, 50): chains[True, 50], (True, 1): 1}
    assert chains[True, 50] > 1
    with pytest.raises(ValueError):
        Settings(fetch_delta_depth=0)


def test_empty_repository_clone_then_first_push(store: Store, tmp_path: Path) -> None:
    store.create_repository("empty")
    with serving_url(make_git_app(store, allow_push=True)) as base:
        done = git_run(tmp_path, "clone", f"{base}/empty.git", str(tmp_path / "e"))
        assert done.returncode == 0, done.stderr
        clone = tmp_path / "e"
        git(clone, "checkout", "-q", "-b", "main")
        first = commit_file(clone, "a.txt", "a\n", "first")
        git(clone, "push", "-q", "origin", "main")
    repo = store.repository("empty")
    assert repo.resolve("main") == first
    assert repo.read("main", "a.txt") == b"a\n"


def test_mounted_under_a_starlette_app(seeded: Store, tmp_path: Path) -> None:
    pytest.importorskip("starlette")  # the http branch's dependency
    from starlette.applications import Starlette
    from starlette.routing import Mount

    outer = Starlette(routes=[Mount("/git", app=make_git_app(seeded))])
    with serving_url(outer) as base:
        clone = _clone(f"{base}/git/demo.git", tmp_path / "m")
        assert git(clone, "rev-parse", "HEAD").strip() == seeded.repository("demo").resolve("main")
