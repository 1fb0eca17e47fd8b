"""Hostile input for every public entry point, on both backends.

Every bad call must raise the right typed error (a ``GovcError``), carry no SQL or driver
text in its message, and leave every row of every govc table exactly as it was. SQL
metacharacters are legal in paths, messages, signatures and (some) ref names: they are
stored verbatim and read back unchanged. Database passwords never show up anywhere.

The store is shared by the module (one per backend) so the few thousand cases run
fast; that is sound because each case compares full snapshots of the tables taken
immediately before and after its call.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pg
import pytest
import sqlalchemy as sa
from _export import export_repository, git

import govc_db
from govc_db import (
    AlreadyExists,
    ChangeBuilder,
    File,
    GovcError,
    InvalidInput,
    NotFound,
    RefConflict,
    Repository,
    Settings,
    Signature,
    Store,
    StoreUnavailable,
)
from govc_db.models import Base, ObjectRow
from govc_db.objects import hash_object

SIG = Signature("Ada Lovelace", "ada@example.com", 1_700_000_000, 60)
SQL_WORDS = ("SELECT", "INSERT", "UPDATE", "DELETE FROM")
DRIVER_WORDS = ("sqlalchemy", "psycopg", "sqlite3")
INJECTION = "'; DROP TABLE govc_refs; --"


@dataclass
class Env:
    store: Store
    repo: Repository
    c1: str  # main~1, where topic and the annotated tag v1 point
    c2: str  # main
    blob: str  # a.txt at main
    tree: str  # dir at main
    foreign_blob: str  # an object of another repository only
    ambiguous: str  # a 4-hex prefix shared by two blobs of the repository
    unknown_prefix: str  # an 8-hex prefix of no object at all


def _colliding_blobs() -> tuple[bytes, bytes, str]:
    seen: dict[str, bytes] = {}
    i = 0
    while True:
        data = b"ambiguous %d\n" % i
        prefix = hash_object(b"blob", data).hex()[:4]
        if prefix in seen:
            return seen[prefix], data, prefix
        seen[prefix] = data
        i += 1


def _populate(store: Store) -> Env:
    repo = store.create_repository("hostile")
    amb1, amb2, prefix = _colliding_blobs()
    c1 = repo.commit(
        "main",
        {"a.txt": b"1", "dir/f": b"f", "amb/1": amb1, "amb/2": amb2},
        message="one\n",
        author=SIG,
    )
    c2 = repo.commit("main", {"a.txt": b"2"}, message="two\n", author=SIG)
    repo.create_branch("topic", c1)
    repo.create_tag("v1", c1, message="tag\n", tagger=SIG)
    other = store.create_repository("elsewhere")
    other.commit("main", {"only-here": b"foreign content\n"}, message="m\n", author=SIG)
    foreign = hash_object(b"blob", b"foreign content\n").hex()
    with store.engine.connect() as conn:
        ids = {bytes(r[0]).hex() for r in conn.execute(sa.select(ObjectRow.__table__.c.oid))}
    unknown = next(
        p for p in (f"{n:08x}" for n in range(1000)) if not any(i.startswith(p) for i in ids)
    )
    entries = {e.name: e.oid for e in repo.tree("main")}
    return Env(store, repo, c1, c2, entries["a.txt"], entries["dir"], foreign, prefix, unknown)


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ],
)
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    admin: str | None = None
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("hostile") / "govc.db"
        url = sa.URL.create("sqlite", database=str(path)).render_as_string()
    else:
        admin = request.getfixturevalue("pg_admin_url")
        url = pg.create_database(admin)
    store = govc_db.open(url)
    try:
        store.upgrade()
        yield _populate(store)
    finally:
        store.close()
        if admin is not None:
            pg.drop_database(admin, url)


def snapshot(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every govc table, in primary-key order."""
    with store.engine.connect() as conn:
        return {
            t.name: [tuple(r) for r in conn.execute(sa.select(t).order_by(*t.primary_key.columns))]
            for t in Base.metadata.sorted_tables
        }


def assert_clean_error(exc: BaseException) -> None:
    assert isinstance(exc, GovcError)
    assert type(exc).__module__ == "govc_db.errors"
    for text in (str(exc), repr(exc)):
        assert not any(w in text for w in SQL_WORDS), text
        assert not any(w in text.lower() for w in DRIVER_WORDS), text


def check_rejected(env: Env, call: Callable[[], object], error: type[GovcError]) -> None:
    before = snapshot(env.store)
    with pytest.raises(error) as info:
        call()
    assert_clean_error(info.value)
    assert snapshot(env.store) == before


# -- the cases ---------------------------------------------------------------------------

Call = Callable[[Env], object]
NON_STR: dict[str, object] = {"None": None, "int": 1, "bytes": b"main", "tuple": ("main",)}


