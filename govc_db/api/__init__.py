"""The public facade: Store and Repository."""

from govc_db.api.repository import ChangeBuilder, Repository
from govc_db.api.store import DEFAULT_URL, Store, Subscription, open_store

__all__ = ["DEFAULT_URL", "ChangeBuilder", "Repository", "Store", "Subscription", "open_store"]
