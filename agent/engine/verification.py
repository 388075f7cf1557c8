"""Verification after a rollback: the target's live figures over a window, against every baseline number the
registry holds for it, with the margins of `rollback.verification` (`agent.config.VerificationSection`).

A figure may move the bad way by max(relative x baseline, absolute) (throughput also by `stds` x its baseline
std): error rate, p99 latency and missing rates must not rise above the limit, accuracy (the primary metric),
mean confidence and throughput must not fall below it. Each figure is measured over the whole window and, when
that is within the limit, over the window's latest half too: a target that degrades during the window is not
averaged away by the good seconds before.

Outcome: fewer than `min_requests` requests, or none of the required metrics measurable, is inconclusive
(None), never a failure; any measured metric beyond its limit fails; otherwise it passes. A baseline number
without a live measurement is listed as "not measured" with the reason.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from agent.config import Margin, ThroughputMargin, VerificationSection
from agent.domain.signals import Baseline, BaselineKey, Signal, SignalHistory, Window
from agent.ports.rollback import VerificationResult
from agent.triggers.kinds.latency import latency_view
from agent.triggers.kinds.traffic import ERRORS, LATENCY, LATENCY_UNIT_MS, REQUESTS

ERROR_RATE = "error_rate"
LATENCY_P99_MS = "latency_p99_ms"
PRIMARY_METRIC = "primary_metric"

# A live measurement (value) or why there is none (str).
Measured = float | str


@dataclass(frozen=True, slots=True)
class Check:
    """One baseline metric against its limit; `value` None means not measured (or not checked), see `reason`."""

    metric: str
    baseline: float | None  # None: the registry records none (the error rate's fixed limit applies)
    limit: float | None = None
    value: float | None = None
    scope: str = ""  # where the judged value comes from when not the whole window, e.g. "last 30s"
    reason: str = ""
    breached: bool = False
    required: bool = False
    lower_is_worse: bool = False
    unit: str = "ratio"  # "ratio" (shown as %), "ms", "rps", "mean", "" (as is)

    def describe(self) -> str:
        base = "no baseline" if self.baseline is None else f"baseline {_fmt(self.baseline, self.unit)}"
        if self.value is None or self.limit is None:
            return f"{self.metric} {self.reason} ({base})"
        sign = ("<" if self.breached else ">=") if self.lower_is_worse else (">" if self.breached else "<=")
        scope = f" in the {self.scope}" if self.scope else ""
        return f"{self.metric} {_fmt(self.value, self.unit)}{scope} {sign} limit {_fmt(self.limit, self.unit)} ({base})"


def _fmt(value: float, unit: str) -> str:
    if unit == "ratio":
        return f"{value:.2%}"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "rps":
        return f"{value:.1f} rps"
    if unit == "mean":
        return f"{value:.3f}"
    return f"{value:g}"


def _limit(baseline: float, margin: Margin, lower_is_worse: bool, std: float = 0.0) -> float:
    stds = margin.stds if isinstance(margin, ThroughputMargin) else 0.0
    tolerance = max(margin.relative * abs(baseline), margin.absolute, stds * std)
    return baseline - tolerance if lower_is_worse else baseline + tolerance


# ---- live measurements over one window --------------------------------------------------------------------


def _traffic_source(window: Window) -> str | None:
    """ "envoy" when Envoy's per-cluster counters are there, else "model" (the model server's), else None."""
    return next((source for source, counter in REQUESTS.items() if window.delta(counter) is not None), None)


def _error_rate(window: Window, settings: VerificationSection, limit: float) -> Measured:
    source = _traffic_source(window)
    if source is None:
        return "not measured: no request counter reported"
    requests = window.delta(REQUESTS[source]) or 0.0
    errors = window.delta(ERRORS[source])
    if errors is None:
        return f"not measured: {ERRORS[source]} not reported"
    if requests < settings.min_requests:
        return f"not measured: {requests:.0f} requests < {settings.min_requests}"
    return errors / requests


def _latency_p99_ms(window: Window, settings: VerificationSection, limit: float) -> Measured:
    for source, signal in LATENCY.items():
        histogram = window.histogram(signal)
        if histogram is None:
            continue
        view = latency_view(histogram, 0.99, LATENCY_UNIT_MS[source])
        if view.requests < settings.min_requests:
            return f"not measured: {view.requests:.0f} timed requests < {settings.min_requests}"
        if view.in_overflow:
            # Above the highest finite bucket edge: the true p99 is only known to exceed it.
            if view.top_ms < limit:
                return f"not measured: p99 > {view.top_ms:g} ms, the highest bucket edge (below the limit)"
            return view.top_ms
        return view.quantile_ms
    return "not measured: no latency histogram reported"


def _primary_metric(window: Window, settings: VerificationSection, limit: float) -> Measured:
    correct = window.delta(Signal.MODEL_OUTCOMES_CORRECT)
    incorrect = window.delta(Signal.MODEL_OUTCOMES_INCORRECT)
    if correct is None and incorrect is None:
        return "not measured: no labelled outcomes reported"
    labels = (correct or 0.0) + (incorrect or 0.0)
    if labels < settings.min_labels:
        return f"not measured: {labels:.0f} labels < {settings.min_labels}"
    return (correct or 0.0) / labels


def _confidence_mean(window: Window, settings: VerificationSection, limit: float) -> Measured:
    histogram = window.histogram(Signal.MODEL_CONFIDENCE)
    if histogram is None:
        return f"not measured: {Signal.MODEL_CONFIDENCE} not reported"
    if histogram.count < settings.min_requests:
        return f"not measured: {histogram.count:.0f} predictions < {settings.min_requests}"
    return histogram.sum / histogram.count


def _throughput_rps(window: Window, settings: VerificationSection, limit: float) -> Measured:
    source = _traffic_source(window)
    rate = window.rate(REQUESTS[source]) if source is not None else None
    return "not measured: no request counter reported" if rate is None else rate


def _missing_rate(feature: str) -> Callable[[Window, VerificationSection, float], Measured]:
    def measure(window: Window, settings: VerificationSection, limit: float) -> Measured:
        seen = window.delta(Signal.feature_seen(feature))
        if seen is None:
            return f"not measured: feature '{feature}' not reported"
        if seen < settings.min_requests:
            return f"not measured: {seen:.0f} rows < {settings.min_requests}"
        return min(1.0, (window.delta(Signal.feature_missing(feature)) or 0.0) / seen)

    return measure


# ---- the judgement ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Spec:
    margin: Margin | None
    lower_is_worse: bool
    unit: str
    measure: Callable[[Window, VerificationSection, float], Measured]


def _spec(key: str, settings: VerificationSection) -> _Spec | None:
    if key == ERROR_RATE:
        return _Spec(settings.error_rate, False, "ratio", _error_rate)
    if key == LATENCY_P99_MS:
        return _Spec(settings.latency_p99_ms, False, "ms", _latency_p99_ms)
    if key == PRIMARY_METRIC:
        return _Spec(settings.primary_metric, True, "ratio", _primary_metric)
    if key == BaselineKey.CONFIDENCE_MEAN:
        return _Spec(settings.confidence_mean, True, "mean", _confidence_mean)
    if key == BaselineKey.THROUGHPUT_RPS_MEAN:
        return _Spec(settings.throughput_rps, True, "rps", _throughput_rps)
    if key.startswith(BaselineKey.MISSING_RATE_PREFIX):
        feature = key[len(BaselineKey.MISSING_RATE_PREFIX) :]
        return _Spec(settings.missing_rate, False, "ratio", _missing_rate(feature))
    return None


def _check(
    metric: str,
    baseline: float | None,
    limit: float,
    spec: _Spec,
    windows: tuple[Window, Window | None],
    recent_label: str,
    settings: VerificationSection,
) -> Check:
    required = spec.margin is not None and spec.margin.required
    check = Check(metric, baseline, limit, required=required, lower_is_worse=spec.lower_is_worse, unit=spec.unit)
    whole, recent = windows
    value = spec.measure(whole, settings, limit)
    if isinstance(value, str):
        return replace(check, reason=value)
    if not _beyond(value, limit, spec.lower_is_worse) and recent is not None:
        later = spec.measure(recent, settings, limit)
        if not isinstance(later, str) and _beyond(later, limit, spec.lower_is_worse):
            return replace(check, value=later, scope=recent_label, breached=True)
    return replace(check, value=value, breached=_beyond(value, limit, spec.lower_is_worse))


def _beyond(value: float, limit: float, lower_is_worse: bool) -> bool:
    return value < limit if lower_is_worse else value > limit


def judge(
    history: SignalHistory | None,
    baseline: Baseline | None,
    settings: VerificationSection,
    window_s: float,
    now: float | None = None,
) -> VerificationResult:
    """The verdict on one version's window ending at `now` (default: its latest sample). Pure."""
    during = f"{window_s:.0f}s"
    whole = history.window(window_s, now) if history is not None else None
    if whole is None:
        return VerificationResult(None, f"insufficient evidence: no measurements in the {during} window")
    source = _traffic_source(whole)
    requests = whole.delta(REQUESTS[source]) if source is not None else None
    if requests is None or requests < settings.min_requests:
        return VerificationResult(
            None, f"insufficient evidence: {int(requests or 0)} requests < {settings.min_requests} in {during}"
        )
    recent_s = window_s / 2
    recent = history.window(recent_s, now) if history is not None else None
    windows = (whole, recent)
    recent_label = f"last {recent_s:.0f}s"
    numbers: Mapping[str, float] = baseline.numbers if baseline is not None else {}

    checks: list[Check] = []
    if ERROR_RATE not in numbers and settings.error_rate is not None:
        fixed = settings.error_rate_without_baseline
        if fixed is not None:
            error_rate = _Spec(settings.error_rate, False, "ratio", _error_rate)
            checks.append(_check(ERROR_RATE, None, fixed, error_rate, windows, recent_label, settings))
    for key in sorted(numbers):
        if key == BaselineKey.THROUGHPUT_RPS_STD:
            continue  # part of the throughput check
        value = numbers[key]
        spec = _spec(key, settings)
        if spec is None:
            checks.append(Check(key, value, reason="not measured: the agent has no live measurement for it", unit=""))
        elif spec.margin is None:
            checks.append(Check(key, value, reason="not checked: disabled in rollback.verification", unit=spec.unit))
        else:
            std = numbers.get(BaselineKey.THROUGHPUT_RPS_STD, 0.0) if key == BaselineKey.THROUGHPUT_RPS_MEAN else 0.0
            limit = _limit(value, spec.margin, spec.lower_is_worse, std)
            checks.append(_check(key, value, limit, spec, windows, recent_label, settings))
    return _verdict(checks, requests, window_s)


