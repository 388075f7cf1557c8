"""What caused a decision, in words and as data: a rule verdict (rule + values), an alert (name + labels), or an
operator (identity + reason)."""

from __future__ import annotations

from typing import Any

from agent.pb.rollback_agent.v1 import audit_pb2
from agent.reporting.when import format_time, from_pb


def trigger_kind(trigger: audit_pb2.Trigger) -> str:
    """ "rule", "alert", "operator", or "unknown" (no trigger recorded)."""
    return trigger.WhichOneof("source") or "unknown"


def root_cause(trigger: audit_pb2.Trigger) -> str:
    """The key root causes are counted by: "rule:<rule>", "alert:<alertname>", "operator:<identity>"."""
    kind = trigger_kind(trigger)
    if kind == "rule":
        return f"rule:{trigger.rule.rule}"
    if kind == "alert":
        return f"alert:{trigger.alert.alertname}"
    if kind == "operator":
        return f"operator:{trigger.operator.identity}"
    return "unknown"


def _labels(labels: Any) -> str:
    return ", ".join(f"{k}={labels[k]}" for k in sorted(labels))


def describe_trigger(trigger: audit_pb2.Trigger) -> str:
    kind = trigger_kind(trigger)
    if kind == "rule":
        r = trigger.rule
        text = f"rule {r.rule}"
        if r.kind:
            text += f" ({r.kind})"
        if r.version:
            text += f" on {r.version}"
        text += f": {r.verdict or 'verdict not recorded'}, value {r.value:g} vs threshold {r.threshold:g}"
        if r.window_s:
            text += f" over {r.window_s:g} s"
        if r.samples:
            text += f", {r.samples} samples"
        if r.reason:
            text += f"; {r.reason}"
        return text
    if kind == "alert":
        a = trigger.alert
        text = f"alert {a.alertname}"
        if a.labels:
            text += f" {{{_labels(a.labels)}}}"
        if a.HasField("starts_at"):
            text += f" firing since {format_time(from_pb(a.starts_at))}"
        if a.received_via:
            text += f" (via {a.received_via}" + (f", credential {a.credential}" if a.credential else "") + ")"
        return text
    if kind == "operator":
        o = trigger.operator
        return f"operator {o.identity or '(unnamed)'}" + (f": {o.reason}" if o.reason else "")
    return "no trigger recorded"


def trigger_data(trigger: audit_pb2.Trigger) -> dict[str, Any]:
    """JSON-ready: {"kind", "cause", "summary", and the fields of the kind}."""
    kind = trigger_kind(trigger)
    data: dict[str, Any] = {"kind": kind, "cause": root_cause(trigger), "summary": describe_trigger(trigger)}
    if kind == "rule":
        r = trigger.rule
        data.update(
            rule=r.rule,
            rule_kind=r.kind,
            version=r.version,
            verdict=r.verdict,
            value=r.value,
            threshold=r.threshold,
            window_s=r.window_s,
            samples=r.samples,
            reason=r.reason,
            source_file=r.source_file,
        )
    elif kind == "alert":
        a = trigger.alert
        data.update(
            alertname=a.alertname,
            labels=dict(sorted(a.labels.items())),
            annotations=dict(sorted(a.annotations.items())),
            fingerprint=a.fingerprint,
            starts_at=format_time(from_pb(a.starts_at)) if a.HasField("starts_at") else None,
            received_via=a.received_via,
            receiver=a.receiver,
            generator_url=a.generator_url,
            credential=a.credential,
        )
    elif kind == "operator":
        data.update(
            identity=trigger.operator.identity,
            reason=trigger.operator.reason,
            claimed_name=trigger.operator.claimed_name,
        )
    return data
