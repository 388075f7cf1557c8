"""The wiring: builds every part from the config, runs each long-running part as a named task, owns shutdown.

Shutdown order is the reverse of start-up: stop taking control requests, stop the HTTP surfaces, close the xDS
server (Envoy keeps its last config and retries), then close the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from aiohttp import web
from google.protobuf import json_format

from agent.adapters.alertmanager_poller import AlertmanagerPoller, decision_submitter
from agent.adapters.archive.forensic_archive import ForensicArchiver
from agent.adapters.drill_faults import HookFaults, RefserverFaults
from agent.adapters.envoy_admin import EnvoyServing, read_serving
from agent.adapters.fleet.postgres_store import FleetError
from agent.adapters.fleet.shipper import fleet_shipper
from agent.adapters.forensic_providers import forensic_providers
from agent.adapters.nop_route_sink import NopRouteSink
from agent.adapters.notify.dispatcher import NotificationDispatcher, NotifyConfigError
from agent.adapters.registry.file_registry import FileRegistry, open_registry
from agent.adapters.registry.mlflow_registry import MlflowRegistry, MlflowRegistryError
from agent.adapters.registry.mlflow_registry import declared_statuses as mlflow_declared_statuses
from agent.adapters.signals.access_log import AccessLogStreamSource
from agent.adapters.signals.envoy_stats import EnvoyStatsSource
from agent.adapters.signals.model_metrics_source import MetricsTarget, ModelMetricsSource
from agent.adapters.signals.oip_health import GoldenCheck, OipHealthSource, VersionProbe
from agent.adapters.signals.promql_source import PromqlSignalCollector, PromqlSource
from agent.adapters.signals.shadow_tap import CaptureSettings, ShadowCapture, shadow_samples_provider
from agent.adapters.store.signing import SigningKeyError, load_signer
from agent.adapters.store.sqlite_store import SqliteStateStore
from agent.adapters.store.state_check import OpenedState, checkpoint, open_state
from agent.adapters.xds.cache import SnapshotCache
from agent.adapters.xds.callbacks import MetricsCallbacks
from agent.adapters.xds.resources import (
    AccessLogSettings,
    ModelTopology,
    OipVersionPath,
    ShadowSettings,
    VersionUpstream,
    shadow_tap_id,
)
from agent.adapters.xds.route_sink import XdsRouteSink
from agent.adapters.xds.server import start_xds_server
from agent.alerts.auth import CredentialsError, load_webhook_credentials
from agent.alerts.intake import AlertIntake
from agent.alerts.metrics import AlertSourceMetrics
from agent.config import AgentConfig, ControlSection, VersionConfig
from agent.domain.drill_schedule import Schedule
from agent.domain.shadow import ShadowJoin
from agent.domain.signals import HistoryLimits, SignalHistory
from agent.domain.traffic import PolicyError, TrafficPolicy, normalize_weights, refuse_unsafe_start
from agent.engine.admission import Admission
from agent.engine.decisions import DecisionHandler
from agent.engine.drill import DrillDesk, DrillMetrics
from agent.engine.drill_runner import FaultInjector
from agent.engine.drill_scheduler import DrillScheduler, InProcessDrillControl, drill_settings
from agent.engine.leases import LeaseManager
from agent.engine.mirror import MirrorController
from agent.engine.monitor import Monitor
from agent.engine.orchestrator import RollbackOrchestrator
from agent.engine.planner import RegistryPlanner
from agent.engine.reconcile import Served, open_intents, open_rollbacks, reconcile
from agent.engine.rollout import STABLE_KEY, RolloutDriver, RolloutError
from agent.engine.rollout_gates import Measurements
from agent.engine.rules_watch import RulesWatcher, keep_last_good
from agent.engine.traffic import TrafficController
from agent.engine.verification import BaselineVerifier
from agent.envoy_bootstrap import DEFAULT_LATENCY_BUCKETS_MS, XDS_CLUSTER_NAME
from agent.http.control_app import make_control_app
from agent.http.decision_feed import DecisionFeed
from agent.http.drill_routes import add_drill_routes
from agent.http.identities import Identities, IdentityError
from agent.http.lease_api import add_lease_api
from agent.http.public_app import make_public_app
from agent.http.rollback_progress import StepWatch
from agent.http.rollout_api import add_rollout_routes, rollout_sample
from agent.http.status_page import WatchViews, add_status_page, add_watch_views
from agent.http.status_view import StatusView
from agent.http.tokens_file import TokensFileError, load_tokens_file
from agent.http.webhook import AlertWebhook, add_alert_webhook
from agent.log_buffer import RecentLogHandler
from agent.log_setup import audit_record_fields, redact, set_log_context
from agent.pb.rollback_agent.v1 import audit_pb2
from agent.ports.signals import SignalSource
from agent.ports.store import StateRefusedError
from agent.registry import Constraints, RegistryFileError
from agent.registry.fallback import declared_statuses
from agent.rollout.plan import shipped_plan
from agent.telemetry import AgentMetrics, RolloutCollector, ServedVersionsCollector, VersionStatusCollector
from agent.triggers.engine import RuleEngine
from agent.triggers.errors import RuleFileError
from agent.triggers.ruleset import load_rule_set

log = logging.getLogger(__name__)
audit_log = logging.getLogger("agent.audit")

RECONCILE_TAIL = 5000  # records read at start-up to reconcile open decisions and rebuild admission's memory


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
        redact(token)
        return token
    token = os.environ.get(control.token_env, "").strip()
    if not token:
        raise StartupError(
            "the control API needs a bearer token: set control.tokens_file, control.token_file, or the environment "
            f"variable {control.token_env}"
        )
    redact(token)
    return token


def read_identities(control: ControlSection) -> Identities:
    """Who may use the control API: the tokens file's named identities and/or the single token (role admin)."""
    identities: Identities | None = None
    if control.tokens_file is not None:
        try:
            identities = load_tokens_file(control.tokens_file)
        except TokensFileError as exc:
            raise StartupError(f"control.tokens_file: {exc}") from None
    if identities is None or control.token_file is not None or os.environ.get(control.token_env, "").strip():
        single = Identities.single(read_token(control), control.token_name)
        try:
            identities = single if identities is None else single.merged(identities)
        except IdentityError as exc:
            raise StartupError(f"control.tokens_file and the control token ({control.token_name}): {exc}") from None
    log.info("control API identities: %s", ", ".join(f"{i.name} ({i.role.value})" for i in identities))
    return identities


