"""govc_db: git-compatible version control stored in SQL databases.

import govc_db
with govc_db.open("sqlite:///govc.db") as store:
    store.upgrade()
    repo = store.create_repository("demo")

The facade (``open``, ``Store``, ``Repository`` ...) pulls in SQLAlchemy and the driver,
so it is imported on first use: ``import govc_db`` and ``govc-db --help`` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from govc_db.errors import (
    AlreadyExists,
    GovcError,
    InvalidInput,
    MergeConflict,
    NotFound,
    RateLimited,
    RefConflict,
    StoreUnavailable,
)
from govc_db.middleware.caller import caller
from govc_db.objects import Signature
from govc_db.settings import Settings
from govc_db.types import (
    Change,
    CommitInfo,
    Conflict,
    File,
    MergeResult,
    RefUpdate,
    RefUpdated,
    TreeEntry,
    VerifyReport,
)

if TYPE_CHECKING:
    from govc_db.api import ChangeBuilder, Repository, Store, Subscription
    from govc_db.api import open_store as open

__version__ = "0.1.0"

# name -> attribute of govc_db.api, imported when first asked for.
_LAZY = {
    "ChangeBuilder": "ChangeBuilder",
    "Repository": "Repository",
    "Store": "Store",
    "Subscription": "Subscription",
    "open": "open_store",
}


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'govc_db' has no attribute {name!r}")
    from govc_db import api

    value = getattr(api, target)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "AlreadyExists",
    "Change",
    "ChangeBuilder",
    "CommitInfo",
    "Conflict",
    "File",
    "GovcError",
    "InvalidInput",
    "MergeConflict",
    "MergeResult",
    "NotFound",
    "RateLimited",
    "RefConflict",
    "RefUpdate",
    "RefUpdated",
    "Repository",
    "Settings",
    "Signature",
    "Store",
    "StoreUnavailable",
    "Subscription",
    "TreeEntry",
    "VerifyReport",
    "__version__",
    "caller",
    "open",
]
