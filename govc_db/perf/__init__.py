"""govc_db.perf."""
