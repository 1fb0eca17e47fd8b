"""The storage contract: ObjectStore, RefStore and CommitIndexStore through a Unit.

One contract class (dulwich's ``tests/test_object_store.py`` habit), run against every
backend through the parametrized ``store`` fixture; a new backend passes the same class.
Everything goes through ``store.backend.unit(...)`` (the ports), except where the public
API's behaviour on top of them is the point (scoping of ``get_object``, catalog calls).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from _git import GitRepo

import govc_db
from govc_db import Repository, Settings, Store
from govc_db.errors import AlreadyExists, GovcError, InvalidInput, NotFound
from govc_db.http.auth import create_token
from govc_db.models import Base
from govc_db.objects import Commit, ObjectId, Signature, Tag, Tree, TreeItem, hash_object
from govc_db.storage.gc import run_gc
from govc_db.storage.stream import StreamSource
from govc_db.store.codec import ENC_RAW, ENC_ZLIB, ENC_ZSTD
from govc_db.store.ports import IndexEntry, RawObject, Unit
from govc_db.store.reflog import MIN_MOVES
from govc_db.store.sql import SqlBackend

SIG = Signature("A U Thor", "author@example.com", 1_700_000_000, 120)
HELLO_BLOB_HEX = "ce013625030ba8dba906f756967f9e9ca394464a"  # b"hello\n"
EMPTY_TREE_HEX = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
EMPTY_BLOB_HEX = "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"


def oid(n: int) -> ObjectId:
    """A made-up commit id for index tests (the index does not require the objects)."""
    return ObjectId(hashlib.sha1(b"commit %d" % n).digest())


def colliding_blobs(hex_chars: int) -> tuple[bytes, bytes]:
    """Two blob contents whose ids share their first ``hex_chars`` hex digits."""
    seen: dict[str, bytes] = {}
    for i in itertools.count():
        data = b"collide %d\n" % i
        key = hash_object(b"blob", data).hex()[:hex_chars]
        if key in seen:
            return seen[key], data
        seen[key] = data
    raise AssertionError("unreachable")


def table_counts(store: Store, repo_id: int) -> dict[str, int]:
    """Rows belonging to ``repo_id`` in every govc table of the metadata."""
    out: dict[str, int] = {}
    with store.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            column = table.c.repo_id if "repo_id" in table.c else table.c.id
            query = sa.select(sa.func.count()).select_from(table).where(column == repo_id)
            out[table.name] = int(conn.execute(query).scalar_one())
    return out


def encodings(store: Store, repo_id: int) -> dict[ObjectId, int]:
    t = Base.metadata.tables["govc_objects"]
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.oid, t.c.encoding).where(t.c.repo_id == repo_id))
        return {ObjectId(bytes(r[0])): int(r[1]) for r in rows}


class TestStoreContract:
    """The contract every storage backend meets (parametrized over SQLite and PostgreSQL)."""

    @pytest.fixture
    def repo(self, store: Store) -> Repository:
        return store.create_repository("contract")

    @contextmanager
    def unit(self, store: Store, repo: Repository, *, write: bool = True) -> Iterator[Unit]:
        with store.backend.unit(repo._id, write=write) as u:
            yield u

    # -- objects ------------------------------------------------------------------------

    def test_put_returns_git_ids(self, store: Store, repo: Repository, tmp_path: Path) -> None:
        git = GitRepo(tmp_path)
        blob = b"hello\n"
        tree = Tree.of([TreeItem(b"hello.txt", 0o100644, hash_object(b"blob", blob))])
        commit = Commit(tree.id, (), SIG, SIG, b"init\n")
        tag = Tag(commit.id, b"commit", b"v1", SIG, b"release\n")
        objects = [
            (b"blob", blob),
            (b"blob", b""),
            (b"tree", b""),
            (b"tree", tree.serialize()),
            (b"commit", commit.serialize()),
            (b"tag", tag.serialize()),
        ]
        with self.unit(store, repo) as u:
            ids = [u.objects.put(t, d) for t, d in objects]
        assert ids[0].hex() == HELLO_BLOB_HEX
        assert ids[1].hex() == EMPTY_BLOB_HEX
        assert ids[2].hex() == EMPTY_TREE_HEX
        # Written in dependency order so git can check each against the ones before it.
        for (type_name, data), got in zip(objects, ids, strict=True):
            assert git.hash_object(type_name.decode(), data) == got.hex()
        with self.unit(store, repo, write=False) as u:
            for (type_name, data), got in zip(objects, ids, strict=True):
                assert u.objects.get(got) == RawObject(type_name, data)

    def test_put_many_ids_in_input_order_and_dedup(self, store: Store, repo: Repository) -> None:
        items = [(b"blob", b"a"), (b"blob", b"b"), (b"blob", b"a"), (b"tree", b"")]
        with self.unit(store, repo) as u:
            ids = u.objects.put_many(items)
            assert u.objects.put_many([]) == []
        assert ids == [hash_object(t, d) for t, d in items]
        assert ids[0] == ids[2]
        assert table_counts(store, repo._id)["govc_objects"] == 3

    def test_putting_twice_stores_one_row(self, store: Store, repo: Repository) -> None:
        with self.unit(store, repo) as u:
            first = u.objects.put(b"blob", b"same content")
            assert u.objects.put(b"blob", b"same content") == first
        # ... also across transactions.
        with self.unit(store, repo) as u:
            assert u.objects.put(b"blob", b"same content") == first
            assert u.objects.put_many([(b"blob", b"same content")] * 3) == [first] * 3
        assert table_counts(store, repo._id)["govc_objects"] == 1

    def test_same_bytes_different_type_are_different_objects(
        self, store: Store, repo: Repository
    ) -> None:
        with self.unit(store, repo) as u:
            a = u.objects.put(b"blob", b"")
            b = u.objects.put(b"tree", b"")
            assert a != b
            assert u.objects.get(a).type == b"blob"
            assert u.objects.get(b).type == b"tree"

    def test_unknown_type_is_rejected(self, store: Store, repo: Repository) -> None:
        with pytest.raises(GovcError), self.unit(store, repo) as u:
            u.objects.put(b"blobby", b"x")

    def test_missing_objects(self, store: Store, repo: Repository) -> None:
        missing = hash_object(b"blob", b"never stored")
        with self.unit(store, repo) as u:
            present = u.objects.put(b"blob", b"stored")
            with pytest.raises(NotFound) as info:
                u.objects.get(missing)
            assert isinstance(info.value, LookupError)
            assert missing.hex() in str(info.value)
            assert u.objects.get_many([missing, present, present]) == {
                present: RawObject(b"blob", b"stored")
            }
            assert u.objects.get_many([]) == {}
            assert u.objects.has(present)
            assert not u.objects.has(missing)
            assert u.objects.has_many([missing, present]) == {present}
            assert u.objects.has_many([]) == set()

    def test_many_objects_beyond_one_statement(self, store: Store, repo: Repository) -> None:
        # More ids than one IN (...) list holds: the store must split them.
        items = [(b"blob", b"object %d" % i) for i in range(1234)]
        with self.unit(store, repo) as u:
            ids = u.objects.put_many(items)
        absent = [hash_object(b"blob", b"absent %d" % i) for i in range(10)]
        with self.unit(store, repo, write=False) as u:
            found = u.objects.get_many(ids + absent)
            assert len(found) == len(ids)
            assert all(found[i] == RawObject(t, d) for i, (t, d) in zip(ids, items, strict=True))
            assert u.objects.has_many(absent + ids) == set(ids)
            assert sorted(u.objects.iter_ids()) == sorted((i, b"blob") for i in ids)

    def test_bulk_write_and_read_equal_the_plain_ones(self, store: Store, repo: Repository) -> None:
        # More objects than one batch and one IN (...) list: flushed and read in chunks.
        items = [(b"blob", b"bulk %d\n" % i) for i in range(2345)]
        items += [(b"tree", b""), (b"blob", b"bulk 3\n")]
        expected = {hash_object(t, d): RawObject(t, d) for t, d in items}
        absent = [hash_object(b"blob", b"absent %d" % i) for i in range(10)]
        with self.unit(store, repo) as u:
            ids = u.objects.put_bulk(items)
            # Rows still buffered in the unit answer too.
            assert u.objects.get_bulk(ids[-3:]) == {i: expected[i] for i in ids[-3:]}
            assert u.objects.put_bulk([]) == []
        assert ids == [hash_object(t, d) for t, d in items]
        assert table_counts(store, repo._id)["govc_objects"] == len(expected)
        with self.unit(store, repo, write=False) as u:
            bulk = u.objects.get_bulk(ids + absent + ids[:5])
            assert bulk == expected
            assert bulk == u.objects.get_many(ids + absent)
            assert u.objects.get_bulk([]) == {}
            assert u.objects.get_bulk(absent[:1]) == {}
        # Objects put in bulk read back through the one-object path too.
        with self.unit(store, repo, write=False) as u:
            assert u.objects.get(ids[7]) == expected[ids[7]]

    def test_put_bulk_rolled_back_leaves_nothing(self, store: Store, repo: Repository) -> None:
        with pytest.raises(RuntimeError), self.unit(store, repo) as u:
            # Beyond one batch by count and by bytes (about 11 MB): some rows reach the
            # database before the failure.
            u.objects.put_bulk([(b"blob", b"doomed %d " % i * 400) for i in range(2500)])
            raise RuntimeError("fail after the writes")
        assert table_counts(store, repo._id)["govc_objects"] == 0
        with pytest.raises(GovcError), self.unit(store, repo) as u:
            u.objects.put_bulk([(b"blob", b"fine"), (b"blobby", b"x")])
        assert table_counts(store, repo._id)["govc_objects"] == 0

    def test_find_prefix(self, store: Store, repo: Repository) -> None:
        a4, b4 = colliding_blobs(4)
        a5, b5 = colliding_blobs(5)
        with self.unit(store, repo) as u:
            ia4, ib4, ia5, ib5 = u.objects.put_many([(b"blob", d) for d in (a4, b4, a5, b5)])
            u.objects.put(b"blob", b"unrelated")
        p4, p5 = ia4.hex()[:4], ia5.hex()[:5]
        with self.unit(store, repo, write=False) as u:
            find = u.objects.find_prefix
            # Ambiguous: more than one id comes back (limit 2 by default is enough to tell).
            assert set(find(p4)) >= {ia4, ib4}
            assert len(find(p4, limit=1)) == 1
            assert set(find(p4, limit=10)) == {
                i for i in (ia4, ib4, ia5, ib5) if i.hex().startswith(p4)
            } | {i for i, _ in u.objects.iter_ids() if i.hex().startswith(p4)}
            # An odd number of hex digits is a half-byte prefix.
            assert set(find(p5, limit=10)) == {ia5, ib5}
            # Unique prefixes, from 4 digits to the full id.
            longer = ia4.hex()[: len(p4) + 8]
            assert find(longer) == [ia4]
            assert find(ia4.hex()) == [ia4]
            assert find(ia4.hex()[:39]) == [ia4]
            # Absent prefix.
            absent = next(
                p
                for p in (f"{n:04x}" for n in range(0x10000))
                if not any(i.hex().startswith(p) for i, _ in u.objects.iter_ids())
            )
            assert find(absent) == []

    @pytest.mark.parametrize("prefix", ["", "abc", "ABCD", "xyz1", "12345g", "0" * 41])
    def test_find_prefix_rejects_malformed(
        self, store: Store, repo: Repository, prefix: str
    ) -> None:
        with self.unit(store, repo, write=False) as u, pytest.raises(InvalidInput):
            u.objects.find_prefix(prefix)

    def test_iter_ids(self, store: Store, repo: Repository) -> None:
        with self.unit(store, repo) as u:
            assert list(u.objects.iter_ids()) == []
            b = u.objects.put(b"blob", b"x")
            t = u.objects.put(b"tree", b"")
        with self.unit(store, repo, write=False) as u:
            assert sorted(u.objects.iter_ids()) == sorted([(b, b"blob"), (t, b"tree")])

    def test_objects_are_scoped_per_repository(self, store: Store, repo: Repository) -> None:
        other = store.create_repository("other")
        with self.unit(store, repo) as u:
            mine = u.objects.put(b"blob", b"secret of repo A\n")
            shared = u.objects.put(b"blob", b"in both\n")
        with self.unit(store, other) as u:
            assert u.objects.put(b"blob", b"in both\n") == shared
        with self.unit(store, other, write=False) as u:
            with pytest.raises(NotFound):
                u.objects.get(mine)
            assert u.objects.get_many([mine, shared]) == {shared: RawObject(b"blob", b"in both\n")}
            assert not u.objects.has(mine)
            assert u.objects.has_many([mine, shared]) == {shared}
            assert mine not in u.objects.find_prefix(mine.hex()[:6], limit=10)
            assert [i for i, _ in u.objects.iter_ids()] == [shared]
        # Identical content is stored once per repository, not once per database.
        assert table_counts(store, repo._id)["govc_objects"] == 2
        assert table_counts(store, other._id)["govc_objects"] == 1
        # The public API is scoped the same way.
        assert repo.get_object(mine.hex()) == ("blob", b"secret of repo A\n")
        with pytest.raises(NotFound):
            other.get_object(mine.hex())

    @pytest.mark.parametrize(
        ("method", "expected"),
        [("none", ENC_RAW), ("zlib", ENC_ZLIB), ("zstd", ENC_ZSTD)],
    )
    def test_compression_round_trips(
        self, store: Store, db_url: str, method: str, expected: int
    ) -> None:
        rng = random.Random(7)
        compressible = b"line of a config file, repeated\n" * 400
        incompressible = os.urandom(64 * 1024)
        tiny = b"short"  # below compression_min_size
        # 5 MB of text-like data with some entropy: compressible, but not trivially.
        words = [b"alpha", b"beta", b"gamma", b"delta", b"epsilon", b"\n", b" ", b"0123"]
        big = b"".join(rng.choice(words) for _ in range(1_100_000))[: 5 * 1024 * 1024]
        big_random = os.urandom(5 * 1024 * 1024 + 3)
        payloads = [b"", tiny, compressible, incompressible, big, big_random]

        # The plain codec (the storage optimizer's encodings: tests/test_storage.py).
        plain = Settings(compression=method, storage_optimizer=False)
        with govc_db.open(db_url, plain) as writer:
            repo = writer.create_repository(f"z-{method}")
            with writer.backend.unit(repo._id, write=True) as u:
                ids = u.objects.put_many([(b"blob", p) for p in payloads])
            with writer.backend.unit(repo._id) as u:
                got = u.objects.get_many(ids)
            for i, p in zip(ids, payloads, strict=True):
                assert got[i] == RawObject(b"blob", p)
            enc = encodings(writer, repo._id)
        by_payload = dict(zip(ids, payloads, strict=True))
        # Empty, tiny and incompressible data stay raw whatever the method.
        for i, p in by_payload.items():
            if p in (b"", tiny, incompressible, big_random):
                assert enc[i] == ENC_RAW
            else:
                assert enc[i] == expected
        # A store configured differently reads everything: the encoding is per row.
        for other in ("none", "zlib", "zstd"):
            with (
                govc_db.open(db_url, Settings(compression=other)) as reader,
                reader.backend.unit(repo._id) as u,
            ):
                assert u.objects.get(ids[4]).data == big
                assert u.objects.get(ids[2]).data == compressible

    def test_corrupt_stored_data_is_a_govc_error(self, store: Store, repo: Repository) -> None:
        with self.unit(store, repo) as u:
            target = u.objects.put(b"blob", b"compress me " * 100)
        assert encodings(store, repo._id)[target] != ENC_RAW
        t = Base.metadata.tables["govc_objects"]
        with store.engine.begin() as conn:
            conn.execute(
                sa.update(t)
                .where(t.c.repo_id == repo._id, t.c.oid == target)
                .values(data=b"\x00garbage\xff" * 3)
            )
        # The storage optimizer's decoded cache answers for objects this process wrote
        # (content-addressed) without reading their rows: cleared, the row is read.
        store.backend.codec.cache.clear()
        with self.unit(store, repo, write=False) as u, pytest.raises(GovcError, match="corrupt"):
            u.objects.get(target)

    # -- refs ---------------------------------------------------------------------------

    def _two_commits(self, store: Store, repo: Repository) -> tuple[ObjectId, ObjectId, ObjectId]:
        with self.unit(store, repo) as u:
            a = u.objects.put(b"blob", b"a")
            b = u.objects.put(b"blob", b"b")
            c = u.objects.put(b"blob", b"c")
        return a, b, c

    def test_add_if_new(self, store: Store, repo: Repository) -> None:
        a, b, _ = self._two_commits(store, repo)
        with self.unit(store, repo) as u:
            assert u.refs.get("refs/heads/main") is None
            assert u.refs.add_if_new("refs/heads/main", a, "create")
            assert not u.refs.add_if_new("refs/heads/main", b, "again")
            assert u.refs.get("refs/heads/main") == a
        with self.unit(store, repo, write=False) as u:
            assert u.refs.get("refs/heads/main") == a
            log = u.refs.reflog("refs/heads/main")
            assert [(e.ref, e.old, e.new, e.message) for e in log] == [
                ("refs/heads/main", None, a, "create")
            ]

    def test_set_if_equals(self, store: Store, repo: Repository) -> None:
        a, b, c = self._two_commits(store, repo)
        ref = "refs/heads/main"
        with self.unit(store, repo) as u:
            # Missing ref: only old=None may create it.
            assert not u.refs.set_if_equals(ref, a, b, "no such ref")
            assert u.refs.get(ref) is None
            assert u.refs.set_if_equals(ref, None, a, "create")
            # Wrong expectations change nothing.
            assert not u.refs.set_if_equals(ref, None, b, "exists already")
            assert not u.refs.set_if_equals(ref, c, b, "wrong old")
            assert u.refs.get(ref) == a
            # The right one moves it.
            assert u.refs.set_if_equals(ref, a, b, "move")
            assert u.refs.get(ref) == b
            assert not u.refs.set_if_equals(ref, a, c, "stale")
            assert u.refs.get(ref) == b
        with self.unit(store, repo, write=False) as u:
            assert [(e.old, e.new, e.message) for e in u.refs.reflog(ref)] == [
                (None, a, "create"),
                (a, b, "move"),
            ]

    def test_remove_if_equals(self, store: Store, repo: Repository) -> None:
        a, b, _ = self._two_commits(store, repo)
        with self.unit(store, repo) as u:
            assert not u.refs.remove_if_equals("refs/heads/x", None, "missing")
            assert not u.refs.remove_if_equals("refs/heads/x", a, "missing")
            assert u.refs.add_if_new("refs/heads/x", a, "create x")
            assert u.refs.add_if_new("refs/heads/y", a, "create y")
            assert not u.refs.remove_if_equals("refs/heads/x", b, "wrong")
            assert u.refs.get("refs/heads/x") == a
            assert u.refs.remove_if_equals("refs/heads/x", a, "delete x")
            assert u.refs.remove_if_equals("refs/heads/y", None, "delete y (any value)")
            assert u.refs.get("refs/heads/x") is None
            assert u.refs.get("refs/heads/y") is None
            assert not u.refs.remove_if_equals("refs/heads/x", a, "twice")
        with self.unit(store, repo, write=False) as u:
            assert [(e.old, e.new, e.message) for e in u.refs.reflog("refs/heads/x")] == [
                (None, a, "create x"),
                (a, None, "delete x"),
            ]
            assert [(e.old, e.new) for e in u.refs.reflog("refs/heads/y")] == [
                (None, a),
                (a, None),
            ]
            assert u.refs.list_refs() == {}
            # A ref can be created again after deletion.
        with self.unit(store, repo) as u:
            assert u.refs.add_if_new("refs/heads/x", b, "recreate")

    def test_reflog_time_and_order(self, store: Store, repo: Repository) -> None:
        a, b, c = self._two_commits(store, repo)
        clock = iter([1_700_000_000.25, 1_700_000_001.5, 1_700_000_002.75])
        backend = SqlBackend(store.engine, store.backend.codec, clock=lambda: next(clock))
        with backend.unit(repo._id, write=True) as u:
            u.refs.add_if_new("refs/tags/t", a, "one")
            u.refs.set_if_equals("refs/tags/t", a, b, "two")
            u.refs.set_if_equals("refs/tags/t", b, c, "three: ünïcödé message")
        with self.unit(store, repo, write=False) as u:
            log = u.refs.reflog("refs/tags/t")
            assert u.refs.reflog("refs/tags/none") == []
        assert [e.time for e in log] == [1_700_000_000.25, 1_700_000_001.5, 1_700_000_002.75]
        assert [e.message for e in log] == ["one", "two", "three: ünïcödé message"]

    def test_list_refs_prefix(self, store: Store, repo: Repository) -> None:
        a, b, c = self._two_commits(store, repo)
        refs = {
            "refs/heads/main": a,
            "refs/heads/Zed": b,
            "refs/heads/feature/x": b,
            "refs/heads/feature-y": c,
            "refs/heads/0": c,
            "refs/heads/ünï": a,
            "refs/headsx": c,
            "refs/heads0": c,
            "refs/tags/v1": a,
            "refs/tags/v1.0": b,
            "refs/notes/commits": c,
        }
        with self.unit(store, repo) as u:
            for name, target in refs.items():
                assert u.refs.add_if_new(name, target, "create")
        with self.unit(store, repo, write=False) as u:
            heads = u.refs.list_refs("refs/heads/")
            assert heads == {k: v for k, v in refs.items() if k.startswith("refs/heads/")}
            assert list(heads) == sorted(heads)
            assert u.refs.list_refs("refs/heads/feature/") == {"refs/heads/feature/x": b}
            assert u.refs.list_refs("refs/tags/") == {"refs/tags/v1": a, "refs/tags/v1.0": b}
            assert u.refs.list_refs("refs/tags/v1") == {"refs/tags/v1": a, "refs/tags/v1.0": b}
            assert u.refs.list_refs() == refs
            assert list(u.refs.list_refs()) == sorted(refs)
            assert u.refs.list_refs("") == refs
            assert u.refs.list_refs("refs/remotes/") == {}

    def test_refs_are_scoped_per_repository(self, store: Store, repo: Repository) -> None:
        other = store.create_repository("other")
        a, _, _ = self._two_commits(store, repo)
        with self.unit(store, repo) as u:
            u.refs.add_if_new("refs/heads/main", a, "create")
        with self.unit(store, other) as u:
            assert u.refs.get("refs/heads/main") is None
            assert u.refs.list_refs() == {}
            assert u.refs.reflog("refs/heads/main") == []
            assert not u.refs.set_if_equals("refs/heads/main", a, a, "cross-repo")
            assert not u.refs.remove_if_equals("refs/heads/main", None, "cross-repo")
            # The same name in another repository is an independent ref.
            assert u.refs.add_if_new("refs/heads/main", a, "own")
        with self.unit(store, repo, write=False) as u:
            assert len(u.refs.reflog("refs/heads/main")) == 1

    # -- transactions -------------------------------------------------------------------

    def test_rollback_persists_nothing(self, store: Store, repo: Repository) -> None:
        a, _, _ = self._two_commits(store, repo)
        before = table_counts(store, repo._id)
        ran: list[str] = []

        class Boom(Exception):
            pass

        with pytest.raises(Boom), self.unit(store, repo) as u:
            new = u.objects.put(b"blob", b"only inside the failed transaction")
            assert u.refs.add_if_new("refs/heads/main", a, "create")
            u.index.add(IndexEntry(oid(1), oid(2), (), 1, 10, 10), {0: ["f"]})
            u.after_commit(lambda: ran.append("hook"))
            assert u.objects.has(new)  # visible inside the transaction ...
            raise Boom
        # ... and gone after it rolled back: objects, refs, reflog, index.
        assert table_counts(store, repo._id) == before
        assert ran == []
        with self.unit(store, repo, write=False) as u:
            assert not u.objects.has(new)
            assert u.refs.get("refs/heads/main") is None
            assert u.refs.reflog("refs/heads/main") == []
            assert u.index.get_many([oid(1)]) == {}
        # A GovcError raised inside rolls back the same way and passes through unchanged.
        with pytest.raises(NotFound), self.unit(store, repo) as u:
            u.refs.add_if_new("refs/heads/main", a, "create")
            u.objects.get(hash_object(b"blob", b"absent"))
        assert table_counts(store, repo._id) == before

    def test_after_commit_runs_after_commit(self, store: Store, repo: Repository) -> None:
        a, _, _ = self._two_commits(store, repo)
        seen: list[ObjectId | None] = []

        def hook() -> None:
            # Runs outside the transaction: a new unit sees the committed ref.
            with self.unit(store, repo, write=False) as u2:
                seen.append(u2.refs.get("refs/heads/main"))

        def failing_hook() -> None:
            raise RuntimeError("a subscriber failed")

        with self.unit(store, repo) as u:
            u.refs.add_if_new("refs/heads/main", a, "create")
            u.after_commit(failing_hook)  # must not fail the committed write
            u.after_commit(hook)
            assert seen == []
        assert seen == [a]

    # -- commit index -------------------------------------------------------------------

    def _dag(self) -> list[tuple[IndexEntry, dict[int, list[str]]]]:
        """c1 <- c2, c1 <- c3, merge m4(c2, c3), c5 <- m4, merge m6(c3, c2)."""
        c1, c2, c3, m4, c5, m6 = (oid(i) for i in range(1, 7))
        return [
            (IndexEntry(c1, oid(101), (), 1, 100, 1000), {0: ["a", "a/x", "ab", "a.txt", "b/c/d"]}),
            (IndexEntry(c2, oid(102), (c1,), 2, 200, 2000), {0: ["a/x/y"]}),
            (IndexEntry(c3, oid(103), (c1,), 2, 300, 3000), {0: ["ab"]}),
            (IndexEntry(m4, oid(104), (c2, c3), 3, 400, 4000), {0: ["ab"], 1: ["a/x/y"]}),
            (IndexEntry(c5, oid(105), (m4,), 4, 500, 5000), {0: ["dir/ü.txt"]}),
            (IndexEntry(m6, oid(106), (c3, c2), 3, 600, 6000), {0: ["a/x/y"], 1: ["ab"]}),
        ]

    def _load_dag(self, store: Store, repo: Repository) -> list[IndexEntry]:
        dag = self._dag()
        with self.unit(store, repo) as u:
            for entry, changed in dag:
                u.index.add(entry, changed)
        return [e for e, _ in dag]

    def test_index_add_and_get_many(self, store: Store, repo: Repository) -> None:
        entries = self._load_dag(store, repo)
        by_id = {e.oid: e for e in entries}
        with self.unit(store, repo, write=False) as u:
            got = u.index.get_many([*by_id, oid(99)])
            assert got == by_id
            # Parent order is the commit's order, not the ids' order.
            assert got[oid(4)].parents == (oid(2), oid(3))
            assert got[oid(6)].parents == (oid(3), oid(2))
            assert u.index.get_many([]) == {}
            assert sorted(u.index.iter_all(), key=lambda e: e.oid) == sorted(
                entries, key=lambda e: e.oid
            )

    def test_index_add_many_records_what_add_records(self, store: Store, repo: Repository) -> None:
        self._load_dag(store, repo)
        other = store.create_repository("bulk-index")
        dag = self._dag()
        with self.unit(store, other) as u:
            u.index.add_many(dag[:2])
            u.index.add_many(dag)  # idempotent, the first two again
            u.index.add_many([])
        by_id = {e.oid: e for e, _ in dag}
        assert table_counts(store, other._id) == table_counts(store, repo._id)
        with (
            self.unit(store, repo, write=False) as plain,
            self.unit(store, other, write=False) as bulk,
        ):
            assert bulk.index.get_many([*by_id, oid(99)]) == by_id
            for c in by_id:
                assert bulk.index.changed_paths(c) == plain.index.changed_paths(c)
            for path in ("ab", "a/x", "dir/ü.txt", "b"):
                assert bulk.index.touching(path) == plain.index.touching(path)
        with pytest.raises(RuntimeError), self.unit(store, other) as u:
            u.index.add_many([(IndexEntry(oid(50), oid(150), (), 1, 1, 1), {0: ["z"]})])
            raise RuntimeError("rolled back")
        with self.unit(store, other, write=False) as u:
            assert u.index.get_many([oid(50)]) == {}

    def test_index_add_is_idempotent(self, store: Store, repo: Repository) -> None:
        entries = self._load_dag(store, repo)
        counts = table_counts(store, repo._id)
        self._load_dag(store, repo)
        assert table_counts(store, repo._id) == counts
        with self.unit(store, repo, write=False) as u:
            assert len(list(u.index.iter_all())) == len(entries)

    def test_ancestry(self, store: Store, repo: Repository) -> None:
        self._load_dag(store, repo)
        c1, c2, c3, m4, c5, m6 = (oid(i) for i in range(1, 7))
        with self.unit(store, repo, write=False) as u:
            assert set(u.index.ancestry([c5])) == {c1, c2, c3, m4, c5}
            assert set(u.index.ancestry([c5, m6])) == {c1, c2, c3, m4, c5, m6}
            assert set(u.index.ancestry([c2, c3])) == {c1, c2, c3}
            assert set(u.index.ancestry([c1])) == {c1}
            # The generation window: ancestors below it are not walked.
            assert set(u.index.ancestry([c5], min_generation=3)) == {c5, m4}
            assert set(u.index.ancestry([c5], min_generation=2)) == {c5, m4, c2, c3}
            assert set(u.index.ancestry([m6, c5], min_generation=4)) == {c5, m6}
            # The starting commits are always included.
            assert set(u.index.ancestry([c2], min_generation=9)) == {c2}
            anc = u.index.ancestry([c5])
            assert anc[m4] == IndexEntry(m4, oid(104), (c2, c3), 3, 400, 4000)
            assert anc[c1].parents == ()
            assert u.index.ancestry([]) == {}
            assert u.index.ancestry([oid(99)]) == {}

    def test_touching_file_and_directory(self, store: Store, repo: Repository) -> None:
        self._load_dag(store, repo)
        c1, c2, c3, m4, c5, m6 = (oid(i) for i in range(1, 7))
        with self.unit(store, repo, write=False) as u:
            # 'a' matches 'a' and 'a/...' but not 'ab' or 'a.txt'.
            assert u.index.touching("a") == {(c1, 0), (c2, 0), (m4, 1), (m6, 0)}
            assert u.index.touching("a/x") == {(c1, 0), (c2, 0), (m4, 1), (m6, 0)}
            assert u.index.touching("a/x/y") == {(c2, 0), (m4, 1), (m6, 0)}
            assert u.index.touching("ab") == {(c1, 0), (c3, 0), (m4, 0), (m6, 1)}
            assert u.index.touching("a.txt") == {(c1, 0)}
            assert u.index.touching("b") == {(c1, 0)}
            assert u.index.touching("b/c") == {(c1, 0)}
            assert u.index.touching("dir") == {(c5, 0)}
            assert u.index.touching("dir/ü.txt") == {(c5, 0)}
            assert u.index.touching("a/x/y/z") == set()
            assert u.index.touching("c") == set()
            assert u.index.touching("di") == set()

    def test_changed_paths(self, store: Store, repo: Repository) -> None:
        self._load_dag(store, repo)
        with self.unit(store, repo, write=False) as u:
            assert u.index.changed_paths(oid(1)) == {0: {"a", "a/x", "ab", "a.txt", "b/c/d"}}
            assert u.index.changed_paths(oid(4)) == {0: {"ab"}, 1: {"a/x/y"}}
            assert u.index.changed_paths(oid(5)) == {0: {"dir/ü.txt"}}
            assert u.index.changed_paths(oid(99)) == {}

    def test_index_is_scoped_per_repository(self, store: Store, repo: Repository) -> None:
        self._load_dag(store, repo)
        other = store.create_repository("other")
        with self.unit(store, other, write=False) as u:
            assert u.index.get_many([oid(1), oid(5)]) == {}
            assert u.index.ancestry([oid(5)]) == {}
            assert u.index.touching("a") == set()
            assert u.index.changed_paths(oid(1)) == {}
            assert list(u.index.iter_all()) == []

    # -- the repository catalog ----------------------------------------------------------

    def _populate(self, store: Store, repo: Repository) -> None:
        a, b, _ = self._two_commits(store, repo)
        with self.unit(store, repo) as u:
            u.refs.add_if_new("refs/heads/main", a, "create")
            u.refs.set_if_equals("refs/heads/main", a, b, "move")
            u.refs.add_if_new("refs/tags/t", a, "tag")
            # Enough moves of one ref for gc() to put them in a block (govc_reflog_blocks).
            u.refs.add_if_new("refs/heads/busy", a, "create")
            for i in range(MIN_MOVES):
                old, new = (a, b) if i % 2 == 0 else (b, a)
                u.refs.set_if_equals("refs/heads/busy", old, new, f"move {i}")
            for entry, changed in self._dag():
                u.index.add(entry, changed)
            # A large blob stored in chunks (govc_chunks rows).
            data = bytes(range(256)) * 400
            u.objects.put_stream(b"blob", StreamSource(io.BytesIO(data), len(data), 0))  # type: ignore[attr-defined]
        # The small objects moved into a pack row (govc_packs); the chunked blob stays.
        assert run_gc(store.backend, repo._id, max_depth=10, vacuum=False).packs == 1

    def test_delete_repository_removes_every_row(self, store: Store, repo: Repository) -> None:
        other = store.create_repository("other")
        self._populate(store, repo)
        self._populate(store, other)
        for name in ("contract", "other"):  # API tokens of each (govc_db.http)
            create_token(store, repository=name)
        # Every govc table is either the catalog or holds rows of one repository, so the
        # counts below cover the whole schema.
        for table in Base.metadata.sorted_tables:
            assert table.name == "govc_repositories" or "repo_id" in table.c, table.name
        mine = table_counts(store, repo._id)
        assert all(n > 0 for n in mine.values()), mine
        theirs = table_counts(store, other._id)

        store.delete_repository("contract")

        assert table_counts(store, repo._id) == dict.fromkeys(mine, 0)
        assert table_counts(store, other._id) == theirs
        assert store.list_repositories() == ["other"]
        with pytest.raises(NotFound):
            store.repository("contract")
        # The surviving repository still works.
        with self.unit(store, other, write=False) as u:
            assert set(u.refs.list_refs()) == {"refs/heads/main", "refs/heads/busy", "refs/tags/t"}
            assert len(u.refs.reflog("refs/heads/busy")) == MIN_MOVES + 1
            assert len(list(u.index.iter_all())) == len(self._dag())

    def test_create_repository_already_exists(self, store: Store, repo: Repository) -> None:
        with pytest.raises(AlreadyExists):
            store.create_repository("contract")
        with pytest.raises(AlreadyExists):
            store.backend.create_repository("contract", "other-branch")
        assert store.repository("contract").default_branch == "main"
        assert store.list_repositories() == ["contract"]

    def test_list_repositories_sorted(self, store: Store) -> None:
        names = ["b", "B", "a.c", "a-c", "a_c", "A", "0", "Zz", "z9", "a"]
        for name in names:
            store.create_repository(name)
        assert store.list_repositories() == sorted(names)
        assert store.backend.list_repositories() == sorted(names)
