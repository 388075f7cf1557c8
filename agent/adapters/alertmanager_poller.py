"""Pulls GET /api/v2/alerts from Alertmanager, so every replica learns of an alert whose webhook reached only one.

Each round asks the configured members of the HA cluster in order; the first that answers wins (members return
the same alerts). New active alerts (firing, not silenced, not inhibited) for this model go through the shared
AlertIntake, so an alert also delivered by webhook acts once. An alert that leaves the API (resolved or expired)
gives one resolved notification; a silenced or inhibited alert is still present, so silencing never resolves.

While no member answers, nothing acts: the pull is only reported, by `rollback_agent_alertmanager_up{url}`,
`rollback_agent_alertmanager_poll_errors_total{url}` and one log line per state change (not per poll). A failing
member is retried after poll_interval_s, doubling per consecutive error up to backoff_max_s. An answer that is not
a JSON array of alerts (bad JSON, too deep, invalid text, larger than 32 MiB) is such a failure. One invalid alert
in a valid array is skipped (logged once while it stays) and the others are taken; while any is skipped, no
tracked alert counts as resolved, since the skipped one may be it.

Also here: the bridge from a RoutedAlert to the engine's TriggerEvent (`decision_submitter`), shared with the
webhook; agent.alerts stays below the engine and does not import it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from agent.alerts.alert import Alert
from agent.alerts.config import AlertmanagerSection, AlertsConfig
from agent.alerts.dedupe import occurrence_key
from agent.alerts.intake import AlertIntake, IntakeOutcome, IntakeResult, Submit, Submitted
from agent.alerts.metrics import AlertSourceMetrics
from agent.alerts.payload import ApiAlert, ApiAlerts, PayloadError, parse_api_alerts
from agent.alerts.routing import RoutedAlert
from agent.engine.decisions import Action, Cause, DecisionHandler, DecisionOutcome, TriggerEvent

log = logging.getLogger(__name__)

ALERTS_PATH = "/api/v2/alerts"
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
_CHUNK = 64 * 1024


def alert_trigger_event(routed: RoutedAlert) -> TriggerEvent:
    return TriggerEvent(
        cause=Cause.ALERT,
        action=Action(routed.action.value),
        version=routed.version,
        summary=routed.summary,
        record=routed.record,
        dedupe_key=f"alert:{routed.dedupe_key}",
        resolved=routed.resolved,
    )


def decision_submitter(handler: DecisionHandler) -> Submit:
    """`AlertIntake`'s submit: a RoutedAlert becomes a TriggerEvent for `handler` (the rollback orchestrator)."""

    async def submit(routed: RoutedAlert) -> Submitted:
        decision = await handler.handle(alert_trigger_event(routed))
        return Submitted(decision.outcome.value, decision.detail, retry=decision.outcome is DecisionOutcome.FAILED)

    return submit


