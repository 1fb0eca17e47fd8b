"""govc_db: git-compatible version control stored in SQL databases.

import govc_db
with govc_db.open("sqlite:///govc.db") as store:
    store.upgrade()
    repo = store.create_repository("demo")
"""

from govc_db.api import ChangeBuilder, Repository, Store, Subscription
from govc_db.api import open_store as open
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

__version__ = "0.1.0"

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
