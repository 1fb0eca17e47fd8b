"""govc_db.core."""
