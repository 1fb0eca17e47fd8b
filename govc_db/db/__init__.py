"""The database layer: engine and pool, migrations, and the other DB optimizer parts.

Each part is its own small module (``govc_db.db.migrate``, ``govc_db.db.engine``, ...);
import the one you need.
"""
