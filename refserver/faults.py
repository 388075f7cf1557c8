"""Fault injection: the knobs that make the reference server misbehave the ways a bad model version does.

`Faults` is the (immutable) set of active faults, set through POST /faults or --faults; `FaultInjector`
applies them to requests with a seeded random generator, so a run with a given --seed is reproducible.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from refserver.dataset import FloatArray, IntArray


class FaultError(ValueError):
    """An invalid fault specification (HTTP 400)."""


def _range(lo: float, hi: float) -> dict[str, float]:
    return {"min": lo, "max": hi}


@dataclass(frozen=True)
class Faults:
    """Active faults. Numbers are validated against the bounds in each field's metadata."""

    # Probability that an inference request fails with HTTP 500.
    error_rate: float = field(default=0.0, metadata=_range(0.0, 1.0))
    # Latency added to every inference request, in milliseconds ...
    latency_ms: float = field(default=0.0, metadata=_range(0.0, 600_000.0))
    # ... plus a uniform random offset in [-jitter, +jitter] (the total is clamped at 0).
    latency_jitter_ms: float = field(default=0.0, metadata=_range(0.0, 600_000.0))
    # The process exits with code 137 right after answering the POST /faults that sets it.
    crash: bool = False
    # Subtracted from every reported confidence (response and metrics), clamped to [0, 1].
    confidence_shift: float = field(default=0.0, metadata=_range(-1.0, 1.0))
    # Input features are shifted by drift * (training std) before the model and the metrics see them.
    drift: float = field(default=0.0, metadata=_range(-100.0, 100.0))
    # Probability that each feature value of each row is dropped (treated as missing, imputed).
    missing_rate: float = field(default=0.0, metadata=_range(0.0, 1.0))
    # Probability that each prediction is flipped to the wrong class (confidence unchanged).
    accuracy_drop: float = field(default=0.0, metadata=_range(0.0, 1.0))
    # Share of inputs whose prediction is flipped, chosen by a hash of the row (`wrong_answer_for`): the same input
    # always gets the same wrong answer, so a test knows exactly which inputs a version disagrees on.
    wrong_answer_rate: float = field(default=0.0, metadata=_range(0.0, 1.0))
    # Readiness endpoints answer 503 (the server still serves inference).
    unready: bool = False
    # Memory allocated and kept every second, in MB (a leak); with --memory-limit-mb the process dies at the limit.
    leak_mb_per_s: float = field(default=0.0, metadata=_range(0.0, 10_000.0))

    def merged(self, patch: Mapping[str, Any]) -> Faults:
        """These faults with the fields in `patch` replaced; FaultError on unknown or invalid fields."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        unknown = sorted(set(patch) - set(fields))
        if unknown:
            raise FaultError(f"unknown fault field(s) {unknown}; known: {sorted(fields)}")
        changes: dict[str, Any] = {}
        for name, value in patch.items():
            spec = fields[name]
            if spec.type in ("bool", bool):
                if not isinstance(value, bool):
                    raise FaultError(f"{name} must be a boolean, got {value!r}")
                changes[name] = value
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise FaultError(f"{name} must be a finite number, got {value!r}")
            lo, hi = spec.metadata["min"], spec.metadata["max"]
            if not lo <= value <= hi:
                raise FaultError(f"{name} must be within [{lo}, {hi}], got {value!r}")
            changes[name] = float(value)
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class FaultInjector:
    """Applies the active faults to inference requests. Not thread-safe: use from the event loop only."""

    def __init__(self, seed: int, faults: Faults | None = None) -> None:
        self.faults = faults or Faults()
        self._rng = np.random.default_rng(seed)

    def delay_s(self) -> float:
        """Extra latency for the next request, in seconds (0 when no latency fault is active)."""
        f = self.faults
        if f.latency_ms == 0.0 and f.latency_jitter_ms == 0.0:
            return 0.0
        jitter = self._rng.uniform(-f.latency_jitter_ms, f.latency_jitter_ms) if f.latency_jitter_ms else 0.0
        return max(0.0, f.latency_ms + jitter) / 1000.0

    def should_fail(self) -> bool:
        rate = self.faults.error_rate
        return rate > 0.0 and bool(self._rng.random() < rate)

    def perturb_inputs(self, x: FloatArray, stds: FloatArray) -> FloatArray:
        """Apply the drift and missing-value faults to a request's rows (`x` itself if none is active)."""
        f = self.faults
        if f.drift:
            x = x + f.drift * stds
        if f.missing_rate:
            drop = self._rng.random(x.shape) < f.missing_rate
            x = np.where(drop, np.nan, x)
        return x

    def corrupt_labels(self, labels: IntArray) -> IntArray:
        """Flip each predicted class with probability accuracy_drop."""
        rate = self.faults.accuracy_drop
        if not rate:
            return labels
        flip = self._rng.random(labels.shape) < rate
        return np.where(flip, 1 - labels, labels)

    def wrong_answers(self, rows: FloatArray, labels: IntArray) -> IntArray:
        """Flip the prediction of every row `wrong_answer_for` picks at the wrong_answer_rate."""
        rate = self.faults.wrong_answer_rate
        if not rate:
            return labels
        flip = np.array([wrong_answer_for(row, rate) for row in rows.tolist()], dtype=bool)
        return np.where(flip, 1 - labels, labels)

    def shift_confidence(self, confidence: FloatArray) -> FloatArray:
        shift = self.faults.confidence_shift
        return np.clip(confidence - shift, 0.0, 1.0) if shift else confidence


def wrong_answer_for(row: list[float], rate: float) -> bool:
    """Whether the wrong_answer fault flips this input row: a hash of its values below `rate` (deterministic)."""
    digest = hashlib.blake2b(repr([float(v) for v in row]).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < rate * 2**64
