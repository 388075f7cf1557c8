"""Tamper evidence by mode: each attack is caught by the mode that claims to catch it, and the limits each mode
documents (docs/audit.md) are real: the test of a limit shows the attack passing that mode and what catches it."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.domain.audit_chain import (
    Anchor,
    anchor_problems,
    record_hash,
    seal,
    signing_runs,
    verify_chain,
)
from agent.domain.audit_signing import (
    SIGNING_CONTEXT,
    Ed25519Signer,
    HmacKey,
    RecordSigner,
    SignatureKey,
    derived_key_id,
)
from agent.pb.rollback_agent.v1 import audit_pb2

HMAC = HmacKey.from_secret(b"k" * 32, "prod-1")
ATTACKER_HMAC = HmacKey.from_secret(b"x" * 32, "prod-1")  # claims the same key id
ED = Ed25519Signer.from_private(Ed25519PrivateKey.generate(), "pod-key")
ATTACKER_ED = Ed25519Signer.from_private(Ed25519PrivateKey.generate(), "pod-key")


def event(i: int, actor: str = "operator:ops") -> audit_pb2.AuditRecord:
    record = audit_pb2.AuditRecord(model="credit", actor=actor)
    record.automation_toggled.paused = bool(i % 2)
    record.automation_toggled.reason = f"change {i}"
    return record


def chain(n: int, signer: RecordSigner | None, *, first: int = 1, prev: bytes = bytes(32), actor: str = "op"):
    records = []
    for i in range(first, first + n):
        sealed = seal(event(i, actor), i, prev, signer)
        records.append(sealed)
        prev = sealed.hash
    return records


def reseal(records, start_index: int, signer: RecordSigner | None):
    """What someone with write access does after editing record `start_index`: re-seal it and every later one."""
    out = [audit_pb2.AuditRecord.FromString(r.SerializeToString()) for r in records]
    prev = out[start_index - 1].hash if start_index else bytes(32)
    for i in range(start_index, len(out)):
        out[i] = seal(out[i], out[i].seq, prev, signer)
        prev = out[i].hash
    return out


def edited(records, index: int, actor: str = "operator:nobody"):
    out = [audit_pb2.AuditRecord.FromString(r.SerializeToString()) for r in records]
    out[index].actor = actor
    return out


def keys(*ks: SignatureKey) -> dict[str, SignatureKey]:
    return {k.key_id: k for k in ks}


HMAC_KEYS = keys(HMAC)
ED_KEYS = keys(ED.verify_key())


@pytest.mark.parametrize(
    ("signer", "verify_keys"), [(None, None), (HMAC, HMAC_KEYS), (ED, ED_KEYS)], ids=["none", "hmac", "ed25519"]
)
def test_an_untouched_chain_verifies_in_every_mode(signer, verify_keys):
    records = chain(5, signer)
    assert verify_chain(records, keys=verify_keys) == []
    assert anchor_problems(records, [Anchor(5, records[-1].hash.hex())], min_seq=5) == []


def test_the_hash_covers_the_key_id_and_the_signature_is_over_the_hash():
    record = chain(1, HMAC)[0]
    assert record.key_id == "prod-1" and record.signature_alg == "hmac-sha256"
    assert HMAC.verify(record.hash, record.signature)
    relabelled = audit_pb2.AuditRecord.FromString(record.SerializeToString())
    relabelled.key_id = "prod-2"
    assert record_hash(relabelled) != record.hash
    # The signature is not part of what the hash covers (it cannot be), and signs the hash under a fixed context.
    stripped = audit_pb2.AuditRecord.FromString(record.SerializeToString())
    stripped.signature = b""
    assert record_hash(stripped) == record.hash
    assert ED.sign(b"h" * 32) != ED.sign(b"g" * 32)
    ED.private.public_key().verify(ED.sign(b"h" * 32), SIGNING_CONTEXT + b"h" * 32)


def test_unsigned_records_keep_the_hash_they_had_before_signing_existed():
    # A record sealed without a signer serializes exactly as before fields 32-34 existed: old trails still verify.
    record = chain(1, None)[0]
    assert not record.key_id and not record.signature and not record.signature_alg
    assert b"prod" not in record.SerializeToString()


# -- what the hash chain alone detects, and what it cannot --------------------------------------------------------


@pytest.mark.parametrize(
    ("signer", "verify_keys"), [(None, None), (HMAC, HMAC_KEYS), (ED, ED_KEYS)], ids=["none", "hmac", "ed25519"]
)
def test_an_edit_that_is_not_resealed_is_caught_by_every_mode(signer, verify_keys):
    problems = verify_chain(edited(chain(5, signer), 2), keys=verify_keys)
    assert any(p.seq == 3 and "edited" in p.problem for p in problems)


@pytest.mark.parametrize(
    ("signer", "verify_keys"), [(None, None), (HMAC, HMAC_KEYS), (ED, ED_KEYS)], ids=["none", "hmac", "ed25519"]
)
def test_removal_in_the_middle_and_reordering_are_caught_by_every_mode(signer, verify_keys):
    records = chain(5, signer)
    removed = records[:2] + records[3:]
    assert any("removed or reordered" in p.problem for p in verify_chain(removed, keys=verify_keys))
    reordered = [records[0], records[2], records[1], *records[3:]]
    problems = verify_chain(reordered, keys=verify_keys)
    assert any("out of sequence" in p.problem for p in problems)
    assert any("removed or reordered" in p.problem for p in problems)


@pytest.mark.parametrize(
    ("signer", "verify_keys"), [(None, None), (HMAC, HMAC_KEYS), (ED, ED_KEYS)], ids=["none", "hmac", "ed25519"]
)
def test_truncating_the_tail_passes_every_mode_and_is_caught_by_an_anchor(signer, verify_keys):
    records = chain(6, signer)
    head = Anchor(6, records[-1].hash.hex())
    truncated = records[:4]
    assert verify_chain(truncated, keys=verify_keys) == []  # the documented limit of the chain and signatures
    problems = anchor_problems(truncated, [head])
    assert problems == ["anchor 6: the trail ends at record 4, but record 6 existed (truncated)"]
    assert anchor_problems(truncated, [], min_seq=6) == [
        "the trail ends at record 4, but it had reached record 6 (truncated)"
    ]


def test_a_full_reseal_without_signing_passes_the_hash_chain_but_not_an_anchor():
    records = chain(5, None)
    forged = reseal(edited(records, 1), 1, None)
    assert verify_chain(forged) == []  # write access is enough to re-seal a chain that is not signed
    problems = anchor_problems(forged, [Anchor(4, records[3].hash.hex())])
    assert len(problems) == 1 and "re-sealed" in problems[0]


# -- signatures ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("signer", "verify_keys"), [(HMAC, HMAC_KEYS), (ED, ED_KEYS)], ids=["hmac", "ed25519"])
def test_edit_and_reseal_without_the_key_is_caught(signer, verify_keys):
    records = chain(5, signer)
    # Re-sealed with no key: the records after the edit lose their signatures.
    unsigned = reseal(edited(records, 2), 2, None)
    assert verify_chain(unsigned) == []
    problems = verify_chain(unsigned, keys=verify_keys)
    assert [p.seq for p in problems] == [3, 4, 5]
    assert all("unsigned, after signed records" in p.problem for p in problems)
    # Re-sealed with another key under the same key id: every re-sealed signature fails.
    attacker = ATTACKER_HMAC if signer is HMAC else ATTACKER_ED
    forged = reseal(edited(records, 2), 2, attacker)
    problems = verify_chain(forged, keys=verify_keys)
    assert [p.seq for p in problems] == [3, 4, 5]
    assert all("signature does not verify" in p.problem for p in problems)


def test_a_whole_chain_resealed_without_the_key_has_no_signature_left():
    forged = reseal(edited(chain(4, HMAC), 0), 0, None)
    assert verify_chain(forged, keys=HMAC_KEYS) == []  # nothing signed: the caller reports it (audit verify does)
    assert [str(run) for run in signing_runs(forged)] == ["records 1-4: unsigned"]


def test_hmac_key_holders_can_forge_and_only_an_anchor_catches_it():
    records = chain(5, HMAC)
    forged = reseal(edited(records, 1), 1, HMAC)
    assert verify_chain(forged, keys=HMAC_KEYS) == []  # the documented limit of HMAC: the key signs as well
    assert anchor_problems(forged, [Anchor(5, records[-1].hash.hex())])


def test_ed25519_verification_needs_only_the_public_key_which_cannot_sign():
    records = chain(3, ED)
    public_only = ED.verify_key()
    assert not hasattr(public_only, "sign")
    assert verify_chain(records, keys=keys(public_only)) == []


def test_swapping_records_between_two_pods_is_caught():
    pod_a = chain(4, HMAC, actor="pod-a")
    pod_b = chain(4, HMAC, actor="pod-b")  # the same key on both pods
    swapped = [*pod_a[:2], pod_b[2], pod_a[3]]
    problems = verify_chain(swapped, keys=HMAC_KEYS)
    assert {p.seq for p in problems} == {3, 4}
    assert all("removed or reordered" in p.problem for p in problems)
    # Re-linking the foreign record needs a re-seal, which the key's absence gives away.
    relinked = reseal(swapped, 2, None)
    assert [p.seq for p in verify_chain(relinked, keys=HMAC_KEYS)] == [3, 4]


def test_a_wrong_key_and_an_unknown_key_id_are_reported():
    records = chain(3, HMAC)
    wrong = HmacKey.from_secret(os.urandom(32), "prod-1")
    problems = verify_chain(records, keys=keys(wrong))
    assert [p.seq for p in problems] == [1, 2, 3]
    assert all("signature does not verify with key 'prod-1'" in p.problem for p in problems)
    other_id = HmacKey.from_secret(b"k" * 32, "prod-2")
    problems = verify_chain(records, keys=keys(other_id))
    assert problems[0].problem == "signed by unknown key id 'prod-1' (keys given: 'prod-2')"
    # An Ed25519 key under the HMAC key's id: the algorithm does not match.
    mixed = Ed25519Signer.from_private(Ed25519PrivateKey.generate(), "prod-1").verify_key()
    assert "which is ed25519" in verify_chain(records, keys=keys(mixed))[0].problem


def test_signing_runs_say_which_key_signed_which_records():
    first = chain(2, None)
    second = chain(3, HMAC, first=3, prev=first[-1].hash)
    third = chain(2, ED, first=6, prev=second[-1].hash)
    records = first + second + third
    assert verify_chain(records, keys=keys(HMAC, ED.verify_key())) == []
    assert [str(r) for r in signing_runs(records)] == [
        "records 1-2: unsigned",
        "records 3-5: signed by key 'prod-1' (hmac-sha256)",
        "records 6-7: signed by key 'pod-key' (ed25519)",
    ]


def test_default_key_ids_are_fingerprints_and_hmac_keys_must_be_long():
    assert HmacKey.from_secret(b"s" * 32).key_id == derived_key_id("hmac-sha256", b"s" * 32)
    assert HmacKey.from_secret(b"s" * 32).key_id.startswith("hmac-sha256:")
    assert "s" * 8 not in repr(HmacKey.from_secret(b"s" * 32))
    with pytest.raises(ValueError, match="at least 32 bytes"):
        HmacKey.from_secret(b"short")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("12", "expected SEQ:HASH"),
        ("0:" + "a" * 64, "expected SEQ:HASH"),
        ("x:abc", "expected SEQ:HASH"),
        ("3:abc", "16 to 64 hex digits"),
        ("3:" + "g" * 20, "16 to 64 hex digits"),
    ],
)
def test_a_malformed_anchor_is_refused_with_the_reason(text, message):
    with pytest.raises(ValueError, match=message):
        Anchor.parse(text)


def test_an_anchor_may_be_a_hash_prefix():
    records = chain(3, None)
    assert anchor_problems(records, [Anchor.parse(f"2:{records[1].hash.hex()[:16].upper()}")]) == []


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")), deadline=None)
@given(
    st.integers(min_value=0, max_value=5),
    st.sampled_from(["actor", "model", "key_id", "signature_alg", "signature", "seq", "prev_hash"]),
    st.binary(min_size=1, max_size=8),
)
def test_any_change_to_any_signed_record_is_reported(index, field, noise):
    records = chain(6, HMAC)
    tampered = [audit_pb2.AuditRecord.FromString(r.SerializeToString()) for r in records]
    target = tampered[index]
    if field == "seq":
        target.seq += 1 + noise[0]
    elif field in ("signature", "prev_hash"):
        setattr(target, field, getattr(target, field) + noise)
    else:
        setattr(target, field, getattr(target, field) + noise.hex())
    assert verify_chain(tampered, keys=HMAC_KEYS) != []