def _build(env: Env, stage: Callable[[ChangeBuilder], object], branch: Any = "main") -> None:
    with env.repo.changes(branch, message="m\n", author=SIG) as c:
        stage(c)


def _commit(env: Env, changes: Any, **kw: Any) -> str:
    kw.setdefault("message", "m\n")
    kw.setdefault("author", SIG)
    return env.repo.commit(kw.pop("branch", "main"), changes, **kw)


def _const(value: object) -> Callable[[Env], object]:
    return lambda e: value


def _lit(values: dict[str, object]) -> dict[str, Callable[[Env], object]]:
    return {k: _const(v) for k, v in values.items()}


def _with_kw(kw: dict[str, object]) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "Ada", "email": "ada@example.com", "time": 0, "offset": 0}
    return {**base, **kw}


def _or_x(value: Any) -> Any:
    # None is a legal committer/tagger (a default applies): use another non-Signature.
    return "x" if value is None else value


BAD_PATHS: dict[str, object] = {
    "empty": "",
    "absolute": "/a",
    "trailing-slash": "a/",
    "empty-component": "a//b",
    "dot": ".",
    "dot-component": "a/./b",
    "leading-dot-component": "./a",
    "dotdot": "..",
    "dotdot-component": "a/../b",
    "dotgit": ".git",
    "dotgit-nested": "a/.git/b",
    "dotgit-case": "a/.GiT",
    "nul": "a\0b",
    "newline": "a\nb",
    "tab": "a\tb",
    "control": "\x01",
    "del": "a\x7f",
    "escape": "a\x1b[0m",
    "component-256-bytes": "x" * 256,
    "component-256-utf8-bytes": "é" * 128,
    "path-over-4096-bytes": "abcdefgh/" * 455 + "xy",
    "huge": "a" * (1 << 20),
    "lone-surrogate": "a\udc80b",
    **NON_STR,
}
PATH_CALLS: dict[str, Callable[[Env, Any], object]] = {
    "commit-write": lambda e, p: _commit(e, {p: b"x"}),
    "commit-delete": lambda e, p: _commit(e, {p: None}),
    "changes-write": lambda e, p: _build(e, lambda c: c.write(p, b"x")),
    "changes-delete": lambda e, p: _build(e, lambda c: c.delete(p)),
    "read": lambda e, p: e.repo.read("main", p),
    "open": lambda e, p: e.repo.open("main", p),
    "exists": lambda e, p: e.repo.exists("main", p),
    "tree": lambda e, p: e.repo.tree("main", p),
    "walk": lambda e, p: list(e.repo.walk("main", p)),
    "log": lambda e, p: list(e.repo.log("main", path=p)),
}

BAD_REFS: dict[str, object] = {
    "empty": "",
    "dotdot": "a..b",
    "tilde": "a~1",
    "caret": "a^",
    "colon": "a:b",
    "question": "a?",
    "star": "a*",
    "bracket": "a[b",
    "backslash": "a\\b",
    "space": "a b",
    "control": "a\x01b",
    "del": "a\x7f",
    "nul": "a\0",
    "newline": "a\nb",
    "leading-dash": "-a",
    "leading-slash": "/a",
    "trailing-slash": "a/",
    "trailing-dot": "a.",
    "lock": "a.lock",
    "lock-component": "a.lock/b",
    "dot-component": "a/.b",
    "leading-dot": ".a",
    "at-brace": "a@{1}",
    "lone-at": "@",
    "empty-component": "a//b",
    "over-1013-bytes": "a" * 1014,  # refs/heads/ + name must fit 1024
    "injection": INJECTION,
    "lone-surrogate": "a\udc80",
    "full-ref": "refs/heads/x",
    "HEAD": "HEAD",
    **NON_STR,
}
#: Rules of ``git check-ref-format`` (the rest are ours: short names only, HEAD reserved).
#: NUL and lone surrogates cannot be passed to git in argv; the length limit is ours.
GIT_RULES = [
    k
    for k in BAD_REFS
    if k not in ("full-ref", "HEAD", "over-1013-bytes", "nul", "lone-surrogate", *NON_STR)
]
REF_CALLS: dict[str, Callable[[Env, Any], object]] = {
    "commit": lambda e, n: _commit(e, {"x": b"x"}, branch=n),
    "changes": lambda e, n: _build(e, lambda c: c.write("x", b"x"), branch=n),
    "create_branch": lambda e, n: e.repo.create_branch(n, "main"),
    "move_branch": lambda e, n: e.repo.move_branch(n, "main", force=True),
    "delete_branch": lambda e, n: e.repo.delete_branch(n),
    "create_tag": lambda e, n: e.repo.create_tag(n, "main"),
    "create_tag-annotated": lambda e, n: e.repo.create_tag(n, message="m\n", tagger=SIG),
    "delete_tag": lambda e, n: e.repo.delete_tag(n),
    "reflog": lambda e, n: e.repo.reflog(n),
    "default_branch": lambda e, n: e.store.create_repository("fresh", default_branch=n),
}

