"""Bearer tokens: ``Authorization: Bearer gvc_<id>_<secret>``.

Only the SHA-256 digest of a token is stored (table ``govc_api_tokens``); the token is
printed once by ``govc-db token create``; a repository's tokens are deleted with it. A
presented token is looked up by its id and its digest compared with
:func:`hmac.compare_digest` (constant time). Verified tokens are remembered for ``ttl``
seconds (keyed by digest, so the cache holds no secret either): a revoked token may
work that long. Tokens never appear in logs: the request log names the token id only.

Rules: reads need a token (of that repository, or of all) unless the service runs with
``public_read``; every write, git push included, needs a write token of that
repository (or of all). Creating a repository needs a write token of that name or of
all repositories.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import sqlalchemy as sa

from govc_db.api.store import Store
from govc_db.errors import Forbidden, InvalidInput, NotFound, Unauthenticated
from govc_db.models import ApiToken
from govc_db.models import Repository as RepositoryRow
from govc_db.objects import check_repository_name

__all__ = ["Identity", "TokenAuth", "create_token"]

#: Verified tokens remembered at most (the memo is emptied when full).
MAX_VERIFIED = 10_000
_TOKEN_RE = re.compile(r"gvc_([0-9]{1,18})_([A-Za-z0-9_-]{20,100})")
_TABLE = cast(sa.Table, ApiToken.__table__)
_REPOS = cast(sa.Table, RepositoryRow.__table__)
_SELECT = (
    sa.select(_TABLE.c.digest, _REPOS.c.name.label("repository"), _TABLE.c.can_write)
    .select_from(_TABLE.outerjoin(_REPOS, _REPOS.c.id == _TABLE.c.repo_id))
    .where(_TABLE.c.id == sa.bindparam("id"))
)
_REPO_ID = sa.select(_REPOS.c.id).where(_REPOS.c.name == sa.bindparam("name"))


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a request is: a token (``token_id``) or anonymous (``token_id`` None)."""

    token_id: int | None
    repository: str | None = None
    can_write: bool = False

    def allows(self, repository: str | None, write: bool) -> bool:
        """Whether this identity may read (or write) ``repository`` (None: the store)."""
        if self.token_id is None:
            return False
        if self.repository is not None and self.repository != repository:
            return False
        return self.can_write or not write


ANONYMOUS = Identity(None)


def _basic_token(credentials: str) -> str:
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return ""
    user, _, password = decoded.partition(":")
    return password or user


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii")).digest()


def create_token(store: Store, *, repository: str | None = None, write: bool = False) -> str:
    """Store a new token's digest and return the token (shown once, never stored)."""
    if repository is not None:
        check_repository_name(repository)
    secret = secrets.token_urlsafe(32)
    with store.transaction() as tx:
        repo_id = None
        if repository is not None:
            repo_id = tx.connection.execute(_REPO_ID, {"name": repository}).scalar()
            if repo_id is None:
                raise NotFound(f"repository {repository!r} not found")
        # The digest covers the id, so the row is inserted first and completed after.
        row_id = tx.connection.execute(
            sa.insert(_TABLE)
            .values(digest=b"\0" * 32, repo_id=repo_id, can_write=bool(write))
            .returning(_TABLE.c.id)
        ).scalar_one()
        token = f"gvc_{row_id}_{secret}"
        tx.connection.execute(
            sa.update(_TABLE).where(_TABLE.c.id == row_id).values(digest=_digest(token))
        )
    return token


