"""The agent's configuration file (agent.yaml): pydantic models, validated at load.

Every error names the file, the line and the dotted path of the bad field, e.g.
`agent.yaml:12: versions.1.endpoint: endpoint must be HOST:PORT, got 'localhost'`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Self, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from yaml.nodes import Node

from agent.alerts.config import AlertsConfig
from agent.domain.durations import duration_seconds
from agent.domain.safe_yaml import YamlError, field_path, line_at_path, parse_bounded, read_limit
from agent.domain.server_profiles import PROFILES, MetricNames, ProfileName, resolve_names

VERSION_TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"


class ConfigError(Exception):
    """A configuration file could not be loaded; the message names the file and every bad field."""


def _ip_literal(value: str) -> str:
    ipaddress.ip_address(value)
    return value


_DNS_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def _host_name(host: str) -> bool:
    """An RFC 1123 host name (a Kubernetes Service name, `localhost`); an all-digit last label is a bad IP."""
    labels = host.removesuffix(".").split(".")
    return len(host) <= 253 and all(_DNS_LABEL.match(label) for label in labels) and not labels[-1].isdigit()


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"endpoint must be HOST:PORT, got {value!r}")
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        if host.startswith("[") or not _host_name(host):
            raise ValueError(
                f"endpoint must be HOST:PORT with an IP literal or an RFC 1123 host name, got {value!r}"
            ) from None
    return value


IPLiteral = Annotated[str, AfterValidator(_ip_literal)]
HostPort = Annotated[str, AfterValidator(_host_port)]
Port = Annotated[int, Field(ge=1, le=65535)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _durations_with_units(cls, data: Any) -> Any:
        """Every `*_s` field also takes the duration syntax of rule files: 30s, 5m, 2h, 1h30m."""
        if not isinstance(data, dict):
            return data
        converted = dict(data)
        for key, value in data.items():
            if str(key).endswith("_s") and isinstance(value, str):
                try:
                    converted[key] = duration_seconds(value)
                except ValueError as exc:
                    raise ValueError(f"{key}: {exc}") from None
        return converted


class ListenAddress(_Strict):
    address: IPLiteral = "127.0.0.1"
    port: Port


class ModelSection(_Strict):
    name: Annotated[str, Field(pattern=VERSION_TAG_PATTERN)]
    tier: Literal["critical", "experimental"] = "critical"


class MetricNameOverrides(_Strict):
    """Any name of the server profile, replaced; "" says the server exports no such metric (docs/servers.md)."""

    requests_total: str | None = None
    requests_success: str | None = None
    requests_failure: str | None = None
    latency: str | None = None
    latency_type: Literal["histogram", "summary", "counter"] | None = None
    latency_unit_s: Annotated[float, Field(gt=0)] | None = None
    confidence: str | None = None
    model_loaded: str | None = None
    model_label: str | None = None
    version_label: str | None = None


class ServerSection(_Strict):
    """Which model server serves the version: where its metrics are and what they are called (docs/servers.md)."""

    profile: ProfileName = "refserver"
    metrics_port: Port | None = None  # default: the profile's (mlserver 8082, triton 8002), else the endpoint's
    metrics_url: Annotated[str, Field(pattern=r"^https?://[^/\s]+(/\S*)?$")] | None = None  # overrides port and path
    model_version: str | None = None  # the version as the server labels its series (default: the tag)
    names: MetricNameOverrides = MetricNameOverrides()


class VersionConfig(_Strict):
    tag: Annotated[str, Field(pattern=VERSION_TAG_PATTERN)]
    endpoint: HostPort  # IP:PORT (a STATIC cluster) or NAME:PORT, e.g. a Kubernetes Service (STRICT_DNS)
    # The version's number in its server's OIP paths, for versions of one model in one server: requests (and the
    # agent's probes) go to /v2/models/{name}/versions/{oip_version}/... instead of /v2/models/{name}/...
    oip_version: Annotated[str, Field(pattern=VERSION_TAG_PATTERN)] | None = None
    metrics_path: str = "/metrics"
    server: ServerSection = ServerSection()
    # The model server container's memory limit: resident memory is judged against it (model.memory_ratio).
    memory_limit_mb: Annotated[float, Field(gt=0)] | None = None

    @property
    def host(self) -> str:
        return self.endpoint.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.endpoint.rpartition(":")[2])

    @property
    def metrics_url(self) -> str:
        """Where the agent reads the version's model metrics."""
        if self.server.metrics_url is not None:
            return self.server.metrics_url
        port = self.server.metrics_port or PROFILES[self.server.profile].metrics_port or self.port
        return f"http://{self.endpoint.rpartition(':')[0]}:{port}{self.metrics_path}"

    @property
    def metric_names(self) -> MetricNames:
        return resolve_names(self.server.profile, self.server.names.model_dump(exclude_none=True))


