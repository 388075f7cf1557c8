"""error_rate_sequential / latency_p99_sequential: the CUSUM-SPRT verdicts, evidence and tiers."""

from __future__ import annotations

import math
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.domain.signals import Signal
from agent.triggers import RuleFileError, VerdictStatus, load_rules
from agent.triggers.kinds.sequential import change_point_windows, log_likelihood_ratio
from tests.unit.triggers.triggers_testkit import LATENCY_MS_BOUNDS, Stream, judge, make_rule, traffic

FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")), deadline=None)


def healthy(seconds: int = 60, rps: float = 100, error_ratio: float = 0.01) -> Stream:
    stream = Stream()
    stream.run(seconds, inc=traffic(rps, error_ratio))
    return stream


def test_severe_fault_breaches_and_the_verdict_names_test_statistic_bound_and_counts() -> None:
    rule = make_rule("error_rate_sequential", "critical")
    stream = healthy()
    stream.step(0.5, inc=traffic(50, 0.5))
    verdict = judge(rule, stream)
    assert verdict.status is VerdictStatus.BREACH
    assert verdict.value is not None and verdict.threshold == pytest.approx(math.log(1e5))
    assert verdict.value == pytest.approx(log_likelihood_ratio(25, 50, 0.05, 0.10))
    assert (verdict.evidence, verdict.evidence_unit, verdict.window_s) == (50, "requests", 0.5)
    assert verdict.reason == (
        "binomial CUSUM-SPRT log-likelihood ratio 16.0 >= bound 11.5 = ln(1/alpha), alpha 1e-05; "
        "H0 error rate <= 5.00%, H1 10.00%; 25 of 50 requests failed as 5xx or model failures (50.0%) over the "
        "last 500ms"
    )


def test_healthy_traffic_is_ok_with_the_strongest_evidence_shown() -> None:
    verdict = judge(make_rule("error_rate_sequential", "critical"), healthy())
    assert verdict.status is VerdictStatus.OK
    assert verdict.value is not None and verdict.value < 0
    assert "< bound 11.5" in verdict.reason


def test_a_handful_of_failed_requests_is_not_a_breach() -> None:
    rule = make_rule("error_rate_sequential", "critical")
    stream = Stream()
    stream.step(1.0, inc=traffic(0))
    stream.step(1.0, inc=traffic(30, 1.0))  # 30 of 30 failed: overwhelming rate, but under 40 requests
    verdict = judge(rule, stream)
    assert verdict.status is VerdictStatus.INSUFFICIENT_EVIDENCE
    assert verdict.reason == "insufficient evidence: 30 requests < 40 minimum over 2m"
    stream.step(1.0, inc=traffic(10, 1.0))
    assert judge(rule, stream).breached


def test_no_data_is_insufficient_evidence_never_a_breach() -> None:
    rule = make_rule("error_rate_sequential", "critical")
    assert judge(rule, None).status is VerdictStatus.INSUFFICIENT_EVIDENCE
    stale = healthy(10)
    verdict = judge(rule, stale, now=stale.ts + 600)
    assert verdict.status is VerdictStatus.INSUFFICIENT_EVIDENCE and "no samples" in verdict.reason
    no_counter = Stream()
    no_counter.run(10, gauges={Signal.HEALTH_READY: 1})
    assert judge(rule, no_counter).status is VerdictStatus.INSUFFICIENT_EVIDENCE


def test_critical_needs_more_evidence_than_experimental() -> None:
    stream = Stream()
    stream.step(1.0, inc=traffic(0))
    stream.step(1.0, inc=traffic(24, 0.5))  # 12 of 24 failed
    assert judge(make_rule("error_rate_sequential", "experimental"), stream).breached
    assert not judge(make_rule("error_rate_sequential", "critical"), stream).breached
    critical, experimental = (make_rule("error_rate_sequential", t) for t in ("critical", "experimental"))
    assert critical.alpha < experimental.alpha  # type: ignore[attr-defined]
    assert critical.min_evidence.requests > experimental.min_evidence.requests  # type: ignore[attr-defined]