def _oip_path(config: AgentConfig, oip_version: str | None) -> OipVersionPath | None:
    if oip_version is None:
        return None
    return OipVersionPath(config.probes.oip_model or config.model.name, oip_version)


def topology_from_config(config: AgentConfig) -> ModelTopology:
    stream = config.signals.access_log
    shadow = config.rollout.shadow
    return ModelTopology(
        model=config.model.name,
        upstreams=tuple(
            VersionUpstream(v.tag, v.host, v.port, _oip_path(config, v.oip_version)) for v in config.versions
        ),
        listener_host=config.envoy.listener.address,
        listener_port=config.envoy.listener.port,
        route_timeout_s=config.envoy.route_timeout_s,
        connect_timeout_s=config.envoy.connect_timeout_s,
        shadow=ShadowSettings(shadow.listener.port, shadow.listener.address) if shadow.capture else None,
        access_log=AccessLogSettings(
            cluster=XDS_CLUSTER_NAME,
            flush_interval_ms=stream.flush_interval_ms,
            buffer_size_bytes=stream.buffer_size_bytes,
            request_headers=tuple(stream.headers),
            response_headers=(stream.confidence_header,) if stream.confidence_header else (),
        )
        if stream.enabled
        else None,
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


LAST_GOOD_RULES = "rules.last-good.yaml"


def _rule_engine(config: AgentConfig) -> tuple[RuleEngine, str]:
    """The rule engine, and why the configured file was refused ("" when it was accepted).

    A file that cannot be used at start is refused like a broken reload: the agent runs on the copy of the last
    file it accepted (state_dir/rules.last-good.yaml), reports the refusal (status, metric, audit), and keeps
    watching the file. Only without such a copy is it a start-up error."""
    if config.rules.file is None:
        log.warning("no rules.file configured: the agent makes no automatic decisions, only operator actions")
        return RuleEngine(), ""
    last_good = config.state_dir / LAST_GOOD_RULES
    try:
        rule_set = load_rule_set(config.rules.file, config.model.tier, config.rules.tiers_dir)
    except RuleFileError as exc:
        if not last_good.exists():
            raise StartupError(f"rules.file is not usable:\n{exc}") from None
        try:
            rule_set = load_rule_set(last_good, config.model.tier, config.rules.tiers_dir)
        except RuleFileError as again:
            raise StartupError(f"rules.file is not usable:\n{exc}\nand its last good copy neither:\n{again}") from None
        log.error(
            "rules.file %s refused at start, running on the last good copy %s: %s", config.rules.file, last_good, exc
        )
        return RuleEngine(rule_set), str(exc)
    keep_last_good(config.rules.file, last_good)
    log.info("%d rules loaded from %s (tier %s)", len(rule_set.rules), config.rules.file, rule_set.tier)
    return RuleEngine(rule_set), ""


@dataclass
class AgentParts:
    """Everything `build_agent` made, not yet serving: no listener open, no task running."""

    config: AgentConfig
    dry_run: bool
    metrics: AgentMetrics
    store: SqliteStateStore
    controller: TrafficController
    admission: Admission
    orchestrator: RollbackOrchestrator
    monitor: Monitor
    planner: RegistryPlanner
    watcher: RulesWatcher | None
    cache: SnapshotCache
    xds_sink: XdsRouteSink | None
    public_app: web.Application
    control_app: web.Application
    poller: AlertmanagerPoller | None
    state_notes: tuple[str, ...]
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    access_log: AccessLogStreamSource | None = None  # served on the xDS port
    notifier: NotificationDispatcher | None = None  # told of every sealed record (notifications.receivers)
    drill_scheduler: DrillScheduler | None = None  # drills.schedule
    rollouts: RolloutDriver | None = None  # progressive delivery (docs/rollouts.md)
    shadow_capture: ShadowCapture | None = None  # rollout.shadow.capture: both answers to mirrored requests
    leases: LeaseManager | None = None  # batch-job leases (docs/leases.md)

    async def close(self) -> None:
        for cleanup in reversed(self.cleanups):
            try:
                await cleanup()
            except Exception:
                log.exception("error during shutdown")
        self.cleanups.clear()


class _LateHistories(Mapping[str, SignalHistory]):
    """The monitor's read-only histories, for the parts built before the monitor (verification, forensics)."""

    def __init__(self, monitor: list[Monitor]) -> None:
        self._monitor = monitor

    def _view(self) -> Mapping[str, SignalHistory]:
        return self._monitor[0].histories if self._monitor else {}

    def __getitem__(self, key: str) -> SignalHistory:
        return self._view()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._view())

    def __len__(self) -> int:
        return len(self._view())


