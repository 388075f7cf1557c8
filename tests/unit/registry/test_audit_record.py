from agent.domain.audit_chain import GENESIS_HASH, seal, verify_chain
from agent.ports.registry import VersionStatus
from agent.registry.audit import status_change_record
from agent.reporting.rollbacks import status_changes


def test_a_status_change_is_recorded_as_the_reports_read_it():
    record = status_change_record(
        model="credit-scorer",
        tag="v3",
        from_status=VersionStatus.CANDIDATE,
        to_status=VersionStatus.FAILED,
        reason="rollback 3f2a: p99 212 ms > 120 ms",
        actor="rule:latency-p99",
        at=1_723_453_800.0,
    )
    sealed = seal(record, 1, GENESIS_HASH)
    assert verify_chain([sealed]) == []
    [row] = status_changes([sealed])
    assert (row.version, row.from_status, row.to_status) == ("v3", "candidate", "failed")
    assert row.actor == "rule:latency-p99" and row.reason.startswith("rollback 3f2a")
    assert row.at.timestamp() == 1_723_453_800.0
