"""Peak-RSS helpers, run as fresh processes (standard library and govc_db only, so
nothing of the bench's own weight is in the figures).

``python -m bench._rss measure [--discard-stdout] -- CMD...`` runs CMD, waits for it and
prints, as JSON, ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` -- the largest resident set of
CMD and of every process CMD waited for -- with CMD's exit status, time and output. The
bench's own RUSAGE_CHILDREN cannot be used: it is the peak over every process it ran.

Our side's steps, measured that way:

* ``commit URL REPO FILE``: create REPO, ``repo.commit()`` FILE as a stream (an open
  file: read in pieces, never held whole); prints the blob id, then the commit's seconds;
* ``read URL REPO``: ``repo.open()`` the file and read it to nowhere in 1 MiB pieces
  (timed, three passes), then again hashing it; prints the content's SHA-1, then the
  fastest timed pass's seconds;
* ``floor URL``: import govc_db and connect a Store, nothing else.
"""

from __future__ import annotations

import hashlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
PATH = "data/big.bin"
#: Timed read passes (the fastest is reported).
READ_PASSES = 3


def measure(argv: list[str]) -> int:
    discard = argv[:1] == ["--discard-stdout"]
    argv = argv[1:] if discard else argv
    argv = argv[1:] if argv[:1] == ["--"] else argv
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    proc = subprocess.run(
        argv,
        stdout=subprocess.DEVNULL if discard else subprocess.PIPE,
        stderr=subprocess.PIPE,
        check=False,
    )
    seconds = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = {
        "argv": argv,
        "returncode": proc.returncode,
        "maxrss_kib": usage.ru_maxrss,  # KiB on Linux
        "seconds": seconds,
        "stdout": (proc.stdout or b"").decode(errors="replace")[:200],
        "stderr": proc.stderr.decode(errors="replace")[-2000:],
    }
    print(json.dumps(report))
    return 0


def _open(url: str) -> Any:
    import govc_db

    return govc_db.open(url)


def commit(url: str, repo_name: str, file: str) -> None:
    from govc_db import Signature

    with _open(url) as store:
        repo = store.create_repository(repo_name)
        author = Signature("Bench", "bench@example.com", 0, 0)
        start = time.perf_counter()
        with Path(file).open("rb") as f:  # streamed: the file is never held whole
            repo.commit("main", {PATH: f}, message="big\n", author=author)
        seconds = time.perf_counter() - start
        print(next(e.oid for e in repo.walk("main") if e.path == PATH))
        print(f"{seconds:.4f}")


def read(url: str, repo_name: str) -> None:
    with _open(url) as store:
        repo = store.repository(repo_name)
        # Timed passes: the bytes go nowhere, as `git cat-file blob ... >/dev/null`; the
        # fastest of READ_PASSES (git's side is the fastest of as many processes).
        buf = bytearray(MIB)
        seconds = float("inf")
        for _ in range(READ_PASSES):
            start = time.perf_counter()
            with repo.open("main", PATH) as f:
                while f.readinto(buf):
                    pass
            seconds = min(seconds, time.perf_counter() - start)
        digest = hashlib.sha1()  # checked pass: the content's SHA-1
        with repo.open("main", PATH) as f:
            while chunk := f.read(MIB):
                digest.update(chunk)
    print(digest.hexdigest())
    print(f"{seconds:.4f}")


def floor(url: str) -> None:
    with _open(url) as store:
        print(len(store.list_repositories()))


def main(argv: list[str]) -> int:
    command, args = (argv[0], argv[1:]) if argv else ("", [])
    if command == "measure":
        return measure(args)
    if command == "commit" and len(args) == 3:
        commit(*args)
    elif command == "read" and len(args) == 2:
        read(*args)
    elif command == "floor" and len(args) == 1:
        floor(*args)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
