from datetime import UTC, datetime

import pytest

from agent.ports.registry import UnknownVersionError, VersionStatus
from agent.registry import (
    Constraints,
    TargetRefusedError,
    VersionSpec,
    ineligible,
    plan_rollback,
    rollback_targets,
)
from agent.registry.model import Requirements

S = VersionStatus


def spec(tag: str, status: VersionStatus, day: int, memory_mb: int | None = None) -> VersionSpec:
    requirements = Requirements(memory_mb=memory_mb, cpu=1, runtime="sklearn-1.4/python-3.11") if memory_mb else None
    return VersionSpec(tag=tag, status=status, created=datetime(2024, 1, day, tzinfo=UTC), requirements=requirements)


def tags(versions: list[VersionSpec]) -> list[str]:
    return [v.tag for v in versions]


def test_candidate_failing_goes_to_the_newest_older_verified_then_the_next():
    versions = [spec("v1", S.VERIFIED, 1), spec("v2", S.VERIFIED, 2), spec("v3", S.CANDIDATE, 3)]
    assert tags(rollback_targets(versions, "v3")) == ["v2", "v1"]


def test_order_is_by_creation_time_not_by_position_in_the_file():
    versions = [spec("v3", S.CANDIDATE, 9), spec("v2", S.VERIFIED, 5), spec("old", S.STABLE, 1)]
    assert tags(rollback_targets(versions, "v3")) == ["v2", "old"]


@pytest.mark.parametrize("status", list(VersionStatus))
def test_only_verified_and_stable_versions_are_automatic_targets(status: VersionStatus):
    versions = [spec("old", status, 1), spec("new", S.CANARY, 2)]
    expected = ["old"] if status in (S.VERIFIED, S.STABLE) else []
    assert tags(rollback_targets(versions, "new")) == expected


def test_versions_newer_than_the_failing_one_are_never_targets():
    versions = [spec("v1", S.VERIFIED, 1), spec("v2", S.CANARY, 2), spec("v3", S.VERIFIED, 3)]
    assert tags(rollback_targets(versions, "v2")) == ["v1"]


def test_same_creation_time_is_not_older():
    versions = [spec("v1", S.VERIFIED, 1), spec("twin", S.VERIFIED, 2), spec("v2", S.CANDIDATE, 2)]
    assert tags(rollback_targets(versions, "v2")) == ["v1"]


def test_no_eligible_version_gives_an_empty_list_and_ineligible_says_why():
    versions = [
        spec("v0", S.RETIRED, 1),
        spec("v1", S.FAILED, 2),
        spec("v2", S.QUARANTINED, 3),
        spec("v3", S.CANARY, 4),
    ]
    assert rollback_targets(versions, "v3") == []
    assert [(v.tag, why) for v, why in ineligible(versions, "v3")] == [
        ("v2", "status quarantined"),
        ("v1", "status failed"),
        ("v0", "status retired"),
    ]


def test_unknown_failing_version_is_an_error():
    with pytest.raises(UnknownVersionError, match="unknown version 'v9'"):
        rollback_targets([spec("v1", S.VERIFIED, 1)], "v9")


def test_operator_choice_is_that_version_only_whatever_its_age():
    versions = [spec("v1", S.VERIFIED, 1), spec("v2", S.VERIFIED, 2), spec("v3", S.CANDIDATE, 3)]
    assert tags(rollback_targets(versions, "v2", operator_choice="v1")) == ["v1"]
    assert tags(rollback_targets(versions, "v2", operator_choice="v3")) == ["v3"]


@pytest.mark.parametrize("status", [S.FAILED, S.QUARANTINED, S.RETIRED])
def test_operator_choice_of_a_failed_quarantined_or_retired_version_needs_force(status: VersionStatus):
    versions = [spec("v1", status, 1), spec("v2", S.CANDIDATE, 2)]
    with pytest.raises(TargetRefusedError, match=f"v1 is {status}.*unless the operator forces it"):
        rollback_targets(versions, "v2", operator_choice="v1")
    assert tags(rollback_targets(versions, "v2", operator_choice="v1", force=True)) == ["v1"]


def test_operator_choice_cannot_be_the_failing_version_or_unknown():
    versions = [spec("v1", S.VERIFIED, 1), spec("v2", S.CANDIDATE, 2)]
    with pytest.raises(TargetRefusedError, match="being rolled back from"):
        rollback_targets(versions, "v2", operator_choice="v2")
    with pytest.raises(UnknownVersionError):
        rollback_targets(versions, "v2", operator_choice="v7")


def test_plan_keeps_an_incompatible_target_with_its_reasons_so_the_walk_goes_on_to_the_next():
    versions = [spec("v1", S.VERIFIED, 1, 1024), spec("v2", S.VERIFIED, 2, 4096), spec("v3", S.CANDIDATE, 3, 2048)]
    plan = plan_rollback(versions, "v3", Constraints(memory_mb=2048))
    assert [(p.version.tag, p.reasons) for p in plan] == [
        ("v2", ("needs 4096 MB of memory, the pod has 2048 MB",)),
        ("v1", ()),
    ]
    first_compatible = next(p.version.tag for p in plan if not p.incompatibilities)
    assert first_compatible == "v1"
