"""Model server profiles: where each kind of server serves its Prometheus metrics and under which names.

Pure data (docs/servers.md explains each profile and what it cannot see). A version's config picks a profile and
may override any name; `resolve_names` merges the two. A name of None means the server exports no such metric.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Final, Literal

ProfileName = Literal["refserver", "mlserver", "kserve", "triton", "custom"]
LatencyType = Literal["histogram", "summary", "counter"]


@dataclass(frozen=True, slots=True)
class MetricNames:
    """Exposition names (counters with the suffix they carry in the text, e.g. `_total`) and label names."""

    requests_total: str | None = None  # every inference request
    requests_success: str | None = None  # successful requests (total = success + failure when there is no total)
    requests_failure: str | None = None  # failed requests: the model server's own error counter
    latency: str | None = None  # base name of the request latency metric
    latency_type: LatencyType = "histogram"  # only a histogram gives the agent a quantile (model.latency_s)
    latency_unit_s: float = 1.0  # seconds per unit of the latency metric (microseconds: 1e-6)
    confidence: str | None = None  # histogram of the top-class confidence
    model_loaded: str | None = None  # gauge, 1 while the model is loaded
    model_label: str | None = None  # label holding the model name; None: series are not filtered by model
    version_label: str | None = None  # label holding the version; None: the server does not tell versions apart

    def metric_names(self) -> dict[str, str]:
        """Field -> exposition name of every metric this profile expects (labels and settings left out)."""
        wanted = ("requests_total", "requests_success", "requests_failure", "latency", "confidence", "model_loaded")
        return {f: name for f in wanted if (name := getattr(self, f)) is not None}


OVERRIDABLE_NAMES: Final = tuple(f.name for f in fields(MetricNames))


@dataclass(frozen=True, slots=True)
class ServerProfile:
    name: ProfileName
    metrics_port: int | None  # None: the inference endpoint's port
    metrics_path: str
    names: MetricNames
    blind_spots: tuple[str, ...] = ()  # what the agent cannot see through this server's metrics


PROFILES: Final[Mapping[str, ServerProfile]] = {
    # The reference server and anything instrumented with model_metrics/ (names.py there is the contract).
    "refserver": ServerProfile(
        "refserver",
        None,
        "/metrics",
        MetricNames(
            requests_total="model_inference_requests_total",
            requests_failure="model_inference_errors_total",
            latency="model_inference_latency_seconds",
            confidence="model_prediction_confidence",
            model_loaded="model_loaded",
            version_label="version",
        ),
    ),
    # MLServer 1.7 (recorded: tests/fixtures/expositions/mlserver-*.txt): metrics on their own port; the version
    # label reads "None", so one server's versions cannot be told apart; the latency is a summary (no quantile).
    "mlserver": ServerProfile(
        "mlserver",
        8082,
        "/metrics",
        MetricNames(
            requests_success="model_infer_request_success_total",
            requests_failure="model_infer_request_failure_total",
            latency="model_infer_request_duration",
            latency_type="summary",
            model_label="model",
        ),
        ("latency quantiles (a summary without buckets)", "versions in one server (version label is None)"),
    ),
    # KServe's Python model server (kserve/metrics.py): per-step latency histograms on the HTTP port, no counters.
    "kserve": ServerProfile(
        "kserve",
        None,
        "/metrics",
        MetricNames(latency="request_predict_seconds", model_label="model_name"),
        ("request and error counts (use Envoy's)", "versions in one server (no version label)"),
    ),
    # Triton (docs/user_guide/metrics.md): counters without a `_total` suffix on port 8002; the request duration
    # is a cumulative counter in microseconds (a mean, no quantile).
    "triton": ServerProfile(
        "triton",
        8002,
        "/metrics",
        MetricNames(
            requests_success="nv_inference_request_success",
            requests_failure="nv_inference_request_failure",
            latency="nv_inference_request_duration_us",
            latency_type="counter",
            latency_unit_s=1e-6,
            model_label="model",
            version_label="version",
        ),
        ("latency quantiles (a cumulative duration counter)", "model loaded state (use the OIP readiness probe)"),
    ),
    # Nothing assumed: name every metric in versions[].server.names.
    "custom": ServerProfile("custom", None, "/metrics", MetricNames()),
}


def resolve_names(profile: str, overrides: Mapping[str, object]) -> MetricNames:
    """The profile's names with the given fields replaced (an empty string name: the server has no such metric)."""
    base = PROFILES[profile].names
    changes = {k: (None if v == "" else v) for k, v in overrides.items() if k in OVERRIDABLE_NAMES}
    return replace(base, **changes)  # type: ignore[arg-type]
