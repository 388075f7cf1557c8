"""The agent's configuration file (agent.yaml): pydantic models, validated at load.

Every error names the file, the line and the dotted path of the bad field, e.g.
`agent.yaml:12: versions.1.endpoint: endpoint must be IP:PORT, got 'localhost'`.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from yaml.nodes import Node

from agent.alerts.config import AlertsConfig
from agent.domain.safe_yaml import YamlError, field_path, line_at_path, parse_bounded, read_limit

VERSION_TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"


class ConfigError(Exception):
    """A configuration file could not be loaded; the message names the file and every bad field."""


def _ip_literal(value: str) -> str:
    ipaddress.ip_address(value)
    return value


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"endpoint must be IP:PORT, got {value!r}")
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise ValueError(f"endpoint must be IP:PORT (an IP literal, not a host name), got {value!r}") from None
    return value


IPLiteral = Annotated[str, AfterValidator(_ip_literal)]
HostPort = Annotated[str, AfterValidator(_host_port)]
Port = Annotated[int, Field(ge=1, le=65535)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ListenAddress(_Strict):
    address: IPLiteral = "127.0.0.1"
    port: Port


class ModelSection(_Strict):
    name: Annotated[str, Field(pattern=VERSION_TAG_PATTERN)]
    tier: Literal["critical", "experimental"] = "critical"


class VersionConfig(_Strict):
    tag: Annotated[str, Field(pattern=VERSION_TAG_PATTERN)]
    endpoint: HostPort
    metrics_path: str = "/metrics"
    # The model server container's memory limit: resident memory is judged against it (model.memory_ratio).
    memory_limit_mb: Annotated[float, Field(gt=0)] | None = None

    @property
    def host(self) -> str:
        return self.endpoint.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.endpoint.rpartition(":")[2])


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
    min_interval_ms: Annotated[int, Field(ge=10, le=10_000)] = 100  # rules run at most this often on batches


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
    constraints: ConstraintsSection = ConstraintsSection()
    alerts: AlertsConfig = AlertsConfig()
    audit: AuditSection = AuditSection()

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
            if v.host in ("127.0.0.1", "::1", "0.0.0.0") and v.port in taken:
                raise ValueError(f"versions: {v.tag}'s endpoint port {v.port} is already used by {taken[v.port]}")
        if self.initial_weights is not None:
            unknown = sorted(set(self.initial_weights) - set(tags))
            if unknown:
                raise ValueError(f"initial_weights: unknown version(s) {unknown}; versions are {tags}")
            if sum(self.initial_weights.values()) <= 0:
                raise ValueError("initial_weights: the weights must sum to more than 0")
        return self

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
            "alerts": config.alerts.resolve_paths(base_dir),
            "audit": _resolve_audit_paths(config.audit, anchored),
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
