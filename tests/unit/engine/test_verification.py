"""Post-rollback verification: every baseline number the registry holds, judged with the configured margins."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import ConfigError, Margin, ThroughputMargin, VerificationSection, parse_config
from agent.domain.signals import Baseline, Signal, SignalHistory
from agent.engine.verification import BaselineVerifier, judge
from tests.unit.triggers.triggers_testkit import CONFIDENCE_BOUNDS, LATENCY_MS_BOUNDS, Stream, traffic

WINDOW_S = 60.0
DEFAULTS = VerificationSection()

# What the registry records for the target (as RegistryPlanner hands it over: BaselineMetrics.to_domain()).
BASELINE = Baseline(
    {
        "error_rate": 0.001,  # limit: 0.001 + max(1.0 x 0.001, 0.01) = 1.1 %
        "latency_p99_ms": 40.0,  # limit: 1.5 x 40 = 60 ms
        "primary_metric": 0.9,  # floor: 0.9 - 0.05 = 85 %
        "confidence_mean": 0.8,  # floor: 0.8 x (1 - 0.15) = 0.68
        "throughput_rps_mean": 50.0,  # floor: 50 - max(0.5 x 50, 3 x 5) = 25 rps
        "throughput_rps_std": 5.0,
        "missing_rate.age": 0.01,  # limit: 0.01 + 0.02 = 3 %
    }
)
GOOD: dict[str, float] = {
    "rps": 50,
    "error_ratio": 0.0,
    "latency_ms": 20.0,
    "accuracy": 0.9,
    "confidence": 0.8,
    "missing": 0.01,
}


def new_stream(*, model_metrics: bool = True, latency: bool = True) -> Stream:
    stream = Stream()
    if latency:
        stream.histogram(Signal.ENVOY_RQ_TIME_MS, LATENCY_MS_BOUNDS)
    if model_metrics:
        stream.histogram(Signal.MODEL_CONFIDENCE, CONFIDENCE_BOUNDS)
    return stream


def serve(stream: Stream, seconds: int, *, model_metrics: bool = True, **figures: float) -> Stream:
    """`seconds` one-second samples of a version serving with `figures` (GOOD unless overridden)."""
    f = {**GOOD, **figures}
    rps = int(f["rps"])
    for _ in range(seconds):
        inc = traffic(rps, f["error_ratio"])
        observe: dict[str, list[float]] = {}
        if Signal.ENVOY_RQ_TIME_MS in stream.sample().histograms:
            observe[Signal.ENVOY_RQ_TIME_MS] = [f["latency_ms"]] * rps
        if model_metrics:
            inc |= {
                Signal.MODEL_OUTCOMES_CORRECT: rps * f["accuracy"],
                Signal.MODEL_OUTCOMES_INCORRECT: rps * (1 - f["accuracy"]),
                Signal.feature_seen("age"): rps,
                Signal.feature_missing("age"): rps * f["missing"],
            }
            observe[Signal.MODEL_CONFIDENCE] = [f["confidence"]] * rps
        stream.step(1.0, inc=inc, observe=observe)
    return stream


def after_switch(seconds: int = int(WINDOW_S), **figures: float) -> Stream:
    """A target that served well before the switch, then `figures` for the verify window."""
    stream = serve(new_stream(), 5)
    return serve(stream, seconds, **figures)


def verdict(stream: Stream | None, baseline: Baseline | None = BASELINE, config: VerificationSection = DEFAULTS):
    return judge(stream.history if stream is not None else None, baseline, config, WINDOW_S)


# ---- passes -----------------------------------------------------------------------------------------------


def test_a_target_within_every_margin_passes_and_the_detail_names_each_metric_value_limit_and_baseline():
    result = verdict(after_switch())
    assert result.passed is True, result.detail
    detail = result.detail
    assert detail.startswith("3000 requests over 60s: "), detail
    assert "error_rate 0.00% <= limit 1.10% (baseline 0.10%)" in detail
    assert "latency_p99_ms 24.9 ms <= limit 60.0 ms (baseline 40.0 ms)" in detail
    assert "primary_metric 90.00% >= limit 85.00% (baseline 90.00%)" in detail
    assert "confidence_mean 0.800 >= limit 0.680 (baseline 0.800)" in detail
    assert "throughput_rps_mean 50.0 rps >= limit 25.0 rps (baseline 50.0 rps)" in detail
    assert "missing_rate.age 1.00% <= limit 3.00% (baseline 1.00%)" in detail
    m = result.measurements
    assert m["requests"] == 3000
    assert m["confidence_mean"] == pytest.approx(0.8)
    assert m["confidence_mean.limit"] == pytest.approx(0.68)
    assert m["confidence_mean.baseline"] == 0.8
    assert m["throughput_rps_mean.limit"] == pytest.approx(25.0)


def test_every_metric_improving_on_its_baseline_passes():
    result = verdict(
        after_switch(rps=200, error_ratio=0.0, latency_ms=4.0, accuracy=0.99, confidence=0.97, missing=0.0)
    )
    assert result.passed is True, result.detail


# ---- fails ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("figures", "expected"),
    [
        ({"error_ratio": 0.05}, "error_rate 5.00% > limit 1.10% (baseline 0.10%)"),
        ({"latency_ms": 90.0}, "latency_p99_ms 99.5 ms > limit 60.0 ms (baseline 40.0 ms)"),
        ({"accuracy": 0.8}, "primary_metric 80.00% < limit 85.00% (baseline 90.00%)"),
        ({"confidence": 0.6}, "confidence_mean 0.600 < limit 0.680 (baseline 0.800)"),
        ({"rps": 20}, "throughput_rps_mean 20.0 rps < limit 25.0 rps (baseline 50.0 rps)"),
        ({"missing": 0.2}, "missing_rate.age 20.00% > limit 3.00% (baseline 1.00%)"),
    ],
)
def test_each_metric_beyond_its_margin_fails_naming_it(figures: dict[str, float], expected: str):
    result = verdict(after_switch(**figures))
    assert result.passed is False, result.detail
    assert result.detail.startswith("1 beyond the limit, "), result.detail
    assert "limit, " in result.detail and expected in result.detail.split(": ", 1)[1].split("; ")[0], result.detail
    metric = expected.split()[0]
    assert metric in result.measurements and f"{metric}.limit" in result.measurements


def test_a_target_that_degrades_during_the_window_fails_on_the_latest_half():
    # Whole window: mean confidence 0.70 and accuracy 86 % are within their floors (0.68, 85 %); the last 30 s
    # (0.60, 82 %) are not.
    stream = serve(after_switch(30), 30, confidence=0.6, accuracy=0.82)
    result = verdict(stream)
    assert result.passed is False, result.detail
    assert "confidence_mean 0.600 in the last 30s < limit 0.680" in result.detail
    assert "primary_metric 82.00% in the last 30s < limit 85.00%" in result.detail
    assert result.measurements["confidence_mean"] == pytest.approx(0.6)


def test_errors_after_the_switch_fail_even_when_the_first_half_was_clean():
    stream = serve(after_switch(30), 30, error_ratio=0.02)  # 1 % over the window: within the 1.1 % limit
    result = verdict(stream)
    assert result.passed is False
    assert "error_rate 2.00% in the last 30s > limit 1.10%" in result.detail, result.detail


# ---- missing measurements and too little evidence ------------------------------------------------------------


def test_baseline_metrics_without_a_live_measurement_are_listed_as_not_measured():
    baseline = Baseline({**BASELINE.numbers, "auc_roc": 0.91})
    stream = serve(new_stream(model_metrics=False), 5 + int(WINDOW_S), model_metrics=False)
    result = verdict(stream, baseline)
    assert result.passed is True, result.detail  # error rate and p99 (required) measured and fine
    detail = result.detail
    assert "primary_metric not measured: no labelled outcomes reported (baseline 90.00%)" in detail
    assert "confidence_mean not measured: model.confidence not reported (baseline 0.800)" in detail
    assert "missing_rate.age not measured: feature 'age' not reported (baseline 1.00%)" in detail
    assert "auc_roc not measured: the agent has no live measurement for it (baseline 0.91)" in detail
    assert "primary_metric" not in result.measurements


def test_too_few_labels_leave_the_primary_metric_unmeasured_not_failed():
    stream = after_switch(accuracy=0.0)  # every label wrong ...
    config = DEFAULTS.model_copy(update={"min_labels": 10_000})  # ... but far fewer labels than required
    result = verdict(stream, config=config)
    assert result.passed is True, result.detail
    assert "primary_metric not measured: 3000 labels < 10000" in result.detail


def test_no_required_metric_measured_is_inconclusive_with_the_reason():
    # Envoy counters but no latency histogram; the error rate made optional: nothing required is measured.
    config = DEFAULTS.model_copy(update={"error_rate": Margin(relative=1.0, absolute=0.01)})
    stream = serve(new_stream(model_metrics=False, latency=False), 5 + int(WINDOW_S), model_metrics=False)
    result = verdict(stream, Baseline({"error_rate": 0.001, "latency_p99_ms": 40.0}), config)
    assert result.passed is None, result.detail
    assert result.detail.startswith("insufficient evidence: none of the required metrics (latency_p99_ms) measured")
    assert "latency_p99_ms not measured: no latency histogram reported (baseline 40.0 ms)" in result.detail
    assert "error_rate 0.00% <= limit 1.10%" in result.detail  # measured, shown, but not evidence enough


def test_an_optional_metric_beyond_its_margin_still_fails():
    config = DEFAULTS.model_copy(update={"error_rate": None})
    stream = serve(new_stream(latency=False), 5 + int(WINDOW_S), confidence=0.5)
    result = verdict(stream, Baseline({"latency_p99_ms": 40.0, "confidence_mean": 0.8}), config)
    assert result.passed is False
    assert "confidence_mean 0.500 < limit 0.680" in result.detail


@pytest.mark.parametrize(("rps", "seconds"), [(0, 60), (1, 10)])
def test_too_few_requests_is_inconclusive(rps: int, seconds: int):
    stream = serve(serve(new_stream(), 1), seconds, rps=rps, error_ratio=1.0)
    result = verdict(stream)
    assert result.passed is None
    assert result.detail == f"insufficient evidence: {rps * seconds} requests < 20 in 60s"


def test_no_measurements_at_all_is_inconclusive():
    assert verdict(None).passed is None
    empty = judge(SignalHistory(), BASELINE, DEFAULTS, WINDOW_S)
    assert (empty.passed, empty.detail) == (None, "insufficient evidence: no measurements in the 60s window")


# ---- the margins come from the configuration ----------------------------------------------------------------


def test_todays_limits_are_the_defaults():
    def error_limit(base: float | None) -> float:
        baseline = Baseline({} if base is None else {"error_rate": base})
        return verdict(after_switch(), baseline).measurements["error_rate.limit"]

    assert error_limit(0.02) == pytest.approx(0.04)  # 2 x baseline ...
    assert error_limit(0.001) == pytest.approx(0.011)  # ... or baseline + 1 point, whichever is larger
    assert error_limit(None) == pytest.approx(0.05)  # 5 % without a baseline
    p99_limit = verdict(after_switch(), Baseline({"latency_p99_ms": 40.0})).measurements["latency_p99_ms.limit"]
    assert p99_limit == pytest.approx(60.0)  # 1.5 x baseline
    assert DEFAULTS.min_requests == 20


def test_configured_margins_are_honoured():
    stream = after_switch(confidence=0.75, latency_ms=20.0)
    assert verdict(stream).passed is True  # 0.75 >= 0.68 with the default 15 %
    tight = DEFAULTS.model_copy(update={"confidence_mean": Margin(relative=0.05)})
    result = verdict(stream, config=tight)
    assert result.passed is False
    assert "confidence_mean 0.750 < limit 0.760 (baseline 0.800)" in result.detail
    strict_p99 = DEFAULTS.model_copy(update={"latency_p99_ms": Margin(absolute=1.0, required=True)})
    assert "latency_p99_ms 24.9 ms <= limit 41.0 ms" in verdict(stream, config=strict_p99).detail
    lenient_throughput = DEFAULTS.model_copy(update={"throughput_rps": ThroughputMargin(stds=9.0)})
    assert verdict(after_switch(rps=20), config=lenient_throughput).passed is True  # 50 - 9 x 5 = 5 rps


def test_a_disabled_metric_is_listed_and_never_fails():
    config = DEFAULTS.model_copy(update={"confidence_mean": None})
    result = verdict(after_switch(confidence=0.1), config=config)
    assert result.passed is True, result.detail
    assert "confidence_mean not checked: disabled in rollback.verification (baseline 0.800)" in result.detail


def test_min_requests_from_config():
    config = DEFAULTS.model_copy(update={"min_requests": 5000})
    result = verdict(after_switch(), config=config)
    assert (result.passed, result.detail) == (None, "insufficient evidence: 3000 requests < 5000 in 60s")


AGENT_YAML = """
model: {name: credit}
versions: [{tag: v1, endpoint: "127.0.0.1:8001"}]
stable: v1
rollback:
  verify_window_s: 3
  verification: VERIFICATION
