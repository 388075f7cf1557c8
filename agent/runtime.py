"""The wiring: builds every part from the config, runs each long-running part as a named task, owns shutdown.

Shutdown order is the reverse of start-up: stop taking control requests, stop the HTTP surfaces, close the xDS
server (Envoy keeps its last config and retries), then close the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import grpc
from aiohttp import web

from agent.adapters.nop_route_sink import NopRouteSink
from agent.adapters.store.sqlite_store import SqliteStateStore
from agent.adapters.xds.cache import SnapshotCache
from agent.adapters.xds.callbacks import MetricsCallbacks
from agent.adapters.xds.resources import ModelTopology, VersionUpstream
from agent.adapters.xds.route_sink import XdsRouteSink
from agent.adapters.xds.server import start_xds_server
from agent.config import AgentConfig, ControlSection
from agent.engine.traffic import TrafficController
from agent.http.control_app import make_control_app
from agent.http.public_app import make_public_app
from agent.http.status_view import StatusView
from agent.telemetry import AgentMetrics, ServedVersionsCollector

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The agent cannot start; the message says what to fix."""


def read_token(control: ControlSection) -> str:
    if control.token_file is not None:
        try:
            token = control.token_file.read_text().strip()
        except OSError as exc:
            raise StartupError(f"control.token_file {control.token_file}: cannot read: {exc.strerror}") from None
        if not token:
            raise StartupError(f"control.token_file {control.token_file} is empty")
        return token
    token = os.environ.get(control.token_env, "").strip()
    if not token:
        raise StartupError(
            f"the control API needs a bearer token: set control.token_file, or the environment variable "
            f"{control.token_env}"
        )
    return token


def topology_from_config(config: AgentConfig) -> ModelTopology:
    return ModelTopology(
        model=config.model.name,
        upstreams=tuple(VersionUpstream(v.tag, v.host, v.port) for v in config.versions),
        listener_host=config.envoy.listener.address,
        listener_port=config.envoy.listener.port,
        route_timeout_s=config.envoy.route_timeout_s,
        connect_timeout_s=config.envoy.connect_timeout_s,
    )


@dataclass
class Supervisor:
    """Named long-running tasks; the first one to fail stops the agent."""

    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    failure: BaseException | None = None

    def spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._on_done)
        self.tasks[name] = task

    def _on_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("task %s failed: %r; shutting down", task.get_name(), exc, exc_info=exc)
            self.failure = self.failure or exc
            self.stop.set()

    async def cancel_all(self) -> None:
        for task in reversed(list(self.tasks.values())):
            task.cancel()
        for task in self.tasks.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _serve_site(app: web.Application, host: str, port: int, name: str) -> Callable[[], Awaitable[None]]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise StartupError(f"{name} could not listen on {host}:{port}: {exc.strerror}") from None
    log.info("%s listening on http://%s:%d", name, host, port)
    return runner.cleanup


async def run_agent(config: AgentConfig, *, dry_run: bool = False) -> int:
    token = read_token(config.control)
    metrics = AgentMetrics(config.model.name)
    try:
        store = await SqliteStateStore.open(config.state_dir / "state.db")
    except Exception as exc:
        raise StartupError(f"state_dir {config.state_dir}: cannot open the state store: {exc}") from None
    supervisor = Supervisor()
    cleanups: list[Callable[[], Awaitable[None]]] = [store.close]
    try:
        cache = SnapshotCache(MetricsCallbacks(metrics))
        xds_sink = None if dry_run else XdsRouteSink(cache, topology_from_config(config))
        controller = TrafficController(
            model=config.model.name,
            versions=config.tags,
            stable=config.stable,
            store=store,
            sink=xds_sink or NopRouteSink(),
            metrics=metrics,
            ack_timeout_s=config.ack_timeout_s,
        )
        try:
            policy = await controller.start(config.starting_weights())
        except ValueError as exc:
            raise StartupError(str(exc)) from None
        metrics.registry.register(ServedVersionsCollector(config.model.name, controller.served))
        if xds_sink is not None:
            xds_sink.publish_initial(policy.weights)
            try:
                server, port = await start_xds_server(cache, config.xds.address, config.xds.port)
            except (OSError, RuntimeError) as exc:
                raise StartupError(f"xds could not listen on {config.xds.address}:{config.xds.port}: {exc}") from None
            log.info("xDS (ADS) listening on %s:%d", config.xds.address, port)
            cleanups.append(_grpc_stopper(server))
            supervisor.spawn("xds-server", _wait_grpc(server))
        status_view = StatusView(config, controller, None if dry_run else cache)
        cleanups.append(
            await _serve_site(make_public_app(controller, metrics), config.http.address, config.http.port, "http")
        )
        cleanups.append(
            await _serve_site(
                make_control_app(controller, status_view, token),
                config.control.listen.address,
                config.control.listen.port,
                "control API",
            )
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, supervisor.stop.set)
        log.info(
            "agent for model %s (%s) serving revision %d %s%s",
            config.model.name,
            config.model.tier,
            policy.revision,
            dict(policy.weights),
            " [dry run: no traffic moves]" if dry_run else "",
        )
        await supervisor.stop.wait()
        log.info("shutting down")
    finally:
        await supervisor.cancel_all()
        for cleanup in reversed(cleanups):
            try:
                await cleanup()
            except Exception:
                log.exception("error during shutdown")
    return 1 if supervisor.failure else 0


async def _wait_grpc(server: grpc.aio.Server) -> None:
    await server.wait_for_termination()


def _grpc_stopper(server: grpc.aio.Server) -> Callable[[], Awaitable[None]]:
    async def stop() -> None:
        await server.stop(grace=0.5)

    return stop
