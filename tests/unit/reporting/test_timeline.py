from datetime import UTC, datetime

import pytest

from agent.reporting import changes, history_at

from .trail import T0, Trail, at, policy


def test_before_the_first_known_policy_the_answer_is_unknown(trail: Trail):
    state = history_at(trail.records, at(-1))
    assert not state.known and state.weights == () and state.serving == ()
    assert "before the first recorded policy" in state.source


def test_without_the_policy_history_the_first_change_tells_what_was_served_before_it(trail: Trail):
    state = history_at(trail.records, at(5))
    assert state.known and dict(state.weights) == {"v1": 0, "v2": 100, "v3": 0}
    assert state.since == T0 and state.seq is None
    assert "before record 1" in state.source


def test_the_initial_policy_from_the_policy_history_starts_the_replay(trail: Trail):
    initial = policy({"v1": 0, "v2": 100, "v3": 0}, 1, when=at(-60), reason="initial weights", actor="config")
    assert history_at(trail.records, at(-30), initial_policy=initial).revision == 1
    assert not history_at(trail.records, at(-61), initial_policy=initial).known


def test_a_change_counts_from_the_instant_of_its_record_and_lasts_until_the_next(trail: Trail, versions):
    just_before = history_at(trail.records, at(9.99), registry_versions=versions)
    assert dict(just_before.weights)["v2"] == 100
    exactly = history_at(trail.records, at(10), registry_versions=versions)
    assert dict(exactly.weights) == {"v1": 0, "v2": 90, "v3": 10}
    assert exactly.seq == 1 and exactly.since == at(10) and exactly.actor == "operator:ana"
    assert [(s.tag, s.weight, s.share) for s in exactly.serving] == [("v2", 90, 0.9), ("v3", 10, 0.1)]
    v3 = exactly.serving[1].version
    assert v3 is not None and v3.provenance is not None
    assert v3.provenance.artifact_digest.startswith("sha256:cd3a1cd8")


def test_a_rejected_change_does_not_move_what_is_served(trail: Trail):
    state = history_at(trail.records, at(25))
    assert dict(state.weights) == {"v1": 0, "v2": 90, "v3": 10} and state.seq == 1 and not state.uncertain


def test_between_changes_after_a_rollback_and_much_later(trail: Trail):
    assert dict(history_at(trail.records, at(35)).weights) == {"v1": 100, "v2": 0, "v3": 0}
    assert history_at(trail.records, at(35)).reason.startswith("rollback rb-0001:")
    assert dict(history_at(trail.records, at(41)).weights)["v2"] == 100
    assert dict(history_at(trail.records, datetime(2030, 1, 1, tzinfo=UTC)).weights)["v1"] == 100


def test_a_timed_out_change_makes_the_split_uncertain_until_the_next_acked_one():
    t = Trail()
    t.traffic(at(1), {"v2": 50, "v3": 50}, outcome="timeout")
    state = history_at(t.records, at(2))
    assert dict(state.weights)["v2"] == 100
    assert "timed out waiting for ACKs" in state.uncertain and "v3=50" in state.uncertain
    t.traffic(at(3), {"v2": 100})
    assert not history_at(t.records, at(4)).uncertain


def test_a_version_missing_from_the_registry_has_no_provenance(trail: Trail):
    state = history_at(trail.records, at(10), registry_versions=[])
    assert all(s.version is None for s in state.serving)


def test_times_need_a_timezone(trail: Trail):
    with pytest.raises(ValueError, match="no timezone"):
        history_at(trail.records, datetime(2024, 8, 12, 9, 10))


def test_changes_list_every_traffic_change_with_its_rollback_trigger(trail: Trail):
    rows = changes(trail.records)
    assert [(c.seq, c.outcome) for c in rows] == [
        (1, "acked"),
        (2, "rejected"),
        (3, "acked"),
        (6, "acked"),
        (9, "acked"),
    ]
    first, rejected, rollback = rows[0], rows[1], rows[2]
    assert dict(first.from_weights)["v2"] == 100 and dict(first.to_weights)["v3"] == 10
    assert first.actor == "operator:ana" and first.reason == "canary v3 at 10%" and first.decision_to_ack_ms == 12.5
    assert first.trigger == "" and rejected.detail == "NACK"
    assert rollback.rollback_id == "rb-0001"
    assert rollback.trigger.startswith("rule latency-p99 (latency_p99) on v3: breach, value 212 vs threshold 120")
    assert [c.seq for c in changes(trail.records, since=at(35))] == [6, 9]