REV_NOT_FOUND: dict[str, Callable[[Env], object]] = {
    "unknown-name": lambda e: "nope",
    "unknown-branch-ref": lambda e: "refs/heads/nope",
    "unknown-tag-ref": lambda e: "refs/tags/nope",
    "unknown-full-id": lambda e: "0" * 40,
    "foreign-full-id": lambda e: e.foreign_blob,
    "unknown-abbrev": lambda e: e.unknown_prefix,
    "short-hex-is-a-name": lambda e: "abc",
    "past-root": lambda e: "main~50",
    "no-second-parent": lambda e: "main^2",
    "huge-number": lambda e: "main~99999999999",
    "unknown-with-suffix": lambda e: "nope~1",
    "case-differs": lambda e: "MAIN",
    "like-percent": lambda e: "ma%",
    "like-underscore": lambda e: "mai_",
    "injection-like-name": lambda e: "';DROP-TABLE-govc_refs;--",
}
REV_INVALID: dict[str, Callable[[Env], object]] = {
    "empty": lambda e: "",
    "range": lambda e: "main..topic",
    "reflog-syntax": lambda e: "main@{1}",
    "peel-syntax": lambda e: "main^{tree}",
    "path-syntax": lambda e: "main:a.txt",
    "negative": lambda e: "main~-1",
    "letters-after-tilde": lambda e: "main~x",
    "space": lambda e: "ma in",
    "nul": lambda e: "main\0",
    "newline": lambda e: "main\n",
    "leading-dash": lambda e: "-main",
    "lock": lambda e: "main.lock",
    "huge": lambda e: "x" * 5000,
    "injection": lambda e: INJECTION,
    "ambiguous-abbrev": lambda e: e.ambiguous,
    **_lit(NON_STR),
}
#: Revisions naming a tree or blob: invalid where a commit is needed, legal tag targets.
REV_NOT_COMMIT: dict[str, Callable[[Env], object]] = {
    "blob-id": lambda e: e.blob,
    "tree-id": lambda e: e.tree,
    "blob-abbrev": lambda e: e.blob[:10],
}
REV_CALLS: dict[str, Callable[[Env, Any], object]] = {
    "read": lambda e, r: e.repo.read(r, "a.txt"),
    "open": lambda e, r: e.repo.open(r, "a.txt"),
    "exists": lambda e, r: e.repo.exists(r, "a.txt"),
    "tree": lambda e, r: e.repo.tree(r),
    "walk": lambda e, r: list(e.repo.walk(r)),
    "resolve": lambda e, r: e.repo.resolve(r),
    "get_commit": lambda e, r: e.repo.get_commit(r),
    "log": lambda e, r: list(e.repo.log(r)),
    "diff-old": lambda e, r: e.repo.diff(r, "main"),
    "diff-new": lambda e, r: e.repo.diff("main", r),
    "merge_base-a": lambda e, r: e.repo.merge_base(r, "main"),
    "merge_base-b": lambda e, r: e.repo.merge_base("main", r),
    "is_ancestor-a": lambda e, r: e.repo.is_ancestor(r, "main"),
    "is_ancestor-b": lambda e, r: e.repo.is_ancestor("main", r),
    "create_branch": lambda e, r: e.repo.create_branch("fresh", r),
    "move_branch": lambda e, r: e.repo.move_branch("topic", r, force=True),
    "create_tag": lambda e, r: e.repo.create_tag("fresh", r),
    "create_tag-annotated": lambda e, r: e.repo.create_tag("fresh", r, message="m\n", tagger=SIG),
}
TAG_CALLS = ("create_tag", "create_tag-annotated")

BAD_REPO_NAMES: dict[str, object] = {
    "empty": "",
    "leading-dot": ".hidden",
    "dot": ".",
    "dotdot": "..",
    "slash": "a/b",
    "space": "a b",
    "over-100": "x" * 101,
    "huge": "x" * 100_000,
    "non-ascii": "é",
    "nul": "a\0",
    "newline": "a\n",
    "injection": INJECTION,
    "percent": "%",
    "star": "*",
    "backslash": "a\\b",
    "quote": "it's",
    **NON_STR,
}
REPO_CALLS: dict[str, Callable[[Env, Any], object]] = {
    "create_repository": lambda e, n: e.store.create_repository(n),
    "repository": lambda e, n: e.store.repository(n),
    "delete_repository": lambda e, n: e.store.delete_repository(n),
    "subscribe": lambda e, n: e.store.subscribe(print, repository=n),
}

