"""The storage optimizer's write path: delta rows, their settings, old rows, metrics."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from _storage import SIG, history, rows, snapshot, text

import govc_db
from govc_db import Settings, Store
from govc_db.db import migrate
from govc_db.errors import GovcError, InvalidInput
from govc_db.models import Base
from govc_db.objects import ObjectId, hash_object
from govc_db.storage.metrics import StorageStats
from govc_db.store.codec import (
    DELTA_ENCODINGS,
    ENC_DELTA,
    ENC_SMALL,
    ENC_SPLICE,
    ENC_ZLIB,
    OID_LEN,
    Codec,
    looks_compressed,
)


@pytest.fixture
def opened(db_url: str) -> Iterator[Store]:
    with govc_db.open(db_url) as s:
        yield s


def test_new_versions_are_deltas_against_their_predecessor(opened: Store) -> None:
    repo = opened.create_repository("d")
    ids = history(repo, 12)
    stored = rows(opened, repo._id)
    deltas = [r for r in stored if r[1] in DELTA_ENCODINGS]
    # Every later blob, tree and commit is a delta; each names a base of this repository.
    assert len(deltas) >= 30  # 12 commits x (blob, 2 trees, commit), less full copies
    own = {r[0] for r in stored}
    assert all(r[2][:OID_LEN] in own for r in deltas)
    opened.backend.codec.cache.clear()  # cold: the chains are read from the database
    for c in ids:
        info = repo.get_commit(c)
        assert info.oid == c
    assert repo.read("HEAD", "d/f2.txt") == text("d/f2.txt", 12)
    assert repo.verify().ok


def test_bulk_read_decodes_delta_chains_and_fills_no_cache(opened: Store) -> None:
    repo = opened.create_repository("bulk")
    history(repo, 25, files=2)
    stored = rows(opened, repo._id)
    assert sum(r[1] in DELTA_ENCODINGS for r in stored) >= 30
    ids = [ObjectId(r[0]) for r in stored]
    cache = opened.backend.codec.cache
    cache.clear()
    with opened.backend.unit(repo._id) as u:
        whole = u.objects.get_many(ids)  # the reference: the ordinary read path
    assert len(whole) == len(ids)
    assert all(hash_object(o.type, o.data) == i for i, o in whole.items())
    # Cold (every chain read from the database), then with some bases decoded and cached
    # by an ordinary read, read-only and in a write transaction: the same objects, and
    # the decoded cache holds nothing more afterwards.
    cache.clear()
    for warm, write in ((False, False), (False, True), (True, False), (True, True)):
        if warm:
            with opened.backend.unit(repo._id) as u:
                u.objects.get_many(ids[::7])
        held = cache.get_stats()["bytes"]
        with opened.backend.unit(repo._id, write=write) as u:
            assert u.objects.get_bulk(list(reversed(ids))) == whole
        assert cache.get_stats()["bytes"] == held


def test_switched_off_stores_whole_rows_and_reads_delta_rows(db_url: str) -> None:
    with govc_db.open(db_url, Settings(storage_optimizer=False)) as off:
        repo = off.create_repository("plain")
        history(repo, 6)
        assert {e for _, e, _ in rows(off, repo._id)} <= {0, ENC_ZLIB}
    with govc_db.open(db_url) as on:
        repo2 = on.create_repository("opt")
        ids = history(repo2, 6)
        expected = snapshot(repo2, ids)
    # A store with the optimizer off still reads the delta rows (encoding per row) ...
    with govc_db.open(db_url, Settings(storage_optimizer=False)) as off:
        assert snapshot(off.repository("opt"), ids) == expected
    # ... and rows written before (plain) read and grow deltas on top once it is on.
    with govc_db.open(db_url) as on:
        repo = on.repository("plain")
        repo.commit("main", {"d/f1.txt": text("x", 99)}, message="m\n", author=SIG)
        assert repo.read("HEAD", "d/f1.txt") == text("x", 99)
        assert any(e in DELTA_ENCODINGS for _, e, _ in rows(on, repo._id))
        assert repo.verify().ok


def test_delta_max_depth_bounds_chains(db_url: str) -> None:
    depths = {}
    for depth in (2, 16):
        with govc_db.open(db_url, Settings(delta_max_depth=depth)) as s:
            repo = s.create_repository(f"depth{depth}")
            history(repo, 20, files=1)
            depths[depth] = s.metrics()["storage"]["max_delta_depth"]
    assert depths[2] == 2
    assert depths[16] == 16


def test_reads_of_objects_just_written_need_no_statement(db_url: str) -> None:
    """With the optimizer on, what this process wrote is answered from the decoded cache
    (with its type); verify() still reads every row; switched off, rows are read."""
    from govc_db.db.cache import uncached

    for on in (True, False):
        with govc_db.open(db_url, Settings(storage_optimizer=on, cache_enabled=False)) as s:
            repo = s.create_repository(f"fresh{int(on)}")
            history(repo, 6)
            entry = next(e for e in repo.walk("HEAD") if e.path == "d/f1.txt")
            oid = ObjectId(bytes.fromhex(entry.oid))
            batch = s.backend.batch
            before = batch.get_stats()["bulk_read_statements"]
            with s.backend.unit(repo._id) as u:
                got = u.objects.get(oid)
            assert (got.type, got.data) == (b"blob", text("d/f1.txt", 6))
            statements = batch.get_stats()["bulk_read_statements"] - before
            assert statements == (0 if on else 1)
            with uncached(), s.backend.unit(repo._id) as u:
                assert u.objects.get(oid).data == text("d/f1.txt", 6)
            assert batch.get_stats()["bulk_read_statements"] - before == statements + 1


def test_delta_cache_bytes_zero_disables_the_decoded_cache(db_url: str) -> None:
    for size, holds in ((0, False), (1 << 20, True)):
        with govc_db.open(db_url, Settings(delta_cache_bytes=size)) as s:
            repo = s.create_repository(f"cache{size}")
            history(repo, 5)
            assert repo.read("HEAD", "d/f1.txt") == text("d/f1.txt", 1)
            stats = s.metrics()["storage"]["delta_cache"]
            assert (stats["bytes"] > 0) is holds


def test_metrics_report_bytes_by_kind_and_dedup(opened: Store) -> None:
    repo = opened.create_repository("m")
    history(repo, 4)
    repo.commit("main", {"again.txt": text("d/f0.txt", 0)}, message="dup\n", author=SIG)
    st = opened.metrics()["storage"]
    assert st["optimizer"] is True
    assert set(st["written"]) >= {"blob", "tree", "commit"}
    assert st["written"]["blob"]["stored_bytes"] < st["written"]["blob"]["raw_bytes"]
    assert st["compression_ratio"] > 1
    assert st["delta_objects"] > 0
    assert st["dedup_hits"] >= 0


def test_adaptive_compression() -> None:
    codec = Codec(optimizer=True)
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
    assert looks_compressed(png)
    assert codec.encode(png) == (0, png)  # already compressed: stored raw, not tried
    small = b"tree 1234\n" * 20
    enc, stored = codec.encode(small)
    assert enc == ENC_SMALL and codec.decode(enc, stored, len(small)) == small
    plain = Codec(optimizer=False, method="zlib")
    assert plain.encode(small)[0] == ENC_ZLIB


def test_splice_and_zstd_deltas_round_trip_and_the_smaller_is_kept() -> None:
    codec = Codec(optimizer=True)
    base_id = b"\x01" * OID_LEN
    rng = random.Random(6)
    base = b"".join(b"%06d %s\n" % (i, rng.randbytes(12).hex().encode()) for i in range(400))
    # One place edited: the splice (prefix and suffix lengths, the new middle) is kept.
    one = base[:5000] + b"edited line\n" + base[5012:]
    enc, stored = codec.encode_delta(one, base_id, base)
    assert enc == ENC_SPLICE and len(stored) < OID_LEN + 32
    assert stored[:OID_LEN] == base_id
    assert codec.decode(enc, stored, len(one), base) == one
    # Edits far apart: zstd with the base as dictionary is smaller than one wide splice.
    far = b"A" + base[1:6000] + b"B" + base[6001:-1] + b"C"
    enc, stored = codec.encode_delta(far, base_id, base)
    assert enc == ENC_DELTA and codec.decode(enc, stored, len(far), base) == far
    for edited in (base + b"tail", b"head" + base, base[:100], base[50:], base):
        enc, stored = codec.encode_delta(edited, base_id, base)
        assert enc in DELTA_ENCODINGS and codec.decode(enc, stored, len(edited), base) == edited
    with pytest.raises(GovcError):  # a splice that does not fit its base is corrupt
        codec.decode(ENC_SPLICE, stored, len(base) + 1, base)


def test_native_and_python_zstd_deltas_are_one_format() -> None:
    """Encoding-3 rows made through libzstd's prefix API (where it loads) and through
    python-zstandard's raw dictionaries decode either way, byte-identical; a corrupt or
    mis-sized frame is a GovcError on both paths."""
    native, python = Codec(optimizer=True), Codec(optimizer=True, native=False)
    assert python.native is None
    assert StorageStats(python).get_stats()["native_zstd"] is None
    if native.native is None:
        pytest.skip("libzstd (shared library) is not loadable here")
    assert StorageStats(native).get_stats()["native_zstd"] >= 10400
    rng = random.Random(16)
    base_id = b"\x02" * OID_LEN
    sizes = [17, 300, 5000, 70_000, 600_000, 1_300_000]  # the last two outgrow a kept buffer
    for i, n in enumerate(sizes * 3):
        words = [rng.randbytes(6).hex().encode() for _ in range(64)]
        base = b" ".join(rng.choice(words) for _ in range(n // 13 + 2))[:n]
        data = bytearray(base)
        for _ in range(1 + i % 5):  # scattered edits: zstd beats a splice
            at = rng.randrange(len(data))
            data[at : at + 3] = rng.randbytes(rng.randint(1, 9))
        new = bytes(data)
        frames = [
            (native.native.compress(new, base, 3), "native"),
            (python._delta_frame(new, base, 3), "python"),
        ]
        for frame, _who in frames:
            stored = base_id + frame
            for codec in (native, python):
                assert codec.decode(ENC_DELTA, stored, len(new), base) == new
        for codec in (native, python):
            with pytest.raises(GovcError):  # decodes to another size
                codec.decode(ENC_DELTA, base_id + frames[0][0], len(new) + 1, base)
            with pytest.raises(GovcError):  # damaged frame
                bad = frames[0][0][:-2] + bytes([frames[0][0][-2] ^ 0xFF]) + b"\x00"
                codec.decode(ENC_DELTA, base_id + bad[: len(bad) // 2], len(new), base)


def test_settings_validation() -> None:
    with pytest.raises(InvalidInput):
        Settings(delta_max_depth=0)
    with pytest.raises(InvalidInput):
        Settings(delta_cache_bytes=-1)
    assert Settings.from_env({"GOVC_DB_STORAGE_OPTIMIZER": "off"}).storage_optimizer is False


def test_rows_written_before_the_migration_still_read(empty_db_url: str) -> None:
    """Rows in 0001's schema (written at head, then carried down by every downgrade:
    the code of today writes only the newest schema) read after ``upgrade``."""
    engine = sa.create_engine(empty_db_url)
    try:
        migrate.upgrade(engine)
        with govc_db.open(empty_db_url, Settings(storage_optimizer=False)) as old:
            repo = old.create_repository("old")
            ids = history(repo, 8)
            expected = snapshot(repo, ids)
            moves = repo.reflog("main")
        migrate.downgrade(engine, "0001")
        migrate.upgrade(engine)
        assert migrate.current_revision(engine) == migrate.head_revision()
        if engine.dialect.name == "sqlite":
            with engine.connect() as conn:
                ddl = conn.exec_driver_sql(
                    "SELECT sql FROM sqlite_master WHERE name = 'govc_objects'"
                ).scalar_one()
            assert "WITHOUT ROWID" in ddl
    finally:
        engine.dispose()
    with govc_db.open(empty_db_url) as new:
        repo = new.repository("old")
        assert snapshot(repo, ids) == expected
        assert [c.oid for c in repo.log("HEAD")] == ids[::-1]
        last = repo.commit("main", {"d/f0.txt": text("n", 1)}, message="new\n", author=SIG)
        # The reflog was carried over (now keyed by repository first) and grows in order.
        log = repo.reflog("main")
        assert log[1:] == moves  # newest first
        assert log[0].new == last
        assert repo.gc().rewritten > 0
        assert snapshot(repo, ids) == expected
        assert repo.verify().ok


def test_reflog_and_paths_carried_through_downgrade_and_upgrade_of_0005(
    empty_db_url: str,
) -> None:
    """0005 keys the reflog (repo_id, ref, id) and the changed paths by path; its
    downgrade makes reflog ids unique per repository again, keeping every move and its
    order; the path-limited log and verify() read the same before and after."""
    with govc_db.open(empty_db_url) as s:
        s.upgrade()
        repo = s.create_repository("r")
        history(repo, 3)
        repo.create_branch("side")
        repo.commit("side", {"d/x.txt": text("x", 1)}, message="x\n", author=SIG)
        before = {ref: repo.reflog(ref) for ref in ("main", "side")}
        by_path = {p: [c.oid for c in repo.log("side", path=p)] for p in ("d", "d/x.txt")}
        assert len(by_path["d/x.txt"]) == 1
    engine = sa.create_engine(empty_db_url)
    try:
        migrate.downgrade(engine, "0004")
        with engine.connect() as conn:
            keys = conn.exec_driver_sql("SELECT repo_id, id FROM govc_reflog").all()
        assert len(keys) == len(set(keys)) == sum(len(v) for v in before.values())
        migrate.upgrade(engine)
    finally:
        engine.dispose()
    with govc_db.open(empty_db_url) as s:
        repo = s.repository("r")
        assert {ref: repo.reflog(ref) for ref in ("main", "side")} == before
        assert {p: [c.oid for c in repo.log("side", path=p)] for p in by_path} == by_path
        assert repo.verify().ok
        last = repo.commit("side", {"d/y.txt": text("y", 1)}, message="y\n", author=SIG)
        assert repo.reflog("side")[0].new == last
        assert repo.reflog("side")[1:] == before["side"]


def test_every_per_repository_key_leads_with_repo_id() -> None:
    """What a Citus deployment needs to distribute every table by repository."""
    for table in Base.metadata.sorted_tables:
        if "repo_id" not in table.c or table.c.repo_id.nullable:
            continue  # no repo_id, or a reference table (API tokens: None = every repo)
        assert table.primary_key.columns.keys()[0] == "repo_id", table.name
        for index in table.indexes:
            assert next(iter(index.columns)).name == "repo_id", index.name
        for constraint in table.constraints:
            if isinstance(constraint, sa.UniqueConstraint):
                assert next(iter(constraint.columns)).name == "repo_id", constraint.name


def test_decoded_cache_is_bounded_by_bytes_and_evicts_the_least_recently_used() -> None:
    from govc_db.store.codec import DecodedCache

    per = 1000 + DecodedCache.OVERHEAD
    cache = DecodedCache(3 * per)
    for i in range(3):
        cache.put(1, bytes([i]) * 20, b"x" * 1000, i)
    assert cache.get(1, b"\x00" * 20) == (b"x" * 1000, 0)  # now the most recent
    cache.put(1, b"\x03" * 20, b"y" * 1000, 3)  # evicts \x01, the least recent
    assert cache.get(1, b"\x01" * 20) is None
    assert cache.get(1, b"\x00" * 20) is not None and cache.get(1, b"\x03" * 20) is not None
    assert cache.get(2, b"\x00" * 20) is None  # keyed by repository too
    cache.put(1, b"\x03" * 20, b"z" * 10, 3)  # replacing an entry frees its bytes
    assert cache.get_stats()["bytes"] == 2 * per + 10 + DecodedCache.OVERHEAD
    cache.put(1, b"\x09" * 20, b"w" * 4 * per, 0)  # larger than the whole cache: ignored
    assert cache.get(1, b"\x09" * 20) is None and cache.get_stats()["bytes"] <= 3 * per
    cache.clear()
    assert cache.get_stats()["bytes"] == 0 and cache.get(1, b"\x00" * 20) is None


def test_packed_objects_carried_through_downgrade_and_upgrade_of_0006(
    empty_db_url: str,
) -> None:
    """0006's downgrade writes every packed object back as a ``govc_objects`` row (zlib,
    readable by every earlier revision) before dropping ``govc_packs``."""
    with govc_db.open(empty_db_url) as s:
        s.upgrade()
        repo = s.create_repository("p")
        ids = history(repo, 6)
        expected = snapshot(repo, ids)
        report = repo.gc()
        assert report.packs > 0 and rows(s, repo._id) == []
        repo_id = repo._id
    engine = sa.create_engine(empty_db_url)
    try:
        migrate.downgrade(engine, "0005")
        with engine.connect() as conn:
            back = conn.exec_driver_sql(
                f"SELECT count(*), min(encoding), max(encoding) FROM govc_objects "
                f"WHERE repo_id = {repo_id}"
            ).one()
        assert tuple(back) == (report.objects, 1, 1)
        migrate.upgrade(engine)
    finally:
        engine.dispose()
    with govc_db.open(empty_db_url) as s:
        repo = s.repository("p")
        assert snapshot(repo, ids) == expected
        assert repo.verify().ok


def _meta_state(repo: govc_db.Repository, tips: list[str]) -> dict[str, object]:
    """What the commit index and reflog answer: logs (whole, limited, by path), merge
    bases, ancestry and every ref's moves."""
    a, b = tips
    return {
        "log": [(c.oid, c.parents) for c in repo.log("main")],
        "log3": [c.oid for c in repo.log("side", limit=3)],
        "by_path": {p: [c.oid for c in repo.log("main", path=p)] for p in ("d", "d/x.txt")},
        "base": repo.merge_base(a, b),
        "ancestor": (repo.is_ancestor(b, a), repo.is_ancestor(a, b)),
        "reflog": {ref: repo.reflog(ref) for ref in ("main", "side")},
    }


