"""govc_db.middleware."""