class TokenAuth:
    """Verifies bearer tokens against the store and applies the access rules."""

    def __init__(
        self,
        store: Store,
        *,
        public_read: bool = False,
        ttl: float = 30.0,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.public_read = public_read
        self.ttl = ttl
        self._timer = timer
        # digest -> (identity, expiry). A plain dict (reads and writes are atomic) rather
        # than a locked TTLCache: it is read on every request; emptied when full.
        self._verified: dict[bytes, tuple[Identity, float]] = {}
        # The raw Authorization header of a verified token -> its entry above (the same
        # identity and expiry), so a request repeating it is known without a digest.
        self._headers: dict[bytes, tuple[Identity, float]] = {}

    def _remembered(self, digest: bytes) -> Identity | None:
        hit = self._verified.get(digest)
        if hit is None or hit[1] <= self._timer():
            return None
        return hit[0]

    def known(self, authorization: str | None) -> Identity | None:
        """The identity of an ``Authorization`` header when no database trip is needed
        (anonymous, or a token verified within ``ttl``); None otherwise (unknown or
        invalid: :meth:`identify` decides)."""
        if authorization is None:
            return ANONYMOUS
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
        token = token.strip()
        if not token.isascii():
            return None
        # Only verified tokens' digests are remembered: a hit is a valid token.
        return self._remembered(_digest(token))

    def known_header(self, raw: bytes | None) -> Identity | None:
        """:meth:`known` of a raw ``Authorization`` header (the fast path's): a header
        already seen with a token verified within ``ttl`` is looked up as it is, without
        decoding or digesting it again (same identity, same expiry)."""
        if raw is None:
            return ANONYMOUS
        now = self._timer()
        hit = self._headers.get(raw)
        if hit is not None and hit[1] > now:
            return hit[0]
        scheme, _, token = raw.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer":
            return None
        token = token.strip()
        if not token.isascii():
            return None
        entry = self._verified.get(_digest(token))
        if entry is None or entry[1] <= now:
            return None
        if len(self._headers) >= MAX_VERIFIED:
            self._headers.clear()
        self._headers[raw] = entry
        return entry[0]

    def identify(self, authorization: str | None) -> Identity:
        """The identity of an ``Authorization`` header (None: anonymous); 401 if invalid."""
        if authorization is None:
            return ANONYMOUS
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() == "basic":
            # The git client sends credentials as Basic auth (`http://user:TOKEN@host/..`):
            # the token is the password (or the user name when no password is given).
            token = _basic_token(token)
            scheme = "bearer"
        match = _TOKEN_RE.fullmatch(token)
        if scheme.lower() != "bearer" or match is None:
            raise Unauthenticated("invalid or unknown token")
        digest = _digest(token)
        known = self._remembered(digest)
        if known is not None:
            return known
        with self.store.transaction(readonly=True) as tx:
            row = tx.connection.execute(_SELECT, {"id": int(match.group(1))}).first()
        # Compared even when the id is unknown, so timing says nothing about ids.
        stored = row.digest if row is not None else b"\1" * 32
        if not hmac.compare_digest(stored, digest) or row is None:
            raise Unauthenticated("invalid or unknown token")
        identity = Identity(int(match.group(1)), row.repository, bool(row.can_write))
        if self.ttl > 0:
            if len(self._verified) >= MAX_VERIFIED:
                self._verified.clear()
            self._verified[digest] = (identity, self._timer() + self.ttl)
        return identity

    def check(self, identity: Identity, repository: str | None, write: bool) -> None:
        """Raise Unauthenticated (401) or Forbidden (403) unless the access is allowed."""
        if not write and self.public_read:
            return
        if identity.token_id is None:
            raise Unauthenticated("this service needs a bearer token")
        if not identity.allows(repository, write):
            what = "write to" if write else "read"
            target = f"repository {repository!r}" if repository else "this service"
            raise Forbidden(f"the token may not {what} {target}")

    def allowed(self, identity: Identity, repository: str | None, write: bool) -> bool:
        """Whether :meth:`check` would let the access through."""
        return (not write and self.public_read) or identity.allows(repository, write)

    def check_access(self, authorization: str | None, repository: str, write: bool) -> int | None:
        """For git's smart HTTP: None if allowed, else 401 or 403."""
        try:
            self.check(self.identify(authorization), repository, write)
        except Unauthenticated:
            return 401
        except Forbidden:
            return 403
        except InvalidInput:
            return 401
        return None
