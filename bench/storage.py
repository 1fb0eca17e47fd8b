"""7. Stored size after ``gc()``, and 10. a realistic history's size, against git.

* **size after gc** (with workload 7): ``repo.gc()`` on the imported history, then the
  same size measure as workload 7 (``pg_total_relation_size`` of every ``govc_*`` table;
  the SQLite file after a checkpoint), against git's pack after ``git repack -adf`` of its
  copy; and the time of ``repo.gc()`` against ``git gc`` on a copy of git's repository.
* **realistic history** (workload ``storage``): a generated history shaped like a real
  project's (:func:`realistic_history`): ~150 text files of 0.5-20 KB in 15 directories
  edited a few lines at a time with edits of varying size, renames with small edits,
  new and deleted files, and binaries (random bytes, some with image/archive magic)
  replaced now and then. Ours: ``repo.commit()`` per commit into a database of its own,
  measured before and after ``repo.gc()``. git: the same commits through ``git
  fast-import``, then ``git repack -adf`` (git at its usual best: a pack written by
  fast-import keeps its stream-order deltas through a plain ``git gc``).
"""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

import govc_db
from bench.harness import T0, Sizes, Target, collect, unsupported
from bench.history import MIB, History, _postgres_size, _sqlite_size
from bench.peers import AUTHOR_EMAIL, AUTHOR_NAME, git, git_env, signature
from bench.report import Result, Stats

__all__ = ["bench_realistic", "bench_size_gc", "realistic_history"]

Commit = tuple[int, dict[str, bytes | None], bytes]
WORDS = (
    "def",
    "class",
    "return",
    "self",
    "value",
    "None",
    "import",
    "from",
    "for",
    "in",
    "if",
    "else",
    "elif",
    "while",
    "try",
    "except",
    "raise",
    "with",
    "as",
    "lambda",
    "yield",
    "data",
    "result",
    "items",
    "config",
    "path",
    "name",
    "index",
    "count",
    "total",
    "print",
    "append",
    "update",
    "get",
    "set",
    "list",
    "dict",
    "str",
    "int",
    "float",
    "True",
    "False",
)


def _size(t: Target, url: str | None = None) -> tuple[int, dict[str, Any]]:
    u = url or t.url
    return (_postgres_size if t.backend == "postgresql" else _sqlite_size)(u)


def _pack_bytes(git_dir: Path) -> int:
    pack = git_dir / "objects" / "pack"
    return sum(p.stat().st_size for p in pack.glob("*.pack"))


def bench_size_gc(t: Target, sizes: Sizes, h: History | BaseException) -> list[Result]:
    """Size after ``repo.gc()`` vs git's ``repack -adf`` pack; gc time vs ``git gc``."""
    n = sizes.history + 1
    size = Result(
        "7 size",
        f"stored size of the {n:,}-commit history after repo.gc()",
        t.backend,
        "MiB",
        False,
        "git pack after git repack -adf",
    )
    took = Result(
        "7 size", f"repo.gc() of the {n:,}-commit history", t.backend, "s", False, "git gc"
    )
    if isinstance(h, BaseException):
        return [unsupported(size, h), unsupported(took, h)]
    collect()
    t0 = time.perf_counter()
    report = h.repo.gc()
    took.ours = Stats.of([time.perf_counter() - t0])
    stored, detail = _size(t)
    size.ours = Stats.of([stored / MIB])
    size.notes = {"ours_detail_mib": detail, "gc": report.as_dict()}
    if h.git_error is None:
        copy = t.workdir / "gc-copy.git"
        shutil.copytree(h.git_dir, copy)
        t0 = time.perf_counter()
        git(copy, "gc", "-q")
        took.theirs = Stats.of([time.perf_counter() - t0])
        git(copy, "repack", "-adfq")
        size.theirs = Stats.of([_pack_bytes(copy) / MIB])
        shutil.rmtree(copy)
    return [size, took]


