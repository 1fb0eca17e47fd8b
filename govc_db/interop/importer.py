"""``Store.import_git``: bring a local git repository's branches and tags in, ids exact.

The objects come from ``git rev-list --objects`` piped into ``git cat-file --batch``:
git itself lists and inflates them, so every object keeps its exact bytes and id,
whatever odd headers, modes or signatures it holds (reading ``git pack-objects``' output
through dulwich's pack parser gives the same bytes but resolves deltas in Python, 3-4x
slower). What the repository already has is excluded (its current ref tips, when the
source knows them): running the import again brings only what is new. They are stored in slices of
``Settings.import_slice_objects`` objects, one transaction per slice, through the batch
executor (COPY on PostgreSQL). ``rev-list`` names each tree and blob by its path and lists
them newest first, so the version last seen at a path is handed to ``put_bulk`` as the
delta hint of the next (older) one there: a directory with one entry changed is stored as a
splice of its successor, without compressing it. (A second thread writing while git is
read was tried and dropped: the GIL passing between per-row SQLite calls and the reading
loop made the bench's import slower, 10.1 s against 5.4 s in one run under load 7; a
thread that only reads git's output in MiB chunks, so that git runs ahead while a slice
is stored, is kept.) The commit index of the new commits is written in slices of its own
after the objects (the changed paths of non-merge commits from ``git diff-tree``, run
beside the object copy); the refs move last, all in one transaction, by compare-and-swap
against the values read before anything was stored. A ref that moved in govc_db to a
commit the source does not descend from is refused before anything is stored, unless
``force``.

On PostgreSQL the database's own work runs beside the client's: object batches are
COPYed behind while the next ones are encoded (``ObjectBatch.flush_behind``), and once
every commit is stored (git lists them before any tree or blob) the index rows of those
git's diff covers are written on a thread of their own, in their own transactions, while
the remaining object slices are stored (:class:`_EarlyIndex`); only the merges are left
for the index slices at the end. Not on SQLite: one writer at a time, and its driver
hands the GIL over for every row it steps. On both, Python's cyclic collector is paused
during the import (:func:`govc_db.perf.memory.collector_paused`: about a seventh of
the import's CPU time on the bench history went to collections).
"""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux: the pipe keeps its size
    fcntl = None  # type: ignore[assignment]

from govc_db.db.batch import BackgroundCall
from govc_db.errors import GovcError, InvalidInput, NotFound, RefConflict
from govc_db.interop.indexer import (
    IndexCommit,
    IndexPlan,
    TreeSource,
    index_commit,
    plan_index,
    write_index,
)
from govc_db.interop.types import ImportReport
from govc_db.objects import ObjectId, check_ref_name, check_repository_name
from govc_db.perf.memory import collector_paused
from govc_db.store.ports import Unit

if TYPE_CHECKING:
    from govc_db.api.repository import Repository
    from govc_db.api.store import Store

__all__ = ["Progress", "import_git"]

#: ``progress(stage, done, total)``; stages: "objects", "index", "refs".
Progress = Callable[[str, int, int], None]


def _git(source: Path, *args: str, stdin: bytes | None = None) -> bytes:
    try:
        done = subprocess.run(
            ["git", "-C", str(source), *args],
            input=stdin,
            capture_output=True,
            check=False,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"},
        )
    except OSError as exc:
        raise GovcError(f"cannot run git: {exc}") from None
    if done.returncode != 0:
        msg = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise InvalidInput(f"git {args[0]} failed in {source}: {msg[-1] if msg else '?'}")
    return done.stdout


def _check_is_repository(path: Path) -> None:
    """``path`` itself must be a repository (git would also accept any directory below
    one, and import the enclosing repository)."""
    out = _git(path, "rev-parse", "--absolute-git-dir", "--is-bare-repository")
    git_dir, bare = out.decode("utf-8", "surrogateescape").splitlines()[:2]
    here = path.resolve()
    if Path(git_dir).resolve() in (here, here / ".git"):
        return
    if bare == "false":
        top = _git(path, "rev-parse", "--show-toplevel").decode("utf-8", "surrogateescape")
        if Path(top.strip()).resolve() == here:
            return  # a linked worktree: its .git is a file
    raise InvalidInput(f"{path} is not the top of a git repository")


