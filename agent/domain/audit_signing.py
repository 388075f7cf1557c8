"""Signing the audit chain: a signature over each record's hash, by a key named in the record.

HMAC-SHA256 (a shared secret: whoever holds it can sign, so it proves the records were sealed by a key holder) or
Ed25519 (the agent's private key signs; anyone with the public key verifies, nobody without the private key
forges). The signature is over SIGNING_CONTEXT || hash; the hash covers the record with `key_id` and
`signature_alg` (agent.domain.audit_chain), so a record cannot be re-labelled as signed by another key.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

# cryptography (its Rust extension with a static OpenSSL) is imported only when an Ed25519 key is used: most
# agents sign with HMAC or not at all, and it would cost every one of them its import-time memory.
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNING_CONTEXT = b"rollback-agent/audit-record/v1\n"
HMAC_SHA256 = "hmac-sha256"
ED25519 = "ed25519"
MIN_HMAC_KEY_BYTES = 32


class RecordSigner(Protocol):
    """Signs sealed records: the store stamps `key_id` and `algorithm` into a record before hashing it."""

    @property
    def key_id(self) -> str: ...

    @property
    def algorithm(self) -> str: ...

    def sign(self, record_hash: bytes) -> bytes: ...


class SignatureKey(Protocol):
    """What verifies the signatures of one key id."""

    @property
    def key_id(self) -> str: ...

    @property
    def algorithm(self) -> str: ...

    def verify(self, record_hash: bytes, signature: bytes) -> bool: ...


def derived_key_id(algorithm: str, public_material: bytes) -> str:
    """The default key id: the algorithm and a fingerprint (for HMAC, of the secret; it does not reveal it)."""
    digest = hashlib.sha256(b"rollback-agent key id\n" + public_material).hexdigest()[:16]
    return f"{algorithm}:{digest}"


@dataclass(frozen=True, slots=True)
class HmacKey:
    """Signs and verifies: with HMAC the same secret does both."""

    secret: bytes
    key_id: str
    algorithm: str = HMAC_SHA256

    @classmethod
    def from_secret(cls, secret: bytes, key_id: str | None = None) -> HmacKey:
        if len(secret) < MIN_HMAC_KEY_BYTES:
            raise ValueError(f"an HMAC key needs at least {MIN_HMAC_KEY_BYTES} bytes, got {len(secret)}")
        return cls(secret, key_id or derived_key_id(HMAC_SHA256, secret))

    def sign(self, record_hash: bytes) -> bytes:
        return hmac.digest(self.secret, SIGNING_CONTEXT + record_hash, "sha256")

    def verify(self, record_hash: bytes, signature: bytes) -> bool:
        return hmac.compare_digest(self.sign(record_hash), signature)

    def __repr__(self) -> str:  # never print the secret
        return f"HmacKey(key_id={self.key_id!r})"


@dataclass(frozen=True, slots=True)
class Ed25519VerifyKey:
    public: Ed25519PublicKey
    key_id: str
    algorithm: str = ED25519

    @classmethod
    def from_public(cls, public: Ed25519PublicKey, key_id: str | None = None) -> Ed25519VerifyKey:
        return cls(public, key_id or derived_key_id(ED25519, _raw_public(public)))

    def verify(self, record_hash: bytes, signature: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature

        try:
            self.public.verify(signature, SIGNING_CONTEXT + record_hash)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True, slots=True)
class Ed25519Signer:
    private: Ed25519PrivateKey
    key_id: str
    algorithm: str = ED25519

    @classmethod
    def from_private(cls, private: Ed25519PrivateKey, key_id: str | None = None) -> Ed25519Signer:
        return cls(private, key_id or derived_key_id(ED25519, _raw_public(private.public_key())))

    def sign(self, record_hash: bytes) -> bytes:
        return self.private.sign(SIGNING_CONTEXT + record_hash)

    def verify_key(self) -> Ed25519VerifyKey:
        return Ed25519VerifyKey(self.private.public_key(), self.key_id)

    def __repr__(self) -> str:
        return f"Ed25519Signer(key_id={self.key_id!r})"


def _raw_public(public: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)