BAD_SIGNATURES: dict[str, dict[str, object]] = {
    "empty-name": {"name": ""},
    "lt-in-name": {"name": "a<b"},
    "gt-in-name": {"name": "a>b"},
    "newline-in-name": {"name": "a\nb"},
    "nul-in-name": {"name": "a\0b"},
    "leading-space": {"name": " Ada"},
    "trailing-space": {"name": "Ada "},
    "surrogate-name": {"name": "\ud800"},
    "name-None": {"name": None},
    "name-bytes": {"name": b"Ada"},
    "lt-in-email": {"email": "a<b@c"},
    "gt-in-email": {"email": "a>b@c"},
    "newline-in-email": {"email": "a\n@c"},
    "email-None": {"email": None},
    "negative-time": {"time": -1},
    "time-2-63": {"time": 2**63},
    "time-bool": {"time": True},
    "time-float": {"time": 1.5},
    "time-str": {"time": "1700000000"},
    "time-None": {"time": None},
    "offset-15h": {"offset": 15 * 60},
    "offset-minus-15h": {"offset": -15 * 60},
    "offset-bool": {"offset": True},
    "offset-float": {"offset": 1.5},
    "offset-str": {"offset": "+0100"},
}
NOT_A_SIGNATURE: dict[str, object] = {
    "None": None,
    "str": "Ada <ada@example.com> 0 +0000",
    "tuple": ("Ada", "ada@example.com", 0, 0),
    "int": 1,
}
BAD_MODES: dict[str, object] = {
    "dir": 0o40000,
    "gitlink": 0o160000,
    "group-writable": 0o100664,
    "0600": 0o100600,
    "zero": 0,
    "negative": -1,
    "short-644": 0o644,
    "short-755": 0o755,
    "bool": True,
    "str": "100644",
    "float": 33188.0,
    "None": None,
}
BAD_CONTENT: dict[str, object] = {"str": "text", "int": 1, "list": [b"x"], "dict": {}}


