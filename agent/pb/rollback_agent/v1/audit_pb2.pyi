import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from agent.pb.rollback_agent.v1 import traffic_pb2 as _traffic_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AuditRecord(_message.Message):
    __slots__ = ("seq", "at", "model", "actor", "traffic_changed", "config_rejected", "automation_toggled", "prev_hash", "hash")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_CHANGED_FIELD_NUMBER: _ClassVar[int]
    CONFIG_REJECTED_FIELD_NUMBER: _ClassVar[int]
    AUTOMATION_TOGGLED_FIELD_NUMBER: _ClassVar[int]
    PREV_HASH_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    seq: int
    at: _timestamp_pb2.Timestamp
    model: str
    actor: str
    traffic_changed: TrafficChanged
    config_rejected: ConfigRejected
    automation_toggled: AutomationToggled
    prev_hash: bytes
    hash: bytes
    def __init__(self, seq: _Optional[int] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., model: _Optional[str] = ..., actor: _Optional[str] = ..., traffic_changed: _Optional[_Union[TrafficChanged, _Mapping]] = ..., config_rejected: _Optional[_Union[ConfigRejected, _Mapping]] = ..., automation_toggled: _Optional[_Union[AutomationToggled, _Mapping]] = ..., prev_hash: _Optional[bytes] = ..., hash: _Optional[bytes] = ...) -> None: ...

class TrafficChanged(_message.Message):
    __slots__ = ("from_policy", "to_policy", "route_version", "outcome", "decision_to_ack_ms", "detail")
    FROM_POLICY_FIELD_NUMBER: _ClassVar[int]
    TO_POLICY_FIELD_NUMBER: _ClassVar[int]
    ROUTE_VERSION_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    DECISION_TO_ACK_MS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    from_policy: _traffic_pb2.TrafficPolicy
    to_policy: _traffic_pb2.TrafficPolicy
    route_version: str
    outcome: str
    decision_to_ack_ms: float
    detail: str
    def __init__(self, from_policy: _Optional[_Union[_traffic_pb2.TrafficPolicy, _Mapping]] = ..., to_policy: _Optional[_Union[_traffic_pb2.TrafficPolicy, _Mapping]] = ..., route_version: _Optional[str] = ..., outcome: _Optional[str] = ..., decision_to_ack_ms: _Optional[float] = ..., detail: _Optional[str] = ...) -> None: ...

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
