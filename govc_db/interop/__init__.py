"""git interop: import and export real git repositories, and git's smart-HTTP protocol.

Built on dulwich (the ``git`` extra) for pack parsing and the wire protocol; this package
adapts a :class:`~govc_db.Repository` to dulwich's object-store and refs seams. It imports
``api/`` (and the ports and core functions for bulk paths); nothing imports it back except
the two thin facade methods ``Store.import_git`` and ``Repository.export_git``.
"""

from govc_db.interop.types import ExportReport, ImportReport

__all__ = ["ExportReport", "ImportReport"]
