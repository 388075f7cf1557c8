"""Where every alert enters, from the webhook or the API pull: route, deduplicate, hand to the decision handler.

One AlertIntake is shared by both sources, so an alert delivered by webhook and pulled from the API, retried, or
re-notified acts once. In the agent the one dedupe memory is the decision engine's (agent.engine.admission, which
persists it): the intake is built without its own and reports the engine's "duplicate" answer. Standalone (tests,
tools) it can keep a memory of its own. `submit` hands a RoutedAlert to the engine (it turns it into a
TriggerEvent for the DecisionHandler); when it raises, the alert is forgotten so the next delivery acts
(Alertmanager retries on 5xx).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agent.alerts.alert import Alert
from agent.alerts.config import AlertsConfig
from agent.alerts.dedupe import Dedupe
from agent.alerts.routing import AlertRouter, ReceivedVia, RoutedAlert

log = logging.getLogger(__name__)


class IntakeOutcome(enum.StrEnum):
    ACCEPTED = "accepted"  # handed to the decision handler
    DUPLICATE = "duplicate"  # this occurrence was already handed over (retry, re-notification, other source)
    IGNORED = "ignored"  # no route acts on it (no match, an `ignore` route, another model)


@dataclass(frozen=True, slots=True)
class Submitted:
    """What the decision handler decided: its outcome (e.g. "rolled_back", "held") and why."""

    outcome: str
    detail: str
    # The handler could not act (e.g. escalated: no eligible target right now): the same alert may act again once
    # the intake's retry hold-off has passed, instead of being a duplicate until it resolves and fires again.
    retry: bool = False


Submit = Callable[[RoutedAlert], Awaitable[Submitted]]


@dataclass(frozen=True, slots=True)
class IntakeResult:
    fingerprint: str
    alertname: str
    status: str
    outcome: IntakeOutcome
    action: str = ""
    version: str | None = None
    route: str = ""
    decision: str = ""
    detail: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "fingerprint": self.fingerprint,
            "alertname": self.alertname,
            "status": self.status,
            "outcome": self.outcome.value,
            "action": self.action,
            "version": self.version,
            "route": self.route,
            "decision": self.decision,
            "detail": self.detail,
        }


class AlertIntake:
    def __init__(
        self, router: AlertRouter, dedupe: Dedupe | None, submit: Submit, *, retry_after_s: float = 30.0
    ) -> None:
        self.router = router
        self.dedupe = dedupe
        self._submit = submit
        self._retry_after_s = retry_after_s

    @classmethod
    def from_config(cls, config: AlertsConfig, model: str, submit: Submit, *, own_dedupe: bool = True) -> AlertIntake:
        return cls(
            AlertRouter.from_config(config, model),
            Dedupe(ttl_s=config.dedupe_ttl_s, max_entries=config.dedupe_max_entries) if own_dedupe else None,
            submit,
            retry_after_s=config.escalation_retry_s,
        )

    async def take(
        self, alert: Alert, *, received_via: ReceivedVia, receiver: str = "", credential: str = ""
    ) -> IntakeResult:
        """Route, deduplicate and submit one alert. Raises what `submit` raises (the alert is then forgotten).
        `credential` names the credential the alert came with; the audit record of its decision carries it."""
        routed = self.router.route(alert, received_via=received_via, receiver=receiver, credential=credential)
        if routed is None:
            log.debug(
                "alert %s (%s) %s via %s: no route acts on it",
                alert.alertname,
                alert.fingerprint,
                alert.status,
                received_via,
            )
            return self._result(alert, IntakeOutcome.IGNORED, detail="no route acts on this alert")
        dedupe = self.dedupe
        if dedupe is not None and not dedupe.claim(routed.dedupe_key):
            return self._result(alert, IntakeOutcome.DUPLICATE, routed, detail=f"already handled ({routed.dedupe_key})")
        try:
            submitted = await self._submit(routed)
        except BaseException:
            if dedupe is not None:
                dedupe.release(routed.dedupe_key)
            raise
        if submitted.outcome == IntakeOutcome.DUPLICATE.value:
            return self._result(alert, IntakeOutcome.DUPLICATE, routed, detail=submitted.detail)
        if submitted.retry and dedupe is not None:
            dedupe.retry_after(routed.dedupe_key, self._retry_after_s)
        log.info("alert via %s: %s -> %s: %s", received_via, routed.summary, submitted.outcome, submitted.detail)
        return self._result(alert, IntakeOutcome.ACCEPTED, routed, submitted.outcome, submitted.detail)

    @staticmethod
    def _result(
        alert: Alert,
        outcome: IntakeOutcome,
        routed: RoutedAlert | None = None,
        decision: str = "",
        detail: str = "",
    ) -> IntakeResult:
        return IntakeResult(
            fingerprint=alert.fingerprint,
            alertname=alert.alertname,
            status=alert.status,
            outcome=outcome,
            action=routed.action.value if routed else "",
            version=routed.version if routed else None,
            route=routed.route if routed else "",
            decision=decision,
            detail=detail,
        )