def _semantic_cases() -> list[Any]:
    """Well-formed calls that must fail on the state of the repository."""
    cases: dict[str, tuple[Call, type[GovcError]]] = {
        "commit-stale-expected-head": (
            lambda e: _commit(e, {"x": b"x"}, expected_head=e.c1),
            RefConflict,
        ),
        "commit-expected-head-not-hex": (
            lambda e: _commit(e, {"x": b"x"}, expected_head="xyz"),
            InvalidInput,
        ),
        "commit-expected-head-int": (
            lambda e: _commit(e, {"x": b"x"}, expected_head=1),
            InvalidInput,
        ),
        "commit-unknown-branch": (lambda e: _commit(e, {"x": b"x"}, branch="nope"), NotFound),
        "commit-delete-missing-path": (lambda e: _commit(e, {"missing": None}), NotFound),
        "commit-nothing-changed": (lambda e: _commit(e, {"a.txt": b"2"}), InvalidInput),
        "commit-file-and-dir": (lambda e: _commit(e, {"n": b"", "n/b": b""}), InvalidInput),
        "commit-under-a-file": (lambda e: _commit(e, {"a.txt/x": b""}), InvalidInput),
        "commit-over-a-dir": (lambda e: _commit(e, {"dir": b""}), InvalidInput),
        "commit-changes-not-mapping": (lambda e: _commit(e, ["a.txt"]), InvalidInput),
        "commit-changes-None": (lambda e: _commit(e, None), InvalidInput),
        "commit-message-None": (lambda e: _commit(e, {"x": b"x"}, message=None), InvalidInput),
        "commit-message-int": (lambda e: _commit(e, {"x": b"x"}, message=1), InvalidInput),
        "commit-message-surrogate": (
            lambda e: _commit(e, {"x": b"x"}, message="\ud800"),
            InvalidInput,
        ),
        "changes-message-None": (
            lambda e: e.repo.changes("main", message=None, author=SIG).__exit__(None, None, None),  # type: ignore[arg-type]
            InvalidInput,
        ),
        "read-missing-path": (lambda e: e.repo.read("main", "missing"), NotFound),
        "read-directory": (lambda e: e.repo.read("main", "dir"), InvalidInput),
        "read-below-a-file": (lambda e: e.repo.read("main", "a.txt/x"), NotFound),
        "open-missing-path": (lambda e: e.repo.open("main", "missing"), NotFound),
        "tree-missing-dir": (lambda e: e.repo.tree("main", "missing"), NotFound),
        "tree-of-a-file": (lambda e: e.repo.tree("main", "a.txt"), NotFound),
        "walk-missing": (lambda e: list(e.repo.walk("main", "missing")), NotFound),
        "get_object-missing": (lambda e: e.repo.get_object("0" * 40), NotFound),
        "get_object-other-repository": (lambda e: e.repo.get_object(e.foreign_blob), NotFound),
        "get_object-abbreviated": (lambda e: e.repo.get_object(e.c1[:8]), InvalidInput),
        "get_object-not-hex": (lambda e: e.repo.get_object("g" * 40), InvalidInput),
        "get_object-39": (lambda e: e.repo.get_object("0" * 39), InvalidInput),
        "get_object-41": (lambda e: e.repo.get_object("0" * 41), InvalidInput),
        "get_object-padded": (lambda e: e.repo.get_object(" " + e.c1), InvalidInput),
        "get_object-injection": (lambda e: e.repo.get_object(INJECTION), InvalidInput),
        "log-limit-negative": (lambda e: list(e.repo.log(limit=-1)), InvalidInput),
        "log-limit-str": (lambda e: list(e.repo.log(limit="1")), InvalidInput),  # type: ignore[arg-type]
        "log-limit-float": (lambda e: list(e.repo.log(limit=1.5)), InvalidInput),  # type: ignore[arg-type]
        "log-limit-bool": (lambda e: list(e.repo.log(limit=True)), InvalidInput),
        "create_branch-exists": (lambda e: e.repo.create_branch("topic"), AlreadyExists),
        "create_branch-below-a-branch": (lambda e: e.repo.create_branch("topic/x"), AlreadyExists),
        "create_branch-above-a-branch": (lambda e: e.repo.create_branch("main/x"), AlreadyExists),
        "move_branch-missing": (lambda e: e.repo.move_branch("nope", "main"), NotFound),
        "move_branch-not-fast-forward": (lambda e: e.repo.move_branch("main", e.c1), RefConflict),
        "move_branch-stale-expected": (
            lambda e: e.repo.move_branch("topic", "main", expected=e.c2),
            RefConflict,
        ),
        "move_branch-expected-not-hex": (
            lambda e: e.repo.move_branch("topic", "main", expected="zz"),
            InvalidInput,
        ),
        "delete_branch-default": (lambda e: e.repo.delete_branch("main"), InvalidInput),
        "delete_branch-missing": (lambda e: e.repo.delete_branch("nope"), NotFound),
        "delete_branch-stale-expected": (
            lambda e: e.repo.delete_branch("topic", expected=e.c2),
            RefConflict,
        ),
        "delete_branch-expected-int": (
            lambda e: e.repo.delete_branch("topic", expected=1),  # type: ignore[arg-type]
            InvalidInput,
        ),
        "create_tag-exists": (lambda e: e.repo.create_tag("v1"), AlreadyExists),
        "create_tag-message-int": (
            lambda e: e.repo.create_tag("fresh", message=1),  # type: ignore[arg-type]
            InvalidInput,
        ),
        "delete_tag-missing": (lambda e: e.repo.delete_tag("nope"), NotFound),
        "reflog-missing": (lambda e: e.repo.reflog("nope"), NotFound),
        "reflog-missing-full": (lambda e: e.repo.reflog("refs/heads/nope"), NotFound),
        "create_repository-default-branch-over-255": (
            lambda e: e.store.create_repository("fresh", default_branch="b" * 256),
            InvalidInput,
        ),
        "create_repository-exists": (lambda e: e.store.create_repository("hostile"), AlreadyExists),
        "repository-missing": (lambda e: e.store.repository("missing"), NotFound),
        "repository-case-differs": (lambda e: e.store.repository("HOSTILE"), NotFound),
        "repository-like-underscore": (lambda e: e.store.repository("hostil_"), NotFound),
        "delete_repository-missing": (lambda e: e.store.delete_repository("missing"), NotFound),
        "delete_repository-like-underscore": (
            lambda e: e.store.delete_repository("hostil_"),
            NotFound,
        ),
        "subscribe-not-callable": (lambda e: e.store.subscribe("print"), InvalidInput),  # type: ignore[arg-type]
    }
    return [pytest.param(c, err, id=k) for k, (c, err) in cases.items()]


def _cross(
    group: str,
    calls: dict[str, Callable[[Env, Any], object]],
    values: dict[str, Callable[[Env], object]],
    error: type[GovcError],
    *,
    full: tuple[str, ...] = (),
    subset: tuple[str, ...] = (),
    skip: Callable[[str, str], bool] = lambda call, value: False,
) -> list[Any]:
    """Every call with every value, except that calls outside ``full`` (when given) get
    only the values of ``subset``: they share the validation the ``full`` ones exercise.
    """
    return [
        pytest.param((lambda e, c=c, v=v: c(e, v(e))), error, id=f"{group}-{cname}-{vname}")
        for cname, c in calls.items()
        for vname, v in values.items()
        if (not full or cname in full or vname in subset) and not skip(cname, vname)
    ]


