"""The compliance report states the audit chain's signature status: which key id(s) signed, whether the signatures
were verified (keys given) or not checked, and every problem. The JSON only adds keys (`audit_chain.signatures`)."""

import html
import json
from collections.abc import Sequence

from agent.domain.audit_chain import GENESIS_HASH, seal
from agent.domain.audit_signing import HmacKey, RecordSigner
from agent.pb.rollback_agent.v1 import audit_pb2
from agent.reporting import compliance_report

from .conftest import HOSTILE
from .trail import Trail, at

NOW = at(9 * 24 * 60)
KEY = HmacKey.from_secret(b"k" * 32, "prod-1")
NEXT_KEY = HmacKey.from_secret(b"n" * 32, "prod-2")


def resealed(
    records: Sequence[audit_pb2.AuditRecord], signer: RecordSigner | None, from_seq: int = 1
) -> list[audit_pb2.AuditRecord]:
    """The trail with records from `from_seq` on sealed again by `signer` (None: unsigned), as whoever rewrites it
    with write access would: every hash and link consistent again."""
    out = list(records[: from_seq - 1])
    prev = out[-1].hash if out else GENESIS_HASH
    for record in records[from_seq - 1 :]:
        out.append(seal(record, record.seq, prev, signer))
        prev = out[-1].hash
    return out


def report(records, versions, fmt: str, keys=None) -> str:
    return compliance_report("credit-scorer", records, versions, None, fmt, generated_at=NOW, keys=keys)


def chain(records, versions, keys=None) -> dict:
    data: dict = json.loads(report(records, versions, "json", keys))["audit_chain"]
    return data


def test_a_signed_trail_checked_with_its_key_is_verified(trail: Trail, versions):
    signed = resealed(trail.records, KEY)
    data = chain(signed, versions, {"prod-1": KEY})
    # The existing keys keep their place and meaning; `signatures` is added after them.
    assert list(data) == ["intact", "records", "last_seq", "last_hash", "problems", "signatures"]
    assert data["intact"] and data["problems"] == []
    assert data["signatures"] == {
        "status": "verified",
        "signed_by": ["prod-1"],
        "checked_with": ["prod-1"],
        "runs": [{"first_seq": 1, "last_seq": 10, "key_id": "prod-1", "algorithm": "hmac-sha256"}],
        "problems": [],
    }
    text = report(signed, versions, "md", {"prod-1": KEY})
    assert "INTACT: all 10 audit records verified (hash chain from the first record and every signature)" in text
    assert "VERIFIED: every signature checked with the key(s) given ('prod-1')" in text
    assert "- **Signed by:** 'prod-1'" in text
    assert "| 1 | 10 | prod-1 | hmac-sha256 |" in text


def test_without_a_key_the_signer_is_named_but_not_checked(trail: Trail, versions):
    signed = resealed(trail.records, KEY)
    data = chain(signed, versions)
    assert data["intact"]  # the hash chain holds: that is all that was checked
    assert (data["signatures"]["status"], data["signatures"]["signed_by"], data["signatures"]["checked_with"]) == (
        "not_checked",
        ["prod-1"],
        [],
    )
    text = report(signed, versions, "md")
    assert "NOT CHECKED: the records are signed by 'prod-1', but no key was given (report --key-file)" in text
    assert "- **Checked with:** no key given" in text
    assert "and every signature" not in text


def test_an_unsigned_trail_says_so(trail: Trail, versions):
    data = chain(trail.records, versions)
    assert data["signatures"]["status"] == "unsigned" and data["signatures"]["signed_by"] == []
    assert data["signatures"]["runs"] == [{"first_seq": 1, "last_seq": 10, "key_id": None, "algorithm": None}]
    assert "UNSIGNED: audit.signing was off" in report(trail.records, versions, "md")


def test_a_trail_resealed_without_the_key_fails_with_the_key_and_passes_without(trail: Trail, versions):
    forged = resealed(resealed(trail.records, KEY), None, from_seq=6)
    data = chain(forged, versions, {"prod-1": KEY})
    assert not data["intact"]
    assert data["signatures"]["status"] == "failed"
    assert [p["seq"] for p in data["signatures"]["problems"]] == [6, 7, 8, 9, 10]
    assert all("unsigned, after signed records" in p["problem"] for p in data["signatures"]["problems"])
    assert data["problems"] == data["signatures"]["problems"]  # the chain's problems include them
    assert [(r["first_seq"], r["last_seq"], r["key_id"]) for r in data["signatures"]["runs"]] == [
        (1, 5, "prod-1"),
        (6, 10, None),
    ]
    text = report(forged, versions, "md", {"prod-1": KEY})
    assert "BROKEN: 5 problem(s) in 10 audit records" in text and "INTACT" not in text
    assert "FAILED: 5 signature problem(s)" in text
    # Without the key the re-sealed trail reads as intact: the report says the signatures were not checked.
    unchecked = chain(forged, versions)
    assert unchecked["intact"] and unchecked["signatures"]["status"] == "not_checked"


def test_a_wholly_resealed_trail_with_a_key_given_fails(trail: Trail, versions):
    data = chain(trail.records, versions, {"prod-1": KEY})
    assert not data["intact"] and data["signatures"]["status"] == "failed"
    assert "no record is signed, but a key was given" in data["signatures"]["problems"][0]["problem"]


def test_a_wrong_key_is_a_problem_named_by_record(trail: Trail, versions):
    signed = resealed(trail.records, KEY)
    impostor = HmacKey.from_secret(b"x" * 32, "prod-1")
    data = chain(signed, versions, {"prod-1": impostor})
    assert data["signatures"]["status"] == "failed" and len(data["signatures"]["problems"]) == 10
    assert "signature does not verify with key 'prod-1'" in data["signatures"]["problems"][0]["problem"]
    unknown = chain(signed, versions, {"prod-2": NEXT_KEY})
    assert "signed by unknown key id 'prod-1'" in unknown["signatures"]["problems"][0]["problem"]


def test_a_rotated_key_lists_both_signers(trail: Trail, versions):
    rotated = resealed(resealed(trail.records, KEY), NEXT_KEY, from_seq=4)
    data = chain(rotated, versions, {"prod-1": KEY, "prod-2": NEXT_KEY})
    assert data["intact"] and data["signatures"]["status"] == "verified"
    assert data["signatures"]["signed_by"] == ["prod-1", "prod-2"]
    assert data["signatures"]["checked_with"] == ["prod-1", "prod-2"]
    only_old = chain(rotated, versions, {"prod-1": KEY})
    assert [p["seq"] for p in only_old["signatures"]["problems"]] == list(range(4, 11))


def test_a_hostile_key_id_is_escaped_in_html_and_markdown(trail: Trail, versions):
    records = resealed(trail.records, HmacKey(b"k" * 32, HOSTILE))
    page = report(records, versions, "html")
    assert "<script>" not in page and html.escape(HOSTILE, quote=True) in page
    text = report(records, versions, "md")
    assert "<script>" not in text and "[link](" not in text
