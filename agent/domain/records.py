"""Mapping between pure domain values and the wire records defined in proto/ (audit records, control API)."""

from __future__ import annotations

from google.protobuf import timestamp_pb2

from agent.domain.traffic import TrafficPolicy
from agent.pb.rollback_agent.v1 import traffic_pb2


def timestamp(unix_s: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(unix_s * 1e9))
    return ts


def policy_to_pb(policy: TrafficPolicy) -> traffic_pb2.TrafficPolicy:
    return traffic_pb2.TrafficPolicy(
        weights=[traffic_pb2.VersionWeight(version=v, weight=w) for v, w in policy.weights],
        revision=policy.revision,
        reason=policy.reason,
        actor=policy.actor,
        changed_at=timestamp(policy.changed_at),
    )


def policy_from_pb(message: traffic_pb2.TrafficPolicy) -> TrafficPolicy:
    return TrafficPolicy(
        weights=tuple((w.version, w.weight) for w in message.weights),
        revision=message.revision,
        reason=message.reason,
        actor=message.actor,
        changed_at=message.changed_at.ToNanoseconds() / 1e9,
    )
