"""Open Inference Protocol v2 request parsing and response building for the reference model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from refserver.dataset import N_FEATURES, FloatArray

INPUT_NAME: Final = "input-0"
ACCEPTED_DATATYPES: Final = frozenset({"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64"})


class ProtocolError(ValueError):
    """A malformed inference request (HTTP 400)."""


@dataclass(frozen=True)
class InferRequest:
    rows: FloatArray  # shape [N, F]; NaN where the request sent null
    request_id: str | None
    labels: list[int] | None  # ground truth sent inline as parameters.labels, one per row


def parse_infer_request(body: Any) -> InferRequest:
    """Validate an OIP v2 request carrying one [N, F] tensor (nulls allowed: they mean "missing")."""
    if not isinstance(body, dict):
        raise ProtocolError("request body must be a JSON object")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise ProtocolError(f"'inputs' must be a list holding exactly one tensor of shape [N, {N_FEATURES}]")
    tensor: dict[str, Any] = inputs[0]
    datatype = tensor.get("datatype")
    if datatype not in ACCEPTED_DATATYPES:
        raise ProtocolError(f"unsupported datatype {datatype!r}; use one of {sorted(ACCEPTED_DATATYPES)}")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise ProtocolError("'shape' must be a list of integers")
    if shape == [N_FEATURES]:
        shape = [1, N_FEATURES]
    if len(shape) != 2 or shape[1] != N_FEATURES or shape[0] < 1:
        raise ProtocolError(f"shape must be [N, {N_FEATURES}] with N >= 1, got {shape}")
    data = tensor.get("data")
    if not isinstance(data, list):
        raise ProtocolError("'data' must be a list (row-major; nested rows are accepted too)")
    try:
        rows = np.asarray(data, dtype=np.float64)  # null -> NaN
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"'data' is not numeric: {exc}") from None
    if rows.size != shape[0] * shape[1]:
        raise ProtocolError(f"'data' holds {rows.size} values, shape {shape} needs {shape[0] * shape[1]}")
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError("'id' must be a string")
    return InferRequest(
        rows=rows.reshape(shape[0], shape[1]),
        request_id=request_id or None,
        labels=_inline_labels(body.get("parameters"), shape[0]),
    )


def _inline_labels(parameters: Any, n_rows: int) -> list[int] | None:
    if parameters is None:
        return None
    if not isinstance(parameters, dict):
        raise ProtocolError("'parameters' must be an object")
    labels = parameters.get("labels")
    if labels is None:
        return None
    checked = parse_labels(labels)
    if len(checked) != n_rows:
        raise ProtocolError(f"parameters.labels holds {len(checked)} labels for {n_rows} rows")
    return checked


def parse_labels(labels: Any) -> list[int]:
    """A list of class labels (0 or 1), or ProtocolError."""
    if not isinstance(labels, list) or not all(v in (0, 1) and not isinstance(v, float) for v in labels):
        raise ProtocolError("labels must be a list of 0/1 integers")
    return [int(v) for v in labels]


def infer_response(
    *, model_name: str, version: str, response_id: str, labels: Sequence[int], confidence: Sequence[float]
) -> dict[str, Any]:
    n = len(labels)
    return {
        "model_name": model_name,
        "model_version": version,
        "id": response_id,
        "outputs": [
            {"name": "predict", "shape": [n], "datatype": "INT64", "data": labels},
            {"name": "confidence", "shape": [n], "datatype": "FP32", "data": confidence},
        ],
    }