def redact_url(url: str) -> str:
    """The URL without user:password, for labels and logs."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


class PollError(Exception):
    pass


@dataclass
class _Member:
    url: str
    label: str
    up: bool | None = None  # None: never tried
    failures: int = 0
    retry_at: float = 0.0


class AlertmanagerPoller:
    def __init__(
        self,
        section: AlertmanagerSection,
        intake: AlertIntake,
        metrics: AlertSourceMetrics,
        *,
        matchers: Sequence[str] = (),
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """`matchers`: Alertmanager label matchers sent as `filter=` (e.g. `model="fraud"`); the routing table
        decides anyway, the filter only keeps other models' alerts off the wire."""
        self._section = section
        self._intake = intake
        self._metrics = metrics
        self._members = [_Member(url, redact_url(url)) for url in section.urls]
        self._params = [("active", "true"), ("silenced", "true"), ("inhibited", "true"), ("unprocessed", "true")]
        self._params += [("filter", m) for m in matchers]
        self._session = session
        self._owns_session = session is None
        self._clock = clock
        self._wall = wall_clock
        self._all_down = False
        self._tracked: dict[str, Alert] = {}  # occurrence key -> alert routed while active (for its resolution)
        self._ignored: set[str] = set()  # occurrence keys present and ignored by the routing table
        self._failing: set[str] = set()  # event keys whose submission failed (logged once each)
        self._refused: set[str] = set()  # errors of the invalid alerts skipped in the last answer

    @classmethod
    def from_config(
        cls, config: AlertsConfig, model: str, intake: AlertIntake, metrics: AlertSourceMetrics
    ) -> AlertmanagerPoller:
        matchers = () if config.any_model_routes else (f'{config.model_label}="{_escape(model)}"',)
        return cls(config.alertmanager, intake, metrics, matchers=matchers)

    @property
    def tracked(self) -> int:
        """How many active alerts are being watched for their resolution."""
        return len(self._tracked)

    async def run(self) -> None:
        """Poll until cancelled."""
        if not self._members:
            log.info("no alerts.alertmanager.urls configured: not pulling alerts")
            return
        log.info(
            "pulling alerts every %.3gs from %s",
            self._section.poll_interval_s,
            ", ".join(m.label for m in self._members),
        )
        try:
            while True:
                try:
                    delay = await self.poll_once()
                except asyncio.CancelledError:
                    raise
                except Exception:  # a bug must not end the pull for the life of the process
                    log.exception("alert pull round failed; retrying in %.3gs", self._section.poll_interval_s)
                    delay = self._section.poll_interval_s
                await asyncio.sleep(delay)
        finally:
            await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def poll_once(self) -> float:
        """One round: returns the seconds to wait before the next."""
        interval = self._section.poll_interval_s
        if not self._members:
            return interval
        for member in self._members:
            if member.retry_at > self._clock():
                continue
            try:
                alerts = await self._fetch(member)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._member_failed(member, exc)
                continue
            self._member_ok(member)
            self._report_refused(member, alerts.refused)
            await self._reconcile(alerts.alerts, f"alertmanager-api:{member.label}", resolve=not alerts.refused)
            return interval
        if not self._all_down:
            self._all_down = True
            log.warning(
                "no Alertmanager answers (%s): alert pull paused; no action is taken until one answers",
                ", ".join(m.label for m in self._members),
            )
        next_try = min(m.retry_at for m in self._members) - self._clock()
        return max(interval, next_try)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
            self._owns_session = True
        return self._session

    async def _fetch(self, member: _Member) -> ApiAlerts:
        timeout = aiohttp.ClientTimeout(total=self._section.timeout_s)
        try:
            async with self._http().get(member.url + ALERTS_PATH, params=self._params, timeout=timeout) as resp:
                if resp.status != 200:
                    raise PollError(f"HTTP {resp.status} {resp.reason or ''}".strip())
                raw = await _read_bounded(resp)
        except TimeoutError:
            raise PollError(f"no answer within {self._section.timeout_s:.3g}s") from None
        try:
            return parse_api_alerts(raw)
        except PayloadError as exc:
            raise PollError(f"invalid answer: {exc}") from None

    def _report_refused(self, member: _Member, refused: list[str]) -> None:
        current = set(refused)
        for error in sorted(current - self._refused):
            log.warning("Alertmanager %s: skipped an invalid alert: %s", member.label, error)
        if self._refused and not current:
            log.info("Alertmanager %s: no invalid alerts any more", member.label)
        self._refused = current

    def _member_ok(self, member: _Member) -> None:
        if member.up is not True:
            log.info("Alertmanager %s answers: pulling alerts from it", member.label)
        if self._all_down:
            self._all_down = False
            log.info("alert pull resumed (Alertmanager %s)", member.label)
        member.up, member.failures, member.retry_at = True, 0, 0.0
        self._metrics.alertmanager_up.labels(member.label).set(1)

    def _member_failed(self, member: _Member, exc: Exception) -> None:
        member.failures += 1
        delay = min(self._section.backoff_max_s, self._section.poll_interval_s * 2 ** (member.failures - 1))
        member.retry_at = self._clock() + delay
        self._metrics.alertmanager_up.labels(member.label).set(0)
        self._metrics.alertmanager_poll_errors.labels(member.label).inc()
        reason = str(exc) or type(exc).__name__
        if member.up is not False:
            log.warning(
                "Alertmanager %s does not answer GET %s: %s; retrying with backoff up to %.3gs",
                member.label,
                ALERTS_PATH,
                reason,
                self._section.backoff_max_s,
            )
        else:
            log.debug("Alertmanager %s still down (%d errors): %s", member.label, member.failures, reason)
        member.up = False

    async def _reconcile(self, alerts: list[ApiAlert], credential: str, *, resolve: bool = True) -> None:
        """`credential`: the source that answered (`alertmanager-api:<url without user:password>`), recorded."""
        present: dict[str, Alert] = {}
        new: list[tuple[str, Alert]] = []
        for api_alert in alerts:
            alert = api_alert.to_alert()
            key = occurrence_key(alert)
            present[key] = alert
            if api_alert.active and key not in self._tracked and key not in self._ignored:
                new.append((key, alert))
        self._ignored &= present.keys()
        # Resolutions first: an alert that resolved and fired again (new startsAt) must end up held, not released.
        for key in [k for k in self._tracked if resolve and k not in present]:
            if await self._take(self._tracked[key].resolved_at(self._wall()), credential) is not None:
                del self._tracked[key]
        for key, alert in new:
            result = await self._take(alert, credential)
            if result is None:
                continue  # failed: retried next round
            if result.outcome is IntakeOutcome.IGNORED:
                self._ignored.add(key)
            else:
                self._tracked[key] = alert

    async def _take(self, alert: Alert, credential: str) -> IntakeResult | None:
        failure_key = f"{occurrence_key(alert)}/{alert.status}"
        try:
            result = await self._intake.take(alert, received_via="api", credential=credential)
        except Exception:
            self._metrics.pulled_alerts.labels("failed").inc()
            if failure_key not in self._failing:
                if len(self._failing) > 1000:
                    self._failing.clear()
                self._failing.add(failure_key)
                log.exception(
                    "pulled alert %s (%s): the decision handler failed; retrying next round",
                    alert.alertname,
                    alert.fingerprint,
                )
            return None
        self._failing.discard(failure_key)
        self._metrics.pulled_alerts.labels(result.outcome.value).inc()
        return result


async def _read_bounded(resp: aiohttp.ClientResponse) -> bytes:
    if resp.content_length is not None and resp.content_length > MAX_RESPONSE_BYTES:
        raise PollError(f"answer of {resp.content_length} bytes, more than {MAX_RESPONSE_BYTES}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise PollError(f"answer larger than {MAX_RESPONSE_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
