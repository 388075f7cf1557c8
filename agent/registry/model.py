"""The version registry: pydantic models of the registry file (kept in git) and of a version as the agent sees it.

`FileVersion` is what a human writes: provenance and requirements are mandatory, and a version the file calls
verified or stable must carry evidence. `VersionSpec` is the same data with those parts optional (the fallback
registry built from the agent config has none). `Version` is a spec plus what happened at runtime: the status the
agent set (failed, quarantined, verified after a verification) and the evidence it added, kept beside the file in
the state store so the git file is never edited by the agent. See docs/registry.md.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, model_validator

from agent.config import VERSION_TAG_PATTERN
from agent.domain.signals import Baseline, BaselineKey, ReferenceBins
from agent.ports.registry import VersionStatus

_DIGEST_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}


def _digest(value: str) -> str:
    algorithm, sep, hexdigits = value.partition(":")
    expected = _DIGEST_HEX_LENGTHS.get(algorithm)
    if not sep or expected is None:
        raise ValueError(f"a digest must look like sha256:<hex> (sha256, sha384 or sha512), got {value!r}")
    if len(hexdigits) != expected or any(c not in "0123456789abcdef" for c in hexdigits):
        raise ValueError(f"a {algorithm} digest needs {expected} lowercase hex digits after '{algorithm}:'")
    return value


def _commit(value: str) -> str:
    if len(value) not in (40, 64) or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(f"a full git commit hash is 40 (or 64) lowercase hex digits, got {value!r}")
    return value


def _uri(value: str) -> str:
    scheme, sep, rest = value.partition("://")
    if not sep or not scheme or not rest:
        raise ValueError(f"expected a URI with a scheme (s3://, gs://, https://, file://...), got {value!r}")
    return value


def _unique(values: tuple[str, ...]) -> tuple[str, ...]:
    duplicates = sorted({v for v in values if values.count(v) > 1})
    if duplicates:
        raise ValueError(f"duplicate name(s) {duplicates}")
    return values


Digest = Annotated[str, AfterValidator(_digest)]
CommitHash = Annotated[str, AfterValidator(_commit)]
Uri = Annotated[str, AfterValidator(_uri)]
Text = Annotated[str, Field(min_length=1)]
Tag = Annotated[str, Field(pattern=VERSION_TAG_PATTERN)]
Ratio = Annotated[float, Field(ge=0, le=1)]
Names = Annotated[tuple[Text, ...], Field(min_length=1), AfterValidator(_unique)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Provenance(_Strict):
    """Where the version came from: enough to rebuild it and to prove what was deployed."""

    artifact_uri: Uri
    artifact_digest: Digest
    training_data_uri: Uri
    training_data_hash: Digest
    feature_code_commit: CommitHash
    image: Text
    base_image_digest: Digest
    hyperparameters: dict[str, JsonValue] = Field(default_factory=dict)
    environment: dict[str, str] = Field(default_factory=dict)


class InputSchema(_Strict):
    features: Names
    schema_hash: Digest | None = None


class Requirements(_Strict):
    memory_mb: Annotated[int, Field(gt=0)]
    cpu: Annotated[float, Field(gt=0, allow_inf_nan=False)]  # cores
    gpu: Annotated[int, Field(ge=0)] = 0  # count
    runtime: Text  # e.g. "sklearn-1.4/python-3.11"
    input_schema: InputSchema | None = None


class PrimaryMetric(_Strict):
    name: Text  # e.g. "accuracy", "auc"
    value: Annotated[float, Field(allow_inf_nan=False)]


class Throughput(_Strict):
    mean: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    std: Annotated[float, Field(ge=0, allow_inf_nan=False)]


class Bins(_Strict):
    """A feature's reference distribution on the buckets the model server's feature histogram uses.

    `edges` are the buckets' ascending upper bounds (the last may be .inf); `probabilities` has one fraction per
    bucket: len(edges) + 1 (the last one is the overflow above the last edge), or len(edges) when it is .inf.
    """

    edges: Annotated[tuple[float, ...], Field(min_length=1)]
    probabilities: Annotated[tuple[Ratio, ...], Field(min_length=1)]

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if any(math.isnan(e) or math.isinf(e) for e in self.edges[:-1]) or math.isnan(self.edges[-1]):
            raise ValueError("edges: only the last edge may be infinite (.inf), and none may be NaN")
        if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError("edges: must be strictly ascending")
        expected = len(self.edges) if math.isinf(self.edges[-1]) else len(self.edges) + 1
        if len(self.probabilities) != expected:
            raise ValueError(
                f"probabilities: {len(self.probabilities)} values for {len(self.edges)} edges; expected {expected} "
                "(one per bucket up to each edge, plus the overflow above a finite last edge)"
            )
        total = sum(self.probabilities)
        if not math.isclose(total, 1.0, abs_tol=1e-3):
            raise ValueError(f"probabilities: must sum to 1, they sum to {total:.6g}")
        return self

    def to_domain(self) -> ReferenceBins:
        return ReferenceBins(bounds=self.edges, fractions=self.probabilities)


class BaselineMetrics(_Strict):
    """How the version behaved when it was verified; the reference the triggers and the verifier compare with."""

    latency_p99_ms: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    error_rate: Ratio | None = None
    primary_metric: PrimaryMetric | None = None
    mean_confidence: Ratio | None = None
    throughput_rps: Throughput | None = None
    missing_rates: dict[str, Ratio] = Field(default_factory=dict)  # feature -> fraction of rows missing it
    reference_bins: dict[str, Bins] = Field(default_factory=dict)  # feature -> reference distribution

    def to_domain(self) -> Baseline:
        numbers: dict[str, float] = {}
        if self.mean_confidence is not None:
            numbers[BaselineKey.CONFIDENCE_MEAN] = self.mean_confidence
        if self.throughput_rps is not None:
            numbers[BaselineKey.THROUGHPUT_RPS_MEAN] = self.throughput_rps.mean
            numbers[BaselineKey.THROUGHPUT_RPS_STD] = self.throughput_rps.std
        if self.latency_p99_ms is not None:
            numbers["latency_p99_ms"] = self.latency_p99_ms
        if self.error_rate is not None:
            numbers["error_rate"] = self.error_rate
        if self.primary_metric is not None:
            numbers["primary_metric"] = self.primary_metric.value
        for feature, rate in self.missing_rates.items():
            numbers[BaselineKey.missing_rate(feature)] = rate
        bins = {feature: b.to_domain() for feature, b in self.reference_bins.items()}
        return Baseline(numbers=numbers, reference_bins=bins)


Comparison = Literal[">=", ">", "<=", "<", "=="]

_COMPARE = {
    ">=": lambda v, t: v >= t,
    ">": lambda v, t: v > t,
    "<=": lambda v, t: v <= t,
    "<": lambda v, t: v < t,
    "==": lambda v, t: v == t,
}


class EvidenceCheck(_Strict):
    """One check that made (or keeps) a version verified, e.g. a holdout AUC against its acceptance threshold."""

    name: Text
    value: Annotated[float, Field(allow_inf_nan=False)] | None = None
    threshold: Annotated[float, Field(allow_inf_nan=False)] | None = None
    # How value is compared with threshold; when given with both numbers, `passed` must agree with it.
    comparison: Comparison | None = None
    passed: bool
    at: AwareDatetime
    approved_by: Text  # a person or team, or "agent:verification" for checks the agent made
    detail: str = ""

    @model_validator(mode="after")
    def _passed_agrees(self) -> Self:
        if self.comparison is not None and self.value is not None and self.threshold is not None:
            holds = bool(_COMPARE[self.comparison](self.value, self.threshold))
            if holds != self.passed:
                raise ValueError(
                    f"passed: is {str(self.passed).lower()}, but {self.value:g} {self.comparison} "
                    f"{self.threshold:g} is {str(holds).lower()}"
                )
        return self


class VersionSpec(_Strict):
    """A version as declared (by the registry file, or derived from the agent config)."""

    tag: Tag
    status: VersionStatus
    created: AwareDatetime  # RFC 3339 with a timezone; orders rollback targets
    description: str = ""
    provenance: Provenance | None = None
    requirements: Requirements | None = None
    baseline: BaselineMetrics | None = None
    evidence: tuple[EvidenceCheck, ...] = ()


_NEEDS_EVIDENCE = frozenset({VersionStatus.VERIFIED, VersionStatus.STABLE})


class FileVersion(VersionSpec):
    """A version in the registry file: provenance and requirements are mandatory."""

    provenance: Provenance
    requirements: Requirements

    @model_validator(mode="after")
    def _evidence_for_verified(self) -> Self:
        if self.status in _NEEDS_EVIDENCE and not any(check.passed for check in self.evidence):
            raise ValueError(
                f"evidence: a version marked {self.status} needs at least one passed evidence check "
                "(what made it verified)"
            )
        return self


class RegistryFile(_Strict):
    model: Annotated[str, Field(pattern=VERSION_TAG_PATTERN)]
    versions: Annotated[list[FileVersion], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique_tags(self) -> Self:
        tags = [v.tag for v in self.versions]
        duplicates = sorted({t for t in tags if tags.count(t) > 1})
        if duplicates:
            raise ValueError(f"versions: duplicate tag(s) {duplicates}")
        return self


class StatusChange(_Strict):
    """The status the agent (or an operator through it) set at runtime, overriding the declared one."""

    status: VersionStatus
    reason: str
    actor: str
    at: AwareDatetime
    # The status held when the version was quarantined; clear_quarantine restores it.
    before_quarantine: VersionStatus | None = None


class Version(VersionSpec):
    """A version as the registry reports it now: the declared spec with runtime status and evidence applied."""

    declared_status: VersionStatus  # what the file (or the config) says
    status_change: StatusChange | None = None  # the runtime override in force, if any

    @classmethod
    def from_spec(
        cls, spec: VersionSpec, change: StatusChange | None = None, extra_evidence: tuple[EvidenceCheck, ...] = ()
    ) -> Version:
        fields = {name: getattr(spec, name) for name in VersionSpec.model_fields}
        fields["status"] = change.status if change is not None else spec.status
        fields["evidence"] = spec.evidence + extra_evidence
        return cls(**fields, declared_status=spec.status, status_change=change)

    @property
    def overridden(self) -> bool:
        return self.status_change is not None and self.status_change.status != self.declared_status

    def baseline_for_triggers(self) -> Baseline:
        return self.baseline.to_domain() if self.baseline is not None else Baseline()
