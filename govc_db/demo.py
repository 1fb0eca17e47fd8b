"""The ``govc-db demo`` job: a realistic, reproducible history, then a tour of it.

:func:`run_demo` (re)creates the repository ``demo`` and commits a seeded random history:
a nested tree of source files, docs and configs, feature branches fast-forwarded into
``main``, a ``staging`` branch that follows ``main`` and is once force-rolled back, release
branches, lightweight and annotated tags, renames (delete + add), a binary PNG that changes
over time, executables and symlinks. Signatures use fixed, increasing times, so the same
arguments give the same commit ids on every run and on every database.
"""

from __future__ import annotations

import json
import random
import struct
import time
import zlib
from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import Final

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.rule import Rule
from rich.text import Text

from govc_db.api import Repository, Store
from govc_db.errors import InvalidInput, NotFound
from govc_db.objects import MODE_EXEC, MODE_LINK, Signature
from govc_db.types import File

__all__ = ["REPOSITORY", "DemoSummary", "print_report", "run_demo"]

REPOSITORY: Final = "demo"
_BASE_TIME: Final = 1_700_000_000  # 2023-11-14: every signature time is derived from it

_AUTHORS: Final = (
    ("Ada Lovelace", "ada@example.com", 0),
    ("Grace Hopper", "grace@example.com", -300),
    ("Linus Torvalds", "linus@example.com", -480),
    ("Margaret Hamilton", "margaret@example.com", -240),
    ("Ken Thompson", "ken@example.com", 60),
    ("Radia Perlman", "radia@example.com", 330),
)
_WORD_TEXT: Final = (
    "account alert archive audit batch billing bucket cache catalog channel checkout "
    "cluster config cursor daemon delta digest event export feature filter gateway graph "
    "handler index invoice job ledger limit loader metric module notify order parser "
    "payment policy profile queue quota record region report retry route schema search "
    "session shard signal snapshot stream tenant token trace upload user vault webhook "
    "worker"
)
_WORDS: Final = tuple(_WORD_TEXT.split())
_VERBS: Final = ("update", "tune", "document", "simplify", "harden", "extend", "clarify")
_PACKAGES: Final = ("core", "api", "billing", "search", "storage", "auth")
_SECTIONS: Final = ("guide", "reference", "howto", "adr")
_ENVS: Final = ("production", "staging", "development")


@dataclass(frozen=True, slots=True)
class DemoSummary:
    """What :func:`run_demo` created."""

    repository: str
    commits: int
    """Commits created (on every branch)."""
    main_commits: int
    """Length of main's history (it is linear: features are fast-forwarded)."""
    files: int
    """Files in main's tree at the end."""
    branches: int
    tags: int
    head: str
    """Commit id of main."""
    elapsed: float
    """Seconds the history took to write."""


# -- content --------------------------------------------------------------------------------


