"""Loading the audit signing keys from files (a mounted Secret): the agent's signer, and the keys `audit verify`
checks signatures with. Every error names the file and what is wrong with it; a key is never printed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from agent.domain.audit_signing import (
    MIN_HMAC_KEY_BYTES,
    Ed25519Signer,
    Ed25519VerifyKey,
    HmacKey,
    RecordSigner,
    SignatureKey,
)

if TYPE_CHECKING:  # imported where a PEM key is read: see agent.domain.audit_signing
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

SigningMode = Literal["none", "hmac", "ed25519"]
_MAX_KEY_FILE_BYTES = 64 * 1024


class SigningKeyError(Exception):
    """A key file cannot be used; the message names the file."""


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(_MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise SigningKeyError(f"{path}: cannot read the signing key: {exc.strerror or exc}") from None
    if len(data) > _MAX_KEY_FILE_BYTES:
        raise SigningKeyError(f"{path}: over {_MAX_KEY_FILE_BYTES} bytes: not a signing key")
    return data


def load_signer(mode: SigningMode, key_file: Path | None, key_id: str | None = None) -> RecordSigner | None:
    """The signer `audit.signing` configures; None for mode none."""
    if mode == "none":
        return None
    if key_file is None:
        raise SigningKeyError(f"audit.signing.mode {mode} needs key_file")
    data = _read(key_file)
    if mode == "hmac":
        if len(data) < MIN_HMAC_KEY_BYTES:
            raise SigningKeyError(
                f"{key_file}: an HMAC key needs at least {MIN_HMAC_KEY_BYTES} bytes, the file has {len(data)}"
            )
        return HmacKey.from_secret(data, key_id)
    private = _private_key(key_file, data)
    if private is None:
        raise SigningKeyError(f"{key_file}: not a PEM Ed25519 private key (openssl genpkey -algorithm ed25519)")
    return Ed25519Signer.from_private(private, key_id)


def verify_key_of(signer: RecordSigner) -> SignatureKey:
    """What checks `signer`'s signatures: the HMAC key itself, or the Ed25519 public key."""
    if isinstance(signer, Ed25519Signer):
        return signer.verify_key()
    if isinstance(signer, HmacKey):
        return signer
    raise TypeError(f"unknown signer {type(signer).__name__}")


def load_verify_key(path: Path, key_id: str | None = None) -> SignatureKey:
    """A key to verify with, by its content: a PEM Ed25519 public (or private) key, else the bytes of an HMAC
    secret. `key_id` defaults to the key's fingerprint id (the agent's default when `key_id` is not configured)."""
    data = _read(path)
    if data.lstrip().startswith(b"-----BEGIN"):
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        if b"PRIVATE KEY" in data:
            private = _private_key(path, data)
            if private is None:
                raise SigningKeyError(f"{path}: a PEM private key, but not an Ed25519 one")
            return Ed25519VerifyKey.from_public(private.public_key(), key_id)
        try:
            public = load_pem_public_key(data)
        except ValueError:
            raise SigningKeyError(f"{path}: not a readable PEM public key") from None
        if not isinstance(public, Ed25519PublicKey):
            raise SigningKeyError(f"{path}: a PEM public key, but not an Ed25519 one")
        return Ed25519VerifyKey.from_public(public, key_id)
    if len(data) < MIN_HMAC_KEY_BYTES:
        raise SigningKeyError(
            f"{path}: an HMAC key needs at least {MIN_HMAC_KEY_BYTES} bytes, the file has {len(data)}"
        )
    return HmacKey.from_secret(data, key_id)


def _private_key(path: Path, data: bytes) -> Ed25519PrivateKey | None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        private = load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        # TypeError: the key is encrypted; the agent reads its key without a passphrase (the Secret protects it).
        raise SigningKeyError(
            f"{path}: not a readable unencrypted PEM private key (openssl genpkey -algorithm ed25519)"
        ) from None
    return private if isinstance(private, Ed25519PrivateKey) else None
