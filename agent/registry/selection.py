"""Which versions a rollback may go to, best first. Pure.

Automatic: the verified (or stable) versions created strictly before the failing one, newest first; failed,
quarantined and retired versions never qualify (nor candidates and canaries: they were never verified). The
orchestrator walks the list and skips targets that fail a live check. An operator may name the target instead:
then that version only, whatever its age or status, except that failed, quarantined and retired versions are
refused unless the operator forces it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from agent.ports.registry import UnknownVersionError, VersionStatus
from agent.registry.model import VersionSpec

V = TypeVar("V", bound=VersionSpec)

AUTOMATIC_TARGETS = frozenset({VersionStatus.VERIFIED, VersionStatus.STABLE})
REFUSED_UNLESS_FORCED = frozenset({VersionStatus.FAILED, VersionStatus.QUARANTINED, VersionStatus.RETIRED})


class TargetRefusedError(ValueError):
    """The operator's choice of target is refused; the message says why and how to override when one can."""


def _by_tag(versions: list[V], tag: str) -> V:
    for version in versions:
        if version.tag == tag:
            return version
    raise UnknownVersionError(tag, [v.tag for v in versions])


def _newest_first(versions: list[V]) -> list[V]:
    # Ties on `created` go to the version declared later.
    ranked = sorted(enumerate(versions), key=lambda item: (item[1].created, item[0]), reverse=True)
    return [version for _, version in ranked]


def rollback_targets(
    versions: Iterable[V], failing_tag: str, *, operator_choice: str | None = None, force: bool = False
) -> list[V]:
    """Rollback targets for `failing_tag`, best first; empty when no version qualifies.

    Raises UnknownVersionError for an unknown failing version (automatic) or operator choice, and
    TargetRefusedError when the operator's choice is the failing version, or is failed, quarantined or retired
    without `force`.
    """
    known = list(versions)
    if operator_choice is not None:
        return [_operator_target(known, failing_tag, operator_choice, force)]
    failing = _by_tag(known, failing_tag)
    return [
        v
        for v in _newest_first(known)
        if v.tag != failing.tag and v.created < failing.created and v.status in AUTOMATIC_TARGETS
    ]


def _operator_target(known: list[V], failing_tag: str, choice: str, force: bool) -> V:
    target = _by_tag(known, choice)
    if target.tag == failing_tag:
        raise TargetRefusedError(f"{choice} is the version being rolled back from; choose another target")
    if target.status in REFUSED_UNLESS_FORCED and not force:
        raise TargetRefusedError(
            f"{choice} is {target.status}; a {target.status} version is never a rollback target unless the "
            "operator forces it"
        )
    return target


def ineligible(versions: Iterable[V], failing_tag: str) -> list[tuple[V, str]]:
    """Versions older than the failing one that `rollback_targets` leaves out, newest first, each with why:
    what an escalation says when no target is left."""
    known = list(versions)
    failing = _by_tag(known, failing_tag)
    return [
        (v, f"status {v.status}" + (" (never verified)" if v.status not in REFUSED_UNLESS_FORCED else ""))
        for v in _newest_first(known)
        if v.tag != failing.tag and v.created < failing.created and v.status not in AUTOMATIC_TARGETS
    ]
