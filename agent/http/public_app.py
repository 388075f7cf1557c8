"""The public HTTP app: /healthz, /readyz and Prometheus /metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent.engine.traffic import TrafficController
from agent.telemetry import AgentMetrics

CONTROLLER = web.AppKey("controller", TrafficController)
METRICS = web.AppKey("metrics", AgentMetrics)
HealthReport = Callable[[], dict[str, dict[str, Any]]]
HEALTH_REPORT: web.AppKey[HealthReport] = web.AppKey("health_report")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    controller = request.app[CONTROLLER]
    ready = controller.ready()
    request.app[METRICS].ready.set(1 if ready else 0)
    if ready:
        return web.json_response({"status": "ready", "served": dict(controller.served() or ())})
    return web.json_response(
        {"status": "not ready", "reason": "no connected Envoy has ACKed the current config yet"}, status=503
    )


async def metrics(request: web.Request) -> web.Response:
    m = request.app[METRICS]
    m.ready.set(1 if request.app[CONTROLLER].ready() else 0)
    body = generate_latest(m.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def version_health(request: web.Request) -> web.Response:
    """Per version: model loaded (ready), feature pipeline reachable, prediction serving (golden inference)."""
    return web.json_response(request.app[HEALTH_REPORT]())


def make_public_app(
    controller: TrafficController,
    agent_metrics: AgentMetrics,
    *,
    health_report: Callable[[], dict[str, dict[str, Any]]] = dict,
) -> web.Application:
    app = web.Application()
    app[CONTROLLER] = controller
    app[METRICS] = agent_metrics
    app[HEALTH_REPORT] = health_report
    app.router.add_get("/v1/health/versions", version_health)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