def starting_policy(config: AgentConfig, clock: Callable[[], float] = time.time) -> TrafficPolicy:
    return TrafficPolicy(
        weights=normalize_weights(config.starting_weights(), config.tags),
        revision=1,
        reason="initial weights from the config file",
        actor="config",
        changed_at=clock(),
    )


def envoy_evidence(config: AgentConfig, topology: ModelTopology) -> Callable[[], Awaitable[EnvoyServing]]:
    admin_url = f"http://{config.envoy.admin.address}:{config.envoy.admin.port}"

    async def read() -> EnvoyServing:
        return await asyncio.to_thread(read_serving, admin_url, topology.route_name, topology.cluster_name(""), 1.0)

    return read


def log_audit_record(record: audit_pb2.AuditRecord) -> None:
    """One JSON line per committed audit record, so a log pipeline keeps a copy of the chain outside the pod."""
    fields = {
        "seq": record.seq,
        "hash": record.hash.hex(),
        "prev_hash": record.prev_hash.hex(),
        "kind": record.WhichOneof("event") or "",
        "actor": record.actor,
        "model": record.model,
        "key_id": record.key_id,
    }
    audit_log.info("audit_record %s", json.dumps(fields, separators=(",", ":")), extra=audit_record_fields(record))


async def build_agent(
    config: AgentConfig, *, token: str | Identities, dry_run: bool = False, log_tail: RecentLogHandler | None = None
) -> AgentParts:
    """Build every part from the config: the state store (checked; StateRefusedError when it is lost or foreign),
    the registry, the traffic controller, admission, the rollback procedure, the monitor and the HTTP apps.
    Reconciles what the previous run left open. Opens no listener and starts no task (see `serve`)."""
    topology = topology_from_config(config)
    try:
        if config.registry.mlflow is not None:
            statuses = await mlflow_declared_statuses(config, config.registry.mlflow)
        else:
            statuses = await asyncio.to_thread(declared_statuses, config)
    except RegistryFileError as exc:
        raise StartupError(f"registry_file is not usable:\n{exc}") from None
    except MlflowRegistryError as exc:
        raise StartupError(f"registry.mlflow is not usable: {exc}") from None
    first = starting_policy(config)
    try:
        refuse_unsafe_start(first, statuses, "initial_weights (or the stable version) would")
    except PolicyError as exc:
        raise StartupError(str(exc)) from None
    evidence = envoy_evidence(config, topology)
    signing = config.audit.signing
    try:
        signer = await asyncio.to_thread(load_signer, signing.mode, signing.key_file, signing.key_id)
    except SigningKeyError as exc:
        raise StartupError(f"audit.signing: {exc}") from None
    try:
        opened = await open_state(
            config.state_dir,
            model=config.model.name,
            starting_policy=lambda: first,
            envoy=evidence,
            signer=signer,
            observers=(log_audit_record,),
        )
    except OSError as exc:
        raise StartupError(f"state_dir {config.state_dir}: cannot open the state store: {exc.strerror}") from None
    store = opened.store
    cleanups: list[Callable[[], Awaitable[None]]] = [store.close]
    try:
        rules, rules_error = await asyncio.to_thread(_rule_engine, config)
        metrics = AgentMetrics(config.model.name)
        metrics.model_info.labels(config.model.name, config.model.tier).set(1)
        metrics.rules_loaded.labels(config.model.name).set(len(rules.rule_set.rules))
        for head in await store.last_records(1):
            metrics.set_audit_head(head.seq, head.hash, head.key_id)
        store.sealed_observers.append(lambda record: metrics.set_audit_head(record.seq, record.hash, record.key_id))
        notifier = _notifier(config, metrics, store.store_id)
        if notifier is not None:
            await notifier.resume(store)  # what it had not told before the agent stopped
            store.sealed_observers.append(notifier.observe)
        if rules_error:
            await store.append(
                audit_pb2.RulesReloaded(
                    files=[str(config.rules.file)], rules=len(rules.rule_set.rules), error=rules_error
                ),
                "rules-watcher",
            )
        parts = await _build_on_store(
            config, opened, cleanups, rules, metrics, topology, evidence, dry_run, log_tail, token
        )
        parts.notifier = notifier
        if parts.watcher is not None:
            parts.watcher.last_good = config.state_dir / LAST_GOOD_RULES
            parts.watcher.last_error = rules_error
            metrics.rules_last_reload_ok.labels(config.model.name).set(0 if rules_error else 1)
        return parts
    except BaseException:
        for cleanup in reversed(cleanups):
            with contextlib.suppress(Exception):
                await cleanup()
        raise


