"""Freezing reference bins: quantile bucket edges computed once from reference (training) data."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable

# Edges are rounded to this many significant digits so that `le` labels stay readable and another
# implementation can reproduce them; rounding happens before deduplication, so edges stay strictly increasing.
EDGE_SIGNIFICANT_DIGITS = 6


def reference_edges(values: Iterable[float | None], bins: int = 10) -> list[float]:
    """Return the upper bucket bounds that split `values` into `bins` equal-frequency bins.

    The result holds the `bins - 1` interior quantile cut points (the +Inf bucket closes the last bin),
    rounded to 6 significant digits, deduplicated and strictly increasing. Ties in the data (discrete
    features) merge cut points, so fewer edges than `bins - 1` may come back; constant data gives one edge.
    None and non-finite values are ignored. With the edges frozen from training data, each bucket holds
    ~1/bins of the reference mass, which is what a PSI-style drift comparison wants.

    Raises ValueError if `bins` < 2 or no finite value is given.
    """
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    data = sorted(float(v) for v in values if v is not None and math.isfinite(float(v)))
    if not data:
        raise ValueError("reference_edges needs at least one finite value")
    cuts = [data[0]] if len(data) == 1 else statistics.quantiles(data, n=bins, method="inclusive")
    rounded = {float(f"{cut:.{EDGE_SIGNIFICANT_DIGITS}g}") for cut in cuts}
    return sorted(rounded)
