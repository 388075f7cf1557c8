"""The monitor: every tick, sample every source, extend each version's history, evaluate the rules, and hand every
decision to the decision handler (the rollback orchestrator).

A source that cannot be read gives no sample this tick (the histories show the gap as missing coverage, which
the rules report as insufficient evidence): it is counted, logged on change, and never a breach by itself.
Decisions are handled in their own tasks so a slow rollback never stalls sampling.

With the access-log stream (`stream`), Envoy's per-version figures come from one live source at a time (see
`agent.engine.source_switch`), and each batch of entries pokes the monitor: a rules-only tick on the stream's
figures runs at most every `stream_min_interval_s`, so a decision is not held back until the next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Protocol

from agent.domain.signals import Baseline, HistoryLimits, Sample, SignalHistory
from agent.engine.decisions import Cause, DecisionHandler, TriggerEvent
from agent.engine.source_switch import STATS, STREAM, SourceSwitch
from agent.engine.traffic import TrafficController
from agent.pb.rollback_agent.v1 import audit_pb2
from agent.ports.signals import SignalSource
from agent.ports.store import AuditLog
from agent.telemetry import AgentMetrics
from agent.triggers.engine import Decision as RuleDecision
from agent.triggers.engine import EngineInput, RuleEngine, RuleState, TickResult, Transition
from agent.triggers.verdict import Verdict

log = logging.getLogger(__name__)


class StreamFeed(Protocol):
    """A signal source pushed by Envoy (the access-log stream): sampled like the others, and signalling batches."""

    name: str
    batches: asyncio.Event

    @property
    def last_entry_at(self) -> float | None: ...

    async def sample(self, now: float) -> Mapping[str, Sample]: ...


def verdict_record(verdict: Verdict, source_file: str = "") -> audit_pb2.RuleVerdict:
    return audit_pb2.RuleVerdict(
        rule=verdict.rule,
        kind=verdict.kind,
        version=verdict.version,
        verdict=verdict.status.value,
        value=verdict.value if verdict.value is not None else float("nan"),
        threshold=verdict.threshold if verdict.threshold is not None else float("nan"),
        window_s=verdict.window_s,
        samples=int(verdict.evidence),
        reason=verdict.reason,
        source_file=source_file,
    )


def merge_samples(parts: Sequence[Mapping[str, Sample]], now: float) -> dict[str, Sample]:
    """One sample per version from the partial samples of every source."""
    merged: dict[str, tuple[dict[str, float], dict[str, float], dict[str, object], dict[str, str]]] = {}
    for part in parts:
        for version, sample in part.items():
            counters, gauges, histograms, unavailable = merged.setdefault(version, ({}, {}, {}, {}))
            counters.update(sample.counters)
            gauges.update(sample.gauges)
            histograms.update(sample.histograms)
            unavailable.update(sample.unavailable)
    return {
        v: Sample(ts=now, counters=c, gauges=g, histograms=h, unavailable=u)  # type: ignore[arg-type]
        for v, (c, g, h, u) in merged.items()
    }


class Monitor:
    def __init__(
        self,
        *,
        sources: Sequence[SignalSource],
        rules: RuleEngine,
        traffic: TrafficController,
        decisions: DecisionHandler,
        store: AuditLog,
        metrics: AgentMetrics,
        baselines: Callable[[], Mapping[str, Baseline]] = dict,
        interval_s: float = 1.0,
        source_timeout_s: float = 0.8,
        limits: HistoryLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
        stream: StreamFeed | None = None,
        stream_min_interval_s: float = 0.1,
        switch: SourceSwitch | None = None,
    ) -> None:
        self._sources = list(sources)
        self._stream = stream
        self._stream_min_interval_s = stream_min_interval_s
        self.switch = switch or SourceSwitch()
        self._gauges: dict[str, Mapping[str, float]] = {}  # version -> gauges of the last full tick
        self._unavailable: dict[str, Mapping[str, str]] = {}  # version -> unmeasurable signals, last full tick
        self._tick_lock = asyncio.Lock()
        self.stream_ticks = 0
        self.rules = rules
        self._traffic = traffic
        self._decisions = decisions
        self._store = store
        self._metrics = metrics
        self._baselines = baselines
        self.interval_s = interval_s
        self._source_timeout_s = source_timeout_s
        self._limits = limits or HistoryLimits()
        self._clock = clock
        self._histories: dict[str, SignalHistory] = {}
        # Read-only for everyone else (verification, forensic bundles): the monitor is the only writer.
        self.histories: Mapping[str, SignalHistory] = MappingProxyType(self._histories)
        self.last_tick: TickResult | None = None
        self._source_ok: dict[str, bool] = {}
        self._handling: set[asyncio.Task[None]] = set()
        self.rules_source = ""

    @property
    def signal_source(self) -> str:
        """Where Envoy's per-version figures come from now: "stream" or "envoy"."""
        return self.switch.live if self._stream is not None else STATS

    async def run(self) -> None:
        if self._stream is None:
            await self._run_ticks()
            return
        poke = asyncio.create_task(self._run_stream_ticks(self._stream), name="monitor-stream")
        try:
            await self._run_ticks()
        finally:
            poke.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poke

    async def _run_stream_ticks(self, stream: StreamFeed) -> None:
        last = -float("inf")
        while True:
            await stream.batches.wait()
            delay = last + self._stream_min_interval_s - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)
            stream.batches.clear()
            last = self._clock()
            if self.switch.live != STREAM:
                continue  # the next full tick decides whether the stream is live again
            try:
                await self.stream_tick()
            except Exception:
                self._metrics.background_failures.labels("monitor-stream-tick").inc()
                log.exception("monitor stream tick failed; the next one goes on")

    async def stream_tick(self) -> TickResult | None:
        """Rules only, on the stream's latest figures (other signals as of the last full tick)."""
        assert self._stream is not None
        async with self._tick_lock:
            now = self._clock()
            if self.last_tick is not None and now <= self.last_tick.now:
                return None
            reading = await self._stream.sample(now)
            spliced = self.switch.splice(now, {STREAM: reading})
            samples = {
                v: Sample(ts=now, counters=s.counters, gauges=self._gauges.get(v, {}), histograms=s.histograms)
                for v, s in spliced.items()
            }
            self.stream_ticks += 1
            return await self._evaluate(now, samples)

    async def _run_ticks(self) -> None:
        next_at = self._clock()
        while True:
            try:
                await self.tick()
            except Exception:
                self._metrics.background_failures.labels("monitor-tick").inc()
                log.exception("monitor tick failed; the next tick goes on")
            next_at += self.interval_s
            delay = next_at - self._clock()
            if delay < 0:  # a tick overran: skip the missed ticks instead of bursting
                next_at, delay = self._clock(), 0.0
            await asyncio.sleep(delay)

    async def tick(self) -> TickResult:
        async with self._tick_lock:
            return await self._full_tick()

    async def _full_tick(self) -> TickResult:
        now = self._clock()
        sources: list[SignalSource | StreamFeed] = [*self._sources]
        if self._stream is not None:
            sources.append(self._stream)
        outcomes = await asyncio.gather(
            *(asyncio.wait_for(source.sample(now), self._source_timeout_s) for source in sources),
            return_exceptions=True,
        )
        parts: list[Mapping[str, Sample]] = []
        readings: dict[str, Mapping[str, Sample]] = {}
        for source, outcome in zip(sources, outcomes, strict=True):
            ok = not isinstance(outcome, BaseException)
            self._metrics.signal_scrapes.labels(self._traffic.model, source.name, "ok" if ok else "error").inc()
            if self._source_ok.get(source.name, True) != ok:
                if ok:
                    log.info("signal source %s readable again", source.name)
                else:
                    log.warning("signal source %s unreadable: %r (no sample, not a breach)", source.name, outcome)
            self._source_ok[source.name] = ok
            if isinstance(outcome, BaseException):
                continue
            if self._stream is not None and source.name in (STATS, STREAM):
                readings[source.name] = outcome
            else:
                parts.append(outcome)
        if self._stream is not None:
            before = self.switch.live
            live = self.switch.decide(now, readings.get(STREAM), self._stream.last_entry_at, readings.get(STATS))
            if live != before:
                log.warning("Envoy's per-version figures now come from %s (was %s)", live, before)
            for name in (STATS, STREAM):
                self._metrics.signal_source_live.labels(self._traffic.model, name).set(1 if name == live else 0)
            parts.insert(0, self.switch.splice(now, readings))
        merged = merge_samples(parts, now)
        self._gauges = {v: s.gauges for v, s in merged.items()}
        self._unavailable = {v: s.unavailable for v, s in merged.items() if s.unavailable}
        return await self._evaluate(now, merged)

    async def _evaluate(self, now: float, samples: Mapping[str, Sample]) -> TickResult:
        for version, sample in samples.items():
            history = self._histories.get(version)
            if history is None:
                history = self._histories[version] = SignalHistory(self._limits)
            history.append(sample)
        served = self._traffic.served() or self._traffic.desired.weights
        result = self.rules.evaluate(
            EngineInput(
                now=now,
                histories=self.histories,
                stable=self._traffic.stable,
                serving=[v for v, w in served if w > 0],
                baselines=self._baselines(),
                unavailable=self._unavailable,
            )
        )
        self.last_tick = result
        self._export(result)
        for transition in result.transitions:
            await self._record_transition(transition)
        for decision in result.decisions:
            self._spawn(self._handle(decision))
        return result

    async def close(self) -> None:
        for task in list(self._handling):
            task.cancel()
        for task in list(self._handling):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _export(self, result: TickResult) -> None:
        model = self._traffic.model
        gauge = self._metrics.rule_state
        gauge.clear()
        for status in result.statuses:
            gauge.labels(model, status.rule, status.version, status.state.value).set(1)
        self._metrics.set_rule_verdicts(
            (s.rule, s.verdict.kind, s.version, s.verdict.value, s.verdict.threshold) for s in result.statuses
        )

    async def _record_transition(self, transition: Transition) -> None:
        notable = transition.after in (RuleState.FIRING, RuleState.PENDING) or transition.before in (
            RuleState.FIRING,
            RuleState.PENDING,
        )
        level = logging.WARNING if transition.after in (RuleState.FIRING, RuleState.PENDING) else logging.INFO
        log.log(
            level,
            "rule %s for %s: %s -> %s: %s",
            transition.rule,
            transition.version,
            transition.before.value if transition.before else "new",
            transition.after.value,
            transition.verdict.reason,
        )
        if not notable:
            return
        rule = self.rules.rule_set.rule(transition.rule)
        event = audit_pb2.VerdictChanged(
            verdict=verdict_record(transition.verdict, self.rules_source),
            state=transition.after.value,
            action=rule.action.value if rule is not None else "",
        )
        await self._store.append(event, f"rule:{transition.rule}")

    async def _handle(self, decision: RuleDecision) -> None:
        event = TriggerEvent(
            cause=Cause.RULE,
            action=decision.action,  # one Action vocabulary (agent.domain.actions) from rule to engine
            version=decision.version,
            summary=decision.reason,
            record=audit_pb2.Trigger(rule=verdict_record(decision.verdict, self.rules_source)),
        )
        try:
            outcome = await self._decisions.handle(event)
        except Exception:
            # The dedupe memory forgets a decision that raised, so the rule's next tick acts again.
            self._metrics.background_failures.labels("rule-decision").inc()
            log.exception("handling the decision of rule %s for %s failed", decision.rule, decision.version)
            return
        log.warning("decision on %s: %s (%s)", decision.version, outcome.outcome.value, outcome.detail)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro, name="rule-decision")
        self._handling.add(task)
        task.add_done_callback(self._handling.discard)
        task.add_done_callback(self._report_failure)

    def _report_failure(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        self._metrics.background_failures.labels("rule-decision").inc()
        log.error("rule decision task failed", exc_info=task.exception())