CASES: list[Any] = [
    *_cross(
        "path",
        PATH_CALLS,
        _lit(BAD_PATHS),
        InvalidInput,
        full=("commit-write", "read"),
        subset=("empty", "absolute", "dotdot-component", "dotgit-case", "nul", "huge", "int"),
        # "" is the root for tree/walk, and None means "no path" for log.
        skip=lambda c, v: (c in ("tree", "walk") and v == "empty") or (c == "log" and v == "None"),
    ),
    *_cross(
        "ref",
        REF_CALLS,
        _lit(BAD_REFS),
        InvalidInput,
        full=("commit", "create_branch"),
        subset=("dotdot", "space", "lock", "at-brace", "full-ref", "None"),
        skip=lambda c, v: c == "reflog" and v == "full-ref",  # legal for reflog
    ),
    *_cross(
        "rev",
        REV_CALLS,
        {**REV_NOT_FOUND},
        NotFound,
        full=("resolve", "create_tag"),
        subset=("unknown-name", "past-root"),
    ),
    *_cross(
        "rev",
        REV_CALLS,
        REV_INVALID,
        InvalidInput,
        full=("resolve", "create_tag"),
        subset=("path-syntax", "ambiguous-abbrev", "None"),
    ),
    *_cross(
        "rev",
        REV_CALLS,
        REV_NOT_COMMIT,
        InvalidInput,
        full=("resolve",),
        subset=("blob-id",),
        skip=lambda c, v: c in TAG_CALLS,
    ),
    *_cross(
        "repo-name",
        REPO_CALLS,
        _lit(BAD_REPO_NAMES),
        InvalidInput,
        full=("create_repository", "repository"),
        subset=("empty", "slash", "over-100", "injection", "int"),
    ),
    *_cross(
        "not-a-signature",
        {
            "author": lambda e, s: _commit(e, {"x": b"x"}, author=s),
            "committer": lambda e, s: _commit(e, {"x": b"x"}, committer=_or_x(s)),
            "changes-author": lambda e, s: e.repo.changes("main", message="m\n", author=s).__exit__(
                None, None, None
            ),
            "tagger": lambda e, s: e.repo.create_tag("fresh", message="m\n", tagger=_or_x(s)),
        },
        _lit(NOT_A_SIGNATURE),
        InvalidInput,
    ),
    *_cross(
        "mode",
        {"changes-write": lambda e, m: _build(e, lambda c: c.write("x", b"x", m))},
        _lit(BAD_MODES),
        InvalidInput,
    ),
    *_cross(
        "content",
        {
            "commit": lambda e, d: _commit(e, {"x": d}),
            "changes-write": lambda e, d: _build(e, lambda c: c.write("x", d)),
        },
        _lit(BAD_CONTENT),
        InvalidInput,
    ),
    *_semantic_cases(),
]


@pytest.mark.parametrize(("call", "error"), CASES)
def test_bad_call_is_rejected_cleanly(env: Env, call: Call, error: type[GovcError]) -> None:
    check_rejected(env, lambda: call(env), error)


# -- values that never reach a store ------------------------------------------------------

BAD_SETTINGS: dict[str, dict[str, Any]] = {
    "pool_size-0": {"pool_size": 0},
    "pool_size-str": {"pool_size": "5"},
    "pool_size-None": {"pool_size": None},
    "pool_size-bool": {"pool_size": True},
    "pool_timeout-negative": {"pool_timeout": -1.0},
    "pool_timeout-nan": {"pool_timeout": float("nan")},
    "compression-unknown": {"compression": "lz4"},
    "compression-level-0": {"compression_level": 0},
    "compression-level-10-zlib": {"compression_level": 10},
    "rate_limit-0": {"rate_limit": 0.0},
    "retry_attempts-0": {"retry_attempts": 0},
    "replica_urls-str": {"replica_urls": "postgresql+psycopg://h/db"},
    "metrics_enabled-str": {"metrics_enabled": "yes"},
}
BAD_ENV: dict[str, dict[str, str]] = {
    "pool_size-abc": {"GOVC_DB_POOL_SIZE": "abc"},
    "pool_size-0": {"GOVC_DB_POOL_SIZE": "0"},
    "compression": {"GOVC_DB_COMPRESSION": "lz4"},
    "bool": {"GOVC_DB_METRICS_ENABLED": "maybe"},
    "float": {"GOVC_DB_POOL_TIMEOUT": "soon"},
}
BAD_URLS: dict[str, object] = {
    "mysql": "mysql://u@h/db",
    "garbage": "::::",
    "empty": "",
    "asyncpg": "postgresql+asyncpg://h/db",
    "int": 123,
    "bytes": b"sqlite://",
}
VALUE_CASES: list[Any] = [
    *[
        pytest.param(lambda kw=kw: Signature(**_with_kw(kw)), id=f"Signature-{k}")
        for k, kw in BAD_SIGNATURES.items()
    ],
    *[pytest.param(lambda m=m: File(b"x", m), id=f"File-mode-{k}") for k, m in BAD_MODES.items()],
    *[
        pytest.param(lambda d=d: File(d), id=f"File-content-{k}")
        for k, d in {**BAD_CONTENT, "None": None}.items()
    ],
    *[
        pytest.param(lambda kw=kw: Settings(**kw), id=f"Settings-{k}")
        for k, kw in BAD_SETTINGS.items()
    ],
    *[
        pytest.param(lambda env=env: Settings.from_env(env), id=f"from_env-{k}")
        for k, env in BAD_ENV.items()
    ],
    pytest.param(lambda: Settings().replace(no_such_field=1), id="Settings-replace-unknown"),
]


