"""The shipped rules (rules/default.yaml) on simulated time: no false rollback in 10 minutes of healthy, noisy
traffic at 50/50 on either tier, and the sequential rules catch 50 % and 10 % error faults and a x5 latency fault
(detection delays in simulated seconds are printed: pytest -s)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.triggers import RuleSet, load_rule_set
from tests.unit.triggers.traffic_sim import Fault, simulate

RULES = Path(__file__).resolve().parents[3] / "rules" / "default.yaml"
TIERS = ("critical", "experimental")
FAULT_AT_S = 120.0


@pytest.fixture(scope="module", params=TIERS)
def rule_set(request: pytest.FixtureRequest) -> RuleSet:
    return load_rule_set(RULES, tier=request.param)


@pytest.mark.parametrize(("seed", "step_s"), [(1, 1.0), (2, 1.0), (3, 1.0), (4, 0.1)])
def test_ten_minutes_of_healthy_noisy_traffic_make_no_decision(rule_set: RuleSet, seed: int, step_s: float) -> None:
    # step 1 s: Envoy stats sampling; step 0.1 s: samples as fine as a per-request stream gives them.
    outcome = simulate(rule_set, 600, seed=seed, step_s=step_s)
    assert outcome.decisions == []


@pytest.mark.parametrize(
    ("fault", "rule", "within_s"),
    [
        (Fault(FAULT_AT_S, error_rate=0.5), "error-rate-sequential", 1.0),
        (Fault(FAULT_AT_S, error_rate=0.1), "error-rate-sequential", 30.0),
        (Fault(FAULT_AT_S, latency_factor=5.0), "p99-latency-sequential", 2.0),
    ],
    ids=["errors-50pct", "errors-10pct", "latency-x5"],
)
@pytest.mark.parametrize("step_s", [1.0, 0.1], ids=["stats-1s", "stream-100ms"])
def test_faults_are_detected_by_the_sequential_rules(
    rule_set: RuleSet, fault: Fault, rule: str, within_s: float, step_s: float
) -> None:
    delays = []
    for seed in range(5):
        outcome = simulate(rule_set, FAULT_AT_S + 60, seed=seed, step_s=step_s, fault=fault)
        assert [d for d in outcome.decisions if d[0] <= FAULT_AT_S] == [], "no decision before the fault"
        first = outcome.first_after(FAULT_AT_S)
        assert first is not None, f"seed {seed}: not detected within 60 s"
        delay, by = first
        assert by == rule
        delays.append(delay)
    print(f"\n{rule_set.tier} {step_s:g}s samples {fault}: detection delays {[round(d, 2) for d in delays]} s")
    assert max(delays) <= within_s, delays