class EnvoySection(_Strict):
    listener: ListenAddress = ListenAddress(port=10000)
    admin: ListenAddress = ListenAddress(port=9901)
    route_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 15.0
    connect_timeout_s: Annotated[float, Field(gt=0, le=60)] = 1.0


class ControlSection(_Strict):
    listen: ListenAddress = ListenAddress(port=9091)
    token_file: Path | None = None
    token_env: str = "ROLLBACK_AGENT_TOKEN"
    # The identity the token stands for (role admin): audit records of its actions name `operator:<token_name>`.
    token_name: Annotated[str, Field(pattern=VERSION_TAG_PATTERN)] = "control-token"
    # Named identities with roles (read-only, operator, admin), token hashes only: see agent/http/tokens_file.py.
    # With it, the single token above is optional.
    tokens_file: Path | None = None

    def resolve_paths(self, base_dir: Path) -> ControlSection:
        def anchored(path: Path | None) -> Path | None:
            return path if path is None or path.is_absolute() else base_dir / path

        return self.model_copy(
            update={"token_file": anchored(self.token_file), "tokens_file": anchored(self.tokens_file)}
        )


class GoldenInference(_Strict):
    """A request with a known answer: the version must still give it (within tolerance)."""

    request: dict[str, Any]  # an OIP v2 infer request body
    output: str = "predict"
    expect: Annotated[list[float], Field(min_length=1)]
    tolerance: Annotated[float, Field(ge=0)] = 0.0


class ProbesSection(_Strict):
    oip_model: str | None = None  # the model name in OIP paths (default: model.name)
    golden: GoldenInference | None = None
    pipeline_url: str | None = None  # feature pipeline connectivity: HTTP GET, 2xx = reachable
    golden_interval_s: Annotated[float, Field(gt=0)] = 5.0
    timeout_s: Annotated[float, Field(gt=0, le=30)] = 0.5


