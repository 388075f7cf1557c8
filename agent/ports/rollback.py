"""The seams a rollback needs besides routes and the registry: target health, warm-up, traffic confirmation,
verification against a baseline, and the forensic archive. One narrow protocol each."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str  # "ready", "golden_inference", "feature_pipeline", "model_loaded"
    passed: bool
    detail: str
    age_s: float = 0.0  # how old the observation is (continuous probing) — 0 for a probe made now


class TargetHealth(Protocol):
    async def live_checks(self, version: str, *, max_age_s: float) -> Sequence[CheckResult]:
        """Readiness, golden inference and feature-pipeline checks; results older than max_age_s are redone."""
        ...

    async def is_loaded(self, version: str) -> bool: ...


class WarmUpError(Exception):
    """The target could not be loaded (or did not become ready) in time."""


class Warmer(Protocol):
    async def warm(self, version: str, timeout_s: float) -> None:
        """Load the version (OIP repository load, or a hook) and return once it is ready; WarmUpError if not."""
        ...


class TrafficConfirmer(Protocol):
    async def confirm(self, version: str, timeout_s: float) -> tuple[bool, str]:
        """True once the data plane's own stats show requests reaching `version` (and a human detail)."""
        ...


@dataclass(frozen=True, slots=True)
class VerificationResult:
    passed: bool | None  # None: not enough evidence within the window
    detail: str
    measurements: Mapping[str, float] = field(default_factory=dict)


class Verifier(Protocol):
    async def verify(self, version: str, window_s: float) -> VerificationResult:
        """Watch the version's live metrics over the window against its baseline thresholds."""
        ...


@dataclass(frozen=True, slots=True)
class ForensicInputs:
    rollback_id: str
    model: str
    failing_version: str
    target_version: str
    trigger_summary: str
    trigger: Mapping[str, Any]  # the trigger record as JSON-ready data
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ArchiveResult:
    path: str
    sha256: str
    bytes: int
    files: int


class Archiver(Protocol):
    async def archive(self, inputs: ForensicInputs) -> ArchiveResult: ...
