"""Wire models: the Alertmanager webhook payload (version 4) and the alerts returned by GET /api/v2/alerts.

Validation is strict about what the agent relies on (version "4", statuses, fingerprints, timezone-aware RFC 3339
timestamps) and ignores fields it does not use, so a newer Alertmanager adding fields still works. Every error
names the dotted path of the bad field, e.g. `alerts.0.startsAt: not an RFC 3339 timestamp: 'yesterday'`.

Bodies are parsed with `loads_bounded` (at most 32 levels of nesting, no NaN/Infinity, valid Unicode text only:
labels and annotations end up in protobuf audit records, which cannot hold a lone surrogate). Label and
annotation maps hold at most 256 entries, keys up to 1 KiB and values up to 16 KiB of UTF-8.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, ValidationError

from agent.alerts.alert import Alert
from agent.domain.safe_json import JsonInputError, first_surrogate, format_path, loads_bounded

SUPPORTED_VERSION = "4"

MAX_LABELS = 256  # per labels or annotations map
MAX_LABEL_NAME_BYTES = 1024
MAX_LABEL_VALUE_BYTES = 16 * 1024
_MAX_DEPTH = 32
_MAX_ERRORS_SHOWN = 10

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
        raise ValueError(f"not an RFC 3339 timestamp: {_shown(value)}")
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp needs a time zone: {_shown(value)}")
    if parsed.year == 1:
        return None
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00
        raise ValueError(f"timestamp out of range in UTC: {_shown(value)}") from None


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _required_timestamp(value: object) -> datetime:
    parsed = _timestamp(value)
    if parsed is None:
        raise ValueError("must be set (got the zero time 0001-01-01T00:00:00Z)")
    return parsed


Timestamp = Annotated[datetime, PlainValidator(_required_timestamp)]
OptionalTimestamp = Annotated[datetime | None, PlainValidator(_timestamp)]
Fingerprint = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{1,64}$")]


def _text_within(limit: int) -> Callable[[str], str]:
    def check(value: str) -> str:
        at = first_surrogate(value)
        if at is not None:
            raise ValueError(f"not valid Unicode text (lone surrogate U+{ord(value[at]):04X} at character {at})")
        size = len(value.encode())
        if size > limit:
            raise ValueError(f"{size} bytes of UTF-8, more than the {limit} allowed")
        return value

    return check


LabelName = Annotated[str, AfterValidator(_text_within(MAX_LABEL_NAME_BYTES))]
LabelValue = Annotated[str, AfterValidator(_text_within(MAX_LABEL_VALUE_BYTES))]


def _few_enough(value: object) -> object:
    if isinstance(value, dict) and len(value) > MAX_LABELS:
        raise ValueError(f"{len(value)} entries, more than the {MAX_LABELS} allowed")
    return value


Labels = Annotated[dict[LabelName, LabelValue], BeforeValidator(_few_enough)]


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


@dataclass(frozen=True, slots=True)
class ApiAlerts:
    """A GET /api/v2/alerts answer: the valid alerts, and one error per alert that was refused."""

    alerts: list[ApiAlert]
    refused: list[str]


def format_validation_error(error: ValidationError, prefix: tuple[object, ...] = ()) -> str:
    """`path: message` per error (paths escaped and shortened, safe to log), at most ten of them."""
    items = error.errors(include_url=False)
    lines = []
    for item in items[:_MAX_ERRORS_SHOWN]:
        path = format_path([*prefix, *item["loc"]])
        message = str(item["msg"]).removeprefix("Value error, ")
        lines.append(f"{path}: {message}")
    if len(items) > _MAX_ERRORS_SHOWN:
        lines.append(f"and {len(items) - _MAX_ERRORS_SHOWN} more errors")
    return "; ".join(lines)


def _json(raw: bytes) -> Any:
    try:
        return loads_bounded(raw, max_depth=_MAX_DEPTH)
    except JsonInputError as exc:
        raise PayloadError(str(exc)) from None


def parse_webhook_payload(raw: bytes) -> WebhookPayload:
    """Parse and validate a webhook body; PayloadError names every bad field."""
    data = _json(raw)
    if not isinstance(data, dict):
        raise PayloadError(f"body: expected a JSON object, got {type(data).__name__}")
    try:
        return WebhookPayload.model_validate(data)
    except ValidationError as exc:
        raise PayloadError(format_validation_error(exc)) from None


def parse_api_alerts(raw: bytes) -> ApiAlerts:
    """Parse a GET /api/v2/alerts response body. PayloadError when the body as a whole is unusable (not JSON,
    not an array); an invalid alert inside a valid array is refused on its own, its error naming the field."""
    data = _json(raw)
    if not isinstance(data, list):
        raise PayloadError(f"body: expected a JSON array of alerts, got {type(data).__name__}")
    alerts: list[ApiAlert] = []
    refused: list[str] = []
    for index, item in enumerate(data):
        try:
            alerts.append(ApiAlert.model_validate(item))
        except ValidationError as exc:
            refused.append(format_validation_error(exc, prefix=(index,)))
    return ApiAlerts(alerts, refused)
