"""Signals read from Prometheus instant queries (`signals.promql`), e.g. accuracy from delayed ground-truth labels.

Each configured signal is queried every `interval_s` in the background, never on the monitor's tick: `sample()`
returns the last answers at once, so a slow Prometheus never holds a tick back. The same query also asks for
`timestamp(...)` of the expression, the time of the sample each value came from; a sample older than
`max_staleness_s` is no evidence. An unreachable Prometheus, an error answer, an empty vector, a non-numeric or
ambiguous result (several series for one version) or a stale sample leave the signal out of the version's sample:
the rules reading it judge "insufficient evidence" with that reason (the sample's `unavailable`), never a breach.
The reason is also kept per version and signal (`problems`), logged when it changes and exported as a metric.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from agent.config import PromqlSection, PromqlSignal
from agent.domain.signals import Sample

log = logging.getLogger(__name__)

QUERY_PATH = "/api/v1/query"
TIME_LABEL = "rollback_agent_sample_time"  # marks the series that carry the sample times in the combined answer


@dataclass(frozen=True, slots=True)
class Reading:
    """One signal of one version after a query round: a value with its sample time, or why there is none."""

    value: float | None
    sampled_at: float | None  # Unix seconds of the sample the value came from
    problem: str = ""  # why there is no usable value ("" with a value)
    kind: str = ""  # the problem's class (a metric label): no_data, ambiguous, unusable, stale, unreachable, error


class QueryError(Exception):
    """Prometheus could not answer the query (unreachable, an HTTP error, an error status, a malformed body)."""

    def __init__(self, message: str, kind: str = "error") -> None:
        super().__init__(message)
        self.kind = kind


def _series_value(series: Mapping[str, Any]) -> float:
    value = series.get("value")
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError("a result series without [time, value]")
    number = float(value[1])
    if not math.isfinite(number):
        raise ValueError(f"the value is {value[1]}")
    return number


def _metric(series: Mapping[str, Any]) -> Mapping[str, Any]:
    metric = series.get("metric")
    return metric if isinstance(metric, dict) else {}


def _labels(series: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), str(v)) for k, v in _metric(series).items() if k != "__name__"))


def with_sample_times(expr: str) -> str:
    """`expr` and, in the same answer, `timestamp(expr)` (the time of each series' sample), marked by TIME_LABEL."""
    return f'({expr}) or label_replace(timestamp({expr}), "{TIME_LABEL}", "1", "", "")'


def split_sample_times(vector: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The combined answer of `with_sample_times` as (the values, the sample times without the marker label)."""
    values: list[dict[str, Any]] = []
    times: list[dict[str, Any]] = []
    for series in vector:
        metric = _metric(series)
        if metric.get(TIME_LABEL) == "1":
            times.append({**series, "metric": {k: v for k, v in metric.items() if k != TIME_LABEL}})
        else:
            values.append(series)
    return values, times


def readings_from(
    signal: PromqlSignal,
    versions: Sequence[str],
    values: Mapping[str, list[dict[str, Any]]],  # query key (a version, or "" for a labelled query) -> vector
    stamps: Mapping[str, list[dict[str, Any]]],  # the same keys -> vector of timestamp(query)
    now: float,
) -> dict[str, Reading]:
    """Judge the answers of one signal's queries for every version (pure: the unit tests feed it plain data)."""
    readings: dict[str, Reading] = {}
    for version in versions:
        key = "" if signal.version_label is not None else version
        vector = values.get(key, [])
        times = stamps.get(key, [])
        if signal.version_label is not None:
            vector = [s for s in vector if _metric(s).get(signal.version_label) == version]
            times = [s for s in times if _metric(s).get(signal.version_label) == version]
        readings[version] = _reading(signal, vector, times, now)
    return readings


def _reading(signal: PromqlSignal, vector: list[dict[str, Any]], times: list[dict[str, Any]], now: float) -> Reading:
    if not vector:
        return Reading(None, None, "no data: the query returned an empty vector", "no_data")
    if len(vector) > 1:
        shown = ", ".join(str(dict(_labels(s))) for s in vector[:3])
        return Reading(
            None, None, f"ambiguous: the query returned {len(vector)} series for one version ({shown})", "ambiguous"
        )
    try:
        value = _series_value(vector[0])
    except (TypeError, ValueError) as exc:
        return Reading(None, None, f"unusable value: {exc}", "unusable")
    labels = _labels(vector[0])
    stamp = next((s for s in times if _labels(s) == labels), None)
    try:
        sampled_at = _series_value(stamp) if stamp is not None else None
    except (TypeError, ValueError):
        sampled_at = None
    if sampled_at is None:
        return Reading(
            None, None, "no sample time: timestamp() of the query returned nothing for the series", "unusable"
        )
    age = now - sampled_at
    if age > signal.max_staleness_s:
        return Reading(
            None, sampled_at, f"stale: the latest sample is {age:.0f}s old > {signal.max_staleness_s:g}s", "stale"
        )
    return Reading(value, sampled_at)


class PromqlSource:
    """Implements agent.ports.signals.SignalSource."""

    name = "promql"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: PromqlSection,
        versions: Sequence[str],
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._session = session
        self._settings = settings
        self._versions = tuple(versions)
        self._url = settings.url + QUERY_PATH
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
        self._wall = wall_clock
        self.readings: dict[tuple[str, str], Reading] = {}  # (signal, version) -> the last round's reading
        self._last_round: float | None = None  # monotonic
        self._round: asyncio.Task[None] | None = None

    @property
    def problems(self) -> dict[tuple[str, str], str]:
        """(signal, version) -> why that signal is no evidence for that version now."""
        return {key: reading.problem for key, reading in self.readings.items() if reading.problem}

    async def sample(self, now: float) -> Mapping[str, Sample]:
        due = self._last_round is None or time.monotonic() - self._last_round >= self._settings.interval_s
        if due and (self._round is None or self._round.done()):
            self._last_round = time.monotonic()
            self._round = asyncio.create_task(self.refresh(), name="promql-queries")
        return self.current(now)

    def current(self, now: float) -> dict[str, Sample]:
        """The usable readings as samples stamped `now`. A signal without a usable value (or whose value went stale
        since its query) is left out and named in the sample's `unavailable` with the reason, so the rules reading
        it say why they cannot judge."""
        wall = self._wall()
        gauges: dict[str, dict[str, float]] = {}
        counters: dict[str, dict[str, float]] = {}
        unavailable: dict[str, dict[str, str]] = {}
        for signal in self._settings.signals:
            for version in self._versions:
                reading = self.readings.get((signal.signal, version))
                if reading is None:
                    continue  # not queried yet
                problem = reading.problem
                if (
                    not problem
                    and reading.sampled_at is not None
                    and wall - reading.sampled_at > signal.max_staleness_s
                ):
                    age = wall - reading.sampled_at
                    problem = f"stale: the latest sample is {age:.0f}s old > {signal.max_staleness_s:g}s"
                if problem or reading.value is None:
                    unavailable.setdefault(version, {})[signal.signal] = f"{signal.signal} from Prometheus: {problem}"
                    continue
                target = counters if signal.type == "counter" else gauges
                target.setdefault(version, {})[signal.signal] = reading.value
        return {
            v: Sample(
                ts=now, counters=counters.get(v, {}), gauges=gauges.get(v, {}), unavailable=unavailable.get(v, {})
            )
            for v in self._versions
            if v in gauges or v in counters or v in unavailable
        }

    async def refresh(self) -> None:
        """One round: every signal's queries; the readings (and problems) replace the previous round's."""
        rounds = await asyncio.gather(*(self._signal_readings(s) for s in self._settings.signals))
        readings: dict[tuple[str, str], Reading] = {}
        for signal, by_version in zip(self._settings.signals, rounds, strict=True):
            for version, reading in by_version.items():
                readings[(signal.signal, version)] = reading
        self._log_changes(readings)
        self.readings = readings

    async def _signal_readings(self, signal: PromqlSignal) -> dict[str, Reading]:
        if signal.version_label is not None:
            queries = {"": signal.query}
        else:
            queries = {v: signal.query.replace("{version}", v) for v in self._versions}
        keys = list(queries)
        answers = await asyncio.gather(*(self._value_and_time(queries[k]) for k in keys))
        values: dict[str, list[dict[str, Any]]] = {}
        stamps: dict[str, list[dict[str, Any]]] = {}
        failed: dict[str, QueryError] = {}
        for key, answer in zip(keys, answers, strict=True):
            if isinstance(answer, QueryError):
                failed[key] = answer
            else:
                values[key], stamps[key] = answer
        readings = readings_from(signal, self._versions, values, stamps, self._wall())
        for version in self._versions:
            error = failed.get("" if signal.version_label is not None else version)
            if error is not None:
                readings[version] = Reading(None, None, str(error), error.kind)
        return readings

    async def _value_and_time(self, expr: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | QueryError:
        """The query's vector and the vector of its samples' times, or why not: one query, so both come from the
        same state of Prometheus (two queries could pair an old value with the time of a sample scraped between)."""
        try:
            answer = await self._query(with_sample_times(expr))
        except QueryError as exc:
            return exc
        return split_sample_times(answer)

    async def _query(self, expr: str) -> list[dict[str, Any]]:
        try:
            async with self._session.get(self._url, params={"query": expr}, timeout=self._timeout) as response:
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = None
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise QueryError(f"Prometheus {self._settings.url} unreachable: {exc!r}", "unreachable") from None
        if not isinstance(body, dict) or body.get("status") != "success":
            detail = body.get("error", "") if isinstance(body, dict) else "not a Prometheus API answer"
            raise QueryError(f"Prometheus answered HTTP {status} to {expr!r}: {detail}")
        data = body.get("data")
        if not isinstance(data, dict) or data.get("resultType") not in ("vector", "scalar"):
            kind = data.get("resultType") if isinstance(data, dict) else None
            raise QueryError(f"query {expr!r} gave a {kind}, not an instant vector")
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data.get("result")}]
        result = data.get("result")
        return [s for s in result if isinstance(s, dict)] if isinstance(result, list) else []

    def _log_changes(self, new: Mapping[tuple[str, str], Reading]) -> None:
        for (signal, version), reading in new.items():
            before = self.readings.get((signal, version))
            if before is not None and before.problem == reading.problem:
                continue
            if reading.problem:
                log.warning("promql signal %s for %s is no evidence: %s", signal, version, reading.problem)
            elif before is not None:
                log.info("promql signal %s for %s readable again", signal, version)

    async def close(self) -> None:
        if self._round is not None:
            self._round.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._round


class PromqlSignalCollector(Collector):
    """rollback_agent_promql_signal_usable{model, signal, version}: 1 when the signal is evidence now, else 0,
    with the class of the reason in the `problem` label (the reason itself is logged when it changes)."""

    def __init__(self, model: str, source: PromqlSource) -> None:
        self._model = model
        self._source = source

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "rollback_agent_promql_signal_usable",
            "1 when a signal read from a Prometheus query is evidence now; 0 with the reason in `problem`",
            labels=["model", "signal", "version", "problem"],
        )
        for (signal, version), reading in sorted(self._source.readings.items()):
            family.add_metric([self._model, signal, version, reading.kind], 0.0 if reading.problem else 1.0)
        yield family
