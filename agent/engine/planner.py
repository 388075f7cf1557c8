"""Rollback targets from the version registry: the most recent verified versions older than the failing one, each
with its static compatibility verdict against the pod's constraints; and the status marks a rollback leaves."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from agent.domain.signals import Baseline
from agent.engine.orchestrator import TargetCandidate
from agent.ports.registry import StatusTransitionError, UnknownVersionError, VersionStatus
from agent.registry import Registry
from agent.registry.compatibility import Constraints
from agent.registry.model import EvidenceCheck
from agent.registry.planning import plan_rollback
from agent.registry.selection import TargetRefusedError
from agent.rollout.machine import GateOutcome, GateResult

log = logging.getLogger(__name__)


class RegistryPlanner:
    def __init__(self, registry: Registry, constraints: Constraints, *, quarantine_rolled_back: bool = False) -> None:
        self._registry = registry
        self._constraints = constraints
        self.rolled_back_status = VersionStatus.QUARANTINED if quarantine_rolled_back else VersionStatus.FAILED
        self.baselines: dict[str, Baseline] = {}
        self.statuses: dict[str, str] = {}

    async def refresh_baselines(self) -> Mapping[str, Baseline]:
        """Re-read baselines and statuses (the registry file may change under git-ops; the overlay at runtime)."""
        versions = await self._registry.list_versions()
        self.baselines = {v.tag: v.baseline.to_domain() for v in versions if v.baseline is not None}
        self.statuses = {v.tag: str(v.status) for v in versions}
        return self.baselines

    async def targets(
        self, failing: str, operator_choice: str | None, *, force: bool = False
    ) -> Sequence[TargetCandidate]:
        versions = await self._registry.list_versions()
        # The guards read these: a status set outside the agent (`quarantine add`) counts from this rollback on.
        self.statuses = {v.tag: str(v.status) for v in versions}
        try:
            planned = plan_rollback(versions, failing, self._constraints, operator_choice=operator_choice, force=force)
        except (TargetRefusedError, UnknownVersionError) as exc:
            log.error("no rollback target for %s: %s", failing, exc)
            return []
        return [TargetCandidate(p.version.tag, p.reasons) for p in planned]

    async def mark_failed(self, version: str, reason: str, actor: str) -> str:
        """Mark a rolled-back version failed (then quarantined, when the config says so); returns its status
        before."""
        try:
            previous = await self._registry.set_status(version, VersionStatus.FAILED, reason, actor)
            if self.rolled_back_status is VersionStatus.QUARANTINED:
                # After `failed`, so that clearing the quarantine restores `failed`, never an eligible status.
                await self._registry.set_status(version, VersionStatus.QUARANTINED, reason, actor)
        except (UnknownVersionError, StatusTransitionError) as exc:
            log.error("could not mark %s %s: %s", version, self.rolled_back_status.value, exc)
            return "unknown"
        self.statuses[version] = self.rolled_back_status.value
        return previous.value

    async def mark_verified(self, version: str, detail: str) -> None:
        check = EvidenceCheck(
            name="post-rollback verification",
            passed=True,
            at=datetime.now(UTC),
            approved_by="agent:verification",
            detail=detail,
        )
        try:
            await self._registry.add_evidence(version, check)
        except UnknownVersionError as exc:
            log.error("could not record the verification of %s: %s", version, exc)

    async def mark_stable(self, candidate: str, previous: str, evidence: Sequence[GateResult], actor: str) -> None:
        """A completed rollout: the candidate is stable with the gates' evidence; the previous stable is verified
        (a warm standby, and the rollback target: the most recent verified version older than the new one)."""
        now = datetime.now(UTC)
        try:
            for gate in evidence:
                await self._registry.add_evidence(
                    candidate,
                    EvidenceCheck(
                        name=f"rollout gate {gate.gate}",
                        value=gate.value if gate.value is not None and math.isfinite(gate.value) else None,
                        threshold=gate.threshold
                        if gate.threshold is not None and math.isfinite(gate.threshold)
                        else None,
                        passed=gate.outcome is GateOutcome.PASS,
                        at=now,
                        approved_by="agent:rollout",
                        detail=gate.reason,
                    ),
                )
            await self._registry.set_status(candidate, VersionStatus.STABLE, "rollout completed", actor)
            await self._registry.set_status(previous, VersionStatus.VERIFIED, f"standby after {candidate}", actor)
        except (UnknownVersionError, StatusTransitionError) as exc:
            log.error("could not mark %s stable: %s", candidate, exc)
            return
        self.statuses[candidate] = VersionStatus.STABLE.value
        self.statuses[previous] = VersionStatus.VERIFIED.value

    async def mark_quarantined(self, version: str, reason: str, actor: str) -> None:
        """An aborted rollout: failed, then quarantined (clearing the quarantine restores failed)."""
        try:
            await self._registry.set_status(version, VersionStatus.FAILED, reason, actor)
            await self._registry.set_status(version, VersionStatus.QUARANTINED, reason, actor)
        except (UnknownVersionError, StatusTransitionError) as exc:
            log.error("could not quarantine %s: %s", version, exc)
            return
        self.statuses[version] = VersionStatus.QUARANTINED.value