def _png(rng: random.Random, size: int = 16) -> bytes:
    """A real (tiny, RGB) PNG: binary, full of NULs, different at every call."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    r, g, b = rng.randrange(256), rng.randrange(256), rng.randrange(256)
    rows = b"".join(
        b"\0" + bytes(c for x in range(size) for c in ((r + x * 9) % 256, (g + y * 7) % 256, b))
        for y in range(size)
    )
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 9))
        + chunk(b"IEND", b"")
    )


def _function(rng: random.Random) -> str:
    verb, noun = rng.choice(_VERBS), rng.choice(_WORDS)
    return (
        f"def {verb}_{noun}(limit: int = {rng.randint(1, 100)}) -> int:\n"
        f'    """{verb.capitalize()} the {noun}."""\n'
        f"    return limit * {rng.randint(2, 9)} + {rng.randint(0, 99)}\n"
    )


def _python(rng: random.Random, title: str) -> str:
    functions = "\n\n".join(_function(rng) for _ in range(rng.randint(2, 6)))
    return (
        f'"""{title.capitalize()} module."""\n\nfrom __future__ import annotations\n\n'
        f"import logging\n\nlog = logging.getLogger(__name__)\n\n\n{functions}"
    )


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 14))]
    return " ".join(words).capitalize() + "."


def _markdown(rng: random.Random, title: str) -> str:
    paragraphs = [" ".join(_sentence(rng) for _ in range(3)) for _ in range(rng.randint(2, 5))]
    return f"# {title.capitalize()}\n\n" + "\n\n".join(paragraphs) + "\n"


def _config(rng: random.Random, ext: str) -> str:
    values = {w: rng.randint(1, 1000) for w in rng.sample(_WORDS, rng.randint(4, 9))}
    if ext == "json":
        return json.dumps(values, indent=2, sort_keys=True) + "\n"
    sep = ": " if ext == "yaml" else " = "
    return "".join(f"{k}{sep}{v}\n" for k, v in values.items())


def _content(rng: random.Random, path: str) -> str:
    stem = path.rsplit("/", 1)[-1].split(".")[0].replace("_", " ")
    ext = path.rsplit(".", 1)[-1]
    if ext == "py":
        return _python(rng, stem)
    if ext == "md":
        return _markdown(rng, stem)
    return _config(rng, ext)


def _mutate(rng: random.Random, path: str, text: str) -> str:
    """A small, realistic edit of ``text`` (always a different text)."""
    lines = text.splitlines(keepends=True)
    ext = path.rsplit(".", 1)[-1]
    for _ in range(10):
        if ext == "py":
            returns = [i for i, line in enumerate(lines) if line.startswith("    return ")]
            if returns and rng.random() < 0.6:
                i = rng.choice(returns)
                lines[i] = f"    return limit * {rng.randint(2, 9)} + {rng.randint(0, 99)}\n"
            else:
                lines.append("\n\n" + _function(rng))
        elif ext == "md":
            lines.append("\n" + _sentence(rng) + "\n")
            if len(lines) > 40:
                del lines[2:6]
        else:
            i = rng.randrange(len(lines)) if lines else 0
            fresh = _config(rng, ext).splitlines(keepends=True)
            if ext == "json" or not lines:
                return "".join(fresh) if "".join(fresh) != text else text + "\n"
            lines[i] = fresh[0]
        new = "".join(lines)
        if new != text:
            return new
    return text + "\n"


# -- history --------------------------------------------------------------------------------


class _History:
    """Writes commits and keeps each branch's tree in memory to plan the next change."""

    def __init__(self, repo: Repository, rng: random.Random, commits: int, files: int) -> None:
        self.repo = repo
        self.rng = rng
        self.total = commits
        self.target = files
        self.count = 0
        self.clock = _BASE_TIME
        self.trees: dict[str, dict[str, File]] = {}
        self.depth: dict[str, int] = {}
        self.serial = 0
        self.releases = 0
        self.on_commit: Callable[[str], None] = lambda branch: None

    # writing ------------------------------------------------------------------------------
    def signature(self, person: int | None = None) -> Signature:
        self.clock += self.rng.randint(300, 7200)  # strictly increasing, reproducible
        name, email, offset = _AUTHORS[
            self.rng.randrange(len(_AUTHORS)) if person is None else person
        ]
        return Signature(name, email, self.clock, offset)

    def commit(self, branch: str, changes: dict[str, File | None], message: str) -> str:
        tree = self.trees[branch]
        self.repo.commit(branch, changes, message=message, author=self.signature())
        for path, value in changes.items():
            if value is None:
                del tree[path]
            else:
                tree[path] = value
        self.count += 1
        self.depth[branch] += 1
        self.on_commit(branch)
        return message

    def fork(self, name: str, start: str) -> None:
        self.repo.create_branch(name, start)
        self.trees[name] = dict(self.trees[start])
        self.depth[name] = self.depth[start]

    def fast_forward(self, branch: str, to: str) -> None:
        self.repo.move_branch(branch, to)
        self.trees[branch] = dict(self.trees[to])
        self.depth[branch] = self.depth[to]

    # planning -----------------------------------------------------------------------------
    def new_path(self, tree: Container[str]) -> str:
        rng = self.rng
        self.serial += 1
        kind = rng.random()
        name = f"{rng.choice(_WORDS)}_{rng.choice(_WORDS)}_{self.serial}"
        if kind < 0.55:
            sub = "/".join(rng.sample(_WORDS, rng.randint(0, 2)))
            path = f"src/{rng.choice(_PACKAGES)}/{sub + '/' if sub else ''}{name}.py"
        elif kind < 0.75:
            path = f"docs/{rng.choice(_SECTIONS)}/{name}.md"
        elif kind < 0.9:
            path = f"config/{rng.choice(_ENVS)}/{name}.{rng.choice(('yaml', 'json', 'toml'))}"
        else:
            path = f"tests/{rng.choice(_PACKAGES)}/test_{name}.py"
        return path if path not in tree else self.new_path(tree)

    def initial(self, branch: str) -> None:
        rng = self.rng
        tree: dict[str, File | None] = {
            "README.md": File(self.readme().encode()),
            "LICENSE": File(b"MIT License\n\nCopyright (c) 2023 The govc demo authors\n"),
            ".gitignore": File(b"__pycache__/\n*.pyc\n.venv/\n"),
            "scripts/build.sh": File(b"#!/bin/sh\nset -eu\npython -m build\n", MODE_EXEC),
            "scripts/release.sh": File(b"#!/bin/sh\nset -eu\n./scripts/build.sh\n", MODE_EXEC),
            "docs/README.md": File(b"../README.md", MODE_LINK),
            "config/current": File(b"production", MODE_LINK),
            "assets/logo.png": File(_png(rng)),
        }
        while len(tree) < self.target:
            path = self.new_path(tree)
            tree[path] = File(_content(rng, path).encode())
        self.trees[branch] = {}
        self.depth[branch] = 0
        self.commit(branch, tree, "Initial import\n")

    def readme(self) -> str:
        notes = "".join(f"- v0.{n}.0\n" for n in range(1, self.releases + 1)) or "- none yet\n"
        return (
            "# govc demo\n\nA service whose history is stored by govc_db.\n\n"
            f"Current release: v0.{self.releases}.0\n\n## Releases\n\n{notes}"
        )

    def change(self, branch: str) -> str:
        """Make one commit of a random, realistic kind on ``branch``."""
        rng, tree = self.rng, self.trees[branch]
        editable = sorted(p for p in tree if p.endswith((".py", ".md", ".yaml", ".json", ".toml")))
        editable = [p for p in editable if tree[p].mode != MODE_LINK and p != "README.md"]
        roll = rng.random()
        changes: dict[str, File | None] = {}
        if roll < 0.06:
            changes["assets/logo.png"] = File(_png(rng))
            message = "assets: refresh the logo\n"
        elif roll < 0.10:
            old = tree["scripts/build.sh"].data
            assert isinstance(old, bytes)  # the demo builds its files from bytes
            changes["scripts/build.sh"] = File(
                old + f"echo step {self.count}\n".encode(), MODE_EXEC
            )
            message = "build: add a step to the build script\n"
        elif roll < 0.17:
            src = rng.choice(editable)
            ext = src.rsplit(".", 1)[-1]
            # Same kind of file, another directory that holds such files, a new name.
            dirs = sorted({p.rsplit("/", 1)[0] for p in editable if p.endswith("." + ext)})
            self.serial += 1
            stem = src.rsplit("/", 1)[-1].rsplit(".", 1)[0].rsplit("_", 1)[0]
            dst = f"{rng.choice(dirs)}/{stem}_{self.serial}.{ext}"
            changes[src] = None
            changes[dst] = tree[src]
            message = f"refactor: move {src} to {dst}\n"
        elif roll < 0.25 and len(tree) > self.target * 0.9:
            victim = rng.choice(editable)
            changes[victim] = None
            message = f"chore: remove {victim.rsplit('/', 1)[-1]}\n"
        elif roll < 0.35 or len(tree) < self.target * 0.9:
            path = self.new_path(tree)
            changes[path] = File(_content(rng, path).encode())
            message = f"feat: add {path.rsplit('/', 1)[-1]}\n"
        else:
            for path in rng.sample(editable, min(len(editable), rng.randint(1, 4))):
                text = tree[path].data
                assert isinstance(text, bytes)
                new = _mutate(rng, path, text.decode())
                changes[path] = File(new.encode(), tree[path].mode)
            first = next(iter(changes))
            kind = "fix" if rng.random() < 0.4 else rng.choice(("feat", "perf", "docs", "test"))
            scope, name = first.split("/")[-2], first.rsplit("/", 1)[-1]
            message = f"{kind}({scope}): {rng.choice(_VERBS)} {name}\n\n{_sentence(rng)}\n"
        return self.commit(branch, changes, message)

    def release(self) -> str:
        """A release commit on main, then a tag: annotated for odd releases, else lightweight."""
        self.releases += 1
        version = f"v0.{self.releases}.0"
        self.commit("main", {"README.md": File(self.readme().encode())}, f"Release {version}\n")
        if self.releases % 2:
            tagger = self.signature(person=0)
            self.repo.create_tag(version, "main", message=f"Release {version}\n", tagger=tagger)
            self.fork(f"release/0.{self.releases}", "main")
        else:
            self.repo.create_tag(version, "main")
        return version


