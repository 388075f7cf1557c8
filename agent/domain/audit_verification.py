"""Verifying one audit trail: its hash chain, its signatures and any anchors, as one verdict. `audit verify` (local
or per pod of the fleet store) and the compliance report all read the trail through this, so they agree on what
is a problem and on what the signatures prove."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from agent.domain.audit_chain import Anchor, ChainProblem, SigningRun, anchor_problems, signing_runs, verify_chain
from agent.domain.audit_signing import SignatureKey
from agent.pb.rollback_agent.v1 import audit_pb2

SignatureState = Literal["unsigned", "not_checked", "verified", "failed"]
NOT_CHECKED = "signatures NOT checked (no key given)"


@dataclass(frozen=True, slots=True)
class SignatureStatus:
    """Who signed the trail, and whether that was checked: `keys_given` are the key ids checked with (none: the
    signatures are listed, not verified); `problems` are the signature problems found with them."""

    runs: tuple[SigningRun, ...]
    keys_given: tuple[str, ...]
    problems: tuple[ChainProblem, ...]

    @property
    def signed_by(self) -> tuple[str, ...]:
        """The key ids that signed records, in the order they first signed."""
        return tuple(dict.fromkeys(run.key_id for run in self.runs if run.key_id))

    @property
    def state(self) -> SignatureState:
        if self.problems:
            return "failed"
        if not self.signed_by:
            return "unsigned"
        return "verified" if self.keys_given else "not_checked"

    def run_lines(self) -> list[str]:
        """One line per run of records signed by one key (or unsigned), e.g. `records 1-40: signed by key 'k'
        (hmac-sha256)`, marked when its signatures were not checked."""
        return [f"{run}: {NOT_CHECKED}" if run.key_id and not self.keys_given else str(run) for run in self.runs]

    def summary(self) -> str:
        keys = ", ".join(repr(k) for k in self.signed_by)
        if self.state == "failed":
            return f"signatures FAILED: {len(self.problems)} problem(s)"
        if self.state == "unsigned":
            return "unsigned (audit.signing was off)"
        if self.state == "not_checked":
            return f"signed by {keys}; {NOT_CHECKED}"
        return f"signed by {keys}; signatures valid"


@dataclass(frozen=True, slots=True)
class TrailVerdict:
    records: int
    head_seq: int  # 0 without records
    head_hash: str  # hex; "" without records
    chain_problems: tuple[ChainProblem, ...]  # in record order, signature problems included
    signatures: SignatureStatus
    anchor_problems: tuple[str, ...]

    @property
    def problems(self) -> list[str]:
        return [str(p) for p in self.chain_problems] + list(self.anchor_problems)

    @property
    def intact(self) -> bool:
        return not self.chain_problems and not self.anchor_problems


def verify_trail(
    records: Sequence[audit_pb2.AuditRecord],
    keys: Mapping[str, SignatureKey] | None = None,
    anchors: Iterable[Anchor] = (),
    min_seq: int = 0,
) -> TrailVerdict:
    """The whole trail checked: links and hashes, with `keys` (key id -> key) the signatures too, and each anchor
    and `min_seq` against it. A key given for a trail without any signed record is a problem: signing never ran,
    or every record was re-sealed without the key."""
    problems = verify_chain(records, keys=keys)
    if keys and records and not any(r.key_id or r.signature for r in records):
        problems.append(
            ChainProblem(
                records[0].seq,
                "no record is signed, but a key was given: signing never ran, or the trail was re-sealed "
                "without the key",
                signature=True,
            )
        )
    head = records[-1] if records else None
    return TrailVerdict(
        records=len(records),
        head_seq=head.seq if head is not None else 0,
        head_hash=head.hash.hex() if head is not None else "",
        chain_problems=tuple(problems),
        signatures=SignatureStatus(
            runs=tuple(signing_runs(records)),
            keys_given=tuple(sorted(keys or {})),
            problems=tuple(p for p in problems if p.signature),
        ),
        anchor_problems=tuple(anchor_problems(records, anchors, min_seq)),
    )
