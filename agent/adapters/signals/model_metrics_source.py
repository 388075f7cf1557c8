"""Each version's own /metrics (the names of model_metrics/README.md), read into the agent's signals.

Also notices a restarted model server (process_start_time_seconds changed) and counts it as a restart, and, for
versions with a memory limit, reads resident memory against it (`model.memory_ratio`) and counts an exit near the
limit as an OOM (`health.oom`, see memory_watch).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import aiohttp

from agent.adapters.signals.memory_watch import MemoryWatch
from agent.adapters.signals.prometheus_text import histogram_from, samples_by_name
from agent.domain.signals import Histogram, Sample, Signal

_COUNTERS = {
    "model_inference_requests_total": Signal.MODEL_REQUESTS,
    "model_inference_errors_total": Signal.MODEL_ERRORS,
}
_HISTOGRAMS = {
    "model_inference_latency_seconds": Signal.MODEL_LATENCY_S,
    "model_prediction_confidence": Signal.MODEL_CONFIDENCE,
}


class ModelMetricsSource:
    name = "model"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        endpoints: Mapping[str, str],  # version -> metrics URL
        timeout_s: float = 0.5,
        *,
        memory_limits_mb: Mapping[str, float] | None = None,  # version -> its container's memory limit
        oom_ratio: float = 0.9,
    ) -> None:
        self._session = session
        self._endpoints = dict(endpoints)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._start_times: dict[str, float] = {}
        self._restarts: dict[str, float] = dict.fromkeys(self._endpoints, 0.0)
        self._memory = MemoryWatch(memory_limits_mb or {}, oom_ratio)
        self._answering: dict[str, bool] = {}

    async def sample(self, now: float) -> Mapping[str, Sample]:
        versions = list(self._endpoints)
        fetched = await asyncio.gather(*(self._fetch(self._endpoints[v]) for v in versions))
        samples = {}
        for version, (text, answering) in zip(versions, fetched, strict=True):
            if self._answering.get(version) and not answering:
                self._memory.exited(version, "stopped answering")
            self._answering[version] = answering
            if text is not None:
                samples[version] = self.parse(version, text, now)
            elif not answering:  # the exit's counters (an OOM just counted) still reach the history
                samples[version] = Sample(ts=now, counters=self._exit_counters(version))
        return samples

    async def _fetch(self, url: str) -> tuple[str | None, bool]:
        """(the metrics text or None, whether the server answers at all)."""
        try:
            async with self._session.get(url, timeout=self._timeout) as response:
                return (await response.text() if response.status == 200 else None), True
        except aiohttp.ClientConnectorError:
            return None, False  # nothing listens: the process is gone (the health source counts the crash)
        except (aiohttp.ClientError, TimeoutError):
            return None, True  # slow or broken, not known to be gone

    def _exit_counters(self, version: str) -> dict[str, float]:
        counters = {Signal.HEALTH_RESTARTS: self._restarts.get(version, 0.0)}
        ooms = self._memory.oom_count(version)
        if ooms is not None:
            counters[Signal.HEALTH_OOM] = ooms
        return counters

    def parse(self, version: str, text: str, now: float) -> Sample:
        by_name = samples_by_name(text)
        for s in by_name.get("process_start_time_seconds", ()):
            started = float(s.value)
            previous = self._start_times.get(version)
            if previous is not None and started != previous:
                self._restarts[version] = self._restarts.get(version, 0.0) + 1
                self._memory.exited(version, "restarted")
            self._start_times[version] = started

        def mine(labels: Mapping[str, str]) -> bool:
            return labels.get("version", version) == version

        counters: dict[str, float] = {}
        gauges: dict[str, float] = {}
        histograms: dict[str, Histogram] = {}
        for metric, signal in _COUNTERS.items():
            values = [float(s.value) for s in by_name.get(metric, ()) if mine(s.labels)]
            if values:
                counters[signal] = sum(values)
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
        for metric, signal in _HISTOGRAMS.items():
            h = histogram_from(
                (s for s in by_name.get(f"{metric}_bucket", ()) if mine(s.labels)),
                (s for s in by_name.get(f"{metric}_sum", ()) if mine(s.labels)),
                (s for s in by_name.get(f"{metric}_count", ()) if mine(s.labels)),
                {},
            )
            if h is not None:
                histograms[signal] = h
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
        return Sample(ts=now, counters=counters, gauges=gauges, histograms=histograms)
