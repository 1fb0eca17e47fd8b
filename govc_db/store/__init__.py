"""govc_db.store."""
