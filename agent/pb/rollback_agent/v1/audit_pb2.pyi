import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from agent.pb.rollback_agent.v1 import traffic_pb2 as _traffic_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AuditRecord(_message.Message):
    __slots__ = ("seq", "at", "model", "actor", "traffic_changed", "config_rejected", "automation_toggled", "rollback", "version_status_changed", "rules_reloaded", "verdict_changed", "traffic_intent", "hold_changed", "state_established", "rollback_interrupted", "drill_started", "drill_finished", "rollout_changed", "lease_changed", "pin_changed", "mirror_changed", "prev_hash", "hash", "key_id", "signature_alg", "signature")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_CHANGED_FIELD_NUMBER: _ClassVar[int]
    CONFIG_REJECTED_FIELD_NUMBER: _ClassVar[int]
    AUTOMATION_TOGGLED_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_FIELD_NUMBER: _ClassVar[int]
    VERSION_STATUS_CHANGED_FIELD_NUMBER: _ClassVar[int]
    RULES_RELOADED_FIELD_NUMBER: _ClassVar[int]
    VERDICT_CHANGED_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_INTENT_FIELD_NUMBER: _ClassVar[int]
    HOLD_CHANGED_FIELD_NUMBER: _ClassVar[int]
    STATE_ESTABLISHED_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_INTERRUPTED_FIELD_NUMBER: _ClassVar[int]
    DRILL_STARTED_FIELD_NUMBER: _ClassVar[int]
    DRILL_FINISHED_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_CHANGED_FIELD_NUMBER: _ClassVar[int]
    LEASE_CHANGED_FIELD_NUMBER: _ClassVar[int]
    PIN_CHANGED_FIELD_NUMBER: _ClassVar[int]
    MIRROR_CHANGED_FIELD_NUMBER: _ClassVar[int]
    PREV_HASH_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_ALG_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    at: _timestamp_pb2.Timestamp
    model: str
    actor: str
    traffic_changed: TrafficChanged
    config_rejected: ConfigRejected
    automation_toggled: AutomationToggled
    rollback: Rollback
    version_status_changed: VersionStatusChanged
    rules_reloaded: RulesReloaded
    verdict_changed: VerdictChanged
    traffic_intent: TrafficIntent
    hold_changed: HoldChanged
    state_established: StateEstablished
    rollback_interrupted: RollbackInterrupted
    drill_started: DrillStarted
    drill_finished: DrillFinished
    rollout_changed: RolloutChanged
    lease_changed: LeaseChanged
    pin_changed: PinChanged
    mirror_changed: MirrorChanged
    prev_hash: bytes
    hash: bytes
    key_id: str
    signature_alg: str
    signature: bytes
    def __init__(self, seq: _Optional[int] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., model: _Optional[str] = ..., actor: _Optional[str] = ..., traffic_changed: _Optional[_Union[TrafficChanged, _Mapping]] = ..., config_rejected: _Optional[_Union[ConfigRejected, _Mapping]] = ..., automation_toggled: _Optional[_Union[AutomationToggled, _Mapping]] = ..., rollback: _Optional[_Union[Rollback, _Mapping]] = ..., version_status_changed: _Optional[_Union[VersionStatusChanged, _Mapping]] = ..., rules_reloaded: _Optional[_Union[RulesReloaded, _Mapping]] = ..., verdict_changed: _Optional[_Union[VerdictChanged, _Mapping]] = ..., traffic_intent: _Optional[_Union[TrafficIntent, _Mapping]] = ..., hold_changed: _Optional[_Union[HoldChanged, _Mapping]] = ..., state_established: _Optional[_Union[StateEstablished, _Mapping]] = ..., rollback_interrupted: _Optional[_Union[RollbackInterrupted, _Mapping]] = ..., drill_started: _Optional[_Union[DrillStarted, _Mapping]] = ..., drill_finished: _Optional[_Union[DrillFinished, _Mapping]] = ..., rollout_changed: _Optional[_Union[RolloutChanged, _Mapping]] = ..., lease_changed: _Optional[_Union[LeaseChanged, _Mapping]] = ..., pin_changed: _Optional[_Union[PinChanged, _Mapping]] = ..., mirror_changed: _Optional[_Union[MirrorChanged, _Mapping]] = ..., prev_hash: _Optional[bytes] = ..., hash: _Optional[bytes] = ..., key_id: _Optional[str] = ..., signature_alg: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class TrafficIntent(_message.Message):
    __slots__ = ("intent_id", "from_policy", "to_policy", "reason", "rollback_id", "trigger", "forced", "overridden")
    INTENT_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_POLICY_FIELD_NUMBER: _ClassVar[int]
    TO_POLICY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_ID_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    FORCED_FIELD_NUMBER: _ClassVar[int]
    OVERRIDDEN_FIELD_NUMBER: _ClassVar[int]
    intent_id: str
    from_policy: _traffic_pb2.TrafficPolicy
    to_policy: _traffic_pb2.TrafficPolicy
    reason: str
    rollback_id: str
    trigger: Trigger
    forced: bool
    overridden: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, intent_id: _Optional[str] = ..., from_policy: _Optional[_Union[_traffic_pb2.TrafficPolicy, _Mapping]] = ..., to_policy: _Optional[_Union[_traffic_pb2.TrafficPolicy, _Mapping]] = ..., reason: _Optional[str] = ..., rollback_id: _Optional[str] = ..., trigger: _Optional[_Union[Trigger, _Mapping]] = ..., forced: _Optional[bool] = ..., overridden: _Optional[_Iterable[str]] = ...) -> None: ...

