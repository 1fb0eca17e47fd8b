"""Helpers for the interop tests: real git repositories with the odd objects real
histories hold, built with the ``git`` command (plumbing where porcelain refuses).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "Ada",
    "GIT_AUTHOR_EMAIL": "ada@example.com",
    "GIT_COMMITTER_NAME": "Ada",
    "GIT_COMMITTER_EMAIL": "ada@example.com",
    "GIT_AUTHOR_DATE": "1700000000 +0100",
    "GIT_COMMITTER_DATE": "1700000000 +0100",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
    "LC_ALL": "C",
}


def git(cwd: Path | str, *args: str, stdin: bytes | None = None, check: bool = True) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, input=stdin, capture_output=True, env=ENV, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {done.stderr.decode()[-2000:]}")
    return done.stdout.decode("utf-8", "surrogateescape")


def git_run(cwd: Path | str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, env=ENV, check=False)


def hash_object(repo: Path, kind: str, raw: bytes) -> str:
    return git(repo, "hash-object", "-t", kind, "-w", "--literally", "--stdin", stdin=raw).strip()


def all_objects(repo: Path) -> set[str]:
    """Every object id reachable from the refs of ``repo``."""
    out = git(repo, "rev-list", "--objects", "--all")
    return {line.split()[0] for line in out.splitlines() if line}


def refs_of(repo: Path) -> dict[str, str]:
    out = git(repo, "for-each-ref", "--format=%(objectname) %(refname)", "refs/heads", "refs/tags")
    return {name: oid for oid, name in (line.split(" ", 1) for line in out.splitlines())}


def fsck(repo: Path, *, strict: bool = True) -> tuple[int, str]:
    args = ["fsck", "--no-dangling", "--no-progress"] + (["--strict"] if strict else [])
    done = git_run(repo, *args)
    return done.returncode, (done.stdout + done.stderr).decode("utf-8", "replace")


def commit_file(repo: Path, path: str, data: str, message: str) -> str:
    full = repo / path
    full.parent.mkdir(parents=True, exist_ok=True)
    full.write_text(data)
    git(repo, "add", path)
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


def make_history(root: Path) -> Path:
    """A repository with merges, tags, a signed-looking commit and tag, a mergetag, a
    latin-1 message with an ``encoding`` header, a gitlink and a symlink."""
    repo = root / "src"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    base = commit_file(repo, "README.md", "hello\n", "init")
    commit_file(repo, "src/a.py", "a = 1\n", "a")
    git(repo, "checkout", "-q", "-b", "side")
    commit_file(repo, "src/b.py", "b = 1\n", "b on side")
    git(repo, "checkout", "-q", "main")
    commit_file(repo, "docs/x.md", "x\n", "x on main")
    git(repo, "merge", "-q", "--no-ff", "-m", "merge side", "side")
    git(repo, "tag", "-a", "-m", "release 1\n", "v1")
    git(repo, "tag", "light", base)
    (repo / "link").symlink_to("README.md")
    os.chmod(repo / "README.md", 0o755)
    git(repo, "add", "link", "README.md")
    git(repo, "update-index", "--add", "--cacheinfo", f"160000,{base},vendor/sub")
    git(repo, "commit", "-q", "-m", "symlink, exec bit and a submodule")
    head = git(repo, "rev-parse", "HEAD").strip()
    tree = git(repo, "rev-parse", "HEAD^{tree}").strip()
    sig = (
        "gpgsig -----BEGIN PGP SIGNATURE-----\n \n iQEzBAABCAAdFiEE\n =abcd\n"
        " -----END PGP SIGNATURE-----\n"
    )
    signed = (
        f"tree {tree}\nparent {head}\nauthor Ada <ada@example.com> 1700000100 +0100\n"
        f"committer Ada <ada@example.com> 1700000100 +0100\n{sig}\nsigned commit\n"
    ).encode()
    signed_id = hash_object(repo, "commit", signed)
    latin = (
        f"tree {tree}\nparent {signed_id}\nauthor J\xf6rg <j@example.com> 1700000200 -0530\n"
        f"committer J\xf6rg <j@example.com> 1700000200 -0530\nencoding ISO-8859-1\n\n"
        "caf\xe9 au lait\n"
    ).encode("latin-1")
    latin_id = hash_object(repo, "commit", latin)
    tag_raw = (
        f"object {latin_id}\ntype commit\ntag v2-signed\n"
        "tagger Ada <ada@example.com> 1700000300 +0000\n\nsigned tag\n"
        "-----BEGIN PGP SIGNATURE-----\n\niQEz\n-----END PGP SIGNATURE-----\n"
    ).encode()
    tag_id = hash_object(repo, "tag", tag_raw)
    side = git(repo, "rev-parse", "side").strip()
    mergetag = "mergetag " + tag_raw.decode().rstrip("\n").replace("\n", "\n ") + "\n"
    merge = (
        f"tree {tree}\nparent {latin_id}\nparent {side}\n"
        "author Ada <ada@example.com> 1700000400 +0000\n"
        f"committer Ada <ada@example.com> 1700000400 +0000\n{mergetag}\nmerge with mergetag\n"
    ).encode()
    merge_id = hash_object(repo, "commit", merge)
    git(repo, "update-ref", "refs/heads/main", merge_id)
    git(repo, "update-ref", "refs/tags/v2-signed", tag_id)
    git(repo, "reset", "-q", "--hard")
    return repo


def add_odd_objects(repo: Path) -> dict[str, str]:
    """Commits with signatures our strict parser refuses but git accepts, and a tree with
    the old ``100664`` mode; on branch ``odd``. Returns their ids."""
    blob = hash_object(repo, "blob", b"odd\n")
    odd_tree = hash_object(
        repo,
        "tree",
        b"100664 old-mode.txt\0" + bytes.fromhex(blob) + b"100644 z.txt\0" + bytes.fromhex(blob),
    )
    parent = git(repo, "rev-parse", "main").strip()
    ids = {"tree": odd_tree}
    raw = (
        f"tree {odd_tree}\nparent {parent}\nauthor  <nobody@example.com> 1700000500 -0000\n"
        "committer Zed <zed@example.com> 1700000500 +1500\n\nempty name, odd zones\n"
    ).encode()
    ids["commit1"] = hash_object(repo, "commit", raw)
    raw2 = (
        f"tree {odd_tree}\nparent {ids['commit1']}\n"
        "author Ada <ada@example.com> 99999999999 +0075\n"
        "committer Ada <ada@example.com> 99999999999 +0000\n\nfar future, +0075\n"
    ).encode()
    ids["commit2"] = hash_object(repo, "commit", raw2)
    git(repo, "update-ref", "refs/heads/odd", ids["commit2"])
    return ids
