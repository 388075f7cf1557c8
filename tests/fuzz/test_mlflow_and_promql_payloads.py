"""Any payload MLflow or Prometheus could answer is mapped or refused with a clear error, never a traceback:

* an MLflow model version and its source run of any shape: a VersionSpec, or MlflowRegistryError naming the version;
* a Prometheus answer of any shape for a PromQL signal: a reading with a finite value and no problem, or no value
  and a stated problem (never a value that could judge a rule when the data is missing or stale).

FUZZ_EXAMPLES sets the number of examples per property (default 200; e.g. 10000 for a long run).
"""

from __future__ import annotations

import math
import os
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.adapters.registry.mlflow_registry import MlflowRegistryError, version_from_mlflow
from agent.adapters.signals.promql_source import readings_from
from agent.config import MlflowRegistrySection, PromqlSignal

EXAMPLES = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")), deadline=None)
SETTINGS = MlflowRegistrySection(url="http://127.0.0.1:5000")
NOW = 1_800_000_000.0

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.sampled_from(["1", "sha256:" + "a" * 64, "0" * 40, "s3://b/k", "/abs/path", "NaN", "verified", "bogus"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
known_tag_keys = st.sampled_from(
    [
        "rollback_agent.status",
        "rollback_agent.evidence",
        "artifact_digest",
        "training_data_hash",
        "image",
        "base_image_digest",
        "feature_code_commit",
        "requirements.memory_mb",
        "requirements.cpu",
        "requirements.runtime",
        "requirements.features",
    ]
)
tag_lists = st.lists(
    st.one_of(
        st.fixed_dictionaries({"key": known_tag_keys | st.text(max_size=10), "value": st.text(max_size=40) | scalars}),
        json_values,
    ),
    max_size=6,
)
model_versions = st.fixed_dictionaries(
    {},
    optional={
        "version": st.one_of(st.integers(0, 10**6).map(str), scalars),
        "creation_timestamp": st.one_of(st.integers(0, 2**41), scalars),
        "description": scalars,
        "source": scalars,
        "run_id": scalars,
        "status": st.sampled_from(["READY", "FAILED_REGISTRATION", "PENDING_REGISTRATION"]) | scalars,
        "current_stage": st.sampled_from(["None", "Production", "Staging", "Archived"]) | scalars,
        "tags": tag_lists | scalars,
    },
)
metric_lists = st.lists(
    st.fixed_dictionaries(
        {
            "key": st.sampled_from(["accuracy", "error_rate", "latency_p99_ms", "missing_rate.x", "mean_confidence"]),
            "value": st.floats(allow_nan=True) | st.integers(-5, 5),
        }
    )
    | json_values,
    max_size=5,
)
runs = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "data": st.fixed_dictionaries(
                {}, optional={"metrics": metric_lists | scalars, "params": tag_lists, "tags": tag_lists}
            )
            | scalars,
            "inputs": json_values,
        },
    ),
)


@EXAMPLES
@given(version=model_versions, run=runs, aliases=st.lists(st.sampled_from(["champion", "challenger", "x"])))
def test_any_model_version_is_mapped_or_refused_by_name(
    version: dict[str, Any], run: dict[str, Any] | None, aliases: list[str]
) -> None:
    try:
        mapped = version_from_mlflow(SETTINGS, "credit", version, run, aliases)
    except MlflowRegistryError as exc:
        assert str(exc).startswith("MLflow model 'credit' version ")
        return
    assert mapped.spec.tag


series = st.fixed_dictionaries(
    {"metric": st.one_of(st.dictionaries(st.sampled_from(["version", "pod"]), st.sampled_from(["v1", "v2"])), scalars)},
    optional={"value": st.one_of(st.lists(scalars | st.floats(), max_size=3), scalars)},
)


@EXAMPLES
@given(
    values=st.lists(series | json_values, max_size=3),
    stamps=st.lists(series | json_values, max_size=3),
    labelled=st.booleans(),
)
def test_any_prometheus_answer_is_a_fresh_finite_value_or_a_stated_problem(
    values: list[Any], stamps: list[Any], labelled: bool
) -> None:
    signal = PromqlSignal(
        signal="model.business.accuracy",
        query="q" if labelled else 'q{v="{version}"}',
        version_label="version" if labelled else None,
        max_staleness_s=60,
    )
    key = "" if labelled else "v1"
    vectors = {key: [v for v in values if isinstance(v, dict)]}
    times = {key: [s for s in stamps if isinstance(s, dict)]}
    try:
        reading = readings_from(signal, ["v1"], vectors, times, NOW)["v1"]
    except (TypeError, AttributeError) as exc:  # pragma: no cover - the property's failure message
        raise AssertionError(f"a malformed answer raised {exc!r}") from exc
    if reading.value is None:
        assert reading.problem and reading.kind
    else:
        assert not reading.problem
        assert math.isfinite(reading.value)
        assert reading.sampled_at is not None and NOW - reading.sampled_at <= 60
