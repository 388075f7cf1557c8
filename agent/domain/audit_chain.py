"""The audit hash chain: each record's hash covers the previous record's hash and its own content.

hash = SHA-256(prev_hash || deterministic serialization of the record with `hash` cleared). Editing a record
breaks its hash; removing or reordering records breaks the next record's prev_hash or the seq sequence.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from agent.pb.rollback_agent.v1 import audit_pb2

GENESIS_HASH = bytes(32)


def record_hash(record: audit_pb2.AuditRecord) -> bytes:
    body = audit_pb2.AuditRecord()
    body.CopyFrom(record)
    body.ClearField("hash")
    return hashlib.sha256(record.prev_hash + body.SerializeToString(deterministic=True)).digest()


def seal(record: audit_pb2.AuditRecord, seq: int, prev_hash: bytes) -> audit_pb2.AuditRecord:
    sealed = audit_pb2.AuditRecord()
    sealed.CopyFrom(record)
    sealed.seq = seq
    sealed.prev_hash = prev_hash
    sealed.hash = record_hash(sealed)
    return sealed


@dataclass(frozen=True, slots=True)
class ChainProblem:
    seq: int
    problem: str

    def __str__(self) -> str:
        return f"record {self.seq}: {self.problem}"


def verify_chain(
    records: Iterable[audit_pb2.AuditRecord], *, first_seq: int = 1, prev_hash: bytes = GENESIS_HASH
) -> list[ChainProblem]:
    """Every way the chain is broken, in order; empty when it is intact. `first_seq` and `prev_hash` verify a tail
    of the chain that follows a known record."""
    problems: list[ChainProblem] = []
    expected_seq = first_seq
    for record in records:
        if record.seq != expected_seq:
            problems.append(ChainProblem(record.seq, f"out of sequence: expected record {expected_seq} here"))
        if record.prev_hash != prev_hash:
            problems.append(ChainProblem(record.seq, "does not follow the record before it (removed or reordered)"))
        if record_hash(record) != record.hash:
            problems.append(ChainProblem(record.seq, "content does not match its hash (edited)"))
        expected_seq, prev_hash = record.seq + 1, record.hash
    return problems