def _source_refs(source: Path, only: Sequence[str] | None) -> dict[str, ObjectId]:
    out: dict[str, ObjectId] = {}
    lines = _git(
        source, "for-each-ref", "--format=%(objectname) %(refname)", "refs/heads", "refs/tags"
    )
    for line in lines.decode("utf-8", "surrogateescape").splitlines():
        oid, _, name = line.partition(" ")
        out[name] = ObjectId(bytes.fromhex(oid))
    if only is not None:
        wanted = {r if r.startswith("refs/") else _short(r, out) for r in only}
        unknown = sorted(wanted - out.keys())
        if unknown:
            raise NotFound(f"ref {unknown[0]!r} not found in {source}")
        out = {k: v for k, v in out.items() if k in wanted}
    for name in out:
        check_ref_name(name)
    return out


def _short(name: str, refs: dict[str, ObjectId]) -> str:
    for prefix in ("refs/heads/", "refs/tags/"):
        if prefix + name in refs:
            return prefix + name
    return "refs/heads/" + name


def _default_branch(source: Path, refs: dict[str, ObjectId]) -> str:
    try:
        head = _git(source, "symbolic-ref", "-q", "HEAD").decode().strip()
    except InvalidInput:
        head = ""
    if head.startswith("refs/heads/") and head in refs:
        return head.removeprefix("refs/heads/")
    heads = sorted(r for r in refs if r.startswith("refs/heads/"))
    return heads[0].removeprefix("refs/heads/") if heads else "main"


def _known_to_source(source: Path, oids: Iterable[ObjectId]) -> set[ObjectId]:
    ids = sorted({o.hex() for o in oids})
    if not ids:
        return set()
    out = _git(
        source,
        "cat-file",
        "--batch-check=%(objectname) %(objecttype)",
        stdin="\n".join(ids).encode() + b"\n",
    )
    return {
        ObjectId(bytes.fromhex(line.split()[0]))
        for line in out.decode().splitlines()
        if not line.endswith(" missing")
    }


