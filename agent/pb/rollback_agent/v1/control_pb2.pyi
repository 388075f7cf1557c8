import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from agent.pb.rollback_agent.v1 import audit_pb2 as _audit_pb2
from agent.pb.rollback_agent.v1 import traffic_pb2 as _traffic_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SetWeightsRequest(_message.Message):
    __slots__ = ("weights", "reason", "actor", "force")
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    weights: _containers.RepeatedCompositeFieldContainer[_traffic_pb2.VersionWeight]
    reason: str
    actor: str
    force: bool
    def __init__(self, weights: _Optional[_Iterable[_Union[_traffic_pb2.VersionWeight, _Mapping]]] = ..., reason: _Optional[str] = ..., actor: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("to_version", "reason", "actor", "force")
    TO_VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    to_version: str
    reason: str
    actor: str
    force: bool
    def __init__(self, to_version: _Optional[str] = ..., reason: _Optional[str] = ..., actor: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class PauseRequest(_message.Message):
    __slots__ = ("reason", "actor")
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    reason: str
    actor: str
    def __init__(self, reason: _Optional[str] = ..., actor: _Optional[str] = ...) -> None: ...

class NodeAck(_message.Message):
    __slots__ = ("node_id", "xds_version", "acked_at")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    XDS_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACKED_AT_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    xds_version: str
    acked_at: _timestamp_pb2.Timestamp
    def __init__(self, node_id: _Optional[str] = ..., xds_version: _Optional[str] = ..., acked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TrafficChange(_message.Message):
    __slots__ = ("policy", "route_version", "acks", "decision_to_ack_ms", "changed", "rollback_id", "outcome", "detail")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    ROUTE_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACKS_FIELD_NUMBER: _ClassVar[int]
    DECISION_TO_ACK_MS_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    policy: _traffic_pb2.TrafficPolicy
    route_version: str
    acks: _containers.RepeatedCompositeFieldContainer[NodeAck]
    decision_to_ack_ms: float
    changed: bool
    rollback_id: str
    outcome: str
    detail: str
    def __init__(self, policy: _Optional[_Union[_traffic_pb2.TrafficPolicy, _Mapping]] = ..., route_version: _Optional[str] = ..., acks: _Optional[_Iterable[_Union[NodeAck, _Mapping]]] = ..., decision_to_ack_ms: _Optional[float] = ..., changed: _Optional[bool] = ..., rollback_id: _Optional[str] = ..., outcome: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class Nack(_message.Message):
    __slots__ = ("node_id", "type_url", "rejected_version", "serving_version", "error", "at")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    REJECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVING_VERSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    type_url: str
    rejected_version: str
    serving_version: str
    error: str
    at: _timestamp_pb2.Timestamp
    def __init__(self, node_id: _Optional[str] = ..., type_url: _Optional[str] = ..., rejected_version: _Optional[str] = ..., serving_version: _Optional[str] = ..., error: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class XdsTypeState(_message.Message):
    __slots__ = ("type_url", "sent_version", "acked_version", "acked_at", "nacks")
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    SENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACKED_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACKED_AT_FIELD_NUMBER: _ClassVar[int]
    NACKS_FIELD_NUMBER: _ClassVar[int]
    type_url: str
    sent_version: str
    acked_version: str
    acked_at: _timestamp_pb2.Timestamp
    nacks: int
    def __init__(self, type_url: _Optional[str] = ..., sent_version: _Optional[str] = ..., acked_version: _Optional[str] = ..., acked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., nacks: _Optional[int] = ...) -> None: ...

class EnvoyNode(_message.Message):
    __slots__ = ("node_id", "node_cluster", "stream_id", "connected_at", "types", "in_sync")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_CLUSTER_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_AT_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    IN_SYNC_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    node_cluster: str
    stream_id: str
    connected_at: _timestamp_pb2.Timestamp
    types: _containers.RepeatedCompositeFieldContainer[XdsTypeState]
    in_sync: bool
    def __init__(self, node_id: _Optional[str] = ..., node_cluster: _Optional[str] = ..., stream_id: _Optional[str] = ..., connected_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., types: _Optional[_Iterable[_Union[XdsTypeState, _Mapping]]] = ..., in_sync: _Optional[bool] = ...) -> None: ...

class VersionStatus(_message.Message):
    __slots__ = ("version", "endpoint", "desired_weight", "served_weight", "role", "registry_status", "health", "warm_up_unavailable")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    DESIRED_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    SERVED_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    REGISTRY_STATUS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    WARM_UP_UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    version: str
    endpoint: str
    desired_weight: int
    served_weight: int
    role: str
    registry_status: str
    health: _containers.RepeatedCompositeFieldContainer[HealthCheck]
    warm_up_unavailable: str
    def __init__(self, version: _Optional[str] = ..., endpoint: _Optional[str] = ..., desired_weight: _Optional[int] = ..., served_weight: _Optional[int] = ..., role: _Optional[str] = ..., registry_status: _Optional[str] = ..., health: _Optional[_Iterable[_Union[HealthCheck, _Mapping]]] = ..., warm_up_unavailable: _Optional[str] = ...) -> None: ...

class HealthCheck(_message.Message):
    __slots__ = ("name", "ok", "detail", "age_s")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    AGE_S_FIELD_NUMBER: _ClassVar[int]
    name: str
    ok: bool
    detail: str
    age_s: float
    def __init__(self, name: _Optional[str] = ..., ok: _Optional[bool] = ..., detail: _Optional[str] = ..., age_s: _Optional[float] = ...) -> None: ...

class Status(_message.Message):
    __slots__ = ("model", "tier", "stable", "candidate", "desired", "served", "route_version", "envoys", "versions", "recent_nacks", "paused", "pause_reason", "ready", "rules", "holds", "escalations", "rules_file", "rules_error", "store_id", "audit_head_seq", "signal_source", "pins", "leases")
    class HoldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class PinsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    STABLE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    SERVED_FIELD_NUMBER: _ClassVar[int]
    ROUTE_VERSION_FIELD_NUMBER: _ClassVar[int]
    ENVOYS_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    RECENT_NACKS_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    PAUSE_REASON_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    HOLDS_FIELD_NUMBER: _ClassVar[int]
    ESCALATIONS_FIELD_NUMBER: _ClassVar[int]
    RULES_FILE_FIELD_NUMBER: _ClassVar[int]
    RULES_ERROR_FIELD_NUMBER: _ClassVar[int]
    STORE_ID_FIELD_NUMBER: _ClassVar[int]
    AUDIT_HEAD_SEQ_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_SOURCE_FIELD_NUMBER: _ClassVar[int]
    PINS_FIELD_NUMBER: _ClassVar[int]
    LEASES_FIELD_NUMBER: _ClassVar[int]
    model: str
    tier: str
    stable: str
    candidate: str
    desired: _traffic_pb2.TrafficPolicy
    served: _traffic_pb2.TrafficPolicy
    route_version: str
    envoys: _containers.RepeatedCompositeFieldContainer[EnvoyNode]
    versions: _containers.RepeatedCompositeFieldContainer[VersionStatus]
    recent_nacks: _containers.RepeatedCompositeFieldContainer[Nack]
    paused: bool
    pause_reason: str
    ready: bool
    rules: _containers.RepeatedCompositeFieldContainer[RuleStatus]
    holds: _containers.ScalarMap[str, str]
    escalations: _containers.RepeatedScalarFieldContainer[str]
    rules_file: str
    rules_error: str
    store_id: str
    audit_head_seq: int
    signal_source: str
    pins: _containers.ScalarMap[str, str]
    leases: _containers.RepeatedCompositeFieldContainer[Lease]
    def __init__(self, model: _Optional[str] = ..., tier: _Optional[str] = ..., stable: _Optional[str] = ..., candidate: _Optional[str] = ..., desired: _Optional[_Union[_traffic_pb2.TrafficPolicy, _Mapping]] = ..., served: _Optional[_Union[_traffic_pb2.TrafficPolicy, _Mapping]] = ..., route_version: _Optional[str] = ..., envoys: _Optional[_Iterable[_Union[EnvoyNode, _Mapping]]] = ..., versions: _Optional[_Iterable[_Union[VersionStatus, _Mapping]]] = ..., recent_nacks: _Optional[_Iterable[_Union[Nack, _Mapping]]] = ..., paused: _Optional[bool] = ..., pause_reason: _Optional[str] = ..., ready: _Optional[bool] = ..., rules: _Optional[_Iterable[_Union[RuleStatus, _Mapping]]] = ..., holds: _Optional[_Mapping[str, str]] = ..., escalations: _Optional[_Iterable[str]] = ..., rules_file: _Optional[str] = ..., rules_error: _Optional[str] = ..., store_id: _Optional[str] = ..., audit_head_seq: _Optional[int] = ..., signal_source: _Optional[str] = ..., pins: _Optional[_Mapping[str, str]] = ..., leases: _Optional[_Iterable[_Union[Lease, _Mapping]]] = ...) -> None: ...

class HoldRequest(_message.Message):
    __slots__ = ("version", "reason", "actor")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    version: str
    reason: str
    actor: str
    def __init__(self, version: _Optional[str] = ..., reason: _Optional[str] = ..., actor: _Optional[str] = ...) -> None: ...

class RuleStatus(_message.Message):
    __slots__ = ("rule", "kind", "version", "state", "action", "value", "threshold", "window_s", "evidence", "evidence_unit", "reason", "for_s")
    RULE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_UNIT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FOR_S_FIELD_NUMBER: _ClassVar[int]
    rule: str
    kind: str
    version: str
    state: str
    action: str
    value: float
    threshold: float
    window_s: float
    evidence: float
    evidence_unit: str
    reason: str
    for_s: float
    def __init__(self, rule: _Optional[str] = ..., kind: _Optional[str] = ..., version: _Optional[str] = ..., state: _Optional[str] = ..., action: _Optional[str] = ..., value: _Optional[float] = ..., threshold: _Optional[float] = ..., window_s: _Optional[float] = ..., evidence: _Optional[float] = ..., evidence_unit: _Optional[str] = ..., reason: _Optional[str] = ..., for_s: _Optional[float] = ...) -> None: ...

class ErrorResponse(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class DrillStartRequest(_message.Message):
    __slots__ = ("version", "fault", "reason", "actor", "ttl_s", "schedule")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FAULT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    version: str
    fault: str
    reason: str
    actor: str
    ttl_s: float
    schedule: str
    def __init__(self, version: _Optional[str] = ..., fault: _Optional[str] = ..., reason: _Optional[str] = ..., actor: _Optional[str] = ..., ttl_s: _Optional[float] = ..., schedule: _Optional[str] = ...) -> None: ...

class DrillFinishRequest(_message.Message):
    __slots__ = ("drill_id", "outcome", "detail", "phases", "rollback_id", "restored_policy", "actor")
    DRILL_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    PHASES_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_ID_FIELD_NUMBER: _ClassVar[int]
    RESTORED_POLICY_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    drill_id: str
    outcome: str
    detail: str
    phases: _containers.RepeatedCompositeFieldContainer[_audit_pb2.Phase]
    rollback_id: str
    restored_policy: _traffic_pb2.TrafficPolicy
    actor: str
    def __init__(self, drill_id: _Optional[str] = ..., outcome: _Optional[str] = ..., detail: _Optional[str] = ..., phases: _Optional[_Iterable[_Union[_audit_pb2.Phase, _Mapping]]] = ..., rollback_id: _Optional[str] = ..., restored_policy: _Optional[_Union[_traffic_pb2.TrafficPolicy, _Mapping]] = ..., actor: _Optional[str] = ...) -> None: ...

class DrillState(_message.Message):
    __slots__ = ("drill_id", "version", "fault", "active", "started_at", "expires_at", "policy", "rollbacks", "outcome", "actor")
    DRILL_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FAULT_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    ROLLBACKS_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    drill_id: str
    version: str
    fault: str
    active: bool
    started_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    policy: _traffic_pb2.TrafficPolicy
    rollbacks: _containers.RepeatedCompositeFieldContainer[_audit_pb2.Rollback]
    outcome: str
    actor: str
    def __init__(self, drill_id: _Optional[str] = ..., version: _Optional[str] = ..., fault: _Optional[str] = ..., active: _Optional[bool] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., policy: _Optional[_Union[_traffic_pb2.TrafficPolicy, _Mapping]] = ..., rollbacks: _Optional[_Iterable[_Union[_audit_pb2.Rollback, _Mapping]]] = ..., outcome: _Optional[str] = ..., actor: _Optional[str] = ...) -> None: ...

class RolloutStartRequest(_message.Message):
    __slots__ = ("version", "plan", "plan_source", "reason", "actor")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    PLAN_SOURCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    version: str
    plan: str
    plan_source: str
    reason: str
    actor: str
    def __init__(self, version: _Optional[str] = ..., plan: _Optional[str] = ..., plan_source: _Optional[str] = ..., reason: _Optional[str] = ..., actor: _Optional[str] = ...) -> None: ...

class RolloutActionRequest(_message.Message):
    __slots__ = ("reason", "actor")
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    reason: str
    actor: str
    def __init__(self, reason: _Optional[str] = ..., actor: _Optional[str] = ...) -> None: ...

class RolloutGate(_message.Message):
    __slots__ = ("gate", "outcome", "reason", "value", "threshold")
    GATE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    gate: str
    outcome: str
    reason: str
    value: float
    threshold: float
    def __init__(self, gate: _Optional[str] = ..., outcome: _Optional[str] = ..., reason: _Optional[str] = ..., value: _Optional[float] = ..., threshold: _Optional[float] = ...) -> None: ...

class RolloutStage(_message.Message):
    __slots__ = ("name", "weight", "mirror", "min_duration_s", "gates")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    MIRROR_FIELD_NUMBER: _ClassVar[int]
    MIN_DURATION_S_FIELD_NUMBER: _ClassVar[int]
    GATES_FIELD_NUMBER: _ClassVar[int]
    name: str
    weight: int
    mirror: float
    min_duration_s: float
    gates: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., weight: _Optional[int] = ..., mirror: _Optional[float] = ..., min_duration_s: _Optional[float] = ..., gates: _Optional[_Iterable[str]] = ...) -> None: ...

class RolloutStatus(_message.Message):
    __slots__ = ("exists", "candidate", "stable", "status", "stage", "stages", "in_stage_s", "breaches", "max_breaches", "on_breach", "waiting_for", "gates", "last_move", "plan_digest", "held", "model_stable")
    EXISTS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    STABLE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    IN_STAGE_S_FIELD_NUMBER: _ClassVar[int]
    BREACHES_FIELD_NUMBER: _ClassVar[int]
    MAX_BREACHES_FIELD_NUMBER: _ClassVar[int]
    ON_BREACH_FIELD_NUMBER: _ClassVar[int]
    WAITING_FOR_FIELD_NUMBER: _ClassVar[int]
    GATES_FIELD_NUMBER: _ClassVar[int]
    LAST_MOVE_FIELD_NUMBER: _ClassVar[int]
    PLAN_DIGEST_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    MODEL_STABLE_FIELD_NUMBER: _ClassVar[int]
    exists: bool
    candidate: str
    stable: str
    status: str
    stage: int
    stages: _containers.RepeatedCompositeFieldContainer[RolloutStage]
    in_stage_s: float
    breaches: int
    max_breaches: int
    on_breach: str
    waiting_for: str
    gates: _containers.RepeatedCompositeFieldContainer[RolloutGate]
    last_move: str
    plan_digest: str
    held: bool
    model_stable: str
    def __init__(self, exists: _Optional[bool] = ..., candidate: _Optional[str] = ..., stable: _Optional[str] = ..., status: _Optional[str] = ..., stage: _Optional[int] = ..., stages: _Optional[_Iterable[_Union[RolloutStage, _Mapping]]] = ..., in_stage_s: _Optional[float] = ..., breaches: _Optional[int] = ..., max_breaches: _Optional[int] = ..., on_breach: _Optional[str] = ..., waiting_for: _Optional[str] = ..., gates: _Optional[_Iterable[_Union[RolloutGate, _Mapping]]] = ..., last_move: _Optional[str] = ..., plan_digest: _Optional[str] = ..., held: _Optional[bool] = ..., model_stable: _Optional[str] = ...) -> None: ...

class Lease(_message.Message):
    __slots__ = ("lease_id", "version", "holder", "state", "acquired_at", "expires_at", "ended_at", "reason", "end_reason", "actor", "header")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ACQUIRED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    version: str
    holder: str
    state: str
    acquired_at: float
    expires_at: float
    ended_at: float
    reason: str
    end_reason: str
    actor: str
    header: str
    def __init__(self, lease_id: _Optional[str] = ..., version: _Optional[str] = ..., holder: _Optional[str] = ..., state: _Optional[str] = ..., acquired_at: _Optional[float] = ..., expires_at: _Optional[float] = ..., ended_at: _Optional[float] = ..., reason: _Optional[str] = ..., end_reason: _Optional[str] = ..., actor: _Optional[str] = ..., header: _Optional[str] = ...) -> None: ...

class LeaseRequest(_message.Message):
    __slots__ = ("version", "holder", "ttl_s", "reason", "force", "actor")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    version: str
    holder: str
    ttl_s: float
    reason: str
    force: bool
    actor: str
    def __init__(self, version: _Optional[str] = ..., holder: _Optional[str] = ..., ttl_s: _Optional[float] = ..., reason: _Optional[str] = ..., force: _Optional[bool] = ..., actor: _Optional[str] = ...) -> None: ...

class LeaseList(_message.Message):
    __slots__ = ("leases", "header")
    LEASES_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    leases: _containers.RepeatedCompositeFieldContainer[Lease]
    header: str
    def __init__(self, leases: _Optional[_Iterable[_Union[Lease, _Mapping]]] = ..., header: _Optional[str] = ...) -> None: ...

class PinRequest(_message.Message):
    __slots__ = ("version", "reason", "actor")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    version: str
    reason: str
    actor: str
    def __init__(self, version: _Optional[str] = ..., reason: _Optional[str] = ..., actor: _Optional[str] = ...) -> None: ...

class Overview(_message.Message):
    __slots__ = ("now", "refresh_s", "status", "rollout", "decisions", "rollback", "trail_error")
    NOW_FIELD_NUMBER: _ClassVar[int]
    REFRESH_S_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_FIELD_NUMBER: _ClassVar[int]
    TRAIL_ERROR_FIELD_NUMBER: _ClassVar[int]
    now: str
    refresh_s: float
    status: Status
    rollout: RolloutStatus
    decisions: _containers.RepeatedCompositeFieldContainer[DecisionEntry]
    rollback: RollbackProgress
    trail_error: str
    def __init__(self, now: _Optional[str] = ..., refresh_s: _Optional[float] = ..., status: _Optional[_Union[Status, _Mapping]] = ..., rollout: _Optional[_Union[RolloutStatus, _Mapping]] = ..., decisions: _Optional[_Iterable[_Union[DecisionEntry, _Mapping]]] = ..., rollback: _Optional[_Union[RollbackProgress, _Mapping]] = ..., trail_error: _Optional[str] = ...) -> None: ...

class DecisionEntry(_message.Message):
    __slots__ = ("seq", "at", "actor", "kind", "summary", "reason", "outcome", "detail", "rollback_id")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_ID_FIELD_NUMBER: _ClassVar[int]
    seq: int
    at: str
    actor: str
    kind: str
    summary: str
    reason: str
    outcome: str
    detail: str
    rollback_id: str
    def __init__(self, seq: _Optional[int] = ..., at: _Optional[str] = ..., actor: _Optional[str] = ..., kind: _Optional[str] = ..., summary: _Optional[str] = ..., reason: _Optional[str] = ..., outcome: _Optional[str] = ..., detail: _Optional[str] = ..., rollback_id: _Optional[str] = ...) -> None: ...

class RollbackProgress(_message.Message):
    __slots__ = ("rollback_id", "from_version", "to_version", "trigger", "actor", "started_at", "done", "outcome", "detail", "skipped", "phases", "running", "pending")
    ROLLBACK_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_VERSION_FIELD_NUMBER: _ClassVar[int]
    TO_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    PHASES_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    rollback_id: str
    from_version: str
    to_version: str
    trigger: str
    actor: str
    started_at: str
    done: bool
    outcome: str
    detail: str
    skipped: _containers.RepeatedCompositeFieldContainer[_audit_pb2.SkippedTarget]
    phases: _containers.RepeatedCompositeFieldContainer[ProgressPhase]
    running: RunningStep
    pending: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, rollback_id: _Optional[str] = ..., from_version: _Optional[str] = ..., to_version: _Optional[str] = ..., trigger: _Optional[str] = ..., actor: _Optional[str] = ..., started_at: _Optional[str] = ..., done: _Optional[bool] = ..., outcome: _Optional[str] = ..., detail: _Optional[str] = ..., skipped: _Optional[_Iterable[_Union[_audit_pb2.SkippedTarget, _Mapping]]] = ..., phases: _Optional[_Iterable[_Union[ProgressPhase, _Mapping]]] = ..., running: _Optional[_Union[RunningStep, _Mapping]] = ..., pending: _Optional[_Iterable[str]] = ...) -> None: ...

class ProgressPhase(_message.Message):
    __slots__ = ("name", "outcome", "duration_ms", "detail", "started_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    outcome: str
    duration_ms: float
    detail: str
    started_at: str
    def __init__(self, name: _Optional[str] = ..., outcome: _Optional[str] = ..., duration_ms: _Optional[float] = ..., detail: _Optional[str] = ..., started_at: _Optional[str] = ...) -> None: ...

class RunningStep(_message.Message):
    __slots__ = ("name", "elapsed_s", "limit_s", "remaining_s")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_S_FIELD_NUMBER: _ClassVar[int]
    LIMIT_S_FIELD_NUMBER: _ClassVar[int]
    REMAINING_S_FIELD_NUMBER: _ClassVar[int]
    name: str
    elapsed_s: float
    limit_s: float
    remaining_s: float
    def __init__(self, name: _Optional[str] = ..., elapsed_s: _Optional[float] = ..., limit_s: _Optional[float] = ..., remaining_s: _Optional[float] = ...) -> None: ...
