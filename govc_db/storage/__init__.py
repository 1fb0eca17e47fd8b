"""The storage optimizer.

* Chunked large blobs (content-defined, shared between versions) and their streams:
  :mod:`.chunks`, :mod:`.stream`. They plug into the SQL store through
  :class:`~govc_db.store.sql.SqlBackend` hooks.
* Delta storage, adaptive compression and ``gc()``: the write-path part (encodings, delta
  hints, chain reads) lives in :mod:`govc_db.store.codec` and the SQL store it plugs into;
  this package holds what runs over a whole repository: base selection (:mod:`.delta`),
  ``gc()`` (:mod:`.gc`), the storage metrics (:mod:`.metrics`) and the ``govc-db gc``
  command (:mod:`.cli`). Switched off by ``Settings.storage_optimizer``.

The version-control core cannot tell whether any of it is there.
"""
