"""Each version's model server metrics, read through its server profile (docs/servers.md) into the agent's signals.

A read that fails (refused, timed out, a non-2xx answer such as MLServer's 404 on its inference port, an
unparsable body) is never an empty reading: the version's sample says `metrics read failed: <why>` for every
model signal, so rules judging them are inconclusive with that reason instead of seeing zero errors. It is
counted per read and logged once per change. A name the profile expects that is absent from a successful scrape
makes the signals it feeds inconclusive with "<version>: <name> not found at <url>" and sets a gauge.

Also notices a restarted model server (process_start_time_seconds changed) and counts it as a restart, and, for
versions with a memory limit, reads resident memory against it (`model.memory_ratio`) and counts an exit near the
limit as an OOM (`health.oom`, see memory_watch). The model_metrics helper's names (outcomes, features, business
metrics) are read whatever the profile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Final

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample as PromSample

from agent.adapters.signals.memory_watch import MemoryWatch
from agent.adapters.signals.prometheus_text import histogram_from
from agent.domain.server_profiles import PROFILES, MetricNames
from agent.domain.signals import Histogram, Sample, Signal
from agent.telemetry import AgentMetrics

log = logging.getLogger(__name__)

MODEL_LOADED: Final = "model.loaded"  # gauge 1/0 from the profile's model-loaded metric
MODEL_SIGNALS: Final = "model."  # every signal this source feeds starts so (the key of a failed read)
_MAX_DETAIL: Final = 200


@dataclass(frozen=True, slots=True)
class MetricsTarget:
    """Where one version's metrics are and how to read them."""

    url: str
    names: MetricNames = field(default_factory=lambda: PROFILES["refserver"].names)
    profile: str = "refserver"
    model: str | None = None  # keep series whose names.model_label has this value (None: any)
    version_value: str | None = None  # the value of names.version_label for this version (default: its tag)


@dataclass(frozen=True, slots=True)
class ReadFailure:
    reason: str  # metric label: http_status, connect, timeout, unparsable, error
    detail: str  # for people: what happened, with the URL


class _Scrape:
    """One parsed exposition: samples by name and the families it declares (a declared family may have no series)."""

    def __init__(self, text: str) -> None:
        self.by_name: dict[str, list[PromSample]] = {}
        self.families: dict[str, str] = {}  # family name -> type
        for family in text_string_to_metric_families(text):
            self.families[family.name] = family.type
            for sample in family.samples:
                self.by_name.setdefault(sample.name, []).append(sample)

    def declares(self, name: str) -> bool:
        return name in self.by_name or name in self.families or name.removesuffix("_total") in self.families

    def series(self, name: str) -> list[PromSample]:
        # prometheus_client's parser names the samples of a counter declared without `_total` (Triton) `..._total`.
        found = self.by_name.get(name)
        if found is None and self.families.get(name) == "counter":
            found = self.by_name.get(name + "_total")
        return found or []