def run_demo(
    store: Store,
    *,
    commits: int = 200,
    files: int = 500,
    console: Console | None = None,
    seed: int = 2023,
    name: str = REPOSITORY,
    replace: bool = False,
) -> DemoSummary:
    """Create repository ``name`` in ``store`` and write the demo history into it.

    ``commits`` is the total number of commits (at least 2), ``files`` the size of the
    tree (at least 20). The same arguments always produce the same ids. An existing
    repository of that name is deleted first only with ``replace=True``; otherwise it is
    ``AlreadyExists``.
    """
    if commits < 2 or files < 20:
        raise InvalidInput("the demo needs commits >= 2 and files >= 20")
    if replace and name in store.list_repositories():
        store.delete_repository(name)
    repo = store.create_repository(name, default_branch="main")
    rng = random.Random(seed)
    history = _History(repo, rng, commits, files)
    started = time.perf_counter()
    quiet = console is None
    with Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console or Console(quiet=True),
        disable=quiet,
    ) as progress:
        task = progress.add_task("committing", total=commits)

        def advance(branch: str) -> None:
            progress.update(task, advance=1, description=f"committing on {branch}")

        history.on_commit = advance
        history.initial("main")
        history.fork("staging", "main")
        release_every = max(5, commits // 8)
        rollback_done = False
        features = 0
        while history.count < commits:
            left = commits - history.count
            if history.count >= release_every * (history.releases + 1):
                history.release()
            elif left >= 3 and rng.random() < 0.12:
                features += 1
                feature = f"feature/{rng.choice(_WORDS)}-{features}"
                history.fork(feature, "main")
                for _ in range(min(rng.randint(2, 5), left)):
                    history.change(feature)
                if rng.random() < 0.75:  # merged: main catches up, the branch may go
                    history.fast_forward("main", feature)
                    if rng.random() < 0.6:
                        repo.delete_branch(feature)
                        del history.trees[feature]
            else:
                history.change("main")
            if history.count % 10 == 0 and history.trees["staging"] != history.trees["main"]:
                history.fast_forward("staging", "main")
            if not rollback_done and history.releases >= 2:
                # A bad deploy: staging goes back to the previous release (not a fast-forward).
                repo.move_branch("staging", "v0.1.0", force=True)
                rollback_done = True
    elapsed = time.perf_counter() - started
    return DemoSummary(
        repository=name,
        commits=history.count,
        main_commits=history.depth["main"],
        files=len(history.trees["main"]),
        branches=len(repo.branches()),
        tags=len(repo.tags()),
        head=repo.resolve("main"),
        elapsed=elapsed,
    )


def print_report(store: Store, summary: DemoSummary, *, console: Console) -> None:
    """Tour the demo repository: log, a diff, an old file, verify, performance report."""
    repo = store.repository(summary.repository)
    console.print(
        f"[bold]{summary.repository}[/]: {summary.commits} commits, {summary.files} files, "
        f"{summary.branches} branches, {summary.tags} tags, main at {summary.head[:12]} "
        f"({summary.elapsed:.1f}s on {store.dialect})"
    )

    console.print(Rule("git log --oneline -n 10 main"))
    for info in repo.log("main", limit=10):
        console.print(Text.assemble((info.oid[:7], "yellow"), " ", info.message.split("\n")[0]))

    tags = sorted(repo.tags(), key=lambda t: [int(x) for x in t[1:].split(".")])
    back = min(5, summary.main_commits - 1)
    old, new = (tags[0], tags[-1]) if len(tags) >= 2 else (f"main~{back}", "main")
    changes = repo.diff(old, new)
    console.print(Rule(f"git diff --name-status {old} {new}"))
    for c in changes[:15]:
        console.print(Text(f"{c.status}  {c.path}"))
    if len(changes) > 15:
        console.print(f"... and {len(changes) - 15} more ({len(changes)} files changed)")

    back = min(150, summary.main_commits - 1)
    console.print(Rule(f"README.md at main~{back}"))
    try:
        text = repo.read(f"main~{back}", "README.md").decode()
    except NotFound:
        text = "(absent)\n"
    console.print(Text(text.rstrip("\n")))

    console.print(Rule("verify"))
    report = repo.verify()
    if report.ok:
        console.print(f"[green]ok[/]: {report.objects_checked} objects checked")
    else:
        for problem in report.problems:
            console.print(Text.assemble(("problem", "red"), ": ", problem))

    console.print(Rule("performance report"))
    console.print(Text(store.performance_report()))
