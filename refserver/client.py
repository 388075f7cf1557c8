"""Helpers for clients of the reference server: realistic OIP v2 request bodies built from dataset rows.

Rows come from the serving part of the dataset (never trained on), so the labels returned with them measure
real accuracy. Used by tests, the demo, the benchmark and the load generator.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from refserver import dataset
from refserver.protocol import INPUT_NAME


def feature_names() -> list[str]:
    """The model's input feature names, in the column order of the input tensor."""
    return dataset.feature_names()


def sample_rows(n: int = 1, seed: int | None = None) -> tuple[list[list[float]], list[int]]:
    """`n` rows drawn with replacement from the serving data, and their true labels (1 = benign)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    data = dataset.load()
    picks = np.random.default_rng(seed).integers(0, len(data.y_serve), size=n)
    return data.x_serve[picks].tolist(), data.y_serve[picks].tolist()


def sample_request(
    n: int = 1, seed: int | None = None, *, with_labels: bool = False, request_id: str | None = None
) -> dict[str, Any]:
    """An OIP v2 inference request body for `n` sampled rows (one [n, F] FP32 tensor, row-major).

    With `with_labels`, the true labels ride along as `parameters.labels` and the server records the
    outcomes at once; without, send them later with `outcome_body(response["id"], labels)` (get the labels
    from `sample_rows` with the same `n` and `seed`).
    """
    rows, labels = sample_rows(n, seed)
    body: dict[str, Any] = {
        "inputs": [
            {
                "name": INPUT_NAME,
                "shape": [n, dataset.N_FEATURES],
                "datatype": "FP32",
                "data": [value for row in rows for value in row],
            }
        ]
    }
    if request_id is not None:
        body["id"] = request_id
    if with_labels:
        body["parameters"] = {"labels": labels}
    return body


def outcome_body(response_id: str, labels: Sequence[int]) -> dict[str, Any]:
    """The POST /v2/models/{name}/outcomes body delivering late labels for one inference response."""
    return {"id": response_id, "labels": [int(v) for v in labels]}