def test_a_rate_just_under_the_threshold_never_adds_up() -> None:
    rule = make_rule("error_rate_sequential", "experimental")
    stream = Stream()
    for _ in range(600):
        stream.step(1.0, inc=traffic(100, 0.045))
        assert not judge(rule, stream).breached


def test_clear_threshold_makes_clearing_harder_and_must_be_positive() -> None:
    rule = make_rule("error_rate_sequential", "critical", clear_threshold="1%")
    stream = healthy(60, error_ratio=0.03)
    assert judge(rule, stream).status is VerdictStatus.OK
    firing = judge(rule, stream, firing=True)
    assert firing.breached and "H0 error rate <= 1.00% (clear threshold), H1 2.00%" in firing.reason
    with pytest.raises(ValueError, match="clear_threshold: must be > 0"):
        make_rule("error_rate_sequential", "critical", clear_threshold=0)


def test_latency_fault_breaches_on_the_share_slower_than_the_sla() -> None:
    rule = make_rule("latency_p99_sequential", "critical", sla_ms=250)
    stream = Stream().histogram(Signal.ENVOY_RQ_TIME_MS, LATENCY_MS_BOUNDS)
    for _ in range(60):
        stream.step(1.0, inc=traffic(100), observe={Signal.ENVOY_RQ_TIME_MS: [60.0] * 99 + [120.0]})
    assert judge(rule, stream).status is VerdictStatus.OK
    stream.step(1.0, inc=traffic(100), observe={Signal.ENVOY_RQ_TIME_MS: [300.0] * 80 + [120.0] * 20})
    verdict = judge(rule, stream)
    assert verdict.breached
    assert "share of requests slower than 250 ms (p99 at the SLA) <= 1.00%, H1 3.00%" in verdict.reason
    assert "80 of 100 requests slower than 250 ms (80.0%) over the last 1s" in verdict.reason


def test_latency_sla_above_the_last_bucket_edge_is_inconclusive() -> None:
    rule = make_rule("latency_p99_sequential", "critical", sla_ms=2000)
    stream = Stream().histogram(Signal.ENVOY_RQ_TIME_MS, (100.0, 1000.0, math.inf))
    stream.step(1.0, inc=traffic(100), observe={Signal.ENVOY_RQ_TIME_MS: [5000.0] * 100})
    stream.step(1.0, inc=traffic(100), observe={Signal.ENVOY_RQ_TIME_MS: [5000.0] * 100})
    verdict = judge(rule, stream)
    assert verdict.status is VerdictStatus.INSUFFICIENT_EVIDENCE and "add one" in verdict.reason


def test_bad_sequential_fields_are_refused_with_their_line() -> None:
    text = "rules:\n  - name: s\n    kind: error_rate_sequential\n    alpha: 0.7\n    effect: 1\n"
    with pytest.raises(RuleFileError) as raised:
        load_rules(text, "r.yaml")
    assert [(e.line, e.message.split(":")[0]) for e in raised.value.errors] == [
        (4, "rules[0] 's'.alpha"),
        (5, "rules[0] 's'.effect"),
    ]


def test_change_points_halve_down_to_a_quarter_second() -> None:
    assert change_point_windows(2.0) == (2.0, 1.0, 0.5, 0.25)
    assert len(change_point_windows(120.0)) == 9


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, 400), st.floats(0, 1)), min_size=1, max_size=30),
    st.sampled_from(["critical", "experimental"]),
)
def test_no_breach_without_the_minimum_requests_in_the_deciding_window(
    steps: list[tuple[int, float]], tier: str
) -> None:
    rule = make_rule("error_rate_sequential", tier)
    stream = Stream()
    stream.step(1.0, inc=traffic(0))
    for requests, ratio in steps:
        stream.step(0.5, inc={Signal.ENVOY_RQ_TOTAL: requests, Signal.ENVOY_RQ_5XX: round(requests * ratio)})
        verdict = judge(rule, stream)
        if verdict.breached:
            assert verdict.evidence >= rule.min_evidence.requests  # type: ignore[attr-defined]
            assert verdict.value is not None and verdict.value >= math.log(1 / rule.alpha)  # type: ignore[attr-defined]
        else:
            assert verdict.status in (VerdictStatus.OK, VerdictStatus.INSUFFICIENT_EVIDENCE)