async def _build_on_store(
    config: AgentConfig,
    opened: OpenedState,
    cleanups: list[Callable[[], Awaitable[None]]],
    rules: RuleEngine,
    metrics: AgentMetrics,
    topology: ModelTopology,
    evidence: Callable[[], Awaitable[EnvoyServing]],
    dry_run: bool,
    log_tail: RecentLogHandler | None,
    token: str | Identities,
) -> AgentParts:
    store = opened.store
    registry: FileRegistry
    try:
        if config.registry.mlflow is not None:
            registry = await MlflowRegistry.connect(config, config.registry.mlflow)
        else:
            registry = await open_registry(config, config.registry_file)
    except RegistryFileError as exc:
        raise StartupError(f"registry_file is not usable:\n{exc}") from None
    except MlflowRegistryError as exc:
        raise StartupError(f"registry.mlflow is not usable: {exc}") from None
    cleanups.append(registry.close)
    session = aiohttp.ClientSession()
    cleanups.append(session.close)
    cache = SnapshotCache(MetricsCallbacks(metrics))
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
        await controller.start()
    except ValueError as exc:
        raise StartupError(str(exc)) from None
    metrics.registry.register(ServedVersionsCollector(config.model.name, controller.served))
    metrics.route_weights.served_source = controller.served

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
            VersionProbe(v.tag, f"http://{v.endpoint}", config.probes.oip_model or config.model.name, v.oip_version)
            for v in config.versions
        ],
        golden=(
            GoldenCheck(g.request, g.output, g.expect, g.tolerance) if (g := config.probes.golden) is not None else None
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
                {v.tag: _metrics_target(v, config.probes.oip_model or config.model.name) for v in config.versions},
                # Inside the monitor's budget for the source: a hung server is that version's failed read, named
                # in its verdicts, not a timeout of the whole source.
                config.signals.timeout_s * 0.8,
                metrics=metrics,
                memory_limits_mb={
                    v.tag: limit
                    for v in config.versions
                    if (limit := v.memory_limit_mb or config.signals.memory_limit_mb) is not None
                },
                oom_ratio=config.signals.oom_memory_ratio,
            )
        )
    if config.signals.health:
        sources.append(health)
    if config.signals.promql is not None:
        promql = PromqlSource(session, config.signals.promql, config.tags)
        sources.append(promql)
        cleanups.append(promql.close)
        metrics.registry.register(PromqlSignalCollector(config.model.name, promql))
    access_log = None
    if config.signals.access_log.enabled and not dry_run:
        access_log = AccessLogStreamSource(
            {topology.cluster_name(v.tag): v.tag for v in config.versions},
            DEFAULT_LATENCY_BUCKETS_MS,
            confidence_header=config.signals.access_log.confidence_header,
        )
    planner = RegistryPlanner(
        registry, _constraints(config), quarantine_rolled_back=config.rollback.mark_rolled_back_as == "quarantined"
    )
    await planner.refresh_baselines()
    metrics.registry.register(VersionStatusCollector(config.model.name, lambda: planner.statuses))
    monitor_ref: list[Monitor] = []
    histories = _LateHistories(monitor_ref)
    providers = forensic_providers(
        config, rules, histories, session, admin_url, registry, log_tail, lambda: monitor_ref[0].last_tick
    )
    capture = _shadow_capture(config, admin_url) if not dry_run else None
    if capture is not None:
        providers["shadow_samples"] = shadow_samples_provider(capture)
    r = config.rollback
    steps = StepWatch()  # the confirm and verify steps running now, for `rollback --wait` and the status page
    orchestrator = RollbackOrchestrator(
        traffic=controller,
        planner=planner,
        health=health,
        warmer=health,
        confirmer=steps.confirmer(envoy_stats),
        verifier=steps.verifier(BaselineVerifier(histories, lambda: planner.baselines, r.verification)),
        archiver=ForensicArchiver(config.state_dir / "archive", providers),
        store=store,
        metrics=metrics,
        settings=config.rollback,
    )
    cleanups.append(orchestrator.close)
    admission = Admission(
        traffic=controller,
        store=store,
        procedure=orchestrator,
        rollback=config.rollback,
        alerts=config.alerts,
        statuses=lambda: planner.statuses,
    )
    orchestrator.on_follow_up = admission.forget_last_rollback

    # What the previous run left open is closed on the record before anything new happens.
    tail = await store.last_records(RECONCILE_TAIL)
    notes = list(opened.notes)
    if open_intents(tail) or open_rollbacks(tail):
        serving = await evidence()
        notes += await reconcile(store, tail, Served(serving.weights, serving.detail), planner.mark_failed)
        tail = await store.last_records(RECONCILE_TAIL)
    await admission.restore(tail)
    leases = LeaseManager(
        model=config.model.name,
        traffic=controller,
        store=store,
        routes=xds_sink,
        metrics=metrics,
        ack_timeout_s=config.ack_timeout_s,
    )
    await leases.restore()

    monitor = Monitor(
        sources=sources,
        rules=rules,
        traffic=controller,
        decisions=admission,
        store=store,
        metrics=metrics,
        baselines=lambda: planner.baselines,
        interval_s=config.signals.interval_s,
        source_timeout_s=config.signals.timeout_s,
        limits=HistoryLimits(
            max_age_s=max(config.signals.history_s, rules.rule_set.max_lookback_s + 60),
            # Stream ticks add up to 10 frames a second: beyond 30 s, one a second is enough for any window.
            downsample=((30.0, 1.0), (300.0, 10.0), (3600.0, 60.0))
            if access_log is not None
            else HistoryLimits().downsample,
        ),
        stream=access_log,
        stream_min_interval_s=config.signals.access_log.min_interval_ms / 1000,
    )
    monitor_ref.append(monitor)
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
    status_view = StatusView(
        config,
        controller,
        None if dry_run else cache,
        monitor=monitor,
        orchestrator=orchestrator,
        watcher=watcher,
        registry_statuses=lambda: planner.statuses,
        admission=admission,
        store_id=store.store_id,
        audit_head=lambda: store.head_seq,
        health_report=health.health_report,
    )
    public_app = make_public_app(controller, metrics, health_report=health.health_report)
    poller = _alert_sources(config, admission, metrics, public_app)
    control_app = make_control_app(
        controller,
        status_view,
        token,
        identity=config.control.token_name,
        decisions=admission,
        admission=admission,
    )
    add_lease_api(control_app, leases)
    feed = DecisionFeed(store, lambda: store.head_seq)
    add_watch_views(control_app, WatchViews(status_view, feed, steps, config.status_page))
    if config.status_page.enabled:
        add_status_page(control_app)
    mirror = (
        MirrorController(
            traffic=controller,
            sink=xds_sink,
            store=store,
            ack_timeout_s=config.ack_timeout_s,
            on_mirrored=capture.select if capture is not None else None,
        )
        if xds_sink is not None
        else None
    )
    rollouts = await _rollouts(
        config, store, controller, admission, planner, monitor, rules, access_log, control_app, mirror, capture
    )
    metrics.registry.register(RolloutCollector(config.model.name, lambda: rollout_sample(rollouts)))
    drill_scheduler = _drills(config, store, controller, orchestrator, metrics, status_view, control_app, rollouts)
    return AgentParts(
        config=config,
        dry_run=dry_run,
        metrics=metrics,
        store=store,
        controller=controller,
        admission=admission,
        orchestrator=orchestrator,
        monitor=monitor,
        planner=planner,
        watcher=watcher,
        cache=cache,
        xds_sink=xds_sink,
        public_app=public_app,
        control_app=control_app,
        poller=poller,
        state_notes=tuple(notes),
        cleanups=cleanups,
        access_log=access_log,
        drill_scheduler=drill_scheduler,
        rollouts=rollouts,
        leases=leases,
        shadow_capture=capture,
    )


