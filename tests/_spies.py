"""Test spies around the real stores (the database stays real; only calls are recorded)."""

from __future__ import annotations

from collections.abc import Generator, Iterable, Sequence

from govc_db.objects import ObjectId
from govc_db.store.ports import ObjectStore, RawObject, Splice


class CountingObjects:
    """A spy around a real ObjectStore: records what is read and written."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.read_calls = 0
        self.read_ids: list[ObjectId] = []
        self.put_calls = 0
        self.written: list[tuple[bytes, bytes]] = []

    def get(self, oid: ObjectId) -> RawObject:
        self.read_calls += 1
        self.read_ids.append(oid)
        return self.inner.get(oid)

    def get_many(self, oids: Iterable[ObjectId]) -> dict[ObjectId, RawObject]:
        wanted = list(oids)
        self.read_calls += 1
        self.read_ids.extend(wanted)
        return self.inner.get_many(wanted)

    def get_bulk(self, oids: Sequence[ObjectId]) -> dict[ObjectId, RawObject]:
        wanted = list(oids)
        self.read_calls += 1
        self.read_ids.extend(wanted)
        return self.inner.get_bulk(wanted)

    def get_bulk_spliced(self, oids: Sequence[ObjectId]) -> dict[ObjectId, RawObject | Splice]:
        wanted = list(oids)
        self.read_calls += 1
        self.read_ids.extend(wanted)
        return self.inner.get_bulk_spliced(wanted)

    def iter_bulk(
        self, chunks: Iterable[Sequence[ObjectId]], *, spliced: bool = False
    ) -> Generator[dict[ObjectId, RawObject | Splice], None, None]:
        for chunk in chunks:
            yield self.get_bulk_spliced(chunk) if spliced else dict(self.get_bulk(chunk))

    def has(self, oid: ObjectId) -> bool:
        return self.inner.has(oid)

    def has_many(self, oids: Iterable[ObjectId]) -> set[ObjectId]:
        return self.inner.has_many(oids)

    def put(self, type_name: bytes, data: bytes, base: ObjectId | None = None) -> ObjectId:
        return self.put_many([(type_name, data)], None if base is None else [base])[0]

    def put_many(
        self,
        objects: Iterable[tuple[bytes, bytes]],
        bases: Sequence[ObjectId | None] | None = None,
    ) -> list[ObjectId]:
        batch = list(objects)
        self.put_calls += 1
        self.written.extend(batch)
        return self.inner.put_many(batch, bases)

    def put_bulk(
        self,
        objects: Iterable[tuple[bytes, bytes]],
        *,
        bases: Sequence[tuple[ObjectId, bytes] | None] | None = None,
        ids: Sequence[ObjectId] | None = None,
    ) -> list[ObjectId]:
        batch = list(objects)
        self.put_calls += 1
        self.written.extend(batch)
        return self.inner.put_bulk(batch, bases=bases, ids=ids)

    def find_prefix(self, prefix_hex: str, limit: int = 2) -> list[ObjectId]:
        return self.inner.find_prefix(prefix_hex, limit)

    def iter_ids(self) -> Iterable[tuple[ObjectId, bytes]]:
        return self.inner.iter_ids()
