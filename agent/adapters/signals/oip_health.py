"""OIP v2 health of each version: readiness, a golden inference, the feature pipeline, crashes.

Probed continuously (the signal source), so a rollback target's health is usually already known and fresh; the
rollback asks `live_checks(version, max_age_s)` and re-probes only what is older than that. Also the warmer: the
OIP repository extension's load call, then waiting for readiness.

A version that shares its server with others (`oip_version`) is probed on its versioned paths
(`/v2/models/{name}/versions/{v}/...`). The repository API loads a model by name only, never one version of it,
so such a version is not warmed: the warm-up fails at once with that reason, and the health report says so.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from agent.domain.signals import Sample, Signal
from agent.ports.rollback import CheckResult, WarmUpError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GoldenCheck:
    request: Mapping[str, Any]
    output: str
    expect: Sequence[float]
    tolerance: float


@dataclass(frozen=True, slots=True)
class VersionProbe:
    version: str
    base_url: str  # http://host:port (or http://name:port, resolved at each probe) of the model server
    oip_model: str
    oip_version: str | None = None  # the version's number in versioned OIP paths, when several share a server

    @property
    def model_url(self) -> str:
        versioned = f"/versions/{self.oip_version}" if self.oip_version is not None else ""
        return f"{self.base_url}/v2/models/{self.oip_model}{versioned}"

    @property
    def warm_up_unavailable(self) -> str:
        """Why the repository API cannot load this version alone ("" when it can)."""
        if self.oip_version is None:
            return ""
        return (
            f"the OIP repository API loads model {self.oip_model} by name, not version {self.oip_version} alone "
            "(it shares its server with other versions): load it on the server"
        )


@dataclass
class _State:
    reachable: bool | None = None
    crashes: float = 0.0
    results: dict[str, tuple[float, CheckResult]] | None = None  # name -> (monotonic time, result)
    golden_checks: float = 0.0  # golden inferences judged
    golden_failing: float = 0.0  # consecutive failed ones (0 after a pass): what the `golden` rule kind reads


class OipHealthSource:
    name = "health"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        probes: Sequence[VersionProbe],
        *,
        golden: GoldenCheck | None = None,
        pipeline_url: str | None = None,
        golden_interval_s: float = 5.0,
        timeout_s: float = 0.5,
    ) -> None:
        self._session = session
        self._probes = {p.version: p for p in probes}
        self._golden = golden
        self._pipeline_url = pipeline_url
        self._golden_interval_s = golden_interval_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._state = {v: _State(results={}) for v in self._probes}

    async def sample(self, now: float) -> Mapping[str, Sample]:
        versions = list(self._probes)
        await asyncio.gather(
            *(self._probe(v, max_age_s=0.0, golden_max_age_s=self._golden_interval_s) for v in versions)
        )
        return {v: self._to_sample(v, now) for v in versions}

    async def live_checks(self, version: str, *, max_age_s: float) -> Sequence[CheckResult]:
        if version not in self._probes:
            return [CheckResult("known", False, f"no probe configured for version {version}")]
        await self._probe(version, max_age_s=max_age_s, golden_max_age_s=max_age_s)
        now = time.monotonic()
        results = self._state[version].results or {}
        checks = [
            CheckResult(r.name, r.passed, r.detail, age_s=now - at)
            for at, r in results.values()
            if r.name != "model_loaded"
        ]
        ready = results.get("ready")
        if ready is not None and not ready[1].passed and "unreachable" not in ready[1].detail:
            # Not ready may just mean not loaded (yet): then readiness and the golden inference can only be judged
            # after the warm-up (the repository load call), and the target is reported as not loaded, not unhealthy.
            state = await self._repository_state(self._probes[version])
            if state is not None and state != "READY":
                return [
                    CheckResult("model_loaded", False, f"not loaded (repository state {state})"),
                    *(c for c in checks if c.name not in ("ready", "golden_inference")),
                ]
        return checks

    async def _repository_state(self, probe: VersionProbe) -> str | None:
        """The model's state in the OIP repository index (READY, UNAVAILABLE, LOADING...), None if unknown."""
        url = f"{probe.base_url}/v2/repository/index"
        try:
            async with self._session.post(url, json={}, timeout=self._timeout) as response:
                if response.status != 200:
                    return None
                entries = await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        if not isinstance(entries, list):
            return None
        for entry in entries:
            if not isinstance(entry, dict) or entry.get("name") != probe.oip_model:
                continue
            if probe.oip_version is not None and str(entry.get("version")) != probe.oip_version:
                continue
            return str(entry.get("state", "")).upper() or None
        return None

    async def is_loaded(self, version: str) -> bool:
        probe = self._probes.get(version)
        if probe is None:
            return False
        status, _ = await self._get(f"{probe.model_url}/ready")
        return status == 200

    async def warm(self, version: str, timeout_s: float) -> None:
        probe = self._probes.get(version)
        if probe is None:
            raise WarmUpError(f"no endpoint configured for version {version}")
        if probe.warm_up_unavailable:
            raise WarmUpError(f"not attempted: {probe.warm_up_unavailable}")
        url = f"{probe.base_url}/v2/repository/models/{probe.oip_model}/load"
        try:
            async with self._session.post(url, json={}, timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
                if response.status >= 300:
                    raise WarmUpError(f"load call {url} answered {response.status}: {(await response.text())[:200]}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise WarmUpError(f"load call {url} failed: {exc!r}") from None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await self.is_loaded(version):
                return
            await asyncio.sleep(0.05)
        raise WarmUpError(f"{version} did not become ready within {timeout_s:g}s after the load call")

    async def _probe(self, version: str, *, max_age_s: float, golden_max_age_s: float) -> None:
        probe, state = self._probes[version], self._state[version]
        results = state.results if state.results is not None else {}
        now = time.monotonic()

        def stale(name: str, age: float) -> bool:
            return name not in results or now - results[name][0] > age

        tasks = []
        if stale("ready", max_age_s):
            tasks.append(self._check_ready(probe))
        if self._golden is not None and stale("golden_inference", golden_max_age_s):
            tasks.append(self._check_golden(probe, self._golden))
        if self._pipeline_url and stale("feature_pipeline", max_age_s):
            tasks.append(self._check_pipeline(self._pipeline_url))
        for result in await asyncio.gather(*tasks):
            results[result.name] = (time.monotonic(), result)
            if result.name == "golden_inference":
                # A version that is not ready (not loaded, down) is the readiness and crash rules' business: only a
                # ready version's wrong answers make the streak.
                ready_now = "ready" in results and results["ready"][1].passed
                state.golden_checks += 1
                state.golden_failing = state.golden_failing + 1 if ready_now and not result.passed else 0.0
        state.results = results
        ready = results.get("ready")
        if ready is not None:
            reachable = "unreachable" not in ready[1].detail
            if state.reachable and not reachable:
                state.crashes += 1
                log.error("version %s stopped answering (%s): counted as a crash", version, ready[1].detail)
            state.reachable = reachable

    async def _check_ready(self, probe: VersionProbe) -> CheckResult:
        status, detail = await self._get(f"{probe.model_url}/ready")
        if status == 200:
            return CheckResult("ready", True, "ready")
        return CheckResult("ready", False, detail or f"not ready (HTTP {status})")

    async def _check_pipeline(self, url: str) -> CheckResult:
        status, detail = await self._get(url)
        ok = status is not None and 200 <= status < 300
        return CheckResult("feature_pipeline", ok, "reachable" if ok else detail or f"HTTP {status}")

    async def _check_golden(self, probe: VersionProbe, golden: GoldenCheck) -> CheckResult:
        url = f"{probe.model_url}/infer"
        try:
            async with self._session.post(url, json=dict(golden.request), timeout=self._timeout) as response:
                if response.status != 200:
                    return CheckResult("golden_inference", False, f"infer answered HTTP {response.status}")
                body = await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return CheckResult("golden_inference", False, f"infer failed: {exc!r}")
        outputs = {o.get("name"): o.get("data") for o in body.get("outputs", []) if isinstance(o, dict)}
        got = outputs.get(golden.output)
        if not isinstance(got, list) or len(got) != len(golden.expect):
            return CheckResult("golden_inference", False, f"output {golden.output!r} missing or wrong length: {got!r}")
        worst = max((abs(float(g) - float(e)) for g, e in zip(got, golden.expect, strict=True)), default=0.0)
        if math.isnan(worst) or worst > golden.tolerance:
            return CheckResult(
                "golden_inference",
                False,
                f"{golden.output} = {got} expected {list(golden.expect)} ± {golden.tolerance}",
            )
        return CheckResult("golden_inference", True, f"{golden.output} matches within {golden.tolerance}")

    async def _get(self, url: str) -> tuple[int | None, str]:
        try:
            async with self._session.get(url, timeout=self._timeout) as response:
                await response.read()
                return response.status, ""
        except aiohttp.ClientConnectorError as exc:
            return None, f"unreachable: {exc.os_error.strerror if exc.os_error else exc}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return None, f"no answer: {exc!r}"

    def _to_sample(self, version: str, now: float) -> Sample:
        state = self._state[version]
        results = state.results or {}
        gauges = {}
        for name, signal in (
            ("ready", Signal.HEALTH_READY),
            ("golden_inference", Signal.HEALTH_GOLDEN_OK),
            ("feature_pipeline", Signal.HEALTH_PIPELINE_OK),
        ):
            if name in results:
                gauges[signal] = 1.0 if results[name][1].passed else 0.0
        counters = {Signal.HEALTH_CRASHES: state.crashes}
        if self._golden is not None:
            counters[Signal.HEALTH_GOLDEN_CHECKS] = state.golden_checks
            gauges[Signal.HEALTH_GOLDEN_FAILING] = state.golden_failing
        return Sample(ts=now, counters=counters, gauges=gauges)

    def health_report(self) -> dict[str, dict[str, Any]]:
        """Per version: model loaded, feature pipeline reachable, prediction serving (the seeds' health view)."""
        report: dict[str, dict[str, Any]] = {}
        now = time.monotonic()
        for version, state in self._state.items():
            results = state.results or {}
            entry: dict[str, Any] = {}
            for name, (at, result) in results.items():
                entry[name] = {"ok": result.passed, "detail": result.detail, "age_s": round(now - at, 3)}
            entry["crashes"] = state.crashes
            if self._probes[version].warm_up_unavailable:
                entry["warm_up"] = {"ok": False, "detail": self._probes[version].warm_up_unavailable}
            report[version] = entry
        return report
