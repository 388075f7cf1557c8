"""The wiring: builds every part from the config, runs each long-running part as a named task, owns shutdown.

Shutdown order is the reverse of start-up: stop taking control requests, stop the HTTP surfaces, close the xDS
server (Envoy keeps its last config and retries), then close the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc
from aiohttp import web

from agent.adapters.alertmanager_poller import AlertmanagerPoller, decision_submitter
from agent.adapters.archive.forensic_archive import ForensicArchiver
from agent.adapters.forensic_providers import forensic_providers
from agent.adapters.nop_route_sink import NopRouteSink
from agent.adapters.registry.file_registry import open_registry
from agent.adapters.signals.envoy_stats import EnvoyStatsSource
from agent.adapters.signals.model_metrics_source import ModelMetricsSource
from agent.adapters.signals.oip_health import GoldenCheck, OipHealthSource, VersionProbe
from agent.adapters.store.sqlite_store import SqliteStateStore
from agent.adapters.xds.cache import SnapshotCache
from agent.adapters.xds.callbacks import MetricsCallbacks
from agent.adapters.xds.resources import ModelTopology, VersionUpstream
from agent.adapters.xds.route_sink import XdsRouteSink
from agent.adapters.xds.server import start_xds_server
from agent.alerts.auth import CredentialsError, load_webhook_credentials
from agent.alerts.intake import AlertIntake
from agent.alerts.metrics import AlertSourceMetrics
from agent.config import AgentConfig, ControlSection
from agent.domain.signals import HistoryLimits, SignalHistory
from agent.engine.monitor import Monitor
from agent.engine.orchestrator import RollbackOrchestrator, RollbackSettings
from agent.engine.planner import RegistryPlanner
from agent.engine.rules_watch import RulesWatcher
from agent.engine.traffic import TrafficController
from agent.engine.verification import BaselineVerifier
from agent.http.control_app import make_control_app
from agent.http.public_app import make_public_app
from agent.http.status_view import StatusView
from agent.http.webhook import AlertWebhook, add_alert_webhook
from agent.log_buffer import RecentLogHandler
from agent.ports.signals import SignalSource
from agent.registry import Constraints, RegistryFileError
from agent.telemetry import AgentMetrics, ServedVersionsCollector, VersionStatusCollector
from agent.triggers.engine import RuleEngine
from agent.triggers.errors import RuleFileError
from agent.triggers.ruleset import load_rule_set

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


def _constraints(config: AgentConfig) -> Constraints:
    c = config.constraints
    return Constraints(
        memory_mb=int(c.memory_mb) if c.memory_mb is not None else None,
        cpu=c.cpu,
        gpu=c.gpu,
        runtimes=frozenset(c.runtimes) or None,
        features=tuple(c.feature_schema) or None,
        deployed=frozenset(config.tags),
    )


def _rule_engine(config: AgentConfig) -> RuleEngine:
    if config.rules.file is None:
        log.warning("no rules.file configured: the agent makes no automatic decisions, only operator actions")
        return RuleEngine()
    try:
        rule_set = load_rule_set(config.rules.file, config.model.tier, config.rules.tiers_dir)
    except RuleFileError as exc:
        raise StartupError(f"rules.file is not usable:\n{exc}") from None
    log.info("%d rules loaded from %s (tier %s)", len(rule_set.rules), config.rules.file, rule_set.tier)
    return RuleEngine(rule_set)


async def run_agent(config: AgentConfig, *, dry_run: bool = False, log_tail: RecentLogHandler | None = None) -> int:
    token = read_token(config.control)
    rules = _rule_engine(config)
    metrics = AgentMetrics(config.model.name)
    metrics.model_info.labels(config.model.name, config.model.tier).set(1)
    metrics.rules_loaded.labels(config.model.name).set(len(rules.rule_set.rules))
    try:
        store = await SqliteStateStore.open(config.state_dir / "state.db")
    except Exception as exc:
        raise StartupError(f"state_dir {config.state_dir}: cannot open the state store: {exc}") from None
    supervisor = Supervisor()
    cleanups: list[Callable[[], Awaitable[None]]] = [store.close]
    try:
        try:
            registry = await open_registry(config, config.registry_file)
        except RegistryFileError as exc:
            raise StartupError(f"registry_file is not usable:\n{exc}") from None
        cleanups.append(registry.close)
        session = aiohttp.ClientSession()
        cleanups.append(session.close)
        cache = SnapshotCache(MetricsCallbacks(metrics))
        topology = topology_from_config(config)
        xds_sink = None if dry_run else XdsRouteSink(cache, topology)
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

        admin_url = f"http://{config.envoy.admin.address}:{config.envoy.admin.port}"
        envoy_stats = EnvoyStatsSource(
            session,
            admin_url,
            {topology.cluster_name(v.tag): v.tag for v in config.versions},
            config.signals.timeout_s,
        )
        health = OipHealthSource(
            session,
            [
                VersionProbe(v.tag, f"http://{v.endpoint}", config.probes.oip_model or config.model.name)
                for v in config.versions
            ],
            golden=(
                GoldenCheck(g.request, g.output, g.expect, g.tolerance)
                if (g := config.probes.golden) is not None
                else None
            ),
            pipeline_url=config.probes.pipeline_url,
            golden_interval_s=config.probes.golden_interval_s,
            timeout_s=config.probes.timeout_s,
        )
        sources: list[SignalSource] = []
        if config.signals.envoy_stats:
            sources.append(envoy_stats)
        if config.signals.model_metrics:
            sources.append(
                ModelMetricsSource(
                    session,
                    {v.tag: f"http://{v.endpoint}{v.metrics_path}" for v in config.versions},
                    config.signals.timeout_s,
                )
            )
        if config.signals.health:
            sources.append(health)
        planner = RegistryPlanner(registry, _constraints(config))
        await planner.refresh_baselines()
        metrics.registry.register(VersionStatusCollector(config.model.name, lambda: planner.statuses))
        histories: dict[str, SignalHistory] = {}
        providers = forensic_providers(
            config, rules, histories, session, admin_url, registry, log_tail, lambda: monitor.last_tick
        )
        r = config.rollback
        orchestrator = RollbackOrchestrator(
            traffic=controller,
            planner=planner,
            health=health,
            warmer=health,
            confirmer=envoy_stats,
            verifier=BaselineVerifier(histories, lambda: planner.baselines),
            archiver=ForensicArchiver(config.state_dir / "archive", providers),
            store=store,
            metrics=metrics,
            settings=RollbackSettings(
                cooldown_s=r.cooldown_s,
                max_per_hour=r.max_per_hour,
                verify_window_s=r.verify_window_s,
                on_verification_failure=r.on_verification_failure,
                warm_timeout_s=r.warm_timeout_s,
                confirm_timeout_s=r.confirm_timeout_s,
                health_max_age_s=r.health_max_age_s,
            ),
        )
        cleanups.append(orchestrator.close)
        monitor = Monitor(
            sources=sources,
            rules=rules,
            traffic=controller,
            decisions=orchestrator,
            store=store,
            metrics=metrics,
            baselines=lambda: planner.baselines,
            interval_s=config.signals.interval_s,
            source_timeout_s=config.signals.timeout_s,
            limits=HistoryLimits(max_age_s=max(config.signals.history_s, rules.rule_set.max_lookback_s + 60)),
        )
        monitor.histories = histories
        monitor.rules_source = str(config.rules.file or "")
        cleanups.append(monitor.close)
        watcher = None
        if config.rules.file is not None:
            watcher = RulesWatcher(
                path=config.rules.file,
                tier=config.model.tier,
                tiers_dir=config.rules.tiers_dir,
                engine=rules,
                store=store,
                metrics=metrics,
                model=config.model.name,
                interval_s=config.rules.reload_interval_s,
            )
            metrics.rules_last_reload_ok.labels(config.model.name).set(1)

        if xds_sink is not None:
            xds_sink.publish_initial(policy.weights)
            try:
                server, port = await start_xds_server(cache, config.xds.address, config.xds.port)
            except (OSError, RuntimeError) as exc:
                raise StartupError(f"xds could not listen on {config.xds.address}:{config.xds.port}: {exc}") from None
            log.info("xDS (ADS) listening on %s:%d", config.xds.address, port)
            cleanups.append(_grpc_stopper(server))
            supervisor.spawn("xds-server", _wait_grpc(server))
        status_view = StatusView(
            config,
            controller,
            None if dry_run else cache,
            monitor=monitor,
            orchestrator=orchestrator,
            watcher=watcher,
            registry_statuses=lambda: planner.statuses,
        )
        public_app = make_public_app(controller, metrics, health_report=health.health_report)
        poller = _alert_sources(config, orchestrator, metrics, public_app)
        if poller is not None:
            supervisor.spawn("alertmanager-poller", poller.run())
        cleanups.append(await _serve_site(public_app, config.http.address, config.http.port, "http"))
        cleanups.append(
            await _serve_site(
                make_control_app(controller, status_view, token, decisions=orchestrator),
                config.control.listen.address,
                config.control.listen.port,
                "control API",
            )
        )
        supervisor.spawn("monitor", monitor.run())
        supervisor.spawn("baselines", _refresh_baselines(planner))
        if watcher is not None:
            supervisor.spawn("rules-watcher", watcher.run())
        # Everything loaded at start-up lives for the whole run: keep the collector from rescanning it every full
        # collection (a per-tick cost of tens of ms otherwise; docs/rules.md, performance).
        gc.collect()
        gc.freeze()
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


def _alert_sources(
    config: AgentConfig, decisions: RollbackOrchestrator, metrics: AgentMetrics, public_app: web.Application
) -> AlertmanagerPoller | None:
    """The Alertmanager webhook (on the public app) and the API v2 poller, feeding one intake (one dedupe)."""
    alerts = config.alerts
    if not (alerts.webhook.enabled or alerts.alertmanager.urls):
        return None
    alert_metrics = AlertSourceMetrics(metrics.registry)
    intake = AlertIntake.from_config(alerts, config.model.name, decision_submitter(decisions))
    if alerts.webhook.enabled:
        try:
            credentials = load_webhook_credentials(alerts.webhook, os.environ)
        except CredentialsError as exc:
            raise StartupError(f"alerts.webhook: {exc}") from None
        add_alert_webhook(public_app, AlertWebhook(intake, credentials, alert_metrics, alerts.webhook.max_body_bytes))
        log.info("Alertmanager webhook on POST /v1/alerts")
    if alerts.alertmanager.urls:
        log.info("pulling fleet alerts from %d Alertmanager(s)", len(alerts.alertmanager.urls))
        return AlertmanagerPoller.from_config(alerts, config.model.name, intake, alert_metrics)
    return None


async def _refresh_baselines(planner: RegistryPlanner, interval_s: float = 30.0) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            await planner.refresh_baselines()
        except Exception:
            log.exception("reading baselines from the registry failed; keeping the previous ones")


async def _wait_grpc(server: grpc.aio.Server) -> None:
    # Shielded: wait_for_termination() awaits the server's own shutdown future, so cancelling this task at shutdown
    # (Supervisor.cancel_all) would cancel that future, and the server.stop() cleanup would then raise
    # CancelledError: a traceback and exit code 1 on every SIGTERM, and the cleanups after it skipped.
    await asyncio.shield(server.wait_for_termination())


def _grpc_stopper(server: grpc.aio.Server) -> Callable[[], Awaitable[None]]:
    async def stop() -> None:
        await server.stop(grace=0.5)

    return stop
