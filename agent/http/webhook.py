"""POST /v1/alerts: the Alertmanager webhook receiver (payload version 4), mounted on the public HTTP app.

Checks, in order, each refusing the whole delivery and changing nothing: credentials (401 with WWW-Authenticate),
Content-Type (415 unless application/json; a request without one is read as JSON), body size (413), a body that
cannot be read (400: gzip/deflate that does not inflate; aiohttp itself answers 400 to broken chunking or
framing before this handler runs), JSON and schema (400 naming the bad field, e.g.
`alerts.0.startsAt: ...`; a version other than "4" is a 400 too). Alertmanager retries a 5xx forever, so no input
gets one. Then every alert goes through the shared AlertIntake (route, deduplicate, decide) and the answer is 200
with one summary per alert. If the decision handler raises, Alertmanager must retry: 503 with Retry-After when the
state store is unavailable (StoreUnavailableError), 500 for anything else; alerts already handed over are then
duplicates, so the retry acts only on the rest.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import hdrs, web
from multidict import CIMultiDict

from agent.alerts.auth import WebhookCredentials
from agent.alerts.config import MIB
from agent.alerts.intake import AlertIntake, IntakeResult
from agent.alerts.metrics import AlertSourceMetrics
from agent.alerts.payload import PayloadError, parse_webhook_payload
from agent.ports.store import StoreUnavailableError

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/v1/alerts"
_CHUNK = 64 * 1024
RETRY_AFTER_S = 5


@dataclass(frozen=True, slots=True)
class AlertWebhook:
    intake: AlertIntake
    credentials: WebhookCredentials
    metrics: AlertSourceMetrics
    max_body_bytes: int = MIB


ALERT_WEBHOOK = web.AppKey("alert_webhook", AlertWebhook)


class _BodyTooLarge(Exception):
    pass


class _BodyUnreadable(Exception):
    pass


def add_alert_webhook(app: web.Application, webhook: AlertWebhook, path: str = WEBHOOK_PATH) -> None:
    """Serve the webhook at `path` on `app` (call before the app starts)."""
    app[ALERT_WEBHOOK] = webhook
    app.router.add_post(path, receive_alerts)


def _error(status: int, code: str, message: str, headers: CIMultiDict[str] | None = None) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status, headers=headers)


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The body, refusing more than `limit` bytes without buffering them (whatever the app's client_max_size)."""
    if request.content_length is not None and request.content_length > limit:
        raise _BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise _BodyTooLarge
            chunks.append(chunk)
    except web.RequestPayloadError as exc:  # e.g. a gzip or deflate body that does not decompress
        cause = exc.__cause__ or exc
        raise _BodyUnreadable(getattr(cause, "message", None) or str(cause) or type(cause).__name__) from None
    return b"".join(chunks)


def _json_content_type(request: web.Request) -> bool:
    if hdrs.CONTENT_TYPE not in request.headers:
        return True
    mime = request.content_type.lower()
    return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))


async def receive_alerts(request: web.Request) -> web.Response:
    hook = request.app[ALERT_WEBHOOK]
    rejected = hook.metrics.webhook_alerts.labels("rejected")
    credential = hook.credentials.credential(request.headers.get(hdrs.AUTHORIZATION, ""))
    if credential is None:
        rejected.inc()
        challenges: CIMultiDict[str] = CIMultiDict()
        for challenge in hook.credentials.challenges():
            challenges.add(hdrs.WWW_AUTHENTICATE, challenge)
        return _error(401, "unauthenticated", "missing or wrong credentials", challenges)
    if not _json_content_type(request):
        rejected.inc()
        return _error(
            415, "unsupported_media_type", f"Content-Type must be application/json, got {request.content_type!r}"
        )
    try:
        raw = await _read_body(request, hook.max_body_bytes)
    except _BodyTooLarge:
        rejected.inc()
        return _error(413, "payload_too_large", f"body larger than {hook.max_body_bytes} bytes")
    except _BodyUnreadable as exc:
        rejected.inc()
        response = _error(400, "invalid_body", f"the body could not be read: {exc}")
        response.force_close()  # the rest of this request cannot be read, so the connection cannot be reused
        return response
    try:
        payload = parse_webhook_payload(raw)
    except PayloadError as exc:
        rejected.inc()
        log.warning("alert webhook: refused an invalid payload from %s: %s", request.remote, exc)
        return _error(400, "invalid_payload", str(exc))

    results: list[IntakeResult] = []
    for alert in payload.alerts:
        try:
            result = await hook.intake.take(
                alert.to_alert(), received_via="webhook", receiver=payload.receiver, credential=credential
            )
        except StoreUnavailableError as exc:
            hook.metrics.webhook_alerts.labels("failed").inc()
            log.warning("alert webhook: alert %s not taken, the state store is unavailable: %s", alert.fingerprint, exc)
            return web.json_response(
                {
                    "code": "unavailable",
                    "message": f"alert {alert.fingerprint}: {exc}; retry",
                    "alerts": [r.as_dict() for r in results],
                },
                status=503,
                headers={hdrs.RETRY_AFTER: str(RETRY_AFTER_S)},
            )
        except Exception as exc:
            hook.metrics.webhook_alerts.labels("failed").inc()
            log.exception("alert webhook: the decision handler failed on alert %s", alert.fingerprint)
            return web.json_response(
                {
                    "code": "decision_failed",
                    "message": f"alert {alert.fingerprint}: the decision handler failed: {exc!r}; retry",
                    "alerts": [r.as_dict() for r in results],
                },
                status=500,
            )
        hook.metrics.webhook_alerts.labels(result.outcome.value).inc()
        results.append(result)
    return web.json_response({"alerts": [r.as_dict() for r in results]})
