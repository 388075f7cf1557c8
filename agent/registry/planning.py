"""Rollback targets with their static compatibility verdict: what the orchestrator's target planner returns. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from agent.registry.compatibility import Constraints, Incompatibility, check_compatibility
from agent.registry.model import VersionSpec
from agent.registry.selection import rollback_targets

V = TypeVar("V", bound=VersionSpec)


@dataclass(frozen=True, slots=True)
class PlannedTarget(Generic[V]):
    version: V
    incompatibilities: tuple[Incompatibility, ...]  # empty = compatible as far as is known

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(i.reason for i in self.incompatibilities)


def plan_rollback(
    versions: Iterable[V],
    failing_tag: str,
    constraints: Constraints,
    *,
    operator_choice: str | None = None,
    force: bool = False,
) -> list[PlannedTarget[V]]:
    """`rollback_targets` (same order, same errors), each checked against the constraints.

    Incompatible targets stay in the list, so the orchestrator records them as skipped with their reasons.
    """
    return [
        PlannedTarget(v, tuple(check_compatibility(v, constraints)))
        for v in rollback_targets(versions, failing_tag, operator_choice=operator_choice, force=force)
    ]
