"""gc(): byte-identical objects, unchanged ids and verify(), under concurrent commits,
interrupted and re-run, from the API and the CLI."""

from __future__ import annotations

import random
import threading

import pytest
import sqlalchemy as sa
from _storage import SIG, history, rows, snapshot, text
from typer.testing import CliRunner

import govc_db
from govc_db import Settings, Store
from govc_db.cli import app
from govc_db.storage.gc import GcBusy, _repo_lock, run_gc
from govc_db.store.codec import DELTA_ENCODINGS


def all_objects(store: Store, repo_id: int) -> dict[bytes, tuple[bytes, bytes]]:
    with store.backend.unit(repo_id) as u:
        ids = [oid for oid, _ in u.objects.iter_ids()]
        got = u.objects.get_many(ids)
    return {oid: (raw.type, raw.data) for oid, raw in got.items()}


def plain_history(db_url: str, name: str, commits: int = 30) -> list[str]:
    """A history written with the optimizer off: what gc() has to deltify."""
    with govc_db.open(db_url, Settings(storage_optimizer=False)) as s:
        return history(s.create_repository(name), commits)


def packs(store: Store, repo_id: int) -> int:
    with store.engine.connect() as conn:
        return int(
            conn.execute(
                sa.text("SELECT count(*) FROM govc_packs WHERE repo_id = :r"), {"r": repo_id}
            ).scalar_one()
        )


def test_gc_keeps_every_object_byte_identical(db_url: str) -> None:
    ids = plain_history(db_url, "g")
    with govc_db.open(db_url) as s:
        repo = s.repository("g")
        before = all_objects(s, repo._id)
        files = snapshot(repo, ids)
        report = repo.gc()
        assert report.objects == report.rewritten == len(before)
        assert report.packs == packs(s, repo._id) > 0
        assert report.bytes_after < report.bytes_before
        assert rows(s, repo._id) == []  # every object moved into the packs
        s.backend.codec.cache.clear()
        assert all_objects(s, repo._id) == before
        assert snapshot(repo, ids) == files
        assert [c.oid for c in repo.log("HEAD")] == ids[::-1]
        assert repo.resolve(ids[3][:7]) == ids[3]
        assert repo.verify().ok
        assert repo.gc().rewritten == 0  # nothing loose: nothing to do
        again = repo.gc(full=True)  # a full repack: the same packs again, old ones deleted
        assert again.full
        assert again.rewritten == len(before)
        assert again.bytes_after == report.bytes_after
        assert packs(s, repo._id) == report.packs
        storage = s.metrics()["storage"]
        assert storage["last_gc"]["objects"] == len(before)
        assert storage["packs"]["packed_objects"] >= len(before)
    with govc_db.open(db_url) as fresh:  # another process: loads the pack index
        repo = fresh.repository("g")
        assert all_objects(fresh, repo._id) == before
        assert repo.get_object(ids[-1])[0] == "commit"


def test_writes_after_gc_delta_against_packed_objects(db_url: str) -> None:
    """New versions are deltas against packed bases; large blobs stay loose; a store
    whose pack index is stale (another store repacked) reloads it."""
    ids = plain_history(db_url, "after", 10)
    big = bytes(range(256)) * 1100  # 281,600 bytes: larger than a packed object may be
    with govc_db.open(db_url) as s, govc_db.open(db_url) as other:
        repo = s.repository("after")
        seen = other.repository("after")
        ids.append(repo.commit("main", {"big.bin": big}, message="big\n", author=SIG))
        repo.gc()
        files = snapshot(repo, ids)
        assert snapshot(seen, ids) == files  # `other` loads the index
        for k in range(11, 20):
            path = f"d/f{k % 5}.txt"
            ids.append(repo.commit("main", {path: text(path, k)}, message=f"c{k}\n", author=SIG))
        loose = rows(s, repo._id)
        assert any(e in DELTA_ENCODINGS for _, e, _ in loose)  # against packed bases
        files = snapshot(repo, ids)
        report = repo.gc()  # repacks: the packs `other` knows are deleted
        assert report.loose == 1  # the large blob
        other.backend.codec.cache.clear()
        assert snapshot(seen, ids) == files
        assert seen.verify().ok


