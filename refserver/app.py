"""The aiohttp application: OIP v2 endpoints, repository load/unload, outcomes, faults and /metrics.

Endpoints (every response carries `x-model-version: <version>`):
  GET  /v2                                   server metadata
  GET  /v2/health/live                       200 while the process runs
  GET  /v2/health/ready                      200 when the model is loaded (and no `unready` fault), else 503
  GET  /v2/models/{name}[/versions/{v}]/ready   same, for the model
  GET  /v2/models/{name}[/versions/{v}]      model metadata (feature names in parameters.feature_names)
  POST /v2/models/{name}[/versions/{v}]/infer   inference; 503 while not loaded, 500 on injected errors
  POST /v2/models/{name}/outcomes            late ground truth (see handle_outcomes)
  POST /v2/repository/index                  repository index
  POST /v2/repository/models/{name}/load     train/load the model (takes --load-delay-s longer)
  POST /v2/repository/models/{name}/unload   unload it
  GET|POST|DELETE /faults                    read, merge into, clear the active faults
  GET  /metrics                              Prometheus exposition (model_metrics contract + process)

With a memory limit (--memory-limit-mb) the process dies with exit code 137 when an allocation fails, as an
OOM-killed container does (refserver.memory).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    generate_latest,
)

from model_metrics import ModelMetrics
from refserver import dataset, outcomes, protocol
from refserver.faults import FaultError, FaultInjector, Faults
from refserver.memory import MemoryLeak, MemoryLimitError, apply_memory_limit, exit_out_of_memory, over_limit
from refserver.model import LinearModel, train

log = logging.getLogger(__name__)

VERSION_HEADER: Final = "x-model-version"
CRASH_EXIT_CODE: Final = 137
POSITIVE_RATE_METRIC: Final = "positive_rate"
LEAK_INTERVAL_S: Final = 0.1


@dataclass(frozen=True)
class ServerConfig:
    model_name: str
    version: str
    seed: int = 0
    start_unloaded: bool = False
    load_delay_s: float = 0.0
    faults: Faults = field(default_factory=Faults)
    outcome_memory: int = 100_000  # predictions remembered for late labels
    business_window: int = 1000  # predictions behind the positive_rate business metric
    memory_limit_mb: float | None = None  # applied once the start-up load is done (see refserver.memory)


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class RollingRate:
    """Share of 1s among the last `window` 0/1 values."""

    def __init__(self, window: int) -> None:
        self._values: deque[int] = deque(maxlen=window)
        self._ones = 0

    def extend(self, values: list[int]) -> None:
        for value in values:
            if len(self._values) == self._values.maxlen:
                self._ones -= self._values[0]
            self._values.append(value)
            self._ones += value

    @property
    def rate(self) -> float:
        return self._ones / len(self._values) if self._values else 0.0


class ModelServer:
    """State and handlers of one served model version."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.registry = CollectorRegistry()
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        self.metrics = ModelMetrics(
            config.model_name,
            config.version,
            feature_edges=dataset.frozen_reference_edges(),
            registry=self.registry,
        )
        self.injector = FaultInjector(config.seed, config.faults)
        self.model: LinearModel | None = None
        self._loading = False
        self._load_lock = asyncio.Lock()
        self._startup_load: asyncio.Task[None] | None = None
        self._predictions = outcomes.PredictionLog(config.outcome_memory)
        self._positive = RollingRate(config.business_window)
        self._ids = itertools.count(1)
        self._leak = MemoryLeak()
        self._leaker: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        if self.model is not None:
            return "READY"
        return "LOADING" if self._loading else "UNAVAILABLE"

    @property
    def ready(self) -> bool:
        return self.model is not None and not self.injector.faults.unready

    async def load(self) -> None:
        async with self._load_lock:
            if self.model is not None:
                return
            self._loading = True
            try:
                if self.config.load_delay_s > 0:
                    await asyncio.sleep(self.config.load_delay_s)
                loop = asyncio.get_running_loop()
                self.model = await loop.run_in_executor(None, train, self.config.seed)
            finally:
                self._loading = False
            self.metrics.set_loaded(True)
            log.info("model %s version %s loaded", self.config.model_name, self.config.version)

    async def unload(self) -> None:
        async with self._load_lock:
            self.model = None
            self.metrics.set_loaded(False)
            log.info("model %s version %s unloaded", self.config.model_name, self.config.version)

    async def on_startup(self, _app: web.Application) -> None:
        if not self.config.start_unloaded or self.config.memory_limit_mb is not None:
            self._startup_load = asyncio.create_task(self._start_up())
        self._leaker = asyncio.create_task(self._leak_loop())

    async def on_cleanup(self, _app: web.Application) -> None:
        for task in (self._startup_load, self._leaker):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _start_up(self) -> None:
        if not self.config.start_unloaded:
            await self._load_logged()
        limit = self.config.memory_limit_mb
        if limit is not None:
            # In the executor's thread: it exists before the cap, so a later load does not need a new thread.
            try:
                await asyncio.get_running_loop().run_in_executor(None, apply_memory_limit, limit)
            except MemoryLimitError as exc:
                log.error("cannot serve: %s", exc)
                os._exit(2)

    async def _leak_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(LEAK_INTERVAL_S)
            now = loop.time()
            rate = self.injector.faults.leak_mb_per_s
            if rate:
                try:
                    self._leak.leak(rate * 1024 * 1024 * (now - last))
                except MemoryError:
                    exit_out_of_memory(f"leak fault, {self._leak.leaked_bytes / 2**20:.0f} MB leaked")
                limit = self.config.memory_limit_mb
                if limit is not None and over_limit(limit):
                    exit_out_of_memory(f"leak fault, resident memory at the {limit:g} MB limit")
            last = now

    async def _load_logged(self) -> None:
        try:
            await self.load()
        except Exception:
            log.exception("loading the model failed")

    # -- helpers -----------------------------------------------------------------------------------------

    def _require_model(self, request: web.Request) -> None:
        name = request.match_info["name"]
        if name != self.config.model_name:
            raise ApiError(404, f"unknown model {name!r}")
        version = request.match_info.get("version")
        if version is not None and version != self.config.version:
            raise ApiError(404, f"unknown version {version!r} of model {name!r}")

    @staticmethod
    async def _json_body(request: web.Request) -> Any:
        try:
            return await request.json()
        except ValueError as exc:
            raise ApiError(400, f"invalid JSON body: {exc}") from None

    # -- health and metadata -----------------------------------------------------------------------------

    async def handle_server_metadata(self, _request: web.Request) -> web.Response:
        return web.json_response({"name": "refserver", "version": "1", "extensions": ["model_repository"]})

    async def handle_live(self, _request: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def handle_ready(self, _request: web.Request) -> web.Response:
        return web.json_response({"ready": self.ready}, status=200 if self.ready else 503)

    async def handle_model_ready(self, request: web.Request) -> web.Response:
        self._require_model(request)
        return await self.handle_ready(request)

    async def handle_model_metadata(self, request: web.Request) -> web.Response:
        self._require_model(request)
        names = dataset.feature_names()
        return web.json_response(
            {
                "name": self.config.model_name,
                "versions": [self.config.version],
                "platform": "scikit-learn",
                "inputs": [{"name": protocol.INPUT_NAME, "datatype": "FP32", "shape": [-1, len(names)]}],
                "outputs": [
                    {"name": "predict", "datatype": "INT64", "shape": [-1]},
                    {"name": "confidence", "datatype": "FP32", "shape": [-1]},
                ],
                "parameters": {
                    "feature_names": names,
                    "classes": {"0": "malignant", "1": "benign"},
                    "reference_edges": dataset.frozen_reference_edges(),
                    "state": self.state,
                },
            }
        )

    # -- inference ---------------------------------------------------------------------------------------

    async def handle_infer(self, request: web.Request) -> web.Response:
        """Latency fault, then error fault, then readiness, then the request itself.

        Metrics: every request counts; 5xx answers count as errors, 4xx (client mistakes) do not.
        """
        self._require_model(request)
        start = time.perf_counter()
        ok = False
        try:
            delay = self.injector.delay_s()
            if delay:
                await asyncio.sleep(delay)
            if self.injector.should_fail():
                return _error(500, "injected fault: inference failed")
            model = self.model
            if model is None:
                return _error(503, f"model {self.config.model_name!r} is not loaded")
            try:
                parsed = protocol.parse_infer_request(await request.json())
            except ValueError as exc:  # ProtocolError and json.JSONDecodeError
                ok = True
                return _error(400, str(exc))
            response = web.json_response(self._predict(model, parsed))
            ok = True
            return response
        except MemoryError:
            raise
        except Exception:
            log.exception("inference failed")
            return _error(500, "internal error")
        finally:
            self.metrics.observe_request(time.perf_counter() - start, ok=ok)

    def _predict(self, model: LinearModel, request: protocol.InferRequest) -> dict[str, Any]:
        rows = self.injector.perturb_inputs(request.rows, model.stds)
        for row in rows.tolist():
            self.metrics.observe_features(dict(zip(dataset.FEATURE_NAMES, row, strict=True)))
        prediction = model.predict(rows)
        labels: list[int] = self.injector.wrong_answers(rows, self.injector.corrupt_labels(prediction.labels)).tolist()
        confidence: list[float] = self.injector.shift_confidence(prediction.confidence).tolist()
        for value in confidence:
            self.metrics.observe_prediction(value)
        self._positive.extend(labels)
        self.metrics.set_business_metric(POSITIVE_RATE_METRIC, self._positive.rate)
        response_id = request.request_id or f"{self.config.version}-{next(self._ids)}"
        if request.labels is not None:
            self._record_outcomes(*outcomes.score(labels, request.labels))
        else:
            self._predictions.remember(response_id, labels)
        return protocol.infer_response(
            model_name=self.config.model_name,
            version=self.config.version,
            response_id=response_id,
            labels=labels,
            confidence=confidence,
        )

    # -- outcomes ----------------------------------------------------------------------------------------

    def _record_outcomes(self, correct: int, incorrect: int) -> None:
        if correct:
            self.metrics.observe_outcome(True, correct)
        if incorrect:
            self.metrics.observe_outcome(False, incorrect)

    async def handle_outcomes(self, request: web.Request) -> web.Response:
        """Ground truth arriving late. The body holds any of:

        - `"id": "<infer response id>", "labels": [0, 1, ...]` (one label per row of that request),
        - `"outcomes": [{"id": ..., "labels": [...]}, ...]`,
        - `"correct": n, "incorrect": m` (already scored counts, recorded as they are).

        Ids are matched against the last --outcome-memory inference responses, each at most once. The answer
        counts what was recorded and the ids that were unknown, evicted or already used (`unmatched`) or
        whose label count did not match (`rejected`).
        """
        self._require_model(request)
        body = await self._json_body(request)
        if not isinstance(body, dict):
            raise ApiError(400, "body must be a JSON object")
        try:
            items = self._outcome_items(body)
            counted = [body.get(key, 0) for key in ("correct", "incorrect")]
            if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counted):
                raise protocol.ProtocolError("'correct' and 'incorrect' must be non-negative integers")
        except protocol.ProtocolError as exc:
            raise ApiError(400, str(exc)) from None
        correct, incorrect = counted
        unmatched: list[str] = []
        rejected: list[str] = []
        for response_id, labels in items:
            predictions = self._predictions.take(response_id)
            if predictions is None:
                unmatched.append(response_id)
            elif len(predictions) != len(labels):
                rejected.append(response_id)
            else:
                c, i = outcomes.score(predictions, labels)
                correct += c
                incorrect += i
        self._record_outcomes(correct, incorrect)
        return web.json_response(
            {"correct": correct, "incorrect": incorrect, "unmatched": unmatched, "rejected": rejected}
        )

    @staticmethod
    def _outcome_items(body: dict[str, Any]) -> list[tuple[str, list[int]]]:
        raw = list(body.get("outcomes", []))
        if "id" in body or "labels" in body:
            raw.append({"id": body.get("id"), "labels": body.get("labels")})
        items = []
        for item in raw:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                raise protocol.ProtocolError("each outcome needs a string 'id' and a 'labels' list")
            items.append((item["id"], protocol.parse_labels(item.get("labels"))))
        return items

    # -- repository extension ----------------------------------------------------------------------------

    async def handle_repository_index(self, _request: web.Request) -> web.Response:
        entry = {"name": self.config.model_name, "version": self.config.version, "state": self.state}
        return web.json_response([entry])

    async def handle_load(self, request: web.Request) -> web.Response:
        self._require_model(request)
        await self.load()
        return web.json_response({"name": self.config.model_name, "state": self.state})

    async def handle_unload(self, request: web.Request) -> web.Response:
        self._require_model(request)
        await self.unload()
        return web.json_response({"name": self.config.model_name, "state": self.state})

    # -- faults ------------------------------------------------------------------------------------------

    async def handle_get_faults(self, _request: web.Request) -> web.Response:
        return web.json_response(self.injector.faults.to_json())

    async def handle_set_faults(self, request: web.Request) -> web.StreamResponse:
        """Merge the given fields into the active faults (fields not given keep their value)."""
        body = await self._json_body(request)
        if not isinstance(body, dict):
            raise ApiError(400, "body must be a JSON object of fault fields")
        try:
            faults = self.injector.faults.merged(body)
        except FaultError as exc:
            raise ApiError(400, str(exc)) from None
        if faults.crash:
            await self._reply_and_crash(request, faults)
        self.injector.faults = faults
        log.warning("faults set: %s", {k: v for k, v in faults.to_json().items() if v})
        return web.json_response(faults.to_json())

    async def handle_clear_faults(self, _request: web.Request) -> web.Response:
        self.injector.faults = Faults()
        log.warning("faults cleared")
        return web.json_response(self.injector.faults.to_json())

    async def _reply_and_crash(self, request: web.Request, faults: Faults) -> None:
        response = web.json_response(faults.to_json())
        await response.prepare(request)
        await response.write_eof()
        transport = request.transport
        for _ in range(200):  # let the kernel take the reply (at most ~1 s) before dying
            if transport is None or not transport.get_write_buffer_size():
                break
            await asyncio.sleep(0.005)
        log.warning("crash fault: exiting with code %d", CRASH_EXIT_CODE)
        os._exit(CRASH_EXIT_CODE)

    # -- metrics -----------------------------------------------------------------------------------------

    async def handle_metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


