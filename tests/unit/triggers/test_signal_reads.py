"""A rule whose signal cannot be measured now is inconclusive with the source's reason, never judged on stale
or absent figures ("0 errors")."""

from __future__ import annotations

from agent.domain.signals import Sample, Signal
from agent.engine.monitor import merge_samples
from agent.triggers.engine import EngineInput, RuleEngine, RuleState
from agent.triggers.ruleset import RuleSet
from agent.triggers.signal_reads import reads
from tests.unit.triggers.triggers_testkit import CONFIDENCE_BOUNDS, Stream, make_rule, traffic

FAILED = "metrics read failed: HTTP 404 from http://127.0.0.1:8080/metrics"
MISSING = "v2: model_infer_request_failure_total not found at http://127.0.0.1:8082/metrics"


def healthy_candidate() -> Stream:
    """A minute of requests without errors, seen both by Envoy and by the model server."""
    stream = Stream().histogram(Signal.MODEL_CONFIDENCE, CONFIDENCE_BOUNDS)
    stream.run(
        60,
        inc={**traffic(100), Signal.MODEL_REQUESTS: 100, Signal.MODEL_ERRORS: 0},
        observe={Signal.MODEL_CONFIDENCE: [0.9] * 10},
    )
    return stream


def statuses(stream: Stream, unavailable: dict[str, str], *rules) -> dict[str, tuple[RuleState, str]]:
    engine = RuleEngine(RuleSet(rules=tuple(rules), tier="critical"))
    result = engine.evaluate(
        EngineInput(
            now=stream.ts,
            histories={"v2": stream.history},
            stable=None,
            serving=("v2",),
            unavailable={"v2": unavailable} if unavailable else {},
        )
    )
    return {s.rule: (s.state, s.verdict.reason) for s in result.statuses}


def model_error_rate():
    return make_rule("error_rate", name="model-errors", source="model", window="30s", min_evidence=10)


def test_a_failed_read_makes_model_rules_inconclusive_with_its_reason_not_zero_errors() -> None:
    stream = healthy_candidate()
    assert statuses(stream, {}, model_error_rate())["model-errors"][0] is RuleState.OK  # the figures alone say ok
    state, reason = statuses(stream, {"model.": FAILED}, model_error_rate())["model-errors"]
    assert state is RuleState.INSUFFICIENT_EVIDENCE
    assert reason == f"insufficient evidence: {FAILED}"


def test_rules_on_envoy_figures_are_unaffected_by_the_model_source() -> None:
    rule = make_rule("error_rate", name="envoy-errors", window="30s", min_evidence=10)
    state, reason = statuses(healthy_candidate(), {"model.": FAILED}, rule)["envoy-errors"]
    assert state is RuleState.OK
    assert reason.startswith("error rate 0.0%")


def test_a_missing_name_blocks_only_the_signals_it_feeds() -> None:
    confidence = make_rule("confidence_drop", name="confidence", baseline=0.9, window="30s", min_evidence=10)
    result = statuses(healthy_candidate(), {Signal.MODEL_ERRORS: MISSING}, model_error_rate(), confidence)
    assert result["model-errors"] == (RuleState.INSUFFICIENT_EVIDENCE, f"insufficient evidence: {MISSING}")
    assert result["confidence"][0] is RuleState.OK


def test_what_each_kind_reads() -> None:
    assert reads(model_error_rate()) == (Signal.MODEL_REQUESTS, Signal.MODEL_ERRORS)
    assert reads(make_rule("latency_p99", sla_ms=100, source="model")) == (Signal.MODEL_LATENCY_S,)
    assert reads(make_rule("feature_drift")) == (Signal.FEATURE_PREFIX,)
    assert reads(make_rule("near_oom")) == (Signal.MODEL_MEMORY_RATIO,)
    assert reads(make_rule("business_metric", metric="approval_rate", below=0.3)) == ("model.business.approval_rate",)
    assert reads(make_rule("crash")) == ()


def test_the_monitor_merges_what_each_source_cannot_measure() -> None:
    merged = merge_samples(
        [
            {"v2": Sample(1.0, counters={Signal.ENVOY_RQ_TOTAL: 5.0})},
            {"v2": Sample(1.0, counters={Signal.HEALTH_RESTARTS: 0.0}, unavailable={"model.": FAILED})},
        ],
        1.0,
    )
    assert merged["v2"].unavailable == {"model.": FAILED}
    assert merged["v2"].counters[Signal.ENVOY_RQ_TOTAL] == 5.0


def test_a_signal_another_source_delivered_this_tick_is_measurable_despite_a_failed_prefix() -> None:
    """The model server's metrics read failed (its whole `model.` prefix is unavailable) while a PromQL query
    delivered the business metric in this tick: the business rule judges it; without that delivery it is
    inconclusive with the failure named."""
    from agent.domain.signals import HistoryLimits, Sample, SignalHistory
    from agent.triggers.context import VersionContext
    from agent.triggers.signal_reads import unmeasurable
    from tests.unit.triggers.triggers_testkit import make_rule

    rule = make_rule("business_metric", metric="conversion_rate", below=0.02, action="alert")
    history = SignalHistory(HistoryLimits(max_age_s=600))
    history.append(Sample(ts=100.0, gauges={"model.business.conversion_rate": 0.05}))
    unavailable = {"model.": "metrics read failed: HTTP 404"}
    assert unmeasurable(rule, VersionContext("v2", history, 100.0), unavailable) is None
    history.append(Sample(ts=101.0, gauges={}))  # not delivered in this tick
    verdict = unmeasurable(rule, VersionContext("v2", history, 101.0), unavailable)
    assert verdict is not None and "metrics read failed: HTTP 404" in verdict.reason