def _shadow_capture(config: AgentConfig, admin_url: str) -> ShadowCapture | None:
    """rollout.shadow.capture: the tap on both listeners, joined by x-request-id (docs/shadow.md)."""
    shadow = config.rollout.shadow
    if not shadow.capture:
        return None
    join = ShadowJoin(max_pending=shadow.max_pairs, pending_ttl_s=shadow.pending_ttl_s, max_pairs=shadow.max_pairs)
    settings = CaptureSettings(
        max_body_bytes=shadow.max_body_bytes,
        prediction_output=shadow.prediction_output,
        confidence_output=shadow.confidence_output,
        sample_rate=shadow.sample_rate,
        max_samples=shadow.max_samples,
        redact_fields=frozenset(shadow.redact_fields),
    )
    return ShadowCapture(
        admin_url=admin_url, config_id=shadow_tap_id(config.model.name), join=join, settings=settings, mirrored=0.0
    )


async def _rollouts(
    config: AgentConfig,
    store: SqliteStateStore,
    controller: TrafficController,
    admission: Admission,
    planner: RegistryPlanner,
    monitor: Monitor,
    rules: RuleEngine,
    access_log: AccessLogStreamSource | None,
    control_app: web.Application,
    mirror: MirrorController | None,
    capture: ShadowCapture | None,
) -> RolloutDriver:
    """Progressive delivery: the stable version a completed rollout promoted, the driver (restored: a running
    rollout resumes its stage), automatic rollbacks of its candidate routed to it, its control API endpoints."""
    promoted = await store.get_setting(STABLE_KEY)
    if promoted and promoted != controller.stable:
        if promoted not in controller.versions:
            raise StateRefusedError(
                f"a completed rollout made {promoted} the stable version, and the config no longer declares it "
                "(a version that served must stay declared)"
            )
        log.warning("stable version: %s (promoted by a rollout; the config says %s)", promoted, controller.stable)
        controller.stable = promoted

    def measurements(candidate: str, stable: str) -> Measurements | None:
        tick = monitor.last_tick
        if tick is None:
            return None
        raw = access_log.state if access_log is not None else None
        shadow = capture.join if capture is not None else None
        return Measurements(time.monotonic(), candidate, stable, tick.statuses, monitor.histories, raw, shadow)

    driver = RolloutDriver(
        traffic=controller,
        store=store,
        marks=planner,
        holds=admission.blockers,
        measurements=measurements,
        mirror=mirror,
        interval_s=config.rollout.interval_s,
        rule_names=lambda: {rule.name for rule in rules.rule_set.rules},
        pins=lambda: admission.pins,
        shadow_capture=capture is not None,
    )
    try:
        await driver.restore()
    except RolloutError as exc:
        raise StateRefusedError(
            f"{exc}. Restore the state from a backup (`rollback-agent state restore FILE`), or start over from what "
            "Envoy serves (`rollback-agent state init --from-envoy`)"
        ) from None
    admission.rollout_breach = driver.on_breach

    def default_plan() -> tuple[str, str]:
        path = config.rollout.plan or shipped_plan(config.model.tier)
        try:
            return path.read_text(encoding="utf-8"), str(path)
        except OSError as exc:
            raise RolloutError("invalid_argument", f"{path}: cannot read the rollout plan: {exc.strerror}") from None

    add_rollout_routes(control_app, driver, default_plan)
    return driver