def test_commit_index_and_reflog_blocks_carried_through_downgrade_and_upgrade_of_0007(
    empty_db_url: str,
) -> None:
    """0007 keeps a commit's parents in its row and gc() puts reflog moves in blocks:
    its downgrade writes ``govc_commit_parents`` rows (merges: two, in order) and every
    block's moves as rows back; the upgrade reads them into the new shape again, and
    log, path-limited log, merge base and reflog answer the same throughout."""
    with govc_db.open(empty_db_url) as s:
        s.upgrade()
        repo = s.create_repository("m")
        history(repo, 20)
        repo.create_branch("side")
        side = repo.commit("side", {"d/x.txt": text("x", 1)}, message="x\n", author=SIG)
        repo.commit("main", {"d/y.txt": text("y", 1)}, message="y\n", author=SIG)
        merged = repo.merge("main", "side", author=SIG, message="merge\n")
        for k in range(2, 5):
            repo.commit("side", {"d/x.txt": text("x", k)}, message=f"x{k}\n", author=SIG)
        tips = [repo.resolve("main"), repo.resolve("side")]
        before = _meta_state(repo, tips)
        assert repo.get_commit(merged).parents[1] == side
        repo.gc()
        with s.engine.connect() as conn:
            blocks = conn.exec_driver_sql("SELECT count(*) FROM govc_reflog_blocks").scalar()
        assert blocks == 1  # main's 23 moves; side's 4 stay rows
        assert _meta_state(repo, tips) == before
        last = repo.commit("main", {"d/z.txt": text("z", 1)}, message="z\n", author=SIG)
        moves = repo.reflog("main")
        reflogs: dict[str, list[object]] = before["reflog"]  # type: ignore[assignment]
        assert moves[0].new == last and moves[1:] == reflogs["main"]
        tips[0] = last
        before = _meta_state(repo, tips)
    engine = sa.create_engine(empty_db_url)
    try:
        migrate.downgrade(engine, "0006")
        with engine.connect() as conn:
            parents = conn.exec_driver_sql(
                "SELECT position, parent FROM govc_commit_parents WHERE oid = ? ORDER BY position"
                if engine.dialect.name == "sqlite"
                else "SELECT position, parent FROM govc_commit_parents WHERE oid = %s "
                "ORDER BY position",
                (bytes.fromhex(merged),),
            ).all()
            assert [(p, bytes(o).hex()) for p, o in parents] == [
                (i, oid) for i, oid in enumerate(repo_parents(before, merged))
            ]
            counts = conn.exec_driver_sql(
                "SELECT ref, count(*) FROM govc_reflog GROUP BY ref ORDER BY ref"
            ).all()
            assert [tuple(r) for r in counts] == [("refs/heads/main", 24), ("refs/heads/side", 5)]
        migrate.upgrade(engine)
    finally:
        engine.dispose()
    with govc_db.open(empty_db_url) as s:
        repo = s.repository("m")
        assert _meta_state(repo, tips) == before
        assert repo.verify().ok
        newest = repo.commit("side", {"d/x.txt": text("x", 9)}, message="x9\n", author=SIG)
        assert [m.new for m in repo.reflog("side")[:2]] == [newest, tips[1]]


def repo_parents(state: dict[str, object], oid: str) -> list[str]:
    """The parents of ``oid`` as the whole log of ``state`` lists them."""
    log: list[tuple[str, list[str]]] = state["log"]  # type: ignore[assignment]
    return next(list(parents) for c, parents in log if c == oid)


def test_reflog_block_round_trips_every_kind_of_move() -> None:
    from govc_db.store.reflog import decode_block, encode_block

    a, b, c = (bytes([i]) * 20 for i in (1, 2, 3))
    moves: list[tuple[bytes | None, bytes | None, int, str]] = [
        (None, a, 1_700_000_000_000_000, "branch: Created from HEAD"),
        (a, b, 1_700_000_000_000_123, "commit: ü\udcff"),  # old = previous new
        (c, a, 1_699_999_999_000_000, "reset: moving"),  # old given; time goes back
        (a, None, 1_700_000_001_000_000, ""),  # deleted
        (None, c, 0, "created again"),
    ]
    assert decode_block(encode_block(moves)) == moves
    with pytest.raises(GovcError):
        decode_block(b"\x09" + encode_block(moves)[1:])
    with pytest.raises(GovcError):
        decode_block(encode_block(moves)[:-3])
