"""Version registry: what the engine knows about each model version, and the statuses it sets at runtime.

The port is generic in the entry and evidence types so it does not depend on the layer above it: the registry
package binds them (`agent.registry.Registry` = `VersionRegistry[Version, EvidenceCheck]`).

Quarantine is sticky: a quarantined version is never promoted (to candidate, canary, verified or stable) by
`set_status`, nor chosen as a rollback target automatically, until an operator calls `clear_quarantine`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Protocol, TypeVar


class VersionStatus(enum.StrEnum):
    CANDIDATE = "candidate"  # built, not yet verified
    CANARY = "canary"  # receiving a share of traffic under observation
    VERIFIED = "verified"  # passed its verification checks; an eligible rollback target
    STABLE = "stable"  # verified and serving as the model's stable version
    FAILED = "failed"  # rolled back from; never chosen or promoted automatically
    QUARANTINED = "quarantined"  # under investigation; held until an operator clears it
    RETIRED = "retired"  # decommissioned; artifacts may be gone


# Statuses a version can be moved to out of quarantine only through clear_quarantine().
PROMOTIONS: frozenset[VersionStatus] = frozenset(
    {VersionStatus.CANDIDATE, VersionStatus.CANARY, VersionStatus.VERIFIED, VersionStatus.STABLE}
)


class UnknownVersionError(LookupError):
    """The registry has no version with this tag."""

    def __init__(self, tag: str, known: Sequence[str]) -> None:
        super().__init__(f"unknown version {tag!r}; the registry has {', '.join(known) or 'no versions'}")
        self.tag = tag


class StatusTransitionError(ValueError):
    """A status change the registry refuses (e.g. promoting a quarantined version); nothing was changed."""


VersionT_co = TypeVar("VersionT_co", covariant=True)
EvidenceT_contra = TypeVar("EvidenceT_contra", contravariant=True)


class VersionRegistry(Protocol[VersionT_co, EvidenceT_contra]):
    @property
    def model(self) -> str: ...

    async def list_versions(self) -> Sequence[VersionT_co]:
        """Every version with its current status (runtime changes applied), in registry order."""
        ...

    async def get(self, tag: str) -> VersionT_co:
        """One version; UnknownVersionError when the registry has none with this tag."""
        ...

    async def set_status(self, tag: str, status: VersionStatus, reason: str, actor: str) -> VersionStatus:
        """Persist a runtime status and return the previous one.

        Raises UnknownVersionError, or StatusTransitionError for a promotion of a quarantined version.
        """
        ...

    async def clear_quarantine(self, tag: str, actor: str, reason: str = "") -> VersionStatus:
        """Operator action: end a quarantine; returns the status restored (the one held before the quarantine).

        Raises StatusTransitionError when the version is not quarantined.
        """
        ...

    async def add_evidence(self, tag: str, evidence: EvidenceT_contra) -> None:
        """Append a verification check to the version's evidence (persisted beside the registry file)."""
        ...

    async def close(self) -> None: ...