def test_incremental_gc_packs_only_new_rows_while_others_commit(db_url: str) -> None:
    """After a full gc(), a few new commits are packed on their own (the old packs are
    neither read nor rewritten), with a writer committing meanwhile; a full repack later
    folds every pack into fresh ones. Every object stays byte-identical throughout."""
    ids = plain_history(db_url, "inc", 40)
    with govc_db.open(db_url) as s, govc_db.open(db_url) as other:
        repo = s.repository("inc")
        first = repo.gc()
        assert first.full and rows(s, repo._id) == []
        first_packs = packs(s, repo._id)
        for k in range(41, 45):
            path = f"d/f{k % 5}.txt"
            ids.append(repo.commit("main", {path: text(path, k)}, message=f"c{k}\n", author=SIG))
        new_rows = len(rows(s, repo._id))
        assert new_rows > 0
        files = snapshot(repo, ids)
        before = all_objects(s, repo._id)
        errors: list[BaseException] = []
        made: list[str] = []

        def commit_loop() -> None:
            r = other.repository("inc")
            try:
                for k in range(100, 110):
                    path = f"e/g{k % 3}.txt"
                    made.append(r.commit("main", {path: text(path, k)}, message="x\n", author=SIG))
            except BaseException as exc:  # reported below
                errors.append(exc)

        writer = threading.Thread(target=commit_loop)
        writer.start()
        try:
            report = repo.gc()
        finally:
            writer.join()
        assert not errors, errors
        assert not report.full
        assert new_rows <= report.rewritten + len(rows(s, repo._id))
        assert report.rewritten < len(before)  # only the new rows, not the packed ones
        assert packs(s, repo._id) > first_packs  # the old packs are still there
        assert "REINDEX" not in report.vacuum
        s.backend.codec.cache.clear()
        other.backend.codec.cache.clear()
        assert all_objects(s, repo._id).items() >= before.items()
        assert snapshot(repo, ids) == files
        assert snapshot(other.repository("inc"), ids) == files
        assert repo.verify().ok
        full = repo.gc(full=True)
        assert full.full and packs(s, repo._id) <= first_packs + 1
        assert rows(s, repo._id) == []
        s.backend.codec.cache.clear()
        assert snapshot(repo, ids + made) == snapshot(other.repository("inc"), ids + made)
        assert all_objects(s, repo._id).items() >= before.items()
        assert repo.verify().ok


def test_when_a_full_repack_pays() -> None:
    from govc_db.storage.gc import _repack_pays

    mib = 1 << 20
    assert _repack_pays(10, 0, 0, 0, 2 * mib)  # nothing packed yet
    assert _repack_pays(250, 1000, 1, 1 * mib, 2 * mib)  # loose: a quarter of the packed
    assert not _repack_pays(249, 1000, 1, 1 * mib, 2 * mib)
    assert not _repack_pays(0, 1000, 6, 1 * mib, 2 * mib)  # 6 packs: 2 x 1 + 4
    assert _repack_pays(0, 1000, 7, 1 * mib, 2 * mib)  # one incremental pack too many
    assert not _repack_pays(10, 50_000, 24, 20 * mib, 2 * mib)  # 2 x 11 + 4 = 26


def test_gc_returns_the_space_it_frees(db_url: str) -> None:
    """SQLite: a whole-file VACUUM leaves no free page; PostgreSQL: the id-keyed
    indexes are rebuilt concurrently, and an invalid index left by an interrupted
    rebuild is dropped."""
    plain_history(db_url, "space", 20)
    with govc_db.open(db_url) as s:
        repo = s.repository("space")
        pg = s.backend.dialect == "postgresql"
        if pg:
            with s.engine.connect() as conn:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                with pytest.raises(sa.exc.IntegrityError):  # leaves an invalid index
                    conn.exec_driver_sql(
                        "CREATE UNIQUE INDEX CONCURRENTLY govc_objects_ccnew9 "
                        "ON govc_objects (repo_id)"
                    )
        report = repo.gc()
        assert report.packs > 0
        with s.engine.connect() as conn:
            if pg:
                assert "REINDEX TABLE CONCURRENTLY govc_objects" in report.vacuum
                invalid = conn.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid "
                        "WHERE t.relname LIKE 'govc%' AND NOT i.indisvalid"
                    )
                ).scalar()
                assert invalid == 0
            else:
                assert report.vacuum == "VACUUM"
                assert conn.exec_driver_sql("PRAGMA freelist_count").scalar() == 0
        assert repo.verify().ok