# -- the realistic history ------------------------------------------------------------------
def _text(rng: random.Random, lines: int) -> list[str]:
    out = []
    for _ in range(lines):
        indent = "    " * rng.randint(0, 3)
        out.append(indent + " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 10))))
    return out


def _binary(rng: random.Random) -> bytes:
    magic = rng.choice([b"\x89PNG\r\n\x1a\n", b"PK\x03\x04", b"\x00\x01\x02\x03"])
    return magic + rng.randbytes(rng.randint(4_000, 60_000))


def realistic_history(commits: int, seed: int = 16) -> list[Commit]:
    """``commits`` + 1 commits (k, {path: content or None to delete}, message)."""
    rng = random.Random(seed)
    files: dict[str, list[str]] = {}
    binaries: dict[str, bytes] = {}
    dirs = [f"src/pkg{d}" for d in range(12)] + ["docs", "tests", "tools"]
    for i in range(150):
        files[f"{rng.choice(dirs)}/mod_{i}.py"] = _text(rng, rng.randint(15, 500))
    for i in range(6):
        binaries[f"assets/blob_{i}.bin"] = _binary(rng)
    first: dict[str, bytes | None] = {p: "\n".join(v).encode() + b"\n" for p, v in files.items()}
    first.update(binaries)
    out: list[Commit] = [(0, first, b"initial import\n")]
    for k in range(1, commits + 1):
        change: dict[str, bytes | None] = {}
        roll = rng.random()
        if roll < 0.03 and len(files) > 20:  # rename with a small edit
            old = rng.choice(sorted(files))
            new = f"{rng.choice(dirs)}/renamed_{k}.py"
            lines = files.pop(old)
            lines.insert(rng.randint(0, len(lines)), "# moved")
            files[new] = lines
            change[old] = None
            change[new] = "\n".join(lines).encode() + b"\n"
        elif roll < 0.05:  # a new file
            path = f"{rng.choice(dirs)}/new_{k}.py"
            files[path] = _text(rng, rng.randint(10, 200))
            change[path] = "\n".join(files[path]).encode() + b"\n"
        elif roll < 0.06 and len(files) > 20:  # a deleted file
            path = rng.choice(sorted(files))
            del files[path]
            change[path] = None
        elif roll < 0.07:  # a binary replaced
            path = rng.choice(sorted(binaries))
            binaries[path] = _binary(rng)
            change[path] = binaries[path]
        else:  # ordinary edits: 1-4 files, a few lines each (sometimes a larger rewrite)
            for path in rng.sample(sorted(files), rng.randint(1, 4)):
                lines = files[path]
                span = rng.choice([1, 1, 2, 3, 5, 8, 30])
                at = rng.randint(0, max(0, len(lines) - 1))
                if rng.random() < 0.3 and len(lines) > span + 5:
                    del lines[at : at + span]
                else:
                    lines[at:at] = _text(rng, span)
                change[path] = "\n".join(lines).encode() + b"\n"
        out.append((k, change, f"change {k}: {', '.join(sorted(change))[:60]}\n".encode()))
    return out


def _stream(commits: list[Commit]) -> bytes:
    ident = f"{AUTHOR_NAME} <{AUTHOR_EMAIL}>".encode()
    out: list[bytes] = []
    for k, changes, msg in commits:
        when = T0 + k
        out.append(b"commit refs/heads/main\n")
        out.append(b"author %s %d +0000\ncommitter %s %d +0000\n" % (ident, when, ident, when))
        out.append(b"data %d\n%s\n" % (len(msg), msg))
        for path, data in changes.items():
            if data is None:
                out.append(b"D %s\n" % path.encode())
            else:
                out.append(b"M 100644 inline %s\ndata %d\n%s\n" % (path.encode(), len(data), data))
    out.append(b"done\n")
    return b"".join(out)


def _own_database(t: Target) -> tuple[str, Any]:
    """A fresh database of its own (so its size is this history's alone), and a dropper."""
    if t.backend != "postgresql":
        path = t.workdir / "realistic.db"
        path.unlink(missing_ok=True)
        return f"sqlite:///{path}", lambda: None
    url = make_url(t.url)
    name = f"{url.database}_realistic"
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)

    def run(sql: str) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql)

    run(f'DROP DATABASE IF EXISTS "{name}"')
    run(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False), lambda: run(
        f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    )