def _verdict(checks: list[Check], requests: float, window_s: float) -> VerificationResult:
    measurements: dict[str, float] = {"requests": requests, "window_s": window_s}
    for check in checks:
        if check.value is not None and check.limit is not None:
            measurements[check.metric] = check.value
            measurements[check.metric + ".limit"] = check.limit
            if check.baseline is not None:
                measurements[check.metric + ".baseline"] = check.baseline
    breached = [c for c in checks if c.breached]
    judged = [c for c in checks if c.value is not None and not c.breached]
    unmeasured = [c for c in checks if c.value is None]
    parts = [c.describe() for c in breached + judged + unmeasured]
    listing = "; ".join(parts) if parts else "no baseline metric to check"
    head = f"{int(requests)} requests over {window_s:.0f}s"
    if breached:
        return VerificationResult(False, f"{len(breached)} beyond the limit, {head}: {listing}", measurements)
    if not any(c.required and c.value is not None for c in checks):
        required = sorted({c.metric for c in checks if c.required})
        why = f"none of the required metrics ({', '.join(required)}) measured" if required else "no required metric"
        return VerificationResult(None, f"insufficient evidence: {why}, {head}: {listing}", measurements)
    return VerificationResult(True, f"{head}: {listing}", measurements)


class BaselineVerifier:
    def __init__(
        self,
        histories: Mapping[str, SignalHistory],
        baselines: Callable[[], Mapping[str, Baseline]],
        settings: VerificationSection | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._histories = histories
        self._baselines = baselines
        self._settings = settings or VerificationSection()
        self._clock = clock

    async def verify(self, version: str, window_s: float) -> VerificationResult:
        if window_s <= 0:
            return VerificationResult(None, "verification disabled (window 0)")
        start = self._clock()
        await asyncio.sleep(window_s)
        return self.judge(version, self._clock() - start)

    def judge(self, version: str, window_s: float) -> VerificationResult:
        history = self._histories.get(version)
        return judge(history, self._baselines().get(version), self._settings, window_s)
