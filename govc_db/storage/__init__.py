"""The storage optimizer: delta storage, adaptive compression and ``gc()``.

The write-path part (encodings, delta hints, chain reads) lives in
:mod:`govc_db.store.codec` and the SQL store it plugs into; this package holds what
runs over a whole repository: base selection (:mod:`.delta`), ``gc()`` (:mod:`.gc`), the
storage metrics (:mod:`.metrics`) and the ``govc-db gc`` command (:mod:`.cli`).
Switched off by ``Settings.storage_optimizer``.
"""
