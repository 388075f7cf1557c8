"""The routing table: which alerts act, how, and on which version.

Routes are tried in order and the first match wins. A route matches when every `match` entry matches the alert's
label (exactly, or by a regular expression anchored at both ends; a missing label has the value "") and, unless
the route says `any_model: true`, the alert's model label equals this agent's model. An alert no route matches is
ignored: it is counted and logged, and never reaches the decision handler.

A resolved alert follows the same route as its firing notification and carries `resolved=True`: it ends a hold
the firing one started and never moves traffic by itself.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from google.protobuf import timestamp_pb2

from agent.alerts.alert import Alert
from agent.alerts.config import AlertRoute, AlertsConfig, RegexMatch
from agent.alerts.dedupe import event_key
from agent.domain.actions import Action
from agent.pb.rollback_agent.v1 import audit_pb2

ReceivedVia = Literal["webhook", "api"]
ACTION_LABEL = "action"  # the alert label read by routes with `action: from_label`
_SUMMARY_MAX = 300


@dataclass(frozen=True, slots=True)
class RoutedAlert:
    """An alert the routing table accepted: everything the engine needs for a TriggerEvent."""

    alert: Alert
    action: Action
    version: str | None  # None: whichever non-stable version receives traffic
    route: str
    summary: str
    record: audit_pb2.Trigger
    dedupe_key: str

    @property
    def resolved(self) -> bool:
        return self.alert.resolved


@dataclass(frozen=True, slots=True)
class _Matcher:
    label: str
    exact: str | None
    pattern: re.Pattern[str] | None

    def matches(self, labels: dict[str, str]) -> bool:
        value = labels.get(self.label, "")
        if self.pattern is not None:
            return self.pattern.fullmatch(value) is not None
        return value == self.exact


@dataclass(frozen=True, slots=True)
class _Route:
    name: str
    matchers: tuple[_Matcher, ...]
    action: str
    version_label: str
    any_model: bool


def _compile(index: int, route: AlertRoute) -> _Route:
    matchers = tuple(
        _Matcher(label, None, re.compile(m.regex)) if isinstance(m, RegexMatch) else _Matcher(label, m, None)
        for label, m in route.match.items()
    )
    return _Route(route.name or f"routes.{index}", matchers, route.action, route.version_label, route.any_model)


class AlertRouter:
    def __init__(self, routes: Sequence[AlertRoute], *, model: str, model_label: str = "model") -> None:
        self.model = model
        self.model_label = model_label
        self._routes = tuple(_compile(i, r) for i, r in enumerate(routes))

    @classmethod
    def from_config(cls, config: AlertsConfig, model: str) -> AlertRouter:
        return cls(config.routes, model=model, model_label=config.model_label)

    def route(
        self, alert: Alert, *, received_via: ReceivedVia, receiver: str = "", credential: str = ""
    ) -> RoutedAlert | None:
        """The action this alert asks for, or None when it is ignored (no route, an `ignore` route, another
        model). `credential`: the name of the credential the alert came with (recorded)."""
        labels = dict(alert.labels)
        for route in self._routes:
            if not route.any_model and labels.get(self.model_label) != self.model:
                continue
            if all(m.matches(labels) for m in route.matchers):
                return self._routed(alert, route, labels, received_via, receiver, credential)
        return None

    def _routed(
        self,
        alert: Alert,
        route: _Route,
        labels: dict[str, str],
        received_via: ReceivedVia,
        receiver: str,
        credential: str,
    ) -> RoutedAlert | None:
        note = ""
        chosen = route.action
        if chosen == "from_label":
            chosen = labels.get(ACTION_LABEL, "").strip().lower()
            if chosen not in ("rollback", "hold", "alert", "ignore"):
                given = labels.get(ACTION_LABEL, "")
                note = f" [label {ACTION_LABEL}={given!r} is not rollback|hold|alert|ignore: recorded only]"
                chosen = "alert"
        if chosen == "ignore":
            return None
        action = Action(chosen)
        version = labels.get(route.version_label) or None
        return RoutedAlert(
            alert=alert,
            action=action,
            version=version,
            route=route.name,
            summary=self._summary(alert, version, route.name, action) + note,
            record=_record(alert, received_via, receiver, credential),
            dedupe_key=event_key(alert),
        )

    def _summary(self, alert: Alert, version: str | None, route: str, action: Action) -> str:
        model = alert.labels.get(self.model_label) or "any model"
        target = f"{model} version {version}" if version else model
        detail = alert.annotations.get("summary") or alert.annotations.get("description") or ""
        text = f"alert {alert.alertname or alert.fingerprint} {alert.status} for {target}"
        if detail:
            text += f": {detail}"
        if len(text) > _SUMMARY_MAX:
            text = text[: _SUMMARY_MAX - 3] + "..."
        return f"{text} (route {route}: {action.value})"


def _record(alert: Alert, received_via: ReceivedVia, receiver: str, credential: str) -> audit_pb2.Trigger:
    starts_at = timestamp_pb2.Timestamp()
    starts_at.FromDatetime(alert.starts_at)
    return audit_pb2.Trigger(
        alert=audit_pb2.AlertTrigger(
            alertname=alert.alertname,
            labels=dict(alert.labels),
            annotations=dict(alert.annotations),
            generator_url=alert.generator_url,
            fingerprint=alert.fingerprint,
            starts_at=starts_at,
            received_via=received_via,
            receiver=receiver,
            credential=credential,
        )
    )