def bench_realistic(t: Target, sizes: Sizes) -> list[Result]:
    """Stored size of the realistic history, before and after gc(), vs git's best pack."""
    n = max(200, sizes.history // 2)
    commits = realistic_history(n)
    case = f"realistic {n + 1:,}-commit history (edits, renames, binaries)"
    before = Result("10 storage", case + ", before gc", t.backend, "MiB", False, "git repack -adf")
    after = Result(
        "10 storage", case + ", after repo.gc()", t.backend, "MiB", False, "git repack -adf"
    )
    url, drop = _own_database(t)
    try:
        with govc_db.open(url, t.settings) as store:
            store.upgrade()
            repo = store.create_repository("realistic")
            head = ""
            for k, changes, msg in commits:
                head = repo.commit("main", changes, message=msg.decode(), author=signature(T0 + k))
            before.ours = Stats.of([_size(t, url)[0] / MIB])
            report = repo.gc()
            after.ours = Stats.of([_size(t, url)[0] / MIB])
            after.notes["gc"] = report.as_dict()
    finally:
        drop()
    dest = t.workdir / "realistic.git"
    shutil.rmtree(dest, ignore_errors=True)
    git(Path("/"), "init", "-q", "--bare", "-b", "main", str(dest), env=git_env(dest))
    git(dest, "fast-import", "--quiet", "--done", input=_stream(commits))
    git(dest, "repack", "-adfq")
    pack = Stats.of([_pack_bytes(dest) / MIB])
    same = git(dest, "rev-parse", "main").decode().strip() == head
    for r in (before, after):
        r.theirs, r.check = pack, same
    shutil.rmtree(dest)
    return [before, after]


# -- the optimizer on and off, side by side -------------------------------------------------
def _ab_files(n: int) -> dict[str, bytes]:
    return {f"src/m{i // 10}/f{i}.py": _ab_text(i, 0) for i in range(n)}


def _ab_text(i: int, rev: int) -> bytes:
    rng = random.Random(i)
    lines = _text(rng, 40)
    lines[rev % 40] = f"revision = {rev}"
    return "\n".join(lines).encode() + b"\n"


def bench_ab(t: Target, sizes: Sizes) -> list[Result]:
    """One-file commits and cold reads of delta blobs with ``storage_optimizer`` on (ours)
    and off (the peer: today's whole rows), interleaved in slices on one database so both
    see the same machine load."""
    files, commits, slices = 100, max(200, sizes.history // 4), 10
    case = f"one-file commits onto a {files}-file tree, optimizer on"
    rate = Result("10 storage", case, t.backend, "commits/s", True, "storage_optimizer=False")
    read = Result(
        "10 storage",
        "cold read of a delta blob (query cache off, decoded-base cache cleared)",
        t.backend,
        "reads/s",
        True,
        "storage_optimizer=False (whole rows)",
    )
    stores = {
        on: govc_db.open(t.url, t.settings.replace(storage_optimizer=on, cache_enabled=False))
        for on in (True, False)
    }
    try:
        repos = {on: s.create_repository(f"ab-{int(on)}") for on, s in stores.items()}
        for repo in repos.values():
            repo.commit("main", _ab_files(files), message="init\n", author=signature(T0))
        rates: dict[bool, list[float]] = {True: [], False: []}
        per = commits // slices
        for sl in range(slices):
            for on in (sl % 2 == 0, sl % 2 != 0):
                collect()
                t0 = time.perf_counter()
                for k in range(sl * per + 1, (sl + 1) * per + 1):
                    i = k * 7 % files
                    repos[on].commit(
                        "main",
                        {f"src/m{i // 10}/f{i}.py": _ab_text(i, k)},
                        message=f"c{k}\n",
                        author=signature(T0 + k),
                    )
                rates[on].append(per / (time.perf_counter() - t0))
        rate.ours, rate.theirs = Stats.of(rates[True]), Stats.of(rates[False])
        oids = {
            on: [bytes.fromhex(e.oid) for e in repo.walk("HEAD")][:50] for on, repo in repos.items()
        }
        reads: dict[bool, list[float]] = {True: [], False: []}
        for rep in range(6):
            for on in (rep % 2 == 0, rep % 2 != 0):
                store, repo_id = stores[on], repos[on]._id
                t0 = time.perf_counter()
                for oid in oids[on]:
                    store.backend.codec.cache.clear()
                    with store.backend.unit(repo_id) as u:
                        u.objects.get(oid)  # type: ignore[arg-type]
                reads[on].append(len(oids[on]) / (time.perf_counter() - t0))
        read.ours, read.theirs = Stats.of(reads[True]), Stats.of(reads[False])
        st = stores[True].metrics()["storage"]
        read.notes["delta_depth"] = {"mean": st["mean_delta_depth"], "max": st["max_delta_depth"]}
    finally:
        for s in stores.values():
            s.close()
    return [rate, read]