@pytest.mark.parametrize("call", VALUE_CASES)
def test_bad_values_are_invalid_input(call: Callable[[], object]) -> None:
    with pytest.raises(InvalidInput) as info:
        call()
    assert_clean_error(info.value)


@pytest.mark.parametrize("url", BAD_URLS.values(), ids=BAD_URLS.keys())
def test_bad_store_urls(url: Any) -> None:
    with pytest.raises(InvalidInput) as info:
        govc_db.open(url)
    # The message may name the driver a URL must use; it must not carry SQL.
    assert not any(w in str(info.value) for w in SQL_WORDS)
    with pytest.raises(InvalidInput):
        govc_db.open("sqlite://", settings=_or_x("fast"))


@pytest.mark.parametrize("rule", GIT_RULES)
def test_bad_ref_names_are_bad_for_git_too(rule: str) -> None:
    name = BAD_REFS[rule]
    assert isinstance(name, str)

    def git_accepts(*args: str) -> bool:
        run = subprocess.run(["git", "check-ref-format", *args], capture_output=True, check=False)
        return run.returncode == 0

    # --branch knows the rules of branch names (a leading '-'); --allow-onelevel the
    # rest ('@' alone), for a name that is not taken for an option.
    bad_branch = not git_accepts("--branch", name)
    bad_ref = name.startswith("-") or not git_accepts("--allow-onelevel", name)
    assert bad_branch or bad_ref
    assert git_accepts("--branch", "ok/name") and git_accepts("--allow-onelevel", "ok")


# -- large change sets are atomic -------------------------------------------------------


def test_large_failing_change_set_writes_nothing(env: Env) -> None:
    changes: dict[str, bytes | None] = {f"bulk/{i:05d}.txt": b"%d\n" % i for i in range(2000)}
    # Every blob is written before the missing path is found: all must roll back.
    check_rejected(env, lambda: _commit(env, {**changes, "missing/file": None}), NotFound)
    check_rejected(env, lambda: _commit(env, {**changes, "bulk/../x": b""}), InvalidInput)
    check_rejected(env, lambda: _commit(env, {**changes, "a.txt/under-a-file": b""}), InvalidInput)
    assert env.repo.resolve("main") == env.c2


# -- SQL metacharacters are data ----------------------------------------------------------

META_STRINGS = [INJECTION, "%", "_", "\\", "100% _done_ \\n", "' OR '1'='1", 'say "hi"; --']


def test_metacharacters_in_paths_round_trip(env: Env) -> None:
    repo = env.store.create_repository("meta-paths")
    files = {s: s.encode() for s in META_STRINGS}
    files.update({"dir%/sub_/x\\y": b"nested", "ab": b"plain", "a": b"short"})
    first = repo.commit("main", files, message="meta\n", author=SIG)
    second = repo.commit("main", {"%": b"changed"}, message="pct\n", author=SIG)
    for path, data in files.items():
        expected = b"changed" if path == "%" else data
        assert repo.read("main", path) == expected
        assert repo.exists("main", path)
    assert sorted(e.path for e in repo.walk("main")) == sorted(files)
    # No LIKE wildcard matches anything but itself.
    assert not repo.exists("main", "a_")
    assert not repo.exists("main", "a%")
    assert [c.oid for c in repo.log(path="%")] == [second, first]
    assert [c.oid for c in repo.log(path="_")] == [first]
    assert [c.oid for c in repo.log(path="a")] == [first]
    assert [e.path for e in repo.tree("main", "dir%")] == ["dir%/sub_"]
    assert [c.path for c in repo.diff(first, second)] == ["%"]
    assert repo.verify().ok