class AccessLogSection(_Strict):
    """Envoy streams every finished request to the agent (gRPC access-log service on the xDS port)."""

    enabled: bool = True
    flush_interval_ms: Annotated[int, Field(ge=1, le=10_000)] = 50
    buffer_size_bytes: Annotated[int, Field(ge=0, le=1 << 20)] = 4096
    headers: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")]] = ["x-request-id"]
    # A response header the model server sets with its top-class confidence (a number), kept per request.
    confidence_header: Annotated[str, Field(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")] | None = None
    min_interval_ms: Annotated[int, Field(ge=10, le=10_000)] = 50  # rules run at most this often on batches


def _base_url(value: str) -> str:
    scheme, sep, rest = value.partition("://")
    if scheme not in ("http", "https") or not sep or not rest.strip("/"):
        raise ValueError(f"url must be an http:// or https:// URL, got {value!r}")
    return value.rstrip("/")


BaseUrl = Annotated[str, AfterValidator(_base_url)]
SIGNAL_NAME_PATTERN = r"^[a-z][a-z0-9_]*(\.[A-Za-z0-9_:-]+)+$"


class PromqlSignal(_Strict):
    """A signal read from a Prometheus instant query, per version: `query` holds `{version}` (one query per
    version), or its result carries the version in the label `version_label` (one query for all)."""

    signal: Annotated[str, Field(pattern=SIGNAL_NAME_PATTERN)]  # the name rules read, e.g. model.business.accuracy
    query: Annotated[str, Field(min_length=1, max_length=4000)]
    version_label: Annotated[str, Field(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")] | None = None
    type: Literal["gauge", "counter"] = "gauge"
    max_staleness_s: Annotated[float, Field(gt=0, le=7 * 86400)] = 300.0  # an older sample is no evidence

    @model_validator(mode="after")
    def _per_version(self) -> Self:
        templated = "{version}" in self.query
        if templated == (self.version_label is not None):
            raise ValueError(
                "query: put {version} in the query (one query per version) or set version_label (one query whose "
                "result names the version in that label), exactly one of the two"
            )
        return self


class PromqlSection(_Strict):
    url: BaseUrl  # Prometheus' base URL, e.g. http://127.0.0.1:9090
    interval_s: Annotated[float, Field(ge=1, le=3600)] = 15.0  # how often the queries run
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    signals: Annotated[list[PromqlSignal], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique_signals(self) -> Self:
        names = [s.signal for s in self.signals]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"signals: duplicate signal(s) {duplicates}")
        return self


class SignalsSection(_Strict):
    interval_s: Annotated[float, Field(ge=0.1, le=60)] = 1.0
    timeout_s: Annotated[float, Field(gt=0, le=30)] = 0.8
    envoy_stats: bool = True
    model_metrics: bool = True
    health: bool = True
    history_s: Annotated[float, Field(ge=60, le=7 * 86400)] = 3600.0
    memory_limit_mb: Annotated[float, Field(gt=0)] | None = None  # for every version without its own
    # A version that stops answering (or restarts) with its last memory reading at or above this fraction of its
    # limit counts an OOM (health.oom).
    oom_memory_ratio: Annotated[float, Field(gt=0, le=1)] = 0.9
    access_log: AccessLogSection = AccessLogSection()
    promql: PromqlSection | None = None  # signals from Prometheus queries (docs/rules.md)


class RulesSection(_Strict):
    file: Path | None = None  # a rule file (YAML); none: no automatic decisions, only operator actions
    tiers_dir: Path | None = None  # default: the shipped rules/tiers
    reload_interval_s: Annotated[float, Field(gt=0, le=3600)] = 2.0


Tolerance = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class Margin(_Strict):
    """How far a live figure may move the bad way from its baseline: by max(relative x baseline, absolute).

    `required`: the metric is evidence enough to conclude; with none of the required metrics measured the
    verification is inconclusive. A measured metric beyond its margin fails the verification either way.
    """

    relative: Tolerance = 0.0
    absolute: Tolerance = 0.0
    required: bool = False


class ThroughputMargin(Margin):
    stds: Tolerance = 0.0  # also allow this many of the baseline's standard deviations (the larger wins)


class VerificationSection(_Strict):
    """Post-rollback verification: the target's live figures against every baseline number the registry holds.

    A metric set to null is not checked (listed as disabled). Error rate and latency must not rise above the
    limit, the others (accuracy, confidence, throughput) must not fall below it; missing rates must not rise.
    """

    min_requests: Annotated[int, Field(ge=1)] = 20  # fewer requests in the window: inconclusive
    min_labels: Annotated[int, Field(ge=1)] = 20  # labelled outcomes needed to measure the primary metric
    error_rate: Margin | None = Margin(relative=1.0, absolute=0.01, required=True)
    error_rate_without_baseline: Annotated[float, Field(ge=0, le=1)] | None = 0.05  # limit when none is recorded
    latency_p99_ms: Margin | None = Margin(relative=0.5, required=True)
    primary_metric: Margin | None = Margin(absolute=0.05)
    confidence_mean: Margin | None = Margin(relative=0.15)
    throughput_rps: ThroughputMargin | None = ThroughputMargin(relative=0.5, stds=3.0)
    missing_rate: Margin | None = Margin(absolute=0.02)  # each feature's missing_rate.<feature>


class RollbackSection(_Strict):
    cooldown_s: Annotated[float, Field(ge=0)] = 300.0
    max_per_hour: Annotated[int, Field(ge=0)] = 3
    verify_window_s: Annotated[float, Field(ge=0)] = 60.0
    on_verification_failure: Literal["escalate", "next_target"] = "escalate"
    warm_timeout_s: Annotated[float, Field(gt=0)] = 120.0
    confirm_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    health_max_age_s: Annotated[float, Field(ge=0)] = 3.0
    verification: VerificationSection = VerificationSection()
    # What a rolled-back version becomes in the registry: `failed` (never a target again; traffic to it only with
    # an operator's --force), or `quarantined` (also held out of every promotion until an operator runs
    # `quarantine clear`, which restores `failed`).
    mark_rolled_back_as: Literal["failed", "quarantined"] = "failed"


class ConstraintsSection(_Strict):
    """What the pod offers: a rollback target needing more is skipped as incompatible."""

    memory_mb: Annotated[float, Field(gt=0)] | None = None
    cpu: Annotated[float, Field(gt=0)] | None = None
    gpu: Annotated[int, Field(ge=0)] = 0
    runtimes: list[str] = []
    feature_schema: list[str] = []  # features the pipeline sends today


class MlflowRegistrySection(_Strict):
    """The version registry read from an MLflow tracking server's REST API (docs/registry.md, MLflow)."""

    url: BaseUrl  # the tracking server, e.g. http://127.0.0.1:5000
    model_name: Annotated[str, Field(min_length=1, max_length=256)] | None = None  # default: model.name
    token_env: str | None = None  # environment variable holding a bearer token, if the server needs one
    champion_alias: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,255}$")] = "champion"
    challenger_alias: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,255}$")] | None = "challenger"
    # Move the champion alias to a rollback target once it passed its post-rollback verification.
    move_champion: bool = False
    # The agent's tag of MLflow version N: `tag_key`'s value when the version has that tag, else tag_format.
    tag_format: Annotated[str, Field(pattern=r"\{version\}")] = "v{version}"
    tag_key: Annotated[str, Field(min_length=1)] | None = None
    primary_metric: Annotated[str, Field(min_length=1)] = "accuracy"  # the run metric that is the baseline's
    refresh_s: Annotated[float, Field(ge=1, le=3600)] = 30.0  # how often versions are re-read in the background
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0


class RegistrySection(_Strict):
    mlflow: MlflowRegistrySection | None = None  # none: registry_file, else derived from `versions`


def _default_pod() -> str:
    return os.environ.get("HOSTNAME", "") or socket.gethostname()


class FleetSection(_Strict):
    """The fleet audit store (PostgreSQL): every record of the local trail is shipped there (docs/fleet.md).

    The DSN is a secret: read from `dsn_file` (a mounted Secret) or the environment variable `dsn_env`, never
    written in this file."""

    dsn_file: Path | None = None
    dsn_env: str | None = None
    pod: Annotated[str, Field(min_length=1, max_length=253)] = Field(default_factory=_default_pod)
    batch: Annotated[int, Field(ge=1, le=10_000)] = 500
    interval_s: Annotated[float, Field(gt=0, le=3600)] = 1.0

    @model_validator(mode="after")
    def _one_dsn_source(self) -> Self:
        if (self.dsn_file is None) == (self.dsn_env is None):
            raise ValueError("set exactly one of dsn_file (a mounted Secret) or dsn_env")
        return self


class SigningSection(_Strict):
    """Signing of the audit chain (docs/audit.md): `hmac` (HMAC-SHA256; the file's bytes are the secret, at least
    32) or `ed25519` (a PEM private key). `key_id` names the key in every record (default: a fingerprint of it)."""

    mode: Literal["none", "hmac", "ed25519"] = "none"
    key_file: Path | None = None
    key_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,127}$")] | None = None

    @model_validator(mode="after")
    def _key_when_signing(self) -> Self:
        if self.mode != "none" and self.key_file is None:
            raise ValueError(f"mode {self.mode} needs key_file (a mounted Secret)")
        return self


class AuditSection(_Strict):
    fleet: FleetSection | None = None  # none: the local trail only
    signing: SigningSection = SigningSection()


class DrillsSection(_Strict):
    """Rollback drills (docs/drills.md): `rollback-agent drill` uses these as its defaults; with `schedule` the
    agent also runs a drill itself at each scheduled minute."""

    schedule: str | None = None  # five-field cron subset, UTC, e.g. "0 3 1 * *"; none: on demand only
    fault: Literal["errors", "latency", "confidence", "accuracy", "drift", "hook"] = "errors"
    hook: str | None = None  # the command that injects (`CMD inject`) and clears (`CMD clear`) the fault
    version: Annotated[str, Field(pattern=VERSION_TAG_PATTERN)] | None = None  # default: the one serving candidate
    detect_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    verify_timeout_s: Annotated[float, Field(gt=0, le=7200)] = 300.0
    settle_timeout_s: Annotated[float, Field(ge=0, le=3600)] = 300.0
    ttl_s: Annotated[float, Field(gt=0, le=86400)] = 900.0
    report_dir: Path | None = None  # default: <state_dir>/drills

    @model_validator(mode="after")
    def _check(self) -> Self:
        from agent.domain.drill_schedule import Schedule, ScheduleError

        if self.schedule is not None:
            try:
                Schedule.parse(self.schedule)
            except ScheduleError as exc:
                raise ValueError(f"drills.schedule: {exc}") from None
        if (self.fault == "hook") != (self.hook is not None):
            raise ValueError("drills.hook: a hook command is needed exactly when drills.fault is hook")
        return self


NotificationKind = Literal[
    "rollback_started",
    "rollback_switched",
    "rollback_completed",
    "rollback_failed",
    "rollback_suppressed",
    "verification_failed",
    "escalation",
    "quarantine",
    "hold",
    "pause",
    "drill",
    "rollout",
    "shadow",
    "lease",
    "pin",
]


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")) or len(value) <= len("https://"):
        raise ValueError(f"url must be an http:// or https:// URL, got {value!r}")
    return value


class NotificationReceiver(_Strict):
    """A webhook told of decisions on record (docs/notifications.md). Headers (e.g. a bearer token) are secrets:
    read from `headers_file` (a YAML mapping, a mounted Secret) or the env var `headers_env` (a JSON object)."""

    name: Annotated[str, Field(pattern=VERSION_TAG_PATTERN)]
    url: Annotated[str, AfterValidator(_http_url)]
    events: Annotated[list[NotificationKind], Field(min_length=1)] = list(get_args(NotificationKind))
    headers_file: Path | None = None
    headers_env: str | None = None
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 5.0

    @model_validator(mode="after")
    def _one_headers_source(self) -> Self:
        if self.headers_file is not None and self.headers_env is not None:
            raise ValueError("set at most one of headers_file or headers_env")
        return self


class NotificationsSection(_Strict):
    receivers: list[NotificationReceiver] = []
    queue_size: Annotated[int, Field(ge=1, le=100_000)] = 1000  # per receiver; when full the oldest is dropped
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 6
    backoff_initial_s: Annotated[float, Field(gt=0, le=600)] = 0.5  # exponential, full jitter
    backoff_max_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    drain_timeout_s: Annotated[float, Field(ge=0, le=300)] = 5.0  # at shutdown, then what is left is dropped

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        names = [r.name for r in self.receivers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"receivers: duplicate name(s) {duplicates}")
        return self


class LogSection(_Strict):
    """The agent's own log: `--log-level` / `--log-format` and ROLLBACK_AGENT_LOG_LEVEL / _LOG_FORMAT win over it."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    format: Literal["text", "json"] = "text"


class StatusPageSection(_Strict):
    """The live status page on the control listener (docs/status-page.md); `status_page: off` turns it off."""

    enabled: bool = True
    refresh_s: Annotated[float, Field(ge=0.2, le=60)] = 1.0  # how often the page polls
    decisions: Annotated[int, Field(ge=1, le=200)] = 20  # recent decisions shown

    @model_validator(mode="before")
    @classmethod
    def _on_off(cls, value: Any) -> Any:
        return {"enabled": value} if isinstance(value, bool) else value


class ShadowSection(_Strict):
    """Shadow stages (docs/shadow.md): mirrored requests pass a listener of their own on their way to the candidate,
    and Envoy's tap filter gives the agent both versions' answers, joined by x-request-id."""

    # On: the shadow listener (its port must be free) and tap filters on both listeners, for the comparison gates.
    # Off: mirrored copies go straight to the candidate's cluster, and nothing is captured.
    capture: bool = False
    listener: ListenAddress = ListenAddress(port=10001)
    task: Literal["classification", "regression"] = "classification"
    prediction_output: Annotated[str, Field(min_length=1, max_length=128)] = "predict"  # OIP output tensor names
    confidence_output: Annotated[str, Field(min_length=1, max_length=128)] = "confidence"
    max_body_bytes: Annotated[int, Field(ge=1024, le=16 << 20)] = 65_536  # larger answers are left out
    pending_ttl_s: Annotated[float, Field(gt=0, le=600)] = 30.0  # how long one half waits for the other
    max_pairs: Annotated[int, Field(ge=100, le=1_000_000)] = 10_000
    sample_rate: Annotated[float, Field(ge=0, le=1)] = 0.01  # request/answer pairs kept for the forensic bundle
    max_samples: Annotated[int, Field(ge=0, le=10_000)] = 200
    # Object keys and OIP tensor names whose values never leave the agent's memory unredacted.
    redact_fields: list[Annotated[str, Field(min_length=1, max_length=128)]] = []


class RolloutSection(_Strict):
    """Progressive delivery (docs/rollouts.md): the plan `rollout start` uses when it is given none."""

    plan: Path | None = None  # default: the shipped plan of the model's tier (rules/tiers/rollout-<tier>.yaml)
    interval_s: Annotated[float, Field(ge=0.1, le=60)] = 1.0  # how often the stage's gates are judged
    shadow: ShadowSection = ShadowSection()


class AgentConfig(_Strict):
    model: ModelSection
    versions: Annotated[list[VersionConfig], Field(min_length=1)]
    stable: str
    candidate: str | None = None
    initial_weights: dict[str, Annotated[int, Field(ge=0, le=1_000_000)]] | None = None
    envoy: EnvoySection = EnvoySection()
    xds: ListenAddress = ListenAddress(port=18000)
    http: ListenAddress = ListenAddress(port=9090)
    control: ControlSection = ControlSection()
    state_dir: Path = Path("/var/lib/rollback-agent")
    ack_timeout_s: Annotated[float, Field(gt=0, le=300)] = 5.0
    signals: SignalsSection = SignalsSection()
    probes: ProbesSection = ProbesSection()
    rules: RulesSection = RulesSection()
    rollback: RollbackSection = RollbackSection()
    registry_file: Path | None = None  # version registry (YAML, in git); none: derived from `versions`
    registry: RegistrySection = RegistrySection()  # registry.mlflow: the registry is an MLflow server
    constraints: ConstraintsSection = ConstraintsSection()
    alerts: AlertsConfig = AlertsConfig()
    audit: AuditSection = AuditSection()
    rollout: RolloutSection = RolloutSection()
    status_page: StatusPageSection = StatusPageSection()
    notifications: NotificationsSection = NotificationsSection()
    log: LogSection = LogSection()
    drills: DrillsSection = DrillsSection()

    @model_validator(mode="after")
    def _cross_checks(self) -> Self:
        tags = [v.tag for v in self.versions]
        duplicates = sorted({t for t in tags if tags.count(t) > 1})
        if duplicates:
            raise ValueError(f"versions: duplicate tag(s) {duplicates}")
        if self.stable not in tags:
            raise ValueError(f"stable: {self.stable!r} is not one of the versions {tags}")
        if self.candidate is not None and self.candidate not in tags:
            raise ValueError(f"candidate: {self.candidate!r} is not one of the versions {tags}")
        if self.candidate == self.stable:
            raise ValueError("candidate: must differ from stable")
        if self.registry.mlflow is not None and self.registry_file is not None:
            raise ValueError("registry: set registry.mlflow or registry_file, not both")
        listeners = {
            "envoy.listener": self.envoy.listener,
            "envoy.admin": self.envoy.admin,
            "xds": self.xds,
            "http": self.http,
            "control.listen": self.control.listen,
        }
        taken: dict[int, str] = {}
        for name, address in listeners.items():
            if address.port in taken:
                raise ValueError(f"{name}: port {address.port} is already used by {taken[address.port]}")
            taken[address.port] = name
        for v in self.versions:
            if v.host in ("127.0.0.1", "::1", "0.0.0.0", "localhost") and v.port in taken:
                raise ValueError(f"versions: {v.tag}'s endpoint port {v.port} is already used by {taken[v.port]}")
        self._check_shared_endpoints()
        if self.initial_weights is not None:
            unknown = sorted(set(self.initial_weights) - set(tags))
            if unknown:
                raise ValueError(f"initial_weights: unknown version(s) {unknown}; versions are {tags}")
            if sum(self.initial_weights.values()) <= 0:
                raise ValueError("initial_weights: the weights must sum to more than 0")
        return self

    def _check_shared_endpoints(self) -> None:
        """Versions on one server must be told apart by their versioned OIP paths, else the split is a fiction."""
        first: dict[tuple[str, int], int] = {}
        for i, v in enumerate(self.versions):
            key = (v.host.lower(), v.port)
            if key not in first:
                first[key] = i
                continue
            j = first[key]
            other = self.versions[j]
            if v.oip_version is None or other.oip_version is None:
                raise ValueError(
                    f"versions.{i}.endpoint: {v.tag} and {other.tag} (versions.{j}) share the endpoint {v.endpoint}: "
                    "set oip_version on both (each one's version in the server's /v2/models/NAME/versions/V paths), "
                    "or give each version its own endpoint"
                )
            if v.oip_version == other.oip_version:
                raise ValueError(
                    f"versions.{i}.oip_version: {v.tag} and {other.tag} (versions.{j}) share the endpoint "
                    f"{v.endpoint} and the oip_version {v.oip_version!r}: they would be the same model version"
                )

    def version(self, tag: str) -> VersionConfig:
        for v in self.versions:
            if v.tag == tag:
                return v
        raise KeyError(tag)

    @property
    def tags(self) -> list[str]:
        return [v.tag for v in self.versions]

    def starting_weights(self) -> dict[str, int]:
        """The weights used when no policy was ever persisted: the configured ones, else all on stable."""
        if self.initial_weights is not None:
            return {tag: self.initial_weights.get(tag, 0) for tag in self.tags}
        return {tag: (100 if tag == self.stable else 0) for tag in self.tags}


def _format_errors(source: str, root: Node, error: ValidationError) -> str:
    details = error.errors()
    lines = []
    for item in details[:_MAX_REPORTED_ERRORS]:
        path = field_path(item["loc"])
        message = str(item["msg"]).removeprefix("Value error, ")
        # Cross-field checks name their own field in the message; line_at_path finds that field's line.
        where = f"{source}:{line_at_path(root, item['loc'], message)}"
        lines.append(f"{where}: {path}: {message}" if path else f"{where}: {message}")
    if len(details) > _MAX_REPORTED_ERRORS:
        lines.append(f"{source}: and {len(details) - _MAX_REPORTED_ERRORS} more errors")
    return "\n".join(lines)


def parse_config(text: str | bytes, source: str = "<config>", base_dir: Path | None = None) -> AgentConfig:
    """Validate a config document (bytes are decoded as UTF-8); every error names the file and the line."""
    try:
        parsed = parse_bounded(text, source)
    except YamlError as exc:
        raise ConfigError(str(exc)) from None
    raw = parsed.data
    if not isinstance(raw, dict):
        line = parsed.root.start_mark.line + 1
        raise ConfigError(f"{source}:{line}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        config = AgentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, parsed.root, exc)) from None
    if base_dir is None:
        return config
    return _resolve_paths(config, base_dir)


def _resolve_paths(config: AgentConfig, base_dir: Path) -> AgentConfig:
    """Relative paths in the file are relative to the file, not to the working directory."""
    state_dir = config.state_dir if config.state_dir.is_absolute() else base_dir / config.state_dir
    control = config.control.resolve_paths(base_dir)

    def anchored(path: Path | None) -> Path | None:
        return path if path is None or path.is_absolute() else base_dir / path

    rules = config.rules.model_copy(
        update={"file": anchored(config.rules.file), "tiers_dir": anchored(config.rules.tiers_dir)}
    )
    return config.model_copy(
        update={
            "state_dir": state_dir,
            "control": control,
            "rules": rules,
            "registry_file": anchored(config.registry_file),
            "rollout": config.rollout.model_copy(update={"plan": anchored(config.rollout.plan)}),
            "alerts": config.alerts.resolve_paths(base_dir),
            "audit": _resolve_audit_paths(config.audit, anchored),
            "drills": config.drills.model_copy(update={"report_dir": anchored(config.drills.report_dir)}),
            "notifications": config.notifications.model_copy(
                update={
                    "receivers": [
                        r.model_copy(update={"headers_file": anchored(r.headers_file)})
                        for r in config.notifications.receivers
                    ]
                }
            ),
        }
    )


def _resolve_audit_paths(audit: AuditSection, anchored: Callable[[Path | None], Path | None]) -> AuditSection:
    audit = audit.model_copy(
        update={"signing": audit.signing.model_copy(update={"key_file": anchored(audit.signing.key_file)})}
    )
    if audit.fleet is None:
        return audit
    return audit.model_copy(
        update={"fleet": audit.fleet.model_copy(update={"dsn_file": anchored(audit.fleet.dsn_file)})}
    )


def load_config(path: Path) -> AgentConfig:
    try:
        with path.open("rb") as file:
            data = file.read(read_limit())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_config(data, str(path), path.resolve().parent)


# Locating is linear in the file; a machine-made file can hold thousands of errors.
_MAX_REPORTED_ERRORS = 20