SERVER_KEY: Final = web.AppKey("server", ModelServer)


def create_app(config: ServerConfig) -> web.Application:
    server = ModelServer(config)
    app = web.Application(middlewares=[_json_errors])
    app[SERVER_KEY] = server
    version = config.version

    async def add_version_header(_request: web.Request, response: web.StreamResponse) -> None:
        response.headers[VERSION_HEADER] = version

    app.on_response_prepare.append(add_version_header)
    app.on_startup.append(server.on_startup)
    app.on_cleanup.append(server.on_cleanup)
    model = "/v2/models/{name}"
    versioned = "/v2/models/{name}/versions/{version}"
    app.router.add_get("/v2", server.handle_server_metadata)
    app.router.add_get("/v2/health/live", server.handle_live)
    app.router.add_get("/v2/health/ready", server.handle_ready)
    for prefix in (model, versioned):
        app.router.add_get(prefix, server.handle_model_metadata)
        app.router.add_get(f"{prefix}/ready", server.handle_model_ready)
        app.router.add_post(f"{prefix}/infer", server.handle_infer)
    app.router.add_post(f"{model}/outcomes", server.handle_outcomes)
    app.router.add_post("/v2/repository/index", server.handle_repository_index)
    app.router.add_post("/v2/repository/models/{name}/load", server.handle_load)
    app.router.add_post("/v2/repository/models/{name}/unload", server.handle_unload)
    app.router.add_get("/faults", server.handle_get_faults)
    app.router.add_post("/faults", server.handle_set_faults)
    app.router.add_delete("/faults", server.handle_clear_faults)
    app.router.add_get("/metrics", server.handle_metrics)
    return app


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer errors as OIP JSON `{"error": "..."}`, router errors (404, 405) included."""
    try:
        return await handler(request)
    except MemoryError:
        exit_out_of_memory(f"{request.method} {request.path}")
        raise
    except ApiError as exc:
        return _error(exc.status, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason)
