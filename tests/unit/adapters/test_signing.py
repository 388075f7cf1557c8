"""Signing keys from files: the agent's signer and the keys `audit verify` uses; every error names the file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from agent.adapters.store.signing import SigningKeyError, load_signer, load_verify_key, verify_key_of
from agent.adapters.store.sqlite_store import SqliteStateStore, read_audit_records
from agent.domain.audit_chain import verify_chain
from agent.domain.audit_signing import Ed25519Signer, HmacKey
from agent.pb.rollback_agent.v1 import audit_pb2


def ed25519_files(tmp_path: Path) -> tuple[Path, Path]:
    private = Ed25519PrivateKey.generate()
    priv = tmp_path / "ed.pem"
    priv.write_bytes(private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    pub = tmp_path / "ed.pub.pem"
    pub.write_bytes(private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


def test_hmac_and_ed25519_signers_load_and_verify_with_the_matching_key(tmp_path: Path):
    secret = tmp_path / "hmac.key"
    secret.write_bytes(os.urandom(32))
    signer = load_signer("hmac", secret, "prod-1")
    assert isinstance(signer, HmacKey) and signer.key_id == "prod-1"
    assert load_verify_key(secret, "prod-1").verify(b"h" * 32, signer.sign(b"h" * 32))

    priv, pub = ed25519_files(tmp_path)
    ed = load_signer("ed25519", priv, None)
    assert isinstance(ed, Ed25519Signer) and ed.key_id.startswith("ed25519:")
    # The public key file gives the same default key id as the private key the agent signs with.
    public = load_verify_key(pub)
    assert public.key_id == ed.key_id == verify_key_of(ed).key_id
    assert public.verify(b"h" * 32, ed.sign(b"h" * 32))
    assert load_verify_key(priv).key_id == ed.key_id
    assert load_signer("none", None, None) is None


@pytest.mark.parametrize(
    ("mode", "content", "message"),
    [
        ("hmac", b"short\n", "an HMAC key needs at least 32 bytes, the file has 6"),
        ("ed25519", b"x" * 40, "not a readable unencrypted PEM private key"),
        ("ed25519", "ec", "not a PEM Ed25519 private key"),
        ("ed25519", "encrypted", "not a readable unencrypted PEM private key"),
        ("hmac", b"x" * 70_000, "not a signing key"),
    ],
)
def test_an_unusable_key_file_is_refused_naming_the_file(tmp_path: Path, mode, content, message):
    path = tmp_path / "key"
    if content == "ec":
        content = generate_private_key(SECP256R1()).private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    elif content == "encrypted":
        content = Ed25519PrivateKey.generate().private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(b"pw")
        )
    path.write_bytes(content)
    with pytest.raises(SigningKeyError) as caught:
        load_signer(mode, path, None)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)


def test_a_missing_or_unreadable_key_file_is_refused_naming_the_file(tmp_path: Path):
    with pytest.raises(SigningKeyError, match=f"{tmp_path / 'nope'}: cannot read the signing key: No such file"):
        load_signer("hmac", tmp_path / "nope", None)
    with pytest.raises(SigningKeyError, match="cannot read the signing key: Is a directory"):
        load_verify_key(tmp_path)


async def test_the_store_signs_every_record_it_seals_and_observers_see_them(tmp_path: Path):
    signer = HmacKey.from_secret(b"k" * 32, "prod-1")
    store = await SqliteStateStore.open(tmp_path / "s.db", model="credit", signer=signer)
    seen: list[int] = []
    store.sealed_observers.append(lambda record: seen.append(record.seq))
    store.sealed_observers.append(lambda record: 1 / 0)  # a failing observer never fails the committed write
    await store.append(audit_pb2.AutomationToggled(paused=True), "op")
    await store.record_setting("hold:v2", "x", audit_pb2.HoldChanged(version="v2", held=True), "op")
    await store.close()
    records = read_audit_records(tmp_path / "s.db")
    assert seen == [1, 2]
    assert [r.key_id for r in records] == ["prod-1", "prod-1"]
    assert verify_chain(records, keys={"prod-1": signer}) == []
