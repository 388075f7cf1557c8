"""Builds the control API's Status message from the traffic controller and the xDS cache."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from agent.adapters.xds.cache import SnapshotCache
from agent.adapters.xds.resources import ROUTE_TYPE
from agent.config import AgentConfig
from agent.domain.records import policy_to_pb, timestamp
from agent.domain.traffic import TrafficPolicy
from agent.engine.admission import Admission
from agent.engine.monitor import Monitor
from agent.engine.orchestrator import RollbackOrchestrator
from agent.engine.rules_watch import RulesWatcher
from agent.engine.traffic import TrafficController
from agent.pb.rollback_agent.v1 import control_pb2, traffic_pb2


class StatusView:
    def __init__(
        self,
        config: AgentConfig,
        controller: TrafficController,
        cache: SnapshotCache | None,
        *,
        monitor: Monitor | None = None,
        orchestrator: RollbackOrchestrator | None = None,
        watcher: RulesWatcher | None = None,
        registry_statuses: Callable[[], Mapping[str, str]] = dict,
        admission: Admission | None = None,
        store_id: str = "",
        audit_head: Callable[[], int] = lambda: 0,
        health_report: Callable[[], Mapping[str, Mapping[str, Any]]] = dict,
    ) -> None:
        self._health_report = health_report
        self._admission = admission
        self.store_id = store_id
        self._audit_head = audit_head
        self._config = config
        self._controller = controller
        self._cache = cache
        self._monitor = monitor
        self._orchestrator = orchestrator
        self._watcher = watcher
        self._registry_statuses = registry_statuses
        # Batch-job leases, live then recently ended (agent.http.lease_api sets it when leases are served).
        self.leases: Callable[[], Sequence[control_pb2.Lease]] = tuple
        # The rollout, None when none was started (agent.http.rollout_api sets it when rollouts are served).
        self.rollout: Callable[[], control_pb2.RolloutStatus | None] = lambda: None

    @staticmethod
    def policy_pb(policy: TrafficPolicy) -> traffic_pb2.TrafficPolicy:
        return policy_to_pb(policy)

    @staticmethod
    def node_ack_pb(node: str, route_version: str, at: float) -> control_pb2.NodeAck:
        return control_pb2.NodeAck(node_id=node, xds_version=route_version, acked_at=timestamp(at))

    def status(self) -> control_pb2.Status:
        c = self._controller
        desired = c.desired
        served = c.served()
        served_weights = dict(served) if served is not None else {}
        message = control_pb2.Status(
            model=self._config.model.name,
            tier=self._config.model.tier,
            stable=c.stable,
            candidate=self._config.candidate or "",
            desired=policy_to_pb(desired),
            paused=c.automation.paused,
            pause_reason=c.automation.reason,
            ready=c.ready(),
        )
        if served is not None:
            message.served.CopyFrom(
                traffic_pb2.TrafficPolicy(weights=[traffic_pb2.VersionWeight(version=v, weight=w) for v, w in served])
            )
        statuses = self._registry_statuses()
        health = self._health_report()
        for version in self._config.versions:
            role = "stable" if version.tag == c.stable else "candidate" if version.tag == self._config.candidate else ""
            message.versions.append(
                control_pb2.VersionStatus(
                    version=version.tag,
                    endpoint=version.endpoint,
                    desired_weight=desired.weight(version.tag),
                    served_weight=served_weights.get(version.tag, 0),
                    role=role,
                    registry_status=statuses.get(version.tag, ""),
                    health=_health_checks(health.get(version.tag, {})),
                    warm_up_unavailable=str(health.get(version.tag, {}).get("warm_up", {}).get("detail", "")),
                )
            )
        if self._cache is not None:
            self._add_xds(message, self._cache)
        if self._monitor is not None and self._monitor.last_tick is not None:
            tick = self._monitor.last_tick
            for st in tick.statuses:
                v = st.verdict
                message.rules.append(
                    control_pb2.RuleStatus(
                        rule=st.rule,
                        kind=st.kind,
                        version=st.version,
                        state=st.state.value,
                        action=st.action.value,
                        value=v.value if v.value is not None else float("nan"),
                        threshold=v.threshold if v.threshold is not None else float("nan"),
                        window_s=v.window_s,
                        evidence=v.evidence,
                        evidence_unit=v.evidence_unit,
                        reason=v.reason,
                        for_s=max(0.0, tick.now - st.since),
                    )
                )
        if self._admission is not None:
            message.holds.update(self._admission.holds)
            message.pins.update(self._admission.pins)
        message.leases.extend(self.leases())
        if self._orchestrator is not None:
            message.escalations.extend(self._orchestrator.escalations)
        message.store_id = self.store_id
        if self._monitor is not None:
            message.signal_source = self._monitor.signal_source
        message.audit_head_seq = self._audit_head()
        if self._watcher is not None:
            message.rules_file = str(self._watcher.path)
            message.rules_error = self._watcher.last_error
        return message

    @staticmethod
    def _add_xds(message: control_pb2.Status, cache: SnapshotCache) -> None:
        snapshot = cache.snapshot
        message.route_version = snapshot.version(ROUTE_TYPE) if snapshot else ""
        for stream in cache.streams:
            node = control_pb2.EnvoyNode(
                node_id=stream.node_id,
                node_cluster=stream.node_cluster,
                stream_id=stream.stream_id,
                connected_at=timestamp(stream.opened_at),
                in_sync=stream.in_sync(snapshot),
            )
            for type_url, ts in sorted(stream.types.items()):
                state = control_pb2.XdsTypeState(
                    type_url=type_url,
                    sent_version=ts.sent_version,
                    acked_version=ts.acked_version,
                    nacks=ts.nacks,
                )
                if ts.acked_at:
                    state.acked_at.CopyFrom(timestamp(cache.to_wall(ts.acked_at)))
                node.types.append(state)
            message.envoys.append(node)
        for nack in cache.nacks:
            message.recent_nacks.append(
                control_pb2.Nack(
                    node_id=nack.node_id,
                    type_url=nack.type_url,
                    rejected_version=nack.rejected_version,
                    serving_version=nack.serving_version,
                    error=nack.error,
                    at=timestamp(nack.at),
                )
            )


def _health_checks(report: Mapping[str, Any]) -> list[control_pb2.HealthCheck]:
    """The version's probe results (each a mapping of ok, detail, age_s) in a fixed order, readiness first."""
    order = ("ready", "golden_inference", "feature_pipeline")
    names = sorted(
        (n for n, r in report.items() if isinstance(r, Mapping) and "age_s" in r),
        key=lambda n: (order.index(n) if n in order else len(order), n),
    )
    return [
        control_pb2.HealthCheck(
            name=n, ok=bool(report[n].get("ok")), detail=str(report[n].get("detail", "")), age_s=report[n]["age_s"]
        )
        for n in names
    ]
