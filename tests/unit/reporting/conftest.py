from datetime import timedelta
from pathlib import Path

import pytest

from agent.ports.registry import VersionStatus
from agent.registry import Version, load_registry
from agent.registry.model import StatusChange

from .trail import Trail, alert_trigger, at, operator_trigger, rule_trigger

EXAMPLE = Path(__file__).parents[3] / "rules" / "registry.example.yaml"

HOSTILE = '<script>alert("x")</script> | **bold** `code` [link](http://evil)'


@pytest.fixture
def versions() -> list[Version]:
    """The example registry as the agent reports it after the incident: v3 failed at runtime."""
    specs = load_registry(EXAMPLE).versions
    failed = StatusChange(
        status=VersionStatus.FAILED, reason="rollback rb-0001: p99 212 ms > 120 ms", actor="rule:latency-p99", at=at(30)
    )
    return [Version.from_spec(s, failed if s.tag == "v3" else None) for s in specs]


@pytest.fixture
def trail() -> Trail:
    """Day 1: canary 10% on v3, a rejected split, a rule-triggered rollback to v1 (v2 skipped), v3 marked failed,
    back to v2. Day 2: a suppressed alert, an alert rollback with no target. Next week: an operator rollback."""
    t = Trail()
    t.traffic(at(10), {"v2": 90, "v3": 10}, reason="canary v3 at 10%")  # 1
    t.traffic(at(20), {"v2": 50, "v3": 50}, reason="canary v3 at 50%", outcome="rejected", detail="NACK")  # 2
    t.rollback(  # 3 traffic, 4 rollback
        at(30),
        rollback_id="rb-0001",
        trigger=rule_trigger(),
        frm="v3",
        to="v1",
        skipped=(("v2", "incompatible: needs 4096 MB of memory, the pod has 2048 MB"),),
        detail="p99 212 ms > 120 ms",
    )
    t.status(at(30), "v3", "candidate", "failed", "rollback rb-0001: p99 212 ms > 120 ms", "rule:latency-p99")  # 5
    t.traffic(at(40), {"v2": 100}, reason="back to the stable version")  # 6
    day2 = at(24 * 60)
    t.rollback(  # 7
        day2,
        rollback_id="rb-0002",
        trigger=alert_trigger(),
        frm="v2",
        to="",
        outcome="suppressed",
        detail="cooldown: the last rollback was 40s ago",
        actor="alert:CreditScorerErrorRate",
        phases=(),
    )
    t.rollback(  # 8
        day2 + timedelta(minutes=10),
        rollback_id="rb-0003",
        trigger=alert_trigger(),
        frm="v2",
        to="",
        outcome="no_eligible_target",
        detail="no eligible rollback target: v1: unhealthy",
        actor="alert:CreditScorerErrorRate",
        skipped=(("v1", "unhealthy: golden_inference: 3 of 20 predictions differ"),),
    )
    t.rollback(  # 9 traffic, 10 rollback
        at(8 * 24 * 60),
        rollback_id="rb-0004",
        trigger=operator_trigger("ana", HOSTILE),
        frm="v2",
        to="v1",
        actor="operator:ana",
        detail=HOSTILE,
    )
    return t