class TrafficChanged(_message.Message):
    __slots__ = ("from_policy", "to_policy", "route_version", "outcome", "decision_to_ack_ms", "detail", "intent_seq", "intent_id")
    FROM_POLICY_FIELD_NUMBER: _ClassVar[int]
    TO_POLICY_FIELD_NUMBER: _ClassVar[int]
    ROUTE_VERSION_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    DECISION_TO_ACK_MS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    INTENT_SEQ_FIELD_NUMBER: _ClassVar[int]
    INTENT_ID_FIELD_NUMBER: _ClassVar[int]
    from_policy: _traffic_pb2.TrafficPolicy
    to_policy: _traffic_pb2.TrafficPolicy
    route_version: str
    outcome: str
    decision_to_ack_ms: float
    detail: str
    intent_seq: int
    intent_id: str
    def __init__(self, from_policy: _Optional[_Union[_traffic_pb2.TrafficPolicy, _Mapping]] = ..., to_policy: _Optional[_Union[_traffic_pb2.TrafficPolicy, _Mapping]] = ..., route_version: _Optional[str] = ..., outcome: _Optional[str] = ..., decision_to_ack_ms: _Optional[float] = ..., detail: _Optional[str] = ..., intent_seq: _Optional[int] = ..., intent_id: _Optional[str] = ...) -> None: ...

