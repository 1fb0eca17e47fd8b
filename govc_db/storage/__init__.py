"""The storage optimizer: chunked large blobs (content-defined, shared between versions)
and their streams. It plugs into the SQL store through :class:`~govc_db.store.sql.SqlBackend`
hooks, so the version-control core cannot tell whether it is there.
"""