def _is_ancestor(source: Path, old: ObjectId, new: ObjectId) -> bool:
    done = subprocess.run(
        ["git", "-C", str(source), "merge-base", "--is-ancestor", old.hex(), new.hex()],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def _plan_moves(
    source: Path, src: dict[str, ObjectId], ours: dict[str, ObjectId], force: bool
) -> dict[str, tuple[ObjectId | None, ObjectId]]:
    moves: dict[str, tuple[ObjectId | None, ObjectId]] = {}
    known = _known_to_source(source, ours.values())
    for name, new in sorted(src.items()):
        old = ours.get(name)
        if old == new:
            continue
        if old is not None and not force:
            ff = name.startswith("refs/heads/") and old in known and _is_ancestor(source, old, new)
            if not ff:
                raise RefConflict(
                    f"{name} was moved in govc_db to {old.hex()}, which {new.hex()} in the "
                    "source does not descend from (import with force=True to overwrite)"
                )
        moves[name] = (old, new)
    return moves


def import_git(
    store: Store,
    name: str,
    source: str | os.PathLike[str],
    *,
    refs: Sequence[str] | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> ImportReport:
    """See :meth:`govc_db.Store.import_git`."""
    started = time.perf_counter()
    check_repository_name(name)
    path = Path(source)
    if not path.exists():
        raise NotFound(f"no git repository at {path}")
    _check_is_repository(path)
    src = _source_refs(path, refs)
    try:
        repo = store.repository(name)
    except NotFound:
        repo = store.create_repository(name, default_branch=_default_branch(path, src))
    ours = repo._run("import_refs", lambda u: u.refs.list_refs("refs/"))
    moves = _plan_moves(path, src, ours, force)
    if not moves:
        return ImportReport(name, 0, 0, {}, 0, time.perf_counter() - started)
    exclude = _known_to_source(path, ours.values())
    revs = [n.hex() for _, n in moves.values()] + ["^" + o.hex() for o in sorted(exclude)]
    with collector_paused(), _PathDiffs(path, revs) as diffs:
        objects, indexed, slices = _store_objects(
            repo, _source_objects(path, revs), progress, diffs
        )
    _move_refs(repo, moves, path, progress)
    return ImportReport(
        name,
        objects,
        indexed,
        {k: v.hex() for k, (_, v) in moves.items()},
        slices + 1,
        time.perf_counter() - started,
    )


class _PathDiffs:
    """The paths each imported non-merge commit changes against its parent (all of them
    for a root commit), computed by ``git diff-tree`` (in C) while the objects are being
    copied, spooled to a file. Merges, and anything git could not answer, are diffed by
    the indexer itself (``git diff-tree -m`` prints nothing for a parent the merge equals,
    so its output cannot say which parent a list belongs to)."""

    def __init__(self, source: Path, revs: list[str]) -> None:
        self._out = tempfile.TemporaryFile(prefix="govc-import-")  # noqa: SIM115 (closed by __exit__)
        self._procs: list[subprocess.Popen[bytes]] = []
        self._result: dict[ObjectId, list[str]] | None = None
        env = {**os.environ, "LC_ALL": "C"}
        try:
            lister = subprocess.Popen(
                ["git", "-C", str(source), "rev-list", "--no-merges", "--stdin"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=env,
            )
            self._procs.append(lister)
            differ = subprocess.Popen(
                [
                    "git",
                    "-C",
                    str(source),
                    "diff-tree",
                    "--stdin",
                    "-r",
                    "--root",
                    "--always",
                    "--no-renames",
                    "--ignore-submodules=none",
                    "--name-only",
                    "-z",
                    "--format=%x00%H",
                ],
                stdin=lister.stdout,
                stdout=self._out,
                stderr=subprocess.DEVNULL,
                env=env,
            )
            self._procs.append(differ)
            assert lister.stdin is not None and lister.stdout is not None
            lister.stdout.close()
            lister.stdin.write(("\n".join(revs) + "\n").encode())
            lister.stdin.close()
        except OSError:
            self._procs.clear()

    def __enter__(self) -> _PathDiffs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
        for proc in self._procs:
            proc.wait()
        self._out.close()

    def kill(self) -> None:
        """Stop git's diff where it is (an import that failed or was interrupted does not
        wait for it); :meth:`result` then answers nothing."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()

    def result(self) -> dict[ObjectId, list[str]]:
        """``commit -> changed paths`` (empty if git failed: the indexer diffs itself);
        read once, then remembered."""
        if self._result is None:
            self._result = self._read()
        return self._result

    def _read(self) -> dict[ObjectId, list[str]]:
        ok = bool(self._procs)
        for proc in self._procs:
            ok = proc.wait() == 0 and ok
        if not ok:
            return {}
        self._out.seek(0)
        tokens = self._out.read().split(b"\0")
        out: dict[ObjectId, list[str]] = {}
        paths: list[str] = []
        i, n = 0, len(tokens)
        while i < n - 1:
            # "\0<id>\0" opens a commit; then "\n" and its paths, each NUL-terminated
            # (a path is never empty, so an empty token always opens the next commit).
            if tokens[i] != b"" or len(tokens[i + 1]) != 40:
                return {}
            try:
                oid = ObjectId(bytes.fromhex(tokens[i + 1].decode("ascii")))
            except ValueError:
                return {}
            if oid in out:
                return {}
            paths = out[oid] = []
            i += 2
            if i < n and tokens[i]:
                if not tokens[i].startswith(b"\n"):
                    return {}
                tokens[i] = tokens[i][1:]
                while i < n and tokens[i]:
                    paths.append(tokens[i].decode("utf-8", "surrogateescape"))
                    i += 1
        return out


Source = Iterator[tuple[ObjectId, bytes, bytes, bytes]]
"""``(id, type, raw, path)``; the path (as ``git rev-list --objects`` names it, empty
for commits, tags and root trees) keys delta hints."""


def _source_objects(source: Path, revs: list[str]) -> Source:
    """``(id, type, raw, path)`` of every object reachable from ``revs`` (``^x``
    excludes), trees and blobs newest first."""
    env = {**os.environ, "LC_ALL": "C"}
    try:
        lister = subprocess.Popen(
            ["git", "-C", str(source), "rev-list", "--objects", "--stdin"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        reader = subprocess.Popen(
            [
                "git",
                "-C",
                str(source),
                "cat-file",
                "--batch=%(objectname) %(objecttype) %(objectsize) %(rest)",
            ],
            stdin=lister.stdout,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
    except OSError as exc:
        raise GovcError(f"cannot run git: {exc}") from None
    assert lister.stdin is not None and lister.stdout is not None and reader.stdout is not None
    lister.stdout.close()  # the reader owns it now
    ahead: _ReadAhead | None = None
    finished = False
    try:
        lister.stdin.write(("\n".join(revs) + "\n").encode())
        lister.stdin.close()
        ahead = _ReadAhead(reader.stdout)
        for oid_hex, type_name, raw, path in _batch_objects(ahead.chunks()):
            yield ObjectId(bytes.fromhex(oid_hex.decode())), type_name, raw, path
        finished = True
    finally:
        for proc in (lister, reader):
            if not finished:
                proc.kill()  # the reading thread then sees the end of its pipe
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if ahead is not None:
            ahead.close()
        reader.stdout.close()
    if lister.returncode not in (0, None) or reader.returncode not in (0, None):
        raise InvalidInput(f"git rev-list/cat-file failed in {source}")


#: What the reading thread hands over at a time, and how many such chunks may wait (git
#: runs ahead by up to that much while the objects before are stored).
_CHUNK = 1024 * 1024
_AHEAD = 32
#: After a read shorter than this, the reading thread pauses this long (seconds).
_SMALL_READ = 256 * 1024
_PAUSE = 0.005


class _ReadAhead:
    """Reads a pipe into a bounded queue of large chunks on a thread of its own, so
    ``git cat-file`` keeps running while the importer compresses and writes (a pipe
    holds 64 KiB: without this, git waits for every slice to be stored). Large reads
    (the pipe is grown to a MiB where Linux allows) keep the GIL handoffs to a few per
    MiB."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self._fd = pipe.fileno()
        grow = getattr(fcntl, "F_SETPIPE_SZ", None) if fcntl is not None else None
        if grow is not None:
            with contextlib.suppress(OSError):
                fcntl.fcntl(self._fd, grow, _CHUNK)
        self._q: queue.Queue[bytes | None] = queue.Queue(maxsize=_AHEAD)
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._pump, name="govc-import-read", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        try:
            while True:
                parts: list[bytes] = []
                n = 0
                while n < _CHUNK:
                    data = os.read(self._fd, _CHUNK - n)
                    if not data:
                        break
                    parts.append(data)
                    n += len(data)
                    if len(data) < _SMALL_READ:
                        # Let the pipe fill: each wakeup takes the GIL from the importer.
                        time.sleep(_PAUSE)
                if parts:
                    self._q.put(b"".join(parts))
                if n < _CHUNK:
                    return
        except OSError as exc:
            self._error = exc
        finally:
            self._q.put(None)

    def chunks(self) -> Iterator[bytes]:
        """The pipe's bytes, chunk by chunk, until its end."""
        while True:
            chunk = self._q.get()
            if chunk is None:
                if self._error is not None:
                    raise InvalidInput(f"git cat-file: {self._error}")
                return
            yield chunk

    def close(self) -> None:
        """Wait for the thread (its pipe has ended: git finished or was killed)."""
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._q.get(timeout=0.05)  # a full queue would hold the thread
        self._thread.join()


def _batch_objects(chunks: Iterable[bytes]) -> Iterator[tuple[bytes, bytes, bytes, bytes]]:
    """``(hex id, type, raw, rest)`` of each object of ``git cat-file --batch`` output
    (``<id> <type> <size> <rest>`` lines, each followed by the content and a newline),
    read from ``chunks``; a large object's chunks are joined once."""
    buf = b""
    pos = 0
    waiting: list[bytes] = []
    have = 0  # bytes from pos: the rest of buf and the waiting chunks
    need = 1
    for chunk in chunks:
        waiting.append(chunk)
        have += len(chunk)
        if have < need:
            continue
        buf = b"".join([buf[pos:], *waiting])
        waiting.clear()
        pos = 0
        end = len(buf)
        while True:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                need = end - pos + 1
                break
            parts = buf[pos:nl].split(b" ", 3)
            if len(parts) != 4 or len(parts[0]) != 40 or not parts[2].isdigit():
                raise InvalidInput(f"git cat-file: unexpected {buf[pos : pos + 80]!r}")
            stop = nl + 1 + int(parts[2])
            if stop >= end:
                need = stop + 1 - pos
                break
            if buf[stop] != 0x0A:
                raise InvalidInput("git cat-file: malformed output")
            yield parts[0], parts[1], buf[nl + 1 : stop], parts[3]
            pos = stop + 1
        have = end - pos
    if have:
        raise InvalidInput("git cat-file: truncated object")


#: Bytes of the versions kept as delta hints for the older ones at the same path.
_HINT_BYTES = 32 * 1024 * 1024
#: Larger objects are not kept as hints.
_HINT_MAX = 256 * 1024


class _Hints:
    """The last version seen at each path (git lists trees and blobs newest first): the
    delta hint of the next, older version there (a directory with one entry changed is
    then stored as a splice of its successor, without compressing it). Bounded by
    bytes: past the bound, everything is forgotten and collected again."""

    def __init__(self) -> None:
        self._last: dict[tuple[bytes, bytes], tuple[ObjectId, bytes]] = {}
        self._bytes = 0

    def hint(
        self, oid: ObjectId, type_name: bytes, raw: bytes, path: bytes
    ) -> tuple[ObjectId, bytes] | None:
        """The hint for this object, which becomes the hint of the next one at ``path``."""
        if type_name not in (b"tree", b"blob") or (not path and type_name == b"blob"):
            return None
        key = (type_name, path)
        last = self._last
        found = last.pop(key, None)
        if found is not None:
            self._bytes -= len(found[1])
        if len(raw) <= _HINT_MAX:
            if self._bytes + len(raw) > _HINT_BYTES:
                last.clear()
                self._bytes = 0
            last[key] = (oid, raw)
            self._bytes += len(raw)
        return found


def _store_objects(
    repo: Repository,
    source: Iterable[tuple[ObjectId, bytes, bytes, bytes]],
    progress: Progress | None,
    diffs: _PathDiffs,
) -> tuple[int, int, int]:
    slice_size = repo._store.settings.import_slice_objects
    trees: dict[ObjectId, bytes] = {}
    commits: dict[ObjectId, IndexCommit] = {}
    batch: list[tuple[bytes, bytes]] = []
    bases: list[tuple[ObjectId, bytes] | None] = []
    hints = _Hints()
    total = 0
    slices = 0
    # git lists every commit before any tree or blob: once a slice holding something
    # else is stored, so are all the commits, and on PostgreSQL their index is written
    # beside the remaining slices (see _EarlyIndex).
    early: _EarlyIndex | None = None
    past_commits = False
    # Not inside the caller's store.transaction(): the thread would join that transaction
    # (its context is copied) and use its connection beside this one's statements.
    concurrent = repo._store.dialect == "postgresql" and repo._store.backend.txn.current() is None

    def flush() -> None:
        nonlocal slices, batch, bases
        rows, hinted = batch, bases
        batch, bases = [], []
        repo._run("import_objects", lambda u: u.objects.put_bulk(rows, bases=hinted), write=True)
        slices += 1

    try:
        for oid, type_name, raw, path in source:
            if type_name == b"tree":
                trees[oid] = raw
                past_commits = True
            elif type_name == b"commit":
                commits[oid] = index_commit(raw)
            else:
                past_commits = True
            batch.append((type_name, raw))
            bases.append(hints.hint(oid, type_name, raw, path))
            total += 1
            if len(batch) >= slice_size:
                flush()
                if early is None and concurrent and past_commits and commits:
                    early = _EarlyIndex(repo, dict(commits), diffs, slice_size)
                if progress is not None:
                    progress("objects", total, 0)
        if batch:
            flush()
    except BaseException:
        if early is not None:
            early.join(raise_error=False)
        raise
    if progress is not None:
        progress("objects", total, total)
    early_done = 0
    if early is not None:
        early.join()
        early_done = len(early.indexed)
        slices += early.slices
        # Planned again without them: their rows are not read back (their generations
        # are, where a commit left names one as a parent).
        commits = {o: c for o, c in commits.items() if o not in early.indexed}
    trees_source: TreeSource | None = None
    box: list[IndexPlan] = []

    def plan(u: Unit) -> None:
        box[:] = [plan_index(u, commits)]

    repo._run("import_plan", plan)
    the_plan = box[0]
    known = diffs.result()
    order = the_plan.order
    done = early_done
    if progress is not None and early_done:
        progress("index", done, done + len(order))
    for i in range(0, len(order), slice_size):
        part = order[i : i + slice_size]

        def index(u: Unit, part: list[ObjectId] = part) -> None:
            nonlocal trees_source
            if trees_source is None:
                trees_source = TreeSource(trees, u.objects)
            trees_source.use(u.objects)
            write_index(u, the_plan, part, trees_source, known)

        repo._run("import_index", index, write=True)
        slices += 1
        done += len(part)
        if progress is not None:
            progress("index", done, early_done + len(order))
    return total, early_done + len(order), slices


class _EarlyIndex:
    """The commit index of the commits git's changed-path lists cover (all but the
    merges), written on a thread of its own, in slices of its own, while the
    importer stores the remaining object slices: on PostgreSQL the server inserts those
    rows while the client encodes objects. Started once every commit is stored (their
    rows never name a commit that is not); the importer then indexes the rest as before
    (its plan skips what is indexed). Given up quietly if the commits cannot be planned
    yet (a parent missing): the importer's own plan then says why, or indexes them all."""

    def __init__(
        self,
        repo: Repository,
        commits: dict[ObjectId, IndexCommit],
        diffs: _PathDiffs,
        slice_size: int,
    ) -> None:
        self.indexed: set[ObjectId] = set()
        """The commits indexed (committed) by the thread."""
        self.slices = 0
        self._stop = threading.Event()
        self._diffs = diffs
        self._call = BackgroundCall(
            "govc-import-index", self._run, repo, commits, diffs, slice_size
        )

    def _run(
        self,
        repo: Repository,
        commits: dict[ObjectId, IndexCommit],
        diffs: _PathDiffs,
        slice_size: int,
    ) -> None:
        box: list[IndexPlan] = []

        def plan(u: Unit) -> None:
            box[:] = [plan_index(u, commits)]

        try:
            repo._run("import_plan", plan)
        except InvalidInput:
            return
        the_plan = box[0]
        if self._stop.is_set():
            return
        known = diffs.result()
        ids = [o for o in the_plan.order if o in known and len(commits[o].parents) <= 1]
        for i in range(0, len(ids), slice_size):
            if self._stop.is_set():
                return
            part = ids[i : i + slice_size]

            def index(u: Unit, part: list[ObjectId] = part) -> None:
                # Every commit here has its changed paths: no tree is read.
                write_index(u, the_plan, part, TreeSource({}, u.objects), known)

            repo._run("import_index", index, write=True)
            self.slices += 1
            self.indexed.update(part)

    def join(self, *, raise_error: bool = True) -> None:
        """Wait for the thread; raise what it raised (``raise_error``). Without
        ``raise_error`` (the import failed), no further slice is started."""
        if not raise_error:
            self._stop.set()
            self._diffs.kill()  # else the thread waits for git's diff of the whole history
        self._call.join(raise_error=raise_error)


def _move_refs(
    repo: Repository,
    moves: dict[str, tuple[ObjectId | None, ObjectId]],
    source: Path,
    progress: Progress | None,
) -> None:
    message = f"import: {source}"

    def work(u: Unit) -> None:
        for ref, (old, new) in sorted(moves.items()):
            ok = (
                u.refs.add_if_new(ref, new, message)
                if old is None
                else u.refs.set_if_equals(ref, old, new, message)
            )
            if not ok:
                raise RefConflict(f"{ref} moved in govc_db during the import; nothing was moved")
            repo._publish(u, ref, old, new)

    repo._run("import_refs", work, write=True)
    if progress is not None:
        progress("refs", len(moves), len(moves))
