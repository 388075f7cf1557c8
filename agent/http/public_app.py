"""The public HTTP app: /healthz, /readyz and Prometheus /metrics."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent.engine.traffic import TrafficController
from agent.telemetry import AgentMetrics

CONTROLLER = web.AppKey("controller", TrafficController)
METRICS = web.AppKey("metrics", AgentMetrics)


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


def make_public_app(controller: TrafficController, agent_metrics: AgentMetrics) -> web.Application:
    app = web.Application()
    app[CONTROLLER] = controller
    app[METRICS] = agent_metrics
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
