"""Wire models: the Alertmanager webhook payload (version 4) and the alerts returned by GET /api/v2/alerts.

Validation is strict about what the agent relies on (version "4", statuses, fingerprints, timezone-aware RFC 3339
timestamps) and ignores fields it does not use, so a newer Alertmanager adding fields still works. Every error
names the dotted path of the bad field, e.g. `alerts.0.startsAt: not an RFC 3339 timestamp: 'yesterday'`.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainValidator, TypeAdapter, ValidationError

from agent.alerts.alert import Alert

SUPPORTED_VERSION = "4"

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


class PayloadError(ValueError):
    """A payload failed validation; the message names each bad field."""


def _timestamp(value: object) -> datetime | None:
    """RFC 3339 (fractions up to nanoseconds) -> aware UTC datetime; Go's zero time -> None (unset)."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and _RFC3339.match(value):
        parsed = datetime.fromisoformat(value.upper())
    else:
        raise ValueError(f"not an RFC 3339 timestamp: {value!r}")
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp needs a time zone: {value!r}")
    if parsed.year == 1:
        return None
    return parsed.astimezone(UTC)


def _required_timestamp(value: object) -> datetime:
    parsed = _timestamp(value)
    if parsed is None:
        raise ValueError("must be set (got the zero time 0001-01-01T00:00:00Z)")
    return parsed


Timestamp = Annotated[datetime, PlainValidator(_required_timestamp)]
OptionalTimestamp = Annotated[datetime | None, PlainValidator(_timestamp)]
Fingerprint = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{1,64}$")]
Labels = dict[str, str]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True, populate_by_name=True)


class WebhookAlert(_Wire):
    status: Literal["firing", "resolved"]
    labels: Labels
    annotations: Labels = {}
    starts_at: Timestamp = Field(alias="startsAt")
    ends_at: OptionalTimestamp = Field(default=None, alias="endsAt")
    generator_url: str = Field(default="", alias="generatorURL")
    fingerprint: Fingerprint

    def to_alert(self) -> Alert:
        return Alert(
            fingerprint=self.fingerprint,
            status=self.status,
            labels=dict(self.labels),
            annotations=dict(self.annotations),
            starts_at=self.starts_at,
            ends_at=self.ends_at,
            generator_url=self.generator_url,
        )


def _supported_version(value: str) -> str:
    if value != SUPPORTED_VERSION:
        raise ValueError(f"unsupported webhook payload version {value!r}; this receiver understands version 4")
    return value


class WebhookPayload(_Wire):
    version: Annotated[str, AfterValidator(_supported_version)]
    status: Literal["firing", "resolved"]
    receiver: str
    alerts: list[WebhookAlert]
    group_key: str = Field(default="", alias="groupKey")
    truncated_alerts: int = Field(default=0, ge=0, alias="truncatedAlerts")
    group_labels: Labels = Field(default={}, alias="groupLabels")
    common_labels: Labels = Field(default={}, alias="commonLabels")
    common_annotations: Labels = Field(default={}, alias="commonAnnotations")
    external_url: str = Field(default="", alias="externalURL")


class ApiAlertStatus(_Wire):
    state: Literal["unprocessed", "active", "suppressed"]
    silenced_by: list[str] = Field(default=[], alias="silencedBy")
    inhibited_by: list[str] = Field(default=[], alias="inhibitedBy")


class ApiReceiver(_Wire):
    name: str


class ApiAlert(_Wire):
    """One element of GET /api/v2/alerts (a gettableAlert)."""

    labels: Labels
    annotations: Labels = {}
    starts_at: Timestamp = Field(alias="startsAt")
    ends_at: OptionalTimestamp = Field(default=None, alias="endsAt")
    updated_at: OptionalTimestamp = Field(default=None, alias="updatedAt")
    generator_url: str = Field(default="", alias="generatorURL")
    fingerprint: Fingerprint
    status: ApiAlertStatus
    receivers: list[ApiReceiver] = []

    @property
    def active(self) -> bool:
        """Firing and neither silenced nor inhibited: the only state the agent acts on."""
        s = self.status
        return s.state == "active" and not s.silenced_by and not s.inhibited_by

    def to_alert(self) -> Alert:
        return Alert(
            fingerprint=self.fingerprint,
            status="firing",
            labels=dict(self.labels),
            annotations=dict(self.annotations),
            starts_at=self.starts_at,
            ends_at=self.ends_at,
            generator_url=self.generator_url,
        )


_API_ALERTS = TypeAdapter(list[ApiAlert])


def format_validation_error(error: ValidationError) -> str:
    lines = []
    for item in error.errors(include_url=False):
        path = ".".join(str(p) for p in item["loc"]) or "body"
        message = str(item["msg"]).removeprefix("Value error, ")
        lines.append(f"{path}: {message}")
    return "; ".join(lines)


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"body is not valid JSON: {exc}") from None


def parse_webhook_payload(raw: bytes) -> WebhookPayload:
    """Parse and validate a webhook body; PayloadError names every bad field."""
    data = _json(raw)
    if not isinstance(data, dict):
        raise PayloadError(f"body: expected a JSON object, got {type(data).__name__}")
    try:
        return WebhookPayload.model_validate(data)
    except ValidationError as exc:
        raise PayloadError(format_validation_error(exc)) from None


def parse_api_alerts(raw: bytes) -> list[ApiAlert]:
    """Parse and validate a GET /api/v2/alerts response body; PayloadError names every bad field."""
    data = _json(raw)
    if not isinstance(data, list):
        raise PayloadError(f"body: expected a JSON array of alerts, got {type(data).__name__}")
    try:
        return _API_ALERTS.validate_python(data)
    except ValidationError as exc:
        raise PayloadError(format_validation_error(exc)) from None
