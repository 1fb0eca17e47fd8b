"""The fast path's token check (TokenAuth.known_header): a raw Authorization header is
known only while the token it carries was verified within ``ttl`` -- the same answer
``known`` gives, without decoding and digesting the header again. Both backends."""

from __future__ import annotations

from govc_db import Store
from govc_db.http.auth import ANONYMOUS, TokenAuth, create_token


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_header_is_known_while_its_token_verification_holds(store: Store) -> None:
    store.create_repository("demo")
    token = create_token(store, repository="demo")
    other = create_token(store, repository="demo", write=True)
    clock = Clock()
    auth = TokenAuth(store, ttl=30.0, timer=clock)
    header = f"Bearer {token}".encode()
    assert auth.known_header(None) is ANONYMOUS
    assert auth.known_header(header) is None  # never verified: the slow path decides
    identity = auth.identify(header.decode())
    assert identity.token_id is not None and not identity.can_write
    assert auth.known_header(header) == identity
    assert auth.known_header(header) == identity  # the header memo answers as known does
    assert auth.known_header(header) == auth.known(header.decode())
    # Another token's header is not this one's, verified or not.
    other_header = f"Bearer {other}".encode()
    assert auth.known_header(other_header) is None
    assert auth.identify(other_header.decode()).can_write
    assert auth.known_header(other_header) != identity
    # Spelled differently, the same token is the same identity (digest of the token).
    assert auth.known_header(f"bearer   {token}".encode()) == identity
    # Not a bearer token, or not ASCII: never known here.
    assert auth.known_header(b"Basic dXNlcjpwdw==") is None
    assert auth.known_header(b"Bearer \xff") is None
    # Past the verification's expiry the memo does not answer: verified again first.
    clock.now += 31.0
    assert auth.known_header(header) is None
    assert auth.known(header.decode()) is None
    auth.identify(header.decode())
    assert auth.known_header(header) == identity


def test_a_wrong_token_is_never_known(store: Store) -> None:
    store.create_repository("demo")
    token = create_token(store, repository="demo")
    auth = TokenAuth(store, ttl=30.0, timer=Clock())
    auth.identify(f"Bearer {token}")
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert auth.known_header(f"Bearer {forged}".encode()) is None