def _drills(
    config: AgentConfig,
    store: SqliteStateStore,
    controller: TrafficController,
    orchestrator: RollbackOrchestrator,
    metrics: AgentMetrics,
    status_view: StatusView,
    control_app: web.Application,
    rollouts: RolloutDriver,
) -> DrillScheduler | None:
    """Drills (docs/drills.md): the control API's drill endpoints, the orchestrator told which rollback is a drill,
    and the scheduler when `drills.schedule` is set."""
    desk = DrillDesk(
        store=store,
        desired=lambda: controller.desired,
        metrics=DrillMetrics(metrics.registry, config.model.name),
        cooldown_s=config.rollback.cooldown_s,
        open_rollback=lambda: orchestrator.open_rollback,
        rollout=lambda: f"{rollouts.candidate()} is being rolled out" if rollouts.running else "",
    )
    orchestrator.drill_for = desk.drill_for
    orchestrator.on_rollback_record = desk.observe
    add_drill_routes(control_app, desk)
    drills = config.drills
    if drills.schedule is None:
        return None
    endpoints = {v.tag: v.endpoint for v in config.versions}
    injector: FaultInjector = (
        HookFaults(drills.hook, endpoints=endpoints)
        if drills.hook is not None
        else RefserverFaults(endpoints, drills.fault)
    )
    return DrillScheduler(
        schedule=Schedule.parse(drills.schedule),
        control=InProcessDrillControl(
            desk, controller, lambda: json_format.MessageToDict(status_view.status(), preserving_proto_field_name=True)
        ),
        injector=injector,
        settings=drill_settings(drills, schedule=drills.schedule),
        model=config.model.name,
        report_dir=drills.report_dir or config.state_dir / "drills",
        version=drills.version or "",
    )


