"""Who may use the control API: named identities, each a bearer token (kept as its SHA-256) and a role.

Roles are ordered: `read-only` reads (GET /v1/status); `operator` also changes traffic, pauses, rolls back and
holds; `admin` also forces traffic onto a version the agent would refuse (failed, quarantined or held).
A presented token is hashed and compared, in constant time, with every identity's hash (no short cut on a match).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Iterable, Iterator
from dataclasses import dataclass


class Role(enum.StrEnum):
    READ_ONLY = "read-only"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


EMPTY_TOKEN_SHA256 = hashlib.sha256(b"").hexdigest()


def token_sha256(token: str | bytes) -> str:
    """The hex SHA-256 of a token as the agent compares it (surrounding whitespace is not part of it)."""
    raw = token.encode("utf-8", "surrogateescape") if isinstance(token, str) else token
    return hashlib.sha256(raw.strip()).hexdigest()


@dataclass(frozen=True, slots=True)
class Identity:
    name: str
    role: Role
    sha256: str  # hex digest of the token

    def __repr__(self) -> str:  # the hash stays out of logs and tracebacks too
        return f"Identity(name={self.name!r}, role={self.role.value!r})"


class IdentityError(ValueError):
    """Identities that cannot be told apart (a name or a token twice); the message says which."""


class Identities:
    def __init__(self, identities: Iterable[Identity]) -> None:
        self._all = tuple(identities)
        if not self._all:
            raise IdentityError("the control API needs at least one identity (a token)")
        names: dict[str, Identity] = {}
        hashes: dict[str, Identity] = {}
        for identity in self._all:
            if identity.name in names:
                raise IdentityError(f"identity name {identity.name!r} is given twice")
            if identity.sha256 in hashes:
                raise IdentityError(
                    f"identities {hashes[identity.sha256].name!r} and {identity.name!r} have the same token"
                )
            names[identity.name] = hashes[identity.sha256] = identity
        self._digests = tuple(bytes.fromhex(i.sha256) for i in self._all)

    @classmethod
    def single(cls, token: str, name: str, role: Role = Role.ADMIN) -> Identities:
        """One token standing for one identity (the `control.token_file` / environment token)."""
        if not token.strip():
            raise IdentityError("the control API needs a non-empty bearer token")
        return cls([Identity(name, role, token_sha256(token))])

    def merged(self, other: Identities) -> Identities:
        return Identities(self._all + other._all)

    def __iter__(self) -> Iterator[Identity]:
        return iter(self._all)

    def __len__(self) -> int:
        return len(self._all)

    def authenticate(self, presented: bytes) -> Identity | None:
        """The identity whose token was presented, or None."""
        if not presented.strip():
            return None
        digest = hashlib.sha256(presented.strip()).digest()
        found: Identity | None = None
        for identity, expected in zip(self._all, self._digests, strict=True):
            if hmac.compare_digest(digest, expected):
                found = identity
        return found