def test_metacharacters_in_messages_and_signatures_round_trip(env: Env) -> None:
    repo = env.store.create_repository("meta-messages")
    message = "\n".join(META_STRINGS) + "\n"
    who = Signature("Robert'); DROP TABLE govc_refs;--", "%_@\\example.com", 1, -330)
    oid = repo.commit("main", {"f": b"x"}, message=message, author=who)
    info = repo.get_commit(oid)
    assert info.message == message
    assert info.author == info.committer == who
    assert repo.reflog("main")[0].message == f"commit (initial): {INJECTION}"
    tag = repo.create_tag("t", message=message, tagger=who)
    assert repo.get_object(tag)[1].endswith(b"\n\n" + message.encode())


def test_metacharacters_in_ref_and_repository_names(env: Env, tmp_path: Path) -> None:
    repo = env.store.create_repository("_")
    env.store.create_repository("x-")
    assert env.store.repository("_").name == "_"
    oid = repo.commit("main", {"f": b"x"}, message="m\n", author=SIG)
    names = ["%", "_", "';DROP-TABLE-govc_refs;--", "it's", "100%", "a_b", "%/_"]
    for name in names[:-1]:
        assert repo.create_branch(name) == oid
        assert repo.create_tag(name) == oid
    with pytest.raises(AlreadyExists):
        repo.create_branch("%/_")
    assert sorted(repo.branches()) == sorted([*names[:-1], "main"])
    assert sorted(repo.tags()) == sorted(names[:-1])
    for name in names[:-1]:
        assert repo.resolve(name) == oid
        assert repo.resolve(f"refs/heads/{name}") == oid
    repo.delete_branch("_")
    repo.delete_tag("%")
    assert "_" not in repo.branches() and "a_b" in repo.branches()
    assert "%" not in repo.tags() and "100%" in repo.tags()
    dest = export_repository(repo, tmp_path / "export.git")
    git(dest, "fsck", "--strict", "--no-dangling", "--no-progress")
    env.store.delete_repository("_")
    assert "x-" in env.store.list_repositories()
    assert "_" not in env.store.list_repositories()


def test_huge_legal_inputs_round_trip(env: Env) -> None:
    repo = env.store.create_repository("huge")
    big = bytes(range(256)) * (12 * 1024)  # 3 MiB
    path = "/".join(["d" * 200] * 20)  # 4019 bytes: under the limits
    message = "subject\n\n" + "body line\n" * 50_000
    oid = repo.commit("main", {"big.bin": big, path: b"deep"}, message=message, author=SIG)
    assert repo.read("main", "big.bin") == big
    assert repo.open("main", "big.bin").read() == big
    assert repo.read(oid, path) == b"deep"
    assert repo.get_commit("main").message == message
    long_branch = "b" * 1013  # the longest short name: refs/heads/ + 1013 = 1024 bytes
    assert repo.create_branch(long_branch) == oid
    assert repo.resolve(long_branch) == oid
    assert repo.verify().ok


# -- stale handles ---------------------------------------------------------------------------


def test_handle_of_a_deleted_repository(store: Store) -> None:
    doomed = store.create_repository("doomed")
    doomed.commit("main", {"f": b"x"}, message="m\n", author=SIG)
    store.delete_repository("doomed")
    reborn = store.create_repository("reborn")
    reborn.commit("main", {"secret": b"not yours"}, message="m\n", author=SIG)
    calls: list[Callable[[], object]] = [
        doomed.branches,
        lambda: doomed.read("main", "secret"),
        lambda: doomed.commit("main", {"g": b"y"}, message="m\n", author=SIG),
        lambda: doomed.create_branch("b"),
    ]
    for call in calls:
        before = snapshot(store)
        with pytest.raises(NotFound) as info:
            call()
        assert_clean_error(info.value)
        assert snapshot(store) == before


# -- passwords ------------------------------------------------------------------------------

SECRET = "secretpw"
SECRET_URL = f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:1/x"


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def test_password_never_leaks(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(connect_timeout=1, pool_timeout=1, replica_urls=(SECRET_URL,))
    assert SECRET not in repr(settings)
    with caplog.at_level(logging.DEBUG):
        store = govc_db.open(SECRET_URL, settings)
        try:
            assert SECRET not in repr(store)
            assert SECRET not in store.url
            calls: list[Callable[[], object]] = [
                store.list_repositories,
                lambda: store.repository("x"),
                lambda: store.create_repository("x"),
                lambda: store.delete_repository("x"),
                store.upgrade,
            ]
            for call in calls:
                with pytest.raises(StoreUnavailable) as info:
                    call()
                assert_clean_error(info.value)
                for exc in _chain(info.value):
                    assert SECRET not in str(exc)
                    assert SECRET not in repr(exc)
            assert SECRET not in repr(store.metrics())
            assert SECRET not in store.performance_report()
        finally:
            store.close()
    assert SECRET not in caplog.text