class ModelMetricsSource:
    name = "model"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        endpoints: Mapping[str, str | MetricsTarget],  # version -> metrics URL (the refserver profile) or target
        timeout_s: float = 0.5,
        *,
        memory_limits_mb: Mapping[str, float] | None = None,  # version -> its container's memory limit
        oom_ratio: float = 0.9,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self._session = session
        self._targets = {v: t if isinstance(t, MetricsTarget) else MetricsTarget(t) for v, t in endpoints.items()}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._start_times: dict[str, float] = {}
        self._restarts: dict[str, float] = dict.fromkeys(self._targets, 0.0)
        self._memory = MemoryWatch(memory_limits_mb or {}, oom_ratio)
        self._answering: dict[str, bool] = {}
        self._metrics = metrics
        self._failing: dict[str, str] = {}  # version -> detail of its failed read, while it fails
        self._missing: dict[str, frozenset[str]] = {}  # version -> expected names absent from its last scrape

    async def sample(self, now: float) -> Mapping[str, Sample]:
        versions = list(self._targets)
        fetched = await asyncio.gather(*(self._fetch(self._targets[v].url) for v in versions))
        samples = {}
        for version, (text, answering, failure) in zip(versions, fetched, strict=True):
            if self._answering.get(version) and not answering:
                self._memory.exited(version, "stopped answering")
            self._answering[version] = answering
            sample = None
            if text is not None:
                try:
                    sample = self.parse(version, text, now)
                except Exception as e:  # the parser raises several kinds on bad input; all mean "unparsable"
                    failure = ReadFailure(
                        "unparsable", _short(f"unparsable exposition from {self._targets[version].url}: {e}")
                    )
            if sample is None:
                assert failure is not None
                self._failed(version, failure)
                # The exit's counters (an OOM just counted) still reach the history.
                sample = Sample(
                    ts=now,
                    counters=self._exit_counters(version),
                    unavailable={MODEL_SIGNALS: f"metrics read failed: {failure.detail}"},
                )
            elif version in self._failing:
                del self._failing[version]
                log.info("model metrics of %s readable again at %s", version, self._targets[version].url)
            samples[version] = sample
        return samples

    async def _fetch(self, url: str) -> tuple[str | None, bool, ReadFailure | None]:
        """(the metrics text or None, whether the server answers at all, why the read failed)."""
        try:
            async with self._session.get(url, timeout=self._timeout) as response:
                if not 200 <= response.status < 300:
                    return None, True, ReadFailure("http_status", f"HTTP {response.status} from {url}")
                return await response.text(errors="replace"), True, None
        except aiohttp.ClientConnectorError as e:
            # Nothing listens: the process is gone (the health source counts the crash).
            return None, False, ReadFailure("connect", _short(f"cannot connect to {url}: {e.os_error or e}"))
        except TimeoutError:
            return None, True, ReadFailure("timeout", f"no answer from {url} within {self._timeout.total:g} s")
        except aiohttp.ClientError as e:  # slow or broken, not known to be gone
            return None, True, ReadFailure("error", _short(f"{type(e).__name__} reading {url}: {e}"))

    def _failed(self, version: str, failure: ReadFailure) -> None:
        if self._metrics is not None:
            self._metrics.model_metrics_read_errors.labels(self._metrics.model, version, failure.reason).inc()
        if self._failing.get(version) != failure.detail:
            log.warning(
                "model metrics of %s unreadable: %s (its model signals are inconclusive)", version, failure.detail
            )
        self._failing[version] = failure.detail

    def _exit_counters(self, version: str) -> dict[str, float]:
        counters = {Signal.HEALTH_RESTARTS: self._restarts.get(version, 0.0)}
        ooms = self._memory.oom_count(version)
        if ooms is not None:
            counters[Signal.HEALTH_OOM] = ooms
        return counters

    def parse(self, version: str, text: str, now: float) -> Sample:
        """The version's sample from one exposition; raises ValueError (or the parser's error) when unparsable."""
        scrape = _Scrape(text)
        if not scrape.families:
            raise ValueError("no Prometheus metrics in the response")
        target = self._targets.get(version) or MetricsTarget("")
        names = target.names
        by_name = scrape.by_name
        for s in by_name.get("process_start_time_seconds", ()):
            started = float(s.value)
            previous = self._start_times.get(version)
            if previous is not None and started != previous:
                self._restarts[version] = self._restarts.get(version, 0.0) + 1
                self._memory.exited(version, "restarted")
            self._start_times[version] = started

        def mine(labels: Mapping[str, str]) -> bool:  # the model_metrics helper's series
            return labels.get("version", version) == version

        wanted_version = target.version_value or version

        def ours(labels: Mapping[str, str]) -> bool:  # the profile's series
            if (
                names.model_label
                and target.model is not None
                and labels.get(names.model_label, target.model) != target.model
            ):
                return False
            return not names.version_label or labels.get(names.version_label, wanted_version) == wanted_version

        elsewhere: list[str] = []  # expected names whose series all belong to other models or versions

        def total(name: str | None) -> float | None:
            if not name:
                return None
            series = scrape.series(name)
            values = [float(s.value) for s in series if ours(s.labels)]
            if values:
                return sum(values)
            if series:
                elsewhere.append(name)
                return None
            # A declared counter without series: nothing counted yet (client libraries create a labelled series on
            # its first increment), so the requests before the first series are not lost as a baseline.
            return 0.0 if scrape.declares(name) else None

        counters: dict[str, float] = {}
        gauges: dict[str, float] = {}
        histograms: dict[str, Histogram] = {}
        failures = total(names.requests_failure)
        requests = total(names.requests_total)
        if requests is None:
            success = total(names.requests_success)
            if success is not None or failures is not None:
                requests = (success or 0.0) + (failures or 0.0)
        if requests is not None:
            counters[Signal.MODEL_REQUESTS] = requests
        if failures is not None:
            counters[Signal.MODEL_ERRORS] = failures
        loaded = [float(s.value) for s in scrape.series(names.model_loaded or "") if ours(s.labels)]
        if loaded:
            gauges[MODEL_LOADED] = min(loaded)
        if names.latency and names.latency_type == "histogram":
            latency = _histogram(scrape, names.latency, ours)
            if latency is not None:
                histograms[Signal.MODEL_LATENCY_S] = _scaled(latency, names.latency_unit_s)
            elif scrape.by_name.get(names.latency + "_count"):
                elsewhere.append(names.latency)
        if names.confidence:
            confidence = _histogram(scrape, names.confidence, ours)
            if confidence is not None:
                histograms[Signal.MODEL_CONFIDENCE] = confidence
        outcome_signals = {"correct": Signal.MODEL_OUTCOMES_CORRECT, "incorrect": Signal.MODEL_OUTCOMES_INCORRECT}
        for s in by_name.get("model_outcomes_total", ()):
            outcome = outcome_signals.get(s.labels.get("result", ""))
            if mine(s.labels) and outcome is not None:
                counters[outcome] = float(s.value)
        for s in by_name.get("model_feature_observations_total", ()):
            if mine(s.labels) and "feature" in s.labels:
                counters[Signal.feature_seen(s.labels["feature"])] = float(s.value)
        for s in by_name.get("model_feature_missing_total", ()):
            if mine(s.labels) and "feature" in s.labels:
                counters[Signal.feature_missing(s.labels["feature"])] = float(s.value)
        for s in by_name.get("model_business_metric", ()):
            if mine(s.labels) and "name" in s.labels:
                gauges[Signal.business(s.labels["name"])] = float(s.value)
        for s in by_name.get("process_resident_memory_bytes", ()):
            gauges[Signal.MODEL_MEMORY_BYTES] = float(s.value)
            ratio = self._memory.reading(version, float(s.value))
            if ratio is not None:
                gauges[Signal.MODEL_MEMORY_RATIO] = ratio
        features = {s.labels["feature"] for s in by_name.get("model_feature_value_bucket", ()) if "feature" in s.labels}
        for feature in features:
            h = histogram_from(
                (s for s in by_name.get("model_feature_value_bucket", ()) if mine(s.labels)),
                (s for s in by_name.get("model_feature_value_sum", ()) if mine(s.labels)),
                (s for s in by_name.get("model_feature_value_count", ()) if mine(s.labels)),
                {"feature": feature},
            )
            if h is not None:
                histograms[Signal.feature(feature)] = h
        counters.update(self._exit_counters(version))
        unavailable = self._unavailable(version, target, scrape, elsewhere)
        return Sample(ts=now, counters=counters, gauges=gauges, histograms=histograms, unavailable=unavailable)

    def _unavailable(
        self, version: str, target: MetricsTarget, scrape: _Scrape, elsewhere: Iterable[str]
    ) -> dict[str, str]:
        """Signal -> why it cannot be measured from this scrape: an expected name is absent, or the profile lacks it."""
        names = target.names
        feeds = {
            "requests_total": Signal.MODEL_REQUESTS,
            "requests_success": Signal.MODEL_REQUESTS,
            "requests_failure": Signal.MODEL_ERRORS,
            "latency": Signal.MODEL_LATENCY_S,
            "confidence": Signal.MODEL_CONFIDENCE,
            "model_loaded": MODEL_LOADED,
        }
        reasons: dict[str, str] = {}
        missing = {n for n in names.metric_names().values() if not scrape.declares(n)}
        mismatched = set(elsewhere)
        for slot, name in names.metric_names().items():
            if name in missing:
                reasons.setdefault(feeds[slot], f"{version}: {name} not found at {target.url}")
            elif name in mismatched:
                reasons.setdefault(
                    feeds[slot], f"{version}: {name} has no series for {_selector(target, version)} at {target.url}"
                )
        if names.latency and names.latency_type != "histogram" and names.latency not in missing:
            reasons[Signal.MODEL_LATENCY_S] = (
                f"{version}: {names.latency} is a {names.latency_type}, no latency distribution "
                f"({target.profile} profile; judge latency from Envoy: source: envoy)"
            )
        if not (names.requests_total or names.requests_success):
            for signal in (Signal.MODEL_REQUESTS, Signal.MODEL_ERRORS):
                reasons.setdefault(
                    signal,
                    f"{version}: the {target.profile} profile has no request counter "
                    "(set versions[].server.names.requests_total; or judge from Envoy: source: envoy)",
                )
        self._report_missing(version, target, frozenset(missing))
        return reasons

    def _report_missing(self, version: str, target: MetricsTarget, missing: frozenset[str]) -> None:
        before = self._missing.get(version, frozenset())
        if missing == before:
            return
        for name in sorted(missing - before):
            log.error(
                "%s: %s not found at %s (%s profile): the signals it feeds are inconclusive",
                version,
                name,
                target.url,
                target.profile,
            )
        for name in sorted(before - missing):
            log.info("%s: %s found again at %s", version, name, target.url)
        if self._metrics is not None:
            gauge = self._metrics.model_metric_missing
            for name in before - missing:
                gauge.labels(self._metrics.model, version, name).set(0)
            for name in missing:
                gauge.labels(self._metrics.model, version, name).set(1)
        self._missing[version] = missing


def _histogram(scrape: _Scrape, name: str, keep: Callable[[Mapping[str, str]], bool]) -> Histogram | None:
    def of(suffix: str) -> Iterable[PromSample]:
        return (s for s in scrape.by_name.get(name + suffix, ()) if keep(s.labels))

    return histogram_from(of("_bucket"), of("_sum"), of("_count"), {})


def _scaled(histogram: Histogram, unit_s: float) -> Histogram:
    if unit_s == 1.0:
        return histogram
    return replace(histogram, bounds=tuple(b * unit_s for b in histogram.bounds), sum=histogram.sum * unit_s)


def _selector(target: MetricsTarget, version: str) -> str:
    labels = []
    if target.names.model_label and target.model is not None:
        labels.append(f'{target.names.model_label}="{target.model}"')
    if target.names.version_label:
        labels.append(f'{target.names.version_label}="{target.version_value or version}"')
    return "{" + ", ".join(labels) + "}"


def _short(text: str) -> str:
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"