def faulty_pair(candidate_ratio: float, stable_ratio: float, rps: float = 100) -> tuple[Stream, Stream]:
    """60 s of healthy traffic on both, then 3 s at the given error ratios."""
    candidate, stable = healthy(rps=rps), healthy(rps=rps)
    for stream, ratio in ((candidate, candidate_ratio), (stable, stable_ratio)):
        stream.run(3, inc=traffic(rps, ratio))
    return candidate, stable


def test_versus_stable_a_fault_on_every_version_is_not_blamed_on_the_candidate() -> None:
    """A shared fault (both at 30 %) breaches the threshold-only test but not the one compared with stable; a
    candidate worse than stable still breaches, and the verdict names stable's rate."""
    plain = make_rule("error_rate_sequential", "critical")
    versus = make_rule("error_rate_sequential", "critical", versus_stable={"margin": 0.02})
    candidate, stable = faulty_pair(0.3, 0.3)
    assert judge(plain, candidate, stable=stable).breached
    shared = judge(versus, candidate, stable=stable)
    assert shared.status is VerdictStatus.OK
    assert "(stable v1 " in shared.reason and "+ 2.00% margin)" in shared.reason

    candidate, stable = faulty_pair(0.6, 0.05)
    worse = judge(versus, candidate, stable=stable)
    assert worse.breached
    assert "H0 error rate (stable v1 " in worse.reason


def test_versus_stable_never_loosens_the_threshold_and_needs_stable_evidence() -> None:
    versus = make_rule("error_rate_sequential", "critical", versus_stable={"min_requests": 200})
    # stable healthy (1 %): H0 stays at the 5 % threshold, a 50 % candidate breaches as without the comparison
    candidate, stable = faulty_pair(0.5, 0.01)
    verdict = judge(versus, candidate, stable=stable)
    assert verdict.breached and "below the threshold)" in verdict.reason
    # stable with too few requests of its own: the threshold alone decides, and the verdict says so
    sparse = Stream()
    sparse.run(60, inc=traffic(1, 0.5))
    verdict = judge(versus, candidate, stable=sparse)
    assert verdict.breached
    assert "(stable v1: under 200 requests to compare with, threshold alone)" in verdict.reason
    # no stable history at all: the same
    assert judge(versus, candidate).breached


def test_versus_stable_for_latency_compares_the_share_slower_than_the_sla() -> None:
    rule = make_rule("latency_p99_sequential", "critical", sla_ms=250, versus_stable={"margin": 0.01})
    plain = make_rule("latency_p99_sequential", "critical", sla_ms=250)
    candidate, stable = (Stream().histogram(Signal.ENVOY_RQ_TIME_MS, LATENCY_MS_BOUNDS) for _ in range(2))
    for _ in range(60):
        for stream in (candidate, stable):
            stream.step(1.0, inc=traffic(100), observe={Signal.ENVOY_RQ_TIME_MS: [60.0] * 99 + [120.0]})
    # a slow shared dependency: 20 % of requests above the SLA on both versions for 3 s
    for _ in range(3):
        for stream in (candidate, stable):
            stream.step(1.0, inc=traffic(100), observe={Signal.ENVOY_RQ_TIME_MS: [60.0] * 80 + [300.0] * 20})
    assert judge(plain, candidate, stable=stable).breached
    assert not judge(rule, candidate, stable=stable).breached
    # the candidate alone slow: breach
    candidate.step(1.0, inc=traffic(100), observe={Signal.ENVOY_RQ_TIME_MS: [300.0] * 90 + [60.0] * 10})
    stable.step(1.0, inc=traffic(100), observe={Signal.ENVOY_RQ_TIME_MS: [60.0] * 100})
    assert judge(rule, candidate, stable=stable).breached


def test_versus_stable_fields_are_validated() -> None:
    with pytest.raises(Exception, match="factor"):
        make_rule("error_rate_sequential", versus_stable={"factor": 0.5})
    with pytest.raises(Exception, match="surprise"):
        make_rule("error_rate_sequential", versus_stable={"surprise": 1})
