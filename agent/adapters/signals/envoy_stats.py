"""Per-version request, response-code, connect-failure and latency figures from Envoy's own stats
(admin /stats/prometheus).

Error rate and p99 per version then need nothing from the model server: Envoy sees every request it routed.
Response codes: the 4xx and 5xx classes (`upstream_rq_4xx`, `upstream_rq_5xx`) and, per code 400..599, Envoy's
`upstream_rq_<code>` (exposed as `envoy_cluster_upstream_rq{envoy_response_code="404"}`, which prometheus_client
names `..._total` like the request total: the label tells them apart). A code Envoy has not seen yet has no stat.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping

import aiohttp

from agent.adapters.signals.prometheus_text import histogram_from, samples_by_name
from agent.domain.signals import Sample, Signal
from agent.ports.signals import SignalSourceError


class EnvoyStatsSource:
    name = "envoy"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        admin_url: str,
        clusters: Mapping[str, str],  # cluster name -> version
        timeout_s: float = 0.5,
    ) -> None:
        self._session = session
        self._clusters = dict(clusters)
        alternatives = "|".join(re.escape(c) for c in sorted(self._clusters))
        self._url = f"{admin_url.rstrip('/')}/stats/prometheus"
        self._params = {"filter": rf"^cluster\.({alternatives})\."}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def sample(self, now: float) -> Mapping[str, Sample]:
        try:
            async with self._session.get(self._url, params=self._params, timeout=self._timeout) as response:
                if response.status != 200:
                    raise SignalSourceError(f"Envoy admin {self._url} answered {response.status}")
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SignalSourceError(f"Envoy admin {self._url}: {exc!r}") from None
        return self.parse(text, now)

    def parse(self, text: str, now: float) -> dict[str, Sample]:
        by_name = samples_by_name(text)
        counters: dict[str, dict[str, float]] = {v: {} for v in self._clusters.values()}

        def take(metric: str, signal: str, extra: Mapping[str, str | None] | None = None) -> None:
            # prometheus_client's parser names counter samples with a _total suffix whether Envoy wrote one or not.
            found = by_name.get(metric) or by_name.get(f"{metric}_total") or []
            for s in found:
                version = self._clusters.get(s.labels.get("envoy_cluster_name", ""))
                if version is not None and all(s.labels.get(k) == v for k, v in (extra or {}).items()):
                    counters[version][signal] = float(s.value)

        take("envoy_cluster_upstream_rq_total", Signal.ENVOY_RQ_TOTAL, {"envoy_response_code": None})
        take("envoy_cluster_upstream_cx_connect_fail", Signal.ENVOY_CX_CONNECT_FAIL)
        take("envoy_cluster_upstream_rq_xx", Signal.ENVOY_RQ_5XX, {"envoy_response_code_class": "5"})
        take("envoy_cluster_upstream_rq_xx", Signal.ENVOY_RQ_4XX, {"envoy_response_code_class": "4"})
        for s in by_name.get("envoy_cluster_upstream_rq_total", ()):
            code = s.labels.get("envoy_response_code", "")
            version = self._clusters.get(s.labels.get("envoy_cluster_name", ""))
            if version is not None and code.isdigit() and 400 <= int(code) <= 599:
                counters[version][Signal.envoy_code(int(code))] = float(s.value)
        result: dict[str, Sample] = {}
        for cluster, version in self._clusters.items():
            found = counters[version]
            if Signal.ENVOY_RQ_TOTAL not in found:
                continue  # Envoy does not know the cluster (yet): no sample, not zero
            found.setdefault(Signal.ENVOY_RQ_5XX, 0.0)
            found.setdefault(Signal.ENVOY_RQ_4XX, 0.0)
            found.setdefault(Signal.ENVOY_CX_CONNECT_FAIL, 0.0)
            histograms = {}
            latency = histogram_from(
                by_name.get("envoy_cluster_upstream_rq_time_bucket", ()),
                by_name.get("envoy_cluster_upstream_rq_time_sum", ()),
                by_name.get("envoy_cluster_upstream_rq_time_count", ()),
                {"envoy_cluster_name": cluster},
            )
            if latency is not None:
                histograms[Signal.ENVOY_RQ_TIME_MS] = latency
            result[version] = Sample(ts=now, counters=found, histograms=histograms)
        return result

    async def confirm(self, version: str, timeout_s: float) -> tuple[bool, str]:
        """Confirm a switch from Envoy's own counters: requests keep reaching `version`'s cluster."""
        cluster = next((c for c, v in self._clusters.items() if v == version), None)
        if cluster is None:
            return False, f"no cluster for version {version}"
        start = await self._requests(version)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            now = await self._requests(version)
            if start is not None and now is not None and now > start:
                return True, f"Envoy routed {int(now - start)} request(s) to {cluster} after the switch"
            start = now if start is None else start
        return False, f"Envoy routed no request to {cluster} within {timeout_s:g}s (no traffic, or stats unreadable)"

    async def _requests(self, version: str) -> float | None:
        try:
            samples = await self.sample(time.monotonic())
        except SignalSourceError:
            return None
        sample = samples.get(version)
        return sample.counters.get(Signal.ENVOY_RQ_TOTAL) if sample else None
