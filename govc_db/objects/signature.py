"""Signatures (``Name <email> time +hhmm``) as immutable values."""

from __future__ import annotations

import re
from dataclasses import dataclass

from govc_db.errors import InvalidInput

__all__ = ["Signature", "format_offset", "parse_signature"]

_MAX_OFFSET = 14 * 60 + 59  # git accepts any +hhmm; real zones stay within +-14:00
# Only the canonical form git writes is accepted (no zero-padded time, minutes < 60,
# no "-0000"), so that parsing and re-serializing gives back the same bytes and id.
_SIG_RE = re.compile(rb"(.*) <(.*)> (0|[1-9][0-9]*) ([+-])([0-9]{2})([0-5][0-9])", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Signature:
    """Who made a commit or tag, and when.

    ``time`` is seconds since the epoch; ``offset`` is the zone's offset from UTC in
    minutes (``120`` is ``+0200``, ``-330`` is ``-0530``).
    """

    name: str
    email: str
    time: int
    offset: int = 0

    def __post_init__(self) -> None:
        for label, value in (("name", self.name), ("email", self.email)):
            if not isinstance(value, str):
                raise InvalidInput(f"signature {label} must be a str")
            if any(c in value for c in "<>\n\0"):
                raise InvalidInput(f"signature {label} must not contain '<', '>', newline or NUL")
            if value != value.strip():
                raise InvalidInput(f"signature {label} must not start or end with whitespace")
            # Non-UTF-8 bytes of parsed objects live on as surrogate escapes; any other
            # surrogate could not be written, or would read back as a different str.
            try:
                raw = value.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:
                raw = None
            if raw is None or raw.decode("utf-8", "surrogateescape") != value:
                raise InvalidInput(f"signature {label} is not valid Unicode")
        if not self.name:
            raise InvalidInput("signature name must not be empty")
        if isinstance(self.time, bool) or not isinstance(self.time, int):
            raise InvalidInput("signature time must be an int (seconds since the epoch)")
        if not 0 <= self.time < 2**63:
            raise InvalidInput("signature time must be >= 0 and fit in 64 bits")
        if isinstance(self.offset, bool) or not isinstance(self.offset, int):
            raise InvalidInput("signature offset must be an int (minutes east of UTC)")
        if not -_MAX_OFFSET <= self.offset <= _MAX_OFFSET:
            raise InvalidInput(f"signature offset must be within +-{_MAX_OFFSET} minutes")

    def serialize(self) -> bytes:
        """Render as git writes it in a commit or tag header."""
        return b"%s <%s> %d %s" % (
            self.name.encode("utf-8", "surrogateescape"),
            self.email.encode("utf-8", "surrogateescape"),
            self.time,
            format_offset(self.offset).encode("ascii"),
        )


def format_offset(offset: int) -> str:
    """Format minutes east of UTC as git's ``+hhmm`` / ``-hhmm``."""
    sign = "-" if offset < 0 else "+"
    hours, minutes = divmod(abs(offset), 60)
    return f"{sign}{hours:02d}{minutes:02d}"


def parse_signature(raw: bytes) -> Signature:
    """Parse git's signature syntax; ``InvalidInput`` when malformed."""
    m = _SIG_RE.fullmatch(raw)
    if m is None:
        raise InvalidInput(f"malformed signature: {raw[:80]!r}")
    name, email, time_text, sign, hh, mm = m.groups()
    offset = int(hh) * 60 + int(mm)
    if sign == b"-":
        if offset == 0:
            raise InvalidInput(f"malformed signature (zone -0000 is not canonical): {raw[:80]!r}")
        offset = -offset
    try:
        return Signature(
            name=name.decode("utf-8", "surrogateescape"),
            email=email.decode("utf-8", "surrogateescape"),
            time=int(time_text),
            offset=offset,
        )
    except InvalidInput as exc:
        raise InvalidInput(f"malformed signature: {exc}") from None
