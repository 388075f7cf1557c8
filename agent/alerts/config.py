"""The `alerts:` section of agent.yaml: webhook auth and limits, the routing table, and the Alertmanager API pull.

alerts:
  model_label: model                 # the alert label naming the model; must equal this agent's model
  routes:                            # first match wins; an alert no route matches is ignored (recorded only)
    - name: error-rate
      match: {alertname: ModelErrorRateHigh, severity: {regex: "critical|page"}}
      action: rollback               # rollback | hold | alert | ignore | from_label (the alert's `action` label)
      version_label: version         # the label naming the failing version (absent: the serving candidate)
    - match: {team: ml-platform}
      any_model: true                # fleet-wide alert: no model label required
      action: hold
  webhook:                           # POST /v1/alerts on the public HTTP port
    enabled: true
    bearer_token_file: /etc/rollback-agent/webhook-token   # and/or bearer_token_env, and/or basic_auth
    basic_auth: {username: alertmanager, password_file: /etc/rollback-agent/webhook-password}
    max_body_bytes: 1048576
  alertmanager:                      # GET /api/v2/alerts from the first member that answers, every interval
    urls: ["http://alertmanager-0.monitoring:9093", "http://alertmanager-1.monitoring:9093"]
    poll_interval_s: 2
    timeout_s: 2
    backoff_max_s: 30
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

LABEL_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
MIB = 1024 * 1024

LabelName = Annotated[str, Field(pattern=LABEL_NAME_PATTERN)]
RouteAction = Literal["rollback", "hold", "alert", "ignore", "from_label"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _valid_regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
    return value


class RegexMatch(_Strict):
    """A label matcher by regular expression, anchored at both ends (as in Prometheus and Alertmanager)."""

    regex: Annotated[str, AfterValidator(_valid_regex)]


# A plain string matches the label value exactly ("" matches a missing label); {regex: ...} matches by pattern.
LabelMatcher = str | RegexMatch


class AlertRoute(_Strict):
    name: str = ""
    match: dict[LabelName, LabelMatcher] = {}
    action: RouteAction
    version_label: LabelName = "version"
    # False: the alert's model label must equal this agent's model. True: any model, or none (fleet-wide alerts).
    any_model: bool = False


class BasicAuthSection(_Strict):
    username: Annotated[str, Field(min_length=1)]
    password_file: Path


class WebhookSection(_Strict):
    enabled: bool = False
    bearer_token_file: Path | None = None
    bearer_token_env: Annotated[str, Field(min_length=1)] | None = None
    basic_auth: BasicAuthSection | None = None
    max_body_bytes: Annotated[int, Field(ge=1024, le=64 * MIB)] = MIB

    @model_validator(mode="after")
    def _needs_credentials(self) -> Self:
        if self.enabled and not self.has_credentials:
            raise ValueError(
                "webhook: an enabled webhook needs credentials: bearer_token_file, bearer_token_env and/or basic_auth"
            )
        return self

    @property
    def has_credentials(self) -> bool:
        return self.bearer_token_file is not None or self.bearer_token_env is not None or self.basic_auth is not None


def _alertmanager_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http(s) URL such as http://alertmanager:9093, got {value!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"must not have a query or a fragment, got {value!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"bad port in {value!r}") from None
    return value.rstrip("/")


AlertmanagerUrl = Annotated[str, AfterValidator(_alertmanager_url)]


class AlertmanagerSection(_Strict):
    # Members of one HA cluster (they return the same alerts). Empty: no pull.
    urls: list[AlertmanagerUrl] = []
    poll_interval_s: Annotated[float, Field(gt=0, le=300)] = 2.0
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    # After errors a member is retried after poll_interval_s, doubling per consecutive error, up to this.
    backoff_max_s: Annotated[float, Field(gt=0, le=3600)] = 30.0

    @model_validator(mode="after")
    def _checks(self) -> Self:
        duplicates = sorted({u for u in self.urls if self.urls.count(u) > 1})
        if duplicates:
            raise ValueError(f"alertmanager.urls: duplicate URL(s) {duplicates}")
        if self.backoff_max_s < self.poll_interval_s:
            raise ValueError("alertmanager.backoff_max_s: must be at least poll_interval_s")
        return self


class AlertsConfig(_Strict):
    model_label: LabelName = "model"
    routes: list[AlertRoute] = []
    webhook: WebhookSection = WebhookSection()
    alertmanager: AlertmanagerSection = AlertmanagerSection()
    # An alert occurrence (fingerprint + startsAt) is remembered until unseen for this long, at most this many.
    # Keep the TTL above Alertmanager's repeat_interval (default 4h) so re-notifications stay duplicates.
    dedupe_ttl_s: Annotated[float, Field(gt=0)] = 24 * 3600.0
    dedupe_max_entries: Annotated[int, Field(ge=100, le=1_000_000)] = 10_000
    # An alert whose rollback escalated (no eligible target right now) may act again after this hold-off.
    escalation_retry_s: Annotated[float, Field(gt=0, le=86400)] = 30.0

    @property
    def any_model_routes(self) -> bool:
        return any(r.any_model for r in self.routes)

    def resolve_paths(self, base_dir: Path) -> AlertsConfig:
        """Relative secret files are relative to the config file's directory."""

        def resolve(path: Path) -> Path:
            return path if path.is_absolute() else base_dir / path

        webhook = self.webhook
        update: dict[str, object] = {}
        if webhook.bearer_token_file is not None:
            update["bearer_token_file"] = resolve(webhook.bearer_token_file)
        if webhook.basic_auth is not None:
            update["basic_auth"] = webhook.basic_auth.model_copy(
                update={"password_file": resolve(webhook.basic_auth.password_file)}
            )
        return self.model_copy(update={"webhook": webhook.model_copy(update=update)})