async def serve(parts: AgentParts) -> int:
    """Open the listeners, run every long-running part as a named task until SIGTERM/SIGINT or a part fails, then
    shut down in reverse order. Returns the exit code."""
    config = parts.config
    supervisor = Supervisor()
    cleanups = parts.cleanups
    policy = parts.controller.desired
    try:
        if parts.xds_sink is not None:
            parts.xds_sink.publish_initial(policy.weights)
            try:
                server, port = await start_xds_server(
                    parts.cache,
                    config.xds.address,
                    config.xds.port,
                    services=[parts.access_log.register] if parts.access_log is not None else [],
                )
            except (OSError, RuntimeError) as exc:
                raise StartupError(f"xds could not listen on {config.xds.address}:{config.xds.port}: {exc}") from None
            log.info("xDS (ADS) listening on %s:%d", config.xds.address, port)
            cleanups.append(_grpc_stopper(server))
            supervisor.spawn("xds-server", _wait_grpc(server))
        if parts.poller is not None:
            supervisor.spawn("alertmanager-poller", parts.poller.run())
        cleanups.append(await _serve_site(parts.public_app, config.http.address, config.http.port, "http"))
        cleanups.append(
            await _serve_site(
                parts.control_app, config.control.listen.address, config.control.listen.port, "control API"
            )
        )
        supervisor.spawn("monitor", parts.monitor.run())
        if parts.rollouts is not None and not parts.dry_run:
            supervisor.spawn("rollout", parts.rollouts.run())
        if parts.shadow_capture is not None:
            supervisor.spawn("shadow-capture", parts.shadow_capture.run())
        supervisor.spawn("baselines", _refresh_baselines(parts.planner))
        if parts.leases is not None and not parts.dry_run:
            supervisor.spawn("lease-expiry", parts.leases.run())
        supervisor.spawn("state-checkpoint", _checkpoint_periodically(parts.store, config.state_dir))
        if parts.notifier is not None:  # cancelled at shutdown, it drains for notifications.drain_timeout_s first
            supervisor.spawn("notifications", parts.notifier.run())
        if config.audit.fleet is not None:
            try:
                shipper = fleet_shipper(config.audit.fleet, parts.store, config.model.name, parts.metrics.registry)
            except FleetError as exc:
                raise StartupError(str(exc)) from None
            supervisor.spawn("fleet-shipper", shipper.run())
        if parts.watcher is not None:
            supervisor.spawn("rules-watcher", parts.watcher.run())
        if parts.drill_scheduler is not None:
            supervisor.spawn("drill-scheduler", parts.drill_scheduler.run())
        # Everything loaded at start-up lives for the whole run: keep the collector from rescanning it every full
        # collection (a per-tick cost of tens of ms otherwise; docs/rules.md, performance).
        gc.collect()
        gc.freeze()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, supervisor.stop.set)
        log.info(
            "agent for model %s (%s) on store %s serving revision %d %s%s",
            config.model.name,
            config.model.tier,
            parts.store.store_id,
            policy.revision,
            dict(policy.weights),
            " [dry run: no traffic moves]" if parts.dry_run else "",
        )
        await supervisor.stop.wait()
        log.info("shutting down")
    finally:
        await supervisor.cancel_all()
        with contextlib.suppress(Exception):
            await checkpoint(parts.store, config.state_dir)
        await parts.close()
    return 1 if supervisor.failure else 0


