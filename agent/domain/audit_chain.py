"""The audit hash chain: each record's hash covers the previous record's hash and its own content.

hash = SHA-256(prev_hash || deterministic serialization of the record with `hash` and `signature` cleared). Editing
a record breaks its hash; removing or reordering records breaks the next record's prev_hash or the seq sequence.
A signed record (agent.domain.audit_signing) also carries a signature over its hash by the key `key_id` names: the
hash covers the key id, so re-sealing a chain needs the key, not just write access (docs/audit.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from agent.domain.audit_signing import RecordSigner, SignatureKey
from agent.pb.rollback_agent.v1 import audit_pb2

GENESIS_HASH = bytes(32)


def record_hash(record: audit_pb2.AuditRecord) -> bytes:
    body = audit_pb2.AuditRecord()
    body.CopyFrom(record)
    body.ClearField("hash")
    body.ClearField("signature")
    return hashlib.sha256(record.prev_hash + body.SerializeToString(deterministic=True)).digest()


def seal(
    record: audit_pb2.AuditRecord, seq: int, prev_hash: bytes, signer: RecordSigner | None = None
) -> audit_pb2.AuditRecord:
    sealed = audit_pb2.AuditRecord()
    sealed.CopyFrom(record)
    sealed.seq = seq
    sealed.prev_hash = prev_hash
    sealed.ClearField("signature")
    if signer is None:
        sealed.ClearField("key_id")
        sealed.ClearField("signature_alg")
    else:
        sealed.key_id = signer.key_id
        sealed.signature_alg = signer.algorithm
    sealed.hash = record_hash(sealed)
    if signer is not None:
        sealed.signature = signer.sign(sealed.hash)
    return sealed


@dataclass(frozen=True, slots=True)
class ChainProblem:
    seq: int
    problem: str
    signature: bool = False  # a problem with the record's signature (found only when keys are given)

    def __str__(self) -> str:
        return f"record {self.seq}: {self.problem}"


def verify_chain(
    records: Iterable[audit_pb2.AuditRecord],
    *,
    first_seq: int = 1,
    prev_hash: bytes = GENESIS_HASH,
    keys: Mapping[str, SignatureKey] | None = None,
) -> list[ChainProblem]:
    """Every way the chain is broken, in order; empty when it is intact. `first_seq` and `prev_hash` verify a tail
    of the chain that follows a known record. With `keys` (key id -> key), signatures are checked too: a record
    signed by a key id not in `keys`, with a bad signature, or unsigned after a signed record is a problem."""
    problems: list[ChainProblem] = []
    expected_seq = first_seq
    seen_signed = False
    for record in records:
        if record.seq != expected_seq:
            problems.append(ChainProblem(record.seq, f"out of sequence: expected record {expected_seq} here"))
        if record.prev_hash != prev_hash:
            problems.append(ChainProblem(record.seq, "does not follow the record before it (removed or reordered)"))
        digest = record_hash(record)
        if digest != record.hash:
            problems.append(ChainProblem(record.seq, "content does not match its hash (edited)"))
        if keys is not None:
            problem = _signature_problem(record, digest, keys, seen_signed)
            if problem:
                problems.append(ChainProblem(record.seq, problem, signature=True))
            seen_signed = seen_signed or bool(record.key_id or record.signature)
        expected_seq, prev_hash = record.seq + 1, record.hash
    return problems


def _signature_problem(
    record: audit_pb2.AuditRecord, digest: bytes, keys: Mapping[str, SignatureKey], seen_signed: bool
) -> str:
    if not record.key_id and not record.signature:
        if seen_signed:
            return "unsigned, after signed records (re-sealed without the key, or signing was turned off)"
        return ""
    key = keys.get(record.key_id)
    if key is None:
        known = ", ".join(repr(k) for k in sorted(keys)) or "none"
        return f"signed by unknown key id {record.key_id!r} (keys given: {known})"
    if record.signature_alg != key.algorithm:
        return f"says {record.signature_alg or 'no algorithm'} for key {record.key_id!r}, which is {key.algorithm}"
    if not key.verify(digest, record.signature):
        return f"signature does not verify with key {record.key_id!r} (forged, or re-sealed without the key)"
    return ""


@dataclass(frozen=True, slots=True)
class SigningRun:
    """Consecutive records signed by the same key (`key_id` "" for unsigned records)."""

    first_seq: int
    last_seq: int
    key_id: str
    algorithm: str

    def __str__(self) -> str:
        span = (
            f"record {self.first_seq}"
            if self.first_seq == self.last_seq
            else (f"records {self.first_seq}-{self.last_seq}")
        )
        if not self.key_id:
            return f"{span}: unsigned"
        return f"{span}: signed by key {self.key_id!r} ({self.algorithm})"


def signing_runs(records: Iterable[audit_pb2.AuditRecord]) -> list[SigningRun]:
    runs: list[SigningRun] = []
    for record in records:
        key = (record.key_id, record.signature_alg)
        if runs and (runs[-1].key_id, runs[-1].algorithm) == key and runs[-1].last_seq + 1 == record.seq:
            last = runs[-1]
            runs[-1] = SigningRun(last.first_seq, record.seq, last.key_id, last.algorithm)
        else:
            runs.append(SigningRun(record.seq, record.seq, *key))
    return runs


@dataclass(frozen=True, slots=True)
class Anchor:
    """A (seq, hash) pair of the chain kept outside the agent's reach (the head metric, the log, the fleet store)."""

    seq: int
    hash_hex: str  # the full hash, or a prefix of at least 16 hex digits

    @classmethod
    def parse(cls, text: str) -> Anchor:
        seq, sep, digest = text.strip().partition(":")
        digest = digest.lower()
        if not sep or not seq.isdigit() or int(seq) < 1:
            raise ValueError(f"anchor {text!r}: expected SEQ:HASH, e.g. 42:3f2a... (SEQ a record number from 1)")
        if not 16 <= len(digest) <= 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"anchor {text!r}: HASH must be 16 to 64 hex digits (the record's hash or its start)")
        return cls(int(seq), digest)


def anchor_problems(records: Iterable[audit_pb2.AuditRecord], anchors: Iterable[Anchor], min_seq: int = 0) -> list[str]:
    """What the trail fails of what was seen of it elsewhere: each anchor's record must exist with that hash (a
    shorter trail was truncated; a different hash was rewritten or re-sealed), and the trail must reach `min_seq`."""
    by_seq = {record.seq: record for record in records}
    head = max(by_seq, default=0)
    problems: list[str] = []
    for anchor in anchors:
        record = by_seq.get(anchor.seq)
        if record is None:
            where = f"the trail ends at record {head}" if anchor.seq > head else f"record {anchor.seq} is missing"
            problems.append(f"anchor {anchor.seq}: {where}, but record {anchor.seq} existed (truncated)")
        elif not record.hash.hex().startswith(anchor.hash_hex):
            problems.append(
                f"anchor {anchor.seq}: record {anchor.seq} has hash {record.hash.hex()[:16]}..., the anchor says "
                f"{anchor.hash_hex[:16]}... (rewritten, or the chain was re-sealed)"
            )
    if head < min_seq:
        problems.append(f"the trail ends at record {head}, but it had reached record {min_seq} (truncated)")
    return problems