class ConfigRejected(_message.Message):
    __slots__ = ("node_id", "type_url", "rejected_version", "error")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    REJECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    type_url: str
    rejected_version: str
    error: str
    def __init__(self, node_id: _Optional[str] = ..., type_url: _Optional[str] = ..., rejected_version: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class AutomationToggled(_message.Message):
    __slots__ = ("paused", "reason")
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    paused: bool
    reason: str
    def __init__(self, paused: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class Trigger(_message.Message):
    __slots__ = ("rule", "alert", "operator", "dedupe_key")
    RULE_FIELD_NUMBER: _ClassVar[int]
    ALERT_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    DEDUPE_KEY_FIELD_NUMBER: _ClassVar[int]
    rule: RuleVerdict
    alert: AlertTrigger
    operator: OperatorTrigger
    dedupe_key: str
    def __init__(self, rule: _Optional[_Union[RuleVerdict, _Mapping]] = ..., alert: _Optional[_Union[AlertTrigger, _Mapping]] = ..., operator: _Optional[_Union[OperatorTrigger, _Mapping]] = ..., dedupe_key: _Optional[str] = ...) -> None: ...

class RuleVerdict(_message.Message):
    __slots__ = ("rule", "kind", "version", "verdict", "value", "threshold", "window_s", "samples", "reason", "source_file")
    RULE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FILE_FIELD_NUMBER: _ClassVar[int]
    rule: str
    kind: str
    version: str
    verdict: str
    value: float
    threshold: float
    window_s: float
    samples: int
    reason: str
    source_file: str
    def __init__(self, rule: _Optional[str] = ..., kind: _Optional[str] = ..., version: _Optional[str] = ..., verdict: _Optional[str] = ..., value: _Optional[float] = ..., threshold: _Optional[float] = ..., window_s: _Optional[float] = ..., samples: _Optional[int] = ..., reason: _Optional[str] = ..., source_file: _Optional[str] = ...) -> None: ...

class AlertTrigger(_message.Message):
    __slots__ = ("alertname", "labels", "annotations", "generator_url", "fingerprint", "starts_at", "received_via", "receiver", "credential")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class AnnotationsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ALERTNAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    ANNOTATIONS_FIELD_NUMBER: _ClassVar[int]
    GENERATOR_URL_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    STARTS_AT_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_VIA_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    alertname: str
    labels: _containers.ScalarMap[str, str]
    annotations: _containers.ScalarMap[str, str]
    generator_url: str
    fingerprint: str
    starts_at: _timestamp_pb2.Timestamp
    received_via: str
    receiver: str
    credential: str
    def __init__(self, alertname: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., annotations: _Optional[_Mapping[str, str]] = ..., generator_url: _Optional[str] = ..., fingerprint: _Optional[str] = ..., starts_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., received_via: _Optional[str] = ..., receiver: _Optional[str] = ..., credential: _Optional[str] = ...) -> None: ...

class OperatorTrigger(_message.Message):
    __slots__ = ("identity", "reason", "claimed_name")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CLAIMED_NAME_FIELD_NUMBER: _ClassVar[int]
    identity: str
    reason: str
    claimed_name: str
    def __init__(self, identity: _Optional[str] = ..., reason: _Optional[str] = ..., claimed_name: _Optional[str] = ...) -> None: ...

class Phase(_message.Message):
    __slots__ = ("name", "started_at", "duration_ms", "outcome", "detail")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    name: str
    started_at: _timestamp_pb2.Timestamp
    duration_ms: float
    outcome: str
    detail: str
    def __init__(self, name: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duration_ms: _Optional[float] = ..., outcome: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class SkippedTarget(_message.Message):
    __slots__ = ("version", "reason")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    version: str
    reason: str
    def __init__(self, version: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Rollback(_message.Message):
    __slots__ = ("rollback_id", "from_version", "to_version", "trigger", "phases", "skipped", "outcome", "from_policy", "to_policy", "archive_path", "archive_sha256", "detail", "drill_id")
    ROLLBACK_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_VERSION_FIELD_NUMBER: _ClassVar[int]
    TO_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    PHASES_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    FROM_POLICY_FIELD_NUMBER: _ClassVar[int]
    TO_POLICY_FIELD_NUMBER: _ClassVar[int]
    ARCHIVE_PATH_FIELD_NUMBER: _ClassVar[int]
    ARCHIVE_SHA256_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    DRILL_ID_FIELD_NUMBER: _ClassVar[int]
    rollback_id: str
    from_version: str
    to_version: str
    trigger: Trigger
    phases: _containers.RepeatedCompositeFieldContainer[Phase]
    skipped: _containers.RepeatedCompositeFieldContainer[SkippedTarget]
    outcome: str
    from_policy: _traffic_pb2.TrafficPolicy
    to_policy: _traffic_pb2.TrafficPolicy
    archive_path: str
    archive_sha256: str
    detail: str
    drill_id: str
    def __init__(self, rollback_id: _Optional[str] = ..., from_version: _Optional[str] = ..., to_version: _Optional[str] = ..., trigger: _Optional[_Union[Trigger, _Mapping]] = ..., phases: _Optional[_Iterable[_Union[Phase, _Mapping]]] = ..., skipped: _Optional[_Iterable[_Union[SkippedTarget, _Mapping]]] = ..., outcome: _Optional[str] = ..., from_policy: _Optional[_Union[_traffic_pb2.TrafficPolicy, _Mapping]] = ..., to_policy: _Optional[_Union[_traffic_pb2.TrafficPolicy, _Mapping]] = ..., archive_path: _Optional[str] = ..., archive_sha256: _Optional[str] = ..., detail: _Optional[str] = ..., drill_id: _Optional[str] = ...) -> None: ...

class VersionStatusChanged(_message.Message):
    __slots__ = ("version", "from_status", "to_status", "reason")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FROM_STATUS_FIELD_NUMBER: _ClassVar[int]
    TO_STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    version: str
    from_status: str
    to_status: str
    reason: str
    def __init__(self, version: _Optional[str] = ..., from_status: _Optional[str] = ..., to_status: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RulesReloaded(_message.Message):
    __slots__ = ("files", "rules", "error")
    FILES_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    files: _containers.RepeatedScalarFieldContainer[str]
    rules: int
    error: str
    def __init__(self, files: _Optional[_Iterable[str]] = ..., rules: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class VerdictChanged(_message.Message):
    __slots__ = ("verdict", "state", "action")
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    verdict: RuleVerdict
    state: str
    action: str
    def __init__(self, verdict: _Optional[_Union[RuleVerdict, _Mapping]] = ..., state: _Optional[str] = ..., action: _Optional[str] = ...) -> None: ...

class HoldChanged(_message.Message):
    __slots__ = ("version", "held", "reason")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    version: str
    held: bool
    reason: str
    def __init__(self, version: _Optional[str] = ..., held: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class StateEstablished(_message.Message):
    __slots__ = ("how", "store_id", "policy", "detail", "reason", "previous_store_id", "previous_files")
    HOW_FIELD_NUMBER: _ClassVar[int]
    STORE_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_STORE_ID_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FILES_FIELD_NUMBER: _ClassVar[int]
    how: str
    store_id: str
    policy: _traffic_pb2.TrafficPolicy
    detail: str
    reason: str
    previous_store_id: str
    previous_files: str
    def __init__(self, how: _Optional[str] = ..., store_id: _Optional[str] = ..., policy: _Optional[_Union[_traffic_pb2.TrafficPolicy, _Mapping]] = ..., detail: _Optional[str] = ..., reason: _Optional[str] = ..., previous_store_id: _Optional[str] = ..., previous_files: _Optional[str] = ...) -> None: ...

class RollbackInterrupted(_message.Message):
    __slots__ = ("rollback_id", "from_version", "to_version", "stage", "detail")
    ROLLBACK_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_VERSION_FIELD_NUMBER: _ClassVar[int]
    TO_VERSION_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    rollback_id: str
    from_version: str
    to_version: str
    stage: str
    detail: str
    def __init__(self, rollback_id: _Optional[str] = ..., from_version: _Optional[str] = ..., to_version: _Optional[str] = ..., stage: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class DrillStarted(_message.Message):
    __slots__ = ("drill_id", "version", "fault", "reason", "policy", "ttl_s", "schedule")
    DRILL_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FAULT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    drill_id: str
    version: str
    fault: str
    reason: str
    policy: _traffic_pb2.TrafficPolicy
    ttl_s: float
    schedule: str
    def __init__(self, drill_id: _Optional[str] = ..., version: _Optional[str] = ..., fault: _Optional[str] = ..., reason: _Optional[str] = ..., policy: _Optional[_Union[_traffic_pb2.TrafficPolicy, _Mapping]] = ..., ttl_s: _Optional[float] = ..., schedule: _Optional[str] = ...) -> None: ...

class DrillFinished(_message.Message):
    __slots__ = ("drill_id", "version", "outcome", "detail", "phases", "rollback_id", "restored_policy")
    DRILL_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    PHASES_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_ID_FIELD_NUMBER: _ClassVar[int]
    RESTORED_POLICY_FIELD_NUMBER: _ClassVar[int]
    drill_id: str
    version: str
    outcome: str
    detail: str
    phases: _containers.RepeatedCompositeFieldContainer[Phase]
    rollback_id: str
    restored_policy: _traffic_pb2.TrafficPolicy
    def __init__(self, drill_id: _Optional[str] = ..., version: _Optional[str] = ..., outcome: _Optional[str] = ..., detail: _Optional[str] = ..., phases: _Optional[_Iterable[_Union[Phase, _Mapping]]] = ..., rollback_id: _Optional[str] = ..., restored_policy: _Optional[_Union[_traffic_pb2.TrafficPolicy, _Mapping]] = ...) -> None: ...

class GateEvidence(_message.Message):
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

class RolloutChanged(_message.Message):
    __slots__ = ("candidate", "stable", "move", "phase", "from_stage", "to_stage", "from_stage_name", "to_stage_name", "candidate_weight", "mirror", "reason", "evidence", "plan_digest", "intended_seq", "error", "in_stage_s")
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    STABLE_FIELD_NUMBER: _ClassVar[int]
    MOVE_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    FROM_STAGE_FIELD_NUMBER: _ClassVar[int]
    TO_STAGE_FIELD_NUMBER: _ClassVar[int]
    FROM_STAGE_NAME_FIELD_NUMBER: _ClassVar[int]
    TO_STAGE_NAME_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    MIRROR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    PLAN_DIGEST_FIELD_NUMBER: _ClassVar[int]
    INTENDED_SEQ_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    IN_STAGE_S_FIELD_NUMBER: _ClassVar[int]
    candidate: str
    stable: str
    move: str
    phase: str
    from_stage: int
    to_stage: int
    from_stage_name: str
    to_stage_name: str
    candidate_weight: int
    mirror: float
    reason: str
    evidence: _containers.RepeatedCompositeFieldContainer[GateEvidence]
    plan_digest: str
    intended_seq: int
    error: str
    in_stage_s: float
    def __init__(self, candidate: _Optional[str] = ..., stable: _Optional[str] = ..., move: _Optional[str] = ..., phase: _Optional[str] = ..., from_stage: _Optional[int] = ..., to_stage: _Optional[int] = ..., from_stage_name: _Optional[str] = ..., to_stage_name: _Optional[str] = ..., candidate_weight: _Optional[int] = ..., mirror: _Optional[float] = ..., reason: _Optional[str] = ..., evidence: _Optional[_Iterable[_Union[GateEvidence, _Mapping]]] = ..., plan_digest: _Optional[str] = ..., intended_seq: _Optional[int] = ..., error: _Optional[str] = ..., in_stage_s: _Optional[float] = ...) -> None: ...

class LeaseChanged(_message.Message):
    __slots__ = ("lease_id", "version", "holder", "action", "acquired_at", "expires_at", "reason", "forced", "overridden")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ACQUIRED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FORCED_FIELD_NUMBER: _ClassVar[int]
    OVERRIDDEN_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    version: str
    holder: str
    action: str
    acquired_at: float
    expires_at: float
    reason: str
    forced: bool
    overridden: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, lease_id: _Optional[str] = ..., version: _Optional[str] = ..., holder: _Optional[str] = ..., action: _Optional[str] = ..., acquired_at: _Optional[float] = ..., expires_at: _Optional[float] = ..., reason: _Optional[str] = ..., forced: _Optional[bool] = ..., overridden: _Optional[_Iterable[str]] = ...) -> None: ...

class PinChanged(_message.Message):
    __slots__ = ("version", "pinned", "reason")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    version: str
    pinned: bool
    reason: str
    def __init__(self, version: _Optional[str] = ..., pinned: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class MirrorChanged(_message.Message):
    __slots__ = ("version", "from_fraction", "to_fraction", "reason", "outcome", "route_version", "decision_to_ack_ms", "detail", "forced", "overridden")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FROM_FRACTION_FIELD_NUMBER: _ClassVar[int]
    TO_FRACTION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ROUTE_VERSION_FIELD_NUMBER: _ClassVar[int]
    DECISION_TO_ACK_MS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    FORCED_FIELD_NUMBER: _ClassVar[int]
    OVERRIDDEN_FIELD_NUMBER: _ClassVar[int]
    version: str
    from_fraction: float
    to_fraction: float
    reason: str
    outcome: str
    route_version: str
    decision_to_ack_ms: float
    detail: str
    forced: bool
    overridden: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, version: _Optional[str] = ..., from_fraction: _Optional[float] = ..., to_fraction: _Optional[float] = ..., reason: _Optional[str] = ..., outcome: _Optional[str] = ..., route_version: _Optional[str] = ..., decision_to_ack_ms: _Optional[float] = ..., detail: _Optional[str] = ..., forced: _Optional[bool] = ..., overridden: _Optional[_Iterable[str]] = ...) -> None: ...