def test_gc_while_others_commit_and_read(db_url: str) -> None:
    ids = plain_history(db_url, "busy", 40)
    with govc_db.open(db_url) as s:
        repo = s.repository("busy")
        files = snapshot(repo, ids)
        errors: list[BaseException] = []
        stop = threading.Event()
        made: list[str] = []

        def commit_loop() -> None:
            with govc_db.open(db_url) as other:
                r = other.repository("busy")
                k = 100
                try:
                    while not stop.is_set() and k < 160:
                        path = f"d/f{k % 5}.txt"
                        made.append(
                            r.commit("main", {path: text(path, k)}, message="x\n", author=SIG)
                        )
                        assert r.read("HEAD", path) == text(path, k)
                        k += 1
                except BaseException as exc:  # reported below
                    errors.append(exc)

        def read_loop() -> None:
            with govc_db.open(db_url) as other:
                r = other.repository("busy")
                try:
                    while not stop.is_set():
                        other.backend.codec.cache.clear()
                        for (c, p), data in list(files.items())[::7]:
                            assert r.read(c, p) == data
                except BaseException as exc:
                    errors.append(exc)

        threads = [threading.Thread(target=commit_loop), threading.Thread(target=read_loop)]
        for t in threads:
            t.start()
        try:
            repo.gc()
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert not errors, errors
        assert made
        s.backend.codec.cache.clear()
        assert snapshot(repo, ids) == files
        assert repo.read("HEAD", "d/f0.txt")
        assert repo.verify().ok
        repo.gc()
        assert repo.verify().ok


def test_interrupted_gc_leaves_a_consistent_store_and_resumes(db_url: str) -> None:
    ids = plain_history(db_url, "int", 60)
    with govc_db.open(db_url) as s:
        repo = s.repository("int")
        before = all_objects(s, repo._id)
        calls = 0

        def stop() -> bool:
            nonlocal calls
            calls += 1
            return calls > 1  # one batch, then "interrupted"

        # Small batches (transactions), so that stopping after the first leaves work.
        first = run_gc(
            s.backend, repo._id, max_depth=16, batch=20, pack_target=2000, should_stop=stop
        )
        assert first.interrupted
        assert 0 < first.rewritten < len(before)
        s.backend.codec.cache.clear()
        assert all_objects(s, repo._id) == before
        assert repo.verify().ok
        second = repo.gc()
        assert not second.interrupted
        assert second.bytes_after <= first.bytes_after
        s.backend.codec.cache.clear()
        assert all_objects(s, repo._id) == before
        assert repo.read(ids[-1], "d/f0.txt") == before_read(before, repo, ids[-1])


def before_read(
    objects: dict[bytes, tuple[bytes, bytes]], repo: govc_db.Repository, c: str
) -> bytes:
    entry = next(e for e in repo.walk(c) if e.path == "d/f0.txt")
    return objects[bytes.fromhex(entry.oid)][1]


def test_one_gc_per_repository(db_url: str) -> None:
    plain_history(db_url, "one", 3)
    with govc_db.open(db_url) as s:
        repo = s.repository("one")
        lock = _repo_lock(repo._id)
        with lock, pytest.raises(GcBusy):
            repo.gc()
        assert repo.gc().objects > 0


def test_store_gc_and_the_cli(db_url: str) -> None:
    plain_history(db_url, "c1", 5)
    plain_history(db_url, "c2", 5)
    with govc_db.open(db_url) as s:
        reports = s.gc()
        assert set(reports) == {"c1", "c2"}
    result = CliRunner().invoke(app, ["--url", db_url, "gc", "c1"])
    assert result.exit_code == 0, result.output
    assert "c1:" in result.output and "packed" in result.output
    result = CliRunner().invoke(app, ["--url", db_url, "gc", "missing"])
    assert result.exit_code == 1
    assert "error:" in result.output


def test_chunked_blobs_beside_deltas_and_gc(db_url: str) -> None:
    """A path that moves between a small (delta-stored) and a large (chunked) blob: the
    chunked row is never a delta base, gc() leaves it alone, everything reads back."""
    big = bytes(range(256)) * 1200 + b"tail"  # 307,204 bytes: above the threshold
    small = [text("f", 1), text("g", 2), text("f", 3)]
    settings = Settings(chunk_threshold=64 * 1024, chunk_avg_size=16 * 1024)
    with govc_db.open(db_url, settings) as s:
        repo = s.create_repository("mixed")
        versions = [
            {"f": small[0], "g": big},
            {"f": big + b"f", "g": small[1]},
            {"f": small[2], "g": big[:200_000] + b"g"},
        ]
        ids = []
        for i, files in enumerate(versions):
            ids.append(repo.commit("main", files, message=f"{i}\n", author=SIG))
        before = all_objects(s, repo._id)
        report = repo.gc()
        assert report.objects == len(before)
        s.backend.codec.cache.clear()
        for oid, files in zip(ids, versions, strict=True):
            for path, data in files.items():
                assert repo.read(oid, path) == data
        assert all_objects(s, repo._id) == before
        assert repo.verify().ok


