"""Reading Prometheus text exposition into the agent's pure signal types (prometheus_client's parser)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample as PromSample

from agent.domain.signals import Histogram


def samples_by_name(text: str) -> dict[str, list[PromSample]]:
    found: dict[str, list[PromSample]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def histogram_from(
    buckets: Iterable[PromSample], sums: Iterable[PromSample], counts: Iterable[PromSample], match: Mapping[str, str]
) -> Histogram | None:
    """Assemble one cumulative histogram from its _bucket/_sum/_count samples whose labels include `match`."""

    def wanted(s: PromSample) -> bool:
        return all(s.labels.get(k) == v for k, v in match.items())

    pairs = sorted((float(s.labels["le"]), float(s.value)) for s in buckets if wanted(s) and "le" in s.labels)
    if not pairs:
        return None
    total = next((float(s.value) for s in sums if wanted(s)), 0.0)
    count = next((float(s.value) for s in counts if wanted(s)), pairs[-1][1])
    bounds = tuple(b for b, _ in pairs)
    if not math.isinf(bounds[-1]):
        bounds, pairs = (*bounds, math.inf), [*pairs, (math.inf, count)]
    return Histogram(bounds=bounds, cumulative=tuple(c for _, c in pairs), sum=total, count=count)