"""


def test_the_rollback_verification_section_of_agent_yaml():
    text = AGENT_YAML.replace(
        "VERIFICATION", "{min_requests: 50, confidence_mean: {relative: 0.05, required: true}, throughput_rps: null}"
    )
    section = parse_config(text, "agent.yaml", Path(".")).rollback.verification
    assert section.min_requests == 50
    assert section.confidence_mean == Margin(relative=0.05, required=True)
    assert section.throughput_rps is None
    assert section.error_rate == DEFAULTS.error_rate  # untouched metrics keep their defaults


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("{error_rate: {relative: -1}}", "rollback.verification.error_rate.relative: Input should be greater"),
        ("{latency_p99_ms: {stds: 2}}", "rollback.verification.latency_p99_ms.stds: Extra inputs are not permitted"),
        ("{min_requests: 0}", "rollback.verification.min_requests: Input should be greater than or equal to 1"),
        ("{accuracy: {absolute: 0.1}}", "rollback.verification.accuracy: Extra inputs are not permitted"),
        ("{confidence_mean: {relative: .nan}}", "rollback.verification.confidence_mean.relative"),
    ],
)
def test_a_bad_verification_section_is_refused_naming_the_field(value: str, expected: str):
    with pytest.raises(ConfigError) as error:
        parse_config(AGENT_YAML.replace("VERIFICATION", value), "agent.yaml", Path("."))
    assert expected in str(error.value)
    assert str(error.value).startswith("agent.yaml")


# ---- the verifier the orchestrator calls ----------------------------------------------------------------------


async def test_the_verifier_judges_the_target_with_its_baseline_and_settings():
    stream = after_switch(confidence=0.75)
    tight = DEFAULTS.model_copy(update={"confidence_mean": Margin(relative=0.05)})
    verifier = BaselineVerifier({"v1": stream.history}, lambda: {"v1": BASELINE}, tight)
    assert verifier.judge("v1", WINDOW_S).passed is False
    assert verifier.judge("v2", WINDOW_S).passed is None  # no history of v2
    assert (await verifier.verify("v1", 0)).passed is None  # window 0: disabled


# ---- robustness ---------------------------------------------------------------------------------------------------

finite = st.floats(min_value=0, max_value=1e6, allow_nan=False)


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")), deadline=None)
@given(
    numbers=st.dictionaries(
        st.sampled_from(
            [
                "error_rate",
                "latency_p99_ms",
                "primary_metric",
                "confidence_mean",
                "throughput_rps_mean",
                "throughput_rps_std",
                "missing_rate.age",
                "missing_rate.income",
                "something_else",
            ]
        ),
        finite,
    ),
    figures=st.fixed_dictionaries(
        {
            "rps": st.integers(0, 80),
            "error_ratio": st.floats(0, 1),
            "latency_ms": st.floats(0, 5000),
            "accuracy": st.floats(0, 1),
            "confidence": st.floats(0, 1),
            "missing": st.floats(0, 1),
        }
    ),
)
def test_any_baseline_and_traffic_give_a_consistent_verdict(numbers: dict[str, float], figures: dict[str, Any]):
    result = verdict(serve(new_stream(), 12, **figures), Baseline(numbers))
    assert result.passed in (True, False, None)
    m = result.measurements
    beyond = [
        k
        for k in m
        if f"{k}.limit" in m
        and (
            m[k] < m[f"{k}.limit"]
            if k in ("primary_metric", "confidence_mean", "throughput_rps_mean")
            else m[k] > m[f"{k}.limit"]
        )
    ]
    assert (result.passed is False) == bool(beyond), (result.detail, m)
    assert all(math.isfinite(v) for v in m.values())
    if "requests <" not in result.detail:  # judged: every baseline number is accounted for in the detail
        assert all(key in result.detail for key in numbers if key != "throughput_rps_std"), result.detail
