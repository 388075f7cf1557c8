"""`rollback-agent audit verify` on a signed trail: signatures (from the config's key or --key-file), anchors and
--min-seq; tampering done on the SQLite file the way someone with file access would."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from agent.adapters.store.sqlite_store import SqliteStateStore, read_audit_records
from agent.cli import main
from agent.config import ConfigError, parse_config
from agent.domain.audit_chain import seal
from agent.domain.audit_signing import HmacKey, RecordSigner

CONFIG = """
model: {name: credit}
versions:
  - {tag: v1, endpoint: "127.0.0.1:8001"}
  - {tag: v2, endpoint: "127.0.0.1:8002"}
stable: v1
state_dir: ./state
"""
SECRET = b"s3cret-s3cret-s3cret-s3cret-0123"


def write_config(tmp_path: Path, signing: str = "") -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(CONFIG + (f"audit: {{signing: {signing}}}\n" if signing else ""))
    return path


def make_trail(tmp_path: Path, signer: RecordSigner | None, n: int = 5) -> Path:
    from agent.pb.rollback_agent.v1 import audit_pb2

    db = tmp_path / "state" / "state.db"

    async def write() -> None:
        store = await SqliteStateStore.open(db, model="credit", signer=signer)
        for i in range(n):
            await store.append(audit_pb2.AutomationToggled(paused=bool(i % 2), reason=f"r{i}"), "operator:ops")
        await store.close()

    asyncio.run(write())
    return db


def verify(config: Path, capsys, *flags: str) -> tuple[int, str, str]:
    code = main(["audit", "verify", "--config", str(config), *flags])
    out = capsys.readouterr()
    return code, out.out, out.err


def reseal_from(db: Path, seq: int, signer: RecordSigner | None, actor: str = "operator:nobody") -> None:
    records = read_audit_records(db)
    prev = records[seq - 2].hash if seq > 1 else bytes(32)
    with sqlite3.connect(db) as conn:
        for record in records[seq - 1 :]:
            if record.seq == seq:
                record.actor = actor
            sealed = seal(record, record.seq, prev, signer)
            prev = sealed.hash
            conn.execute("UPDATE audit SET record = ? WHERE seq = ?", (sealed.SerializeToString(), record.seq))


@pytest.fixture
def hmac_key(tmp_path: Path) -> Path:
    path = tmp_path / "hmac.key"
    path.write_bytes(SECRET)
    return path


def test_a_signed_trail_verifies_with_the_configured_key_and_says_who_signed(tmp_path, capsys, hmac_key):
    config = write_config(tmp_path, "{mode: hmac, key_file: hmac.key, key_id: prod-1}")
    db = make_trail(tmp_path, HmacKey.from_secret(SECRET, "prod-1"))
    head = read_audit_records(db)[-1]
    code, out, err = verify(config, capsys, "--anchor", f"5:{head.hash.hex()}", "--min-seq", "5")
    assert code == 0, err
    assert "records 1-5: signed by key 'prod-1' (hmac-sha256)" in out
    assert "signatures valid (prod-1), anchor 5 matches" in out


def test_truncation_is_caught_by_an_anchor_and_min_seq(tmp_path, capsys, hmac_key):
    config = write_config(tmp_path, "{mode: hmac, key_file: hmac.key, key_id: prod-1}")
    db = make_trail(tmp_path, HmacKey.from_secret(SECRET, "prod-1"))
    head = read_audit_records(db)[-1]
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM audit WHERE seq > 3")
    assert verify(config, capsys)[0] == 0  # the documented limit: a shorter trail is still a valid chain
    code, _, err = verify(config, capsys, "--anchor", f"5:{head.hash.hex()}", "--min-seq", "5")
    assert code == 1
    assert "BROKEN anchor 5: the trail ends at record 3, but record 5 existed (truncated)" in err
    assert "BROKEN the trail ends at record 3, but it had reached record 5 (truncated)" in err


def test_edit_and_reseal_without_the_key_is_caught_and_with_it_only_by_an_anchor(tmp_path, capsys, hmac_key):
    config = write_config(tmp_path, "{mode: hmac, key_file: hmac.key, key_id: prod-1}")
    db = make_trail(tmp_path, HmacKey.from_secret(SECRET, "prod-1"))
    anchor = f"5:{read_audit_records(db)[-1].hash.hex()}"
    reseal_from(db, 3, None)
    code, out, err = verify(config, capsys)
    assert code == 1
    assert "BROKEN record 3: unsigned, after signed records" in err
    assert "records 3-5: unsigned" in out
    reseal_from(db, 3, HmacKey.from_secret(b"another key of the attacker's 32", "prod-1"))
    code, _, err = verify(config, capsys)
    assert code == 1 and "BROKEN record 3: signature does not verify with key 'prod-1'" in err
    # Whoever holds the HMAC key can re-seal: only an anchor taken before catches that.
    reseal_from(db, 3, HmacKey.from_secret(SECRET, "prod-1"))
    assert verify(config, capsys)[0] == 0
    code, _, err = verify(config, capsys, "--anchor", anchor)
    assert code == 1 and "BROKEN anchor 5: record 5 has hash" in err and "re-sealed" in err


def test_a_trail_resealed_entirely_without_the_key_is_refused_when_a_key_is_given(tmp_path, capsys, hmac_key):
    config = write_config(tmp_path, "{mode: hmac, key_file: hmac.key, key_id: prod-1}")
    db = make_trail(tmp_path, HmacKey.from_secret(SECRET, "prod-1"))
    reseal_from(db, 1, None)
    code, _, err = verify(config, capsys)
    assert code == 1 and "no record is signed, but a key was given" in err


def test_ed25519_verifies_with_the_public_key_file_and_a_wrong_key_is_reported(tmp_path, capsys):
    private = Ed25519PrivateKey.generate()
    (tmp_path / "ed.pem").write_bytes(private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    public = tmp_path / "ed.pub"
    public.write_bytes(private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    other = tmp_path / "other.pub"
    other.write_bytes(
        Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    config = write_config(tmp_path)  # the verifier has no signing config: only the public key
    from agent.adapters.store.signing import load_signer

    make_trail(tmp_path, load_signer("ed25519", tmp_path / "ed.pem", "pod-a"), n=3)
    code, out, err = verify(config, capsys)
    assert code == 0 and "records 1-3: signed by key 'pod-a' (ed25519): signatures NOT checked (no key given)" in out
    code, out, err = verify(config, capsys, "--key-file", f"pod-a={public}")
    assert code == 0, err
    assert "signatures valid (pod-a)" in out
    code, _, err = verify(config, capsys, "--key-file", f"pod-a={other}")
    assert code == 1 and "BROKEN record 1: signature does not verify with key 'pod-a'" in err
    code, _, err = verify(config, capsys, "--key-file", str(public))
    assert code == 1 and "BROKEN record 1: signed by unknown key id 'pod-a' (keys given: 'ed25519:" in err


def test_bad_flags_and_unreadable_keys_are_usage_errors_naming_what_is_wrong(tmp_path, capsys):
    config = write_config(tmp_path)
    make_trail(tmp_path, None, n=2)
    code, _, err = verify(config, capsys, "--anchor", "two:abc")
    assert code == 2 and "anchor 'two:abc': expected SEQ:HASH" in err
    code, _, err = verify(config, capsys, "--key-file", str(tmp_path / "missing.key"))
    assert code == 2 and f"{tmp_path / 'missing.key'}: cannot read the signing key" in err
    config = write_config(tmp_path, "{mode: ed25519, key_file: nope.pem}")
    code, _, err = verify(config, capsys)
    assert code == 2 and f"{tmp_path / 'nope.pem'}: cannot read the signing key" in err


def test_signing_config_needs_a_key_file_and_resolves_it_next_to_the_config(tmp_path):
    with pytest.raises(ConfigError, match=r"audit.signing: .*mode hmac needs key_file"):
        parse_config(CONFIG + "audit: {signing: {mode: hmac}}\n", "agent.yaml")
    with pytest.raises(ConfigError, match=r"audit.signing.mode: Input should be 'none', 'hmac' or 'ed25519'"):
        parse_config(CONFIG + "audit: {signing: {mode: rsa, key_file: k}}\n", "agent.yaml")
    config = parse_config(
        CONFIG + "audit: {signing: {mode: hmac, key_file: keys/k}}\n", "agent.yaml", base_dir=tmp_path
    )
    assert config.audit.signing.key_file == tmp_path / "keys" / "k"
    assert parse_config(CONFIG, "agent.yaml").audit.signing.mode == "none"