async def run_agent(config: AgentConfig, *, dry_run: bool = False, log_tail: RecentLogHandler | None = None) -> int:
    set_log_context(model=config.model.name)  # every line of this run names the model
    parts = await build_agent(config, token=read_identities(config.control), dry_run=dry_run, log_tail=log_tail)
    return await serve(parts)


def _alert_sources(
    config: AgentConfig, decisions: DecisionHandler, metrics: AgentMetrics, public_app: web.Application
) -> AlertmanagerPoller | None:
    """The Alertmanager webhook (on the public app) and the API v2 poller, feeding one intake (one dedupe)."""
    alerts = config.alerts
    if not (alerts.webhook.enabled or alerts.alertmanager.urls):
        return None
    alert_metrics = AlertSourceMetrics(metrics.registry)
    # One dedupe memory: the decision engine's (persisted through the audit trail), not a second one here.
    intake = AlertIntake.from_config(alerts, config.model.name, decision_submitter(decisions), own_dedupe=False)
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


def _metrics_target(version: VersionConfig, model: str) -> MetricsTarget:
    return MetricsTarget(
        version.metrics_url, version.metric_names, version.server.profile, model, version.server.model_version
    )


def _notifier(config: AgentConfig, metrics: AgentMetrics, store_id: str) -> NotificationDispatcher | None:
    if not config.notifications.receivers:
        return None
    try:
        notifier = NotificationDispatcher.from_config(config.notifications, metrics.registry, store_id)
    except NotifyConfigError as exc:
        raise StartupError(str(exc)) from None
    log.info("notifications to %s", ", ".join(r.name for r in config.notifications.receivers))
    return notifier


async def _refresh_baselines(planner: RegistryPlanner, interval_s: float = 30.0) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            await planner.refresh_baselines()
        except Exception:
            log.exception("reading baselines from the registry failed; keeping the previous ones")


async def _checkpoint_periodically(store: SqliteStateStore, state_dir: Path, interval_s: float = 10.0) -> None:
    """Move the marker's checkpoint forward, so a truncated or rewritten trail is caught at the next start."""
    last = -1
    while True:
        await asyncio.sleep(interval_s)
        try:
            seq, _ = await store.head()
            if seq != last:
                await checkpoint(store, state_dir)
                last = seq
        except Exception as exc:
            log.warning("state checkpoint failed (retrying): %s", exc)


async def _wait_grpc(server: grpc.aio.Server) -> None:
    # Shielded: wait_for_termination() awaits the server's own shutdown future, so cancelling this task at shutdown
    # (Supervisor.cancel_all) would cancel that future, and the server.stop() cleanup would then raise
    # CancelledError: a traceback and exit code 1 on every SIGTERM, and the cleanups after it skipped.
    await asyncio.shield(server.wait_for_termination())


def _grpc_stopper(server: grpc.aio.Server) -> Callable[[], Awaitable[None]]:
    async def stop() -> None:
        await server.stop(grace=0.5)

    return stop