def test_a_pack_entry_is_returned_only_for_its_whole_id(db_url: str) -> None:
    """Packs keep the first bytes of each id: an entry whose key matches the id asked
    for but whose content hashes to another id is not that object."""
    from govc_db.objects import ObjectId, hash_object
    from govc_db.store.packs import KEY_LEN, encode_pack

    with govc_db.open(db_url) as s:
        repo = s.create_repository("keys")
        repo.commit("main", {"a.txt": b"a\n"}, message="m\n", author=SIG)
        real = hash_object(b"blob", b"a\n")
        ghost = ObjectId(real[:KEY_LEN] + bytes(20 - KEY_LEN))  # same key, another object
        ids, meta, data = encode_pack([(ghost, 3, b"not this\n")], 3)
        with s.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO govc_packs (repo_id, pack_id, count, ids, meta, data) "
                    "VALUES (:r, 1000, 1, :i, :m, :d)"
                ),
                {"r": repo._id, "i": ids, "m": meta, "d": data},
            )
        with s.backend.unit(repo._id) as u:
            assert ghost not in u.objects.has_many([ghost])
            assert ghost not in u.objects.get_many([ghost])
            assert u.objects.find_prefix(ghost.hex()[: 2 * KEY_LEN], 5) == [real]
        assert repo.read("HEAD", "a.txt") == b"a\n"
        report = repo.gc()  # the stray entry is repacked under its own id
        assert report.objects == 4
        assert repo.get_object(hash_object(b"blob", b"not this\n").hex()) == ("blob", b"not this\n")
        assert repo.read("HEAD", "a.txt") == b"a\n"


def test_a_cold_read_decompresses_a_pack_up_to_its_entry(db_url: str) -> None:
    """A pack larger than zstd's blocks: a cold read decodes a prefix of it, reads further
    in extend it (at least doubling), every read is byte-identical."""
    from govc_db.store.packs import _pack_key

    rng = random.Random(5)
    files = {f"b/{i}.bin": rng.randbytes(150_000) for i in range(8)}
    with govc_db.open(db_url) as s:
        repo = s.create_repository("big")
        head = repo.commit("main", files, message="m\n", author=SIG)
        assert repo.gc().packs == 1
        cache = s.backend.codec.cache
        cache.clear()
        s.backend.packs.forget(repo._id)
        first_blob = min(files, key=lambda p: files[p][:64])  # roots ordered by first bytes
        assert repo.read(head, first_blob) == files[first_blob]
        with s.engine.connect() as conn:
            pack_id = conn.execute(
                sa.text("SELECT pack_id FROM govc_packs WHERE repo_id = :r"), {"r": repo._id}
            ).scalar_one()
        cached = cache.get(repo._id, _pack_key(pack_id))
        assert cached is not None and len(cached[0]) < len(files) * 150_000  # a prefix
        for path, data in files.items():
            assert repo.read(head, path) == data
        cached = cache.get(repo._id, _pack_key(pack_id))
        assert cached is not None and len(cached[0]) > len(files) * 150_000  # all of it
        assert s.backend.packs.get_stats()["packs_decompressed"] <= 5


def test_gc_packs_a_small_delta_of_a_large_object_without_reading_large_rows(
    db_url: str,
) -> None:
    """gc() reads only the first bytes of rows that stay loose (large objects, chunked
    manifests); a small object stored as a delta of such a row is still decoded (its base
    read through the store) and packed byte-identical."""
    from govc_db.objects import ObjectId

    big = bytes(range(256)) * 1100  # larger than a packed object may be, not chunked
    small = big[:150] + b"edited" + big[-150:]
    with govc_db.open(db_url, Settings(chunk_threshold=None)) as s:
        repo = s.create_repository("far")
        with s.backend.unit(repo._id, write=True) as u:
            big_id = u.objects.put(b"blob", big)
            small_id = u.objects.put(b"blob", small, base=ObjectId(big_id))
        stored = {oid: enc for oid, enc, _ in rows(s, repo._id)}
        assert stored[small_id] in DELTA_ENCODINGS  # a delta of the large row
        report = repo.gc()
        assert report.loose == 1 and report.rewritten == 1
        assert set(oid for oid, _, _ in rows(s, repo._id)) == {big_id}
        s.backend.codec.cache.clear()
        assert all_objects(s, repo._id) == {big_id: (b"blob", big), small_id: (b"blob", small)}
        assert repo.verify().ok
