"""An MLServer custom runtime (`implementation: fault_model.FaultModel`) for tests and the MLServer demo.

Runs inside MLServer's own interpreter (.venv-mlserver), never the agent's. It serves the reference server's model
shape on MLServer: scikit-learn's bundled breast-cancer data, the same ten features as `refserver` (one input tensor
`[N, 10]`, or `[10]` for one row), a StandardScaler + LogisticRegression trained at load (~50 ms, deterministic per
`extra.seed`), outputs `predict` (INT64 `[N]`) and `confidence` (FP32 `[N]`). Every answer carries the header
`x-model-version` (MLServer turns `parameters.headers` of a response into HTTP headers), like the reference server.

Faults are read per request from the JSON file `extra.faults_file` (re-read when its mtime changes; a missing or
empty file means no faults), so a test flips them while the server runs:

- `errors`: fraction 0..1 of requests answered with `InferenceError` (MLServer: HTTP 400, counted in
  `model_infer_request_failure_total`), spread evenly (every second request for 0.5), not at random;
- `server_errors`: fraction 0..1 answered with an unexpected exception (MLServer: HTTP 500);
- `wrong`: true -> every prediction inverted (1 - class), still HTTP 200;
- `slow_ms`: extra latency per request in milliseconds.

`extra.load_delay_s` delays `load()` (a slow model load, for warm-up tests).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from typing import Any

import numpy as np
from mlserver import MLModel
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse, Parameters, ResponseOutput

# The reference server's ten columns of the breast-cancer data, in input-tensor order.
COLUMNS = (
    "mean radius",
    "mean texture",
    "mean smoothness",
    "mean compactness",
    "mean concave points",
    "mean symmetry",
    "worst radius",
    "worst texture",
    "worst area",
    "worst concave points",
)


class FaultSwitch:
    """The faults in one JSON file, re-read when the file changes."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._mtime: float | None = None
        self.faults: dict[str, Any] = {}
        self._served = 0
        self._server_served = 0

    def refresh(self) -> None:
        if not self.path:
            return
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            self._mtime, self.faults = None, {}
            return
        if mtime != self._mtime:
            with open(self.path, encoding="utf-8") as f:
                text = f.read().strip()
            self.faults = json.loads(text) if text else {}
            self._mtime = mtime

    def _due(self, key: str, counter: str) -> bool:
        fraction = float(self.faults.get(key) or 0.0)
        n = getattr(self, counter)
        setattr(self, counter, n + 1)
        return math.floor((n + 1) * fraction) > math.floor(n * fraction)

    def error_due(self) -> bool:
        return self._due("errors", "_served")

    def server_error_due(self) -> bool:
        return self._due("server_errors", "_server_served")


class FaultModel(MLModel):
    async def load(self) -> bool:
        from sklearn.datasets import load_breast_cancer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        extra = (self.settings.parameters.extra if self.settings.parameters else None) or {}
        delay = float(extra.get("load_delay_s") or 0.0)
        if delay > 0:
            await asyncio.sleep(delay)
        data = load_breast_cancer()
        names = list(data.feature_names)
        x = data.data[:, [names.index(c) for c in COLUMNS]]
        rng = np.random.default_rng(int(extra.get("seed") or 0))
        rows = rng.permutation(len(x))[: int(len(x) * 0.7)]
        self._model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        self._model.fit(x[rows], data.target[rows])
        self._faults = FaultSwitch(extra.get("faults_file"))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        self._faults.refresh()
        faults = self._faults.faults
        slow_ms = float(faults.get("slow_ms") or 0.0)
        if slow_ms > 0:
            await asyncio.sleep(slow_ms / 1000.0)
        if self._faults.server_error_due():
            raise RuntimeError("injected server error (fault server_errors)")
        if self._faults.error_due():
            raise InferenceError("injected model failure (fault errors)")
        if len(payload.inputs) != 1:
            raise InferenceError(f"expected one input tensor, got {len(payload.inputs)}")
        request_input = payload.inputs[0]
        try:
            x = np.asarray(request_input.data.root if hasattr(request_input.data, "root") else request_input.data)
            x = x.astype(np.float64).reshape(-1, len(COLUMNS))
        except (TypeError, ValueError) as exc:
            raise InferenceError(f"input {request_input.name!r}: expected shape [N, {len(COLUMNS)}]: {exc}") from exc
        proba = self._model.predict_proba(x)
        predict = proba.argmax(axis=1)
        confidence = proba.max(axis=1)
        if faults.get("wrong"):
            predict = 1 - predict
        version = self.version or ""
        return InferenceResponse(
            id=payload.id,
            model_name=self.name,
            model_version=self.version,
            outputs=[
                ResponseOutput(name="predict", datatype="INT64", shape=[len(predict)], data=predict.tolist()),
                ResponseOutput(name="confidence", datatype="FP32", shape=[len(confidence)], data=confidence.tolist()),
            ],
            parameters=Parameters(headers={"x-model-version": version}),
        )
