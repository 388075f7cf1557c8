"""Small measuring helpers shared by the benchmarks."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def percentile(values: Iterable[float], q: float) -> float:
    """Linear-interpolated quantile (as numpy's default); NaNs are ignored; NaN when there is no value."""
    ordered = sorted(v for v in values if not math.isnan(v))
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def rss_mb(pid: int | None) -> float:
    """Resident set size of a process in MiB (VmRSS), NaN when it is gone."""
    if pid is None:
        return float("nan")
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def wall_to_monotonic_offset() -> float:
    """time.time() - time.monotonic() (the same for every process on the machine), from the tightest paired read."""
    best: tuple[float, float] | None = None
    for _ in range(20):
        m0 = time.monotonic()
        w = time.time()
        m1 = time.monotonic()
        if best is None or m1 - m0 < best[0]:
            best = (m1 - m0, w - (m0 + m1) / 2)
    assert best is not None
    return best[1]


def write_result(name: str, result: Mapping[str, Any]) -> None:
    """A benchmark's result: bench/results/NAME.json, and one JSON object as the last line printed."""
    out = Path(__file__).resolve().parent.parent / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result), flush=True)
